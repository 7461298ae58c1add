//! An in-process network for cluster tests: nodes call each other's Raft
//! handles directly, and the test can partition, isolate, delay and drop.
//!
//! Faults are decided per message from the current fault table and a seeded
//! random source, so a scenario under tokio's paused clock replays the same
//! way every run. Like the gRPC network, it refuses an AppendEntries whose
//! encoding exceeds the peer message limit, and it hands votes to
//! [`RaftNode::vote`] (which applies the node's own vote rules), not
//! straight to openraft.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use caddy_core::NodeId;
use caddy_store::{CaddyNode, Snapshot, SnapshotData, TypeConfig};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::type_config::alias::VoteOf;
use openraft::{AnyError, OptionalSend};
use rand::{Rng, SeedableRng};

use crate::node::RaftNode;

struct SimState {
    nodes: BTreeMap<NodeId, RaftNode>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    delay: Duration,
    drop_one_in: u32,
    max_message_bytes: usize,
    rng: rand::rngs::StdRng,
}

/// The simulated network shared by every node of a test cluster.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<SimState>>,
}

impl SimNetwork {
    /// A network with no faults; `seed` drives message drops.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(SimState {
                nodes: BTreeMap::new(),
                blocked: BTreeSet::new(),
                delay: Duration::ZERO,
                drop_one_in: 0,
                max_message_bytes: crate::peers::MAX_PEER_MESSAGE,
                rng: rand::rngs::StdRng::seed_from_u64(seed),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `node` reachable as `id`.
    pub fn register(&self, id: NodeId, node: RaftNode) {
        self.lock().nodes.insert(id, node);
    }

    /// Makes `id` unreachable (it crashed).
    pub fn unregister(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts every link between nodes of different groups (both directions).
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut state = self.lock();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for x in a.iter() {
                        for y in b.iter() {
                            state.blocked.insert((*x, *y));
                        }
                    }
                }
            }
        }
    }

    /// Cuts `id` off from everyone.
    pub fn isolate(&self, id: NodeId, all: &[NodeId]) {
        let mut state = self.lock();
        for other in all.iter().filter(|o| **o != id) {
            state.blocked.insert((id, *other));
            state.blocked.insert((*other, id));
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().blocked.clear();
    }

    /// Delays every message by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Drops one message in `n` at random (0 = none).
    pub fn set_drop_one_in(&self, n: u32) {
        self.lock().drop_one_in = n;
    }

    /// Refuses AppendEntries larger than `bytes` once encoded (default: the
    /// gRPC network's peer message limit).
    pub fn set_max_message_bytes(&self, bytes: usize) {
        self.lock().max_message_bytes = bytes;
    }

    /// The factory node `from` uses.
    pub fn factory(&self, from: NodeId) -> SimFactory {
        SimFactory { from, net: self.clone() }
    }

    /// Decides the fate of one message: the target handle, or why not.
    fn route(&self, from: NodeId, to: NodeId) -> Result<(RaftNode, Duration), String> {
        let mut state = self.lock();
        if state.blocked.contains(&(from, to)) {
            return Err(format!("link {from}->{to} is partitioned"));
        }
        if state.drop_one_in > 0 {
            let n = state.drop_one_in;
            if state.rng.random_range(0..n) == 0 {
                return Err(format!("message {from}->{to} dropped"));
            }
        }
        let delay = state.delay;
        match state.nodes.get(&to) {
            Some(node) => Ok((node.clone(), delay)),
            None => Err(format!("node {to} is down")),
        }
    }

    async fn deliver<T, E, F, Fut>(&self, from: NodeId, to: NodeId, call: F) -> Result<T, String>
    where
        F: FnOnce(RaftNode) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let (node, delay) = self.route(from, to)?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let result = call(node).await.map_err(|e| e.to_string())?;
        // The reply travels back over the reverse link.
        self.route(to, from)?;
        Ok(result)
    }
}

/// Creates connections from one node.
pub struct SimFactory {
    from: NodeId,
    net: SimNetwork,
}

impl RaftNetworkFactory<TypeConfig> for SimFactory {
    type Network = SimConnection;

    async fn new_client(&mut self, target: NodeId, _node: &CaddyNode) -> SimConnection {
        SimConnection { from: self.from, to: target, net: self.net.clone() }
    }
}

/// A simulated link from one node to another.
pub struct SimConnection {
    from: NodeId,
    to: NodeId,
    net: SimNetwork,
}

fn unreachable(msg: String) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&AnyError::error(msg)))
}

impl RaftNetworkV2<TypeConfig> for SimConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let limit = self.net.lock().max_message_bytes;
        let size = caddy_core::codec::to_bytes(&rpc).map(|b| b.len()).unwrap_or(usize::MAX);
        if size > limit {
            // What the receiving gRPC server answers (a status, not a lost
            // connection), so openraft sees a network error, as in production.
            return Err(RPCError::Network(NetworkError::new(&AnyError::error(format!(
                "append entries of {size} bytes exceeds the peer message limit of {limit} bytes"
            )))));
        }
        self.net
            .deliver(self.from, self.to, |r| async move { r.raft().append_entries(rpc).await })
            .await
            .map_err(unreachable)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.net.deliver(self.from, self.to, |r| async move { r.vote(rpc).await }).await.map_err(unreachable)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.net.deliver(self.from, self.to, |r| async move { r.pre_vote(rpc).await }).await.map_err(unreachable)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        self.net
            .deliver(self.from, self.to, |r| async move { r.raft().install_full_snapshot(vote, snapshot).await })
            .await
            .map_err(|m| StreamingError::Unreachable(Unreachable::new(&AnyError::error(m))))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.net
            .deliver(self.from, self.to, |r| async move { r.raft().handle_transfer_leader(req).await })
            .await
            .map_err(unreachable)
    }

    fn backoff(&self) -> Option<openraft::network::Backoff> {
        Some(openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(50))))
    }
}
