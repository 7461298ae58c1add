//! The identity part of the state machine: tenants, users, roles, teams, API
//! keys, login sessions, invitations, tenant-scoped key-value writes and the
//! per-tenant audit hash chains, all in the `ident` table (plus tenant
//! key-value pairs in the `kv` table under [`kv_namespace`]).
//!
//! Layout of the `ident` table (tenant keys follow
//! [`caddy_core::identity::tenant_key`]):
//! - `g/tenant/{tenant}`: [`TenantRec`] (record, id counter, audit head);
//! - `g/keyprefix/{prefix}`, `g/session/{hex}`, `g/invite/{hex}`: [`Ref`]s from
//!   an API key's public prefix or a token's hash to its tenant and id;
//! - `g/audit/{seq}` and `g/audithead`: the cluster-level audit chain
//!   (checkpoints and retention settings of chains: see `audit.rs`);
//! - `t/{tenant}/user|email|apikey|session|invite|audit/…` and
//!   `t/{tenant}/meta/roles|teams|erased/…`: the tenant's records.
//!
//! Invariants:
//! - Apply resolves the caller from the proposal's [`Principal`] at the
//!   stamped time and asks [`authorize`] before anything changes; every op
//!   validates everything before its first write, so a refused or invalid op
//!   changes nothing but the audit chain.
//! - Every call except key touches appends exactly one audit entry in the
//!   same transaction as its change: to the caller's own tenant's chain
//!   (tenant credentials), else the target tenant's, else the cluster's.
//! - Tenant usage counters change only together with what they count.

use std::collections::BTreeSet;
use std::io;

use caddy_core::identity::api::{
    ApiKeyView, AuditView, Call, IdentityAnswer, IdentityCall, NewUser, Op, Principal, Requirement, RoleView,
    SessionView, TeamView, TenantView, UserExport, UserView,
};
use caddy_core::identity::{
    Actor, ApiKeyCaller, ApiKeyId, ApiKeyRecord, AuditEntry, AuditOutcome, BuiltinRole, Caller, ChainHead,
    CredentialState, Email, Invitation, InvitationId, KeyKind, Member, Permission, QuotaKind, Quotas, Resource,
    RoleDef, RoleGraph, RoleName, Session, SessionId, TeamGraph, TeamId, Tenant, TenantId, TenantStatus, Usage, User,
    UserCaller, UserId, authorize, check_scopes_subset, tenant_key,
};
use caddy_core::identity::{ids::tenant_kind_prefix, ids::tenant_prefix, validate};
use caddy_core::{CaddyError, ErrorCode, ReplyBody};
use redb::{ReadableTable, Table};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::io_err;
use crate::state_machine::{KvCtx, kv_delete, kv_put, open_record, seal};

#[cfg(test)]
#[path = "identity_tests.rs"]
pub(crate) mod tests;

pub(crate) type IdentTable<'t> = Table<'t, &'static str, &'static [u8]>;

/// Active sessions kept per user; the oldest is ended past this.
pub const MAX_SESSIONS_PER_USER: usize = 32;
/// Pending invitations per tenant.
pub const MAX_PENDING_INVITES: usize = 1000;
/// Audit entries a GDPR export scans.
pub const MAX_EXPORT_AUDIT_SCAN: usize = 100_000;
pub(crate) const CLUSTER_AUDIT_HEAD: &str = "g/audithead";

/// A tenant with its id counter and audit chain head.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TenantRec {
    tenant: Tenant,
    next_id: u64,
    pub(crate) audit_head: ChainHead,
}

impl TenantRec {
    /// The next id of this tenant (one counter for every numbered kind).
    fn allocate(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// A global index entry: which tenant, which id.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ref {
    tenant: TenantId,
    id: u64,
}

/// The global index entry of a session token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionRef {
    tenant: TenantId,
    user: UserId,
    id: SessionId,
}

/// Storage prefix of a key-value namespace: a tenant's, or the cluster's.
pub fn kv_namespace(tenant: Option<&TenantId>) -> String {
    match tenant {
        Some(t) => tenant_kind_prefix(t, KeyKind::Kv),
        None => "c/".to_owned(),
    }
}

fn not_found(what: impl std::fmt::Display) -> CaddyError {
    CaddyError::new(ErrorCode::NotFound, format!("{what} not found"))
}

fn exists(what: impl std::fmt::Display) -> CaddyError {
    CaddyError::new(ErrorCode::AlreadyExists, format!("{what} already exists"))
}

fn unauthenticated(message: impl Into<String>) -> CaddyError {
    CaddyError::new(ErrorCode::Unauthenticated, message)
}

// ----- keys -----

pub(crate) fn k_tenant(t: &TenantId) -> String {
    format!("g/tenant/{t}")
}
fn k_user(t: &TenantId, id: UserId) -> String {
    tenant_key(t, KeyKind::User, &id.key_part())
}
fn k_email(t: &TenantId, email: &Email) -> String {
    tenant_key(t, KeyKind::UserEmail, email.as_str())
}
fn k_roles(t: &TenantId) -> String {
    tenant_key(t, KeyKind::Meta, "roles")
}
fn k_teams(t: &TenantId) -> String {
    tenant_key(t, KeyKind::Meta, "teams")
}
fn k_erased(t: &TenantId, id: UserId) -> String {
    tenant_key(t, KeyKind::Meta, &format!("erased/{}", id.key_part()))
}
fn k_key(t: &TenantId, id: ApiKeyId) -> String {
    tenant_key(t, KeyKind::ApiKey, &id.key_part())
}
fn k_session(t: &TenantId, user: UserId, id: SessionId) -> String {
    tenant_key(t, KeyKind::Session, &format!("{}/{}", user.key_part(), id.key_part()))
}
/// A user's sessions sit together, so login, listing and "end all" scan only them.
fn user_sessions(t: &TenantId, user: UserId) -> String {
    format!("{}{}/", tenant_kind_prefix(t, KeyKind::Session), user.key_part())
}
fn k_invite(t: &TenantId, id: InvitationId) -> String {
    tenant_key(t, KeyKind::Invitation, &id.key_part())
}
fn k_audit(t: Option<&TenantId>, seq: u64) -> String {
    match t {
        Some(t) => tenant_key(t, KeyKind::Audit, &format!("{seq:016x}")),
        None => format!("g/audit/{seq:016x}"),
    }
}
pub(crate) fn audit_prefix(t: Option<&TenantId>) -> String {
    match t {
        Some(t) => tenant_kind_prefix(t, KeyKind::Audit),
        None => "g/audit/".to_owned(),
    }
}
fn g_keyprefix(prefix: &str) -> String {
    format!("g/keyprefix/{prefix}")
}
fn g_session(hash: &[u8; 32]) -> String {
    format!("g/session/{}", hex::encode(hash))
}
fn g_invite(hash: &[u8; 32]) -> String {
    format!("g/invite/{}", hex::encode(hash))
}

// ----- table helpers (work on write tables and read-only tables alike) -----

pub(crate) fn get<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> io::Result<Option<T>> {
    match table.get(key).map_err(io_err)? {
        Some(v) => Ok(Some(open_record("identity record", v.value())?)),
        None => Ok(None),
    }
}

pub(crate) fn put<T: Serialize>(table: &mut IdentTable<'_>, key: &str, value: &T) -> io::Result<()> {
    table.insert(key, seal(value)?.as_slice()).map_err(io_err)?;
    Ok(())
}

pub(crate) fn del(table: &mut IdentTable<'_>, key: &str) -> io::Result<()> {
    table.remove(key).map_err(io_err)?;
    Ok(())
}

/// Records under `prefix` strictly after `prefix + after`, at most `limit`;
/// the flag says whether more follow.
fn scan<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> io::Result<(Vec<(String, T)>, bool)> {
    let start = match after {
        Some(a) => format!("{prefix}{a}\u{0}"),
        None => prefix.to_owned(),
    };
    let mut out = Vec::new();
    for item in table.range(start.as_str()..).map_err(io_err)? {
        let (k, v) = item.map_err(io_err)?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push((key.to_owned(), open_record("identity record", v.value())?));
    }
    Ok((out, false))
}

fn scan_all<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> io::Result<Vec<T>> {
    Ok(scan(table, prefix, None, usize::MAX)?.0.into_iter().map(|(_, v)| v).collect())
}

