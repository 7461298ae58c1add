//! `caddyctl user ...`: single-user calls, paged listing with CSV and JSON
//! export, GDPR export and erasure, and batched CSV import.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context as _, bail};
use caddy_client::identity::{DEFAULT_PAGE, IdentityAnswer, IdentityCall, MAX_IMPORT_BATCH, MAX_PAGE, UserView};
use caddy_client::{ClientError, Outcome};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::identity::{answer_json, call_and_show, show, unexpected};
use super::{Ctx, emit_json, emit_text};
use crate::cli::{ListFormat, UserCommand};
use crate::credentials::{require_password, with_process_password, write_private};
use crate::csv::{self, ImportRow};
use crate::failure::{CliError, usage};
use crate::views;

/// Runs one user command.
pub async fn run(ctx: &Ctx, cmd: UserCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let call = match cmd {
        UserCommand::Create { email, name, password_stdin, roles } => {
            // No password: the account cannot log in until one is set.
            let password = if password_stdin { with_process_password(true, require_password)? } else { String::new() };
            IdentityCall::UserCreate { email, display_name: name, password, roles }
        }
        UserCommand::List { search, start_after, limit, all, format } => {
            return list(ctx, out, ListArgs { search, start_after, limit, all, format }).await;
        }
        UserCommand::Get { user } => IdentityCall::UserGet { user },
        UserCommand::Update { user, email, name, password_stdin } => {
            let password = if password_stdin { Some(with_process_password(true, require_password)?) } else { None };
            if email.is_none() && name.is_none() && password.is_none() {
                return Err(usage("nothing to change: pass --email, --name or --password-stdin"));
            }
            IdentityCall::UserUpdate { user, email, display_name: name, password }
        }
        UserCommand::Disable { user } => IdentityCall::UserSetDisabled { user, disabled: true },
        UserCommand::Enable { user } => IdentityCall::UserSetDisabled { user, disabled: false },
        UserCommand::Delete { user } => IdentityCall::UserDelete { user },
        UserCommand::Export { user, output } => return export(ctx, out, &user, output.as_deref()).await,
        UserCommand::Erase { user, yes } => {
            if !yes {
                return Err(usage(format!(
                    "erasing {user} removes their personal data for good; repeat with --yes to confirm"
                )));
            }
            IdentityCall::UserErase { user }
        }
        UserCommand::Import { file } => return import(ctx, out, &file).await,
    };
    call_and_show(ctx, out, call).await
}

/// Options of `user list`.
struct ListArgs {
    search: String,
    start_after: String,
    limit: Option<u32>,
    all: bool,
    format: ListFormat,
}

/// Lists users, paging through everything with `--all`.
async fn list(ctx: &Ctx, out: &mut dyn Write, args: ListArgs) -> anyhow::Result<()> {
    let format = match (ctx.json, args.format) {
        (true, ListFormat::Csv) => return Err(usage("--json and --format csv contradict each other")),
        (true, _) => ListFormat::Json,
        (false, format) => format,
    };
    let limit = args.limit.unwrap_or(if args.all { MAX_PAGE } else { DEFAULT_PAGE });
    let mut users: Vec<UserView> = Vec::new();
    let mut start_after = args.start_after;
    let more = loop {
        let call = IdentityCall::UserList { search: args.search.clone(), start_after: start_after.clone(), limit };
        let answer = ctx.client.identity(&call).await?;
        let IdentityAnswer::Users { users: page, more } = answer else {
            return Err(unexpected("users", &answer));
        };
        let last = page.last().map(|u| u.id.clone());
        users.extend(page);
        match last {
            Some(last) if args.all && more => start_after = last,
            _ => break more,
        }
    };
    let answer = IdentityAnswer::Users { users, more };
    match format {
        ListFormat::Json => emit_json(out, &answer_json(&answer)?),
        ListFormat::Table => show(ctx, out, &answer),
        ListFormat::Csv => {
            let IdentityAnswer::Users { users, more } = &answer else { return Ok(()) };
            emit_text(out, &csv::users_csv(users))?;
            if *more {
                eprintln!("(more users: use --all to export every user)");
            }
            Ok(())
        }
    }
}

/// GDPR export: pretty JSON on stdout, or in a 0600 file.
async fn export(ctx: &Ctx, out: &mut dyn Write, user: &str, output: Option<&Path>) -> anyhow::Result<()> {
    let answer = ctx.client.identity(&IdentityCall::UserExport { user: user.to_string() }).await?;
    let IdentityAnswer::UserData { data } = answer else {
        return Err(unexpected("user data", &answer));
    };
    let mut text = serde_json::to_string_pretty(&data).context("encoding JSON")?;
    text.push('\n');
    let Some(path) = output else { return emit_text(out, &text) };
    write_private(path, text.as_bytes())?;
    if ctx.json {
        emit_json(out, &json!({ "user": data.user.id, "path": path.display().to_string(), "bytes": text.len() }))
    } else {
        emit_text(out, &format!("wrote the data of {} to {}\n", views::export_summary(&data), path.display()))
    }
}

