//! Identity commands that are one call and one answer: login and logout,
//! tenants, invitations, roles, teams, API keys and sessions; plus the
//! rendering every identity command shares.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use caddy_client::identity::{IdentityAnswer, IdentityCall, QuotasPatch};
use caddy_client::{ClientError, ErrorCode};
use caddy_core::identity::Quotas;
use serde_json::{Value, json};

use super::{Ctx, emit_json, emit_text};
use crate::cli::{
    ApiKeyCommand, InviteCommand, LoginArgs, QuotaArgs, RoleCommand, SessionCommand, TeamCommand, TenantCommand,
};
use crate::credentials::{Credentials, require_password, with_process_password};
use crate::failure::usage;
use crate::output::datetime;
use crate::views;

/// An answer of a kind the command did not expect.
pub fn unexpected(expected: &str, got: &IdentityAnswer) -> anyhow::Error {
    let kind = answer_json(got).ok().and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_owned));
    anyhow::anyhow!("unexpected answer from the server: {} instead of {expected}", kind.as_deref().unwrap_or("?"))
}

/// An answer as JSON: its serde form, minus any session token.
pub fn answer_json(answer: &IdentityAnswer) -> anyhow::Result<Value> {
    let mut value = serde_json::to_value(answer).context("encoding JSON")?;
    if let (IdentityAnswer::Session { .. }, Some(map)) = (answer, value.as_object_mut()) {
        map.remove("token");
    }
    Ok(value)
}

/// An answer for people. Invitation tokens and API key secrets appear (they
/// are shown once, by the command that creates them); session tokens never.
pub fn answer_text(answer: &IdentityAnswer) -> String {
    match answer {
        IdentityAnswer::Done { message } => format!("{message}\n"),
        IdentityAnswer::Created { id } => format!("created {id}\n"),
        IdentityAnswer::Tenant { tenant } => views::tenant_text(tenant),
        IdentityAnswer::Tenants { tenants, .. } => views::tenants_table(tenants),
        IdentityAnswer::User { user } => views::user_text(user),
        IdentityAnswer::Users { users, .. } => views::users_table(users),
        IdentityAnswer::Imported { created } => format!("created {} users\n", created.len()),
        IdentityAnswer::Session { tenant, session, .. } => format!(
            "session {} of {} in tenant {tenant} (expires {} UTC)\n",
            session.id,
            session.user,
            datetime(session.expires_ms)
        ),
        IdentityAnswer::Invitation { id, token, expires_ms } => format!(
            "created invitation {id} (expires {} UTC)\ntoken: {token}\n\
             the token is shown only once: send it to the invitee, who runs \
             `caddyctl invite accept TOKEN --name NAME --password-stdin`\n",
            datetime(*expires_ms)
        ),
        IdentityAnswer::ApiKey { key, secret } => {
            format!("{}key:     {secret}\nstore the key now: it cannot be shown again\n", views::key_text(key))
        }
        IdentityAnswer::Roles { roles } => views::roles_table(roles),
        IdentityAnswer::Teams { teams } => views::teams_table(teams),
        IdentityAnswer::ApiKeys { keys } => views::keys_table(keys),
        IdentityAnswer::Sessions { sessions } => views::sessions_table(sessions),
        IdentityAnswer::Audit { entries, .. } => views::audit_table(entries),
        IdentityAnswer::Verified { entries, head_seq, broken, checkpoint, after_seq, last_seq, .. } => {
            match (broken, checkpoint) {
                (Some(b), _) => format!("audit chain BROKEN at seq {}: {}\n", b.seq, b.reason),
                (None, None) => format!("audit chain verified: {entries} entries, head seq {head_seq}\n"),
                (None, Some(c)) => {
                    let what = if *entries == 0 {
                        "no entries".to_owned()
                    } else {
                        format!("entries {}..={last_seq}", after_seq.saturating_add(1))
                    };
                    format!(
                        "audit chain verified: {what} from checkpoint at {after_seq} {}, head seq {head_seq}\n\
                         (the entries up to the checkpoint were pruned, latest at {} UTC)\n",
                        c.hash,
                        datetime(c.pruned_at_ms)
                    )
                }
            }
        }
        IdentityAnswer::AuditRetention { tenant, own, default, checkpoint, head_seq, kept } => {
            views::retention_text(tenant.as_deref(), own, default.as_ref(), checkpoint.as_ref(), *head_seq, *kept)
        }
        IdentityAnswer::Usage { tenant, usage, quotas } => {
            format!("tenant {tenant}\n{}", views::usage_text(usage, quotas))
        }
        IdentityAnswer::UserData { data } => format!("{}\n", views::export_summary(data)),
    }
}

