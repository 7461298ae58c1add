//! `caddyd`'s configuration: defaults in code, then the TOML file, then
//! `CADDY_*` environment variables (`CADDY_NODE_ID`, `CADDY_DATA_DIR`,
//! `CADDY_LISTEN_RAFT`, `CADDY_CLUSTER_JOIN=a:1,b:2`, `CADDY_LIMITS_MAX_WATCHES`, ...:
//! the section name, then the field name, upper-cased).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// One node's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's id: unique in the cluster, never reused, not 0.
    pub node_id: u64,
    /// Where the node keeps its log, state, snapshots and TLS material.
    pub data_dir: PathBuf,
    /// Sockets to listen on.
    pub listen: Listen,
    /// Addresses other nodes and clients use to reach this node; each
    /// defaults to the matching `listen` address.
    pub advertise: Advertise,
    /// How the node becomes a member.
    pub cluster: ClusterConfig,
    /// Raft timing and log retention.
    pub raft: RaftConfig,
    /// Bounds on client traffic.
    pub limits: Limits,
    /// Files and the blob store.
    pub files: FilesConfig,
    /// Render workers.
    pub render: RenderConfig,
    /// Audit trail retention.
    pub audit: AuditConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Listener addresses (`host:port`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Peer gRPC (Raft) over mutual TLS.
    pub raft: String,
    /// Client protocol over QUIC (UDP).
    pub client: String,
    /// Admin HTTPS: /healthz, /readyz, /metrics, /status.
    pub admin: String,
}

/// Advertised addresses; empty means "same as listen".
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Advertise {
    /// Peer address others dial.
    pub raft: String,
    /// Client address clients dial.
    pub client: String,
    /// Admin address.
    pub admin: String,
}

/// Membership bootstrap.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Create a new cluster with this node as its only voter (first start
    /// only; ignored once the node is initialized).
    pub bootstrap: bool,
    /// Peer addresses of existing members to join through.
    pub join: Vec<String>,
    /// Join token from `caddyctl cluster join-token` (prefer the
    /// `CADDY_CLUSTER_JOIN_TOKEN` variable to keeping it in a file).
    pub join_token: String,
    /// Join as a learner only (no vote).
    pub learner: bool,
}

/// Raft timing (milliseconds) and log retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound.
    pub election_min_ms: u64,
    /// Election timeout upper bound.
    pub election_max_ms: u64,
    /// Snapshot after this many log entries.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot for slow followers.
    pub keep_behind_snapshot: u64,
}

/// Client traffic bounds. Past any of them the client gets a typed error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest protocol frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Largest value in a put, in bytes.
    pub max_value_bytes: usize,
    /// Largest key, in bytes.
    pub max_key_bytes: usize,
    /// Concurrent request streams per QUIC connection.
    pub max_streams_per_connection: u32,
    /// Concurrent QUIC connections.
    pub max_connections: usize,
    /// Concurrent watches on this node.
    pub max_watches: usize,
    /// Most keys returned by one list call.
    pub max_list_limit: u32,
    /// A request not answered in this time gets UNAVAILABLE.
    pub request_timeout_ms: u64,
    /// Watch events this node keeps for resuming watchers; a watch from an
    /// older revision gets FAILED_PRECONDITION ("compacted").
    pub watch_history: u64,
    /// Lifetime of a login session unless the login asks for less, in seconds.
    pub session_ttl_secs: u64,
    /// Lifetime of an invitation unless its creator asks for less, in seconds.
    pub invite_ttl_secs: u64,
    /// How long a rotated API key keeps working unless the rotation says, in seconds.
    pub key_rotation_grace_secs: u64,
    /// Largest document update a client may send, in bytes.
    pub doc_max_update_bytes: u64,
    /// Largest document, in bytes of committed updates (its whole history).
    pub doc_max_document_bytes: u64,
    /// Most entities in one document, deleted ones included.
    pub doc_max_entities: u64,
    /// A presence not refreshed within this time expires, in milliseconds.
    pub presence_ttl_ms: u64,
    /// A client connection that has made no authenticated request (nor
    /// logged in) this long after it began is closed, in milliseconds.
    pub credential_deadline_ms: u64,
    /// A client connection with no request in flight for this long is
    /// closed (an open watch is a request in flight; the SDK reconnects on
    /// its next request), in milliseconds.
    pub idle_timeout_ms: u64,
    /// Concurrent QUIC connections from one source (an IPv4 address or an
    /// IPv6 /64); more are closed with a reason right after the handshake.
    pub max_connections_per_source: usize,
    /// Password hashes and checks (argon2id, 19 MiB each) running at once on
    /// this node; 0: one per CPU core.
    pub max_concurrent_hashes: usize,
    /// Password hashes and checks waiting for a slot; past this, requests
    /// get RESOURCE_EXHAUSTED with a retry-after.
    pub max_queued_hashes: usize,
    /// Failed logins for one account (tenant and email) before each further
    /// attempt must wait (on this node).
    pub login_failures_per_account: u32,
    /// Failed logins from one source before each further attempt must wait
    /// (on this node).
    pub login_failures_per_source: u32,
    /// The first such wait, in milliseconds; it doubles with each further failure.
    pub login_backoff_ms: u64,
    /// The longest wait, and how long failures are remembered after the
    /// last one, in milliseconds.
    pub login_backoff_max_ms: u64,
    /// Most accounts, and most sources, whose failures this node tracks;
    /// past it the least restrictive entries are dropped first.
    pub login_tracked_max: usize,
}

