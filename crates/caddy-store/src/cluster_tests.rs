//! Join tokens, node certificates and the cluster's identity in the state
//! machine: single use, revocation, expiry and bounds of tokens; who may be
//! enrolled or renewed; generations only move up; InitCluster once; and what
//! snapshots and restores keep.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use caddy_core::{CaddyError, Command, ErrorCode, ReplyBody, credential_hash};

use super::{JoinToken, MAX_ACTIVE_TOKENS, MAX_TOKEN_RECORDS, NodeCert, TOKEN_RETENTION_MS, TokenState};
use crate::StateMachineStore;
use crate::backend::Disk;
use crate::identity::tests::{ADMIN, H};

const MIN: u64 = 60_000;

fn hash(s: &str) -> [u8; 32] {
    *blake3::hash(s.as_bytes()).as_bytes()
}

/// A cluster of voters 1 and 2.
fn cluster() -> H {
    let mut h = H::new();
    h.membership(&[1, 2], &[]);
    h
}

fn create(h: &mut H, secret: &str, ttl_ms: u64) -> Result<u64, CaddyError> {
    let expires_at_ms = h.now + 1 + ttl_ms;
    match h.command(Command::CreateJoinToken { token_hash: hash(secret), expires_at_ms })? {
        ReplyBody::Created { id } => Ok(id),
        other => panic!("{other:?}"),
    }
}

fn enroll(h: &mut H, secret: &str, node: u64, key: &str) -> Result<u64, CaddyError> {
    match h.command(Command::EnrollNode { token_hash: hash(secret), node, key_hash: hash(key) })? {
        ReplyBody::NodeCert { generation } => Ok(generation),
        other => panic!("{other:?}"),
    }
}

fn token(h: &H, id: u64) -> JoinToken {
    h.sm.join_tokens().unwrap().into_iter().find(|t| t.id == id).expect("token listed")
}

fn cert(h: &H, node: u64) -> NodeCert {
    h.sm.node_cert(node).unwrap().expect("certificate record")
}

#[test]
fn a_join_token_admits_one_node_once() {
    let mut h = cluster();
    let id = create(&mut h, "s1", 15 * MIN).unwrap();
    assert_eq!(h.sm.join_token_by_hash(&hash("s1")).unwrap().map(|t| t.id), Some(id));
    let generation = enroll(&mut h, "s1", 3, "k3").unwrap();
    assert_eq!(generation, 2, "issued generations start above the bootstrap's own");
    assert_eq!(cert(&h, 3), NodeCert { accepted_from: 2, latest: 2, key_hash: Some(hash("k3")), changed_ms: h.now });
    assert!(matches!(token(&h, id).state, TokenState::Used { node: 3, generation: 2, .. }));
    // The same node and key asking again (a lost reply) get the same answer...
    assert_eq!(enroll(&mut h, "s1", 3, "k3").unwrap(), 2);
    // ...anyone else is refused: another node, or node 3 with another key.
    for (node, key) in [(4, "k4"), (3, "k3b")] {
        let err = enroll(&mut h, "s1", node, key).unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied, "{err}");
        assert!(err.message.contains("used"), "{err}");
    }
    assert_eq!(cert(&h, 3).latest, 2);
    assert!(h.sm.node_cert(4).unwrap().is_none());
}

#[test]
fn revoked_expired_unknown_and_legacy_tokens_admit_nobody() {
    let mut h = cluster();
    let id = create(&mut h, "r", 15 * MIN).unwrap();
    h.command(Command::RevokeJoinToken { id }).unwrap();
    h.command(Command::RevokeJoinToken { id }).unwrap();
    assert!(matches!(token(&h, id).state, TokenState::Revoked { .. }));
    let err = enroll(&mut h, "r", 3, "k").unwrap_err();
    assert!(err.code == ErrorCode::PermissionDenied && err.message.contains("revoked"), "{err}");
    assert_eq!(h.command(Command::RevokeJoinToken { id: 99 }).unwrap_err().code, ErrorCode::NotFound);

    create(&mut h, "e", MIN).unwrap();
    h.now += 2 * MIN;
    assert_eq!(enroll(&mut h, "e", 3, "k").unwrap_err().code, ErrorCode::PermissionDenied);
    assert_eq!(enroll(&mut h, "never", 3, "k").unwrap_err().code, ErrorCode::PermissionDenied);

    // A used token cannot be revoked (remove the node instead).
    let used = create(&mut h, "u", MIN).unwrap();
    enroll(&mut h, "u", 3, "k").unwrap();
    assert_eq!(h.command(Command::RevokeJoinToken { id: used }).unwrap_err().code, ErrorCode::FailedPrecondition);

    // Tokens of the older, reusable kind are not honoured.
    let legacy = Command::AddJoinToken { token_hash: hash("old"), expires_at_ms: h.now + MIN };
    assert_eq!(h.command(legacy).unwrap_err().code, ErrorCode::FailedPrecondition);
    assert_eq!(enroll(&mut h, "old", 4, "k").unwrap_err().code, ErrorCode::PermissionDenied);
}

