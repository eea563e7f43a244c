//! REST client for `/api/v1`: a base URL plus an API key sent as `Authorization:
//! Bearer …` (AUTH-2). Errors keep the server's `{"error":{code,message}}` so the CLI
//! prints the server's sentence and picks a stable exit code from it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use crate::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the server URL `{0}` is not an http(s) URL")]
    BadUrl(String),
    #[error(
        "refusing to send the API key over plain HTTP to {0}: use https:// (plain http:// only to 127.0.0.1, ::1 or localhost)"
    )]
    InsecureUrl(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// The server could not be reached (DNS, refused, TLS, timeout).
    #[error("cannot reach the server at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The server answered with an error body (or an unexpected status).
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the server sent a response this client does not understand: {0}")]
    Decode(String),
}

impl ClientError {
    /// The exit code scripts see (see `exit.rs` for the table).
    pub fn exit(&self) -> Exit {
        match self {
            ClientError::BadUrl(_) | ClientError::InsecureUrl(_) => Exit::Usage,
            ClientError::Tls(_) | ClientError::Unreachable { .. } => Exit::Unreachable,
            ClientError::Decode(_) => Exit::Failed,
            ClientError::Api { status, code, .. } => Exit::from_api(*status, code),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }
}

/// An API key that never prints itself.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(SecretString::from(key.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: ApiKey,
}

impl Client {
    pub fn new(server: &str, key: ApiKey) -> Result<Client, ClientError> {
        let mut base = Url::parse(server.trim()).map_err(|_| ClientError::BadUrl(server.into()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(ClientError::BadUrl(server.into()));
        }
        // DATA-1: the API key travels in every request, so plain HTTP only to this
        // machine (`clawy up`, tests); anything else must be HTTPS.
        if base.scheme() == "http" && !is_loopback(&base) {
            return Err(ClientError::InsecureUrl(server.into()));
        }
        // Joining `api/v1/...` onto the base must keep a path prefix (reverse proxies).
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("clawy-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Client { http, base, key })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.base
            .join(&format!("api/v1/{}", path.trim_start_matches('/')))
            .map_err(|_| ClientError::BadUrl(format!("{}{path}", self.base)))
    }

    /// One request; the body of a success as JSON (`null` for an empty body).
    pub async fn request<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Value, ClientError> {
        let url = self.url(path)?;
        let mut req = self
            .http
            .request(method, url.clone())
            .bearer_auth(self.key.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.to_string(),
            message: describe_transport(&e),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            url: self.base.to_string(),
            message: describe_transport(&e),
        })?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()));
        }
        Err(api_error(status, &bytes))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let v = self.request::<()>(Method::GET, path, None).await?;
        decode(v)
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let v = self.request(Method::POST, path, Some(body)).await?;
        decode(v)
    }

    /// POST without a body (lifecycle actions).
    pub async fn post_empty(&self, path: &str) -> Result<Value, ClientError> {
        self.request(Method::POST, path, Some(&serde_json::json!({})))
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.request::<()>(Method::DELETE, path, None).await
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

pub fn decode<T: DeserializeOwned>(v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Decode(e.to_string()))
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let parsed: Option<clawy_proto::api::ErrorBody> = serde_json::from_slice(body).ok();
    match parsed {
        Some(b) => ClientError::Api {
            status: status.as_u16(),
            code: b.error.code,
            message: b.error.message,
        },
        None => ClientError::Api {
            status: status.as_u16(),
            code: format!("http_{}", status.as_u16()),
            message: format!(
                "the server answered {status} without an error message (is this a Clawy server?)"
            ),
        },
    }
}

/// reqwest's Display hides the cause (e.g. "connection refused"); walk the chain.
fn describe_transport(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Path segment escaping for ids and names typed by a person.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn api_key_never_prints() {
        let k = ApiKey::new("clawy_secret");
        assert_eq!(format!("{k} {k:?}"), "[redacted] [redacted]");
    }

    #[test]
    fn urls_keep_a_path_prefix() {
        let c = Client::new("https://example.test/clawy", ApiKey::new("k")).unwrap();
        assert_eq!(
            c.url("/instances").unwrap().as_str(),
            "https://example.test/clawy/api/v1/instances"
        );
        assert!(matches!(
            Client::new("ftp://x", ApiKey::new("k")),
            Err(ClientError::BadUrl(_))
        ));
    }

    #[test]
    fn data_1_plain_http_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
            "http://localhost:8080",
            "https://clawy.example",
        ] {
            assert!(Client::new(ok, ApiKey::new("k")).is_ok(), "{ok}");
        }
        let e = Client::new("http://clawy.example", ApiKey::new("k")).unwrap_err();
        assert!(matches!(e, ClientError::InsecureUrl(_)));
        assert_eq!(e.exit(), Exit::Usage);
    }

    #[test]
    fn error_body_becomes_code_and_message() {
        let e = api_error(
            StatusCode::CONFLICT,
            br#"{"error":{"code":"no_capacity","message":"no capacity in region DE for plan small"}}"#,
        );
        assert_eq!(e.to_string(), "no capacity in region DE for plan small");
        assert_eq!(e.exit(), Exit::Conflict);
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(e.exit(), Exit::Failed);
    }

    #[test]
    fn seg_escapes() {
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        assert_eq!(seg("web-1"), "web-1");
    }
}