/// Files and the blob store holding their bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Where chunks live: `local` (every node keeps every chunk under
    /// `data_dir/blobs`, replicated between nodes) or `object` (an
    /// S3-compatible or other object store shared by all nodes).
    pub backend: String,
    /// Object store URL, e.g. `s3://bucket/prefix` (backend `object`).
    pub object_url: String,
    /// Custom endpoint (S3-compatible servers), e.g. `http://127.0.0.1:9000`.
    pub object_endpoint: String,
    /// Region (S3).
    pub object_region: String,
    /// Access key id (S3); empty: from the environment.
    pub object_access_key_id: String,
    /// Secret access key (S3).
    pub object_secret_access_key: String,
    /// Allow plain HTTP endpoints (local test servers).
    pub object_allow_http: bool,
    /// Largest file, in bytes.
    pub max_file_bytes: u64,
    /// Versions kept per file; older ones are dropped.
    pub max_versions: u32,
    /// How long trashed files, folders and documents are kept, in seconds.
    pub trash_retention_secs: u64,
    /// How often the leader sweeps expired trash, shares and links, in ms.
    pub sweep_interval_ms: u64,
    /// How often a node checks that it holds every referenced chunk, in ms.
    pub repair_interval_ms: u64,
    /// How often a node removes unreferenced chunks, in ms.
    pub gc_interval_ms: u64,
    /// An unreferenced chunk is removed only once it is this old (covers
    /// uploads whose metadata has not committed yet), in seconds.
    pub gc_grace_secs: u64,
    /// Longest an upload may take, in seconds.
    pub upload_timeout_secs: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            object_url: String::new(),
            object_endpoint: String::new(),
            object_region: String::new(),
            object_access_key_id: String::new(),
            object_secret_access_key: String::new(),
            object_allow_http: false,
            max_file_bytes: 4 << 30,
            max_versions: 20,
            trash_retention_secs: 30 * 24 * 3600,
            sweep_interval_ms: 60_000,
            repair_interval_ms: 30_000,
            gc_interval_ms: 600_000,
            gc_grace_secs: 24 * 3600,
            upload_timeout_secs: 3600,
        }
    }
}

/// Render workers: turn CAD documents into images on this node's graphics
/// adapter (a GPU, or Mesa's software Vulkan driver).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenderConfig {
    /// Run render workers when an adapter exists (false: never, even with one).
    pub enabled: bool,
    /// Jobs this node renders at once.
    pub workers: u32,
    /// A claimed job's lease; the worker renews it every third of it.
    pub lease_ms: u64,
    /// Attempts a job gets before it fails (a lost worker costs one).
    pub max_attempts: u32,
    /// How often an idle worker looks for queued jobs, in ms.
    pub poll_interval_ms: u64,
    /// How long finished jobs (and their images) are kept, in seconds.
    pub job_retention_secs: u64,
    /// Test hook: every render takes at least this long, in ms (0: off).
    pub min_render_ms: u64,
}

