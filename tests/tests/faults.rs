//! Faults that cost more than themselves: a paused or cut-off leader must
//! delay the clients of the other nodes by no more than the election that
//! replaces it, and a paused node must be back in step as soon as it resumes.

mod support;

use std::time::{Duration, Instant};

use support::{Dev, signal};

fn others(leader: u64) -> Vec<u64> {
    [1, 2, 3].into_iter().filter(|n| *n != leader).collect()
}

/// The old leader is unreachable (paused) but a client of another node has
/// a write and a linearizable read to do: each must complete about as soon
/// as the new leader exists, not after the node's own wait for the old one
/// (5 s) ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_delays_the_other_nodes_clients_by_the_election_only() {
    let dev = Dev::start(3, &[]);
    let leader = dev.leader();
    let via = others(leader)[0];
    let client = dev.client_for_with_timeout(via, Duration::from_secs(20)).await;
    client.put("w", "before").await.expect("put through a follower");

    signal(dev.pid(leader), libc::SIGSTOP);
    let started = Instant::now();
    let put = client.put("w", "after").await;
    let write_took = started.elapsed();
    signal(dev.pid(leader), libc::SIGCONT);
    put.expect("write through a follower while the leader is paused");
    assert!(write_took < Duration::from_secs(3), "the write took {write_took:?}");

    // Now pause the new leader and read through a node that is not it.
    let second = dev.leader();
    let reader = others(second).into_iter().next().expect("another node");
    let client = dev.client_for_with_timeout(reader, Duration::from_secs(20)).await;
    client.get("w").await.expect("a first read");
    signal(dev.pid(second), libc::SIGSTOP);
    let started = Instant::now();
    let got = client.get("w").await;
    let read_took = started.elapsed();
    signal(dev.pid(second), libc::SIGCONT);
    assert_eq!(got.expect("read while the leader is paused").kv.map(|kv| kv.value), Some(b"after".to_vec()));
    assert!(read_took < Duration::from_secs(3), "the linearizable read took {read_took:?}");
}
