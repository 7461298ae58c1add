//! Permissions (`resource:action`), the built-in roles and per-tenant custom
//! roles with inheritance ([`RoleGraph`]).
//!
//! A permission grants exactly its action; the only implication is the
//! wildcard `resource:*`, which grants every action of that resource. Write
//! does not imply read: roles list both.
//!
//! `cluster:*` and `tenants:admin` are **operator-only**: no tenant role, custom
//! role or API key scope may contain them ([`Permission::is_operator_only`]),
//! and [`crate::identity::authorize`] refuses them to tenant-scoped callers
//! whatever they hold.
//!
//! **No privilege escalation (for the wiring):** creating or updating a custom
//! role, granting a role (to a user, a team or an invitation) and choosing API
//! key scopes must all pass [`crate::identity::check_scopes_subset`] with the
//! caller's effective permissions: nobody can hand out what they do not hold.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ids::RoleName;
use super::validate::{MAX_DESCRIPTION_CHARS, optional_text};
use crate::{CaddyError, ErrorCode};

/// Most custom roles per tenant.
pub const MAX_CUSTOM_ROLES: usize = 256;
/// Most roles one custom role may inherit from directly.
pub const MAX_ROLE_INHERITS: usize = 16;

/// What a permission is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceKind {
    /// Users of the tenant, their sessions and invitations (`users`).
    Users,
    /// Teams and their membership (`teams`).
    Teams,
    /// Custom roles and role grants (`roles`).
    Roles,
    /// API keys (`apikeys`).
    ApiKeys,
    /// The tenant's key-value namespace / settings (`kv`).
    Kv,
    /// Documents (`docs`).
    Docs,
    /// Files (`files`).
    Files,
    /// Workflows (`workflows`).
    Workflows,
    /// The tenant's audit trail (`audit`).
    Audit,
    /// Tenants: `read`/`write` the caller's own tenant, `admin` for the
    /// operator's create/suspend/resume/delete/quotas/list-all (`tenants`).
    Tenants,
    /// The cluster: nodes, membership, snapshots, the cluster key-value
    /// namespace (`cluster`); operator-only.
    Cluster,
}

impl ResourceKind {
    /// Every resource kind.
    pub const ALL: [ResourceKind; 11] = [
        ResourceKind::Users,
        ResourceKind::Teams,
        ResourceKind::Roles,
        ResourceKind::ApiKeys,
        ResourceKind::Kv,
        ResourceKind::Docs,
        ResourceKind::Files,
        ResourceKind::Workflows,
        ResourceKind::Audit,
        ResourceKind::Tenants,
        ResourceKind::Cluster,
    ];

    /// Name used in `resource:action`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Users => "users",
            ResourceKind::Teams => "teams",
            ResourceKind::Roles => "roles",
            ResourceKind::ApiKeys => "apikeys",
            ResourceKind::Kv => "kv",
            ResourceKind::Docs => "docs",
            ResourceKind::Files => "files",
            ResourceKind::Workflows => "workflows",
            ResourceKind::Audit => "audit",
            ResourceKind::Tenants => "tenants",
            ResourceKind::Cluster => "cluster",
        }
    }

    /// The concrete actions that exist for this resource.
    pub fn actions(self) -> &'static [Action] {
        match self {
            ResourceKind::Workflows => &[Action::Read, Action::Write, Action::Execute],
            ResourceKind::Audit => &[Action::Read],
            ResourceKind::Tenants => &[Action::Read, Action::Write, Action::Admin],
            ResourceKind::Cluster => &[Action::Read, Action::Admin],
            _ => &[Action::Read, Action::Write],
        }
    }
}

/// What is done to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    /// `read`: get, list, export.
    Read,
    /// `write`: create, update, delete.
    Write,
    /// `execute`: run (workflows).
    Execute,
    /// `admin`: administrative control (tenants, cluster).
    Admin,
    /// `*`: every action of the resource.
    Any,
}

