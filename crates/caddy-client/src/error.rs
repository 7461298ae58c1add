//! The SDK's error type and its mapping from protocol errors.
//!
//! Every error also says what became of the request ([`ClientError::outcome`]):
//! a write that was sent and got no definitive answer is
//! [`ClientError::OutcomeUnknown`], so a caller can tell "refused, nothing
//! changed" from "may or may not have been applied" without knowing the
//! transport. A refusal that carries a retry-after
//! ([`ClientError::retry_after`]) is not applied like any typed refusal,
//! unless an earlier attempt of the same write went out without a
//! definitive answer: the refusal says nothing about that one, so the write
//! is in doubt.

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
    /// A write was sent, and no definitive answer came back: the request
    /// timed out or lost its connection after it went out, the server
    /// answered `UNAVAILABLE` (which it also does when leadership changes
    /// before a proposal commits), or its answer could not be understood.
    /// The write may or may not have been applied; its exactly-once lane is
    /// thrown away, so sending it again is a new write. `last` is the last
    /// failure seen.
    #[error("{last}; outcome unknown: the write may or may not have been applied (check before retrying it)")]
    OutcomeUnknown {
        /// The last failure seen (never itself `OutcomeUnknown`).
        last: Box<ClientError>,
    },
}

/// What became of a request that failed ([`ClientError::outcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It changed nothing: the server refused it with a typed error, it
    /// failed before it was sent, or it was a read.
    NotApplied,
    /// A write was sent and no definitive answer came back: it may or may
    /// not have been applied.
    Unknown,
}

impl Outcome {
    /// `not_applied` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::NotApplied => "not_applied",
            Outcome::Unknown => "unknown",
        }
    }
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
            ClientError::OutcomeUnknown { last } => last.code(),
        }
    }

    /// Whether the failed request may have changed anything: `Unknown` only
    /// for [`ClientError::OutcomeUnknown`] (a write sent without a definitive
    /// answer, including one refused with a retry-after after an earlier
    /// attempt of it went unanswered); every other error left the cluster as
    /// it was.
    pub fn outcome(&self) -> Outcome {
        match self {
            ClientError::OutcomeUnknown { .. } => Outcome::Unknown,
            _ => Outcome::NotApplied,
        }
    }

    /// For `Unavailable` answers: the leader's client address, if the
    /// server knew it.
    pub fn leader_hint(&self) -> Option<&str> {
        match self {
            ClientError::Server { leader_hint, .. } => leader_hint.as_deref(),
            ClientError::OutcomeUnknown { last } => last.leader_hint(),
            _ => None,
        }
    }

    /// This error as the failure of a write that was sent: a typed refusal
    /// (any code but `Unavailable`) stays as it is, since the server decided
    /// and nothing was applied (or, for a retried write, the first answer
    /// is replayed); anything else becomes [`ClientError::OutcomeUnknown`].
    pub(crate) fn in_doubt(self) -> ClientError {
        match self {
            ClientError::Server { code, .. } if code != ErrorCode::Unavailable => self,
            ClientError::OutcomeUnknown { .. } => self,
            other => other.unknown(),
        }
    }

    /// This error as the final failure of a write an earlier attempt of
    /// which went out and got no definitive answer. A typed refusal still
    /// speaks for that attempt (a retry is answered from the lane's
    /// remembered reply) unless it carries a retry-after: the server gives
    /// those before it looks at the write, so the earlier attempt may have
    /// been applied. Anything else is in doubt as in [`Self::in_doubt`].
    pub(crate) fn after_doubt(self) -> ClientError {
        match self {
            ClientError::Server { retry_after: Some(_), .. } => self.unknown(),
            other => other.in_doubt(),
        }
    }

    fn unknown(self) -> ClientError {
        match self {
            ClientError::OutcomeUnknown { .. } => self,
            other => ClientError::OutcomeUnknown { last: Box::new(other) },
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
            ClientError::OutcomeUnknown { last } => last.current_revision(),
            _ => None,
        }
    }

    /// How long the server asked to wait before sending the same request
    /// again, when it did (also under [`ClientError::OutcomeUnknown`]).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Server { retry_after, .. } => *retry_after,
            ClientError::OutcomeUnknown { last } => last.retry_after(),
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