/// Every key starting with `prefix` (identity and document tables alike).
pub(crate) fn keys_under(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for item in table.range(prefix..).map_err(io_err)? {
        let (k, _) = item.map_err(io_err)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push(k.value().to_owned());
    }
    Ok(out)
}

fn graphs(table: &impl ReadableTable<&'static str, &'static [u8]>, t: &TenantId) -> io::Result<(RoleGraph, TeamGraph)> {
    Ok((get(table, &k_roles(t))?.unwrap_or_default(), get(table, &k_teams(t))?.unwrap_or_default()))
}

/// Resolves a principal to a caller at `now_ms`; `Err` inside for a
/// credential that no longer resolves.
fn resolve(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    principal: &Principal,
    now_ms: u64,
) -> io::Result<Result<Caller, CaddyError>> {
    let user_caller = |tenant: &TenantId, user: UserId, state: CredentialState| -> io::Result<Result<Caller, _>> {
        let Some(rec) = get::<TenantRec>(table, &k_tenant(tenant))? else {
            return Ok(Err(unauthenticated(format!("tenant {tenant} no longer exists"))));
        };
        let Some(user) = get::<User>(table, &k_user(tenant, user))? else {
            return Ok(Err(unauthenticated("the account behind this credential no longer exists")));
        };
        let (roles, teams) = graphs(table, tenant)?;
        Ok(Ok(Caller::User(UserCaller::resolve(&rec.tenant, &user, state, &teams, &roles))))
    };
    match principal {
        Principal::Operator => Ok(Ok(Caller::Operator)),
        Principal::Invitee => Ok(Ok(Caller::Anonymous)),
        Principal::Password { tenant, user } => user_caller(tenant, *user, CredentialState::Active),
        Principal::Session { tenant, user, id } => match get::<Session>(table, &k_session(tenant, *user, *id))? {
            None => Ok(Err(unauthenticated("the session has ended: log in again"))),
            Some(s) => user_caller(tenant, s.user, s.state_at(now_ms)),
        },
        Principal::ApiKey { tenant, id } => {
            let Some(key) = get::<ApiKeyRecord>(table, &k_key(tenant, *id))? else {
                return Ok(Err(unauthenticated(format!("API key {id} no longer exists"))));
            };
            let Some(rec) = get::<TenantRec>(table, &k_tenant(tenant))? else {
                return Ok(Err(unauthenticated(format!("tenant {tenant} no longer exists"))));
            };
            Ok(Ok(Caller::ApiKey(ApiKeyCaller {
                tenant: tenant.clone(),
                tenant_status: rec.tenant.status,
                key: *id,
                scopes: key.scopes.clone(),
                state: key.state_at(now_ms),
            })))
        }
    }
}

/// Resolves a bearer credential (admin token, `cs_` session token or `ck_`
/// API key) at `now_ms`. An empty credential is the anonymous caller.
pub(crate) fn authenticate(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    admin_hash: Option<&[u8; 32]>,
    credential: &str,
    now_ms: u64,
) -> io::Result<Result<(Principal, Caller), CaddyError>> {
    use caddy_core::identity::api::{API_KEY_PREFIX, SESSION_TOKEN_PREFIX};
    if credential.is_empty() {
        return Ok(Ok((Principal::Invitee, Caller::Anonymous)));
    }
    let invalid = || Ok(Err(unauthenticated("invalid credential")));
    let principal = if let Some(rest) = credential.strip_prefix(API_KEY_PREFIX) {
        let Some((prefix, _)) = rest.split_once('_') else { return invalid() };
        let Some(r) = get::<Ref>(table, &g_keyprefix(prefix))? else { return invalid() };
        let Some(key) = get::<ApiKeyRecord>(table, &k_key(&r.tenant, ApiKeyId(r.id)))? else { return invalid() };
        if !caddy_core::credential_matches(credential, &key.secret_hash) {
            return invalid();
        }
        Principal::ApiKey { tenant: r.tenant, id: ApiKeyId(r.id) }
    } else if credential.starts_with(SESSION_TOKEN_PREFIX) {
        match get::<SessionRef>(table, &g_session(&caddy_core::credential_hash(credential)))? {
            Some(r) => Principal::Session { tenant: r.tenant, user: r.user, id: r.id },
            None => return Ok(Err(unauthenticated("the session has expired or was terminated: log in again"))),
        }
    } else if admin_hash.is_some_and(|h| caddy_core::credential_matches(credential, h)) {
        Principal::Operator
    } else {
        return invalid();
    };
    Ok(resolve(table, &principal, now_ms)?.map(|caller| (principal, caller)))
}

// ----- apply -----

struct Done {
    body: ReplyBody,
    /// Resource named in the audit entry, when the op only knows it now.
    resource: Option<String>,
    /// Actor for the audit entry when the caller was anonymous.
    actor: Option<Actor>,
}

impl Done {
    fn ok() -> Self {
        Done { body: ReplyBody::Done, resource: None, actor: None }
    }
    fn created(id: u64, resource: String) -> Self {
        Done { body: ReplyBody::Created { id }, resource: Some(resource), actor: None }
    }
}

type Outcome = Result<Done, CaddyError>;

/// Applies one identity call; `Err` only for storage failures.
pub(crate) fn apply_call(kv: &mut KvCtx<'_, '_>, call: &Call, stamp: u64) -> io::Result<Result<ReplyBody, CaddyError>> {
    let caller = resolve(&kv.tables.ident, &call.principal, stamp)?;
    let outcome = match &caller {
        Err(e) => Err(e.clone()),
        Ok(caller) => match decide(&kv.tables.ident, call, caller)? {
            Err(e) => Err(e),
            Ok(()) => execute(kv, call, caller, stamp)?,
        },
    };
    // Key touches are bookkeeping; committed document updates are recorded
    // in the document's history (refused ones are audited).
    let quiet =
        matches!(call.op, Op::ApiKeyTouch { .. }) || (matches!(call.op, Op::DocUpdate { .. }) && outcome.is_ok());
    if !quiet {
        let caller = caller.as_ref().ok();
        append_audit(kv.tables, call, caller, &outcome, stamp)?;
    }
    Ok(outcome.map(|d| d.body))
}

/// Whether `call`'s principal may still make it, at `stamp` (the check a
/// remembered reply must pass before it is handed out again).
pub(crate) fn permits(tables: &crate::state_machine::Tables<'_>, call: &Call, stamp: u64) -> io::Result<bool> {
    Ok(match resolve(&tables.ident, &call.principal, stamp)? {
        Ok(caller) => decide(&tables.ident, call, &caller)?.is_ok(),
        Err(_) => false,
    })
}

fn decide(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    call: &Call,
    caller: &Caller,
) -> io::Result<Result<(), CaddyError>> {
    let tenant = call.tenant.as_ref();
    let decision = match call.op.required(tenant) {
        Requirement::Permission(permission, resource) => authorize(caller, tenant, permission, &resource),
        Requirement::OwnProof => match (&call.op, &call.principal, caller) {
            (Op::SessionCreate { user, .. }, Principal::Password { tenant: t, user: u }, Caller::User(c))
                if u == user && Some(t) == tenant =>
            {
                if c.tenant_status == TenantStatus::Suspended {
                    Err(CaddyError::precondition(format!("tenant suspended: tenant {t} is suspended")))
                } else if c.disabled {
                    Err(CaddyError::new(ErrorCode::PermissionDenied, format!("user {u} is disabled")))
                } else {
                    Ok(())
                }
            }
            (Op::InviteAccept { .. }, Principal::Invitee, _) if tenant.is_some() => Ok(()),
            (Op::ApiKeyTouch { key }, Principal::ApiKey { id, tenant: t }, _) if id == key && Some(t) == tenant => {
                Ok(())
            }
            _ => Err(CaddyError::new(
                ErrorCode::PermissionDenied,
                format!("{} needs its own proof (a password, an invitation or the key itself)", call.op.name()),
            )),
        },
    };
    if decision.is_err() {
        return Ok(decision);
    }
    if let Some(t) = tenant
        && !matches!(call.op, Op::TenantCreate { .. })
        && get::<TenantRec>(table, &k_tenant(t))?.is_none()
    {
        return Ok(Err(not_found(format!("tenant {t}"))));
    }
    Ok(Ok(()))
}

/// The permissions a caller may hand out (`None`: the operator, anything).
fn grantable(caller: &Caller) -> Option<&BTreeSet<Permission>> {
    match caller {
        Caller::User(u) => Some(&u.permissions),
        Caller::ApiKey(k) => Some(&k.scopes),
        Caller::Operator | Caller::Anonymous => None,
    }
}

