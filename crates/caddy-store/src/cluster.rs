//! Cluster credentials in the replicated state (table `cluster`): join
//! tokens and the node certificate registry.
//!
//! Layout (values are sealed records):
//! - `tok/{id:020}` → [`JoinToken`]; `toh/{blake3 hex}` → its id; `seq/token`
//!   → the last id handed out.
//! - `cert/{node:020}` → [`NodeCert`]: which certificate generations of a
//!   node id the cluster issued and which it still accepts.
//!
//! Invariants:
//! - A join token admits one node, once: [`enroll`] consumes it in the same
//!   apply that issues the node's certificate generation, so of two
//!   enrollments racing with one token the second is refused. The same node
//!   asking again with the same key gets the same answer (a joiner may retry
//!   after losing the reply), anything else is refused.
//! - Only an id that is not a member can be enrolled (a token never takes
//!   over a member's identity); only a member renews its certificate.
//! - `accepted_from` of a node id never decreases: an enrollment raises it to
//!   the new generation at once, a rotation when the node says it switched
//!   ([`activate`]), a removal from the membership past every generation
//!   issued ([`retire_removed`]). Peers refuse certificates below it, and
//!   above the newest one issued.
//! - Bounded: at most [`MAX_ACTIVE_TOKENS`] usable tokens; ended ones are
//!   forgotten [`TOKEN_RETENTION_MS`] after they ended, and at most
//!   [`MAX_TOKEN_RECORDS`] records are kept. One certificate record per node
//!   id ever enrolled or rotated.

use std::io;

use caddy_core::{CaddyError, ErrorCode, NodeId, ReplyBody};
use redb::{ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::io_err;
use crate::state_machine::{open_record, seal};
use crate::types::StoredMembership;

/// The table of this module.
pub(crate) const CLUSTER: TableDefinition<&str, &[u8]> = TableDefinition::new("cluster");
/// Join tokens of older builds (hash → expiry); no longer read.
pub(crate) const LEGACY_JOIN_TOKENS: TableDefinition<&[u8], u64> = TableDefinition::new("join_tokens");

/// Most join tokens usable at the same time.
pub const MAX_ACTIVE_TOKENS: usize = 64;
/// Longest join token lifetime.
pub const MAX_TOKEN_TTL_MS: u64 = 24 * 3600 * 1000;
/// How long a used, revoked or expired token stays listed.
pub const TOKEN_RETENTION_MS: u64 = 24 * 3600 * 1000;
/// Most token records kept (usable or ended).
pub const MAX_TOKEN_RECORDS: usize = 256;

const SEQ_TOKEN: &str = "seq/token";

type ClusterTable<'t> = Table<'t, &'static str, &'static [u8]>;

/// Where a join token stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenState {
    /// Usable until it expires.
    Active,
    /// Consumed by an enrollment.
    Used {
        /// The node it admitted.
        node: NodeId,
        /// The certificate generation issued.
        generation: u64,
        /// blake3 of the key certified.
        key_hash: [u8; 32],
        /// When (stamped time).
        at_ms: u64,
    },
    /// Revoked by the operator.
    Revoked {
        /// When (stamped time).
        at_ms: u64,
    },
}

/// A join token as the state machine keeps it (its secret only as a hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// Id shown to the operator (`caddyctl cluster join-token --list`).
    pub id: u64,
    /// blake3 of the secret part.
    pub secret_hash: [u8; 32],
    /// Created (stamped time).
    pub created_ms: u64,
    /// Expiry (stamped time).
    pub expires_at_ms: u64,
    /// Usable, used or revoked.
    pub state: TokenState,
}

impl JoinToken {
    /// When it stopped being usable, if it did by `now_ms`.
    pub fn ended_ms(&self, now_ms: u64) -> Option<u64> {
        match self.state {
            TokenState::Used { at_ms, .. } | TokenState::Revoked { at_ms } => Some(at_ms),
            TokenState::Active if self.expires_at_ms <= now_ms => Some(self.expires_at_ms),
            TokenState::Active => None,
        }
    }
}

