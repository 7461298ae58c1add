//! Command execution: loads the configuration, connects, dispatches under
//! the command's `--timeout`, and turns errors into [`Failure`]s (one-line
//! messages with hints, categories, outcomes).

mod audit;
mod bench;
mod cluster;
mod doc;
mod file;
mod identity;
mod kv;
mod render;
mod user;

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use caddy_client::{Client, ClientConfig, ClientError, ErrorCode, Outcome, human_duration};
use tokio::time::Instant;

use crate::cli::{BenchCommand, Cli, Command};
use crate::credentials::Credentials;
use crate::failure::{Failure, timed_out};

/// How long after `--timeout` the whole command is cut. The SDK ends every
/// request and render wait at the deadline itself (and knows whether a
/// write was under way); this only stops what it does not bound, such as a
/// transfer's stream.
const BACKSTOP_GRACE: Duration = Duration::from_millis(500);

/// What every command needs.
pub struct Ctx {
    /// Connected (lazily) SDK handle; with `--timeout`, bound to its deadline.
    pub client: Client,
    /// `--json` was given.
    pub json: bool,
    /// `--timeout`, if given: it bounds the whole command.
    pub timeout: Option<Duration>,
    /// When `--timeout` runs out.
    pub deadline: Option<Instant>,
}

/// Runs the parsed command line, writing results to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), Failure> {
    let started = Instant::now();
    let (ctx, saved) = setup(&cli, started).await.map_err(|e| Failure::of(&e))?;
    let result = bounded(&ctx, dispatch(&ctx, cli.command, &saved, out)).await;
    ctx.client.close().await;
    result.map_err(|e| failure(&e, &saved))
}

/// Reads the configuration, applies the flags, and makes the client.
async fn setup(cli: &Cli, started: Instant) -> anyhow::Result<(Ctx, SavedCredentials)> {
    let path = cli.config_path();
    let mut config = ClientConfig::from_file(&path)?;
    if !cli.endpoints.is_empty() {
        config.endpoints = cli.endpoints.clone();
    }
    // The parser has refused a zero --timeout.
    if let Some(timeout) = cli.timeout {
        config.request_timeout = timeout;
    }
    let saved = apply_credentials(cli, &mut config)?;
    let mut client = Client::connect(config).await?;
    let deadline = cli.timeout.map(|t| started.checked_add(t).unwrap_or(started + Duration::from_secs(86_400 * 365)));
    if let Some(deadline) = deadline {
        client = client.with_deadline(deadline);
    }
    Ok((Ctx { client, json: cli.json, timeout: cli.timeout, deadline }, saved))
}

/// Runs `work` under the command's `--timeout`, if any.
async fn bounded(ctx: &Ctx, work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let (Some(deadline), Some(timeout)) = (ctx.deadline, ctx.timeout) else { return work.await };
    let in_doubt = ctx.client.writes_in_doubt();
    // Bound first, so that the cut work (and the lane of any write it was
    // sending) is dropped before the count is read.
    let result = tokio::time::timeout_at(deadline + BACKSTOP_GRACE, work).await;
    match result {
        Ok(result) => result,
        Err(_) if ctx.client.writes_in_doubt() > in_doubt => Err(timed_out(
            format!(
                "the command did not finish within {} (--timeout) while a write was under way: the write may or \
                 may not have been applied (check before retrying it)",
                human_duration(timeout)
            ),
            Outcome::Unknown,
        )
        .into()),
        Err(_) => Err(timed_out(
            format!("the command did not finish within {} (--timeout)", human_duration(timeout)),
            Outcome::NotApplied,
        )
        .into()),
    }
}

/// Runs a watch until it ends by itself, or successfully when the
/// command's deadline comes: `--timeout` on a watch is how long to watch.
pub async fn watch_until_deadline(ctx: &Ctx, watch: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    match ctx.deadline {
        None => watch.await,
        Some(deadline) => tokio::select! {
            result = watch => result,
            () = tokio::time::sleep_until(deadline) => Ok(()),
        },
    }
}

