//! The replicated state machine on redb: the key-value namespace with
//! revisions and watch history, exactly-once client sessions, and cluster
//! credentials; identity records ([`crate::identity`]), documents
//! ([`crate::docs`]), file metadata ([`crate::files`]) and join tokens and
//! node certificates ([`crate::cluster`]) have their own tables and modules.
//!
//! Invariants:
//! - Apply is deterministic: it reads only the entries and the tables (time
//!   comes from [`Proposal::stamp_ms`]); a command that fails validation
//!   produces the same error [`Reply`] on every replica and changes nothing.
//! - A storage failure during apply is returned as an I/O error, which stops
//!   the node (openraft treats it as fatal) rather than letting replicas
//!   diverge.
//! - `revision` increases by one for every put and every delete that removed
//!   a key; events `(compacted, revision]` are retained.
//! - Every apply batch commits in one redb transaction, together with the
//!   applied log id, so the tables and `applied` never disagree.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use caddy_core::{
    CaddyError, ClientSeq, Command, ErrorCode, EventKind, KeyValue, KvEvent, Proposal, Reply, ReplyBody, codec, limits,
};
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::backend::Disk;
use crate::cluster::{CLUSTER, LEGACY_JOIN_TOKENS};
use crate::docs::{DOCS, DocCommitted, DocRuntime};
use crate::files::FILES;
use crate::snapshot::{
    ClusterInfo, SmMeta, SnapshotError, SnapshotInfo, SnapshotReader, SnapshotRecord, SnapshotWriter, sync_dir,
    verify_snapshot_file,
};
use crate::types::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};
use crate::{RECORD_VERSION, StoreError, corrupt, io_err};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Identity records, tenant-scoped (`t/{tenant}/…`) and global (`g/…`); see
/// [`crate::identity`].
pub(crate) const IDENT: TableDefinition<&str, &[u8]> = TableDefinition::new("ident");
const KEY_STATE: &str = "state";
/// Capacity of the live event channel; a watcher further behind than this is
/// told it fell behind instead of silently missing events.
const EVENT_CHANNEL: usize = 8192;
/// Apply batches between two durable state-machine commits.
const DURABLE_EVERY: u64 = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKv {
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
}

/// What live watchers receive.
#[derive(Debug, Clone)]
pub enum WatchMessage {
    /// A committed change.
    Event(Arc<KvEvent>),
    /// The state was replaced by an installed snapshot at this revision;
    /// watchers must resume from history or restart.
    Reset {
        /// Revision after the install.
        revision: u64,
    },
}

/// Progress published after every apply batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyEvent {
    /// Last applied log index (0 before the first entry).
    pub applied_index: u64,
    /// Key-value revision.
    pub revision: u64,
}

struct SmInner {
    db: Database,
    /// Watch events retained (a node-local policy: it bounds how far back a
    /// watcher can resume, never what a key holds).
    event_history: std::sync::atomic::AtomicU64,
    /// Apply batches committed without fsync since the last durable commit.
    /// redb frees pages only at durable commits, so they are made durable
    /// every [`DURABLE_EVERY`] batches to bound file and memory growth.
    since_durable: std::sync::atomic::AtomicU64,
    snapshot_dir: PathBuf,
    meta: Mutex<SmMeta>,
    current_snapshot: Mutex<Option<SnapshotInfo>>,
    applied_tx: watch::Sender<ApplyEvent>,
    events: broadcast::Sender<WatchMessage>,
    docs: DocRuntime,
}

/// Handle to the state machine; cheap to clone.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<SmInner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn seal<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    codec::seal(RECORD_VERSION, value).map_err(io_err)
}

pub(crate) fn open_record<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> io::Result<T> {
    codec::open(RECORD_VERSION, bytes).map(|(_, v)| v).map_err(|e| corrupt(what, e))
}

fn to_kv(key: &str, stored: StoredKv) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: stored.value,
        create_revision: stored.create_revision,
        mod_revision: stored.mod_revision,
        version: stored.version,
    }
}

pub(crate) struct Tables<'t> {
    pub(crate) kv: Table<'t, &'static str, &'static [u8]>,
    events: Table<'t, u64, &'static [u8]>,
    sessions: crate::sessions::SessionTables<'t>,
    /// Join tokens and node certificates ([`crate::cluster`]).
    cluster: Table<'t, &'static str, &'static [u8]>,
    pub(crate) ident: Table<'t, &'static str, &'static [u8]>,
    /// The cluster audit chain's head as this batch moved it, stored once at
    /// the end of the batch ([`crate::identity::flush_audit_head`]).
    pub(crate) cluster_audit_head: Option<caddy_core::identity::ChainHead>,
    /// Documents ([`crate::docs`]).
    pub(crate) docs: Table<'t, &'static str, &'static [u8]>,
    pub(crate) doc_runtime: &'t DocRuntime,
    /// Document changes this batch committed, published after the commit.
    pub(crate) doc_events: Vec<DocCommitted>,
    /// Documents this batch made due for compaction.
    pub(crate) doc_compactions: Vec<(caddy_core::identity::TenantId, caddy_core::docs::DocId)>,
    /// Files and folders ([`crate::files`]).
    pub(crate) files: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction, doc_runtime: &'t DocRuntime) -> io::Result<Self> {
        Ok(Self {
            docs: txn.open_table(DOCS).map_err(io_err)?,
            doc_runtime,
            doc_events: Vec::new(),
            doc_compactions: Vec::new(),
            kv: txn.open_table(KV).map_err(io_err)?,
            events: txn.open_table(EVENTS).map_err(io_err)?,
            sessions: crate::sessions::SessionTables::open(txn)?,
            cluster: txn.open_table(CLUSTER).map_err(io_err)?,
            ident: txn.open_table(IDENT).map_err(io_err)?,
            cluster_audit_head: None,
            files: txn.open_table(FILES).map_err(io_err)?,
        })
    }
}

