//! `clawy api-keys list|create|regenerate|revoke` (needs an admin-tier key, AUTH-2).

use chrono::{DateTime, Duration, Utc};
use clap::Subcommand;
use clawy_proto::api::{ApiKey, ApiKeyList, CreateApiKey, CreatedApiKey, Tier};
use serde_json::Value;

use crate::client::{Client, decode, seg};
use crate::exit::{CmdError, CmdResult, Exit};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum ApiKeysCommand {
    /// List your API keys (never their secrets).
    List,
    /// Create a key and print it once.
    Create {
        name: String,
        /// read, manage or admin.
        #[arg(long, value_parser = parse_tier)]
        tier: Tier,
        /// When it stops working: an RFC 3339 time or a duration like `30d`, `12h`.
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<DateTime<Utc>>,
    },
    /// Replace a key's secret (the old one stops working) and print the new one once.
    Regenerate { key: String },
    /// Revoke a key by id or name.
    Revoke { key: String },
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    match s {
        "read" => Ok(Tier::Read),
        "manage" => Ok(Tier::Manage),
        "admin" => Ok(Tier::Admin),
        _ => Err("use read, manage or admin".into()),
    }
}

/// `30d`, `12h`, `90m` from now, or an absolute RFC 3339 time.
pub fn parse_expiry(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = num.parse().map_err(|_| {
        format!("`{s}` is neither a time (2027-01-31T00:00:00Z) nor a duration (30d, 12h, 90m)")
    })?;
    let d = match unit {
        "d" => Duration::days(n),
        "h" => Duration::hours(n),
        "m" => Duration::minutes(n),
        _ => return Err(format!("`{s}`: the unit must be d, h or m")),
    };
    if n <= 0 {
        return Err("the duration must be positive".into());
    }
    Ok(Utc::now() + d)
}

pub async fn run(client: &Client, cmd: ApiKeysCommand, json: bool) -> CmdResult {
    match cmd {
        ApiKeysCommand::List => {
            let v = client.get::<Value>("api-keys").await?;
            if json {
                output::json(&v);
                return Ok(());
            }
            let list: ApiKeyList = decode(v)?;
            let fmt = |t: Option<DateTime<Utc>>| {
                t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "-".into())
            };
            let rows: Vec<Vec<String>> = list
                .api_keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.tier.as_str().to_string(),
                        k.prefix.clone(),
                        fmt(Some(k.created_at)),
                        fmt(k.last_used_at),
                        fmt(k.expires_at),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(
                    &[
                        "ID",
                        "NAME",
                        "TIER",
                        "PREFIX",
                        "CREATED",
                        "LAST USED",
                        "EXPIRES"
                    ],
                    &rows
                )
            );
        }
        ApiKeysCommand::Create {
            name,
            tier,
            expires,
        } => {
            let v: Value = client
                .post(
                    "api-keys",
                    &CreateApiKey {
                        name,
                        tier,
                        expires_at: expires,
                        // The CLI authenticates with a key, never a session.
                        password: None,
                    },
                )
                .await?;
            print_created(v, json)?;
        }
        ApiKeysCommand::Regenerate { key } => {
            let k = find(client, &key).await?;
            let v: Value = client
                .post(
                    &format!("api-keys/{}/regenerate", seg(&k.id)),
                    &serde_json::json!({}),
                )
                .await?;
            print_created(v, json)?;
        }
        ApiKeysCommand::Revoke { key } => {
            let k = find(client, &key).await?;
            client.delete(&format!("api-keys/{}", seg(&k.id))).await?;
            if json {
                output::json(&serde_json::json!({"revoked": k.id}));
            } else {
                println!("Revoked API key {} ({}).", k.name, k.id);
            }
        }
    }
    Ok(())
}

fn print_created(v: Value, json: bool) -> CmdResult {
    if json {
        output::json(&v);
        return Ok(());
    }
    let k: CreatedApiKey = decode(v)?;
    eprintln!(
        "API key \"{}\" ({} tier, id {}). It is shown only now: store it safely.",
        k.name,
        k.tier.as_str(),
        k.id
    );
    // The secret alone on stdout, so `KEY=$(clawy api-keys create …)` works.
    println!("{}", k.key);
    Ok(())
}

async fn find(client: &Client, id_or_name: &str) -> Result<ApiKey, CmdError> {
    let list: ApiKeyList = client.get("api-keys").await?;
    if let Some(k) = list.api_keys.iter().find(|k| k.id == id_or_name) {
        return Ok(k.clone());
    }
    let named: Vec<&ApiKey> = list
        .api_keys
        .iter()
        .filter(|k| k.name == id_or_name)
        .collect();
    match named.as_slice() {
        [k] => Ok((*k).clone()),
        [] => Err(CmdError::new(
            Exit::NotFound,
            format!("no API key with the id or name `{id_or_name}`"),
        )),
        _ => Err(CmdError::new(
            Exit::Usage,
            format!("more than one API key is named `{id_or_name}`: use its id"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn expiry_accepts_durations_and_times() {
        let t = parse_expiry("30d").unwrap();
        let days = (t - Utc::now()).num_days();
        assert!((29..=30).contains(&days), "{days}");
        assert_eq!(
            parse_expiry("2030-01-02T03:04:05Z").unwrap().to_rfc3339(),
            "2030-01-02T03:04:05+00:00"
        );
        assert!(parse_expiry("30x").is_err());
        assert!(parse_expiry("0d").is_err());
        assert!(parse_expiry("soon").is_err());
    }
}
