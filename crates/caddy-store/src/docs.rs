//! CAD documents in the state machine: records, committed updates, history,
//! tags, snapshots, a cache of loaded documents and background compaction.
//!
//! Layout of the `docs` table (`D` = 16 hex digits of the document id,
//! `S` = 16 hex digits of a change number):
//! - `t/{tenant}/i/D`: [`DocRec`], the record (name, owner, counters, version);
//! - `t/{tenant}/s/D`: [`SnapRec`], a Loro snapshot holding changes `0..=seq`;
//! - `t/{tenant}/u/D/S`: [`UpdateRec`], committed update bytes not yet
//!   folded into the snapshot;
//! - `t/{tenant}/h/D/S`: [`HistRec`], one per committed change (author,
//!   stamped time, resulting version), the newest [`MAX_HISTORY`] kept;
//! - `t/{tenant}/g/D/{tag}`: [`TagRec`].
//!
//! A deleted (trashed) document is also in the trash index of the `files`
//! table ([`crate::files`]), which the files sweep purges it from.
//!
//! Invariants:
//! - The document is the snapshot plus the update records after it.
//!   Compaction (node-local, off the apply path) replaces both with a newer
//!   snapshot in one transaction, so readers and apply always see a
//!   consistent pair; it never changes what the document holds.
//! - Apply decides only from replicated inputs: the bounds come with the
//!   log entry, the document size is the sum of committed update sizes
//!   (not an estimate that depends on when this node last compacted), and
//!   imports refuse updates with missing dependencies, so every replica
//!   stores the same sequence of updates.
//! - Only apply puts documents into the cache, after reading them inside
//!   its own write transaction, so a cached document is always exactly the
//!   committed (or being-committed) state. Readers use a cached document
//!   under its lock, or load a private copy from a read transaction.
//! - Server-side edits (rename) are written with a peer id derived from the
//!   tenant and document, in apply only; every replica produces the same
//!   operation ids.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use caddy_core::docs::{
    DocAnswer, DocBounds, DocCall, DocId, DocInfo, DocTag, Fetched, HistoryEntry, MAX_TAGS_PER_DOC, doc_name,
    parse_version, tag_name,
};
use caddy_core::files::ItemId;
use caddy_core::identity::api::Op;
use caddy_core::identity::{Actor, Caller, QuotaKind, Quotas, TenantId, Usage};
use caddy_core::{CaddyError, ErrorCode, ReplyBody};
use caddy_doc::{DocError, Document, Limits, NewDocument, Units};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::identity::keys_under;
use crate::io_err;
use crate::state_machine::{Tables, open_record, seal};

#[cfg(test)]
#[path = "docs_tests.rs"]
mod tests;

pub(crate) const DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("docs");

/// History entries kept per document (older ones are dropped; the content
/// they describe stays in the document).
pub const MAX_HISTORY: u64 = 100_000;
/// Updates after the snapshot that make apply ask for a compaction.
pub const COMPACT_AFTER_UPDATES: u64 = 64;
/// Update bytes after the snapshot that make apply ask for a compaction.
pub const COMPACT_AFTER_BYTES: u64 = 4 << 20;
/// Documents kept loaded in memory.
const CACHE_DOCS: usize = 32;
/// Capacity of the committed-update channel (a subscriber further behind
/// is told to resume).
const DOC_EVENT_CHANNEL: usize = 4096;
/// Page size bounds.
const MAX_PAGE: u32 = 1000;

