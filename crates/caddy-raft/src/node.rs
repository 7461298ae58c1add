//! A running Raft member and the operations the server builds on it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use caddy_core::NodeId;
use caddy_core::{CaddyError, ClientSeq, Command, ErrorCode, Proposal, ReplyBody, codec};
use caddy_store::backend::Disk;
use caddy_store::{CaddyNode, FlushMode, LogStore, Raft, StateMachineStore, TypeConfig};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError as OpenRaftError};
use openraft::{ChangeMembers, Instant as _, RaftNetworkFactory, ReadPolicy, ServerState};
use serde::{Deserialize, Serialize};

use crate::network::GrpcNetworkFactory;
use crate::pb;
use crate::peers::PeerClients;
use crate::{RaftError, RaftTiming, now_ms, openraft_config};

/// Makes a node's new certificate and key durable before the node uses
/// them (the server writes its data dir); an error aborts the change.
pub type PersistIdentity = Arc<dyn Fn(&caddy_wire::tls::NodeIdentity) -> Result<(), String> + Send + Sync>;

/// The TLS material a node runs with.
#[derive(Clone)]
pub struct NodeTls {
    /// Cluster CA certificate.
    pub ca_cert_pem: String,
    /// Cluster CA key, only on the nodes that sign certificates (the
    /// bootstrap node, unless the operator placed it elsewhere).
    pub ca_key_pem: Option<String>,
    /// This node's certificate chain (leaf, then CA) and key, as every
    /// listener and peer client uses them; replaced by a rotation.
    pub identity: Arc<caddy_wire::tls::LiveIdentity>,
    /// DNS names and IP addresses the node's certificates carry besides the
    /// cluster name (its advertised hosts).
    pub extra_names: Vec<String>,
    /// Where a rotated identity is made durable (none: memory only).
    pub persist: Option<PersistIdentity>,
}

/// Everything needed to start a member.
pub struct NodeOptions {
    /// This node's id.
    pub id: NodeId,
    /// Its advertised addresses.
    pub node: CaddyNode,
    /// Where its databases live.
    pub disk: Disk,
    /// How log appends reach disk.
    pub flush: FlushMode,
    /// Raft timing.
    pub timing: RaftTiming,
    /// TLS material (required for the gRPC network).
    pub tls: NodeTls,
}

/// A member of the cluster as seen in its configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node id.
    pub id: NodeId,
    /// Addresses.
    pub node: CaddyNode,
    /// Voter (else learner).
    pub voter: bool,
    /// Highest log index known replicated to it (leader's view).
    pub matched: Option<u64>,
    /// Milliseconds since it last acknowledged the leader (leader's view).
    pub last_ack_ms: Option<u64>,
}

/// A snapshot of a node's Raft state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Reporting node.
    pub id: NodeId,
    /// Current term.
    pub term: u64,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Leader, follower, candidate or learner.
    pub state: String,
    /// Commit index known to this node.
    pub commit_index: u64,
    /// Last applied index.
    pub applied_index: u64,
    /// Last log index.
    pub last_log_index: u64,
    /// Last purged index.
    pub purged_index: u64,
    /// Index of the newest snapshot.
    pub snapshot_index: Option<u64>,
    /// Key-value revision.
    pub revision: u64,
    /// Members of the current configuration.
    pub members: Vec<MemberInfo>,
}

/// Membership operations, executed by the leader (forwarded there if needed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipOp {
    /// Add a node as learner, wait for it to catch up, then promote it.
    Add {
        /// Node id.
        id: NodeId,
        /// Its addresses.
        node: CaddyNode,
        /// Stop after adding it as a learner.
        learner_only: bool,
    },
    /// Remove a voter or learner.
    Remove {
        /// Node id.
        id: NodeId,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        /// Target voter.
        to: NodeId,
    },
    /// Report the leader's status (its replication view).
    Status,
}

/// Result of a membership operation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MembershipView {
    /// Voter ids.
    pub voters: Vec<NodeId>,
    /// Learner ids.
    pub learners: Vec<NodeId>,
    /// Set for [`MembershipOp::Status`].
    pub status: Option<NodeStatus>,
}

