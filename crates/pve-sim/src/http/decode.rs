//! Request decoding exactly as `pve-http-server` (PVE::APIServer::AnyEvent) does it:
//! `decode_urlencoded` splits on `&` *and* `;`, keeps only the first two fields of
//! `split(/=/, …)` (so a raw `=` inside a value truncates it), decodes `+` and
//! `%XX`, then UTF-8 (values only); repeated keys become arrays; JSON bodies are
//! taken as they are; query parameters override body parameters.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::schema::Errors;

/// `%XX` → byte (other `%` sequences stay as they are), like URI::Escape.
pub fn uri_unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(a), Some(b)) = (hexval(s[i + 1]), hexval(s[i + 2])) {
                out.push(a * 16 + b);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn plus_to_space(s: &[u8]) -> Vec<u8> {
    s.iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect()
}

/// Perl's `split(/=/, $kv)`: leading empty fields kept, trailing empty ones dropped.
fn perl_split_eq(kv: &[u8]) -> Vec<&[u8]> {
    let mut fields: Vec<&[u8]> = kv.split(|&b| b == b'=').collect();
    while fields.last().is_some_and(|f| f.is_empty()) {
        fields.pop();
    }
    fields
}

/// `decode_urlencoded`.
pub fn decode_urlencoded(data: &[u8]) -> Map<String, Value> {
    let mut res = Map::new();
    if data.is_empty() {
        return res;
    }
    for kv in data.split(|&b| b == b'&' || b == b';') {
        let fields = perl_split_eq(kv);
        let Some(k) = fields.first() else { continue };
        // Keys stay bytes in Perl: show them as Latin-1 characters.
        let k: String = uri_unescape(&plus_to_space(k))
            .into_iter()
            .map(char::from)
            .collect();
        let v = fields.get(1).map(|v| {
            let bytes = uri_unescape(&plus_to_space(v));
            String::from_utf8_lossy(&bytes).into_owned()
        });
        match v {
            None => {
                res.insert(k, Value::Null);
            }
            Some(v) => {
                let new = match res.remove(&k) {
                    Some(Value::Array(mut old)) => {
                        old.push(Value::String(v));
                        Value::Array(old)
                    }
                    Some(Value::Null) | None => Value::String(v),
                    Some(old) => Value::Array(vec![old, Value::String(v)]),
                };
                res.insert(k, new);
            }
        }
    }
    res
}

/// `parse_content_type`: the media type before any `;` or `,` parameter.
pub fn media_type(ct: &str) -> String {
    ct.split([';', ',']).next().unwrap_or("").trim().to_string()
}

/// `extract_params`: body (PUT/POST only; JSON or form) plus query parameters, the
/// query winning; `_dc` removed.
pub fn extract_params(
    method: &str,
    content_type: Option<&str>,
    body: &[u8],
    query: &str,
) -> Result<Map<String, Value>, String> {
    let mut params = Map::new();
    if method == "PUT" || method == "POST" {
        let ct = content_type.map(media_type);
        if ct.as_deref() == Some("application/json") {
            let v: Value =
                serde_json::from_slice(body).map_err(|e| format!("malformed JSON string: {e}"))?;
            match v {
                Value::Object(m) => params = m,
                _ => return Err("Not a HASH reference".into()),
            }
        } else {
            params = decode_urlencoded(body);
        }
    }
    for (k, v) in decode_urlencoded(query.as_bytes()) {
        params.insert(k, v);
    }
    params.remove("_dc");
    Ok(params)
}

/// Merge path parameters into the request's, refusing conflicting duplicates
/// (`duplicate parameter (already defined in URI) with conflicting values!`).
pub fn merge_uri_params(
    uri: &BTreeMap<String, String>,
    params: Map<String, Value>,
) -> Result<Map<String, Value>, Errors> {
    let mut merged: Map<String, Value> = uri
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    for (k, v) in params {
        if let Some(u) = uri.get(&k) {
            // Perl compares with `ne`: an undefined value is "" and differs too.
            if crate::schema::perl::stringify(&v) != *u {
                let mut e = Errors::new();
                e.insert(
                    k.clone(),
                    "duplicate parameter (already defined in URI) with conflicting values!".into(),
                );
                return Err(e);
            }
        }
        merged.insert(k, v);
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn form_decoding_is_pves() {
        let m = decode_urlencoded(b"a=1&b=x+y%2Bz;c=%zz&d&e=&f=p=q&a=2&g==h");
        assert_eq!(m["a"], serde_json::json!(["1", "2"]));
        assert_eq!(m["b"], "x y+z");
        assert_eq!(m["c"], "%zz");
        assert_eq!(m["d"], Value::Null);
        assert_eq!(m["e"], Value::Null);
        assert_eq!(m["f"], "p");
        assert_eq!(m["g"], "");
        let m = decode_urlencoded("n=%C3%A9%FF".as_bytes());
        assert_eq!(m["n"], "é\u{FFFD}");
    }
}
