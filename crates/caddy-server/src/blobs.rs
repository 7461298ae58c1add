//! The node's blob store and how nodes share it: chunks written by an
//! upload are replicated to peers until a majority holds them, reads fall
//! back to a peer when the local copy is missing or corrupt (and repair it),
//! a background pass makes this node hold every referenced chunk, and a
//! garbage collector removes chunks nothing references.
//!
//! Invariants:
//! - Metadata naming a chunk commits only after a majority of voters holds
//!   it (or, with a shared object store, after the store acknowledged it).
//! - A chunk is deleted only when the committed state references it no
//!   more and it was last written or touched more than the grace period
//!   ago; an upload touches every chunk it relies on, and uploads are
//!   shorter than half the grace period, so nothing an upload relies on is
//!   collected before its metadata commits.
//! - Every chunk read is checked against its hash, wherever it comes from.
//! - At most `PEER_SENDS_IN_FLIGHT` chunk copies are on their way to any
//!   one peer; a busy peer beyond the majority is left to the repair pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use caddy_blob::{BlobError, BlobStore, ChunkHash, ChunkKey};
use caddy_core::CaddyError;
use caddy_core::identity::TenantId;
use caddy_raft::RaftNode;
use caddy_raft::pb;
use caddy_raft::service::ChunkService;
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::Status;

use crate::config::FilesConfig;

/// How long one peer chunk call may take.
const PEER_CHUNK_TIMEOUT: Duration = Duration::from_secs(20);
/// Chunk copies on their way to one peer at once (bounds the memory a
/// slow peer can hold up: a chunk is at most 4 MiB).
const PEER_SENDS_IN_FLIGHT: usize = 8;
/// Chunks examined per repair or collection page.
const PAGE: usize = 256;

/// Opens the configured blob store.
pub fn open_store(config: &FilesConfig, data_dir: &std::path::Path) -> anyhow::Result<BlobStore> {
    match config.backend.as_str() {
        "object" => {
            let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            let object = caddy_blob::ObjectConfig {
                url: config.object_url.clone(),
                endpoint: non_empty(&config.object_endpoint),
                region: non_empty(&config.object_region),
                access_key_id: non_empty(&config.object_access_key_id),
                secret_access_key: non_empty(&config.object_secret_access_key),
                allow_http: config.object_allow_http,
            };
            Ok(BlobStore::Object(caddy_blob::ObjectBackend::from_config(&object)?))
        }
        _ => Ok(BlobStore::Local(caddy_blob::LocalStore::open(&data_dir.join("blobs"))?)),
    }
}

/// Maps a blob-store failure to a client error.
pub fn blob_error(e: BlobError) -> CaddyError {
    match e {
        BlobError::InvalidKey(_) | BlobError::HashMismatch { .. } => CaddyError::invalid(e.to_string()),
        BlobError::TooLarge { .. } => CaddyError::exhausted(e.to_string()),
        other => CaddyError::unavailable(format!("blob store: {other}")),
    }
}

fn hash_from(bytes: &[u8]) -> Result<ChunkHash, Status> {
    <[u8; 32]>::try_from(bytes).map(ChunkHash).map_err(|_| Status::invalid_argument("a chunk hash is 32 bytes"))
}

fn status(e: BlobError) -> Status {
    match e {
        BlobError::InvalidKey(_) | BlobError::HashMismatch { .. } | BlobError::TooLarge { .. } => {
            Status::invalid_argument(e.to_string())
        }
        other => Status::unavailable(other.to_string()),
    }
}

