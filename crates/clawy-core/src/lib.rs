//! clawy-core: the control plane's domain rules and storage. No HTTP.
//!
//! The server holds one `Arc<Core>`; each concern is a handle borrowed from it:
//! `core.accounts()`, `core.sessions()`, `core.throttle()`, `core.api_keys()`,
//! `core.ssh_keys()`, `core.audit()`, `core.reports()`. Every domain error implements
//! [`DomainError`] (`code()` + `kind()`), so the web layer maps errors in one place.
//! See README.md in this crate for the module map and invariants.

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod hosts;
pub mod instances;
pub mod ipam;
pub mod jobs;
pub mod mail;
pub mod metrics;
pub mod placement;
pub mod plans;
pub mod promises;
pub mod reports;
pub mod sessions;
pub mod ssh_keys;
pub mod throttle;

use chrono::{DateTime, Utc};
use std::sync::Arc;

pub use accounts::User;
pub use audit::{Actor, Caller, ClientInfo};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::ServerConfig;
pub use crypto::{SecretKey, Token};
pub use db::{Backend, Store};
pub use error::{CoreError, DomainError, ErrorKind, InternalError};
pub use mail::{Mail, Mailer};
/// Re-exported so callers need no direct `secrecy` dependency.
pub use secrecy::{ExposeSecret, SecretString};

/// Everything the control plane's domain logic needs, bundled.
pub struct Core {
    store: Store,
    config: Arc<ServerConfig>,
    clock: Arc<dyn Clock>,
    mailer: Mailer,
    secret_key: SecretKey,
    /// A bcrypt hash at the configured cost, to spend equal time on unknown emails.
    pub(crate) dummy_hash: tokio::sync::OnceCell<String>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("backend", &self.store.backend())
            .field("clock", &self.clock)
            .field("mailer", &self.mailer)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// Validates the config, creates the data dir (0700) and the operator secret key
    /// (0600) if missing, connects to the database and migrates it. Real clock.
    pub async fn open(config: ServerConfig) -> Result<Core, CoreError> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Like [`Core::open`] with an injected clock (tests use [`ManualClock`]).
    pub async fn open_with_clock(
        config: ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Core, CoreError> {
        config.validate().map_err(CoreError::new)?;
        crypto::create_private_dir(&config.data_dir)
            .map_err(|e| CoreError::new(InternalError::Io(e)))?;
        let secret_key =
            SecretKey::load_or_create(&config.secret_key_file).map_err(CoreError::new)?;
        let store = Store::connect(&config).await.map_err(CoreError::new)?;
        let mailer = Mailer::from_config(&config).map_err(CoreError::new)?;
        Ok(Core {
            store,
            config: Arc::new(config),
            clock,
            mailer,
            secret_key,
            dummy_hash: tokio::sync::OnceCell::new(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }
    pub fn config_arc(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    pub fn mailer(&self) -> &Mailer {
        &self.mailer
    }
    pub fn secret_key(&self) -> &SecretKey {
        &self.secret_key
    }
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn accounts(&self) -> accounts::Accounts<'_> {
        accounts::Accounts { core: self }
    }
    pub fn sessions(&self) -> sessions::Sessions<'_> {
        sessions::Sessions { core: self }
    }
    pub fn throttle(&self) -> throttle::Throttle<'_> {
        throttle::Throttle { core: self }
    }
    pub fn api_keys(&self) -> api_keys::ApiKeys<'_> {
        api_keys::ApiKeys { core: self }
    }
    pub fn ssh_keys(&self) -> ssh_keys::SshKeys<'_> {
        ssh_keys::SshKeys { core: self }
    }
    pub fn audit(&self) -> audit::Audit<'_> {
        audit::Audit { core: self }
    }
    pub fn reports(&self) -> reports::Reports<'_> {
        reports::Reports { core: self }
    }
    pub fn hosts(&self) -> hosts::Hosts<'_> {
        hosts::Hosts { core: self }
    }
    pub fn plans(&self) -> plans::Plans<'_> {
        plans::Plans { core: self }
    }
    pub fn instances(&self) -> instances::Instances<'_> {
        instances::Instances { core: self }
    }
    pub fn jobs(&self) -> jobs::Jobs<'_> {
        jobs::Jobs { core: self }
    }
    pub fn metrics(&self) -> metrics::Metrics<'_> {
        metrics::Metrics { core: self }
    }

    /// Periodic housekeeping: expired sessions and stale throttle counters.
    pub async fn housekeeping(&self) -> Result<(), CoreError> {
        self.sessions()
            .purge_expired()
            .await
            .map_err(CoreError::new)?;
        self.throttle()
            .purge_expired()
            .await
            .map_err(CoreError::new)?;
        Ok(())
    }
}
