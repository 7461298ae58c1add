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
//!
//! **Retention:** a chain keeps its entries for an [`AuditRetention`] (an age
//! and a count, the cluster's default or the chain's own
//! [`RetentionOverride`]). A leader-proposed sweep prunes the oldest entries
//! past it, a bounded number per log entry ([`AUDIT_PRUNE_PER_SWEEP`]), and
//! leaves the chain an [`AuditCheckpoint`]: the sequence number and hash of
//! the last pruned entry. The first kept entry's `prev_hash` is that hash, so
//! verification starts from the checkpoint instead of [`ChainHead::GENESIS`]
//! and still detects any change to the kept entries, to the checkpoint or to
//! the head. Pruning checks each entry it removes against the checkpoint it
//! extends; a break it finds is kept in the checkpoint ([`PrunedBreak`]) so
//! pruning never erases the evidence of tampering. What pruning cannot prove
//! is that the pruned entries were what they claimed: the hash in the
//! checkpoint is the anchor to compare with an export taken before pruning.
//!
//! **Bounded reads:** one list or verify request touches at most
//! [`AUDIT_SCAN_PER_REQUEST`] entries and returns where to continue.

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

const DAY_MS: u64 = 24 * 3600 * 1000;
/// Most entries one audit read (a list page, a verify page) looks at; past
/// it the answer says where to continue, so a filter that matches nothing
/// costs a bounded amount of work per request.
pub const AUDIT_SCAN_PER_REQUEST: usize = 10_000;
/// Most entries one sweep log entry prunes, across all chains.
pub const AUDIT_PRUNE_PER_SWEEP: usize = 1_000;
/// Most chains one sweep log entry looks at (each costs a few reads even
/// when nothing is due).
pub const AUDIT_CHAINS_PER_SWEEP: usize = 256;

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

/// How long a chain keeps its entries: an entry is pruned once it is
/// `max_age_ms` old (by stamped time) or once `max_entries` newer entries
/// follow it, whichever comes first. Oldest entries go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRetention {
    /// Entries at least this old are pruned, in milliseconds.
    pub max_age_ms: u64,
    /// At most this many entries are kept.
    pub max_entries: u64,
}

impl AuditRetention {
    /// The default: a year, and at most 10,000 entries per chain (every
    /// node keeps every chain in its state and snapshots; a trail to keep
    /// longer is exported with `caddyctl audit export` or given its own
    /// retention).
    pub const DEFAULT: AuditRetention = AuditRetention { max_age_ms: 365 * DAY_MS, max_entries: 10_000 };
    /// Shortest retention by age: a day.
    pub const MIN_AGE_MS: u64 = DAY_MS;
    /// Longest retention by age: 100 years (in effect, by count only).
    pub const MAX_AGE_MS: u64 = 36_500 * DAY_MS;
    /// Fewest entries a chain may be limited to.
    pub const MIN_ENTRIES: u64 = 1;
    /// Most entries a chain may keep (at a few hundred bytes each, on every node).
    pub const MAX_ENTRIES: u64 = 10_000_000;

    /// Refuses values outside the bounds above.
    pub fn validate(&self) -> Result<(), CaddyError> {
        check_age(self.max_age_ms)?;
        check_entries(self.max_entries)
    }

    /// This retention with a chain's own settings applied.
    pub fn with(self, own: Option<&RetentionOverride>) -> AuditRetention {
        match own {
            None => self,
            Some(o) => AuditRetention {
                max_age_ms: o.max_age_ms.unwrap_or(self.max_age_ms),
                max_entries: o.max_entries.unwrap_or(self.max_entries),
            },
        }
    }

    /// Whether the entry `seq`, stamped `stamp_ms`, is due for pruning at
    /// `now_ms` in a chain whose last entry is `head_seq`.
    pub fn due(&self, seq: u64, stamp_ms: u64, head_seq: u64, now_ms: u64) -> bool {
        // Keeping `seq` would keep head_seq - seq + 1 entries.
        let too_many = head_seq.saturating_sub(seq) >= self.max_entries;
        let too_old = stamp_ms.saturating_add(self.max_age_ms) <= now_ms;
        too_many || too_old
    }
}

impl fmt::Display for AuditRetention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} and at most {} entries", age_text(self.max_age_ms), self.max_entries)
    }
}

fn age_text(ms: u64) -> String {
    if ms.is_multiple_of(DAY_MS) { format!("{} days", ms / DAY_MS) } else { format!("{ms} ms") }
}

fn check_age(ms: u64) -> Result<(), CaddyError> {
    if !(AuditRetention::MIN_AGE_MS..=AuditRetention::MAX_AGE_MS).contains(&ms) {
        return Err(CaddyError::invalid(format!(
            "audit retention by age must be between {} and {} days",
            AuditRetention::MIN_AGE_MS / DAY_MS,
            AuditRetention::MAX_AGE_MS / DAY_MS
        )));
    }
    Ok(())
}

fn check_entries(n: u64) -> Result<(), CaddyError> {
    if !(AuditRetention::MIN_ENTRIES..=AuditRetention::MAX_ENTRIES).contains(&n) {
        return Err(CaddyError::invalid(format!(
            "audit retention by count must be between {} and {} entries",
            AuditRetention::MIN_ENTRIES,
            AuditRetention::MAX_ENTRIES
        )));
    }
    Ok(())
}

/// A chain's own retention, set by the operator; a `None` field follows the
/// cluster's default. Persisted (postcard): its fields are frozen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionOverride {
    /// Own age limit, in milliseconds.
    pub max_age_ms: Option<u64>,
    /// Own count limit.
    pub max_entries: Option<u64>,
}

