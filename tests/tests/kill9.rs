//! kill -9 the leader under writes: no acknowledged write is lost, writes
//! resume within seconds, the killed node catches up after a restart, and a
//! full stop/start keeps everything.

mod support;

use std::time::{Duration, Instant};

use support::Dev;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill9_restart_and_full_restart_keep_every_acknowledged_write() {
    let mut dev = Dev::start(3, &[]);
    // Writes through the CLI...
    for i in 0..5 {
        let out = dev.ctl_ok(&["kv", "put", &format!("cli/{i}"), &format!("v{i}")]);
        assert!(out.contains("revision"), "{out}");
    }
    assert_eq!(dev.ctl_ok(&["kv", "get", "cli/3"]).trim(), "v3");
    // ...and through the SDK, recording what was acknowledged.
    let client = dev.client().await;
    let mut acked = Vec::new();
    for i in 0..200u32 {
        client.put(&format!("sdk/{i:04}"), format!("{i}")).await.expect("put before the kill");
        acked.push(i);
    }

    let leader = dev.leader();
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 1000..1300u32 {
                if client.put(&format!("sdk/{i:04}"), format!("{i}")).await.is_ok() {
                    acked.push(i);
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    dev.kill9(leader);
    let killed_at = Instant::now();
    // Writes succeed again within seconds.
    let probe = dev.client().await;
    let mut resumed = None;
    while killed_at.elapsed() < Duration::from_secs(20) {
        if probe.put("probe/after-kill", "1").await.is_ok() {
            resumed = Some(killed_at.elapsed());
            break;
        }
    }
    let resumed = resumed.expect("writes did not resume within 20 s of killing the leader");
    assert!(resumed < Duration::from_secs(10), "writes resumed only after {resumed:?}");
    acked.extend(writer.await.expect("writer"));
    let new_leader = dev.leader();
    assert_ne!(new_leader, leader);

    // Every acknowledged write is readable (linearizable reads).
    for i in &acked {
        let got = client.get(&format!("sdk/{i:04}")).await.expect("get");
        assert_eq!(got.kv.map(|kv| kv.value), Some(i.to_string().into_bytes()), "acknowledged write {i} lost");
    }

    // The killed node restarts and catches up.
    dev.restart(leader);
    let node_client = dev.client_for(leader).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = node_client.get_serializable("probe/after-kill").await
            && r.kv.is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "restarted node {leader} never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = acked.last().copied().expect("some writes");
    let r = node_client.get_serializable(&format!("sdk/{last:04}")).await.expect("local read");
    assert!(r.kv.is_some(), "restarted node misses write {last}");

    // Stop the whole cluster and start it again on the same directory.
    let keep = dev.keep_dir();
    let dir = dev.dir.clone();
    dev.stop();
    drop(dev);
    let dev = Dev::resume(&dir, 3);
    let client = dev.client().await;
    for i in &acked {
        let got = client.get(&format!("sdk/{i:04}")).await.expect("get after restart");
        assert!(got.kv.is_some(), "write {i} lost across a full restart");
    }
    assert_eq!(dev.ctl_ok(&["kv", "get", "cli/4"]).trim(), "v4");
    drop(dev);
    drop(keep);
}
