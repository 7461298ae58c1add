//! The content-addressed chunk store behind CADDY files.
//!
//! File bytes are split by the caller into chunks of at most
//! [`MAX_CHUNK_BYTES`]; each chunk is stored under a [`ChunkKey`]: the owning
//! tenant and the blake3 hash of its bytes. Identical content within one
//! tenant is stored once; the same content in two tenants is two chunks.
//!
//! Two backends sit behind one [`BlobStore`] enum:
//! - [`LocalStore`]: files on the node's disk,
//!   `dir/chunks/<tenant>/<hh>/<blake3 hex>`;
//! - [`ObjectBackend`]: an object store through the `object_store` crate (S3
//!   and compatible servers, or in-memory for tests), same key layout under an
//!   optional prefix. It is shared by all nodes ([`BlobStore::is_shared`]).
//!
//! This crate knows nothing of Raft, replication or the network between
//! nodes: the server decides which chunks must exist where.
//!
//! # Invariants
//! - **The content address is verified on every write and every read.** A put
//!   whose bytes do not hash to the key is refused; a get re-hashes what it
//!   read and returns [`BlobError::Corrupt`] rather than serve wrong bytes. A
//!   corrupt chunk is moved aside into `quarantine/` (counted by
//!   [`BlobStore::corrupt_detected`]) so that the next put of the right bytes
//!   restores it.
//! - **A chunk at its final path is complete and durable** (local store): it
//!   is written to `tmp/`, fsynced, renamed into place, and its directory is
//!   fsynced; new directories are fsynced into their parents. Leftovers in
//!   `tmp/` from a crash are removed on open.
//! - **Tenant names are validated before any path is built** from them
//!   (`[a-z0-9-]`, 1 to 64 characters); hashes are fixed-size bytes, so no
//!   input can reach outside the store's directory or prefix.
//! - **Everything is bounded**: a chunk larger than [`MAX_CHUNK_BYTES`] is
//!   refused before it is hashed or written, a stored file larger than that is
//!   treated as corrupt without being read, and [`BlobStore::list`] returns at
//!   most `limit` entries per call.

#![deny(missing_docs)]

mod key;
mod local;
pub mod moto;
mod object;

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

pub use key::{ChunkHash, ChunkKey, MAX_TENANT_LEN, tenant_path_cmp, validate_tenant};
pub use local::LocalStore;
pub use object::{ObjectBackend, ObjectConfig};

/// Largest chunk the store accepts: 4 MiB.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Errors of the chunk store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A tenant name or hash that cannot address a chunk.
    #[error("invalid chunk key: {0}")]
    InvalidKey(String),
    /// The bytes offered for a key do not hash to it.
    #[error("chunk content does not match its address: expected blake3 {expected}, got {actual}")]
    HashMismatch {
        /// The hash named by the key.
        expected: ChunkHash,
        /// The hash of the bytes offered.
        actual: ChunkHash,
    },
    /// A chunk larger than [`MAX_CHUNK_BYTES`].
    #[error("chunk of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size offered.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The stored bytes of a chunk no longer match its hash; the copy has been
    /// set aside and must be restored from another replica or re-uploaded.
    #[error("stored chunk {key} is corrupt (content does not match its hash); it was set aside")]
    Corrupt {
        /// The chunk found corrupt.
        key: ChunkKey,
    },
    /// Local disk I/O failed.
    #[error("chunk store I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The object-store backend failed or is misconfigured.
    #[error("object store error: {0}")]
    Backend(String),
}

/// Result of a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// True if this put stored the chunk; false if an intact copy was already
    /// there (nothing was rewritten).
    pub created: bool,
}

/// One chunk in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkEntry {
    /// The chunk's address.
    pub key: ChunkKey,
    /// Stored size in bytes.
    pub size: u64,
    /// Last modification time, milliseconds since the Unix epoch.
    pub modified_ms: u64,
}

/// Totals over a whole store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Number of chunks.
    pub chunks: u64,
    /// Sum of their sizes in bytes.
    pub bytes: u64,
}

/// A chunk store: local disk or object storage (enum dispatch).
#[derive(Debug, Clone)]
pub enum BlobStore {
    /// Files on this node's disk.
    Local(LocalStore),
    /// An object store shared by all nodes.
    Object(ObjectBackend),
}

impl BlobStore {
    /// Stores `data` under `key`.
    ///
    /// Refuses an invalid tenant ([`BlobError::InvalidKey`]), data larger than
    /// [`MAX_CHUNK_BYTES`] ([`BlobError::TooLarge`], checked before hashing)
    /// and data whose blake3 is not `key.hash` ([`BlobError::HashMismatch`]).
    /// Idempotent: if an intact copy exists, returns `created: false` without
    /// rewriting it. Returns only once the chunk is durable.
    pub async fn put(&self, key: &ChunkKey, data: Bytes) -> Result<PutOutcome, BlobError> {
        match self {
            Self::Local(s) => s.put(key, data).await,
            Self::Object(s) => s.put(key, data).await,
        }
    }

