//! Parameter validation with the semantics of PVE's `PVE::JSONSchema` (check_prop,
//! check_object, check_type, check_format, parse_property_string), so the errors
//! map and its texts are the ones a real node answers.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Schema;
use super::formats::{self, split_list};
use super::perl::{self, Scalar, anchored_regex};

/// Parameter name (or `param.subkey`) → PVE's message.
pub type Errors = BTreeMap<String, String>;

pub(crate) fn add_error(errors: &mut Errors, path: &str, msg: &str) {
    let path = if path.is_empty() { "_root" } else { path };
    match errors.get_mut(path) {
        // PVE joins with '\n' in single quotes: a literal backslash-n.
        Some(old) => {
            old.push_str("\\n");
            old.push_str(msg);
        }
        None => {
            errors.insert(path.to_string(), msg.to_string());
        }
    }
}

fn join_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(schema: &Map<String, Value>, key: &str) -> bool {
    perl::truthy(schema.get(key))
}

impl Schema {
    /// `check_object` over a parameter hash.
    pub(crate) fn check_object(
        &self,
        path: &str,
        props: &Map<String, Value>,
        value: &Map<String, Value>,
        additional_allowed: bool,
        errors: &mut Errors,
    ) {
        // Aliased keys are remapped to their target first.
        let mut value = value.clone();
        let keys: Vec<String> = value.keys().cloned().collect();
        for k in &keys {
            let Some(sub) = self.lookup_prop(props, k) else {
                continue;
            };
            let Some(alias) = sub.get("alias").and_then(Value::as_str) else {
                continue;
            };
            if value.get(alias).is_some_and(|v| !v.is_null()) {
                add_error(
                    errors,
                    &join_path(path, k),
                    &format!("cannot set both '{k}' and its alias target '{alias}'"),
                );
            } else if let Some(v) = value.remove(k) {
                value.insert(alias.to_string(), v);
            }
        }
        for (k, sub) in props {
            let Some(sub) = sub.as_object() else { continue };
            if k.ends_with("[n]") {
                // Expanded keys (net0, net1, …) are checked below with the rest.
                continue;
            }
            self.check_prop(value.get(k), sub, &join_path(path, k), errors);
        }
        for (k, v) in &value {
            let newpath = join_path(path, k);
            if let Some(sub) = self.lookup_prop(props, k) {
                if props.get(k).is_none() {
                    // An expanded `[n]` key.
                    self.check_prop(Some(v), sub, &newpath, errors);
                }
                if let Some(req) = sub.get("requires").and_then(Value::as_str) {
                    if value.get(req).is_none_or(Value::is_null) {
                        add_error(
                            errors,
                            &join_path(path, req),
                            &format!("missing property required by '{newpath}'"),
                        );
                    }
                }
                continue;
            }
            if !additional_allowed {
                add_error(
                    errors,
                    &newpath,
                    "property is not defined in schema and the schema does not allow additional properties",
                );
            }
        }
    }

