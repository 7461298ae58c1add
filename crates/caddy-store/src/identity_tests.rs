//! Identity apply and read paths against a real state machine on disk:
//! the authorization table, tenant isolation, quotas, bad input, stamped-time
//! credentials and the audit chain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use caddy_core::identity::api::{Call, IdentityAnswer, IdentityCall, NewUser, Op, Principal, QuotasPatch};
use caddy_core::identity::{
    ApiKeyId, Member, Quotas, RetentionOverride, RoleName, SessionId, TeamId, TenantId, UserId,
};
use caddy_core::{CaddyError, Command, ErrorCode, Proposal, ReplyBody, credential_hash};
use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use redb::ReadableTable;

use crate::StateMachineStore;
use crate::backend::Disk;
use crate::types::Entry;

pub(crate) const ADMIN: &str = "caddy_admin_identity_test";

pub(crate) struct H {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) sm: StateMachineStore,
    index: u64,
    pub(crate) now: u64,
}

pub(crate) fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn roles(list: &[&str]) -> BTreeSet<RoleName> {
    list.iter().map(|r| RoleName::new(r).unwrap()).collect()
}

fn new_user(email: &str, role: &[&str]) -> NewUser {
    NewUser { email: email.into(), display_name: email.into(), password_hash: "$argon2id$x".into(), roles: roles(role) }
}

impl H {
    pub(crate) fn new() -> H {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachineStore::open(&Disk::Dir(dir.path().to_path_buf())).unwrap();
        let mut h = H { _dir: dir, sm, index: 0, now: 1_000_000 };
        h.command(Command::InitCluster { cluster_id: "c".into(), admin_credential_hash: credential_hash(ADMIN) })
            .unwrap();
        h
    }

    /// A harness over an existing state machine in `dir`, not initialized.
    pub(crate) fn on(dir: tempfile::TempDir, sm: StateMachineStore) -> H {
        H { _dir: dir, sm, index: 0, now: 1_000_000 }
    }

    pub(crate) fn command(&mut self, command: Command) -> Result<ReplyBody, CaddyError> {
        self.command_from(None, command)
    }

    /// Applies `command` as a client lane's request `origin`.
    pub(crate) fn command_from(
        &mut self,
        origin: Option<caddy_core::ClientSeq>,
        command: Command,
    ) -> Result<ReplyBody, CaddyError> {
        self.index += 1;
        self.now += 1;
        let entry = Entry::new(
            openraft::testing::log_id::<crate::TypeConfig>(1, 1, self.index),
            EntryPayload::Normal(Proposal { origin, stamp_ms: self.now, command }),
        );
        self.sm.apply_entries(vec![entry]).unwrap().remove(0).0
    }

    /// Proposes `op` as the holder of `credential`, on the lane `origin`.
    pub(crate) fn call_from(
        &mut self,
        credential: &str,
        tenant: Option<&str>,
        origin: caddy_core::ClientSeq,
        op: Op,
    ) -> Result<ReplyBody, CaddyError> {
        let principal = self.sm.authenticate(credential, self.now)?.0;
        let call = Call {
            principal,
            tenant: tenant.map(t),
            request_id: format!("{:016x}-{}", origin.client_id, origin.sequence),
            client_addr: "127.0.0.1:4433".into(),
            op,
        };
        self.command_from(Some(origin), Command::Call(Box::new(call)))
    }

    /// Applies a membership entry: `voters`, plus `learners`.
    pub(crate) fn membership(&mut self, voters: &[u64], learners: &[u64]) {
        self.index += 1;
        let m = openraft::Membership::new_with_defaults(
            vec![voters.iter().copied().collect()],
            voters.iter().chain(learners).copied(),
        );
        let entry =
            Entry::new(openraft::testing::log_id::<crate::TypeConfig>(1, 1, self.index), EntryPayload::Membership(m));
        self.sm.apply_entries(vec![entry]).unwrap();
    }

    /// Applies `commands` in one batch (one transaction), each a millisecond
    /// after the last.
    pub(crate) fn commands(&mut self, commands: Vec<Command>) -> Vec<Result<ReplyBody, CaddyError>> {
        let entries = commands
            .into_iter()
            .map(|command| {
                self.index += 1;
                self.now += 1;
                Entry::new(
                    openraft::testing::log_id::<crate::TypeConfig>(1, 1, self.index),
                    EntryPayload::Normal(Proposal { origin: None, stamp_ms: self.now, command }),
                )
            })
            .collect();
        self.sm.apply_entries(entries).unwrap().into_iter().map(|r| r.0).collect()
    }

    fn as_principal(&mut self, principal: Principal, tenant: Option<&str>, op: Op) -> Result<ReplyBody, CaddyError> {
        let call = Call {
            principal,
            tenant: tenant.map(t),
            request_id: format!("req-{}", self.index + 1),
            client_addr: "127.0.0.1:4433".into(),
            op,
        };
        self.command(Command::Call(Box::new(call)))
    }

    /// Proposes `op` as the holder of `credential` would (the serving node
    /// resolves the credential to a principal first).
    pub(crate) fn call(&mut self, credential: &str, tenant: Option<&str>, op: Op) -> Result<ReplyBody, CaddyError> {
        let principal = self.sm.authenticate(credential, self.now)?.0;
        self.as_principal(principal, tenant, op)
    }

    pub(crate) fn op(&mut self, tenant: Option<&str>, op: Op) -> ReplyBody {
        self.call(ADMIN, tenant, op).unwrap()
    }

    pub(crate) fn read(
        &self,
        credential: &str,
        tenant: Option<&str>,
        call: IdentityCall,
    ) -> Result<IdentityAnswer, CaddyError> {
        let (_, caller) = self.sm.authenticate(credential, self.now)?;
        self.sm.identity_read(&caller, tenant.map(t).as_ref(), &call, self.now)
    }

