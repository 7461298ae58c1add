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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Cmd::Start { config } => {
            let config = config::Config::load(config.as_deref())?;
            telemetry::init_logging(&config.log.level, config.log.json);
            runtime.block_on(run::run(config))
        }
        Cmd::Dev { nodes, dir } => {
            telemetry::init_logging("warn", false);
            runtime.block_on(dev::run(nodes, &dir))
        }
        Cmd::Restore { from, dir } => restore(&from, &dir),
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
