//! `clawy login`, `clawy ssh-keys …`, `clawy api-keys …` against a real server:
//! stored credentials (0600), `--json`, and the documented exit codes.

use crate::cli_support::{Cli, Server, text};
use std::os::unix::fs::PermissionsExt;

const PUBKEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDFsAUfurDOVtzYkFhKbn+LH+gZhGmaH2c7s7r50h6XN test@example";

#[tokio::test]
async fn cli_login_stores_a_0600_file_that_later_commands_use() {
    let server = Server::start().await;
    let key = server.user_with_key("login@example.test", "admin");
    let cli = Cli::new();

    // A wrong key is refused before anything is stored (exit 3).
    let out = cli.run_stdin(
        &["login", "--server", &server.base],
        "clawy_a_not-a-real-key\n",
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let path = cli.config_home.path().join("clawy/credentials.toml");
    assert!(!path.exists());

    let out = cli.run_stdin(&["login", "--server", &server.base], &format!("{key}\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("login@example.test"), "{stdout}");
    assert!(!stdout.contains(&key) && !text(&out.stderr).contains(&key));
    // AUTH-2: the key at rest is readable by its owner only.
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    assert!(std::fs::read_to_string(&path).unwrap().contains(&key));

    // Later commands need neither flag nor variable.
    let v = cli.json(&["ssh-keys", "list", "--json"]);
    assert_eq!(v["ssh_keys"], serde_json::json!([]));

    // A bad key in the environment wins over the file, and fails with exit 3.
    let mut bad = Cli::new();
    bad.config_home = cli.config_home;
    bad.env
        .push(("CLAWY_API_KEY".into(), "clawy_m_wrong".into()));
    let err = bad.fails_with(3, &["ssh-keys", "list"]);
    assert!(err.starts_with("error: "), "{err}");

    let out = text(&bad.run(&["logout"]).stdout);
    assert!(out.contains("Removed"), "{out}");
    assert!(!path.exists());
    // Logged out and no variable: exit 3 with a hint.
    let nobody = Cli {
        config_home: bad.config_home,
        env: Vec::new(),
    };
    let err = nobody.fails_with(3, &["instances", "list"]);
    assert!(err.contains("clawy login"), "{err}");
}

#[tokio::test]
async fn cli_ssh_keys_and_api_keys_round_trip_with_json_and_exit_codes() {
    let server = Server::start().await;
    let key = server.user_with_key("keys@example.test", "admin");
    let cli = Cli::with_key(&server.base, &key);

    // ssh-keys: add from a file and from stdin, list as table and JSON, delete by name.
    let file = cli.config_home.path().join("id.pub");
    std::fs::write(&file, format!("{PUBKEY}\n")).unwrap();
    let out = cli.ok(&["ssh-keys", "add", "laptop", file.to_str().unwrap()]);
    assert!(out.contains("laptop") && out.contains("SHA256:"), "{out}");
    let out = cli.run_stdin(
        &["ssh-keys", "add", "dup", "-", "--json"],
        &format!("{PUBKEY}\n"),
    );
    // The same key twice is a conflict (exit 5) — or accepted; either way not a crash.
    assert!(
        matches!(out.status.code(), Some(0) | Some(5)),
        "{}",
        text(&out.stderr)
    );
    let table = cli.ok(&["ssh-keys", "list"]);
    assert!(
        table.starts_with("ID") && table.contains("laptop"),
        "{table}"
    );
    let v = cli.json(&["ssh-keys", "list", "--json"]);
    let laptop = v["ssh_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "laptop")
        .unwrap()
        .clone();
    assert_eq!(laptop["algorithm"], "ssh-ed25519");
    // A private key file is refused before anything is sent (exit 2).
    let private = cli.config_home.path().join("id");
    std::fs::write(&private, "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n").unwrap();
    cli.fails_with(2, &["ssh-keys", "add", "oops", private.to_str().unwrap()]);
    let out = cli.ok(&["ssh-keys", "delete", "laptop"]);
    assert!(out.contains("Deleted"), "{out}");
    let err = cli.fails_with(4, &["ssh-keys", "delete", "laptop"]);
    assert!(err.contains("laptop"), "{err}");

    // api-keys: create prints the key alone on stdout; it works; tiers are enforced.
    let out = cli.run(&[
        "api-keys",
        "create",
        "ci",
        "--tier",
        "read",
        "--expires",
        "30d",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let read_key = text(&out.stdout).trim().to_string();
    assert!(read_key.starts_with("clawy_r_"), "{read_key}");
    assert!(text(&out.stderr).contains("shown only now"));
    let reader = Cli::with_key(&server.base, &read_key);
    reader.ok(&["ssh-keys", "list"]);
    // AUTH-2: a read key may not manage API keys: exit 3 with the server's sentence.
    let err = reader.fails_with(3, &["api-keys", "create", "x", "--tier", "admin"]);
    assert!(err.len() > "error: ".len(), "{err}");

    let v = cli.json(&["api-keys", "list", "--json"]);
    let ci = v["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .unwrap()
        .clone();
    assert_eq!(ci["tier"], "read");
    assert!(ci["expires_at"].is_string());
    assert!(
        ci.get("key").is_none(),
        "a listed key never carries its secret"
    );

    // Regenerate: the old secret stops working, the new one works.
    let v = cli.json(&["api-keys", "regenerate", "ci", "--json"]);
    let new_key = v["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, read_key);
    reader.fails_with(3, &["ssh-keys", "list"]);
    Cli::with_key(&server.base, &new_key).ok(&["ssh-keys", "list"]);

    let out = cli.ok(&["api-keys", "revoke", "ci"]);
    assert!(out.contains("Revoked"), "{out}");
    Cli::with_key(&server.base, &new_key).fails_with(3, &["ssh-keys", "list"]);
    cli.fails_with(4, &["api-keys", "revoke", "ci"]);

    // Usage errors are exit 2 (clap's own and ours).
    cli.fails_with(2, &["api-keys", "create", "x", "--tier", "root"]);
    cli.fails_with(
        2,
        &[
            "api-keys",
            "create",
            "x",
            "--tier",
            "read",
            "--expires",
            "soon",
        ],
    );

    // Nothing listening: exit 6.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = Cli::with_key(&format!("http://127.0.0.1:{port}"), &key);
    let err = gone.fails_with(6, &["ssh-keys", "list"]);
    assert!(err.contains("cannot reach"), "{err}");
}
