//! The SDK's error type and its mapping from protocol errors.

use std::time::Duration;

use crate::pb;

/// Error categories of the protocol's `ErrorCode` (shared with the server
/// through `caddy-core`).
pub use caddy_core::ErrorCode;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a typed error.
    #[error("{}: {message}", code.as_str())]
    Server {
        /// Category.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// For a failed compare-and-set: the key's current mod revision.
        current_revision: Option<u64>,
        /// For `Unavailable`: the leader's client address, if the server knew it.
        leader_hint: Option<String>,
        /// The server did nothing, and the same request may succeed once
        /// this much time has passed (a busy password hasher, a throttled
        /// login). The SDK already waited and retried where the wait fit in
        /// the request timeout; this is what was left.
        retry_after: Option<Duration>,
    },
    /// No endpoint could be reached or answered within the request timeout.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The client configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A server sent bytes that violate the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A local I/O failure (e.g. writing a backup).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A local document operation failed (bad edit, undecodable bytes).
    #[error("document: {0}")]
    Document(String),
}

impl ClientError {
    /// The error's category. Transport failures are `Unavailable`, a bad
    /// configuration is `InvalidArgument`, protocol violations and local I/O
    /// failures are `Internal`.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Server { code, .. } => *code,
            ClientError::Unavailable(_) => ErrorCode::Unavailable,
            ClientError::Config(_) => ErrorCode::InvalidArgument,
            ClientError::Protocol(_) | ClientError::Io(_) => ErrorCode::Internal,
            ClientError::Document(_) => ErrorCode::InvalidArgument,
        }
    }

    /// True when the same request may succeed if simply retried later.
    pub fn is_retryable(&self) -> bool {
        self.code().is_retryable()
    }

    /// For a failed compare-and-set, the key's current mod revision.
    pub fn current_revision(&self) -> Option<u64> {
        match self {
            ClientError::Server { current_revision, .. } => *current_revision,
            _ => None,
        }
    }

    /// How long the server asked to wait before sending the same request
    /// again, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Converts a protocol error frame. An unknown or unspecified code is
    /// reported as `Internal`, keeping the server's message.
    pub fn from_pb(err: pb::Error) -> Self {
        let code = code_from_pb(err.code).unwrap_or(ErrorCode::Internal);
        ClientError::Server {
            code,
            message: err.message,
            current_revision: err.current_revision,
            leader_hint: err.leader_hint.filter(|h| !h.is_empty()),
            retry_after: err.retry_after_ms.filter(|ms| *ms > 0).map(Duration::from_millis),
        }
    }
}

/// Maps a protocol `ErrorCode` value; `None` for unspecified or unknown codes.
pub(crate) fn code_from_pb(code: i32) -> Option<ErrorCode> {
    Some(match pb::ErrorCode::try_from(code).ok()? {
        pb::ErrorCode::Unspecified => return None,
        pb::ErrorCode::InvalidArgument => ErrorCode::InvalidArgument,
        pb::ErrorCode::NotFound => ErrorCode::NotFound,
        pb::ErrorCode::AlreadyExists => ErrorCode::AlreadyExists,
        pb::ErrorCode::FailedPrecondition => ErrorCode::FailedPrecondition,
        pb::ErrorCode::Unauthenticated => ErrorCode::Unauthenticated,
        pb::ErrorCode::PermissionDenied => ErrorCode::PermissionDenied,
        pb::ErrorCode::ResourceExhausted => ErrorCode::ResourceExhausted,
        pb::ErrorCode::Unavailable => ErrorCode::Unavailable,
        pb::ErrorCode::Internal => ErrorCode::Internal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb_err(code: pb::ErrorCode) -> pb::Error {
        pb::Error {
            code: code as i32,
            message: "m".into(),
            current_revision: Some(7),
            leader_hint: Some("h:1".into()),
            retry_after_ms: Some(2500),
        }
    }

    #[test]
    fn every_protocol_code_maps() {
        let pairs = [
            (pb::ErrorCode::InvalidArgument, ErrorCode::InvalidArgument),
            (pb::ErrorCode::NotFound, ErrorCode::NotFound),
            (pb::ErrorCode::AlreadyExists, ErrorCode::AlreadyExists),
            (pb::ErrorCode::FailedPrecondition, ErrorCode::FailedPrecondition),
            (pb::ErrorCode::Unauthenticated, ErrorCode::Unauthenticated),
            (pb::ErrorCode::PermissionDenied, ErrorCode::PermissionDenied),
            (pb::ErrorCode::ResourceExhausted, ErrorCode::ResourceExhausted),
            (pb::ErrorCode::Unavailable, ErrorCode::Unavailable),
            (pb::ErrorCode::Internal, ErrorCode::Internal),
        ];
        for (wire, code) in pairs {
            let err = ClientError::from_pb(pb_err(wire));
            assert_eq!(err.code(), code);
            assert_eq!(err.is_retryable(), code == ErrorCode::Unavailable);
            assert_eq!(err.current_revision(), Some(7));
            assert_eq!(err.retry_after(), Some(Duration::from_millis(2500)));
            assert!(err.to_string().starts_with(code.as_str()), "{err}");
        }
        assert_eq!(ClientError::from_pb(pb_err(pb::ErrorCode::Unspecified)).code(), ErrorCode::Internal);
        let unknown = pb::Error {
            code: 99,
            message: "?".into(),
            current_revision: None,
            leader_hint: Some(String::new()),
            retry_after_ms: None,
        };
        match ClientError::from_pb(unknown) {
            ClientError::Server { code, leader_hint, .. } => {
                assert_eq!(code, ErrorCode::Internal);
                assert_eq!(leader_hint, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn local_errors_have_codes() {
        assert_eq!(ClientError::Unavailable("x".into()).code(), ErrorCode::Unavailable);
        assert!(ClientError::Unavailable("x".into()).is_retryable());
        assert_eq!(ClientError::Config("x".into()).code(), ErrorCode::InvalidArgument);
        assert_eq!(ClientError::Protocol("x".into()).code(), ErrorCode::Internal);
        assert!(!ClientError::Protocol("x".into()).is_retryable());
        assert_eq!(ClientError::from(std::io::Error::other("disk")).code(), ErrorCode::Internal);
        assert_eq!(ClientError::Unavailable("x".into()).retry_after(), None);
    }
}
