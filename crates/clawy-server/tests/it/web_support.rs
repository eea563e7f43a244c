//! A tiny "browser" for page tests: keeps cookies itself (so tests can inspect, plant and
//! replay them exactly), sends `Origin` on POSTs like a browser does, and pulls CSRF
//! tokens out of forms.

#![allow(dead_code)]

use std::collections::BTreeMap;

use reqwest::header::{COOKIE, HeaderMap, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{Response, StatusCode};

use crate::common::{TestApp, TestUser};

pub const SESSION: &str = "__Host-clawy_session";

pub struct WebClient<'a> {
    pub app: &'a TestApp,
    pub cookies: BTreeMap<String, String>,
    /// The `Origin` header sent with POSTs (`None`: send none).
    pub origin: Option<String>,
}

/// The `Set-Cookie` lines of a response for one cookie name.
pub fn set_cookies<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with(&format!("{name}=")))
        .collect()
}

pub fn location(resp: &Response) -> String {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// How the templates escape a value (minijinja's HTML escaping, `/` included).
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2f;")
}

/// The value of the first `csrf_token` hidden field in a page.
pub fn csrf_from(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no csrf_token in page:\n{html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

impl<'a> WebClient<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        WebClient {
            app,
            cookies: BTreeMap::new(),
            origin: Some(app.origin()),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Records `Set-Cookie`s as a browser would (Max-Age=0 deletes).
    fn absorb(&mut self, headers: &HeaderMap) {
        for v in headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let first = v.split(';').next().unwrap_or_default();
            let Some((name, value)) = first.split_once('=') else {
                continue;
            };
            let deleted = v.contains("Max-Age=0") || value.is_empty();
            if deleted {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    pub fn session(&self) -> Option<String> {
        self.cookies.get(SESSION).cloned()
    }

    pub async fn get(&mut self, path: &str) -> Response {
        let mut req = self.app.client.get(self.app.url(path));
        if !self.cookies.is_empty() {
            req = req.header(COOKIE, self.cookie_header());
        }
        let resp = req.send().await.expect("GET");
        self.absorb(resp.headers());
        resp
    }

    pub async fn get_text(&mut self, path: &str) -> (StatusCode, String) {
        let resp = self.get(path).await;
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }

    /// POST a form exactly as given (no token added).
    pub async fn post_raw(&mut self, path: &str, form: &[(&str, &str)]) -> Response {
        let mut req = self.app.client.post(self.app.url(path)).form(form);
        if !self.cookies.is_empty() {
            req = req.header(COOKIE, self.cookie_header());
        }
        if let Some(o) = &self.origin {
            req = req.header(ORIGIN, o);
        }
        let resp = req.send().await.expect("POST");
        self.absorb(resp.headers());
        resp
    }

    /// Loads `page`, takes its CSRF token and POSTs `form` (plus the token) to `action`.
    pub async fn submit(&mut self, page: &str, action: &str, form: &[(&str, &str)]) -> Response {
        let (status, html) = self.get_text(page).await;
        assert_eq!(status, StatusCode::OK, "GET {page}: {html}");
        let token = csrf_from(&html);
        let mut fields: Vec<(&str, &str)> = vec![("csrf_token", token.as_str())];
        fields.extend_from_slice(form);
        self.post_raw(action, &fields).await
    }

    /// Logs in through the login page; asserts the redirect.
    pub async fn login(&mut self, user: &TestUser) -> Response {
        let resp = self
            .submit(
                "/login",
                "/login",
                &[("email", &user.email), ("password", &user.password)],
            )
            .await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "login failed");
        resp
    }
}