/// The node's chunks and its peers'.
pub struct Blobs {
    store: Arc<BlobStore>,
    node: RaftNode,
    grace: Duration,
    /// Per peer address, the chunk sends in flight.
    peer_sends: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Blobs {
    /// Wraps `store` for `node`.
    pub fn new(store: BlobStore, node: RaftNode, config: &FilesConfig) -> Self {
        Self {
            store: Arc::new(store),
            node,
            grace: Duration::from_secs(config.gc_grace_secs),
            peer_sends: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// What peers call on this node.
    pub fn peer_service(&self) -> Arc<dyn ChunkService> {
        Arc::new(PeerChunks { store: self.store.clone() })
    }

    /// Whether every node sees the same chunks (an object store).
    pub fn shared(&self) -> bool {
        self.store.is_shared()
    }

    fn key(tenant: &TenantId, hash: [u8; 32]) -> ChunkKey {
        ChunkKey { tenant: tenant.to_string(), hash: ChunkHash(hash) }
    }

    /// Which of `hashes` this node holds, marking held ones recently used.
    pub async fn have_locally(&self, tenant: &TenantId, hashes: &[[u8; 32]]) -> Result<Vec<bool>, CaddyError> {
        let list: Vec<ChunkHash> = hashes.iter().map(|h| ChunkHash(*h)).collect();
        let held = self.store.has_many(tenant.as_str(), &list).await.map_err(blob_error)?;
        for (h, present) in list.iter().zip(&held) {
            if *present {
                self.store.touch(&ChunkKey { tenant: tenant.to_string(), hash: *h }).await.map_err(blob_error)?;
            }
        }
        Ok(held)
    }

    /// The bound on chunk copies being sent to the peer at `addr`.
    fn peer_gate(&self, addr: &str) -> Arc<Semaphore> {
        let mut gates = self.peer_sends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        gates.entry(addr.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(PEER_SENDS_IN_FLIGHT))).clone()
    }

    /// Stores a chunk here (hash-checked, fsynced).
    pub async fn store_local(&self, tenant: &TenantId, hash: [u8; 32], data: Bytes) -> Result<(), CaddyError> {
        self.store.put(&Self::key(tenant, hash), data).await.map_err(blob_error)?;
        Ok(())
    }

    /// Sends a chunk this node already stored to every other member and
    /// returns once a majority of voters (this node included) holds it;
    /// sends to the rest continue in the background.
    pub async fn replicate(&self, tenant: &TenantId, hash: [u8; 32], data: Bytes) -> Result<(), CaddyError> {
        if self.shared() {
            return Ok(());
        }
        let needed = self.node.majority().saturating_sub(1);
        if needed == 0 {
            return Ok(());
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let send = |permit: OwnedSemaphorePermit, addr: String| {
            let (tx, node) = (tx.clone(), self.node.clone());
            let msg = pb::ChunkData { tenant: tenant.to_string(), hash: hash.to_vec(), data: data.to_vec() };
            tokio::spawn(async move {
                let ok = put_on_peer(&node, &addr, msg).await;
                drop(permit);
                let _ = tx.send(ok).await;
            });
        };
        // A peer with PEER_SENDS_IN_FLIGHT chunks already on their way is
        // skipped (the repair pass brings it the chunk after the commit), so
        // a slow peer cannot pile up chunk copies in this node's memory;
        // unless the majority needs it, then the upload waits for it.
        let mut total = 0;
        let mut busy = Vec::new();
        for (_, addr) in self.node.other_members() {
            let gate = self.peer_gate(&addr);
            match gate.clone().try_acquire_owned() {
                Ok(permit) => {
                    send(permit, addr);
                    total += 1;
                }
                Err(_) => busy.push((addr, gate)),
            }
        }
        for (addr, gate) in busy {
            if total >= needed {
                metrics::counter!("caddy_blob_replications_deferred_total").increment(1);
                continue;
            }
            let permit = gate.acquire_owned().await.map_err(|_| CaddyError::internal("peer send gate closed"))?;
            send(permit, addr);
            total += 1;
        }
        drop(tx);
        let (mut acked, mut answered) = (0, 0);
        while let Some(ok) = rx.recv().await {
            answered += 1;
            acked += usize::from(ok);
            if acked >= needed {
                return Ok(());
            }
            if answered == total {
                break;
            }
        }
        Err(CaddyError::unavailable(format!(
            "only {} of the {} copies a majority needs hold a chunk; is a majority of nodes up?",
            acked + 1,
            needed + 1
        )))
    }

    /// Makes sure a majority holds every one of `hashes` (all held here),
    /// pushing local copies to peers that lack them, and marks them
    /// recently used on every node that has them.
    pub async fn ensure_majority(&self, tenant: &TenantId, hashes: &[[u8; 32]]) -> Result<(), CaddyError> {
        if self.shared() || hashes.is_empty() {
            return Ok(());
        }
        let needed = self.node.majority().saturating_sub(1);
        let mut copies = vec![0usize; hashes.len()];
        for (_, addr) in self.node.other_members() {
            if copies.iter().all(|c| *c >= needed) {
                break;
            }
            let query = pb::ChunkQuery {
                tenant: tenant.to_string(),
                hashes: hashes.iter().map(|h| h.to_vec()).collect(),
                touch: true,
            };
            let Some(present) = has_on_peer(&self.node, &addr, query).await else { continue };
            for (i, hash) in hashes.iter().enumerate() {
                if present.get(i).copied().unwrap_or(false) {
                    copies[i] += 1;
                    continue;
                }
                if copies[i] >= needed {
                    continue;
                }
                let data = self.read(tenant, *hash).await?;
                let msg = pb::ChunkData { tenant: tenant.to_string(), hash: hash.to_vec(), data: data.to_vec() };
                if put_on_peer(&self.node, &addr, msg).await {
                    copies[i] += 1;
                }
            }
        }
        if copies.iter().any(|c| *c < needed) {
            return Err(CaddyError::unavailable("a majority of nodes could not be made to hold every chunk; retry"));
        }
        Ok(())
    }

    /// A chunk's bytes, hash-checked: from this node, or from a peer when
    /// the local copy is missing or corrupt (the local copy is then
    /// repaired).
    pub async fn read(&self, tenant: &TenantId, hash: [u8; 32]) -> Result<Bytes, CaddyError> {
        let key = Self::key(tenant, hash);
        let reason = match self.store.get(&key).await {
            Ok(Some(data)) => return Ok(data),
            Ok(None) => "missing",
            Err(BlobError::Corrupt { .. }) => {
                metrics::counter!("caddy_blob_corrupt_chunks_total").increment(1);
                tracing::warn!(tenant = %tenant, chunk = %key.hash, "corrupt chunk detected; fetching a good copy from a peer");
                "corrupt"
            }
            Err(e) => return Err(blob_error(e)),
        };
        if self.shared() {
            return Err(CaddyError::unavailable(format!(
                "chunk {} of {tenant} is {reason} in the object store",
                key.hash
            )));
        }
        let data = self.fetch_from_peers(tenant, hash).await.ok_or_else(|| {
            CaddyError::unavailable(format!("chunk {} is {reason} here and no peer could supply it", key.hash))
        })?;
        self.store.put(&key, data.clone()).await.map_err(blob_error)?;
        metrics::counter!("caddy_blob_chunks_repaired_total", "reason" => reason).increment(1);
        Ok(data)
    }

    async fn fetch_from_peers(&self, tenant: &TenantId, hash: [u8; 32]) -> Option<Bytes> {
        for (_, addr) in self.node.other_members() {
            let peers = self.node.peers()?;
            let Ok(mut client) = peers.client(&addr) else { continue };
            let req = pb::ChunkKey { tenant: tenant.to_string(), hash: hash.to_vec() };
            let Ok(Ok(resp)) = tokio::time::timeout(PEER_CHUNK_TIMEOUT, client.get_chunk(req)).await else { continue };
            let data = resp.into_inner().data;
            // A peer's copy is checked like our own.
            if ChunkHash::of(&data).0 == hash {
                return Some(Bytes::from(data));
            }
            metrics::counter!("caddy_blob_corrupt_peer_chunks_total").increment(1);
        }
        None
    }

    /// One repair pass: fetches every referenced chunk this node lacks.
    /// Returns how many chunks it fetched.
    pub async fn repair_pass(&self) -> Result<u64, CaddyError> {
        if self.shared() {
            return Ok(0);
        }
        let sm = self.node.state_machine();
        let mut after: Option<(TenantId, [u8; 32])> = None;
        let mut fetched = 0;
        loop {
            let page = sm.chunk_refs_page(after.clone(), PAGE)?;
            let Some(last) = page.last().cloned() else { break };
            for (tenant, hash) in &page {
                let key = Self::key(tenant, *hash);
                if self.store.has(&key).await.map_err(blob_error)? {
                    continue;
                }
                if let Some(data) = self.fetch_from_peers(tenant, *hash).await {
                    self.store.put(&key, data).await.map_err(blob_error)?;
                    metrics::counter!("caddy_blob_chunks_repaired_total", "reason" => "absent").increment(1);
                    fetched += 1;
                }
            }
            if page.len() < PAGE {
                break;
            }
            after = Some(last);
        }
        Ok(fetched)
    }

    /// One collection pass: deletes chunks that no committed metadata
    /// references and that are older than the grace period. Returns how
    /// many it deleted.
    pub async fn gc_pass(&self, now_ms: u64) -> Result<u64, CaddyError> {
        let sm = self.node.state_machine();
        let grace_ms = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX);
        let mut after: Option<ChunkKey> = None;
        let mut deleted = 0;
        loop {
            let page = self.store.list(after.as_ref(), PAGE).await.map_err(blob_error)?;
            let Some(last) = page.last().map(|e| e.key.clone()) else { break };
            let old: Vec<_> = page.iter().filter(|e| e.modified_ms.saturating_add(grace_ms) <= now_ms).collect();
            // Group by tenant so one state-machine read answers many chunks.
            let mut i = 0;
            while i < old.len() {
                let tenant_name = &old[i].key.tenant;
                let mut j = i;
                while j < old.len() && old[j].key.tenant == *tenant_name {
                    j += 1;
                }
                let group = &old[i..j];
                i = j;
                let Ok(tenant) = TenantId::new(tenant_name) else { continue };
                let hashes: Vec<[u8; 32]> = group.iter().map(|e| e.key.hash.0).collect();
                let referenced = sm.chunks_referenced(&tenant, &hashes)?;
                for (entry, used) in group.iter().zip(referenced) {
                    if !used && self.store.delete(&entry.key).await.map_err(blob_error)? {
                        deleted += 1;
                    }
                }
            }
            if page.len() < PAGE {
                break;
            }
            after = Some(last);
        }
        metrics::counter!("caddy_blob_chunks_collected_total").increment(deleted);
        Ok(deleted)
    }

    /// Runs repair, collection and (on the leader) the trash sweep until
    /// shutdown.
    pub async fn run(self: Arc<Self>, config: FilesConfig, mut shutdown: watch::Receiver<bool>) {
        let mut repair = tokio::time::interval(Duration::from_millis(config.repair_interval_ms.max(100)));
        let mut gc = tokio::time::interval(Duration::from_millis(config.gc_interval_ms.max(100)));
        let mut sweep = tokio::time::interval(Duration::from_millis(config.sweep_interval_ms.max(100)));
        for t in [&mut repair, &mut gc, &mut sweep] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let retention_ms = config.trash_retention_secs.saturating_mul(1000);
        loop {
            tokio::select! {
                _ = crate::run::stopped(&mut shutdown) => return,
                _ = repair.tick() => {
                    match self.repair_pass().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(chunks = n, "repair fetched chunks this node lacked"),
                        Err(e) => tracing::warn!(error = %e, "chunk repair pass failed"),
                    }
                }
                _ = gc.tick() => {
                    // With a shared store one collector is enough: the leader's.
                    if self.shared() && !self.is_leader() {
                        continue;
                    }
                    match self.gc_pass(crate::accounts::now_ms()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(chunks = n, "collected unreferenced chunks"),
                        Err(e) => tracing::warn!(error = %e, "chunk collection pass failed"),
                    }
                }
                _ = sweep.tick() => {
                    if self.is_leader() {
                        let cmd = caddy_core::Command::FilesSweep { trash_retention_ms: retention_ms };
                        if let Err(e) = self.node.propose(None, cmd).await {
                            tracing::debug!(error = %e, "files sweep not proposed");
                        }
                    }
                }
            }
        }
    }

    fn is_leader(&self) -> bool {
        self.node.leader().is_some_and(|(id, _)| id == self.node.id())
    }
}

async fn put_on_peer(node: &RaftNode, addr: &str, msg: pb::ChunkData) -> bool {
    let Some(peers) = node.peers() else { return false };
    let Ok(mut client) = peers.client(addr) else { return false };
    let ok = matches!(tokio::time::timeout(PEER_CHUNK_TIMEOUT, client.put_chunk(msg)).await, Ok(Ok(_)));
    if !ok {
        metrics::counter!("caddy_blob_peer_put_failed_total").increment(1);
    }
    ok
}

async fn has_on_peer(node: &RaftNode, addr: &str, query: pb::ChunkQuery) -> Option<Vec<bool>> {
    let peers = node.peers()?;
    let mut client = peers.client(addr).ok()?;
    let resp = tokio::time::timeout(PEER_CHUNK_TIMEOUT, client.has_chunks(query)).await.ok()?.ok()?;
    Some(resp.into_inner().present)
}

/// Chunk calls from peers, served from this node's store.
struct PeerChunks {
    store: Arc<BlobStore>,
}

impl ChunkService for PeerChunks {
    fn put(&self, tenant: String, hash: Vec<u8>, data: Vec<u8>) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(async move {
            let key = ChunkKey { tenant, hash: hash_from(&hash)? };
            self.store.put(&key, Bytes::from(data)).await.map_err(status)?;
            Ok(())
        })
    }

