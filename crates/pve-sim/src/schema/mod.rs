//! The checked-in subset of Proxmox VE's API schema and a validator with PVE's
//! semantics.
//!
//! - `schema/pve-api-subset.json`: extracted from `proxmox/pve-docs`
//!   `api-viewer/apidata.js` (commit in its `_source`) for exactly the endpoints
//!   pve-sim serves, by `schema/extract-subset.py`.
//! - `schema/named-formats.json`: the property-string formats apidata.js names but
//!   does not define, written from `proxmox/qemu-server` (commit in its `_source`).
//!
//! Besides serving the simulator, [`validate_request`] lets a client's conformance
//! test check every request it sends, decoded exactly as `pve-http-server` would.

pub mod formats;
pub mod perl;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use serde_json::{Map, Value};

pub use validate::{Errors, parse_boolean};

const SUBSET_JSON: &str = include_str!("../../schema/pve-api-subset.json");
const NAMED_JSON: &str = include_str!("../../schema/named-formats.json");

#[derive(Debug, thiserror::Error, Clone)]
pub enum SchemaError {
    #[error("embedded PVE schema is invalid: {0}")]
    Invalid(String),
}

/// One served endpoint of the PVE API.
#[derive(Debug)]
pub struct Endpoint {
    pub method: String,
    /// Path template under `/api2/json`, e.g. `/nodes/{node}/qemu/{vmid}/config`.
    pub path: String,
    segments: Vec<String>,
    /// The method's info from apidata.js (`parameters`, `permissions`, `returns`, …).
    pub info: Value,
}

impl Endpoint {
    pub fn parameters(&self) -> Option<&Map<String, Value>> {
        self.info.get("parameters").and_then(Value::as_object)
    }

    pub fn properties(&self) -> Option<&Map<String, Value>> {
        self.parameters()
            .and_then(|p| p.get("properties"))
            .and_then(Value::as_object)
    }

    pub fn permissions(&self) -> Option<&Value> {
        self.info.get("permissions")
    }
}

/// Source of the checked-in schema files.
#[derive(Debug, Clone)]
pub struct SchemaSource {
    pub apidata_repository: String,
    pub apidata_commit: String,
    pub formats_repository: String,
    pub formats_commit: String,
}

#[derive(Debug)]
pub struct Schema {
    endpoints: Vec<Endpoint>,
    hash_formats: BTreeMap<String, Map<String, Value>>,
    pub(crate) array_ranges: BTreeMap<String, u32>,
    pub(crate) cpu_models: BTreeSet<String>,
    pub(crate) cpu_builtin: BTreeSet<String>,
    pub(crate) cpu_vm_flags: Vec<String>,
    pub source: SchemaSource,
}

static SCHEMA: LazyLock<Result<Schema, SchemaError>> = LazyLock::new(Schema::load);

/// The embedded schema.
pub fn schema() -> Result<&'static Schema, SchemaError> {
    SCHEMA.as_ref().map_err(Clone::clone)
}

/// Result of matching a request path against the served endpoints.
pub enum Route<'a> {
    Found(&'a Endpoint, BTreeMap<String, String>),
    /// No endpoint with this path and method.
    NotImplemented,
}

