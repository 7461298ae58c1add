//! How a failed command ends: its exit code, its `error:` line and, with
//! `--json`, its error object (the README's caddyctl section documents
//! both for users).
//!
//! | exit | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | refused or failed: the failed step changed nothing |
//! | 2 | usage: the command line is wrong (nothing was sent) |
//! | 3 | outcome unknown: a write went out and no definitive answer came back; it may or may not have been applied |
//!
//! With `--json` the failure is also written to standard output as one
//! JSON object (the last line, after any streamed lines of `kv watch` or
//! `doc watch`), so a script reads one stream:
//!
//! ```json
//! {"error":{"code":"not_found","message":"key not found: k","outcome":"not_applied","retryable":false}}
//! ```
//!
//! `code` is one of the protocol's categories (`invalid_argument`,
//! `not_found`, `already_exists`, `failed_precondition`, `unauthenticated`,
//! `permission_denied`, `resource_exhausted`, `unavailable`, `internal`) or
//! one of the CLI's: `usage`, `timeout` (`--timeout` or `--wait-timeout`
//! ran out while waiting), `failed` (anything else: a local file, a render
//! job that failed, a broken audit chain). `outcome` (`not_applied` or
//! `unknown`) is what became of the step that failed; steps before it stay
//! done, and the message (or a field such as `job` or `created`) names
//! them. `current_revision`, `leader_hint` and `retry_after_ms` (how long
//! the server asked to wait before the same request may succeed; the
//! `error:` line says it too, as "retry after 2.5s") appear when the server
//! gave them.

use std::time::Duration;

use caddy_client::{ClientError, ErrorCode, Outcome};
use serde_json::{Map, Value, json};

use crate::output::one_line;

/// A failure's category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// One of the protocol's categories.
    Server(ErrorCode),
    /// The command line is wrong.
    Usage,
    /// A time bound ran out while waiting.
    Timeout,
    /// Anything else.
    Failed,
}

impl Code {
    /// The name scripts see.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Server(code) => code.as_str(),
            Code::Usage => "usage",
            Code::Timeout => "timeout",
            Code::Failed => "failed",
        }
    }
}

/// A failure the CLI decides itself, carried through `anyhow` to `main`.
#[derive(Debug)]
pub struct CliError {
    /// Category.
    pub code: Code,
    /// The whole one-line message.
    pub message: String,
    /// What became of the step that failed.
    pub outcome: Outcome,
    /// Whether running the command again later may succeed.
    pub retryable: bool,
    /// How long the server asked to wait before trying again.
    pub retry_after: Option<Duration>,
    /// Command-specific fields of the JSON error object.
    pub extra: Map<String, Value>,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl CliError {
    fn new(code: Code, message: impl Into<String>, outcome: Outcome, retryable: bool) -> CliError {
        CliError { code, message: message.into(), outcome, retryable, retry_after: None, extra: Map::new() }
    }

    /// An SDK error told in the CLI's own words (its category, outcome,
    /// retryability and retry-after kept).
    pub fn client(err: &ClientError, message: impl Into<String>) -> CliError {
        let mut cli = CliError::new(Code::Server(err.code()), message, err.outcome(), err.is_retryable());
        cli.retry_after = err.retry_after();
        cli
    }

    /// Adds a field to the JSON error object.
    pub fn with(mut self, key: &str, value: Value) -> CliError {
        self.extra.insert(key.to_owned(), value);
        self
    }
}

/// A wrong command line found after parsing (exit code 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    CliError::new(Code::Usage, message, Outcome::NotApplied, false).into()
}

/// A refusal the CLI reads from an answer (e.g. a key that does not exist).
pub fn refused(code: ErrorCode, message: impl Into<String>) -> anyhow::Error {
    CliError::new(Code::Server(code), message, Outcome::NotApplied, code.is_retryable()).into()
}

/// A time bound that ran out while the command waited.
pub fn timed_out(message: impl Into<String>, outcome: Outcome) -> CliError {
    CliError::new(Code::Timeout, message, outcome, true)
}