/// A forwarded client write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// Exactly-once identity.
    pub origin: Option<ClientSeq>,
    /// The command, unstamped.
    pub command: Command,
}

enum ProposeError {
    NotLeader,
    Failed(CaddyError),
}

#[derive(Default)]
struct ReadBatch {
    in_flight: bool,
    waiting: Vec<tokio::sync::oneshot::Sender<Result<u64, CaddyError>>>,
}

struct NodeInner {
    id: NodeId,
    reads: std::sync::Mutex<ReadBatch>,
    /// One membership change at a time on this leader: concurrent joins
    /// would otherwise race on openraft's expected-membership check.
    membership_lock: tokio::sync::Mutex<()>,
    node: CaddyNode,
    raft: Raft,
    sm: StateMachineStore,
    log: LogStore,
    peers: Option<Arc<PeerClients>>,
    tls: Option<NodeTls>,
    timing: RaftTiming,
    /// Ephemeral messages from peers (document presence), for this node's
    /// local subscribers.
    gossip: tokio::sync::broadcast::Sender<Arc<Vec<u8>>>,
    /// When this process started Raft: votes are withheld for a lease after
    /// it (see [`RaftNode::vote`]).
    started: tokio::time::Instant,
}

/// A running member; cheap to clone.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<NodeInner>,
}

/// What a client of this node is told when the leader refuses this node's
/// certificate (it was removed, or its certificate was superseded):
/// `Unavailable`, so that it turns to another node, with the reason.
pub fn refused_by_leader(e: &CaddyError) -> CaddyError {
    CaddyError::unavailable(format!(
        "this node is not (or no longer) accepted by the cluster; use another node ({})",
        e.message
    ))
}

/// Ephemeral peer messages buffered for slow local subscribers.
const GOSSIP_CHANNEL: usize = 1024;
/// How long a gossip send may take before it is dropped.
const GOSSIP_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest pause between two attempts to reach the leader when nothing
/// says it moved.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long a write or read waits for a leader before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(5);

impl RaftNode {
    /// Opens storage and starts Raft with the gRPC network.
    pub async fn start(opts: NodeOptions) -> Result<Self, RaftError> {
        let peers =
            Arc::new(PeerClients::new(&opts.tls.ca_cert_pem, Some(opts.tls.identity.clone()), Duration::from_secs(5))?);
        let network = GrpcNetworkFactory::new(peers.clone());
        let tls = opts.tls.clone();
        let node = Self::start_with(
            opts.id,
            opts.node,
            &opts.disk,
            opts.flush,
            opts.timing,
            network,
            Some(peers.clone()),
            Some(tls),
        )
        .await?;
        // The servers this node calls are judged like its callers (while it
        // knows no membership, it has nothing to judge them by).
        let view = node.peer_view();
        peers.set_server_check(Arc::new(move |name| {
            crate::policy::authorize(&view, *name, crate::policy::PeerRule::Raft).map_err(|e| e.to_string())
        }));
        Ok(node)
    }

    /// What this node knows of the membership and the certificate registry,
    /// for judging peers.
    pub fn peer_view(&self) -> crate::policy::NodeView {
        crate::policy::NodeView::new(self.inner.raft.metrics(), self.inner.sm.clone())
    }

