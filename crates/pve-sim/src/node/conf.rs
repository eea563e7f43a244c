//! VM config files in PVE's format (`qemu-server/{vmid}.conf`): `key: value` lines
//! sorted by key, the description as `#` comment lines at the top (encoded like
//! PVE's `encode_text`), a `[PENDING]` section for changes not yet applied, and a
//! `digest` that is the SHA-1 of the file's bytes.

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};

use crate::http::decode::uri_unescape;

/// Keys PVE keeps in configs that the API cannot set.
const INTERNAL_KEYS: &[&str] = &[
    "meta",
    "parent",
    "runningcpu",
    "runningmachine",
    "running-nets-host-mtu",
    "snaptime",
    "vmstate",
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmConf {
    /// Current settings; `description` is one of them.
    pub main: BTreeMap<String, String>,
    /// `[PENDING]`: values applied at the next start; `delete` lists keys to drop.
    pub pending: BTreeMap<String, String>,
    /// SHA-1 (hex) of the file as read.
    pub digest: String,
}

impl VmConf {
    pub fn lock(&self) -> Option<&str> {
        self.main
            .get("lock")
            .map(String::as_str)
            .filter(|l| !l.is_empty())
    }

    pub fn is_template(&self) -> bool {
        self.main.get("template").is_some_and(|t| t == "1")
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.main.get(k).map(String::as_str)
    }

    /// `check_lock`.
    pub fn check_lock(&self) -> Result<(), String> {
        match self.lock() {
            Some(l) => Err(format!("VM is locked ({l})\n")),
            None => Ok(()),
        }
    }

    /// Keys pending deletion (`!key` = forced).
    pub fn pending_delete(&self) -> BTreeMap<String, bool> {
        let mut out = BTreeMap::new();
        if let Some(d) = self.pending.get("delete") {
            for e in d.replace([',', ';'], " ").split_whitespace() {
                match e.strip_prefix('!') {
                    Some(k) => out.insert(k.to_string(), true),
                    None => out.insert(e.to_string(), false),
                };
            }
        }
        out
    }

    pub fn set_pending_delete(&mut self, del: &BTreeMap<String, bool>) {
        if del.is_empty() {
            self.pending.remove("delete");
        } else {
            let s: Vec<String> = del
                .iter()
                .map(|(k, f)| if *f { format!("!{k}") } else { k.clone() })
                .collect();
            self.pending.insert("delete".into(), s.join(","));
        }
    }

    /// `load_current_config`: the config with pending values applied unless
    /// `current` is set.
    pub fn view(&self, current: bool) -> BTreeMap<String, String> {
        let mut out = self.main.clone();
        if !current {
            for (k, v) in &self.pending {
                if k != "delete" {
                    out.insert(k.clone(), v.clone());
                }
            }
            for k in self.pending_delete().keys() {
                out.remove(k);
            }
        }
        out
    }

    /// `vmconfig_apply_pending` for a stopped VM: every pending value becomes
    /// current, pending deletions are done.
    pub fn apply_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let del = {
            let tmp = VmConf {
                pending: pending.clone(),
                ..Default::default()
            };
            tmp.pending_delete()
        };
        for k in del.keys() {
            self.main.remove(k);
        }
        for (k, v) in pending {
            if k != "delete" {
                self.main.insert(k, v);
            }
        }
    }

    /// `cleanup_pending`: drop pending values equal to the current ones and
    /// deletions of keys that are not set.
    pub fn cleanup_pending(&mut self) {
        let same: Vec<String> = self
            .pending
            .iter()
            .filter(|(k, v)| *k != "delete" && self.main.get(*k) == Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        for k in same {
            self.pending.remove(&k);
        }
        let del: BTreeMap<String, bool> = self
            .pending_delete()
            .into_iter()
            .filter(|(k, _)| self.main.contains_key(k))
            .collect();
        self.set_pending_delete(&del);
    }

    /// Parse a config file (non-strict: bad lines are skipped, as PVE warns).
    pub fn parse(raw: &[u8]) -> VmConf {
        let digest = hex::encode(Sha1::digest(raw));
        let text = String::from_utf8_lossy(raw);
        let mut conf = VmConf {
            digest,
            ..Default::default()
        };
        #[derive(PartialEq)]
        enum Section {
            Main,
            Pending,
            Skip,
        }
        let mut section = Section::Main;
        let mut descr: Option<String> = None;
        let finish = |descr: &mut Option<String>, target: &mut BTreeMap<String, String>| {
            if let Some(d) = descr.take() {
                target.insert("description".into(), d.trim_end().to_string());
            }
        };
        for line in text.split('\n') {
            if line.trim().is_empty() {
                continue;
            }
            let trimmed = line.trim_end();
            if trimmed.starts_with('[') && trimmed.ends_with(']') {
                let target = match section {
                    Section::Main => &mut conf.main,
                    Section::Pending => &mut conf.pending,
                    Section::Skip => &mut BTreeMap::new(),
                };
                finish(&mut descr, target);
                section = if trimmed.eq_ignore_ascii_case("[PENDING]") {
                    Section::Pending
                } else {
                    Section::Skip
                };
                continue;
            }
            if section == Section::Skip {
                continue;
            }
            let target = if section == Section::Main {
                &mut conf.main
            } else {
                &mut conf.pending
            };
            if let Some(c) = line.strip_prefix('#') {
                let d = descr.get_or_insert_with(String::new);
                d.push_str(&decode_text(c));
                d.push('\n');
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let valid_key = k.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !valid_key {
                continue;
            }
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            if k == "description" {
                let d = descr.get_or_insert_with(String::new);
                d.push_str(&decode_text(v));
                continue;
            }
            let k = if k == "cdrom" { "ide2" } else { k };
            target.insert(k.to_string(), v.to_string());
        }
        let target = if section == Section::Pending {
            &mut conf.pending
        } else {
            &mut conf.main
        };
        finish(&mut descr, target);
        conf
    }

    /// Render the file. A value with a line feed is refused as PVE's writer does.
    pub fn render(&self) -> Result<String, String> {
        let mut raw = render_section(&self.main, false)?;
        if !self.pending.is_empty() {
            raw.push_str("\n[PENDING]\n");
            raw.push_str(&render_section(&self.pending, true)?);
        }
        Ok(raw)
    }

    pub fn is_internal_key(k: &str) -> bool {
        INTERNAL_KEYS.contains(&k)
    }
}

fn render_section(map: &BTreeMap<String, String>, pending: bool) -> Result<String, String> {
    let mut raw = String::new();
    if let Some(d) = map.get("description") {
        if d.is_empty() {
            if pending {
                raw.push_str("#\n");
            }
        } else {
            for line in d.split('\n') {
                raw.push('#');
                raw.push_str(&encode_text(line));
                raw.push('\n');
            }
        }
    }
    for (k, v) in map {
        if k == "description" || k == "digest" {
            continue;
        }
        if v.contains('\n') || v.contains('\r') {
            return Err(format!(
                "unable to parse value of '{k}' - property contains a line feed\n"
            ));
        }
        raw.push_str(&format!("{k}: {v}\n"));
    }
    Ok(raw)
}

/// `encode_text`: percent-encode control and non-ASCII bytes, `:` and `%`.
pub fn encode_text(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        let safe = matches!(b, 0x20..=0x24 | 0x26..=0x39 | 0x3b..=0x7e);
        if safe {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn decode_text(s: &str) -> String {
    String::from_utf8_lossy(&uri_unescape(s.as_bytes())).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn round_trip_with_description_and_pending() {
        let mut c = VmConf::default();
        c.main.insert("cores".into(), "2".into());
        c.main.insert("name".into(), "vm1".into());
        c.main.insert(
            "description".into(),
            "clawy instance: 42\nowner 100% ü".into(),
        );
        c.pending.insert("memory".into(), "1024".into());
        c.pending.insert("delete".into(), "onboot".into());
        let raw = c.render().unwrap();
        assert!(
            raw.starts_with("#clawy instance%3A 42\n#owner 100%25 %C3%BC\ncores: 2\nname: vm1\n")
        );
        assert!(raw.contains("\n[PENDING]\ndelete: onboot\nmemory: 1024\n"));
        let back = VmConf::parse(raw.as_bytes());
        assert_eq!(back.main, c.main);
        assert_eq!(back.pending, c.pending);
        assert_eq!(back.digest.len(), 40);
        assert_eq!(back.view(false)["memory"], "1024");
        assert!(!back.view(false).contains_key("onboot"));
    }

    #[test]
    fn line_feeds_are_refused() {
        let mut c = VmConf::default();
        c.main.insert("ciuser".into(), "a\nruncmd: x".into());
        assert_eq!(
            c.render().unwrap_err(),
            "unable to parse value of 'ciuser' - property contains a line feed\n"
        );
    }
}
