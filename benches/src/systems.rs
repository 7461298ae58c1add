//! The two systems under test behind one small key-value interface, plus the
//! cluster control the failover run needs (who leads, which PID, is every
//! member healthy, restart a member).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use caddy_client::{Client as CaddyClient, ClientConfig};
use clap::ValueEnum;
use etcd_client::{Certificate, Client as EtcdClient, ConnectOptions, TlsOptions};

/// Which system a run targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// CADDY through `caddy_client::Client` (QUIC + TLS 1.3).
    Caddy,
    /// etcd through the `etcd-client` crate (gRPC over HTTPS).
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Caddy => "caddy",
            System::Etcd => "etcd",
        }
    }
}

/// Per-request bound used for both systems (CADDY's SDK default).
pub const REQUEST_TIMEOUT: Duration = caddy_client::DEFAULT_REQUEST_TIMEOUT;
/// Connection establishment bound for both systems (CADDY's SDK default).
pub const CONNECT_TIMEOUT: Duration = caddy_client::DEFAULT_CONNECT_TIMEOUT;

/// How to reach the system under test.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// System under test.
    #[arg(long, value_enum)]
    pub system: System,
    /// CADDY: the `client.toml` written by `caddyd dev`.
    #[arg(long, value_name = "FILE")]
    pub caddy_config: Option<PathBuf>,
    /// etcd: comma-separated https client URLs, in member order (m1,m2,m3).
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    pub etcd_endpoints: Vec<String>,
    /// etcd: PEM of the CA that signed the members' certificates.
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
}

/// A connected key-value handle. Clones share connections.
#[derive(Clone)]
pub enum Kv {
    Caddy(CaddyClient),
    Etcd(std::sync::Arc<EtcdClient>),
}

fn etcd_options(ca_pem: &str, timeout: Duration, connect_timeout: Duration) -> ConnectOptions {
    let tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca_pem));
    ConnectOptions::new().with_tls(tls).with_timeout(timeout).with_connect_timeout(connect_timeout)
}

impl Target {
    pub fn caddy_config(&self) -> anyhow::Result<ClientConfig> {
        let path = self.caddy_config.as_ref().context("--caddy-config is required for --system caddy")?;
        ClientConfig::from_file(path).with_context(|| format!("reading {}", path.display()))
    }

    pub fn etcd_ca_pem(&self) -> anyhow::Result<String> {
        let path = self.etcd_ca.as_ref().context("--etcd-ca is required for --system etcd")?;
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }

    /// Connects to every endpoint of the system (the way an application
    /// would), with the shared request and connect timeouts.
    pub async fn connect(&self) -> anyhow::Result<Kv> {
        match self.system {
            System::Caddy => {
                let mut config = self.caddy_config()?;
                config.request_timeout = REQUEST_TIMEOUT;
                config.connect_timeout = CONNECT_TIMEOUT;
                Ok(Kv::Caddy(CaddyClient::connect(config).await?))
            }
            System::Etcd => {
                if self.etcd_endpoints.is_empty() {
                    bail!("--etcd-endpoints is required for --system etcd");
                }
                let options = etcd_options(&self.etcd_ca_pem()?, REQUEST_TIMEOUT, CONNECT_TIMEOUT);
                let client = EtcdClient::connect(&self.etcd_endpoints, Some(options)).await?;
                Ok(Kv::Etcd(std::sync::Arc::new(client)))
            }
        }
    }
}

