//! A follower that missed more than the leader keeps in its log catches up
//! through a snapshot streamed over the peer gRPC channel in chunks.

mod support;

use std::time::{Duration, Instant};

use support::Dev;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_gets_a_chunked_snapshot() {
    let mut dev = Dev::start(3, &[("CADDY_RAFT_SNAPSHOT_EVERY", "100"), ("CADDY_RAFT_KEEP_BEHIND_SNAPSHOT", "0")]);
    let client = dev.client().await;
    client.put("before", "x").await.expect("put");
    let leader = dev.leader();
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    dev.kill9(follower);

    // ~4 MiB of state: several 1 MiB chunks, and enough entries for the
    // leader to snapshot and purge its log past what the follower has.
    let value = vec![b'z'; 16 * 1024];
    for i in 0..260u32 {
        client.put(&format!("bulk/{i:04}"), value.clone()).await.expect("put while a follower is down");
    }

    dev.restart(follower);
    let ca = std::fs::read_to_string(dev.dir.join("node1/tls/ca.pem")).expect("ca");
    let admin = dev.admin_addr(follower);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = support::https_get(&admin, &ca, "/status").await;
        if code == 200 {
            let status: serde_json::Value = serde_json::from_str(&body).expect("status json");
            let snap = status["snapshot_index"].as_u64().unwrap_or(0);
            let applied = status["applied_index"].as_u64().unwrap_or(0);
            if snap > 0 && applied >= snap {
                break;
            }
        }
        assert!(Instant::now() < deadline, "follower {follower} never installed a snapshot");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let local = dev.client_for(follower).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = local.get_serializable("bulk/0259").await
            && r.kv.is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "follower {follower} misses the last write");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = local.get_serializable("before").await.expect("local read");
    assert_eq!(r.kv.map(|kv| kv.value), Some(b"x".to_vec()));
    let r = local.get_serializable("bulk/0100").await.expect("local read");
    assert_eq!(r.kv.map(|kv| kv.value.len()), Some(16 * 1024));
    let log = std::fs::read_to_string(dev.dir.join(format!("node{follower}/caddyd.log"))).expect("log");
    assert!(log.contains("installed snapshot"), "follower log shows no snapshot install");
}
