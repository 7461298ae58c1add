//! Who may speak to a node over the peer protocol: only current members,
//! each with the certificate the cluster last activated for its id; join
//! tokens admit one node once and can be revoked; certificates rotate
//! without a restart; the bootstrap node never re-initializes a cluster.

mod support;

use std::time::{Duration, Instant};

use caddy_raft::pb;
use caddy_raft::peers::PeerClients;
use caddy_wire::tls::{CaMaterial, LiveIdentity, NodeCertName, NodeIdentity};
use support::Dev;

fn read(dev: &Dev, node: u64, file: &str) -> String {
    std::fs::read_to_string(dev.dir.join(format!("node{node}/tls/{file}"))).expect("tls file")
}

fn identity(dev: &Dev, node: u64) -> NodeIdentity {
    NodeIdentity { cert_pem: read(dev, node, "node.pem"), key_pem: read(dev, node, "node.key") }
}

/// Asks the peer at `addr` to describe itself, presenting `identity`.
async fn describe(ca: &str, identity: &NodeIdentity, addr: &str) -> Result<(), tonic::Status> {
    let live = LiveIdentity::new(identity.clone()).expect("identity");
    let peers = PeerClients::new(ca, Some(live), Duration::from_secs(5)).expect("peer clients");
    let mut client = peers.newcomer_client(addr)?;
    tokio::time::timeout(Duration::from_secs(5), client.describe(pb::Empty {}))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no answer"))?
        .map(drop)
}

