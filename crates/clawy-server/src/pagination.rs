//! The query string of every list: `limit` and `after`, checked by the one rule in
//! `clawy_core::page` (1–500, default 50, a 422 naming `limit` otherwise; `after` is
//! the previous page's `next_after`). API list handlers take it as
//! `ApiQuery<PageQuery>`; pages that list take it as `Query<PageQuery>`.

use clawy_core::page::{PageError, PageRequest};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size: 1–500, default 50.
    pub limit: Option<u32>,
    /// The previous page's `next_after`.
    pub after: Option<String>,
}

impl PageQuery {
    pub fn request(self) -> Result<PageRequest, PageError> {
        PageRequest::new(self.limit, self.after)
    }

    /// A list that is read whole (per-user keys, operator lists), paged by the rule
    /// in memory and mapped to its wire form: the items and the `next_after`.
    pub fn page_of<T, U>(
        self,
        items: Vec<T>,
        key: impl Fn(&T) -> String,
        wire: impl FnMut(T) -> U,
    ) -> Result<(Vec<U>, Option<String>), PageError> {
        let page = self.request()?.apply(items, key)?.map(wire);
        Ok((page.items, page.next_after))
    }
}
