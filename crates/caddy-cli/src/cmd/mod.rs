//! Command execution: loads the configuration, connects, dispatches, and
//! turns SDK errors into one-line messages.

mod bench;
mod cluster;
mod kv;

use std::io::Write;

use anyhow::Context as _;
use caddy_client::{Client, ClientConfig, ClientError};

use crate::cli::{BenchCommand, Cli, Command};

/// What every command needs.
pub struct Ctx {
    /// Connected (lazily) SDK handle.
    pub client: Client,
    /// `--json` was given.
    pub json: bool,
}

/// Runs the parsed command line, writing results to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = cli.config_path();
    let mut config = ClientConfig::from_file(&path)?;
    if let Some(timeout) = cli.timeout {
        if timeout.is_zero() {
            anyhow::bail!("--timeout must be positive");
        }
        config.request_timeout = timeout;
    }
    let client = Client::connect(config).await?;
    let ctx = Ctx { client, json: cli.json };
    let result = match cli.command {
        Command::Cluster(cmd) => cluster::run(&ctx, cmd, out).await,
        Command::Kv(cmd) => kv::run(&ctx, cmd, out).await,
        Command::Bench(BenchCommand::Kv(args)) => bench::run(&ctx, args, out).await,
    };
    ctx.client.close().await;
    result.map_err(describe)
}

/// Adds what a person needs to an SDK error: the current revision of a
/// failed compare-and-set, the leader hint of an unavailable cluster.
fn describe(err: anyhow::Error) -> anyhow::Error {
    let extra = match err.downcast_ref::<ClientError>() {
        Some(ClientError::Server { current_revision: Some(rev), message, .. })
            if !message.contains(&rev.to_string()) =>
        {
            Some(format!("current revision {rev}"))
        }
        Some(ClientError::Server { leader_hint: Some(hint), .. }) => Some(format!("leader hint {hint}")),
        _ => None,
    };
    match extra {
        Some(extra) => anyhow::anyhow!("{err} ({extra})"),
        None => err,
    }
}

/// Writes one compact JSON document and a newline.
pub fn emit_json(out: &mut dyn Write, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string(value).context("encoding JSON")?;
    writeln!(out, "{text}").context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

/// Writes text as it is (callers include the final newline).
pub fn emit_text(out: &mut dyn Write, text: &str) -> anyhow::Result<()> {
    out.write_all(text.as_bytes()).context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use caddy_client::ErrorCode;

    #[test]
    fn describe_adds_revision_and_hint() {
        let cas = ClientError::Server {
            code: ErrorCode::FailedPrecondition,
            message: "revision mismatch".into(),
            current_revision: Some(42),
            leader_hint: None,
        };
        assert_eq!(describe(cas.into()).to_string(), "failed_precondition: revision mismatch (current revision 42)");
        let unavailable = ClientError::Server {
            code: ErrorCode::Unavailable,
            message: "not the leader".into(),
            current_revision: None,
            leader_hint: Some("10.0.0.2:7101".into()),
        };
        assert_eq!(describe(unavailable.into()).to_string(), "unavailable: not the leader (leader hint 10.0.0.2:7101)");
        assert_eq!(describe(anyhow::anyhow!("key not found: k")).to_string(), "key not found: k");
    }

    #[tokio::test]
    async fn missing_config_is_one_clear_error() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["caddyctl", "--config", "/nonexistent/client.toml", "kv", "get", "k"]);
        let cli = match cli {
            Ok(cli) => cli,
            Err(e) => panic!("{e}"),
        };
        let mut out = Vec::new();
        let err = match run(cli, &mut out).await {
            Ok(()) => panic!("no error"),
            Err(e) => e,
        };
        let message = crate::output::one_line(&format!("{err:#}"));
        assert!(message.contains("/nonexistent/client.toml"), "{message}");
        assert!(out.is_empty());
    }
}
