//! AUTH-3: cross-site request refusal for cookie-authenticated state changes.
//!
//! Besides the CSRF token, a state-changing request carried by the session cookie must
//! come from our own origin: `Sec-Fetch-Site: cross-site` is refused, and an `Origin`
//! header, when present, must equal the origin of `base_url`. (Browsers send `Origin` on
//! every cross-origin POST; a missing `Origin` with no `Sec-Fetch-Site` is a non-browser
//! client, which still needs the CSRF token.)

use axum::http::HeaderMap;
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("This request came from another site (Sec-Fetch-Site: cross-site) and was refused.")]
    CrossSite,
    #[error("This request's Origin does not match this site's address and was refused.")]
    WrongOrigin,
}

/// `scheme://host[:port]` of a URL, as browsers send it in `Origin`.
pub fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Checks `Sec-Fetch-Site` and `Origin` against the site's own origin.
pub fn check_same_origin(headers: &HeaderMap, expected_origin: &str) -> Result<(), OriginError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        // `same-site` is a sibling subdomain (e.g. a user's instance hostname): refuse too.
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Err(OriginError::CrossSite);
        }
    }
    match headers.get(axum::http::header::ORIGIN) {
        None => Ok(()),
        Some(v) => match v.to_str() {
            Ok(o)
                if o.trim_end_matches('/')
                    .eq_ignore_ascii_case(expected_origin) =>
            {
                Ok(())
            }
            _ => Err(OriginError::WrongOrigin),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn auth_3_origin_must_match_base_url() {
        let base = Url::parse("https://clawy.example:8443/").unwrap();
        let o = origin_of(&base);
        assert_eq!(o, "https://clawy.example:8443");
        assert!(
            check_same_origin(&headers(&[("origin", "https://clawy.example:8443")]), &o).is_ok()
        );
        assert!(check_same_origin(&headers(&[]), &o).is_ok());
        assert_eq!(
            check_same_origin(&headers(&[("origin", "https://evil.example")]), &o),
            Err(OriginError::WrongOrigin)
        );
        assert_eq!(
            check_same_origin(&headers(&[("origin", "null")]), &o),
            Err(OriginError::WrongOrigin)
        );
        assert_eq!(
            check_same_origin(&headers(&[("sec-fetch-site", "cross-site")]), &o),
            Err(OriginError::CrossSite)
        );
        assert!(check_same_origin(&headers(&[("sec-fetch-site", "same-origin")]), &o).is_ok());
    }
}
