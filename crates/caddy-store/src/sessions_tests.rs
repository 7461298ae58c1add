//! Exactly-once lanes through real applies: bound to the credential and
//! tenant, refused when they jump, handed out only to a caller still
//! allowed, bounded per credential, carried by snapshots.

use caddy_core::identity::Quotas;
use caddy_core::identity::api::Op;
use caddy_core::{ClientSeq, ErrorCode, ReplyBody};
use redb::ReadableTableMetadata;

use crate::identity::tests::{ADMIN, H};
use crate::sessions::{CLIENT_SESSIONS, MAX_LANES_PER_SCOPE, MAX_REMEMBERED_VALUE_BYTES};

fn lane(client_id: u64, sequence: u64) -> ClientSeq {
    ClientSeq { client_id, sequence }
}

fn put(key: &str, value: &[u8]) -> Op {
    Op::KvPut { key: key.into(), value: value.to_vec(), if_revision: None }
}

fn previous_value(reply: ReplyBody) -> Option<Vec<u8>> {
    match reply {
        ReplyBody::Put { previous, .. } => previous.map(|kv| kv.value),
        other => panic!("{other:?}"),
    }
}

/// Two tenants' admins; the victim writes on a lane whose id and sequence
/// the other can see (they reach request ids and audit entries).
fn two_tenants() -> (H, String, String) {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    h.tenant("globex", Quotas::default());
    let v = h.user("acme", "victim@acme.test", &["admin"]);
    let a = h.user("globex", "attacker@globex.test", &["admin"]);
    let victim = h.login("acme", v, 3_600_000);
    let attacker = h.login("globex", a, 3_600_000);
    (h, victim, attacker)
}

#[test]
fn another_credential_can_neither_read_nor_spoil_a_lane() {
    let (mut h, victim, attacker) = two_tenants();
    h.call_from(&victim, Some("acme"), lane(42, 1), put("plan", b"secret v1")).unwrap();
    let second = h.call_from(&victim, Some("acme"), lane(42, 2), put("plan", b"v2")).unwrap();
    assert_eq!(previous_value(second), Some(b"secret v1".to_vec()));

    // Replaying the victim's lane from another tenant is a new write of the
    // attacker's own, answered from the attacker's own namespace.
    let replay = h.call_from(&attacker, Some("globex"), lane(42, 2), put("plan", b"x")).unwrap();
    assert_eq!(previous_value(replay), None, "another tenant's admin got the victim's remembered reply");

    // A sequence no client sends cannot shut the victim's lane either.
    let spoil = h.call_from(&attacker, Some("globex"), lane(42, u64::MAX), put("plan", b"y")).unwrap_err();
    assert_eq!(spoil.code, ErrorCode::FailedPrecondition, "{spoil}");
    let next = h.call_from(&victim, Some("acme"), lane(42, 3), put("plan", b"v3")).unwrap();
    assert_eq!(previous_value(next), Some(b"v2".to_vec()));

    // The same credential for another tenant is another lane as well.
    let other_tenant = h.call_from(ADMIN, Some("globex"), lane(9, 1), put("k", b"1")).unwrap();
    let same_lane = h.call_from(ADMIN, Some("acme"), lane(9, 1), put("k", b"2")).unwrap();
    assert_eq!((previous_value(other_tenant), previous_value(same_lane)), (None, None));
}

#[test]
fn sequences_that_no_client_sends_are_refused_unapplied() {
    let mut h = H::new();
    let jump = h.call_from(ADMIN, None, lane(5, (1 << 32) + 1), put("k", b"v")).unwrap_err();
    assert_eq!(jump.code, ErrorCode::FailedPrecondition, "{jump}");
    h.call_from(ADMIN, None, lane(5, 1), put("k", b"v")).unwrap();
    let jump = h.call_from(ADMIN, None, lane(5, 2 + (1 << 20)), put("k", b"w")).unwrap_err();
    assert_eq!(jump.code, ErrorCode::FailedPrecondition, "{jump}");
    assert_eq!(h.sm.get("c/k").unwrap().unwrap().value, b"v".to_vec(), "a refused jump was applied");
    h.call_from(ADMIN, None, lane(5, 2), put("k", b"w")).unwrap();
}

#[test]
fn a_remembered_reply_goes_only_to_a_caller_still_allowed() {
    let (mut h, victim, _) = two_tenants();
    h.call_from(&victim, Some("acme"), lane(7, 1), put("k", b"v")).unwrap();
    // Replaying while still allowed: the remembered answer, not a second put.
    let again = h.call_from(&victim, Some("acme"), lane(7, 1), put("k", b"v")).unwrap();
    assert_eq!(previous_value(again), None);
    let user = h.sm.find_user(&crate::identity::tests::t("acme"), "victim@acme.test").unwrap();
    h.op(Some("acme"), Op::UserSetDisabled { user, disabled: true });
    let refused = h.call_from(&victim, Some("acme"), lane(7, 1), put("k", b"v")).unwrap_err();
    assert!(matches!(refused.code, ErrorCode::PermissionDenied | ErrorCode::Unauthenticated), "{refused}");
}

#[test]
fn lanes_per_credential_are_bounded_and_long_previous_values_are_not_kept() {
    let mut h = H::new();
    let long = vec![b'x'; MAX_REMEMBERED_VALUE_BYTES + 1];
    h.call_from(ADMIN, None, lane(1, 1), put("big", &long)).unwrap();
    let live = h.call_from(ADMIN, None, lane(1, 2), put("big", b"small")).unwrap();
    assert_eq!(previous_value(live), Some(long), "the live answer carries the whole previous value");
    match h.call_from(ADMIN, None, lane(1, 2), put("big", b"small")).unwrap() {
        ReplyBody::PutPreviousOmitted { previous, .. } => assert!(previous.value.is_empty()),
        other => panic!("a retry got {other:?}"),
    }

    // One credential inventing a client id per request keeps at most the cap.
    for client in 2..MAX_LANES_PER_SCOPE + 20 {
        h.call_from(ADMIN, None, lane(client, 1), put("k", b"v")).unwrap();
    }
    let txn = redb::ReadableDatabase::begin_read(h.sm.db()).unwrap();
    let held = txn.open_table(CLIENT_SESSIONS).unwrap().len().unwrap();
    assert_eq!(held, MAX_LANES_PER_SCOPE, "lanes held by one credential");
    // The least recently used lanes went first: lane 1 is a new lane again.
    let fresh = h.call_from(ADMIN, None, lane(1, 2), put("big", b"again")).unwrap();
    assert_eq!(previous_value(fresh), Some(b"small".to_vec()));
}

#[test]
fn lanes_survive_a_snapshot() {
    let mut h = H::new();
    h.call_from(ADMIN, None, lane(3, 1), put("k", b"v1")).unwrap();
    h.call_from(ADMIN, None, lane(3, 2), put("k", b"v2")).unwrap();
    let file = h._dir.path().join("sessions.snap");
    h.sm.export(&file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = crate::StateMachineStore::open(&crate::backend::Disk::Dir(dir.path().to_path_buf())).unwrap();
    copy.restore_backup(&file).unwrap();
    let scope = caddy_core::Command::Call(Box::new(caddy_core::identity::api::Call {
        principal: caddy_core::identity::api::Principal::Operator,
        tenant: None,
        request_id: String::new(),
        client_addr: String::new(),
        op: put("k", b"v2"),
    }))
    .session_scope();
    let reply = copy.applied_reply(&scope, lane(3, 2)).unwrap().expect("the lane came through the snapshot");
    assert_eq!(previous_value(reply.0.unwrap()), Some(b"v1".to_vec()));
}
