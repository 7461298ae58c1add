//! `caddyd start`: one node, from configuration to graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use caddy_core::Command;
use caddy_raft::RaftNode;
use caddy_raft::node::{NodeOptions, NodeTls};
use caddy_raft::peers::PeerClients;
use caddy_raft::service::PeerService;
use caddy_store::backend::Disk;
use caddy_store::{CaddyNode, FlushMode};
use tokio::sync::watch;

use crate::config::Config;
use crate::service::Service;
use crate::{admin, blobs, identity, quic, telemetry};

/// Streams a peer may reset before this node accepted them, on one
/// connection (a minute of cancelled heartbeats and appends from a leader).
const PEER_PENDING_RESETS: usize = 16 * 1024;

/// Longest a stop may take after SIGTERM or Ctrl-C: the client drain (10 s)
/// and a few seconds for Raft and the peer listener.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// Of that, the most Raft and the peer listener get once clients are done.
const RAFT_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// File holding the admin credential on the bootstrap node (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

fn parse(addr: &str, what: &str) -> anyhow::Result<SocketAddr> {
    addr.parse().with_context(|| format!("{what} address {addr:?} is not host:port"))
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let prometheus = telemetry::init_metrics()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    std::fs::write(config.data_dir.join("caddyd.pid"), format!("{}\n", std::process::id()))?;
    let tls = identity::obtain(&config).await?;
    let self_node = CaddyNode {
        raft_addr: config.advertise_raft(),
        client_addr: config.advertise_client(),
        admin_addr: config.advertise_admin(),
    };
    let node = RaftNode::start(NodeOptions {
        id: config.node_id,
        node: self_node.clone(),
        disk: Disk::Dir(config.data_dir.clone()),
        flush: FlushMode::Background,
        timing: config.timing(),
        tls: tls.clone(),
    })
    .await?;
    node.state_machine().set_event_history(config.limits.watch_history);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let store = blobs::open_store(&config.files, &config.data_dir)?;
    tracing::info!(backend = store.kind(), "blob store opened");
    let blobs = Arc::new(blobs::Blobs::new(store, node.clone(), &config.files));
    let render_status = Arc::new(crate::render::RenderStatus::default());
    let describer: caddy_raft::service::Describer = {
        let render_status = render_status.clone();
        Arc::new(move || caddy_raft::pb::NodeDescription { render: render_status.line() })
    };
    let peer_task =
        serve_peers(&config, &tls, node.clone(), blobs.peer_service(), describer, shutdown_rx.clone()).await?;
    tokio::spawn(blobs.clone().run(config.files.clone(), shutdown_rx.clone()));
    crate::audit::start(config.audit.clone(), node.clone(), shutdown_rx.clone());
    crate::render::start(
        config.render.clone(),
        node.clone(),
        blobs.clone(),
        render_status.clone(),
        shutdown_rx.clone(),
    );
    let service = Arc::new(Service::new(
        node.clone(),
        config.limits.clone(),
        config.files.clone(),
        blobs,
        render_status,
        config.data_dir.join("backups"),
        shutdown_rx.clone(),
    ));
    tokio::spawn(service.presence().clone().run(node.clone(), shutdown_rx.clone()));
    let endpoint = quic::bind(parse(&config.listen.client, "client")?, &tls, &service)?;
    let quic_task = tokio::spawn(quic::serve(endpoint, service, shutdown_rx.clone(), Duration::from_secs(10)));
    let admin_task =
        admin::serve(parse(&config.listen.admin, "admin")?, &tls, node.clone(), prometheus, shutdown_rx.clone())
            .await?;

    let initialized = node.raft().is_initialized().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if config.cluster.bootstrap {
        bootstrap(&config, &node).await?;
    } else if !initialized {
        tokio::spawn(join(config.clone(), tls.clone(), self_node.clone()));
    }
    tracing::info!(
        node_id = config.node_id,
        raft = %config.listen.raft,
        client = %config.listen.client,
        admin = %config.listen.admin,
        "caddyd is serving"
    );

    wait_for_signal().await;
    tracing::info!("shutting down: no new requests, draining in-flight ones");
    let _ = shutdown_tx.send(true);
    let graceful = async {
        let _ = quic_task.await;
        let _ = admin_task.await;
        // Clients have had their answers; what is left is Raft's own work
        // (an apply batch of large imports can run for seconds on a loaded
        // machine) and the peer listener. Neither holds anything that is
        // not already durable, so it gets a short budget of its own.
        let raft_stop = async {
            node.shutdown().await;
            let _ = peer_task.await;
        };
        if tokio::time::timeout(RAFT_STOP_GRACE, raft_stop).await.is_err() {
            tracing::warn!(grace = ?RAFT_STOP_GRACE,
                "Raft still stopping; exiting now (apply resumes from its last durable point on restart)");
        }
    };
    // Nothing acknowledged depends on a clean stop (the Raft log was fsynced
    // before every acknowledgement and apply resumes from it), so a stop
    // that takes too long, or a second signal, ends the process as kill -9
    // would, only sooner than whoever sent the signal would.
    tokio::select! {
        () = graceful => tracing::info!("stopped"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "still stopping after the grace period; exiting now");
        }
        () = wait_for_signal() => tracing::warn!("second signal; exiting now"),
    }
    let _ = std::fs::remove_file(config.data_dir.join("caddyd.pid"));
    Ok(())
}

