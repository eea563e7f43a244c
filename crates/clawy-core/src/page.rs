//! One pagination rule for every list (the REST API's and the dashboard's alike):
//!
//! - `limit`: how many items, 1 to [`MAX_LIMIT`]; [`DEFAULT_LIMIT`] when left out.
//!   Anything else is refused (`invalid_limit`, naming `limit`), never clamped: a
//!   client that asked for 1,000 must learn it got at most 500.
//! - `after`: the cursor from the previous page's `next_after`; the page continues
//!   after that item in the list's own order (oldest first for instances and keys,
//!   newest first for events). A cursor that is not one is refused (`invalid_cursor`).
//! - `next_after`: set when more items follow, absent on the last page. Lists fetch
//!   `limit + 1` rows to know, so a full last page does not promise a next one.
//!
//! Cursors are opaque to clients; inside they are `<ms>:<key>` (lists read in SQL
//! by a [`Keyset`]: a time column and a unique key), an event id (the audit log) or
//! an item's key (short lists paged in memory).
//!
//! A leaf module: it imports only `error`.

use crate::error::{DomainError, ErrorKind};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    #[error("`limit` must be between 1 and {MAX_LIMIT}.")]
    InvalidLimit,
    #[error("`after` is not a cursor from this list: pass the previous page's `next_after`.")]
    InvalidCursor,
}

impl DomainError for PageError {
    fn code(&self) -> &'static str {
        match self {
            PageError::InvalidLimit => "invalid_limit",
            PageError::InvalidCursor => "invalid_cursor",
        }
    }
    fn kind(&self) -> ErrorKind {
        match self {
            PageError::InvalidLimit => ErrorKind::Invalid { field: "limit" },
            PageError::InvalidCursor => ErrorKind::Invalid { field: "after" },
        }
    }
}

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    limit: u32,
    after: Option<String>,
}

impl PageRequest {
    /// Applies the rule to what a client sent.
    pub fn new(limit: Option<u32>, after: Option<String>) -> Result<Self, PageError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(PageError::InvalidLimit);
        }
        Ok(PageRequest {
            limit,
            after: after.filter(|a| !a.is_empty()),
        })
    }

    /// The first `limit` items (for server-side callers; `limit` is clamped into the
    /// allowed range because it is ours, not a client's).
    pub fn first(limit: u32) -> Self {
        PageRequest {
            limit: limit.clamp(1, MAX_LIMIT),
            after: None,
        }
    }

    /// The same request, continuing after `after` (a server-side caller's own cursor
    /// from a previous page).
    pub fn continuing(mut self, after: Option<&str>) -> Self {
        self.after = after.filter(|a| !a.is_empty()).map(str::to_string);
        self
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn after(&self) -> Option<&str> {
        self.after.as_deref()
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// The cursor of a [`Keyset`] list: `(ms, key)`, or the start.
    pub fn created_cursor(&self) -> Result<Option<(i64, String)>, PageError> {
        match self.after() {
            None => Ok(None),
            Some(c) => match c.split_once(':') {
                Some((ms, id)) if !id.is_empty() => ms
                    .parse::<i64>()
                    .map(|ms| Some((ms, id.to_string())))
                    .map_err(|_| PageError::InvalidCursor),
                _ => Err(PageError::InvalidCursor),
            },
        }
    }

    /// The cursor of a list ordered by a numeric id (the audit log).
    pub fn id_cursor(&self) -> Result<Option<i64>, PageError> {
        match self.after() {
            None => Ok(None),
            Some(c) => c
                .parse::<i64>()
                .map(Some)
                .map_err(|_| PageError::InvalidCursor),
        }
    }

    /// Pages a list that is already whole and in order (short lists bounded by
    /// operators: hosts, plans, regions): the same rule, applied in memory. `key` is
    /// an item's cursor.
    pub fn apply<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> String,
    ) -> Result<Page<T>, PageError> {
        let start = match self.after() {
            None => 0,
            Some(c) => {
                items
                    .iter()
                    .position(|i| key(i) == c)
                    .ok_or(PageError::InvalidCursor)?
                    + 1
            }
        };
        let rest: Vec<T> = items
            .into_iter()
            .skip(start)
            .take(self.limit as usize + 1)
            .collect();
        Ok(Page::from_fetched(rest, self, key))
    }
}

/// A cursor for a [`Keyset`] list: the item's time (ms) and key.
pub fn created_cursor(created_at_ms: i64, id: &str) -> String {
    format!("{created_at_ms}:{id}")
}

/// The order of a list read page by page in SQL: by a time column (unix ms), ties
/// broken by a unique key column, oldest or newest first. Continuing "after" an item
/// compares against its `(time, key)`, so a page never repeats or skips a row that
/// existed when the list was first read, however many pages came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    pub time: &'static str,
    pub key: &'static str,
    pub newest_first: bool,
}

