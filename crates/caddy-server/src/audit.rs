//! The leader's audit retention sweep. Every `audit.sweep_interval_ms` the
//! leader proposes `Command::AuditSweep` carrying the configured default
//! retention; each such entry prunes a bounded number of entries and says
//! where the next continues, so the leader keeps proposing until every
//! chain is within its retention (or leadership moves, or the tick's bound
//! of entries is reached: the next tick continues from there, so with many
//! tenants every chain still gets its turn). Apply decides what goes: see
//! `caddy_store`'s `audit` module and `caddy_core::identity::audit`.

use caddy_core::identity::SweepFrom;
use caddy_core::{Command, ReplyBody};
use caddy_raft::RaftNode;
use tokio::sync::watch;

use crate::config::AuditConfig;

/// Sweep entries proposed per tick at most (each prunes at most
/// `AUDIT_PRUNE_PER_SWEEP` entries), so a huge backlog is worked off over
/// several ticks instead of crowding out client writes.
const MAX_SWEEPS_PER_TICK: usize = 1_000;

/// Starts the sweep loop (it proposes only while this node leads).
pub fn start(config: AuditConfig, node: RaftNode, shutdown: watch::Receiver<bool>) {
    tokio::spawn(sweep_loop(config, node, shutdown));
}

async fn sweep_loop(config: AuditConfig, node: RaftNode, mut shutdown: watch::Receiver<bool>) {
    let retention = config.retention();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(config.sweep_interval_ms.max(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut from = SweepFrom::Start;
    loop {
        tokio::select! {
            _ = crate::run::stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        for _ in 0..MAX_SWEEPS_PER_TICK {
            let leading = node.leader().is_some_and(|(id, _)| id == node.id());
            if !leading || *shutdown.borrow() {
                break;
            }
            // A proposal waiting for a quorum that is gone must not hold up
            // the node's stop.
            let proposed = tokio::select! {
                _ = crate::run::stopped(&mut shutdown) => return,
                proposed = node.propose(None, Command::AuditSweep { retention, from: from.clone() }) => proposed,
            };
            match proposed {
                Ok(ReplyBody::AuditSwept { pruned, next }) => {
                    if pruned > 0 {
                        metrics::counter!("caddy_audit_pruned_total").increment(pruned);
                    }
                    match next {
                        Some(next) => from = next,
                        None => {
                            from = SweepFrom::Start;
                            break;
                        }
                    }
                }
                Ok(other) => {
                    tracing::warn!(reply = ?other, "unexpected reply to an audit sweep");
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "audit sweep not recorded");
                    break;
                }
            }
        }
    }
}
