//! Cluster behaviour on the in-process harness: real storage (in memory,
//! crashable), the simulated network, tokio's paused clock.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use caddy_core::{Command, NodeId};
use caddy_raft::RaftNode;
use caddy_raft::RaftTiming;
use caddy_raft::node::MembershipOp;
use caddy_raft::sim::SimNetwork;
use caddy_store::backend::{CrashableDisk, Disk};
use caddy_store::{CaddyNode, FlushMode};

struct Cluster {
    net: SimNetwork,
    nodes: BTreeMap<NodeId, RaftNode>,
    disks: BTreeMap<NodeId, CrashableDisk>,
    timing: RaftTiming,
    dir: tempfile::TempDir,
}

fn addr(id: NodeId) -> CaddyNode {
    CaddyNode { raft_addr: format!("sim-{id}"), client_addr: String::new(), admin_addr: String::new() }
}

impl Cluster {
    async fn new(voters: u64, timing: RaftTiming) -> Self {
        let mut c = Cluster {
            net: SimNetwork::new(7),
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            timing,
            dir: tempfile::tempdir().unwrap(),
        };
        for id in 1..=voters {
            c.start(id).await;
        }
        assert!(c.nodes[&1].initialize_single().await.unwrap());
        c.wait_leader_among(&[1]).await;
        for id in 2..=voters {
            c.leader_node()
                .membership_as_leader(MembershipOp::Add { id, node: addr(id), learner_only: false })
                .await
                .unwrap();
        }
        c
    }

    async fn start(&mut self, id: NodeId) {
        let disk = self
            .disks
            .entry(id)
            .or_insert_with(|| CrashableDisk::new(&self.dir.path().join(format!("snap-{id}"))))
            .clone();
        let node = RaftNode::start_with(
            id,
            addr(id),
            &Disk::Crashable(disk),
            FlushMode::Inline,
            self.timing.clone(),
            self.net.factory(id),
            None,
            None,
        )
        .await
        .unwrap();
        self.net.register(id, node.clone());
        self.nodes.insert(id, node);
    }

    /// Power loss: unsynced writes vanish, the node stops answering.
    async fn crash(&mut self, id: NodeId) {
        self.net.unregister(id);
        self.disks[&id].crash();
        let node = self.nodes.remove(&id).unwrap();
        node.shutdown().await;
    }