    fn get(&self, tenant: String, hash: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            let key = ChunkKey { tenant, hash: hash_from(&hash)? };
            match self.store.get(&key).await {
                Ok(Some(data)) => Ok(data.to_vec()),
                Ok(None) => Err(Status::not_found("chunk not held here")),
                Err(BlobError::Corrupt { .. }) => {
                    metrics::counter!("caddy_blob_corrupt_chunks_total").increment(1);
                    Err(Status::not_found("chunk corrupt here"))
                }
                Err(e) => Err(status(e)),
            }
        })
    }

    fn has(&self, tenant: String, hashes: Vec<Vec<u8>>, touch: bool) -> BoxFuture<'_, Result<Vec<bool>, Status>> {
        Box::pin(async move {
            if hashes.len() > 100_000 {
                return Err(Status::invalid_argument("too many hashes in one query"));
            }
            let mut list = Vec::with_capacity(hashes.len());
            for h in &hashes {
                list.push(hash_from(h)?);
            }
            let held = self.store.has_many(&tenant, &list).await.map_err(status)?;
            if touch {
                for (h, present) in list.iter().zip(&held) {
                    if *present {
                        let key = ChunkKey { tenant: tenant.clone(), hash: *h };
                        self.store.touch(&key).await.map_err(status)?;
                    }
                }
            }
            Ok(held)
        })
    }
}
