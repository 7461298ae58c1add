//! Harness for multi-process tests: a `caddyd dev` cluster in a temp dir,
//! `caddyctl` runs, kill -9 and restarts. Everything it starts is stopped
//! when the harness is dropped.

#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use caddy_client::identity::IdentityCall;
use caddy_client::{Client, ClientConfig};

/// Path of a workspace binary next to this test executable's directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/test-hash -> target/debug/NAME
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} not built: run `cargo build --bins` first (scripts/test.sh does)", path.display());
    path
}

/// A local cluster started with `caddyd dev`.
pub struct Dev {
    pub dir: PathBuf,
    pub nodes: u64,
    dev: Option<Child>,
    extra: Vec<Child>,
    env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

pub fn signal(pid: u32, sig: i32) {
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

impl Dev {
    /// Starts a new cluster of `nodes` nodes in a fresh temp dir.
    pub fn start(nodes: u64, env: &[(&str, &str)]) -> Dev {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("cluster");
        let mut dev = Dev {
            dir,
            nodes,
            dev: None,
            extra: Vec::new(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            _tmp: Some(tmp),
        };
        dev.launch();
        dev
    }

    /// Starts `caddyd dev` on an existing dir (kept by the caller).
    pub fn resume(dir: &Path, nodes: u64) -> Dev {
        let mut dev = Dev { dir: dir.to_path_buf(), nodes, dev: None, extra: Vec::new(), env: Vec::new(), _tmp: None };
        dev.launch();
        dev
    }

    fn launch(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("dir");
        let _ = std::fs::remove_file(self.dir.join("client.toml"));
        let log = std::fs::File::create(self.dir.join("dev.log")).expect("dev log");
        let mut cmd = Command::new(bin("caddyd"));
        cmd.arg("dev").arg("--nodes").arg(self.nodes.to_string()).arg("--dir").arg(&self.dir);
        cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("log")).stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn caddyd dev");
        self.dev = Some(child);
        let out = self.dir.join("dev.log");
        let dev = self.dev.as_mut().expect("dev");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let text = String::from_utf8_lossy(&std::fs::read(&out).unwrap_or_default()).into_owned();
            if text.contains("client config:") {
                break;
            }
            if let Ok(Some(status)) = dev.try_wait() {
                panic!("caddyd dev exited ({status}):\n{text}{}", node_logs(&self.dir, self.nodes));
            }
            assert!(
                Instant::now() < deadline,
                "caddyd dev did not come up:\n{text}{}",
                node_logs(&self.dir, self.nodes)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Path of the client config.
    pub fn client_toml(&self) -> PathBuf {
        self.dir.join("client.toml")
    }

    /// An SDK client for the whole cluster.
    pub async fn client(&self) -> Client {
        Client::connect(ClientConfig::from_file(self.client_toml()).expect("client config")).await.expect("connect")
    }

    /// An SDK client bound to a single node.
    pub async fn client_for(&self, node: u64) -> Client {
        let mut config = ClientConfig::from_file(self.client_toml()).expect("client config");
        config.endpoints = vec![self.client_addr(node)];
        Client::connect(config).await.expect("connect")
    }

    /// `caddyctl --config client.toml ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("caddyctl"))
            .arg("--config")
            .arg(self.client_toml())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run caddyctl")
    }

    /// `caddyctl` that must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        succeeded(args, self.ctl(args))
    }

    /// `caddyctl --config client.toml ARGS` with `input` on stdin (and no
    /// credentials or tenant from the environment).
    pub fn ctl_in(&self, args: &[&str], input: &str) -> Output {
        let mut child = Command::new(bin("caddyctl"))
            .arg("--config")
            .arg(self.client_toml())
            .args(args)
            .env_remove("CADDY_CREDENTIALS")
            .env_remove("CADDY_TENANT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run caddyctl");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("caddyctl output")
    }

    /// [`Dev::ctl_in`] that must succeed; returns stdout.
    pub fn ctl_in_ok(&self, args: &[&str], input: &str) -> String {
        succeeded(args, self.ctl_in(args, input))
    }

    /// Cluster status as JSON.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ctl_ok(&["--json", "cluster", "status"])).expect("status json")
    }

    /// The leader's id according to the cluster.
    pub fn leader(&self) -> u64 {
        let mut leader = 0;
        wait_until("a leader", Duration::from_secs(30), || {
            let out = self.ctl(&["--json", "cluster", "status"]);
            if !out.status.success() {
                return false;
            }
            let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
                Ok(v) => v,
                Err(_) => return false,
            };
            match v["leader"].as_u64() {
                Some(l) => {
                    leader = l;
                    true
                }
                None => false,
            }
        });
        leader
    }