/// A document's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DocRec {
    id: DocId,
    name: String,
    created_by: String,
    owner: Option<u64>,
    created_ms: u64,
    modified_ms: u64,
    deleted_ms: Option<u64>,
    seq: u64,
    #[serde(with = "serde_bytes")]
    version: Vec<u8>,
    bytes: u64,
    entities: u64,
    /// Node-local: changes and bytes since this node's snapshot (only
    /// decides when to compact).
    since_snapshot: u64,
    bytes_since_snapshot: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapRec {
    seq: u64,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UpdateRec {
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HistRec {
    author: String,
    stamp_ms: u64,
    #[serde(with = "serde_bytes")]
    version: Vec<u8>,
    bytes: u64,
    action: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TagRec {
    seq: u64,
    #[serde(with = "serde_bytes")]
    version: Vec<u8>,
    created_by: String,
    created_ms: u64,
}

/// A committed change, for subscribers (sent after the transaction commits).
#[derive(Debug, Clone)]
pub struct DocCommitted {
    /// Tenant.
    pub tenant: TenantId,
    /// Document.
    pub doc: DocId,
    /// Change number.
    pub seq: u64,
    /// Who.
    pub author: String,
    /// When (stamped).
    pub stamp_ms: u64,
    /// Version after it.
    pub version: Vec<u8>,
    /// The update bytes (empty for a delete).
    pub update: Arc<Vec<u8>>,
    /// The document went to the trash.
    pub deleted: bool,
}

fn k_rec(t: &TenantId, d: DocId) -> String {
    format!("t/{t}/i/{}", d.key_part())
}
fn k_snap(t: &TenantId, d: DocId) -> String {
    format!("t/{t}/s/{}", d.key_part())
}
fn p_updates(t: &TenantId, d: DocId) -> String {
    format!("t/{t}/u/{}/", d.key_part())
}
fn k_update(t: &TenantId, d: DocId, seq: u64) -> String {
    format!("{}{seq:016x}", p_updates(t, d))
}
fn p_history(t: &TenantId, d: DocId) -> String {
    format!("t/{t}/h/{}/", d.key_part())
}
fn k_history(t: &TenantId, d: DocId, seq: u64) -> String {
    format!("{}{seq:016x}", p_history(t, d))
}
fn p_tags(t: &TenantId, d: DocId) -> String {
    format!("t/{t}/g/{}/", d.key_part())
}

/// Every key of a tenant in the `docs` table starts with this.
pub(crate) fn tenant_docs_prefix(t: &TenantId) -> String {
    format!("t/{t}/")
}

/// The peer id apply writes server-side edits of a document with: derived
/// from the tenant and document, with the top bit set (clients pick random
/// ids; a collision would need a 63-bit match).
fn server_peer(t: &TenantId, d: DocId) -> u64 {
    let hash = blake3::hash(format!("caddy-doc-server/{t}/{d}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    // Loro reserves u64::MAX; keep below it.
    (u64::from_le_bytes(first) | (1 << 63)) & !1
}

fn server_limits(bounds: &DocBounds) -> Limits {
    Limits {
        max_update_bytes: usize::try_from(bounds.max_update_bytes).unwrap_or(usize::MAX),
        // The document size bound is judged on committed bytes (DocRec::bytes),
        // which every replica agrees on; caddy-doc's estimate is node-local.
        max_document_bytes: usize::MAX,
        max_entities: usize::try_from(bounds.max_entities).unwrap_or(usize::MAX),
        ..Limits::default()
    }
}

/// Maps a document error to the protocol's typed error.
pub fn doc_error(e: DocError) -> CaddyError {
    let code = match e.root_cause() {
        DocError::LimitExceeded { .. } => ErrorCode::ResourceExhausted,
        DocError::MissingDependencies | DocError::UnsupportedSchema { .. } => ErrorCode::FailedPrecondition,
        DocError::UnknownVersion => ErrorCode::NotFound,
        DocError::Internal(_) => ErrorCode::Internal,
        _ => ErrorCode::InvalidArgument,
    };
    CaddyError::new(code, e.to_string())
}

fn not_found(t: &TenantId, d: DocId) -> CaddyError {
    CaddyError::new(ErrorCode::NotFound, format!("document {d} not found in tenant {t}"))
}

fn in_trash(d: DocId) -> CaddyError {
    CaddyError::precondition(format!("document {d} is in the trash: restore it first (caddyctl doc restore {d})"))
}

fn get<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> io::Result<Option<T>> {
    match table.get(key).map_err(io_err)? {
        Some(v) => Ok(Some(open_record(key, v.value())?)),
        None => Ok(None),
    }
}

fn scan<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> io::Result<(Vec<(String, T)>, bool)> {
    let start = after.map_or_else(|| prefix.to_owned(), |a| format!("{prefix}{a}\u{0}"));
    let mut out = Vec::new();
    for item in table.range(start.as_str()..).map_err(io_err)? {
        let (k, v) = item.map_err(io_err)?;
        let Some(rest) = k.value().strip_prefix(prefix) else { break };
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push((rest.to_owned(), open_record(k.value(), v.value())?));
    }
    Ok((out, false))
}

// ------------------------------------------------------------------ cache

struct Cached {
    doc: Document,
    used: u64,
}

/// Loaded documents, most recently used kept.
#[derive(Default)]
pub(crate) struct DocCache {
    docs: HashMap<(TenantId, DocId), Cached>,
    tick: u64,
}

impl DocCache {
    fn get_mut(&mut self, key: &(TenantId, DocId)) -> Option<&mut Document> {
        self.tick += 1;
        let tick = self.tick;
        self.docs.get_mut(key).map(|c| {
            c.used = tick;
            &mut c.doc
        })
    }

    fn insert(&mut self, key: (TenantId, DocId), doc: Document) {
        if self.docs.len() >= CACHE_DOCS
            && let Some(oldest) = self.docs.iter().min_by_key(|(_, c)| c.used).map(|(k, _)| k.clone())
        {
            self.docs.remove(&oldest);
        }
        self.tick += 1;
        self.docs.insert(key, Cached { doc, used: self.tick });
    }
}

/// The document machinery of one state machine.
pub(crate) struct DocRuntime {
    cache: Mutex<DocCache>,
    events: broadcast::Sender<Arc<DocCommitted>>,
    compact: Mutex<Option<std::sync::mpsc::SyncSender<(TenantId, DocId)>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DocRuntime {
    pub(crate) fn new() -> Self {
        let (events, _) = broadcast::channel(DOC_EVENT_CHANNEL);
        DocRuntime { cache: Mutex::new(DocCache::default()), events, compact: Mutex::new(None) }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<DocCommitted>> {
        self.events.subscribe()
    }

    pub(crate) fn set_compactor(&self, tx: std::sync::mpsc::SyncSender<(TenantId, DocId)>) {
        *lock(&self.compact) = Some(tx);
    }

    /// Forgets every loaded document (the tables were replaced).
    pub(crate) fn clear(&self) {
        lock(&self.cache).docs.clear();
    }

    /// Sends what a batch committed, and asks for compactions it made due.
    pub(crate) fn publish(&self, committed: Vec<DocCommitted>, compact: Vec<(TenantId, DocId)>) {
        for c in committed {
            let _ = self.events.send(Arc::new(c));
        }
        if let Some(tx) = lock(&self.compact).as_ref() {
            for job in compact {
                // A full queue drops the request; the next update asks again.
                let _ = tx.try_send(job);
            }
        }
    }
}

/// Loads a document from its snapshot and later updates, then sets `limits`
/// for what comes next.
///
/// What is stored was accepted when it was committed, so loading judges no
/// bound: a bound checked here would depend on whether this node happened to
/// have the document cached (a cached copy is never reloaded) and on the
/// bounds of the entry being applied, and a replica that refused to load
/// would stop (and stop again after every restart) while the others went on.
/// A snapshot or update that does not decode is a different matter: the
/// records are checksummed, so that is a bug or damage, and it stays fatal.
fn load(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    t: &TenantId,
    d: DocId,
    limits: Limits,
) -> io::Result<Result<Document, CaddyError>> {
    let Some(snap) = get::<SnapRec>(table, &k_snap(t, d))? else {
        return Ok(Err(CaddyError::internal(format!("document {d} has no snapshot"))));
    };
    let mut doc = match Document::from_snapshot(&snap.bytes, server_peer(t, d), Limits::unbounded()) {
        Ok(doc) => doc,
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("snapshot of {d}: {e}"))),
    };
    let (updates, _) = scan::<UpdateRec>(table, &p_updates(t, d), None, usize::MAX)?;
    if !updates.is_empty() {
        let blobs: Vec<Vec<u8>> = updates.into_iter().map(|(_, u)| u.bytes).collect();
        if let Err(e) = doc.import_batch(&blobs) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("updates of {d}: {e}")));
        }
    }
    doc.set_limits(limits);
    Ok(Ok(doc))
}

// ------------------------------------------------------------------ apply

/// What a document op needs from the identity apply path.
pub(crate) struct DocCtx<'a> {
    pub(crate) tenant: &'a TenantId,
    pub(crate) caller: &'a Caller,
    pub(crate) quotas: Quotas,
    pub(crate) usage: &'a mut Usage,
    pub(crate) stamp: u64,
}

fn author(caller: &Caller) -> String {
    caller.actor().unwrap_or(Actor::System).to_string()
}

fn owner_of(caller: &Caller) -> Option<u64> {
    match caller {
        Caller::User(u) => Some(u.user.0),
        _ => None,
    }
}

/// Whether the caller may delete or restore `rec`: its owner, the operator,
/// or anyone holding `docs:admin`.
fn may_trash(caller: &Caller, t: &TenantId, rec: &DocRec) -> Result<(), CaddyError> {
    use caddy_core::identity::{Action, Permission, Resource, ResourceKind, authorize};
    if owner_of(caller).is_some_and(|u| Some(u) == rec.owner) {
        return Ok(());
    }
    authorize(caller, Some(t), Permission::new(ResourceKind::Docs, Action::Admin), &Resource::Tenant).map_err(|_| {
        CaddyError::new(
            ErrorCode::PermissionDenied,
            format!("only the owner of {} or someone with docs:admin may delete or restore it", rec.id),
        )
    })
}

/// Result of a document op: the reply, the audit resource, and whether the
/// op should be audited when it succeeds.
pub(crate) struct DocDone {
    pub(crate) body: ReplyBody,
    pub(crate) resource: String,
}

/// Applies one document op. `allocate` hands out the tenant's next id.
pub(crate) fn apply(
    tables: &mut Tables<'_>,
    ctx: DocCtx<'_>,
    op: &Op,
    allocate: impl FnOnce() -> u64,
) -> io::Result<Result<DocDone, CaddyError>> {
    macro_rules! check {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            }
        };
    }
    let t = ctx.tenant;
    let stamp = ctx.stamp;
    match op {
        Op::DocCreate { name, units } => {
            let name = check!(doc_name(name));
            let units =
                match units.as_deref() {
                    None | Some("") => Units::Millimeters,
                    Some(u) => check!(Units::parse(u).ok_or_else(|| CaddyError::invalid(format!(
                        "unknown units {u:?} (mm, cm, m, in, ft, unitless)"
                    )))),
                };
            check!(ctx.usage.check(&ctx.quotas, QuotaKind::Documents, 1));
            let id = DocId(allocate());
            let created_by = author(ctx.caller);
            let meta = NewDocument {
                name: name.clone(),
                units,
                created_by: created_by.clone(),
                created_at_ms: i64::try_from(stamp).unwrap_or(i64::MAX),
            };
            let doc = check!(
                Document::new(server_peer(t, id), meta, server_limits(&DocBounds::default())).map_err(doc_error)
            );
            let snapshot = check!(doc.export_snapshot().map_err(doc_error));
            let size = snapshot.len() as u64;
            check!(ctx.usage.check(&ctx.quotas, QuotaKind::StorageBytes, size));
            let version = doc.version();
            let rec = DocRec {
                id,
                name,
                created_by: created_by.clone(),
                owner: owner_of(ctx.caller),
                created_ms: stamp,
                modified_ms: stamp,
                deleted_ms: None,
                seq: 0,
                version: version.clone(),
                bytes: size,
                entities: doc.entity_count() as u64,
                since_snapshot: 0,
                bytes_since_snapshot: 0,
            };
            put(tables, &k_rec(t, id), &rec)?;
            put(tables, &k_snap(t, id), &SnapRec { seq: 0, bytes: snapshot })?;
            let hist = HistRec { author: created_by, stamp_ms: stamp, version, bytes: size, action: "create".into() };
            put(tables, &k_history(t, id, 0), &hist)?;
            ctx.usage.documents += 1;
            ctx.usage.storage_bytes = ctx.usage.storage_bytes.saturating_add(size);
            lock(&tables.doc_runtime.cache).insert((t.clone(), id), doc);
            Ok(Ok(DocDone { body: ReplyBody::Created { id: id.0 }, resource: id.to_string() }))
        }
        Op::DocUpdate { doc: d, update, bounds } => {
            let mut rec = check!(live_rec(tables, t, *d)?);
            if update.len() as u64 > bounds.max_update_bytes {
                return Ok(Err(CaddyError::exhausted(format!(
                    "update of {} bytes exceeds the limit of {} bytes",
                    update.len(),
                    bounds.max_update_bytes
                ))));
            }
            let size = update.len() as u64;
            if rec.bytes.saturating_add(size) > bounds.max_document_bytes {
                return Ok(Err(CaddyError::exhausted(format!(
                    "document {d} would hold {} bytes of changes, over the limit of {} bytes",
                    rec.bytes.saturating_add(size),
                    bounds.max_document_bytes
                ))));
            }
            check!(ctx.usage.check(&ctx.quotas, QuotaKind::StorageBytes, size));
            let who = author(ctx.caller);
            let outcome = with_loaded(tables, t, *d, server_limits(bounds), |doc| {
                let report = doc.import_complete(update).map_err(doc_error)?;
                Ok((report.applied, doc.version(), doc.entity_count() as u64, doc.name()))
            })?;
            let (changed, version, entities, name) = check!(outcome);
            if !changed {
                let body = ReplyBody::DocUpdated { seq: rec.seq, version: rec.version.clone(), changed: false };
                return Ok(Ok(DocDone { body, resource: d.to_string() }));
            }
            rec.name = if name.trim().is_empty() { rec.name } else { name };
            let body = commit_change(tables, t, &mut rec, update.clone(), version, entities, &who, stamp, "update")?;
            ctx.usage.storage_bytes = ctx.usage.storage_bytes.saturating_add(size);
            Ok(Ok(DocDone { body, resource: d.to_string() }))
        }
        Op::DocRename { doc: d, name } => {
            let mut rec = check!(live_rec(tables, t, *d)?);
            let name = check!(doc_name(name));
            let who = author(ctx.caller);
            let outcome = with_loaded(tables, t, *d, server_limits(&DocBounds::default()), |doc| {
                let before = doc.version();
                doc.set_peer(server_peer(t, *d)).map_err(doc_error)?;
                doc.set_metadata(Some(&name), None).map_err(doc_error)?;
                let update = doc.export_updates_since(&before).map_err(doc_error)?;
                Ok((update, doc.version(), doc.entity_count() as u64))
            })?;
            let (update, version, entities) = check!(outcome);
            let size = update.len() as u64;
            rec.name = name;
            commit_change(tables, t, &mut rec, update, version, entities, &who, stamp, "rename")?;
            ctx.usage.storage_bytes = ctx.usage.storage_bytes.saturating_add(size);
            Ok(Ok(DocDone { body: ReplyBody::Done, resource: d.to_string() }))
        }
        Op::DocSetDeleted { doc: d, deleted } => {
            let Some(mut rec) = get::<DocRec>(&tables.docs, &k_rec(t, *d))? else {
                return Ok(Err(not_found(t, *d)));
            };
            check!(may_trash(ctx.caller, t, &rec));
            match (rec.deleted_ms.is_some(), *deleted) {
                (true, true) => {
                    return Ok(Err(CaddyError::precondition(format!("document {d} is already in the trash"))));
                }
                (false, false) => {
                    return Ok(Err(CaddyError::precondition(format!("document {d} is not in the trash"))));
                }
                (false, true) => {
                    rec.deleted_ms = Some(stamp);
                    ctx.usage.release(QuotaKind::Documents, 1);
                    crate::files::trash_put(&mut tables.files, t, &trash_entry(&rec, author(ctx.caller), stamp))?;
                    tables.doc_events.push(DocCommitted {
                        tenant: t.clone(),
                        doc: *d,
                        seq: rec.seq,
                        author: author(ctx.caller),
                        stamp_ms: stamp,
                        version: rec.version.clone(),
                        update: Arc::new(Vec::new()),
                        deleted: true,
                    });
                }
                (true, false) => {
                    check!(ctx.usage.check(&ctx.quotas, QuotaKind::Documents, 1));
                    if let Some(ms) = rec.deleted_ms {
                        crate::files::trash_remove(&mut tables.files, t, ItemId::Doc(*d), ms)?;
                    }
                    rec.deleted_ms = None;
                    ctx.usage.documents += 1;
                }
            }
            put(tables, &k_rec(t, *d), &rec)?;
            Ok(Ok(DocDone { body: ReplyBody::Done, resource: d.to_string() }))
        }
        Op::DocTag { doc: d, name, at } => {
            let rec = check!(live_rec(tables, t, *d)?);
            let name = check!(tag_name(name));
            let key = format!("{}{name}", p_tags(t, *d));
            if get::<TagRec>(&tables.docs, &key)?.is_some() {
                return Ok(Err(CaddyError::new(ErrorCode::AlreadyExists, format!("tag {name} already exists on {d}"))));
            }
            if keys_under(&tables.docs, &p_tags(t, *d))?.len() >= MAX_TAGS_PER_DOC {
                return Ok(Err(CaddyError::exhausted(format!("document {d} already has {MAX_TAGS_PER_DOC} tags"))));
            }
            let seq = at.unwrap_or(rec.seq);
            let Some(hist) = get::<HistRec>(&tables.docs, &k_history(t, *d, seq))? else {
                return Ok(Err(CaddyError::new(
                    ErrorCode::NotFound,
                    format!("{d} has no change {seq} in its history (current: {})", rec.seq),
                )));
            };
            let tag = TagRec { seq, version: hist.version, created_by: author(ctx.caller), created_ms: stamp };
            put(tables, &key, &tag)?;
            Ok(Ok(DocDone { body: ReplyBody::Done, resource: format!("{d} tag {name}") }))
        }
        other => Ok(Err(CaddyError::internal(format!("{} is not a document op", other.name())))),
    }
}

