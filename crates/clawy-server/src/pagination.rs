//! The query string of every list: `limit` and `after`, checked by the one rule in
//! `clawy_core::page` (1–500, default 50, a 422 naming `limit` otherwise; `after` is
//! the previous page's `next_after`). API list handlers take it as
//! `ApiQuery<PageQuery>` and answer `next_after`; dashboard pages take it as
//! `Query<PageQuery>` and show [`Pager`] links built from the same `next_after`.

use clawy_core::page::{Page, PageError, PageRequest};
use serde::{Deserialize, Serialize};

// `parameter_in = Query`: utoipa's default is the path, and the OpenAPI document
// declared `limit`/`after` as path parameters of routes without them (Schemathesis
// found it: clients generated from the document never sent them).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size: 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The previous page's `next_after`.
    pub after: Option<String>,
}

impl PageQuery {
    pub fn request(&self) -> Result<PageRequest, PageError> {
        PageRequest::new(self.limit, self.after.clone())
    }

    /// A list that is read whole (per-user keys, operator lists), paged by the rule
    /// in memory and mapped to its wire form: the items and the `next_after`.
    pub fn page_of<T, U>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> String,
        wire: impl FnMut(T) -> U,
    ) -> Result<(Vec<U>, Option<String>), PageError> {
        let page = self.request()?.apply(items, key)?.map(wire);
        Ok((page.items, page.next_after))
    }

    /// A dashboard list read whole (per-user keys), paged by the rule in memory: its
    /// rows and links, as [`PageQuery::rows`].
    pub fn rows_of<T, U>(
        &self,
        path: &str,
        items: Vec<T>,
        key: impl Fn(&T) -> String,
        row: impl FnMut(T) -> U,
    ) -> Result<(Vec<U>, Pager), PageError> {
        let page = self.request()?.apply(items, key)?;
        Ok(self.rows(path, page, row))
    }

    /// A dashboard page's rows and its links, from a page of `path`'s list.
    pub fn rows<T, U>(
        &self,
        path: &str,
        page: Page<T>,
        row: impl FnMut(T) -> U,
    ) -> (Vec<U>, Pager) {
        let pager = self.pager(path, page.next_after.as_deref());
        (page.items.into_iter().map(row).collect(), pager)
    }

    /// The links under a dashboard list at `path`: the next page (same `limit`) when
    /// more follow, and back to the first when this is not it.
    pub fn pager(&self, path: &str, next_after: Option<&str>) -> Pager {
        let href = |after: Option<&str>| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            if let Some(limit) = self.limit {
                q.append_pair("limit", &limit.to_string());
            }
            if let Some(after) = after {
                q.append_pair("after", after);
            }
            match q.finish() {
                query if query.is_empty() => path.to_owned(),
                query => format!("{path}?{query}"),
            }
        };
        Pager {
            next: next_after.map(|a| href(Some(a))),
            first: self.after.as_ref().map(|_| href(None)),
        }
    }
}

/// "Next page" and "First page" links of a dashboard list (`m.pager` in the
/// templates); `None` hides a link.
#[derive(Debug, Default, Serialize)]
pub struct Pager {
    pub next: Option<String>,
    pub first: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pager_links_keep_the_limit_and_encode_the_cursor() {
        let q = PageQuery {
            limit: Some(20),
            after: None,
        };
        let p = q.pager("/operator/users", Some("17:a+b@x.test"));
        assert_eq!(
            p.next.as_deref(),
            Some("/operator/users?limit=20&after=17%3Aa%2Bb%40x.test")
        );
        assert_eq!(p.first, None);
        let q = PageQuery {
            limit: None,
            after: Some("17:x".into()),
        };
        let p = q.pager("/activity", None);
        assert_eq!((p.next, p.first.as_deref()), (None, Some("/activity")));
    }
}
