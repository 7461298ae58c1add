//! Exactly-once write lanes.
//!
//! The server remembers, per `client_id`, the last write's sequence and its
//! answer. A lane is one `client_id` with its next sequence; it carries at
//! most one write at a time, so the server's single remembered answer is
//! always the one a retry needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One `(client_id, sequence)` identity for one logical write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Lane {
    /// Random, never 0 (0 marks reads).
    pub client_id: u64,
    /// Sequence the next write on this lane uses; starts at 1.
    pub sequence: u64,
}

/// Free lanes; a lane in use is owned by its [`LaneGuard`].
#[derive(Debug, Default)]
pub(crate) struct LanePool {
    free: Mutex<Vec<Lane>>,
    /// Lanes given up with their write's outcome unknown.
    abandoned: AtomicU64,
}

impl LanePool {
    /// An empty pool.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Takes a free lane, or opens a new one with a fresh random client id.
    pub fn acquire(self: &Arc<Self>) -> LaneGuard {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let lane = reused.unwrap_or_else(|| Lane { client_id: fresh_client_id(), sequence: 1 });
        LaneGuard { pool: Arc::clone(self), lane, completed: false }
    }

    /// How many writes ended without a definitive answer (failed in doubt,
    /// or cancelled while their lane was held).
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Number of lanes currently free.
    #[cfg(test)]
    pub fn free_len(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn fresh_client_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

/// A lane lent to one logical write. [`LaneGuard::complete`] returns it to
/// the pool with its sequence advanced; dropping it without completing
/// (unknown outcome, cancellation) discards the lane for good.
#[derive(Debug)]
pub(crate) struct LaneGuard {
    pool: Arc<LanePool>,
    lane: Lane,
    completed: bool,
}

impl LaneGuard {
    /// The pair every attempt of this write must carry.
    pub fn lane(&self) -> Lane {
        self.lane
    }

    /// The write got a definitive answer: advance and give the lane back.
    pub fn complete(mut self) {
        self.completed = true;
        let next = Lane { client_id: self.lane.client_id, sequence: self.lane.sequence.saturating_add(1) };
        self.pool.free.lock().unwrap_or_else(|p| p.into_inner()).push(next);
    }
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        if !self.completed {
            self.pool.abandoned.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client_id = self.lane.client_id, "discarding write lane with an unknown outcome");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn sequences_increase_on_a_reused_lane() {
        let pool = LanePool::new();
        let first = pool.acquire();
        let lane = first.lane();
        assert_ne!(lane.client_id, 0);
        assert_eq!(lane.sequence, 1);
        first.complete();
        for expected in 2..10 {
            let guard = pool.acquire();
            assert_eq!(guard.lane(), Lane { client_id: lane.client_id, sequence: expected });
            guard.complete();
        }
        assert_eq!(pool.free_len(), 1);
    }

    #[test]
    fn concurrent_writes_use_distinct_client_ids() {
        let pool = LanePool::new();
        let guards: Vec<_> = (0..16).map(|_| pool.acquire()).collect();
        let ids: HashSet<u64> = guards.iter().map(|g| g.lane().client_id).collect();
        assert_eq!(ids.len(), 16);
        for g in guards {
            g.complete();
        }
        assert_eq!(pool.free_len(), 16);
        // Every lane comes back exactly once, advanced by one.
        let again: Vec<_> = (0..16).map(|_| pool.acquire()).collect();
        let again_ids: HashSet<u64> = again.iter().map(|g| g.lane().client_id).collect();
        assert_eq!(again_ids, ids);
        assert!(again.iter().all(|g| g.lane().sequence == 2));
    }

    #[test]
    fn unknown_outcome_discards_the_lane() {
        let pool = LanePool::new();
        let guard = pool.acquire();
        let lane = guard.lane();
        assert_eq!(pool.abandoned(), 0);
        drop(guard);
        assert_eq!(pool.free_len(), 0);
        assert_eq!(pool.abandoned(), 1);
        let next = pool.acquire();
        assert_ne!(next.lane().client_id, lane.client_id);
        assert_eq!(next.lane().sequence, 1);
    }

    #[test]
    fn retries_reuse_the_same_pair() {
        let pool = LanePool::new();
        let guard = pool.acquire();
        // Every retry reads the same pair from the guard it holds.
        let attempts: HashSet<Lane> = (0..5).map(|_| guard.lane()).collect();
        assert_eq!(attempts.len(), 1);
        guard.complete();
    }
}