impl RetentionOverride {
    /// Refuses values outside [`AuditRetention`]'s bounds.
    pub fn validate(&self) -> Result<(), CaddyError> {
        self.max_age_ms.map_or(Ok(()), check_age)?;
        self.max_entries.map_or(Ok(()), check_entries)
    }

    /// Whether it sets nothing (the chain follows the default).
    pub fn is_empty(&self) -> bool {
        self.max_age_ms.is_none() && self.max_entries.is_none()
    }
}

impl fmt::Display for RetentionOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let age = self.max_age_ms.map_or_else(|| "default age".to_owned(), age_text);
        let count = self.max_entries.map_or_else(|| "default count".to_owned(), |n| format!("{n} entries"));
        write!(f, "{age}, {count}")
    }
}

/// Where an audit sweep continues (it travels in the log entry, so every
/// replica walks the chains in the same order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SweepFrom {
    /// The cluster chain, then every tenant's, in tenant id order.
    Start,
    /// Tenant chains from this tenant (included), in tenant id order.
    Tenant(TenantId),
}

/// A break found in an entry while it was being pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedBreak {
    /// The entry's sequence number.
    pub seq: u64,
    /// What was wrong with it.
    pub reason: String,
}

/// Where a pruned chain now starts: the last pruned entry. Persisted
/// (postcard, a record of its own beside the chain): its fields are frozen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    /// Sequence number of the last pruned entry.
    pub seq: u64,
    /// Its hash: the first kept entry's `prev_hash`.
    pub hash: [u8; 32],
    /// Its stamped time.
    pub stamp_ms: u64,
    /// Stamped time of the sweep that pruned it.
    pub pruned_at_ms: u64,
    /// The first break found among the pruned entries, kept for good.
    pub broken: Option<PrunedBreak>,
}

impl AuditCheckpoint {
    /// The head the kept entries continue from.
    pub fn head(&self) -> ChainHead {
        ChainHead { seq: self.seq, hash: self.hash }
    }

    /// The checkpoint after pruning `entry`, the oldest entry left after
    /// `previous` (none: the chain's first). The entry is checked against the
    /// head it must continue; the first break found is remembered.
    pub fn advance(previous: Option<&AuditCheckpoint>, entry: &AuditEntry, pruned_at_ms: u64) -> AuditCheckpoint {
        let start = previous.map_or(ChainHead::GENESIS, AuditCheckpoint::head);
        let broken = match previous.and_then(|p| p.broken.clone()) {
            Some(b) => Some(b),
            None => verify_chain_from(start, std::slice::from_ref(entry), None)
                .err()
                .map(|b| PrunedBreak { seq: entry.seq, reason: b.reason }),
        };
        AuditCheckpoint { seq: entry.seq, hash: entry.hash, stamp_ms: entry.stamp_ms, pruned_at_ms, broken }
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

    #[test]
    fn retention_prunes_by_count_and_by_age_whichever_comes_first() {
        let day = 24 * 3600 * 1000;
        let r = AuditRetention { max_age_ms: 10 * day, max_entries: 3 };
        // Head at 10: entries 8, 9 and 10 are kept by count.
        assert!(r.due(7, 100 * day, 10, 100 * day));
        assert!(!r.due(8, 100 * day, 10, 100 * day));
        // Young enough by count but too old by age.
        assert!(r.due(9, 90 * day, 10, 100 * day));
        assert!(!r.due(9, 90 * day + 1, 10, 100 * day));
        assert_eq!(AuditRetention::DEFAULT.validate(), Ok(()));
        for bad in [
            AuditRetention { max_age_ms: day - 1, max_entries: 10 },
            AuditRetention { max_age_ms: day, max_entries: 0 },
            AuditRetention { max_age_ms: day, max_entries: AuditRetention::MAX_ENTRIES + 1 },
        ] {
            assert_eq!(bad.validate().unwrap_err().code, ErrorCode::InvalidArgument, "{bad:?}");
        }
        let own = RetentionOverride { max_age_ms: None, max_entries: Some(7) };
        assert_eq!(own.validate(), Ok(()));
        assert_eq!(r.with(Some(&own)), AuditRetention { max_age_ms: 10 * day, max_entries: 7 });
        assert!(RetentionOverride { max_age_ms: Some(1), max_entries: None }.validate().is_err());
    }

    #[test]
    fn a_checkpoint_advances_over_pruned_entries_and_keeps_the_first_break() {
        let entries = chain(6);
        let mut cp: Option<AuditCheckpoint> = None;
        for e in &entries[..3] {
            cp = Some(AuditCheckpoint::advance(cp.as_ref(), e, 42));
        }
        let cp = cp.unwrap();
        assert_eq!((cp.seq, cp.hash, cp.broken.clone()), (3, entries[2].hash, None));
        // The kept entries continue the checkpoint.
        let end = entries.last().unwrap().head();
        assert_eq!(verify_chain_from(cp.head(), &entries[3..], Some(end)), Ok(()));
        // An altered entry found while pruning is remembered, and stays so.
        let mut altered = entries[3].clone();
        altered.action = "forged".into();
        let cp = AuditCheckpoint::advance(Some(&cp), &altered, 43);
        let broken = cp.broken.clone().unwrap();
        assert_eq!(broken.seq, 4);
        assert!(broken.reason.contains("altered"), "{broken:?}");
        let cp = AuditCheckpoint::advance(Some(&cp), &entries[4], 44);
        assert_eq!(cp.broken.map(|b| b.seq), Some(4));
        // A gap before a pruned entry is a break too.
        let gap = AuditCheckpoint::advance(None, &entries[1], 45);
        assert!(gap.broken.unwrap().reason.contains("expected seq 1"));
    }
}
