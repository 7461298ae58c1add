//! Durable storage for a CADDY node: the Raft log, the replicated state
//! machine (the key-value namespace, watch history, client sessions, cluster
//! credentials (join tokens, node certificates), identity records, CAD documents, file metadata) and its
//! snapshots, all on redb.
//!
//! Durability contract (what openraft relies on):
//! - A vote is fsynced before `save_vote` returns.
//! - Appended entries are visible to readers as soon as `append` returns, and
//!   reported flushed (the `IOFlushed` callback) only after an fsync that
//!   covers them. Appends are group-committed: one fsync covers every append
//!   queued while the previous fsync ran.
//! - Truncation and purge ride on the next fsync; that is safe because
//!   nothing that depends on them is acknowledged before it.
//! - The state machine commits without fsync; after a crash it comes back at
//!   an older applied index and openraft re-applies from the log, which is
//!   deterministic. Building a snapshot first makes the state machine durable,
//!   so the log is never purged past what the state machine has on disk.
//!
//! Every stored value is a sealed record (version + checksum, see
//! [`caddy_core::codec`]): corruption is reported as an `InvalidData` I/O
//! error, which stops the node instead of applying or serving bad data.

mod audit;
pub mod backend;
pub mod cluster;
pub mod docs;
pub mod files;
pub mod identity;
mod log_store;
mod render;
pub mod sessions;
mod snapshot;
mod state_machine;
pub mod types;

pub use docs::DocCommitted;
pub use files::VersionRecordView;
pub use log_store::{FlushMode, LogStore, REPLICATION_BATCH_BYTES};
pub use snapshot::{SnapshotError, SnapshotInfo, read_snapshot_meta, verify_snapshot_file};
pub use state_machine::{ApplyEvent, StateMachineStore, WatchMessage};
pub use types::*;

/// Errors opening or preparing storage (runtime storage failures are
/// reported to openraft as `std::io::Error`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb could not open or create the database.
    #[error("database: {0}")]
    Database(#[from] redb::DatabaseError),
    /// Another process (another `caddyd` on the same data directory) holds
    /// the database.
    #[error("database {} is in use by another process (is another caddyd running on this data directory?)", .0.display())]
    Locked(std::path::PathBuf),
    /// A redb operation failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A record failed its checksum or could not be decoded.
    #[error("corrupted record: {0}")]
    Corrupt(#[from] caddy_core::CodecError),
    /// A snapshot or backup file is invalid.
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    /// Filesystem failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Converts any displayable redb error into an I/O error for openraft.
pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// A corrupt record becomes `InvalidData`, which openraft treats as fatal.
pub(crate) fn corrupt(what: &str, e: caddy_core::CodecError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {e}"))
}

/// Format version of every record this build writes.
pub(crate) const RECORD_VERSION: u8 = 1;
