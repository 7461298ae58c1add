//! The admin HTTPS endpoint: `/healthz`, `/readyz`, `/metrics` (Prometheus
//! text) and `/status` (JSON). TLS with the node certificate; no plaintext.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use caddy_raft::RaftNode;
use caddy_raft::node::NodeTls;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

#[derive(Clone)]
struct AdminState {
    node: RaftNode,
    prometheus: PrometheusHandle,
}

async fn healthz(State(s): State<AdminState>) -> impl IntoResponse {
    let metrics = s.node.raft().metrics();
    use openraft::async_runtime::WatchReceiver;
    let running = metrics.borrow_watched().running_state.is_ok();
    if running { (StatusCode::OK, "ok\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "raft stopped\n") }
}

/// Ready: a leader is known and this node has applied everything it knows
/// to be committed.
pub fn readiness(node: &RaftNode) -> Result<(), String> {
    let status = node.status();
    if status.leader.is_none() {
        return Err("no leader known".into());
    }
    if status.applied_index < status.commit_index {
        return Err(format!("applied {} of {} committed entries", status.applied_index, status.commit_index));
    }
    if node.state_machine().admin_credential_hash().is_none() {
        return Err("cluster not initialized".into());
    }
    Ok(())
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    match readiness(&s.node) {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

async fn metrics_page(State(s): State<AdminState>) -> impl IntoResponse {
    crate::telemetry::refresh_raft_gauges(&s.node);
    ([("content-type", "text/plain; version=0.0.4")], s.prometheus.render())
}

async fn status(State(s): State<AdminState>) -> impl IntoResponse {
    let status = s.node.status();
    ([("content-type", "application/json")], serde_json::to_string_pretty(&status).unwrap_or_default())
}

/// Serves admin HTTPS on `addr` until `shutdown` flips.
pub async fn serve(
    addr: SocketAddr,
    tls: &NodeTls,
    node: RaftNode,
    prometheus: PrometheusHandle,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let config = caddy_wire::tls::server_config_live(tls.identity.clone(), &[b"http/1.1"])?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the admin listener on {addr}"))?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .route("/status", get(status))
        .with_state(AdminState { node, prometheus });
    Ok(tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = crate::run::stopped(&mut shutdown) => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let service = TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    }))
}
