//! Identifiers of the identity domain and the tenant key layout.
//!
//! Tenant ids and role names are validated strings; users, teams, API keys,
//! sessions and invitations are numbered (`u64`, allocated by the proposer or
//! by a deterministic counter in apply). Numbered ids display as
//! `{kind}-{n}` (e.g. `user-42`) and parse from that form or a bare number;
//! inside storage keys they are 16 lower-case hex digits so keys sort
//! numerically.
//!
//! Every tenant-owned key is `t/{tenant}/{kind}/{local}` ([`tenant_key`]).
//! Because a tenant id never contains `/`, the prefix `t/{tenant}/` of one
//! tenant is never a prefix of another tenant's keys: a range scan over it
//! sees exactly that tenant's data (listing, export, deletion).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CaddyError;

/// Shortest tenant id, in characters.
pub const TENANT_ID_MIN: usize = 3;
/// Longest tenant id, in characters.
pub const TENANT_ID_MAX: usize = 63;
/// Longest role name, in characters.
pub const ROLE_NAME_MAX: usize = 63;

/// A tenant's id: 3..=63 characters of `[a-z0-9-]`, starting and ending with a
/// letter or digit. Safe to embed in keys, paths and metric labels as is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Validates `id` (see the type's rules).
    pub fn new(id: &str) -> Result<Self, CaddyError> {
        let len = id.chars().count();
        if !(TENANT_ID_MIN..=TENANT_ID_MAX).contains(&len) {
            return Err(CaddyError::invalid(format!(
                "tenant id {id:?} must be {TENANT_ID_MIN} to {TENANT_ID_MAX} characters long (it has {len})"
            )));
        }
        if !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(CaddyError::invalid(format!(
                "tenant id {id:?} may contain only lower-case letters a-z, digits and '-'"
            )));
        }
        if id.starts_with('-') || id.ends_with('-') {
            return Err(CaddyError::invalid(format!("tenant id {id:?} must start and end with a letter or digit")));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = CaddyError;
    fn try_from(s: String) -> Result<Self, CaddyError> {
        Self::new(&s)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl FromStr for TenantId {
    type Err = CaddyError;
    fn from_str(s: &str) -> Result<Self, CaddyError> {
        Self::new(s)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A role's name: 1..=63 characters of `[a-z0-9_-]`, starting with a letter.
/// The built-in names (`owner`, `admin`, `editor`, `viewer`) are valid role
/// names but cannot be used for custom roles ([`crate::identity::RoleGraph`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoleName(String);

impl RoleName {
    /// Validates `name` (see the type's rules).
    pub fn new(name: &str) -> Result<Self, CaddyError> {
        let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        let starts_with_letter = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
        if name.len() > ROLE_NAME_MAX || !ok_chars || !starts_with_letter {
            return Err(CaddyError::invalid(format!(
                "role name {name:?} must be 1 to {ROLE_NAME_MAX} characters of a-z, 0-9, '-' or '_', starting with a letter"
            )));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RoleName {
    type Error = CaddyError;
    fn try_from(s: String) -> Result<Self, CaddyError> {
        Self::new(&s)
    }
}

impl From<RoleName> for String {
    fn from(name: RoleName) -> String {
        name.0
    }
}

impl FromStr for RoleName {
    type Err = CaddyError;
    fn from_str(s: &str) -> Result<Self, CaddyError> {
        Self::new(s)
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! numbered_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl $name {
            /// Prefix of the display form (`{prefix}-{n}`).
            pub const PREFIX: &'static str = $prefix;

            /// The id as it appears inside storage keys: 16 lower-case hex
            /// digits, so lexical key order is numeric order.
            pub fn key_part(self) -> String {
                format!("{:016x}", self.0)
            }

            /// Parses the [`Self::key_part`] form back.
            pub fn from_key_part(s: &str) -> Result<Self, CaddyError> {
                if s.len() != 16 {
                    return Err(CaddyError::invalid(format!("{} key part {s:?} must be 16 hex digits", $prefix)));
                }
                u64::from_str_radix(s, 16)
                    .map(Self)
                    .map_err(|_| CaddyError::invalid(format!("{} key part {s:?} must be 16 hex digits", $prefix)))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}-{}", $prefix, self.0)
            }
        }

        impl FromStr for $name {
            type Err = CaddyError;
            fn from_str(s: &str) -> Result<Self, CaddyError> {
                let digits = s.strip_prefix(concat!($prefix, "-")).unwrap_or(s);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CaddyError::invalid(format!(
                        "{s:?} is not a {} id: expected {}-<number> or a plain number",
                        $prefix, $prefix
                    )));
                }
                digits.parse::<u64>().map(Self).map_err(|_| {
                    CaddyError::invalid(format!("{} id {s:?} is out of range (at most {})", $prefix, u64::MAX))
                })
            }
        }
    };
}

numbered_id!(
    /// A user within a tenant. Carries no personal data, so it stays in audit
    /// entries as the user's pseudonym after the user is erased.
    UserId,
    "user"
);
numbered_id!(
    /// A team within a tenant.
    TeamId,
    "team"
);
numbered_id!(
    /// An API key within a tenant (the record; the secret is never stored).
    ApiKeyId,
    "key"
);
numbered_id!(
    /// A login session (the token is stored only as a hash).
    SessionId,
    "session"
);
numbered_id!(
    /// A pending invitation.
    InvitationId,
    "invite"
);

/// What a tenant-owned key holds: the `{kind}` segment of `t/{tenant}/{kind}/{local}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KeyKind {
    /// The tenant record itself (local part empty).
    Meta,
    /// A user record by [`UserId::key_part`].
    User,
    /// Index: normalized email → user id.
    UserEmail,
    /// A custom role by name.
    Role,
    /// A team by [`TeamId::key_part`].
    Team,
    /// An API key by [`ApiKeyId::key_part`].
    ApiKey,
    /// Index: API key public prefix → key id.
    ApiKeyPrefix,
    /// A session by [`SessionId::key_part`].
    Session,
    /// An invitation by [`InvitationId::key_part`].
    Invitation,
    /// An audit entry by sequence number (16 hex digits).
    Audit,
    /// The tenant's key-value namespace (local part is the user's key).
    Kv,
}

impl KeyKind {
    /// Every kind, in key order.
    pub const ALL: [KeyKind; 11] = [
        KeyKind::Meta,
        KeyKind::User,
        KeyKind::UserEmail,
        KeyKind::Role,
        KeyKind::Team,
        KeyKind::ApiKey,
        KeyKind::ApiKeyPrefix,
        KeyKind::Session,
        KeyKind::Invitation,
        KeyKind::Audit,
        KeyKind::Kv,
    ];

    /// The segment as it appears in keys.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Meta => "meta",
            KeyKind::User => "user",
            KeyKind::UserEmail => "email",
            KeyKind::Role => "role",
            KeyKind::Team => "team",
            KeyKind::ApiKey => "apikey",
            KeyKind::ApiKeyPrefix => "keyprefix",
            KeyKind::Session => "session",
            KeyKind::Invitation => "invite",
            KeyKind::Audit => "audit",
            KeyKind::Kv => "kv",
        }
    }
}

impl FromStr for KeyKind {
    type Err = CaddyError;
    fn from_str(s: &str) -> Result<Self, CaddyError> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| CaddyError::invalid(format!("unknown tenant key kind {s:?}")))
    }
}

