//! The client listener: QUIC (quinn), TLS 1.3, ALPN `caddy/1`, one request
//! per bidirectional stream.
//!
//! Bounds: connections (refused past the limit), concurrent streams per
//! connection (QUIC flow control), frame size (checked before allocating).
//! A malformed or oversized frame gets a typed error on that stream only;
//! the connection and every other client keep being served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use caddy_core::CaddyError;
use caddy_raft::node::NodeTls;
use caddy_wire::{FrameError, pb, read_frame, write_frame};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::service::{Service, error_response};

/// Binds the QUIC endpoint.
pub fn bind(addr: SocketAddr, tls: &NodeTls, service: &Service) -> anyhow::Result<quinn::Endpoint> {
    let crypto = caddy_wire::tls::server_config_live(tls.identity.clone(), &[caddy_wire::ALPN])?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto).context("QUIC TLS configuration")?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(service.limits().max_streams_per_connection.into());
    transport.max_concurrent_uni_streams(0u32.into());
    transport.max_idle_timeout(Some(Duration::from_secs(30).try_into().context("idle timeout")?));
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    server.transport_config(Arc::new(transport));
    quinn::Endpoint::server(server, addr).with_context(|| format!("binding the client listener on {addr}"))
}

/// Serves connections until `shutdown` flips, then stops accepting, lets
/// in-flight requests finish (up to `drain`), and closes the endpoint.
pub async fn serve(
    endpoint: quinn::Endpoint,
    service: Arc<Service>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let connections = Arc::new(Semaphore::new(service.limits().max_connections));
    let mut tasks = JoinSet::new();
    let conn_shutdown = shutdown.clone();
    loop {
        tokio::select! {
            _ = crate::run::stopped(&mut shutdown) => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    metrics::counter!("caddy_quic_connections_refused_total").increment(1);
                    incoming.refuse();
                    continue;
                };
                let service = service.clone();
                let shutdown = conn_shutdown.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    if let Ok(conn) = incoming.await {
                        serve_connection(conn, service, shutdown).await;
                    }
                });
            }
        }
    }
    // Stop accepting; give in-flight requests time to finish.
    endpoint.set_server_config(None);
    let drained = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("client requests still running after the drain period; closing");
    }
    endpoint.close(0u32.into(), b"server shutting down");
    endpoint.wait_idle().await;
}

async fn serve_connection(conn: quinn::Connection, service: Arc<Service>, mut shutdown: watch::Receiver<bool>) {
    metrics::counter!("caddy_quic_connections_total").increment(1);
    metrics::gauge!("caddy_quic_connections_open").increment(1.0);
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            _ = crate::run::stopped(&mut shutdown) => break,
            accepted = conn.accept_bi() => {
                let Ok((send, recv)) = accepted else { break };
                let service = service.clone();
                streams.spawn(serve_stream(send, recv, service, conn.remote_address()));
            }
            // Reap finished streams as they end, so a long-lived connection
            // holds only its in-flight requests.
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    while streams.join_next().await.is_some() {}
    conn.close(0u32.into(), b"bye");
    metrics::gauge!("caddy_quic_connections_open").decrement(1.0);
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: Arc<Service>,
    peer: std::net::SocketAddr,
) {
    let limit = service.limits().max_frame_bytes;
    let request: pb::Request = match read_frame(&mut recv, limit).await {
        Ok(r) => r,
        Err(FrameError::Closed) => return,
        Err(e) => {
            let error = match &e {
                FrameError::TooLarge { .. } => CaddyError::exhausted(format!("request rejected: {e}")),
                _ => CaddyError::invalid(format!("request rejected: {e}")),
            };
            metrics::counter!("caddy_requests_total", "op" => "malformed", "status" => error.code.as_str())
                .increment(1);
            let _ = write_frame(&mut send, &error_response(&error)).await;
            let _ = send.finish();
            // Do not read the rest of an oversized request.
            let _ = recv.stop(0u32.into());
            return;
        }
    };
    service.handle(request, &mut send, &mut recv, Some(peer)).await;
    let _ = send.finish();
    let _ = send.stopped().await;
}
