use clawy_core::DomainError;
use clawy_core::config::{ConfigError, ServerConfig};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.entry("HOME".into())
        .or_insert_with(|| "/home/tester".into());
    m
}

#[test]
fn config_unknown_key_is_refused_naming_the_key() {
    let err = ServerConfig::from_toml_and_env(
        "lisen = \"0.0.0.0:80\"\n",
        Some(PathBuf::from("/etc/clawy.toml")),
        &env(&[]),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(msg.contains("`lisen`"), "message names the key: {msg}");
    assert!(
        msg.contains("/etc/clawy.toml"),
        "message names the file: {msg}"
    );
    assert_eq!(err.code(), "config_parse");
}

#[test]
fn config_defaults_follow_data_dir_and_listen() {
    let c = ServerConfig::from_toml_and_env("", None, &env(&[("XDG_DATA_HOME", "/xdg")])).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/xdg/clawy"));
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.database_url, "sqlite:///xdg/clawy/clawy.db");
    assert_eq!(c.secret_key_file, PathBuf::from("/xdg/clawy/secret.key"));
    assert_eq!(c.base_url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(c.security_contact, "security@127.0.0.1");
    assert_eq!(c.bcrypt_cost, 12);
    assert_eq!(c.session_idle_minutes, 30);
    assert_eq!(c.session_absolute_hours, 12);
    assert!(!c.is_tls());
    let c = ServerConfig::from_toml_and_env("", None, &env(&[])).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/home/tester/.local/share/clawy"));
}

#[test]
fn config_env_overrides_file() {
    let file = r#"
listen = "127.0.0.1:9000"
base_url = "http://example.org"
session_idle_minutes = 10
trusted_proxies = ["10.0.0.1"]
"#;
    let c = ServerConfig::from_toml_and_env(
        file,
        None,
        &env(&[
            ("CLAWY_LISTEN", "0.0.0.0:8443"),
            ("CLAWY_BASE_URL", "https://clawy.example.com"),
            ("CLAWY_TRUSTED_PROXIES", "192.0.2.0/24, 2001:db8::1"),
            ("CLAWY_DATA_DIR", "/srv/clawy"),
            ("CLAWY_TEST_DB", "postgres"), // not a config key: ignored
        ]),
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:8443");
    assert_eq!(c.base_url.as_str(), "https://clawy.example.com/");
    assert!(c.is_tls());
    assert_eq!(
        c.session_idle_minutes, 10,
        "file value kept where env is silent"
    );
    assert_eq!(c.data_dir, PathBuf::from("/srv/clawy"));
    assert_eq!(c.database_url, "sqlite:///srv/clawy/clawy.db");
    assert_eq!(c.security_contact, "security@clawy.example.com");
    assert_eq!(c.trusted_proxies.len(), 2);
    assert!(c.is_trusted_proxy("192.0.2.77".parse().unwrap()));
    assert!(
        !c.is_trusted_proxy("10.0.0.1".parse().unwrap()),
        "env replaced the file's list"
    );
}

#[test]
fn config_bad_env_value_names_the_variable() {
    let err = ServerConfig::from_toml_and_env("", None, &env(&[("CLAWY_BCRYPT_COST", "lots")]))
        .unwrap_err();
    assert!(err.to_string().contains("CLAWY_BCRYPT_COST"), "{err}");
}

#[test]
fn config_auth_1_bcrypt_cost_below_12_refused_outside_test_mode() {
    let err = ServerConfig::from_toml_and_env("bcrypt_cost = 10\n", None, &env(&[])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bcrypt_cost") && msg.contains("12"), "{msg}");
    let c = ServerConfig::from_toml_and_env(
        "bcrypt_cost = 4\ninsecure_test_mode = true\n",
        None,
        &env(&[]),
    )
    .unwrap();
    assert_eq!(c.bcrypt_cost, 4);
    assert!(
        ServerConfig::from_toml_and_env(
            "bcrypt_cost = 3\ninsecure_test_mode = true\n",
            None,
            &env(&[])
        )
        .is_err()
    );
}

#[test]
fn config_validate_names_key_and_reason() {
    for (toml, key) in [
        ("base_url = \"ftp://x\"", "base_url"),
        ("listen = \"nonsense\"", "listen"),
        ("database_url = \"mysql://x\"", "database_url"),
        ("smtp_url = \"http://mail\"", "smtp_url"),
        ("trusted_proxies = [\"10.0.0.0/99\"]", "trusted_proxies"),
        ("session_idle_minutes = 0", "session_idle_minutes"),
        ("security_contact = \"nobody\"", "security_contact"),
        ("data_dir = \"\"", "data_dir"),
    ] {
        let err = ServerConfig::from_toml_and_env(toml, None, &env(&[])).unwrap_err();
        assert!(err.to_string().contains(key), "{toml}: {err}");
    }
}

#[test]
fn config_default_file_in_data_dir_is_read_and_missing_means_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let e = env(&[("CLAWY_DATA_DIR", dir.path().to_str().unwrap())]);
    let c = ServerConfig::load_with_env(None, &e).unwrap();
    assert!(c.config_path.is_none());
    std::fs::write(
        dir.path().join("clawy.toml"),
        "listen = \"127.0.0.1:7000\"\n",
    )
    .unwrap();
    let c = ServerConfig::load_with_env(None, &e).unwrap();
    assert_eq!(c.listen.port(), 7000);
    assert_eq!(
        c.config_path.as_deref(),
        Some(dir.path().join("clawy.toml").as_path())
    );
    // An explicit path that does not exist is an error.
    assert!(ServerConfig::load_with_env(Some(&dir.path().join("nope.toml")), &e).is_err());
}

#[test]
fn config_auth_5_client_address_from_trusted_proxies_only() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut c = ServerConfig::from_toml_and_env("", None, &env(&[])).unwrap();
    // No trusted proxies: X-Forwarded-For is ignored.
    assert_eq!(
        c.resolve_client_addr(ip("203.0.113.5"), Some("198.51.100.7")),
        ip("203.0.113.5")
    );
    c = ServerConfig::from_toml_and_env(
        "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]",
        None,
        &env(&[]),
    )
    .unwrap();
    assert_eq!(
        c.resolve_client_addr(ip("127.0.0.1"), Some("198.51.100.7")),
        ip("198.51.100.7")
    );
    // Spoofed left-most entries are skipped: the right-most untrusted hop counts.
    assert_eq!(
        c.resolve_client_addr(ip("127.0.0.1"), Some("1.1.1.1, 198.51.100.7, 10.1.2.3")),
        ip("198.51.100.7")
    );
    // An untrusted peer cannot set the address.
    assert_eq!(
        c.resolve_client_addr(ip("203.0.113.5"), Some("1.1.1.1")),
        ip("203.0.113.5")
    );
    // IPv4-mapped IPv6 peers count as IPv4.
    assert_eq!(
        c.resolve_client_addr(ip("::ffff:127.0.0.1"), Some("198.51.100.9")),
        ip("198.51.100.9")
    );
    // Garbage stops at the last trustworthy hop.
    assert_eq!(
        c.resolve_client_addr(ip("127.0.0.1"), Some("junk")),
        ip("127.0.0.1")
    );
}

#[test]
fn config_data_4_remote_postgres_needs_sslmode_verify_full() {
    let load = |url: &str| {
        ServerConfig::from_toml_and_env(&format!("database_url = \"{url}\"\n"), None, &env(&[]))
    };
    for bad in [
        "postgres://u:p@db.example.com/clawy?sslmode=disable",
        "postgres://u:p@db.example.com/clawy?sslmode=require",
        "postgres://u:p@db.example.com/clawy?sslmode=verify-ca&sslrootcert=/ca.crt",
        "postgres://u:p@db.example.com/clawy",
        "postgresql://u:p@192.0.2.10:5432/clawy?sslmode=prefer",
        // The last sslmode is the one libpq and sqlx use.
        "postgres://u:p@db.example.com/clawy?sslmode=verify-full&sslmode=disable",
    ] {
        let err = load(bad).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "database_url",
                    ..
                }
            ),
            "{bad}: {err:?}"
        );
        assert!(
            msg.contains("database_url") && msg.contains("sslmode=verify-full"),
            "{bad}: the message names the key and the fix: {msg}"
        );
    }
    for ok in [
        "postgres://u:p@db.example.com/clawy?sslmode=verify-full&sslrootcert=/etc/clawy/pg-ca.crt",
        "postgres://u:p@db.example.com/clawy?sslmode=VERIFY-FULL",
        // Loopback and unix sockets never leave the machine.
        "postgres://u:p@localhost:5432/clawy",
        "postgres://u:p@127.0.0.1/clawy?sslmode=disable",
        "postgres://u:p@[::1]/clawy?sslmode=disable",
        "postgres://u@db/clawy?host=/var/run/postgresql",
        "sqlite:///var/lib/clawy/clawy.db",
    ] {
        assert!(load(ok).is_ok(), "{ok}: {:?}", load(ok).err());
    }
}

