//! `clawy up`: the whole platform on one machine, for trying Clawy and for the
//! end-to-end tests. One process that
//! 1. opens the control plane (SQLite under the data dir; every server config key and
//!    `CLAWY_*` variable is honoured),
//! 2. runs a local agent as a child (`clawy agent run`) with the QEMU driver on
//!    127.0.0.1, its state under `<data_dir>/agent`, bridge `clawybr0` and subnet
//!    10.77.0.0/24,
//! 3. puts the guest image into the agent's images dir: the Debian/OpenClaw image
//!    when `scripts/build-guest-image.sh` has built it, else the busybox stand-in
//!    (built if needed); `--guest` chooses, and the choice is printed,
//! 4. registers the local agent as host `DE` / site `local` (idempotent),
//! 5. creates the operator account (idempotent; a generated password is printed once),
//! 6. starts the orchestrator and the HTTP server, and prints the dashboard URL.
//!
//! Ctrl-C (or SIGTERM) stops the server and the agent; VMs keep running and the next
//! `clawy up` re-adopts them. It works inside a network namespace
//! (`ip netns exec NAME clawy up`): then there is no default route, VMs get no
//! internet, and nothing of the machine's own network is touched.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use clawy_core::Actor;
use clawy_core::{Core, SecretString, ServerConfig};
use rand::Rng;

/// The agent token `clawy up` creates for its control plane.
const UP_TOKEN_NAME: &str = "clawy-up";
/// The host name `clawy up` registers its agent under.
const LOCAL_HOST_NAME: &str = "local";

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Control-plane config file (TOML). Default: `<data_dir>/clawy.toml` if it exists.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The local agent's VM subnet (a /24 inside 10.0.0.0/8).
    #[arg(long, env = "CLAWY_UP_SUBNET", default_value = "10.77.0.0/24")]
    pub subnet: String,
    /// Interface VM traffic leaves by. Default: the default route's interface; without
    /// one (a bare network namespace) VMs get no internet.
    #[arg(long, env = "CLAWY_UP_UPLINK")]
    pub uplink: Option<String>,
    /// Host ports forwarded to the VMs' SSH port.
    #[arg(long, env = "CLAWY_UP_SSH_PORTS", default_value = "22000-22999")]
    pub ssh_ports: String,
    /// Where the local agent listens (loopback; the control plane pins its certificate).
    #[arg(long, env = "CLAWY_UP_AGENT_LISTEN", default_value = "127.0.0.1:8443")]
    pub agent_listen: SocketAddr,
    /// QEMU accelerator for the local agent: auto (KVM, else TCG with a warning), kvm, tcg.
    #[arg(long, env = "CLAWY_UP_ACCELERATOR", default_value = "auto")]
    pub accelerator: String,
    /// Guest image: auto (the OpenClaw image when scripts/build-guest-image.sh has
    /// built it, else the stand-in), openclaw, or stand-in (busybox, no OpenClaw).
    #[arg(long, env = "CLAWY_UP_GUEST", default_value = "auto")]
    pub guest: String,
}

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let mut config = ServerConfig::load(args.config.as_deref())
        .map_err(|e| anyhow::anyhow!(clawy_core::error::describe(&e)))?;
    if !matches!(args.accelerator.as_str(), "auto" | "kvm" | "tcg") {
        bail!("--accelerator: use auto, kvm or tcg");
    }
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let layout = AgentLayout::new(&data_dir);
    layout.create()?;

    // 3. The guest image first: a failure here should stop before anything runs.
    let explicit = std::env::var_os("CLAWY_GUEST_IMAGE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let guest = choose_guest(&args.guest, &config.base_image, explicit)?;
    let image = ensure_guest_image(&layout.images_dir, &guest.name, guest.source.as_deref())?;
    tracing::info!(image = %image.display(), "guest image ready");
    config.base_image = guest.name.clone();
    if let Some(manifest) = &guest.manifest {
        // /security states the guest's promises from the image's own manifest.
        let copy = layout
            .images_dir
            .join(format!("{}.manifest.json", guest.name));
        std::fs::copy(manifest, &copy)
            .with_context(|| format!("cannot copy {}", manifest.display()))?;
        config.guest_image_manifest.get_or_insert(copy);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(args, config, layout, guest))?;
    Ok(ExitCode::SUCCESS)
}