fn put<T: Serialize>(tables: &mut Tables<'_>, key: &str, value: &T) -> io::Result<()> {
    tables.docs.insert(key, seal(value)?.as_slice()).map_err(io_err)?;
    Ok(())
}

fn live_rec(tables: &Tables<'_>, t: &TenantId, d: DocId) -> io::Result<Result<DocRec, CaddyError>> {
    Ok(match get::<DocRec>(&tables.docs, &k_rec(t, d))? {
        None => Err(not_found(t, d)),
        Some(rec) if rec.deleted_ms.is_some() => Err(in_trash(d)),
        Some(rec) => Ok(rec),
    })
}

/// The latest change number of a live document (render jobs resolve
/// "latest" with it).
pub(crate) fn live_seq(tables: &Tables<'_>, t: &TenantId, d: DocId) -> io::Result<Result<u64, CaddyError>> {
    Ok(live_rec(tables, t, d)?.map(|r| r.seq))
}

/// Runs `f` on the loaded document (loading it into the cache from this
/// transaction's view if needed).
fn with_loaded<R>(
    tables: &Tables<'_>,
    t: &TenantId,
    d: DocId,
    limits: Limits,
    f: impl FnOnce(&mut Document) -> Result<R, CaddyError>,
) -> io::Result<Result<R, CaddyError>> {
    let key = (t.clone(), d);
    let mut cache = lock(&tables.doc_runtime.cache);
    if cache.get_mut(&key).is_none() {
        let doc = match load(&tables.docs, t, d, limits.clone())? {
            Ok(doc) => doc,
            Err(e) => return Ok(Err(e)),
        };
        cache.insert(key.clone(), doc);
    }
    let Some(doc) = cache.get_mut(&key) else {
        return Ok(Err(CaddyError::internal("document vanished from the cache")));
    };
    doc.set_limits(limits);
    Ok(f(doc))
}