/// What `main` reports for a failed command.
#[derive(Debug)]
pub struct Failure {
    /// Category.
    pub code: Code,
    /// One line, hints included.
    pub message: String,
    /// What became of the step that failed.
    pub outcome: Outcome,
    /// Whether running the command again later may succeed.
    pub retryable: bool,
    /// For a failed compare-and-set: the key's current mod revision.
    pub current_revision: Option<u64>,
    /// For `unavailable`: the leader's client address, if known.
    pub leader_hint: Option<String>,
    /// How long the server asked to wait before the same request may
    /// succeed.
    pub retry_after: Option<Duration>,
    /// Command-specific fields.
    pub extra: Map<String, Value>,
}

impl Failure {
    /// Classifies `err`: a [`CliError`] says it all; else the first SDK
    /// error in its chain decides; anything else is `failed`, not applied.
    pub fn of(err: &anyhow::Error) -> Failure {
        let message = one_line(&format!("{err:#}"));
        if let Some(e) = err.downcast_ref::<CliError>() {
            return Failure {
                code: e.code,
                message,
                outcome: e.outcome,
                retryable: e.retryable,
                current_revision: None,
                leader_hint: None,
                retry_after: e.retry_after,
                extra: e.extra.clone(),
            };
        }
        match err.chain().find_map(|e| e.downcast_ref::<ClientError>()) {
            Some(e) => Failure {
                code: Code::Server(e.code()),
                message,
                outcome: e.outcome(),
                retryable: e.is_retryable(),
                current_revision: e.current_revision(),
                leader_hint: e.leader_hint().map(str::to_owned),
                retry_after: e.retry_after(),
                extra: Map::new(),
            },
            None => Failure {
                code: Code::Failed,
                message,
                outcome: Outcome::NotApplied,
                retryable: false,
                current_revision: None,
                leader_hint: None,
                retry_after: None,
                extra: Map::new(),
            },
        }
    }

    /// 2 for usage, 3 for an unknown outcome, else 1.
    pub fn exit_code(&self) -> u8 {
        match (self.code, self.outcome) {
            (Code::Usage, _) => 2,
            (_, Outcome::Unknown) => 3,
            _ => 1,
        }
    }

