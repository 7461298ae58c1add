//! The node's TLS identity on disk (`data_dir/tls/`): `ca.pem` (the cluster
//! CA certificate), `node.pem` (this node's certificate, then the CA's),
//! `node.key`, and `ca.key` only where certificates are signed (the node
//! that created the cluster, unless the operator moved it). Created at
//! bootstrap, obtained through enrollment when joining (a CSR for a key
//! made here; the CA key is never received), loaded on every later start,
//! replaced by a rotation.
//!
//! A rotation writes the new pair as `node-next.key` and `node-next.pem`,
//! then renames the key, then the certificate; a start after a crash in
//! between finishes the renames or discards the unfinished pair, so the
//! node never starts with a key that does not match its certificate.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use caddy_raft::node::{NodeTls, PersistIdentity};
use caddy_wire::tls::{self, CaMaterial, LiveIdentity, NodeCertName, NodeIdentity};

use crate::config::Config;

/// Warn at start when the node certificate expires sooner than this.
const EXPIRY_WARNING_MS: u64 = 30 * 86_400_000;

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
    fn next_cert(&self) -> PathBuf {
        self.dir.join("node-next.pem")
    }
    fn next_key(&self) -> PathBuf {
        self.dir.join("node-next.key")
    }
}

/// Path of the cluster CA certificate in a data dir (what clients trust).
pub fn ca_cert_path(data_dir: &Path) -> PathBuf {
    Paths::new(data_dir).ca_cert()
}

/// DNS names and IP addresses the node's certificate carries besides the
/// cluster name: the hosts it advertises.
fn extra_names(config: &Config) -> Vec<String> {
    let mut names = Vec::new();
    for addr in [config.advertise_raft(), config.advertise_client(), config.advertise_admin()] {
        if let Some((host, _)) = addr.rsplit_once(':') {
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            if !names.contains(&host) && host != "0.0.0.0" && host != "::" {
                names.push(host);
            }
        }
    }
    names
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `identity` as the node's certificate and key, crash-safely.
fn store_identity(p: &Paths, identity: &NodeIdentity) -> anyhow::Result<()> {
    tls::write_private(&p.next_key(), identity.key_pem.as_bytes())?;
    tls::write_private(&p.next_cert(), identity.cert_pem.as_bytes())?;
    sync_dir(&p.dir)?;
    std::fs::rename(p.next_key(), p.key())?;
    std::fs::rename(p.next_cert(), p.cert())?;
    sync_dir(&p.dir)?;
    Ok(())
}

/// Finishes or discards a replacement a crash interrupted.
fn recover_replacement(p: &Paths) -> anyhow::Result<()> {
    match (p.next_key().exists(), p.next_cert().exists()) {
        // The key was renamed already: the certificate must follow it.
        (false, true) => {
            tracing::warn!("finishing a certificate replacement interrupted by a crash");
            std::fs::rename(p.next_cert(), p.cert())?;
        }
        // Nothing renamed yet: the old pair is whole.
        (true, _) => {
            tracing::warn!("discarding a certificate replacement interrupted by a crash");
            let _ = std::fs::remove_file(p.next_cert());
            std::fs::remove_file(p.next_key())?;
        }
        (false, false) => return Ok(()),
    }
    sync_dir(&p.dir)?;
    Ok(())
}

fn persist_hook(data_dir: &Path) -> PersistIdentity {
    let data_dir = data_dir.to_path_buf();
    std::sync::Arc::new(move |identity: &NodeIdentity| {
        store_identity(&Paths::new(&data_dir), identity).map_err(|e| format!("{e:#}"))
    })
}

fn running(
    config: &Config,
    ca_cert_pem: String,
    ca_key_pem: Option<String>,
    identity: NodeIdentity,
) -> anyhow::Result<NodeTls> {
    let identity = LiveIdentity::new(identity).context("this node's certificate and key")?;
    let name = identity.name();
    if name.id != config.node_id {
        bail!(
            "this node's certificate ({}) is for node {}, but node_id is {}; a data dir belongs to one node id",
            Paths::new(&config.data_dir).cert().display(),
            name.id,
            config.node_id
        );
    }
    let expires = identity.not_after_ms();
    metrics::gauge!("caddy_node_cert_expiry_seconds").set((expires / 1000) as f64);
    if expires < caddy_raft::now_ms().saturating_add(EXPIRY_WARNING_MS) {
        tracing::warn!(
            expires_ms = expires,
            "this node's certificate expires within 30 days; renew every member's with `caddyctl cluster rotate-certs`"
        );
    }
    Ok(NodeTls {
        ca_cert_pem,
        ca_key_pem,
        identity,
        extra_names: extra_names(config),
        persist: Some(persist_hook(&config.data_dir)),
    })
}

/// Loads the identity if the node has one. A certificate from an older
/// CADDY (it names no node) is re-issued here if this node holds the CA
/// key, and refused with instructions otherwise.
pub fn load(config: &Config) -> anyhow::Result<Option<NodeTls>> {
    let p = Paths::new(&config.data_dir);
    if p.dir.exists() {
        recover_replacement(&p)?;
    }
    if !p.cert().exists() {
        return Ok(None);
    }
    let read = |path: PathBuf| std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()));
    let ca_cert_pem = read(p.ca_cert())?;
    let ca_key_pem = if p.ca_key().exists() { Some(read(p.ca_key())?) } else { None };
    let mut identity = NodeIdentity { cert_pem: read(p.cert())?, key_pem: read(p.key())? };
    if let Err(tls::TlsError::NodeName(why)) = tls::node_cert_name_pem(&identity.cert_pem) {
        let Some(key) = &ca_key_pem else {
            bail!(
                "this node's certificate ({}) is not usable by this CADDY ({why}): it was made by an older version. \
                 Start the node that holds the CA key (tls/ca.key) once to upgrade its own, then remove this node \
                 (`caddyctl cluster remove-node {}`), empty its data dir and join it again with a join token",
                p.cert().display(),
                config.node_id
            );
        };
        let ca = CaMaterial { cert_pem: ca_cert_pem.clone(), key_pem: key.clone() };
        let name = NodeCertName { id: config.node_id, generation: 1 };
        let leaf = tls::issue_node_cert(&ca, name, &extra_names(config))?;
        identity = NodeIdentity { cert_pem: format!("{}{}", leaf.cert_pem, ca_cert_pem), key_pem: leaf.key_pem };
        store_identity(&p, &identity)?;
        tracing::warn!(
            path = %p.cert().display(),
            "re-issued this node's certificate from an older CADDY with its node id; nodes holding a copy of the CA key \
             (tls/ca.key) can sign certificates: keep it only where you want that"
        );
    }
    Ok(Some(running(config, ca_cert_pem, ca_key_pem, identity)?))
}

