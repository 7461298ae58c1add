//! [`authorize`]: the one function that decides every request. Handlers never
//! check permissions themselves; the server builds a [`Caller`] once per
//! request (credential lookup, expiry judged at the request's time) and calls
//! `authorize` with the target tenant, the permission the request needs and
//! the resource it touches.
//!
//! Decision order (the first rule that applies wins):
//! 1. no credential → `Unauthenticated`;
//! 2. the operator → allowed (everything, any tenant, suspended or not);
//! 3. an expired/terminated session or an expired/revoked key → `Unauthenticated`;
//! 4. a cluster-level target (`tenant: None` or [`Resource::Cluster`]) or an
//!    operator-only permission (`cluster:*`, `tenants:admin`) → `PermissionDenied`;
//! 5. another tenant than the caller's → `PermissionDenied`, with a message that
//!    says nothing about the target;
//! 6. the caller's tenant is suspended → `FailedPrecondition` ("tenant suspended");
//! 7. a disabled user → `PermissionDenied`;
//! 8. a user reading or updating their own record (`users:read`/`users:write`
//!    on [`Resource::User`] of themselves) → allowed;
//! 9. the caller's effective permissions (user: roles direct and through
//!    teams; key: scopes) must grant the action → else `PermissionDenied`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::audit::Actor;
use super::ids::{ApiKeyId, RoleName, TenantId, UserId};
use super::permissions::{Action, Permission, ResourceKind, RoleGraph, permits};
use super::records::{CredentialState, Tenant, TenantStatus, User};
use super::teams::TeamGraph;
use crate::{CaddyError, ErrorCode};

/// A user authenticated by a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCaller {
    /// The user's tenant.
    pub tenant: TenantId,
    /// That tenant's status.
    pub tenant_status: TenantStatus,
    /// The user.
    pub user: UserId,
    /// Whether the user is disabled.
    pub disabled: bool,
    /// The session's state at the request's time.
    pub session: CredentialState,
    /// Roles granted directly and through teams.
    pub roles: BTreeSet<RoleName>,
    /// Effective permissions of `roles`.
    pub permissions: BTreeSet<Permission>,
}

impl UserCaller {
    /// Resolves a user's roles (direct and through `teams`) and permissions.
    pub fn resolve(
        tenant: &Tenant,
        user: &User,
        session: CredentialState,
        teams: &TeamGraph,
        roles: &RoleGraph,
    ) -> Self {
        let all_roles = teams.roles_for_user(user.id, &user.roles);
        UserCaller {
            tenant: tenant.id.clone(),
            tenant_status: tenant.status,
            user: user.id,
            disabled: user.disabled,
            session,
            permissions: roles.permissions_for(&all_roles),
            roles: all_roles,
        }
    }
}

/// A service authenticated by an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCaller {
    /// The key's tenant.
    pub tenant: TenantId,
    /// That tenant's status.
    pub tenant_status: TenantStatus,
    /// The key.
    pub key: ApiKeyId,
    /// The key's scopes (its only permissions).
    pub scopes: BTreeSet<Permission>,
    /// The key's state at the request's time.
    pub state: CredentialState,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    /// No credential.
    Anonymous,
    /// The cluster operator (bootstrap admin credential).
    Operator,
    /// A tenant user.
    User(UserCaller),
    /// A tenant API key.
    ApiKey(ApiKeyCaller),
}

impl Caller {
    /// The caller's tenant (None for the operator and anonymous callers).
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Caller::User(u) => Some(&u.tenant),
            Caller::ApiKey(k) => Some(&k.tenant),
            Caller::Anonymous | Caller::Operator => None,
        }
    }

    /// The actor recorded in audit entries (None for anonymous callers).
    pub fn actor(&self) -> Option<Actor> {
        match self {
            Caller::Anonymous => None,
            Caller::Operator => Some(Actor::Operator),
            Caller::User(u) => Some(Actor::User(u.user)),
            Caller::ApiKey(k) => Some(Actor::ApiKey(k.key)),
        }
    }
}

/// What a request touches (within the target tenant unless `Cluster`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resource {
    /// Cluster-level state: nodes, membership, snapshots, the cluster
    /// key-value namespace, the set of tenants.
    Cluster,
    /// The target tenant as a whole, or anything in it that is not a user
    /// record (a collection, a key, a document, a team, a role...).
    Tenant,
    /// One user record of the target tenant: profile, password, sessions,
    /// data export. A user may always read and update their own (rule 8);
    /// disabling, deleting or granting roles must be authorized with
    /// [`Resource::Tenant`] so they are never self-service.
    User(UserId),
}

