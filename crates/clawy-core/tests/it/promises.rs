//! The promise list is complete, and each promise is proven by a test that names it.

use clawy_core::promises;
use std::path::{Path, PathBuf};

const ALL_IDS: &[&str] = &[
    "ISO-1", "ISO-2", "ISO-3", "ISO-4", "ISO-5", "DATA-1", "DATA-2", "DATA-3", "DATA-4", "DATA-5",
    "ACCESS-1", "ACCESS-2", "ACCESS-3", "AUTH-1", "AUTH-2", "AUTH-3", "AUTH-4", "AUTH-5", "NET-1",
    "NET-2", "NET-3", "NET-4", "NET-5", "REPORT-1",
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

/// The design folder: `CLAWY_SHARED_DIR`, else `../shared` beside the checkout, where
/// a git worktree counts from its main checkout (`.git` is then a file naming it).
fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CLAWY_SHARED_DIR") {
        return PathBuf::from(d);
    }
    let root = workspace_root();
    let beside = root.join("../shared");
    if beside.is_dir() {
        return beside;
    }
    // `gitdir: /work/main/.git/worktrees/<name>` -> /work/main/../shared
    std::fs::read_to_string(root.join(".git"))
        .ok()
        .and_then(|t| {
            let gitdir = PathBuf::from(t.trim().strip_prefix("gitdir: ")?);
            let main_git = gitdir.ancestors().find(|a| a.ends_with(".git"))?;
            Some(main_git.parent()?.join("../shared"))
        })
        .unwrap_or(beside)
}

#[test]
fn promise_list_matches_security_promises_md() {
    // The design folder sits beside the repository (in CI too). Without it the
    // published list cannot be checked, so that is a failure, never a skip.
    let md = shared_dir().join("SECURITY-PROMISES.md");
    let text = std::fs::read_to_string(&md).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; the promise list must be beside the checkout (or set CLAWY_SHARED_DIR)",
            md.display()
        )
    });
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

/// The names of the functions marked `#[test]` or `#[tokio::test(…)]` in `text`:
/// only those count as proof, never comments, helpers or module docs. Other
/// attributes, doc comments and `pub`/`async` may sit between the mark and `fn`.
fn test_fn_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut marked = false;
    for line in text.lines() {
        let mut l = line.trim();
        if l.starts_with("#[test]") || l.starts_with("#[tokio::test") {
            marked = true;
            // `#[test] fn x()` on one line.
            l = l.split_once(']').map_or("", |(_, rest)| rest.trim());
        }
        if !marked || l.is_empty() || l.starts_with("#[") || l.starts_with("//") {
            continue;
        }
        let sig = l
            .trim_start_matches("pub ")
            .trim_start_matches("async ")
            .trim_start_matches("unsafe ");
        marked = false;
        if let Some(rest) = sig.strip_prefix("fn ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names
}

/// The naming rule: the id in snake case is a run of whole `_`-separated segments of
/// the name (`auth_1_password_policy`, `iso_3_iso_5_rules_in_order` for both ids);
/// `auth_10_x` does not name AUTH-1, and `iso_3_x` names nothing.
fn names_promise(test_name: &str, id: &str) -> bool {
    let want: Vec<String> = id.split('-').map(str::to_ascii_lowercase).collect();
    let segs: Vec<&str> = test_name.split('_').collect();
    segs.windows(want.len())
        .any(|w| w.iter().zip(&want).all(|(a, b)| *a == b.as_str()))
}

/// Every test function of the workspace with its file: `crates/*/tests` and
/// `crates/*/src`. This file does not count (its own checks name ids as fixtures).
fn test_names() -> Vec<(PathBuf, String)> {
    let root = workspace_root().join("crates");
    let me = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/promises.rs")
        .canonicalize()
        .unwrap();
    let mut files = Vec::new();
    for c in std::fs::read_dir(&root).unwrap().flatten() {
        rust_files(&c.path().join("tests"), &mut files);
        rust_files(&c.path().join("src"), &mut files);
    }
    let mut out = Vec::new();
    for f in files {
        if f.canonicalize().unwrap() == me {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        out.extend(test_fn_names(&text).into_iter().map(|n| (f.clone(), n)));
    }
    out
}

#[test]
fn promise_ids_are_proven_by_named_tests() {
    let names = test_names();
    // A broken scan would make every id "missing" for the wrong reason.
    assert!(names.len() > 300, "found only {} tests", names.len());
    let proven = |id: &str| -> Vec<String> {
        names
            .iter()
            .filter(|(_, n)| names_promise(n, id))
            .map(|(f, n)| format!("{}: {n}", f.display()))
            .collect()
    };
    let mut unproven = Vec::new();
    let mut listed_but_proven = Vec::new();
    for p in promises::all() {
        let tests = proven(p.id);
        match (promises::not_yet_kept(p.id), tests.is_empty()) {
            (None, true) => unproven.push(p.id),
            (Some(_), false) => listed_but_proven.push(format!("{} by {}", p.id, tests.join(", "))),
            _ => {}
        }
    }
    assert!(
        unproven.is_empty(),
        "published promises with no test named after them (a `#[test]` fn whose name holds the id in snake case, e.g. `fn auth_2_…`): {}. Write the test, or add the id to promises::NOT_YET_KEPT so /security says it is not yet kept.",
        unproven.join(", ")
    );
    assert!(
        listed_but_proven.is_empty(),
        "now proven, so remove from promises::NOT_YET_KEPT: {}",
        listed_but_proven.join("; ")
    );
    for n in promises::NOT_YET_KEPT {
        assert!(promises::by_id(n.id).is_some(), "{} is not a promise", n.id);
        assert!(n.why.len() > 20, "{}: say why", n.id);
    }
}

#[test]
fn naming_rule_matches_whole_segments_only() {
    assert!(names_promise("auth_1_password_policy", "AUTH-1"));
    assert!(names_promise("iso_3_iso_5_rules_in_order", "ISO-5"));
    assert!(names_promise("iso_3_iso_5_rules_in_order", "ISO-3"));
    assert!(names_promise("report_1", "REPORT-1"));
    assert!(!names_promise("auth_10_x", "AUTH-1"));
    assert!(!names_promise("auth1_x", "AUTH-1"));
    assert!(!names_promise("iso3_vm_to_vm", "ISO-3"));
    assert!(!names_promise("nothing", "NET-5"));
}

#[test]
fn only_functions_marked_as_tests_count() {
    let src = r#"
//! ISO-3: module docs name ids but prove nothing.
// auth_1_in_a_comment
fn iso_3_helper() {}
#[test]
fn auth_2_plain() {}
#[tokio::test(flavor = "multi_thread")]
/// doc
#[ignore = "slow"]
async fn net_5_async() {}
#[test] fn data_4_one_line() {}
#[cfg(test)]
mod t {
    #[test]
    pub fn access_1_in_mod() {}
}
"#;
    assert_eq!(
        test_fn_names(src),
        [
            "auth_2_plain",
            "net_5_async",
            "data_4_one_line",
            "access_1_in_mod"
        ]
    );
}