impl Schema {
    fn load() -> Result<Schema, SchemaError> {
        let bad = |m: &str| SchemaError::Invalid(m.to_string());
        let subset: Value = serde_json::from_str(SUBSET_JSON).map_err(|e| bad(&e.to_string()))?;
        let named: Value = serde_json::from_str(NAMED_JSON).map_err(|e| bad(&e.to_string()))?;
        let eps = subset
            .get("endpoints")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no endpoints"))?;
        let mut endpoints = Vec::new();
        for (key, info) in eps {
            let (method, path) = key.split_once(' ').ok_or_else(|| bad(key))?;
            endpoints.push(Endpoint {
                method: method.to_string(),
                path: path.to_string(),
                segments: path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                info: info.clone(),
            });
        }
        let mut hash_formats = BTreeMap::new();
        for (name, fmt) in named
            .get("hash_formats")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no hash_formats"))?
        {
            hash_formats.insert(
                name.clone(),
                fmt.as_object().cloned().ok_or_else(|| bad(name))?,
            );
        }
        // pve-qm-ide is the inline format of ide[n] (apidata.js names it for `cdrom`).
        for (name, src) in named
            .get("hash_format_aliases")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let src = src.as_str().ok_or_else(|| bad(name))?;
            let (ep, prop) = src.rsplit_once(' ').ok_or_else(|| bad(src))?;
            let fmt = eps
                .get(ep)
                .and_then(|e| e.pointer("/parameters/properties"))
                .and_then(|p| p.get(prop))
                .and_then(|p| p.get("format"))
                .and_then(Value::as_object)
                .ok_or_else(|| bad(src))?;
            hash_formats.insert(name.clone(), fmt.clone());
        }
        let array_ranges = named
            .get("array_ranges")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no array_ranges"))?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0) as u32))
            .collect();
        let strings = |ptr: &str| -> Vec<String> {
            named
                .pointer(ptr)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let text = |v: &Value, ptr: &str| {
            v.pointer(ptr)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Ok(Schema {
            endpoints,
            hash_formats,
            array_ranges,
            cpu_models: strings("/cpu/models").into_iter().collect(),
            cpu_builtin: strings("/cpu/builtin_models").into_iter().collect(),
            cpu_vm_flags: strings("/cpu/vm_flags"),
            source: SchemaSource {
                apidata_repository: text(&subset, "/_source/repository"),
                apidata_commit: text(&subset, "/_source/commit"),
                formats_repository: text(&named, "/_source/repository"),
                formats_commit: text(&named, "/_source/commit"),
            },
        })
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter()
    }

    pub fn endpoint(&self, method: &str, template: &str) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .find(|e| e.method == method && e.path == template)
    }

