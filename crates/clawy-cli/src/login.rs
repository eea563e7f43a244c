//! `clawy login` / `clawy logout` and where the API client finds its credentials.
//!
//! Precedence: `--server` > `CLAWY_SERVER` > the credentials file's server; the key
//! from `CLAWY_API_KEY` > the file's key. The file is
//! `$XDG_CONFIG_HOME/clawy/credentials.toml` (else `~/.config/clawy/…`), in a 0700
//! directory, itself 0600, because it holds a secret (AUTH-2).

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::client::{ApiKey, Client};
use crate::exit::{CmdError, CmdResult, Exit};

/// Where `clawy up` listens by default, so `clawy login` works without `--server`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    server: String,
    api_key: String,
}

/// The credentials file's path (it may not exist).
pub fn credentials_path() -> Result<PathBuf, CmdError> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(x) = var("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(x).join("clawy/credentials.toml"));
    }
    if let Some(h) = var("HOME") {
        return Ok(PathBuf::from(h).join(".config/clawy/credentials.toml"));
    }
    Err(CmdError::new(
        Exit::Usage,
        "neither XDG_CONFIG_HOME nor HOME is set: cannot find the credentials file",
    ))
}

fn read_file() -> Result<Option<CredentialsFile>, CmdError> {
    let path = credentials_path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CmdError::new(
                Exit::Failed,
                format!("cannot read {}: {e}", path.display()),
            ));
        }
    };
    toml::from_str(&text).map(Some).map_err(|e| {
        CmdError::new(
            Exit::Usage,
            format!(
                "{} is damaged ({}); run `clawy login` again",
                path.display(),
                e.message()
            ),
        )
    })
}

fn env_nonempty(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// The server URL to use (without needing a key).
pub fn resolve_server(flag: Option<&str>) -> Result<String, CmdError> {
    if let Some(s) = flag.or(env_nonempty("CLAWY_SERVER").as_deref()) {
        return Ok(s.to_string());
    }
    Ok(read_file()?
        .map(|f| f.server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_string()))
}

/// A client with the resolved server and key; exit 3 when there is no key at all.
pub fn client(flag_server: Option<&str>) -> Result<Client, CmdError> {
    let file = read_file()?;
    let server = match flag_server
        .map(str::to_string)
        .or(env_nonempty("CLAWY_SERVER"))
    {
        Some(s) => s,
        None => file
            .as_ref()
            .map(|f| f.server.clone())
            .unwrap_or_else(|| DEFAULT_SERVER.to_string()),
    };
    let key = match env_nonempty("CLAWY_API_KEY") {
        Some(k) => ApiKey::new(k.trim()),
        None => match file {
            Some(f) => ApiKey::new(f.api_key),
            None => {
                return Err(CmdError::new(
                    Exit::Auth,
                    "not logged in: run `clawy login` or set CLAWY_API_KEY",
                ));
            }
        },
    };
    Ok(Client::new(&server, key)?)
}

pub async fn login(flag_server: Option<&str>) -> CmdResult {
    let server = resolve_server(flag_server)?;
    let key = match env_nonempty("CLAWY_API_KEY") {
        Some(k) => ApiKey::new(k.trim()),
        None => read_key()?,
    };
    let client = Client::new(&server, key.clone())?;
    // Verify before storing: a typo should fail now, not at the next command.
    let me: clawy_proto::api::Me = client.get("me").await?;
    write_file(&CredentialsFile {
        server: client.base().as_str().trim_end_matches('/').to_string(),
        api_key: key.expose().to_string(),
    })?;
    let path = credentials_path()?;
    println!(
        "Logged in to {} as {} ({} key). Credentials stored in {}.",
        client.base().as_str().trim_end_matches('/'),
        me.email,
        me.tier.as_str(),
        path.display()
    );
    Ok(())
}

pub fn logout() -> CmdResult {
    let path = credentials_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => println!("Removed {}.", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("Not logged in (no {}).", path.display());
        }
        Err(e) => {
            return Err(CmdError::new(
                Exit::Failed,
                format!("cannot remove {}: {e}", path.display()),
            ));
        }
    }
    Ok(())
}

fn write_file(creds: &CredentialsFile) -> CmdResult {
    let path = credentials_path()?;
    let dir = path
        .parent()
        .ok_or_else(|| CmdError::new(Exit::Failed, "credentials path has no directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            CmdError::new(
                Exit::Failed,
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
    // An existing directory keeps its mode from `create`; tighten it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let text = Zeroizing::new(
        toml::to_string(creds).map_err(|e| CmdError::new(Exit::Failed, e.to_string()))?,
    );
    // Written to a 0600 temporary file and renamed, so the key is never readable by
    // others, not even for a moment, and a crash leaves the old file intact.
    let tmp = path.with_extension("toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| CmdError::new(Exit::Failed, format!("cannot write {}: {e}", tmp.display())))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// The key from stdin: without echo on a terminal, one line otherwise.
fn read_key() -> Result<ApiKey, CmdError> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let mut line = Zeroizing::new(String::new());
    if tty {
        // Echo off before the prompt: whatever is typed after seeing it stays hidden.
        let _echo = EchoOff::new(&stdin);
        eprint!("API key (create one in the dashboard under API keys): ");
        let _ = std::io::stderr().flush();
        stdin.lock().read_line(&mut line)?;
        eprintln!();
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    let key = line.trim();
    if key.is_empty() {
        return Err(CmdError::new(Exit::Usage, "no API key given"));
    }
    Ok(ApiKey::new(key))
}

/// Turns terminal echo off until dropped (so the key is not shown as typed).
struct EchoOff {
    saved: Option<rustix::termios::Termios>,
}

impl EchoOff {
    fn new(stdin: &std::io::Stdin) -> EchoOff {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let saved = tcgetattr(stdin).ok();
        if let Some(t) = &saved {
            let mut quiet = t.clone();
            quiet.local_modes.remove(LocalModes::ECHO);
            let _ = tcsetattr(stdin, OptionalActions::Now, &quiet);
        }
        EchoOff { saved }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}
