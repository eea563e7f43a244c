//! DATA-5: the owner's secrets for their guest's OpenClaw gateway.
//!
//! Lifecycle: at create time the owner may give a Telegram bot token and a
//! model-provider key (both optional); their formats are checked here; the platform
//! generates the gateway token, which the create answer shows once. The three are
//! sealed together with the operator key, the instance id authenticated with them
//! (a sealed copy moved to another row does not open), and stored in
//! `instance_guest_secrets` only. The orchestrator opens them to hand them to the
//! agent inside the ensure call (never inside the persisted spec); the agent writes
//! them into the VM's seed only. When the guest's heartbeat reports the
//! configuration applied, the agent destroys the seed and the orchestrator calls
//! [`GuestSecretsStore::erase`]: the row is deleted, `secrets_delivered_at` is set,
//! and nothing of them remains on the platform.

use clawy_proto::agent::{
    GuestSecrets, ModelKey, ModelProvider, validate_model_key, validate_telegram_bot_token,
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;

use crate::Core;
use crate::crypto::SecretKey;
use crate::error::InternalError;

/// What the owner gives at create time. `Debug` shows no value.
#[derive(Clone, Default)]
pub struct OwnerSecrets {
    pub telegram_bot_token: Option<SecretString>,
    /// Provider name (`anthropic`, `openai`, `openrouter`) and key.
    pub model_key: Option<(String, SecretString)>,
}

impl std::fmt::Debug for OwnerSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerSecrets")
            .field("telegram_bot_token", &self.telegram_bot_token.is_some())
            .field("model_key", &self.model_key.as_ref().map(|(p, _)| p))
            .finish()
    }
}

/// A secret in the wrong format: the field and what is wrong, never the value.
/// (Instances turn it into `InstanceError::InvalidSecret`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretError {
    pub field: &'static str,
    pub message: &'static str,
}

impl OwnerSecrets {
    /// Checks the formats (a 422 naming the field, never echoing the value) and adds
    /// a freshly generated gateway token.
    pub fn into_guest_secrets(self) -> Result<GuestSecrets, SecretError> {
        let invalid = |e: clawy_proto::agent::SecretFormatError| SecretError {
            field: e.field,
            message: e.message,
        };
        let telegram_bot_token = match self.telegram_bot_token {
            Some(t) => {
                let t = t.expose_secret().trim().to_string();
                validate_telegram_bot_token(&t).map_err(invalid)?;
                Some(t)
            }
            None => None,
        };
        let model_key = match self.model_key {
            Some((provider, key)) => {
                let provider = ModelProvider::parse(provider.trim()).ok_or(SecretError {
                    field: "model_provider",
                    message: "must be anthropic, openai or openrouter",
                })?;
                let key = key.expose_secret().trim().to_string();
                validate_model_key(provider, &key).map_err(invalid)?;
                Some(ModelKey { provider, key })
            }
            None => None,
        };
        let secrets = GuestSecrets {
            gateway_token: crate::crypto::random_token(),
            telegram_bot_token,
            model_key,
        };
        secrets.validate().map_err(invalid)?;
        Ok(secrets)
    }
}

/// Seals and stores an instance's secrets in the create transaction.
pub(crate) async fn store_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    key: &SecretKey,
    instance_id: &str,
    secrets: &GuestSecrets,
    now: i64,
) -> Result<(), sqlx::Error> {
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(secrets).unwrap_or_default());
    let sealed = key.seal_bound(&plain, instance_id.as_bytes());
    sqlx::query(
        "INSERT INTO instance_guest_secrets (instance_id, sealed, created_at) VALUES ($1, $2, $3)",
    )
    .bind(instance_id)
    .bind(sealed)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub struct GuestSecretsStore<'a> {
    pub(crate) core: &'a Core,
}