impl Default for RenderConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: 1,
            lease_ms: 15_000,
            max_attempts: caddy_core::render::DEFAULT_MAX_ATTEMPTS,
            poll_interval_ms: 500,
            job_retention_secs: 7 * 24 * 3600,
            min_render_ms: 0,
        }
    }
}

/// How long audit chains keep their entries. These are the defaults for
/// every chain (the operator may give a chain its own with `caddyctl audit
/// retention set`); the leader's values travel in each sweep it proposes,
/// so give every node the same ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Entries at least this old are pruned, in days.
    pub retention_days: u64,
    /// At most this many entries are kept per chain (the oldest go first).
    pub max_entries: u64,
    /// How often the leader prunes chains past their retention, in ms.
    pub sweep_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        let d = caddy_core::identity::AuditRetention::DEFAULT;
        Self { retention_days: d.max_age_ms / DAY_MS, max_entries: d.max_entries, sweep_interval_ms: 60_000 }
    }
}

const DAY_MS: u64 = 24 * 3600 * 1000;

impl AuditConfig {
    /// The default retention the leader's sweeps carry.
    pub fn retention(&self) -> caddy_core::identity::AuditRetention {
        caddy_core::identity::AuditRetention {
            max_age_ms: self.retention_days.saturating_mul(DAY_MS),
            max_entries: self.max_entries,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter (`RUST_LOG` overrides it), e.g. "info" or "caddy_raft=debug,info".
    pub level: String,
    /// One JSON object per line instead of human-readable text.
    pub json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: 1,
            data_dir: PathBuf::from("caddy-data"),
            listen: Listen::default(),
            advertise: Advertise::default(),
            cluster: ClusterConfig::default(),
            raft: RaftConfig::default(),
            limits: Limits::default(),
            files: FilesConfig::default(),
            render: RenderConfig::default(),
            audit: AuditConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self { raft: "127.0.0.1:7001".into(), client: "127.0.0.1:7101".into(), admin: "127.0.0.1:7201".into() }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        let t = caddy_raft::RaftTiming::default();
        Self {
            heartbeat_ms: t.heartbeat_ms,
            election_min_ms: t.election_min_ms,
            election_max_ms: t.election_max_ms,
            snapshot_every: t.snapshot_every,
            keep_behind_snapshot: t.keep_behind_snapshot,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 2 * 1024 * 1024,
            max_value_bytes: 1024 * 1024,
            max_key_bytes: 1024,
            max_streams_per_connection: 256,
            max_connections: 1024,
            max_watches: 1024,
            max_list_limit: 1000,
            request_timeout_ms: 10_000,
            watch_history: caddy_core::limits::EVENT_HISTORY,
            session_ttl_secs: 24 * 3600,
            invite_ttl_secs: 7 * 24 * 3600,
            key_rotation_grace_secs: 24 * 3600,
            doc_max_update_bytes: 1024 * 1024,
            doc_max_document_bytes: 256 * 1024 * 1024,
            doc_max_entities: 1_000_000,
            presence_ttl_ms: 15_000,
            credential_deadline_ms: 10_000,
            idle_timeout_ms: 300_000,
            max_connections_per_source: 64,
            max_concurrent_hashes: 0,
            max_queued_hashes: 64,
            login_failures_per_account: 5,
            login_failures_per_source: 30,
            login_backoff_ms: 1_000,
            login_backoff_max_ms: 300_000,
            login_tracked_max: 65_536,
        }
    }
}

impl Limits {
    /// Every bound has a ceiling, so a configuration cannot allow what the
    /// rest of the system cannot carry: one request becomes one Raft entry,
    /// which must fit in one peer message with room to spare; stored values
    /// stay within what the state machine accepts; documents within what a
    /// node can load and snapshot.
    fn check_ceilings(&self) -> anyhow::Result<()> {
        const MIB: u64 = 1024 * 1024;
        let ceilings: [(&str, u64, u64); 10] = [
            ("max_frame_bytes", self.max_frame_bytes as u64, (caddy_raft::peers::MAX_PEER_MESSAGE / 2) as u64),
            ("max_value_bytes", self.max_value_bytes as u64, caddy_core::limits::MAX_VALUE_BYTES as u64),
            ("max_key_bytes", self.max_key_bytes as u64, caddy_core::limits::MAX_KEY_BYTES as u64),
            ("doc_max_document_bytes", self.doc_max_document_bytes, 1024 * MIB),
            ("doc_max_entities", self.doc_max_entities, 10_000_000),
            ("max_connections", self.max_connections as u64, 1_000_000),
            ("max_watches", self.max_watches as u64, 1_000_000),
            ("max_list_limit", u64::from(self.max_list_limit), 100_000),
            ("watch_history", self.watch_history, 100_000_000),
            ("request_timeout_ms", self.request_timeout_ms, 600_000),
        ];
        for (name, value, ceiling) in ceilings {
            if value > ceiling {
                bail!("limits.{name} = {value} is over its ceiling of {ceiling}");
            }
            if value == 0 {
                bail!("limits.{name} must be at least 1");
            }
        }
        Ok(())
    }

