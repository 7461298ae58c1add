//! Audit chains in the state machine: retention sweeps by age and count,
//! checkpoints, verification across pruning (and tampering around it),
//! bounded sweeps and reads, chains written before retention existed, and
//! what retention does to the snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use caddy_core::identity::api::{Call, IdentityAnswer, IdentityCall, Op, Principal};
use caddy_core::identity::audit::{AUDIT_CHAINS_PER_SWEEP, AUDIT_PRUNE_PER_SWEEP, AUDIT_SCAN_PER_REQUEST};
use caddy_core::identity::{
    AuditCheckpoint, AuditEntry, AuditRetention, BrokenLink, ChainHead, Quotas, RetentionOverride, SweepFrom,
};
use caddy_core::{Command, ErrorCode, ReplyBody};
use redb::{ReadableDatabase, ReadableTable};

use crate::identity::tests::{ADMIN, H, t};
use crate::state_machine::{IDENT, open_record, seal};

const DAY: u64 = 24 * 3600 * 1000;

/// `n` audited key-value writes to `keys` keys of `tenant`, in batches.
fn puts(h: &mut H, tenant: &str, n: u64, keys: u64) {
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(1000);
        let commands = (done..done + batch)
            .map(|i| {
                Command::Call(Box::new(Call {
                    principal: Principal::Operator,
                    tenant: Some(t(tenant)),
                    request_id: format!("r{i}"),
                    client_addr: "127.0.0.1:1".into(),
                    op: Op::KvPut { key: format!("k{}", i % keys), value: vec![1; 16], if_revision: None },
                }))
            })
            .collect();
        for reply in h.commands(commands) {
            reply.unwrap();
        }
        done += batch;
    }
}

fn by_count(max_entries: u64) -> AuditRetention {
    AuditRetention { max_entries, ..AuditRetention::DEFAULT }
}

/// One sweep entry: entries pruned and where the next one continues.
fn sweep(h: &mut H, retention: AuditRetention, from: SweepFrom) -> (u64, Option<SweepFrom>) {
    match h.command(Command::AuditSweep { retention, from }).unwrap() {
        ReplyBody::AuditSwept { pruned, next } => (pruned, next),
        other => panic!("{other:?}"),
    }
}

/// Sweeps until every chain is within `retention`, as the leader does;
/// answers the entries pruned by each sweep entry.
fn sweep_all(h: &mut H, retention: AuditRetention) -> Vec<u64> {
    let mut from = SweepFrom::Start;
    let mut pruned = Vec::new();
    loop {
        let (n, next) = sweep(h, retention, from);
        pruned.push(n);
        match next {
            Some(next) => from = next,
            None => return pruned,
        }
        assert!(pruned.len() < 1000, "the sweep makes no progress");
    }
}

fn verify_page(h: &H, tenant: Option<&str>, after_seq: u64, after_hash: &str) -> IdentityAnswer {
    h.read(ADMIN, tenant, IdentityCall::AuditVerify { after_seq, after_hash: after_hash.into() }).unwrap()
}

/// What a whole (paged) verification found: entries verified, the seq they
/// follow, the checkpoint's seq and hash, the first break.
struct Walk {
    entries: u64,
    after_seq: u64,
    checkpoint: Option<(u64, String)>,
    broken: Option<BrokenLink>,
    pages: usize,
}

fn verify(h: &H, tenant: Option<&str>) -> Walk {
    let (mut after_seq, mut after_hash) = (0, String::new());
    let mut walk = Walk { entries: 0, after_seq: 0, checkpoint: None, broken: None, pages: 0 };
    loop {
        let IdentityAnswer::Verified {
            entries, broken, checkpoint, after_seq: from, last_seq, last_hash, more, ..
        } = verify_page(h, tenant, after_seq, &after_hash)
        else {
            panic!("not a verification");
        };
        if walk.pages == 0 {
            walk.after_seq = from;
            walk.checkpoint = checkpoint.map(|c| (c.seq, c.hash));
        }
        walk.pages += 1;
        walk.entries += entries;
        if broken.is_some() || !more {
            walk.broken = broken;
            return walk;
        }
        (after_seq, after_hash) = (last_seq, last_hash);
    }
}

fn list(h: &H, tenant: &str, call: IdentityCall) -> (Vec<u64>, Option<u64>) {
    match h.read(ADMIN, Some(tenant), call).unwrap() {
        IdentityAnswer::Audit { entries, more, next_after_seq } => {
            assert_eq!(more, next_after_seq.is_some());
            (entries.iter().map(|e| e.seq).collect(), next_after_seq)
        }
        other => panic!("{other:?}"),
    }
}