fn denied(message: impl Into<String>) -> CaddyError {
    CaddyError::new(ErrorCode::PermissionDenied, message)
}

fn unauthenticated(message: impl Into<String>) -> CaddyError {
    CaddyError::new(ErrorCode::Unauthenticated, message)
}

/// Decides whether `caller` may perform `action` on `resource` in `tenant`
/// (None: cluster level). See the module docs for the rules and their order.
pub fn authorize(
    caller: &Caller,
    tenant: Option<&TenantId>,
    action: Permission,
    resource: &Resource,
) -> Result<(), CaddyError> {
    let (own, status, held, who) = match caller {
        Caller::Anonymous => {
            return Err(unauthenticated("no credential presented: log in (caddyctl login) or use an API key"));
        }
        Caller::Operator => return Ok(()),
        Caller::User(u) => {
            if u.session != CredentialState::Active {
                return Err(unauthenticated("the session has expired or was terminated: log in again"));
            }
            (&u.tenant, u.tenant_status, &u.permissions, format!("user {}", u.user))
        }
        Caller::ApiKey(k) => match k.state {
            CredentialState::Active => (&k.tenant, k.tenant_status, &k.scopes, format!("API key {}", k.key)),
            CredentialState::Expired => {
                return Err(unauthenticated(format!("API key {} has expired: rotate it or create a new one", k.key)));
            }
            CredentialState::Revoked => {
                return Err(unauthenticated(format!("API key {} has been revoked", k.key)));
            }
        },
    };
    let target = match tenant {
        Some(t) if *resource != Resource::Cluster && !action.is_operator_only() => t,
        _ => {
            return Err(denied(format!(
                "{action} on cluster-level resources is reserved for the cluster operator; \
                 tenant credentials cannot perform it"
            )));
        }
    };
    if target != own {
        return Err(denied(format!("this credential belongs to tenant {own} and cannot act on other tenants")));
    }
    if status == TenantStatus::Suspended {
        return Err(CaddyError::precondition(format!(
            "tenant suspended: tenant {own} is suspended; ask the cluster operator to resume it"
        )));
    }
    if let Caller::User(u) = caller {
        if u.disabled {
            return Err(denied(format!("user {} is disabled; ask a tenant admin to enable the account", u.user)));
        }
        let self_service =
            action.resource == ResourceKind::Users && matches!(action.action, Action::Read | Action::Write);
        if self_service && *resource == Resource::User(u.user) {
            return Ok(());
        }
    }
    if permits(held, action) {
        Ok(())
    } else {
        Err(denied(format!(
            "{who} lacks permission {action}; ask a tenant admin for a role or key scope that grants it"
        )))
    }
}

