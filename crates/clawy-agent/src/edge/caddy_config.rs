//! Caddy's whole JSON config for the edge, from validated [`EdgeSettings`] only.
//!
//! The config is static: it holds no per-instance route, so creating, stopping or
//! deleting an instance never changes it and never reloads Caddy (Caddy 2.6 closes
//! every proxied WebSocket on a reload). Per-request routing works through the
//! `Host`: `*.<apex>` is proxied to `{http.request.host.labels.N}.<internal zone>`,
//! which Caddy resolves through the agent's loopback DNS responder. See
//! docs/EDGE.md for why each piece is here.
//!
//! Every value is a typed field serialized by serde_json; nothing is concatenated
//! into JSON text, and every string that is built (the dial template, the ask
//! URL) only combines validated names with constants.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::settings::{EdgeSettings, Issuer};

/// Name of the HTTPS server in `apps.http.servers`.
pub const HTTPS_SERVER: &str = "clawy_edge";
/// Name of the plain-HTTP server (ACME HTTP-01 + redirect).
pub const HTTP_SERVER: &str = "clawy_edge_http";
/// `Host` the admin client sends; Caddy 2.6 only accepts it on the unix socket
/// when listed in `admin.origins`.
pub const ADMIN_ORIGIN: &str = "caddy-admin";
/// Request header carrying the reason of an error to the agent's error endpoint.
pub const EDGE_STATUS_HEADER: &str = "X-Clawy-Edge-Status";
/// Path on the agent's endpoint that renders error pages.
pub const ERROR_PATH: &str = "/edge/error";
/// Path on the agent's endpoint that answers `ask`.
pub const ASK_PATH: &str = "/ask";
/// SNI of the self-signed sentinel certificate the agent loads to push a deleted
/// hostname's certificate out of Caddy's one-slot cache (see `certs`).
pub const FLUSH_SENTINEL: &str = "cache-flush.clawy.invalid";

#[derive(Serialize)]
struct Root {
    admin: Admin,
    logging: Logging,
    storage: Storage,
    apps: Apps,
}

#[derive(Serialize)]
struct Admin {
    listen: String,
    origins: Vec<&'static str>,
}

#[derive(Serialize)]
struct Logging {
    logs: BTreeMap<&'static str, Log>,
}

#[derive(Serialize)]
struct Log {
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    include: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<&'static str>,
}

#[derive(Serialize)]
struct Storage {
    module: &'static str,
    root: String,
}

#[derive(Serialize)]
struct Apps {
    http: HttpApp,
    tls: TlsApp,
    pki: Pki,
}

#[derive(Serialize)]
struct HttpApp {
    servers: BTreeMap<&'static str, Server>,
}

#[derive(Serialize)]
struct Server {
    listen: Vec<String>,
    protocols: Vec<&'static str>,
    routes: Vec<Route>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Errors>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_connection_policies: Option<Vec<Value>>,
    automatic_https: AutoHttps,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    strict_sni_host: bool,
}

#[derive(Serialize)]
struct AutoHttps {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_redirects: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skip_certificates: Vec<String>,
}

#[derive(Serialize)]
struct Errors {
    routes: Vec<Route>,
}

#[derive(Serialize)]
struct Route {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(rename = "match")]
    matchers: Vec<Matcher>,
    handle: Vec<Handler>,
    terminal: bool,
}

#[derive(Serialize)]
struct Matcher {
    host: Vec<String>,
}

#[derive(Serialize)]
#[serde(tag = "handler", rename_all = "snake_case")]
enum Handler {
    Headers {
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<HeaderOps>,
        #[serde(skip_serializing_if = "Option::is_none")]
        response: Option<RespHeaderOps>,
    },
    Rewrite {
        uri: String,
    },
    ReverseProxy {
        upstreams: Vec<Upstream>,
        transport: Transport,
    },
    StaticResponse {
        status_code: u16,
        headers: BTreeMap<&'static str, Vec<String>>,
    },
}

#[derive(Serialize)]
struct HeaderOps {
    set: BTreeMap<&'static str, Vec<String>>,
}

#[derive(Serialize)]
struct RespHeaderOps {
    set: BTreeMap<&'static str, Vec<String>>,
    /// Apply even to responses the upstream already sent (Caddy's `deferred`).
    deferred: bool,
}

#[derive(Serialize)]
struct Upstream {
    dial: String,
}

#[derive(Serialize)]
struct Transport {
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolver: Option<Resolver>,
    dial_timeout: &'static str,
}

#[derive(Serialize)]
struct Resolver {
    addresses: Vec<String>,
}

#[derive(Serialize)]
struct TlsApp {
    cache: Cache,
    session_tickets: SessionTickets,
    automation: Automation,
}