/// Records one committed change: update record, history entry, record, event.
#[allow(clippy::too_many_arguments)]
fn commit_change(
    tables: &mut Tables<'_>,
    t: &TenantId,
    rec: &mut DocRec,
    update: Vec<u8>,
    version: Vec<u8>,
    entities: u64,
    who: &str,
    stamp: u64,
    action: &str,
) -> io::Result<ReplyBody> {
    let d = rec.id;
    let size = update.len() as u64;
    rec.seq += 1;
    rec.version = version.clone();
    rec.modified_ms = stamp;
    rec.bytes = rec.bytes.saturating_add(size);
    rec.entities = entities;
    rec.since_snapshot += 1;
    rec.bytes_since_snapshot = rec.bytes_since_snapshot.saturating_add(size);
    let update = Arc::new(update);
    put(tables, &k_update(t, d, rec.seq), &UpdateRec { bytes: update.as_ref().clone() })?;
    let hist = HistRec {
        author: who.to_owned(),
        stamp_ms: stamp,
        version: version.clone(),
        bytes: size,
        action: action.into(),
    };
    put(tables, &k_history(t, d, rec.seq), &hist)?;
    if rec.seq >= MAX_HISTORY {
        tables.docs.remove(k_history(t, d, rec.seq - MAX_HISTORY).as_str()).map_err(io_err)?;
    }
    put(tables, &k_rec(t, d), rec)?;
    if rec.since_snapshot >= COMPACT_AFTER_UPDATES || rec.bytes_since_snapshot >= COMPACT_AFTER_BYTES {
        tables.doc_compactions.push((t.clone(), d));
    }
    tables.doc_events.push(DocCommitted {
        tenant: t.clone(),
        doc: d,
        seq: rec.seq,
        author: who.to_owned(),
        stamp_ms: stamp,
        version: version.clone(),
        update,
        deleted: false,
    });
    Ok(ReplyBody::DocUpdated { seq: rec.seq, version, changed: true })
}