    pub(crate) fn tenant(&mut self, id: &str, quotas: Quotas) {
        self.op(None, Op::TenantCreate { id: t(id), name: id.into(), plan: String::new(), quotas });
    }

    pub(crate) fn user(&mut self, tenant: &str, email: &str, role: &[&str]) -> UserId {
        match self.op(Some(tenant), Op::UserCreate(new_user(email, role))) {
            ReplyBody::Created { id } => UserId(id),
            other => panic!("{other:?}"),
        }
    }

    /// A session token for `user`, as a login would create it.
    pub(crate) fn login(&mut self, tenant: &str, user: UserId, ttl_ms: u64) -> String {
        let token = format!("cs_{tenant}_{}_{}", user.0, self.index);
        let op = Op::SessionCreate { user, token_hash: credential_hash(&token), expires_ms: self.now + ttl_ms };
        self.as_principal(Principal::Password { tenant: t(tenant), user }, Some(tenant), op).unwrap();
        token
    }

    pub(crate) fn api_key(&mut self, tenant: &str, scopes: &[&str]) -> (ApiKeyId, String) {
        let prefix = format!("p{}", self.index);
        let key = format!("ck_{prefix}_secret{}", self.index);
        let op = Op::ApiKeyCreate {
            name: "ci".into(),
            prefix,
            secret_hash: credential_hash(&key),
            scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
            expires_ms: None,
        };
        match self.op(Some(tenant), op) {
            ReplyBody::Created { id } => (ApiKeyId(id), key),
            other => panic!("{other:?}"),
        }
    }

    pub(crate) fn audit(&self, tenant: Option<&str>) -> Vec<caddy_core::identity::api::AuditView> {
        let call = IdentityCall::AuditList {
            actor: None,
            action: None,
            from_ms: None,
            to_ms: None,
            after_seq: 0,
            limit: 1000,
        };
        match self.read(ADMIN, tenant, call).unwrap() {
            IdentityAnswer::Audit { entries, .. } => entries,
            other => panic!("{other:?}"),
        }
    }

    fn verify(&self, tenant: Option<&str>) -> (u64, Option<caddy_core::identity::audit::BrokenLink>) {
        match self.read(ADMIN, tenant, IdentityCall::AuditVerify { after_seq: 0, after_hash: String::new() }).unwrap() {
            IdentityAnswer::Verified { entries, broken, .. } => (entries, broken),
            other => panic!("{other:?}"),
        }
    }
}

