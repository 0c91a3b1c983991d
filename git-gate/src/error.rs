//! Errors of the gate. Messages name the remote, limit or step that failed and never hold a
//! credential.

use std::time::Duration;

/// An error of the git gate.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The configuration is invalid (field named in the message).
    #[error("git gate config: {0}")]
    Config(String),
    /// The request names a remote that is not declared.
    #[error("git gate: no remote named {0:?} is declared for this bottle")]
    UnknownRemote(String),
    /// The request is not a smart-HTTP git request the gate serves.
    #[error("git gate: {0}")]
    BadRequest(String),
    /// The request body exceeds the configured limit.
    #[error("git gate: request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Refreshing the mirror from upstream failed: the gate refuses to serve stale refs.
    #[error("git gate: cannot refresh remote {remote:?} from upstream (refusing to serve stale refs): {reason}")]
    Upstream {
        /// The remote's name.
        remote: String,
        /// What git said (credentials scrubbed).
        reason: String,
    },
    /// A git child did not finish in time.
    #[error("git gate: {what} did not finish within {limit:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// The deadline.
        limit: Duration,
    },
    /// A git child could not be run or failed.
    #[error("git gate: {0}")]
    Git(String),
    /// Local I/O failed.
    #[error("git gate: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl GateError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GateError {
        let what = what.into();
        move |source| GateError::Io { what, source }
    }
}
