//! `caddyd dev`: a local multi-node cluster of real `caddyd` processes on
//! free loopback ports, bootstrapped on first run and resumed afterwards.
//!
//! Layout of DIR: `dev.toml` (the ports chosen the first time, so that a
//! resumed cluster keeps its addresses), `nodeN/caddyd.toml`, `nodeN/caddyd.pid`,
//! `nodeN/caddyd.log`, the nodes' data under `nodeN/`, and `client.toml`
//! (endpoints, CA path, admin credential; mode 0600) for `caddyctl` and the SDK.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use caddy_client::{Client, ClientConfig};
use serde::{Deserialize, Serialize};

use crate::run::ADMIN_TOKEN_FILE;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DevNode {
    id: u64,
    raft: String,
    client: String,
    admin: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DevState {
    nodes: Vec<DevNode>,
}

fn node_dir(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}"))
}

fn write_node_config(dir: &Path, node: &DevNode, seed: &DevNode) -> anyhow::Result<PathBuf> {
    let ndir = node_dir(dir, node.id);
    std::fs::create_dir_all(&ndir)?;
    let cluster =
        if node.id == seed.id { "bootstrap = true".to_string() } else { format!("join = [\"{}\"]", seed.raft) };
    let text = format!(
        "# Written by `caddyd dev`.\nnode_id = {}\ndata_dir = \"{}\"\n\n[listen]\nraft = \"{}\"\nclient = \"{}\"\nadmin = \"{}\"\n\n[cluster]\n{}\n",
        node.id,
        ndir.display(),
        node.raft,
        node.client,
        node.admin,
        cluster
    );
    let path = ndir.join("caddyd.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn spawn_node(dir: &Path, node: &DevNode, join_token: Option<&str>) -> anyhow::Result<Child> {
    let ndir = node_dir(dir, node.id);
    let log = std::fs::OpenOptions::new().create(true).append(true).open(ndir.join("caddyd.log"))?;
    let exe = std::env::current_exe().context("locating the caddyd binary")?;
    let mut cmd = Process::new(exe);
    cmd.arg("start").arg("--config").arg(ndir.join("caddyd.toml"));
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    cmd.env_remove("CADDY_CLUSTER_JOIN_TOKEN");
    if let Some(token) = join_token {
        cmd.env("CADDY_CLUSTER_JOIN_TOKEN", token);
    }
    let child = cmd.spawn().with_context(|| format!("starting node {}", node.id))?;
    std::fs::write(ndir.join("caddyd.pid"), format!("{}\n", child.id()))?;
    Ok(child)
}

/// Waits until `check` holds, failing at once (with the end of its log) when
/// a node started so far has exited: a node that cannot bind its port or
/// join would otherwise show only as a timeout.
async fn wait_for(
    what: &str,
    timeout: Duration,
    dir: &Path,
    children: &mut [(u64, Child)],
    mut check: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = node_dir(dir, *id).join("caddyd.log");
                bail!("node {id} exited ({status}) while waiting for {what}; its log ends:\n{}", log_tail(&log));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out waiting for {what}")
}

fn log_tail(path: &Path) -> String {
    const TAIL_LINES: usize = 20;
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

fn stop_all(children: &mut [(u64, Child)]) {
    for (_, child) in children.iter() {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY-free: libc::kill with a pid we spawned.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for (id, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("node {id} did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Starts (or resumes) a local cluster of `count` nodes in `dir` and runs
/// until Ctrl-C or SIGTERM, then stops its nodes.
pub async fn run(count: u64, dir: &Path) -> anyhow::Result<()> {
    if count == 0 || count > 9 {
        bail!("--nodes must be between 1 and 9");
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let state_path = dir.join("dev.toml");
    let mut state: DevState = match std::fs::read_to_string(&state_path) {
        Ok(text) => toml::from_str(&text).context("reading dev.toml")?,
        Err(_) => DevState::default(),
    };
    let resumed = !state.nodes.is_empty();
    while (state.nodes.len() as u64) < count {
        let id = state.nodes.len() as u64 + 1;
        let node = DevNode {
            id,
            raft: format!("127.0.0.1:{}", caddy_wire::ports::free_loopback_port()?),
            client: format!("127.0.0.1:{}", caddy_wire::ports::free_loopback_port()?),
            admin: format!("127.0.0.1:{}", caddy_wire::ports::free_loopback_port()?),
        };
        state.nodes.push(node);
    }
    std::fs::write(&state_path, toml::to_string(&state)?)?;
    let nodes: Vec<DevNode> = state.nodes.iter().take(count as usize).cloned().collect();
    let seed = nodes[0].clone();
    for node in &nodes {
        write_node_config(&dir, node, &seed)?;
    }

    let mut children: Vec<(u64, Child)> = Vec::new();
    let result = start_all(&dir, &nodes, &mut children, resumed).await;
    if let Err(e) = result {
        stop_all(&mut children);
        return Err(e);
    }
    let mut reported = std::collections::BTreeSet::new();
    let signal = crate::run::wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                for (id, child) in children.iter_mut() {
                    if let Ok(Some(status)) = child.try_wait()
                        && reported.insert(*id)
                    {
                        eprintln!("node {id} exited ({status}); see {}", node_dir(&dir, *id).join("caddyd.log").display());
                    }
                }
            }
        }
    }
    eprintln!("stopping {} nodes...", children.len());
    stop_all(&mut children);
    eprintln!("stopped; data kept in {} (run again to resume)", dir.display());
    Ok(())
}

async fn start_all(
    dir: &Path,
    nodes: &[DevNode],
    children: &mut Vec<(u64, Child)>,
    resumed: bool,
) -> anyhow::Result<()> {
    let seed = &nodes[0];
    children.push((seed.id, spawn_node(dir, seed, None)?));
    let token_path = node_dir(dir, seed.id).join(ADMIN_TOKEN_FILE);
    wait_for("node 1 to create the admin credential", Duration::from_secs(60), dir, children, async || {
        token_path.exists()
    })
    .await?;
    let credential = std::fs::read_to_string(&token_path)?.trim().to_string();
    let ca_path = crate::identity::ca_cert_path(&node_dir(dir, seed.id));
    let ca_pem = std::fs::read_to_string(&ca_path)?;
    let seed_client = Client::connect(ClientConfig::new(vec![seed.client.clone()], ca_pem.clone(), credential.clone()))
        .await
        .context("connecting to node 1")?;
    wait_for("node 1 to serve clients", Duration::from_secs(60), dir, children, async || {
        seed_client.status().await.is_ok()
    })
    .await?;

    for node in &nodes[1..] {
        let enrolled = node_dir(dir, node.id).join("tls").join("node.pem").exists();
        let token = if enrolled {
            None
        } else {
            Some(seed_client.join_token(600).await.context("creating a join token")?.token)
        };
        children.push((node.id, spawn_node(dir, node, token.as_deref())?));
    }

    let client_config = format!(
        "# Written by `caddyd dev`: how caddyctl and the SDK reach this cluster.\nendpoints = [{}]\nca_cert = \"{}\"\ncredential = \"{}\"\n",
        nodes.iter().map(|n| format!("\"{}\"", n.client)).collect::<Vec<_>>().join(", "),
        ca_path.display(),
        credential
    );
    caddy_wire::tls::write_private(&dir.join("client.toml"), client_config.as_bytes())?;

    let client = Client::connect(ClientConfig::from_file(dir.join("client.toml"))?).await?;
    let expected = nodes.len();
    wait_for(&format!("all {expected} nodes to be voters"), Duration::from_secs(120), dir, children, async || {
        matches!(client.status().await, Ok(s) if s.members.iter().filter(|m| m.role == "voter").count() == expected
            && s.leader.is_some())
    })
    .await?;

    println!(
        "CADDY dev cluster {} with {} nodes in {}",
        if resumed { "resumed" } else { "started" },
        nodes.len(),
        dir.display()
    );
    println!("{:<5} {:<8} {:<22} {:<22} {:<22}", "NODE", "PID", "RAFT (gRPC/mTLS)", "CLIENT (QUIC)", "ADMIN (HTTPS)");
    for (node, (_, child)) in nodes.iter().zip(children.iter()) {
        println!("{:<5} {:<8} {:<22} {:<22} {:<22}", node.id, child.id(), node.raft, node.client, node.admin);
    }
    println!("client config: {}", dir.join("client.toml").display());
    println!("try:  caddyctl --config {} cluster status", dir.join("client.toml").display());
    println!("logs: {}/nodeN/caddyd.log; Ctrl-C stops the cluster (data is kept)", dir.display());
    Ok(())
}
