//! REST API wire types (`/api/v1`). JSON in and out; the OpenAPI document is generated
//! from these types (`utoipa::ToSchema`), so a change here is a change of the contract.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error the API returns: `{"error":{"code":"…","message":"…"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code (e.g. `not_found`, `forbidden`, `invalid_request`).
    pub code: String,
    /// A sentence a person can act on.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                field: None,
            },
        }
    }
}

/// API key tiers, ordered: `read` ⊂ `manage` ⊂ `admin` (AUTH-2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// GET own resources.
    Read,
    /// Read + lifecycle of own resources (instances, SSH keys).
    Manage,
    /// Manage + API keys and account settings.
    Admin,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Read => "read",
            Tier::Manage => "manage",
            Tier::Admin => "admin",
        }
    }
}

/// How the caller of a request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ApiKey,
    Session,
}

/// `GET /api/v1/me`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub id: String,
    pub email: String,
    pub is_operator: bool,
    pub created_at: DateTime<Utc>,
    /// How this request authenticated.
    pub auth: AuthMethod,
    /// The privilege of this request (a session has the tier of the full account).
    pub tier: Tier,
    /// The id of the API key used, when `auth` is `api_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
}

/// An API key as listed; never carries the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub tier: Tier,
    /// The visible start of the key (e.g. `clawy_r_AbC1`), to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKey>,
}

/// `POST /api/v1/api-keys`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    pub tier: Tier,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A freshly created or regenerated key: `key` is shown this once and never again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: String,
    pub name: String,
    pub tier: Tier,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The full secret key. Store it now: the server keeps only its hash.
    pub key: String,
}

/// A registered SSH public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SshKey {
    pub id: String,
    pub name: String,
    /// e.g. `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
    pub algorithm: String,
    /// `SHA256:…` as printed by `ssh-keygen -lf`.
    pub fingerprint: String,
    pub public_key: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SshKeyList {
    pub ssh_keys: Vec<SshKey>,
}

/// `POST /api/v1/ssh-keys`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSshKey {
    pub name: String,
    /// One line in OpenSSH format, e.g. `ssh-ed25519 AAAA… me@laptop`.
    pub public_key: String,
}

/// One entry of the account's audit log (never carries a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// Increasing sequence number (also the paging cursor).
    pub id: i64,
    pub at: DateTime<Utc>,
    /// e.g. `login_ok`, `api_key_created`.
    pub kind: String,
    /// Who acted (e.g. `user:<id>`, `api_key:<id>`, `operator:<id>`).
    pub actor: String,
    pub client_addr: Option<String>,
    /// Free-form, non-secret detail (e.g. the key name).
    pub detail: Option<String>,
}

/// `GET /api/v1/audit`: newest first. Pass `next_before` as `before` for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next_before: Option<i64>,
}

/// `POST /api/v1/security-reports` (no authentication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecurityReport {
    /// How to reach the reporter (optional).
    #[serde(default)]
    pub contact: Option<String>,
    pub title: String,
    pub details: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityReportReceipt {
    /// Quote this id in follow-ups.
    pub tracking_id: String,
    pub message: String,
}

/// `GET /healthz`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub database: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn tier_order_is_read_manage_admin() {
        assert!(Tier::Read < Tier::Manage && Tier::Manage < Tier::Admin);
        assert_eq!(serde_json::to_string(&Tier::Manage).unwrap(), "\"manage\"");
    }

    #[test]
    fn create_api_key_rejects_unknown_fields() {
        let err = serde_json::from_str::<CreateApiKey>(r#"{"name":"a","tier":"read","x":1}"#);
        assert!(err.is_err());
        let ok: CreateApiKey = serde_json::from_str(r#"{"name":"a","tier":"read"}"#).unwrap();
        assert_eq!(ok.expires_at, None);
    }
}
