//! Turns mutating identity calls into Raft proposals: passwords are hashed
//! (argon2id) and tokens generated here, on the serving node, so that only
//! hashes are proposed; answers carry a new secret exactly once.
//!
//! Every hash and password check runs inside the node's hash gate
//! (`edge::HashGate`: bounded concurrency on blocking threads, a bounded
//! queue), and a login is checked against the throttle (`edge::LoginThrottle`)
//! before anything else is spent on it.
//!
//! Authorization is not decided here: apply calls the one authorization
//! function against the state at the entry's stamped time (and audits
//! refusals); reads are authorized by the state machine's read path.

use std::collections::BTreeSet;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use caddy_core::identity::api::{
    API_KEY_PREFIX, Call, INVITE_TOKEN_PREFIX, IdentityAnswer, IdentityCall, ImportUser, MAX_IMPORT_BATCH, NewUser, Op,
    Principal, SESSION_TOKEN_PREFIX,
};
use caddy_core::identity::{
    Action, ApiKeyId, Caller, Email, Member, Permission, Resource, ResourceKind, RetentionOverride, RoleName,
    SessionId, TeamId, TenantId, UserId, authorize, validate,
};
use caddy_core::{CaddyError, ClientSeq, Command, ErrorCode, ReplyBody};
use caddy_raft::RaftNode;
use caddy_store::identity::{key_view, session_view};

use crate::config::Limits;
use crate::edge::{Edge, Source};

/// Everything about a request a proposal needs besides the call.
pub struct WriteCtx<'a> {
    /// Who asks.
    pub principal: Principal,
    /// Who that resolved to on this node.
    pub caller: Caller,
    /// Target tenant (`None`: the cluster).
    pub tenant: Option<TenantId>,
    /// Exactly-once identity.
    pub origin: Option<ClientSeq>,
    /// For the audit trail.
    pub request_id: String,
    /// For the audit trail.
    pub client_addr: String,
    /// Lifetimes.
    pub limits: &'a Limits,
    /// The hash bound and the login throttle.
    pub edge: &'a Edge,
    /// Where the request came from (login throttling per source).
    pub source: Option<Source>,
}

/// Milliseconds since the epoch on this node's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn random_hex(bytes: usize) -> String {
    let buf: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(buf)
}

/// Hashes a password with argon2id (OWASP parameters: 19 MiB, 2 passes) on
/// a blocking thread, within the node's hash bound.
pub async fn hash_password(edge: &Edge, password: String) -> Result<String, CaddyError> {
    validate::password(&password)?;
    edge.hashes
        .run(move || {
            let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
                .map_err(|e| CaddyError::internal(format!("password salt: {e}")))?;
            argon2::Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| CaddyError::internal(format!("password hashing: {e}")))
        })
        .await?
}

/// A valid argon2id hash of a random password, verified against when a login
/// names an unknown email so that both cases take the same time.
static DECOY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn verify_password(edge: &Edge, password: String, phc: Option<String>) -> Result<bool, CaddyError> {
    let decoy = match DECOY_HASH.get() {
        Some(h) => h.clone(),
        None => {
            let h = hash_password(edge, random_hex(16)).await?;
            DECOY_HASH.get_or_init(|| h).clone()
        }
    };
    edge.hashes
        .run(move || {
            let real = phc.as_deref().filter(|p| !p.is_empty());
            let Ok(parsed) = PasswordHash::new(real.unwrap_or(&decoy)) else { return false };
            let ok = argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
            ok && real.is_some()
        })
        .await
}

fn parse_roles(names: &[String]) -> Result<BTreeSet<RoleName>, CaddyError> {
    names.iter().map(|n| RoleName::new(n.trim())).collect()
}

fn parse_perms(names: &[String]) -> Result<BTreeSet<Permission>, CaddyError> {
    names.iter().map(|n| n.trim().parse()).collect()
}

fn need_tenant(tenant: &Option<TenantId>) -> Result<TenantId, CaddyError> {
    tenant.clone().ok_or_else(|| CaddyError::invalid("this call needs a tenant: pass --tenant (or log in)"))
}

fn ttl_ms(requested: Option<u64>, max_secs: u64) -> Result<u64, CaddyError> {
    let secs = requested.unwrap_or(max_secs);
    if secs == 0 || secs > max_secs {
        return Err(CaddyError::invalid(format!("lifetime must be between 1 and {max_secs} seconds")));
    }
    Ok(secs.saturating_mul(1000))
}

