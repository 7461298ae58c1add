//! The tamper-evident audit trail: one hash chain per tenant (and one for the
//! cluster, `tenant: None`). Entry `n` stores the hash of entry `n - 1`; its
//! own hash is `blake3(prev_hash || canonical_bytes)`, where the canonical
//! bytes are the postcard encoding of every field except `hash`. Sequence
//! numbers start at 1 and are contiguous; the chain starts from
//! [`ChainHead::GENESIS`] (all-zero hash).
//!
//! **Privacy:** entries carry ids, never personal data or secrets: the actor
//! is a [`UserId`] (a pseudonym once the user record is erased), and
//! `resource` should name things by id (`user-42`, `invite-3`), not by email.
//! Erasing a user never rewrites entries (that would break the chain);
//! [`Actor::Erased`] is for entries written after an erasure that still need
//! to refer to the erased person.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::{ApiKeyId, TenantId, UserId};
use crate::{CaddyError, ErrorCode};

/// Longest `action`, in bytes; [`AuditEntry::seal`] truncates longer ones.
pub const MAX_AUDIT_ACTION: usize = 64;
/// Longest `resource`, in bytes (truncated by `seal`).
pub const MAX_AUDIT_RESOURCE: usize = 256;
/// Longest `request_id`, in bytes (truncated by `seal`).
pub const MAX_AUDIT_REQUEST_ID: usize = 128;
/// Longest `client_addr`, in bytes (truncated by `seal`).
pub const MAX_AUDIT_CLIENT_ADDR: usize = 64;

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Actor {
    /// The cluster operator (bootstrap admin credential).
    Operator,
    /// A user, by id.
    User(UserId),
    /// An API key, by id.
    ApiKey(ApiKeyId),
    /// An erased user, by pseudonym.
    Erased(String),
    /// The system itself (e.g. expiry sweeps).
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Operator => f.write_str("operator"),
            Actor::User(id) => write!(f, "{id}"),
            Actor::ApiKey(id) => write!(f, "{id}"),
            Actor::Erased(p) => write!(f, "erased:{p}"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// How the request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// Applied.
    Ok,
    /// Refused or failed with this code (nothing changed).
    Error(ErrorCode),
}

/// The end of a chain: the last sequence number and hash
/// ([`ChainHead::GENESIS`] for an empty chain). Store it with the tenant so
/// appends need no scan and truncation at the end is detectable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Sequence number of the last entry (0: none).
    pub seq: u64,
    /// Hash of the last entry (zeros: none).
    pub hash: [u8; 32],
}

impl ChainHead {
    /// The head of an empty chain.
    pub const GENESIS: ChainHead = ChainHead { seq: 0, hash: [0; 32] };
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// The chain's tenant (None: the cluster chain).
    pub tenant: Option<TenantId>,
    /// Who.
    pub actor: Actor,
    /// What, e.g. `user.create` (at most [`MAX_AUDIT_ACTION`] bytes).
    pub action: String,
    /// On what, by id, e.g. `user-42` (at most [`MAX_AUDIT_RESOURCE`] bytes).
    pub resource: String,
    /// Result.
    pub outcome: AuditOutcome,
    /// The proposal's stamped time.
    pub stamp_ms: u64,
    /// The client's request id.
    pub request_id: String,
    /// The client's address as the receiving node saw it.
    pub client_addr: String,
    /// Hash of the previous entry (zeros for the first).
    pub prev_hash: [u8; 32],
    /// `blake3(prev_hash || canonical_bytes)`.
    pub hash: [u8; 32],
}