impl StateMachineStore {
    /// Opens or creates the state machine on `disk`, loading the newest valid
    /// snapshot file's metadata.
    pub fn open(disk: &Disk) -> Result<Self, StoreError> {
        let db = disk.open_db("state", 32 << 20)?;
        let snapshot_dir = disk.snapshot_dir();
        std::fs::create_dir_all(&snapshot_dir)?;
        let txn = db.begin_write().map_err(|e| StoreError::Storage(e.to_string()))?;
        let doc_runtime = DocRuntime::new();
        {
            let _ = Tables::open(&txn, &doc_runtime)?;
            txn.open_table(META).map_err(|e| StoreError::Storage(e.to_string()))?;
            // Tokens of older builds are not honoured; nothing reads them.
            txn.delete_table(LEGACY_JOIN_TOKENS).map_err(|e| StoreError::Storage(e.to_string()))?;
        }
        crate::sessions::SessionTables::delete_legacy(&txn)?;
        txn.commit().map_err(|e| StoreError::Storage(e.to_string()))?;
        let meta = {
            let txn = db.begin_read().map_err(|e| StoreError::Storage(e.to_string()))?;
            let table = txn.open_table(META).map_err(|e| StoreError::Storage(e.to_string()))?;
            match table.get(KEY_STATE).map_err(|e| StoreError::Storage(e.to_string()))? {
                Some(v) => codec::open::<SmMeta>(RECORD_VERSION, v.value())?.1,
                None => SmMeta::default(),
            }
        };
        let current = find_latest_snapshot(&snapshot_dir)?;
        let (applied_tx, _) = watch::channel(ApplyEvent {
            applied_index: meta.applied.as_ref().map(|l| l.index).unwrap_or(0),
            revision: meta.revision,
        });
        let (events, _) = broadcast::channel(EVENT_CHANNEL);
        let store = Self {
            inner: Arc::new(SmInner {
                db,
                event_history: std::sync::atomic::AtomicU64::new(limits::EVENT_HISTORY),
                since_durable: std::sync::atomic::AtomicU64::new(0),
                snapshot_dir,
                meta: Mutex::new(meta),
                current_snapshot: Mutex::new(current),
                applied_tx,
                events,
                docs: doc_runtime,
            }),
        };
        store.start_compactor()?;
        Ok(store)
    }

