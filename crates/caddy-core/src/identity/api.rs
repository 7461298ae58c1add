//! The identity protocol and its Raft form.
//!
//! Clients send an [`IdentityCall`] and get an [`IdentityAnswer`] (both carried
//! as JSON in the `identity` request of the client protocol). The serving node
//! turns every mutating call into a [`Call`] for the Raft log: secrets are
//! replaced by what the state machine may keep (argon2id hashes of passwords,
//! blake3 hashes of tokens and keys) before it is proposed, so no plaintext
//! password, session token, invitation token or API key secret ever reaches
//! the log, a snapshot or an audit entry.
//!
//! Apply re-resolves the [`Principal`] against the state at the entry's
//! stamped time and calls [`crate::identity::authorize`] with
//! [`Op::required`]: a key revoked or a session terminated just before a write
//! is applied refuses that write on every replica, and refused writes are
//! audited like accepted ones.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::audit::{AuditCheckpoint, AuditEntry, AuditOutcome, AuditRetention, BrokenLink, RetentionOverride};
use super::authz::Resource;
use super::ids::{ApiKeyId, RoleName, SessionId, TeamId, TenantId, UserId};
use super::permissions::{Action, Permission, ResourceKind};
use super::quota::{Quotas, Usage};
use super::teams::Member;
use crate::docs::{DocBounds, DocId};

/// Most users in one import batch (one Raft entry; all or nothing).
pub const MAX_IMPORT_BATCH: usize = 100;
/// Largest page any identity list returns.
pub const MAX_PAGE: u32 = 1000;
/// Default page size when a call leaves `limit` at 0.
pub const DEFAULT_PAGE: u32 = 100;
/// Prefix of a session token.
pub const SESSION_TOKEN_PREFIX: &str = "cs_";
/// Prefix of an API key (`ck_{public prefix}_{secret}`).
pub const API_KEY_PREFIX: &str = "ck_";
/// Prefix of an invitation token.
pub const INVITE_TOKEN_PREFIX: &str = "ci_";

/// Changes to a tenant's quotas; `None` keeps the current value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotasPatch {
    /// New `max_users`.
    pub max_users: Option<u64>,
    /// New `max_storage_bytes`.
    pub max_storage_bytes: Option<u64>,
    /// New `max_documents`.
    pub max_documents: Option<u64>,
    /// New `max_api_keys`.
    pub max_api_keys: Option<u64>,
    /// New `max_requests_per_second`.
    pub max_requests_per_second: Option<u64>,
}

impl QuotasPatch {
    /// `quotas` with this patch applied.
    pub fn apply(&self, mut quotas: Quotas) -> Quotas {
        let set = |slot: &mut u64, v: Option<u64>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut quotas.max_users, self.max_users);
        set(&mut quotas.max_storage_bytes, self.max_storage_bytes);
        set(&mut quotas.max_documents, self.max_documents);
        set(&mut quotas.max_api_keys, self.max_api_keys);
        set(&mut quotas.max_requests_per_second, self.max_requests_per_second);
        quotas
    }
}

/// One user of a bulk import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportUser {
    /// Email address.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role names granted.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Initial password; empty: the account cannot log in until one is set.
    #[serde(default)]
    pub password: String,
}

