//! `caddy-bench`: the load-generating half of the CADDY vs etcd benchmark
//! (`benches/run.sh` is the orchestrating half; see `benches/README.md`).
//!
//! Subcommands, each printing one JSON line on stdout (diagnostics go to
//! stderr):
//! - `kv`: closed-loop puts or linearizable gets through
//!   `caddy_client::loadgen::run`, for either system, so that both are
//!   measured by the same code;
//! - `failover`: leader `kill -9` rounds under a steady write load;
//! - `rss`: resident memory of a set of PIDs;
//! - `report`: turns the collected lines into the results table and JSON;
//! - `doc`: the cost of the `caddy-doc` layer over raw Loro (merge, memory,
//!   an editing trace), in process, no cluster;
//! - `fanout`: document updates committed per second and delivered to N
//!   subscribers on a cluster, against etcd puts and prefix watches;
//! - `files`: file upload and download throughput on a cluster, against the
//!   same bytes copied over a plain TCP + TLS 1.3 stream on this machine;
//! - `render`: renders per second of `caddy-render` on the adapter present,
//!   against tiny-skia (a CPU rasterizer) drawing the same drawing, in
//!   process, no cluster.
//!
//! Two helpers for run.sh: `free-ports` and `wait-healthy`.

mod doc;
mod failover;
mod fanout;
mod files;
mod render;
mod report;
mod systems;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use systems::{Control, Kv, Target};

#[derive(Parser)]
#[command(name = "caddy-bench", about = "CADDY vs etcd benchmark driver (see benches/README.md)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Closed-loop put or linearizable get load; prints the LoadReport as JSON.
    Kv(KvArgs),
    /// Leader kill -9 rounds under a steady write load.
    Failover(FailoverArgs),
    /// Resident memory (VmRSS) of processes.
    Rss(RssArgs),
    /// Prints the results table from the collected JSON lines and writes the results JSON.
    Report(report::ReportArgs),
    /// caddy-doc vs raw Loro: merge throughput, memory per 100k entities, an editing trace.
    Doc(doc::DocArgs),
    /// Document updates committed and fanned out to N subscribers (or etcd puts to N watchers).
    Fanout(fanout::FanoutArgs),
    /// File upload and download MB/s on a cluster, against a plain TCP + TLS stream (the practical limit).
    Files(files::FilesArgs),
    /// Renders/s of caddy-render on the adapter present, against tiny-skia on the same drawings.
    Render(render::RenderArgs),
    /// Prints N distinct free loopback TCP ports.
    FreePorts {
        /// How many.
        n: usize,
    },
    /// Waits until every member answers and all agree on a leader.
    WaitHealthy {
        #[command(flatten)]
        target: Target,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// put of a random key with a fixed-size value.
    Write,
    /// linearizable get of a random (pre-populated) key.
    Read,
}

#[derive(Args)]
struct KvArgs {
    #[command(flatten)]
    target: Target,
    /// Concurrent closed loops (one request in flight each).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds of the same load first (connections, caches).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Key space size.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Before a read run, write every key of the key space once.
    #[arg(long)]
    populate: bool,
}

#[derive(Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    target: Target,
    /// Leader kills.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Concurrent write loops during the run.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// CADDY: the `caddyd dev` directory (default: the client config's directory).
    #[arg(long)]
    caddy_dir: Option<PathBuf>,
    /// CADDY: the caddyd binary used to restart killed nodes.
    #[arg(long)]
    caddyd: Option<PathBuf>,
    /// etcd: directory holding mN.sh (start script) and mN.pid, N = position in --etcd-endpoints.
    #[arg(long)]
    etcd_dir: Option<PathBuf>,
    /// Seconds to let the cluster settle once healthy, before each kill.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Seconds to wait for a write to succeed after a kill before giving up on the round.
    #[arg(long, default_value_t = 30.0)]
    recovery_timeout: f64,
    /// Seconds to wait for the cluster to be whole again after a restart.
    #[arg(long, default_value_t = 90.0)]
    heal_timeout: f64,
    /// Largest replication lag (entries) still counted as caught up.
    #[arg(long, default_value_t = 500)]
    max_lag: u64,
}

#[derive(Args)]
struct RssArgs {
    /// Label of the system, for the record.
    #[arg(long)]
    system: String,
    /// Label of the moment (idle, load, ...).
    #[arg(long)]
    label: String,
    /// Comma-separated PIDs.
    #[arg(long, value_delimiter = ',', required = true)]
    pids: Vec<i32>,
}

/// A well-mixed 64-bit hash (splitmix64): op number to key index.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Key of index `i` in the benchmark key space.
pub fn key_name(i: u64) -> String {
    format!("bench/{i:08}")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // In process: no runtime (its idle threads would only add to the
    // measured memory, or to the measured CPU time).
    let cli = match cli.command {
        Cmd::Doc(args) => return doc::run(args),
        Cmd::Render(args) => return render::run(args),
        command => Cli { command },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Cmd::Kv(args) => runtime.block_on(kv(args)),
        Cmd::Failover(args) => runtime.block_on(failover::run(args)),
        Cmd::Rss(args) => rss(args),
        Cmd::Report(args) => report::run(args),
        Cmd::Doc(_) => anyhow::bail!("doc runs without a runtime"),
        Cmd::Render(_) => anyhow::bail!("render runs without a runtime"),
        Cmd::Fanout(args) => runtime.block_on(fanout::run(args)),
        Cmd::Files(args) => runtime.block_on(files::run(args)),
        Cmd::FreePorts { n } => free_ports(n),
        Cmd::WaitHealthy { target, timeout } => runtime.block_on(wait_healthy(target, timeout)),
    }
}

