//! `clawy up` end to end, run inside a network namespace as the README says:
//! it boots and prints the dashboard URL and a generated operator password, the
//! operator logs in, a restart is idempotent; and through the CLI an instance on a
//! real TCG guest goes create → running and healthy → stop → start → delete, with
//! `--json` output and the documented exit codes.

use crate::cli_support::{Cli, text};
use crate::up_support::{Up, UpOptions, web_login};
use std::time::{Duration, Instant};

const OPERATOR: &str = "operator@localhost";

async fn operator_get(up: &Up, path: &str) -> serde_json::Value {
    let out = up.admin(&["create-api-key", OPERATOR, "--tier", "admin"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_string();
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1{path}", up.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp.json().await.unwrap()
}

// Multi-threaded: the CLI runs as blocking child processes while the loopback
// forwarder (a task on this runtime) carries their requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_boots_prints_url_operator_logs_in_and_restart_is_idempotent() {
    let mut up = Up::start(UpOptions::default()).await;
    assert_eq!(
        up.summary("dashboard").as_deref(),
        Some("http://127.0.0.1:8080/"),
        "{}",
        up.stdout_text()
    );
    assert_eq!(up.summary("operator").as_deref(), Some(OPERATOR));
    let password = up
        .summary("password")
        .and_then(|p| p.split_whitespace().next().map(str::to_string))
        .unwrap();
    assert_eq!(password.len(), 20, "{}", up.stdout_text());
    // The final secrets scan checks that no log of the run holds it.
    clawy_testkit::secrets::register(&password);
    // Inside a bare namespace there is no default route: said, not hidden.
    assert!(
        up.stdout_text().contains("no default route"),
        "{}",
        up.stdout_text()
    );

    // The operator logs in to the dashboard with the printed password.
    let (status, session) = web_login(&up.base, OPERATOR, &password).await;
    assert_eq!(status, 303);
    assert!(session, "a session cookie is set");
    let (status, session) = web_login(&up.base, OPERATOR, "not-the-password-at-all").await;
    assert_eq!(status, 401);
    assert!(!session);

    // The local agent is registered as a host in DE.
    let hosts = operator_get(&up, "/admin/hosts").await;
    let list = hosts["hosts"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{hosts}");
    assert_eq!(list[0]["url"], "https://127.0.0.1:8443");
    let pid_file = up.agent_dir().join("agent.pid");
    assert!(pid_file.exists());
    only_the_control_plane_and_the_agent_listen(&up);

    // Ctrl-C/SIGTERM: a clean exit that stops the agent child too.
    let status = up.stop().await;
    assert!(status.success(), "{status}; log:\n{}", up.log());
    assert!(
        !pid_file.exists(),
        "the agent was stopped and its pid file removed"
    );

    // A second start changes nothing: same operator (no new password), one host.
    up.launch(&UpOptions::default()).await;
    let again = up.summary("password").unwrap();
    assert!(again.starts_with("unchanged"), "{again}");
    assert!(
        !up.stdout_text().contains(&password),
        "the password is printed only once"
    );
    let (status, _) = web_login(&up.base, OPERATOR, &password).await;
    assert_eq!(status, 303);
    let hosts = operator_get(&up, "/admin/hosts").await;
    assert_eq!(hosts["hosts"].as_array().unwrap().len(), 1, "{hosts}");

    // Killed hard, `clawy up` leaves its agent behind holding the port; the next
    // start stops that agent first and comes up with exactly one.
    assert_eq!(up.agent_count(), 1);
    up.kill9().await;
    assert_eq!(up.agent_count(), 1, "the orphaned agent is still there");
    up.launch(&UpOptions::default()).await;
    assert_eq!(up.agent_count(), 1);
    let (status, _) = web_login(&up.base, OPERATOR, &password).await;
    assert_eq!(status, 303);
}

/// A full nmap TCP scan of the namespace's loopback (everything `clawy up` listens on
/// is there): the control plane (8080) and the agent (8443), nothing else.
fn only_the_control_plane_and_the_agent_listen(up: &Up) {
    let out = up
        .ns
        .exec(&[
            "nmap",
            "-Pn",
            "-n",
            "-sT",
            "-p-",
            "-T4",
            "-oG",
            "-",
            "127.0.0.1",
        ])
        .expect("nmap is installed by scripts/install-deps.sh");
    let open: Vec<u16> = out
        .lines()
        .filter_map(|l| l.split_once("Ports: ").map(|(_, p)| p.to_string()))
        .flat_map(|p| {
            p.split(", ")
                .filter(|e| e.contains("/open/"))
                .filter_map(|e| e.split('/').next()?.trim().parse().ok())
                .collect::<Vec<u16>>()
        })
        .collect();
    assert_eq!(open, vec![8080, 8443], "nmap:\n{out}");
}

/// `clawy instances create NAME ARGS… --json`, retried while the new host has not
/// reported its capacity yet (exit 5 = no capacity).
fn create_when_host_ready(cli: &Cli, name: &str, args: &[&str]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut argv = vec!["instances", "create", name];
    argv.extend_from_slice(args);
    argv.push("--json");
    loop {
        let out = cli.run(&argv);
        match out.status.code() {
            Some(0) => return serde_json::from_slice(&out.stdout).unwrap(),
            Some(5) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_secs(2));
            }
            other => panic!(
                "create {name}: exit {other:?}: {}{}",
                text(&out.stderr),
                text(&out.stdout)
            ),
        }
    }
}