/// Prints an answer (JSON with `--json`), and a hint on stderr when a
/// list has more entries than it shows.
pub fn show(ctx: &Ctx, out: &mut dyn Write, answer: &IdentityAnswer) -> anyhow::Result<()> {
    if ctx.json {
        return emit_json(out, &answer_json(answer)?);
    }
    emit_text(out, &answer_text(answer))?;
    match answer {
        IdentityAnswer::Tenants { tenants, more: true } => {
            let last = tenants.last().map_or("", |t| t.id.as_str());
            eprintln!("(more tenants: use --start-after {last} or a larger --limit)");
        }
        IdentityAnswer::Users { more: true, .. } => eprintln!("(more users: use --all or a larger --limit)"),
        IdentityAnswer::Audit { entries, more: true, next_after_seq } => {
            let next = next_after_seq.or_else(|| entries.last().map(|e| e.seq)).unwrap_or(0);
            eprintln!("(more entries: use --after-seq {next} or a larger --limit)");
        }
        _ => {}
    }
    Ok(())
}

/// Sends one call and prints its answer.
pub async fn call_and_show(ctx: &Ctx, out: &mut dyn Write, call: IdentityCall) -> anyhow::Result<()> {
    let answer = ctx.client.identity(&call).await?;
    show(ctx, out, &answer)
}

/// A duration flag in whole seconds; `None` when absent.
pub fn seconds(flag: &str, value: Option<Duration>) -> anyhow::Result<Option<u64>> {
    match value {
        Some(d) if d.as_secs() == 0 => Err(usage(format!("{flag} must be at least 1s"))),
        Some(d) => Ok(Some(d.as_secs())),
        None => Ok(None),
    }
}

/// The name of the tenant the client is configured for, or a hint.
fn configured_tenant(ctx: &Ctx, what: &str) -> anyhow::Result<String> {
    match ctx.client.config().tenant.clone() {
        Some(t) => Ok(t),
        None => {
            let id = if what.starts_with("tenant ") { "its ID or " } else { "" };
            Err(usage(format!(
                "{what} needs a tenant: pass {id}--tenant (or set CADDY_TENANT, or `tenant` in the config file)"
            )))
        }
    }
}

/// `caddyctl login`: writes the credentials file with the new session.
pub async fn login(ctx: &Ctx, args: LoginArgs, path: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    configured_tenant(ctx, "login")?;
    let ttl_seconds = seconds("--ttl", args.ttl)?;
    let password = with_process_password(args.password_stdin, require_password)?;
    let call = IdentityCall::Login { email: args.email.clone(), password, ttl_seconds };
    let answer = ctx.client.identity(&call).await?;
    let IdentityAnswer::Session { tenant, token, session } = answer else {
        return Err(unexpected("session", &answer));
    };
    Credentials { credential: token, tenant: Some(tenant.clone()) }.write(path)?;
    if ctx.json {
        emit_json(
            out,
            &json!({
                "tenant": tenant,
                "email": args.email,
                "session": serde_json::to_value(&session).context("encoding JSON")?,
                "credentials": path.display().to_string(),
            }),
        )
    } else {
        emit_text(
            out,
            &format!(
                "logged in to tenant {tenant} as {} (session {}, expires {} UTC); credentials saved to {}\n",
                args.email,
                session.id,
                datetime(session.expires_ms),
                path.display()
            ),
        )
    }
}

