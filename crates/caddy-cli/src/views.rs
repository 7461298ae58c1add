//! Human renderings of the identity service's answers (tables and
//! `key: value` blocks). Times are UTC `YYYY-MM-DD HH:MM:SS`. Pure
//! functions; secrets never pass through here.

use caddy_client::identity::{
    ApiKeyView, AuditView, CheckpointView, RoleView, SessionView, TeamView, TenantView, UserExport, UserView,
};
use caddy_core::identity::{AuditRetention, Quotas, RetentionOverride, Usage};

use crate::output::{datetime, datetime_opt, table};

/// A list for a table cell: comma-separated, `-` when empty.
pub fn list(items: &[String]) -> String {
    if items.is_empty() { "-".into() } else { items.join(",") }
}

/// `key: value` lines with the values aligned.
pub fn block(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs.iter().map(|(key, value)| format!("{:<width$} {value}\n", format!("{key}:"))).collect()
}

/// Usage against quotas, one row per resource.
pub fn usage_text(usage: &Usage, quotas: &Quotas) -> String {
    let rows = [
        ("users", usage.users.to_string(), quotas.max_users),
        ("storage bytes", usage.storage_bytes.to_string(), quotas.max_storage_bytes),
        ("documents", usage.documents.to_string(), quotas.max_documents),
        ("api keys", usage.api_keys.to_string(), quotas.max_api_keys),
        ("requests per second", "-".to_string(), quotas.max_requests_per_second),
    ];
    let limit = |l: u64| if l == u64::MAX { "unlimited".to_string() } else { l.to_string() };
    let rows: Vec<Vec<String>> =
        rows.into_iter().map(|(name, used, max)| vec![name.to_string(), used, limit(max)]).collect();
    table(&["RESOURCE", "USED", "LIMIT"], &rows)
}

/// One tenant in detail.
pub fn tenant_text(t: &TenantView) -> String {
    let mut out = block(&[
        ("id", t.id.clone()),
        ("name", t.name.clone()),
        ("plan", t.plan.clone()),
        ("status", t.status.clone()),
        ("created", datetime(t.created_ms)),
        ("updated", datetime(t.updated_ms)),
    ]);
    out.push('\n');
    out.push_str(&usage_text(&t.usage, &t.quotas));
    out
}

/// Tenants as a table.
pub fn tenants_table(tenants: &[TenantView]) -> String {
    let rows: Vec<Vec<String>> = tenants
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                t.plan.clone(),
                t.status.clone(),
                format!("{}/{}", t.usage.users, t.quotas.max_users),
                datetime(t.created_ms),
            ]
        })
        .collect();
    table(&["ID", "NAME", "PLAN", "STATUS", "USERS", "CREATED"], &rows)
}

fn user_state(u: &UserView) -> &'static str {
    if u.disabled { "disabled" } else { "active" }
}

/// One user in detail.
pub fn user_text(u: &UserView) -> String {
    block(&[
        ("id", u.id.clone()),
        ("email", u.email.clone()),
        ("name", u.display_name.clone()),
        ("state", user_state(u).to_string()),
        ("roles", list(&u.roles)),
        ("teams", list(&u.teams)),
        ("password", if u.has_password { "set" } else { "none" }.to_string()),
        ("created", datetime(u.created_ms)),
        ("updated", datetime(u.updated_ms)),
    ])
}

/// Users as a table.
pub fn users_table(users: &[UserView]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.id.clone(),
                u.email.clone(),
                u.display_name.clone(),
                user_state(u).to_string(),
                list(&u.roles),
                list(&u.teams),
                datetime(u.created_ms),
            ]
        })
        .collect();
    table(&["ID", "EMAIL", "NAME", "STATE", "ROLES", "TEAMS", "CREATED"], &rows)
}

/// Roles as a table.
pub fn roles_table(roles: &[RoleView]) -> String {
    let rows: Vec<Vec<String>> = roles
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                if r.builtin { "builtin" } else { "custom" }.to_string(),
                list(&r.permissions),
                list(&r.inherits),
                r.description.clone(),
            ]
        })
        .collect();
    table(&["NAME", "KIND", "PERMISSIONS", "INHERITS", "DESCRIPTION"], &rows)
}

/// Teams as a table.
pub fn teams_table(teams: &[TeamView]) -> String {
    let rows: Vec<Vec<String>> = teams
        .iter()
        .map(|t| vec![t.id.clone(), t.name.clone(), list(&t.members), list(&t.roles), datetime(t.created_ms)])
        .collect();
    table(&["ID", "NAME", "MEMBERS", "ROLES", "CREATED"], &rows)
}