    /// Match a concrete path (below `/api2/json`, already percent-decoded) the way
    /// PVE's handler lookup does: `{param}` segments match any one segment.
    pub fn route(&self, method: &str, path: &str) -> Route<'_> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for ep in &self.endpoints {
            if ep.method != method || ep.segments.len() != segs.len() {
                continue;
            }
            let mut params = BTreeMap::new();
            let ok = ep.segments.iter().zip(&segs).all(|(t, s)| {
                if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    params.insert(name.to_string(), (*s).to_string());
                    true
                } else {
                    t == s
                }
            });
            if ok {
                return Route::Found(ep, params);
            }
        }
        Route::NotImplemented
    }

    pub fn hash_format(&self, name: &str) -> Option<&Map<String, Value>> {
        self.hash_formats.get(name)
    }

    /// `PVE::JSONSchema::validate` of a request's parameters against an endpoint,
    /// after RESTHandler's normalization (repeated `*-list` parameters are joined
    /// with `,`). Returns the normalized parameters.
    pub fn validate(
        &self,
        ep: &Endpoint,
        params: &Map<String, Value>,
    ) -> Result<Map<String, Value>, Errors> {
        let mut params = params.clone();
        if let Some(props) = ep.properties() {
            for (k, v) in params.iter_mut() {
                let Value::Array(items) = v else { continue };
                let Some(sub) = self.lookup_prop(props, k) else {
                    continue;
                };
                let is_list = sub.get("type").and_then(Value::as_str) == Some("string")
                    && sub
                        .get("format")
                        .and_then(Value::as_str)
                        .is_some_and(|f| f.ends_with("-list"));
                if is_list && !items.is_empty() {
                    let joined: Vec<String> = items.iter().map(perl::stringify).collect();
                    *v = Value::String(joined.join(","));
                }
            }
        }
        let params = params;
        let mut errors = Errors::new();
        let empty = Map::new();
        let p = ep.parameters();
        let props = ep.properties().unwrap_or(&empty);
        // additionalProperties: 0 → unknown keys refused; absent → allowed.
        let additional = p
            .and_then(|p| p.get("additionalProperties"))
            .map(|v| perl::truthy(Some(v)))
            .unwrap_or(true);
        self.check_object("", props, &params, additional, &mut errors);
        if errors.is_empty() {
            Ok(params)
        } else {
            Err(errors)
        }
    }

    /// Parse a property string of parameter `key` of `ep` (e.g. `net0`), following
    /// named formats. Err is PVE's message.
    pub fn parse_param_property_string(
        &self,
        ep: &Endpoint,
        key: &str,
        value: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let props = ep.properties().ok_or("no properties")?;
        let sub = self.lookup_prop(props, key).ok_or("unknown key")?;
        match sub.get("format") {
            Some(Value::Object(fmt)) => self.parse_property_string(fmt, value, key, None),
            Some(Value::String(name)) => {
                let fmt = self.hash_format(name).ok_or("not a property string")?;
                self.parse_property_string(fmt, value, key, Some(name))
            }
            _ => Err("not a property string".into()),
        }
    }

    /// The inline or named property-string format of a config key.
    pub fn config_key_format(&self, key: &str) -> Option<&Map<String, Value>> {
        let ep = self.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config")?;
        let sub = self.lookup_prop(ep.properties()?, key)?;
        match sub.get("format")? {
            Value::Object(fmt) => Some(fmt),
            Value::String(name) => self.hash_format(name),
            _ => None,
        }
    }

    /// The schema of a VM config key (as in `PUT …/config`).
    pub fn config_key_schema(&self, key: &str) -> Option<&Map<String, Value>> {
        let ep = self.endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config")?;
        self.lookup_prop(ep.properties()?, key)
    }

    /// Every format name the checked-in schema refers to (for completeness tests).
    pub fn referenced_formats(&self) -> BTreeSet<String> {
        fn walk(v: &Value, out: &mut BTreeSet<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(f)) = m.get("format") {
                        out.insert(f.clone());
                    }
                    for x in m.values() {
                        walk(x, out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let mut out = BTreeSet::new();
        for ep in &self.endpoints {
            if let Some(p) = ep.info.get("parameters") {
                walk(p, &mut out);
            }
        }
        for f in self.hash_formats.values() {
            walk(&Value::Object(f.clone()), &mut out);
        }
        out
    }

    /// Every `pattern` in the served parameters (for compile tests).
    pub fn referenced_patterns(&self) -> BTreeSet<String> {
        fn walk(v: &Value, out: &mut BTreeSet<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(p)) = m.get("pattern") {
                        out.insert(p.clone());
                    }
                    m.values().for_each(|x| walk(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let mut out = BTreeSet::new();
        for ep in &self.endpoints {
            if let Some(p) = ep.info.get("parameters") {
                walk(p, &mut out);
            }
        }
        for f in self.hash_formats.values() {
            walk(&Value::Object(f.clone()), &mut out);
        }
        out
    }
}

/// Why a request does not conform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nonconformance {
    /// No served endpoint has this method and path (PVE: 501).
    NoSuchEndpoint(String),
    /// The body cannot be decoded as PVE decodes it.
    Decode(String),
    /// A path parameter and a body/query parameter disagree (PVE: 400).
    Conflict(Errors),
    /// PVE answers 400 "Parameter verification failed." with this errors map.
    Invalid(Errors),
}

impl std::fmt::Display for Nonconformance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Nonconformance::NoSuchEndpoint(s) => write!(f, "no such endpoint: {s}"),
            Nonconformance::Decode(s) => write!(f, "undecodable request: {s}"),
            Nonconformance::Conflict(e) | Nonconformance::Invalid(e) => {
                write!(f, "Parameter verification failed: {e:?}")
            }
        }
    }
}

