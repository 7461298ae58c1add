//! The node's TLS identity on disk (`data_dir/tls/`): created at bootstrap,
//! obtained through enrollment when joining, loaded on every later start.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use caddy_raft::node::NodeTls;
use caddy_wire::tls::{self, CaMaterial};

use crate::config::Config;

struct Paths {
    dir: PathBuf,
}

impl Paths {
    fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join("tls") }
    }
    fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("node.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("node.key")
    }
}

/// Path of the cluster CA certificate in a data dir (what clients trust).
pub fn ca_cert_path(data_dir: &Path) -> PathBuf {
    Paths::new(data_dir).ca_cert()
}

/// Loads the identity if the node has one.
pub fn load(data_dir: &Path) -> anyhow::Result<Option<NodeTls>> {
    let p = Paths::new(data_dir);
    if !p.cert().exists() {
        return Ok(None);
    }
    let read = |path: PathBuf| std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()));
    Ok(Some(NodeTls {
        ca_cert_pem: read(p.ca_cert())?,
        ca_key_pem: if p.ca_key().exists() { Some(read(p.ca_key())?) } else { None },
        cert_pem: read(p.cert())?,
        key_pem: read(p.key())?,
    }))
}

/// Issues this node's certificate from `ca` and stores everything.
pub fn store_new(config: &Config, ca: &CaMaterial) -> anyhow::Result<NodeTls> {
    let p = Paths::new(&config.data_dir);
    std::fs::create_dir_all(&p.dir)?;
    let mut names = Vec::new();
    for addr in [config.advertise_raft(), config.advertise_client(), config.advertise_admin()] {
        if let Some((host, _)) = addr.rsplit_once(':') {
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            if !names.contains(&host) && host != "0.0.0.0" && host != "::" {
                names.push(host);
            }
        }
    }
    let leaf = tls::issue_node_cert(ca, config.node_id, &names)?;
    // The chain includes the CA so that a joining node can learn it from the
    // handshake and check it against its token's fingerprint.
    let chain = format!("{}{}", leaf.cert_pem, ca.cert_pem);
    tls::write_private(&p.ca_key(), ca.key_pem.as_bytes())?;
    tls::write_private(&p.key(), leaf.key_pem.as_bytes())?;
    std::fs::write(p.ca_cert(), &ca.cert_pem)?;
    std::fs::write(p.cert(), &chain)?;
    Ok(NodeTls {
        ca_cert_pem: ca.cert_pem.clone(),
        ca_key_pem: Some(ca.key_pem.clone()),
        cert_pem: chain,
        key_pem: leaf.key_pem,
    })
}

/// The identity to run with: existing, new (bootstrap) or enrolled (join).
pub async fn obtain(config: &Config) -> anyhow::Result<NodeTls> {
    if let Some(existing) = load(&config.data_dir)? {
        return Ok(existing);
    }
    if config.cluster.bootstrap {
        tracing::info!("generating the cluster CA");
        let ca = tls::generate_ca()?;
        return store_new(config, &ca);
    }
    if config.cluster.join.is_empty() {
        bail!(
            "this node has no cluster identity: set cluster.bootstrap = true to create a cluster, or cluster.join and a join token to join one"
        );
    }
    if config.cluster.join_token.is_empty() {
        bail!(
            "joining needs a join token: run `caddyctl cluster join-token` on the cluster and pass it as CADDY_CLUSTER_JOIN_TOKEN"
        );
    }
    let mut last = None;
    for seed in &config.cluster.join {
        match caddy_raft::enroll::enroll(seed, &config.cluster.join_token, config.node_id).await {
            Ok(ca) => {
                tracing::info!(seed, "enrolled with the cluster");
                return store_new(config, &ca);
            }
            Err(e) => {
                tracing::warn!(seed, error = %e, "enrollment failed");
                last = Some(e);
            }
        }
    }
    bail!(
        "could not enroll through any of {:?}: {}",
        config.cluster.join,
        last.map(|e| e.to_string()).unwrap_or_default()
    )
}