/// What a client asks of the identity service. Tenant-scoped calls act on
/// the request's tenant (the credential's own tenant unless an operator names
/// one). Ids are accepted as `user-7` or `7`; users also by email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum IdentityCall {
    TenantCreate {
        id: String,
        name: String,
        plan: String,
        quotas: Option<Quotas>,
    },
    TenantList {
        start_after: String,
        limit: u32,
    },
    TenantGet,
    TenantUpdate {
        name: Option<String>,
        plan: Option<String>,
        quotas: QuotasPatch,
    },
    TenantSuspend,
    TenantResume,
    /// `confirm` must repeat the tenant id.
    TenantDelete {
        confirm: String,
    },
    TenantUsage,
    UserCreate {
        email: String,
        display_name: String,
        password: String,
        roles: Vec<String>,
    },
    UserGet {
        user: String,
    },
    UserList {
        search: String,
        start_after: String,
        limit: u32,
    },
    UserUpdate {
        user: String,
        email: Option<String>,
        display_name: Option<String>,
        password: Option<String>,
    },
    UserSetDisabled {
        user: String,
        disabled: bool,
    },
    UserDelete {
        user: String,
    },
    UserExport {
        user: String,
    },
    UserErase {
        user: String,
    },
    UserImport {
        users: Vec<ImportUser>,
    },
    /// Email and password for a session token (no credential needed).
    Login {
        email: String,
        password: String,
        ttl_seconds: Option<u64>,
    },
    /// Ends the calling session.
    Logout,
    InviteCreate {
        email: String,
        roles: Vec<String>,
        ttl_seconds: Option<u64>,
    },
    /// Creates the invited user (no credential needed; the token is one).
    InviteAccept {
        token: String,
        display_name: String,
        password: String,
    },
    RoleCreate {
        name: String,
        description: String,
        permissions: Vec<String>,
        inherits: Vec<String>,
    },
    RoleList,
    RoleDelete {
        name: String,
    },
    /// Grants `role` to a user or a team (exactly one of them).
    RoleGrant {
        role: String,
        user: Option<String>,
        team: Option<String>,
    },
    RoleRevoke {
        role: String,
        user: Option<String>,
        team: Option<String>,
    },
    TeamCreate {
        name: String,
    },
    TeamList,
    TeamDelete {
        team: String,
    },
    /// Adds a user or a sub-team (exactly one of them) to `team`.
    TeamAdd {
        team: String,
        user: Option<String>,
        subteam: Option<String>,
    },
    TeamRemove {
        team: String,
        user: Option<String>,
        subteam: Option<String>,
    },
    ApiKeyCreate {
        name: String,
        scopes: Vec<String>,
        ttl_seconds: Option<u64>,
    },
    ApiKeyList,
    ApiKeyRevoke {
        key: String,
    },
    /// A new secret for `key`; the old one keeps working for the grace period.
    ApiKeyRotate {
        key: String,
        grace_seconds: Option<u64>,
    },
    /// Sessions of `user` (default: the caller).
    SessionList {
        user: Option<String>,
    },
    /// Terminates one session, or all of a user's sessions.
    SessionTerminate {
        session: Option<String>,
        user: Option<String>,
    },
    /// Entries after `after_seq` that match every filter given, at most
    /// `limit`; one request looks at no more than
    /// [`super::audit::AUDIT_SCAN_PER_REQUEST`] entries and answers where
    /// to continue (`next_after_seq`), even when nothing matched.
    AuditList {
        actor: Option<String>,
        action: Option<String>,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
        after_seq: u64,
        limit: u32,
    },
    /// Verifies one page of the chain: from its start (its checkpoint, once
    /// pruned) when `after_seq` is 0, else continuing the entry `after_seq`
    /// whose hash (hex) the previous page ended with.
    AuditVerify {
        #[serde(default)]
        after_seq: u64,
        #[serde(default)]
        after_hash: String,
    },
    /// The chain's retention, checkpoint and size.
    AuditRetention,
    /// Sets the chain's own retention (operator only); an omitted value
    /// follows the cluster's default, and omitting both returns to it.
    AuditRetentionSet {
        max_age_days: Option<u64>,
        max_entries: Option<u64>,
    },
}

