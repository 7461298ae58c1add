//! openraft's network over the peer gRPC service.
//!
//! Raft messages travel as postcard-encoded openraft types inside `Blob`s;
//! snapshots stream as 1 MiB chunks read from the snapshot file. A peer that
//! cannot be connected to maps to `Unreachable` (openraft backs off), any
//! other failure to `Network`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use caddy_core::NodeId;
use caddy_core::codec;
use caddy_store::{CaddyNode, Snapshot, SnapshotData, TypeConfig};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::type_config::alias::VoteOf;
use openraft::{AnyError, OptionalSend};
use tokio::io::AsyncReadExt;

use crate::pb;
use crate::peers::PeerClients;

/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// Creates one [`GrpcConnection`] per target.
#[derive(Clone)]
pub struct GrpcNetworkFactory {
    peers: Arc<PeerClients>,
}

impl GrpcNetworkFactory {
    /// A factory sharing `peers`' channels.
    pub fn new(peers: Arc<PeerClients>) -> Self {
        Self { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &CaddyNode) -> GrpcConnection {
        GrpcConnection { target, addr: node.raft_addr.clone(), peers: self.peers.clone() }
    }
}

/// Raft RPCs to one peer.
pub struct GrpcConnection {
    target: NodeId,
    addr: String,
    peers: Arc<PeerClients>,
}

type RpcErr = RPCError<TypeConfig>;

fn status_to_rpc(target: NodeId, status: &tonic::Status) -> RpcErr {
    let _ = target;
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(status))
        }
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

fn codec_err(e: &caddy_core::CodecError) -> RpcErr {
    RPCError::Network(NetworkError::new(e))
}

impl GrpcConnection {
    async fn call_blob<Req, Resp, F, Fut>(&mut self, req: &Req, option: &RPCOption, call: F) -> Result<Resp, RpcErr>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(crate::pb::peer_client::PeerClient<tonic::transport::Channel>, pb::Blob) -> Fut,
        Fut: Future<Output = Result<tonic::Response<pb::Blob>, tonic::Status>>,
    {
        let data = codec::to_bytes(req).map_err(|e| codec_err(&e))?;
        let client = self.peers.client(&self.addr).map_err(|s| status_to_rpc(self.target, &s))?;
        // openraft's TTL for heartbeats equals the heartbeat period; a busy
        // peer (fsync under load) can take longer than that without being
        // gone, and calling it unreachable only adds backoff. Elections do
        // not depend on this timeout, so a floor costs no failover time.
        let ttl = option.hard_ttl().max(Duration::from_millis(500));
        let result = tokio::time::timeout(ttl, call(client, pb::Blob { data })).await;
        match result {
            Err(_) => Err(RPCError::Unreachable(Unreachable::new(&AnyError::error(format!(
                "no answer from node {} within {ttl:?}",
                self.target
            ))))),
            Ok(Err(status)) => {
                if status.code() == tonic::Code::Unavailable {
                    self.peers.forget(&self.addr);
                }
                Err(status_to_rpc(self.target, &status))
            }
            Ok(Ok(resp)) => codec::from_bytes(&resp.into_inner().data).map_err(|e| codec_err(&e)),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for GrpcConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcErr> {
        let n = rpc.entries.len();
        let started = std::time::Instant::now();
        let result = self.call_blob(&rpc, &option, |mut c, b| async move { c.append_entries(b).await }).await;
        if n > 0 {
            metrics::histogram!("caddy_peer_append_seconds").record(started.elapsed().as_secs_f64());
        }
        result
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcErr> {
        self.call_blob(&rpc, &option, |mut c, b| async move { c.vote(b).await }).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcErr> {
        self.call_blob(&rpc, &option, |mut c, b| async move { c.pre_vote(b).await }).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = codec::to_bytes(&(vote, snapshot.meta.clone()))
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let mut client =
            self.peers.client(&self.addr).map_err(|s| StreamingError::Unreachable(Unreachable::new(&s)))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::SnapshotChunk>(4);
        let mut file = tokio::fs::File::from_std(snapshot.snapshot);
        let reader = tokio::spawn(async move {
            if tx.send(pb::SnapshotChunk { header, data: Vec::new() }).await.is_err() {
                return Ok(());
            }
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                let mut filled = 0;
                while filled < buf.len() {
                    let n = file.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                buf.truncate(filled);
                if tx.send(pb::SnapshotChunk { header: Vec::new(), data: buf }).await.is_err() {
                    return Ok(());
                }
            }
        });
        let call = client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let ttl = option.hard_ttl().max(Duration::from_secs(60));
        let outcome = tokio::select! {
            closed = cancel => {
                reader.abort();
                return Err(StreamingError::Closed(closed));
            }
            r = tokio::time::timeout(ttl, call) => r,
        };
        reader.abort();
        let response = match outcome {
            Err(_) => {
                return Err(StreamingError::Unreachable(Unreachable::new(&AnyError::error(
                    "snapshot transfer timed out",
                ))));
            }
            Ok(Err(status)) => return Err(StreamingError::Network(NetworkError::new(&status))),
            Ok(Ok(r)) => r.into_inner(),
        };
        codec::from_bytes(&response.data).map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RpcErr> {
        self.call_blob(&req, &option, |mut c, b| async move { c.transfer_leader(b).await }).await
    }

    fn backoff(&self) -> Option<Backoff> {
        // Retry an unreachable peer quickly at first (a restarted node should
        // rejoin within a heartbeat or two), then every 500 ms.
        let delays = [50u64, 100, 200, 400].into_iter().chain(std::iter::repeat(500)).map(Duration::from_millis);
        Some(Backoff::new(delays))
    }
}