async fn run_async(
    args: UpArgs,
    config: ServerConfig,
    layout: AgentLayout,
    guest: GuestChoice,
) -> anyhow::Result<()> {
    ensure_loopback_up()?;
    // 2. The local agent, as a child process.
    let uplink = match &args.uplink {
        Some(u) => u.clone(),
        None => default_route_interface().unwrap_or_else(|| {
            println!(
                "note: no default route here (a network namespace?): VMs get no internet; \
                 reach them from this namespace at their private IP"
            );
            // The agent needs an uplink name; loopback never carries VM traffic out.
            "lo".to_string()
        }),
    };
    layout.write_config(&args, &uplink)?;
    stop_stale_agent(&layout);
    let identity = clawy_agent::tls::load_or_create(&layout.state_dir)
        .map_err(|e| anyhow::anyhow!("agent certificate: {e}"))?;
    let mut agent = AgentChild::spawn(&layout)?;
    let agent_url = agent.wait_listening(Duration::from_secs(60))?;
    tracing::info!(%agent_url, fingerprint = %identity.fingerprint, "local agent running");

    let mut guest_line = guest.describe.clone();
    if guest.manifest.is_some() && !kvm_works(&args.accelerator).await {
        guest_line.push_str(
            "\n             note: no working KVM here; under TCG emulation the OpenClaw \
             gateway cannot start (SSH and the guest's firewall work; use a KVM machine)",
        );
    }
    let result = serve_platform(
        &config,
        &layout,
        &agent_url,
        &identity.fingerprint,
        &guest_line,
    )
    .await;
    agent.stop();
    result
}

async fn serve_platform(
    config: &ServerConfig,
    layout: &AgentLayout,
    agent_url: &str,
    fingerprint: &str,
    guest_line: &str,
) -> anyhow::Result<()> {
    let core = Arc::new(
        Core::open(config.clone())
            .await
            .map_err(|e| anyhow::anyhow!(clawy_core::error::describe(&e)))?,
    );
    // 5. The operator account.
    let operator = ensure_operator(&core).await?;
    // 4. The local host.
    register_local_host(&core, layout, agent_url, fingerprint).await?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let app = clawy_server::build_app(core.clone()).await;
    // 6. The orchestrator (job runner, reconciler, poller) until shutdown.
    let orchestrator = clawy_orchestrator::Orchestrator::start(
        core.clone(),
        clawy_orchestrator::OrchestratorConfig::from_core(&core),
    );

    let base = config.base_url.as_str().trim_end_matches('/').to_string();
    println!("Clawy is up.");
    println!("  dashboard: {base}/");
    println!("  operator:  {}", operator.email);
    match &operator.password {
        OperatorPassword::Generated(pw) => {
            println!("  password:  {pw}   (shown only now; change it after logging in)")
        }
        OperatorPassword::FromEnv => println!("  password:  the one in CLAWY_OPERATOR_PASSWORD"),
        OperatorPassword::Existing => {
            println!("  password:  unchanged (the one printed or set at the first start)")
        }
    }
    println!("  guest:     {guest_line}");
    println!("  data dir:  {}", config.data_dir.display());
    println!("Press Ctrl-C to stop (VMs keep running; the next `clawy up` re-adopts them).");

    let served = clawy_server::serve_with(listener, app, shutdown_signal()).await;
    // A job step cut short here is taken up again after its lease expires.
    if tokio::time::timeout(Duration::from_secs(30), orchestrator.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("background jobs did not stop within 30 s; leaving them");
    }
    core.store().close().await;
    served.context("serving HTTP")?;
    Ok(())
}

struct Operator {
    email: String,
    password: OperatorPassword,
}

enum OperatorPassword {
    /// Made now and printed once; not stored anywhere in plain text.
    Generated(String),
    FromEnv,
    /// The account existed already: nothing changed.
    Existing,
}

