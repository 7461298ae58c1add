//! Cached gRPC channels to peers, over mutual TLS.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::pb::peer_client::PeerClient;

/// Channels to peers by address; a channel reconnects by itself.
pub struct PeerClients {
    tls: ClientTlsConfig,
    channels: Mutex<HashMap<String, Channel>>,
    /// Bound on one RPC when the caller gives none.
    pub rpc_timeout: Duration,
}

impl PeerClients {
    /// Clients that present `identity` (PEM cert chain and key) and trust `ca_pem`.
    pub fn new(ca_pem: &str, identity: Option<(&str, &str)>, rpc_timeout: Duration) -> Self {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name(caddy_wire::CLUSTER_SERVER_NAME);
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Self { tls, channels: Mutex::new(HashMap::new()), rpc_timeout }
    }

    /// A client for the peer at `addr` (`host:port`).
    pub fn client(&self, addr: &str) -> Result<PeerClient<Channel>, tonic::Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(addr) {
            return Ok(PeerClient::new(ch.clone()).max_decoding_message_size(MAX_PEER_MESSAGE));
        }
        let endpoint = Channel::from_shared(format!("https://{addr}"))
            .map_err(|e| tonic::Status::invalid_argument(format!("bad peer address {addr}: {e}")))?
            .tls_config(self.tls.clone())
            .map_err(|e| tonic::Status::internal(format!("peer tls: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(PeerClient::new(channel).max_decoding_message_size(MAX_PEER_MESSAGE))
    }

    /// Forgets the channel to `addr` (after a failure), so the next call dials anew.
    pub fn forget(&self, addr: &str) {
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).remove(addr);
    }
}

/// Largest peer message (an append batch or a snapshot chunk).
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;