fn entry_key(tenant: &str, seq: u64) -> String {
    format!("t/{tenant}/audit/{seq:016x}")
}

/// Rewrites a stored record in place, as someone with the disk could.
fn tamper<T: serde::Serialize + serde::de::DeserializeOwned>(h: &H, key: &str, change: impl FnOnce(&mut T)) {
    let txn = h.sm.db().begin_write().unwrap();
    {
        let mut table = txn.open_table(IDENT).unwrap();
        let mut value: T = open_record("test", table.get(key).unwrap().unwrap().value()).unwrap();
        change(&mut value);
        table.insert(key, seal(&value).unwrap().as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

fn remove(h: &H, key: &str) {
    let txn = h.sm.db().begin_write().unwrap();
    txn.open_table(IDENT).unwrap().remove(key).unwrap().unwrap();
    txn.commit().unwrap();
}

fn stored<T: serde::de::DeserializeOwned>(h: &H, key: &str) -> Option<T> {
    let txn = h.sm.db().begin_read().unwrap();
    let table = txn.open_table(IDENT).unwrap();
    table.get(key).unwrap().map(|v| open_record("test", v.value()).unwrap())
}

#[test]
fn pruning_by_count_leaves_a_checkpoint_that_verification_starts_from() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    puts(&mut h, "acme", 50, 5);
    let entry40: AuditEntry = stored(&h, &entry_key("acme", 40)).unwrap();
    assert_eq!(sweep_all(&mut h, by_count(10)), [40]);
    assert_eq!(h.audit(Some("acme")).iter().map(|e| e.seq).collect::<Vec<_>>(), (41..=50).collect::<Vec<_>>());
    let walk = verify(&h, Some("acme"));
    assert!(walk.broken.is_none(), "{:?}", walk.broken);
    assert_eq!((walk.entries, walk.after_seq), (10, 40));
    assert_eq!(walk.checkpoint, Some((40, hex::encode(entry40.hash))));
    // The chain goes on from its head, and a second sweep keeps the bound.
    puts(&mut h, "acme", 5, 5);
    assert_eq!(sweep_all(&mut h, by_count(10)), [5]);
    let walk = verify(&h, Some("acme"));
    assert_eq!((walk.entries, walk.after_seq, walk.broken), (10, 45, None));
    match h.read(ADMIN, Some("acme"), IdentityCall::AuditRetention).unwrap() {
        IdentityAnswer::AuditRetention { own, default, checkpoint, head_seq, kept, .. } => {
            assert_eq!((own, default), (RetentionOverride::default(), Some(by_count(10))));
            assert_eq!((checkpoint.unwrap().seq, head_seq, kept), (45, 55, 10));
        }
        other => panic!("{other:?}"),
    }
    // The cluster chain (one entry: the tenant's creation) was within the bound.
    let cluster = verify(&h, None);
    assert_eq!((cluster.entries, cluster.checkpoint, cluster.broken), (1, None, None));
}

#[test]
fn pruning_by_age_follows_stamped_time() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    puts(&mut h, "acme", 5, 5);
    let old_end = h.now;
    h.now += 2 * DAY;
    puts(&mut h, "acme", 3, 5);
    let retention = AuditRetention { max_age_ms: 2 * DAY, max_entries: 1000 };
    // One millisecond before the fifth entry is two days old: it stays.
    h.now = old_end + 2 * DAY - 2;
    assert_eq!(sweep_all(&mut h, retention), [5], "the cluster entry and four of acme's are two days old");
    assert_eq!(h.audit(Some("acme")).first().map(|e| e.seq), Some(5));
    h.now = old_end + 2 * DAY - 1;
    assert_eq!(sweep_all(&mut h, retention), [1]);
    let walk = verify(&h, Some("acme"));
    assert_eq!((walk.entries, walk.after_seq, walk.broken), (3, 5, None));
    // Everything old enough goes, the last entry included: the checkpoint is the head.
    h.now += 10 * DAY;
    assert_eq!(sweep_all(&mut h, retention), [3]);
    let walk = verify(&h, Some("acme"));
    assert_eq!((walk.entries, walk.after_seq, walk.broken), (0, 8, None));
    assert_eq!(verify(&h, None).checkpoint.map(|c| c.0), Some(1), "the cluster chain is pruned too");
}

#[test]
fn verification_after_pruning_names_altered_and_missing_entries() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    puts(&mut h, "acme", 30, 5);
    sweep_all(&mut h, by_count(10));
    tamper::<AuditEntry>(&h, &entry_key("acme", 25), |e| e.resource = "kv forged".into());
    let walk = verify(&h, Some("acme"));
    let broken = walk.broken.unwrap();
    assert_eq!((broken.seq, walk.entries), (25, 4), "{broken}");
    assert!(broken.reason.contains("altered"), "{broken}");
    // The first kept entry removed: the chain no longer continues its checkpoint.
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    puts(&mut h, "acme", 30, 5);
    sweep_all(&mut h, by_count(10));
    remove(&h, &entry_key("acme", 21));
    let broken = verify(&h, Some("acme")).broken.unwrap();
    assert_eq!(broken.seq, 22, "{broken}");
    assert!(broken.reason.contains("expected seq 21") && broken.reason.contains("checkpoint at seq 20"), "{broken}");
}