/// The trash index entry of a document trashed by `who` at `stamp`.
fn trash_entry(rec: &DocRec, who: String, stamp: u64) -> crate::files::TrashRec {
    crate::files::TrashRec {
        item: ItemId::Doc(rec.id),
        name: rec.name.clone(),
        owner: rec.owner.map_or_else(|| rec.created_by.clone(), |u| caddy_core::identity::UserId(u).to_string()),
        deleted_by: who,
        deleted_ms: stamp,
        bytes: rec.bytes,
    }
}

/// Purges a trashed document for a caller (`FileOp::Purge` of a `doc-N`):
/// its owner or someone with `docs:admin`. Releases the bytes it counted
/// (its `documents` quota was released when it was trashed).
pub(crate) fn purge(tables: &mut Tables<'_>, ctx: DocCtx<'_>, d: DocId) -> io::Result<Result<(), CaddyError>> {
    let t = ctx.tenant;
    let Some(rec) = get::<DocRec>(&tables.docs, &k_rec(t, d))? else {
        return Ok(Err(not_found(t, d)));
    };
    if let Err(e) = may_trash(ctx.caller, t, &rec) {
        return Ok(Err(e));
    }
    let Some(deleted_ms) = rec.deleted_ms else {
        return Ok(Err(CaddyError::precondition(format!("document {d} is not in the trash: delete it first"))));
    };
    let bytes = remove_doc(tables, t, &rec)?;
    crate::files::trash_remove(&mut tables.files, t, ItemId::Doc(d), deleted_ms)?;
    ctx.usage.release(QuotaKind::StorageBytes, bytes);
    Ok(Ok(()))
}

