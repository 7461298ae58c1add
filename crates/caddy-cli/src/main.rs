//! `caddyctl`, the command-line client of a CADDY cluster: key-value
//! commands, cluster administration, backups, a load generator, the
//! identity service (login, tenants, users, roles, teams, API keys,
//! sessions, audit), CAD documents, and files and storage, all through the
//! `caddy-client` SDK.
//!
//! Invariants:
//! - Exit code 0 on success; 2 for usage errors (reported by clap); 1 for
//!   every other failure, which is reported as exactly one line
//!   `error: <message>` on stderr.
//! - With `--json`, everything written to stdout is JSON (one document, or
//!   one object per line for `kv watch`); progress and hints go to stderr.
//! - Nothing here talks to the network except through `caddy_client`.

mod cli;
mod cmd;
mod credentials;
mod csv;
mod duration;
mod output;
mod views;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(cmd::run(cli, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", output::one_line(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}