#[derive(Serialize)]
struct Cache {
    capacity: u32,
}

#[derive(Serialize)]
struct SessionTickets {
    disabled: bool,
}

#[derive(Serialize)]
struct Automation {
    policies: Vec<Policy>,
    on_demand: OnDemand,
}

#[derive(Serialize)]
struct Policy {
    on_demand: bool,
    issuers: Vec<IssuerJson>,
}

#[derive(Serialize)]
#[serde(tag = "module", rename_all = "snake_case")]
enum IssuerJson {
    Acme {
        email: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        ca: Option<String>,
    },
    Internal {},
}

#[derive(Serialize)]
struct OnDemand {
    ask: String,
    rate_limit: RateLimit,
}

#[derive(Serialize)]
struct RateLimit {
    interval: String,
    burst: u32,
}

#[derive(Serialize)]
struct Pki {
    certificate_authorities: BTreeMap<&'static str, Ca>,
}

#[derive(Serialize)]
struct Ca {
    install_trust: bool,
}

fn hsts(settings: &EdgeSettings) -> Handler {
    let mut set = BTreeMap::new();
    set.insert(
        "Strict-Transport-Security",
        vec![format!("max-age={}", settings.hsts_max_age_secs)],
    );
    Handler::Headers {
        request: None,
        response: Some(RespHeaderOps {
            set,
            deferred: true,
        }),
    }
}

/// Sends the request to the agent's error endpoint with `reason` (a fixed token
/// or Caddy's error-status placeholder) in [`EDGE_STATUS_HEADER`]; the agent
/// decides page and status from the `Host`.
fn to_error_page(settings: &EdgeSettings, reason: &str) -> Vec<Handler> {
    let mut set = BTreeMap::new();
    // `set` replaces whatever the client sent in the same header.
    set.insert(EDGE_STATUS_HEADER, vec![reason.to_owned()]);
    vec![
        Handler::Headers {
            request: Some(HeaderOps { set }),
            response: None,
        },
        Handler::Rewrite {
            uri: ERROR_PATH.to_owned(),
        },
        Handler::ReverseProxy {
            upstreams: vec![Upstream {
                dial: settings.agent_http.to_string(),
            }],
            transport: Transport {
                protocol: "http",
                resolver: None,
                dial_timeout: "2s",
            },
        },
    ]
}

/// The `dial` template: the instance label of the `Host` plus the internal zone.
/// Caddy numbers host labels from the right (`labels.0` is the TLD), so the
/// instance label of `<label>.<apex>` is `labels.<labels in apex>`.
pub fn dial_template(settings: &EdgeSettings) -> String {
    format!(
        "{{http.request.host.labels.{}}}.{}:{}",
        settings.instances_apex.label_count(),
        settings.internal_zone,
        settings.gateway_port
    )
}