fn member(
    node: &RaftNode,
    tenant: &TenantId,
    user: &Option<String>,
    team: &Option<String>,
) -> Result<Member, CaddyError> {
    match (user, team) {
        (Some(u), None) => Ok(Member::User(node.state_machine().find_user(tenant, u)?)),
        (None, Some(t)) => Ok(Member::Team(t.parse::<TeamId>()?)),
        _ => Err(CaddyError::invalid("name exactly one of a user or a team")),
    }
}

fn new_api_key() -> (String, String, [u8; 32]) {
    let prefix = random_hex(6);
    let key = format!("{API_KEY_PREFIX}{prefix}_{}", random_hex(32));
    let hash = caddy_core::credential_hash(&key);
    (prefix, key, hash)
}

fn created_id(body: ReplyBody) -> Result<u64, CaddyError> {
    match body {
        ReplyBody::Created { id } => Ok(id),
        other => Err(CaddyError::internal(format!("unexpected reply: {other:?}"))),
    }
}

fn done(message: impl Into<String>) -> IdentityAnswer {
    IdentityAnswer::Done { message: message.into() }
}

/// Proposes one mutating identity call and shapes its answer.
pub async fn write_call(node: &RaftNode, ctx: WriteCtx<'_>, call: IdentityCall) -> Result<IdentityAnswer, CaddyError> {
    let sm = node.state_machine();
    // A tenant credential aimed at another tenant is refused before any
    // lookup there (which could reveal whether a user or email exists).
    if let Some(own) = ctx.caller.tenant()
        && ctx.tenant.as_ref().is_some_and(|t| t != own)
    {
        let anything = Permission::new(ResourceKind::Tenants, Action::Read);
        authorize(&ctx.caller, ctx.tenant.as_ref(), anything, &Resource::Tenant)?;
    }
    let mut tenant = ctx.tenant.clone();
    let mut principal = ctx.principal.clone();
    let now = now_ms();
    let op = match &call {
        IdentityCall::TenantCreate { id, name, plan, quotas } => {
            tenant = None;
            Op::TenantCreate {
                id: TenantId::new(id)?,
                name: name.clone(),
                plan: plan.clone(),
                quotas: quotas.unwrap_or_default(),
            }
        }
        IdentityCall::TenantUpdate { name, plan, quotas } => {
            need_tenant(&tenant)?;
            Op::TenantUpdate { name: name.clone(), plan: plan.clone(), quotas: *quotas }
        }
        IdentityCall::TenantSuspend => Op::TenantSetSuspended { suspended: true },
        IdentityCall::TenantResume => Op::TenantSetSuspended { suspended: false },
        IdentityCall::TenantDelete { confirm } => {
            let t = need_tenant(&tenant)?;
            if confirm != t.as_str() {
                return Err(CaddyError::invalid(format!(
                    "deleting tenant {t} removes everything it owns; confirm by repeating its id (--confirm {t})"
                )));
            }
            Op::TenantDelete
        }
        IdentityCall::UserCreate { email, display_name, password, roles } => Op::UserCreate(NewUser {
            email: email.clone(),
            display_name: display_name.clone(),
            password_hash: hash_password(ctx.edge, password.clone()).await?,
            roles: parse_roles(roles)?,
        }),
        IdentityCall::UserImport { users } => {
            if users.len() > MAX_IMPORT_BATCH {
                return Err(CaddyError::invalid(format!("an import batch holds at most {MAX_IMPORT_BATCH} users")));
            }
            let mut batch = Vec::with_capacity(users.len());
            for (i, ImportUser { email, display_name, roles, password }) in users.iter().enumerate() {
                let in_batch = |e: CaddyError| CaddyError::new(e.code, format!("user #{}: {}", i + 1, e.message));
                let password_hash = if password.is_empty() {
                    String::new()
                } else {
                    hash_password(ctx.edge, password.clone()).await.map_err(in_batch)?
                };
                batch.push(NewUser {
                    email: email.clone(),
                    display_name: display_name.clone(),
                    password_hash,
                    roles: parse_roles(roles).map_err(in_batch)?,
                });
            }
            Op::UserImport(batch)
        }
        IdentityCall::UserUpdate { user, email, display_name, password } => {
            let t = need_tenant(&tenant)?;
            let password_hash = match password {
                Some(p) => Some(hash_password(ctx.edge, p.clone()).await?),
                None => None,
            };
            Op::UserUpdate {
                user: sm.find_user(&t, user)?,
                email: email.clone(),
                display_name: display_name.clone(),
                password_hash,
            }
        }
        IdentityCall::UserSetDisabled { user, disabled } => {
            Op::UserSetDisabled { user: sm.find_user(&need_tenant(&tenant)?, user)?, disabled: *disabled }
        }
        IdentityCall::UserDelete { user } => Op::UserDelete { user: sm.find_user(&need_tenant(&tenant)?, user)? },
        IdentityCall::UserErase { user } => Op::UserErase { user: sm.find_user(&need_tenant(&tenant)?, user)? },
        IdentityCall::Login { email, password, ttl_seconds } => {
            let t = need_tenant(&tenant)?;
            let email = Email::parse(email)?;
            // Before any work: a throttled account or source costs nothing.
            let attempt = ctx.edge.logins.begin(&t, &email, ctx.source)?;
            // The account may have been created through another node a moment ago.
            node.read_barrier().await?;
            let user = sm.user_by_email(&t, &email)?;
            let ok =
                verify_password(ctx.edge, password.clone(), user.as_ref().map(|u| u.password_hash.clone())).await?;
            let Some(user) = user.filter(|_| ok) else {
                attempt.failed();
                return Err(CaddyError::new(ErrorCode::Unauthenticated, "invalid email or password"));
            };
            attempt.succeeded();
            let token = format!("{SESSION_TOKEN_PREFIX}{}", random_hex(32));
            let expires_ms = now.saturating_add(ttl_ms(*ttl_seconds, ctx.limits.session_ttl_secs)?);
            principal = Principal::Password { tenant: t.clone(), user: user.id };
            let op = Op::SessionCreate { user: user.id, token_hash: caddy_core::credential_hash(&token), expires_ms };
            let id = created_id(propose(node, &ctx, principal, Some(t.clone()), op).await?)?;
            node.read_barrier().await?;
            let session = sm
                .login_session(&t, SessionId(id))?
                .filter(|s| s.token_hash == caddy_core::credential_hash(&token))
                .ok_or_else(|| lost_secret(&format!("session session-{id}"), "log in again"))?;
            return Ok(IdentityAnswer::Session {
                tenant: t.to_string(),
                token,
                session: session_view(&session, now_ms()),
            });
        }
        IdentityCall::Logout => match (&ctx.principal, &ctx.caller) {
            (Principal::Session { tenant: t, id, .. }, Caller::User(u)) => {
                tenant = Some(t.clone());
                Op::SessionTerminate { user: u.user, session: Some(*id) }
            }
            _ => return Err(CaddyError::invalid("logout ends a login session; this credential is not one")),
        },
        IdentityCall::InviteCreate { email, roles, ttl_seconds } => {
            let token = format!("{INVITE_TOKEN_PREFIX}{}", random_hex(32));
            let expires_ms = now.saturating_add(ttl_ms(*ttl_seconds, ctx.limits.invite_ttl_secs)?);
            let op = Op::InviteCreate {
                email: email.clone(),
                roles: parse_roles(roles)?,
                token_hash: caddy_core::credential_hash(&token),
                expires_ms,
            };
            let id = created_id(propose(node, &ctx, principal, tenant, op).await?)?;
            node.read_barrier().await?;
            if sm.invite_tenant(&caddy_core::credential_hash(&token))?.is_none() {
                return Err(lost_secret(&format!("invitation invite-{id}"), "create a new invitation"));
            }
            return Ok(IdentityAnswer::Invitation { id: format!("invite-{id}"), token, expires_ms });
        }
        IdentityCall::InviteAccept { token, display_name, password } => {
            let hash = caddy_core::credential_hash(token);
            node.read_barrier().await?;
            let Some(t) = sm.invite_tenant(&hash)? else {
                return Err(CaddyError::new(
                    ErrorCode::Unauthenticated,
                    "the invitation is unknown, expired or already accepted",
                ));
            };
            tenant = Some(t);
            principal = Principal::Invitee;
            Op::InviteAccept {
                token_hash: hash,
                display_name: display_name.clone(),
                password_hash: hash_password(ctx.edge, password.clone()).await?,
            }
        }
        IdentityCall::RoleCreate { name, description, permissions, inherits } => Op::RoleUpsert {
            name: RoleName::new(name)?,
            description: description.clone(),
            permissions: parse_perms(permissions)?,
            inherits: parse_roles(inherits)?,
        },
        IdentityCall::RoleDelete { name } => Op::RoleDelete { name: RoleName::new(name)? },
        IdentityCall::RoleGrant { role, user, team } => {
            Op::RoleGrant { member: member(node, &need_tenant(&tenant)?, user, team)?, role: RoleName::new(role)? }
        }
        IdentityCall::RoleRevoke { role, user, team } => {
            Op::RoleRevoke { member: member(node, &need_tenant(&tenant)?, user, team)?, role: RoleName::new(role)? }
        }
        IdentityCall::TeamCreate { name } => Op::TeamCreate { name: name.clone() },
        IdentityCall::TeamDelete { team } => Op::TeamDelete { team: team.parse()? },
        IdentityCall::TeamAdd { team, user, subteam } => {
            Op::TeamAdd { team: team.parse()?, member: member(node, &need_tenant(&tenant)?, user, subteam)? }
        }
        IdentityCall::TeamRemove { team, user, subteam } => {
            Op::TeamRemove { team: team.parse()?, member: member(node, &need_tenant(&tenant)?, user, subteam)? }
        }
        IdentityCall::ApiKeyCreate { name, scopes, ttl_seconds } => {
            let (prefix, key, secret_hash) = new_api_key();
            let expires_ms = match ttl_seconds {
                Some(0) => return Err(CaddyError::invalid("a key lifetime must be positive")),
                Some(s) => Some(now.saturating_add(s.saturating_mul(1000))),
                None => None,
            };
            let op =
                Op::ApiKeyCreate { name: name.clone(), prefix, secret_hash, scopes: parse_perms(scopes)?, expires_ms };
            let t = need_tenant(&tenant)?;
            let id = created_id(propose(node, &ctx, principal, tenant, op).await?)?;
            return key_answer(node, &t, ApiKeyId(id), key).await;
        }
        IdentityCall::ApiKeyRevoke { key } => Op::ApiKeyRevoke { key: key.parse()? },
        IdentityCall::ApiKeyRotate { key, grace_seconds } => {
            let (prefix, new_key, secret_hash) = new_api_key();
            let grace = grace_seconds.unwrap_or(ctx.limits.key_rotation_grace_secs);
            let op = Op::ApiKeyRotate { key: key.parse()?, prefix, secret_hash, grace_ms: grace.saturating_mul(1000) };
            let t = need_tenant(&tenant)?;
            let id = created_id(propose(node, &ctx, principal, tenant, op).await?)?;
            return key_answer(node, &t, ApiKeyId(id), new_key).await;
        }
        IdentityCall::SessionTerminate { session, user } => {
            let t = need_tenant(&tenant)?;
            let session: Option<SessionId> = session.as_deref().map(str::parse).transpose()?;
            let user: UserId = match (user, session) {
                (Some(u), _) => sm.find_user(&t, u)?,
                (None, Some(s)) => {
                    sm.login_session(&t, s)?
                        .ok_or_else(|| CaddyError::new(ErrorCode::NotFound, format!("{s} not found")))?
                        .user
                }
                (None, None) => return Err(CaddyError::invalid("name a session, or a user whose sessions all end")),
            };
            Op::SessionTerminate { user, session }
        }
        IdentityCall::AuditRetentionSet { max_age_days, max_entries } => {
            let retention = RetentionOverride {
                max_age_ms: max_age_days.map(|d| d.saturating_mul(24 * 3600 * 1000)),
                max_entries: *max_entries,
            };
            retention.validate()?;
            Op::AuditRetentionSet { retention }
        }
        read => return Err(CaddyError::internal(format!("{} is a read, not a write", read.name()))),
    };
    let name = op.name();
    let body = propose(node, &ctx, principal, tenant, op).await?;
    Ok(match body {
        ReplyBody::Created { id } => IdentityAnswer::Created {
            id: match call {
                IdentityCall::TeamCreate { .. } => TeamId(id).to_string(),
                _ => UserId(id).to_string(),
            },
        },
        ReplyBody::CreatedMany { ids } => {
            IdentityAnswer::Imported { created: ids.into_iter().map(|id| UserId(id).to_string()).collect() }
        }
        _ => done(done_message(&call, ctx.tenant.as_ref()).unwrap_or_else(|| format!("{name}: done"))),
    })
}