impl IdentityCall {
    /// Whether the call only reads (answered by the serving node after a
    /// read barrier, never proposed).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            IdentityCall::TenantList { .. }
                | IdentityCall::TenantGet
                | IdentityCall::TenantUsage
                | IdentityCall::UserGet { .. }
                | IdentityCall::UserList { .. }
                | IdentityCall::UserExport { .. }
                | IdentityCall::RoleList
                | IdentityCall::TeamList
                | IdentityCall::ApiKeyList
                | IdentityCall::SessionList { .. }
                | IdentityCall::AuditList { .. }
                | IdentityCall::AuditVerify { .. }
                | IdentityCall::AuditRetention
        )
    }

    /// Short name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            IdentityCall::TenantCreate { .. } => "tenant.create",
            IdentityCall::TenantList { .. } => "tenant.list",
            IdentityCall::TenantGet => "tenant.get",
            IdentityCall::TenantUpdate { .. } => "tenant.update",
            IdentityCall::TenantSuspend => "tenant.suspend",
            IdentityCall::TenantResume => "tenant.resume",
            IdentityCall::TenantDelete { .. } => "tenant.delete",
            IdentityCall::TenantUsage => "tenant.usage",
            IdentityCall::UserCreate { .. } => "user.create",
            IdentityCall::UserGet { .. } => "user.get",
            IdentityCall::UserList { .. } => "user.list",
            IdentityCall::UserUpdate { .. } => "user.update",
            IdentityCall::UserSetDisabled { .. } => "user.set_disabled",
            IdentityCall::UserDelete { .. } => "user.delete",
            IdentityCall::UserExport { .. } => "user.export",
            IdentityCall::UserErase { .. } => "user.erase",
            IdentityCall::UserImport { .. } => "user.import",
            IdentityCall::Login { .. } => "login",
            IdentityCall::Logout => "logout",
            IdentityCall::InviteCreate { .. } => "invite.create",
            IdentityCall::InviteAccept { .. } => "invite.accept",
            IdentityCall::RoleCreate { .. } => "role.create",
            IdentityCall::RoleList => "role.list",
            IdentityCall::RoleDelete { .. } => "role.delete",
            IdentityCall::RoleGrant { .. } => "role.grant",
            IdentityCall::RoleRevoke { .. } => "role.revoke",
            IdentityCall::TeamCreate { .. } => "team.create",
            IdentityCall::TeamList => "team.list",
            IdentityCall::TeamDelete { .. } => "team.delete",
            IdentityCall::TeamAdd { .. } => "team.add",
            IdentityCall::TeamRemove { .. } => "team.remove",
            IdentityCall::ApiKeyCreate { .. } => "apikey.create",
            IdentityCall::ApiKeyList => "apikey.list",
            IdentityCall::ApiKeyRevoke { .. } => "apikey.revoke",
            IdentityCall::ApiKeyRotate { .. } => "apikey.rotate",
            IdentityCall::SessionList { .. } => "session.list",
            IdentityCall::SessionTerminate { .. } => "session.terminate",
            IdentityCall::AuditList { .. } => "audit.list",
            IdentityCall::AuditVerify { .. } => "audit.verify",
            IdentityCall::AuditRetention => "audit.retention",
            IdentityCall::AuditRetentionSet { .. } => "audit.retention.set",
        }
    }
}

/// A tenant as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub plan: String,
    /// `active` or `suspended`.
    pub status: String,
    pub quotas: Quotas,
    pub usage: Usage,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// A user as clients see it: never the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub disabled: bool,
    /// Roles granted directly.
    pub roles: Vec<String>,
    /// Teams the user belongs to, directly or through sub-teams.
    pub teams: Vec<String>,
    /// Whether the account can log in with a password.
    pub has_password: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// A role: built-in or custom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RoleView {
    pub name: String,
    pub builtin: bool,
    pub description: String,
    pub permissions: Vec<String>,
    pub inherits: Vec<String>,
    /// Everything the role grants, inheritance included.
    pub effective: Vec<String>,
}

/// A team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct TeamView {
    pub id: String,
    pub name: String,
    /// `user-N` and `team-N` entries.
    pub members: Vec<String>,
    pub roles: Vec<String>,
    pub created_ms: u64,
}

/// An API key without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// Public part of the key, shown to recognize it.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_by: Option<String>,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub revoked_ms: Option<u64>,
    pub last_used_ms: Option<u64>,
    /// `active`, `expired` or `revoked` at the time of the answer.
    pub state: String,
}

/// A login session without its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SessionView {
    pub id: String,
    pub user: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub terminated_ms: Option<u64>,
    pub state: String,
}

/// An audit entry in display form (hashes in hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct AuditView {
    pub seq: u64,
    pub tenant: Option<String>,
    /// `operator`, `user-N`, `key-N`, `erased:…` or `system`.
    pub actor: String,
    pub action: String,
    pub resource: String,
    /// `ok` or the error code of a refused or failed change.
    pub outcome: String,
    pub stamp_ms: u64,
    pub request_id: String,
    pub client_addr: String,
    pub prev_hash: String,
    pub hash: String,
}