fn may_grant(caller: &Caller, wanted: &BTreeSet<Permission>) -> Result<(), CaddyError> {
    match grantable(caller) {
        Some(held) if !wanted.is_empty() => check_scopes_subset(held, wanted),
        _ => Ok(()),
    }
}

fn roles_known(roles: &RoleGraph, wanted: &BTreeSet<RoleName>) -> Result<(), CaddyError> {
    match wanted.iter().find(|r| !roles.exists(r)) {
        Some(r) => Err(not_found(format!("role {r}"))),
        None => Ok(()),
    }
}

fn caller_user(caller: &Caller) -> Option<UserId> {
    match caller {
        Caller::User(u) => Some(u.user),
        _ => None,
    }
}

/// A validated new user: everything checked, nothing written.
struct Checked {
    email: Email,
    display_name: String,
    password_hash: String,
    roles: BTreeSet<RoleName>,
}

fn check_new_user(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    t: &TenantId,
    roles: &RoleGraph,
    caller: &Caller,
    new: &NewUser,
) -> io::Result<Result<Checked, CaddyError>> {
    let checked = (|| {
        let email = Email::parse(&new.email)?;
        let display_name = validate::display_name(&new.display_name)?;
        roles_known(roles, &new.roles)?;
        may_grant(caller, &roles.permissions_for(&new.roles))?;
        if new.password_hash.len() > 512 {
            return Err(CaddyError::invalid("password hash too long"));
        }
        Ok(Checked { email, display_name, password_hash: new.password_hash.clone(), roles: new.roles.clone() })
    })();
    let checked = match checked {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    if get::<UserId>(table, &k_email(t, &checked.email))?.is_some() {
        return Ok(Err(exists(format!("a user with email {}", checked.email))));
    }
    Ok(Ok(checked))
}

fn insert_user(
    ident: &mut IdentTable<'_>,
    t: &TenantId,
    rec: &mut TenantRec,
    u: Checked,
    stamp: u64,
) -> io::Result<UserId> {
    let id = UserId(rec.allocate());
    let user = User {
        id,
        email: u.email,
        display_name: u.display_name,
        password_hash: u.password_hash,
        disabled: false,
        roles: u.roles,
        created_ms: stamp,
        updated_ms: stamp,
    };
    put(ident, &k_email(t, &user.email), &id)?;
    put(ident, &k_user(t, id), &user)?;
    Ok(id)
}

/// Removes a user's record, email index, sessions and team memberships.
fn remove_user(ident: &mut IdentTable<'_>, t: &TenantId, user: &User) -> io::Result<()> {
    del(ident, &k_user(t, user.id))?;
    del(ident, &k_email(t, &user.email))?;
    for s in scan_all::<Session>(ident, &user_sessions(t, user.id))? {
        del(ident, &k_session(t, s.user, s.id))?;
        del(ident, &g_session(&s.token_hash))?;
    }
    let mut teams: TeamGraph = get(ident, &k_teams(t))?.unwrap_or_default();
    teams.remove_user(user.id);
    put(ident, &k_teams(t), &teams)
}

fn execute(kv: &mut KvCtx<'_, '_>, call: &Call, caller: &Caller, stamp: u64) -> io::Result<Outcome> {
    macro_rules! check {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            }
        };
    }
    let Some(t) = call.tenant.as_ref() else {
        return cluster_op(kv, call, stamp);
    };
    let Some(mut rec) = get::<TenantRec>(&kv.tables.ident, &k_tenant(t))? else {
        return Ok(Err(not_found(format!("tenant {t}"))));
    };
    let (mut roles, mut teams) = graphs(&kv.tables.ident, t)?;
    let ident = &mut kv.tables.ident;
    let quotas = rec.tenant.quotas;
    let done = match &call.op {
        Op::KvPut { key, value, if_revision } => {
            let ns = kv_namespace(Some(t));
            let full = format!("{ns}{key}");
            // Quotas count the tenant's own key, not the storage prefix.
            let unprefixed = |size: u64| if size == 0 { 0 } else { size.saturating_sub(ns.len() as u64) };
            let usage = rec.tenant.usage;
            let (mut before, mut after) = (0, 0);
            let body = check!(kv_put(kv, &full, value, *if_revision, |old, new| {
                (before, after) = (unprefixed(old), unprefixed(new));
                match after.checked_sub(before) {
                    Some(grow) if grow > 0 => usage.check(&quotas, QuotaKind::StorageBytes, grow),
                    _ => Ok(()),
                }
            })?);
            rec.tenant.usage.release(QuotaKind::StorageBytes, before);
            rec.tenant.usage.storage_bytes = rec.tenant.usage.storage_bytes.saturating_add(after);
            put(&mut kv.tables.ident, &k_tenant(t), &rec)?;
            return Ok(Ok(Done { body, resource: None, actor: None }));
        }
        Op::KvDelete { key, if_revision } => {
            let ns = kv_namespace(Some(t));
            let (body, size) = check!(kv_delete(kv, &format!("{ns}{key}"), *if_revision)?);
            rec.tenant.usage.release(QuotaKind::StorageBytes, size.saturating_sub(ns.len() as u64));
            put(&mut kv.tables.ident, &k_tenant(t), &rec)?;
            return Ok(Ok(Done { body, resource: None, actor: None }));
        }
        Op::DocCreate { .. }
        | Op::DocUpdate { .. }
        | Op::DocRename { .. }
        | Op::DocSetDeleted { .. }
        | Op::DocTag { .. } => {
            let mut usage = rec.tenant.usage;
            let mut next_id = rec.next_id;
            let ctx = crate::docs::DocCtx { tenant: t, caller, quotas, usage: &mut usage, stamp };
            let done = check!(crate::docs::apply(kv.tables, ctx, &call.op, || {
                next_id += 1;
                next_id
            })?);
            if let (Op::DocUpdate { doc, .. }, ReplyBody::DocUpdated { seq, changed: true, .. }) =
                (&call.op, &done.body)
            {
                crate::render::thumbnail_on_commit(kv.tables, t, *doc, *seq, stamp, || {
                    next_id += 1;
                    next_id
                })?;
            }
            rec.tenant.usage = usage;
            rec.next_id = next_id;
            put(&mut kv.tables.ident, &k_tenant(t), &rec)?;
            let body = done.body;
            return Ok(Ok(Done { body, resource: Some(done.resource), actor: None }));
        }
        Op::File(op) => {
            let mut usage = rec.tenant.usage;
            let mut next_id = rec.next_id;
            let ctx = crate::files::FileCtx { tenant: t, caller, quotas, usage: &mut usage, stamp, teams: &teams };
            let done = check!(crate::files::apply(kv.tables, ctx, op, || {
                next_id += 1;
                next_id
            })?);
            rec.tenant.usage = usage;
            rec.next_id = next_id;
            put(&mut kv.tables.ident, &k_tenant(t), &rec)?;
            return Ok(Ok(Done { body: done.body, resource: Some(done.resource), actor: None }));
        }
        Op::Render(op) => {
            let mut next_id = rec.next_id;
            let ctx = crate::render::RenderCtx { tenant: t, caller, stamp };
            let body = check!(crate::render::apply(kv.tables, ctx, op, || {
                next_id += 1;
                next_id
            })?);
            rec.next_id = next_id;
            put(&mut kv.tables.ident, &k_tenant(t), &rec)?;
            return Ok(Ok(Done { body, resource: Some(op.resource()), actor: None }));
        }
        Op::TenantCreate { .. } => return Ok(Err(CaddyError::invalid("tenant create is a cluster-level call"))),
        Op::TenantUpdate { name, plan, quotas } => {
            let name = match name {
                Some(n) => Some(check!(validate::tenant_name(n))),
                None => None,
            };
            let plan = match plan {
                Some(p) => Some(check!(validate::optional_text("plan", p, validate::MAX_PLAN_CHARS))),
                None => None,
            };
            rec.tenant.name = name.unwrap_or(rec.tenant.name);
            rec.tenant.plan = plan.unwrap_or(rec.tenant.plan);
            rec.tenant.quotas = quotas.apply(rec.tenant.quotas);
            rec.tenant.updated_ms = stamp;
            Done::ok()
        }
        Op::TenantSetSuspended { suspended } => {
            rec.tenant.status = if *suspended { TenantStatus::Suspended } else { TenantStatus::Active };
            rec.tenant.updated_ms = stamp;
            Done::ok()
        }
        Op::TenantDelete => {
            // Global index entries first (they are found through the tenant's records).
            for s in scan_all::<Session>(ident, &tenant_kind_prefix(t, KeyKind::Session))? {
                del(ident, &g_session(&s.token_hash))?;
            }
            for k in scan_all::<ApiKeyRecord>(ident, &tenant_kind_prefix(t, KeyKind::ApiKey))? {
                del(ident, &g_keyprefix(&k.prefix))?;
            }
            for i in scan_all::<Invitation>(ident, &tenant_kind_prefix(t, KeyKind::Invitation))? {
                del(ident, &g_invite(&i.token_hash))?;
            }
            let prefix = tenant_prefix(t);
            for key in keys_under(ident, &prefix)? {
                del(ident, &key)?;
            }
            let mut kv_keys = Vec::new();
            for item in kv.tables.kv.range(prefix.as_str()..).map_err(io_err)? {
                let (k, _) = item.map_err(io_err)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                kv_keys.push(k.value().to_owned());
            }
            for key in kv_keys {
                kv.tables.kv.remove(key.as_str()).map_err(io_err)?;
            }
            crate::docs::delete_tenant_docs(kv.tables, t)?;
            crate::render::delete_tenant_jobs(kv.tables, t)?;
            crate::files::delete_tenant_files(kv.tables, t)?;
            del(&mut kv.tables.ident, &k_tenant(t))?;
            return Ok(Ok(Done::ok()));
        }
        Op::UserCreate(new) => {
            check!(rec.tenant.usage.check(&quotas, QuotaKind::Users, 1));
            let checked = check!(check_new_user(ident, t, &roles, caller, new)?);
            let id = insert_user(ident, t, &mut rec, checked, stamp)?;
            check!(rec.tenant.usage.add(&quotas, QuotaKind::Users, 1));
            Done::created(id.0, id.to_string())
        }
        Op::UserImport(users) => {
            if users.len() > caddy_core::identity::api::MAX_IMPORT_BATCH {
                return Ok(Err(CaddyError::invalid(format!(
                    "an import batch holds at most {} users",
                    caddy_core::identity::api::MAX_IMPORT_BATCH
                ))));
            }
            check!(rec.tenant.usage.check(&quotas, QuotaKind::Users, users.len() as u64));
            let mut checked = Vec::with_capacity(users.len());
            let mut seen = BTreeSet::new();
            for (i, new) in users.iter().enumerate() {
                let c = match check_new_user(ident, t, &roles, caller, new)? {
                    Ok(c) => c,
                    Err(mut e) => {
                        e.message = format!("user #{} of the batch: {}", i + 1, e.message);
                        return Ok(Err(e));
                    }
                };
                if !seen.insert(c.email.clone()) {
                    return Ok(Err(exists(format!("user #{} of the batch: email {} twice", i + 1, c.email))));
                }
                checked.push(c);
            }
            let mut ids = Vec::with_capacity(checked.len());
            for c in checked {
                ids.push(insert_user(ident, t, &mut rec, c, stamp)?.0);
            }
            check!(rec.tenant.usage.add(&quotas, QuotaKind::Users, ids.len() as u64));
            let resource = format!("{} users", ids.len());
            Done { body: ReplyBody::CreatedMany { ids }, resource: Some(resource), actor: None }
        }
        Op::UserUpdate { user, email, display_name, password_hash } => {
            let Some(mut u) = get::<User>(ident, &k_user(t, *user))? else {
                return Ok(Err(not_found(format!("user {user}"))));
            };
            let email = match email {
                Some(e) => Some(check!(Email::parse(e))),
                None => None,
            };
            if let Some(name) = display_name {
                u.display_name = check!(validate::display_name(name));
            }
            if let Some(e) = email
                && e != u.email
            {
                if get::<UserId>(ident, &k_email(t, &e))?.is_some() {
                    return Ok(Err(exists(format!("a user with email {e}"))));
                }
                del(ident, &k_email(t, &u.email))?;
                put(ident, &k_email(t, &e), &u.id)?;
                u.email = e;
            }
            if let Some(h) = password_hash {
                u.password_hash = h.clone();
            }
            u.updated_ms = stamp;
            put(ident, &k_user(t, *user), &u)?;
            Done::ok()
        }
        Op::UserSetDisabled { user, disabled } => {
            let Some(mut u) = get::<User>(ident, &k_user(t, *user))? else {
                return Ok(Err(not_found(format!("user {user}"))));
            };
            u.disabled = *disabled;
            u.updated_ms = stamp;
            put(ident, &k_user(t, *user), &u)?;
            Done::ok()
        }
        Op::UserDelete { user } | Op::UserErase { user } => {
            let Some(u) = get::<User>(ident, &k_user(t, *user))? else {
                return Ok(Err(not_found(format!("user {user}"))));
            };
            remove_user(ident, t, &u)?;
            teams.remove_user(u.id);
            if matches!(call.op, Op::UserErase { .. }) {
                // Invitations name the person by email: gone too. Audit
                // entries name the user only by id, a pseudonym from now on.
                for i in scan_all::<Invitation>(ident, &tenant_kind_prefix(t, KeyKind::Invitation))? {
                    if i.email == u.email {
                        del(ident, &k_invite(t, i.id))?;
                        del(ident, &g_invite(&i.token_hash))?;
                    }
                }
                put(ident, &k_erased(t, u.id), &stamp)?;
            }
            rec.tenant.usage.release(QuotaKind::Users, 1);
            put(ident, &k_teams(t), &teams)?;
            Done::ok()
        }
        Op::SessionCreate { user, token_hash, expires_ms } => {
            if *expires_ms <= stamp {
                return Ok(Err(CaddyError::invalid("the session would already be expired")));
            }
            let mut mine: Vec<Session> = scan_all(ident, &user_sessions(t, *user))?;
            // Forget ended sessions, then end the oldest past the cap.
            mine.sort_by_key(|s| s.created_ms);
            let mut active = Vec::new();
            for s in mine {
                if s.state_at(stamp) == CredentialState::Active {
                    active.push(s);
                } else {
                    del(ident, &k_session(t, s.user, s.id))?;
                    del(ident, &g_session(&s.token_hash))?;
                }
            }
            while active.len() >= MAX_SESSIONS_PER_USER {
                let oldest = active.remove(0);
                del(ident, &k_session(t, oldest.user, oldest.id))?;
                del(ident, &g_session(&oldest.token_hash))?;
            }
            if get::<SessionRef>(ident, &g_session(token_hash))?.is_some() {
                return Ok(Err(exists("a session with this token")));
            }
            let id = SessionId(rec.allocate());
            let session = Session {
                id,
                user: *user,
                token_hash: *token_hash,
                created_ms: stamp,
                expires_ms: *expires_ms,
                terminated_ms: None,
            };
            put(ident, &k_session(t, *user, id), &session)?;
            put(ident, &g_session(token_hash), &SessionRef { tenant: t.clone(), user: *user, id })?;
            Done::created(id.0, id.to_string())
        }
        Op::SessionTerminate { user, session } => {
            let ended: Vec<Session> = match session {
                Some(id) => match get::<Session>(ident, &k_session(t, *user, *id))? {
                    Some(s) => vec![s],
                    None => return Ok(Err(not_found(format!("session {id} of user {user}")))),
                },
                None => scan_all(ident, &user_sessions(t, *user))?,
            };
            for mut s in ended {
                s.terminated_ms.get_or_insert(stamp);
                put(ident, &k_session(t, s.user, s.id), &s)?;
                del(ident, &g_session(&s.token_hash))?;
            }
            Done::ok()
        }
        Op::InviteCreate { email, roles: wanted, token_hash, expires_ms } => {
            let email = check!(Email::parse(email));
            check!(roles_known(&roles, wanted));
            check!(may_grant(caller, &roles.permissions_for(wanted)));
            if *expires_ms <= stamp {
                return Ok(Err(CaddyError::invalid("the invitation would already be expired")));
            }
            if get::<UserId>(ident, &k_email(t, &email))?.is_some() {
                return Ok(Err(exists(format!("a user with email {email}"))));
            }
            let mut pending = 0;
            for i in scan_all::<Invitation>(ident, &tenant_kind_prefix(t, KeyKind::Invitation))? {
                if i.state_at(stamp) == CredentialState::Active {
                    pending += 1;
                } else {
                    del(ident, &k_invite(t, i.id))?;
                    del(ident, &g_invite(&i.token_hash))?;
                }
            }
            if pending >= MAX_PENDING_INVITES {
                return Ok(Err(CaddyError::exhausted(format!(
                    "this tenant has {MAX_PENDING_INVITES} pending invitations (the limit)"
                ))));
            }
            let id = InvitationId(rec.allocate());
            let invite = Invitation {
                id,
                email,
                roles: wanted.clone(),
                token_hash: *token_hash,
                invited_by: caller_user(caller),
                created_ms: stamp,
                expires_ms: *expires_ms,
                accepted_ms: None,
            };
            put(ident, &k_invite(t, id), &invite)?;
            put(ident, &g_invite(token_hash), &Ref { tenant: t.clone(), id: id.0 })?;
            Done::created(id.0, id.to_string())
        }
        Op::InviteAccept { token_hash, display_name, password_hash } => {
            let invite = match get::<Ref>(ident, &g_invite(token_hash))? {
                Some(r) if r.tenant == *t => get::<Invitation>(ident, &k_invite(t, InvitationId(r.id)))?,
                _ => None,
            };
            let Some(mut invite) = invite.filter(|i| i.state_at(stamp) == CredentialState::Active) else {
                return Ok(Err(unauthenticated("the invitation is unknown, expired or already accepted")));
            };
            if rec.tenant.status == TenantStatus::Suspended {
                return Ok(Err(CaddyError::precondition(format!("tenant suspended: tenant {t} is suspended"))));
            }
            check!(rec.tenant.usage.check(&quotas, QuotaKind::Users, 1));
            let new = NewUser {
                email: invite.email.to_string(),
                display_name: display_name.clone(),
                password_hash: password_hash.clone(),
                roles: invite.roles.clone(),
            };
            // The inviter's grant was checked when the invitation was made.
            let checked = check!(check_new_user(ident, t, &roles, &Caller::Operator, &new)?);
            let id = insert_user(ident, t, &mut rec, checked, stamp)?;
            check!(rec.tenant.usage.add(&quotas, QuotaKind::Users, 1));
            invite.accepted_ms = Some(stamp);
            put(ident, &k_invite(t, invite.id), &invite)?;
            del(ident, &g_invite(token_hash))?;
            Done { body: ReplyBody::Created { id: id.0 }, resource: Some(id.to_string()), actor: Some(Actor::User(id)) }
        }
        Op::RoleUpsert { name, description, permissions, inherits } => {
            let def = RoleDef {
                name: name.clone(),
                description: description.clone(),
                permissions: permissions.clone(),
                inherits: inherits.clone(),
            };
            let mut next = roles.clone();
            check!(next.upsert(def));
            check!(may_grant(caller, &next.permissions_for([name])));
            put(ident, &k_roles(t), &next)?;
            Done { body: ReplyBody::Done, resource: Some(format!("role {name}")), actor: None }
        }
        Op::RoleDelete { name } => {
            check!(roles.remove(name));
            put(ident, &k_roles(t), &roles)?;
            Done { body: ReplyBody::Done, resource: Some(format!("role {name}")), actor: None }
        }
        Op::RoleGrant { member, role } | Op::RoleRevoke { member, role } => {
            let grant = matches!(call.op, Op::RoleGrant { .. });
            if !roles.exists(role) {
                return Ok(Err(not_found(format!("role {role}"))));
            }
            if grant {
                check!(may_grant(caller, &roles.permissions_for([role])));
            }
            match member {
                Member::User(id) => {
                    let Some(mut u) = get::<User>(ident, &k_user(t, *id))? else {
                        return Ok(Err(not_found(format!("user {id}"))));
                    };
                    if grant {
                        u.roles.insert(role.clone());
                    } else if !u.roles.remove(role) {
                        return Ok(Err(not_found(format!("role {role} granted directly to user {id}"))));
                    }
                    u.updated_ms = stamp;
                    put(ident, &k_user(t, *id), &u)?;
                }
                Member::Team(id) => {
                    if grant {
                        check!(teams.grant_role(*id, role.clone()));
                    } else {
                        check!(teams.revoke_role(*id, role));
                    }
                    put(ident, &k_teams(t), &teams)?;
                }
            }
            Done {
                body: ReplyBody::Done,
                resource: Some(format!("role {role} to {}", member_label(member))),
                actor: None,
            }
        }
        Op::TeamCreate { name } => {
            // A refused create returns before the tenant record is stored,
            // so the id is not used up.
            let id = TeamId(rec.allocate());
            check!(teams.create(id, name, stamp).map(|_| ()));
            put(ident, &k_teams(t), &teams)?;
            Done::created(id.0, id.to_string())
        }
        Op::TeamDelete { team } => {
            check!(teams.delete(*team));
            put(ident, &k_teams(t), &teams)?;
            Done::ok()
        }
        Op::TeamAdd { team, member } | Op::TeamRemove { team, member } => {
            if matches!(call.op, Op::TeamAdd { .. }) {
                if let Member::User(id) = member
                    && get::<User>(ident, &k_user(t, *id))?.is_none()
                {
                    return Ok(Err(not_found(format!("user {id}"))));
                }
                check!(teams.add_member(*team, *member));
            } else {
                check!(teams.remove_member(*team, *member));
            }
            put(ident, &k_teams(t), &teams)?;
            Done {
                body: ReplyBody::Done,
                resource: Some(format!("{team} member {}", member_label(member))),
                actor: None,
            }
        }
        Op::ApiKeyCreate { name, prefix, secret_hash, scopes, expires_ms } => {
            let name = check!(validate::bounded_text("key name", name, validate::MAX_KEY_NAME_CHARS));
            check!(check_scopes_subset(grantable(caller).unwrap_or(&Permission::all_tenant()), scopes));
            if expires_ms.is_some_and(|e| e <= stamp) {
                return Ok(Err(CaddyError::invalid("the key would already be expired")));
            }
            check!(rec.tenant.usage.check(&quotas, QuotaKind::ApiKeys, 1));
            check!(check_prefix(ident, prefix)?);
            let id = ApiKeyId(rec.allocate());
            let key = ApiKeyRecord {
                id,
                name,
                prefix: prefix.clone(),
                secret_hash: *secret_hash,
                scopes: scopes.clone(),
                created_by: caller_user(caller),
                created_ms: stamp,
                expires_ms: *expires_ms,
                revoked_ms: None,
                last_used_ms: None,
            };
            put(ident, &k_key(t, id), &key)?;
            put(ident, &g_keyprefix(prefix), &Ref { tenant: t.clone(), id: id.0 })?;
            check!(rec.tenant.usage.add(&quotas, QuotaKind::ApiKeys, 1));
            Done::created(id.0, id.to_string())
        }
        Op::ApiKeyRevoke { key } => {
            let Some(mut k) = get::<ApiKeyRecord>(ident, &k_key(t, *key))? else {
                return Ok(Err(not_found(format!("API key {key}"))));
            };
            // A key already retiring after a rotation was released then.
            if k.revoked_ms.is_none() {
                rec.tenant.usage.release(QuotaKind::ApiKeys, 1);
            }
            k.revoked_ms = Some(k.revoked_ms.map_or(stamp, |r| r.min(stamp)));
            put(ident, &k_key(t, *key), &k)?;
            Done::ok()
        }
        Op::ApiKeyRotate { key, prefix, secret_hash, grace_ms } => {
            let Some(mut old) = get::<ApiKeyRecord>(ident, &k_key(t, *key))? else {
                return Ok(Err(not_found(format!("API key {key}"))));
            };
            if old.revoked_ms.is_some() || old.state_at(stamp) != CredentialState::Active {
                return Ok(Err(CaddyError::precondition(format!(
                    "API key {key} is expired, revoked or already rotated; create a new key instead"
                ))));
            }
            check!(check_prefix(ident, prefix)?);
            // The old key is revoked when the grace period ends; the new one
            // takes its place in the quota.
            old.revoked_ms = Some(stamp.saturating_add(*grace_ms));
            let id = ApiKeyId(rec.allocate());
            let new = ApiKeyRecord {
                id,
                prefix: prefix.clone(),
                secret_hash: *secret_hash,
                created_ms: stamp,
                last_used_ms: None,
                revoked_ms: None,
                ..old.clone()
            };
            put(ident, &k_key(t, *key), &old)?;
            put(ident, &k_key(t, id), &new)?;
            put(ident, &g_keyprefix(prefix), &Ref { tenant: t.clone(), id: id.0 })?;
            Done { body: ReplyBody::Created { id: id.0 }, resource: Some(format!("{key} -> {id}")), actor: None }
        }
        Op::AuditRetentionSet { retention } => {
            check!(crate::audit::set_retention(ident, Some(t), retention)?);
            Done::ok()
        }
        Op::ApiKeyTouch { key } => {
            if let Some(mut k) = get::<ApiKeyRecord>(ident, &k_key(t, *key))? {
                k.last_used_ms = Some(k.last_used_ms.map_or(stamp, |l| l.max(stamp)));
                put(ident, &k_key(t, *key), &k)?;
            }
            return Ok(Ok(Done::ok()));
        }
    };
    put(&mut kv.tables.ident, &k_tenant(t), &rec)?;
    Ok(Ok(done))
}