/// What a person reads after a change without a new id.
fn done_message(call: &IdentityCall, tenant: Option<&TenantId>) -> Option<String> {
    let t = tenant.map_or_else(String::new, |t| t.to_string());
    let either =
        |user: &Option<String>, team: &Option<String>| user.clone().or_else(|| team.clone()).unwrap_or_default();
    Some(match call {
        IdentityCall::TenantCreate { id, .. } => format!("tenant {id} created"),
        IdentityCall::TenantUpdate { .. } => format!("tenant {t} updated"),
        IdentityCall::TenantSuspend => format!("tenant {t} suspended: its credentials are refused until it is resumed"),
        IdentityCall::TenantResume => format!("tenant {t} resumed"),
        IdentityCall::TenantDelete { .. } => format!("tenant {t} deleted with everything it owned"),
        IdentityCall::UserUpdate { user, .. } => format!("user {user} updated"),
        IdentityCall::UserSetDisabled { user, disabled: true } => format!("user {user} disabled"),
        IdentityCall::UserSetDisabled { user, disabled: false } => format!("user {user} enabled"),
        IdentityCall::UserDelete { user } => format!("user {user} deleted"),
        IdentityCall::UserErase { user } => {
            format!("user {user} erased: personal data removed; audit entries keep only the pseudonymous id")
        }
        IdentityCall::Logout => "logged out".into(),
        IdentityCall::RoleCreate { name, .. } => format!("role {name} saved"),
        IdentityCall::RoleDelete { name } => format!("role {name} deleted"),
        IdentityCall::RoleGrant { role, user, team } => format!("role {role} granted to {}", either(user, team)),
        IdentityCall::RoleRevoke { role, user, team } => format!("role {role} revoked from {}", either(user, team)),
        IdentityCall::TeamDelete { team } => format!("team {team} deleted"),
        IdentityCall::TeamAdd { team, user, subteam } => format!("{} added to {team}", either(user, subteam)),
        IdentityCall::TeamRemove { team, user, subteam } => format!("{} removed from {team}", either(user, subteam)),
        IdentityCall::ApiKeyRevoke { key } => format!("API key {key} revoked"),
        IdentityCall::SessionTerminate { session: Some(s), .. } => format!("session {s} ended"),
        IdentityCall::SessionTerminate { user: Some(u), .. } => format!("every session of {u} ended"),
        IdentityCall::AuditRetentionSet { max_age_days: None, max_entries: None } => {
            format!("audit retention of {} set to the cluster default", chain_name(tenant))
        }
        IdentityCall::AuditRetentionSet { .. } => {
            format!("audit retention of {} set; the next sweep applies it", chain_name(tenant))
        }
        _ => return None,
    })
}

