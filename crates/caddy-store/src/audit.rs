//! Audit chains after they are written: retention sweeps, checkpoints, and
//! the audit read path (list, verify, retention). Entries are appended by
//! [`crate::identity`] in the apply of every call; the chain model and its
//! verification are [`caddy_core::identity::audit`].
//!
//! Layout in the `ident` table, beside the entries (`t/{tenant}/audit/{seq}`,
//! `g/audit/{seq}`) and the heads (in the tenant's record, `g/audithead`):
//! - `t/{tenant}/meta/auditcheckpoint`, `g/auditcheckpoint`: the chain's
//!   [`AuditCheckpoint`], once anything was pruned;
//! - `t/{tenant}/meta/auditretention`, `g/auditretention`: the chain's own
//!   [`RetentionOverride`], when the operator set one;
//! - `g/auditdefault`: the cluster default [`AuditRetention`] the latest
//!   sweep carried (shown by reads; apply never uses it).
//!
//! Each is a record of its own, so chains written before retention existed
//! read unchanged: no checkpoint means the chain starts at genesis.
//!
//! Invariants:
//! - A sweep deletes a chain's oldest entries and moves its checkpoint in the
//!   same transaction, so the kept entries always start right after it.
//! - Everything a sweep decides comes from its log entry (stamped time, the
//!   default retention, where to start) and replicated state (each chain's
//!   own retention); it does bounded work: at most
//!   [`AUDIT_PRUNE_PER_SWEEP`] entries deleted and [`AUDIT_CHAINS_PER_SWEEP`]
//!   chains looked at.
//! - Pruning is upkeep by the system and appends no audit entry (that would
//!   add one per sweep forever); the checkpoint records it instead: up to
//!   which entry, its hash, and when.
//! - A read looks at no more than [`AUDIT_SCAN_PER_REQUEST`] entries.

use std::io;

use caddy_core::identity::api::{CheckpointView, IdentityAnswer, IdentityCall};
use caddy_core::identity::audit::{AUDIT_CHAINS_PER_SWEEP, AUDIT_PRUNE_PER_SWEEP, AUDIT_SCAN_PER_REQUEST};
use caddy_core::identity::{
    AuditCheckpoint, AuditEntry, AuditRetention, BrokenLink, ChainHead, KeyKind, RetentionOverride, SweepFrom,
    TenantId, tenant_key, verify_chain_from,
};
use caddy_core::{CaddyError, ReplyBody};
use redb::ReadableTable;

use crate::identity::{CLUSTER_AUDIT_HEAD, IdentTable, TenantRec, audit_prefix, del, get, k_tenant, page_limit, put};
use crate::io_err;
use crate::state_machine::{Tables, open_record};

const DEFAULT_RETENTION: &str = "g/auditdefault";

fn k_checkpoint(t: Option<&TenantId>) -> String {
    match t {
        Some(t) => tenant_key(t, KeyKind::Meta, "auditcheckpoint"),
        None => "g/auditcheckpoint".to_owned(),
    }
}

fn k_retention(t: Option<&TenantId>) -> String {
    match t {
        Some(t) => tenant_key(t, KeyKind::Meta, "auditretention"),
        None => "g/auditretention".to_owned(),
    }
}

/// The stored head of a chain; `None` for a tenant that does not exist.
fn stored_head(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    t: Option<&TenantId>,
) -> io::Result<Option<ChainHead>> {
    Ok(match t {
        Some(t) => get::<TenantRec>(table, &k_tenant(t))?.map(|r| r.audit_head),
        None => Some(get::<ChainHead>(table, CLUSTER_AUDIT_HEAD)?.unwrap_or(ChainHead::GENESIS)),
    })
}

/// Sets (or, when empty, clears) a chain's own retention.
pub(crate) fn set_retention(
    ident: &mut IdentTable<'_>,
    t: Option<&TenantId>,
    own: &RetentionOverride,
) -> io::Result<Result<(), CaddyError>> {
    if let Err(e) = own.validate() {
        return Ok(Err(e));
    }
    if own.is_empty() {
        del(ident, &k_retention(t))?;
    } else {
        put(ident, &k_retention(t), own)?;
    }
    Ok(Ok(()))
}