#[test]
fn token_lifetimes_and_counts_are_bounded() {
    let mut h = cluster();
    assert_eq!(create(&mut h, "long", 25 * 60 * MIN).unwrap_err().code, ErrorCode::InvalidArgument);
    let past = Command::CreateJoinToken { token_hash: hash("p"), expires_at_ms: h.now };
    assert_eq!(h.command(past).unwrap_err().code, ErrorCode::InvalidArgument);
    create(&mut h, "dup", MIN).unwrap();
    assert_eq!(create(&mut h, "dup", MIN).unwrap_err().code, ErrorCode::AlreadyExists);
    for i in 1..MAX_ACTIVE_TOKENS {
        create(&mut h, &format!("t{i}"), 15 * MIN).unwrap();
    }
    assert_eq!(create(&mut h, "one-too-many", MIN).unwrap_err().code, ErrorCode::ResourceExhausted);
    // Revoking one makes room.
    h.command(Command::RevokeJoinToken { id: 1 }).unwrap();
    create(&mut h, "room", MIN).unwrap();

    // Ended tokens are listed for a day, then forgotten.
    let listed = h.sm.join_tokens().unwrap().len();
    assert_eq!(listed, MAX_ACTIVE_TOKENS + 1);
    h.now += TOKEN_RETENTION_MS + 20 * MIN;
    create(&mut h, "later", MIN).unwrap();
    let ids: Vec<u64> = h.sm.join_tokens().unwrap().iter().map(|t| t.id).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(h.sm.join_token_by_hash(&hash("t1")).unwrap().is_none());

    // Records never exceed the cap, however many end within the retention.
    for i in 0..MAX_TOKEN_RECORDS + 10 {
        let id = create(&mut h, &format!("c{i}"), MIN).unwrap();
        h.command(Command::RevokeJoinToken { id }).unwrap();
    }
    assert!(h.sm.join_tokens().unwrap().len() <= MAX_TOKEN_RECORDS);
}

#[test]
fn a_token_cannot_take_over_a_members_id() {
    let mut h = cluster();
    h.membership(&[1, 2], &[5]);
    create(&mut h, "m", MIN).unwrap();
    for member in [1, 5] {
        let err = enroll(&mut h, "m", member, "k").unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err}");
    }
    assert_eq!(enroll(&mut h, "m", 0, "k").unwrap_err().code, ErrorCode::InvalidArgument);
    // The token was not consumed by those attempts.
    assert_eq!(enroll(&mut h, "m", 3, "k").unwrap(), 2);
}

#[test]
fn renewal_is_for_members_and_activation_only_moves_up() {
    let mut h = cluster();
    let renew = |h: &mut H, node: u64, key: &str| match h.command(Command::RenewNodeCert { node, key_hash: hash(key) })
    {
        Ok(ReplyBody::NodeCert { generation }) => Ok(generation),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    assert_eq!(renew(&mut h, 9, "k").unwrap_err().code, ErrorCode::FailedPrecondition);
    // Node 1 (the bootstrap node, generation 1, no record) rotates.
    assert!(h.sm.node_cert(1).unwrap().is_none());
    let g = renew(&mut h, 1, "k1").unwrap();
    assert_eq!(g, 2);
    // Until it activates, its old certificate stays valid.
    assert_eq!(cert(&h, 1).accepted_from, 0);
    // A renewal started again supersedes the unfinished one.
    let g2 = renew(&mut h, 1, "k1b").unwrap();
    assert_eq!(g2, 3);
    let stale = h.command(Command::ActivateNodeCert { node: 1, generation: g }).unwrap_err();
    assert_eq!(stale.code, ErrorCode::FailedPrecondition);
    h.command(Command::ActivateNodeCert { node: 1, generation: g2 }).unwrap();
    assert_eq!(cert(&h, 1), NodeCert { accepted_from: 3, latest: 3, key_hash: Some(hash("k1b")), changed_ms: h.now });
    h.command(Command::ActivateNodeCert { node: 1, generation: g2 }).unwrap();
    assert_eq!(h.command(Command::ActivateNodeCert { node: 7, generation: 2 }).unwrap_err().code, ErrorCode::NotFound);

    // A removed node re-enrolled gets a newer generation than all before.
    h.membership(&[2], &[]);
    create(&mut h, "again", MIN).unwrap();
    assert_eq!(enroll(&mut h, "again", 1, "k1c").unwrap(), 4);
    assert_eq!(cert(&h, 1).accepted_from, 4);
}

#[test]
fn init_cluster_is_refused_once_the_cluster_exists() {
    let mut h = H::new();
    let before = (h.sm.cluster_id(), h.sm.admin_credential_hash());
    let err = h
        .command(Command::InitCluster { cluster_id: "other".into(), admin_credential_hash: credential_hash("x") })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err}");
    assert_eq!((h.sm.cluster_id(), h.sm.admin_credential_hash()), before);
    assert_eq!(h.sm.admin_credential_hash(), Some(credential_hash(ADMIN)));
}