/// The certificate generations of one node id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCert {
    /// Certificates of a lower generation are refused.
    pub accepted_from: u64,
    /// The newest generation issued.
    pub latest: u64,
    /// blake3 of the key `latest` is issued for (what a signer may sign).
    pub key_hash: Option<[u8; 32]>,
    /// Last change (stamped time).
    pub changed_ms: u64,
}

impl NodeCert {
    /// The generation after the newest one. Generation 1 is the one a node
    /// issues itself when it creates the cluster (or upgrades an older
    /// certificate), so issued ones start at 2 and always supersede it.
    fn next_generation(&self) -> u64 {
        self.latest.max(1) + 1
    }
}

fn token_key(id: u64) -> String {
    format!("tok/{id:020}")
}

fn hash_key(hash: &[u8; 32]) -> String {
    format!("toh/{}", hex::encode(hash))
}

fn cert_key(node: NodeId) -> String {
    format!("cert/{node:020}")
}

fn is_member(membership: &StoredMembership, node: NodeId) -> bool {
    membership.membership().nodes().any(|(id, _)| *id == node)
}

fn refused(code: ErrorCode, message: impl Into<String>) -> io::Result<Result<ReplyBody, CaddyError>> {
    Ok(Err(CaddyError::new(code, message)))
}

fn get<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    what: &str,
) -> io::Result<Option<T>> {
    match table.get(key).map_err(io_err)? {
        Some(raw) => Ok(Some(open_record(what, raw.value())?)),
        None => Ok(None),
    }
}

fn put<T: Serialize>(table: &mut ClusterTable<'_>, key: &str, value: &T) -> io::Result<()> {
    table.insert(key, seal(value)?.as_slice()).map_err(io_err)?;
    Ok(())
}

fn tokens(table: &impl ReadableTable<&'static str, &'static [u8]>) -> io::Result<Vec<JoinToken>> {
    let mut out = Vec::new();
    for item in table.range("tok/".."tok0").map_err(io_err)? {
        let (_, v) = item.map_err(io_err)?;
        out.push(open_record("join token", v.value())?);
    }
    Ok(out)
}

fn forget_token(table: &mut ClusterTable<'_>, token: &JoinToken) -> io::Result<()> {
    table.remove(token_key(token.id).as_str()).map_err(io_err)?;
    table.remove(hash_key(&token.secret_hash).as_str()).map_err(io_err)?;
    Ok(())
}

/// Forgets tokens that ended more than the retention ago, then the oldest
/// ended ones while there are too many records.
fn sweep_tokens(table: &mut ClusterTable<'_>, now_ms: u64) -> io::Result<Vec<JoinToken>> {
    let mut kept = Vec::new();
    for token in tokens(table)? {
        match token.ended_ms(now_ms) {
            Some(ended) if ended.saturating_add(TOKEN_RETENTION_MS) <= now_ms => forget_token(table, &token)?,
            _ => kept.push(token),
        }
    }
    if kept.len() >= MAX_TOKEN_RECORDS {
        let mut ended: Vec<(u64, JoinToken)> =
            kept.iter().filter_map(|t| t.ended_ms(now_ms).map(|e| (e, t.clone()))).collect();
        ended.sort_by_key(|(e, t)| (*e, t.id));
        let excess = kept.len() + 1 - MAX_TOKEN_RECORDS;
        for (_, token) in ended.iter().take(excess) {
            forget_token(table, token)?;
        }
        let gone: Vec<u64> = ended.iter().take(excess).map(|(_, t)| t.id).collect();
        kept.retain(|t| !gone.contains(&t.id));
    }
    Ok(kept)
}

