//! How an API call fails, mapped to PVE's HTTP shapes in `http::respond`.

use crate::schema::Errors;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400 `Parameter verification failed.` with the `errors` map.
    Param(Errors),
    /// 403 `Permission check failed (what)`; `what` may be empty.
    Perm(String),
    /// 500 with PVE's message (usually ending in a newline) in the reason phrase.
    Fail(String),
    /// Any other status with its message.
    Status(u16, String),
}

impl ApiError {
    pub fn param(key: &str, msg: &str) -> ApiError {
        let mut e = Errors::new();
        e.insert(key.to_string(), msg.to_string());
        ApiError::Param(e)
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::Param(_) => 400,
            ApiError::Perm(_) => 403,
            ApiError::Fail(_) => 500,
            ApiError::Status(s, _) => *s,
        }
    }

    /// The message PVE puts in the reason phrase (first line) and, newer, the body.
    pub fn message(&self) -> String {
        match self {
            ApiError::Param(_) => "Parameter verification failed.\n".into(),
            ApiError::Perm(w) if w.is_empty() => "Permission check failed\n".into(),
            ApiError::Perm(w) => format!("Permission check failed ({w})\n"),
            ApiError::Fail(m) | ApiError::Status(_, m) => m.clone(),
        }
    }
}

impl From<String> for ApiError {
    fn from(m: String) -> ApiError {
        ApiError::Fail(m)
    }
}

impl From<&str> for ApiError {
    fn from(m: &str) -> ApiError {
        ApiError::Fail(m.to_string())
    }
}
