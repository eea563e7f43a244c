//! `clawy server` and `clawy admin …`.
//!
//! Both read the same configuration (`--config PATH`, else `<data_dir>/clawy.toml`, plus
//! `CLAWY_*` environment overrides). Admin commands talk to the database directly, so
//! they work before any account exists (the first operator is made this way).

use anyhow::Context as _;
use clap::{Args, Subcommand};
use clawy_core::Actor;
use clawy_core::actor::Tier;
use clawy_core::{Core, SecretString, ServerConfig};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use zeroize::Zeroizing;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Config file (TOML). Default: `<data_dir>/clawy.toml` if it exists.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Config file (TOML). Default: `<data_dir>/clawy.toml` if it exists.
    #[arg(long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create an account. The password is read from standard input (one line), with the
    /// same policy as signup.
    CreateUser {
        email: String,
        /// Make the account an operator (users list, vulnerability reports, metrics).
        #[arg(long)]
        operator: bool,
    },
    /// Create an API key for an account and print it (shown once, stored hashed).
    CreateApiKey {
        email: String,
        /// read, manage or admin.
        #[arg(long, value_parser = parse_tier)]
        tier: Tier,
        /// A name to recognise the key by.
        #[arg(long, default_value = "created with clawy admin")]
        name: String,
    },
    /// Store the TSIG key the control plane signs DNS updates with. The
    /// secret (base64, as in the DNS server's key file) is read from standard input,
    /// sealed with the operator key (DATA-4) and never shown again.
    DnsSetKey {
        /// The key's name as configured on the DNS server, e.g. `clawy-update`.
        #[arg(long)]
        key_name: String,
    },
    /// Set the public addresses a host's instances' DNS records point at (the
    /// address of the host's edge). Omitted options clear that record type.
    HostPublicAddress {
        /// Host name or id.
        host: String,
        #[arg(long)]
        ipv4: Option<std::net::Ipv4Addr>,
        #[arg(long)]
        ipv6: Option<std::net::Ipv6Addr>,
    },
    /// Create an invitation for invite-only signup (`signup_mode = "invite"`) and print
    /// its signup link (shown once; one account, valid seven days).
    CreateInvite,
    /// DATA-3: rotate the credentials the control plane holds for a host agent. Create
    /// the new token on the host first (`clawy agent token create`); it is read from
    /// standard input (one line). The agent must accept it (over a connection pinned to
    /// `--fingerprint`, if given) before anything is stored; then revoke the old token
    /// on the host (`clawy agent token revoke`).
    RotateHost {
        /// Host name or id.
        host: String,
        /// Read a new agent token from standard input.
        #[arg(long)]
        token_stdin: bool,
        /// The agent certificate's new SHA-256 fingerprint (after a certificate change).
        #[arg(long)]
        fingerprint: Option<String>,
    },
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    s.parse::<Tier>().map_err(|e| e.to_string())
}

/// Logging to stderr; `RUST_LOG` overrides the default `info`. AUTH-1/AUTH-2: nothing
/// this process logs carries a secret (see `middleware::trace`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (tests, embedding) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<ServerConfig> {
    // The error names the key and the reason; print it as is.
    ServerConfig::load(path).map_err(|e| anyhow::anyhow!(clawy_core::error::describe(&e)))
}