/// The identity to run with: existing, new (bootstrap) or enrolled (join).
pub async fn obtain(config: &Config) -> anyhow::Result<NodeTls> {
    if let Some(existing) = load(config)? {
        return Ok(existing);
    }
    let p = Paths::new(&config.data_dir);
    if config.cluster.bootstrap {
        tracing::info!("generating the cluster CA");
        let ca = tls::generate_ca()?;
        std::fs::create_dir_all(&p.dir)?;
        let name = NodeCertName { id: config.node_id, generation: 1 };
        let leaf = tls::issue_node_cert(&ca, name, &extra_names(config))?;
        // The chain includes the CA so that a joining node can learn it from
        // the handshake and check it against its token's fingerprint.
        let identity = NodeIdentity { cert_pem: format!("{}{}", leaf.cert_pem, ca.cert_pem), key_pem: leaf.key_pem };
        tls::write_private(&p.ca_key(), ca.key_pem.as_bytes())?;
        std::fs::write(p.ca_cert(), &ca.cert_pem)?;
        store_identity(&p, &identity)?;
        return running(config, ca.cert_pem, Some(ca.key_pem), identity);
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
    // One key for every attempt: a seed that consumed the token but whose
    // answer was lost gives the same certificate to the same key again.
    let key = tls::new_node_key(&extra_names(config))?;
    let mut last = None;
    for seed in &config.cluster.join {
        match caddy_raft::enroll::enroll(seed, &config.cluster.join_token, config.node_id, &key).await {
            Ok(enrolled) => {
                tracing::info!(seed, generation = enrolled.generation, "enrolled with the cluster");
                std::fs::create_dir_all(&p.dir)?;
                std::fs::write(p.ca_cert(), &enrolled.ca_cert_pem)?;
                store_identity(&p, &enrolled.identity)?;
                return running(config, enrolled.ca_cert_pem, None, enrolled.identity);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pair(tag: &str) -> NodeIdentity {
        NodeIdentity { cert_pem: format!("cert {tag}"), key_pem: format!("key {tag}") }
    }

    fn on_disk(p: &Paths) -> (String, String) {
        (std::fs::read_to_string(p.cert()).unwrap(), std::fs::read_to_string(p.key()).unwrap())
    }

    fn config(dir: &Path, node_id: u64) -> Config {
        Config { node_id, data_dir: dir.to_path_buf(), ..Config::default() }
    }

    /// A data dir as an older CADDY left it: a node certificate without a
    /// node name, and (as every member had then) the CA key.
    fn older_data_dir(dir: &Path, with_ca_key: bool) {
        let ca = tls::generate_ca().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![caddy_wire::CLUSTER_SERVER_NAME.to_string()]).unwrap();
        let ca_key = rcgen::KeyPair::from_pem(&ca.key_pem).unwrap();
        let issuer = rcgen::Issuer::new(rcgen::CertificateParams::default(), ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let p = Paths::new(dir);
        std::fs::create_dir_all(&p.dir).unwrap();
        std::fs::write(p.ca_cert(), &ca.cert_pem).unwrap();
        std::fs::write(p.cert(), format!("{}{}", cert.pem(), ca.cert_pem)).unwrap();
        std::fs::write(p.key(), key.serialize_pem()).unwrap();
        if with_ca_key {
            std::fs::write(p.ca_key(), &ca.key_pem).unwrap();
        }
    }

    #[test]
    fn an_older_certificate_is_reissued_with_the_node_id_where_the_ca_key_is() {
        let dir = tempfile::tempdir().unwrap();
        older_data_dir(dir.path(), true);
        let tls = load(&config(dir.path(), 4)).unwrap().unwrap();
        assert_eq!(tls.identity.name(), NodeCertName { id: 4, generation: 1 });
        // Stored: the next start loads it as it is.
        let again = load(&config(dir.path(), 4)).unwrap().unwrap();
        assert_eq!(again.identity.identity().cert_pem, tls.identity.identity().cert_pem);
        // The data dir belongs to node 4.
        let err = load(&config(dir.path(), 5)).err().unwrap().to_string();
        assert!(err.contains("is for node 4"), "{err}");
    }

    #[test]
    fn an_older_certificate_without_the_ca_key_is_refused_with_instructions() {
        let dir = tempfile::tempdir().unwrap();
        older_data_dir(dir.path(), false);
        let err = load(&config(dir.path(), 2)).err().unwrap().to_string();
        assert!(err.contains("older version") && err.contains("join token"), "{err}");
    }

    #[test]
    fn an_interrupted_replacement_leaves_a_matching_pair() {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths { dir: dir.path().to_path_buf() };
        store_identity(&p, &pair("old")).unwrap();
        assert_eq!(on_disk(&p), ("cert old".into(), "key old".into()));

        // Crash after writing the new pair, before any rename: the old one stays.
        tls::write_private(&p.next_key(), b"key new").unwrap();
        tls::write_private(&p.next_cert(), b"cert new").unwrap();
        recover_replacement(&p).unwrap();
        assert_eq!(on_disk(&p), ("cert old".into(), "key old".into()));
        assert!(!p.next_key().exists() && !p.next_cert().exists());

        // Crash between the two renames: the new one is completed.
        tls::write_private(&p.next_cert(), b"cert new").unwrap();
        std::fs::write(p.key(), "key new").unwrap();
        recover_replacement(&p).unwrap();
        assert_eq!(on_disk(&p), ("cert new".into(), "key new".into()));

        // Nothing pending: nothing changes.
        recover_replacement(&p).unwrap();
        assert_eq!(on_disk(&p), ("cert new".into(), "key new".into()));
    }
}