/// Peer TLS handshakes in progress at once; more wait to be accepted.
const MAX_PEER_HANDSHAKES: usize = 256;
/// A peer that does not finish its handshake in this time is dropped.
const PEER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_peers(
    config: &Config,
    tls: &NodeTls,
    node: RaftNode,
    chunks: Arc<dyn caddy_raft::service::ChunkService>,
    describer: caddy_raft::service::Describer,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let addr = parse(&config.listen.raft, "raft")?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the peer listener on {addr}"))?;
    // TLS here rather than tonic's: the certificate is resolved per
    // handshake from the live identity, so a rotation needs no restart.
    let server_tls = caddy_wire::tls::peer_server_config(tls.identity.clone(), &tls.ca_cert_pem)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
    let service = PeerService::new(node, config.data_dir.join("snapshots"))
        .with_chunks(chunks)
        .with_describer(describer)
        .into_server();
    let router = tonic::transport::Server::builder()
        // Every RPC a peer gave up on while this node was paused or cut off
        // (heartbeats time out every few hundred milliseconds) arrives as a
        // reset stream when it comes back. h2's guard against rapid-reset
        // floods (20 by default) took that burst for an attack and dropped
        // the connection, so replication failed until it was dialled again.
        // The listener admits connections without a certificate (`Enroll`
        // needs none), so this allowance is open to anyone who can reach
        // the peer port; each connection's reset streams are still bounded
        // by it.
        .http2_max_pending_accept_reset_streams(Some(PEER_PENDING_RESETS))
        .add_service(service);
    let (conns_tx, conns_rx) = tokio::sync::mpsc::channel(64);
    let mut accept_stop = shutdown.clone();
    tokio::spawn(async move {
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_PEER_HANDSHAKES));
        loop {
            let accepted = tokio::select! {
                _ = stopped(&mut accept_stop) => return,
                accepted = listener.accept() => accepted,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accepting a peer connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Nagle on peer sockets delays small Raft replies by up to 40 ms.
            let _ = tcp.set_nodelay(true);
            let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
            let (acceptor, conns_tx) = (acceptor.clone(), conns_tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(PEER_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = conns_tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "peer TLS handshake failed"),
                    Err(_) => tracing::debug!("peer TLS handshake timed out"),
                }
            });
        }
    });
    Ok(tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::ReceiverStream::new(conns_rx);
        let stop = async move { stopped(&mut shutdown).await };
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
            tracing::error!(error = %e, "peer server failed");
        }
    }))
}