    /// Starts the background thread that compacts documents, which lives as
    /// long as this state machine.
    fn start_compactor(&self) -> io::Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(caddy_core::identity::TenantId, caddy_core::docs::DocId)>(256);
        self.inner.docs.set_compactor(tx);
        let weak = Arc::downgrade(&self.inner);
        std::thread::Builder::new().name("doc-compactor".into()).spawn(move || {
            while let Ok((tenant, doc)) = rx.recv() {
                let Some(inner) = weak.upgrade() else { break };
                let started = std::time::Instant::now();
                match crate::docs::compact(&inner.db, &tenant, doc) {
                    Ok(done) => {
                        if done {
                            metrics::histogram!("caddy_doc_compaction_seconds").record(started.elapsed().as_secs_f64());
                        }
                    }
                    Err(e) => tracing::error!(%tenant, %doc, error = %e, "document compaction failed"),
                }
            }
        })?;
        Ok(())
    }

    /// Follows committed document changes (for document watchers).
    pub fn subscribe_docs(&self) -> broadcast::Receiver<Arc<DocCommitted>> {
        self.inner.docs.subscribe()
    }

    /// Answers a read-only document call for `tenant` (authorize first):
    /// the answer and its payload bytes.
    pub fn doc_read(
        &self,
        tenant: &caddy_core::identity::TenantId,
        call: &caddy_core::docs::DocCall,
    ) -> Result<(caddy_core::docs::DocAnswer, Vec<u8>), CaddyError> {
        let run = || -> io::Result<Result<_, CaddyError>> {
            let txn = self.inner.db.begin_read().map_err(io_err)?;
            let table = txn.open_table(DOCS).map_err(io_err)?;
            crate::docs::read(&table, &self.inner.docs, tenant, call)
        };
        run().map_err(|e| CaddyError::internal(format!("reading documents: {e}")))?
    }

    /// A document's record.
    pub fn doc_info(
        &self,
        tenant: &caddy_core::identity::TenantId,
        doc: caddy_core::docs::DocId,
    ) -> Result<caddy_core::docs::DocInfo, CaddyError> {
        let run = || -> io::Result<Result<_, CaddyError>> {
            let txn = self.inner.db.begin_read().map_err(io_err)?;
            let table = txn.open_table(DOCS).map_err(io_err)?;
            crate::docs::read_info(&table, tenant, doc)
        };
        run().map_err(|e| CaddyError::internal(format!("reading documents: {e}")))?
    }

    /// Answers a read-only file call for `caller` in `tenant` (it checks
    /// `files:read` and per-file access itself); expiry of shares is judged
    /// at `now_ms`.
    pub fn file_read(
        &self,
        tenant: &caddy_core::identity::TenantId,
        caller: &caddy_core::identity::Caller,
        call: &caddy_core::files::FileCall,
        now_ms: u64,
    ) -> Result<caddy_core::files::FileAnswer, CaddyError> {
        self.with_files(|files, ident| crate::files::read(files, ident, tenant, caller, call, now_ms))
    }

    /// Finds what a download reads: a file the caller may read in `tenant`,
    /// or the file behind a share link's token hash (no credential needed;
    /// an expired link is `FailedPrecondition`), at `version` (default: the
    /// current one).
    #[allow(clippy::too_many_arguments)]
    pub fn file_download(
        &self,
        tenant: Option<&caddy_core::identity::TenantId>,
        caller: &caddy_core::identity::Caller,
        file: Option<caddy_core::files::FileId>,
        link_token_hash: Option<[u8; 32]>,
        version: Option<u64>,
        now_ms: u64,
    ) -> Result<
        (caddy_core::identity::TenantId, caddy_core::files::FileInfo, crate::files::VersionRecordView),
        CaddyError,
    > {
        self.with_files(|files, ident| {
            crate::files::download(files, ident, tenant, caller, file, link_token_hash, version, now_ms)
        })
    }

    /// The checks a commit of `size` bytes to `target` will make that need
    /// no chunk list (access, names, folder, size bound, quota headroom),
    /// so an upload can be refused before its bytes are sent.
    pub fn file_commit_precheck(
        &self,
        tenant: &caddy_core::identity::TenantId,
        caller: &caddy_core::identity::Caller,
        target: &caddy_core::files::CommitTarget,
        size: u64,
        bounds: caddy_core::files::FileBounds,
    ) -> Result<(), CaddyError> {
        self.with_files(|files, ident| {
            crate::files::commit_precheck(files, ident, tenant, caller, target, size, &bounds)
        })
    }

    /// Whether a share link opens with the token hashing to `token_hash` (a
    /// retried link creation checks that its token is the one stored).
    pub fn file_link_token_is(
        &self,
        tenant: &caddy_core::identity::TenantId,
        file: caddy_core::files::FileId,
        link: u64,
        token_hash: &[u8; 32],
    ) -> Result<bool, CaddyError> {
        self.with_files(|files, _| crate::files::link_token_is(files, tenant, file, link, token_hash).map(Ok))
    }

    /// One render job of `tenant` (authorize `docs:read` first).
    pub fn render_job(
        &self,
        tenant: &caddy_core::identity::TenantId,
        job: caddy_core::render::JobId,
    ) -> Result<caddy_core::render::JobView, CaddyError> {
        self.with_files(|files, _| crate::render::read_job(files, tenant, job))
    }

    /// The tenant's render jobs, newest first, after `after`.
    pub fn render_jobs(
        &self,
        tenant: &caddy_core::identity::TenantId,
        after: Option<caddy_core::render::JobId>,
        limit: usize,
    ) -> Result<(Vec<caddy_core::render::JobView>, Option<String>), CaddyError> {
        self.with_files(|files, _| crate::render::list_jobs(files, tenant, after, limit).map(Ok))
    }

    /// The tenant's automatic thumbnail setting.
    pub fn render_thumbnail_setting(
        &self,
        tenant: &caddy_core::identity::TenantId,
    ) -> Result<caddy_core::render::ThumbnailSetting, CaddyError> {
        self.with_files(|files, _| crate::render::read_thumbnail_setting(files, tenant).map(Ok))
    }

    /// The newest done thumbnail job of a document.
    pub fn render_thumbnail(
        &self,
        tenant: &caddy_core::identity::TenantId,
        doc: caddy_core::docs::DocId,
    ) -> Result<caddy_core::render::JobView, CaddyError> {
        self.with_files(|files, _| crate::render::read_thumbnail(files, tenant, doc))
    }

    /// Whether a render worker could claim a job at `now_ms` (local state:
    /// spares the log a claim entry when nothing waits).
    pub fn render_pending(&self, now_ms: u64) -> Result<bool, CaddyError> {
        self.with_files(|files, _| crate::render::pending(files, now_ms).map(Ok))
    }

    /// Render jobs queued and running across tenants, each counted up to `cap`.
    pub fn render_counts(&self, cap: usize) -> Result<(usize, usize), CaddyError> {
        self.with_files(|files, _| crate::render::counts(files, cap).map(Ok))
    }

    /// A finished render job and its image's chunks.
    pub fn render_image(
        &self,
        tenant: &caddy_core::identity::TenantId,
        job: caddy_core::render::JobId,
    ) -> Result<(caddy_core::render::JobView, caddy_core::render::RenderImage), CaddyError> {
        self.with_files(|files, _| crate::render::read_image(files, tenant, job))
    }

    /// Every chunk some file version references, all tenants, in storage
    /// order, strictly after `after`, at most `limit` (for blob repair).
    pub fn chunk_refs_page(
        &self,
        after: Option<(caddy_core::identity::TenantId, [u8; 32])>,
        limit: usize,
    ) -> Result<Vec<(caddy_core::identity::TenantId, [u8; 32])>, CaddyError> {
        self.with_files(|files, _| crate::files::chunk_refs_page(files, after, limit).map(Ok))
    }

    /// Whether each chunk is referenced by a file version of `tenant` (for
    /// blob garbage collection).
    pub fn chunks_referenced(
        &self,
        tenant: &caddy_core::identity::TenantId,
        hashes: &[[u8; 32]],
    ) -> Result<Vec<bool>, CaddyError> {
        self.with_files(|files, _| crate::files::chunks_referenced(files, tenant, hashes).map(Ok))
    }

    fn with_files<T>(
        &self,
        f: impl FnOnce(
            &redb::ReadOnlyTable<&'static str, &'static [u8]>,
            &redb::ReadOnlyTable<&'static str, &'static [u8]>,
        ) -> io::Result<Result<T, CaddyError>>,
    ) -> Result<T, CaddyError> {
        let run = || -> io::Result<Result<T, CaddyError>> {
            let txn = self.inner.db.begin_read().map_err(io_err)?;
            let files = txn.open_table(FILES).map_err(io_err)?;
            let ident = txn.open_table(IDENT).map_err(io_err)?;
            f(&files, &ident)
        };
        run().map_err(|e| CaddyError::internal(format!("reading files: {e}")))?
    }

    /// Sets how many watch events are retained (at least 1).
    pub fn set_event_history(&self, events: u64) {
        self.inner.event_history.store(events.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Current key-value revision.
    pub fn revision(&self) -> u64 {
        lock(&self.inner.meta).revision
    }

    /// Events at or below this revision are no longer available to watchers.
    pub fn compacted_revision(&self) -> u64 {
        lock(&self.inner.meta).compacted
    }

    /// Last applied log id.
    pub fn applied(&self) -> Option<LogId> {
        lock(&self.inner.meta).applied
    }

    /// Last applied membership.
    pub fn membership(&self) -> StoredMembership {
        lock(&self.inner.meta).membership.clone()
    }

    /// Follows apply progress (for read barriers and readiness).
    pub fn subscribe_applied(&self) -> watch::Receiver<ApplyEvent> {
        self.inner.applied_tx.subscribe()
    }

    /// Follows committed changes (for watchers). Subscribe before reading
    /// history so that nothing falls between the two.
    pub fn subscribe_events(&self) -> broadcast::Receiver<WatchMessage> {
        self.inner.events.subscribe()
    }

    /// The admin credential hash, once the cluster is initialized.
    pub fn admin_credential_hash(&self) -> Option<[u8; 32]> {
        lock(&self.inner.meta).cluster.as_ref().map(|c| c.admin_credential_hash)
    }

    /// The cluster incarnation id, once initialized.
    pub fn cluster_id(&self) -> Option<String> {
        lock(&self.inner.meta).cluster.as_ref().map(|c| c.cluster_id.clone())
    }

    /// The newest snapshot on disk.
    pub fn snapshot_info(&self) -> Option<SnapshotInfo> {
        lock(&self.inner.current_snapshot).clone()
    }

    /// The reply of the client's request `origin` (in the session `scope`,
    /// see [`Command::session_scope`]) if it has been applied, so a retried
    /// request whose first attempt committed can be answered before any
    /// precheck judges it anew.
    pub fn applied_reply(&self, scope: &[u8; 32], origin: ClientSeq) -> io::Result<Option<Reply>> {
        let txn = self.inner.db.begin_read().map_err(io_err)?;
        let sessions = txn.open_table(crate::sessions::CLIENT_SESSIONS).map_err(io_err)?;
        crate::sessions::applied_reply(&sessions, scope, origin)
    }

    /// Reads one key from local state.
    pub fn get(&self, key: &str) -> io::Result<Option<KeyValue>> {
        let txn = self.inner.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(KV).map_err(io_err)?;
        match table.get(key).map_err(io_err)? {
            None => Ok(None),
            Some(v) => Ok(Some(to_kv(key, open_record("kv record", v.value())?))),
        }
    }

    /// Lists keys with `prefix` strictly after `start_after`, at most `limit`;
    /// the flag says whether more keys follow.
    pub fn list(&self, prefix: &str, start_after: &str, limit: usize) -> io::Result<(Vec<KeyValue>, bool)> {
        let txn = self.inner.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(KV).map_err(io_err)?;
        let start = if start_after.is_empty() || start_after < prefix { prefix } else { start_after };
        let mut out = Vec::new();
        for item in table.range(start..).map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if !start_after.is_empty() && key <= start_after {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(to_kv(key, open_record("kv record", v.value())?));
        }
        Ok((out, false))
    }

    /// Retained events with revision `>= from` whose key starts with `prefix`,
    /// at most `limit`. Fails with `FailedPrecondition` if `from` was compacted.
    pub fn events_from(&self, from: u64, prefix: &str, limit: usize) -> Result<Vec<KvEvent>, CaddyError> {
        let compacted = self.compacted_revision();
        if from <= compacted {
            return Err(CaddyError::precondition(format!(
                "revision {from} has been compacted; the oldest revision available to watch is {}",
                compacted + 1
            )));
        }
        let read = || -> io::Result<Vec<KvEvent>> {
            let txn = self.inner.db.begin_read().map_err(io_err)?;
            let table = txn.open_table(EVENTS).map_err(io_err)?;
            let mut out = Vec::new();
            for item in table.range(from..).map_err(io_err)? {
                let (_, v) = item.map_err(io_err)?;
                let event: KvEvent = open_record("event", v.value())?;
                if event.kv.key.starts_with(prefix) {
                    out.push(event);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        };
        read().map_err(|e| CaddyError::internal(format!("reading watch history: {e}")))
    }

    /// Every join token kept (usable, and ended ones for a while), by id.
    pub fn join_tokens(&self) -> io::Result<Vec<crate::cluster::JoinToken>> {
        let txn = self.inner.db.begin_read().map_err(io_err)?;
        crate::cluster::list_tokens(&txn.open_table(CLUSTER).map_err(io_err)?)
    }

    /// The join token whose secret hashes to `hash`.
    pub fn join_token_by_hash(&self, hash: &[u8; 32]) -> io::Result<Option<crate::cluster::JoinToken>> {
        let txn = self.inner.db.begin_read().map_err(io_err)?;
        crate::cluster::token_by_hash(&txn.open_table(CLUSTER).map_err(io_err)?, hash)
    }

    /// The certificate generations issued to `node` (none: it was never
    /// enrolled nor rotated, so any generation is accepted).
    pub fn node_cert(&self, node: caddy_core::NodeId) -> io::Result<Option<crate::cluster::NodeCert>> {
        // One read transaction per peer call: cheap next to the call itself.
        let txn = self.inner.db.begin_read().map_err(io_err)?;
        crate::cluster::node_cert(&txn.open_table(CLUSTER).map_err(io_err)?, node)
    }

    /// Resolves a bearer credential to who it is at `now_ms` (the node's
    /// clock): the admin token, a session token, an API key, or nobody.
    pub fn authenticate(
        &self,
        credential: &str,
        now_ms: u64,
    ) -> Result<(caddy_core::identity::api::Principal, caddy_core::identity::Caller), CaddyError> {
        let admin = self.admin_credential_hash();
        // The operator needs no lookup: answer without opening a read transaction.
        if let Some(hash) = &admin
            && caddy_core::credential_matches(credential, hash)
        {
            return Ok((caddy_core::identity::api::Principal::Operator, caddy_core::identity::Caller::Operator));
        }
        self.with_ident(|t| crate::identity::authenticate(t, admin.as_ref(), credential, now_ms))
    }

    /// Answers a read-only identity call after authorizing it.
    pub fn identity_read(
        &self,
        caller: &caddy_core::identity::Caller,
        tenant: Option<&caddy_core::identity::TenantId>,
        call: &caddy_core::identity::api::IdentityCall,
        now_ms: u64,
    ) -> Result<caddy_core::identity::api::IdentityAnswer, CaddyError> {
        self.with_ident(|t| crate::identity::read_call(t, caller, tenant, call, now_ms))
    }

    /// Finds a user of `tenant` by `user-N`, `N` or email.
    pub fn find_user(
        &self,
        tenant: &caddy_core::identity::TenantId,
        who: &str,
    ) -> Result<caddy_core::identity::UserId, CaddyError> {
        self.with_ident(|t| crate::identity::find_user(t, tenant, who))
    }

    /// The user of `tenant` with `email` (for password checks; never sent out).
    pub fn user_by_email(
        &self,
        tenant: &caddy_core::identity::TenantId,
        email: &caddy_core::identity::Email,
    ) -> Result<Option<caddy_core::identity::User>, CaddyError> {
        self.with_ident(|t| crate::identity::user_by_email(t, tenant, email).map(Ok))
    }

    /// The tenant an invitation token (by hash) belongs to.
    pub fn invite_tenant(&self, token_hash: &[u8; 32]) -> Result<Option<caddy_core::identity::TenantId>, CaddyError> {
        self.with_ident(|t| crate::identity::invite_tenant(t, token_hash).map(Ok))
    }

    /// An API key of `tenant` (its secret only as a hash).
    pub fn api_key(
        &self,
        tenant: &caddy_core::identity::TenantId,
        id: caddy_core::identity::ApiKeyId,
    ) -> Result<Option<caddy_core::identity::ApiKeyRecord>, CaddyError> {
        self.with_ident(|t| crate::identity::api_key(t, tenant, id).map(Ok))
    }

    /// A login session of `tenant` (its token only as a hash).
    pub fn login_session(
        &self,
        tenant: &caddy_core::identity::TenantId,
        id: caddy_core::identity::SessionId,
    ) -> Result<Option<caddy_core::identity::Session>, CaddyError> {
        self.with_ident(|t| crate::identity::session(t, tenant, id).map(Ok))
    }

    fn with_ident<T>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> io::Result<Result<T, CaddyError>>,
    ) -> Result<T, CaddyError> {
        let run = || -> io::Result<Result<T, CaddyError>> {
            let txn = self.inner.db.begin_read().map_err(io_err)?;
            let table = txn.open_table(IDENT).map_err(io_err)?;
            f(&table)
        };
        run().map_err(|e| CaddyError::internal(format!("reading identity records: {e}")))?
    }

    /// Makes every committed state-machine write durable.
    fn make_durable(&self) -> io::Result<()> {
        let mut txn = self.inner.db.begin_write().map_err(io_err)?;
        txn.set_durability(Durability::Immediate).map_err(io_err)?;
        txn.commit().map_err(io_err)
    }

    /// Writes a consistent copy of the whole state to `path` in the snapshot
    /// format; returns the header it wrote. Used for snapshots and backups.
    pub fn export(&self, path: &Path) -> io::Result<(SmMeta, u64)> {
        let txn = self.inner.db.begin_read().map_err(io_err)?;
        let meta: SmMeta = {
            let table = txn.open_table(META).map_err(io_err)?;
            match table.get(KEY_STATE).map_err(io_err)? {
                Some(v) => open_record("state meta", v.value())?,
                None => SmMeta::default(),
            }
        };
        let mut writer = SnapshotWriter::create(path)?;
        writer.push(SnapshotRecord::Header(meta.clone()))?;
        for item in txn.open_table(KV).map_err(io_err)?.iter().map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            writer.push(SnapshotRecord::Kv(k.value().to_string(), v.value().to_vec()))?;
        }
        for item in txn.open_table(EVENTS).map_err(io_err)?.iter().map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            writer.push(SnapshotRecord::Event(k.value(), v.value().to_vec()))?;
        }
        for item in txn.open_table(crate::sessions::CLIENT_SESSIONS).map_err(io_err)?.iter().map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            writer.push(SnapshotRecord::ClientSession(k.value().to_vec(), v.value().to_vec()))?;
        }
        for item in txn.open_table(CLUSTER).map_err(io_err)?.iter().map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            writer.push(SnapshotRecord::Cluster(k.value().to_string(), v.value().to_vec()))?;
        }
        for item in txn.open_table(IDENT).map_err(io_err)?.iter().map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            writer.push(SnapshotRecord::Ident(k.value().to_string(), v.value().to_vec()))?;
        }
        for item in txn.open_table(DOCS).map_err(io_err)?.iter().map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            writer.push(SnapshotRecord::Doc(k.value().to_string(), v.value().to_vec()))?;
        }
        for item in txn.open_table(FILES).map_err(io_err)?.iter().map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            writer.push(SnapshotRecord::File(k.value().to_string(), v.value().to_vec()))?;
        }
        let size = writer.finish()?;
        Ok((meta, size))
    }

    /// Replaces the whole state with a verified snapshot file's content in one
    /// durable transaction. With `as_restore`, Raft bookkeeping (applied log id,
    /// membership), the cluster's identity and its credentials (join tokens,
    /// node certificates) are left behind, so the data can seed a brand-new
    /// cluster with its own CA and admin credential.
    fn install_from(&self, file: &mut File, as_restore: bool) -> Result<SmMeta, SnapshotError> {
        let mut header = verify_snapshot_file(file)?;
        if as_restore {
            header.applied = None;
            header.membership = StoredMembership::default();
            header.cluster = None;
        }
        let mut reader = SnapshotReader::open(file)?;
        let mut txn = self.inner.db.begin_write().map_err(io_err)?;
        txn.set_durability(Durability::Immediate).map_err(io_err)?;
        {
            // A missing table is Ok(false); any other failure aborts the install.
            txn.delete_table(KV).map_err(io_err)?;
            txn.delete_table(EVENTS).map_err(io_err)?;
            crate::sessions::SessionTables::delete_all(&txn)?;
            txn.delete_table(LEGACY_JOIN_TOKENS).map_err(io_err)?;
            txn.delete_table(CLUSTER).map_err(io_err)?;
            txn.delete_table(IDENT).map_err(io_err)?;
            txn.delete_table(DOCS).map_err(io_err)?;
            txn.delete_table(FILES).map_err(io_err)?;
            self.inner.docs.clear();
            let mut tables = Tables::open(&txn, &self.inner.docs)?;
            let mut first = true;
            while let Some(record) = reader.next_record()? {
                match record {
                    SnapshotRecord::Header(_) if first => {}
                    SnapshotRecord::Header(_) => return Err(SnapshotError::Record("second header".into())),
                    SnapshotRecord::Kv(k, v) => {
                        tables.kv.insert(k.as_str(), v.as_slice()).map_err(io_err)?;
                    }
                    SnapshotRecord::Event(rev, v) => {
                        tables.events.insert(rev, v.as_slice()).map_err(io_err)?;
                    }
                    // Lanes of a build before scoped sessions: not carried over.
                    SnapshotRecord::Session(..) => {}
                    SnapshotRecord::ClientSession(k, v) => tables.sessions.restore(&k, &v)?,
                    // Tokens of older builds are not honoured.
                    SnapshotRecord::JoinToken(..) => {}
                    SnapshotRecord::Cluster(_, _) if as_restore => {}
                    SnapshotRecord::Cluster(k, v) => {
                        tables.cluster.insert(k.as_str(), v.as_slice()).map_err(io_err)?;
                    }
                    SnapshotRecord::Ident(k, v) => {
                        tables.ident.insert(k.as_str(), v.as_slice()).map_err(io_err)?;
                    }
                    SnapshotRecord::Doc(k, v) => {
                        tables.docs.insert(k.as_str(), v.as_slice()).map_err(io_err)?;
                    }
                    SnapshotRecord::File(k, v) => {
                        tables.files.insert(k.as_str(), v.as_slice()).map_err(io_err)?;
                    }
                    // The reader joins pieces into whole records.
                    SnapshotRecord::Large { .. } | SnapshotRecord::Piece(_) => {
                        return Err(SnapshotError::Record("an unjoined piece reached the install".into()));
                    }
                }
                first = false;
            }
            let mut meta_table = txn.open_table(META).map_err(io_err)?;
            meta_table.insert(KEY_STATE, seal(&header)?.as_slice()).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)?;
        // Apply may have loaded documents between the clear and the commit.
        self.inner.docs.clear();
        *lock(&self.inner.meta) = header.clone();
        self.publish_applied();
        let _ = self.inner.events.send(WatchMessage::Reset { revision: header.revision });
        Ok(header)
    }

    /// Seeds this (fresh) state machine from a backup file for a new cluster.
    pub fn restore_backup(&self, path: &Path) -> Result<SmMeta, SnapshotError> {
        let mut file = File::open(path)?;
        self.install_from(&mut file, true)
    }

    fn publish_applied(&self) {
        let meta = lock(&self.inner.meta);
        let event =
            ApplyEvent { applied_index: meta.applied.as_ref().map(|l| l.index).unwrap_or(0), revision: meta.revision };
        drop(meta);
        self.inner.applied_tx.send_replace(event);
    }

    /// Applies a batch in one transaction; returns the replies of the
    /// entries that carry a responder, after the commit.
    fn apply_batch<R>(&self, batch: Vec<(crate::types::Entry, Option<R>)>) -> io::Result<Vec<(R, Reply)>> {
        let started = std::time::Instant::now();
        let mut meta = lock(&self.inner.meta).clone();
        let history = self.inner.event_history.load(std::sync::atomic::Ordering::Relaxed);
        let mut replies = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let mut txn = self.inner.db.begin_write().map_err(io_err)?;
        let batches = self.inner.since_durable.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let durable = batches >= DURABLE_EVERY;
        if durable {
            self.inner.since_durable.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(io_err)?;
        let doc_out;
        {
            let mut tables = Tables::open(&txn, &self.inner.docs)?;
            for (entry, responder) in batch {
                let reply = match entry.payload {
                    EntryPayload::Blank => Reply::default(),
                    EntryPayload::Normal(proposal) => {
                        apply_proposal(&mut tables, &mut meta, &proposal, history, &mut events)?
                    }
                    EntryPayload::Membership(m) => {
                        let after = StoredMembership::new(Some(entry.log_id), m);
                        crate::cluster::retire_removed(&mut tables.cluster, &meta.membership, &after)?;
                        meta.membership = after;
                        Reply::default()
                    }
                };
                meta.applied = Some(entry.log_id);
                if let Some(responder) = responder {
                    replies.push((responder, reply));
                }
            }
            crate::identity::flush_audit_head(&mut tables)?;
            doc_out = (std::mem::take(&mut tables.doc_events), std::mem::take(&mut tables.doc_compactions));
            let mut meta_table = txn.open_table(META).map_err(io_err)?;
            meta_table.insert(KEY_STATE, seal(&meta)?.as_slice()).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)?;
        let applied = replies.len();
        *lock(&self.inner.meta) = meta;
        self.publish_applied();
        for event in events {
            let _ = self.inner.events.send(WatchMessage::Event(Arc::new(event)));
        }
        self.inner.docs.publish(doc_out.0, doc_out.1);
        metrics::histogram!("caddy_apply_batch_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("caddy_applied_commands_total").increment(applied as u64);
        Ok(replies)
    }

    /// Drops every loaded document, as a restart would.
    #[cfg(test)]
    pub(crate) fn forget_loaded_documents(&self) {
        self.inner.docs.clear();
    }

    /// The database, for tests that damage records on purpose.
    #[cfg(test)]
    pub(crate) fn db(&self) -> &Database {
        &self.inner.db
    }

    /// Installs a snapshot file as a follower would.
    #[cfg(test)]
    pub(crate) fn install_for_test(&self, file: &mut File) -> Result<SmMeta, SnapshotError> {
        self.install_from(file, false)
    }

    /// Applies entries directly (no Raft) and returns every entry's reply.
    #[cfg(test)]
    pub(crate) fn apply_entries(&self, entries: Vec<crate::types::Entry>) -> io::Result<Vec<Reply>> {
        let batch = entries.into_iter().map(|e| (e, Some(()))).collect();
        Ok(self.apply_batch(batch)?.into_iter().map(|((), reply)| reply).collect())
    }

    fn build(&self) -> io::Result<Snapshot> {
        let started = std::time::Instant::now();
        self.make_durable()?;
        let tmp = self.inner.snapshot_dir.join(format!("building-{}.tmp", std::process::id()));
        let (header, size) = self.export(&tmp)?;
        let meta = SnapshotMeta { last_log_id: header.applied, last_membership: header.membership.clone() };
        let (term, index) = header.applied.as_ref().map(|l| (l.leader_id.term, l.index)).unwrap_or((0, 0));
        let path = self.inner.snapshot_dir.join(format!("snap-{term:020}-{index:020}.snap"));
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.inner.snapshot_dir)?;
        self.set_current(SnapshotInfo { meta: meta.clone(), path: path.clone(), size });
        metrics::histogram!("caddy_snapshot_build_seconds").record(started.elapsed().as_secs_f64());
        metrics::gauge!("caddy_snapshot_size_bytes").set(size as f64);
        tracing::info!(index, term, size, "built snapshot");
        Ok(Snapshot { meta, snapshot: File::open(&path)? })
    }

    fn set_current(&self, info: SnapshotInfo) {
        let mut current = lock(&self.inner.current_snapshot);
        if let Some(old) = current.replace(info.clone())
            && old.path != info.path
        {
            let _ = std::fs::remove_file(&old.path);
        }
    }
}