impl From<&AuditEntry> for AuditView {
    fn from(e: &AuditEntry) -> Self {
        AuditView {
            seq: e.seq,
            tenant: e.tenant.as_ref().map(|t| t.to_string()),
            actor: e.actor.to_string(),
            action: e.action.clone(),
            resource: e.resource.clone(),
            outcome: match e.outcome {
                AuditOutcome::Ok => "ok".into(),
                AuditOutcome::Error(code) => code.as_str().into(),
            },
            stamp_ms: e.stamp_ms,
            request_id: e.request_id.clone(),
            client_addr: e.client_addr.clone(),
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
        }
    }
}

/// Where a pruned chain starts (hash in hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct CheckpointView {
    /// The last pruned entry.
    pub seq: u64,
    pub hash: String,
    /// The last pruned entry's stamped time.
    pub stamp_ms: u64,
    /// When the latest pruning happened (stamped time).
    pub pruned_at_ms: u64,
}

impl From<&AuditCheckpoint> for CheckpointView {
    fn from(c: &AuditCheckpoint) -> Self {
        CheckpointView { seq: c.seq, hash: hex::encode(c.hash), stamp_ms: c.stamp_ms, pruned_at_ms: c.pruned_at_ms }
    }
}

/// Everything stored about one user (GDPR export).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct UserExport {
    pub tenant: String,
    pub user: UserView,
    pub sessions: Vec<SessionView>,
    pub api_keys_created: Vec<ApiKeyView>,
    /// Audit entries where the user is the actor or the resource.
    pub audit: Vec<AuditView>,
    /// True when `audit` stopped at the export bound.
    pub audit_truncated: bool,
}

/// What the identity service answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum IdentityAnswer {
    Done {
        message: String,
    },
    Created {
        id: String,
    },
    Tenant {
        tenant: TenantView,
    },
    Tenants {
        tenants: Vec<TenantView>,
        more: bool,
    },
    User {
        user: UserView,
    },
    Users {
        users: Vec<UserView>,
        more: bool,
    },
    Imported {
        created: Vec<String>,
    },
    /// The token is shown once.
    Session {
        tenant: String,
        token: String,
        session: SessionView,
    },
    /// The token is shown once.
    Invitation {
        id: String,
        token: String,
        expires_ms: u64,
    },
    /// The full key (`secret`) is shown once.
    ApiKey {
        key: ApiKeyView,
        secret: String,
    },
    Roles {
        roles: Vec<RoleView>,
    },
    Teams {
        teams: Vec<TeamView>,
    },
    ApiKeys {
        keys: Vec<ApiKeyView>,
    },
    Sessions {
        sessions: Vec<SessionView>,
    },
    Audit {
        entries: Vec<AuditView>,
        more: bool,
        /// The `after_seq` to continue with (set exactly when `more`): the
        /// last entry looked at, which need not be the last one returned.
        #[serde(default)]
        next_after_seq: Option<u64>,
    },
    /// One page of verification, or (from the SDK) a whole walk.
    Verified {
        tenant: Option<String>,
        /// Entries verified.
        entries: u64,
        head_seq: u64,
        broken: Option<BrokenLink>,
        /// Where the chain starts once pruned.
        #[serde(default)]
        checkpoint: Option<CheckpointView>,
        /// The entries verified follow this one (0: the chain's start).
        #[serde(default)]
        after_seq: u64,
        /// The last entry verified (or `after_seq` when none was) ...
        #[serde(default)]
        last_seq: u64,
        /// ... and its hash (hex): where the next page continues.
        #[serde(default)]
        last_hash: String,
        /// Whether entries remain after `last_seq`.
        #[serde(default)]
        more: bool,
    },
    /// A chain's retention: its own setting, the cluster default the last
    /// sweep used, and what is kept.
    AuditRetention {
        tenant: Option<String>,
        /// The chain's own setting (`None` fields: the default).
        own: RetentionOverride,
        /// The cluster default carried by the last sweep (none yet: `None`).
        default: Option<AuditRetention>,
        checkpoint: Option<CheckpointView>,
        head_seq: u64,
        /// Entries kept (after the checkpoint).
        kept: u64,
    },
    Usage {
        tenant: String,
        usage: Usage,
        quotas: Quotas,
    },
    UserData {
        data: Box<UserExport>,
    },
}

