//! What the final secrets scan reads (`scripts/secrets-scan.sh`, the last step of
//! `scripts/test-all`): tests register every secret they create (passwords, API keys,
//! agent tokens, TSIG keys, Telegram/model/gateway tokens), and leave their logs and
//! database dumps beside them; the scan then greps every log and dump for every
//! secret and fails on a hit (DATA-3, AUTH-1: no secret in a log or a database in
//! the clear).
//!
//! Everything lives under one directory, `CLAWY_TEST_ARTIFACTS` (test-all sets it to
//! `target/test-artifacts`): `secrets/<pid>.txt` (one secret a line, 0600),
//! `logs/…` and `dumps/…`. With the variable unset (a test run by hand) nothing is
//! written: registering is a no-op and databases are not dumped.
use std::io::Write as _;
use std::path::PathBuf;

/// The artifacts directory of this run, if the run collects them.
pub fn artifacts_dir() -> Option<PathBuf> {
    std::env::var_os("CLAWY_TEST_ARTIFACTS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `<artifacts>/<sub>`, created; None when the run does not collect artifacts.
pub fn artifacts_subdir(sub: &str) -> Option<PathBuf> {
    let dir = artifacts_dir()?.join(sub);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("testkit: cannot create {}: {e}", dir.display());
        return None;
    }
    Some(dir)
}

/// Records a secret this test created, for the final scan. Secrets shorter than
/// [`MIN_SCANNED_LEN`] are not recorded: a short string would match by chance (and
/// the product refuses such passwords anyway; the tests that try them create nothing).
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_SCANNED_LEN || secret.contains('\n') {
        return;
    }
    let Some(dir) = artifacts_subdir("secrets") else {
        return;
    };
    let path = dir.join(format!("{}.txt", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    // One write of the whole line: concurrent tests of one binary append to the same
    // file, and O_APPEND keeps each line whole.
    let line = format!("{secret}\n");
    match opts.open(&path) {
        Ok(mut f) => {
            if let Err(e) = f.write_all(line.as_bytes()) {
                eprintln!(
                    "testkit: cannot register a secret in {}: {e}",
                    path.display()
                );
            }
        }
        Err(e) => eprintln!("testkit: cannot open {}: {e}", path.display()),
    }
}

/// Shorter secrets are not scanned for (see [`register`]).
pub const MIN_SCANNED_LEN: usize = 12;

/// A file name for an artifact of this process: `<binary>-<pid>-<n><suffix>`.
pub fn artifact_name(suffix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".into());
    format!(
        "{exe}-{}-{}{suffix}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_are_unique_within_a_process() {
        assert_ne!(artifact_name(".log"), artifact_name(".log"));
    }
}
