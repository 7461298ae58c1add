//! `caddyctl`, the command-line client of a CADDY cluster: key-value
//! commands, cluster administration, backups, a load generator, the
//! identity service (login, tenants, users, roles, teams, API keys,
//! sessions, audit), CAD documents, and files and storage, all through the
//! `caddy-client` SDK.
//!
//! Invariants:
//! - Exit codes: 0 success; 1 refused or failed, the failed step changed
//!   nothing; 2 usage (the command line is wrong; from clap or from a
//!   check after parsing); 3 outcome unknown (a write went out and no
//!   definitive answer came back). [`failure`] decides them.
//! - Every failure is reported as exactly one line `error: <message>` on
//!   stderr (clap's own usage text for clap's errors).
//! - With `--json`, everything written to stdout is JSON (one document, or
//!   one object per line for `kv watch` and `doc watch`); a failure is also
//!   written there as `{"error": {"code", "message", "outcome",
//!   "retryable", ...}}` (the last line after streamed ones). Progress and
//!   hints go to stderr.
//! - `--timeout` bounds the whole command, waits included; a watch given
//!   one ends successfully when it runs out. Without it each request has
//!   the config file's request timeout, a render wait `--wait-timeout`,
//!   and a watch no bound.
//! - The process exits as soon as its answer is printed: the SDK's close
//!   sends the QUIC close frames without sitting out the drain period, and
//!   the runtime is not waited for.
//! - Nothing here talks to the network except through `caddy_client`.

mod cli;
mod cmd;
mod credentials;
mod csv;
mod duration;
mod failure;
mod output;
mod views;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::failure::{Code, Failure};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let json = wants_json(&args);
    let mut stdout = std::io::stdout();
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version end here too, successfully.
            if e.use_stderr() && json {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                let failure = Failure {
                    code: Code::Usage,
                    message: first.strip_prefix("error: ").unwrap_or(first).to_owned(),
                    outcome: caddy_client::Outcome::NotApplied,
                    retryable: false,
                    current_revision: None,
                    leader_hint: None,
                    retry_after: None,
                    extra: serde_json::Map::new(),
                };
                let _ = writeln!(stdout, "{}", failure.json());
            }
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(cmd::run(cli, &mut stdout));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            if json {
                let _ = writeln!(stdout, "{}", failure.json());
            }
            ExitCode::from(failure.exit_code())
        }
    };
    let _ = stdout.flush();
    // Tasks still running (a handshake nobody waits for, a blocked stdin
    // read) must not hold the answer back.
    runtime.shutdown_timeout(Duration::ZERO);
    code
}

/// Whether `--json` is among the arguments (before a `--`), so that clap's
/// own errors can be reported as JSON too.
fn wants_json(args: &[OsString]) -> bool {
    args.iter().skip(1).take_while(|a| a.as_os_str() != "--").any(|a| a.as_os_str() == "--json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_flag_is_seen_before_parsing() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(wants_json(&args(&["caddyctl", "kv", "frob", "--json"])));
        assert!(!wants_json(&args(&["caddyctl", "kv", "put", "k", "--", "--json"])));
        assert!(!wants_json(&args(&["--json"])));
    }
}