async fn dispatch(ctx: &Ctx, command: Command, saved: &SavedCredentials, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        Command::Cluster(cmd) => cluster::run(ctx, cmd, out).await,
        Command::Kv(cmd) => kv::run(ctx, cmd, out).await,
        Command::Bench(BenchCommand::Kv(args)) => bench::run(ctx, args, out).await,
        Command::Login(args) => identity::login(ctx, args, &saved.path, out).await,
        Command::Logout => identity::logout(ctx, &saved.path, saved.used, out).await,
        Command::Tenant(cmd) => identity::tenant(ctx, cmd, out).await,
        Command::User(cmd) => user::run(ctx, cmd, out).await,
        Command::Invite(cmd) => identity::invite(ctx, cmd, out).await,
        Command::Role(cmd) => identity::role(ctx, cmd, out).await,
        Command::Team(cmd) => identity::team(ctx, cmd, out).await,
        Command::ApiKey(cmd) => identity::api_key(ctx, cmd, out).await,
        Command::Session(cmd) => identity::session(ctx, cmd, out).await,
        Command::Audit(cmd) => audit::run(ctx, cmd, out).await,
        Command::Doc(cmd) => doc::run(ctx, cmd, out).await,
        Command::File(cmd) => file::run(ctx, cmd, out).await,
        Command::Storage(cmd) => file::storage(ctx, cmd, out).await,
        Command::Render(args) => render::run(ctx, args, out).await,
    }
}

/// `err` as `main` reports it, with what a person needs added: how long to
/// wait before trying again, the current revision of a failed
/// compare-and-set, the leader hint of an unavailable cluster, and
/// `caddyctl login` when a saved session is refused.
fn failure(err: &anyhow::Error, saved: &SavedCredentials) -> Failure {
    let mut failure = Failure::of(err);
    if let Some(extra) = describe(err, failure.retry_after) {
        failure.message = format!("{} ({extra})", failure.message);
    }
    if refused_saved_session(err, saved) {
        failure.message = format!(
            "{} (credential from {}; log in again with `caddyctl login`)",
            failure.message,
            saved.path.display()
        );
    }
    failure
}

/// Where the request's credential came from.
struct SavedCredentials {
    /// The credentials file (`--credentials`, or the default one).
    path: PathBuf,
    /// Its credential is the one sent.
    used: bool,
}

/// Applies the credentials file and the tenant flags to `config`:
///
/// - The file is `--credentials`/`CADDY_CREDENTIALS`, else `credentials` in
///   the config file's directory. When it exists (or was named explicitly,
///   in which case it must exist) its `credential` replaces the config
///   file's, and its `tenant`, when it has one, replaces the config file's.
/// - `--tenant`/`CADDY_TENANT`, and the ID argument of `tenant` subcommands
///   (which wins), override any tenant from the files.
/// - `login`, `invite accept` and `file download --link` go without a
///   credential (the password, the invitation token or the share link
///   token is the proof); `invite accept` also without a tenant (the token
///   names it). A stale or unreadable file does not stop them.
fn apply_credentials(cli: &Cli, config: &mut ClientConfig) -> anyhow::Result<SavedCredentials> {
    let path = cli.credentials_path();
    let anonymous = cli.command.anonymous();
    let saved = if path.exists() {
        match Credentials::read(&path) {
            Ok(saved) => Some(saved),
            Err(_) if anonymous => None,
            Err(e) => return Err(e),
        }
    } else if cli.credentials.is_some() && !anonymous && !matches!(cli.command, Command::Logout) {
        bail!(
            "credentials file {} does not exist: log in with `caddyctl login`, or drop --credentials/CADDY_CREDENTIALS",
            path.display()
        );
    } else {
        None
    };
    let used = saved.is_some() && !anonymous;
    if let Some(saved) = saved {
        config.credential = saved.credential;
        if saved.tenant.is_some() {
            config.tenant = saved.tenant;
        }
    }
    if let Some(tenant) = cli.tenant_override() {
        config.tenant = Some(tenant);
    }
    if anonymous {
        config.credential.clear();
    }
    if matches!(cli.command, Command::Invite(crate::cli::InviteCommand::Accept { .. })) {
        config.tenant = None;
    }
    Ok(SavedCredentials { path, used })
}