/// Scans the snapshot directory for the newest snapshot that verifies;
/// broken or partial files are reported and skipped.
fn find_latest_snapshot(dir: &Path) -> Result<Option<SnapshotInfo>, StoreError> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    names.sort();
    while let Some(path) = names.pop() {
        match crate::snapshot::read_snapshot_meta(&path) {
            Ok(meta) => {
                let size = std::fs::metadata(&path)?.len();
                return Ok(Some(SnapshotInfo { meta, path, size }));
            }
            Err(e) => tracing::error!(path = %path.display(), error = %e, "ignoring invalid snapshot file"),
        }
    }
    Ok(None)
}

fn check_key(key: &str) -> Result<(), CaddyError> {
    if key.is_empty() {
        return Err(CaddyError::invalid("key must not be empty"));
    }
    if key.len() > limits::MAX_KEY_BYTES {
        return Err(CaddyError::invalid(format!(
            "key of {} bytes exceeds the limit of {} bytes",
            key.len(),
            limits::MAX_KEY_BYTES
        )));
    }
    Ok(())
}

/// A storage key as its client named it: without the namespace prefix
/// (`c/` for the cluster's, `t/{tenant}/kv/` for a tenant's), which is ours.
fn client_key(key: &str) -> &str {
    if let Some(rest) = key.strip_prefix("c/") {
        return rest;
    }
    key.strip_prefix("t/").and_then(|r| r.split_once("/kv/")).map_or(key, |(_, rest)| rest)
}