/// Creates the operator on the first start; later starts find it and change nothing.
async fn ensure_operator(core: &Core) -> anyhow::Result<Operator> {
    let email = std::env::var("CLAWY_OPERATOR_EMAIL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "operator@localhost".to_string());
    if let Some(user) = core
        .accounts()
        .find_by_email(&email)
        .await
        .map_err(|e| anyhow::anyhow!(clawy_core::error::describe(&e)))?
    {
        if !user.is_operator {
            tracing::warn!(%email, "the account exists but is not an operator");
        }
        return Ok(Operator {
            email: user.email,
            password: OperatorPassword::Existing,
        });
    }
    let (password, generated) = match std::env::var("CLAWY_OPERATOR_PASSWORD")
        .ok()
        .filter(|s| !s.is_empty())
    {
        Some(p) => (p, false),
        None => (generate_password(), true),
    };
    let user = core
        .accounts()
        .create_user(
            &email,
            &SecretString::from(password.clone()),
            true,
            &Actor::system(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the operator account {email}: {e}"))?;
    Ok(Operator {
        email: user.email,
        password: if generated {
            OperatorPassword::Generated(password)
        } else {
            OperatorPassword::FromEnv
        },
    })
}

/// 20 random letters and digits (~119 bits): strong under any password policy.
fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// Registers the local agent as host `local` (country `DE`, site `local`) unless it
/// exists. A fresh agent token is made only when registering, so no agent token is
/// ever kept in plain text here (DATA-3/DATA-4: the control plane stores it sealed).
async fn register_local_host(
    core: &Core,
    layout: &AgentLayout,
    agent_url: &str,
    fingerprint: &str,
) -> anyhow::Result<()> {
    match core.hosts().get_by_name(LOCAL_HOST_NAME).await {
        Ok(host) => {
            let same_fp = clawy_core::hosts::normalize_fingerprint(fingerprint)
                .is_ok_and(|fp| fp == host.fingerprint);
            if host.url != agent_url || !same_fp {
                // The operator can remove the host and restart to register it again.
                tracing::warn!(
                    registered_url = %host.url,
                    %agent_url,
                    "the registered local host no longer matches the local agent (URL or certificate changed)"
                );
            }
            return Ok(());
        }
        Err(clawy_core::hosts::HostError::NotFound) => {}
        Err(e) => bail!("cannot look up the local host: {e}"),
    }
    // An older token of ours (from a data dir whose database was reset) is useless.
    let _ = clawy_agent::tokens::revoke(&layout.state_dir, UP_TOKEN_NAME);
    let (_, token) = clawy_agent::tokens::create(&layout.state_dir, Some(UP_TOKEN_NAME))
        .map_err(|e| anyhow::anyhow!("cannot create the local agent's token: {e}"))?;
    let host = core
        .hosts()
        .register(
            &Actor::system(),
            clawy_core::hosts::RegisterHost {
                name: LOCAL_HOST_NAME.to_string(),
                url: agent_url.to_string(),
                fingerprint: fingerprint.to_string(),
                token: SecretString::from(token.expose().to_string()),
                region: "DE".to_string(),
                site: "local".to_string(),
                enabled: true,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot register the local host: {e}"))?;
    tracing::info!(host_id = %host.id, "registered the local agent as host `local` (DE-local)");
    Ok(())
}

/// Logs to stderr (`RUST_LOG`, default `info`), coloured only on a terminal so a
/// redirected log stays plain text.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    tracing::info!("shutting down; VMs keep running");
}

/// Where the local agent keeps its files under the data dir.
struct AgentLayout {
    dir: PathBuf,
    state_dir: PathBuf,
    images_dir: PathBuf,
    config_path: PathBuf,
    pid_path: PathBuf,
}

impl AgentLayout {
    fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("agent");
        AgentLayout {
            state_dir: dir.join("state"),
            images_dir: dir.join("images"),
            config_path: dir.join("agent.toml"),
            pid_path: dir.join("agent.pid"),
            dir,
        }
    }

    fn create(&self) -> anyhow::Result<()> {
        for d in [&self.dir, &self.images_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        clawy_agent::tls::ensure_private_dir(&self.state_dir)
            .map_err(|e| anyhow::anyhow!(clawy_core::error::describe(&e)))?;
        Ok(())
    }

    /// The agent's config, rewritten on every start so flags and variables apply.
    fn write_config(&self, args: &UpArgs, uplink: &str) -> anyhow::Result<()> {
        let text = agent_config_toml(self, args, uplink)?;
        std::fs::write(&self.config_path, text)
            .with_context(|| format!("cannot write {}", self.config_path.display()))
    }
}

fn agent_config_toml(layout: &AgentLayout, args: &UpArgs, uplink: &str) -> anyhow::Result<String> {
    let q = |p: &Path| -> anyhow::Result<String> {
        let s = p.to_str().context("the data dir path is not UTF-8")?;
        Ok(toml::Value::String(s.to_string()).to_string())
    };
    let s = |v: &str| toml::Value::String(v.to_string()).to_string();
    let text = format!(
        "# Written by `clawy up` at every start; edit the flags, not this file.\n\
         listen = {listen}\nstate_dir = {state}\nimages_dir = {images}\n\
         location = \"DE-local\"\n\n\
         [network]\nbridge = \"clawybr0\"\nsubnet = {subnet}\nuplink = {uplink}\n\
         ssh_port_range = {ports}\n\n\
         [driver]\nkind = \"qemu\"\n\n[driver.qemu]\naccelerator = {accel}\n",
        listen = s(&args.agent_listen.to_string()),
        state = q(&layout.state_dir)?,
        images = q(&layout.images_dir)?,
        accel = s(&args.accelerator),
        subnet = s(&args.subnet),
        uplink = s(uplink),
        ports = s(&args.ssh_ports),
    );
    // Fail here, with the agent's own message, rather than in the child.
    let cfg = clawy_agent::config::AgentConfig::from_toml(&text, &NoEnv)
        .map_err(|e| anyhow::anyhow!("local agent config: {e}"))?;
    if let Some(net) = &cfg.network {
        net.validate()
            .map_err(|e| anyhow::anyhow!("local agent config: {e}"))?;
    }
    Ok(text)
}

struct NoEnv;
impl clawy_agent::config::Env for NoEnv {
    fn var(&self, _key: &str) -> Option<String> {
        None
    }
}

/// `dev X` of `ip route show default`, if there is a default route.
fn default_route_interface() -> Option<String> {
    let out = Command::new("ip")
        .args(["-o", "route", "show", "default"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "dev" {
            return words.next().map(str::to_string);
        }
    }
    None
}

/// The agent child of a previous `clawy up` that was killed (SIGKILL leaves it
/// running and holding the port): stop it, identified by our pid file and its
/// command line naming our agent config.
fn stop_stale_agent(layout: &AgentLayout) {
    let Ok(text) = std::fs::read_to_string(&layout.pid_path) else {
        return;
    };
    let Ok(raw) = text.trim().parse::<i32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{raw}/cmdline")).unwrap_or_default();
    let cfg = layout.config_path.to_string_lossy();
    if !String::from_utf8_lossy(&cmdline).contains(cfg.as_ref()) {
        return;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(raw) {
        tracing::info!(
            pid = raw,
            "stopping the agent a previous `clawy up` left running"
        );
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && Path::new(&format!("/proc/{raw}")).exists() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

struct AgentChild {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pid_path: PathBuf,
}

impl AgentChild {
    fn spawn(layout: &AgentLayout) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the clawy executable")?;
        let mut child = Command::new(exe)
            .arg("agent")
            .arg("--config")
            .arg(&layout.config_path)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // The agent's log (and its TCG warning) goes where ours goes.
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the local agent")?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let _ = std::fs::write(&layout.pid_path, child.id().to_string());
        Ok(AgentChild {
            child,
            lines: rx,
            pid_path: layout.pid_path.clone(),
        })
    }

    /// Waits for the agent's `listening on https://…` line.
    fn wait_listening(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the local agent exited ({status}) before it listened; see its log above");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "the local agent did not start within {}s",
                    timeout.as_secs()
                );
            }
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => {
                    if let Some(url) = line.trim().strip_prefix("listening on ") {
                        return Ok(url.trim().to_string());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// SIGTERM and wait: the agent leaves its VMs running by design.
    fn stop(mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        let _ = std::fs::remove_file(&self.pid_path);
    }
}

/// The guest image `clawy up` deploys, and what it tells the user about it.
#[derive(Debug)]
struct GuestChoice {
    /// File name in the agent's images dir (the control plane's `base_image`).
    name: String,
    /// Where it comes from; `None`: build the stand-in from the source tree.
    source: Option<PathBuf>,
    /// The real image's manifest (packages), for the honest /security page.
    manifest: Option<PathBuf>,
    /// One line for the start banner.
    describe: String,
}

/// `CLAWY_GUEST_IMAGE` (an explicit image file) wins; else `mode`: `openclaw` needs
/// the image built by scripts/build-guest-image.sh, `auto` takes it when built and
/// the stand-in otherwise, `stand-in` always takes the stand-in.
fn choose_guest(
    mode: &str,
    stand_in_name: &str,
    explicit: Option<PathBuf>,
) -> anyhow::Result<GuestChoice> {
    if let Some(p) = explicit {
        return Ok(GuestChoice {
            name: stand_in_name.to_string(),
            describe: format!("{stand_in_name} (from CLAWY_GUEST_IMAGE={})", p.display()),
            source: Some(p),
            manifest: None,
        });
    }
    let stand_in = || GuestChoice {
        name: stand_in_name.to_string(),
        source: None,
        manifest: None,
        describe: format!(
            "{stand_in_name}: the busybox stand-in, which runs no OpenClaw \
             (for the real guest run scripts/build-guest-image.sh, then restart)"
        ),
    };
    let built = || newest_openclaw_image(&openclaw_image_cache());
    match mode {
        "stand-in" => Ok(stand_in()),
        "auto" => Ok(built().unwrap_or_else(stand_in)),
        "openclaw" => built().with_context(|| {
            format!(
                "--guest openclaw: no OpenClaw image in {} yet; build it with \
                 scripts/build-guest-image.sh (a few minutes), or use --guest stand-in",
                openclaw_image_cache().display()
            )
        }),
        other => bail!("--guest: `{other}` is not one of auto, openclaw, stand-in"),
    }
}

/// The cache scripts/build-guest-image.sh writes to (same rule as the script).
fn openclaw_image_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("CLAWY_GUEST_IMAGE_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/cache/clawy/guest");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("clawy/guest")
}

/// The most recently built `clawy-openclaw-<version>-<n>.qcow2` that has its
/// manifest beside it (the script writes the manifest last).
fn newest_openclaw_image(cache: &Path) -> Option<GuestChoice> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(cache).ok()?.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name
            .strip_prefix("clawy-openclaw-")
            .and_then(|r| r.strip_suffix(".qcow2"))
        else {
            continue;
        };
        if stem.is_empty()
            || !cache
                .join(format!("clawy-openclaw-{stem}.manifest.json"))
                .is_file()
        {
            continue;
        }
        let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, path));
        }
    }
    let (_, qcow2) = best?;
    let name = qcow2.file_name()?.to_str()?.to_string();
    let stem = name.strip_suffix(".qcow2")?;
    Some(GuestChoice {
        manifest: Some(cache.join(format!("{stem}.manifest.json"))),
        describe: format!(
            "{name}: Debian 12 with the OpenClaw gateway (scripts/build-guest-image.sh)"
        ),
        name,
        source: Some(qcow2),
    })
}

/// Whether VMs get KVM (the agent makes the same probe and falls back to TCG).
async fn kvm_works(accelerator: &str) -> bool {
    match accelerator {
        "tcg" => false,
        _ => clawy_agent::drivers::qemu::accel::probe_kvm(Path::new("qemu-system-x86_64"))
            .await
            .is_ok(),
    }
}

/// Puts the guest image into the agent's images dir: copied from `source`, else
/// built with `scripts/build-test-guest.sh` from the source tree. An image already
/// there is kept (running VMs' overlays use it as their backing file).
fn ensure_guest_image(
    images_dir: &Path,
    name: &str,
    source: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    // The control plane names the image in every VM spec (`base_image`); a path
    // would escape the images dir.
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        bail!("config key `base_image`: `{name}` must be a file name");
    }
    let dest = images_dir.join(name);
    if dest.is_file() {
        return Ok(dest);
    }
    let source = match source {
        Some(p) => p.to_path_buf(),
        None => build_guest_image()?,
    };
    if !source.is_file() {
        bail!("guest image {} is not a file", source.display());
    }
    // Copy then rename: the agent never sees a half-written base image.
    let tmp = images_dir.join(format!(".{name}.tmp"));
    std::fs::copy(&source, &tmp)
        .with_context(|| format!("cannot copy {} to {}", source.display(), tmp.display()))?;
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

fn build_guest_image() -> anyhow::Result<PathBuf> {
    let script = find_guest_script().context(
        "cannot find scripts/build-test-guest.sh (run clawy up from the source tree, \
         or set CLAWY_GUEST_IMAGE to a guest image)",
    )?;
    println!("Building the test guest image (first time only; takes a minute)…");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .context("build-test-guest.sh printed no path")?;
    Ok(path)
}

/// The script next to the executable's source tree (`target/{debug,release}/clawy`
/// → the repository root), else the tree this binary was compiled from.
fn find_guest_script() -> Option<PathBuf> {
    let rel = Path::new("scripts/build-test-guest.sh");
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            let p = dir.join(rel);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    p.is_file().then_some(p)
}

/// A namespace made with `ip netns add` starts with its loopback DOWN, and everything
/// `clawy up` runs listens on 127.0.0.1. Bring it up only when it is down — on a
/// normal machine loopback is up and nothing is touched.
fn ensure_loopback_up() -> anyhow::Result<()> {
    const IFF_UP: u32 = 0x1;
    let flags = std::fs::read_to_string("/sys/class/net/lo/flags").unwrap_or_default();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(IFF_UP);
    if flags & IFF_UP != 0 {
        return Ok(());
    }
    println!("note: loopback is down here (a new network namespace?); bringing it up");
    let status = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("cannot run `ip link set lo up`")?;
    if !status.success() {
        bail!("`ip link set lo up` failed ({status}); bring loopback up and try again");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn args() -> UpArgs {
        UpArgs {
            config: None,
            subnet: "10.77.0.0/24".into(),
            uplink: None,
            ssh_ports: "22000-22999".into(),
            agent_listen: "127.0.0.1:8443".parse().unwrap(),
            accelerator: "auto".into(),
            guest: "auto".into(),
        }
    }

    #[test]
    fn newest_openclaw_image_needs_its_manifest_and_prefers_the_latest_build() {
        let dir = tempfile::tempdir().unwrap();
        assert!(newest_openclaw_image(dir.path()).is_none());
        let touch = |name: &str| std::fs::write(dir.path().join(name), b"x").unwrap();
        touch("clawy-openclaw-2026.9.6-3.qcow2");
        touch("clawy-openclaw-2026.9.6-3.manifest.json");
        std::thread::sleep(Duration::from_millis(20));
        // Newer, but its manifest is not written yet (a build in progress): skipped.
        touch("clawy-openclaw-2026.9.6-4.qcow2");
        touch("clawy-test-guest.qcow2");
        let got = newest_openclaw_image(dir.path()).unwrap();
        assert_eq!(got.name, "clawy-openclaw-2026.9.6-3.qcow2");
        assert_eq!(
            got.manifest.unwrap(),
            dir.path().join("clawy-openclaw-2026.9.6-3.manifest.json")
        );
        touch("clawy-openclaw-2026.9.6-4.manifest.json");
        let got = newest_openclaw_image(dir.path()).unwrap();
        assert_eq!(got.name, "clawy-openclaw-2026.9.6-4.qcow2");
        assert!(got.describe.contains("OpenClaw"), "{}", got.describe);
    }

    #[test]
    fn guest_mode_is_checked() {
        let err = choose_guest("debian", "g.qcow2", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("auto, openclaw, stand-in"), "{err}");
        // An explicit image file wins over any mode.
        let e = choose_guest("openclaw", "g.qcow2", Some("/x/i.qcow2".into())).unwrap();
        assert_eq!(e.source.as_deref(), Some(Path::new("/x/i.qcow2")));
        assert_eq!(e.name, "g.qcow2");
        let s = choose_guest("stand-in", "g.qcow2", None).unwrap();
        assert_eq!(
            (s.name.as_str(), s.source, s.manifest),
            ("g.qcow2", None, None)
        );
        assert!(
            s.describe.contains("build-guest-image.sh"),
            "{}",
            s.describe
        );
    }

    #[test]
    fn agent_config_is_valid_and_quotes_paths() {
        let dir = tempfile::tempdir().unwrap();
        let layout = AgentLayout::new(&dir.path().join("a \"b"));
        let text = agent_config_toml(&layout, &args(), "lo").unwrap();
        assert!(text.contains("location = \"DE-local\""), "{text}");
        let mut bad = args();
        bad.subnet = "192.168.1.0/24".into();
        let err = agent_config_toml(&layout, &bad, "lo")
            .unwrap_err()
            .to_string();
        assert!(err.contains("subnet"), "{err}");
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let a = generate_password();
        assert_eq!(a.len(), 20);
        assert_ne!(a, generate_password());
    }

    #[test]
    fn guest_script_is_found_from_the_source_tree() {
        assert!(find_guest_script().is_some());
    }
}