/// Borrowed view of every field but `hash`, in declaration order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    tenant: &'a Option<TenantId>,
    actor: &'a Actor,
    action: &'a str,
    resource: &'a str,
    outcome: AuditOutcome,
    stamp_ms: u64,
    request_id: &'a str,
    client_addr: &'a str,
    prev_hash: [u8; 32],
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl AuditEntry {
    /// The bytes the hash covers: postcard of every field except `hash`.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, CaddyError> {
        let view = Canonical {
            seq: self.seq,
            tenant: &self.tenant,
            actor: &self.actor,
            action: &self.action,
            resource: &self.resource,
            outcome: self.outcome,
            stamp_ms: self.stamp_ms,
            request_id: &self.request_id,
            client_addr: &self.client_addr,
            prev_hash: self.prev_hash,
        };
        postcard::to_allocvec(&view).map_err(|e| CaddyError::internal(format!("audit entry encoding failed: {e}")))
    }

    /// `blake3(prev_hash || canonical_bytes)`.
    pub fn compute_hash(&self) -> Result<[u8; 32], CaddyError> {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.prev_hash);
        hasher.update(&self.canonical_bytes()?);
        Ok(*hasher.finalize().as_bytes())
    }

    /// Links the entry after `prev_hash` and computes its hash; free-text
    /// fields are first truncated to their limits. The caller sets `seq` to
    /// the previous head's `seq + 1`.
    pub fn seal(mut self, prev_hash: [u8; 32]) -> Result<Self, CaddyError> {
        truncate(&mut self.action, MAX_AUDIT_ACTION);
        truncate(&mut self.resource, MAX_AUDIT_RESOURCE);
        truncate(&mut self.request_id, MAX_AUDIT_REQUEST_ID);
        truncate(&mut self.client_addr, MAX_AUDIT_CLIENT_ADDR);
        self.prev_hash = prev_hash;
        self.hash = self.compute_hash()?;
        Ok(self)
    }

    /// The chain head after this entry.
    pub fn head(&self) -> ChainHead {
        ChainHead { seq: self.seq, hash: self.hash }
    }
}

/// The first place a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenLink {
    /// Sequence number of the offending entry as stored (for a chain that
    /// ends early: the expected head's sequence number).
    pub seq: u64,
    /// Its position in the verified slice.
    pub index: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audit chain broken at seq {} (entry #{}): {}", self.seq, self.index, self.reason)
    }
}

/// Verifies a whole chain from [`ChainHead::GENESIS`].
pub fn verify_chain(entries: &[AuditEntry]) -> Result<(), BrokenLink> {
    verify_chain_from(ChainHead::GENESIS, entries, None)
}

