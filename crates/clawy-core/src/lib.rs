//! clawy-core: the control plane's domain rules and storage. No HTTP.
//!
//! The server holds one `Arc<Core>`; each concern is a handle borrowed from it:
//! `core.accounts()`, `core.sessions()`, `core.throttle()`, `core.api_keys()`,
//! `core.ssh_keys()`, `core.audit()`, `core.reports()`. Every domain error implements
//! [`DomainError`] (`code()` + `kind()`), so the web layer maps errors in one place.
//! See README.md in this crate for the module map and invariants.

pub mod accounts;
pub mod actor;
pub mod api_keys;
pub mod audit;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod dns_records;
pub mod error;
pub mod guest_secrets;
pub mod hosts;
pub mod installation;
pub mod instances;
pub mod ipam;
pub mod jobs;
pub mod lifecycle;
pub mod mail;
pub mod metrics;
pub mod names;
pub mod page;
pub mod placement;
pub mod plans;
pub mod promises;
pub mod regions;
pub mod reports;
pub mod sessions;
pub mod ssh_keys;
pub mod throttle;

use chrono::{DateTime, Utc};
use std::sync::Arc;

pub use accounts::User;
pub use actor::{Actor, ActorKind, ClientInfo, Tier};
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
        let core = Core {
            store,
            config: Arc::new(config),
            clock,
            mailer,
            secret_key,
            dummy_hash: tokio::sync::OnceCell::new(),
        };
        // DATA-3: agent tokens sealed before row binding are bound to their row now.
        let bound = core
            .hosts()
            .bind_legacy_tokens()
            .await
            .map_err(CoreError::new)?;
        if bound > 0 {
            tracing::info!(
                hosts = bound,
                "bound legacy sealed agent tokens to their host rows"
            );
        }
        Ok(core)
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
    pub fn regions(&self) -> regions::Regions<'_> {
        regions::Regions { core: self }
    }
    /// DATA-5: the owner's sealed guest secrets until delivery.
    pub fn guest_secrets(&self) -> guest_secrets::GuestSecretsStore<'_> {
        guest_secrets::GuestSecretsStore { core: self }
    }

    pub fn instances(&self) -> instances::Instances<'_> {
        instances::Instances { core: self }
    }
    pub fn jobs(&self) -> jobs::Jobs<'_> {
        jobs::Jobs { core: self }
    }
    pub fn dns_records(&self) -> dns_records::DnsRecords<'_> {
        dns_records::DnsRecords { core: self }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::{BTreeMap, BTreeSet};

    /// `module -> modules it names as crate::<module>` for every file in `src/`.
    fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut names = BTreeSet::new();
        let mut texts = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            if path.extension().is_some_and(|e| e == "rs") && stem != "lib" {
                // Code only: a doc link to another module is not an import.
                let code: Vec<String> = std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .map(str::to_owned)
                    .collect();
                texts.insert(stem.clone(), code.join("\n"));
                names.insert(stem);
            }
        }
        let mut graph = BTreeMap::new();
        for (module, text) in &texts {
            let mut deps = BTreeSet::new();
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + "crate::".len()..];
                let mut idents = vec![
                    rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or("")
                        .to_string(),
                ];
                // `use crate::{a, b::C}`
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or("");
                    idents = group
                        .split(',')
                        .map(|p| p.trim().split("::").next().unwrap_or("").to_string())
                        .collect();
                }
                for ident in idents {
                    if names.contains(&ident) && &ident != module {
                        deps.insert(ident);
                    }
                }
            }
            graph.insert(module.clone(), deps);
        }
        graph
    }

    /// The modules form a DAG: no group of modules imports each other, so each can
    /// be read (and changed) knowing only the modules below it. The leaves (`actor`,
    /// `names`, `lifecycle`, `clock`, `error`) hold the vocabulary the others share.
    #[test]
    fn core_modules_have_no_import_cycles() {
        let graph = module_graph();
        assert!(graph["instances"].contains("jobs"), "the graph is read");
        for leaf in ["actor", "names", "lifecycle"] {
            let deps: Vec<_> = graph[leaf]
                .iter()
                .filter(|d| d.as_str() != "names")
                .collect();
            assert!(deps.is_empty(), "{leaf} must stay a leaf, imports {deps:?}");
        }
        // Depth-first search for a back edge.
        fn visit<'a>(
            m: &'a str,
            g: &'a BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) {
            if done.contains(m) {
                return;
            }
            if let Some(pos) = path.iter().position(|p| *p == m) {
                panic!("import cycle: {} -> {m}", path[pos..].join(" -> "));
            }
            path.push(m);
            for d in &g[m] {
                visit(d, g, path, done);
            }
            path.pop();
            done.insert(m);
        }
        let mut done = BTreeSet::new();
        for m in graph.keys() {
            visit(m, &graph, &mut Vec::new(), &mut done);
        }
    }
}