    /// The bounds on unauthenticated and guessing clients: each within a
    /// range where it still protects the node and still lets clients work.
    fn validate_edge(&self) -> anyhow::Result<()> {
        fn within<T: PartialOrd + std::fmt::Display>(name: &str, value: T, min: T, max: T) -> anyhow::Result<()> {
            if value < min || value > max {
                bail!("limits.{name} must be between {min} and {max} (it is {value})");
            }
            Ok(())
        }
        within("credential_deadline_ms", self.credential_deadline_ms, 500, 600_000)?;
        within("idle_timeout_ms", self.idle_timeout_ms, 500, 86_400_000)?;
        within("max_connections_per_source", self.max_connections_per_source, 1, self.max_connections.max(1))?;
        within("max_concurrent_hashes", self.max_concurrent_hashes, 0, 256)?;
        within("max_queued_hashes", self.max_queued_hashes, 0, 100_000)?;
        within("login_failures_per_account", self.login_failures_per_account, 1, 1_000)?;
        within("login_failures_per_source", self.login_failures_per_source, 1, 100_000)?;
        within("login_backoff_max_ms", self.login_backoff_max_ms, 1_000, 86_400_000)?;
        within("login_backoff_ms", self.login_backoff_ms, 1, self.login_backoff_max_ms)?;
        within("login_tracked_max", self.login_tracked_max, 16, 10_000_000)?;
        Ok(())
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), json: false }
    }
}