/// The line of the user a server error names (`user #K: ...`, 1-based within
/// the batch).
fn failing_line(batch: &[ImportRow], message: &str) -> Option<usize> {
    let rest = message.strip_prefix("user #")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let k: usize = digits.parse().ok()?;
    batch.get(k.checked_sub(1)?).map(|r| r.line)
}

/// Why a batch failed, for the one error line.
fn batch_error(batch: &[ImportRow], created: usize, err: &ClientError) -> String {
    let (first, last) = (batch.first().map_or(0, |r| r.line), batch.last().map_or(0, |r| r.line));
    let (outcome, detail) = match err {
        ClientError::Server { code, message, .. } if !code.is_retryable() => {
            let at = failing_line(batch, message).map(|l| format!(" (line {l})")).unwrap_or_default();
            ("none of its users were created", format!("{}{at}: {message}", code.as_str()))
        }
        other if other.outcome() == Outcome::NotApplied => ("none of its users were created", other.to_string()),
        other => ("its outcome is unknown: check with `caddyctl user list`", other.to_string()),
    };
    format!(
        "import stopped at the batch on lines {first}-{last} ({outcome}): {detail}; {created} users created before it"
    )
}

fn progress_bar(total: usize, batches: usize, json: bool) -> ProgressBar {
    if json || batches <= 1 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} users") {
        bar.set_style(style);
    }
    bar
}

/// Creates the users of a CSV file in batches of [`MAX_IMPORT_BATCH`] (each
/// all or nothing); stops at the first failed batch.
async fn import(ctx: &Ctx, out: &mut dyn Write, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let rows = csv::parse_import(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if rows.is_empty() {
        bail!("{}: no users to import (only a header)", file.display());
    }
    let batches = rows.len().div_ceil(MAX_IMPORT_BATCH);
    let bar = progress_bar(rows.len(), batches, ctx.json);
    let mut created: Vec<String> = Vec::with_capacity(rows.len());
    for batch in rows.chunks(MAX_IMPORT_BATCH) {
        let call = IdentityCall::UserImport { users: batch.iter().map(|r| r.user.clone()).collect() };
        match ctx.client.identity(&call).await {
            Ok(IdentityAnswer::Imported { created: ids }) => {
                created.extend(ids);
                bar.inc(batch.len() as u64);
            }
            Ok(other) => {
                bar.finish_and_clear();
                return Err(unexpected("imported", &other));
            }
            Err(err) => {
                bar.finish_and_clear();
                let message = batch_error(batch, created.len(), &err);
                return Err(CliError::client(&err, message).with("created", json!(created)).into());
            }
        }
    }
    bar.finish_and_clear();
    let was_disabled = rows.iter().filter(|r| r.was_disabled).count();
    if was_disabled > 0 {
        eprintln!(
            "note: {was_disabled} users marked disabled in the file were imported enabled; \
             disable them with `caddyctl user disable`"
        );
    }
    if ctx.json {
        emit_json(out, &json!({ "created": created, "count": created.len() }))
    } else {
        emit_text(out, &format!("created {} users from {}\n", created.len(), file.display()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use caddy_client::ErrorCode;
    use caddy_client::identity::ImportUser;

    fn row(line: usize) -> ImportRow {
        ImportRow {
            line,
            user: ImportUser {
                email: format!("u{line}@x.io"),
                display_name: "U".into(),
                roles: vec![],
                password: String::new(),
            },
            was_disabled: false,
        }
    }

    #[test]
    fn batch_errors_name_lines() {
        let batch: Vec<ImportRow> = (102..=104).map(row).collect();
        let err = ClientError::Server {
            code: ErrorCode::InvalidArgument,
            message: "user #2: invalid email".into(),
            current_revision: None,
            leader_hint: None,
            retry_after: None,
        };
        assert_eq!(
            batch_error(&batch, 100, &err),
            "import stopped at the batch on lines 102-104 (none of its users were created): \
             invalid_argument (line 103): user #2: invalid email; 100 users created before it"
        );
        let err = ClientError::OutcomeUnknown { last: Box::new(ClientError::Unavailable("timed out".into())) };
        let text = batch_error(&batch, 0, &err);
        assert!(text.contains("outcome is unknown") && text.contains("timed out"), "{text}");
        // Never sent (no node reachable): nothing was created.
        let err = ClientError::Unavailable("connecting: no handshake within 3s".into());
        let text = batch_error(&batch, 0, &err);
        assert!(text.contains("none of its users were created") && text.contains("no handshake"), "{text}");
        assert_eq!(failing_line(&batch, "user #9: x"), None);
        assert_eq!(failing_line(&batch, "user #0: x"), None);
        assert_eq!(failing_line(&batch, "quota exceeded"), None);
    }
}
