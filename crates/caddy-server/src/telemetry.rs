//! Logging and metrics setup, and the Raft gauges exported on `/metrics`.

use caddy_raft::RaftNode;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use openraft::async_runtime::WatchReceiver;
use tracing_subscriber::EnvFilter;

/// Installs the `tracing` subscriber: `RUST_LOG` if set, else `level`;
/// the chattiest dependencies are capped at `warn` unless named explicitly.
pub fn init_logging(level: &str, json: bool) {
    let filter =
        std::env::var("RUST_LOG").ok().unwrap_or_else(|| format!("openraft=warn,loro_internal=warn,h2=warn,{level}"));
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log file or a pipe gets
    // plain text (escape codes made grep and log shippers see garbage).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Installs the Prometheus recorder (once per process).
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let buckets =
        [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    let handle = PrometheusBuilder::new().set_buckets(&buckets)?.install_recorder()?;
    Ok(handle)
}

/// Updates the Raft gauges from openraft's metrics.
pub fn refresh_raft_gauges(node: &RaftNode) {
    let m = node.raft().metrics().borrow_watched().clone();
    let status = node.status();
    metrics::gauge!("caddy_raft_term").set(m.current_term as f64);
    metrics::gauge!("caddy_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
    metrics::gauge!("caddy_raft_is_leader").set(if m.current_leader == Some(node.id()) { 1.0 } else { 0.0 });
    metrics::gauge!("caddy_raft_commit_index").set(status.commit_index as f64);
    metrics::gauge!("caddy_raft_applied_index").set(status.applied_index as f64);
    metrics::gauge!("caddy_raft_last_log_index").set(status.last_log_index as f64);
    metrics::gauge!("caddy_raft_log_length").set(status.last_log_index.saturating_sub(status.purged_index) as f64);
    metrics::gauge!("caddy_raft_snapshot_index").set(status.snapshot_index.unwrap_or(0) as f64);
    metrics::gauge!("caddy_kv_revision").set(status.revision as f64);
    if let Some(info) = node.state_machine().snapshot_info() {
        metrics::gauge!("caddy_snapshot_size_bytes").set(info.size as f64);
    }
    if let Some(replication) = &m.replication {
        let last = status.last_log_index;
        for (peer, matched) in replication {
            let lag = last.saturating_sub(matched.as_ref().map(|l| l.index).unwrap_or(0));
            metrics::gauge!("caddy_raft_replication_lag_entries", "peer" => peer.to_string()).set(lag as f64);
        }
    }
}
