//! The peer gRPC service: Raft RPCs, forwarded writes and reads, membership
//! and enrollment.

use std::io::Write;

use caddy_core::{CaddyError, codec};
use caddy_store::{CaddyNode, Snapshot, SnapshotMeta, Vote, verify_snapshot_file};
use futures::future::BoxFuture;
use tonic::{Request, Response, Status, Streaming};

use crate::node::{ForwardRequest, MembershipOp, RaftNode};
use crate::pb::{self, peer_server::Peer};
use crate::{enroll, now_ms};

/// Largest snapshot accepted from a leader.
const MAX_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// The node's chunk store as peers reach it (implemented by the server,
/// which owns the blob store). Errors are gRPC statuses for the caller.
pub trait ChunkService: Send + Sync + 'static {
    /// Stores a chunk (hash-checked, fsynced) before returning.
    fn put(&self, tenant: String, hash: Vec<u8>, data: Vec<u8>) -> BoxFuture<'_, Result<(), Status>>;
    /// A chunk's bytes (hash-checked); `not_found` if this node lacks it.
    fn get(&self, tenant: String, hash: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>>;
    /// Which of `hashes` this node holds; `touch` marks held ones recently used.
    fn has(&self, tenant: String, hashes: Vec<Vec<u8>>, touch: bool) -> BoxFuture<'_, Result<Vec<bool>, Status>>;
}

/// What a node says about its local services when a peer asks (implemented
/// by the server, which owns them).
pub type Describer = std::sync::Arc<dyn Fn() -> pb::NodeDescription + Send + Sync>;

/// Serves one node's peer endpoint.
pub struct PeerService {
    node: RaftNode,
    snapshot_dir: std::path::PathBuf,
    chunks: Option<std::sync::Arc<dyn ChunkService>>,
    describer: Option<Describer>,
}

impl PeerService {
    /// A service for `node`; incoming snapshots are staged in `snapshot_dir`.
    pub fn new(node: RaftNode, snapshot_dir: std::path::PathBuf) -> Self {
        Self { node, snapshot_dir, chunks: None, describer: None }
    }

    /// Answers `Describe` with `describer` (without it: an empty description).
    pub fn with_describer(mut self, describer: Describer) -> Self {
        self.describer = Some(describer);
        self
    }

    /// Serves chunk calls from `chunks` (without it they are `unimplemented`).
    pub fn with_chunks(mut self, chunks: std::sync::Arc<dyn ChunkService>) -> Self {
        self.chunks = Some(chunks);
        self
    }

    fn chunk_service(&self) -> Result<&dyn ChunkService, Status> {
        self.chunks.as_deref().ok_or_else(|| Status::unimplemented("this node serves no blob store"))
    }

    /// The tonic server wrapper with message limits set.
    pub fn into_server(self) -> pb::peer_server::PeerServer<Self> {
        pb::peer_server::PeerServer::new(self)
            .max_decoding_message_size(crate::peers::MAX_PEER_MESSAGE)
            .max_encoding_message_size(crate::peers::MAX_PEER_MESSAGE)
    }
}

fn require_peer<T>(req: &Request<T>) -> Result<(), Status> {
    // tonic verified any presented chain against the cluster CA; what is left
    // to check is that one was presented at all.
    match req.peer_certs() {
        Some(certs) if !certs.is_empty() => Ok(()),
        _ => Err(Status::unauthenticated("peer calls need a cluster certificate")),
    }
}