impl Action {
    /// Name used in `resource:action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Execute => "execute",
            Action::Admin => "admin",
            Action::Any => "*",
        }
    }
}

/// A `resource:action` permission, e.g. `docs:write` or `kv:*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Permission {
    /// The resource.
    pub resource: ResourceKind,
    /// The action (or [`Action::Any`]).
    pub action: Action,
}

impl Permission {
    /// `resource:action`. Callers construct only valid pairs; [`FromStr`]
    /// validates user input.
    pub const fn new(resource: ResourceKind, action: Action) -> Self {
        Self { resource, action }
    }

    /// True when holding `self` allows `wanted` (`wanted` may itself be a wildcard).
    pub fn grants(self, wanted: Permission) -> bool {
        self.resource == wanted.resource && (self.action == Action::Any || self.action == wanted.action)
    }

    /// True for permissions only the cluster operator may hold or exercise:
    /// anything on `cluster`, and `tenants:admin` (including `tenants:*`).
    pub fn is_operator_only(self) -> bool {
        match self.resource {
            ResourceKind::Cluster => true,
            ResourceKind::Tenants => matches!(self.action, Action::Admin | Action::Any),
            _ => false,
        }
    }

    /// The concrete permissions this one stands for (a wildcard expands to
    /// every action of its resource).
    pub fn expand(self) -> Vec<Permission> {
        match self.action {
            Action::Any => self.resource.actions().iter().map(|&a| Permission::new(self.resource, a)).collect(),
            _ => vec![self],
        }
    }

    /// Every concrete permission a tenant-scoped caller can ever hold (what
    /// the operator acts with when it creates things inside a tenant).
    pub fn all_tenant() -> BTreeSet<Permission> {
        ResourceKind::ALL
            .iter()
            .flat_map(|&r| r.actions().iter().map(move |&a| Permission::new(r, a)))
            .filter(|p| !p.is_operator_only())
            .collect()
    }
}

/// True when `held` allows `wanted`; a wanted wildcard needs every action of
/// its resource.
pub fn permits(held: &BTreeSet<Permission>, wanted: Permission) -> bool {
    wanted.expand().into_iter().all(|w| held.iter().any(|h| h.grants(w)))
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource.as_str(), self.action.as_str())
    }
}

impl FromStr for Permission {
    type Err = CaddyError;
    fn from_str(s: &str) -> Result<Self, CaddyError> {
        let (r, a) = s.split_once(':').ok_or_else(|| {
            CaddyError::invalid(format!("permission {s:?} must look like resource:action, e.g. docs:write"))
        })?;
        let resource = ResourceKind::ALL.into_iter().find(|k| k.as_str() == r).ok_or_else(|| {
            let known: Vec<&str> = ResourceKind::ALL.iter().map(|k| k.as_str()).collect();
            CaddyError::invalid(format!("unknown resource {r:?} in permission {s:?}; known: {}", known.join(", ")))
        })?;
        let valid = resource.actions();
        let action = match a {
            "*" => Action::Any,
            _ => valid.iter().copied().find(|x| x.as_str() == a).ok_or_else(|| {
                let names: Vec<&str> = valid.iter().map(|x| x.as_str()).collect();
                CaddyError::invalid(format!("{r} has no action {a:?}; use one of {} or *", names.join(", ")))
            })?,
        };
        Ok(Permission::new(resource, action))
    }
}

/// The built-in roles every tenant has. Their permission sets:
///
/// | role | permissions |
/// | --- | --- |
/// | owner | `*` on users, teams, roles, apikeys, kv, docs, files, workflows; `audit:read`; `tenants:read`, `tenants:write` (rename the tenant) |
/// | admin | owner's set without `tenants:write`, so an admin cannot grant `owner` |
/// | editor | `*` on kv, docs, files, workflows; `read` on users, teams, roles, tenants |
/// | viewer | `read` on kv, docs, files, workflows, users, teams, roles, tenants |
///
/// API keys: only owners and admins manage them. Audit: owners and admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BuiltinRole {
    /// Full control of the tenant.
    Owner,
    /// Full control except renaming the tenant.
    Admin,
    /// Works with data.
    Editor,
    /// Reads data.
    Viewer,
}

