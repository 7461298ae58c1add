//! Consensus for CADDY: openraft wired to the redb store, the peer gRPC
//! network (tonic over mutual TLS), and the node-level operations built on
//! it: proposing (with forwarding to the leader), linearizable read barriers,
//! membership changes, joining, and an in-process simulated network for
//! cluster tests.
//!
//! Invariants:
//! - Only the leader stamps a [`caddy_core::Proposal`]; a follower forwards
//!   the unstamped command, so apply only ever sees the leader's time.
//! - Every peer RPC except `Enroll` requires a client certificate signed by
//!   the cluster CA naming a node, and, apart from the few calls a joining
//!   node makes, a current member at an accepted certificate generation
//!   ([`policy`]); a forwarded write must be one a member may forward.
//! - `Enroll` requires an unused join token, which it consumes through Raft;
//!   the joiner pins the CA by its fingerprint before sending the token, and
//!   receives a certificate for its own key: the CA key never travels.
//! - This crate knows nothing of QUIC or client credentials.

pub mod certs;
pub mod enroll;
pub mod network;
pub mod node;
pub mod peers;
pub mod policy;
pub mod service;
pub mod sim;

/// Generated peer protocol types and gRPC stubs.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("caddy.peer.v1");
}

pub use node::{MemberInfo, NodeOptions, NodeStatus, RaftNode};

use std::sync::Arc;

/// Raft timing and log retention.
#[derive(Debug, Clone)]
pub struct RaftTiming {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (lets slightly lagging
    /// followers catch up without a snapshot transfer).
    pub keep_behind_snapshot: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        // Failover takes about election_max_ms plus the sampled timeout
        // (a follower grants no vote while the old leader's lease,
        // election_max_ms, may still hold), so both are kept short;
        // heartbeats come three times per minimum timeout.
        Self {
            heartbeat_ms: 50,
            election_min_ms: 150,
            election_max_ms: 300,
            snapshot_every: 20_000,
            keep_behind_snapshot: 5_000,
        }
    }
}

/// Errors of this crate's setup paths (runtime request failures are
/// [`caddy_core::CaddyError`]s).
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// Raft configuration rejected.
    #[error("raft configuration: {0}")]
    Config(String),
    /// Storage could not be opened.
    #[error(transparent)]
    Store(#[from] caddy_store::StoreError),
    /// TLS material unusable.
    #[error(transparent)]
    Tls(#[from] caddy_wire::tls::TlsError),
    /// openraft failed fatally.
    #[error("raft: {0}")]
    Fatal(String),
    /// Joining the cluster failed.
    #[error("join: {0}")]
    Join(String),
}

/// Builds the openraft configuration from our timing.
pub fn openraft_config(timing: &RaftTiming) -> Result<Arc<openraft::Config>, RaftError> {
    let config = openraft::Config {
        cluster_name: "caddy".into(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_min_ms,
        election_timeout_max: timing.election_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(timing.snapshot_every),
        max_in_snapshot_log_to_keep: timing.keep_behind_snapshot,
        install_snapshot_timeout: 10_000,
        enable_pre_vote: Some(true),
        // Replicate entries as soon as they are in the local log, so the
        // leader's fsync and the followers' overlap instead of adding up.
        broadcast_submitted_on_append: Some(true),
        ..Default::default()
    };
    Ok(Arc::new(config.validate().map_err(|e| RaftError::Config(e.to_string()))?))
}

/// Milliseconds since the Unix epoch on this machine's clock (used only by
/// proposers and by expiry checks outside apply).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