/// Who proposed a [`Call`], as apply re-resolves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Principal {
    /// The cluster operator (checked against the admin credential hash by the
    /// proposing node).
    Operator,
    /// A login session.
    Session {
        /// Tenant of the session.
        tenant: TenantId,
        /// Whose session it is.
        user: UserId,
        /// Session id.
        id: SessionId,
    },
    /// An API key.
    ApiKey {
        /// Tenant of the key.
        tenant: TenantId,
        /// Key id.
        id: ApiKeyId,
    },
    /// A user whose password the proposing node verified (login only).
    Password {
        /// Tenant of the user.
        tenant: TenantId,
        /// User id.
        user: UserId,
    },
    /// Someone holding an invitation token (accepting it only).
    Invitee,
}

/// A new user as it is proposed (password already hashed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    /// argon2id PHC string, or empty for "no password yet".
    pub password_hash: String,
    pub roles: BTreeSet<RoleName>,
}

/// A mutating operation as it goes through the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Op {
    KvPut {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        if_revision: Option<u64>,
    },
    KvDelete {
        key: String,
        if_revision: Option<u64>,
    },
    TenantCreate {
        id: TenantId,
        name: String,
        plan: String,
        quotas: Quotas,
    },
    TenantUpdate {
        name: Option<String>,
        plan: Option<String>,
        quotas: QuotasPatch,
    },
    TenantSetSuspended {
        suspended: bool,
    },
    TenantDelete,
    UserCreate(NewUser),
    UserImport(Vec<NewUser>),
    UserUpdate {
        user: UserId,
        email: Option<String>,
        display_name: Option<String>,
        password_hash: Option<String>,
    },
    UserSetDisabled {
        user: UserId,
        disabled: bool,
    },
    UserDelete {
        user: UserId,
    },
    UserErase {
        user: UserId,
    },
    SessionCreate {
        user: UserId,
        token_hash: [u8; 32],
        expires_ms: u64,
    },
    SessionTerminate {
        user: UserId,
        session: Option<SessionId>,
    },
    InviteCreate {
        email: String,
        roles: BTreeSet<RoleName>,
        token_hash: [u8; 32],
        expires_ms: u64,
    },
    InviteAccept {
        token_hash: [u8; 32],
        display_name: String,
        password_hash: String,
    },
    RoleUpsert {
        name: RoleName,
        description: String,
        permissions: BTreeSet<Permission>,
        inherits: BTreeSet<RoleName>,
    },
    RoleDelete {
        name: RoleName,
    },
    RoleGrant {
        member: Member,
        role: RoleName,
    },
    RoleRevoke {
        member: Member,
        role: RoleName,
    },
    TeamCreate {
        name: String,
    },
    TeamDelete {
        team: TeamId,
    },
    TeamAdd {
        team: TeamId,
        member: Member,
    },
    TeamRemove {
        team: TeamId,
        member: Member,
    },
    ApiKeyCreate {
        name: String,
        prefix: String,
        secret_hash: [u8; 32],
        scopes: BTreeSet<Permission>,
        expires_ms: Option<u64>,
    },
    ApiKeyRevoke {
        key: ApiKeyId,
    },
    ApiKeyRotate {
        key: ApiKeyId,
        prefix: String,
        secret_hash: [u8; 32],
        grace_ms: u64,
    },
    /// Records that a key was used (throttled by the serving node; not audited).
    ApiKeyTouch {
        key: ApiKeyId,
    },
    DocCreate {
        name: String,
        units: Option<String>,
    },
    /// Commits Loro update bytes to a document (audited only when refused:
    /// the document's history records every committed update).
    DocUpdate {
        doc: DocId,
        #[serde(with = "serde_bytes")]
        update: Vec<u8>,
        bounds: DocBounds,
    },
    DocRename {
        doc: DocId,
        name: String,
    },
    DocSetDeleted {
        doc: DocId,
        deleted: bool,
    },
    DocTag {
        doc: DocId,
        name: String,
        at: Option<u64>,
    },
    /// A change to the tenant's files and folders.
    File(crate::files::FileOp),
    /// A render job submitted or cancelled.
    Render(crate::render::RenderOp),
    /// Sets the audit retention of the target tenant's chain (or the
    /// cluster's); an empty override returns it to the cluster default.
    AuditRetentionSet {
        retention: RetentionOverride,
    },
}