    /// The `--json` error object.
    pub fn json(&self) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), json!(self.code.as_str()));
        error.insert("message".into(), json!(self.message));
        error.insert("outcome".into(), json!(self.outcome.as_str()));
        error.insert("retryable".into(), json!(self.retryable));
        if let Some(rev) = self.current_revision {
            error.insert("current_revision".into(), json!(rev));
        }
        if let Some(hint) = &self.leader_hint {
            error.insert("leader_hint".into(), json!(hint));
        }
        if let Some(wait) = self.retry_after {
            // Whole milliseconds, rounded up: never a shorter wait than asked.
            let ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
            error.insert("retry_after_ms".into(), json!(ms));
        }
        for (key, value) in &self.extra {
            error.entry(key.clone()).or_insert_with(|| value.clone());
        }
        json!({ "error": error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: ErrorCode, message: &str) -> ClientError {
        ClientError::Server {
            code,
            message: message.into(),
            current_revision: None,
            leader_hint: None,
            retry_after: None,
        }
    }

    #[test]
    fn refusals_failures_and_doubts_have_their_exit_codes() {
        let not_found = Failure::of(&refused(ErrorCode::NotFound, "key not found: k"));
        assert_eq!((not_found.exit_code(), not_found.code.as_str()), (1, "not_found"));
        assert_eq!(
            not_found.json(),
            json!({"error": {"code": "not_found", "message": "key not found: k", "outcome": "not_applied", "retryable": false}})
        );

        let cas = ClientError::Server {
            code: ErrorCode::FailedPrecondition,
            message: "revision mismatch".into(),
            current_revision: Some(4),
            leader_hint: None,
            retry_after: None,
        };
        let failure = Failure::of(&anyhow::Error::from(cas));
        assert_eq!(failure.exit_code(), 1);
        assert_eq!(failure.json()["error"]["code"], "failed_precondition");
        assert_eq!(failure.json()["error"]["current_revision"], 4);
        assert!(failure.json()["error"].get("retry_after_ms").is_none(), "only when the server gave one");

        let usage = Failure::of(&usage("--window takes four numbers"));
        assert_eq!((usage.exit_code(), usage.code.as_str()), (2, "usage"));

        // A write in doubt exits 3, keeps its category and says so.
        let last = ClientError::Server {
            code: ErrorCode::Unavailable,
            message: "request not completed within 2s; retry".into(),
            current_revision: None,
            leader_hint: Some("127.0.0.1:7101".into()),
            retry_after: None,
        };
        let doubt = Failure::of(&anyhow::Error::from(ClientError::OutcomeUnknown { last: Box::new(last) }));
        assert_eq!(doubt.exit_code(), 3);
        let error = &doubt.json()["error"];
        assert_eq!((error["code"].as_str(), error["outcome"].as_str()), (Some("unavailable"), Some("unknown")));
        assert_eq!(error["leader_hint"], "127.0.0.1:7101");
        assert!(error["message"].as_str().is_some_and(|m| m.contains("may or may not have been applied")), "{error}");

        // A read that got no answer changed nothing: exit 1.
        let read = Failure::of(&anyhow::Error::from(ClientError::Unavailable("no answer within 2s".into())));
        assert_eq!((read.exit_code(), read.outcome), (1, Outcome::NotApplied));
        assert!(read.retryable);

        // Context keeps the SDK error findable.
        let wrapped = anyhow::Error::from(server(ErrorCode::PermissionDenied, "no")).context("uploading plan.dxf");
        let failure = Failure::of(&wrapped);
        assert_eq!(
            (failure.code.as_str(), failure.message.as_str()),
            ("permission_denied", "uploading plan.dxf: permission_denied: no")
        );

        // The CLI's own words for an SDK error, with extra fields.
        let import = CliError::client(&server(ErrorCode::InvalidArgument, "user #2: bad"), "import stopped at line 3")
            .with("created", json!(["user-1"]));
        let failure = Failure::of(&anyhow::Error::from(import));
        assert_eq!(failure.exit_code(), 1);
        assert_eq!(failure.json()["error"]["created"], json!(["user-1"]));
        assert_eq!(failure.json()["error"]["code"], "invalid_argument");

        // A refusal with a retry-after: not applied, and the wait in the
        // object (also through the CLI's own words, and under a doubt).
        let throttled = || ClientError::Server {
            code: ErrorCode::ResourceExhausted,
            message: "too many failed logins".into(),
            current_revision: None,
            leader_hint: None,
            retry_after: Some(Duration::from_millis(2450)),
        };
        let failure = Failure::of(&anyhow::Error::from(throttled()));
        assert_eq!((failure.exit_code(), failure.outcome), (1, Outcome::NotApplied));
        assert_eq!(
            failure.json(),
            json!({"error": {"code": "resource_exhausted", "message": "resource_exhausted: too many failed logins",
                "outcome": "not_applied", "retryable": false, "retry_after_ms": 2450}})
        );
        let import = CliError::client(&throttled(), "import stopped at line 3").with("created", json!([]));
        assert_eq!(Failure::of(&anyhow::Error::from(import)).json()["error"]["retry_after_ms"], 2450);
        let doubt = Failure::of(&anyhow::Error::from(ClientError::OutcomeUnknown { last: Box::new(throttled()) }));
        assert_eq!((doubt.exit_code(), doubt.retry_after), (3, Some(Duration::from_millis(2450))));
        let fraction = Failure { retry_after: Some(Duration::from_micros(2_450_001)), ..doubt };
        assert_eq!(fraction.json()["error"]["retry_after_ms"], 2451, "never a shorter wait");

        let local = Failure::of(&anyhow::anyhow!("reading ops.json: No such file\n  or directory"));
        assert_eq!((local.exit_code(), local.code.as_str()), (1, "failed"));
        assert_eq!(local.message, "reading ops.json: No such file or directory");

        let waited =
            Failure::of(&anyhow::Error::from(timed_out("job-3 is still queued after 2s", Outcome::NotApplied)));
        assert_eq!((waited.exit_code(), waited.code.as_str(), waited.retryable), (1, "timeout", true));
    }
}