/// Removes a document's records if it is in the trash (the files sweep);
/// returns the bytes it counted, `None` if there was no such trashed
/// document. The trash index entry is the caller's to remove.
pub(crate) fn purge_trashed(tables: &mut Tables<'_>, t: &TenantId, d: DocId) -> io::Result<Option<u64>> {
    match get::<DocRec>(&tables.docs, &k_rec(t, d))? {
        Some(rec) if rec.deleted_ms.is_some() => Ok(Some(remove_doc(tables, t, &rec)?)),
        _ => Ok(None),
    }
}

/// Removes every record of one document; returns the bytes it counted.
fn remove_doc(tables: &mut Tables<'_>, t: &TenantId, rec: &DocRec) -> io::Result<u64> {
    let d = rec.id;
    for prefix in [p_updates(t, d), p_history(t, d), p_tags(t, d)] {
        for key in keys_under(&tables.docs, &prefix)? {
            tables.docs.remove(key.as_str()).map_err(io_err)?;
        }
    }
    tables.docs.remove(k_snap(t, d).as_str()).map_err(io_err)?;
    tables.docs.remove(k_rec(t, d).as_str()).map_err(io_err)?;
    lock(&tables.doc_runtime.cache).docs.remove(&(t.clone(), d));
    crate::render::forget_thumbnails(&mut tables.files, t, d)?;
    Ok(rec.bytes)
}

/// Removes every document of a tenant (the tenant is being deleted).
pub(crate) fn delete_tenant_docs(tables: &mut Tables<'_>, t: &TenantId) -> io::Result<()> {
    for key in keys_under(&tables.docs, &tenant_docs_prefix(t))? {
        tables.docs.remove(key.as_str()).map_err(io_err)?;
    }
    lock(&tables.doc_runtime.cache).docs.retain(|(tenant, _), _| tenant != t);
    Ok(())
}

// ------------------------------------------------------------- compaction