/// What authorization an [`Op`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `authorize(caller, tenant, permission, resource)` must pass.
    Permission(Permission, Resource),
    /// The op carries its own proof (a verified password, an invitation
    /// token, the key itself) which apply checks instead.
    OwnProof,
}

const fn perm(resource: ResourceKind, action: Action) -> Permission {
    Permission::new(resource, action)
}

impl Op {
    /// Audit action name.
    pub fn name(&self) -> &'static str {
        match self {
            Op::KvPut { .. } => "kv.put",
            Op::KvDelete { .. } => "kv.delete",
            Op::TenantCreate { .. } => "tenant.create",
            Op::TenantUpdate { .. } => "tenant.update",
            Op::TenantSetSuspended { suspended: true } => "tenant.suspend",
            Op::TenantSetSuspended { suspended: false } => "tenant.resume",
            Op::TenantDelete => "tenant.delete",
            Op::UserCreate(_) => "user.create",
            Op::UserImport(_) => "user.import",
            Op::UserUpdate { .. } => "user.update",
            Op::UserSetDisabled { disabled: true, .. } => "user.disable",
            Op::UserSetDisabled { disabled: false, .. } => "user.enable",
            Op::UserDelete { .. } => "user.delete",
            Op::UserErase { .. } => "user.erase",
            Op::SessionCreate { .. } => "session.create",
            Op::SessionTerminate { .. } => "session.terminate",
            Op::InviteCreate { .. } => "invite.create",
            Op::InviteAccept { .. } => "invite.accept",
            Op::RoleUpsert { .. } => "role.upsert",
            Op::RoleDelete { .. } => "role.delete",
            Op::RoleGrant { .. } => "role.grant",
            Op::RoleRevoke { .. } => "role.revoke",
            Op::TeamCreate { .. } => "team.create",
            Op::TeamDelete { .. } => "team.delete",
            Op::TeamAdd { .. } => "team.add",
            Op::TeamRemove { .. } => "team.remove",
            Op::ApiKeyCreate { .. } => "apikey.create",
            Op::ApiKeyRevoke { .. } => "apikey.revoke",
            Op::ApiKeyRotate { .. } => "apikey.rotate",
            Op::ApiKeyTouch { .. } => "apikey.touch",
            Op::DocCreate { .. } => "doc.create",
            Op::DocUpdate { .. } => "doc.update",
            Op::DocRename { .. } => "doc.rename",
            Op::DocSetDeleted { deleted: true, .. } => "doc.delete",
            Op::DocSetDeleted { deleted: false, .. } => "doc.restore",
            Op::DocTag { .. } => "doc.tag",
            Op::File(op) => op.name(),
            Op::Render(op) => op.name(),
            Op::AuditRetentionSet { .. } => "audit.retention",
        }
    }

    /// The authorization this op needs when it targets `tenant` (`None`: the
    /// cluster namespace).
    pub fn required(&self, tenant: Option<&TenantId>) -> Requirement {
        use Action::*;
        use ResourceKind::*;
        let scoped = |p: Permission| {
            Requirement::Permission(p, if tenant.is_some() { Resource::Tenant } else { Resource::Cluster })
        };
        match self {
            Op::KvPut { .. } | Op::KvDelete { .. } => match tenant {
                Some(_) => scoped(perm(Kv, Write)),
                None => Requirement::Permission(perm(Cluster, Admin), Resource::Cluster),
            },
            // Owners may rename their tenant; plan and quotas are the operator's.
            Op::TenantUpdate { name: Some(_), plan: None, quotas } if *quotas == QuotasPatch::default() => {
                scoped(perm(Tenants, Write))
            }
            Op::TenantCreate { .. } | Op::TenantDelete | Op::TenantSetSuspended { .. } | Op::TenantUpdate { .. } => {
                scoped(perm(Tenants, Admin))
            }
            Op::UserCreate(_) | Op::UserImport(_) | Op::InviteCreate { .. } => scoped(perm(Users, Write)),
            Op::UserSetDisabled { .. } | Op::UserDelete { .. } | Op::UserErase { .. } => scoped(perm(Users, Write)),
            Op::UserUpdate { user, .. } | Op::SessionTerminate { user, .. } => {
                Requirement::Permission(perm(Users, Write), Resource::User(*user))
            }
            Op::RoleUpsert { .. } | Op::RoleDelete { .. } | Op::RoleGrant { .. } | Op::RoleRevoke { .. } => {
                scoped(perm(Roles, Write))
            }
            Op::TeamCreate { .. } | Op::TeamDelete { .. } | Op::TeamAdd { .. } | Op::TeamRemove { .. } => {
                scoped(perm(Teams, Write))
            }
            Op::ApiKeyCreate { .. } | Op::ApiKeyRevoke { .. } | Op::ApiKeyRotate { .. } => scoped(perm(ApiKeys, Write)),
            Op::SessionCreate { .. } | Op::InviteAccept { .. } | Op::ApiKeyTouch { .. } => Requirement::OwnProof,
            // Deleting and restoring also need ownership or docs:admin
            // (checked in apply, where the document's owner is known).
            Op::DocCreate { .. }
            | Op::DocUpdate { .. }
            | Op::DocRename { .. }
            | Op::DocSetDeleted { .. }
            | Op::DocTag { .. } => scoped(perm(Docs, Write)),
            // Per-file access (owner, shares, files:admin) is checked in
            // apply, where the file is known.
            Op::File(op) if op.is_personal() => scoped(perm(Files, Read)),
            Op::File(_) => scoped(perm(Files, Write)),
            // Anyone who may see a document may have a picture of it.
            Op::Render(_) => scoped(perm(Docs, Read)),
            // Audit storage is outside quotas and shortening it could hide
            // what an account did: the operator's alone.
            Op::AuditRetentionSet { .. } => match tenant {
                Some(_) => scoped(perm(Tenants, Admin)),
                None => Requirement::Permission(perm(Cluster, Admin), Resource::Cluster),
            },
        }
    }
}