    fn node_file(&self, node: u64, name: &str) -> PathBuf {
        self.dir.join(format!("node{node}")).join(name)
    }

    /// Everything a node has logged so far (lossily decoded).
    pub fn node_log(&self, node: u64) -> String {
        String::from_utf8_lossy(&std::fs::read(self.node_file(node, "caddyd.log")).unwrap_or_default()).into_owned()
    }

    /// A client that talks to `node` only, with a `timeout` per request.
    pub async fn client_for_with_timeout(&self, node: u64, timeout: Duration) -> Client {
        let mut config = ClientConfig::from_file(self.client_toml()).expect("client config");
        config.endpoints = vec![self.client_addr(node)];
        config.request_timeout = timeout;
        Client::connect(config).await.expect("connect")
    }

    /// The pid `caddyd dev` recorded for a node.
    pub fn pid(&self, node: u64) -> u32 {
        let text = std::fs::read_to_string(self.node_file(node, "caddyd.pid")).expect("pid file");
        text.trim().parse().expect("pid")
    }

    fn node_config(&self, node: u64) -> String {
        std::fs::read_to_string(self.node_file(node, "caddyd.toml")).expect("node config")
    }

    fn config_value(&self, node: u64, key: &str) -> String {
        let text = self.node_config(node);
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")).map(|r| r.trim_end_matches('"').to_string()))
            .unwrap_or_else(|| panic!("{key} missing in node {node} config"))
    }

    pub fn client_addr(&self, node: u64) -> String {
        self.config_value(node, "client")
    }
    pub fn raft_addr(&self, node: u64) -> String {
        self.config_value(node, "raft")
    }
    pub fn admin_addr(&self, node: u64) -> String {
        self.config_value(node, "admin")
    }

    /// kill -9 a node.
    pub fn kill9(&self, node: u64) {
        let pid = self.pid(node);
        signal(pid, libc::SIGKILL);
        // Wait until the process is gone (its listeners closed, its files
        // and their locks released). The main thread shows as a zombie
        // while other threads may still be exiting with the files open, so
        // a zombie counts only once it is the last thread.
        wait_until("the killed node to die", Duration::from_secs(10), || {
            let zombie =
                std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true);
            let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
            !Path::new(&format!("/proc/{pid}")).exists() || (zombie && threads <= 1)
        });
    }

    /// Restarts a node with its dev config (as a child of the test).
    pub fn restart(&mut self, node: u64) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.node_file(node, "caddyd.log"))
            .expect("log");
        let mut cmd = Command::new(bin("caddyd"));
        cmd.arg("start").arg("--config").arg(self.node_file(node, "caddyd.toml")).stdin(Stdio::null());
        cmd.stdout(log.try_clone().expect("log")).stderr(log);
        // The same environment the cluster started with.
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("restart node");
        std::fs::write(self.node_file(node, "caddyd.pid"), format!("{}\n", child.id())).expect("pid");
        self.extra.push(child);
    }

    /// Restarts a node with `env` instead of the cluster's environment.
    pub fn restart_with(&mut self, node: u64, env: &[(&str, &str)]) {
        let saved = std::mem::replace(&mut self.env, env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        self.restart(node);
        self.env = saved;
    }

    /// Starts `caddyd start --config FILE` with extra environment, as a
    /// child of the test (stopped with the cluster).
    pub fn spawn_node(&mut self, config: &Path, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(config.with_file_name("caddyd.log"))
            .expect("log");
        let mut cmd = Command::new(bin("caddyd"));
        cmd.arg("start").arg("--config").arg(config).stdin(Stdio::null());
        cmd.stdout(log.try_clone().expect("log")).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.extra.push(cmd.spawn().expect("start node"));
    }

    /// Stops the whole cluster gracefully (SIGTERM to `caddyd dev`).
    pub fn stop(&mut self) {
        if let Some(dev) = self.dev.take() {
            terminate(dev, Duration::from_secs(30));
        }
        for child in self.extra.drain(..) {
            terminate(child, Duration::from_secs(15));
        }
        // Leave no node behind, whatever happened.
        for node in 1..=self.nodes {
            if let Ok(text) = std::fs::read_to_string(self.node_file(node, "caddyd.pid"))
                && let Ok(pid) = text.trim().parse::<u32>()
                && std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("caddyd"))
            {
                signal(pid, libc::SIGKILL);
            }
        }
    }

    /// Keeps the directory after drop (for resume tests).
    pub fn keep_dir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }
}