/// Builds the storage key `t/{tenant}/{kind}/{local}`. `local` may contain
/// `/` (user KV keys do); everything after the third `/` is `local`.
pub fn tenant_key(tenant: &TenantId, kind: KeyKind, local: &str) -> String {
    format!("t/{}/{}/{}", tenant.as_str(), kind.as_str(), local)
}

/// Prefix of every key a tenant owns (`t/{tenant}/`), for range scans.
pub fn tenant_prefix(tenant: &TenantId) -> String {
    format!("t/{}/", tenant.as_str())
}

/// Prefix of a tenant's keys of one kind (`t/{tenant}/{kind}/`), for listing.
pub fn tenant_kind_prefix(tenant: &TenantId, kind: KeyKind) -> String {
    format!("t/{}/{}/", tenant.as_str(), kind.as_str())
}

/// A parsed tenant-owned key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKey {
    /// Owning tenant.
    pub tenant: TenantId,
    /// What the key holds.
    pub kind: KeyKind,
    /// The part after the kind.
    pub local: String,
}

impl FromStr for TenantKey {
    type Err = CaddyError;
    /// Parses what [`tenant_key`] built.
    fn from_str(key: &str) -> Result<Self, CaddyError> {
        let bad = || CaddyError::invalid(format!("{key:?} is not a tenant key (expected t/<tenant>/<kind>/<local>)"));
        let rest = key.strip_prefix("t/").ok_or_else(bad)?;
        let (tenant, rest) = rest.split_once('/').ok_or_else(bad)?;
        let (kind, local) = rest.split_once('/').ok_or_else(bad)?;
        Ok(TenantKey { tenant: TenantId::new(tenant)?, kind: kind.parse()?, local: local.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn tenant_ids_are_validated() {
        for ok in ["acme", "a-1", "x9z", &"a".repeat(63)] {
            assert_eq!(TenantId::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["ab", "", "Acme", "ac/me", "-abc", "abc-", "ac me", "acmé", &"a".repeat(64)] {
            assert_eq!(TenantId::new(bad).unwrap_err().code, ErrorCode::InvalidArgument, "{bad:?}");
        }
        // Serde refuses invalid ids too.
        let bytes = postcard::to_allocvec(&"A/B".to_string()).unwrap();
        assert!(postcard::from_bytes::<TenantId>(&bytes).is_err());
        let id = TenantId::new("acme").unwrap();
        let back: TenantId = postcard::from_bytes(&postcard::to_allocvec(&id).unwrap()).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn role_names_are_validated() {
        assert!(RoleName::new("billing_admin-2").is_ok());
        for bad in ["", "1abc", "Admin", "a b", "a:b", &"a".repeat(64)] {
            assert!(RoleName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbered_ids_round_trip() {
        let id = UserId(42);
        assert_eq!(id.to_string(), "user-42");
        assert_eq!("user-42".parse::<UserId>().unwrap(), id);
        assert_eq!("42".parse::<UserId>().unwrap(), id);
        assert!("team-42".parse::<UserId>().is_err());
        assert!("user-".parse::<UserId>().is_err());
        assert!("user-99999999999999999999".parse::<UserId>().is_err());
        assert_eq!(id.key_part(), "000000000000002a");
        assert_eq!(UserId::from_key_part(&id.key_part()).unwrap(), id);
        assert!(UserId::from_key_part("2a").is_err());
        assert!(UserId(9).key_part() < UserId(10).key_part());
    }

    #[test]
    fn tenant_keys_round_trip_and_never_overlap() {
        let acme = TenantId::new("acme").unwrap();
        let key = tenant_key(&acme, KeyKind::Kv, "config/a/b");
        assert_eq!(key, "t/acme/kv/config/a/b");
        let parsed: TenantKey = key.parse().unwrap();
        assert_eq!(parsed, TenantKey { tenant: acme.clone(), kind: KeyKind::Kv, local: "config/a/b".into() });
        assert!(key.starts_with(&tenant_prefix(&acme)));
        assert!(key.starts_with(&tenant_kind_prefix(&acme, KeyKind::Kv)));
        let acme2 = TenantId::new("acme2").unwrap();
        assert!(!tenant_key(&acme2, KeyKind::Kv, "x").starts_with(&tenant_prefix(&acme)));
        for kind in KeyKind::ALL {
            let k = tenant_key(&acme, kind, "");
            assert_eq!(k.parse::<TenantKey>().unwrap().kind, kind);
        }
        for bad in ["x/acme/kv/a", "t/acme", "t/acme/kv", "t/ACME/kv/a", "t/acme/nope/a"] {
            assert!(bad.parse::<TenantKey>().is_err(), "{bad:?}");
        }
    }
}