impl Keyset {
    /// The end of a page query's WHERE clause: the condition that continues after
    /// the cursor (`$1` time, `$2` key), the order, and `LIMIT $3`. A query using it
    /// numbers its own values from `$4`.
    pub fn tail(&self) -> String {
        let (t, k) = (self.time, self.key);
        let (op, dir) = if self.newest_first {
            ('<', "DESC")
        } else {
            ('>', "ASC")
        };
        format!(
            "({t} {op} $1 OR ({t} = $1 AND {k} {op} $2)) ORDER BY {t} {dir}, {k} {dir} LIMIT $3"
        )
    }

    /// The values of `$1` and `$2`: the cursor, or a start before every row.
    pub fn start(&self, req: &PageRequest) -> Result<(i64, String), PageError> {
        let before_all = if self.newest_first {
            i64::MAX
        } else {
            i64::MIN
        };
        Ok(req.created_cursor()?.unwrap_or((before_all, String::new())))
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<String>,
}

impl<T> Page<T> {
    /// From up to `limit + 1` fetched items: the extra one only says more follow.
    pub fn from_fetched(mut items: Vec<T>, req: &PageRequest, key: impl Fn(&T) -> String) -> Self {
        let next_after = if items.len() > req.limit as usize {
            items.truncate(req.limit as usize);
            items.last().map(&key)
        } else {
            None
        };
        Page { items, next_after }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_after: self.next_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_the_range_are_refused_not_clamped() {
        assert_eq!(
            PageRequest::new(None, None).map(|p| p.limit()),
            Ok(DEFAULT_LIMIT)
        );
        assert_eq!(
            PageRequest::new(Some(500), None).map(|p| p.limit()),
            Ok(500)
        );
        assert_eq!(
            PageRequest::new(Some(0), None),
            Err(PageError::InvalidLimit)
        );
        assert_eq!(
            PageRequest::new(Some(501), None),
            Err(PageError::InvalidLimit)
        );
        assert_eq!(PageRequest::first(10_000).limit(), MAX_LIMIT);
    }

    #[test]
    fn cursors_are_checked() {
        let r =
            |a: &str| PageRequest::new(None, Some(a.to_string())).unwrap_or(PageRequest::first(1));
        assert_eq!(
            r("12:abc").created_cursor(),
            Ok(Some((12, "abc".to_string())))
        );
        assert_eq!(r("abc").created_cursor(), Err(PageError::InvalidCursor));
        assert_eq!(r("x:abc").created_cursor(), Err(PageError::InvalidCursor));
        assert_eq!(r("41").id_cursor(), Ok(Some(41)));
        assert_eq!(r("x").id_cursor(), Err(PageError::InvalidCursor));
    }

    #[test]
    fn keyset_continues_after_the_cursor_in_its_direction() {
        let oldest = Keyset {
            time: "created_at",
            key: "id",
            newest_first: false,
        };
        assert_eq!(
            oldest.tail(),
            "(created_at > $1 OR (created_at = $1 AND id > $2)) ORDER BY created_at ASC, id ASC LIMIT $3"
        );
        let newest = Keyset {
            newest_first: true,
            ..oldest
        };
        assert!(
            newest
                .tail()
                .starts_with("(created_at < $1 OR (created_at = $1 AND id < $2))")
        );
        let start = PageRequest::first(5);
        assert_eq!(oldest.start(&start), Ok((i64::MIN, String::new())));
        assert_eq!(newest.start(&start), Ok((i64::MAX, String::new())));
        let next = PageRequest::new(None, Some("12:abc".into())).unwrap_or(start);
        assert_eq!(newest.start(&next), Ok((12, "abc".to_string())));
    }

    #[test]
    fn next_after_only_when_more_follow() {
        let req = PageRequest::new(Some(2), None).unwrap_or(PageRequest::first(2));
        let full = req.apply(vec![1, 2, 3], |i| i.to_string()).unwrap_or(Page {
            items: vec![],
            next_after: None,
        });
        assert_eq!(
            (full.items, full.next_after.as_deref()),
            (vec![1, 2], Some("2"))
        );
        let second = PageRequest::new(Some(2), Some("2".into()))
            .and_then(|r| r.apply(vec![1, 2, 3], |i| i.to_string()))
            .unwrap_or(Page {
                items: vec![],
                next_after: None,
            });
        assert_eq!((second.items, second.next_after), (vec![3], None));
        // Exactly `limit` items: no promise of a next page.
        let exact = req.apply(vec![1, 2], |i| i.to_string()).unwrap_or(Page {
            items: vec![],
            next_after: Some("x".into()),
        });
        assert_eq!(exact.next_after, None);
    }
}
