//! A node that joins after the leader has snapshotted and purged its log
//! catches up through a snapshot streamed over the peer gRPC channel in
//! chunks; it joins the way the README tells an operator to (a config file,
//! `caddyctl cluster join-token`, `caddyd start`).

mod support;

use std::time::{Duration, Instant};

use support::Dev;

const SNAPSHOT_ENV: [(&str, &str); 2] =
    [("CADDY_RAFT_SNAPSHOT_EVERY", "100"), ("CADDY_RAFT_KEEP_BEHIND_SNAPSHOT", "0")];

async fn status(dev: &Dev, ca: &str, node: u64) -> Option<serde_json::Value> {
    let (code, body) = support::https_get(&dev.admin_addr(node), ca, "/status").await;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_after_the_log_was_purged_gets_a_chunked_snapshot() {
    let mut dev = Dev::start(3, &SNAPSHOT_ENV);
    let ca = std::fs::read_to_string(dev.dir.join("node1/tls/ca.pem")).expect("ca");
    let client = dev.client().await;
    // ~4 MiB of state: several 1 MiB chunks, and enough entries for the
    // leader to snapshot and purge its log.
    let value = vec![b'z'; 16 * 1024];
    for i in 0..260u32 {
        client.put(&format!("bulk/{i:04}"), value.clone()).await.expect("put");
    }
    let leader = dev.leader();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = status(&dev, &ca, leader).await
            && s["purged_index"].as_u64().unwrap_or(0) > 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "the leader never purged its log behind a snapshot");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Node 4 joins through a member with a join token.
    let token = dev.ctl_ok(&["cluster", "join-token", "--ttl", "10m"]).trim().to_string();
    let dir = dev.dir.join("node4");
    std::fs::create_dir_all(&dir).expect("node4 dir");
    let config = format!(
        "node_id = 4\ndata_dir = \"{}\"\n[listen]\nraft = \"127.0.0.1:{}\"\nclient = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n[cluster]\njoin = [\"{}\"]\n",
        dir.display(),
        support::free_port(),
        support::free_port(),
        support::free_port(),
        dev.raft_addr(1)
    );
    std::fs::write(dir.join("caddyd.toml"), config).expect("node4 config");
    let mut env = SNAPSHOT_ENV.to_vec();
    env.push(("CADDY_CLUSTER_JOIN_TOKEN", token.as_str()));
    dev.spawn_node(&dir.join("caddyd.toml"), &env);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = status(&dev, &ca, 4).await {
            let snap = s["snapshot_index"].as_u64().unwrap_or(0);
            if snap > 0 && s["applied_index"].as_u64().unwrap_or(0) >= snap {
                break;
            }
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(dir.join("caddyd.log")).unwrap_or_default();
            panic!("node 4 never installed a snapshot; log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let local = dev.client_for(4).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = local.get_serializable("bulk/0259").await
            && r.kv.is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 misses the last write");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = local.get_serializable("bulk/0000").await.expect("local read");
    assert_eq!(r.kv.map(|kv| kv.value.len()), Some(16 * 1024));
    let log = std::fs::read_to_string(dir.join("caddyd.log")).expect("log");
    assert!(log.contains("installed snapshot"), "node 4 caught up without installing a snapshot");
    // It became a voter.
    let members = dev.status()["members"].as_array().cloned().unwrap_or_default();
    assert!(members.iter().any(|m| m["id"] == 4 && m["role"] == "voter"), "{members:?}");
}
