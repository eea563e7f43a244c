//! Perl's view of request values and regexes, as PVE's JSONSchema code sees them.
//!
//! PVE validates Perl scalars: form parameters are strings, JSON bodies may carry
//! numbers, booleans (`JSON::PP::Boolean` objects), arrays and hashes. These helpers
//! reproduce how those look to `check_type` and friends so error texts match.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use regex::Regex;
use serde_json::Value;

/// How a JSON value looks to PVE's type checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// Missing or JSON `null` (Perl `undef`).
    Undef,
    /// A plain scalar, stringified the way Perl would print it.
    Str(String),
    /// A JSON boolean (a blessed `JSON::PP::Boolean`).
    Bool(bool),
    /// A reference: `ARRAY` or `HASH`.
    Ref(&'static str),
}

pub fn scalar_of(v: Option<&Value>) -> Scalar {
    match v {
        None | Some(Value::Null) => Scalar::Undef,
        Some(Value::String(s)) => Scalar::Str(s.clone()),
        Some(Value::Number(n)) => Scalar::Str(perl_number(n)),
        Some(Value::Bool(b)) => Scalar::Bool(*b),
        Some(Value::Array(_)) => Scalar::Ref("ARRAY"),
        Some(Value::Object(_)) => Scalar::Ref("HASH"),
    }
}

/// Perl prints integral numbers without a fraction and others with up to 15
/// significant digits.
pub fn perl_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    perl_float(f)
}

pub fn perl_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// A value used as a string in Perl (what `"$value"` gives).
pub fn stringify(v: &Value) -> String {
    match scalar_of(Some(v)) {
        Scalar::Undef => String::new(),
        Scalar::Str(s) => s,
        Scalar::Bool(b) => if b { "1" } else { "0" }.to_string(),
        Scalar::Ref(r) => format!("{r}(0x0)"),
    }
}

/// Perl truthiness of a parameter (`if ($param->{full})`).
pub fn truthy(v: Option<&Value>) -> bool {
    match scalar_of(v) {
        Scalar::Undef => false,
        Scalar::Str(s) => !(s.is_empty() || s == "0"),
        Scalar::Bool(b) => b,
        Scalar::Ref(_) => true,
    }
}

/// `is_number` of PVE's JSONSchema (ASCII digits; Perl's `$` also accepts a final
/// newline).
pub fn is_number(s: &str) -> bool {
    static RE: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"^[+-]?([0-9]+\.[0-9]+|[0-9]+\.|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?\n?\z").ok()
    });
    RE.as_ref().is_some_and(|re| re.is_match(s))
}

pub fn is_integer(s: &str) -> bool {
    static RE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^[+-]?[0-9]+\n?\z").ok());
    RE.as_ref().is_some_and(|re| re.is_match(s))
}

/// Perl numification of a string that passed `is_number`.
pub fn numify(s: &str) -> f64 {
    s.trim().parse::<f64>().unwrap_or(0.0)
}

/// A schema number that may be written as a JSON number or a string (`"0"`).
pub fn schema_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// How Perl prints a schema bound in an error message.
pub fn schema_number_text(v: &Value) -> String {
    match v {
        Value::Number(n) => perl_number(n),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Translate a Perl pattern from PVE's schema into a Rust regex that matches the
/// way `m/^$pattern$/` does: `(?^:` groups become plain groups, `{,n}` is `{0,n}`
/// (Perl ≥ 5.34), and the final `$` also accepts one trailing newline. The pattern
/// is spliced without extra grouping, so a top-level alternation binds exactly as
/// in Perl (`^a|b$`).
pub fn anchored_regex(pattern: &str) -> Result<Arc<Regex>, String> {
    static CACHE: LazyLock<Mutex<HashMap<String, Arc<Regex>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(re) = cache.get(pattern) {
        return Ok(re.clone());
    }
    let translated = translate(pattern);
    let re = Regex::new(&format!("^{translated}(?:\\n?\\z)"))
        .map_err(|e| format!("pattern {pattern:?} does not compile: {e}"))?;
    let re = Arc::new(re);
    cache.insert(pattern.to_string(), re.clone());
    Ok(re)
}

fn translate(p: &str) -> String {
    let p = p.replace("(?^:", "(?:").replace("(?^i:", "(?i:");
    // `{,n}` → `{0,n}`
    let mut out = String::with_capacity(p.len());
    let mut chars = p.chars().peekable();
    let mut escaped = false;
    while let Some(c) = chars.next() {
        if escaped {
            out.push(c);
            escaped = false;
            continue;
        }
        if c == '\\' {
            out.push(c);
            escaped = true;
            continue;
        }
        if c == '{' && chars.peek() == Some(&',') {
            out.push_str("{0");
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn perl_anchoring_binds_alternation_like_perl() {
        // m/^\/dev\/parport\d+|\/dev\/usb\/lp\d+$/: only the first branch is anchored
        // at the start, only the second at the end.
        let re = anchored_regex(r"/dev/parport\d+|/dev/usb/lp\d+").unwrap();
        assert!(re.is_match("/dev/parport0-anything"));
        assert!(re.is_match("junk/dev/usb/lp1"));
        assert!(!re.is_match("junk/dev/parport0"));
        // `$` accepts one trailing newline, as in Perl.
        let re = anchored_regex(r"\+?\d+(\.\d+)?[KMGT]?").unwrap();
        assert!(re.is_match("+10G\n"));
        assert!(!re.is_match("+10G\n\n"));
        let re = anchored_regex(r"[A-Za-z0-9\-_\s]{,8}").unwrap();
        assert!(re.is_match("abc"));
        assert!(!re.is_match("123456789"));
        let re = anchored_regex(r"(?^:\d+(?:-\d+)?)").unwrap();
        assert!(re.is_match("3-4"));
    }

    #[test]
    fn numbers_print_like_perl() {
        assert_eq!(
            scalar_of(Some(&serde_json::json!(2))),
            Scalar::Str("2".into())
        );
        assert_eq!(
            scalar_of(Some(&serde_json::json!(2.0))),
            Scalar::Str("2".into())
        );
        assert_eq!(
            scalar_of(Some(&serde_json::json!(2.5))),
            Scalar::Str("2.5".into())
        );
        assert!(is_integer("-5") && is_integer("+7") && !is_integer("1.0"));
        assert!(is_number("1.") && is_number(".5") && is_number("1e3") && !is_number("x"));
    }
}
