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
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::Config;
use crate::service::Service;
use crate::{admin, blobs, identity, quic, telemetry};

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
    let _ = quic_task.await;
    let _ = admin_task.await;
    node.shutdown().await;
    let _ = peer_task.await;
    let _ = std::fs::remove_file(config.data_dir.join("caddyd.pid"));
    tracing::info!("stopped");
    Ok(())
}

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
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .client_ca_root(Certificate::from_pem(&tls.ca_cert_pem))
        .client_auth_optional(true);
    let service = PeerService::new(node, config.data_dir.join("snapshots"))
        .with_chunks(chunks)
        .with_describer(describer)
        .into_server();
    let router = tonic::transport::Server::builder()
        .tls_config(server_tls)
        .context("peer TLS configuration")?
        .add_service(service);
    Ok(tokio::spawn(async move {
        // Nagle on accepted peer sockets delays small Raft replies by up to
        // 40 ms (the server builder's own nodelay setting does not reach
        // sockets from an external listener).
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let stop = async move { stopped(&mut shutdown).await };
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
            tracing::error!(error = %e, "peer server failed");
        }
    }))
}

/// First start of a new cluster (or of a restored one): become the only
/// voter and create the admin credential.
async fn bootstrap(config: &Config, node: &RaftNode) -> anyhow::Result<()> {
    if node.initialize_single().await? {
        tracing::info!("initialized a new cluster");
    }
    let token_path = config.data_dir.join(ADMIN_TOKEN_FILE);
    if token_path.exists() {
        return Ok(());
    }
    node.wait_for_leader(Duration::from_secs(30)).await.context("no leader after bootstrap")?;
    let secret: [u8; 32] = rand::random();
    let token = format!("caddy_admin_{}", hex::encode(secret));
    let cluster_id = hex::encode(rand::random::<[u8; 8]>());
    let command = Command::InitCluster {
        cluster_id: cluster_id.clone(),
        admin_credential_hash: caddy_core::credential_hash(&token),
    };
    node.propose(None, command).await.map_err(|e| anyhow::anyhow!("creating the admin credential: {e}"))?;
    caddy_wire::tls::write_private(&token_path, token.as_bytes())?;
    tracing::info!(cluster_id, path = %token_path.display(), "admin credential created (shown only in this file)");
    Ok(())
}

/// Asks the cluster to add this node, retrying until it is a member.
async fn join(config: Config, tls: NodeTls, self_node: CaddyNode) {
    let peers = PeerClients::new(&tls.ca_cert_pem, Some((&tls.cert_pem, &tls.key_pem)), Duration::from_secs(10));
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