/// `clawy instances delete NAME --yes --wait`; returns its output.
fn delete_and_wait(cli: &Cli, name: &str) -> String {
    cli.ok(&[
        "instances",
        "delete",
        name,
        "--yes",
        "--wait",
        "--timeout",
        "300",
    ])
}

/// The owner's own SSH key, in a home directory of their own (see
/// `net_5_ssh_command_works_as_shown`), added to their account as `laptop`.
fn owner_home_with_key(cli: &Cli) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let ssh_dir = home.path().join(".ssh");
    std::fs::create_dir(&ssh_dir).unwrap();
    let key = ssh_dir.join("id_ed25519");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "owner@laptop", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    cli.ok(&[
        "ssh-keys",
        "add",
        "laptop",
        key.with_extension("pub").to_str().unwrap(),
    ]);
    home
}

/// Runs the displayed SSH command verbatim (plus the remote command `hostname`)
/// where `clawy up` runs, as its user would: `~/.ssh` holds their key and, like a
/// first "yes" to ssh's host-key prompt, the guest's host key (ssh-keyscan). ssh
/// finds `~` through the password database, not `$HOME`, so a private mount
/// namespace puts `home` over /root for this one command; the machine's own /root
/// is untouched.
async fn net_5_ssh_command_works_as_shown(
    up: &Up,
    home: &std::path::Path,
    cmd: &str,
    hostname: &str,
    within: Duration,
) {
    let port = cmd.split_whitespace().nth(2).unwrap();
    let script = format!(
        "mount --bind {home} /root && \
         ssh-keyscan -T 5 -p {port} 127.0.0.1 > /root/.ssh/known_hosts 2>/dev/null && \
         exec {cmd} hostname",
        home = home.display()
    );
    let deadline = Instant::now() + within;
    loop {
        let out = up
            .ns
            .output(&["unshare", "--mount", "sh", "-c", &script])
            .unwrap();
        if out.status.success() {
            assert_eq!(text(&out.stdout).trim(), hostname, "{}", text(&out.stderr));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`{cmd}` as shown failed: {}",
            text(&out.stderr)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

// Multi-threaded: the CLI runs as blocking child processes while the loopback
// forwarder (a task on this runtime) carries their requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_cli_instance_lifecycle_create_running_healthy_stop_start_delete() {
    let opts = UpOptions {
        operator_password: Some("Ops-password-for-the-e2e-test-1".into()),
        ..UpOptions::default()
    };
    let mut up = Up::start(UpOptions {
        operator_password: opts.operator_password.clone(),
        ..UpOptions::default()
    })
    .await;
    let cli = up.user_cli("user@example.test", "manage");

    // A new user's first step, as the CLI tells them: the hint on an empty list runs
    // as shown (only NAME filled in), with the operator's default plan.
    let empty = cli.ok(&["instances", "list"]);
    let hint = empty
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in: {empty}"))
        .replace("NAME", "first");
    assert_eq!(hint, "clawy instances create first --wait", "{empty}");
    let args: Vec<&str> = hint.split_whitespace().skip(1).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = cli.run(&args);
        match out.status.code() {
            Some(0) => {
                assert!(
                    text(&out.stdout).contains("running"),
                    "{}",
                    text(&out.stdout)
                );
                break;
            }
            // The new host has not reported its capacity yet.
            Some(5) if Instant::now() < deadline => std::thread::sleep(Duration::from_secs(2)),
            other => panic!("`{hint}`: exit {other:?}: {}", text(&out.stderr)),
        }
    }
    delete_and_wait(&cli, "first");
    assert_eq!(up.qemu_count(), 0);

    // ISO-2/DATA-2: a plan bigger than the host: the clear capacity error, exit 5.
    let err = cli.fails_with(5, &["instances", "create", "huge", "--plan", "large"]);
    assert!(err.contains("capacity"), "{err}");
    // A name that is not a DNS label: exit 2.
    cli.fails_with(2, &["instances", "create", "Not_A_Label"]);

    let home = owner_home_with_key(&cli);

    let inst = tokio::task::block_in_place(|| {
        create_when_host_ready(
            &cli,
            "web",
            &[
                "--plan",
                "stand-in",
                "--ssh-key",
                "laptop",
                "--wait",
                "--healthy",
                "--timeout",
                "600",
            ],
        )
    });
    assert_eq!(inst["state"], "running", "{inst}");
    assert_eq!(inst["health"]["gateway"], "ok", "{inst}");
    let ip = inst["private_ip"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.77.0."), "{ip}");
    let id = inst["id"].as_str().unwrap().to_string();
    assert_eq!(up.qemu_count(), 1);
    // The gateway really answers at the private IP (from the namespace).
    let out = up
        .ns
        .output(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            &format!("http://{ip}:18789/"),
        ])
        .unwrap();
    assert_eq!(text(&out.stdout), "200");

    // Table and JSON list; show by name and by id agree.
    let table = cli.ok(&["instances", "list"]);
    assert!(
        table.contains("web") && table.contains("running"),
        "{table}"
    );
    let list = cli.json(&["instances", "list", "--json"]);
    assert_eq!(list["instances"].as_array().unwrap().len(), 1, "{list}");
    let by_name = cli.json(&["instances", "show", "web", "--json"]);
    let by_id = cli.json(&["instances", "show", &id, "--json"]);
    assert_eq!(by_name["id"], by_id["id"]);
    let shown = cli.ok(&["instances", "show", "web"]);
    assert!(shown.contains(&ip), "{shown}");

    // NET-5 / AUTH-4: the SSH command the API and the CLI show works exactly as
    // shown, on the machine running `clawy up`, with the owner's default key.
    let cmd = inst["ssh_command"].as_str().unwrap().to_string();
    assert_eq!(cmd, format!("ssh -p {} claw@127.0.0.1", inst["ssh_port"]));
    let line = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("ssh:").map(str::trim))
        .unwrap_or_else(|| panic!("no ssh line in: {shown}"));
    assert_eq!(line, cmd, "{shown}");
    net_5_ssh_command_works_as_shown(&up, home.path(), &cmd, "web", Duration::from_secs(90)).await;

    // The same name twice: conflict (exit 5).
    cli.fails_with(5, &["instances", "create", "web"]);

    let v = cli.json(&[
        "instances",
        "stop",
        "web",
        "--wait",
        "--timeout",
        "300",
        "--json",
    ]);
    assert_eq!(v["state"], "stopped", "{v}");
    assert_eq!(up.qemu_count(), 0, "a stopped instance has no QEMU process");
    let v = cli.json(&[
        "instances",
        "start",
        "web",
        "--wait",
        "--timeout",
        "300",
        "--json",
    ]);
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(up.qemu_count(), 1);

    // Ctrl-C leaves the VM running; the next `clawy up` re-adopts it (no second VM).
    let status = up.stop().await;
    assert!(status.success(), "{status}");
    assert_eq!(up.qemu_count(), 1, "the VM outlives clawy up");
    up.launch(&opts).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = cli.json(&["instances", "show", "web", "--json"]);
        if v["state"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "not running after restart: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(up.qemu_count(), 1);

    // Exit codes scripts rely on.
    cli.fails_with(4, &["instances", "show", "nope"]);
    cli.fails_with(
        4,
        &["instances", "stop", "00000000-0000-4000-8000-000000000000"],
    );
    Cli::with_key(&up.base, "clawy_m_not-a-key").fails_with(3, &["instances", "list"]);
    // Another user's instance is not found, never forbidden.
    let other = up.user_cli("other@example.test", "manage");
    other.fails_with(4, &["instances", "show", &id]);
    other.fails_with(4, &["instances", "delete", "web", "--yes"]);
    // ACCESS-3: the owner reads what happened, including the platform's own steps.
    let ev = cli.json(&["instances", "events", "web", "--json"]);
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"instance_created"), "{kinds:?}");
    assert!(kinds.contains(&"instance_stop_requested"), "{kinds:?}");
    let table = cli.ok(&["instances", "events", "web"]);
    assert!(
        table.starts_with("AT") && table.contains("instance_created"),
        "{table}"
    );

    // Deleting without --yes and without a terminal is refused (exit 2).
    cli.fails_with(2, &["instances", "delete", "web"]);

    let out = delete_and_wait(&cli, "web");
    assert!(out.contains("Deleted"), "{out}");
    assert_eq!(up.qemu_count(), 0);
    let list = cli.json(&["instances", "list", "--json"]);
    let live: Vec<_> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] != "deleted")
        .collect();
    assert!(live.is_empty(), "{list}");
}