#[test]
fn a_tampered_or_removed_checkpoint_is_detected() {
    let build = |max_age: bool| {
        let mut h = H::new();
        h.tenant("acme", Quotas::default());
        puts(&mut h, "acme", 30, 5);
        if max_age {
            h.now += 400 * DAY;
            sweep_all(&mut h, AuditRetention::DEFAULT);
            assert_eq!(verify(&h, Some("acme")).entries, 0, "everything was pruned");
        } else {
            sweep_all(&mut h, by_count(10));
        }
        assert!(verify(&h, Some("acme")).broken.is_none());
        h
    };
    let checkpoint = "t/acme/meta/auditcheckpoint";
    for everything_pruned in [false, true] {
        type Change = fn(&mut AuditCheckpoint);
        let changes: [(&str, Change); 3] = [
            ("hash", |c| c.hash[0] ^= 1),
            ("seq", |c| c.seq -= 1),
            ("both", |c| {
                c.seq -= 1;
                c.hash = [7; 32];
            }),
        ];
        for (what, change) in changes {
            let h = build(everything_pruned);
            tamper(&h, checkpoint, change);
            let broken = verify(&h, Some("acme")).broken;
            assert!(broken.is_some(), "checkpoint {what} changed (everything pruned: {everything_pruned})");
        }
        let h = build(everything_pruned);
        remove(&h, checkpoint);
        let broken = verify(&h, Some("acme")).broken.expect("a removed checkpoint");
        assert!(broken.reason.contains("expected seq 1") || broken.reason.contains("missing"), "{broken}");
    }
}

#[test]
fn pruning_keeps_the_evidence_of_an_entry_altered_before_it_went() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    puts(&mut h, "acme", 30, 5);
    tamper::<AuditEntry>(&h, &entry_key("acme", 5), |e| e.actor = caddy_core::identity::Actor::System);
    sweep_all(&mut h, by_count(10));
    let broken = verify(&h, Some("acme")).broken.expect("the altered entry is gone but not forgotten");
    assert_eq!(broken.seq, 5, "{broken}");
    assert!(broken.reason.contains("altered") && broken.reason.contains("pruned"), "{broken}");
    // Further pruning keeps it.
    puts(&mut h, "acme", 20, 5);
    sweep_all(&mut h, by_count(10));
    assert_eq!(verify(&h, Some("acme")).broken.map(|b| b.seq), Some(5));
}

#[test]
fn one_sweep_entry_does_bounded_work() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    let backlog = 2 * AUDIT_PRUNE_PER_SWEEP as u64 + 500;
    puts(&mut h, "acme", backlog + 100, 10);
    let per = AUDIT_PRUNE_PER_SWEEP as u64;
    // Nothing is due in the cluster chain; acme's backlog takes several entries.
    assert_eq!(sweep(&mut h, by_count(100), SweepFrom::Start), (per, Some(SweepFrom::Tenant(t("acme")))));
    assert_eq!(verify(&h, Some("acme")).broken, None, "a partly pruned chain verifies");
    assert_eq!(sweep_all(&mut h, by_count(100)), [per, backlog - 2 * per]);
    assert_eq!(sweep_all(&mut h, by_count(100)), [0]);
    assert_eq!(h.audit(Some("acme")).len(), 100);
    // Chains looked at per entry are bounded too, even when nothing is due.
    for i in 0..AUDIT_CHAINS_PER_SWEEP {
        h.tenant(&format!("tenant-{i:03}"), Quotas::default());
    }
    let (n, next) = sweep(&mut h, by_count(1000), SweepFrom::Start);
    // The cluster chain and 255 tenant chains: acme, then tenant-000 ... tenant-253.
    assert_eq!((n, next), (0, Some(SweepFrom::Tenant(t("tenant-254")))));
    assert_eq!(sweep(&mut h, by_count(1000), SweepFrom::Tenant(t("tenant-254"))), (0, None));
}