impl BuiltinRole {
    /// Every built-in role, most powerful first.
    pub const ALL: [BuiltinRole; 4] =
        [BuiltinRole::Owner, BuiltinRole::Admin, BuiltinRole::Editor, BuiltinRole::Viewer];

    /// The role's name.
    pub fn name(self) -> RoleName {
        let s = match self {
            BuiltinRole::Owner => "owner",
            BuiltinRole::Admin => "admin",
            BuiltinRole::Editor => "editor",
            BuiltinRole::Viewer => "viewer",
        };
        RoleName::new(s).unwrap_or_else(|_| unreachable!("built-in role names are valid"))
    }

    /// The built-in role called `name`, if any.
    pub fn from_name(name: &RoleName) -> Option<BuiltinRole> {
        BuiltinRole::ALL.into_iter().find(|r| r.name() == *name)
    }

    /// The role's permissions (see the type's table).
    pub fn permissions(self) -> BTreeSet<Permission> {
        use Action::*;
        use ResourceKind::*;
        let data = [Kv, Docs, Files, Workflows];
        let people = [Users, Teams, Roles];
        let mut set = BTreeSet::new();
        match self {
            BuiltinRole::Owner | BuiltinRole::Admin => {
                for r in data.into_iter().chain(people).chain([ApiKeys]) {
                    set.insert(Permission::new(r, Any));
                }
                set.insert(Permission::new(Audit, Read));
                set.insert(Permission::new(Tenants, Read));
                if self == BuiltinRole::Owner {
                    set.insert(Permission::new(Tenants, Write));
                }
            }
            BuiltinRole::Editor | BuiltinRole::Viewer => {
                // Editors get every action by name, not the wildcard: the
                // wildcard is what marks a data administrator (who sees and
                // manages other people's files and documents).
                for r in data {
                    if self == BuiltinRole::Editor {
                        set.extend(r.actions().iter().map(|&a| Permission::new(r, a)));
                    } else {
                        set.insert(Permission::new(r, Read));
                    }
                }
                for r in people.into_iter().chain([Tenants]) {
                    set.insert(Permission::new(r, Read));
                }
            }
        }
        set
    }
}

/// A custom role of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDef {
    /// Unique within the tenant; not a built-in name.
    pub name: RoleName,
    /// Free text (at most [`MAX_DESCRIPTION_CHARS`]).
    pub description: String,
    /// Permissions granted directly.
    pub permissions: BTreeSet<Permission>,
    /// Roles (built-in or custom) whose permissions this one also grants.
    pub inherits: BTreeSet<RoleName>,
}

/// A tenant's custom roles; resolves effective permissions through
/// inheritance and keeps the inheritance graph acyclic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleGraph {
    roles: BTreeMap<RoleName, RoleDef>,
}

impl RoleGraph {
    /// No custom roles.
    pub fn new() -> Self {
        Self::default()
    }

    /// A custom role by name.
    pub fn get(&self, name: &RoleName) -> Option<&RoleDef> {
        self.roles.get(name)
    }

    /// Custom roles in name order.
    pub fn custom_roles(&self) -> impl Iterator<Item = &RoleDef> {
        self.roles.values()
    }

    /// True for a built-in role or an existing custom role.
    pub fn exists(&self, name: &RoleName) -> bool {
        BuiltinRole::from_name(name).is_some() || self.roles.contains_key(name)
    }