    async fn wait_leader_among(&self, ids: &[NodeId]) -> NodeId {
        for _ in 0..200 {
            let leaders: Vec<Option<NodeId>> =
                ids.iter().map(|id| self.nodes[id].raft().metrics().borrow_watched().current_leader).collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && ids.contains(l)
                && self.nodes[l].raft().is_leader()
            {
                return *l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no agreed leader among {ids:?}");
    }

    fn leader_node(&self) -> &RaftNode {
        self.nodes.values().find(|n| n.raft().is_leader()).expect("a leader")
    }

    async fn put(&self, via: NodeId, key: &str, value: &str) -> Result<u64, String> {
        let command = Command::KvPut { key: key.into(), value: value.as_bytes().to_vec(), if_revision: None };
        match tokio::time::timeout(Duration::from_secs(3), self.nodes[&via].propose(None, command)).await {
            Ok(Ok(caddy_core::ReplyBody::Put { revision, .. })) => Ok(revision),
            Ok(Ok(other)) => Err(format!("unexpected reply {other:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    async fn wait_applied_everywhere(&self, ids: &[NodeId], index: u64) {
        for id in ids {
            self.nodes[id]
                .wait_applied(index, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("node {id}: {e}"));
        }
    }

    fn value(&self, id: NodeId, key: &str) -> Option<String> {
        self.nodes[&id].state_machine().get(key).unwrap().map(|kv| String::from_utf8(kv.value).unwrap())
    }
}

use openraft::async_runtime::WatchReceiver;

fn fast() -> RaftTiming {
    RaftTiming {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        snapshot_every: 10_000,
        keep_behind_snapshot: 100,
    }
}

#[tokio::test(start_paused = true)]
async fn three_nodes_elect_one_leader_and_replicate() {
    let c = Cluster::new(3, fast()).await;
    let leader = c.wait_leader_among(&[1, 2, 3]).await;
    let terms: Vec<u64> = c.nodes.values().map(|n| n.raft().metrics().borrow_watched().current_term).collect();
    assert!(terms.windows(2).all(|w| w[0] == w[1]), "terms differ: {terms:?}");
    c.put(leader, "a", "1").await.unwrap();
    let index = c.nodes[&leader].status().applied_index;
    c.wait_applied_everywhere(&[1, 2, 3], index).await;
    for id in [1, 2, 3] {
        assert_eq!(c.value(id, "a").as_deref(), Some("1"));
    }
}

#[tokio::test(start_paused = true)]
async fn leader_loss_elects_a_new_leader_and_the_old_one_catches_up() {
    let mut c = Cluster::new(3, fast()).await;
    let old = c.wait_leader_among(&[1, 2, 3]).await;
    let old_term = c.nodes[&old].raft().metrics().borrow_watched().current_term;
    c.put(old, "before", "x").await.unwrap();
    c.crash(old).await;
    let rest: Vec<NodeId> = [1, 2, 3].into_iter().filter(|i| *i != old).collect();
    let new = c.wait_leader_among(&rest).await;
    assert_ne!(new, old);
    assert!(c.nodes[&new].raft().metrics().borrow_watched().current_term > old_term);
    c.put(new, "after", "y").await.unwrap();
    // The old leader comes back (with only what it had fsynced) and catches up.
    c.start(old).await;
    let index = c.nodes[&new].status().applied_index;
    c.wait_applied_everywhere(&[1, 2, 3], index).await;
    assert_eq!(c.value(old, "before").as_deref(), Some("x"));
    assert_eq!(c.value(old, "after").as_deref(), Some("y"));
}

#[tokio::test(start_paused = true)]
async fn a_minority_partition_cannot_commit_and_healing_converges() {
    let c = Cluster::new(5, fast()).await;
    let all = [1, 2, 3, 4, 5];
    let old = c.wait_leader_among(&all).await;
    let buddy = all.into_iter().find(|i| *i != old).unwrap();
    let majority: Vec<NodeId> = all.into_iter().filter(|i| *i != old && *i != buddy).collect();
    c.net.partition(&[&[old, buddy], &majority]);

    // The old leader keeps its title for a while but cannot commit anything.
    let stuck = c.put(old, "minority", "lost").await;
    assert!(stuck.is_err(), "a minority committed a write: {stuck:?}");

    let new = c.wait_leader_among(&majority).await;
    c.put(new, "majority", "kept").await.unwrap();
    assert_eq!(c.value(buddy, "majority"), None);

    c.net.heal();
    let index = c.nodes[&new].status().applied_index;
    c.wait_applied_everywhere(&all, index).await;
    let leader = c.wait_leader_among(&all).await;
    for id in all {
        assert_eq!(c.value(id, "majority").as_deref(), Some("kept"), "node {id}");
        assert_eq!(c.value(id, "minority"), None, "node {id} applied an uncommitted write");
        assert_eq!(c.nodes[&id].state_machine().revision(), c.nodes[&leader].state_machine().revision());
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_learner_catches_up_through_a_snapshot() {
    let timing = RaftTiming { snapshot_every: 50, keep_behind_snapshot: 0, ..fast() };
    let mut c = Cluster::new(3, timing).await;
    let leader = c.wait_leader_among(&[1, 2, 3]).await;
    for i in 0..200 {
        c.put(leader, &format!("k{i:03}"), &i.to_string()).await.unwrap();
    }
    // Wait until the leader has snapshotted and purged its log.
    let purged = c.nodes[&leader]
        .wait_metrics(Duration::from_secs(30), |m| m.purged.as_ref().map(|l| l.index).unwrap_or(0) >= 100)
        .await;
    assert!(purged.is_some(), "leader never purged its log behind a snapshot");

    c.start(4).await;
    c.nodes[&leader]
        .membership_as_leader(MembershipOp::Add { id: 4, node: addr(4), learner_only: true })
        .await
        .unwrap();
    let index = c.nodes[&leader].status().applied_index;
    c.wait_applied_everywhere(&[4], index).await;
    assert!(c.nodes[&4].state_machine().snapshot_info().is_some(), "learner caught up without a snapshot");
    assert_eq!(c.value(4, "k000").as_deref(), Some("0"));
    assert_eq!(c.value(4, "k199").as_deref(), Some("199"));
    let status = c.nodes[&leader].status();
    assert!(status.members.iter().any(|m| m.id == 4 && !m.voter));
}

#[tokio::test(start_paused = true)]
async fn membership_changes_under_load_lose_no_acknowledged_write() {
    let mut c = Cluster::new(3, fast()).await;
    c.start(4).await;
    c.start(5).await;
    let leader = c.wait_leader_among(&[1, 2, 3]).await;
    let writer_node = c.nodes[&leader].clone();
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..150u32 {
            let cmd = Command::KvPut { key: format!("load/{i:04}"), value: vec![1], if_revision: None };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), writer_node.propose(None, cmd)).await {
                acked.push(i);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        acked
    });
    let l = c.nodes[&leader].clone();
    l.membership_as_leader(MembershipOp::Add { id: 4, node: addr(4), learner_only: false }).await.unwrap();
    l.membership_as_leader(MembershipOp::Add { id: 5, node: addr(5), learner_only: false }).await.unwrap();
    let victim = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    let view = l.membership_as_leader(MembershipOp::Remove { id: victim }).await.unwrap();
    assert!(!view.voters.contains(&victim));
    assert_eq!(view.voters.len(), 4);
    let acked = writer.await.unwrap();
    assert!(acked.len() > 100, "too few writes acknowledged: {}", acked.len());
    let survivors: Vec<NodeId> = [1, 2, 3, 4, 5].into_iter().filter(|i| *i != victim).collect();
    let index = c.nodes[&leader].status().applied_index;
    c.wait_applied_everywhere(&survivors, index).await;
    for id in survivors {
        for i in &acked {
            assert!(c.value(id, &format!("load/{i:04}")).is_some(), "node {id} lost acknowledged write {i}");
        }
    }
    c.crash(victim).await;
}

#[tokio::test(start_paused = true)]
async fn power_loss_on_every_node_keeps_acknowledged_writes() {
    let mut c = Cluster::new(3, fast()).await;
    let leader = c.wait_leader_among(&[1, 2, 3]).await;
    let mut acked = Vec::new();
    for i in 0..50 {
        c.put(leader, &format!("d{i}"), "v").await.unwrap();
        acked.push(i);
    }
    for id in [1, 2, 3] {
        c.crash(id).await;
    }
    for id in [1, 2, 3] {
        c.start(id).await;
    }
    let leader = c.wait_leader_among(&[1, 2, 3]).await;
    // A write in the new term commits everything before it.
    c.put(leader, "after-restart", "v").await.unwrap();
    let index = c.nodes[&leader].status().applied_index;
    c.wait_applied_everywhere(&[1, 2, 3], index).await;
    for id in [1, 2, 3] {
        for i in &acked {
            assert!(c.value(id, &format!("d{i}")).is_some(), "node {id} lost acknowledged write d{i}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn lossy_slow_network_still_converges() {
    let c = Cluster::new(3, fast()).await;
    c.net.set_delay(Duration::from_millis(20));
    c.net.set_drop_one_in(10);
    let mut ok = 0;
    for i in 0..40 {
        let leader = c.wait_leader_among(&[1, 2, 3]).await;
        if c.put(leader, &format!("l{i}"), "v").await.is_ok() {
            ok += 1;
        }
    }
    assert!(ok > 30, "only {ok} writes succeeded on a 10% lossy network");
    c.net.set_drop_one_in(0);
    let leader = c.wait_leader_among(&[1, 2, 3]).await;
    c.put(leader, "final", "v").await.unwrap();
    let index = c.nodes[&leader].status().applied_index;
    c.wait_applied_everywhere(&[1, 2, 3], index).await;
    let revs: Vec<u64> = c.nodes.values().map(|n| n.state_machine().revision()).collect();
    assert!(revs.windows(2).all(|w| w[0] == w[1]), "{revs:?}");
}

#[tokio::test(start_paused = true)]
async fn a_follower_far_behind_on_large_entries_catches_up_in_bounded_batches() {
    let c = Cluster::new(3, fast()).await;
    // A smaller message limit than production's 64 MiB keeps the test quick;
    // what matters is that the backlog is several times the limit.
    c.net.set_max_message_bytes(12 * 1024 * 1024);
    let leader = c.wait_leader_among(&[1, 2, 3]).await;
    let behind = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    c.net.isolate(behind, &[1, 2, 3]);
    // 96 entries of 512 KiB: 48 MiB the follower lacks, four times what
    // one peer message may carry.
    const ENTRY: usize = 512 * 1024;
    for i in 0..96u32 {
        let value = vec![(i % 251) as u8; ENTRY];
        let cmd = Command::KvPut { key: format!("big/{i:03}"), value, if_revision: None };
        c.nodes[&leader].propose(None, cmd).await.unwrap();
    }
    let last = c.nodes[&leader].status().last_log_index;
    c.net.heal();
    c.nodes[&behind].wait_applied(last, Duration::from_secs(10)).await.unwrap();
    assert_eq!(c.nodes[&behind].state_machine().get("big/095").unwrap().unwrap().value, vec![95u8; ENTRY]);
    // The leader sees it caught up (what caddy_raft_replication_lag_entries reports).
    let caught_up = c.nodes[&leader]
        .wait_metrics(Duration::from_secs(5), |m| {
            m.replication.as_ref().and_then(|r| r.get(&behind).cloned().flatten()).map(|l| l.index) == Some(last)
        })
        .await;
    assert!(caught_up.is_some(), "the leader never saw node {behind} reach index {last}");
}

/// The schedule a fault run found: the leader L is cut from follower B, then
/// from follower C, and C is killed and restarted at once. B and C must not
/// elect a new leader and commit a write while L, still within the lease it
/// earned from C's last acknowledgement, serves lease reads.
async fn restarted_follower_never_lets_a_lease_read_go_stale(timing: RaftTiming) {
    let mut c = Cluster::new(3, timing.clone()).await;
    let old = c.wait_leader_among(&[1, 2, 3]).await;
    let (b, cc) = {
        let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|i| *i != old).collect();
        (others[0], others[1])
    };
    c.put(old, "k", "before").await.unwrap();
    let index = c.nodes[&old].status().applied_index;
    c.wait_applied_everywhere(&[1, 2, 3], index).await;

    c.net.partition(&[&[old], &[b]]);
    tokio::time::sleep(Duration::from_millis(timing.election_max_ms / 2)).await;
    c.net.partition(&[&[old], &[cc]]);
    c.crash(cc).await;
    c.start(cc).await;

    // Wait for B and C to elect a leader among themselves, then write there.
    let mut written = false;
    for _ in 0..500 {
        let leader = [b, cc].into_iter().find(|id| c.nodes[id].raft().is_leader());
        if let Some(new) = leader
            && c.put(new, "k", "after").await.is_ok()
        {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(written, "B and C never elected a leader and committed a write");

    // The old leader is cut off from both. Whatever it answers, it must not
    // be the value from before an acknowledged write.
    let read = tokio::time::timeout(Duration::from_secs(1), c.nodes[&old].read_barrier()).await;
    if let Ok(Ok(())) = read {
        assert_eq!(
            c.value(old, "k").as_deref(),
            Some("after"),
            "stale read: the old leader served a value from before an acknowledged write"
        );
    }
}

// openraft draws election timeouts from an unseeded source, so whether the
// unsafe election happens inside the lease varies from run to run; a few
// trials make a regression show up (without the fix most trials fail).
const LEASE_TRIALS: usize = 4;

#[tokio::test(start_paused = true)]
async fn a_restarted_follower_does_not_vote_within_the_old_leaders_lease() {
    for _ in 0..LEASE_TRIALS {
        restarted_follower_never_lets_a_lease_read_go_stale(fast()).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_restarted_follower_does_not_vote_within_a_one_second_lease() {
    let timing = RaftTiming { election_min_ms: 500, election_max_ms: 1000, ..fast() };
    for _ in 0..LEASE_TRIALS {
        restarted_follower_never_lets_a_lease_read_go_stale(timing.clone()).await;
    }
}