/// First start of a new cluster (or of a restored one): become the only
/// voter and create the admin credential. A cluster that has its identity
/// already keeps it: the credential is never replaced, even when its file
/// is gone.
async fn bootstrap(config: &Config, node: &RaftNode) -> anyhow::Result<()> {
    if node.initialize_single().await? {
        tracing::info!("initialized a new cluster");
    }
    let token_path = config.data_dir.join(ADMIN_TOKEN_FILE);
    if token_path.exists() {
        return Ok(());
    }
    // A restarted node knows from its own state (no leader needed).
    if let Some(cluster_id) = node.state_machine().cluster_id() {
        admin_token_missing(config, node, &token_path, &cluster_id);
        return Ok(());
    }
    node.wait_for_leader(Duration::from_secs(30)).await.context("no leader after bootstrap")?;
    // Everything committed before must be applied before judging.
    node.read_barrier().await.map_err(|e| anyhow::anyhow!("reading the cluster state: {e}"))?;
    if let Some(cluster_id) = node.state_machine().cluster_id() {
        admin_token_missing(config, node, &token_path, &cluster_id);
        return Ok(());
    }
    let secret: [u8; 32] = rand::random();
    let token = format!("caddy_admin_{}", hex::encode(secret));
    let cluster_id = hex::encode(rand::random::<[u8; 8]>());
    let command = Command::InitCluster {
        cluster_id: cluster_id.clone(),
        admin_credential_hash: caddy_core::credential_hash(&token),
    };
    if let Err(e) = node.propose(None, command).await {
        if e.code == caddy_core::ErrorCode::FailedPrecondition
            && let Some(existing) = node.state_machine().cluster_id()
        {
            admin_token_missing(config, node, &token_path, &existing);
            return Ok(());
        }
        anyhow::bail!("creating the admin credential: {e}");
    }
    caddy_wire::tls::write_private(&token_path, token.as_bytes())?;
    tracing::info!(cluster_id, path = %token_path.display(), "admin credential created (shown only in this file)");
    Ok(())
}

fn admin_token_missing(config: &Config, node: &RaftNode, token_path: &std::path::Path, cluster_id: &str) {
    let snapshot = node
        .state_machine()
        .snapshot_info()
        .map(|s| s.path.display().to_string())
        .unwrap_or_else(|| format!("{}/snapshots/<newest>.snap", config.data_dir.display()));
    tracing::error!(
        cluster_id,
        path = %token_path.display(),
        "the admin credential file {} is missing, but this cluster was initialized already (cluster id {cluster_id}); \
         its admin credential is unchanged and still valid, and no new one is created. Put the file back from a copy \
         (or keep using the credential from your client config). If the credential is lost, found a new cluster from \
         this node's data: `caddyd restore --from {snapshot} --dir NEWDIR` (a restored cluster gets a new CA and admin \
         credential; take a snapshot first if this one is old)",
        token_path.display()
    );
}

/// Asks the cluster to add this node, retrying until it is a member.
async fn join(config: Config, tls: NodeTls, self_node: CaddyNode) {
    let peers = match PeerClients::new(&tls.ca_cert_pem, Some(tls.identity.clone()), Duration::from_secs(10)) {
        Ok(peers) => peers,
        Err(e) => {
            tracing::error!(error = %e, "cannot join: peer TLS configuration");
            return;
        }
    };
    let mut delay = Duration::from_millis(200);
    loop {
        for seed in &config.cluster.join {
            match caddy_raft::enroll::request_membership(
                &peers,
                seed,
                config.node_id,
                &self_node,
                config.cluster.learner,
            )
            .await
            {
                Ok(view) => {
                    tracing::info!(seed, voters = ?view.voters, learners = ?view.learners, "joined the cluster");
                    return;
                }
                Err(e) => tracing::warn!(seed, error = %e, "join attempt failed; will retry"),
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Resolves once `rx` reads true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