/// API keys as a table (never their secrets).
pub fn keys_table(keys: &[ApiKeyView]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                k.prefix.clone(),
                k.state.clone(),
                list(&k.scopes),
                datetime(k.created_ms),
                datetime_opt(k.expires_ms),
                datetime_opt(k.last_used_ms),
            ]
        })
        .collect();
    table(&["ID", "NAME", "PREFIX", "STATE", "SCOPES", "CREATED", "EXPIRES", "LAST USED"], &rows)
}

/// One API key in detail (never its secret).
pub fn key_text(k: &ApiKeyView) -> String {
    block(&[
        ("id", k.id.clone()),
        ("name", k.name.clone()),
        ("prefix", k.prefix.clone()),
        ("scopes", list(&k.scopes)),
        ("state", k.state.clone()),
        ("expires", k.expires_ms.map_or_else(|| "never".to_string(), datetime)),
    ])
}

/// Sessions as a table (never their tokens).
pub fn sessions_table(sessions: &[SessionView]) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.user.clone(),
                s.state.clone(),
                datetime(s.created_ms),
                datetime(s.expires_ms),
                datetime_opt(s.terminated_ms),
            ]
        })
        .collect();
    table(&["ID", "USER", "STATE", "CREATED", "EXPIRES", "TERMINATED"], &rows)
}

/// Audit entries as a table.
pub fn audit_table(entries: &[AuditView]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                datetime(e.stamp_ms),
                e.actor.clone(),
                e.action.clone(),
                e.resource.clone(),
                e.outcome.clone(),
            ]
        })
        .collect();
    table(&["SEQ", "TIME", "ACTOR", "ACTION", "RESOURCE", "OUTCOME"], &rows)
}

/// A chain's retention, checkpoint and size.
pub fn retention_text(
    tenant: Option<&str>,
    own: &RetentionOverride,
    default: Option<&AuditRetention>,
    checkpoint: Option<&CheckpointView>,
    head_seq: u64,
    kept: u64,
) -> String {
    let chain = tenant.map_or_else(|| "cluster chain".to_owned(), |t| format!("tenant {t}"));
    let default = default.map_or_else(|| "not yet known (no sweep has run)".to_owned(), |d| d.to_string());
    let own = if own.is_empty() { "none (the cluster default applies)".to_owned() } else { own.to_string() };
    let pruned = match checkpoint {
        None => "nothing pruned yet".to_owned(),
        Some(c) => format!("up to seq {} (hash {}), latest at {} UTC", c.seq, c.hash, datetime(c.pruned_at_ms)),
    };
    format!(
        "audit retention of {chain}\n  own:     {own}\n  default: {default}\n  kept:    {kept} entries, head seq {head_seq}\n  pruned:  {pruned}\n"
    )
}

/// A short summary of a GDPR export (the full document is JSON).
pub fn export_summary(e: &UserExport) -> String {
    format!(
        "{} ({}) of tenant {}: {} sessions, {} API keys created, {} audit entries{}",
        e.user.id,
        e.user.email,
        e.tenant,
        e.sessions.len(),
        e.api_keys_created.len(),
        e.audit.len(),
        if e.audit_truncated { " (truncated)" } else { "" }
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_users_and_audit() {
        let u = UserView {
            id: "user-7".into(),
            email: "a@x.io".into(),
            display_name: "Ann".into(),
            disabled: false,
            roles: vec!["admin".into(), "viewer".into()],
            teams: vec![],
            has_password: true,
            created_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_000_000,
        };
        let text = users_table(std::slice::from_ref(&u));
        assert_eq!(
            text,
            "ID      EMAIL   NAME  STATE   ROLES         TEAMS  CREATED\n\
             user-7  a@x.io  Ann   active  admin,viewer  -      2023-11-14 22:13:20\n"
        );
        assert!(user_text(&u).contains("password: set\n"));
        let e = AuditView {
            seq: 3,
            tenant: Some("acme".into()),
            actor: "operator".into(),
            action: "user.create".into(),
            resource: "user-7".into(),
            outcome: "ok".into(),
            stamp_ms: 0,
            request_id: "r".into(),
            client_addr: String::new(),
            prev_hash: String::new(),
            hash: String::new(),
        };
        assert_eq!(
            audit_table(&[e]),
            "SEQ  TIME                 ACTOR     ACTION       RESOURCE  OUTCOME\n\
             3    1970-01-01 00:00:00  operator  user.create  user-7    ok\n"
        );
        let usage = usage_text(&Usage { users: 2, ..Default::default() }, &Quotas::default());
        assert!(usage.contains("\nusers                2     1000\n"), "{usage}");
        let unlimited = usage_text(&Usage::default(), &Quotas { max_documents: u64::MAX, ..Quotas::default() });
        assert!(unlimited.contains("\ndocuments            0     unlimited\n"), "{unlimited}");
    }
}
