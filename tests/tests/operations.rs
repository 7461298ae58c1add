//! Operating a cluster through caddyctl: status, membership, leadership,
//! snapshots, join tokens, watches, admin endpoints, backup and restore.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Dev, bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_administration_through_the_cli() {
    let dev = Dev::start(3, &[]);
    let status = dev.status();
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["role"] == "voter"), "{status}");
    assert_eq!(members.iter().filter(|m| m["leader"] == true).count(), 1);
    let table = dev.ctl_ok(&["cluster", "status"]);
    assert!(table.contains("voter") && table.contains("healthy"), "{table}");

    // Leadership transfer.
    let leader = dev.leader();
    let target = (1..=3).find(|n| *n != leader).expect("another node");
    dev.ctl_ok(&["cluster", "transfer-leader", &target.to_string()]);
    assert_eq!(dev.leader(), target);

    // Remove a node, then add it back by its peer address.
    let victim = (1..=3).find(|n| *n != target).expect("a follower");
    dev.ctl_ok(&["cluster", "remove-node", &victim.to_string()]);
    let status = dev.status();
    assert_eq!(status["members"].as_array().map(|m| m.len()), Some(2), "{status}");
    dev.ctl_ok(&["cluster", "add-node", &dev.raft_addr(victim)]);
    let status = dev.status();
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.iter().filter(|m| m["role"] == "voter").count(), 3, "{status}");

    // A snapshot on demand, and a join token.
    dev.ctl_ok(&["kv", "put", "snap/k", "v"]);
    let out = dev.ctl_ok(&["--json", "cluster", "snapshot"]);
    let snap: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(snap["index"].as_u64().unwrap_or(0) > 0, "{out}");
    let token = dev.ctl_ok(&["cluster", "join-token", "--ttl", "10m"]);
    assert!(token.trim().starts_with("caddyjoin."), "{token}");

    // Admin endpoints over HTTPS.
    let ca = std::fs::read_to_string(dev.dir.join("node1/tls/ca.pem")).expect("ca");
    let admin = dev.admin_addr(1);
    assert_eq!(support::https_get(&admin, &ca, "/healthz").await.0, 200);
    let (code, body) = support::https_get(&admin, &ca, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    let (code, metrics) = support::https_get(&admin, &ca, "/metrics").await;
    assert_eq!(code, 200);
    for name in [
        "caddy_raft_term",
        "caddy_raft_commit_index",
        "caddy_raft_applied_index",
        "caddy_raft_log_length",
        "caddy_requests_total",
        "caddy_quic_connections_total",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }

    // Node logs are plain text for files and log shippers: no colour codes,
    // no noise from the graphics probe.
    for node in 1..=3 {
        let log = dev.node_log(node);
        assert!(log.contains("caddyd is serving"), "node {node} log: {log}");
        assert!(!log.contains('\u{1b}'), "node {node} logs terminal escape codes to a file");
        assert!(!log.contains("XDG_RUNTIME_DIR"), "node {node} logs the graphics probe's complaint");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_changes_and_resumes_from_a_revision() {
    let dev = Dev::start(3, &[]);
    let first = dev.ctl_ok(&["--json", "kv", "put", "w/a", "1"]);
    let rev: serde_json::Value = serde_json::from_str(&first).expect("json");
    let rev = rev["revision"].as_u64().expect("revision");
    dev.ctl_ok(&["kv", "put", "w/b", "2"]);
    dev.ctl_ok(&["kv", "put", "other/x", "3"]);

    let mut watch = Command::new(bin("caddyctl"))
        .arg("--config")
        .arg(dev.client_toml())
        .args(["--json", "kv", "watch", "w/", "--from-revision", &rev.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("watch");
    let stdout = watch.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.push(line);
            if lines.len() == 4 {
                break;
            }
        }
        lines
    });
    std::thread::sleep(Duration::from_millis(500));
    dev.ctl_ok(&["kv", "put", "w/c", "4"]);
    dev.ctl_ok(&["kv", "del", "w/a"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    support::signal(watch.id(), libc::SIGTERM);
    let _ = watch.wait();
    let lines = reader.join().expect("reader");
    assert_eq!(lines.len(), 4, "{lines:?}");
    let keys: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            format!("{}:{}", v["kind"].as_str().unwrap_or("?").to_lowercase(), v["key"].as_str().unwrap_or("?"))
        })
        .collect();
    assert_eq!(keys, vec!["put:w/a", "put:w/b", "put:w/c", "delete:w/a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_fresh_cluster_with_every_key() {
    let dev = Dev::start(3, &[]);
    let client = dev.client().await;
    for i in 0..300u32 {
        client.put(&format!("b/{i:04}"), vec![b'x'; (i % 50) as usize]).await.expect("put");
    }
    client.delete("b/0007").await.expect("delete");
    let backup = dev.dir.join("backup.snap");
    dev.ctl_ok(&["cluster", "backup", "-o", backup.to_str().expect("utf8")]);
    assert!(std::fs::metadata(&backup).expect("backup file").len() > 0);

    let tmp = tempfile::tempdir().expect("tmp");
    let fresh = tmp.path().join("restored");
    let out = Command::new(bin("caddyd"))
        .args(["restore", "--from", backup.to_str().expect("utf8"), "--dir"])
        .arg(fresh.join("node1"))
        .output()
        .expect("restore");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Refuses to overwrite a node.
    let again = Command::new(bin("caddyd"))
        .args(["restore", "--from", backup.to_str().expect("utf8"), "--dir"])
        .arg(fresh.join("node1"))
        .output()
        .expect("restore");
    assert!(!again.status.success());

    let restored = Dev::resume(&fresh, 3);
    let client = restored.client().await;
    for i in 0..300u32 {
        let got = client.get(&format!("b/{i:04}")).await.expect("get");
        if i == 7 {
            assert!(got.kv.is_none(), "deleted key came back");
        } else {
            assert_eq!(got.kv.map(|kv| kv.value.len()), Some((i % 50) as usize), "key b/{i:04}");
        }
    }
    // The restored cluster is a new, writable cluster with its own credential.
    client.put("after/restore", "ok").await.expect("write to restored cluster");
    let old_cred = std::fs::read_to_string(dev.dir.join("node1/admin.token")).expect("old token");
    let new_cred = std::fs::read_to_string(fresh.join("node1/admin.token")).expect("new token");
    assert_ne!(old_cred, new_cred);
    drop(restored);
}
