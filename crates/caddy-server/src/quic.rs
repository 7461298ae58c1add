//! The client listener: QUIC (quinn), TLS 1.3, ALPN `caddy/1`, one request
//! per bidirectional stream.
//!
//! Bounds: connections (refused past the limit), connections per source
//! address (closed right after the handshake, with the reason), concurrent
//! streams per connection (QUIC flow control), frame size (checked before
//! allocating). A malformed or oversized frame gets a typed error on that
//! stream only; the connection and every other client keep being served.
//!
//! A connection's slot is taken before anything proves who the client is,
//! so it is held only briefly by a client that proves nothing: the handshake
//! and the first authenticated request (or login) must both happen within
//! the credential deadline. A connection with no request in flight for the
//! idle timeout is closed too (QUIC keep-alives, which every client stack
//! answers, would otherwise keep it forever); an open watch is a request in
//! flight. Both closes carry an application close code from
//! `caddy_wire::close` and a reason a person can read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use caddy_core::CaddyError;
use caddy_raft::node::NodeTls;
use caddy_wire::{FrameError, close, pb, read_frame, write_frame};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::edge::{Peer, Source, SourceLimit};
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
    let sources = SourceLimit::new(service.limits().max_connections_per_source);
    let mut tasks = JoinSet::new();
    let conn_shutdown = shutdown.clone();
    loop {
        tokio::select! {
            _ = crate::run::stopped(&mut shutdown) => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    metrics::counter!("caddy_quic_connections_refused_total", "reason" => "max_connections")
                        .increment(1);
                    incoming.refuse();
                    continue;
                };
                let service = service.clone();
                let shutdown = conn_shutdown.clone();
                let sources = sources.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    let deadline = Duration::from_millis(service.limits().credential_deadline_ms);
                    let started = Instant::now();
                    // Counted only once the handshake has shown the address
                    // is really the client's (a spoofed one cannot finish it).
                    let Ok(Ok(conn)) = tokio::time::timeout(deadline, incoming).await else { return };
                    let source = Source::of(conn.remote_address().ip());
                    let Some(_slot) = sources.acquire(source) else {
                        metrics::counter!("caddy_quic_connections_refused_total", "reason" => "per_source")
                            .increment(1);
                        let reason = format!(
                            "too many connections from {source} (at most {} per address); close some or retry later",
                            sources.max()
                        );
                        conn.close(close::TOO_MANY_CONNECTIONS.into(), reason.as_bytes());
                        return;
                    };
                    serve_connection(conn, service, shutdown, started + deadline).await;
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

/// Serves one connection's streams until the client goes, the node shuts
/// down, or the connection misses its `credential_deadline` or idles out.
async fn serve_connection(
    conn: quinn::Connection,
    service: Arc<Service>,
    mut shutdown: watch::Receiver<bool>,
    credential_deadline: Instant,
) {
    metrics::counter!("caddy_quic_connections_total").increment(1);
    metrics::gauge!("caddy_quic_connections_open").increment(1.0);
    let idle_timeout = Duration::from_millis(service.limits().idle_timeout_ms);
    let peer = Arc::new(Peer::new(Some(conn.remote_address())));
    let mut streams = JoinSet::new();
    let mut last_activity = Instant::now();
    let closing = loop {
        let authenticated = peer.is_authenticated();
        let now = Instant::now();
        // Past the deadline without credentials: serve nothing new; close
        // once the requests in flight (at most logins, each bounded by the
        // request timeout) have answered, unless one of them logged in.
        let overdue = !authenticated && now >= credential_deadline;
        if streams.is_empty() {
            if overdue {
                let secs = service.limits().credential_deadline_ms as f64 / 1000.0;
                let reason = format!("no authenticated request within {secs}s of connecting: send a credential");
                break Some(("credential_deadline", close::CREDENTIAL_DEADLINE, reason));
            }
            if authenticated && now >= last_activity + idle_timeout {
                let secs = idle_timeout.as_secs_f64();
                let reason = format!("idle for {secs}s: reconnect to send more requests");
                break Some(("idle", close::IDLE, reason));
            }
        }
        let next_check = if authenticated { last_activity + idle_timeout } else { credential_deadline };
        tokio::select! {
            _ = crate::run::stopped(&mut shutdown) => break None,
            accepted = conn.accept_bi(), if !overdue => {
                let Ok((send, recv)) = accepted else { break None };
                last_activity = Instant::now();
                streams.spawn(serve_stream(send, recv, service.clone(), peer.clone()));
            }
            // Reap finished streams as they end, so a long-lived connection
            // holds only its in-flight requests.
            Some(_) = streams.join_next(), if !streams.is_empty() => last_activity = Instant::now(),
            () = peer.became_authenticated(), if !authenticated => {}
            () = tokio::time::sleep_until(next_check), if !overdue && (streams.is_empty() || !authenticated) => {}
        }
    };
    match closing {
        Some((why, code, reason)) => {
            metrics::counter!("caddy_quic_connections_closed_total", "reason" => why).increment(1);
            tracing::debug!(client = %conn.remote_address(), reason, "closing client connection");
            conn.close(code.into(), reason.as_bytes());
        }
        None => {
            while streams.join_next().await.is_some() {}
            conn.close(close::NORMAL.into(), b"bye");
        }
    }
    metrics::gauge!("caddy_quic_connections_open").decrement(1.0);
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: Arc<Service>,
    peer: Arc<Peer>,
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
    service.handle(request, &mut send, &mut recv, &peer).await;
    let _ = send.finish();
    let _ = send.stopped().await;
}
