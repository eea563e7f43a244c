//! API-token authentication and privilege checks as PVE does them
//! (pve-http-server `extract_auth_value`, pve-access-control `verify_token`,
//! `RPCEnvironment::exec_api2_perm_check`).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::config::TokenConfig;
use crate::schema::perl;

/// The authenticated caller: the token id `user@realm!token` is PVE's "user" for
/// token requests (it appears in UPIDs).
#[derive(Debug, Clone)]
pub struct Caller {
    pub tokenid: String,
    pub user: String,
    privileges: BTreeSet<String>,
    all: bool,
}

impl Caller {
    pub fn root() -> Caller {
        Caller {
            tokenid: "root@pam".into(),
            user: "root@pam".into(),
            privileges: BTreeSet::new(),
            all: true,
        }
    }

    pub fn has(&self, privilege: &str) -> bool {
        self.all || self.privileges.contains(privilege)
    }

    /// `check($user, $path, [privs])`: all of them.
    pub fn check(&self, path: &str, privs: &[&str]) -> Result<(), String> {
        for p in privs {
            if !self.has(p) {
                return Err(format!("{path}, {p}"));
            }
        }
        Ok(())
    }

    /// `check_any`.
    pub fn check_any(&self, path: &str, privs: &[&str]) -> Result<(), String> {
        if privs.iter().any(|p| self.has(p)) {
            Ok(())
        } else {
            Err(format!("{path}, {}", privs.join("|")))
        }
    }

    /// The schema's `permissions` of an endpoint. Err(what) → 403
    /// `Permission check failed (what)` (what may be empty).
    pub fn check_api2_permissions(
        &self,
        perm: Option<&Value>,
        params: &Map<String, Value>,
    ) -> Result<(), String> {
        let Some(perm) = perm else {
            return Err("user != root@pam".into());
        };
        if perm.get("user").and_then(Value::as_str) == Some("all") {
            return Ok(());
        }
        match perm.get("check") {
            Some(check) => self.exec_check(check, params, false).map(|_| ()),
            None => Err(String::new()),
        }
    }

    fn exec_check(
        &self,
        check: &Value,
        params: &Map<String, Value>,
        noerr: bool,
    ) -> Result<bool, String> {
        let Some(items) = check.as_array() else {
            return Err(String::new());
        };
        let test = items.first().and_then(Value::as_str).unwrap_or("");
        match test {
            "and" => {
                for sub in &items[1..] {
                    self.exec_check(sub, params, false)?;
                }
                Ok(true)
            }
            "or" => {
                for sub in &items[1..] {
                    if self.exec_check(sub, params, true)? {
                        return Ok(true);
                    }
                }
                if noerr { Ok(false) } else { Err(String::new()) }
            }
            "perm" => {
                let tmpl = items.get(1).and_then(Value::as_str).unwrap_or("/");
                let privs: Vec<&str> = items
                    .get(2)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut any = false;
                let mut require_param = None;
                let mut i = 3;
                while i + 1 < items.len() {
                    match items[i].as_str() {
                        Some("any") => any = perl::truthy(items.get(i + 1)),
                        Some("require_param") => require_param = items[i + 1].as_str(),
                        _ => {}
                    }
                    i += 2;
                }
                if let Some(rp) = require_param {
                    if params.get(rp).is_none_or(Value::is_null) {
                        return if noerr { Ok(false) } else { Err(String::new()) };
                    }
                }
                let path = template_replace(tmpl, params);
                let r = if any {
                    self.check_any(&path, &privs)
                } else {
                    self.check(&path, &privs)
                };
                match r {
                    Ok(()) => Ok(true),
                    Err(_) if noerr => Ok(false),
                    Err(e) => Err(e),
                }
            }
            _ => Err(String::new()),
        }
    }
}

/// `template_replace`: `{name}` → the parameter's value, or `-` if unset/false.
pub fn template_replace(tmpl: &str, params: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = tmpl;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &rest[start + 1..start + end];
        let v = params.get(name);
        if perl::truthy(v) {
            out.push_str(&perl::stringify(v.unwrap_or(&Value::Null)));
        } else {
            out.push('-');
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

static TOKEN_ID: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^(([^\s:/]+)@([A-Za-z][A-Za-z0-9.\-_]+))!([A-Za-z][A-Za-z0-9.\-_]+)$").ok()
});

/// `split_tokenid`: `user@realm!token` → (`user@realm`, `token`).
pub fn split_token_id(id: &str) -> Option<(String, String)> {
    let caps = TOKEN_ID.as_ref()?.captures(id)?;
    Some((
        caps.get(1)?.as_str().to_string(),
        caps.get(4)?.as_str().to_string(),
    ))
}

/// Why authentication failed; the text is the 401 reason phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    NoTicket,
    Failed,
}

