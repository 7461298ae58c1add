//! The typed error model every client sees.
//!
//! `CaddyError` is stored (inside replies remembered for exactly-once
//! writes, postcard-encoded in the state machine and its snapshots) and sent
//! between nodes, so its encoded shape is frozen: postcard is not
//! self-describing, and a field added to the encoding would make every
//! stored reply undecodable. Advice that only the answering node gives
//! (`retry_after_ms`) is therefore kept out of the encoding and travels only
//! in the client protocol's `Error` message.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Error categories, mirroring the client protocol's `ErrorCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request is malformed or a value is out of range.
    InvalidArgument,
    /// The named thing does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The system is not in the state the request requires (e.g. a
    /// compare-and-set on a stale revision, a compacted watch revision).
    FailedPrecondition,
    /// No or a wrong credential.
    Unauthenticated,
    /// The caller may not do this.
    PermissionDenied,
    /// A limit was hit (size, count, rate); retrying the same request as it is
    /// will fail again unless something else changes.
    ResourceExhausted,
    /// The cluster cannot serve this right now (no leader, node shutting
    /// down); retry, possibly elsewhere.
    Unavailable,
    /// A bug or an unexpected failure on the server.
    Internal,
}

impl ErrorCode {
    /// True when the same request may succeed if simply retried later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::Unavailable)
    }

    /// Stable lower-case name, used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error with a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct CaddyError {
    /// Category.
    pub code: ErrorCode,
    /// What went wrong and, where possible, what to do about it.
    pub message: String,
    /// For a failed compare-and-set: the key's current mod revision (0 if absent).
    pub current_revision: Option<u64>,
    /// For `Unavailable`: where the leader's client listener is, if known.
    pub leader_hint: Option<String>,
    /// The answering node did nothing, and the same request may succeed
    /// after this many milliseconds (an overloaded password hasher, a
    /// throttled login). Node-local advice: never stored, never forwarded
    /// between nodes (skipped by serde, so stored replies keep their shape);
    /// it reaches the client in the protocol's `Error.retry_after_ms`.
    #[serde(skip)]
    pub retry_after_ms: Option<u64>,
}

impl CaddyError {
    /// A new error of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), current_revision: None, leader_hint: None, retry_after_ms: None }
    }
    /// Shorthand for [`ErrorCode::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    /// Shorthand for [`ErrorCode::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    /// Shorthand for [`ErrorCode::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    /// Shorthand for [`ErrorCode::ResourceExhausted`].
    pub fn exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceExhausted, message)
    }
    /// Shorthand for [`ErrorCode::FailedPrecondition`].
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }
    /// This error, telling the client it may send the same request again
    /// after `after` (rounded up to whole milliseconds, at least 1).
    pub fn retry_after(mut self, after: Duration) -> Self {
        let ms = after.as_micros().div_ceil(1000).clamp(1, u128::from(u64::MAX));
        self.retry_after_ms = Some(u64::try_from(ms).unwrap_or(u64::MAX));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored replies hold `CaddyError`s in postcard, which has no field
    /// names or lengths: these bytes are what the four-field error encoded
    /// to before `retry_after_ms` existed, and must still decode (and still
    /// be produced) exactly.
    #[test]
    fn the_stored_shape_is_unchanged_by_retry_advice() {
        let stored: &[u8] = &[3, 3, b'b', b'a', b'd', 1, 7, 1, 3, b'h', b':', b'1'];
        let err = CaddyError {
            code: ErrorCode::FailedPrecondition,
            message: "bad".into(),
            current_revision: Some(7),
            leader_hint: Some("h:1".into()),
            retry_after_ms: None,
        };
        assert_eq!(postcard::to_allocvec(&err).unwrap(), stored);
        assert_eq!(postcard::from_bytes::<CaddyError>(stored).unwrap(), err);
        let advised = err.clone().retry_after(Duration::from_micros(2_500_001));
        assert_eq!(advised.retry_after_ms, Some(2501));
        assert_eq!(postcard::to_allocvec(&advised).unwrap(), stored, "advice must not reach storage");
        assert_eq!(CaddyError::exhausted("x").retry_after(Duration::ZERO).retry_after_ms, Some(1));
    }
}