/// With the real guest built (scripts/build-guest-image.sh; CI builds it first),
/// `clawy up` deploys it by itself, says so, and an instance with the default plan
/// boots it: the owner logs in with the SSH command shown, as shown (AUTH-4: with
/// the key; the real sshd). Under TCG the OpenClaw gateway cannot start, which the
/// banner says too, so this waits for `running`, not `healthy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_4_up_deploys_the_openclaw_image_when_built_and_ssh_works_as_shown() {
    let image = tokio::task::block_in_place(clawy_testkit::openclaw_image::openclaw_image)
        .unwrap_or_else(|e| panic!("the OpenClaw guest image: {e:#}"));
    let name = image
        .qcow2
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let up = Up::start(UpOptions {
        operator_password: Some("Ops-password-for-the-e2e-test-1".into()),
        guest_cache: Some(image.qcow2.parent().unwrap().to_path_buf()),
        ..UpOptions::default()
    })
    .await;
    let guest = up
        .summary("guest")
        .unwrap_or_else(|| panic!("{}", up.stdout_text()));
    assert!(
        guest.starts_with(&format!("{name}: Debian 12 with the OpenClaw gateway")),
        "{guest}"
    );
    assert!(
        up.stdout_text()
            .contains("the OpenClaw gateway cannot start"),
        "{}",
        up.stdout_text()
    );
    let copied = up.agent_dir().join("images").join(&name);
    assert!(copied.is_file(), "{} missing", copied.display());

    let cli = up.user_cli("user@example.test", "manage");
    let home = owner_home_with_key(&cli);
    let inst = tokio::task::block_in_place(|| {
        create_when_host_ready(
            &cli,
            "web",
            &["--ssh-key", "laptop", "--wait", "--timeout", "600"],
        )
    });
    assert_eq!(inst["state"], "running", "{inst}");
    assert_eq!(inst["plan"], "small", "{inst}");
    let cmd = inst["ssh_command"].as_str().unwrap().to_string();
    // A Debian boot under TCG on a busy machine: minutes, not seconds.
    net_5_ssh_command_works_as_shown(&up, home.path(), &cmd, "web", Duration::from_secs(420)).await;
    delete_and_wait(&cli, "web");
    assert_eq!(up.qemu_count(), 0);
}