pub fn run_server(args: ServerArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = load_config(args.config.as_deref())?;
    runtime()?.block_on(async move {
        // The orchestrator (job runner, reconciler, metrics poller) runs beside
        // the HTTP server in this process, sharing its `Core`. A job cut short by a stop
        // or a crash is taken up again after its lease expires.
        let core = std::sync::Arc::new(
            Core::open(config)
                .await
                .map_err(|e| anyhow::anyhow!(clawy_core::error::describe(&e)))?,
        );
        let orchestrator = clawy_orchestrator::Orchestrator::start(
            core.clone(),
            clawy_orchestrator::OrchestratorConfig::from_core(&core),
        );
        let served = crate::app::serve(core.clone()).await;
        if tokio::time::timeout(std::time::Duration::from_secs(30), orchestrator.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("background jobs did not stop within 30 s; leaving them");
        }
        core.store().close().await;
        served
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_admin(args: AdminArgs) -> anyhow::Result<ExitCode> {
    init_logging_quiet();
    let config = load_config(args.config.as_deref())?;
    runtime()?.block_on(async move {
        let core = Core::open(config)
            .await
            .map_err(|e| anyhow::anyhow!(clawy_core::error::describe(&e)))?;
        let result = run_admin_command(&core, args.command).await;
        core.store().close().await;
        result
    })
}

/// Admin commands print their result on stdout; only warnings go to stderr.
fn init_logging_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run_admin_command(core: &Core, command: AdminCommand) -> anyhow::Result<ExitCode> {
    match command {
        AdminCommand::CreateUser { email, operator } => {
            let password = read_password()?;
            let user = core
                .accounts()
                .create_user(&email, &password, operator, &Actor::system())
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the account: {e}"))?;
            let role = if user.is_operator { "operator" } else { "user" };
            println!("created {role} {} (id {})", user.email, user.id);
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::CreateApiKey { email, tier, name } => {
            let user = core
                .accounts()
                .find_by_email(&email)
                .await
                .map_err(|e| anyhow::anyhow!(clawy_core::error::describe(&e)))?
                .ok_or_else(|| anyhow::anyhow!("no account with the email address {email}"))?;
            let created = core
                .api_keys()
                .create(&user.id, &name, tier, None, None, &Actor::system())
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the API key: {e}"))?;
            eprintln!(
                "API key \"{}\" ({} tier) for {}. It is shown only now: store it safely.",
                created.api_key.name, created.api_key.tier, user.email
            );
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", created.key.expose())?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::DnsSetKey { key_name } => {
            let secret = read_secret_line("TSIG secret (base64)")?;
            core.dns_records()
                .set_tsig_key(&key_name, &secret)
                .await
                .map_err(|e| anyhow::anyhow!("cannot store the TSIG key: {e}"))?;
            println!("stored the TSIG key {key_name} (sealed; it is not shown again)");
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::HostPublicAddress { host, ipv4, ipv6 } => {
            core.dns_records()
                .set_host_addresses(&host, ipv4, ipv6)
                .await
                .map_err(|e| anyhow::anyhow!("cannot set the addresses: {e}"))?;
            let show = |o: Option<String>| o.unwrap_or_else(|| "none".to_string());
            println!(
                "host {host}: A {} AAAA {} (its instances' records are published again)",
                show(ipv4.map(|a| a.to_string())),
                show(ipv6.map(|a| a.to_string()))
            );
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::RotateHost {
            host,
            token_stdin,
            fingerprint,
        } => {
            if !token_stdin && fingerprint.is_none() {
                anyhow::bail!("nothing to rotate: give --token-stdin and/or --fingerprint");
            }
            let found = core
                .hosts()
                .list()
                .await
                .map_err(|e| anyhow::anyhow!(clawy_core::error::describe(&e)))?
                .into_iter()
                .find(|h| h.id == host || h.name == host)
                .ok_or_else(|| anyhow::anyhow!("no host named or with id {host}"))?;
            let token = if token_stdin {
                Some(read_secret_line("new agent token")?)
            } else {
                None
            };
            let rotated = clawy_orchestrator::registration::rotate_host_credentials(
                core,
                &Actor::system(),
                &found.id,
                token.as_ref(),
                fingerprint.as_deref(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot rotate: {e}"))?;
            println!(
                "rotated credentials of host {} (fingerprint {}); now revoke the old token on the host",
                rotated.host.name, rotated.host.fingerprint
            );
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::CreateInvite => {
            let accounts = core.accounts();
            let invite = accounts
                .create_invite(&Actor::system())
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the invitation: {e}"))?;
            eprintln!("Invitation for one account, valid seven days. It is shown only now:");
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", accounts.invite_link(&invite))?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One secret line from stdin (never echoed back, never logged).
fn read_secret_line(what: &str) -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{what} (it will be visible as you type, or pipe it in): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = Zeroizing::new(String::new());
    stdin
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let v = line.trim();
    if v.is_empty() {
        anyhow::bail!("no {what} given on standard input");
    }
    Ok(SecretString::from(v.to_owned()))
}

/// One line from stdin, without its line ending. (Echo cannot be turned off without a
/// TTY library, so an interactive prompt says so; scripts pipe the password in.)
fn read_password() -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (12–72 bytes; it will be visible as you type, or pipe it in): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = Zeroizing::new(String::new());
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let pw = line.trim_end_matches(['\n', '\r']);
    if pw.is_empty() {
        anyhow::bail!("no password given on standard input");
    }
    Ok(SecretString::from(pw.to_owned()))
}