    /// The schema of `key` in `props`, expanding `name[n]` to `name0`…`name{N-1}`.
    pub fn lookup_prop<'a>(
        &'a self,
        props: &'a Map<String, Value>,
        key: &str,
    ) -> Option<&'a Map<String, Value>> {
        if let Some(v) = props.get(key) {
            return v.as_object();
        }
        let digits = key.len() - key.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 || digits == key.len() {
            return None;
        }
        let (base, idx) = key.split_at(key.len() - digits);
        if idx.len() > 1 && idx.starts_with('0') {
            return None;
        }
        let idx: u32 = idx.parse().ok()?;
        let name = format!("{base}[n]");
        let max = *self.array_ranges.get(&name)?;
        if idx >= max {
            return None;
        }
        props.get(&name)?.as_object()
    }

    /// `check_prop` for one scalar parameter.
    pub(crate) fn check_prop(
        &self,
        value: Option<&Value>,
        schema: &Map<String, Value>,
        path: &str,
        errors: &mut Errors,
    ) {
        if schema.contains_key("alias") {
            return;
        }
        let scalar = perl::scalar_of(value);
        if scalar == Scalar::Undef {
            if !flag(schema, "optional") && !flag(schema, "group") {
                add_error(errors, path, "property is missing and it is not optional");
            }
            return;
        }
        let ty = schema.get("type").and_then(Value::as_str);
        if !check_type(path, ty, &scalar, errors) {
            return;
        }
        let Scalar::Str(s) = scalar else {
            // References (and JSON booleans) get no further scalar checks.
            return;
        };
        if let Some(format) = schema.get("format") {
            if let Err(msg) = self.check_format(format, &s, path) {
                add_error(errors, path, &format!("invalid format - {msg}"));
                return;
            }
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match anchored_regex(pattern) {
                Ok(re) if re.is_match(&s) => {}
                Ok(_) => {
                    add_error(errors, path, "value does not match the regex pattern");
                    return;
                }
                Err(e) => {
                    add_error(errors, path, &e);
                    return;
                }
            }
        }
        let len = s.chars().count() as f64;
        if let Some(max) = schema.get("maxLength") {
            if perl::schema_number(max).is_some_and(|m| len > m) {
                let m = perl::schema_number_text(max);
                add_error(
                    errors,
                    path,
                    &format!("value may only be {m} characters long"),
                );
                return;
            }
        }
        if let Some(min) = schema.get("minLength") {
            if perl::schema_number(min).is_some_and(|m| len < m) {
                let m = perl::schema_number_text(min);
                add_error(
                    errors,
                    path,
                    &format!("value must be at least {m} characters long"),
                );
                return;
            }
        }
        if perl::is_number(&s) {
            let n = perl::numify(&s);
            if let Some(max) = schema.get("maximum") {
                if perl::schema_number(max).is_some_and(|m| n > m) {
                    let m = perl::schema_number_text(max);
                    add_error(
                        errors,
                        path,
                        &format!("value must have a maximum value of {m}"),
                    );
                    return;
                }
            }
            if let Some(min) = schema.get("minimum") {
                if perl::schema_number(min).is_some_and(|m| n < m) {
                    let m = perl::schema_number_text(min);
                    add_error(
                        errors,
                        path,
                        &format!("value must have a minimum value of {m}"),
                    );
                    return;
                }
            }
        }
        if let Some(Value::Array(items)) = schema.get("enum") {
            let values: Vec<String> = items.iter().map(perl::stringify).collect();
            if !values.contains(&s) {
                add_error(
                    errors,
                    path,
                    &format!(
                        "value '{s}' does not have a value in the enumeration '{}'",
                        values.join(", ")
                    ),
                );
            }
        }
    }

    /// `check_format`: a named format, `name-list`/`name-opt`, or an inline
    /// property-string format. Err is PVE's `die` text.
    pub(crate) fn check_format(
        &self,
        format: &Value,
        value: &str,
        path: &str,
    ) -> Result<(), String> {
        match format {
            Value::Object(fmt) => self
                .parse_property_string(fmt, value, path, None)
                .map(|_| ()),
            Value::String(name) => self.check_named_format(name, value, path),
            _ => Ok(()),
        }
    }

    fn check_named_format(&self, format: &str, value: &str, path: &str) -> Result<(), String> {
        if format == "regex" {
            return Ok(());
        }
        let (name, kind) = if let Some(n) = format.strip_suffix("-list") {
            (n, "list")
        } else if let Some(n) = format.strip_suffix("-opt") {
            (n, "opt")
        } else {
            (format, "none")
        };
        let hash = self.hash_format(name);
        let is_code = formats::CODE_FORMATS.contains(&name);
        if hash.is_none() && !is_code {
            return Err(format!("undefined format '{format}'\n"));
        }
        if kind != "none" && hash.is_some() {
            return Err(format!("'-{kind}' format must have code ref, not hash\n"));
        }
        let run = |v: &str| -> Result<(), String> {
            formats::check_code_format(name, v).unwrap_or(Ok(()))
        };
        match kind {
            "list" => {
                for v in split_list(value) {
                    run(&v)?;
                }
                Ok(())
            }
            "opt" => {
                if perl::truthy(Some(&Value::String(value.to_string()))) {
                    run(value)?;
                }
                Ok(())
            }
            _ => match hash {
                Some(fmt) => self
                    .parse_property_string(fmt, value, path, Some(name))
                    .map(|_| ()),
                None => run(value),
            },
        }
    }

    /// `parse_property_string`: PVE's `key=value,…` syntax with default keys, key
    /// aliases and boolean parsing, then `check_object` of the result. `validator`
    /// names a format whose extra validation runs afterwards.
    pub fn parse_property_string(
        &self,
        format: &Map<String, Value>,
        data: &str,
        path: &str,
        validator: Option<&str>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut res: Map<String, Value> = Map::new();
        let mut default_key: Option<String> = None;
        for part in data.split(',') {
            if part.trim().is_empty() {
                continue;
            }
            if let Some((k, v)) = split_key_value(part) {
                let mut k = k.to_string();
                if res.contains_key(&k) {
                    return Err(format!(
                        "duplicate key in comma-separated list property: {k}\n"
                    ));
                }
                let mut schema = format.get(&k).and_then(Value::as_object);
                if let Some(alias) = schema.and_then(|s| s.get("alias")).and_then(Value::as_str) {
                    if let Some(key_alias) = schema
                        .and_then(|s| s.get("keyAlias"))
                        .and_then(Value::as_str)
                    {
                        if res.contains_key(key_alias) {
                            return Err(format!("key alias '{key_alias}' is already defined\n"));
                        }
                        res.insert(key_alias.to_string(), Value::String(k.clone()));
                    }
                    k = alias.to_string();
                    schema = format.get(&k).and_then(Value::as_object);
                    if res.contains_key(&k) {
                        return Err(format!("key '{k}' is already defined (via alias)\n"));
                    }
                }
                let Some(schema) = schema else {
                    return Err(format!(
                        "invalid key in comma-separated list property: {k}\n"
                    ));
                };
                let mut v = v.to_string();
                if schema.get("type").and_then(Value::as_str) == Some("boolean") {
                    if let Some(b) = parse_boolean(&v) {
                        v = b.to_string();
                    }
                }
                res.insert(k, Value::String(v));
            } else if !part.contains('=') {
                if let Some(dk) = &default_key {
                    return Err(format!(
                        "duplicate key in comma-separated list property: {dk}\n"
                    ));
                }
                let dk = format
                    .iter()
                    .find(|(_, s)| s.as_object().is_some_and(|s| flag(s, "default_key")))
                    .map(|(k, s)| (k.clone(), s.clone()));
                let Some((dk, dschema)) = dk else {
                    return Err(
                        "value without key, but schema does not define a default key\n".into(),
                    );
                };
                if perl::truthy(res.get(&dk)) {
                    return Err(format!(
                        "duplicate key in comma-separated list property: {dk}\n"
                    ));
                }
                let mut v = part.to_string();
                if dschema.get("type").and_then(Value::as_str) == Some("boolean") {
                    if let Some(b) = parse_boolean(&v) {
                        v = b.to_string();
                    }
                }
                res.insert(dk.clone(), Value::String(v));
                default_key = Some(dk);
            } else {
                return Err("missing key in comma-separated list property\n".into());
            }
        }
        let mut errors = Errors::new();
        self.check_object(path, format, &res, false, &mut errors);
        if !errors.is_empty() {
            let mut msg = String::from("format error\n");
            for (k, v) in &errors {
                msg.push_str(&format!("{k}: {v}\n"));
            }
            return Err(msg);
        }
        if validator == Some("pve-vm-cpu-conf") {
            self.validate_vm_cpu_conf(&res)?;
        }
        Ok(res
            .into_iter()
            .map(|(k, v)| (k, perl::stringify(&v)))
            .collect())
    }

    fn validate_vm_cpu_conf(&self, cpu: &Map<String, Value>) -> Result<(), String> {
        let cputype = cpu.get("cputype").map(perl::stringify).unwrap_or_default();
        if cputype.is_empty() {
            return Err("CPU is missing cputype\n".into());
        }
        if let Some(name) = cputype.strip_prefix("custom-") {
            // The simulated node has no custom CPU models.
            return Err(format!("Custom cputype '{name}' not found\n"));
        }
        if !self.cpu_models.contains(&cputype) && !self.cpu_builtin.contains(&cputype) {
            return Err(format!(
                "Built-in cputype '{cputype}' is not defined (missing 'custom-' prefix?)\n"
            ));
        }
        if let Some(flags) = cpu.get("flags").map(perl::stringify) {
            let ok = flags.split(';').all(|f| {
                let name = f.strip_prefix(['+', '-']);
                name.is_some_and(|n| self.cpu_vm_flags.iter().any(|x| x == n))
            });
            if !flags.is_empty() && !ok {
                return Err(format!(
                    "VM-specific CPU flags must be a subset of: {}\n",
                    self.cpu_vm_flags.join(", ")
                ));
            }
        }
        if cpu.contains_key("reported-model") {
            return Err(
                "Property 'reported-model' not allowed in VM-specific CPU config.\n".into(),
            );
        }
        Ok(())
    }

    /// `print_property_string`: default key first (combined with its key alias, as
    /// in `virtio=MAC`), then required keys, then the rest, each sorted.
    pub fn print_property_string(
        &self,
        format: &Map<String, Value>,
        data: &BTreeMap<String, String>,
        skip: &[&str],
    ) -> Result<String, String> {
        let mut default_key = None;
        let mut key_alias_props: BTreeMap<String, String> = BTreeMap::new();
        for (k, s) in format {
            let Some(s) = s.as_object() else { continue };
            if flag(s, "default_key") {
                default_key = Some(k.clone());
            }
            if let (Some(ka), Some(a)) = (
                s.get("keyAlias").and_then(Value::as_str),
                s.get("alias").and_then(Value::as_str),
            ) {
                key_alias_props.insert(ka.to_string(), a.to_string());
            }
        }
        let mut done: std::collections::BTreeSet<String> =
            skip.iter().map(|s| s.to_string()).collect();
        let mut out: Vec<String> = Vec::new();
        let value_text = |key: &str, v: &str, fmt: Option<&Value>| -> Result<String, String> {
            if fmt.and_then(Value::as_str) == Some("disk-size") {
                if let Some(n) = formats::parse_size(v) {
                    return Ok(formats::format_size(n));
                }
            }
            if v.contains(',') {
                return Err(format!("illegal value with commas for {key}\n"));
            }
            Ok(v.to_string())
        };
        let mut add = |key: &str,
                       is_default: bool,
                       done: &mut std::collections::BTreeSet<String>|
         -> Result<(), String> {
            if !done.insert(key.to_string()) {
                return Ok(());
            }
            let Some(v) = data.get(key) else {
                return Ok(());
            };
            let phash = format.get(key).and_then(Value::as_object);
            if let Some(combine) = key_alias_props.get(key) {
                if let Some(cv) = data.get(combine) {
                    let cfmt = format
                        .get(combine)
                        .and_then(Value::as_object)
                        .and_then(|s| s.get("format"));
                    let a = value_text(key, v, phash.and_then(|s| s.get("format")))?;
                    let b = value_text(combine, cv, cfmt)?;
                    out.push(format!("{a}={b}"));
                    done.insert(combine.clone());
                    return Ok(());
                }
            }
            let Some(phash) = phash else {
                return Err(format!("invalid key '{key}'\n"));
            };
            let text = value_text(key, v, phash.get("format"))?;
            if is_default {
                out.push(text);
            } else {
                out.push(format!("{key}={text}"));
            }
            Ok(())
        };
        if let Some(dk) = &default_key {
            add(dk, true, &mut done)?;
        }
        for k in data.keys() {
            let required = format
                .get(k)
                .and_then(Value::as_object)
                .is_some_and(|s| !flag(s, "optional"));
            if required {
                add(k, false, &mut done)?;
            }
        }
        for k in data.keys() {
            add(k, false, &mut done)?;
        }
        Ok(out.join(","))
    }
}

