//! One error type for every recipe, with a stable [`ErrorKind`] that the Python and
//! Node bindings map to exception classes and `err.code` values.

use std::time::Duration;

/// A stable classification of [`Error`]s. Bindings expose it (Python: one exception
/// subclass per kind; Node: `err.code`), so the names never change once published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad input at the API boundary (empty name, malformed endpoint, TTL out of range...).
    InvalidArgument,
    /// etcd could not be reached, or the connection broke.
    Connect,
    /// An operation did not finish within its deadline.
    Timeout,
    /// The session (lease) that backed this object is gone.
    SessionLost,
    /// A lock could not be acquired in time (or at once, for `try_acquire`).
    LockTimeout,
    /// A lock guard was used after the lock stopped being ours.
    LockLost,
    /// The caller is not (or no longer) the leader.
    NotLeader,
    /// A guarded transaction's fencing comparison failed.
    Fenced,
    /// The requested revision has been compacted away.
    Compacted,
    /// Authentication failed or the user lacks a permission.
    PermissionDenied,
    /// A value could not be decoded (UTF-8 or JSON).
    Decode,
    /// The object was closed (client, session, view...).
    Closed,
    /// A write was sent but no answer came back (the connection broke, the member hung,
    /// or the deadline passed): it may or may not have been applied. Read before retrying.
    UnknownOutcome,
    /// Anything else etcd reported.
    Etcd,
}

impl ErrorKind {
    /// The stable name of this kind, e.g. `"SESSION_LOST"`; the Node `err.code`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "INVALID_ARGUMENT",
            ErrorKind::Connect => "CONNECT",
            ErrorKind::Timeout => "TIMEOUT",
            ErrorKind::SessionLost => "SESSION_LOST",
            ErrorKind::LockTimeout => "LOCK_TIMEOUT",
            ErrorKind::LockLost => "LOCK_LOST",
            ErrorKind::NotLeader => "NOT_LEADER",
            ErrorKind::Fenced => "FENCED",
            ErrorKind::Compacted => "COMPACTED",
            ErrorKind::PermissionDenied => "PERMISSION_DENIED",
            ErrorKind::Decode => "DECODE",
            ErrorKind::Closed => "CLOSED",
            ErrorKind::UnknownOutcome => "UNKNOWN_OUTCOME",
            ErrorKind::Etcd => "ETCD",
        }
    }

    /// Every kind, for bindings that build one class per kind.
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::InvalidArgument,
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::SessionLost,
        ErrorKind::LockTimeout,
        ErrorKind::LockLost,
        ErrorKind::NotLeader,
        ErrorKind::Fenced,
        ErrorKind::Compacted,
        ErrorKind::PermissionDenied,
        ErrorKind::Decode,
        ErrorKind::Closed,
        ErrorKind::UnknownOutcome,
        ErrorKind::Etcd,
    ];
}

/// Every error the recipes return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("cannot connect to etcd{}: {message}", if endpoints.is_empty() { String::new() } else { format!(" at {endpoints}") })]
    Connect {
        endpoints: String,
        message: String,
        #[source]
        source: Option<etcd_client::Error>,
    },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("session lost: lease {lease_id:x} {reason}")]
    SessionLost { lease_id: i64, reason: String },
    #[error("{name} not acquired: {reason}")]
    LockTimeout { name: String, reason: String },
    #[error("lock {key:?} is no longer held")]
    LockLost { key: String },
    #[error("not the leader of election {name:?}")]
    NotLeader { name: String },
    #[error("fenced: {0}")]
    Fenced(String),
    #[error("revision {requested} has been compacted (compact revision {compact_revision})")]
    Compacted { requested: i64, compact_revision: i64 },
    #[error("permission denied: {0}")]
    PermissionDenied(#[source] etcd_client::Error),
    #[error("cannot decode value of key {key:?}: {message}")]
    Decode { key: String, message: String },
    #[error("{0} is closed")]
    Closed(&'static str),
    #[error("outcome unknown: {0}")]
    UnknownOutcome(String),
    #[error("etcd error: {0}")]
    Etcd(#[source] etcd_client::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Connect { .. } => ErrorKind::Connect,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::SessionLost { .. } => ErrorKind::SessionLost,
            Error::LockTimeout { .. } => ErrorKind::LockTimeout,
            Error::LockLost { .. } => ErrorKind::LockLost,
            Error::NotLeader { .. } => ErrorKind::NotLeader,
            Error::Fenced(_) => ErrorKind::Fenced,
            Error::Compacted { .. } => ErrorKind::Compacted,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::Decode { .. } => ErrorKind::Decode,
            Error::Closed(_) => ErrorKind::Closed,
            Error::UnknownOutcome(_) => ErrorKind::UnknownOutcome,
            Error::Etcd(_) => ErrorKind::Etcd,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub(crate) fn timeout(what: impl Into<String>, after: Duration) -> Self {
        Error::Timeout { what: what.into(), after }
    }

    /// True when retrying later on the same connection may succeed
    /// (connection trouble or a deadline), as opposed to a definite answer.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::UnknownOutcome)
    }

    /// True when a write that failed with this error was certainly not applied, so
    /// sending it again cannot apply it twice. False for [`ErrorKind::UnknownOutcome`]
    /// (read first) and for errors that are not about a write's outcome.
    pub fn not_applied(&self) -> bool {
        !matches!(self.kind(), ErrorKind::UnknownOutcome | ErrorKind::Etcd)
    }
}

impl From<etcd_client::Error> for Error {
    fn from(e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        use tonic::Code;
        if crate::client::auth_refusal(&e) {
            // Wrong user or password: etcd answered, and the answer is no.
            return Error::PermissionDenied(e);
        }
        if crate::client::tls_refusal(&e) {
            return Error::Connect {
                endpoints: String::new(),
                message: crate::client::describe(&e),
                source: Some(e),
            };
        }
        match &e {
            E::InvalidArgs(m) => Error::InvalidArgument(m.clone()),
            E::InvalidUri(u) => Error::InvalidArgument(format!("invalid endpoint URL: {u}")),
            E::TransportError(_) | E::IoError(_) => Error::Connect {
                endpoints: String::new(),
                message: e.to_string(),
                source: Some(e),
            },
            E::GRpcStatus(s) => match s.code() {
                Code::Unavailable | Code::Cancelled | Code::Unknown
                    if s.message().contains("transport")
                        || s.message().contains("connect")
                        || s.code() == Code::Unavailable =>
                {
                    Error::Connect { endpoints: String::new(), message: s.message().to_string(), source: Some(e) }
                }
                Code::Cancelled if s.message().contains("Timeout expired") => Error::Timeout {
                    what: "etcd request".into(),
                    after: Duration::ZERO,
                },
                Code::DeadlineExceeded => Error::Timeout {
                    what: format!("etcd request ({})", s.message()),
                    after: Duration::ZERO,
                },
                Code::PermissionDenied | Code::Unauthenticated => Error::PermissionDenied(e),
                // A write attached to a lease that expired or was revoked.
                Code::NotFound if s.message().contains("lease not found") => Error::SessionLost {
                    lease_id: 0,
                    reason: "requested lease not found in etcd (expired or revoked)".into(),
                },
                Code::OutOfRange if s.message().contains("compacted") => {
                    Error::Compacted { requested: 0, compact_revision: 0 }
                }
                _ => Error::Etcd(e),
            },
            _ => Error::Etcd(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<_> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
    }
}