    /// Creates or replaces the custom role `def.name`. Refused: built-in
    /// names, operator-only permissions, unknown inherited roles (NotFound),
    /// more than [`MAX_ROLE_INHERITS`] parents or [`MAX_CUSTOM_ROLES`] roles,
    /// and any inheritance cycle (FailedPrecondition naming it). Nothing
    /// changes on error.
    pub fn upsert(&mut self, mut def: RoleDef) -> Result<(), CaddyError> {
        if BuiltinRole::from_name(&def.name).is_some() {
            return Err(CaddyError::invalid(format!(
                "{} is a built-in role and cannot be redefined; choose another name",
                def.name
            )));
        }
        def.description = optional_text("role description", &def.description, MAX_DESCRIPTION_CHARS)?;
        if let Some(p) = def.permissions.iter().find(|p| p.is_operator_only()) {
            return Err(CaddyError::invalid(format!(
                "permission {p} is reserved for the cluster operator and cannot be part of a tenant role"
            )));
        }
        if def.inherits.len() > MAX_ROLE_INHERITS {
            return Err(CaddyError::invalid(format!(
                "role {} inherits {} roles; the limit is {MAX_ROLE_INHERITS}",
                def.name,
                def.inherits.len()
            )));
        }
        if !self.roles.contains_key(&def.name) && self.roles.len() >= MAX_CUSTOM_ROLES {
            return Err(CaddyError::exhausted(format!(
                "this tenant already has {MAX_CUSTOM_ROLES} custom roles (the limit); delete one first"
            )));
        }
        if let Some(missing) = def.inherits.iter().find(|p| **p != def.name && !self.exists(p)) {
            return Err(CaddyError::new(
                ErrorCode::NotFound,
                format!("role {} inherits unknown role {missing}; create {missing} first", def.name),
            ));
        }
        // The graph was acyclic, so a new cycle must pass through `def`.
        for parent in &def.inherits {
            let cycle = if *parent == def.name { Some(vec![def.name.clone()]) } else { self.path(parent, &def.name) };
            if let Some(path) = cycle {
                let names: Vec<&str> = std::iter::once(&def.name).chain(path.iter()).map(RoleName::as_str).collect();
                return Err(CaddyError::precondition(format!(
                    "role inheritance cycle: {}; remove one of these inherits",
                    names.join(" -> ")
                )));
            }
        }
        self.roles.insert(def.name.clone(), def);
        Ok(())
    }