/// `/^([^=]+)=(.+)$/` on one comma-separated part.
fn split_key_value(part: &str) -> Option<(&str, &str)> {
    let (k, v) = part.split_once('=')?;
    let v_ok = !v.is_empty() && !v.trim_end_matches('\n').contains('\n') && v != "\n";
    if k.is_empty() || !v_ok {
        return None;
    }
    Some((k, v.strip_suffix('\n').unwrap_or(v)))
}

/// `parse_boolean`.
pub fn parse_boolean(v: &str) -> Option<u8> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(1),
        "0" | "off" | "no" | "false" => Some(0),
        _ => None,
    }
}

/// `check_type`; returns false (after recording the error) when the type is wrong.
fn check_type(path: &str, ty: Option<&str>, v: &Scalar, errors: &mut Errors) -> bool {
    let Some(ty) = ty else { return true };
    if ty == "any" {
        return true;
    }
    match v {
        Scalar::Undef => true,
        Scalar::Ref(r) => match (ty, *r) {
            ("array", "ARRAY") | ("object", "HASH") => true,
            _ => {
                if ty == "array" || ty == "object" {
                    add_error(errors, path, &format!("type check ('{ty}') failed"));
                } else {
                    add_error(
                        errors,
                        path,
                        &format!("type check ('{ty}') failed - got {r}"),
                    );
                }
                false
            }
        },
        Scalar::Bool(_) => {
            if ty == "boolean" {
                true
            } else if ty == "array" || ty == "object" {
                add_error(errors, path, &format!("type check ('{ty}') failed"));
                false
            } else {
                add_error(
                    errors,
                    path,
                    &format!("type check ('{ty}') failed - got JSON::PP::Boolean"),
                );
                false
            }
        }
        Scalar::Str(s) => {
            let ok = match ty {
                "boolean" => s == "1" || s == "0",
                "integer" => perl::is_integer(s),
                "number" => perl::is_number(s),
                "array" | "object" => {
                    add_error(errors, path, &format!("type check ('{ty}') failed"));
                    return false;
                }
                _ => true,
            };
            if !ok {
                add_error(
                    errors,
                    path,
                    &format!("type check ('{ty}') failed - got '{s}'"),
                );
            }
            ok
        }
    }
}