impl Kv {
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), String> {
        match self {
            Kv::Caddy(c) => c.put(key, value).await.map(drop).map_err(|e| e.to_string()),
            Kv::Etcd(c) => c.kv_client().put(key, value, None).await.map(drop).map_err(|e| e.to_string()),
        }
    }

    /// A linearizable read that must find a value of `expect_len` bytes.
    pub async fn get(&self, key: &str, expect_len: usize) -> Result<(), String> {
        let len = match self {
            Kv::Caddy(c) => {
                let resp = c.get(key).await.map_err(|e| e.to_string())?;
                resp.kv.map(|kv| kv.value.len())
            }
            Kv::Etcd(c) => {
                // No GetOptions: etcd's default range request is linearizable.
                let resp = c.kv_client().get(key, None).await.map_err(|e| e.to_string())?;
                resp.kvs().first().map(|kv| kv.value().len())
            }
        };
        match len {
            Some(n) if n == expect_len => Ok(()),
            Some(n) => Err(format!("{key}: value of {n} bytes, expected {expect_len}")),
            None => Err(format!("{key}: not found")),
        }
    }
}

/// One member of a cluster as the failover run sees it.
#[derive(Debug, Clone)]
pub struct Member {
    /// CADDY node id, or etcd member number (1-based position in --etcd-endpoints).
    pub id: u64,
    /// The id Raft knows it by (CADDY: the node id; etcd: the member id).
    pub raft_id: u64,
    pub pid: i32,
}

/// A status probe of one member, to see when it knows a new leader.
#[derive(Clone)]
pub enum Probe {
    Caddy(CaddyClient),
    Etcd(Box<EtcdClient>),
}

impl Probe {
    /// The leader (Raft id) this member currently knows, if any.
    pub async fn leader(&self) -> Option<u64> {
        match self {
            Probe::Caddy(c) => c.status().await.ok().and_then(|s| s.leader),
            Probe::Etcd(c) => c.as_ref().clone().status().await.ok().map(|s| s.leader()).filter(|&l| l != 0),
        }
    }
}