impl AuthFailure {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::NoTicket => "No ticket",
            AuthFailure::Failed => "Authentication failed!",
        }
    }
}

/// `extract_auth_value($header, 'PVEAPIToken')`: the text after `PVEAPIToken=` (or
/// a space) up to `;`, percent-decoded.
fn extract_token(header: &str) -> Option<String> {
    static RE: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"(?:^|\s)PVEAPIToken(?:=| )([^;]*)").ok());
    let caps = RE.as_ref()?.captures(header)?;
    let v = caps.get(1)?.as_str();
    if v.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&crate::http::decode::uri_unescape(v.as_bytes())).into_owned())
}

/// Authenticate an `Authorization` header against the configured tokens.
pub fn authenticate(header: Option<&str>, tokens: &[TokenConfig]) -> Result<Caller, AuthFailure> {
    // Tickets (cookies) are not simulated: without a token there is "No ticket".
    let Some(api_token) = header.and_then(extract_token) else {
        return Err(AuthFailure::NoTicket);
    };
    // verify_token: `/^(.*)=(.*)$/` (greedy: the secret follows the last '=').
    let Some((tokenid, secret)) = api_token.rsplit_once('=') else {
        return Err(AuthFailure::Failed);
    };
    if split_token_id(tokenid).is_none() {
        return Err(AuthFailure::Failed);
    }
    let mut found: Option<&TokenConfig> = None;
    for t in tokens {
        // Constant-time on the secret; the id is public.
        let id_ok = t.id == tokenid;
        let secret_ok: bool = t.secret.as_bytes().ct_eq(secret.as_bytes()).into();
        if id_ok && secret_ok {
            found = Some(t);
        }
    }
    let t = found.ok_or(AuthFailure::Failed)?;
    let (user, _) = split_token_id(&t.id).ok_or(AuthFailure::Failed)?;
    Ok(Caller {
        tokenid: t.id.clone(),
        user,
        all: t.privileges.iter().any(|p| p == "*"),
        privileges: t.privileges.iter().cloned().collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn tok(privs: &[&str]) -> Vec<TokenConfig> {
        vec![TokenConfig {
            id: "clawy@pve!agent".into(),
            secret: "s3cr3t-uuid".into(),
            privileges: privs.iter().map(|s| s.to_string()).collect(),
        }]
    }

    #[test]
    fn token_header_forms() {
        let t = tok(&["*"]);
        assert!(authenticate(Some("PVEAPIToken=clawy@pve!agent=s3cr3t-uuid"), &t).is_ok());
        assert!(authenticate(Some("PVEAPIToken clawy@pve!agent=s3cr3t-uuid"), &t).is_ok());
        assert_eq!(
            authenticate(Some("PVEAPIToken=clawy@pve!agent=wrong"), &t).unwrap_err(),
            AuthFailure::Failed
        );
        assert_eq!(authenticate(None, &t).unwrap_err(), AuthFailure::NoTicket);
        assert_eq!(
            authenticate(Some("Bearer x"), &t).unwrap_err(),
            AuthFailure::NoTicket
        );
        assert_eq!(
            authenticate(Some("PVEAPIToken=clawy@pve=s3cr3t-uuid"), &t).unwrap_err(),
            AuthFailure::Failed
        );
    }

    #[test]
    fn permission_checks_name_path_and_privilege() {
        let c = authenticate(
            Some("PVEAPIToken=clawy@pve!agent=s3cr3t-uuid"),
            &tok(&["VM.Clone"]),
        )
        .unwrap();
        let clone_perm = json!({"check": ["and", ["perm", "/vms/{vmid}", ["VM.Clone"]],
            ["or", ["perm", "/vms/{newid}", ["VM.Allocate"]],
                   ["perm", "/pool/{pool}", ["VM.Allocate"], "require_param", "pool"]]]});
        let params = json!({"vmid": "9000", "newid": "101"});
        let e = c
            .check_api2_permissions(Some(&clone_perm), params.as_object().unwrap())
            .unwrap_err();
        assert_eq!(e, "");
        let cfg = json!({"check": ["perm", "/vms/{vmid}", ["VM.Config.CPU", "VM.Config.Disk"], "any", 1]});
        let e = c
            .check_api2_permissions(Some(&cfg), params.as_object().unwrap())
            .unwrap_err();
        assert_eq!(e, "/vms/9000, VM.Config.CPU|VM.Config.Disk");
        let del = json!({"check": ["perm", "/vms/{vmid}", ["VM.Allocate"]]});
        let e = c
            .check_api2_permissions(Some(&del), params.as_object().unwrap())
            .unwrap_err();
        assert_eq!(e, "/vms/9000, VM.Allocate");
    }
}