/// Folds a document's updates into a new snapshot: the expensive part (load,
/// export) runs on a read transaction; the swap is one short write
/// transaction that re-checks nothing moved underneath.
pub(crate) fn compact(db: &redb::Database, t: &TenantId, d: DocId) -> io::Result<bool> {
    use redb::ReadableDatabase;
    let (upto, created_ms, snapshot) = {
        let txn = db.begin_read().map_err(io_err)?;
        let table = txn.open_table(DOCS).map_err(io_err)?;
        let Some(rec) = get::<DocRec>(&table, &k_rec(t, d))? else { return Ok(false) };
        let Some(snap) = get::<SnapRec>(&table, &k_snap(t, d))? else { return Ok(false) };
        if snap.seq >= rec.seq {
            return Ok(false);
        }
        let doc = match load(&table, t, d, server_limits(&DocBounds::default()))? {
            Ok(doc) => doc,
            Err(e) => return Err(io_err(e.message)),
        };
        (rec.seq, rec.created_ms, doc.export_snapshot().map_err(io_err)?)
    };
    let txn = db.begin_write().map_err(io_err)?;
    {
        let mut table = txn.open_table(DOCS).map_err(io_err)?;
        let Some(mut rec) = get::<DocRec>(&table, &k_rec(t, d))? else { return Ok(false) };
        let Some(snap) = get::<SnapRec>(&table, &k_snap(t, d))? else { return Ok(false) };
        // Same document (not deleted and recreated), not compacted meanwhile.
        if rec.created_ms != created_ms || snap.seq >= upto || rec.seq < upto {
            return Ok(false);
        }
        let prefix = p_updates(t, d);
        let mut folded = Vec::new();
        for item in table.range(prefix.as_str()..).map_err(io_err)? {
            let (k, _) = item.map_err(io_err)?;
            let Some(rest) = k.value().strip_prefix(&prefix) else { break };
            match u64::from_str_radix(rest, 16) {
                Ok(seq) if seq <= upto => folded.push(k.value().to_owned()),
                _ => break,
            }
        }
        for key in &folded {
            table.remove(key.as_str()).map_err(io_err)?;
        }
        table
            .insert(k_snap(t, d).as_str(), seal(&SnapRec { seq: upto, bytes: snapshot })?.as_slice())
            .map_err(io_err)?;
        rec.since_snapshot = rec.seq - upto;
        rec.bytes_since_snapshot = 0;
        table.insert(k_rec(t, d).as_str(), seal(&rec)?.as_slice()).map_err(io_err)?;
    }
    txn.commit().map_err(io_err)?;
    metrics::counter!("caddy_doc_compactions_total").increment(1);
    Ok(true)
}

// ------------------------------------------------------------------ reads

fn info(rec: &DocRec) -> DocInfo {
    DocInfo {
        id: rec.id.to_string(),
        name: rec.name.clone(),
        created_by: rec.created_by.clone(),
        owner: rec.owner.map(|u| format!("user-{u}")),
        created_ms: rec.created_ms,
        modified_ms: rec.modified_ms,
        deleted_ms: rec.deleted_ms,
        seq: rec.seq,
        version: hex::encode(&rec.version),
        bytes: rec.bytes,
        entities: rec.entities,
    }
}

fn page(limit: Option<u32>) -> usize {
    limit.unwrap_or(100).clamp(1, MAX_PAGE) as usize
}

/// The record of a document (for the service: watches, reads).
pub(crate) fn read_info(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    t: &TenantId,
    d: DocId,
) -> io::Result<Result<DocInfo, CaddyError>> {
    Ok(get::<DocRec>(table, &k_rec(t, d))?.map(|r| info(&r)).ok_or_else(|| not_found(t, d)))
}