fn cas_failed(key: &str, expected: u64, current: u64) -> CaddyError {
    let key = client_key(key);
    let mut err = CaddyError::precondition(format!(
        "compare-and-set failed for {key:?}: expected revision {expected}, current revision is {current}"
    ));
    err.current_revision = Some(current);
    err
}

/// Applies one proposal; `Err` only for storage failures.
fn apply_proposal(
    tables: &mut Tables<'_>,
    meta: &mut SmMeta,
    proposal: &Proposal,
    history: u64,
    events: &mut Vec<KvEvent>,
) -> io::Result<Reply> {
    let scope = proposal.origin.map(|_| proposal.command.session_scope());
    if let (Some(origin), Some(scope)) = (proposal.origin, &scope) {
        match tables.sessions.lookup(scope, origin)? {
            crate::sessions::Lookup::Refused(reply) => return Ok(reply),
            // A remembered reply goes only to a caller still allowed to make
            // the request; one that lost the right gets the refusal (and
            // its audit entry) from applying it anew.
            crate::sessions::Lookup::Applied(reply) => match &proposal.command {
                Command::Call(call) if !crate::identity::permits(tables, call, proposal.stamp_ms)? => {}
                _ => return Ok(reply),
            },
            crate::sessions::Lookup::New => {}
        }
    }
    let result = apply_command(tables, meta, proposal, history, events)?;
    let reply = Reply(result);
    if let (Some(origin), Some(scope)) = (proposal.origin, &scope) {
        tables.sessions.store(scope, origin, proposal.stamp_ms, &reply)?;
    }
    tables.sessions.sweep(proposal.stamp_ms)?;
    Ok(reply)
}