fn chain_name(tenant: Option<&TenantId>) -> String {
    tenant.map_or_else(|| "the cluster chain".to_owned(), |t| format!("tenant {t}"))
}

async fn key_answer(node: &RaftNode, t: &TenantId, id: ApiKeyId, secret: String) -> Result<IdentityAnswer, CaddyError> {
    node.read_barrier().await?;
    let record = node
        .state_machine()
        .api_key(t, id)?
        .filter(|k| k.secret_hash == caddy_core::credential_hash(&secret))
        .ok_or_else(|| lost_secret(&format!("API key {id}"), &format!("revoke {id} and create a new key")))?;
    Ok(IdentityAnswer::ApiKey { key: key_view(&record, now_ms()), secret })
}

/// A retried request that creates a secret was applied by an earlier attempt
/// (exactly once), whose answer, and so the secret shown only once, was lost;
/// this attempt's secret was never stored.
pub(crate) fn lost_secret(what: &str, remedy: &str) -> CaddyError {
    CaddyError::precondition(format!(
        "{what} was created by an earlier attempt of this request whose answer was lost, \
         and its secret cannot be shown again: {remedy}"
    ))
}

async fn propose(
    node: &RaftNode,
    ctx: &WriteCtx<'_>,
    principal: Principal,
    tenant: Option<TenantId>,
    op: Op,
) -> Result<ReplyBody, CaddyError> {
    let call = Call { principal, tenant, request_id: ctx.request_id.clone(), client_addr: ctx.client_addr.clone(), op };
    node.propose(ctx.origin, Command::Call(Box::new(call))).await
}