/// Applies `Command::AuditSweep`: prunes chains from `from` on, within the
/// per-entry bounds, and answers where the next sweep continues.
pub(crate) fn sweep(
    tables: &mut Tables<'_>,
    stamp: u64,
    retention: AuditRetention,
    from: &SweepFrom,
) -> io::Result<Result<ReplyBody, CaddyError>> {
    if let Err(e) = retention.validate() {
        return Ok(Err(e));
    }
    if get::<AuditRetention>(&tables.ident, DEFAULT_RETENTION)? != Some(retention) {
        put(&mut tables.ident, DEFAULT_RETENTION, &retention)?;
    }
    let mut budget = AUDIT_PRUNE_PER_SWEEP;
    let mut pruned = 0;
    let mut chains = 0;
    let swept = |pruned: usize, next: Option<SweepFrom>| Ok(Ok(ReplyBody::AuditSwept { pruned: pruned as u64, next }));
    let first_tenant = match from {
        SweepFrom::Start => {
            let (n, finished) = prune_chain(tables, None, stamp, retention, budget)?;
            (pruned, budget, chains) = (pruned + n, budget - n, 1);
            if !finished {
                return swept(pruned, Some(SweepFrom::Start));
            }
            None
        }
        SweepFrom::Tenant(t) => Some(t.clone()),
    };
    for t in tenant_ids(&tables.ident, first_tenant.as_ref(), AUDIT_CHAINS_PER_SWEEP + 1 - chains)? {
        if chains == AUDIT_CHAINS_PER_SWEEP {
            return swept(pruned, Some(SweepFrom::Tenant(t)));
        }
        let (n, finished) = prune_chain(tables, Some(&t), stamp, retention, budget)?;
        (pruned, budget, chains) = (pruned + n, budget - n, chains + 1);
        if !finished {
            return swept(pruned, Some(SweepFrom::Tenant(t)));
        }
    }
    swept(pruned, None)
}

