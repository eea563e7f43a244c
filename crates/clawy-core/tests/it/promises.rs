//! The promise list is complete, and each promise is proven by a test that names it.

use clawy_core::promises;
use std::path::{Path, PathBuf};

const ALL_IDS: &[&str] = &[
    "ISO-1", "ISO-2", "ISO-3", "ISO-4", "ISO-5", "DATA-1", "DATA-2", "DATA-3", "DATA-4",
    "ACCESS-1", "ACCESS-2", "ACCESS-3", "AUTH-1", "AUTH-2", "AUTH-3", "AUTH-4", "AUTH-5", "NET-1",
    "NET-2", "NET-3", "NET-4", "NET-5", "REPORT-1",
];

/// Promises whose tests must exist by now (issues 2, 3 and 4). Grows as work lands.
const REQUIRED_NOW: &[&str] = &[
    "AUTH-1", "AUTH-2", "AUTH-3", "AUTH-5", "DATA-3", "DATA-4", "ACCESS-2", "ACCESS-3", "REPORT-1",
    "ISO-1", "ISO-2", "ISO-3", "ISO-4", "ISO-5", "NET-3", "NET-5", "DATA-2", "ACCESS-1",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[test]
fn promise_list_has_every_id_with_text() {
    let ids: Vec<&str> = promises::all().iter().map(|p| p.id).collect();
    assert_eq!(ids, ALL_IDS);
    for p in promises::all() {
        assert!(p.id.starts_with(p.category), "{}", p.id);
        assert!(promises::CATEGORIES.iter().any(|c| c.id == p.category));
        assert!(p.text.len() > 40 && !p.title.is_empty());
    }
    assert_eq!(promises::by_id("AUTH-2").unwrap().category, "AUTH");
    assert_eq!(promises::in_category("NET").count(), 5);
}

#[test]
fn promise_list_matches_security_promises_md() {
    // The design folder sits beside the repository (in CI too); skip if absent.
    let md = workspace_root().join("../shared/SECURITY-PROMISES.md");
    let Ok(text) = std::fs::read_to_string(&md) else {
        eprintln!("{} not found; skipping the comparison", md.display());
        return;
    };
    let mut in_md: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|id| id.contains('-') && id.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .map(str::to_string)
        .collect();
    in_md.sort();
    let mut ours: Vec<String> = ALL_IDS.iter().map(|s| s.to_string()).collect();
    ours.sort();
    assert_eq!(in_md, ours);
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if !p.ends_with("target") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `AUTH-1` as written in a comment, or `auth_1` in a test name (not `auth_10`).
fn mentions(text: &str, id: &str) -> bool {
    let snake = id.to_lowercase().replace('-', "_");
    [id.to_string(), snake].iter().any(|needle| {
        text.match_indices(needle.as_str()).any(|(i, _)| {
            !text[i + needle.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
    })
}

/// Test code: files under `crates/*/tests`, and the part of `crates/*/src` files after
/// `#[cfg(test)]`. This file and the promise list itself do not count.
fn test_code() -> Vec<(PathBuf, String)> {
    let root = workspace_root().join("crates");
    let me = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/promises.rs");
    let mut out = Vec::new();
    let Ok(crates) = std::fs::read_dir(&root) else {
        return out;
    };
    for c in crates.flatten() {
        let mut files = Vec::new();
        rust_files(&c.path().join("tests"), &mut files);
        for f in files {
            if f.canonicalize().ok() != me.canonicalize().ok() {
                if let Ok(t) = std::fs::read_to_string(&f) {
                    out.push((f, t));
                }
            }
        }
        let mut files = Vec::new();
        rust_files(&c.path().join("src"), &mut files);
        for f in files {
            if let Ok(t) = std::fs::read_to_string(&f) {
                if let Some(i) = t.find("#[cfg(test)]") {
                    out.push((f, t[i..].to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn promise_ids_are_proven_by_named_tests() {
    let code = test_code();
    let missing: Vec<&str> = ALL_IDS
        .iter()
        .copied()
        .filter(|id| !code.iter().any(|(_, t)| mentions(t, id)))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "promises without a test that names them yet: {}",
            missing.join(", ")
        );
    }
    let required_missing: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|id| REQUIRED_NOW.contains(id))
        .collect();
    assert!(
        required_missing.is_empty(),
        "these promises must be proven by a test that names them (e.g. `fn auth_2_…` or a `// AUTH-2` comment in a test): {}",
        required_missing.join(", ")
    );
}

#[test]
fn mentions_matches_ids_not_prefixes() {
    assert!(mentions("fn auth_1_password_policy()", "AUTH-1"));
    assert!(mentions("// proves AUTH-1.", "AUTH-1"));
    assert!(!mentions("fn auth_10_x()", "AUTH-1"));
    assert!(!mentions("nothing", "NET-5"));
}