/// Records, at most once a minute per key and node, that an API key was used.
#[derive(Default)]
pub struct KeyTouches {
    last: std::sync::Mutex<std::collections::HashMap<(TenantId, ApiKeyId), std::time::Instant>>,
}

impl KeyTouches {
    const EVERY: Duration = Duration::from_secs(60);
    const MAX_TRACKED: usize = 10_000;

    /// Proposes a touch in the background when this key's last one is old.
    pub fn touch(&self, node: &RaftNode, principal: &Principal) {
        let Principal::ApiKey { tenant, id } = principal else { return };
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let key = (tenant.clone(), *id);
            if last.get(&key).is_some_and(|at| at.elapsed() < Self::EVERY) {
                return;
            }
            if last.len() >= Self::MAX_TRACKED {
                last.clear();
            }
            last.insert(key, std::time::Instant::now());
        }
        let node = node.clone();
        let call = Call {
            principal: principal.clone(),
            tenant: Some(tenant.clone()),
            request_id: String::new(),
            client_addr: String::new(),
            op: Op::ApiKeyTouch { key: *id },
        };
        tokio::spawn(async move {
            if let Err(e) = node.propose(None, Command::Call(Box::new(call))).await {
                tracing::debug!(error = %e, "recording API key use failed");
            }
        });
    }
}
