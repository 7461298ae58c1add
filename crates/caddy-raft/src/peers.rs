//! Cached gRPC channels to peers, over mutual TLS.
//!
//! TLS is done here (rustls through a custom connector) rather than by
//! tonic, for two reasons: the node's certificate is resolved per handshake
//! from its [`LiveIdentity`], so a rotated certificate is used without
//! restarting anything, and a server's certificate is checked beyond the CA
//! signature: it must name a current member at an accepted generation
//! ([`PeerClients::set_server_check`]). Calls to a node that is not a member
//! yet (asking a newcomer who it is, a joiner asking to be added) go through
//! [`PeerClients::newcomer_client`], which only requires a node certificate
//! from the cluster CA.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use caddy_wire::tls::{LiveIdentity, NodeCertName, ServerCheck, TlsError};
use hyper_util::rt::TokioIo;
use tonic::codegen::http::Uri;
use tonic::transport::Channel;

use crate::pb::peer_client::PeerClient;

/// Opens TCP + TLS to a peer for tonic.
#[derive(Clone)]
struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_string())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "peer address without host"))?;
            let tcp = tokio::net::TcpStream::connect(&authority).await?;
            // Nagle would hold small Raft messages back by up to 40 ms.
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(caddy_wire::CLUSTER_SERVER_NAME)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Channels to peers by address; a channel reconnects by itself.
pub struct PeerClients {
    /// Servers must pass the check.
    member: TlsConnector,
    /// Servers need only a node certificate from the cluster CA.
    newcomer: TlsConnector,
    check: Arc<OnceLock<ServerCheck>>,
    channels: Mutex<HashMap<(String, bool), Channel>>,
    /// Bound on one RPC when the caller gives none.
    pub rpc_timeout: Duration,
}

impl PeerClients {
    /// Clients that trust only the CA `ca_pem` and present `identity` (none:
    /// a node that is enrolling).
    pub fn new(ca_pem: &str, identity: Option<Arc<LiveIdentity>>, rpc_timeout: Duration) -> Result<Self, TlsError> {
        let check: Arc<OnceLock<ServerCheck>> = Arc::new(OnceLock::new());
        let slot = check.clone();
        let member_check: ServerCheck = Arc::new(move |name: &NodeCertName| match slot.get() {
            Some(check) => check(name),
            None => Ok(()),
        });
        let member = caddy_wire::tls::peer_client_config(ca_pem, identity.clone(), member_check)?;
        let newcomer = caddy_wire::tls::peer_client_config(ca_pem, identity, Arc::new(|_: &NodeCertName| Ok(())))?;
        Ok(Self {
            member: TlsConnector { config: Arc::new(member) },
            newcomer: TlsConnector { config: Arc::new(newcomer) },
            check,
            channels: Mutex::new(HashMap::new()),
            rpc_timeout,
        })
    }

    /// From now on, a server reached through [`PeerClients::client`] must
    /// pass `check` (given once; later calls are ignored).
    pub fn set_server_check(&self, check: ServerCheck) {
        let _ = self.check.set(check);
    }

    /// A client for the member listening for peers at `addr` (`host:port`).
    pub fn client(&self, addr: &str) -> Result<PeerClient<Channel>, tonic::Status> {
        self.channel(addr, true)
    }

    /// A client for a node at `addr` that need not be a member yet.
    pub fn newcomer_client(&self, addr: &str) -> Result<PeerClient<Channel>, tonic::Status> {
        self.channel(addr, false)
    }

    fn channel(&self, addr: &str, member: bool) -> Result<PeerClient<Channel>, tonic::Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let key = (addr.to_string(), member);
        if let Some(ch) = channels.get(&key) {
            return Ok(PeerClient::new(ch.clone()).max_decoding_message_size(MAX_PEER_MESSAGE));
        }
        // The scheme is http because TLS is the connector's job, not tonic's.
        let endpoint = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| tonic::Status::invalid_argument(format!("bad peer address {addr}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let connector = if member { self.member.clone() } else { self.newcomer.clone() };
        let channel = endpoint.connect_with_connector_lazy(connector);
        channels.insert(key, channel.clone());
        Ok(PeerClient::new(channel).max_decoding_message_size(MAX_PEER_MESSAGE))
    }

    /// Forgets the channels to `addr` (after a failure), so the next call dials anew.
    pub fn forget(&self, addr: &str) {
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).retain(|(a, _), _| a != addr);
    }

    /// Forgets every channel: after this node's certificate changed, its
    /// open connections still present the old one.
    pub fn reset(&self) {
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Largest peer message (an append batch or a snapshot chunk).
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;