#[test]
fn a_chain_keeps_its_own_retention_set_by_the_operator() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    h.tenant("globex", Quotas::default());
    let own = RetentionOverride { max_age_ms: None, max_entries: Some(5) };
    h.op(Some("acme"), Op::AuditRetentionSet { retention: own });
    puts(&mut h, "acme", 20, 5);
    puts(&mut h, "globex", 20, 5);
    sweep_all(&mut h, by_count(100));
    assert_eq!(h.audit(Some("acme")).len(), 5);
    assert_eq!(h.audit(Some("globex")).len(), 20);
    assert!(verify(&h, Some("acme")).broken.is_none());
    // The setting is audited in the tenant's chain (and was pruned with it).
    let setting = h.read(ADMIN, Some("acme"), IdentityCall::AuditRetention).unwrap();
    assert!(matches!(setting, IdentityAnswer::AuditRetention { own: o, kept: 5, .. } if o == own), "{setting:?}");
    h.op(Some("acme"), Op::AuditRetentionSet { retention: RetentionOverride::default() });
    let last = h.audit(Some("acme")).pop().unwrap();
    assert_eq!((last.action.as_str(), last.resource.as_str()), ("audit.retention", "audit retention: default"));
    let setting = h.read(ADMIN, Some("acme"), IdentityCall::AuditRetention).unwrap();
    assert!(matches!(setting, IdentityAnswer::AuditRetention { own, .. } if own.is_empty()), "{setting:?}");
    // Out of bounds: refused, audited, nothing changed.
    let bad = RetentionOverride { max_age_ms: Some(1000), max_entries: None };
    let err = h.call(ADMIN, Some("acme"), Op::AuditRetentionSet { retention: bad }).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
    assert_eq!(h.audit(Some("acme")).pop().unwrap().outcome, "invalid_argument");
    // A sweep carrying an out-of-bounds default is refused too.
    let err = h.command(Command::AuditSweep { retention: by_count(0), from: SweepFrom::Start }).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    // The cluster chain's own setting.
    h.op(None, Op::AuditRetentionSet { retention: RetentionOverride { max_age_ms: None, max_entries: Some(1) } });
    sweep_all(&mut h, by_count(100));
    let cluster = verify(&h, None);
    assert_eq!((cluster.entries, cluster.broken), (1, None));
}

#[test]
fn a_large_chain_is_read_in_bounded_pages() {
    let mut h = H::new();
    h.tenant("acme", Quotas::default());
    let n = AUDIT_SCAN_PER_REQUEST as u64 + 2_000;
    puts(&mut h, "acme", n, 10);
    let scan = AUDIT_SCAN_PER_REQUEST as u64;
    // A filter that matches nothing: one bounded slice per request, and a
    // cursor to continue even though nothing matched.
    let nobody = |after_seq| IdentityCall::AuditList {
        actor: Some("user-424242".into()),
        action: None,
        from_ms: None,
        to_ms: None,
        after_seq,
        limit: 100,
    };
    assert_eq!(list(&h, "acme", nobody(0)), (vec![], Some(scan)));
    assert_eq!(list(&h, "acme", nobody(scan)), (vec![], None));
    // A page that fills up stops at its last match, and the next starts after it.
    let stamp_of = |seq: u64| stored::<AuditEntry>(&h, &entry_key("acme", seq)).unwrap().stamp_ms;
    let since = |after_seq, limit| IdentityCall::AuditList {
        actor: Some("operator".into()),
        action: Some("kv".into()),
        from_ms: Some(stamp_of(n - 2)),
        to_ms: None,
        after_seq,
        limit,
    };
    assert_eq!(list(&h, "acme", since(0, 2)), (vec![], Some(scan)));
    assert_eq!(list(&h, "acme", since(scan, 2)), (vec![n - 2, n - 1], Some(n - 1)));
    assert_eq!(list(&h, "acme", since(n - 1, 2)), (vec![n], None));
    // Verification in pages, each continuing the hash the last one ended with.
    let walk = verify(&h, Some("acme"));
    assert_eq!((walk.entries, walk.pages, walk.broken), (n, 2, None));
    let IdentityAnswer::Verified { last_seq, last_hash, more: true, .. } = verify_page(&h, Some("acme"), 0, "") else {
        panic!("a first page");
    };
    assert_eq!(last_seq, scan);
    let IdentityAnswer::Verified { broken: Some(broken), .. } =
        verify_page(&h, Some("acme"), last_seq, &"00".repeat(32))
    else {
        panic!("a page continuing a hash that is not the chain's must fail");
    };
    assert!(broken.reason.contains("prev_hash"), "{broken}");
    let bad = h.read(ADMIN, Some("acme"), IdentityCall::AuditVerify { after_seq: n + 1, after_hash: last_hash });
    assert_eq!(bad.unwrap_err().code, ErrorCode::InvalidArgument);
    // Pruning that overtakes a verification in progress restarts it at the checkpoint.
    sweep_all(&mut h, by_count(5_000));
    let IdentityAnswer::Verified { after_seq, broken: None, entries, .. } = verify_page(&h, Some("acme"), 3_000, "00")
    else {
        panic!("a restarted page");
    };
    assert_eq!((after_seq, entries), (n - 5_000, 5_000));
}