/// Reads a PID file.
pub fn read_pid(path: &Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim().parse().with_context(|| format!("{}: not a PID", path.display()))
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 is the state; the command name before it is in parentheses.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Sends SIGKILL to `pid`.
pub fn kill9(pid: i32) -> anyhow::Result<()> {
    if pid <= 1 {
        bail!("refusing to signal PID {pid}");
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    if rc != 0 {
        bail!("kill -9 {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Cluster control for the failover run.
// One value per run: the size of the CADDY variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Control {
    Caddy {
        /// Multi-endpoint client for status (not shared with the load).
        client: CaddyClient,
        /// One single-endpoint client per node, by client address.
        probes: HashMap<String, CaddyClient>,
        config: ClientConfig,
        /// Client address of each node, by id (from the last status).
        addrs: HashMap<u64, String>,
        /// The `caddyd dev` directory (nodeN/caddyd.{toml,pid,log}).
        dir: PathBuf,
        /// The `caddyd` binary, to restart killed nodes.
        caddyd: Option<PathBuf>,
    },
    Etcd {
        /// One single-endpoint client per member, in member order.
        probes: Vec<EtcdClient>,
        /// Where run.sh keeps mN.sh (start script) and mN.pid.
        dir: Option<PathBuf>,
        /// Member ids, in member order (learned when all members answered).
        ids: Vec<u64>,
    },
}

/// Per-probe bounds: a probe must answer quickly or count as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Control {
    pub async fn new(
        target: &Target,
        caddy_dir: Option<&Path>,
        caddyd: Option<&Path>,
        etcd_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        match target.system {
            System::Caddy => {
                let mut config = target.caddy_config()?;
                config.request_timeout = Duration::from_secs(2);
                config.connect_timeout = PROBE_TIMEOUT;
                let dir = match caddy_dir {
                    Some(d) => d.to_path_buf(),
                    None => target
                        .caddy_config
                        .as_ref()
                        .and_then(|p| p.parent())
                        .context("--caddy-dir is required")?
                        .to_path_buf(),
                };
                Ok(Control::Caddy {
                    client: CaddyClient::connect(config.clone()).await?,
                    probes: HashMap::new(),
                    config,
                    addrs: HashMap::new(),
                    dir,
                    caddyd: caddyd.map(Path::to_path_buf),
                })
            }
            System::Etcd => {
                let dir = etcd_dir.map(Path::to_path_buf);
                let ca = target.etcd_ca_pem()?;
                let mut probes = Vec::new();
                for endpoint in &target.etcd_endpoints {
                    let options = etcd_options(&ca, PROBE_TIMEOUT, PROBE_TIMEOUT);
                    probes.push(EtcdClient::connect([endpoint.as_str()], Some(options)).await?);
                }
                if probes.is_empty() {
                    bail!("--etcd-endpoints is required");
                }
                Ok(Control::Etcd { probes, dir, ids: Vec::new() })
            }
        }
    }

    fn caddy_pid_file(dir: &Path, id: u64) -> PathBuf {
        dir.join(format!("node{id}")).join("caddyd.pid")
    }

    fn etcd_pid_file(dir: &Path, n: u64) -> PathBuf {
        dir.join(format!("m{n}.pid"))
    }

    /// The current leader and its PID.
    pub async fn leader(&mut self) -> anyhow::Result<Member> {
        match self {
            Control::Caddy { client, dir, addrs, .. } => {
                let status = client.status().await?;
                let id = status.leader.context("no leader")?;
                for m in &status.members {
                    addrs.insert(m.id, m.client_addr.clone());
                }
                let pid = read_pid(&Self::caddy_pid_file(dir, id))?;
                Ok(Member { id, raft_id: id, pid })
            }
            Control::Etcd { probes, dir, ids } => {
                let mut seen = Vec::new();
                let mut leader = 0;
                for probe in probes.iter_mut() {
                    match tokio::time::timeout(2 * PROBE_TIMEOUT, probe.status()).await {
                        Ok(Ok(status)) => {
                            seen.push(status.header().map_or(0, |h| h.member_id()));
                            if leader == 0 {
                                leader = status.leader();
                            }
                        }
                        _ => seen.push(0),
                    }
                }
                if !seen.contains(&0) {
                    *ids = seen;
                }
                if leader == 0 {
                    bail!("no member knows a leader");
                }
                let pos = ids.iter().position(|&id| id == leader).context("leader is not a known member")?;
                let n = pos as u64 + 1;
                let dir = dir.as_deref().context("--etcd-dir is required to find PIDs")?;
                let pid = read_pid(&Self::etcd_pid_file(dir, n))?;
                Ok(Member { id: n, raft_id: leader, pid })
            }
        }
    }

    /// Single-member status probes of every member but `victim` (as of the
    /// last [`Control::leader`] call).
    pub async fn survivor_probes(&mut self, victim: &Member) -> Vec<Probe> {
        match self {
            Control::Caddy { addrs, probes, config, .. } => {
                let mut out = Vec::new();
                for (&id, addr) in addrs.iter() {
                    if id == victim.id {
                        continue;
                    }
                    if !probes.contains_key(addr) {
                        let mut c = config.clone();
                        c.endpoints = vec![addr.clone()];
                        if let Ok(probe) = CaddyClient::connect(c).await {
                            probes.insert(addr.clone(), probe);
                        }
                    }
                    if let Some(p) = probes.get(addr) {
                        out.push(Probe::Caddy(p.clone()));
                    }
                }
                out
            }
            Control::Etcd { probes, .. } => probes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i as u64 + 1 != victim.id)
                .map(|(_, p)| Probe::Etcd(Box::new(p.clone())))
                .collect(),
        }
    }

    /// `Ok(())` when every member answers, all agree on one leader, and no
    /// member is more than `max_lag` entries behind.
    pub async fn healthy(&mut self, max_lag: u64) -> Result<(), String> {
        match self {
            Control::Caddy { client, probes, config, .. } => {
                let status = client.status().await.map_err(|e| format!("status: {e}"))?;
                let leader = status.leader.ok_or("no leader")?;
                if status.members.is_empty() {
                    return Err("no members".into());
                }
                for m in &status.members {
                    if m.role != "voter" || m.health != "healthy" || m.lag.unwrap_or(u64::MAX) > max_lag {
                        return Err(format!("node {}: {} {} lag {:?}", m.id, m.role, m.health, m.lag));
                    }
                    if !probes.contains_key(&m.client_addr) {
                        let mut c = config.clone();
                        c.endpoints = vec![m.client_addr.clone()];
                        let probe = CaddyClient::connect(c).await.map_err(|e| e.to_string())?;
                        probes.insert(m.client_addr.clone(), probe);
                    }
                    let probe = &probes[&m.client_addr];
                    let own = tokio::time::timeout(2 * PROBE_TIMEOUT, probe.status())
                        .await
                        .map_err(|_| format!("node {}: no status answer", m.id))?
                        .map_err(|e| format!("node {}: {e}", m.id))?;
                    if own.leader != Some(leader) {
                        return Err(format!("node {} sees leader {:?}, not {leader}", m.id, own.leader));
                    }
                }
                Ok(())
            }
            Control::Etcd { probes, .. } => {
                let mut leaders = Vec::new();
                let mut applied = Vec::new();
                for (i, probe) in probes.iter_mut().enumerate() {
                    let status = tokio::time::timeout(2 * PROBE_TIMEOUT, probe.status())
                        .await
                        .map_err(|_| format!("member {}: no status answer", i + 1))?
                        .map_err(|e| format!("member {}: {e}", i + 1))?;
                    if !status.errors().is_empty() {
                        return Err(format!("member {}: {:?}", i + 1, status.errors()));
                    }
                    leaders.push(status.leader());
                    let index =
                        if status.raft_applied_index() > 0 { status.raft_applied_index() } else { status.raft_index() };
                    applied.push(index);
                }
                if leaders[0] == 0 || leaders.iter().any(|&l| l != leaders[0]) {
                    return Err(format!("leaders disagree or none: {leaders:?}"));
                }
                let max = applied.iter().copied().max().unwrap_or(0);
                if let Some(min) = applied.iter().copied().min()
                    && max - min > max_lag
                {
                    return Err(format!("applied indexes too far apart: {applied:?}"));
                }
                Ok(())
            }
        }
    }

    /// Restarts a killed member, detached (its own process group), the way it
    /// was first started. Returns the new process's PID.
    pub fn restart(&self, member: &Member) -> anyhow::Result<u32> {
        let child = match self {
            Control::Caddy { dir, caddyd, .. } => {
                let ndir = dir.join(format!("node{}", member.id));
                let log = std::fs::OpenOptions::new().create(true).append(true).open(ndir.join("caddyd.log"))?;
                let caddyd = caddyd.as_deref().context("--caddyd is required to restart nodes")?;
                let mut cmd = Command::new(caddyd);
                cmd.arg("start").arg("--config").arg(ndir.join("caddyd.toml"));
                cmd.env_remove("CADDY_CLUSTER_JOIN_TOKEN");
                cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
                std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
                cmd.spawn().with_context(|| format!("restarting CADDY node {}", member.id))?
            }
            Control::Etcd { dir, .. } => {
                // mN.sh writes its PID to mN.pid and execs etcd with its
                // original command line (run.sh wrote it).
                let dir = dir.as_deref().context("--etcd-dir is required to restart members")?;
                let mut cmd = Command::new("bash");
                cmd.arg(dir.join(format!("m{}.sh", member.id)));
                cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
                std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
                cmd.spawn().with_context(|| format!("restarting etcd member {}", member.id))?
            }
        };
        let pid = child.id();
        // Reap it in the background if it exits while we run; otherwise it
        // outlives us and run.sh stops it through its PID file.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(pid)
    }

    /// PID file of a member, for the record.
    pub fn pid_file(&self, member: &Member) -> PathBuf {
        match self {
            Control::Caddy { dir, .. } => Self::caddy_pid_file(dir, member.id),
            Control::Etcd { dir, .. } => Self::etcd_pid_file(dir.as_deref().unwrap_or(Path::new(".")), member.id),
        }
    }
}