/// The callers of the authorization table, by name.
struct World {
    h: H,
    credentials: Vec<(&'static str, String)>,
    target: UserId,
    editor: UserId,
    team: TeamId,
    key: ApiKeyId,
}

fn world() -> World {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    h.tenant("globex", Quotas::default());
    let owner = h.user("acme", "owner@acme.test", &["owner"]);
    let admin = h.user("acme", "admin@acme.test", &["admin"]);
    let editor = h.user("acme", "editor@acme.test", &["editor"]);
    let viewer = h.user("acme", "viewer@acme.test", &["viewer"]);
    let target = h.user("acme", "target@acme.test", &["viewer"]);
    let stale = h.user("acme", "stale@acme.test", &["admin"]);
    let foreign = h.user("globex", "admin@globex.test", &["admin"]);
    let team = match h.op(Some("acme"), Op::TeamCreate { name: "designers".into() }) {
        ReplyBody::Created { id } => TeamId(id),
        other => panic!("{other:?}"),
    };
    let (key, key_secret) = h.api_key("acme", &["kv:*", "users:read"]);
    let (revoked, revoked_secret) = h.api_key("acme", &["kv:*"]);
    h.op(Some("acme"), Op::ApiKeyRevoke { key: revoked });
    let mut credentials = vec![("operator", ADMIN.to_string())];
    for (name, user) in [("owner", owner), ("admin", admin), ("editor", editor), ("viewer", viewer)] {
        let token = h.login("acme", user, 3_600_000);
        credentials.push((name, token));
    }
    let expired = h.login("acme", stale, 5);
    h.now += 10;
    credentials.push(("expired-session", expired));
    credentials.push(("key", key_secret));
    credentials.push(("revoked-key", revoked_secret));
    let foreign = h.login("globex", foreign, 3_600_000);
    credentials.push(("other-tenant-admin", foreign));
    credentials.push(("anonymous", String::new()));
    World { h, credentials, target, editor, team, key }
}

/// One write of the table: which callers it must succeed for.
type OpFactory = Box<dyn Fn(&mut World, &str) -> (Option<&'static str>, Op)>;

fn row(
    allowed: &'static [&'static str],
    f: impl Fn(&mut World, &str) -> (Option<&'static str>, Op) + 'static,
) -> (&'static [&'static str], OpFactory) {
    (allowed, Box::new(f))
}

const OPERATOR_ONLY: &[&str] = &["operator"];
const ADMINS: &[&str] = &["operator", "owner", "admin"];
const WRITERS: &[&str] = &["operator", "owner", "admin", "editor", "key"];

fn fresh_user(w: &mut World) -> UserId {
    let n = w.h.index;
    w.h.user("acme", &format!("fresh{n}@acme.test"), &["viewer"])
}

#[test]
fn authorization_table_for_every_write() {
    let mut w = world();
    let table: Vec<(&str, (&[&str], OpFactory))> = vec![
        (
            "kv.put",
            row(WRITERS, |_, _| (Some("acme"), Op::KvPut { key: "k".into(), value: b"v".to_vec(), if_revision: None })),
        ),
        ("kv.delete", row(WRITERS, |_, _| (Some("acme"), Op::KvDelete { key: "k".into(), if_revision: None }))),
        (
            "kv.put cluster",
            row(OPERATOR_ONLY, |_, _| (None, Op::KvPut { key: "k".into(), value: vec![], if_revision: None })),
        ),
        (
            "tenant.create",
            row(OPERATOR_ONLY, |w, _| {
                let id = format!("new-{}", w.h.index);
                (
                    None,
                    Op::TenantCreate { id: t(&id), name: id.clone(), plan: String::new(), quotas: Quotas::default() },
                )
            }),
        ),
        (
            "tenant.update",
            row(OPERATOR_ONLY, |_, _| {
                (
                    Some("acme"),
                    Op::TenantUpdate { name: None, plan: Some("gold".into()), quotas: QuotasPatch::default() },
                )
            }),
        ),
        (
            "tenant.rename",
            row(&["operator", "owner"], |_, _| {
                (
                    Some("acme"),
                    Op::TenantUpdate { name: Some("Acme".into()), plan: None, quotas: QuotasPatch::default() },
                )
            }),
        ),
        (
            "audit.retention",
            row(OPERATOR_ONLY, |_, _| {
                let own = RetentionOverride { max_age_ms: None, max_entries: Some(1_000_000) };
                (Some("acme"), Op::AuditRetentionSet { retention: own })
            }),
        ),
        (
            "audit.retention cluster",
            row(OPERATOR_ONLY, |_, _| (None, Op::AuditRetentionSet { retention: RetentionOverride::default() })),
        ),
        ("tenant.resume", row(OPERATOR_ONLY, |_, _| (Some("acme"), Op::TenantSetSuspended { suspended: false }))),
        (
            "tenant.delete",
            row(OPERATOR_ONLY, |w, who| {
                if who == "operator" {
                    w.h.tenant("doomed", Quotas::default());
                    (Some("doomed"), Op::TenantDelete)
                } else {
                    (Some("acme"), Op::TenantDelete)
                }
            }),
        ),
        (
            "user.create",
            row(ADMINS, |w, _| {
                (Some("acme"), Op::UserCreate(new_user(&format!("n{}@acme.test", w.h.index), &["viewer"])))
            }),
        ),
        (
            "user.update",
            row(ADMINS, |w, _| {
                (
                    Some("acme"),
                    Op::UserUpdate { user: w.target, email: None, display_name: Some("T".into()), password_hash: None },
                )
            }),
        ),
        (
            "user.update self",
            row(&["operator", "owner", "admin", "editor"], |w, _| {
                (
                    Some("acme"),
                    Op::UserUpdate {
                        user: w.editor,
                        email: None,
                        display_name: Some("Ed".into()),
                        password_hash: None,
                    },
                )
            }),
        ),
        (
            "user.disable",
            row(ADMINS, |w, _| (Some("acme"), Op::UserSetDisabled { user: fresh_user(w), disabled: true })),
        ),
        ("user.delete", row(ADMINS, |w, _| (Some("acme"), Op::UserDelete { user: fresh_user(w) }))),
        ("user.erase", row(ADMINS, |w, _| (Some("acme"), Op::UserErase { user: fresh_user(w) }))),
        (
            "user.import",
            row(ADMINS, |w, _| {
                (Some("acme"), Op::UserImport(vec![new_user(&format!("i{}@acme.test", w.h.index), &[])]))
            }),
        ),
        (
            "session.terminate",
            row(ADMINS, |w, _| {
                let u = fresh_user(w);
                (Some("acme"), Op::SessionTerminate { user: u, session: None })
            }),
        ),
        (
            "invite.create",
            row(ADMINS, |w, _| {
                (
                    Some("acme"),
                    Op::InviteCreate {
                        email: format!("inv{}@acme.test", w.h.index),
                        roles: roles(&["viewer"]),
                        token_hash: credential_hash(&format!("ci_{}", w.h.index)),
                        expires_ms: w.h.now + 60_000,
                    },
                )
            }),
        ),
        (
            "role.upsert",
            row(ADMINS, |_, _| {
                (
                    Some("acme"),
                    Op::RoleUpsert {
                        name: RoleName::new("auditor").unwrap(),
                        description: String::new(),
                        permissions: ["audit:read".parse().unwrap()].into(),
                        inherits: roles(&["viewer"]),
                    },
                )
            }),
        ),
        (
            "role.grant",
            row(ADMINS, |w, _| {
                (Some("acme"), Op::RoleGrant { member: Member::User(w.target), role: RoleName::new("viewer").unwrap() })
            }),
        ),
        (
            "role.grant team",
            row(ADMINS, |w, _| {
                (Some("acme"), Op::RoleGrant { member: Member::Team(w.team), role: RoleName::new("viewer").unwrap() })
            }),
        ),
        ("team.create", row(ADMINS, |w, _| (Some("acme"), Op::TeamCreate { name: format!("team{}", w.h.index) }))),
        ("team.add", row(ADMINS, |w, _| (Some("acme"), Op::TeamAdd { team: w.team, member: Member::User(w.target) }))),
        (
            "apikey.create",
            row(ADMINS, |w, _| {
                (
                    Some("acme"),
                    Op::ApiKeyCreate {
                        name: "k".into(),
                        prefix: format!("q{}", w.h.index),
                        secret_hash: [7; 32],
                        scopes: ["kv:read".parse().unwrap()].into(),
                        expires_ms: None,
                    },
                )
            }),
        ),
        (
            "apikey.rotate",
            row(ADMINS, |w, _| {
                let (id, _) = w.h.api_key("acme", &["kv:read"]);
                (
                    Some("acme"),
                    Op::ApiKeyRotate {
                        key: id,
                        prefix: format!("r{}", w.h.index),
                        secret_hash: [8; 32],
                        grace_ms: 1000,
                    },
                )
            }),
        ),
        (
            "apikey.revoke",
            row(ADMINS, |w, _| {
                let (id, _) = w.h.api_key("acme", &["kv:read"]);
                (Some("acme"), Op::ApiKeyRevoke { key: id })
            }),
        ),
        (
            "role.delete",
            row(ADMINS, |w, _| {
                let name = format!("tmp{}", w.h.index);
                w.h.op(
                    Some("acme"),
                    Op::RoleUpsert {
                        name: RoleName::new(&name).unwrap(),
                        description: String::new(),
                        permissions: BTreeSet::new(),
                        inherits: BTreeSet::new(),
                    },
                );
                (Some("acme"), Op::RoleDelete { name: RoleName::new(&name).unwrap() })
            }),
        ),
        (
            "team.delete",
            row(ADMINS, |w, _| {
                let id = match w.h.op(Some("acme"), Op::TeamCreate { name: format!("gone{}", w.h.index) }) {
                    ReplyBody::Created { id } => TeamId(id),
                    other => panic!("{other:?}"),
                };
                (Some("acme"), Op::TeamDelete { team: id })
            }),
        ),
    ];
    let credentials = w.credentials.clone();
    let mut checked = 0;
    for (name, (allowed, factory)) in &table {
        for (who, credential) in &credentials {
            let (tenant, op) = factory(&mut w, who);
            let before = w.h.audit(Some("acme")).len();
            let result = w.h.call(credential, tenant, op);
            let expected_ok = allowed.contains(who);
            match (&result, expected_ok) {
                (Ok(_), true) => {}
                (Err(e), false) => {
                    let want = match *who {
                        "anonymous" | "expired-session" | "revoked-key" => ErrorCode::Unauthenticated,
                        _ => ErrorCode::PermissionDenied,
                    };
                    assert_eq!(e.code, want, "{name} as {who}: {}", e.message);
                    // A refused write by an acme credential is audited in acme's chain.
                    if !matches!(*who, "operator" | "anonymous" | "other-tenant-admin") {
                        let after = w.h.audit(Some("acme"));
                        assert_eq!(after.len(), before + 1, "{name} as {who}: refusal audited");
                        assert_eq!(after.last().unwrap().outcome, want.as_str(), "{name} as {who}");
                    }
                }
                (r, _) => {
                    panic!("{name} as {who}: expected {}, got {r:?}", if expected_ok { "success" } else { "refusal" })
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, table.len() * credentials.len());
    // Revoking the key used above refuses its next write.
    let key_secret = credentials.iter().find(|(n, _)| *n == "key").unwrap().1.clone();
    w.h.op(Some("acme"), Op::ApiKeyRevoke { key: w.key });
    let err = w.h.call(&key_secret, Some("acme"), Op::KvPut { key: "x".into(), value: vec![], if_revision: None });
    assert_eq!(err.unwrap_err().code, ErrorCode::Unauthenticated);
}

#[test]
fn authorization_table_for_every_read() {
    let w = world();
    let all_roles: &[&str] = &["operator", "owner", "admin", "editor", "viewer"];
    let target = w.target.to_string();
    let audit_list =
        IdentityCall::AuditList { actor: None, action: None, from_ms: None, to_ms: None, after_seq: 0, limit: 10 };
    let table: Vec<(IdentityCall, &[&str])> = vec![
        (IdentityCall::TenantList { start_after: String::new(), limit: 10 }, OPERATOR_ONLY),
        (IdentityCall::TenantGet, all_roles),
        (IdentityCall::TenantUsage, all_roles),
        (IdentityCall::UserGet { user: target.clone() }, &["operator", "owner", "admin", "editor", "viewer", "key"]),
        (
            IdentityCall::UserGet { user: "target@acme.test".into() },
            &["operator", "owner", "admin", "editor", "viewer", "key"],
        ),
        (
            IdentityCall::UserList { search: "acme".into(), start_after: String::new(), limit: 10 },
            &["operator", "owner", "admin", "editor", "viewer", "key"],
        ),
        (IdentityCall::UserExport { user: target.clone() }, &["operator", "owner", "admin", "editor", "viewer", "key"]),
        (IdentityCall::RoleList, all_roles),
        (IdentityCall::TeamList, all_roles),
        (IdentityCall::ApiKeyList, ADMINS),
        (
            IdentityCall::SessionList { user: Some(target.clone()) },
            &["operator", "owner", "admin", "editor", "viewer", "key"],
        ),
        (audit_list, ADMINS),
        (IdentityCall::AuditVerify { after_seq: 0, after_hash: String::new() }, ADMINS),
        (IdentityCall::AuditRetention, ADMINS),
    ];
    for (call, allowed) in &table {
        for (who, credential) in &w.credentials {
            let tenant =
                if matches!(call, IdentityCall::TenantList { .. }) && *who == "operator" { None } else { Some("acme") };
            let result = w.h.read(credential, tenant, call.clone());
            match (&result, allowed.contains(who)) {
                (Ok(answer), true) => {
                    let text = serde_json::to_string(answer).unwrap();
                    assert!(!text.contains("globex.test"), "{} as {who} leaked another tenant: {text}", call.name());
                    assert!(!text.contains("argon2"), "{} as {who} leaked a password hash", call.name());
                }
                (Err(e), false) => {
                    let want = match *who {
                        "anonymous" | "expired-session" | "revoked-key" => ErrorCode::Unauthenticated,
                        _ => ErrorCode::PermissionDenied,
                    };
                    assert_eq!(e.code, want, "{} as {who}: {}", call.name(), e.message);
                }
                (r, ok) => {
                    panic!("{} as {who}: expected {}, got {r:?}", call.name(), if ok { "success" } else { "refusal" })
                }
            }
        }
    }
}

#[test]
fn another_tenant_is_never_reachable() {
    let mut w = world();
    let foreign = w.credentials.iter().find(|(n, _)| *n == "other-tenant-admin").unwrap().1.clone();
    let acme_user = w.target;
    // Every read, aimed at acme, and aimed at its own tenant with acme's ids.
    let reads = [
        IdentityCall::TenantGet,
        IdentityCall::TenantUsage,
        IdentityCall::UserGet { user: "owner@acme.test".into() },
        IdentityCall::UserGet { user: acme_user.to_string() },
        IdentityCall::UserList { search: String::new(), start_after: String::new(), limit: 100 },
        IdentityCall::UserExport { user: acme_user.to_string() },
        IdentityCall::RoleList,
        IdentityCall::TeamList,
        IdentityCall::ApiKeyList,
        IdentityCall::SessionList { user: Some(acme_user.to_string()) },
        IdentityCall::AuditList { actor: None, action: None, from_ms: None, to_ms: None, after_seq: 0, limit: 100 },
        IdentityCall::AuditVerify { after_seq: 0, after_hash: String::new() },
        IdentityCall::AuditRetention,
        IdentityCall::TenantList { start_after: String::new(), limit: 100 },
    ];
    for call in &reads {
        assert!(w.h.read(&foreign, Some("acme"), call.clone()).is_err(), "{} reached acme", call.name());
        assert!(w.h.read(&foreign, None, call.clone()).is_err(), "{} answered without a tenant", call.name());
        if let Ok(answer) = w.h.read(&foreign, Some("globex"), call.clone()) {
            let text = serde_json::to_string(&answer).unwrap();
            assert!(!text.contains("acme.test"), "{} via globex ids leaked acme data: {text}", call.name());
        }
    }
    // Every write, aimed at acme: refused, and acme is unchanged.
    let acme_before = w.h.read(ADMIN, Some("acme"), IdentityCall::TenantUsage).unwrap();
    let writes = vec![
        Op::KvPut { key: "k".into(), value: b"v".to_vec(), if_revision: None },
        Op::KvDelete { key: "k".into(), if_revision: None },
        Op::UserCreate(new_user("mole@globex.test", &["owner"])),
        Op::UserUpdate { user: acme_user, email: None, display_name: Some("x".into()), password_hash: None },
        Op::UserSetDisabled { user: acme_user, disabled: true },
        Op::UserDelete { user: acme_user },
        Op::UserErase { user: acme_user },
        Op::SessionTerminate { user: acme_user, session: None },
        Op::InviteCreate {
            email: "m@globex.test".into(),
            roles: roles(&["owner"]),
            token_hash: [1; 32],
            expires_ms: u64::MAX,
        },
        Op::RoleUpsert {
            name: RoleName::new("x").unwrap(),
            description: String::new(),
            permissions: BTreeSet::new(),
            inherits: BTreeSet::new(),
        },
        Op::RoleGrant { member: Member::User(acme_user), role: RoleName::new("owner").unwrap() },
        Op::TeamCreate { name: "t".into() },
        Op::TeamAdd { team: w.team, member: Member::User(acme_user) },
        Op::ApiKeyCreate {
            name: "k".into(),
            prefix: "zz".into(),
            secret_hash: [2; 32],
            scopes: ["kv:read".parse().unwrap()].into(),
            expires_ms: None,
        },
        Op::ApiKeyRevoke { key: w.key },
        Op::TenantSetSuspended { suspended: true },
        Op::AuditRetentionSet { retention: RetentionOverride { max_age_ms: None, max_entries: Some(1) } },
        Op::TenantDelete,
    ];
    for op in writes {
        let name = op.name();
        let err = w.h.call(&foreign, Some("acme"), op).unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied, "{name}: {}", err.message);
    }
    assert_eq!(w.h.read(ADMIN, Some("acme"), IdentityCall::TenantUsage).unwrap(), acme_before);
    assert!(w.h.sm.get("t/acme/kv/k").unwrap().is_none());
    // The attempts are in the attacker's own chain, not in acme's.
    let globex = w.h.audit(Some("globex"));
    assert!(globex.iter().any(|e| e.resource.contains("in tenant acme") && e.outcome == "permission_denied"));
    assert!(w.h.audit(Some("acme")).iter().all(|e| e.tenant.as_deref() == Some("acme")));
}

#[test]
fn quotas_refuse_and_change_nothing() {
    let mut h = H::new();
    let quotas = Quotas { max_users: 2, max_storage_bytes: 40, max_api_keys: 1, ..Quotas::default() };
    h.tenant("tiny", quotas);
    h.user("tiny", "a@tiny.test", &[]);
    h.user("tiny", "b@tiny.test", &[]);
    let usage = |h: &H| match h.read(ADMIN, Some("tiny"), IdentityCall::TenantUsage).unwrap() {
        IdentityAnswer::Usage { usage, .. } => usage,
        other => panic!("{other:?}"),
    };
    let before = usage(&h);
    let refused: Vec<Op> =
        vec![Op::UserCreate(new_user("c@tiny.test", &[])), Op::UserImport(vec![new_user("d@tiny.test", &[])])];
    for op in refused {
        let err = h.call(ADMIN, Some("tiny"), op).unwrap_err();
        assert_eq!(err.code, ErrorCode::ResourceExhausted, "{}", err.message);
        assert!(err.message.contains("max_users"), "{}", err.message);
    }
    // Invitations made before the quota filled are refused on acceptance.
    h.op(
        Some("tiny"),
        Op::TenantUpdate { name: None, plan: None, quotas: QuotasPatch { max_users: Some(3), ..Default::default() } },
    );
    h.op(
        Some("tiny"),
        Op::InviteCreate {
            email: "e@tiny.test".into(),
            roles: BTreeSet::new(),
            token_hash: [5; 32],
            expires_ms: u64::MAX,
        },
    );
    h.user("tiny", "c@tiny.test", &[]);
    let accept = Op::InviteAccept { token_hash: [5; 32], display_name: "E".into(), password_hash: String::new() };
    let err = h.as_principal(Principal::Invitee, Some("tiny"), accept).unwrap_err();
    assert_eq!(err.code, ErrorCode::ResourceExhausted);
    // API keys.
    h.api_key("tiny", &["kv:read"]);
    let op = Op::ApiKeyCreate {
        name: "k2".into(),
        prefix: "second".into(),
        secret_hash: [3; 32],
        scopes: ["kv:read".parse().unwrap()].into(),
        expires_ms: None,
    };
    let err = h.call(ADMIN, Some("tiny"), op).unwrap_err();
    assert_eq!(err.code, ErrorCode::ResourceExhausted);
    assert!(err.message.contains("max_api_keys"), "{}", err.message);
    // Storage: the key-value bytes of the tenant.
    h.op(Some("tiny"), Op::KvPut { key: "k".into(), value: vec![0; 30], if_revision: None });
    let before_kv = usage(&h);
    assert_eq!(before_kv.storage_bytes, 31);
    let err = h.call(ADMIN, Some("tiny"), Op::KvPut { key: "k2".into(), value: vec![0; 20], if_revision: None });
    assert_eq!(err.unwrap_err().code, ErrorCode::ResourceExhausted);
    assert!(h.sm.get("t/tiny/kv/k2").unwrap().is_none());
    // Overwriting with a smaller value frees space; deleting frees it all.
    h.op(Some("tiny"), Op::KvPut { key: "k".into(), value: vec![0; 5], if_revision: None });
    assert_eq!(usage(&h).storage_bytes, 6);
    h.op(Some("tiny"), Op::KvDelete { key: "k".into(), if_revision: None });
    assert_eq!(usage(&h).storage_bytes, 0);
    let after = usage(&h);
    assert_eq!((after.users, after.api_keys), (before.users + 1, 1));
    // The rate quota is stored for the rate limiter.
    h.op(
        Some("tiny"),
        Op::TenantUpdate {
            name: None,
            plan: None,
            quotas: QuotasPatch { max_requests_per_second: Some(7), ..Default::default() },
        },
    );
    match h.read(ADMIN, Some("tiny"), IdentityCall::TenantGet).unwrap() {
        IdentityAnswer::Tenant { tenant } => assert_eq!(tenant.quotas.max_requests_per_second, 7),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_input_is_typed_and_nothing_is_half_applied() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    let a = h.user("acme", "a@acme.test", &["editor"]);
    let users = |h: &H| match h
        .read(
            ADMIN,
            Some("acme"),
            IdentityCall::UserList { search: String::new(), start_after: String::new(), limit: 100 },
        )
        .unwrap()
    {
        IdentityAnswer::Users { users, .. } => users.len(),
        other => panic!("{other:?}"),
    };
    let cases: Vec<(Op, ErrorCode)> = vec![
        (Op::UserCreate(new_user("not-an-email", &[])), ErrorCode::InvalidArgument),
        (Op::UserCreate(new_user("a@@acme.test", &[])), ErrorCode::InvalidArgument),
        (
            Op::UserCreate(NewUser { display_name: "x".repeat(500), ..new_user("long@acme.test", &[]) }),
            ErrorCode::InvalidArgument,
        ),
        (
            Op::UserCreate(NewUser { display_name: "two\nlines".into(), ..new_user("nl@acme.test", &[]) }),
            ErrorCode::InvalidArgument,
        ),
        (Op::UserCreate(new_user("A@ACME.test", &[])), ErrorCode::AlreadyExists),
        (Op::UserCreate(new_user("r@acme.test", &["no-such-role"])), ErrorCode::NotFound),
        (Op::UserImport(vec![new_user("ok1@acme.test", &[]), new_user("bad", &[])]), ErrorCode::InvalidArgument),
        (
            Op::UserImport(vec![new_user("dup@acme.test", &[]), new_user("DUP@acme.test", &[])]),
            ErrorCode::AlreadyExists,
        ),
        (
            Op::UserUpdate { user: UserId(999), email: None, display_name: None, password_hash: None },
            ErrorCode::NotFound,
        ),
        (
            Op::UserUpdate {
                user: a,
                email: Some("bad".into()),
                display_name: Some("New".into()),
                password_hash: None,
            },
            ErrorCode::InvalidArgument,
        ),
        (Op::UserDelete { user: UserId(999) }, ErrorCode::NotFound),
        (Op::TeamAdd { team: TeamId(999), member: Member::User(a) }, ErrorCode::NotFound),
        (
            Op::RoleGrant { member: Member::User(UserId(999)), role: RoleName::new("viewer").unwrap() },
            ErrorCode::NotFound,
        ),
        (Op::ApiKeyRevoke { key: ApiKeyId(999) }, ErrorCode::NotFound),
        (Op::SessionTerminate { user: a, session: Some(SessionId(999)) }, ErrorCode::NotFound),
        (
            Op::ApiKeyCreate {
                name: "k".into(),
                prefix: "p".into(),
                secret_hash: [0; 32],
                scopes: BTreeSet::new(),
                expires_ms: None,
            },
            ErrorCode::InvalidArgument,
        ),
        (
            Op::TenantUpdate { name: Some(String::new()), plan: None, quotas: QuotasPatch::default() },
            ErrorCode::InvalidArgument,
        ),
    ];
    for (op, code) in cases {
        let name = op.name();
        let before = (users(&h), h.verify(Some("acme")).0);
        let err = h.call(ADMIN, Some("acme"), op).unwrap_err();
        assert_eq!(err.code, code, "{name}: {}", err.message);
        assert_eq!(users(&h), before.0, "{name} changed the users");
        assert_eq!(h.verify(Some("acme")).0, before.1 + 1, "{name}: the failure is audited");
    }
    match h.read(ADMIN, Some("acme"), IdentityCall::UserGet { user: a.to_string() }).unwrap() {
        IdentityAnswer::User { user } => {
            assert_eq!((user.display_name.as_str(), user.email.as_str()), ("a@acme.test", "a@acme.test"))
        }
        other => panic!("{other:?}"),
    }
    // Role cycles.
    let role = |name: &str, inherits: &[&str]| Op::RoleUpsert {
        name: RoleName::new(name).unwrap(),
        description: String::new(),
        permissions: ["docs:read".parse().unwrap()].into(),
        inherits: roles(inherits),
    };
    h.op(Some("acme"), role("a1", &[]));
    h.op(Some("acme"), role("b1", &["a1"]));
    let err = h.call(ADMIN, Some("acme"), role("a1", &["b1"])).unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition);
    assert!(err.message.contains("cycle"), "{}", err.message);
    let err = h.call(ADMIN, Some("acme"), role("owner", &[])).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    // Team cycles.
    let team = |h: &mut H, name: &str| match h.op(Some("acme"), Op::TeamCreate { name: name.into() }) {
        ReplyBody::Created { id } => TeamId(id),
        other => panic!("{other:?}"),
    };
    let (x, y) = (team(&mut h, "x"), team(&mut h, "y"));
    h.op(Some("acme"), Op::TeamAdd { team: x, member: Member::Team(y) });
    let err = h.call(ADMIN, Some("acme"), Op::TeamAdd { team: y, member: Member::Team(x) }).unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition);
    // Unknown tenant.
    let err = h.call(ADMIN, Some("nowhere"), Op::UserCreate(new_user("z@z.test", &[]))).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    let err = h.call(
        ADMIN,
        None,
        Op::TenantCreate { id: t("acme"), name: "dup".into(), plan: String::new(), quotas: Quotas::default() },
    );
    assert_eq!(err.unwrap_err().code, ErrorCode::AlreadyExists);
}

#[test]
fn no_privilege_escalation_through_grants_keys_or_invitations() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    let admin = h.user("acme", "admin@acme.test", &["admin"]);
    let other = h.user("acme", "other@acme.test", &["viewer"]);
    let token = h.login("acme", admin, 60_000);
    let owner = RoleName::new("owner").unwrap();
    for op in [
        Op::RoleGrant { member: Member::User(admin), role: owner.clone() },
        Op::RoleGrant { member: Member::User(other), role: owner.clone() },
        Op::UserCreate(new_user("boss@acme.test", &["owner"])),
        Op::InviteCreate {
            email: "boss2@acme.test".into(),
            roles: [owner.clone()].into(),
            token_hash: [4; 32],
            expires_ms: u64::MAX,
        },
        Op::ApiKeyCreate {
            name: "k".into(),
            prefix: "esc".into(),
            secret_hash: [9; 32],
            scopes: ["tenants:write".parse().unwrap()].into(),
            expires_ms: None,
        },
        Op::RoleUpsert {
            name: RoleName::new("sneaky").unwrap(),
            description: String::new(),
            permissions: BTreeSet::new(),
            inherits: [owner.clone()].into(),
        },
    ] {
        let name = op.name();
        let err = h.call(&token, Some("acme"), op).unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied, "{name}: {}", err.message);
    }
    // Granting what one holds works.
    h.call(&token, Some("acme"), Op::RoleGrant { member: Member::User(other), role: RoleName::new("editor").unwrap() })
        .unwrap();
}