async fn populate(kv: &Kv, keys: u64, value: &Arc<Vec<u8>>) -> anyhow::Result<()> {
    const WORKERS: u64 = 32;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (kv, value) = (kv.clone(), Arc::clone(value));
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < keys {
                let key = key_name(i);
                let mut attempt = 0;
                loop {
                    match kv.put(&key, &value).await {
                        Ok(()) => break,
                        Err(e) if attempt >= 3 => return Err(format!("{key}: {e}")),
                        Err(_) => attempt += 1,
                    }
                }
                i += WORKERS;
            }
            Ok(())
        }));
    }
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("populating: {e}"),
            Err(e) => bail!("populating: {e}"),
        }
    }
    eprintln!("populated {keys} keys in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn kv(args: KvArgs) -> anyhow::Result<()> {
    let system = args.target.system;
    let kv = args.target.connect().await?;
    let value: Arc<Vec<u8>> = Arc::new((0..args.value_size).map(|i| b'a' + (i % 26) as u8).collect());
    if args.mode == Mode::Read && args.populate {
        populate(&kv, args.keys, &value).await?;
    }
    let first_error: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let make_op = |errors: Arc<OnceLock<String>>| {
        let (kv, value, keys, mode, size) = (kv.clone(), Arc::clone(&value), args.keys, args.mode, args.value_size);
        move |_client: usize, n: u64| {
            let (kv, value, errors) = (kv.clone(), Arc::clone(&value), Arc::clone(&errors));
            async move {
                let key = key_name(mix(n) % keys.max(1));
                let result = match mode {
                    Mode::Write => kv.put(&key, &value).await,
                    Mode::Read => kv.get(&key, size).await,
                };
                result.inspect_err(|e| {
                    errors.get_or_init(|| e.clone());
                })
            }
        }
    };
    if args.warmup > 0.0 {
        let warm = caddy_client::loadgen::run(
            args.clients,
            Duration::from_secs_f64(args.warmup),
            make_op(Arc::new(OnceLock::new())),
        )
        .await;
        eprintln!("warmup {} {:?} x{}: {warm}", system.name(), args.mode, args.clients);
    }
    let report = caddy_client::loadgen::run(
        args.clients,
        Duration::from_secs_f64(args.duration),
        make_op(Arc::clone(&first_error)),
    )
    .await;
    eprintln!("{} {:?} x{}: {report}", system.name(), args.mode, args.clients);
    let mut line = serde_json::to_value(&report)?;
    if let Some(obj) = line.as_object_mut() {
        obj.insert("kind".into(), json!("kv"));
        obj.insert("system".into(), json!(system.name()));
        obj.insert("mode".into(), json!(format!("{:?}", args.mode).to_lowercase()));
        obj.insert("clients".into(), json!(args.clients));
        obj.insert("value_size".into(), json!(args.value_size));
        obj.insert("keys".into(), json!(args.keys));
        obj.insert("first_error".into(), json!(first_error.get()));
    }
    println!("{line}");
    if let Kv::Caddy(c) = &kv {
        c.close().await;
    }
    Ok(())
}

/// VmRSS of `pid` in KiB.
fn vm_rss_kib(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("PID {pid}"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).with_context(|| format!("PID {pid}: no VmRSS"))?;
    let kib = line.split_whitespace().nth(1).context("VmRSS value")?;
    Ok(kib.parse()?)
}

fn rss(args: RssArgs) -> anyhow::Result<()> {
    let mut values = Vec::new();
    for &pid in &args.pids {
        values.push(vm_rss_kib(pid)?);
    }
    let avg_mib = values.iter().sum::<u64>() as f64 / values.len().max(1) as f64 / 1024.0;
    let max_mib = values.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
    eprintln!("rss {} {}: {values:?} KiB, average {avg_mib:.1} MiB, largest {max_mib:.1} MiB", args.system, args.label);
    let round1 = |v: f64| (v * 10.0).round() / 10.0;
    println!(
        "{}",
        json!({"kind": "rss", "system": args.system, "label": args.label, "pids": args.pids, "rss_kib": values,
               "avg_mib": round1(avg_mib), "max_mib": round1(max_mib)})
    );
    Ok(())
}

fn free_ports(n: usize) -> anyhow::Result<()> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let ports: Vec<String> =
        listeners.iter().map(|l| l.local_addr().map(|a| a.port().to_string())).collect::<Result<_, _>>()?;
    println!("{}", ports.join(" "));
    Ok(())
}

async fn wait_healthy(target: Target, timeout: f64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let mut control = Control::new(&target, None, None, None).await?;
    let mut last = String::new();
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), control.healthy(u64::MAX)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "health check timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("{} not healthy after {timeout}s: {last}", target.system.name())
}