impl Config {
    /// Loads `path` (if given) over the defaults, then applies `CADDY_*` variables.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?,
            None => String::new(),
        };
        let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("CADDY_")).collect();
        Self::from_parts(&text, &env)
    }

    /// Parses `text` and applies `env` overrides (separated for tests).
    pub fn from_parts(text: &str, env: &[(String, String)]) -> anyhow::Result<Self> {
        let mut value = toml::Value::try_from(Config::default())?;
        let file: toml::Value = toml::from_str(text).context("config is not valid TOML")?;
        merge(&mut value, file);
        for (key, raw) in env {
            apply_env(&mut value, key, raw)?;
        }
        let config: Config = value.try_into().context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.node_id == 0 {
            bail!("node_id must not be 0");
        }
        if self.raft.election_min_ms <= self.raft.heartbeat_ms || self.raft.election_max_ms <= self.raft.election_min_ms
        {
            bail!("raft timing must satisfy heartbeat_ms < election_min_ms < election_max_ms");
        }
        if self.limits.max_frame_bytes < self.limits.max_value_bytes + self.limits.max_key_bytes + 1024 {
            bail!("limits.max_frame_bytes must exceed max_value_bytes + max_key_bytes by at least 1 KiB");
        }
        if (self.limits.max_frame_bytes as u64) < self.limits.doc_max_update_bytes + 64 * 1024 {
            bail!("limits.max_frame_bytes must exceed doc_max_update_bytes by at least 64 KiB");
        }
        if self.limits.presence_ttl_ms < 1000 {
            bail!("limits.presence_ttl_ms must be at least 1000");
        }
        self.limits.validate_edge()?;
        match self.files.backend.as_str() {
            "local" => {}
            "object" if !self.files.object_url.is_empty() => {}
            "object" => bail!("files.backend = \"object\" needs files.object_url"),
            other => bail!("files.backend {other:?} must be \"local\" or \"object\""),
        }
        if self.files.max_versions == 0 {
            bail!("files.max_versions must be at least 1");
        }
        let r = &self.render;
        if r.workers == 0 || r.workers > 64 {
            bail!("render.workers must be 1 to 64");
        }
        if r.lease_ms < 1000 || r.max_attempts == 0 || r.poll_interval_ms == 0 {
            bail!("render.lease_ms must be at least 1000, render.max_attempts and render.poll_interval_ms at least 1");
        }
        self.audit.retention().validate().map_err(|e| anyhow::anyhow!("audit: {}", e.message))?;
        if self.audit.sweep_interval_ms < 100 {
            bail!("audit.sweep_interval_ms must be at least 100");
        }
        if self.files.gc_grace_secs < self.files.upload_timeout_secs.saturating_mul(2) {
            bail!("files.gc_grace_secs must be at least twice files.upload_timeout_secs");
        }
        if self.cluster.bootstrap && !self.cluster.join.is_empty() {
            bail!("cluster.bootstrap and cluster.join are mutually exclusive");
        }
        for addr in [&self.listen.raft, &self.listen.client, &self.listen.admin] {
            addr.parse::<std::net::SocketAddr>()
                .with_context(|| format!("listen address {addr:?} is not host:port"))?;
        }
        self.limits.check_ceilings()
    }

    /// Advertised peer address.
    pub fn advertise_raft(&self) -> String {
        pick(&self.advertise.raft, &self.listen.raft)
    }
    /// Advertised client address.
    pub fn advertise_client(&self) -> String {
        pick(&self.advertise.client, &self.listen.client)
    }
    /// Advertised admin address.
    pub fn advertise_admin(&self) -> String {
        pick(&self.advertise.admin, &self.listen.admin)
    }

    /// Raft timing.
    pub fn timing(&self) -> caddy_raft::RaftTiming {
        caddy_raft::RaftTiming {
            heartbeat_ms: self.raft.heartbeat_ms,
            election_min_ms: self.raft.election_min_ms,
            election_max_ms: self.raft.election_max_ms,
            snapshot_every: self.raft.snapshot_every,
            keep_behind_snapshot: self.raft.keep_behind_snapshot,
        }
    }
}

fn pick(advertised: &str, listen: &str) -> String {
    if advertised.is_empty() { listen.to_string() } else { advertised.to_string() }
}

fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn apply_env(value: &mut toml::Value, key: &str, raw: &str) -> anyhow::Result<()> {
    let name = key.trim_start_matches("CADDY_").to_ascii_lowercase();
    let Some(root) = value.as_table_mut() else { return Ok(()) };
    // Top-level field (node_id, data_dir) first, then section_field.
    let (table, field) = if root.contains_key(&name) && !root[&name].is_table() {
        (root, name.clone())
    } else {
        let Some(section) = root.keys().find(|s| root[*s].is_table() && name.starts_with(&format!("{s}_"))).cloned()
        else {
            // Not one of ours (e.g. CADDY_CONFIG for caddyctl): ignore.
            return Ok(());
        };
        let field = name[section.len() + 1..].to_string();
        let Some(table) = root.get_mut(&section).and_then(|t| t.as_table_mut()) else { return Ok(()) };
        (table, field)
    };
    let Some(existing) = table.get(&field) else {
        bail!("environment variable {key} names no configuration field");
    };
    let parsed = match existing {
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.parse().with_context(|| format!("{key} must be an integer"))?)
        }
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(raw.parse().with_context(|| format!("{key} must be true or false"))?)
        }
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    };
    table.insert(field, parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_config_parses() {
        let config = Config::from_parts(include_str!("../../../config/node1.toml"), &[]).unwrap();
        assert_eq!((config.render.workers, config.files.max_versions), (1, 20));
    }

    #[test]
    fn file_then_env_override_defaults() {
        let text = "node_id = 2\ndata_dir = \"/tmp/x\"\n[listen]\nraft = \"127.0.0.1:9001\"\n[cluster]\njoin = [\"127.0.0.1:7001\"]\n";
        let env = vec![
            ("CADDY_LISTEN_CLIENT".to_string(), "127.0.0.1:9101".to_string()),
            ("CADDY_LIMITS_MAX_WATCHES".to_string(), "7".to_string()),
            ("CADDY_LIMITS_IDLE_TIMEOUT_MS".to_string(), "1500".to_string()),
            ("CADDY_CLUSTER_JOIN".to_string(), "a:1, b:2".to_string()),
            ("CADDY_DATA_DIR".to_string(), "/tmp/y".to_string()),
            ("CADDY_CONFIG".to_string(), "ignored".to_string()),
        ];
        let c = Config::from_parts(text, &env).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/y"));
        assert_eq!(c.listen.raft, "127.0.0.1:9001");
        assert_eq!(c.listen.client, "127.0.0.1:9101");
        assert_eq!(c.limits.max_watches, 7);
        assert_eq!(c.limits.idle_timeout_ms, 1500);
        assert_eq!(c.cluster.join, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(c.advertise_raft(), "127.0.0.1:9001");
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        for (text, needle) in [
            ("node_id = 0", "node_id"),
            ("nodeid = 3", "unknown field"),
            ("[raft]\nheartbeat_ms = 500", "raft timing"),
            ("[listen]\nraft = \"nowhere\"", "host:port"),
            ("[cluster]\nbootstrap = true\njoin = [\"a:1\"]", "mutually exclusive"),
            (
                "[limits]\ndoc_max_document_bytes = 2000000000",
                "doc_max_document_bytes = 2000000000 is over its ceiling",
            ),
            ("[limits]\ndoc_max_entities = 20000000", "doc_max_entities = 20000000 is over its ceiling"),
            ("[limits]\nmax_frame_bytes = 67108864\nmax_value_bytes = 1048576", "max_frame_bytes = 67108864 is over"),
            ("[limits]\nmax_value_bytes = 20971520\nmax_frame_bytes = 33554432", "max_value_bytes = 20971520"),
            ("[limits]\nmax_watches = 0", "max_watches must be at least 1"),
            ("[limits]\ncredential_deadline_ms = 0", "credential_deadline_ms must be between 500 and 600000"),
            ("[limits]\nidle_timeout_ms = 100", "idle_timeout_ms"),
            ("[limits]\nmax_connections_per_source = 0", "max_connections_per_source"),
            ("[limits]\nmax_connections = 10\nmax_connections_per_source = 11", "between 1 and 10"),
            ("[limits]\nmax_concurrent_hashes = 100000", "max_concurrent_hashes"),
            ("[limits]\nlogin_failures_per_account = 0", "login_failures_per_account"),
            ("[limits]\nlogin_backoff_ms = 600000", "login_backoff_ms must be between 1 and 300000"),
            ("[limits]\nlogin_tracked_max = 1", "login_tracked_max"),
            ("[audit]\nretention_days = 0", "audit retention by age must be between 1 and 36500 days"),
            ("[audit]\nmax_entries = 0", "audit retention by count"),
            ("[audit]\nsweep_interval_ms = 10", "audit.sweep_interval_ms"),
        ] {
            let err = format!("{:#}", Config::from_parts(text, &[]).unwrap_err());
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let err = Config::from_parts("", &[("CADDY_LIMITS_MAX_WATCHES".into(), "lots".into())]).unwrap_err();
        assert!(format!("{err:#}").contains("integer"));
        let err = Config::from_parts("", &[("CADDY_LIMITS_NOPE".into(), "1".into())]).unwrap_err();
        assert!(format!("{err:#}").contains("names no configuration field"));
    }

    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::from_parts(&std::fs::read_to_string(&path).unwrap(), &[])
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 3, "expected an example config per node in config/");
    }
}