/// Refuses privilege escalation: every permission in `requested` (API key
/// scopes, a custom role's permissions, a role being granted) must be held by
/// the creator (`creator` = their effective permissions; the operator acts
/// with [`Permission::all_tenant`]). Operator-only permissions are never
/// allowed inside a tenant, and an empty request is refused.
pub fn check_scopes_subset(creator: &BTreeSet<Permission>, requested: &BTreeSet<Permission>) -> Result<(), CaddyError> {
    if requested.is_empty() {
        return Err(CaddyError::invalid("choose at least one permission (scope)"));
    }
    if let Some(p) = requested.iter().find(|p| p.is_operator_only()) {
        return Err(CaddyError::invalid(format!("{p} is reserved for the cluster operator and cannot be granted")));
    }
    let missing: Vec<String> = requested.iter().filter(|p| !permits(creator, **p)).map(|p| p.to_string()).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(denied(format!("you cannot grant {} because you do not hold it yourself", missing.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::permissions::{BuiltinRole, RoleDef};
    use crate::identity::quota::{Quotas, Usage};
    use crate::identity::teams::Member;
    use crate::identity::validate::Email;
    use crate::identity::{TeamId, TenantStatus};

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }
    fn p(s: &str) -> Permission {
        s.parse().unwrap()
    }
    fn perms(list: &[&str]) -> BTreeSet<Permission> {
        list.iter().map(|s| p(s)).collect()
    }

    fn user(tenant: &str, id: u64, roles: &[&str]) -> UserCaller {
        let graph = custom_roles();
        let roles: BTreeSet<RoleName> = roles.iter().map(|r| RoleName::new(r).unwrap()).collect();
        UserCaller {
            tenant: t(tenant),
            tenant_status: if tenant == "frozen" { TenantStatus::Suspended } else { TenantStatus::Active },
            user: UserId(id),
            disabled: false,
            session: CredentialState::Active,
            permissions: graph.permissions_for(&roles),
            roles,
        }
    }

    fn key(state: CredentialState, scopes: &[&str]) -> Caller {
        Caller::ApiKey(ApiKeyCaller {
            tenant: t("acme"),
            tenant_status: TenantStatus::Active,
            key: ApiKeyId(9),
            scopes: perms(scopes),
            state,
        })
    }

    fn custom_roles() -> RoleGraph {
        let mut g = RoleGraph::new();
        g.upsert(RoleDef {
            name: RoleName::new("auditor").unwrap(),
            description: "reads the audit trail".into(),
            permissions: perms(&["audit:read"]),
            inherits: [RoleName::new("viewer").unwrap()].into(),
        })
        .unwrap();
        g
    }

    fn caller(name: &str) -> Caller {
        match name {
            "anon" => Caller::Anonymous,
            "operator" => Caller::Operator,
            "owner" | "admin" | "editor" | "viewer" | "auditor" => Caller::User(user("acme", 1, &[name])),
            "disabled-admin" => Caller::User(UserCaller { disabled: true, ..user("acme", 1, &["admin"]) }),
            "expired-session" => {
                Caller::User(UserCaller { session: CredentialState::Expired, ..user("acme", 1, &["admin"]) })
            }
            "suspended-owner" => Caller::User(user("frozen", 1, &["owner"])),
            "key" => key(CredentialState::Active, &["docs:read", "kv:*"]),
            "expired-key" => key(CredentialState::Expired, &["docs:read", "kv:*"]),
            "revoked-key" => key(CredentialState::Revoked, &["docs:read", "kv:*"]),
            other => panic!("unknown caller {other}"),
        }
    }

    use ErrorCode::*;
    const OK: Option<ErrorCode> = None;
    const fn no(code: ErrorCode) -> Option<ErrorCode> {
        Some(code)
    }

    /// caller × target tenant ("-" = cluster level) × action × resource → expected.
    #[rustfmt::skip]
    const TABLE: &[(&str, &str, &str, &str, Option<ErrorCode>)] = &[
        // Operator: everything, everywhere.
        ("operator", "-", "cluster:admin", "cluster", OK),
        ("operator", "-", "tenants:admin", "cluster", OK),
        ("operator", "acme", "tenants:admin", "tenant", OK),
        ("operator", "globex", "users:write", "tenant", OK),
        ("operator", "frozen", "docs:write", "tenant", OK),
        ("operator", "acme", "audit:read", "tenant", OK),
        // No credential.
        ("anon", "acme", "kv:read", "tenant", no(Unauthenticated)),
        ("anon", "-", "cluster:read", "cluster", no(Unauthenticated)),
        // Owner: everything in its tenant except operator-only.
        ("owner", "acme", "users:write", "tenant", OK),
        ("owner", "acme", "teams:write", "tenant", OK),
        ("owner", "acme", "roles:write", "tenant", OK),
        ("owner", "acme", "apikeys:write", "tenant", OK),
        ("owner", "acme", "kv:write", "tenant", OK),
        ("owner", "acme", "docs:write", "tenant", OK),
        ("owner", "acme", "files:write", "tenant", OK),
        ("owner", "acme", "workflows:execute", "tenant", OK),
        ("owner", "acme", "audit:read", "tenant", OK),
        ("owner", "acme", "tenants:write", "tenant", OK),
        ("owner", "acme", "tenants:admin", "tenant", no(PermissionDenied)),
        ("owner", "-", "cluster:read", "cluster", no(PermissionDenied)),
        ("owner", "acme", "kv:read", "cluster", no(PermissionDenied)),
        ("owner", "globex", "kv:read", "tenant", no(PermissionDenied)),
        ("owner", "globex", "users:read", "user", no(PermissionDenied)),
        // Admin: like owner but cannot rename the tenant.
        ("admin", "acme", "users:write", "tenant", OK),
        ("admin", "acme", "roles:write", "tenant", OK),
        ("admin", "acme", "apikeys:write", "tenant", OK),
        ("admin", "acme", "audit:read", "tenant", OK),
        ("admin", "acme", "tenants:read", "tenant", OK),
        ("admin", "acme", "tenants:write", "tenant", no(PermissionDenied)),
        ("admin", "acme", "tenants:admin", "tenant", no(PermissionDenied)),
        ("admin", "-", "cluster:admin", "cluster", no(PermissionDenied)),
        ("admin", "globex", "users:write", "tenant", no(PermissionDenied)),
        // Editor: data, not people.
        ("editor", "acme", "docs:write", "tenant", OK),
        ("editor", "acme", "files:write", "tenant", OK),
        ("editor", "acme", "kv:write", "tenant", OK),
        ("editor", "acme", "workflows:execute", "tenant", OK),
        ("editor", "acme", "users:read", "tenant", OK),
        ("editor", "acme", "users:write", "tenant", no(PermissionDenied)),
        ("editor", "acme", "teams:write", "tenant", no(PermissionDenied)),
        ("editor", "acme", "roles:write", "tenant", no(PermissionDenied)),
        ("editor", "acme", "apikeys:read", "tenant", no(PermissionDenied)),
        ("editor", "acme", "audit:read", "tenant", no(PermissionDenied)),
        ("editor", "globex", "docs:read", "tenant", no(PermissionDenied)),
        // Viewer: reads only; self-service on its own record.
        ("viewer", "acme", "docs:read", "tenant", OK),
        ("viewer", "acme", "files:read", "tenant", OK),
        ("viewer", "acme", "workflows:read", "tenant", OK),
        ("viewer", "acme", "teams:read", "tenant", OK),
        ("viewer", "acme", "docs:write", "tenant", no(PermissionDenied)),
        ("viewer", "acme", "workflows:execute", "tenant", no(PermissionDenied)),
        ("viewer", "acme", "kv:write", "tenant", no(PermissionDenied)),
        ("viewer", "acme", "users:write", "self", OK),
        ("viewer", "acme", "users:write", "user", no(PermissionDenied)),
        ("viewer", "acme", "users:write", "tenant", no(PermissionDenied)),
        ("viewer", "acme", "apikeys:write", "self", no(PermissionDenied)),
        ("viewer", "globex", "users:read", "self", no(PermissionDenied)),
        // Custom role: viewer + audit:read.
        ("auditor", "acme", "audit:read", "tenant", OK),
        ("auditor", "acme", "docs:read", "tenant", OK),
        ("auditor", "acme", "docs:write", "tenant", no(PermissionDenied)),
        ("auditor", "globex", "audit:read", "tenant", no(PermissionDenied)),
        // API key with narrowed scopes.
        ("key", "acme", "docs:read", "tenant", OK),
        ("key", "acme", "kv:write", "tenant", OK),
        ("key", "acme", "docs:write", "tenant", no(PermissionDenied)),
        ("key", "acme", "users:read", "tenant", no(PermissionDenied)),
        ("key", "globex", "kv:read", "tenant", no(PermissionDenied)),
        ("key", "-", "cluster:read", "cluster", no(PermissionDenied)),
        ("expired-key", "acme", "docs:read", "tenant", no(Unauthenticated)),
        ("revoked-key", "acme", "docs:read", "tenant", no(Unauthenticated)),
        // Disabled user, expired session, suspended tenant.
        ("disabled-admin", "acme", "docs:read", "tenant", no(PermissionDenied)),
        ("disabled-admin", "acme", "users:read", "self", no(PermissionDenied)),
        ("expired-session", "acme", "docs:read", "tenant", no(Unauthenticated)),
        ("suspended-owner", "frozen", "docs:read", "tenant", no(FailedPrecondition)),
        ("suspended-owner", "frozen", "users:read", "self", no(FailedPrecondition)),
        ("suspended-owner", "acme", "docs:read", "tenant", no(PermissionDenied)),
    ];

    fn resource(name: &str) -> Resource {
        match name {
            "cluster" => Resource::Cluster,
            "tenant" => Resource::Tenant,
            "self" => Resource::User(UserId(1)),
            "user" => Resource::User(UserId(2)),
            other => panic!("unknown resource {other}"),
        }
    }

    #[test]
    fn authorization_table() {
        for &(who, tenant, action, res, expected) in TABLE {
            let target = (tenant != "-").then(|| t(tenant));
            let got = authorize(&caller(who), target.as_ref(), p(action), &resource(res));
            assert_eq!(got.as_ref().err().map(|e| e.code), expected, "{who} {tenant} {action} {res}: {got:?}");
        }
        // The table covers every resource kind.
        let covered: BTreeSet<ResourceKind> = TABLE.iter().map(|r| p(r.2).resource).collect();
        assert_eq!(covered.len(), ResourceKind::ALL.len());
    }

    #[test]
    fn every_permission_for_every_builtin_role() {
        let mut all: Vec<Permission> = Permission::all_tenant().into_iter().collect();
        all.extend([p("tenants:admin"), p("cluster:read"), p("cluster:admin"), p("docs:*")]);
        for role in BuiltinRole::ALL {
            let me = Caller::User(user("acme", 1, &[role.name().as_str()]));
            for &action in &all {
                let same = authorize(&me, Some(&t("acme")), action, &Resource::Tenant);
                let expected = !action.is_operator_only() && permits(&role.permissions(), action);
                assert_eq!(same.is_ok(), expected, "{role:?} {action}: {same:?}");
                let other = authorize(&me, Some(&t("globex")), action, &Resource::Tenant).unwrap_err();
                assert_eq!(other.code, PermissionDenied, "{role:?} {action}");
                assert!(!other.message.contains("globex"), "no detail about the other tenant: {}", other.message);
                assert!(authorize(&Caller::Operator, Some(&t("globex")), action, &Resource::Tenant).is_ok());
            }
        }
    }

    #[test]
    fn messages_are_actionable() {
        let err = authorize(&caller("viewer"), Some(&t("acme")), p("docs:write"), &Resource::Tenant).unwrap_err();
        assert!(err.message.contains("docs:write") && err.message.contains("user-1"), "{}", err.message);
        let err = authorize(&caller("suspended-owner"), Some(&t("frozen")), p("kv:read"), &Resource::Tenant);
        assert!(err.unwrap_err().message.starts_with("tenant suspended"));
        let err = authorize(&caller("owner"), Some(&t("globex")), p("kv:read"), &Resource::Tenant).unwrap_err();
        assert_eq!(err.message, "this credential belongs to tenant acme and cannot act on other tenants");
    }

    #[test]
    fn resolve_combines_direct_and_team_roles() {
        let tenant = Tenant {
            id: t("acme"),
            name: "Acme".into(),
            plan: "free".into(),
            status: TenantStatus::Active,
            quotas: Quotas::default(),
            usage: Usage::default(),
            created_ms: 0,
            updated_ms: 0,
        };
        let u = User {
            id: UserId(5),
            email: Email::parse("a@acme.io").unwrap(),
            display_name: "A".into(),
            password_hash: "$argon2id$...".into(),
            disabled: false,
            roles: [RoleName::new("viewer").unwrap()].into(),
            created_ms: 0,
            updated_ms: 0,
        };
        let mut teams = TeamGraph::new();
        teams.create(TeamId(1), "auditors", 0).unwrap();
        teams.create(TeamId(2), "security", 0).unwrap();
        teams.add_member(TeamId(2), Member::User(UserId(5))).unwrap();
        teams.add_member(TeamId(1), Member::Team(TeamId(2))).unwrap();
        teams.grant_role(TeamId(1), RoleName::new("auditor").unwrap()).unwrap();
        let me = Caller::User(UserCaller::resolve(&tenant, &u, CredentialState::Active, &teams, &custom_roles()));
        assert!(authorize(&me, Some(&t("acme")), p("audit:read"), &Resource::Tenant).is_ok());
        assert!(authorize(&me, Some(&t("acme")), p("docs:write"), &Resource::Tenant).is_err());
        assert_eq!(me.actor(), Some(Actor::User(UserId(5))));
        assert_eq!(me.tenant(), Some(&t("acme")));
    }

    #[test]
    fn scopes_must_be_a_subset_of_the_creator() {
        let editor = BuiltinRole::Editor.permissions();
        assert!(check_scopes_subset(&editor, &perms(&["docs:read", "kv:*"])).is_ok());
        assert!(check_scopes_subset(&editor, &perms(&["workflows:*"])).is_ok());
        let err = check_scopes_subset(&editor, &perms(&["docs:read", "users:write", "audit:read"])).unwrap_err();
        assert_eq!(err.code, PermissionDenied);
        assert!(err.message.contains("users:write, audit:read"), "{}", err.message);
        let narrow = perms(&["workflows:read", "workflows:write"]);
        assert_eq!(check_scopes_subset(&narrow, &perms(&["workflows:*"])).unwrap_err().code, PermissionDenied);
        assert_eq!(check_scopes_subset(&editor, &BTreeSet::new()).unwrap_err().code, InvalidArgument);
        let all = Permission::all_tenant();
        assert!(check_scopes_subset(&all, &BuiltinRole::Owner.permissions()).is_ok());
        assert_eq!(check_scopes_subset(&all, &perms(&["cluster:read"])).unwrap_err().code, InvalidArgument);
        assert!(check_scopes_subset(&all, &[Permission::new(ResourceKind::Tenants, Action::Any)].into()).is_err());
    }
}
