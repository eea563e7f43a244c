//! docs/ARCHITECTURE.md is a true map: every crate (`clawy-…`) and top-level module
//! (`clawy_crate::module`) it names exists, every crate of the workspace is named, and
//! every file it links is inside the repository. (Here, in the test kit, because the
//! map covers the whole workspace and needs no database.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn map() -> String {
    std::fs::read_to_string(repo().join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md")
}

/// Text between backticks.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn workspace_crates() -> BTreeSet<String> {
    std::fs::read_dir(repo().join("crates"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            e.path()
                .join("Cargo.toml")
                .exists()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

fn is_crate_name(s: &str) -> bool {
    s.starts_with("clawy-") && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

#[test]
fn architecture_map_names_only_what_exists_and_every_crate() {
    let text = map();
    let crates = workspace_crates();
    assert!(crates.len() >= 8, "the workspace is read: {crates:?}");
    let mut named = BTreeSet::new();
    let mut modules = 0;
    for span in code_spans(&text) {
        // Any workspace crate counts when named (also one without the `clawy-`
        // prefix); a `clawy-…` name that is no crate is an error.
        if crates.contains(span) {
            named.insert(span.to_string());
        } else {
            assert!(
                !is_crate_name(span),
                "ARCHITECTURE.md names crate `{span}`, which does not exist"
            );
        }
        // `clawy_core::instances` (and deeper paths): the crate and its top-level module.
        let mut parts = span.split("::");
        if let (Some(krate), Some(module)) = (parts.next(), parts.next()) {
            if !krate.starts_with("clawy_") {
                continue;
            }
            let module: String = module
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let dir = krate.replace('_', "-");
            assert!(
                crates.contains(&dir),
                "ARCHITECTURE.md names crate `{krate}` (in `{span}`), which does not exist"
            );
            named.insert(dir.clone());
            let src = repo().join("crates").join(&dir).join("src");
            assert!(
                src.join(format!("{module}.rs")).exists()
                    || src.join(&module).join("mod.rs").exists(),
                "ARCHITECTURE.md names module `{krate}::{module}`, which does not exist"
            );
            modules += 1;
        }
    }
    assert!(
        modules >= 30,
        "the module tables are read ({modules} modules)"
    );
    let missing: Vec<_> = crates.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name the crates {missing:?}"
    );
}

#[test]
fn architecture_map_links_only_files_in_the_repository() {
    let text = map();
    let docs = repo().join("docs");
    let root = repo().canonicalize().unwrap();
    let mut links = 0;
    for (i, _) in text.match_indices("](") {
        let target = text[i + 2..].split(')').next().unwrap_or("");
        if target.starts_with("http") || target.starts_with('#') {
            continue;
        }
        links += 1;
        let path = docs.join(target.split('#').next().unwrap_or(""));
        let path = path
            .canonicalize()
            .unwrap_or_else(|_| panic!("ARCHITECTURE.md links `{target}`, which does not exist"));
        assert!(
            path.starts_with(&root),
            "ARCHITECTURE.md links `{target}`, outside the repository"
        );
    }
    assert!(links >= 1, "the promise list is linked");
    for outside in ["DESIGN.md", "SECURITY-PROMISES.md", "shared/"] {
        assert!(
            !text.contains(outside),
            "ARCHITECTURE.md refers to `{outside}`, outside the repository"
        );
    }
}