/// Validate one request exactly as a PVE node would see it: `path_and_query` is
/// what follows `/api2/json` (e.g. `/nodes/pve/qemu/100/config?digest=…`), `body`
/// is the raw body with its `content_type`. Returns the decoded parameters.
pub fn validate_request(
    method: &str,
    path_and_query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Map<String, Value>, Nonconformance> {
    let schema = schema().map_err(|e| Nonconformance::Decode(e.to_string()))?;
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
    };
    let path =
        String::from_utf8_lossy(&crate::http::decode::uri_unescape(path.as_bytes())).into_owned();
    let (ep, uri_params) = match schema.route(method, &path) {
        Route::Found(ep, p) => (ep, p),
        Route::NotImplemented => {
            return Err(Nonconformance::NoSuchEndpoint(format!("{method} {path}")));
        }
    };
    let params = crate::http::decode::extract_params(method, content_type, body, query)
        .map_err(Nonconformance::Decode)?;
    let merged = crate::http::decode::merge_uri_params(&uri_params, params)
        .map_err(Nonconformance::Conflict)?;
    schema
        .validate(ep, &merged)
        .map_err(Nonconformance::Invalid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn ep(m: &str, p: &str) -> &'static Endpoint {
        schema().unwrap().endpoint(m, p).unwrap()
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_referenced_format_and_pattern_is_implemented() {
        let s = schema().unwrap();
        for f in s.referenced_formats() {
            let base = f
                .strip_suffix("-list")
                .or_else(|| f.strip_suffix("-opt"))
                .unwrap_or(&f);
            assert!(
                formats::CODE_FORMATS.contains(&base) || s.hash_format(base).is_some(),
                "format {f} is referenced but not implemented"
            );
        }
        for p in s.referenced_patterns() {
            perl::anchored_regex(&p).unwrap();
        }
        assert!(s.source.apidata_commit.len() == 40);
        assert!(s.source.formats_commit.len() == 40);
    }

    #[test]
    fn unknown_parameter_is_refused_like_pve() {
        let s = schema().unwrap();
        let e = s
            .validate(
                ep("GET", "/cluster/nextid"),
                &obj(json!({"vmid": "100", "bogus": "1"})),
            )
            .unwrap_err();
        assert_eq!(
            e.get("bogus").unwrap(),
            "property is not defined in schema and the schema does not allow additional properties"
        );
    }

    #[test]
    fn config_formats_and_messages() {
        let s = schema().unwrap();
        let put = ep("PUT", "/nodes/{node}/qemu/{vmid}/config");
        let base = json!({"node": "pve", "vmid": "100"});
        let check = |extra: Value| {
            let mut m = obj(base.clone());
            m.extend(obj(extra));
            s.validate(put, &m)
        };
        assert!(
            check(json!({
                "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr1,firewall=1",
                "ipconfig0": "ip=10.1.2.3/24,gw=10.1.2.1",
                "cicustom": "user=local:snippets/u.yaml,network=local:snippets/n.yaml",
                "tags": "clawy;inst-abc",
                "memory": "2048", "balloon": "0", "cores": "2", "sockets": "1",
                "cpu": "x86-64-v2-AES", "agent": "0", "onboot": "1",
                "nameserver": "1.1.1.1 9.9.9.9", "ciuser": "claw", "citype": "nocloud",
                "scsi0": "local:100/vm-100-disk-0.qcow2,size=2G", "boot": "order=scsi0;ide2;net0",
                "serial0": "socket", "vga": "serial0",
                "sshkeys": "ssh-ed25519%20AAAAC3Nz%2B%2F%3D%20me%40host%0A",
            }))
            .is_ok()
        );
        let e = check(json!({"net0": "virtio,bridge=vmbr1,model=e1000"})).unwrap_err();
        assert!(e["net0"].starts_with("invalid format - "), "{e:?}");
        let e = check(json!({"net0": "virtio=01:00:00:00:00:00"})).unwrap_err();
        assert_eq!(
            e["net0"],
            "invalid format - format error\nnet0.macaddr: invalid format - value does not look like a valid unicast MAC address\n\n"
        );
        let e = check(json!({"cores": "0"})).unwrap_err();
        assert_eq!(e["cores"], "value must have a minimum value of 1");
        let e = check(json!({"onboot": "true"})).unwrap_err();
        assert_eq!(e["onboot"], "type check ('boolean') failed - got 'true'");
        let e = check(json!({"sshkeys": "ssh-ed25519 AAAA"})).unwrap_err();
        assert_eq!(
            e["sshkeys"],
            "invalid format - invalid urlencoded string: ssh-ed25519 AAAA\n"
        );
        let e = check(json!({"ipconfig0": "gw=10.0.0.1"})).unwrap_err();
        assert!(
            e["ipconfig0"].contains("ipconfig0.ip: missing property required by 'ipconfig0.gw'"),
            "{e:?}"
        );
        let e = check(json!({"cpu": "pentium9"})).unwrap_err();
        assert!(
            e["cpu"].contains("Built-in cputype 'pentium9' is not defined"),
            "{e:?}"
        );
        let e = check(json!({"net32": "virtio,bridge=vmbr0"})).unwrap_err();
        assert!(e["net32"].starts_with("property is not defined"));
        let e = check(json!({"tags": "bad tag!"})).unwrap_err();
        assert_eq!(e["tags"], "invalid format - invalid characters in tag\n");
        let e = check(json!({"memory": "8"})).unwrap_err();
        assert!(
            e["memory"].contains("memory.current: value must have a minimum value of 16"),
            "{e:?}"
        );
        assert!(check(json!({"scsi0": "local:5,size=2G"})).is_ok());
        let e = check(json!({"vga": "bogus"})).unwrap_err();
        assert!(
            e["vga"].contains("vga.type: value 'bogus' does not have a value in the enumeration"),
            "{e:?}"
        );
        let e = check(json!({"serial0": "tcp"})).unwrap_err();
        assert_eq!(e["serial0"], "value does not match the regex pattern");
        let e = check(json!({"cores": ["1", "2"]})).unwrap_err();
        assert_eq!(e["cores"], "type check ('integer') failed - got ARRAY");
        assert!(check(json!({"onboot": true, "cores": 2})).is_ok());
    }

    #[test]
    fn property_strings_print_like_pve() {
        let s = schema().unwrap();
        let fmt = s.config_key_format("net0").unwrap();
        let parsed = s
            .parse_property_string(
                fmt,
                "virtio=BC:24:11:00:00:01,firewall=1,bridge=vmbr1",
                "net0",
                None,
            )
            .unwrap();
        assert_eq!(parsed["model"], "virtio");
        assert_eq!(parsed["macaddr"], "BC:24:11:00:00:01");
        let printed = s.print_property_string(fmt, &parsed, &[]).unwrap();
        assert_eq!(printed, "virtio=BC:24:11:00:00:01,bridge=vmbr1,firewall=1");
        let fmt = s.config_key_format("scsi0").unwrap();
        let mut d = s
            .parse_property_string(
                fmt,
                "local:100/vm-100-disk-0.qcow2,size=2147483648",
                "scsi0",
                None,
            )
            .unwrap();
        d.insert("discard".into(), "on".into());
        assert_eq!(
            s.print_property_string(fmt, &d, &[]).unwrap(),
            "local:100/vm-100-disk-0.qcow2,discard=on,size=2G"
        );
    }

    #[test]
    fn validate_request_decodes_like_pve_http_server() {
        // sshkeys percent-encoded once for PVE, then once more for the form body.
        let body = b"sshkeys=ssh-ed25519%2520AAAA%252B%252F%253D%2520me%250A&cores=2";
        let p = validate_request(
            "PUT",
            "/nodes/pve/qemu/100/config",
            Some("application/x-www-form-urlencoded"),
            body,
        )
        .unwrap();
        assert_eq!(p["sshkeys"], "ssh-ed25519%20AAAA%2B%2F%3D%20me%0A");
        // Encoded only once: the form decoding leaves spaces, which the format refuses.
        let body = b"sshkeys=ssh-ed25519%20AAAA";
        let e = validate_request("PUT", "/nodes/pve/qemu/100/config", None, body).unwrap_err();
        assert!(matches!(e, Nonconformance::Invalid(ref m) if m.contains_key("sshkeys")));
        // A raw '=' inside a form value truncates it (Perl's split(/=/) keeps 2 fields).
        let body = b"net0=virtio=BC:24:11:00:00:01,bridge=vmbr1";
        let p = validate_request("PUT", "/nodes/pve/qemu/100/config", None, body).unwrap();
        assert_eq!(p["net0"], "virtio");
        let e =
            validate_request("PUT", "/nodes/pve/qemu/100/config", None, b"vmid=101").unwrap_err();
        assert!(matches!(e, Nonconformance::Conflict(_)));
        let e = validate_request("GET", "/nodes/pve/qemu/100/bogus", None, b"").unwrap_err();
        assert!(matches!(e, Nonconformance::NoSuchEndpoint(_)));
        let p = validate_request(
            "POST",
            "/nodes/pve/qemu/9000/clone",
            Some("application/json"),
            br#"{"newid": 101, "full": false, "name": "c1"}"#,
        )
        .unwrap();
        assert_eq!(p["newid"], 101);
    }
}
