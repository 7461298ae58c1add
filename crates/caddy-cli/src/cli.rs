//! Command-line grammar (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::duration::parse_duration;

/// Default configuration file when neither `--config` nor `CADDY_CONFIG` is given.
pub const DEFAULT_CONFIG: &str = "./.caddy-dev/client.toml";

/// Command-line client of a CADDY cluster.
#[derive(Debug, Parser)]
#[command(name = "caddyctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Client configuration file [env: CADDY_CONFIG; default: ./.caddy-dev/client.toml].
    #[arg(long, global = true, value_name = "FILE", env = "CADDY_CONFIG", hide_env = true)]
    pub config: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Bound on each request, retries included (e.g. "10s", "500ms").
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The configuration file to read.
    pub fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }
}

/// Top-level command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cluster membership, status and maintenance.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Key-value operations.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Load generators.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// `caddyctl cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Shows terms, indexes and every member's role and health.
    Status,
    /// Adds the node whose peer (raft) listener is ADDR.
    AddNode {
        /// Peer address of the new node (host:port).
        addr: String,
        /// Keep the node a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Removes a node from the cluster.
    RemoveNode {
        /// Node id.
        id: u64,
    },
    /// Hands leadership to another voter.
    TransferLeader {
        /// Node id of the new leader.
        id: u64,
    },
    /// Snapshots the state machine and compacts the log.
    Snapshot,
    /// Creates a token with which a new node can enroll.
    JoinToken {
        /// How long the token stays valid.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Streams a consistent backup to a file.
    Backup {
        /// Output file (written as FILE.tmp, then renamed).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
}

/// `caddyctl kv ...`
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Sets KEY to VALUE.
    Put {
        /// Key.
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// Value (UTF-8).
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// Only if the key's mod revision is N (0: only if it does not exist).
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// Prints the value of KEY.
    Get {
        /// Key.
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// Read from the answering node, possibly stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Deletes KEY.
    Del {
        /// Key.
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// Only if the key's mod revision is N.
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// Lists keys starting with PREFIX.
    List {
        /// Key prefix (empty: every key).
        #[arg(default_value = "", allow_hyphen_values = true)]
        prefix: String,
        /// Keys per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Page through until every key is listed.
        #[arg(long)]
        all: bool,
        /// Read from the answering node, possibly stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Prints changes to keys starting with PREFIX until interrupted.
    Watch {
        /// Key prefix (empty: every key).
        #[arg(default_value = "", allow_hyphen_values = true)]
        prefix: String,
        /// Replay events from this revision (0: only new events).
        #[arg(long, value_name = "N", default_value_t = 0)]
        from_revision: u64,
    },
}

/// `caddyctl bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Closed-loop key-value load: puts and gets on a fixed key space.
    Kv(BenchKvArgs),
}

/// Options of `caddyctl bench kv`.
#[derive(Debug, Args)]
pub struct BenchKvArgs {
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub clients: u64,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Bytes per written value (at most 16 MiB).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(0..=16 * 1024 * 1024))]
    pub value_size: u64,
    /// Fraction of operations that are reads, 0..1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// Size of the key space.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Reads are serializable (any node) instead of linearizable.
    #[arg(long)]
    pub serializable: bool,
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&ratio) { Ok(ratio) } else { Err(format!("{ratio} is not between 0 and 1")) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("caddyctl").chain(args.iter().copied()))
    }

    #[test]
    fn global_flags_anywhere() {
        let cli = parse(&["kv", "get", "a", "--json", "--config", "/x/c.toml", "--timeout", "2s"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.config_path(), PathBuf::from("/x/c.toml"));
        assert_eq!(cli.timeout, Some(Duration::from_secs(2)));
        let cli = parse(&["--json", "cluster", "status"]).unwrap();
        assert!(cli.json);
        assert!(matches!(cli.command, Command::Cluster(ClusterCommand::Status)));
        assert!(parse(&["--timeout", "soon", "cluster", "status"]).is_err());
    }

    #[test]
    fn kv_commands() {
        match parse(&["kv", "put", "k", "-v-", "--if-revision", "7"]).unwrap().command {
            Command::Kv(KvCommand::Put { key, value, if_revision }) => {
                assert_eq!((key.as_str(), value.as_str(), if_revision), ("k", "-v-", Some(7)));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["kv", "get", "k", "--serializable"]).unwrap().command {
            Command::Kv(KvCommand::Get { key, serializable }) => {
                assert!(key == "k" && serializable)
            }
            other => panic!("{other:?}"),
        }
        match parse(&["kv", "del", "k"]).unwrap().command {
            Command::Kv(KvCommand::Del { key, if_revision }) => {
                assert!(key == "k" && if_revision.is_none())
            }
            other => panic!("{other:?}"),
        }
        match parse(&["kv", "list", "p/"]).unwrap().command {
            Command::Kv(KvCommand::List { prefix, limit, all, .. }) => assert!(prefix == "p/" && limit == 100 && !all),
            other => panic!("{other:?}"),
        }
        match parse(&["kv", "list", "--all", "--limit", "5"]).unwrap().command {
            Command::Kv(KvCommand::List { prefix, limit, all, .. }) => assert!(prefix.is_empty() && limit == 5 && all),
            other => panic!("{other:?}"),
        }
        match parse(&["kv", "watch", "p/", "--from-revision", "12"]).unwrap().command {
            Command::Kv(KvCommand::Watch { prefix, from_revision }) => assert!(prefix == "p/" && from_revision == 12),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["kv", "put", "k"]).is_err());
        assert!(parse(&["kv", "get"]).is_err());
        assert!(parse(&["kv", "put", "k", "v", "--if-revision", "x"]).is_err());
    }

    #[test]
    fn cluster_commands() {
        match parse(&["cluster", "add-node", "10.0.0.4:7000", "--learner"]).unwrap().command {
            Command::Cluster(ClusterCommand::AddNode { addr, learner }) => {
                assert!(addr == "10.0.0.4:7000" && learner)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["cluster", "remove-node", "3"]).unwrap().command,
            Command::Cluster(ClusterCommand::RemoveNode { id: 3 })
        ));
        assert!(matches!(
            parse(&["cluster", "transfer-leader", "2"]).unwrap().command,
            Command::Cluster(ClusterCommand::TransferLeader { id: 2 })
        ));
        assert!(matches!(parse(&["cluster", "snapshot"]).unwrap().command, Command::Cluster(ClusterCommand::Snapshot)));
        match parse(&["cluster", "join-token"]).unwrap().command {
            Command::Cluster(ClusterCommand::JoinToken { ttl }) => {
                assert_eq!(ttl, Duration::from_secs(3600))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["cluster", "join-token", "--ttl", "10m"]).unwrap().command {
            Command::Cluster(ClusterCommand::JoinToken { ttl }) => {
                assert_eq!(ttl, Duration::from_secs(600))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["cluster", "backup", "-o", "b.bin"]).unwrap().command {
            Command::Cluster(ClusterCommand::Backup { output }) => {
                assert_eq!(output, PathBuf::from("b.bin"))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["cluster", "backup"]).is_err());
        assert!(parse(&["cluster", "remove-node", "x"]).is_err());
    }

    #[test]
    fn bench_flags_and_defaults() {
        match parse(&["bench", "kv", "--clients", "8", "--duration", "3s"]).unwrap().command {
            Command::Bench(BenchCommand::Kv(a)) => {
                assert_eq!((a.clients, a.duration, a.value_size, a.keys), (8, Duration::from_secs(3), 256, 10_000));
                assert_eq!(a.read_ratio, 0.0);
                assert!(!a.serializable);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["bench", "kv", "--read-ratio", "0.9", "--keys", "10", "--value-size", "1", "--serializable"])
            .unwrap()
            .command
        {
            Command::Bench(BenchCommand::Kv(a)) => {
                assert_eq!((a.read_ratio, a.keys, a.value_size, a.serializable), (0.9, 10, 1, true));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["bench", "kv", "--read-ratio", "1.5"]).is_err());
        assert!(parse(&["bench", "kv", "--clients", "0"]).is_err());
        assert!(parse(&["bench", "kv", "--keys", "0"]).is_err());
        assert!(parse(&["bench", "kv", "--value-size", "1000000000000"]).is_err());
    }

    #[test]
    fn default_config_path() {
        let mut cli = parse(&["cluster", "status"]).unwrap();
        cli.config = None;
        assert_eq!(cli.config_path(), PathBuf::from(DEFAULT_CONFIG));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
