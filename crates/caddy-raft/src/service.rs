//! The peer gRPC service: Raft RPCs, forwarded writes and reads, membership,
//! enrollment, certificate signing and rotation.
//!
//! Every call first judges its caller by the node name in its client
//! certificate ([`crate::policy`]); a refused caller gets
//! `permission_denied` (no certificate: `unauthenticated`) and nothing else.

use std::io::Write;

use caddy_core::{CaddyError, codec};
use caddy_store::{CaddyNode, Snapshot, SnapshotMeta, Vote, verify_snapshot_file};
use futures::future::BoxFuture;
use tonic::{Request, Response, Status, Streaming};

use crate::certs::to_status;
use crate::node::{ForwardRequest, MembershipOp, RaftNode};
use crate::pb::{self, peer_server::Peer};
use crate::policy::{self, PeerRule};

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

/// The node name in the caller's client certificate (which tonic's TLS
/// layer verified against the cluster CA).
fn caller<T>(req: &Request<T>) -> Result<caddy_wire::tls::NodeCertName, Status> {
    let certs = req.peer_certs().ok_or_else(|| Status::unauthenticated("peer calls need a cluster certificate"))?;
    let leaf = certs.first().ok_or_else(|| Status::unauthenticated("peer calls need a cluster certificate"))?;
    caddy_wire::tls::node_cert_name(leaf.as_ref()).map_err(|e| Status::permission_denied(e.to_string()))
}

impl PeerService {
    /// Lets the call through if its caller passes `rule`; returns the caller.
    fn authorize<T>(&self, req: &Request<T>, rule: PeerRule) -> Result<caddy_wire::tls::NodeCertName, Status> {
        let name = caller(req)?;
        policy::authorize(&self.node.peer_view(), name, rule).map_err(|refusal| {
            metrics::counter!("caddy_peer_refused_total").increment(1);
            tracing::debug!(%refusal, "refused a peer call");
            Status::permission_denied(refusal.to_string())
        })?;
        Ok(name)
    }

    fn member<T>(&self, req: &Request<T>) -> Result<caddy_wire::tls::NodeCertName, Status> {
        self.authorize(req, PeerRule::Member)
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
        self.authorize(&req, PeerRule::Raft)?;
        let rpc = decode(req.get_ref())?;
        let resp = self.node.raft().append_entries(rpc).await.map_err(fatal)?;
        encode(&resp)
    }

    async fn vote(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        self.authorize(&req, PeerRule::Raft)?;
        let rpc = decode(req.get_ref())?;
        encode(&self.node.vote(rpc).await.map_err(fatal)?)
    }

    async fn pre_vote(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        self.authorize(&req, PeerRule::Raft)?;
        let rpc = decode(req.get_ref())?;
        encode(&self.node.pre_vote(rpc).await.map_err(fatal)?)
    }

    async fn install_snapshot(&self, req: Request<Streaming<pb::SnapshotChunk>>) -> Result<Response<pb::Blob>, Status> {
        self.authorize(&req, PeerRule::Raft)?;
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
        self.member(&req)?;
        let rpc = decode(req.get_ref())?;
        encode(&self.node.raft().handle_transfer_leader(rpc).await.map_err(fatal)?)
    }

    async fn forward(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        let name = self.member(&req)?;
        let fwd: ForwardRequest = decode(req.get_ref())?;
        if let Err(why) = policy::forwardable(&fwd.command, name.id) {
            metrics::counter!("caddy_peer_refused_total").increment(1);
            let refused: Result<caddy_core::ReplyBody, CaddyError> =
                Err(CaddyError::new(caddy_core::ErrorCode::PermissionDenied, why));
            return encode(&refused);
        }
        let result: Result<caddy_core::ReplyBody, CaddyError> = self.node.propose_as_leader(fwd).await;
        encode(&result)
    }

    async fn read_index(&self, req: Request<pb::Empty>) -> Result<Response<pb::ReadIndexResponse>, Status> {
        self.member(&req)?;
        let index = self.node.leader_read_index().await.map_err(|e| Status::unavailable(e.message))?;
        let log_id = codec::to_bytes(&index).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ReadIndexResponse { log_id }))
    }

    async fn membership(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        self.member(&req)?;
        let op: MembershipOp = decode(req.get_ref())?;
        let result = self.node.membership_as_leader(op).await;
        encode(&result)
    }

    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        // No certificate yet: the join token is the credential.
        let req = req.into_inner();
        let (cert_pem, generation) =
            self.node.enroll_joiner(&req.join_token, req.node_id, &req.csr_pem).await.map_err(to_status)?;
        let ca_cert_pem = self.node.tls().map(|t| t.ca_cert_pem.clone()).unwrap_or_default();
        Ok(Response::new(pb::EnrollResponse { ca_cert_pem, cert_pem, generation }))
    }

    async fn sign_node_cert(&self, req: Request<pb::SignRequest>) -> Result<Response<pb::SignResponse>, Status> {
        self.member(&req)?;
        let r = req.into_inner();
        let cert_pem = self.node.sign_registered(r.node_id, r.generation, &r.csr_pem).await.map_err(to_status)?;
        Ok(Response::new(pb::SignResponse { cert_pem }))
    }

    async fn rotate_cert(&self, req: Request<pb::Empty>) -> Result<Response<pb::RotateResponse>, Status> {
        self.member(&req)?;
        let generation = self.node.rotate_own_cert().await.map_err(to_status)?;
        Ok(Response::new(pb::RotateResponse { generation }))
    }

    async fn add_member(&self, req: Request<pb::AddMemberRequest>) -> Result<Response<pb::AddMemberResponse>, Status> {
        let rule = PeerRule::SelfJoin(req.get_ref().node_id);
        if self.authorize(&req, rule).is_err() {
            // The enrollment may be newer than what this node applied.
            self.node.read_barrier().await.map_err(|e| Status::unavailable(e.message))?;
            self.authorize(&req, rule)?;
        }
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
        self.member(&req)?;
        self.node.deliver_gossip(req.into_inner().data);
        Ok(Response::new(pb::Empty {}))
    }

    async fn put_chunk(&self, req: Request<pb::ChunkData>) -> Result<Response<pb::Empty>, Status> {
        self.member(&req)?;
        let c = req.into_inner();
        self.chunk_service()?.put(c.tenant, c.hash, c.data).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_chunk(&self, req: Request<pb::ChunkKey>) -> Result<Response<pb::ChunkData>, Status> {
        self.member(&req)?;
        let k = req.into_inner();
        let data = self.chunk_service()?.get(k.tenant.clone(), k.hash.clone()).await?;
        Ok(Response::new(pb::ChunkData { tenant: k.tenant, hash: k.hash, data }))
    }

    async fn has_chunks(&self, req: Request<pb::ChunkQuery>) -> Result<Response<pb::ChunkPresence>, Status> {
        self.member(&req)?;
        let q = req.into_inner();
        let present = self.chunk_service()?.has(q.tenant, q.hashes, q.touch).await?;
        Ok(Response::new(pb::ChunkPresence { present }))
    }

    async fn identify(&self, req: Request<pb::Empty>) -> Result<Response<pb::AddMemberRequest>, Status> {
        // A member asks a node that is not one (yet) who it is.
        self.authorize(&req, PeerRule::Certified)?;
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
        self.member(&req)?;
        Ok(Response::new(self.describer.as_ref().map(|d| d()).unwrap_or_default()))
    }
}