/// Up to `limit` tenant ids from `first` (included) on, in id order.
fn tenant_ids(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    first: Option<&TenantId>,
    limit: usize,
) -> io::Result<Vec<TenantId>> {
    const PREFIX: &str = "g/tenant/";
    let start = first.map_or_else(|| PREFIX.to_owned(), |t| format!("{PREFIX}{t}"));
    let mut out = Vec::new();
    for item in table.range(start.as_str()..).map_err(io_err)? {
        let (k, _) = item.map_err(io_err)?;
        let Some(id) = k.value().strip_prefix(PREFIX) else { break };
        if out.len() == limit {
            break;
        }
        // Keys were built from valid ids; anything else is not a chain.
        if let Ok(id) = TenantId::new(id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Prunes up to `budget` due entries of one chain, oldest first; answers how
/// many and whether nothing due is left.
fn prune_chain(
    tables: &mut Tables<'_>,
    t: Option<&TenantId>,
    stamp: u64,
    default: AuditRetention,
    budget: usize,
) -> io::Result<(usize, bool)> {
    // Within a batch the cluster head may be newer than the stored one.
    let head = match (t, tables.cluster_audit_head) {
        (None, Some(cached)) => Some(cached),
        _ => stored_head(&tables.ident, t)?,
    };
    let Some(head) = head else { return Ok((0, true)) };
    let own = get::<RetentionOverride>(&tables.ident, &k_retention(t))?;
    let policy = default.with(own.as_ref());
    let prefix = audit_prefix(t);
    let mut due: Vec<(String, AuditEntry)> = Vec::new();
    let mut finished = true;
    for item in tables.ident.range(prefix.as_str()..).map_err(io_err)? {
        let (k, v) = item.map_err(io_err)?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        let entry: AuditEntry = open_record("audit entry", v.value())?;
        if !policy.due(entry.seq, entry.stamp_ms, head.seq, stamp) {
            break;
        }
        if due.len() == budget {
            finished = false;
            break;
        }
        due.push((k.value().to_owned(), entry));
    }
    if due.is_empty() {
        return Ok((0, finished));
    }
    let mut checkpoint = get::<AuditCheckpoint>(&tables.ident, &k_checkpoint(t))?;
    for (key, entry) in &due {
        checkpoint = Some(AuditCheckpoint::advance(checkpoint.as_ref(), entry, stamp));
        del(&mut tables.ident, key)?;
    }
    if let Some(c) = &checkpoint {
        put(&mut tables.ident, &k_checkpoint(t), c)?;
    }
    Ok((due.len(), finished))
}

/// Answers an audit read (authorized by the caller) for a chain.
pub(crate) fn read(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    tenant: Option<&TenantId>,
    call: &IdentityCall,
) -> io::Result<Result<IdentityAnswer, CaddyError>> {
    match call {
        IdentityCall::AuditList { actor, action, from_ms, to_ms, after_seq, limit } => {
            let keep = |e: &AuditEntry| {
                actor.as_ref().is_none_or(|a| e.actor.to_string() == *a)
                    && action.as_ref().is_none_or(|a| e.action == *a || e.action.starts_with(&format!("{a}.")))
                    && from_ms.is_none_or(|f| e.stamp_ms >= f)
                    && to_ms.is_none_or(|t| e.stamp_ms <= t)
            };
            list(table, tenant, *after_seq, page_limit(*limit), keep)
        }
        IdentityCall::AuditVerify { after_seq, after_hash } => verify(table, tenant, *after_seq, after_hash),
        IdentityCall::AuditRetention => {
            let Some(head) = stored_head(table, tenant)? else {
                return Ok(Err(CaddyError::new(caddy_core::ErrorCode::NotFound, "tenant not found")));
            };
            let checkpoint = get::<AuditCheckpoint>(table, &k_checkpoint(tenant))?;
            let anchor = checkpoint.as_ref().map_or(0, |c| c.seq);
            Ok(Ok(IdentityAnswer::AuditRetention {
                tenant: tenant.map(|t| t.to_string()),
                own: get(table, &k_retention(tenant))?.unwrap_or_default(),
                default: get(table, DEFAULT_RETENTION)?,
                checkpoint: checkpoint.as_ref().map(CheckpointView::from),
                head_seq: head.seq,
                kept: head.seq.saturating_sub(anchor),
            }))
        }
        other => Ok(Err(CaddyError::internal(format!("{} is not an audit read", other.name())))),
    }
}

/// The sequence number a chain key ends with.
fn key_seq(key: &str, prefix: &str) -> Option<u64> {
    u64::from_str_radix(key.strip_prefix(prefix)?, 16).ok()
}

fn list(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    tenant: Option<&TenantId>,
    after_seq: u64,
    limit: usize,
    keep: impl Fn(&AuditEntry) -> bool,
) -> io::Result<Result<IdentityAnswer, CaddyError>> {
    let prefix = audit_prefix(tenant);
    let start = if after_seq == 0 { prefix.clone() } else { format!("{prefix}{after_seq:016x}\u{0}") };
    let mut entries = Vec::new();
    let mut cursor = after_seq;
    let mut more = false;
    for (looked, item) in table.range(start.as_str()..).map_err(io_err)?.enumerate() {
        let (k, v) = item.map_err(io_err)?;
        let Some(seq) = key_seq(k.value(), &prefix) else { break };
        if looked == AUDIT_SCAN_PER_REQUEST {
            more = true;
            break;
        }
        let entry: AuditEntry = open_record("audit entry", v.value())?;
        if keep(&entry) {
            if entries.len() == limit {
                // Not consumed: the next page starts with it.
                more = true;
                break;
            }
            entries.push((&entry).into());
        }
        cursor = seq;
    }
    Ok(Ok(IdentityAnswer::Audit { entries, more, next_after_seq: more.then_some(cursor) }))
}

fn verify(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    tenant: Option<&TenantId>,
    after_seq: u64,
    after_hash: &str,
) -> io::Result<Result<IdentityAnswer, CaddyError>> {
    let Some(head) = stored_head(table, tenant)? else {
        return Ok(Err(CaddyError::new(caddy_core::ErrorCode::NotFound, "tenant not found")));
    };
    let checkpoint = get::<AuditCheckpoint>(table, &k_checkpoint(tenant))?;
    let anchor = checkpoint.as_ref().map_or(ChainHead::GENESIS, AuditCheckpoint::head);
    let answer = |entries: u64, broken: Option<BrokenLink>, after: u64, last: ChainHead, more: bool| {
        Ok(Ok(IdentityAnswer::Verified {
            tenant: tenant.map(|t| t.to_string()),
            entries,
            head_seq: head.seq,
            broken,
            checkpoint: checkpoint.as_ref().map(CheckpointView::from),
            after_seq: after,
            last_seq: last.seq,
            last_hash: hex::encode(last.hash),
            more,
        }))
    };
    if let Some(b) = checkpoint.as_ref().and_then(|c| c.broken.as_ref()) {
        let reason = format!("{} (found when the entry was pruned)", b.reason);
        return answer(0, Some(BrokenLink { seq: b.seq, index: 0, reason }), anchor.seq, anchor, false);
    }
    // Pruning that overtook a paged verification restarts it at the
    // checkpoint; the answer's `after_seq` tells the client.
    let start = if after_seq == 0 || after_seq < anchor.seq {
        anchor
    } else {
        if after_seq > head.seq {
            return Ok(Err(CaddyError::invalid(format!(
                "after_seq {after_seq} is past the chain's head (seq {})",
                head.seq
            ))));
        }
        let hash = hex::decode(after_hash).ok().and_then(|h| <[u8; 32]>::try_from(h).ok());
        let Some(hash) = hash else {
            return Ok(Err(CaddyError::invalid("after_hash must be the 64 hex digits of the entry at after_seq")));
        };
        ChainHead { seq: after_seq, hash }
    };
    let prefix = audit_prefix(tenant);
    let from = format!("{prefix}{:016x}\u{0}", start.seq);
    let mut entries: Vec<AuditEntry> = Vec::new();
    let mut more = false;
    for item in table.range(from.as_str()..).map_err(io_err)? {
        let (k, v) = item.map_err(io_err)?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        if entries.len() == AUDIT_SCAN_PER_REQUEST {
            more = true;
            break;
        }
        entries.push(open_record("audit entry", v.value())?);
    }
    // The stored head can only be checked on the page that reaches it.
    let end = if more { None } else { Some(head) };
    match verify_chain_from(start, &entries, end) {
        Err(mut broken) => {
            if broken.index == 0 && start == anchor && checkpoint.is_some() {
                broken.reason = format!(
                    "{}; the chain was pruned and must continue its checkpoint at seq {} (the checkpoint or the entry was altered)",
                    broken.reason, anchor.seq
                );
            }
            let good = broken.index as u64;
            answer(good, Some(broken), start.seq, start, false)
        }
        Ok(()) => {
            let last = entries.last().map_or(start, AuditEntry::head);
            answer(entries.len() as u64, None, start.seq, last, more)
        }
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