fn record_event(
    tables: &mut Tables<'_>,
    meta: &mut SmMeta,
    event: KvEvent,
    history: u64,
    events: &mut Vec<KvEvent>,
) -> io::Result<()> {
    tables.events.insert(event.revision, seal(&event)?.as_slice()).map_err(io_err)?;
    if event.revision > history {
        // Drop everything at or below the new horizon (more than one event
        // when the retention was just lowered).
        let horizon = event.revision - history;
        if horizon > meta.compacted {
            tables.events.retain_in(meta.compacted + 1..=horizon, |_, _| false).map_err(io_err)?;
            meta.compacted = horizon;
        }
    }
    events.push(event);
    Ok(())
}

fn apply_command(
    tables: &mut Tables<'_>,
    meta: &mut SmMeta,
    proposal: &Proposal,
    history: u64,
    events: &mut Vec<KvEvent>,
) -> io::Result<Result<ReplyBody, CaddyError>> {
    match &proposal.command {
        Command::Noop => Ok(Ok(ReplyBody::Done)),
        Command::InitCluster { cluster_id, admin_credential_hash } => {
            if let Some(existing) = &meta.cluster {
                return Ok(Err(CaddyError::precondition(format!(
                    "the cluster is initialized already (cluster id {}); its admin credential is not replaced",
                    existing.cluster_id
                ))));
            }
            meta.cluster =
                Some(ClusterInfo { cluster_id: cluster_id.clone(), admin_credential_hash: *admin_credential_hash });
            Ok(Ok(ReplyBody::Done))
        }
        Command::AddJoinToken { .. } => Ok(Err(CaddyError::precondition(
            "join tokens of this kind (from an older CADDY) are no longer accepted; create a new one",
        ))),
        Command::KvPut { key, value, if_revision } => {
            let mut kv = KvCtx { tables, meta, history, events };
            kv_put(&mut kv, key, value, *if_revision, |_, _| Ok(()))
        }
        Command::KvDelete { key, if_revision } => {
            let mut kv = KvCtx { tables, meta, history, events };
            Ok(kv_delete(&mut kv, key, *if_revision)?.map(|(body, _)| body))
        }
        Command::Call(call) => {
            let mut kv = KvCtx { tables, meta, history, events };
            crate::identity::apply_call(&mut kv, call, proposal.stamp_ms)
        }
        Command::FilesSweep { trash_retention_ms } => {
            Ok(Ok(crate::files::sweep(tables, proposal.stamp_ms, *trash_retention_ms)?))
        }
        Command::RenderClaim { node, lease_ms, max_attempts } => {
            crate::render::claim(tables, proposal.stamp_ms, *node, *lease_ms, *max_attempts)
        }
        Command::RenderRenew { tenant, job, attempt, node, lease_ms } => {
            crate::render::renew(tables, proposal.stamp_ms, tenant, *job, *attempt, *node, *lease_ms)
        }
        Command::RenderFinish { tenant, job, attempt, node, outcome, max_attempts } => {
            crate::render::complete(tables, proposal.stamp_ms, tenant, *job, *attempt, *node, outcome, *max_attempts)
        }
        Command::RenderSweep { retention_ms } => crate::render::sweep(tables, proposal.stamp_ms, *retention_ms),
        Command::CreateJoinToken { token_hash, expires_at_ms } => {
            crate::cluster::create_token(&mut tables.cluster, proposal.stamp_ms, token_hash, *expires_at_ms)
        }
        Command::RevokeJoinToken { id } => crate::cluster::revoke_token(&mut tables.cluster, proposal.stamp_ms, *id),
        Command::EnrollNode { token_hash, node, key_hash } => crate::cluster::enroll(
            &mut tables.cluster,
            &meta.membership,
            proposal.stamp_ms,
            token_hash,
            *node,
            key_hash,
        ),
        Command::RenewNodeCert { node, key_hash } => {
            crate::cluster::renew(&mut tables.cluster, &meta.membership, proposal.stamp_ms, *node, key_hash)
        }
        Command::ActivateNodeCert { node, generation } => {
            crate::cluster::activate(&mut tables.cluster, proposal.stamp_ms, *node, *generation)
        }
        Command::AuditSweep { retention, from } => crate::audit::sweep(tables, proposal.stamp_ms, *retention, from),
    }
}