impl GuestSecretsStore<'_> {
    /// The instance's secrets while they are undelivered; `None` once erased (or for
    /// an instance made before DATA-5).
    pub async fn pending(&self, instance_id: &str) -> Result<Option<GuestSecrets>, InternalError> {
        let row = sqlx::query("SELECT sealed FROM instance_guest_secrets WHERE instance_id = $1")
            .bind(instance_id)
            .fetch_optional(self.core.store().pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sealed: String = row.try_get("sealed")?;
        let plain = self
            .core
            .secret_key()
            .open_bound(&sealed, instance_id.as_bytes())
            .map_err(|e| InternalError::other(e.to_string()))?;
        let secrets: GuestSecrets = serde_json::from_str(plain.expose_secret())
            .map_err(|_| InternalError::other("sealed guest secrets are not readable"))?;
        Ok(Some(secrets))
    }

    /// DATA-5: the guest confirmed the configuration; the sealed copy goes. Returns
    /// whether there was one (idempotent).
    ///
    /// The one erase path: the poller calls it whenever the agent reports the
    /// delivery, so a crash anywhere between the agent destroying the seed and
    /// this commit is repaired at the next poll. Delete and timestamp are one
    /// transaction.
    pub async fn erase(&self, instance_id: &str) -> Result<bool, InternalError> {
        let now = self.core.now_ms();
        let mut tx = self.core.store().pool().begin().await?;
        let done = sqlx::query("DELETE FROM instance_guest_secrets WHERE instance_id = $1")
            .bind(instance_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        sqlx::query(
            "UPDATE instances SET secrets_delivered_at = $1 WHERE id = $2 AND secrets_delivered_at IS NULL",
        )
        .bind(now)
        .bind(instance_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if done {
            if self.core.store().backend() == crate::db::Backend::Sqlite {
                // The WAL still holds the pages as they were before the delete;
                // copy the overwritten pages into the file and empty the WAL. Best
                // effort: a reader holding a snapshot makes it partial, and the
                // next erase or SQLite's own checkpoint finishes it.
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(self.core.store().pool())
                    .await
                {
                    tracing::warn!(error = %e, "checkpoint after erasing secrets failed");
                }
            }
            tracing::info!(instance = %instance_id, "guest confirmed its configuration; sealed secrets erased");
        }
        Ok(done)
    }

    /// Which of `ids` still have a sealed copy (one statement).
    pub async fn held_among(&self, ids: &[String]) -> Result<Vec<String>, InternalError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT instance_id FROM instance_guest_secrets WHERE instance_id IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(id.clone());
        }
        let rows = q.fetch_all(self.core.store().pool()).await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("instance_id")?))
            .collect()
    }

    /// When the guest confirmed delivery, if it did.
    pub async fn delivered_at(&self, instance_id: &str) -> Result<Option<i64>, InternalError> {
        let row = sqlx::query("SELECT secrets_delivered_at FROM instances WHERE id = $1")
            .bind(instance_id)
            .fetch_optional(self.core.store().pool())
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<i64>, _>("secrets_delivered_at")?,
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn owner(tg: Option<&str>, mk: Option<(&str, &str)>) -> OwnerSecrets {
        OwnerSecrets {
            telegram_bot_token: tg.map(|t| SecretString::from(t.to_string())),
            model_key: mk.map(|(p, k)| (p.to_string(), SecretString::from(k.to_string()))),
        }
    }

    #[test]
    fn data5_formats_are_checked_and_a_gateway_token_is_generated() {
        let s = owner(
            Some(" 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawZ\n"),
            Some(("anthropic", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz")),
        )
        .into_guest_secrets()
        .unwrap();
        assert_eq!(s.gateway_token.len(), 43);
        assert_eq!(
            s.telegram_bot_token.as_deref(),
            Some("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawZ")
        );
        let other = owner(None, None).into_guest_secrets().unwrap();
        assert_ne!(other.gateway_token, s.gateway_token);
        assert!(other.telegram_bot_token.is_none() && other.model_key.is_none());
        for (bad, field) in [
            (owner(Some("not-a-token"), None), "telegram_bot_token"),
            (owner(Some("123456789:short"), None), "telegram_bot_token"),
            (
                owner(
                    Some("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawZ\"}"),
                    None,
                ),
                "telegram_bot_token",
            ),
            (
                owner(None, Some(("anthropic", "sk-live-nope"))),
                "model_key",
            ),
            (
                owner(
                    None,
                    Some(("anthropic", "sk-ant-abcdefghijklmnopqrstuvwxyz\nX=1")),
                ),
                "model_key",
            ),
            (
                owner(None, Some(("acme", "sk-ant-abcdefghijklmnopqrstuvwxyz"))),
                "model_provider",
            ),
        ] {
            let e = bad.into_guest_secrets().unwrap_err();
            let SecretError { field: f, message } = e;
            assert_eq!(f, field);
            assert!(!message.contains("nope") && !message.contains("short"));
        }
    }

    #[test]
    fn data5_debug_shows_no_value() {
        let o = owner(
            Some("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawZ"),
            Some(("openai", "sk-abcdefghijklmnopqrstuvwxyz0123")),
        );
        let d = format!("{o:?}");
        assert!(!d.contains("AAHdq") && !d.contains("sk-abc"), "{d}");
        let g = o.into_guest_secrets().unwrap();
        let d = format!("{g:?}");
        assert!(!d.contains("AAHdq") && !d.contains("sk-abc") && !d.contains(&g.gateway_token));
    }
}