    /// Reads a chunk, verifying its hash. `Ok(None)` if it is absent;
    /// [`BlobError::Corrupt`] if the stored bytes do not match (the bad copy
    /// is set aside and counted).
    pub async fn get(&self, key: &ChunkKey) -> Result<Option<Bytes>, BlobError> {
        match self {
            Self::Local(s) => s.get(key).await,
            Self::Object(s) => s.get(key).await,
        }
    }

    /// Whether a chunk is present (metadata only; its content is not checked).
    pub async fn has(&self, key: &ChunkKey) -> Result<bool, BlobError> {
        match self {
            Self::Local(s) => s.has(key).await,
            Self::Object(s) => s.has(key).await,
        }
    }

    /// [`has`](Self::has) for many hashes of one tenant; one answer per hash,
    /// in order.
    pub async fn has_many(&self, tenant: &str, hashes: &[ChunkHash]) -> Result<Vec<bool>, BlobError> {
        match self {
            Self::Local(s) => s.has_many(tenant, hashes).await,
            Self::Object(s) => s.has_many(tenant, hashes).await,
        }
    }

    /// Marks a chunk as recently used (garbage collection keeps chunks
    /// written or touched within its grace period); returns whether it was
    /// present.
    pub async fn touch(&self, key: &ChunkKey) -> Result<bool, BlobError> {
        match self {
            Self::Local(s) => s.touch(key).await,
            Self::Object(s) => s.touch(key).await,
        }
    }

    /// Deletes a chunk; returns whether it was present.
    pub async fn delete(&self, key: &ChunkKey) -> Result<bool, BlobError> {
        match self {
            Self::Local(s) => s.delete(key).await,
            Self::Object(s) => s.delete(key).await,
        }
    }

    /// One page of all chunks of all tenants, in [`ChunkKey`] order, strictly
    /// after `after` (from the start if `None`), at most `limit` entries.
    /// Page through everything by passing the last key of a page as the next
    /// `after`; a short page means the end was reached.
    pub async fn list(&self, after: Option<&ChunkKey>, limit: usize) -> Result<Vec<ChunkEntry>, BlobError> {
        match self {
            Self::Local(s) => s.list(after, limit).await,
            Self::Object(s) => s.list(after, limit).await,
        }
    }

    /// Counts chunks and bytes (scans the whole store).
    pub async fn usage(&self) -> Result<StoreUsage, BlobError> {
        match self {
            Self::Local(s) => s.usage().await,
            Self::Object(s) => s.usage().await,
        }
    }

    /// The backend's name: `"local"`, `"s3"` or `"memory"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::Object(s) => s.kind(),
        }
    }

    /// True when every node sees the same chunks (object storage), so the
    /// caller need not replicate chunks to peers.
    pub fn is_shared(&self) -> bool {
        match self {
            Self::Local(_) => false,
            Self::Object(_) => true,
        }
    }

    /// Number of corrupt chunks detected (and set aside) since this store was
    /// opened.
    pub fn corrupt_detected(&self) -> u64 {
        match self {
            Self::Local(s) => s.corrupt_detected(),
            Self::Object(s) => s.corrupt_detected(),
        }
    }
}

impl From<LocalStore> for BlobStore {
    fn from(s: LocalStore) -> Self {
        Self::Local(s)
    }
}

impl From<ObjectBackend> for BlobStore {
    fn from(s: ObjectBackend) -> Self {
        Self::Object(s)
    }
}

/// Checks size (first) and content address of data offered for `key`.
/// Hashing up to 4 MiB takes milliseconds, so it runs off the async threads.
async fn verify_for_put(key: &ChunkKey, data: &Bytes) -> Result<(), BlobError> {
    key.validate()?;
    if data.len() > MAX_CHUNK_BYTES {
        return Err(BlobError::TooLarge { size: data.len(), max: MAX_CHUNK_BYTES });
    }
    let expected = key.hash;
    let bytes = data.clone();
    let actual = blocking(move || Ok(ChunkHash::of(&bytes))).await?;
    if actual != expected {
        return Err(BlobError::HashMismatch { expected, actual });
    }
    Ok(())
}

/// Runs blocking work (file I/O, hashing) on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, BlobError>
where
    F: FnOnce() -> Result<T, BlobError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(format!("blocking task failed: {e}"))))?
}

/// A counter of corrupt chunks found, shared by clones of a store.
#[derive(Debug, Default)]
struct CorruptCounter(AtomicU64);

impl CorruptCounter {
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