/// Stdout of a `caddyctl` run that must have succeeded.
fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "caddyctl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SIGTERM, wait up to `grace` for a clean exit, then SIGKILL.
fn terminate(mut child: Child, grace: Duration) {
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port free for both TCP and UDP right now, outside the
/// ephemeral range other processes' connections draw from.
pub fn free_port() -> u16 {
    caddy_wire::ports::free_loopback_port().expect("a free loopback port")
}

/// The end of each node's log, for a failure message.
fn node_logs(dir: &Path, nodes: u64) -> String {
    let mut out = String::new();
    for id in 1..=nodes {
        let bytes = std::fs::read(dir.join(format!("node{id}")).join("caddyd.log")).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("\n--- node{id}/caddyd.log (end) ---\n"));
        out.push_str(&lines[lines.len().saturating_sub(30)..].join("\n"));
    }
    out
}

/// GET over HTTPS trusting the cluster CA; returns (status, body).
pub async fn https_get(addr: &str, ca_pem: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = caddy_wire::tls::client_config(ca_pem, &[b"http/1.1"]).expect("tls config");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    // Status 0: nothing listening (yet), e.g. a node still starting.
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else { return (0, String::new()) };
    let name = rustls::pki_types::ServerName::try_from(caddy_wire::CLUSTER_SERVER_NAME).expect("name");
    let Ok(mut tls) = connector.connect(name, tcp).await else { return (0, String::new()) };
    let req = format!("GET {path} HTTP/1.1\r\nHost: caddy\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// An SDK client with a credential and tenant (optionally bound to one node).
pub async fn client_as(dev: &Dev, node: Option<u64>, credential: &str, tenant: &str) -> Client {
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
    if let Some(n) = node {
        config.endpoints = vec![dev.client_addr(n)];
    }
    config.credential = credential.to_owned();
    config.tenant = Some(tenant.to_owned());
    config.request_timeout = Duration::from_secs(20);
    Client::connect(config).await.expect("connect")
}

/// Creates tenant `acme` with users of the given roles; returns their session tokens.
pub async fn setup(dev: &Dev, people: &[(&str, &str)]) -> Vec<String> {
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
    config.tenant = None;
    let operator = Client::connect(config.clone()).await.expect("connect");
    let call = IdentityCall::TenantCreate { id: "acme".into(), name: "Acme".into(), plan: String::new(), quotas: None };
    operator.identity(&call).await.expect("tenant");
    config.tenant = Some("acme".into());
    let acme = Client::connect(config).await.expect("connect");
    let mut tokens = Vec::new();
    for (email, role) in people {
        let call = IdentityCall::UserCreate {
            email: (*email).into(),
            display_name: (*email).into(),
            password: "correct horse battery".into(),
            roles: [role.to_string()].into(),
        };
        acme.identity(&call).await.expect("user");
        let (token, _) = acme.login(email, "correct horse battery").await.expect("login");
        tokens.push(token);
    }
    tokens
}

pub async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deterministic, incompressible bytes (xorshift), different per `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
