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
}
