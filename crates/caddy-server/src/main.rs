//! `caddyd`: the CADDY node binary.
//!
//! - `caddyd start --config FILE` runs one node.
//! - `caddyd dev [--nodes 3] [--dir .caddy-dev]` runs a local cluster of node processes.
//! - `caddyd restore --from FILE --dir DIR` seeds a new cluster's first node from a backup.
//!
//! It owns configuration, wiring of the crates below it, the client QUIC
//! listener, the admin HTTPS endpoint and process lifecycle.

mod accounts;
mod admin;
mod audit;
mod blobs;
mod config;
mod dev;
mod docs;
mod edge;
mod files;
mod identity;
mod presence;
mod quic;
mod render;
mod run;
mod service;
mod telemetry;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "caddyd", version, about = "CADDY cluster node")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node.
    Start {
        /// Configuration file (TOML); CADDY_* variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run a local cluster of N node processes on free loopback ports.
    Dev {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Directory for the nodes' data, logs and client.toml.
        #[arg(long, default_value = ".caddy-dev")]
        dir: PathBuf,
    },
    /// Seed a new cluster's first node from a backup file.
    Restore {
        /// Backup file written by `caddyctl cluster backup`.
        #[arg(long)]
        from: PathBuf,
        /// Data directory of the new node (must not hold a node already).
        #[arg(long)]
        dir: PathBuf,
    },
}

/// How long the process waits at exit for tasks that outlived `run`.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

fn main() -> anyhow::Result<()> {
    quiet_graphics_probe();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Cmd::Start { config } => {
            let config = config::Config::load(config.as_deref())?;
            telemetry::init_logging(&config.log.level, config.log.json);
            let result = runtime.block_on(run::run(config));
            // Dropping the runtime would wait for every task still running:
            // an apply batch importing large documents holds a worker for
            // seconds, and blocking tasks (snapshots, renders) longer. Once
            // `run` returned nothing needs them (see `run`), so give them a
            // moment and leave.
            runtime.shutdown_timeout(EXIT_WAIT);
            result
        }
        Cmd::Dev { nodes, dir } => {
            telemetry::init_logging("warn", false);
            runtime.block_on(dev::run(nodes, &dir))
        }
        Cmd::Restore { from, dir } => restore(&from, &dir),
    }
}

/// Mesa's Vulkan device-selection layer, loaded with any Mesa driver, asks
/// the desktop session which GPU drives its display; on a server there is
/// none, and Wayland's client library says so on stderr ("XDG_RUNTIME_DIR is
/// invalid or not set") at every start. Without a session the layer has
/// nothing to choose by (wgpu picks the adapter itself), so it is turned
/// off, unless the operator set the variable either way.
fn quiet_graphics_probe() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() && std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: called first thing in `main`, before the runtime or any
        // other thread exists, so nothing reads the environment meanwhile.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("NODEVICE_SELECT", "1");
        }
    }
}

fn restore(from: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.join("state.redb").exists() || dir.join("raft-log.redb").exists() {
        bail!("{} already holds a node; restore into an empty directory", dir.display());
    }
    std::fs::create_dir_all(dir)?;
    let sm = caddy_store::StateMachineStore::open(&caddy_store::backend::Disk::Dir(dir.to_path_buf()))?;
    let header = sm.restore_backup(from).with_context(|| format!("restoring {}", from.display()))?;
    let (keys, _) = sm.list("", "", usize::MAX)?;
    println!(
        "restored {} keys at revision {} into {}; start it with cluster.bootstrap = true and data_dir = {} to found the new cluster",
        keys.len(),
        header.revision,
        dir.display(),
        dir.display()
    );
    Ok(())
}
