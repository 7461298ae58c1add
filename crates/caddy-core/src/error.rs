//! The typed error model every client sees.

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
}

impl CaddyError {
    /// A new error of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), current_revision: None, leader_hint: None }
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
}