#[test]
fn sessions_keys_and_invitations_follow_stamped_time() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    let u = h.user("acme", "u@acme.test", &["admin"]);
    let token = h.login("acme", u, 100);
    h.call(&token, Some("acme"), Op::KvPut { key: "a".into(), value: vec![], if_revision: None }).unwrap();
    h.now += 100;
    let err =
        h.call(&token, Some("acme"), Op::KvPut { key: "a".into(), value: vec![], if_revision: None }).unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    // Terminate all of a user's sessions.
    let t1 = h.login("acme", u, 60_000);
    let t2 = h.login("acme", u, 60_000);
    h.call(&t1, Some("acme"), Op::SessionTerminate { user: u, session: None }).unwrap();
    for token in [&t1, &t2] {
        assert_eq!(h.sm.authenticate(token, h.now).unwrap_err().code, ErrorCode::Unauthenticated);
    }
    // A disabled user cannot log in; a suspended tenant refuses requests.
    let v = h.user("acme", "v@acme.test", &["editor"]);
    h.op(Some("acme"), Op::UserSetDisabled { user: v, disabled: true });
    let login = Op::SessionCreate { user: v, token_hash: [1; 32], expires_ms: u64::MAX };
    assert_eq!(
        h.as_principal(Principal::Password { tenant: t("acme"), user: v }, Some("acme"), login).unwrap_err().code,
        ErrorCode::PermissionDenied
    );
    let t3 = h.login("acme", u, 60_000);
    h.op(Some("acme"), Op::TenantSetSuspended { suspended: true });
    let err = h.call(&t3, Some("acme"), Op::KvPut { key: "a".into(), value: vec![], if_revision: None }).unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition);
    assert!(err.message.contains("suspended"), "{}", err.message);
    assert!(h.read(&t3, Some("acme"), IdentityCall::TenantGet).unwrap_err().message.contains("suspended"));
    h.op(Some("acme"), Op::TenantSetSuspended { suspended: false });
    // Rotation: the old key works until the grace period ends.
    let (id, old) = h.api_key("acme", &["kv:*"]);
    let new = "ck_rotated_secret".to_string();
    h.op(
        Some("acme"),
        Op::ApiKeyRotate { key: id, prefix: "rotated".into(), secret_hash: credential_hash(&new), grace_ms: 50 },
    );
    h.call(&old, Some("acme"), Op::KvPut { key: "b".into(), value: vec![], if_revision: None }).unwrap();
    h.call(&new, Some("acme"), Op::KvPut { key: "b".into(), value: vec![], if_revision: None }).unwrap();
    h.now += 60;
    assert_eq!(
        h.call(&old, Some("acme"), Op::KvPut { key: "b".into(), value: vec![], if_revision: None }).unwrap_err().code,
        ErrorCode::Unauthenticated
    );
    h.call(&new, Some("acme"), Op::KvPut { key: "b".into(), value: vec![], if_revision: None }).unwrap();
    // Invitations expire and are single-use.
    h.op(
        Some("acme"),
        Op::InviteCreate {
            email: "i@acme.test".into(),
            roles: roles(&["viewer"]),
            token_hash: [6; 32],
            expires_ms: h.now + 10,
        },
    );
    h.op(
        Some("acme"),
        Op::InviteCreate {
            email: "j@acme.test".into(),
            roles: roles(&["viewer"]),
            token_hash: [7; 32],
            expires_ms: h.now + 10_000,
        },
    );
    h.now += 20;
    let accept =
        |hash: u8| Op::InviteAccept { token_hash: [hash; 32], display_name: "I".into(), password_hash: String::new() };
    assert_eq!(
        h.as_principal(Principal::Invitee, Some("acme"), accept(6)).unwrap_err().code,
        ErrorCode::Unauthenticated
    );
    h.as_principal(Principal::Invitee, Some("acme"), accept(7)).unwrap();
    assert_eq!(
        h.as_principal(Principal::Invitee, Some("acme"), accept(7)).unwrap_err().code,
        ErrorCode::Unauthenticated
    );
    let audit = h.audit(Some("acme"));
    let accepted = audit.iter().rev().find(|e| e.action == "invite.accept" && e.outcome == "ok").unwrap();
    assert!(accepted.actor.starts_with("user-"), "{accepted:?}");
}