/// What a key-value write needs from the apply batch.
pub(crate) struct KvCtx<'a, 't> {
    pub(crate) tables: &'a mut Tables<'t>,
    pub(crate) meta: &'a mut SmMeta,
    pub(crate) history: u64,
    pub(crate) events: &'a mut Vec<KvEvent>,
}

/// Bytes a stored key-value pair counts against a storage quota.
fn footprint(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// Puts `key` (a full storage key). `admit` sees the pair's quota footprint
/// before and after (read once, with the record the put needs anyway) and
/// may refuse the put before anything is written.
pub(crate) fn kv_put(
    kv: &mut KvCtx<'_, '_>,
    key: &str,
    value: &[u8],
    if_revision: Option<u64>,
    admit: impl FnOnce(u64, u64) -> Result<(), CaddyError>,
) -> io::Result<Result<ReplyBody, CaddyError>> {
    if let Err(e) = check_key(key) {
        return Ok(Err(e));
    }
    if value.len() > limits::MAX_VALUE_BYTES {
        return Ok(Err(CaddyError::new(
            ErrorCode::ResourceExhausted,
            format!("value of {} bytes exceeds the limit of {} bytes", value.len(), limits::MAX_VALUE_BYTES),
        )));
    }
    let previous = kv_stored(kv.tables, key)?;
    let current_rev = previous.as_ref().map(|p| p.mod_revision).unwrap_or(0);
    if let Some(expected) = if_revision
        && expected != current_rev
    {
        return Ok(Err(cas_failed(key, expected, current_rev)));
    }
    if let Err(e) = admit(previous.as_ref().map_or(0, |p| footprint(key, &p.value)), footprint(key, value)) {
        return Ok(Err(e));
    }
    kv.meta.revision += 1;
    let revision = kv.meta.revision;
    let stored = StoredKv {
        value: value.to_vec(),
        create_revision: previous.as_ref().map(|p| p.create_revision).unwrap_or(revision),
        mod_revision: revision,
        version: previous.as_ref().map(|p| p.version).unwrap_or(0) + 1,
    };
    kv.tables.kv.insert(key, seal(&stored)?.as_slice()).map_err(io_err)?;
    let event = KvEvent { revision, kind: EventKind::Put, kv: to_kv(key, stored) };
    record_event(kv.tables, kv.meta, event, kv.history, kv.events)?;
    Ok(Ok(ReplyBody::Put { revision, previous: previous.map(|p| to_kv(key, p)) }))
}

/// The stored record of `key`, if any.
fn kv_stored(tables: &Tables<'_>, key: &str) -> io::Result<Option<StoredKv>> {
    match tables.kv.get(key).map_err(io_err)? {
        Some(raw) => Ok(Some(open_record("kv record", raw.value())?)),
        None => Ok(None),
    }
}

/// Deletes `key` (a full storage key); the `u64` is the size it counted.
pub(crate) fn kv_delete(
    kv: &mut KvCtx<'_, '_>,
    key: &str,
    if_revision: Option<u64>,
) -> io::Result<Result<(ReplyBody, u64), CaddyError>> {
    if let Err(e) = check_key(key) {
        return Ok(Err(e));
    }
    let previous = kv_stored(kv.tables, key)?;
    let current_rev = previous.as_ref().map_or(0, |p| p.mod_revision);
    if let Some(expected) = if_revision
        && expected != current_rev
    {
        return Ok(Err(cas_failed(key, expected, current_rev)));
    }
    let Some(previous) = previous else {
        return Ok(Ok((ReplyBody::Delete { revision: kv.meta.revision, deleted: false }, 0)));
    };
    kv.tables.kv.remove(key).map_err(io_err)?;
    kv.meta.revision += 1;
    let revision = kv.meta.revision;
    let deleted =
        KeyValue { key: key.to_owned(), value: Vec::new(), create_revision: 0, mod_revision: revision, version: 0 };
    record_event(
        kv.tables,
        kv.meta,
        KvEvent { revision, kind: EventKind::Delete, kv: deleted },
        kv.history,
        kv.events,
    )?;
    Ok(Ok((ReplyBody::Delete { revision, deleted: true }, footprint(key, &previous.value))))
}

/// Builds snapshots off the Raft core's task.
pub struct SnapshotBuilder {
    sm: StateMachineStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let sm = self.sm.clone();
        tokio::task::spawn_blocking(move || sm.build()).await.map_err(io_err)?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let meta = lock(&self.inner.meta);
        Ok((meta.applied, meta.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let batch: Vec<_> = entries.try_collect().await?;
        for (responder, reply) in self.apply_batch(batch)? {
            responder.send(reply);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { sm: self.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, mut snapshot: SnapshotData) -> io::Result<()> {
        let sm = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let header = sm.install_from(&mut snapshot, false)?;
            if header.applied != meta.last_log_id {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot content is at {:?} but its metadata says {:?}", header.applied, meta.last_log_id),
                ));
            }
            let (term, index) = meta.last_log_id.as_ref().map(|l| (l.leader_id.term, l.index)).unwrap_or((0, 0));
            let path = sm.inner.snapshot_dir.join(format!("snap-{term:020}-{index:020}.snap"));
            let tmp = path.with_extension("installing");
            {
                use std::io::{Seek, SeekFrom};
                snapshot.seek(SeekFrom::Start(0))?;
                let mut out = File::create(&tmp)?;
                let size = io::copy(&mut snapshot, &mut out)?;
                out.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                sync_dir(&sm.inner.snapshot_dir)?;
                sm.set_current(SnapshotInfo { meta, path, size });
            }
            tracing::info!(index, term, "installed snapshot");
            Ok(())
        })
        .await
        .map_err(io_err)?
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        match self.snapshot_info() {
            None => Ok(None),
            Some(info) => Ok(Some(Snapshot { meta: info.meta, snapshot: File::open(&info.path)? })),
        }
    }
}