#[test]
fn config_instances_domain_and_dns_settings_are_validated() {
    let load = |toml: &str| ServerConfig::from_toml_and_env(toml, None, &env(&[]));
    let c = load("instances_domain = \"Claws.Example.com\"\n").unwrap();
    assert_eq!(
        c.instances_domain.as_ref().map(|d| d.as_str()),
        Some("claws.example.com")
    );
    assert!(c.dns.is_none(), "no RFC 2136 without dns_server");
    let c = load(
        "instances_domain = \"claws.example.com\"\ndns_server = \"192.0.2.53:53\"\ndns_zone = \"example.com\"\n",
    )
    .unwrap();
    let d = c.dns.unwrap();
    assert_eq!(d.zone.as_str(), "example.com");
    assert_eq!((d.ttl_secs, d.timeout_secs), (60, 5));
    for (toml, key) in [
        ("instances_domain = \"localhost\"", "instances_domain"),
        (
            "instances_domain = \"{http.host}.example\"",
            "instances_domain",
        ),
        (
            "instances_domain = \"*.claws.example.com\"",
            "instances_domain",
        ),
        ("dns_server = \"192.0.2.53:53\"", "dns_server"),
        (
            "instances_domain = \"claws.example.com\"\ndns_server = \"ns1.example.com:53\"",
            "dns_server",
        ),
        (
            "instances_domain = \"claws.example.com\"\ndns_server = \"192.0.2.53:53\"\ndns_zone = \"other.example\"",
            "dns_zone",
        ),
        (
            "instances_domain = \"claws.example.com\"\ndns_server = \"192.0.2.53:53\"\ndns_timeout_secs = 0",
            "dns_timeout_secs",
        ),
    ] {
        let err = load(toml).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key: k, .. } if *k == key),
            "{toml}: {err:?}"
        );
    }
}