/// Verifies `entries` as the continuation of `start` (for paged
/// verification, pass the previous page's last head). With `expected_end`
/// (the stored head), also detects entries removed from the end.
pub fn verify_chain_from(
    start: ChainHead,
    entries: &[AuditEntry],
    expected_end: Option<ChainHead>,
) -> Result<(), BrokenLink> {
    let mut head = start;
    for (index, e) in entries.iter().enumerate() {
        let broken = |reason: String| BrokenLink { seq: e.seq, index, reason };
        let want = head.seq.checked_add(1).ok_or_else(|| broken("sequence number overflow".into()))?;
        if e.seq != want {
            return Err(broken(format!("expected seq {want}: an entry is missing, duplicated or out of order")));
        }
        if e.prev_hash != head.hash {
            return Err(broken("prev_hash does not match the previous entry's hash".into()));
        }
        let hash = e.compute_hash().map_err(|err| broken(err.message))?;
        if hash != e.hash {
            return Err(broken("hash does not match the entry's content: the entry was altered".into()));
        }
        head = e.head();
    }
    match expected_end {
        Some(end) if end != head => Err(BrokenLink {
            seq: end.seq,
            index: entries.len(),
            reason: format!(
                "chain ends at seq {} but the stored head is seq {}: entries are missing",
                head.seq, end.seq
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut head = ChainHead::GENESIS;
        let mut out = Vec::new();
        for i in 1..=n {
            let actor = match i % 4 {
                0 => Actor::Operator,
                1 => Actor::User(UserId(i)),
                2 => Actor::ApiKey(ApiKeyId(i)),
                _ => Actor::Erased(format!("p{i}")),
            };
            let entry = AuditEntry {
                seq: head.seq + 1,
                tenant: Some(TenantId::new("acme").unwrap()),
                actor,
                action: format!("action.{i}"),
                resource: format!("user-{i}"),
                outcome: if i % 3 == 0 { AuditOutcome::Error(ErrorCode::PermissionDenied) } else { AuditOutcome::Ok },
                stamp_ms: 1_700_000_000_000 + i,
                request_id: format!("req-{i}"),
                client_addr: "10.0.0.1:5000".into(),
                prev_hash: [0; 32],
                hash: [0; 32],
            }
            .seal(head.hash)
            .unwrap();
            head = entry.head();
            out.push(entry);
        }
        out
    }

    type Alter = fn(&mut AuditEntry);

    const ALTERATIONS: [(&str, Alter); 11] = [
        ("seq", |e| e.seq += 100),
        ("tenant", |e| e.tenant = Some(TenantId::new("evil").unwrap())),
        ("actor", |e| e.actor = Actor::System),
        ("action", |e| e.action.push('x')),
        ("resource", |e| e.resource = "user-999".into()),
        ("outcome", |e| {
            e.outcome = match e.outcome {
                AuditOutcome::Ok => AuditOutcome::Error(ErrorCode::Internal),
                AuditOutcome::Error(_) => AuditOutcome::Ok,
            }
        }),
        ("stamp_ms", |e| e.stamp_ms -= 1),
        ("request_id", |e| e.request_id.clear()),
        ("client_addr", |e| e.client_addr = "10.0.0.2:5000".into()),
        ("prev_hash", |e| e.prev_hash[0] ^= 1),
        ("hash", |e| e.hash[31] ^= 1),
    ];

    #[test]
    fn a_sealed_chain_verifies() {
        let entries = chain(8);
        assert_eq!(verify_chain(&entries), Ok(()));
        assert_eq!(verify_chain(&[]), Ok(()));
        let end = entries.last().unwrap().head();
        assert_eq!(verify_chain_from(ChainHead::GENESIS, &entries, Some(end)), Ok(()));
        // Paged verification.
        assert_eq!(verify_chain_from(entries[3].head(), &entries[4..], Some(end)), Ok(()));
        // Encoding is stable: resealing gives the same hash.
        let again = entries[2].clone().seal(entries[2].prev_hash).unwrap();
        assert_eq!(again.hash, entries[2].hash);
    }

    #[test]
    fn altering_any_field_of_any_entry_names_that_entry() {
        let entries = chain(6);
        for i in 0..entries.len() {
            for (field, alter) in ALTERATIONS {
                let mut tampered = entries.clone();
                alter(&mut tampered[i]);
                let broken = verify_chain(&tampered).unwrap_err();
                assert_eq!(broken.index, i, "{field} of entry {i}: {broken}");
                assert_eq!(broken.seq, tampered[i].seq, "{field} of entry {i}: {broken}");
            }
        }
    }

    #[test]
    fn resealing_an_altered_entry_breaks_the_next_link() {
        let mut entries = chain(4);
        entries[1].action = "forged".into();
        entries[1] = entries[1].clone().seal(entries[1].prev_hash).unwrap();
        let broken = verify_chain(&entries).unwrap_err();
        assert_eq!((broken.seq, broken.index), (3, 2));
        assert!(broken.reason.contains("prev_hash"), "{broken}");
    }

    #[test]
    fn removed_and_swapped_entries_are_named() {
        let entries = chain(6);
        for i in 0..entries.len() - 1 {
            let mut removed = entries.clone();
            removed.remove(i);
            let broken = verify_chain(&removed).unwrap_err();
            assert_eq!((broken.index, broken.seq), (i, i as u64 + 2), "removed {i}: {broken}");
            assert!(broken.reason.contains(&format!("expected seq {}", i + 1)), "{broken}");

            let mut swapped = entries.clone();
            swapped.swap(i, i + 1);
            let broken = verify_chain(&swapped).unwrap_err();
            assert_eq!((broken.index, broken.seq), (i, i as u64 + 2), "swapped {i}: {broken}");
        }
        // Removing the last entry is only visible against the stored head.
        let end = entries.last().unwrap().head();
        let truncated = &entries[..entries.len() - 1];
        assert_eq!(verify_chain(truncated), Ok(()));
        let broken = verify_chain_from(ChainHead::GENESIS, truncated, Some(end)).unwrap_err();
        assert_eq!((broken.seq, broken.index), (6, 5));
    }

    #[test]
    fn seal_bounds_free_text_at_char_boundaries() {
        let mut e = chain(1).remove(0);
        e.resource = "é".repeat(MAX_AUDIT_RESOURCE);
        e.client_addr = "x".repeat(1000);
        let e = e.seal([0; 32]).unwrap();
        assert!(e.resource.len() <= MAX_AUDIT_RESOURCE && e.resource.chars().all(|c| c == 'é'));
        assert_eq!(e.client_addr.len(), MAX_AUDIT_CLIENT_ADDR);
        assert_eq!(verify_chain(&[e]), Ok(()));
    }
}
