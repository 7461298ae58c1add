//! Key-value records and the events a watcher receives.

use serde::{Deserialize, Serialize};

/// A stored key with its value and revision bookkeeping (etcd's model):
/// every mutation of the namespace increments one global revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value bytes (empty in a delete event).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Revision at which the key was created (since its last deletion).
    pub create_revision: u64,
    /// Revision of the last change to the key.
    pub mod_revision: u64,
    /// Number of puts since creation (1 after the first put).
    pub version: u64,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Created or overwritten.
    Put,
    /// Removed.
    Delete,
}

/// One change of the namespace, as delivered to watchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEvent {
    /// Revision this change created.
    pub revision: u64,
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (for a delete: key, empty value, `mod_revision` = `revision`).
    pub kv: KeyValue,
}