#[test]
fn chains_written_before_retention_still_load_verify_and_prune() {
    // Records exactly as the code before retention stored them.
    let fixture = include_str!("testdata/audit_chains_v1.txt");
    let h0 = H::new();
    {
        let txn = h0.sm.db().begin_write().unwrap();
        {
            let mut table = txn.open_table(IDENT).unwrap();
            for line in fixture.lines().filter(|l| !l.starts_with('#')) {
                let (key, value) = line.split_once(' ').unwrap();
                table.insert(key, hex::decode(value).unwrap().as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let mut h = h0;
    h.now = 1_000_100;
    let acme = verify(&h, Some("acme"));
    assert_eq!((acme.entries, acme.after_seq, acme.checkpoint, acme.broken), (4, 0, None, None));
    let cluster = verify(&h, None);
    assert_eq!((cluster.entries, cluster.broken), (2, None));
    assert_eq!(
        h.audit(Some("acme")).iter().map(|e| e.resource.as_str()).collect::<Vec<_>>(),
        ["kv k0", "kv k1", "kv k2", "kv k3"]
    );
    // The old chain grows and is pruned like a new one.
    puts(&mut h, "acme", 2, 2);
    let head: ChainHead = stored::<AuditEntry>(&h, &entry_key("acme", 6)).unwrap().head();
    assert_eq!(sweep_all(&mut h, by_count(3)), [3]);
    let acme = verify(&h, Some("acme"));
    assert_eq!((acme.entries, acme.after_seq, acme.broken), (3, 3, None));
    assert_eq!(h.audit(Some("acme")).last().map(|e| e.hash.clone()), Some(hex::encode(head.hash)));
}

/// Many writes to few keys: without retention the chain (and with it every
/// node's snapshot) grows with the number of writes; with it, it stays at
/// the bound. `CADDY_AUDIT_MEASURE_WRITES` sets the writes per phase (the
/// issue measured 80,000 to 1,000 keys).
#[test]
fn retention_bounds_the_chain_and_the_snapshot() {
    let writes: u64 = std::env::var("CADDY_AUDIT_MEASURE_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let keys = 1_000.min(writes);
    let bound = writes / 10;
    let mut h = H::new();
    // Watch history is bounded on its own (100,000 events by default): keep
    // it small here so the figures show the audit chain alone.
    h.sm.set_event_history(keys);
    h.tenant("acme", Quotas::default());
    let size = |h: &H, name: &str| h.sm.export(&h._dir.path().join(name)).unwrap().1;
    let empty = size(&h, "empty.snap");
    // Without retention.
    puts(&mut h, "acme", writes, keys);
    let unbounded = size(&h, "unbounded.snap");
    // The sweep catches up, then runs as the leader runs it, between writes.
    sweep_all(&mut h, by_count(bound));
    let pruned = size(&h, "pruned.snap");
    for _ in 0..10 {
        puts(&mut h, "acme", writes / 10, keys);
        sweep_all(&mut h, by_count(bound));
    }
    let bounded = size(&h, "bounded.snap");
    eprintln!(
        "{writes} writes to {keys} keys: snapshot {empty} B empty, {unbounded} B without retention; \
         with at most {bound} entries: {pruned} B after the first sweep, {bounded} B after {writes} more writes"
    );
    match h.read(ADMIN, Some("acme"), IdentityCall::AuditRetention).unwrap() {
        IdentityAnswer::AuditRetention { kept, head_seq, .. } => assert_eq!((kept, head_seq), (bound, 2 * writes)),
        other => panic!("{other:?}"),
    }
    assert!(bounded < unbounded / 3, "{bounded} vs {unbounded}");
    assert!(bounded <= pruned + pruned / 10, "the snapshot stays at its bounded size: {bounded} vs {pruned}");
    assert_eq!(verify(&h, Some("acme")).broken, None);
}