/// A mutating request as it is proposed: who, for which tenant, what, and the
/// request context the audit entry records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Who asks.
    pub principal: Principal,
    /// Target tenant; `None` for the cluster namespace.
    pub tenant: Option<TenantId>,
    /// Request id for the audit trail (client-chosen or generated).
    pub request_id: String,
    /// Client address as the serving node saw it.
    pub client_addr: String,
    /// What to do.
    pub op: Op,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_round_trip_as_tagged_json_and_ops_through_postcard() {
        let call = IdentityCall::RoleGrant { role: "editor".into(), user: Some("user-3".into()), team: None };
        let text = serde_json::to_string(&call).unwrap();
        assert!(text.contains("\"op\":\"role_grant\""), "{text}");
        assert_eq!(serde_json::from_str::<IdentityCall>(&text).unwrap(), call);
        let op = Op::KvPut { key: "k".into(), value: vec![1, 2], if_revision: Some(0) };
        let call = Call {
            principal: Principal::Operator,
            tenant: Some(TenantId::new("acme").unwrap()),
            request_id: "r".into(),
            client_addr: "127.0.0.1:1".into(),
            op,
        };
        let bytes = postcard::to_allocvec(&call).unwrap();
        assert_eq!(postcard::from_bytes::<Call>(&bytes).unwrap(), call);
    }

    #[test]
    fn cluster_namespace_writes_need_the_operator() {
        let kv = Op::KvPut { key: "k".into(), value: vec![], if_revision: None };
        assert_eq!(
            kv.required(None),
            Requirement::Permission(perm(ResourceKind::Cluster, Action::Admin), Resource::Cluster)
        );
        let acme = TenantId::new("acme").unwrap();
        assert_eq!(
            kv.required(Some(&acme)),
            Requirement::Permission(perm(ResourceKind::Kv, Action::Write), Resource::Tenant)
        );
        assert_eq!(Op::TenantDelete.required(Some(&acme)), {
            Requirement::Permission(perm(ResourceKind::Tenants, Action::Admin), Resource::Tenant)
        });
    }
}