/// `CreateJoinToken`.
pub(crate) fn create_token(
    table: &mut ClusterTable<'_>,
    now_ms: u64,
    token_hash: &[u8; 32],
    expires_at_ms: u64,
) -> io::Result<Result<ReplyBody, CaddyError>> {
    if expires_at_ms <= now_ms {
        return refused(ErrorCode::InvalidArgument, "join token would already be expired");
    }
    if expires_at_ms - now_ms > MAX_TOKEN_TTL_MS {
        return refused(ErrorCode::InvalidArgument, "a join token lives at most 24 hours");
    }
    let kept = sweep_tokens(table, now_ms)?;
    if kept.iter().filter(|t| t.ended_ms(now_ms).is_none()).count() >= MAX_ACTIVE_TOKENS {
        return refused(
            ErrorCode::ResourceExhausted,
            format!(
                "{MAX_ACTIVE_TOKENS} join tokens are usable already; revoke some (caddyctl cluster join-token --list)"
            ),
        );
    }
    if table.get(hash_key(token_hash).as_str()).map_err(io_err)?.is_some() {
        return refused(ErrorCode::AlreadyExists, "this join token exists already");
    }
    let id = get::<u64>(table, SEQ_TOKEN, "token sequence")?.unwrap_or(0) + 1;
    put(table, SEQ_TOKEN, &id)?;
    let token =
        JoinToken { id, secret_hash: *token_hash, created_ms: now_ms, expires_at_ms, state: TokenState::Active };
    put(table, &token_key(id), &token)?;
    put(table, &hash_key(token_hash), &id)?;
    Ok(Ok(ReplyBody::Created { id }))
}

/// `RevokeJoinToken`.
pub(crate) fn revoke_token(
    table: &mut ClusterTable<'_>,
    now_ms: u64,
    id: u64,
) -> io::Result<Result<ReplyBody, CaddyError>> {
    let Some(mut token) = get::<JoinToken>(table, &token_key(id), "join token")? else {
        return refused(ErrorCode::NotFound, format!("no join token {id}"));
    };
    match token.state {
        TokenState::Used { node, .. } => refused(
            ErrorCode::FailedPrecondition,
            format!("join token {id} was used by node {node} already; remove that node instead"),
        ),
        TokenState::Revoked { .. } => Ok(Ok(ReplyBody::Done)),
        TokenState::Active => {
            token.state = TokenState::Revoked { at_ms: now_ms };
            put(table, &token_key(id), &token)?;
            Ok(Ok(ReplyBody::Done))
        }
    }
}

/// `EnrollNode`.
pub(crate) fn enroll(
    table: &mut ClusterTable<'_>,
    membership: &StoredMembership,
    now_ms: u64,
    token_hash: &[u8; 32],
    node: NodeId,
    key_hash: &[u8; 32],
) -> io::Result<Result<ReplyBody, CaddyError>> {
    let unknown = "join token unknown or expired; create one with `caddyctl cluster join-token`";
    let Some(id) = get::<u64>(table, &hash_key(token_hash), "join token index")? else {
        return refused(ErrorCode::PermissionDenied, unknown);
    };
    let Some(mut token) = get::<JoinToken>(table, &token_key(id), "join token")? else {
        return refused(ErrorCode::PermissionDenied, unknown);
    };
    match &token.state {
        TokenState::Used { node: used_by, generation, key_hash: used_key, .. } => {
            if *used_by == node && used_key == key_hash {
                return Ok(Ok(ReplyBody::NodeCert { generation: *generation }));
            }
            return refused(ErrorCode::PermissionDenied, format!("join token {id} was used already"));
        }
        TokenState::Revoked { .. } => {
            return refused(ErrorCode::PermissionDenied, format!("join token {id} was revoked"));
        }
        TokenState::Active if token.expires_at_ms <= now_ms => {
            return refused(ErrorCode::PermissionDenied, unknown);
        }
        TokenState::Active => {}
    }
    if node == 0 {
        return refused(ErrorCode::InvalidArgument, "node id 0 is reserved");
    }
    if is_member(membership, node) {
        return refused(
            ErrorCode::FailedPrecondition,
            format!("node {node} is a member; a join token cannot take over a member's id (remove it first)"),
        );
    }
    let mut cert = get::<NodeCert>(table, &cert_key(node), "node certificate")?.unwrap_or_default();
    let generation = cert.next_generation();
    cert = NodeCert { accepted_from: generation, latest: generation, key_hash: Some(*key_hash), changed_ms: now_ms };
    put(table, &cert_key(node), &cert)?;
    token.state = TokenState::Used { node, generation, key_hash: *key_hash, at_ms: now_ms };
    put(table, &token_key(id), &token)?;
    Ok(Ok(ReplyBody::NodeCert { generation }))
}

