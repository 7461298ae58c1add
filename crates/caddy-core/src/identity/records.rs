//! The stored records of the identity domain. Secrets appear only as hashes:
//! passwords as argon2id PHC strings (hashed by the server before proposing),
//! API key secrets, session tokens and invitation tokens as blake3
//! ([`crate::credential_hash`]). Whether a credential is usable is computed
//! from a stamped time ([`CredentialState`]), never from a clock.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::ids::{ApiKeyId, InvitationId, RoleName, SessionId, TenantId, UserId};
use super::permissions::Permission;
use super::quota::{Quotas, Usage};
use super::validate::Email;

/// Whether a tenant may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TenantStatus {
    /// Normal operation.
    #[default]
    Active,
    /// Every request of the tenant's users and keys is refused until the
    /// operator resumes it; nothing is deleted.
    Suspended,
}

/// A tenant (stored at `t/{id}/meta/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Id (also the key prefix).
    pub id: TenantId,
    /// Human-readable name.
    pub name: String,
    /// Plan name (free text chosen by the operator).
    pub plan: String,
    /// Active or suspended.
    pub status: TenantStatus,
    /// Limits.
    pub quotas: Quotas,
    /// Current consumption, maintained by apply.
    pub usage: Usage,
    /// Stamped creation time.
    pub created_ms: u64,
    /// Stamped time of the last change.
    pub updated_ms: u64,
}

/// A user of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Id (the user's pseudonym in audit entries).
    pub id: UserId,
    /// Normalized email, unique within the tenant.
    pub email: Email,
    /// Display name.
    pub display_name: String,
    /// argon2id PHC string; never returned to clients.
    pub password_hash: String,
    /// A disabled user cannot log in and its sessions and keys are refused.
    pub disabled: bool,
    /// Roles granted directly (team grants live on the teams).
    pub roles: BTreeSet<RoleName>,
    /// Stamped creation time.
    pub created_ms: u64,
    /// Stamped time of the last change.
    pub updated_ms: u64,
}

/// Whether a credential (API key, session, invitation) may be used at a given
/// stamped time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialState {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked, terminated or (invitations) already used.
    Revoked,
}

fn state_at(now_ms: u64, expires_ms: Option<u64>, revoked_ms: Option<u64>) -> CredentialState {
    if revoked_ms.is_some_and(|r| r <= now_ms) {
        CredentialState::Revoked
    } else if expires_ms.is_some_and(|e| e <= now_ms) {
        CredentialState::Expired
    } else {
        CredentialState::Active
    }
}

/// An API key. The secret is shown once at creation; the record keeps its
/// hash and a short public prefix used to find the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Id.
    pub id: ApiKeyId,
    /// Name chosen by the creator.
    pub name: String,
    /// Public lookup prefix (not secret).
    pub prefix: String,
    /// blake3 of the secret.
    pub secret_hash: [u8; 32],
    /// Permissions the key carries: a subset of its creator's at creation.
    pub scopes: BTreeSet<Permission>,
    /// Creator (None: the operator).
    pub created_by: Option<UserId>,
    /// Stamped creation time.
    pub created_ms: u64,
    /// Expiry (None: never).
    pub expires_ms: Option<u64>,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<u64>,
    /// Stamped time of the last use seen by the state machine.
    pub last_used_ms: Option<u64>,
}

impl ApiKeyRecord {
    /// Usability at stamped time `now_ms`.
    pub fn state_at(&self, now_ms: u64) -> CredentialState {
        state_at(now_ms, self.expires_ms, self.revoked_ms)
    }

    /// Rotation: the old key keeps working for `grace_ms` after `now_ms`
    /// (never longer than it would have anyway).
    pub fn retire_after_grace(&mut self, now_ms: u64, grace_ms: u64) {
        let until = now_ms.saturating_add(grace_ms);
        self.expires_ms = Some(self.expires_ms.map_or(until, |e| e.min(until)));
    }
}

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Id (for listing and terminating).
    pub id: SessionId,
    /// Owner.
    pub user: UserId,
    /// blake3 of the session token.
    pub token_hash: [u8; 32],
    /// Stamped creation (login) time.
    pub created_ms: u64,
    /// Expiry.
    pub expires_ms: u64,
    /// When it was terminated, if it was.
    pub terminated_ms: Option<u64>,
}

impl Session {
    /// Usability at stamped time `now_ms`.
    pub fn state_at(&self, now_ms: u64) -> CredentialState {
        state_at(now_ms, Some(self.expires_ms), self.terminated_ms)
    }
}

/// An invitation: accepting it (with the token) creates the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// Id.
    pub id: InvitationId,
    /// Who is invited.
    pub email: Email,
    /// Roles the new user gets.
    pub roles: BTreeSet<RoleName>,
    /// blake3 of the invitation token.
    pub token_hash: [u8; 32],
    /// Inviter (None: the operator).
    pub invited_by: Option<UserId>,
    /// Stamped creation time.
    pub created_ms: u64,
    /// Expiry.
    pub expires_ms: u64,
    /// When it was accepted, if it was (then it is used up).
    pub accepted_ms: Option<u64>,
}

impl Invitation {
    /// Usability at stamped time `now_ms` (an accepted invitation is `Revoked`).
    pub fn state_at(&self, now_ms: u64) -> CredentialState {
        state_at(now_ms, Some(self.expires_ms), self.accepted_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_states_follow_stamped_time() {
        let mut key = ApiKeyRecord {
            id: ApiKeyId(1),
            name: "ci".into(),
            prefix: "ck_ab12".into(),
            secret_hash: [1; 32],
            scopes: BTreeSet::new(),
            created_by: Some(UserId(1)),
            created_ms: 0,
            expires_ms: Some(1000),
            revoked_ms: None,
            last_used_ms: None,
        };
        assert_eq!(key.state_at(999), CredentialState::Active);
        assert_eq!(key.state_at(1000), CredentialState::Expired);
        key.retire_after_grace(100, 50);
        assert_eq!(key.expires_ms, Some(150));
        key.retire_after_grace(100, 5000);
        assert_eq!(key.expires_ms, Some(150), "grace never extends a key");
        key.expires_ms = None;
        key.retire_after_grace(u64::MAX, 10);
        assert_eq!(key.expires_ms, Some(u64::MAX));
        key.revoked_ms = Some(10);
        assert_eq!(key.state_at(10), CredentialState::Revoked);
        let s = Session {
            id: SessionId(1),
            user: UserId(1),
            token_hash: [0; 32],
            created_ms: 0,
            expires_ms: 5,
            terminated_ms: None,
        };
        assert_eq!(s.state_at(4), CredentialState::Active);
        assert_eq!(s.state_at(5), CredentialState::Expired);
    }
}
