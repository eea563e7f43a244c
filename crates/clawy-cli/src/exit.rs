//! Exit codes of the API client commands. Scripts rely on these numbers: never
//! renumber, only add. (Documented in docs/GETTING-STARTED.md.)

use std::process::ExitCode;

use crate::client::ClientError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: it worked.
    Ok,
    /// 1: the operation failed (the instance went to `error`, a server-side error, …).
    Failed,
    /// 2: the command line or the request was wrong (also clap's own usage errors).
    Usage,
    /// 3: no credentials, a bad/expired/revoked key, or a key without the privilege.
    Auth,
    /// 4: no such instance, key or SSH key (or it belongs to someone else).
    NotFound,
    /// 5: conflict with the current state: name taken, no capacity, quota reached.
    Conflict,
    /// 6: the server could not be reached.
    Unreachable,
    /// 7: `--wait` gave up after `--timeout`; the operation may still finish.
    Timeout,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Auth => 3,
            Exit::NotFound => 4,
            Exit::Conflict => 5,
            Exit::Unreachable => 6,
            Exit::Timeout => 7,
        }
    }

    /// From an API error: the status decides, except codes that mean "the platform
    /// has no room for this" which scripts should treat like a conflict whatever the
    /// status the server chose for them.
    pub fn from_api(status: u16, code: &str) -> Exit {
        if matches!(
            code,
            "no_capacity" | "quota_exceeded" | "instance_quota" | "name_taken" | "conflict"
        ) {
            return Exit::Conflict;
        }
        match status {
            401 | 403 => Exit::Auth,
            404 => Exit::NotFound,
            409 => Exit::Conflict,
            400 | 405 | 413 | 415 | 422 => Exit::Usage,
            _ => Exit::Failed,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// A command's failure: the exit code and the sentence printed after `error: `.
#[derive(Debug)]
pub struct CmdError {
    pub exit: Exit,
    pub message: String,
}

impl CmdError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CmdError {
            exit,
            message: message.into(),
        }
    }
}

impl From<ClientError> for CmdError {
    fn from(e: ClientError) -> Self {
        CmdError::new(e.exit(), e.to_string())
    }
}

impl From<std::io::Error> for CmdError {
    fn from(e: std::io::Error) -> Self {
        CmdError::new(Exit::Failed, e.to_string())
    }
}

pub type CmdResult = Result<(), CmdError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_stable() {
        let all = [
            (Exit::Ok, 0),
            (Exit::Failed, 1),
            (Exit::Usage, 2),
            (Exit::Auth, 3),
            (Exit::NotFound, 4),
            (Exit::Conflict, 5),
            (Exit::Unreachable, 6),
            (Exit::Timeout, 7),
        ];
        for (e, n) in all {
            assert_eq!(e.code(), n);
        }
        assert_eq!(Exit::from_api(401, "unauthorized"), Exit::Auth);
        assert_eq!(Exit::from_api(403, "insufficient_tier"), Exit::Auth);
        assert_eq!(Exit::from_api(404, "not_found"), Exit::NotFound);
        assert_eq!(Exit::from_api(422, "no_capacity"), Exit::Conflict);
        // The server sends 403 for a full quota; scripts see "conflict", not "auth".
        assert_eq!(Exit::from_api(403, "quota_exceeded"), Exit::Conflict);
        assert_eq!(Exit::from_api(409, "invalid_state"), Exit::Conflict);
        assert_eq!(Exit::from_api(422, "invalid_name"), Exit::Usage);
        assert_eq!(Exit::from_api(500, "internal"), Exit::Failed);
    }
}