fn assert_refused(result: Result<(), tonic::Status>, what: &str) {
    match result {
        Err(s) if s.code() == tonic::Code::PermissionDenied => {}
        other => panic!("{what}: expected permission_denied, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_and_a_non_member_id_are_refused() {
    let dev = Dev::start(3, &[]);
    let ca = read(&dev, 1, "ca.pem");
    // Only the node that created the cluster holds the CA key.
    assert!(dev.dir.join("node1/tls/ca.key").exists());
    for node in [2, 3] {
        assert!(!dev.dir.join(format!("node{node}/tls/ca.key")).exists(), "node {node} received the CA key");
    }
    let node3 = identity(&dev, 3);
    // A member's certificate works.
    describe(&ca, &node3, &dev.raft_addr(1)).await.expect("a member may call");

    // But even a member may not forward what no member proposes for others...
    let peers = PeerClients::new(&ca, Some(LiveIdentity::new(node3.clone()).expect("id")), Duration::from_secs(5))
        .expect("peers");
    let mut client = peers.client(&dev.raft_addr(1)).expect("client");
    let init = caddy_raft::node::ForwardRequest {
        origin: None,
        command: caddy_core::Command::InitCluster { cluster_id: "x".into(), admin_credential_hash: [7; 32] },
    };
    let data = caddy_core::codec::to_bytes(&init).expect("encode");
    let answer = client.forward(pb::Blob { data }).await.expect("forward answered").into_inner();
    let answer: Result<caddy_core::ReplyBody, caddy_core::CaddyError> =
        caddy_core::codec::from_bytes(&answer.data).expect("decode");
    assert_eq!(answer.map_err(|e| e.code), Err(caddy_core::ErrorCode::PermissionDenied));
    // ...nor get a certificate signed that the cluster did not issue.
    let csr = caddy_wire::tls::new_node_key(&[]).expect("key").csr_pem;
    let signed = client.sign_node_cert(pb::SignRequest { node_id: 3, generation: 99, csr_pem: csr }).await;
    assert_refused(signed.map(drop), "an unissued certificate");
    dev.ctl_ok(&["kv", "put", "credential", "unchanged"]);

    // Removed: refused at once by every remaining member.
    dev.ctl_ok(&["cluster", "remove-node", "3"]);
    for node in [1, 2] {
        assert_refused(describe(&ca, &node3, &dev.raft_addr(node)).await, "removed node 3");
    }
    // Nor can it add itself back: the removal retired its certificate.
    let rejoin = pb::AddMemberRequest {
        node_id: 3,
        raft_addr: dev.raft_addr(3),
        client_addr: dev.client_addr(3),
        admin_addr: dev.admin_addr(3),
        learner_only: true,
    };
    let mut newcomer = peers.newcomer_client(&dev.raft_addr(1)).expect("client");
    let readded = tokio::time::timeout(Duration::from_secs(10), newcomer.add_member(rejoin)).await.expect("answered");
    assert_refused(readded.map(drop), "removed node 3 adding itself back");
    let members = dev.status()["members"].as_array().map(|m| m.len());
    assert_eq!(members, Some(2), "{}", dev.status());

    // A certificate the CA signed for an id that is not a member.
    let material = CaMaterial { cert_pem: ca.clone(), key_pem: read(&dev, 1, "ca.key") };
    let stranger =
        caddy_wire::tls::issue_node_cert(&material, NodeCertName { id: 99, generation: 9 }, &[]).expect("issue");
    assert_refused(describe(&ca, &stranger, &dev.raft_addr(1)).await, "node 99");
    // A member's id at a generation the cluster never issued (signed with
    // a copy of the CA key).
    let forged =
        caddy_wire::tls::issue_node_cert(&material, NodeCertName { id: 2, generation: 50 }, &[]).expect("issue");
    assert_refused(describe(&ca, &forged, &dev.raft_addr(1)).await, "node 2 at generation 50");
    // The cluster keeps working without node 3.
    dev.ctl_ok(&["kv", "put", "still", "working"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_admit_one_enrollment_and_can_be_revoked() {
    let dev = Dev::start(1, &[]);
    let seed = dev.raft_addr(1);
    let token = dev.ctl_ok(&["cluster", "join-token"]).trim().to_string();
    let key = caddy_wire::tls::new_node_key(&[]).expect("key");
    let enrolled = caddy_raft::enroll::enroll(&seed, &token, 7, &key).await.expect("first use of the token");
    let name = caddy_wire::tls::node_cert_name_pem(&enrolled.identity.cert_pem).expect("name");
    assert_eq!(name.id, 7);
    // A lost answer: the same node with the same key may ask again.
    let again = caddy_raft::enroll::enroll(&seed, &token, 7, &key).await.expect("retry with the same key");
    assert_eq!(again.generation, enrolled.generation);
    // Anyone else is refused.
    let other = caddy_wire::tls::new_node_key(&[]).expect("key");
    let err = caddy_raft::enroll::enroll(&seed, &token, 8, &other).await.expect_err("a used token enrolled again");
    assert!(err.to_string().contains("used"), "{err}");

    // A revoked token admits nobody.
    let created = dev.ctl_ok(&["--json", "cluster", "join-token", "--ttl", "5m"]);
    let created: serde_json::Value = serde_json::from_str(&created).expect("json");
    let (revoked, id) = (created["token"].as_str().expect("token"), created["id"].as_u64().expect("id"));
    dev.ctl_ok(&["cluster", "join-token", "--revoke", &id.to_string()]);
    let err = caddy_raft::enroll::enroll(&seed, revoked, 8, &other).await.expect_err("a revoked token enrolled");
    assert!(err.to_string().contains("revoked"), "{err}");
    let list: serde_json::Value =
        serde_json::from_str(&dev.ctl_ok(&["--json", "cluster", "join-token", "--list"])).expect("json");
    let states: Vec<(u64, String)> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|t| (t["id"].as_u64().unwrap_or(0), t["state"].as_str().unwrap_or("").to_string()))
        .collect();
    assert!(states.contains(&(id, "revoked".into())), "{states:?}");
    assert!(states.iter().any(|(_, s)| s == "used"), "{states:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_certificates_keeps_the_cluster_and_retires_the_old_ones() {
    let dev = Dev::start(3, &[]);
    let ca = read(&dev, 1, "ca.pem");
    let old: Vec<NodeIdentity> = (1..=3).map(|n| identity(&dev, n)).collect();
    dev.ctl_ok(&["kv", "put", "before", "1"]);

    let out = dev.ctl_ok(&["--json", "cluster", "rotate-certs"]);
    let rotated: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(rotated.as_array().map(Vec::len), Some(3), "{out}");

    for node in 1..=3u64 {
        let fresh = identity(&dev, node);
        let (before, after) = (
            caddy_wire::tls::node_cert_name_pem(&old[node as usize - 1].cert_pem).expect("old name"),
            caddy_wire::tls::node_cert_name_pem(&fresh.cert_pem).expect("new name"),
        );
        assert_eq!(after.id, node);
        assert!(after.generation > before.generation, "node {node}: {before} -> {after}");
        assert_ne!(fresh.key_pem, old[node as usize - 1].key_pem, "node {node} kept its key");
        for peer in (1..=3u64).filter(|p| *p != node) {
            assert_refused(describe(&ca, &old[node as usize - 1], &dev.raft_addr(peer)).await, "an old certificate");
            describe(&ca, &fresh, &dev.raft_addr(peer)).await.expect("the new certificate");
        }
    }
    // Still one working cluster, through every node, without a restart.
    for node in 1..=3u64 {
        let client = dev.client_for(node).await;
        client.put(&format!("after/{node}"), "2").await.expect("write after rotation");
        assert!(client.get("before").await.expect("read").kv.is_some());
    }
    let status = dev.status();
    let members = status["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.iter().filter(|m| m["role"] == "voter").count(), 3, "{status}");
    let pids: Vec<u32> = (1..=3).map(|n| dev.pid(n)).collect();
    assert!(pids.iter().all(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()), "a node restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_node_restarted_without_its_admin_token_keeps_the_cluster() {
    let mut dev = Dev::start(1, &[]);
    let client = dev.client().await;
    client.put("before", "1").await.expect("put");
    let cluster_id = client.status().await.expect("status").cluster_id;
    assert!(!cluster_id.is_empty());
    dev.kill9(1);
    let token_file = dev.dir.join("node1/admin.token");
    std::fs::remove_file(&token_file).expect("remove admin.token");
    let log = dev.dir.join("node1/caddyd.log");
    let served_before = std::fs::read_to_string(&log).unwrap_or_default().matches("caddyd is serving").count();
    dev.restart(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&log).unwrap_or_default().matches("caddyd is serving").count() <= served_before {
        assert!(
            Instant::now() < deadline,
            "node 1 did not come back:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The credential the cluster was created with still works...
    let client = dev.client().await;
    client.put("after", "2").await.expect("the original admin credential was replaced");
    assert_eq!(client.get("before").await.expect("get").kv.map(|kv| kv.value), Some(b"1".to_vec()));
    assert_eq!(client.status().await.expect("status").cluster_id, cluster_id);
    // ...and no new credential was minted.
    assert!(!token_file.exists(), "a new admin credential was written");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("admin.token") && text.contains("missing"), "no clear error in the log");
}