fn check_prefix(ident: &IdentTable<'_>, prefix: &str) -> io::Result<Result<(), CaddyError>> {
    if prefix.is_empty() || prefix.len() > 32 || !prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(Err(CaddyError::invalid("API key prefix must be 1 to 32 letters or digits")));
    }
    if get::<Ref>(ident, &g_keyprefix(prefix))?.is_some() {
        return Ok(Err(exists(format!("an API key with prefix {prefix}"))));
    }
    Ok(Ok(()))
}

fn member_label(m: &Member) -> String {
    match m {
        Member::User(u) => u.to_string(),
        Member::Team(t) => t.to_string(),
    }
}

/// Ops without a tenant: tenant creation and the cluster key-value namespace.
fn cluster_op(kv: &mut KvCtx<'_, '_>, call: &Call, stamp: u64) -> io::Result<Outcome> {
    let ns = kv_namespace(None);
    match &call.op {
        Op::KvPut { key, value, if_revision } => Ok(kv_put(kv, &format!("{ns}{key}"), value, *if_revision, |_, _| {
            Ok(())
        })?
        .map(|body| Done { body, resource: None, actor: None })),
        Op::KvDelete { key, if_revision } => Ok(kv_delete(kv, &format!("{ns}{key}"), *if_revision)?
            .map(|(body, _)| Done { body, resource: None, actor: None })),
        Op::AuditRetentionSet { retention } => {
            Ok(crate::audit::set_retention(&mut kv.tables.ident, None, retention)?.map(|()| Done::ok()))
        }
        Op::TenantCreate { id, name, plan, quotas } => {
            let checked = (|| {
                let name = validate::tenant_name(name)?;
                let plan = validate::optional_text("plan", plan, validate::MAX_PLAN_CHARS)?;
                Ok::<_, CaddyError>((name, if plan.is_empty() { "standard".to_owned() } else { plan }))
            })();
            let (name, plan) = match checked {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            if get::<TenantRec>(&kv.tables.ident, &k_tenant(id))?.is_some() {
                return Ok(Err(exists(format!("tenant {id}"))));
            }
            let rec = TenantRec {
                tenant: Tenant {
                    id: id.clone(),
                    name,
                    plan,
                    status: TenantStatus::Active,
                    quotas: *quotas,
                    usage: Default::default(),
                    created_ms: stamp,
                    updated_ms: stamp,
                },
                next_id: 0,
                audit_head: ChainHead::GENESIS,
            };
            put(&mut kv.tables.ident, &k_tenant(id), &rec)?;
            Ok(Ok(Done { body: ReplyBody::Done, resource: Some(format!("tenant {id}")), actor: None }))
        }
        other => Ok(Err(CaddyError::invalid(format!("{} needs a tenant (--tenant)", other.name())))),
    }
}

fn resource_label(call: &Call) -> String {
    match &call.op {
        Op::KvPut { key, .. } | Op::KvDelete { key, .. } => format!("kv {key}"),
        Op::TenantCreate { id, .. } => format!("tenant {id}"),
        Op::TenantUpdate { .. } | Op::TenantSetSuspended { .. } | Op::TenantDelete => {
            format!("tenant {}", call.tenant.as_ref().map_or("-", |t| t.as_str()))
        }
        Op::UserCreate(_) | Op::UserImport(_) => "users".into(),
        Op::UserUpdate { user, .. }
        | Op::UserSetDisabled { user, .. }
        | Op::UserDelete { user }
        | Op::UserErase { user }
        | Op::SessionCreate { user, .. } => user.to_string(),
        Op::SessionTerminate { user, session } => match session {
            Some(s) => format!("{s} of {user}"),
            None => format!("all sessions of {user}"),
        },
        Op::InviteCreate { .. } => "invitation".into(),
        Op::InviteAccept { .. } => "invitation".into(),
        Op::RoleUpsert { name, .. } | Op::RoleDelete { name } => format!("role {name}"),
        Op::RoleGrant { member, role } | Op::RoleRevoke { member, role } => {
            format!("role {role} to {}", member_label(member))
        }
        Op::TeamCreate { .. } => "team".into(),
        Op::TeamDelete { team } | Op::TeamAdd { team, .. } | Op::TeamRemove { team, .. } => team.to_string(),
        Op::ApiKeyCreate { .. } => "apikey".into(),
        Op::ApiKeyRevoke { key } | Op::ApiKeyRotate { key, .. } | Op::ApiKeyTouch { key } => key.to_string(),
        Op::DocCreate { .. } => "docs".into(),
        Op::DocUpdate { doc, .. } | Op::DocRename { doc, .. } | Op::DocSetDeleted { doc, .. } => doc.to_string(),
        Op::DocTag { doc, name, .. } => format!("{doc} tag {name}"),
        Op::File(op) => op.resource(),
        Op::Render(op) => op.resource(),
        Op::AuditRetentionSet { retention } if retention.is_empty() => "audit retention: default".into(),
        Op::AuditRetentionSet { retention } => format!("audit retention: {retention}"),
    }
}

fn append_audit(
    tables: &mut crate::state_machine::Tables<'_>,
    call: &Call,
    caller: Option<&Caller>,
    outcome: &Outcome,
    stamp: u64,
) -> io::Result<()> {
    // Tenant credentials are accountable in their own tenant's chain, so a
    // refused attempt on another tenant never writes into that tenant's.
    let wanted = caller.and_then(Caller::tenant).or(call.tenant.as_ref());
    let ident = &mut tables.ident;
    let mut chain_rec = match wanted {
        Some(t) => get::<TenantRec>(ident, &k_tenant(t))?.map(|r| (t.clone(), r)),
        None => None,
    };
    let head = match (&chain_rec, tables.cluster_audit_head) {
        (Some((_, r)), _) => r.audit_head,
        (None, Some(cached)) => cached,
        (None, None) => get::<ChainHead>(ident, CLUSTER_AUDIT_HEAD)?.unwrap_or(ChainHead::GENESIS),
    };
    let chain_tenant = chain_rec.as_ref().map(|(t, _)| t.clone());
    let mut resource = match outcome {
        Ok(Done { resource: Some(r), .. }) => r.clone(),
        _ => resource_label(call),
    };
    if let Some(target) = &call.tenant
        && chain_tenant.as_ref() != Some(target)
        && !matches!(call.op, Op::TenantDelete)
    {
        resource = format!("{resource} in tenant {target}");
    }
    let actor = match (outcome, caller) {
        (Ok(Done { actor: Some(a), .. }), _) => a.clone(),
        (_, Some(c)) => c.actor().unwrap_or(Actor::System),
        (_, None) => match &call.principal {
            Principal::Operator => Actor::Operator,
            Principal::Session { user, .. } | Principal::Password { user, .. } => Actor::User(*user),
            Principal::Invitee => Actor::System,
            Principal::ApiKey { id, .. } => Actor::ApiKey(*id),
        },
    };
    let entry = AuditEntry {
        seq: head.seq + 1,
        tenant: chain_tenant.clone(),
        actor,
        action: call.op.name().to_owned(),
        resource,
        outcome: match outcome {
            Ok(_) => AuditOutcome::Ok,
            Err(e) => AuditOutcome::Error(e.code),
        },
        stamp_ms: stamp,
        request_id: call.request_id.clone(),
        client_addr: call.client_addr.clone(),
        prev_hash: head.hash,
        hash: [0; 32],
    }
    .seal(head.hash)
    .map_err(io_err)?;
    put(ident, &k_audit(chain_tenant.as_ref(), entry.seq), &entry)?;
    match &mut chain_rec {
        Some((t, r)) => {
            // The op may have rewritten the tenant record: re-read it.
            let mut fresh: TenantRec = get(ident, &k_tenant(t))?.unwrap_or_else(|| r.clone());
            fresh.audit_head = entry.head();
            put(ident, &k_tenant(t), &fresh)
        }
        None => {
            // Written once per apply batch (`flush_audit_head`), not per entry.
            tables.cluster_audit_head = Some(entry.head());
            Ok(())
        }
    }
}

/// Stores the cluster chain's head if this batch moved it.
pub(crate) fn flush_audit_head(tables: &mut crate::state_machine::Tables<'_>) -> io::Result<()> {
    match tables.cluster_audit_head.take() {
        Some(head) => put(&mut tables.ident, CLUSTER_AUDIT_HEAD, &head),
        None => Ok(()),
    }
}

// ----- reads -----

fn credential_state_name(s: CredentialState) -> String {
    match s {
        CredentialState::Active => "active",
        CredentialState::Expired => "expired",
        CredentialState::Revoked => "revoked",
    }
    .into()
}

fn tenant_view(t: &Tenant) -> TenantView {
    TenantView {
        id: t.id.to_string(),
        name: t.name.clone(),
        plan: t.plan.clone(),
        status: match t.status {
            TenantStatus::Active => "active".into(),
            TenantStatus::Suspended => "suspended".into(),
        },
        quotas: t.quotas,
        usage: t.usage,
        created_ms: t.created_ms,
        updated_ms: t.updated_ms,
    }
}

fn user_view(u: &User, teams: &TeamGraph) -> UserView {
    UserView {
        id: u.id.to_string(),
        email: u.email.to_string(),
        display_name: u.display_name.clone(),
        disabled: u.disabled,
        roles: u.roles.iter().map(|r| r.to_string()).collect(),
        teams: teams.effective_teams(u.id).iter().map(|t| t.to_string()).collect(),
        has_password: !u.password_hash.is_empty(),
        created_ms: u.created_ms,
        updated_ms: u.updated_ms,
    }
}

/// The view of an API key at `now_ms`.
pub fn key_view(k: &ApiKeyRecord, now_ms: u64) -> ApiKeyView {
    ApiKeyView {
        id: k.id.to_string(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        scopes: k.scopes.iter().map(|s| s.to_string()).collect(),
        created_by: k.created_by.map(|u| u.to_string()),
        created_ms: k.created_ms,
        expires_ms: k.expires_ms,
        revoked_ms: k.revoked_ms,
        last_used_ms: k.last_used_ms,
        state: credential_state_name(k.state_at(now_ms)),
    }
}

/// The view of a session at `now_ms`.
pub fn session_view(s: &Session, now_ms: u64) -> SessionView {
    SessionView {
        id: s.id.to_string(),
        user: s.user.to_string(),
        created_ms: s.created_ms,
        expires_ms: s.expires_ms,
        terminated_ms: s.terminated_ms,
        state: credential_state_name(s.state_at(now_ms)),
    }
}

fn role_views(roles: &RoleGraph) -> Vec<RoleView> {
    let strs = |set: &BTreeSet<Permission>| set.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let mut out: Vec<RoleView> = BuiltinRole::ALL
        .into_iter()
        .map(|b| RoleView {
            name: b.name().to_string(),
            builtin: true,
            description: String::new(),
            permissions: strs(&b.permissions()),
            inherits: Vec::new(),
            effective: strs(&b.permissions()),
        })
        .collect();
    for def in roles.custom_roles() {
        out.push(RoleView {
            name: def.name.to_string(),
            builtin: false,
            description: def.description.clone(),
            permissions: strs(&def.permissions),
            inherits: def.inherits.iter().map(|r| r.to_string()).collect(),
            effective: strs(&roles.permissions_for([&def.name])),
        });
    }
    out
}

pub(crate) fn page_limit(limit: u32) -> usize {
    use caddy_core::identity::api::{DEFAULT_PAGE, MAX_PAGE};
    (if limit == 0 { DEFAULT_PAGE } else { limit.min(MAX_PAGE) }) as usize
}

/// Finds a user by `user-N`, `N` or email.
pub(crate) fn find_user(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    t: &TenantId,
    who: &str,
) -> io::Result<Result<UserId, CaddyError>> {
    if who.contains('@') {
        let email = match Email::parse(who) {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        return Ok(get::<UserId>(table, &k_email(t, &email))?.ok_or_else(|| not_found(format!("user {email}"))));
    }
    let id: UserId = match who.parse() {
        Ok(id) => id,
        Err(e) => return Ok(Err(e)),
    };
    match get::<User>(table, &k_user(t, id))? {
        Some(_) => Ok(Ok(id)),
        None => Ok(Err(not_found(format!("user {id}")))),
    }
}

/// For login: the user with `email`, if any.
pub(crate) fn user_by_email(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    t: &TenantId,
    email: &Email,
) -> io::Result<Option<User>> {
    match get::<UserId>(table, &k_email(t, email))? {
        Some(id) => get(table, &k_user(t, id)),
        None => Ok(None),
    }
}

/// Tenant of an invitation token's hash.
pub(crate) fn invite_tenant(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    token_hash: &[u8; 32],
) -> io::Result<Option<TenantId>> {
    Ok(get::<Ref>(table, &g_invite(token_hash))?.map(|r| r.tenant))
}

/// A tenant's quotas and usage (None: no such tenant).
pub(crate) fn tenant_usage(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    t: &TenantId,
) -> io::Result<Option<(Quotas, Usage)>> {
    Ok(get::<TenantRec>(table, &k_tenant(t))?.map(|r| (r.tenant.quotas, r.tenant.usage)))
}

/// Releases storage a tenant no longer uses, outside a call (the files
/// sweep purging expired trash).
pub(crate) fn release_storage(ident: &mut IdentTable<'_>, t: &TenantId, bytes: u64) -> io::Result<()> {
    if let Some(mut rec) = get::<TenantRec>(ident, &k_tenant(t))? {
        rec.tenant.usage.release(QuotaKind::StorageBytes, bytes);
        put(ident, &k_tenant(t), &rec)?;
    }
    Ok(())
}

/// Counts `bytes` more against the tenant's storage quota, or refuses
/// (changing nothing) when they do not fit or the tenant is gone.
pub(crate) fn charge_storage(
    ident: &mut IdentTable<'_>,
    t: &TenantId,
    bytes: u64,
) -> io::Result<Result<(), CaddyError>> {
    let Some(mut rec) = get::<TenantRec>(ident, &k_tenant(t))? else {
        return Ok(Err(CaddyError::new(ErrorCode::NotFound, format!("tenant {t} not found"))));
    };
    let quotas = rec.tenant.quotas;
    if let Err(e) = rec.tenant.usage.add(&quotas, QuotaKind::StorageBytes, bytes) {
        return Ok(Err(e));
    }
    put(ident, &k_tenant(t), &rec)?;
    Ok(Ok(()))
}

/// A tenant's teams.
pub(crate) fn teams_of(table: &impl ReadableTable<&'static str, &'static [u8]>, t: &TenantId) -> io::Result<TeamGraph> {
    Ok(get(table, &k_teams(t))?.unwrap_or_default())
}

/// Whether a user exists in a tenant.
pub(crate) fn user_exists(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    t: &TenantId,
    id: UserId,
) -> io::Result<bool> {
    Ok(get::<User>(table, &k_user(t, id))?.is_some())
}

/// Whether a tenant exists.
pub(crate) fn tenant_exists(table: &impl ReadableTable<&'static str, &'static [u8]>, t: &TenantId) -> io::Result<bool> {
    Ok(get::<TenantRec>(table, &k_tenant(t))?.is_some())
}

/// Answers a read-only identity call for `caller` after authorizing it.
pub(crate) fn read_call(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    caller: &Caller,
    tenant: Option<&TenantId>,
    call: &IdentityCall,
    now_ms: u64,
) -> io::Result<Result<IdentityAnswer, CaddyError>> {
    use caddy_core::identity::{Action, ResourceKind};
    macro_rules! check {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            }
        };
    }
    let perm = |r: ResourceKind, a: Action| Permission::new(r, a);
    let scope = if tenant.is_some() { Resource::Tenant } else { Resource::Cluster };
    if let IdentityCall::TenantList { start_after, limit } = call {
        check!(authorize(caller, None, perm(ResourceKind::Tenants, Action::Admin), &Resource::Cluster));
        let after = (!start_after.is_empty()).then_some(start_after.as_str());
        let (items, more) = scan::<TenantRec>(table, "g/tenant/", after, page_limit(*limit))?;
        let tenants = items.iter().map(|(_, r)| tenant_view(&r.tenant)).collect();
        return Ok(Ok(IdentityAnswer::Tenants { tenants, more }));
    }
    if let IdentityCall::AuditList { .. } | IdentityCall::AuditVerify { .. } | IdentityCall::AuditRetention = call {
        check!(authorize(caller, tenant, perm(ResourceKind::Audit, Action::Read), &scope));
        if let Some(t) = tenant
            && !tenant_exists(table, t)?
        {
            return Ok(Err(not_found(format!("tenant {t}"))));
        }
        return crate::audit::read(table, tenant, call);
    }
    let Some(t) = tenant else {
        return Ok(Err(CaddyError::invalid(format!("{} needs a tenant (--tenant)", call.name()))));
    };
    if !matches!(caller, Caller::Operator) && caller.tenant() != Some(t) {
        // Refuse anonymous and foreign callers before any lookup that could
        // reveal what another tenant holds.
        check!(authorize(caller, tenant, perm(ResourceKind::Tenants, Action::Read), &Resource::Tenant));
        return Ok(Err(CaddyError::new(ErrorCode::PermissionDenied, "this credential cannot act on that tenant")));
    }
    let required = match call {
        IdentityCall::TenantGet | IdentityCall::TenantUsage => (perm(ResourceKind::Tenants, Action::Read), scope),
        IdentityCall::UserGet { user } | IdentityCall::UserExport { user } => {
            (perm(ResourceKind::Users, Action::Read), Resource::User(check!(find_user(table, t, user)?)))
        }
        IdentityCall::SessionList { user } => {
            let id = match (user, caller) {
                (Some(u), _) => check!(find_user(table, t, u)?),
                (None, Caller::User(c)) => c.user,
                (None, _) => return Ok(Err(CaddyError::invalid("name the user whose sessions to list (--user)"))),
            };
            (perm(ResourceKind::Users, Action::Read), Resource::User(id))
        }
        IdentityCall::UserList { .. } => (perm(ResourceKind::Users, Action::Read), scope),
        IdentityCall::RoleList => (perm(ResourceKind::Roles, Action::Read), scope),
        IdentityCall::TeamList => (perm(ResourceKind::Teams, Action::Read), scope),
        IdentityCall::ApiKeyList => (perm(ResourceKind::ApiKeys, Action::Read), scope),
        other => return Ok(Err(CaddyError::internal(format!("{} is not a read", other.name())))),
    };
    check!(authorize(caller, tenant, required.0, &required.1));
    let Some(rec) = get::<TenantRec>(table, &k_tenant(t))? else {
        return Ok(Err(not_found(format!("tenant {t}"))));
    };
    let (roles, teams) = graphs(table, t)?;
    let answer = match call {
        IdentityCall::TenantGet => IdentityAnswer::Tenant { tenant: tenant_view(&rec.tenant) },
        IdentityCall::TenantUsage => {
            IdentityAnswer::Usage { tenant: t.to_string(), usage: rec.tenant.usage, quotas: rec.tenant.quotas }
        }
        IdentityCall::UserGet { .. } => {
            let Resource::User(id) = required.1 else { return Ok(Err(CaddyError::internal("user resource"))) };
            let Some(u) = get::<User>(table, &k_user(t, id))? else { return Ok(Err(not_found(id))) };
            IdentityAnswer::User { user: user_view(&u, &teams) }
        }
        IdentityCall::UserList { search, start_after, limit } => {
            let after =
                if start_after.is_empty() { None } else { Some(check!(start_after.parse::<UserId>()).key_part()) };
            let needle = search.trim().to_lowercase();
            let limit = page_limit(*limit);
            let prefix = tenant_kind_prefix(t, KeyKind::User);
            let mut users = Vec::new();
            let mut more = false;
            let mut cursor = after;
            'pages: loop {
                let (page, page_more) = scan::<User>(table, &prefix, cursor.as_deref(), 256)?;
                for (key, u) in &page {
                    cursor = key.strip_prefix(&prefix).map(str::to_owned);
                    let hit = needle.is_empty()
                        || u.email.as_str().contains(&needle)
                        || u.display_name.to_lowercase().contains(&needle);
                    if hit {
                        if users.len() == limit {
                            more = true;
                            break 'pages;
                        }
                        users.push(user_view(u, &teams));
                    }
                }
                if !page_more {
                    break;
                }
            }
            IdentityAnswer::Users { users, more }
        }
        IdentityCall::UserExport { .. } => {
            let Resource::User(id) = required.1 else { return Ok(Err(CaddyError::internal("user resource"))) };
            let Some(u) = get::<User>(table, &k_user(t, id))? else { return Ok(Err(not_found(id))) };
            let sessions =
                scan_all::<Session>(table, &user_sessions(t, id))?.iter().map(|s| session_view(s, now_ms)).collect();
            let api_keys_created = scan_all::<ApiKeyRecord>(table, &tenant_kind_prefix(t, KeyKind::ApiKey))?
                .iter()
                .filter(|k| k.created_by == Some(id))
                .map(|k| key_view(k, now_ms))
                .collect();
            let (entries, truncated) = scan::<AuditEntry>(table, &audit_prefix(Some(t)), None, MAX_EXPORT_AUDIT_SCAN)?;
            let me = id.to_string();
            let audit = entries
                .iter()
                .map(|(_, e)| e)
                .filter(|e| e.actor == Actor::User(id) || e.resource == me || e.resource.ends_with(&format!(" {me}")))
                .map(AuditView::from)
                .collect();
            IdentityAnswer::UserData {
                data: Box::new(UserExport {
                    tenant: t.to_string(),
                    user: user_view(&u, &teams),
                    sessions,
                    api_keys_created,
                    audit,
                    audit_truncated: truncated,
                }),
            }
        }
        IdentityCall::RoleList => IdentityAnswer::Roles { roles: role_views(&roles) },
        IdentityCall::TeamList => IdentityAnswer::Teams {
            teams: teams
                .teams()
                .map(|team| TeamView {
                    id: team.id.to_string(),
                    name: team.name.clone(),
                    members: team.members.iter().map(member_label).collect(),
                    roles: team.roles.iter().map(|r| r.to_string()).collect(),
                    created_ms: team.created_ms,
                })
                .collect(),
        },
        IdentityCall::ApiKeyList => IdentityAnswer::ApiKeys {
            keys: scan_all::<ApiKeyRecord>(table, &tenant_kind_prefix(t, KeyKind::ApiKey))?
                .iter()
                .map(|k| key_view(k, now_ms))
                .collect(),
        },
        IdentityCall::SessionList { .. } => {
            let Resource::User(id) = required.1 else { return Ok(Err(CaddyError::internal("user resource"))) };
            IdentityAnswer::Sessions {
                sessions: scan_all::<Session>(table, &user_sessions(t, id))?
                    .iter()
                    .map(|s| session_view(s, now_ms))
                    .collect(),
            }
        }
        other => return Ok(Err(CaddyError::internal(format!("{} is not a read", other.name())))),
    };
    Ok(Ok(answer))
}

/// An API key record (for answers; holds only the secret's hash).
pub(crate) fn api_key(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    t: &TenantId,
    id: ApiKeyId,
) -> io::Result<Option<ApiKeyRecord>> {
    get(table, &k_key(t, id))
}

/// A login session record by id alone (scans the tenant's sessions: for
/// administrators naming a session without its user).
pub(crate) fn session(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    t: &TenantId,
    id: SessionId,
) -> io::Result<Option<Session>> {
    let suffix = format!("/{}", id.key_part());
    let prefix = tenant_kind_prefix(t, KeyKind::Session);
    for item in table.range(prefix.as_str()..).map_err(io_err)? {
        let (k, v) = item.map_err(io_err)?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        if k.value().ends_with(&suffix) {
            return Ok(Some(open_record("session", v.value())?));
        }
    }
    Ok(None)
}
