//! Leader-kill failover under a steady write load.
//!
//! `clients` loops write continuously. For each of `kills` rounds: wait until
//! the cluster is healthy and writes flow, find the leader, `kill -9` it at
//! instant K, and measure
//! - `recovery_ms`: from K to the acknowledgement of the first write that was
//!   *issued* after K (the client-visible write outage; a write issued before
//!   K and still being retried by the client library holds up its loop, so it
//!   delays this figure exactly as it delays an application), and
//! - `first_ack_ms`: from K to the first acknowledgement of any write (may
//!   include a write issued before K and retried by the client library).
//!
//! Then the killed member is restarted from its own command line and the
//! next round waits for it to be back and caught up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::systems::{Control, Kv, Probe, alive, kill9};
use crate::{FailoverArgs, key_name, mix};

/// Pause after a failed write before the loop's next one, so that a loop on a
/// dead connection does not spin (both systems alike).
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Tracker {
    kill_at: Option<Instant>,
    first_issued_after: Option<Instant>,
    first_ack_after: Option<Instant>,
    last_ok: Option<Instant>,
    errors_after_kill: u64,
    ok_total: u64,
    err_total: u64,
    first_error_after_kill: Option<String>,
}

impl Tracker {
    fn record(&mut self, issued: Instant, done: Instant, result: &Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok_total += 1;
                self.last_ok = Some(self.last_ok.map_or(done, |t| t.max(done)));
                if let Some(k) = self.kill_at {
                    if done > k && self.first_ack_after.is_none_or(|t| done < t) {
                        self.first_ack_after = Some(done);
                    }
                    if issued >= k && self.first_issued_after.is_none_or(|t| done < t) {
                        self.first_issued_after = Some(done);
                    }
                }
            }
            Err(e) => {
                self.err_total += 1;
                if self.kill_at.is_some() && self.first_issued_after.is_none() {
                    self.errors_after_kill += 1;
                    if self.first_error_after_kill.is_none() {
                        self.first_error_after_kill = Some(e.clone());
                    }
                }
            }
        }
    }

    fn arm(&mut self, k: Instant) {
        self.kill_at = Some(k);
        self.first_issued_after = None;
        self.first_ack_after = None;
        self.errors_after_kill = 0;
        self.first_error_after_kill = None;
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<(), String>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut last = String::from("not checked");
    while start.elapsed() < timeout {
        match tokio::time::timeout(Duration::from_secs(5), check()).await {
            Ok(Ok(())) => return Ok(start.elapsed()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "check timed out".into(),
        }
        tokio::time::sleep(POLL * 4).await;
    }
    anyhow::bail!("timed out after {timeout:?} waiting for {what}; last: {last}")
}

pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    let system = args.target.system;
    let kv = args.target.connect().await?;
    let mut control =
        Control::new(&args.target, args.caddy_dir.as_deref(), args.caddyd.as_deref(), args.etcd_dir.as_deref())
            .await
            .context("cluster control")?;
    let heal_timeout = Duration::from_secs_f64(args.heal_timeout);
    let recovery_timeout = Duration::from_secs_f64(args.recovery_timeout);
    let settle = Duration::from_secs_f64(args.settle);

    wait_until("a healthy cluster", heal_timeout, async || control.healthy(args.max_lag).await)
        .await
        .context("before the first kill")?;

    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let value: Arc<Vec<u8>> = Arc::new((0..args.value_size).map(|i| b'a' + (i % 26) as u8).collect());
    let mut loops = Vec::new();
    for index in 0..args.clients.max(1) {
        loops.push(tokio::spawn(write_loop(
            kv.clone(),
            index as u64,
            args.keys,
            Arc::clone(&value),
            Arc::clone(&tracker),
            Arc::clone(&stop),
        )));
    }

    let mut rounds = Vec::new();
    let mut samples = Vec::new();
    let mut elections = Vec::new();
    let mut failed_rounds = 0u64;
    for round in 1..=args.kills {
        let prepared = prepare_round(&mut control, &tracker, args.max_lag, heal_timeout, settle).await;
        if let Err(e) = prepared {
            eprintln!("failover[{}] round {round}: cluster not ready: {e:#}", system.name());
            rounds.push(json!({"round": round, "error": format!("cluster not ready: {e:#}")}));
            failed_rounds += 1;
            continue;
        }
        let victim = match control.leader().await {
            Ok(m) if alive(m.pid) => m,
            Ok(m) => {
                rounds.push(json!({"round": round, "error": format!("leader {} PID {} is not alive", m.id, m.pid)}));
                failed_rounds += 1;
                continue;
            }
            Err(e) => {
                rounds.push(json!({"round": round, "error": format!("finding the leader: {e:#}")}));
                failed_rounds += 1;
                continue;
            }
        };
        let probes = control.survivor_probes(&victim).await;
        let k = Instant::now();
        lock(&tracker).arm(k);
        kill9(victim.pid)?;
        let election = tokio::spawn(watch_election(probes, victim.raft_id, recovery_timeout));
        let deadline = k + recovery_timeout;
        let mut recovered = None;
        while Instant::now() < deadline {
            if let Some(t) = lock(&tracker).first_issued_after {
                recovered = Some(t);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elected = election.await.ok().flatten();
        let (first_ack, errors, first_error) = {
            let t = lock(&tracker);
            (t.first_ack_after, t.errors_after_kill, t.first_error_after_kill.clone())
        };
        // Wait for the victim to be really gone before restarting it.
        let pid = victim.pid;
        let gone = wait_until("the killed process to exit", Duration::from_secs(10), async || {
            if alive(pid) { Err(format!("PID {pid} still alive")) } else { Ok(()) }
        })
        .await;
        let new_leader = control.leader().await.ok().map(|m| m.id);
        let recovery_ms = recovered.map(|t| ms(t.duration_since(k)));
        match recovery_ms {
            Some(r) => {
                samples.push(r);
                if let Some(t) = elected {
                    elections.push(ms(t.duration_since(k)));
                }
            }
            None => failed_rounds += 1,
        }
        let restarted = match gone {
            Ok(_) => control.restart(&victim).map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("{e:#}")),
        };
        eprintln!(
            "failover[{}] round {round}/{}: killed leader {} (PID {}); new leader {:?} known to a survivor after {}; write recovery {}; first ack {}; {} failed writes meanwhile{}",
            system.name(),
            args.kills,
            victim.id,
            victim.pid,
            new_leader,
            elected.map_or("?".to_string(), |t| format!("{:.1} ms", ms(t.duration_since(k)))),
            recovery_ms.map_or("TIMEOUT".to_string(), |r| format!("{r:.1} ms")),
            first_ack.map_or("none".to_string(), |t| format!("{:.1} ms", ms(t.duration_since(k)))),
            errors,
            first_error.as_deref().map_or(String::new(), |e| format!(" (first: {})", one_line(e))),
        );
        rounds.push(json!({
            "round": round,
            "killed": victim.id,
            "killed_pid": victim.pid,
            "new_leader": new_leader,
            "recovery_ms": recovery_ms,
            "elected_ms": elected.map(|t| ms(t.duration_since(k))),
            "first_ack_ms": first_ack.map(|t| ms(t.duration_since(k))),
            "failed_writes": errors,
            "first_error": first_error,
            "restarted_pid": restarted.as_ref().ok(),
            "restart_error": restarted.as_ref().err(),
            "pid_file": control.pid_file(&victim).display().to_string(),
        }));
    }
    // Let the last restarted member come back so that the cluster is left whole.
    let healed = wait_until("the cluster to heal after the last round", heal_timeout, async || {
        control.healthy(args.max_lag).await
    })
    .await;
    if let Err(e) = &healed {
        eprintln!("failover[{}]: {e:#}", system.name());
    }
    stop.store(true, Ordering::Relaxed);
    for task in loops {
        // Each loop finishes its current write (bounded by the request timeout).
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    let (ok_total, err_total) = {
        let t = lock(&tracker);
        (t.ok_total, t.err_total)
    };
    samples.sort_by(f64::total_cmp);
    elections.sort_by(f64::total_cmp);
    let line = json!({
        "kind": "failover",
        "system": system.name(),
        "clients": args.clients,
        "kills": args.kills,
        "recovered": samples.len(),
        "failed_rounds": failed_rounds,
        "recovery_p50_ms": percentile(&samples, 0.50),
        "recovery_p99_ms": percentile(&samples, 0.99),
        "recovery_max_ms": samples.last(),
        "recovery_ms": samples,
        "elected_p50_ms": percentile(&elections, 0.50),
        "elected_p99_ms": percentile(&elections, 0.99),
        "writes_ok": ok_total,
        "writes_failed": err_total,
        "healed_at_end": healed.is_ok(),
        "rounds": rounds,
    });
    println!("{line}");
    Ok(())
}

/// The earliest instant at which a status probe of a surviving member
/// answered with a leader other than `victim`. A new probe is started every
/// 20 ms without waiting for earlier ones (a member may be slow to answer
/// while it still believes in the dead leader), so the answer is an upper
/// bound on the election time, within about 20 ms plus one round trip.
async fn watch_election(probes: Vec<Probe>, victim: u64, timeout: Duration) -> Option<Instant> {
    let found: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let deadline = Instant::now() + timeout;
    let mut tasks = Vec::new();
    while Instant::now() < deadline && found.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
        for probe in &probes {
            let (probe, found) = (probe.clone(), Arc::clone(&found));
            tasks.push(tokio::spawn(async move {
                if let Ok(Some(leader)) = tokio::time::timeout(Duration::from_secs(2), probe.leader()).await
                    && leader != victim
                {
                    let now = Instant::now();
                    let mut f = found.lock().unwrap_or_else(|p| p.into_inner());
                    if f.is_none_or(|t| now < t) {
                        *f = Some(now);
                    }
                }
            }));
        }
        tasks.retain(|t| !t.is_finished());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in tasks {
        task.abort();
    }
    *found.lock().unwrap_or_else(|p| p.into_inner())
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 200 { format!("{}...", s.chars().take(200).collect::<String>()) } else { s }
}

fn lock(t: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for a healthy cluster, then `settle`, then for writes to flow.
async fn prepare_round(
    control: &mut Control,
    tracker: &Mutex<Tracker>,
    max_lag: u64,
    heal_timeout: Duration,
    settle: Duration,
) -> anyhow::Result<()> {
    wait_until("a healthy cluster", heal_timeout, async || control.healthy(max_lag).await).await?;
    tokio::time::sleep(settle).await;
    wait_until("writes to flow", heal_timeout, async || {
        let last = lock(tracker).last_ok;
        match last {
            Some(t) if t.elapsed() < Duration::from_millis(500) => Ok(()),
            _ => Err("no write acknowledged in the last 500 ms".into()),
        }
    })
    .await?;
    // The restarted member must also be back in the picture right now.
    control.healthy(max_lag).await.map_err(|e| anyhow::anyhow!(e))
}

async fn write_loop(
    kv: Kv,
    index: u64,
    keys: u64,
    value: Arc<Vec<u8>>,
    tracker: Arc<Mutex<Tracker>>,
    stop: Arc<AtomicBool>,
) {
    let mut n = index << 40;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = key_name(mix(n) % keys.max(1));
        let issued = Instant::now();
        let result = kv.put(&key, &value).await;
        let done = Instant::now();
        lock(&tracker).record(issued, done, &result);
        if result.is_err() {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
}