/// Answers a read-only document call (already authorized); the bytes are
/// the payload (fetch only).
pub(crate) fn read(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    runtime: &DocRuntime,
    t: &TenantId,
    call: &DocCall,
) -> io::Result<Result<(DocAnswer, Vec<u8>), CaddyError>> {
    macro_rules! check {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            }
        };
    }
    let rec_of = |doc: &str| -> io::Result<Result<DocRec, CaddyError>> {
        let d = match DocId::parse(doc) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        Ok(get::<DocRec>(table, &k_rec(t, d))?.ok_or_else(|| not_found(t, d)))
    };
    let answer = match call {
        DocCall::List { after, limit, deleted } => {
            let after = match after.as_deref() {
                Some(a) => Some(check!(DocId::parse(a)).key_part()),
                None => None,
            };
            let prefix = format!("t/{t}/i/");
            let start = after.map_or_else(|| prefix.clone(), |a| format!("{prefix}{a}\u{0}"));
            let want = page(*limit);
            let (mut docs, mut more) = (Vec::new(), false);
            for item in table.range(start.as_str()..).map_err(io_err)? {
                let (k, v) = item.map_err(io_err)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                let rec: DocRec = open_record(k.value(), v.value())?;
                if rec.deleted_ms.is_some() && !*deleted {
                    continue;
                }
                if docs.len() == want {
                    more = true;
                    break;
                }
                docs.push(info(&rec));
            }
            DocAnswer::List { docs, more }
        }
        DocCall::Get { doc } => DocAnswer::Info(info(&check!(rec_of(doc)?))),
        DocCall::History { doc, after, limit } => {
            let rec = check!(rec_of(doc)?);
            let after = after.map(|a| format!("{a:016x}"));
            let (items, more) = scan::<HistRec>(table, &p_history(t, rec.id), after.as_deref(), page(*limit))?;
            let entries = items
                .into_iter()
                .map(|(k, h)| HistoryEntry {
                    seq: u64::from_str_radix(&k, 16).unwrap_or_default(),
                    author: h.author,
                    stamp_ms: h.stamp_ms,
                    version: hex::encode(&h.version),
                    bytes: h.bytes,
                    action: h.action,
                })
                .collect();
            DocAnswer::History { entries, more }
        }
        DocCall::Tags { doc } => {
            let rec = check!(rec_of(doc)?);
            let (items, _) = scan::<TagRec>(table, &p_tags(t, rec.id), None, MAX_TAGS_PER_DOC)?;
            let tags = items
                .into_iter()
                .map(|(name, g)| DocTag {
                    name,
                    seq: g.seq,
                    version: hex::encode(&g.version),
                    created_by: g.created_by,
                    created_ms: g.created_ms,
                })
                .collect();
            DocAnswer::Tags { tags }
        }
        DocCall::Fetch { doc, since, at } => {
            let rec = check!(rec_of(doc)?);
            if rec.deleted_ms.is_some() {
                return Ok(Err(in_trash(rec.id)));
            }
            let past = match at.as_deref() {
                None => None,
                Some(at) => Some(check!(resolve_at(table, t, &rec, at)?)),
            };
            let since = match since.as_deref() {
                Some(s) => Some(check!(parse_version(s))),
                None => None,
            };
            let run = |doc: &Document| -> Result<(DocAnswer, Vec<u8>), CaddyError> {
                match (&past, &since) {
                    (Some((seq, version)), _) => {
                        let bytes = doc.export_snapshot_at(version).map_err(doc_error)?;
                        Ok((
                            DocAnswer::Fetched(Fetched { version: hex::encode(version), seq: *seq, snapshot: true }),
                            bytes,
                        ))
                    }
                    (None, Some(since)) => {
                        let bytes = doc.export_updates_since(since).map_err(doc_error)?;
                        let version = hex::encode(doc.version());
                        Ok((DocAnswer::Fetched(Fetched { version, seq: rec.seq, snapshot: false }), bytes))
                    }
                    (None, None) => {
                        let bytes = doc.export_snapshot().map_err(doc_error)?;
                        let version = hex::encode(doc.version());
                        Ok((DocAnswer::Fetched(Fetched { version, seq: rec.seq, snapshot: true }), bytes))
                    }
                }
            };
            let key = (t.clone(), rec.id);
            {
                let mut cache = lock(&runtime.cache);
                if let Some(doc) = cache.get_mut(&key) {
                    // The cache may be ahead of this read transaction (apply
                    // runs concurrently); both are committed states.
                    return Ok(run(doc).map(|(mut answer, bytes)| {
                        if let DocAnswer::Fetched(f) = &mut answer
                            && past.is_none()
                        {
                            f.version = hex::encode(doc.version());
                        }
                        (answer, bytes)
                    }));
                }
            }
            let doc = check!(load(table, t, rec.id, server_limits(&DocBounds::default()))?);
            return Ok(run(&doc));
        }
        DocCall::Create { .. }
        | DocCall::Update { .. }
        | DocCall::Rename { .. }
        | DocCall::Delete { .. }
        | DocCall::Restore { .. }
        | DocCall::Tag { .. }
        | DocCall::Watch { .. }
        | DocCall::Presence { .. } => return Ok(Err(CaddyError::internal("not a read call"))),
    };
    Ok(Ok((answer, Vec::new())))
}

/// Resolves `at` (a change number, a tag name or a hex version) to a change
/// number and version.
fn resolve_at(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    t: &TenantId,
    rec: &DocRec,
    at: &str,
) -> io::Result<Result<(u64, Vec<u8>), CaddyError>> {
    let d = rec.id;
    if let Ok(seq) = at.parse::<u64>() {
        return Ok(match get::<HistRec>(table, &k_history(t, d, seq))? {
            Some(h) => Ok((seq, h.version)),
            None => Err(CaddyError::new(
                ErrorCode::NotFound,
                format!("{d} has no change {seq} in its history (current: {})", rec.seq),
            )),
        });
    }
    if let Ok(name) = tag_name(at)
        && let Some(tag) = get::<TagRec>(table, &format!("{}{name}", p_tags(t, d)))?
    {
        return Ok(Ok((tag.seq, tag.version)));
    }
    match hex::decode(at) {
        Ok(version) if !version.is_empty() => Ok(Ok((rec.seq, version))),
        _ => Ok(Err(CaddyError::new(
            ErrorCode::NotFound,
            format!("{at:?} is neither a change number, a tag of {d}, nor a hex version"),
        ))),
    }
}