/// `RenewNodeCert`.
pub(crate) fn renew(
    table: &mut ClusterTable<'_>,
    membership: &StoredMembership,
    now_ms: u64,
    node: NodeId,
    key_hash: &[u8; 32],
) -> io::Result<Result<ReplyBody, CaddyError>> {
    if !is_member(membership, node) {
        return refused(ErrorCode::FailedPrecondition, format!("node {node} is not a member"));
    }
    let mut cert = get::<NodeCert>(table, &cert_key(node), "node certificate")?.unwrap_or_default();
    let generation = cert.next_generation();
    cert.latest = generation;
    cert.key_hash = Some(*key_hash);
    cert.changed_ms = now_ms;
    put(table, &cert_key(node), &cert)?;
    Ok(Ok(ReplyBody::NodeCert { generation }))
}

/// `ActivateNodeCert`.
pub(crate) fn activate(
    table: &mut ClusterTable<'_>,
    now_ms: u64,
    node: NodeId,
    generation: u64,
) -> io::Result<Result<ReplyBody, CaddyError>> {
    let Some(mut cert) = get::<NodeCert>(table, &cert_key(node), "node certificate")? else {
        return refused(ErrorCode::NotFound, format!("no certificate was issued to node {node}"));
    };
    if generation != cert.latest {
        return refused(
            ErrorCode::FailedPrecondition,
            format!("node {node}'s newest certificate is generation {}, not {generation}", cert.latest),
        );
    }
    if cert.accepted_from < generation {
        cert.accepted_from = generation;
        cert.changed_ms = now_ms;
        put(table, &cert_key(node), &cert)?;
    }
    Ok(Ok(ReplyBody::Done))
}

/// Applies a membership change from `before` to `after`: every id that was
/// a member and is no longer one has all its certificates retired, so a
/// removed node is refused by every peer and cannot add itself back; it
/// joins again only through a new join token (which issues a newer
/// generation).
pub(crate) fn retire_removed(
    table: &mut ClusterTable<'_>,
    before: &StoredMembership,
    after: &StoredMembership,
) -> io::Result<()> {
    let removed: Vec<NodeId> =
        before.membership().nodes().map(|(id, _)| *id).filter(|id| !is_member(after, *id)).collect();
    for node in removed {
        let mut cert = get::<NodeCert>(table, &cert_key(node), "node certificate")?.unwrap_or_default();
        // Generation 1 (a node's own, from bootstrap or an upgrade) is
        // retired as well: no record read as "accept from 0".
        cert.latest = cert.latest.max(1);
        let retired_below = cert.latest + 1;
        if cert.accepted_from < retired_below {
            cert.accepted_from = retired_below;
            put(table, &cert_key(node), &cert)?;
        }
    }
    Ok(())
}

/// Every join token kept, by id.
pub(crate) fn list_tokens(table: &impl ReadableTable<&'static str, &'static [u8]>) -> io::Result<Vec<JoinToken>> {
    tokens(table)
}

/// The token whose secret hashes to `hash`.
pub(crate) fn token_by_hash(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    hash: &[u8; 32],
) -> io::Result<Option<JoinToken>> {
    match get::<u64>(table, &hash_key(hash), "join token index")? {
        Some(id) => get(table, &token_key(id), "join token"),
        None => Ok(None),
    }
}

/// The certificate record of `node` (none: never enrolled nor rotated).
pub(crate) fn node_cert(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    node: NodeId,
) -> io::Result<Option<NodeCert>> {
    get(table, &cert_key(node), "node certificate")
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