/// `caddyctl logout`: ends the saved session and removes the file. A
/// session the server no longer knows (expired, terminated) still has its
/// file removed.
pub async fn logout(ctx: &Ctx, path: &Path, logged_in: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if !logged_in {
        bail!("not logged in: no credentials file at {}", path.display());
    }
    let message = match ctx.client.identity(&IdentityCall::Logout).await {
        Ok(_) => "logged out",
        Err(ClientError::Server { code: ErrorCode::Unauthenticated, .. }) => "the session had already ended",
        Err(e) => return Err(e.into()),
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    if ctx.json {
        emit_json(out, &json!({ "message": message, "removed": path.display().to_string() }))
    } else {
        emit_text(out, &format!("{message}; removed {}\n", path.display()))
    }
}

impl QuotaArgs {
    /// The flags as a patch (`None` where no flag was given).
    pub fn patch(&self) -> QuotasPatch {
        QuotasPatch {
            max_users: self.max_users,
            max_storage_bytes: self.max_storage_bytes,
            max_documents: self.max_documents,
            max_api_keys: self.max_api_keys,
            max_requests_per_second: self.max_rps,
        }
    }

    /// Whether any flag was given.
    pub fn any(&self) -> bool {
        self.patch() != QuotasPatch::default()
    }
}

/// Runs one tenant command (the tenant is already in the client's config).
pub async fn tenant(ctx: &Ctx, cmd: TenantCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let call = match cmd {
        TenantCommand::Create { id, name, plan, quotas } => IdentityCall::TenantCreate {
            id,
            name,
            plan: plan.unwrap_or_default(),
            quotas: quotas.any().then(|| quotas.patch().apply(Quotas::default())),
        },
        TenantCommand::List { start_after, limit } => IdentityCall::TenantList { start_after, limit },
        TenantCommand::Get { .. } => {
            configured_tenant(ctx, "tenant get")?;
            IdentityCall::TenantGet
        }
        TenantCommand::Update { name, plan, quotas, .. } => {
            configured_tenant(ctx, "tenant update")?;
            if name.is_none() && plan.is_none() && !quotas.any() {
                return Err(usage("nothing to change: pass --name, --plan or a quota flag (--max-users, ...)"));
            }
            IdentityCall::TenantUpdate { name, plan, quotas: quotas.patch() }
        }
        TenantCommand::Suspend { .. } => {
            configured_tenant(ctx, "tenant suspend")?;
            IdentityCall::TenantSuspend
        }
        TenantCommand::Resume { .. } => {
            configured_tenant(ctx, "tenant resume")?;
            IdentityCall::TenantResume
        }
        TenantCommand::Delete { confirm, .. } => {
            let tenant = configured_tenant(ctx, "tenant delete")?;
            if confirm != tenant {
                return Err(usage(format!("--confirm {confirm} does not match the tenant to delete ({tenant})")));
            }
            IdentityCall::TenantDelete { confirm }
        }
        TenantCommand::Usage { .. } => {
            configured_tenant(ctx, "tenant usage")?;
            IdentityCall::TenantUsage
        }
    };
    call_and_show(ctx, out, call).await
}

/// Runs one invitation command.
pub async fn invite(ctx: &Ctx, cmd: InviteCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let call = match cmd {
        InviteCommand::Create { email, roles, ttl } => {
            IdentityCall::InviteCreate { email, roles, ttl_seconds: seconds("--ttl", ttl)? }
        }
        InviteCommand::Accept { token, name, password_stdin } => {
            let password = with_process_password(password_stdin, require_password)?;
            IdentityCall::InviteAccept { token, display_name: name, password }
        }
    };
    call_and_show(ctx, out, call).await
}

/// Runs one role command.
pub async fn role(ctx: &Ctx, cmd: RoleCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let call = match cmd {
        RoleCommand::Create { name, permissions, inherits, description } => {
            IdentityCall::RoleCreate { name, description, permissions, inherits }
        }
        RoleCommand::List => IdentityCall::RoleList,
        RoleCommand::Delete { name } => IdentityCall::RoleDelete { name },
        RoleCommand::Grant { role, target } => IdentityCall::RoleGrant { role, user: target.user, team: target.team },
        RoleCommand::Revoke { role, target } => IdentityCall::RoleRevoke { role, user: target.user, team: target.team },
    };
    call_and_show(ctx, out, call).await
}

/// Runs one team command.
pub async fn team(ctx: &Ctx, cmd: TeamCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let call = match cmd {
        TeamCommand::Create { name } => IdentityCall::TeamCreate { name },
        TeamCommand::List => IdentityCall::TeamList,
        TeamCommand::Delete { team } => IdentityCall::TeamDelete { team },
        TeamCommand::Add { team, member } => IdentityCall::TeamAdd { team, user: member.user, subteam: member.subteam },
        TeamCommand::Remove { team, member } => {
            IdentityCall::TeamRemove { team, user: member.user, subteam: member.subteam }
        }
    };
    call_and_show(ctx, out, call).await
}

/// Runs one API key command.
pub async fn api_key(ctx: &Ctx, cmd: ApiKeyCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let call = match cmd {
        ApiKeyCommand::Create { name, scopes, ttl } => {
            IdentityCall::ApiKeyCreate { name, scopes, ttl_seconds: seconds("--ttl", ttl)? }
        }
        ApiKeyCommand::List => IdentityCall::ApiKeyList,
        ApiKeyCommand::Revoke { key } => IdentityCall::ApiKeyRevoke { key },
        ApiKeyCommand::Rotate { key, grace } => {
            IdentityCall::ApiKeyRotate { key, grace_seconds: grace.map(|d| d.as_secs()) }
        }
    };
    call_and_show(ctx, out, call).await
}

/// Runs one session command.
pub async fn session(ctx: &Ctx, cmd: SessionCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let call = match cmd {
        SessionCommand::List { user } => IdentityCall::SessionList { user },
        SessionCommand::Terminate { session, user, .. } => IdentityCall::SessionTerminate { session, user },
    };
    call_and_show(ctx, out, call).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use caddy_client::identity::SessionView;

    #[test]
    fn session_tokens_never_leave_in_json_or_text() {
        let answer = IdentityAnswer::Session {
            tenant: "acme".into(),
            token: "cs_topsecret".into(),
            session: SessionView {
                id: "session-4".into(),
                user: "user-1".into(),
                created_ms: 0,
                expires_ms: 3_600_000,
                terminated_ms: None,
                state: "active".into(),
            },
        };
        let json = answer_json(&answer).unwrap();
        assert_eq!(json["kind"], "session");
        assert_eq!(json["session"]["id"], "session-4");
        assert!(!json.to_string().contains("cs_topsecret"));
        let text = answer_text(&answer);
        assert!(!text.contains("cs_topsecret"), "{text}");
        assert!(text.contains("session-4") && text.contains("1970-01-01 01:00:00"), "{text}");
    }

    #[test]
    fn plain_answers() {
        assert_eq!(answer_text(&IdentityAnswer::Created { id: "user-3".into() }), "created user-3\n");
        assert_eq!(answer_text(&IdentityAnswer::Done { message: "role.grant: done".into() }), "role.grant: done\n");
        let invitation = IdentityAnswer::Invitation { id: "invite-2".into(), token: "ci_x".into(), expires_ms: 0 };
        let text = answer_text(&invitation);
        assert!(text.contains("token: ci_x\n") && text.contains("only once"), "{text}");
        let verified = IdentityAnswer::Verified {
            tenant: None,
            entries: 12,
            head_seq: 12,
            broken: None,
            checkpoint: None,
            after_seq: 0,
            last_seq: 12,
            last_hash: String::new(),
            more: false,
        };
        assert_eq!(answer_text(&verified), "audit chain verified: 12 entries, head seq 12\n");
        let retention = IdentityAnswer::AuditRetention {
            tenant: Some("acme".into()),
            own: caddy_core::identity::RetentionOverride { max_age_ms: None, max_entries: Some(500) },
            default: Some(caddy_core::identity::AuditRetention::DEFAULT),
            checkpoint: None,
            head_seq: 700,
            kept: 500,
        };
        assert_eq!(
            answer_text(&retention),
            "audit retention of tenant acme\n  own:     default age, 500 entries\n  \
             default: 365 days and at most 10000 entries\n  kept:    500 entries, head seq 700\n  \
             pruned:  nothing pruned yet\n"
        );
        let err = unexpected("session", &IdentityAnswer::Done { message: String::new() });
        assert_eq!(err.to_string(), "unexpected answer from the server: done instead of session");
        assert_eq!(seconds("--ttl", Some(Duration::from_secs(90))).unwrap(), Some(90));
        assert!(seconds("--ttl", Some(Duration::from_millis(500))).is_err());
        assert_eq!(seconds("--ttl", None).unwrap(), None);
    }
}
