//! `clawy ssh-keys list|add|delete`.

use clap::Subcommand;
use clawy_proto::api::{CreateSshKey, SshKey, SshKeyList};
use serde_json::Value;
use std::io::Read;

use crate::client::{Client, decode, seg};
use crate::exit::{CmdError, CmdResult, Exit};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum SshKeysCommand {
    /// List your SSH public keys.
    List,
    /// Add a public key (OpenSSH format) from FILE, or from standard input with `-`.
    Add { name: String, file: String },
    /// Delete a key by id or name.
    Delete { key: String },
}

pub async fn run(client: &Client, cmd: SshKeysCommand, json: bool) -> CmdResult {
    match cmd {
        SshKeysCommand::List => {
            let v = client.get::<Value>("ssh-keys").await?;
            if json {
                output::json(&v);
                return Ok(());
            }
            let list: SshKeyList = decode(v)?;
            if list.ssh_keys.is_empty() {
                println!(
                    "No SSH keys yet. Add one with `clawy ssh-keys add NAME ~/.ssh/id_ed25519.pub`."
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .ssh_keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.algorithm.clone(),
                        k.fingerprint.clone(),
                        k.created_at.format("%Y-%m-%d %H:%M").to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(&["ID", "NAME", "TYPE", "FINGERPRINT", "CREATED"], &rows)
            );
        }
        SshKeysCommand::Add { name, file } => {
            let public_key = read_key_text(&file)?;
            let v: Value = client
                .post("ssh-keys", &CreateSshKey { name, public_key })
                .await?;
            if json {
                output::json(&v);
                return Ok(());
            }
            let k: SshKey = decode(v)?;
            println!(
                "Added SSH key {} ({}, {}), id {}.",
                k.name, k.algorithm, k.fingerprint, k.id
            );
        }
        SshKeysCommand::Delete { key } => {
            let k = find(client, &key).await?;
            client.delete(&format!("ssh-keys/{}", seg(&k.id))).await?;
            if json {
                output::json(&serde_json::json!({"deleted": k.id}));
            } else {
                println!("Deleted SSH key {} ({}).", k.name, k.id);
            }
        }
    }
    Ok(())
}

/// A key of the caller by id or name (names are what people remember).
pub async fn find(client: &Client, id_or_name: &str) -> Result<SshKey, CmdError> {
    let list: SshKeyList = client.get("ssh-keys").await?;
    let mut by_name = list.ssh_keys.iter().filter(|k| k.name == id_or_name);
    if let Some(k) = list.ssh_keys.iter().find(|k| k.id == id_or_name) {
        return Ok(k.clone());
    }
    match (by_name.next(), by_name.next()) {
        (Some(k), None) => Ok(k.clone()),
        (Some(_), Some(_)) => Err(CmdError::new(
            Exit::Usage,
            format!("more than one SSH key is named `{id_or_name}`: use its id"),
        )),
        _ => Err(CmdError::new(
            Exit::NotFound,
            format!("no SSH key with the id or name `{id_or_name}`"),
        )),
    }
}

fn read_key_text(file: &str) -> Result<String, CmdError> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(file)
            .map_err(|e| CmdError::new(Exit::Usage, format!("cannot read {file}: {e}")))?;
    }
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| CmdError::new(Exit::Usage, format!("{file} holds no public key")))?;
    if line.contains("PRIVATE KEY") {
        // Never send a private key anywhere.
        return Err(CmdError::new(
            Exit::Usage,
            format!("{file} is a private key; give the public one (the .pub file)"),
        ));
    }
    Ok(line.to_string())
}