/// The whole config as JSON, ready for `POST /load`.
pub fn build(settings: &EdgeSettings) -> Value {
    let apex = &settings.instances_apex;
    let instance_route = Route {
        // One wildcard entry: a wildcard matches exactly one label, and the list
        // stays far below the 100 entries where Caddy <= 2.11 matched
        // case-sensitively (CVE-2026-27588).
        matchers: vec![Matcher {
            host: vec![format!("*.{apex}")],
        }],
        handle: vec![
            hsts(settings),
            Handler::ReverseProxy {
                upstreams: vec![Upstream {
                    dial: dial_template(settings),
                }],
                transport: Transport {
                    protocol: "http",
                    resolver: Some(Resolver {
                        addresses: vec![format!("udp/{}", settings.agent_dns)],
                    }),
                    dial_timeout: "3s",
                },
            },
        ],
        terminal: true,
    };
    // Without a fallback Caddy answers an unmatched host with an empty 200.
    let mut fallback = vec![hsts(settings)];
    fallback.extend(to_error_page(settings, "no-route"));
    let fallback_route = Route {
        matchers: vec![],
        handle: fallback,
        terminal: true,
    };
    let mut error_handlers = vec![hsts(settings)];
    error_handlers.extend(to_error_page(settings, "{http.error.status_code}"));

    let mut servers = BTreeMap::new();
    servers.insert(
        HTTPS_SERVER,
        Server {
            listen: settings
                .https_listen
                .iter()
                .map(|a| a.to_string())
                .collect(),
            // HTTP/3 stays off: Debian's Caddy 2.6.2 is built with an old quic-go.
            protocols: vec!["h1", "h2"],
            routes: vec![instance_route, fallback_route],
            errors: Some(Errors {
                routes: vec![Route {
                    matchers: vec![],
                    handle: error_handlers,
                    terminal: true,
                }],
            }),
            // A listener not on the HTTPS port gets TLS only with an explicit policy.
            tls_connection_policies: Some(vec![Value::Object(Default::default())]),
            automatic_https: AutoHttps {
                disable: false,
                disable_redirects: true,
                // The wildcard route must not make Caddy try to obtain a wildcard
                // certificate (that needs a DNS challenge); names come on demand.
                skip_certificates: vec![format!("*.{apex}")],
            },
            // The Host must match the SNI: one instance's TLS session cannot be
            // used to reach another instance.
            strict_sni_host: true,
        },
    );
    if let Some(http) = settings.http_listen {
        let mut headers = BTreeMap::new();
        headers.insert(
            "Location",
            vec!["https://{http.request.host}{http.request.uri}".to_owned()],
        );
        servers.insert(
            HTTP_SERVER,
            Server {
                listen: vec![http.to_string()],
                protocols: vec!["h1"],
                // Caddy answers ACME HTTP-01 challenges on this server before the
                // routes; everything else is redirected.
                routes: vec![
                    Route {
                        matchers: vec![Matcher {
                            host: vec![format!("*.{apex}")],
                        }],
                        handle: vec![Handler::StaticResponse {
                            status_code: 308,
                            headers,
                        }],
                        terminal: true,
                    },
                    // Any other host: the 404 page, not Caddy's empty 200.
                    Route {
                        matchers: vec![],
                        handle: to_error_page(settings, "no-route"),
                        terminal: true,
                    },
                ],
                errors: None,
                tls_connection_policies: None,
                // Plain HTTP, whatever its port: automatic HTTPS would turn TLS on
                // for a host-matched server not on Caddy's `http_port`. ACME
                // HTTP-01 challenges are answered before the routes either way
                // (caddyhttp/server.go, `HandleHTTPChallenge`).
                automatic_https: AutoHttps {
                    disable: true,
                    disable_redirects: false,
                    skip_certificates: vec![],
                },
                strict_sni_host: false,
            },
        );
    }

    let issuer = match &settings.issuer {
        Issuer::Acme { email, directory } => IssuerJson::Acme {
            email: email.as_str().to_owned(),
            ca: directory.as_ref().map(|u| u.to_string()),
        },
        Issuer::Internal => IssuerJson::Internal {},
    };

    let mut logs = BTreeMap::new();
    // With a one-certificate cache every handshake of another name reloads from
    // storage, and certmagic warns "no OCSP stapling" each time: keep the `tls`
    // logger at ERROR so real failures (an issuance refused) stay visible.
    logs.insert(
        "default",
        Log {
            level: None,
            include: vec![],
            exclude: vec!["tls"],
        },
    );
    logs.insert(
        "tls",
        Log {
            level: Some("ERROR"),
            include: vec!["tls"],
            exclude: vec![],
        },
    );

    let mut cas = BTreeMap::new();
    // Never touch the host's trust store, whatever the issuer.
    cas.insert(
        "local",
        Ca {
            install_trust: false,
        },
    );

    let root = Root {
        admin: Admin {
            listen: format!("unix/{}", settings.admin_socket.display()),
            origins: vec![ADMIN_ORIGIN],
        },
        logging: Logging { logs },
        storage: Storage {
            module: "file_system",
            root: settings.storage_root.display().to_string(),
        },
        apps: Apps {
            http: HttpApp { servers },
            tls: TlsApp {
                // One slot: a deleted hostname's certificate leaves memory as soon
                // as any other certificate is loaded, which the agent forces after
                // removing it from storage (DATA-1; docs/EDGE.md "certificates").
                cache: Cache { capacity: 1 },
                // A resumed session skips certificate selection entirely: without
                // tickets, no TLS session for a deleted hostname completes.
                session_tickets: SessionTickets { disabled: true },
                automation: Automation {
                    policies: vec![Policy {
                        on_demand: true,
                        issuers: vec![issuer],
                    }],
                    on_demand: OnDemand {
                        ask: format!("http://{}{}", settings.agent_http, ASK_PATH),
                        rate_limit: RateLimit {
                            interval: format!("{}s", settings.on_demand_interval.as_secs()),
                            burst: settings.on_demand_burst,
                        },
                    },
                },
            },
            pki: Pki {
                certificate_authorities: cas,
            },
        },
    };
    // Serializing plain structs of strings and numbers cannot fail; fall back to
    // null rather than panic, which Caddy would refuse loudly.
    serde_json::to_value(root).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::edge::settings::EdgeSettingsRaw;
    use crate::edge::settings::tests::raw;
    use proptest::prelude::*;

    fn settings() -> EdgeSettings {
        EdgeSettings::validate(raw()).unwrap()
    }

    #[test]
    fn dial_uses_the_label_left_of_the_apex() {
        // claws.example.com has 3 labels: labels.0=com, .1=example, .2=claws, .3=<instance>
        assert_eq!(
            dial_template(&settings()),
            "{http.request.host.labels.3}.vm.clawy.internal:18789"
        );
    }

    #[test]
    fn config_shape() {
        let c = build(&settings());
        let edge = &c["apps"]["http"]["servers"][HTTPS_SERVER];
        assert_eq!(edge["protocols"], serde_json::json!(["h1", "h2"]));
        assert_eq!(
            edge["routes"][0]["match"][0]["host"],
            serde_json::json!(["*.claws.example.com"])
        );
        assert_eq!(
            edge["routes"][0]["handle"][1]["transport"]["resolver"]["addresses"],
            serde_json::json!(["udp/127.0.0.1:7653"])
        );
        assert!(
            edge["routes"][1].get("match").is_none(),
            "fallback route has no matcher"
        );
        assert_eq!(c["admin"]["listen"], "unix//run/clawy/caddy-admin.sock");
        assert_eq!(
            c["apps"]["tls"]["automation"]["on_demand"]["ask"],
            "http://127.0.0.1:7611/ask"
        );
        assert_eq!(
            c["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]["module"],
            "acme"
        );
        assert_eq!(
            c["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]["email"],
            "ops@example.com"
        );
        assert_eq!(c["apps"]["tls"]["cache"]["capacity"], 1);
        assert_eq!(
            c["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"],
            false
        );
        let http = &c["apps"]["http"]["servers"][HTTP_SERVER];
        assert_eq!(http["routes"][0]["handle"][0]["status_code"], 308);
        assert!(
            http["routes"][1].get("match").is_none(),
            "port 80 has a fallback too"
        );
    }

    #[test]
    fn internal_issuer_and_no_http_listener() {
        let mut r = raw();
        r.issuer = "internal".into();
        r.acme_email = None;
        r.http_listen = None;
        let c = build(&EdgeSettings::validate(r).unwrap());
        assert_eq!(
            c["apps"]["tls"]["automation"]["policies"][0]["issuers"],
            serde_json::json!([{"module": "internal"}])
        );
        assert!(c["apps"]["http"]["servers"].get(HTTP_SERVER).is_none());
    }

    /// Walks every string in the generated JSON.
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.iter().for_each(|(k, x)| {
                out.push(k.clone());
                strings(x, out)
            }),
            _ => {}
        }
    }

    /// Removes the placeholders the generator itself writes; any `{` or `}`
    /// left over would have come from an input.
    fn strip_own_placeholders(s: &str) -> String {
        let mut out = s.to_owned();
        for p in [
            "{http.error.status_code}",
            "{http.request.host}",
            "{http.request.uri}",
        ] {
            out = out.replace(p, "");
        }
        while let Some(i) = out.find("{http.request.host.labels.") {
            let tail = &out[i + "{http.request.host.labels.".len()..];
            let digits = tail.bytes().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 || !tail[digits..].starts_with('}') {
                break;
            }
            out.replace_range(i..i + "{http.request.host.labels.".len() + digits + 1, "");
        }
        out
    }

    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            // mostly valid names, so many cases get past validation
            "[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,12}){1,3}",
            "[a-z0-9.+_-]{1,12}@[a-z0-9-]{1,12}\\.[a-z]{2,6}",
            "[a-z0-9{}\"\\\\/.:*@ \n-]{0,40}",
            Just("{env.HOME}.example.com".to_string()),
            Just("a\".example.com".to_string()),
            Just("*.example.com".to_string()),
        ]
    }

    proptest! {
        /// Hostile apex/zone/e-mail either fail validation or produce a config in
        /// which they appear only as validated names: no extra placeholder, no
        /// quote, no wildcard beyond the generator's own `*.<apex>`.
        #[test]
        fn hostile_inputs_cannot_inject(apex in hostile(), zone in hostile(), email in hostile()) {
            let r = EdgeSettingsRaw { instances_apex: apex, internal_zone: zone, acme_email: Some(email), ..raw() };
            if let Ok(s) = EdgeSettings::validate(r) {
                let c = build(&s);
                let mut all = vec![];
                strings(&c, &mut all);
                for s in all {
                    let rest = strip_own_placeholders(&s);
                    prop_assert!(!rest.contains('{') && !rest.contains('}'), "placeholder in {s:?}");
                    prop_assert!(!s.contains('"') && !s.contains('\n') && !s.contains('\\'), "bad char in {s:?}");
                }
                prop_assert!(s.instances_apex.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
            }
        }
    }
}