fn decode<T: serde::de::DeserializeOwned>(blob: &pb::Blob) -> Result<T, Status> {
    codec::from_bytes(&blob.data).map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Response<pb::Blob>, Status> {
    codec::to_bytes(value).map(|data| Response::new(pb::Blob { data })).map_err(|e| Status::internal(e.to_string()))
}

fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft stopped: {e}"))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        require_peer(&req)?;
        let rpc = decode(req.get_ref())?;
        let resp = self.node.raft().append_entries(rpc).await.map_err(fatal)?;
        encode(&resp)
    }

    async fn vote(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        require_peer(&req)?;
        let rpc = decode(req.get_ref())?;
        encode(&self.node.vote(rpc).await.map_err(fatal)?)
    }

    async fn pre_vote(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        require_peer(&req)?;
        let rpc = decode(req.get_ref())?;
        encode(&self.node.pre_vote(rpc).await.map_err(fatal)?)
    }

    async fn install_snapshot(&self, req: Request<Streaming<pb::SnapshotChunk>>) -> Result<Response<pb::Blob>, Status> {
        require_peer(&req)?;
        let mut stream = req.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote, SnapshotMeta) =
            codec::from_bytes(&first.header).map_err(|e| Status::invalid_argument(format!("snapshot header: {e}")))?;
        std::fs::create_dir_all(&self.snapshot_dir).map_err(|e| Status::internal(e.to_string()))?;
        let staging = self.snapshot_dir.join(format!("incoming-{:016x}.tmp", rand::random::<u64>()));
        let result = async {
            let mut file = std::fs::File::create(&staging).map_err(|e| Status::internal(e.to_string()))?;
            let mut received = 0u64;
            while let Some(chunk) = stream.message().await? {
                received += chunk.data.len() as u64;
                if received > MAX_SNAPSHOT_BYTES {
                    return Err(Status::resource_exhausted("snapshot exceeds the size limit"));
                }
                file.write_all(&chunk.data).map_err(|e| Status::internal(e.to_string()))?;
            }
            file.sync_all().map_err(|e| Status::internal(e.to_string()))?;
            let mut file = std::fs::File::open(&staging).map_err(|e| Status::internal(e.to_string()))?;
            // Reject a damaged transfer here: installing it would stop the node.
            verify_snapshot_file(&mut file)
                .map_err(|e| Status::data_loss(format!("received snapshot invalid: {e}")))?;
            let resp =
                self.node.raft().install_full_snapshot(vote, Snapshot { meta, snapshot: file }).await.map_err(fatal)?;
            encode(&resp)
        }
        .await;
        let _ = std::fs::remove_file(&staging);
        result
    }

    async fn transfer_leader(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        require_peer(&req)?;
        let rpc = decode(req.get_ref())?;
        encode(&self.node.raft().handle_transfer_leader(rpc).await.map_err(fatal)?)
    }

    async fn forward(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        require_peer(&req)?;
        let fwd: ForwardRequest = decode(req.get_ref())?;
        let result: Result<caddy_core::ReplyBody, CaddyError> = self.node.propose_as_leader(fwd).await;
        encode(&result)
    }

    async fn read_index(&self, req: Request<pb::Empty>) -> Result<Response<pb::ReadIndexResponse>, Status> {
        require_peer(&req)?;
        let index = self.node.leader_read_index().await.map_err(|e| Status::unavailable(e.message))?;
        let log_id = codec::to_bytes(&index).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ReadIndexResponse { log_id }))
    }

    async fn membership(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        require_peer(&req)?;
        let op: MembershipOp = decode(req.get_ref())?;
        let result = self.node.membership_as_leader(op).await;
        encode(&result)
    }

    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let req = req.into_inner();
        let (fingerprint, secret) =
            enroll::parse_token(&req.join_token).map_err(|e| Status::invalid_argument(e.message))?;
        let tls = self.node.tls().ok_or_else(|| Status::failed_precondition("this node has no TLS material"))?;
        let own = caddy_wire::tls::ca_fingerprint(&tls.ca_cert_pem).map_err(|e| Status::internal(e.to_string()))?;
        if own != fingerprint {
            return Err(Status::permission_denied("join token belongs to another cluster"));
        }
        // Fresh view of the token table, then a local check.
        self.node.read_barrier().await.map_err(|e| Status::unavailable(e.message))?;
        let valid = self
            .node
            .state_machine()
            .join_token_valid(&enroll::secret_hash(&secret), now_ms())
            .map_err(|e| Status::internal(e.to_string()))?;
        if !valid {
            return Err(Status::permission_denied(
                "join token unknown or expired; create one with `caddyctl cluster join-token`",
            ));
        }
        let key = tls.ca_key_pem.clone().ok_or_else(|| {
            Status::failed_precondition("this member does not hold the CA key; join through another member")
        })?;
        tracing::info!(node_id = req.node_id, "enrolled a joining node");
        Ok(Response::new(pb::EnrollResponse { ca_cert_pem: tls.ca_cert_pem.clone(), ca_key_pem: key }))
    }

    async fn add_member(&self, req: Request<pb::AddMemberRequest>) -> Result<Response<pb::AddMemberResponse>, Status> {
        require_peer(&req)?;
        let r = req.into_inner();
        if r.node_id == 0 {
            return Err(Status::invalid_argument("node id 0 is reserved"));
        }
        let node = CaddyNode { raft_addr: r.raft_addr, client_addr: r.client_addr, admin_addr: r.admin_addr };
        let view = self
            .node
            .membership(MembershipOp::Add { id: r.node_id, node, learner_only: r.learner_only })
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(pb::AddMemberResponse { voters: view.voters, learners: view.learners }))
    }

    async fn gossip(&self, req: Request<pb::Blob>) -> Result<Response<pb::Empty>, Status> {
        require_peer(&req)?;
        self.node.deliver_gossip(req.into_inner().data);
        Ok(Response::new(pb::Empty {}))
    }

    async fn put_chunk(&self, req: Request<pb::ChunkData>) -> Result<Response<pb::Empty>, Status> {
        require_peer(&req)?;
        let c = req.into_inner();
        self.chunk_service()?.put(c.tenant, c.hash, c.data).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_chunk(&self, req: Request<pb::ChunkKey>) -> Result<Response<pb::ChunkData>, Status> {
        require_peer(&req)?;
        let k = req.into_inner();
        let data = self.chunk_service()?.get(k.tenant.clone(), k.hash.clone()).await?;
        Ok(Response::new(pb::ChunkData { tenant: k.tenant, hash: k.hash, data }))
    }

    async fn has_chunks(&self, req: Request<pb::ChunkQuery>) -> Result<Response<pb::ChunkPresence>, Status> {
        require_peer(&req)?;
        let q = req.into_inner();
        let present = self.chunk_service()?.has(q.tenant, q.hashes, q.touch).await?;
        Ok(Response::new(pb::ChunkPresence { present }))
    }

    async fn identify(&self, req: Request<pb::Empty>) -> Result<Response<pb::AddMemberRequest>, Status> {
        require_peer(&req)?;
        let node = self.node.self_node();
        Ok(Response::new(pb::AddMemberRequest {
            node_id: self.node.id(),
            raft_addr: node.raft_addr.clone(),
            client_addr: node.client_addr.clone(),
            admin_addr: node.admin_addr.clone(),
            learner_only: false,
        }))
    }

    async fn describe(&self, req: Request<pb::Empty>) -> Result<Response<pb::NodeDescription>, Status> {
        require_peer(&req)?;
        Ok(Response::new(self.describer.as_ref().map(|d| d()).unwrap_or_default()))
    }
}