    /// The inheritance path from `from` to `to` (inclusive of both), if any.
    fn path(&self, from: &RoleName, to: &RoleName) -> Option<Vec<RoleName>> {
        let mut visited = BTreeSet::new();
        let mut stack = vec![(from.clone(), vec![from.clone()])];
        while let Some((at, path)) = stack.pop() {
            if at == *to {
                return Some(path);
            }
            if !visited.insert(at.clone()) {
                continue;
            }
            if let Some(def) = self.roles.get(&at) {
                for next in def.inherits.iter().rev() {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
        None
    }

    /// Custom roles that inherit `name` directly.
    pub fn dependents(&self, name: &RoleName) -> Vec<RoleName> {
        self.roles.values().filter(|d| d.inherits.contains(name)).map(|d| d.name.clone()).collect()
    }

    /// Deletes a custom role. Refused for built-in roles, unknown roles
    /// (NotFound) and roles other roles inherit (FailedPrecondition). Grants
    /// of the role to users and teams are the caller's to remove; a dangling
    /// grant grants nothing ([`Self::permissions_for`]).
    pub fn remove(&mut self, name: &RoleName) -> Result<RoleDef, CaddyError> {
        if BuiltinRole::from_name(name).is_some() {
            return Err(CaddyError::invalid(format!("{name} is a built-in role and cannot be deleted")));
        }
        let dependents = self.dependents(name);
        if !dependents.is_empty() {
            let names: Vec<&str> = dependents.iter().map(RoleName::as_str).collect();
            return Err(CaddyError::precondition(format!(
                "role {name} is inherited by {}; remove it from their inherits first",
                names.join(", ")
            )));
        }
        self.roles.remove(name).ok_or_else(|| CaddyError::new(ErrorCode::NotFound, format!("no role named {name}")))
    }

    /// Effective permissions of one role (its own plus everything inherited).
    pub fn effective(&self, name: &RoleName) -> Result<BTreeSet<Permission>, CaddyError> {
        if !self.exists(name) {
            return Err(CaddyError::new(ErrorCode::NotFound, format!("no role named {name}")));
        }
        Ok(self.permissions_for([name]))
    }

    /// Union of the effective permissions of `roles`. Unknown role names (a
    /// grant left behind by a deleted role) grant nothing.
    pub fn permissions_for<'a>(&self, roles: impl IntoIterator<Item = &'a RoleName>) -> BTreeSet<Permission> {
        let mut out = BTreeSet::new();
        let mut visited = BTreeSet::new();
        let mut stack: Vec<&RoleName> = roles.into_iter().collect();
        while let Some(name) = stack.pop() {
            if !visited.insert(name) {
                continue;
            }
            if let Some(b) = BuiltinRole::from_name(name) {
                out.extend(b.permissions());
            } else if let Some(def) = self.roles.get(name) {
                out.extend(def.permissions.iter().copied());
                stack.extend(def.inherits.iter());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, perms: &[&str], inherits: &[&str]) -> RoleDef {
        RoleDef {
            name: RoleName::new(name).unwrap(),
            description: String::new(),
            permissions: perms.iter().map(|p| p.parse().unwrap()).collect(),
            inherits: inherits.iter().map(|r| RoleName::new(r).unwrap()).collect(),
        }
    }

    fn rn(s: &str) -> RoleName {
        RoleName::new(s).unwrap()
    }

    fn p(s: &str) -> Permission {
        s.parse().unwrap()
    }

    #[test]
    fn permissions_parse_and_display() {
        for s in ["users:write", "kv:read", "docs:write", "files:read", "workflows:execute", "tenants:admin"] {
            assert_eq!(p(s).to_string(), s);
        }
        for s in ["cluster:admin", "audit:read", "roles:write", "apikeys:write", "teams:*"] {
            assert_eq!(p(s).to_string(), s);
        }
        for bad in ["users", "users:", "nope:read", "kv:execute", "audit:write", "cluster:write", "Users:read"] {
            assert_eq!(bad.parse::<Permission>().unwrap_err().code, ErrorCode::InvalidArgument, "{bad}");
        }
        let msg = "kv:execute".parse::<Permission>().unwrap_err().message;
        assert!(msg.contains("read, write"), "{msg}");
    }

    #[test]
    fn wildcards_grant_every_action_of_their_resource_only() {
        assert!(p("docs:*").grants(p("docs:write")));
        assert!(!p("docs:*").grants(p("kv:write")));
        assert!(!p("docs:write").grants(p("docs:read")));
        let held: BTreeSet<_> = [p("workflows:read"), p("workflows:write")].into();
        assert!(!permits(&held, p("workflows:*")));
        let held: BTreeSet<_> = [p("workflows:read"), p("workflows:write"), p("workflows:execute")].into();
        assert!(permits(&held, p("workflows:*")));
        assert!(p("tenants:*").is_operator_only());
        assert!(!p("tenants:read").is_operator_only());
        assert!(Permission::all_tenant().iter().all(|p| !p.is_operator_only() && p.action != Action::Any));
    }

    #[test]
    fn builtin_roles_are_nested_and_tenant_scoped() {
        let sets: Vec<_> = BuiltinRole::ALL.iter().map(|r| r.permissions()).collect();
        for w in sets.windows(2) {
            let (stronger, weaker) = (&w[0], &w[1]);
            assert!(weaker.iter().all(|&x| permits(stronger, x)));
            assert_ne!(stronger, weaker);
        }
        for set in &sets {
            assert!(set.iter().all(|p| !p.is_operator_only()));
        }
        assert!(permits(&sets[0], p("tenants:write")) && !permits(&sets[1], p("tenants:write")));
        assert!(!permits(&sets[2], p("apikeys:write")) && !permits(&sets[2], p("audit:read")));
        assert_eq!(BuiltinRole::from_name(&rn("viewer")), Some(BuiltinRole::Viewer));
    }

    #[test]
    fn inheritance_resolves_transitively() {
        let mut g = RoleGraph::new();
        g.upsert(role("base", &["apikeys:read"], &["viewer"])).unwrap();
        g.upsert(role("mid", &["docs:write"], &["base"])).unwrap();
        g.upsert(role("top", &["workflows:execute"], &["mid"])).unwrap();
        let top = g.effective(&rn("top")).unwrap();
        for want in ["workflows:execute", "docs:write", "apikeys:read", "kv:read", "users:read"] {
            assert!(permits(&top, p(want)), "{want}");
        }
        assert!(!permits(&top, p("kv:write")));
        assert_eq!(g.effective(&rn("base")).unwrap().len(), BuiltinRole::Viewer.permissions().len() + 1);
        assert_eq!(g.effective(&rn("ghost")).unwrap_err().code, ErrorCode::NotFound);
        // Dangling grants grant nothing.
        assert_eq!(g.permissions_for([&rn("ghost")]), BTreeSet::new());
        // Updating a parent changes the children's effective set.
        g.upsert(role("base", &["files:*"], &[])).unwrap();
        let top = g.effective(&rn("top")).unwrap();
        assert!(permits(&top, p("files:write")) && !permits(&top, p("kv:read")));
    }

    #[test]
    fn cycles_are_rejected_and_named() {
        let mut g = RoleGraph::new();
        g.upsert(role("a", &[], &[])).unwrap();
        g.upsert(role("b", &[], &["a"])).unwrap();
        g.upsert(role("c", &[], &["b"])).unwrap();
        let before = g.clone();
        let err = g.upsert(role("a", &["kv:read"], &["c"])).unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition);
        assert!(err.message.contains("a -> c -> b -> a"), "{}", err.message);
        let err = g.upsert(role("a", &[], &["a"])).unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition);
        assert!(err.message.contains("a -> a"), "{}", err.message);
        assert_eq!(g, before, "nothing changes on error");
    }

    #[test]
    fn bad_roles_are_refused() {
        let mut g = RoleGraph::new();
        assert_eq!(g.upsert(role("admin", &[], &[])).unwrap_err().code, ErrorCode::InvalidArgument);
        let err = g.upsert(role("x", &["cluster:admin"], &[])).unwrap_err();
        assert!(err.message.contains("operator"), "{}", err.message);
        assert!(g.upsert(role("x", &["tenants:*"], &[])).is_err());
        assert_eq!(g.upsert(role("x", &[], &["ghost"])).unwrap_err().code, ErrorCode::NotFound);
        let mut long = role("x", &[], &[]);
        long.description = "d".repeat(MAX_DESCRIPTION_CHARS + 1);
        assert!(g.upsert(long).is_err());
        g.upsert(role("a", &[], &[])).unwrap();
        g.upsert(role("b", &[], &["a"])).unwrap();
        assert_eq!(g.remove(&rn("a")).unwrap_err().code, ErrorCode::FailedPrecondition);
        assert_eq!(g.remove(&rn("owner")).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(g.remove(&rn("zzz")).unwrap_err().code, ErrorCode::NotFound);
        g.remove(&rn("b")).unwrap();
        g.remove(&rn("a")).unwrap();
        assert_eq!(g.custom_roles().count(), 0);
        for i in 0..MAX_CUSTOM_ROLES {
            g.upsert(role(&format!("r{i}"), &[], &[])).unwrap();
        }
        assert_eq!(g.upsert(role("extra", &[], &[])).unwrap_err().code, ErrorCode::ResourceExhausted);
        g.upsert(role("r0", &["kv:read"], &[])).unwrap(); // replacing is fine at the limit
    }
}