    /// Opens storage and starts Raft over any network (the simulator uses this).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_with<N>(
        id: NodeId,
        node: CaddyNode,
        disk: &Disk,
        flush: FlushMode,
        timing: RaftTiming,
        network: N,
        peers: Option<Arc<PeerClients>>,
        tls: Option<NodeTls>,
    ) -> Result<Self, RaftError>
    where
        N: RaftNetworkFactory<TypeConfig>,
        N::Network: openraft::network::NetSnapshot<TypeConfig, SnapshotData = caddy_store::SnapshotData>,
    {
        let log = LogStore::open(disk, flush)?;
        let sm = StateMachineStore::open(disk)?;
        let mut config = (*openraft_config(&timing)?).clone();
        // No campaign of its own during the post-start window either (see
        // `RaftNode::vote`): voting for itself is granting a vote too.
        config.enable_elect = false;
        let raft = Raft::new(id, Arc::new(config), network, log.clone(), sm.clone())
            .await
            .map_err(|e| RaftError::Fatal(e.to_string()))?;
        {
            let raft = raft.clone();
            let lease = Duration::from_millis(timing.election_max_ms);
            tokio::spawn(async move {
                tokio::time::sleep(lease).await;
                raft.runtime_config().elect(true);
            });
        }
        Ok(Self {
            inner: Arc::new(NodeInner {
                id,
                reads: Default::default(),
                membership_lock: Default::default(),
                node,
                raft,
                sm,
                log,
                peers,
                tls,
                timing,
                gossip: tokio::sync::broadcast::channel(GOSSIP_CHANNEL).0,
                started: tokio::time::Instant::now(),
            }),
        })
    }

    /// Handles a vote request from a candidate.
    ///
    /// A follower refuses to vote while it honours a leader's lease (it
    /// heard from that leader less than `election_max_ms` ago), which is what
    /// lets the leader serve lease reads without asking anyone. openraft
    /// keeps that lease in memory only: a node restarted a moment ago would
    /// grant a vote at once, and a new leader could be elected and commit
    /// writes while the old one, cut off but still within its lease, serves
    /// reads that miss them. So for one lease after start this node grants
    /// no vote and no pre-vote, as if it still honoured the lease it may
    /// have held before the restart; nor does it stand for election itself
    /// (elections are enabled only once the window has passed). Leadership
    /// transfers are exempt: the leader itself asked for them.
    pub async fn vote(
        &self,
        req: openraft::raft::VoteRequest<TypeConfig>,
    ) -> Result<openraft::raft::VoteResponse<TypeConfig>, OpenRaftError<TypeConfig>> {
        if !req.leadership_transfer
            && let Some(refusal) = self.refusal_after_restart()
        {
            return Ok(refusal);
        }
        self.inner.raft.vote(req).await
    }

    /// Handles a pre-vote request (see [`RaftNode::vote`] for the window
    /// after start in which none is granted).
    pub async fn pre_vote(
        &self,
        req: openraft::raft::VoteRequest<TypeConfig>,
    ) -> Result<openraft::raft::VoteResponse<TypeConfig>, OpenRaftError<TypeConfig>> {
        if let Some(refusal) = self.refusal_after_restart() {
            return Ok(refusal);
        }
        self.inner.raft.pre_vote(req).await
    }

    /// A refusal carrying this node's current vote (a candidate treats it
    /// like any other rejection), while the post-start window lasts.
    fn refusal_after_restart(&self) -> Option<openraft::raft::VoteResponse<TypeConfig>> {
        let lease = Duration::from_millis(self.inner.timing.election_max_ms);
        if self.inner.started.elapsed() >= lease {
            return None;
        }
        metrics::counter!("caddy_raft_votes_withheld_after_start_total").increment(1);
        let vote = self.inner.raft.metrics().borrow_watched().vote;
        Some(openraft::raft::VoteResponse::new(vote, None, false))
    }

    /// Follows ephemeral messages received from peers.
    pub fn subscribe_gossip(&self) -> tokio::sync::broadcast::Receiver<Arc<Vec<u8>>> {
        self.inner.gossip.subscribe()
    }

    /// Hands a message received from a peer to local subscribers.
    pub fn deliver_gossip(&self, data: Vec<u8>) {
        let _ = self.inner.gossip.send(Arc::new(data));
    }

    /// Sends an ephemeral message to every other member, best effort and
    /// without waiting: a member that is down misses it (presence is
    /// refreshed by its sender and expires on its own).
    pub fn gossip(&self, data: Vec<u8>) {
        let Some(peers) = self.inner.peers.clone() else { return };
        let me = self.inner.id;
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let data = Arc::new(data);
        for (id, node) in m.membership_config.membership().nodes() {
            if *id == me {
                continue;
            }
            let (peers, addr, data) = (peers.clone(), node.raft_addr.clone(), data.clone());
            tokio::spawn(async move {
                let Ok(mut client) = peers.client(&addr) else { return };
                let sent = tokio::time::timeout(GOSSIP_TIMEOUT, client.gossip(pb::Blob { data: data.to_vec() })).await;
                if !matches!(sent, Ok(Ok(_))) {
                    metrics::counter!("caddy_gossip_failed_total").increment(1);
                }
            });
        }
    }

    /// Asks every other member to describe itself, concurrently, each within
    /// `timeout`; a member that does not answer is absent from the result.
    pub async fn describe_members(&self, timeout: Duration) -> BTreeMap<NodeId, pb::NodeDescription> {
        let Some(peers) = self.inner.peers.clone() else { return Default::default() };
        let asks = self.other_members().into_iter().map(|(id, addr)| {
            let peers = peers.clone();
            async move {
                let mut client = peers.client(&addr).ok()?;
                let answer = tokio::time::timeout(timeout, client.describe(pb::Empty {})).await.ok()?.ok()?;
                Some((id, answer.into_inner()))
            }
        });
        futures::future::join_all(asks).await.into_iter().flatten().collect()
    }

    /// Every other member (voters and learners) with its peer address.
    pub fn other_members(&self) -> Vec<(NodeId, String)> {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let me = self.inner.id;
        m.membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(id, n)| (*id, n.raft_addr.clone()))
            .collect()
    }

    /// How many copies make a majority of the voters (at least 1).
    pub fn majority(&self) -> usize {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        m.membership_config.membership().voter_ids().count() / 2 + 1
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }
    /// This node's advertised addresses.
    pub fn self_node(&self) -> &CaddyNode {
        &self.inner.node
    }
    /// The openraft handle.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }
    /// The state machine (local reads).
    pub fn state_machine(&self) -> &StateMachineStore {
        &self.inner.sm
    }
    /// The TLS material this node runs with.
    pub fn tls(&self) -> Option<&NodeTls> {
        self.inner.tls.as_ref()
    }
    /// Peer channels (absent in the simulator).
    pub fn peers(&self) -> Option<&Arc<PeerClients>> {
        self.inner.peers.as_ref()
    }
    /// Raft timing in force.
    pub fn timing(&self) -> &RaftTiming {
        &self.inner.timing
    }

    /// Makes this node the single voter of a new cluster. Returns false if
    /// it was initialized already (a restart).
    pub async fn initialize_single(&self) -> Result<bool, RaftError> {
        if self.inner.raft.is_initialized().await.map_err(|e| RaftError::Fatal(e.to_string()))? {
            return Ok(false);
        }
        let members = BTreeMap::from([(self.inner.id, self.inner.node.clone())]);
        self.inner.raft.initialize(members).await.map_err(|e| RaftError::Fatal(e.to_string()))?;
        Ok(true)
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Option<(NodeId, CaddyNode)> {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader).cloned()?;
        Some((leader, node))
    }

    /// A receiver of openraft's metrics that reports only changes made after
    /// this call. (A clone of openraft's receiver remembers the version its
    /// source last saw, so its `changed()` would resolve at once, forever:
    /// a retry loop waiting on it would spin instead of waiting.)
    fn metrics_changes(
        &self,
    ) -> openraft::type_config::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>> {
        let mut rx = self.inner.raft.metrics();
        rx.borrow_and_update();
        rx
    }

    /// Waits up to `pause` for this node to see another leader or term
    /// (what a retry after "no leader" or "not the leader" waits for).
    /// Other metric changes do not end the wait: they come at every step
    /// Raft takes, and a retry loop woken by each would spin.
    async fn wait_leader_change(
        &self,
        changes: &mut openraft::type_config::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>,
        pause: Duration,
    ) {
        let seen = {
            let m = changes.borrow_and_update();
            (m.current_leader, m.current_term)
        };
        let moved = async {
            while changes.changed().await.is_ok() {
                let m = changes.borrow_and_update();
                if (m.current_leader, m.current_term) != seen {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(pause, moved).await;
    }

    /// Waits until a leader is known, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<(NodeId, CaddyNode)> {
        let mut rx = self.metrics_changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return None;
            }
        }
    }

    async fn propose_local(&self, origin: Option<ClientSeq>, command: Command) -> Result<ReplyBody, ProposeError> {
        let started = std::time::Instant::now();
        let proposal = Proposal { origin, stamp_ms: now_ms(), command };
        let name = proposal.command.name();
        let result = self.inner.raft.client_write(proposal).await;
        metrics::histogram!("caddy_proposal_seconds", "command" => name).record(started.elapsed().as_secs_f64());
        match result {
            Ok(resp) => resp.data.0.map_err(ProposeError::Failed),
            Err(OpenRaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(ProposeError::NotLeader),
            Err(OpenRaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                Err(ProposeError::Failed(CaddyError::unavailable(
                    "leadership changed before the write committed; its outcome is unknown, retry it (retries with the same sequence are applied at most once)",
                )))
            }
            Err(OpenRaftError::APIError(e)) => Err(ProposeError::Failed(CaddyError::internal(e.to_string()))),
            Err(OpenRaftError::Fatal(e)) => {
                Err(ProposeError::Failed(CaddyError::unavailable(format!("raft stopped on this node: {e}"))))
            }
        }
    }

    /// Executes a forwarded write; refuses with `Unavailable` if this node is
    /// no longer the leader (the forwarder then looks again).
    pub async fn propose_as_leader(&self, req: ForwardRequest) -> Result<ReplyBody, CaddyError> {
        match self.propose_local(req.origin, req.command).await {
            Ok(r) => Ok(r),
            Err(ProposeError::NotLeader) => Err(CaddyError::unavailable("not the leader")),
            Err(ProposeError::Failed(e)) => Err(e),
        }
    }

    /// Proposes a command through Raft from any node: locally on the leader,
    /// forwarded otherwise. Waits for a leader up to a few seconds.
    pub async fn propose(&self, origin: Option<ClientSeq>, command: Command) -> Result<ReplyBody, CaddyError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let mut changes = self.metrics_changes();
        let mut last_error = CaddyError::unavailable("no leader elected; the cluster may have lost its quorum");
        loop {
            let mut retry_at_once = false;
            match self.leader() {
                Some((id, _)) if id == self.inner.id => match self.propose_local(origin, command.clone()).await {
                    Ok(r) => return Ok(r),
                    Err(ProposeError::Failed(e)) => return Err(e),
                    Err(ProposeError::NotLeader) => {}
                },
                Some((leader, node)) => {
                    let req = ForwardRequest { origin, command: command.clone() };
                    // A leader cut off from this node does not answer, and
                    // may never: as soon as this node learns of another
                    // leader (or stops believing in this one), it stops
                    // waiting and goes where the writes now go.
                    tokio::select! {
                        forwarded = self.forward(&node.raft_addr, &req) => match forwarded {
                            Ok(Ok(r)) => return Ok(r),
                            Ok(Err(e)) if e.code == ErrorCode::Unavailable => last_error = e,
                            Ok(Err(e)) => return Err(e),
                            Err(e) if e.code == ErrorCode::PermissionDenied => return Err(refused_by_leader(&e)),
                            Err(e) => last_error = e,
                        },
                        () = self.leader_moved_from(leader) => {
                            metrics::counter!("caddy_forwards_abandoned_total").increment(1);
                            if origin.is_none() {
                                // Without an exactly-once identity, sending it
                                // again could apply it twice.
                                return Err(CaddyError::unavailable(format!(
                                    "node {leader} stopped being the leader while it held this write; \
                                     the outcome is unknown"
                                )));
                            }
                            last_error = CaddyError::unavailable(format!("node {leader} stopped being the leader"));
                            retry_at_once = true;
                        }
                    }
                }
                None => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(last_error);
            }
            if !retry_at_once {
                self.wait_leader_change(&mut changes, RETRY_PAUSE).await;
            }
        }
    }

    /// Resolves once this node knows a leader other than `leader`, or none.
    async fn leader_moved_from(&self, leader: NodeId) {
        let mut changes = self.metrics_changes();
        loop {
            if self.leader().map(|(id, _)| id) != Some(leader) {
                return;
            }
            if changes.changed().await.is_err() {
                // Raft is gone; the request in flight will fail by itself.
                return std::future::pending().await;
            }
        }
    }

    async fn forward(&self, addr: &str, req: &ForwardRequest) -> Result<Result<ReplyBody, CaddyError>, CaddyError> {
        let peers = self.inner.peers.as_ref().ok_or_else(|| CaddyError::unavailable("no peer network"))?;
        let data = codec::to_bytes(req).map_err(|e| CaddyError::internal(e.to_string()))?;
        let mut client = peers.client(addr).map_err(|s| CaddyError::unavailable(s.message().to_string()))?;
        let resp = tokio::time::timeout(LEADER_WAIT, client.forward(pb::Blob { data }))
            .await
            .map_err(|_| CaddyError::unavailable(format!("leader at {addr} did not answer in time")))?
            .map_err(|s| {
                peers.forget(addr);
                if s.code() == tonic::Code::PermissionDenied {
                    // This node's certificate is refused: retrying cannot help.
                    return CaddyError::new(
                        ErrorCode::PermissionDenied,
                        format!("the leader refused this node: {}", s.message()),
                    );
                }
                CaddyError::unavailable(format!("leader at {addr} unreachable: {}", s.message()))
            })?;
        codec::from_bytes(&resp.into_inner().data).map_err(|e| CaddyError::internal(e.to_string()))
    }

    /// On the leader: the log index a linearizable read must wait for.
    pub async fn leader_read_index(&self) -> Result<u64, CaddyError> {
        let linearizer = self.inner.raft.get_read_linearizer(ReadPolicy::LeaseRead).await.map_err(|e| match e {
            OpenRaftError::APIError(e) => CaddyError::unavailable(format!("cannot confirm leadership: {e}")),
            OpenRaftError::Fatal(e) => CaddyError::unavailable(format!("raft stopped: {e}")),
        })?;
        Ok(linearizer.read_log_id().index())
    }

    /// Makes a following local read linearizable: obtains the read index
    /// (locally on the leader, from the leader otherwise) and waits until
    /// this node has applied up to it.
    pub async fn read_barrier(&self) -> Result<(), CaddyError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let mut changes = self.metrics_changes();
        loop {
            let asked = self.leader().map(|(id, _)| id);
            match self.batched_read_index().await {
                Ok(index) => {
                    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                    return self.wait_applied(index, remaining.max(Duration::from_secs(1))).await;
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                // A new leader is known: ask it at once.
                Err(_) if self.leader().is_some_and(|(id, _)| Some(id) != asked) => {}
                Err(_) => {
                    self.wait_leader_change(&mut changes, RETRY_PAUSE).await;
                }
            }
        }
    }

    /// One read index, shared by every read that arrived before it was
    /// requested: reads that come in while a round is in flight wait for
    /// the next round, which starts after they arrived, so each read still
    /// gets an index obtained after it began (linearizable), while the
    /// leader sees at most one read-index request per node at a time.
    async fn batched_read_index(&self) -> Result<u64, CaddyError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start_round = {
            let mut batch = self.inner.reads.lock().unwrap_or_else(|p| p.into_inner());
            batch.waiting.push(tx);
            !std::mem::replace(&mut batch.in_flight, true)
        };
        if start_round {
            let node = self.clone();
            tokio::spawn(async move { node.drive_read_rounds().await });
        }
        rx.await.unwrap_or_else(|_| Err(CaddyError::unavailable("read index round abandoned; retry")))
    }

    async fn drive_read_rounds(&self) {
        loop {
            let waiting = {
                let mut batch = self.inner.reads.lock().unwrap_or_else(|p| p.into_inner());
                if batch.waiting.is_empty() {
                    batch.in_flight = false;
                    return;
                }
                std::mem::take(&mut batch.waiting)
            };
            metrics::histogram!("caddy_read_index_batch").record(waiting.len() as f64);
            let result = match self.leader() {
                Some((id, _)) if id == self.inner.id => self.leader_read_index().await,
                Some((leader, node)) => tokio::select! {
                    index = self.remote_read_index(&node.raft_addr) => index,
                    () = self.leader_moved_from(leader) => Err(CaddyError::unavailable(format!(
                        "node {leader} stopped being the leader before it gave a read index"
                    ))),
                },
                None => Err(CaddyError::unavailable("no leader elected; linearizable reads are unavailable")),
            };
            for waiter in waiting {
                let _ = waiter.send(result.clone());
            }
        }
    }

    async fn remote_read_index(&self, addr: &str) -> Result<u64, CaddyError> {
        let peers = self.inner.peers.as_ref().ok_or_else(|| CaddyError::unavailable("no peer network"))?;
        let mut client = peers.client(addr).map_err(|s| CaddyError::unavailable(s.message().to_string()))?;
        let resp = tokio::time::timeout(LEADER_WAIT, client.read_index(pb::Empty {}))
            .await
            .map_err(|_| CaddyError::unavailable("leader did not answer the read index in time"))?
            .map_err(|s| CaddyError::unavailable(format!("read index from leader: {}", s.message())))?;
        codec::from_bytes(&resp.into_inner().log_id).map_err(|e| CaddyError::internal(e.to_string()))
    }

    /// Waits until the local state machine has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), CaddyError> {
        let mut rx = self.inner.sm.subscribe_applied();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|a| a.applied_index >= index)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(CaddyError::unavailable("state machine closed")),
            Err(_) => Err(CaddyError::unavailable(format!("this node has not applied index {index} yet; retry"))),
        }
    }

    /// Runs a membership operation on the leader (forwarding if needed).
    /// `PermissionDenied` when the leader refuses this node.
    pub async fn membership(&self, op: MembershipOp) -> Result<MembershipView, CaddyError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let mut changes = self.metrics_changes();
        loop {
            match self.leader() {
                Some((id, _)) if id == self.inner.id => return self.membership_as_leader(op).await,
                Some((_, node)) => {
                    let peers = self.inner.peers.as_ref().ok_or_else(|| CaddyError::unavailable("no peer network"))?;
                    let data = codec::to_bytes(&op).map_err(|e| CaddyError::internal(e.to_string()))?;
                    let mut client =
                        peers.client(&node.raft_addr).map_err(|s| CaddyError::unavailable(s.message().to_string()))?;
                    let resp = tokio::time::timeout(Duration::from_secs(120), client.membership(pb::Blob { data }))
                        .await
                        .map_err(|_| CaddyError::unavailable("leader did not finish the membership change in time"))?
                        .map_err(|s| {
                            if s.code() == tonic::Code::PermissionDenied {
                                // The caller decides: see `refused_by_leader`.
                                return CaddyError::new(ErrorCode::PermissionDenied, s.message());
                            }
                            CaddyError::unavailable(format!("leader unreachable: {}", s.message()))
                        })?;
                    return codec::from_bytes::<Result<MembershipView, CaddyError>>(&resp.into_inner().data)
                        .map_err(|e| CaddyError::internal(e.to_string()))?;
                }
                None if tokio::time::Instant::now() >= deadline => {
                    return Err(CaddyError::unavailable("no leader elected; membership cannot change now"));
                }
                None => {
                    self.wait_leader_change(&mut changes, RETRY_PAUSE).await;
                }
            }
        }
    }

    fn view(&self) -> MembershipView {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        MembershipView {
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            status: None,
        }
    }

    /// Executes a membership operation on this node, which must be the leader.
    pub async fn membership_as_leader(&self, op: MembershipOp) -> Result<MembershipView, CaddyError> {
        let raft = &self.inner.raft;
        let map_err = |e: OpenRaftError<TypeConfig, ClientWriteError<TypeConfig>>| match e {
            OpenRaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                CaddyError::unavailable("leadership moved during the membership change; retry")
            }
            OpenRaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                CaddyError::precondition(e.to_string())
            }
            OpenRaftError::APIError(e) => CaddyError::unavailable(e.to_string()),
            OpenRaftError::Fatal(e) => CaddyError::unavailable(e.to_string()),
        };
        let _serialized = match op {
            MembershipOp::Status => None,
            _ => Some(self.inner.membership_lock.lock().await),
        };
        if !matches!(op, MembershipOp::Status) {
            // openraft refuses a change while the previous one (including the
            // bootstrap configuration) is uncommitted; wait it out briefly.
            self.wait_metrics(LEADER_WAIT, |m| m.committed_membership_config.log_id() == m.membership_config.log_id())
                .await;
        }
        match op {
            MembershipOp::Add { id, node, learner_only } => {
                let view = self.view();
                let known = view.voters.contains(&id) || view.learners.contains(&id);
                if view.voters.contains(&id) {
                    return Ok(view);
                }
                if !known {
                    raft.add_learner(id, node, true).await.map_err(map_err)?;
                }
                if !learner_only {
                    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await
                        .map_err(map_err)?;
                }
                Ok(self.view())
            }
            MembershipOp::Remove { id } => {
                let view = self.view();
                if view.voters.contains(&id) {
                    if view.voters.len() == 1 {
                        return Err(CaddyError::precondition("cannot remove the last voter"));
                    }
                    raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(map_err)?;
                } else if view.learners.contains(&id) {
                    raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map_err(map_err)?;
                } else {
                    return Err(CaddyError::new(ErrorCode::NotFound, format!("node {id} is not a member")));
                }
                Ok(self.view())
            }
            MembershipOp::TransferLeader { to } => {
                let view = self.view();
                if !view.voters.contains(&to) {
                    return Err(CaddyError::new(ErrorCode::NotFound, format!("node {to} is not a voter")));
                }
                if to != self.inner.id {
                    raft.trigger().transfer_leader(to).await.map_err(|e| CaddyError::unavailable(e.to_string()))?;
                    let moved = self.wait_metrics(LEADER_WAIT, |m| m.current_leader == Some(to)).await;
                    if moved.is_none() {
                        return Err(CaddyError::unavailable(format!("node {to} did not take over leadership in time")));
                    }
                }
                Ok(self.view())
            }
            MembershipOp::Status => Ok(MembershipView { status: Some(self.status()), ..self.view() }),
        }
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> NodeStatus {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberInfo {
                id: *id,
                node: node.clone(),
                voter: voters.contains(id),
                matched: m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index),
                last_ack_ms: m
                    .heartbeat
                    .as_ref()
                    .and_then(|h| h.get(id).cloned().flatten())
                    .map(|t| t.elapsed().as_millis() as u64),
            })
            .collect();
        let state = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let (_, purged) = self.inner.log.bounds().unwrap_or((0, 0));
        NodeStatus {
            id: self.inner.id,
            term: m.current_term,
            leader: m.current_leader,
            state: state.to_string(),
            commit_index: m.local_committed.as_ref().map(|l| l.index).unwrap_or(0),
            applied_index: m.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
            purged_index: purged,
            snapshot_index: m.snapshot.as_ref().map(|l| l.index),
            revision: self.inner.sm.revision(),
            members,
        }
    }

    /// Builds a snapshot now and waits for it; returns its (index, term).
    pub async fn snapshot_now(&self) -> Result<(u64, u64), CaddyError> {
        let target = self.inner.raft.metrics().borrow_watched().last_applied.as_ref().map(|l| l.index).unwrap_or(0);
        self.inner.raft.trigger().snapshot().await.map_err(|e| CaddyError::unavailable(e.to_string()))?;
        let done = self
            .wait_metrics(Duration::from_secs(60), |m| m.snapshot.as_ref().map(|l| l.index).unwrap_or(0) >= target)
            .await;
        match done {
            Some(m) => {
                let snap = m.snapshot;
                Ok(snap.map(|l| (l.index, l.leader_id.term)).unwrap_or((0, 0)))
            }
            _ => Err(CaddyError::unavailable("snapshot did not complete in time")),
        }
    }

    /// Waits until the metrics satisfy `pred`, up to `timeout`.
    pub async fn wait_metrics(
        &self,
        timeout: Duration,
        pred: impl Fn(&openraft::RaftMetrics<TypeConfig>) -> bool,
    ) -> Option<openraft::RaftMetrics<TypeConfig>> {
        let mut rx = self.metrics_changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let current = rx.borrow_watched().clone();
            if pred(&current) {
                return Some(current);
            }
            if !matches!(tokio::time::timeout_at(deadline, rx.changed()).await, Ok(Ok(()))) {
                return None;
            }
        }
    }

    /// Stops Raft (flushes and ends its tasks).
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