#[test]
fn erasing_a_user_keeps_the_chain_and_drops_personal_data() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    let u = h.user("acme", "gdpr@acme.test", &["editor"]);
    let token = h.login("acme", u, 60_000);
    h.call(&token, Some("acme"), Op::KvPut { key: "doc".into(), value: vec![1], if_revision: None }).unwrap();
    match h.read(&token, Some("acme"), IdentityCall::UserExport { user: u.to_string() }).unwrap() {
        IdentityAnswer::UserData { data } => {
            assert_eq!(data.user.email, "gdpr@acme.test");
            assert_eq!(data.sessions.len(), 1);
            assert!(data.audit.iter().any(|e| e.action == "kv.put"), "{:?}", data.audit);
        }
        other => panic!("{other:?}"),
    }
    h.op(Some("acme"), Op::UserErase { user: u });
    assert_eq!(h.sm.authenticate(&token, h.now).unwrap_err().code, ErrorCode::Unauthenticated);
    let err = h.read(ADMIN, Some("acme"), IdentityCall::UserGet { user: "gdpr@acme.test".into() }).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    let (entries, broken) = h.verify(Some("acme"));
    assert!(broken.is_none() && entries > 3);
    let audit = serde_json::to_string(&h.audit(Some("acme"))).unwrap();
    assert!(!audit.contains("gdpr@acme.test"), "audit entries name people by id only");
    assert!(audit.contains(&u.to_string()));
}