/// Whether a saved session (the credentials file) was refused.
fn refused_saved_session(err: &anyhow::Error, saved: &SavedCredentials) -> bool {
    saved.used && client_error(err).is_some_and(|e| e.code() == ErrorCode::Unauthenticated)
}

fn client_error(err: &anyhow::Error) -> Option<&ClientError> {
    err.chain().find_map(|e| e.downcast_ref::<ClientError>())
}

/// What a person needs beyond an SDK error's message: how long the server
/// asked to wait before trying again (`retry_after`, which the failure
/// found), else the current revision of a failed compare-and-set or the
/// leader hint of an unavailable cluster.
fn describe(err: &anyhow::Error, retry_after: Option<Duration>) -> Option<String> {
    if let Some(wait) = retry_after {
        return Some(format!("retry after {}", human_duration(wait)));
    }
    let err = client_error(err)?;
    match (err.current_revision(), err.leader_hint()) {
        (Some(rev), _) if !err.to_string().contains(&rev.to_string()) => Some(format!("current revision {rev}")),
        (_, Some(hint)) => Some(format!("leader hint {hint}")),
        _ => None,
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

    #[test]
    fn describe_adds_revision_and_hint() {
        let unused = SavedCredentials { path: PathBuf::from("/c/credentials"), used: false };
        let cas = ClientError::Server {
            code: ErrorCode::FailedPrecondition,
            message: "revision mismatch".into(),
            current_revision: Some(42),
            leader_hint: None,
            retry_after: None,
        };
        let cas = failure(&cas.into(), &unused);
        assert_eq!(cas.message, "failed_precondition: revision mismatch (current revision 42)");
        assert_eq!(cas.current_revision, Some(42));
        let unavailable = ClientError::Server {
            code: ErrorCode::Unavailable,
            message: "not the leader".into(),
            current_revision: None,
            leader_hint: Some("10.0.0.2:7101".into()),
            retry_after: None,
        };
        let unavailable = failure(&unavailable.into(), &unused);
        assert_eq!(unavailable.message, "unavailable: not the leader (leader hint 10.0.0.2:7101)");
        let throttled = ClientError::Server {
            code: ErrorCode::ResourceExhausted,
            message: "too many failed logins for a@x.io in tenant acme; wait before trying again".into(),
            current_revision: None,
            leader_hint: None,
            retry_after: Some(std::time::Duration::from_millis(2450)),
        };
        let throttled = failure(&throttled.into(), &unused);
        assert_eq!(
            throttled.message,
            "resource_exhausted: too many failed logins for a@x.io in tenant acme; wait before trying again \
             (retry after 2.5s)"
        );
        assert_eq!(throttled.retry_after, Some(std::time::Duration::from_millis(2450)));
        // Also when the CLI tells the SDK error in its own words.
        let import = crate::failure::CliError::client(
            &ClientError::Server {
                code: ErrorCode::ResourceExhausted,
                message: "busy checking passwords".into(),
                current_revision: None,
                leader_hint: None,
                retry_after: Some(std::time::Duration::from_millis(300)),
            },
            "import stopped at line 3",
        );
        assert_eq!(failure(&import.into(), &unused).message, "import stopped at line 3 (retry after 300ms)");
        assert_eq!(failure(&anyhow::anyhow!("key not found: k"), &unused).message, "key not found: k");
    }

    fn config() -> ClientConfig {
        let mut config = ClientConfig::new(vec!["127.0.0.1:7101".into()], "PEM", "caddy_admin_x");
        config.tenant = Some("from-config".into());
        config
    }

    fn cli(args: &[&str]) -> Cli {
        use clap::Parser;
        match Cli::try_parse_from(std::iter::once("caddyctl").chain(args.iter().copied())) {
            Ok(cli) => cli,
            Err(e) => panic!("{e}"),
        }
    }

    fn resolve(args: &[&str]) -> anyhow::Result<(ClientConfig, SavedCredentials)> {
        let mut config = config();
        let saved = apply_credentials(&cli(args), &mut config)?;
        Ok((config, saved))
    }

    #[test]
    fn credentials_file_resolution() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let client_toml = dir.path().join("client.toml");
        let conf = client_toml.to_str().unwrap_or_default();
        let default = dir.path().join("credentials");

        // No file: the config file's credential and tenant.
        let (c, saved) = resolve(&["--config", conf, "user", "list"])?;
        assert_eq!((c.credential.as_str(), c.tenant.as_deref()), ("caddy_admin_x", Some("from-config")));
        assert!(!saved.used);
        assert_eq!(saved.path, default);
        let (c, _) = resolve(&["--config", conf, "--tenant", "flag", "user", "list"])?;
        assert_eq!(c.tenant.as_deref(), Some("flag"));

        // The default file replaces both; --tenant and a positional tenant still win.
        Credentials { credential: "cs_saved".into(), tenant: Some("acme".into()) }.write(&default)?;
        let (c, saved) = resolve(&["--config", conf, "user", "list"])?;
        assert_eq!((c.credential.as_str(), c.tenant.as_deref()), ("cs_saved", Some("acme")));
        assert!(saved.used);
        let (c, _) = resolve(&["--config", conf, "--tenant", "flag", "user", "list"])?;
        assert_eq!((c.credential.as_str(), c.tenant.as_deref()), ("cs_saved", Some("flag")));
        let (c, _) = resolve(&["--config", conf, "--tenant", "flag", "tenant", "get", "pos"])?;
        assert_eq!(c.tenant.as_deref(), Some("pos"));

        // Login goes without a credential but keeps the saved tenant; invite
        // accept goes without either.
        let (c, saved) = resolve(&["--config", conf, "login", "--email", "a@x.io"])?;
        assert_eq!((c.credential.as_str(), c.tenant.as_deref()), ("", Some("acme")));
        assert!(!saved.used);
        let (c, _) = resolve(&["--config", conf, "invite", "accept", "ci_t", "--name", "N"])?;
        assert_eq!((c.credential.as_str(), c.tenant), ("", None));

        // A file without a tenant keeps the config file's tenant.
        let explicit = dir.path().join("key");
        Credentials { credential: "ck_key".into(), tenant: None }.write(&explicit)?;
        let named = explicit.to_str().unwrap_or_default();
        let (c, saved) = resolve(&["--config", conf, "--credentials", named, "kv", "get", "k"])?;
        assert_eq!((c.credential.as_str(), c.tenant.as_deref()), ("ck_key", Some("from-config")));
        assert_eq!(saved.path, explicit);

        // A named file must exist, except to log in (or out, which says so itself).
        let missing = dir.path().join("missing");
        let missing = missing.to_str().unwrap_or_default();
        let err = resolve(&["--config", conf, "--credentials", missing, "user", "list"]).err().map(|e| e.to_string());
        assert!(err.as_deref().is_some_and(|e| e.contains("does not exist") && e.contains(missing)), "{err:?}");
        assert!(resolve(&["--config", conf, "--credentials", missing, "login", "--email", "a@x.io"]).is_ok());
        assert!(resolve(&["--config", conf, "--credentials", missing, "logout"]).is_ok());

        // A broken file stops everything but login.
        std::fs::write(&default, "garbage")?;
        assert!(resolve(&["--config", conf, "user", "list"]).is_err());
        let (c, _) = resolve(&["--config", conf, "login", "--email", "a@x.io"])?;
        assert_eq!(c.tenant.as_deref(), Some("from-config"));
        Ok(())
    }

    #[test]
    fn refused_saved_sessions_point_at_login() {
        let refused = || {
            anyhow::Error::from(ClientError::Server {
                code: ErrorCode::Unauthenticated,
                message: "session expired".into(),
                current_revision: None,
                leader_hint: None,
                retry_after: None,
            })
        };
        let saved = SavedCredentials { path: PathBuf::from("/c/credentials"), used: true };
        assert_eq!(
            failure(&refused(), &saved).message,
            "unauthenticated: session expired (credential from /c/credentials; log in again with `caddyctl login`)"
        );
        let unused = SavedCredentials { used: false, ..saved };
        assert_eq!(failure(&refused(), &unused).message, "unauthenticated: session expired");
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
        assert!(err.message.contains("/nonexistent/client.toml"), "{}", err.message);
        assert_eq!(err.exit_code(), 1);
        assert!(out.is_empty());
    }
}