#[test]
fn snapshots_keep_credentials_and_restores_start_a_new_cluster() {
    let mut h = cluster();
    create(&mut h, "kept", 15 * MIN).unwrap();
    enroll(&mut h, "kept", 3, "k3").unwrap();
    let snap = h._dir.path().join("state.snap");
    h.sm.export(&snap).unwrap();

    // A snapshot installed on a follower keeps tokens and certificates.
    let dir = tempfile::tempdir().unwrap();
    let follower = StateMachineStore::open(&Disk::Dir(dir.path().to_path_buf())).unwrap();
    let mut file = std::fs::File::open(&snap).unwrap();
    follower.install_for_test(&mut file).unwrap();
    assert_eq!(follower.join_tokens().unwrap(), h.sm.join_tokens().unwrap());
    assert_eq!(follower.node_cert(3).unwrap(), h.sm.node_cert(3).unwrap());
    assert_eq!(follower.cluster_id().as_deref(), Some("c"));

    // A restored one keeps the data but not the cluster's identity or credentials.
    let dir = tempfile::tempdir().unwrap();
    let restored = StateMachineStore::open(&Disk::Dir(dir.path().to_path_buf())).unwrap();
    restored.restore_backup(&snap).unwrap();
    assert_eq!(restored.cluster_id(), None, "a restored state kept the old cluster's identity");
    assert_eq!(restored.admin_credential_hash(), None);
    assert!(restored.join_tokens().unwrap().is_empty());
    assert!(restored.node_cert(3).unwrap().is_none());
    let mut fresh = H::on(dir, restored);
    fresh
        .command(Command::InitCluster { cluster_id: "new".into(), admin_credential_hash: credential_hash("n") })
        .unwrap();
    assert_eq!(fresh.sm.cluster_id().as_deref(), Some("new"));
    assert_eq!(fresh.sm.admin_credential_hash(), Some(credential_hash("n")));
}

#[test]
fn a_removed_member_has_every_certificate_retired_and_joins_again_only_by_token() {
    let mut h = H::new();
    h.membership(&[1, 2], &[]);
    create(&mut h, "s1", 15 * MIN).unwrap();
    assert_eq!(enroll(&mut h, "s1", 3, "k3").unwrap(), 2);
    h.membership(&[1, 2], &[3]);
    h.membership(&[1, 2, 3], &[]);
    assert_eq!(cert(&h, 3).accepted_from, 2, "a member keeps its certificate");

    // Node 3 (enrolled, generation 2) and node 2 (the bootstrap's own
    // generation 1, no record) leave.
    h.membership(&[1], &[]);
    assert_eq!((cert(&h, 3).accepted_from, cert(&h, 3).latest), (3, 2), "generation 2 retired");
    assert_eq!((cert(&h, 2).accepted_from, cert(&h, 2).latest), (2, 1), "generation 1 retired");
    assert_eq!(h.sm.node_cert(1).unwrap(), None, "a staying member is untouched");

    // A new token issues a generation past the retired ones.
    create(&mut h, "s2", 15 * MIN).unwrap();
    assert_eq!(enroll(&mut h, "s2", 3, "k3b").unwrap(), 3);
    assert_eq!(cert(&h, 3).accepted_from, 3);
    create(&mut h, "s3", 15 * MIN).unwrap();
    assert_eq!(enroll(&mut h, "s3", 2, "k2").unwrap(), 2);
    assert_eq!(cert(&h, 2).accepted_from, 2);
}