#[test]
fn audit_chain_verifies_and_names_an_altered_entry() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    for i in 0..20 {
        h.op(Some("acme"), Op::KvPut { key: format!("k{i}"), value: vec![i], if_revision: None });
    }
    let (entries, broken) = h.verify(Some("acme"));
    assert_eq!((entries, broken), (20, None));
    assert_eq!(h.verify(None).1, None, "the cluster chain verifies too");
    let audit = h.audit(Some("acme"));
    assert!(audit.windows(2).all(|w| w[1].prev_hash == w[0].hash && w[1].seq == w[0].seq + 1));
    assert_eq!(audit[3].resource, "kv k3");
    assert_eq!(audit[3].client_addr, "127.0.0.1:4433");
    // Alter entry 7 in place (a well-formed record with a changed field).
    let key = format!("t/acme/audit/{:016x}", 7);
    {
        let txn = h.sm.db().begin_write().unwrap();
        {
            let mut table = txn.open_table(crate::state_machine::IDENT).unwrap();
            let mut entry: caddy_core::identity::AuditEntry =
                crate::state_machine::open_record("audit", table.get(key.as_str()).unwrap().unwrap().value()).unwrap();
            entry.outcome = caddy_core::identity::AuditOutcome::Error(ErrorCode::PermissionDenied);
            table.insert(key.as_str(), crate::state_machine::seal(&entry).unwrap().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let (good, broken) = h.verify(Some("acme"));
    let broken = broken.expect("verify must fail");
    assert_eq!((broken.seq, good), (7, 6), "{broken}");
    assert!(broken.reason.contains("altered"), "{broken}");
    // A removed entry is named too.
    {
        let txn = h.sm.db().begin_write().unwrap();
        txn.open_table(crate::state_machine::IDENT).unwrap().remove(key.as_str()).unwrap();
        txn.commit().unwrap();
    }
    let broken = h.verify(Some("acme")).1.expect("verify must fail");
    assert_eq!(broken.seq, 8, "{broken}");
}

#[test]
fn identity_survives_a_snapshot_round_trip() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    let u = h.user("acme", "snap@acme.test", &["admin"]);
    let token = h.login("acme", u, 60_000);
    h.call(&token, Some("acme"), Op::KvPut { key: "k".into(), value: vec![1], if_revision: None }).unwrap();
    let file = h._dir.path().join("copy.snap");
    h.sm.export(&file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = StateMachineStore::open(&Disk::Dir(dir.path().to_path_buf())).unwrap();
    copy.restore_backup(&file).unwrap();
    let (_, caller) = copy.authenticate(&token, h.now).unwrap();
    let answer = copy
        .identity_read(
            &caller,
            Some(&t("acme")),
            &IdentityCall::AuditVerify { after_seq: 0, after_hash: String::new() },
            h.now,
        )
        .unwrap();
    assert!(matches!(answer, IdentityAnswer::Verified { broken: None, entries: 3, .. }), "{answer:?}");
    assert_eq!(copy.get("t/acme/kv/k").unwrap().unwrap().value, vec![1]);
}

#[test]
fn compare_and_set_errors_name_the_key_as_the_client_did() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    for (tenant, stored) in [(Some("acme"), "t/acme/kv/"), (None, "c/")] {
        let op = Op::KvPut { key: "k1".into(), value: b"v".to_vec(), if_revision: Some(99) };
        let err = h.call(ADMIN, tenant, op).unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition);
        assert!(err.message.contains("\"k1\"") && !err.message.contains(stored), "{}", err.message);
    }
}