/// `result` of decoding a write's answer: a failure there (an answer of the
/// wrong kind, undecodable bytes) comes after the server took the write, so
/// its outcome is unknown.
pub(crate) fn settle<T>(write: bool, result: Result<T, ClientError>) -> Result<T, ClientError> {
    if write { result.map_err(ClientError::in_doubt) } else { result }
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
        for local in
            [ClientError::Unavailable("x".into()), ClientError::Config("x".into()), ClientError::Protocol("x".into())]
        {
            assert_eq!(local.outcome(), Outcome::NotApplied, "{local}");
        }
    }

    fn server(code: ErrorCode) -> ClientError {
        ClientError::Server {
            code,
            message: "m".into(),
            current_revision: Some(3),
            leader_hint: Some("10.0.0.2:7101".into()),
            retry_after: None,
        }
    }

    #[test]
    fn a_sent_write_without_a_definitive_answer_is_in_doubt() {
        // A typed refusal is definitive even for a write that was sent.
        for code in [ErrorCode::NotFound, ErrorCode::FailedPrecondition, ErrorCode::PermissionDenied] {
            let err = server(code).in_doubt();
            assert_eq!((err.code(), err.outcome()), (code, Outcome::NotApplied), "{err}");
        }
        // UNAVAILABLE, a lost connection, a timeout or an answer that cannot
        // be understood, after the write went out: it may have been applied.
        for err in [
            server(ErrorCode::Unavailable),
            ClientError::Unavailable("no answer within 2s".into()),
            ClientError::Protocol("x".into()),
        ] {
            let code = err.code();
            let err = err.in_doubt();
            assert_eq!(err.outcome(), Outcome::Unknown, "{err}");
            assert_eq!(err.code(), code, "the category is kept");
            assert_eq!(err.is_retryable(), code.is_retryable());
            let text = err.to_string();
            assert!(text.contains("the write may or may not have been applied"), "{text}");
            // Wrapping twice changes nothing.
            assert_eq!(err.in_doubt().to_string(), text);
        }
        let err = server(ErrorCode::Unavailable).in_doubt();
        assert_eq!((err.current_revision(), err.leader_hint()), (Some(3), Some("10.0.0.2:7101")));
        assert!(err.to_string().starts_with("unavailable: m; outcome unknown"), "{err}");
        // Reads are never in doubt; a write's failure is.
        assert_eq!(
            settle(false, Err::<(), _>(ClientError::Protocol("x".into()))).unwrap_err().outcome(),
            Outcome::NotApplied
        );
        assert_eq!(
            settle(true, Err::<(), _>(ClientError::Protocol("x".into()))).unwrap_err().outcome(),
            Outcome::Unknown
        );
        assert_eq!(Outcome::Unknown.as_str(), "unknown");
        assert_eq!(Outcome::NotApplied.as_str(), "not_applied");
    }

    #[test]
    fn a_retry_after_refusal_is_not_applied_unless_an_earlier_attempt_is_in_doubt() {
        let throttled = || ClientError::Server {
            code: ErrorCode::ResourceExhausted,
            message: "too many failed logins".into(),
            current_revision: None,
            leader_hint: None,
            retry_after: Some(Duration::from_millis(2500)),
        };
        // The server did nothing with the attempt it refused.
        let err = throttled().in_doubt();
        assert_eq!((err.outcome(), err.retry_after()), (Outcome::NotApplied, Some(Duration::from_millis(2500))));
        // An earlier attempt went unanswered: the refusal says nothing of it.
        let err = throttled().after_doubt();
        assert!(matches!(err, ClientError::OutcomeUnknown { .. }), "{err:?}");
        assert_eq!((err.code(), err.outcome()), (ErrorCode::ResourceExhausted, Outcome::Unknown));
        assert_eq!(err.retry_after(), Some(Duration::from_millis(2500)), "the advice is kept");
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.starts_with("resource_exhausted: too many failed logins; outcome unknown"), "{text}");
        assert_eq!(err.after_doubt().to_string(), text, "wrapping twice changes nothing");
        // A typed refusal without a retry-after is the lane's remembered
        // answer, definitive for every attempt; anything else is in doubt.
        assert_eq!(server(ErrorCode::NotFound).after_doubt().outcome(), Outcome::NotApplied);
        for err in [server(ErrorCode::Unavailable), ClientError::Protocol("x".into())] {
            assert_eq!(err.after_doubt().outcome(), Outcome::Unknown);
        }
    }
}
