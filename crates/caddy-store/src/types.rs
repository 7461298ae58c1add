//! The openraft type configuration and the aliases the rest of CADDY uses.

use serde::{Deserialize, Serialize};

/// How to reach a member; stored in the membership config inside the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaddyNode {
    /// Peer gRPC (Raft) address, `host:port`.
    pub raft_addr: String,
    /// Client QUIC address, `host:port`.
    pub client_addr: String,
    /// Admin HTTPS address, `host:port`.
    pub admin_addr: String,
}

openraft::declare_raft_types!(
    /// CADDY's Raft types: the log carries [`caddy_core::Proposal`]s and apply
    /// returns [`caddy_core::Reply`]s.
    pub TypeConfig:
        D = caddy_core::Proposal,
        R = caddy_core::Reply,
        Node = CaddyNode,
);

/// Position of an entry in the log.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A term's vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// Membership with the log id that introduced it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// What a snapshot's bytes travel as: an open file (it survives the
/// snapshot being superseded and unlinked while a transfer reads it).
pub type SnapshotData = std::fs::File;
/// A snapshot as openraft hands it around.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig, crate::StateMachineStore>;
