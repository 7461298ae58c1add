//! Documents in the state machine: commit, history, tags, past versions,
//! bounds and bad bytes (typed errors, document unchanged), permissions,
//! trash, compaction and snapshots.

use caddy_core::docs::{DocAnswer, DocBounds, DocCall, DocId, Fetched};
use caddy_core::identity::Quotas;
use caddy_doc::{Document, Limits};

use crate::StateMachineStore;
use crate::backend::Disk;
use crate::identity::tests::{ADMIN, H, t};
use caddy_core::identity::api::Op;
use caddy_core::{CaddyError, ErrorCode, ReplyBody};
use redb::ReadableDatabase;

const BOUNDS: DocBounds = DocBounds { max_update_bytes: 64 << 10, max_document_bytes: 1 << 20, max_entities: 50 };

struct Docs {
    h: H,
    editor: String,
    viewer: String,
    other: String,
    foreign: String,
}

fn setup() -> Docs {
    let mut h = H::new();
    h.tenant("acme", Quotas { max_documents: 3, ..Quotas::default() });
    h.tenant("globex", Quotas::default());
    let e = h.user("acme", "editor@acme.test", &["editor"]);
    let v = h.user("acme", "viewer@acme.test", &["viewer"]);
    // Built-in editors hold docs:* (admin included); a drafter may write
    // but trash only their own documents.
    let drafter = Op::RoleUpsert {
        name: caddy_core::identity::RoleName::new("drafter").unwrap(),
        description: String::new(),
        permissions: ["docs:read", "docs:write"].iter().map(|p| p.parse().unwrap()).collect(),
        inherits: Default::default(),
    };
    h.op(Some("acme"), drafter);
    let o = h.user("acme", "other@acme.test", &["drafter"]);
    let f = h.user("globex", "admin@globex.test", &["admin"]);
    let editor = h.login("acme", e, 3_600_000);
    let viewer = h.login("acme", v, 3_600_000);
    let other = h.login("acme", o, 3_600_000);
    let foreign = h.login("globex", f, 3_600_000);
    Docs { h, editor, viewer, other, foreign }
}

impl Docs {
    fn create(&mut self, name: &str) -> DocId {
        let token = self.editor.clone();
        match self.h.call(&token, Some("acme"), Op::DocCreate { name: name.into(), units: None }).unwrap() {
            ReplyBody::Created { id } => DocId(id),
            other => panic!("{other:?}"),
        }
    }

    fn update(&mut self, credential: &str, doc: DocId, update: Vec<u8>) -> Result<ReplyBody, CaddyError> {
        self.update_within(credential, doc, update, BOUNDS)
    }

    fn update_within(
        &mut self,
        credential: &str,
        doc: DocId,
        update: Vec<u8>,
        bounds: DocBounds,
    ) -> Result<ReplyBody, CaddyError> {
        self.h.call(credential, Some("acme"), Op::DocUpdate { doc, update, bounds })
    }

    fn read(&self, call: DocCall) -> Result<(DocAnswer, Vec<u8>), CaddyError> {
        self.h.sm.doc_read(&t("acme"), &call)
    }

    fn fetch(&self, doc: DocId, since: Option<&[u8]>, at: Option<&str>) -> (Fetched, Vec<u8>) {
        let call = DocCall::Fetch { doc: doc.to_string(), since: since.map(hex::encode), at: at.map(str::to_owned) };
        match self.read(call).unwrap() {
            (DocAnswer::Fetched(f), bytes) => (f, bytes),
            other => panic!("{other:?}"),
        }
    }

    /// A client replica of the document as the server has it now.
    fn replica(&self, doc: DocId, peer: u64) -> Document {
        let (f, bytes) = self.fetch(doc, None, None);
        assert!(f.snapshot);
        Document::from_snapshot(&bytes, peer, Limits::default()).unwrap()
    }

    fn info(&self, doc: DocId) -> caddy_core::docs::DocInfo {
        self.h.sm.doc_info(&t("acme"), doc).unwrap()
    }

    fn history(&self, doc: DocId) -> Vec<caddy_core::docs::HistoryEntry> {
        match self.read(DocCall::History { doc: doc.to_string(), after: None, limit: Some(1000) }).unwrap().0 {
            DocAnswer::History { entries, .. } => entries,
            other => panic!("{other:?}"),
        }
    }
}

fn edit_line(doc: &mut Document, x: f64) -> Vec<u8> {
    let before = doc.version();
    doc.add_line("0", [x, 0.0], [x, 10.0]).unwrap();
    doc.export_updates_since(&before).unwrap()
}

#[test]
fn updates_commit_with_history_tags_and_past_versions() {
    let mut d = setup();
    let id = d.create("Floor plan");
    let mut client = d.replica(id, 11);
    let start = client.version();
    let editor = d.editor.clone();
    let first = edit_line(&mut client, 1.0);
    match d.update(&editor, id, first.clone()).unwrap() {
        ReplyBody::DocUpdated { seq: 1, changed: true, .. } => {}
        other => panic!("{other:?}"),
    }
    // A retried (duplicate) update changes nothing and adds no history.
    match d.update(&editor, id, first).unwrap() {
        ReplyBody::DocUpdated { seq: 1, changed: false, .. } => {}
        other => panic!("{other:?}"),
    }
    let second = edit_line(&mut client, 2.0);
    d.update(&editor, id, second).unwrap();
    let history = d.history(id);
    assert_eq!(history.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(history[0].action, "create");
    assert!(history.iter().all(|e| e.author.starts_with("user-")), "{history:?}");
    assert_eq!(history[2].version, hex::encode(client.version()));

    // What a replica at `start` is missing brings it to the same model.
    let (f, missing) = d.fetch(id, Some(&start), None);
    assert!(!f.snapshot);
    assert_eq!(f.seq, 2);
    let mut late = Document::replica(12, Limits::default()).unwrap();
    late.import(&d.replica(id, 13).export_snapshot_at(&start).unwrap()).unwrap();
    late.import(&missing).unwrap();
    assert_eq!(late.resolve(), client.resolve());

    // Tags and past versions, by change number, tag or hex version.
    d.h.call(&editor, Some("acme"), Op::DocTag { doc: id, name: "first-line".into(), at: Some(1) }).unwrap();
    let dup = d.h.call(&editor, Some("acme"), Op::DocTag { doc: id, name: "first-line".into(), at: None });
    assert_eq!(dup.unwrap_err().code, ErrorCode::AlreadyExists);
    let none = d.h.call(&editor, Some("acme"), Op::DocTag { doc: id, name: "future".into(), at: Some(9) });
    assert_eq!(none.unwrap_err().code, ErrorCode::NotFound);
    for (at, lines) in [("0", 0), ("1", 1), ("first-line", 1), ("2", 2), (history[2].version.as_str(), 2)] {
        let (f, bytes) = d.fetch(id, None, Some(at));
        assert!(f.snapshot);
        let past = Document::from_snapshot(&bytes, 14, Limits::default()).unwrap().resolve();
        assert_eq!(past.entities.len(), lines, "at {at}");
    }
    let missing_tag = d.read(DocCall::Fetch { doc: id.to_string(), since: None, at: Some("nope".into()) });
    assert_eq!(missing_tag.unwrap_err().code, ErrorCode::NotFound);
    match d.read(DocCall::Tags { doc: id.to_string() }).unwrap().0 {
        DocAnswer::Tags { tags } => assert_eq!((tags.len(), tags[0].seq), (1, 1)),
        other => panic!("{other:?}"),
    }
    // Committed updates are not audited one by one (the history has them),
    // creates and tags are.
    let actions: Vec<String> = d.h.audit(Some("acme")).into_iter().map(|e| e.action).collect();
    assert!(actions.contains(&"doc.create".to_string()) && actions.contains(&"doc.tag".to_string()));
    assert!(!actions.contains(&"doc.update".to_string()), "{actions:?}");
}

#[test]
fn bad_bytes_bounds_and_strangers_are_refused_and_change_nothing() {
    let mut d = setup();
    let id = d.create("Bracket");
    let mut client = d.replica(id, 21);
    let good = edit_line(&mut client, 1.0);
    let editor = d.editor.clone();
    let before = d.info(id);
    let truncated = good[..good.len() / 2].to_vec();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let huge = vec![7u8; (BOUNDS.max_update_bytes + 1) as usize];
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("empty", Vec::new(), ErrorCode::InvalidArgument),
        ("garbage", b"definitely not a loro update".to_vec(), ErrorCode::InvalidArgument),
        ("truncated", truncated, ErrorCode::InvalidArgument),
        ("corrupted", flipped, ErrorCode::InvalidArgument),
        ("over the update bound", huge, ErrorCode::ResourceExhausted),
    ];
    for (what, bytes, code) in cases {
        let err = d.update(&editor, id, bytes).unwrap_err();
        assert_eq!(err.code, code, "{what}: {err}");
        assert_eq!(d.info(id), before, "{what} changed the document");
    }
    // An update depending on changes the server never saw.
    let mut offline = d.replica(id, 22);
    let _unsent = edit_line(&mut offline, 5.0);
    let base = offline.version();
    offline.add_circle("0", [0.0, 0.0], 1.0).unwrap();
    let dependent = offline.export_updates_since(&base).unwrap();
    let err = d.update(&editor, id, dependent).unwrap_err();
    assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err}");
    assert_eq!(d.info(id), before);
    // Past the entity bound: the whole update is refused.
    let mut big = d.replica(id, 23);
    let base = big.version();
    for i in 0..(BOUNDS.max_entities + 1) {
        big.add_line("0", [i as f64, 0.0], [i as f64, 1.0]).unwrap();
    }
    let err = d.update(&editor, id, big.export_updates_since(&base).unwrap()).unwrap_err();
    assert_eq!(err.code, ErrorCode::ResourceExhausted, "{err}");
    assert_eq!(d.info(id), before);
    // Unknown document, a reader, another tenant: typed refusals.
    let err = d.update(&editor, DocId(999), good.clone()).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    let viewer = d.viewer.clone();
    assert_eq!(d.update(&viewer, id, good.clone()).unwrap_err().code, ErrorCode::PermissionDenied);
    let foreign = d.foreign.clone();
    assert_eq!(d.update(&foreign, id, good.clone()).unwrap_err().code, ErrorCode::PermissionDenied);
    assert_eq!(d.info(id), before);
    // Refusals are audited.
    let refused = d.h.audit(Some("acme")).into_iter().filter(|e| e.action == "doc.update").count();
    assert!(refused >= 7, "{refused} refused updates audited");
    d.update(&editor, id, good).unwrap();
    assert_eq!(d.info(id).seq, 1);
}

#[test]
fn document_size_bound_counts_committed_bytes() {
    let mut d = setup();
    let id = d.create("Big");
    let editor = d.editor.clone();
    let mut client = d.replica(id, 31);
    let tight = DocBounds { max_document_bytes: d.info(id).bytes + 200, ..BOUNDS };
    let mut refused = None;
    for i in 0..50 {
        let update = edit_line(&mut client, i as f64);
        match d.h.call(&editor, Some("acme"), Op::DocUpdate { doc: id, update, bounds: tight }) {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("the document bound was never reached");
    assert_eq!(err.code, ErrorCode::ResourceExhausted);
    assert!(d.info(id).bytes <= tight.max_document_bytes);
}

#[test]
fn rename_trash_restore_and_quota() {
    let mut d = setup();
    let id = d.create("Draft");
    let (editor, other, viewer) = (d.editor.clone(), d.other.clone(), d.viewer.clone());
    d.h.call(&editor, Some("acme"), Op::DocRename { doc: id, name: "Final".into() }).unwrap();
    assert_eq!(d.info(id).name, "Final");
    assert_eq!(d.replica(id, 41).name(), "Final", "the name inside the drawing follows");
    assert_eq!(d.history(id).last().unwrap().action, "rename");
    let bad = d.h.call(&editor, Some("acme"), Op::DocRename { doc: id, name: "  ".into() });
    assert_eq!(bad.unwrap_err().code, ErrorCode::InvalidArgument);
    // Only the owner (or docs:admin) may trash; a viewer may not even write.
    let trash = |deleted| Op::DocSetDeleted { doc: id, deleted };
    assert_eq!(d.h.call(&other, Some("acme"), trash(true)).unwrap_err().code, ErrorCode::PermissionDenied);
    assert_eq!(d.h.call(&viewer, Some("acme"), trash(true)).unwrap_err().code, ErrorCode::PermissionDenied);
    let mut client = d.replica(id, 42);
    d.h.call(&editor, Some("acme"), trash(true)).unwrap();
    let listed = |d: &Docs, deleted| match d.read(DocCall::List { after: None, limit: None, deleted }).unwrap().0 {
        DocAnswer::List { docs, .. } => docs.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!((listed(&d, false), listed(&d, true)), (0, 1));
    let fetch = d.read(DocCall::Fetch { doc: id.to_string(), since: None, at: None });
    assert_eq!(fetch.unwrap_err().code, ErrorCode::FailedPrecondition);
    let update = edit_line(&mut client, 0.0);
    assert_eq!(d.update(&editor, id, update).unwrap_err().code, ErrorCode::FailedPrecondition);
    // Trashed documents do not count against max_documents (3).
    d.create("b");
    d.create("c");
    d.create("d");
    let over = d.h.call(&editor, Some("acme"), Op::DocCreate { name: "e".into(), units: None });
    assert_eq!(over.unwrap_err().code, ErrorCode::ResourceExhausted);
    let restore = d.h.call(ADMIN, Some("acme"), trash(false));
    assert_eq!(restore.unwrap_err().code, ErrorCode::ResourceExhausted, "restoring would exceed the quota");
    // Paging through the list.
    match d.read(DocCall::List { after: None, limit: Some(2), deleted: false }).unwrap().0 {
        DocAnswer::List { docs, more } => {
            assert_eq!((docs.len(), more), (2, true));
            let after = Some(docs[1].id.clone());
            match d.read(DocCall::List { after, limit: Some(2), deleted: false }).unwrap().0 {
                DocAnswer::List { docs, more } => assert_eq!((docs.len(), more), (1, false)),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    let bad_units = d.h.call(&editor, Some("acme"), Op::DocCreate { name: "x".into(), units: Some("furlong".into()) });
    assert_eq!(bad_units.unwrap_err().code, ErrorCode::InvalidArgument);
}

#[test]
fn compaction_and_snapshots_keep_the_document() {
    let mut d = setup();
    let id = d.create("Busy");
    let editor = d.editor.clone();
    let mut client = d.replica(id, 51);
    let n = crate::docs::COMPACT_AFTER_UPDATES * 2 + 5;
    let roomy = DocBounds { max_entities: 10_000, ..BOUNDS };
    for i in 0..n {
        let update = edit_line(&mut client, i as f64);
        d.update_within(&editor, id, update, roomy).unwrap();
    }
    // The compactor runs in the background; wait until it folded updates.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let txn = d.h.sm.db().begin_read().unwrap();
        let table = txn.open_table(crate::docs::DOCS).unwrap();
        let prefix = format!("t/acme/u/{}/", id.key_part());
        let left = table
            .range(prefix.as_str()..)
            .unwrap()
            .take_while(|i| i.as_ref().unwrap().0.value().starts_with(&prefix))
            .count();
        if (left as u64) < n - crate::docs::COMPACT_AFTER_UPDATES {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no compaction happened ({left} updates left)");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let want = client.resolve();
    // A copy from a state-machine snapshot (no cache) has the same document,
    // the full history and every past version.
    let file = d.h._dir.path().join("docs.snap");
    d.h.sm.export(&file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = StateMachineStore::open(&Disk::Dir(dir.path().to_path_buf())).unwrap();
    copy.restore_backup(&file).unwrap();
    let (answer, bytes) =
        copy.doc_read(&t("acme"), &DocCall::Fetch { doc: id.to_string(), since: None, at: None }).unwrap();
    assert!(matches!(answer, DocAnswer::Fetched(Fetched { snapshot: true, .. })));
    assert_eq!(Document::from_snapshot(&bytes, 52, Limits::default()).unwrap().resolve(), want);
    let (_, bytes) =
        copy.doc_read(&t("acme"), &DocCall::Fetch { doc: id.to_string(), since: None, at: Some("3".into()) }).unwrap();
    assert_eq!(Document::from_snapshot(&bytes, 53, Limits::default()).unwrap().resolve().entities.len(), 3);
    match copy
        .doc_read(&t("acme"), &DocCall::History { doc: id.to_string(), after: None, limit: Some(1000) })
        .unwrap()
        .0
    {
        DocAnswer::History { entries, .. } => assert_eq!(entries.len() as u64, n + 1),
        other => panic!("{other:?}"),
    }
    // Writing on after compaction works, on the original and on the copy alike.
    let update = edit_line(&mut client, -1.0);
    d.update_within(&editor, id, update, roomy).unwrap();
    assert_eq!(d.replica(id, 54).resolve(), client.resolve());
}

#[test]
fn tenant_delete_removes_its_documents() {
    let mut d = setup();
    let id = d.create("Doomed");
    d.h.op(Some("acme"), Op::TenantDelete);
    let txn = d.h.sm.db().begin_read().unwrap();
    let table = txn.open_table(crate::docs::DOCS).unwrap();
    assert_eq!(table.range("t/acme/".."t/acme0").unwrap().count(), 0, "{id} left records behind");
}

/// A compacted document is one record, and documents may be far larger than
/// the 64 MiB the snapshot reader used to accept per record: a state-machine
/// snapshot holding one must install (new or restarted nodes) and restore.
#[test]
fn a_record_larger_than_the_old_frame_limit_survives_snapshot_install_and_restore() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let d = setup();
    let key = "t/acme/s/00000000000000ff";
    let big: Vec<u8> = (0..65 * 1024 * 1024 + 17).map(|i| (i % 241) as u8).collect();
    {
        let txn = d.h.sm.db().begin_write().unwrap();
        txn.open_table(crate::docs::DOCS).unwrap().insert(key, big.as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let stored = |sm: &StateMachineStore| {
        let txn = sm.db().begin_read().unwrap();
        txn.open_table(crate::docs::DOCS).unwrap().get(key).unwrap().map(|v| v.value().to_vec())
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut sm = d.h.sm.clone();
    let snapshot = runtime.block_on(async { sm.get_snapshot_builder().await.build_snapshot().await }).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut joining = StateMachineStore::open(&Disk::Dir(dir.path().join("joining"))).unwrap();
    runtime.block_on(joining.install_snapshot(&snapshot.meta, snapshot.snapshot)).unwrap();
    assert!(stored(&joining) == Some(big.clone()), "the installed copy differs");

    let backup = dir.path().join("backup.snap");
    d.h.sm.export(&backup).unwrap();
    let restored = StateMachineStore::open(&Disk::Dir(dir.path().join("restored"))).unwrap();
    restored.restore_backup(&backup).unwrap();
    assert!(stored(&restored) == Some(big), "the restored copy differs");
}

/// Apply gives the same answer on every replica whatever each has cached:
/// a document committed under roomier bounds than the entry being applied
/// carries is refused by a deterministic error, on a node that must load it
/// from disk as on one that has it loaded (loading used to judge the stored
/// document against the entry's bounds and stop the node with `InvalidData`).
#[test]
fn bounds_are_judged_the_same_with_and_without_the_document_loaded() {
    let mut d = setup();
    let id = d.create("Roomy");
    let editor = d.editor.clone();
    let mut client = d.replica(id, 61);
    let roomy = DocBounds { max_entities: 100, ..BOUNDS };
    for i in 0..5 {
        let update = edit_line(&mut client, i as f64);
        d.update_within(&editor, id, update, roomy).unwrap();
    }
    let tight = DocBounds { max_entities: 3, ..BOUNDS };
    let next = edit_line(&mut client, 9.0);

    // The node that has the document loaded refuses with a typed error...
    let cached = d.update_within(&editor, id, next.clone(), tight).unwrap_err();
    assert_eq!(cached.code, ErrorCode::ResourceExhausted, "{cached}");
    // ...and so does a node that has to load it first (after a restart).
    d.h.sm.forget_loaded_documents();
    let loaded = d.update_within(&editor, id, next.clone(), tight).unwrap_err();
    assert_eq!(loaded, cached);
    // Other document operations load it as well, whatever the bounds.
    d.h.sm.forget_loaded_documents();
    d.h.call(&editor, Some("acme"), Op::DocRename { doc: id, name: "Renamed".into() }).unwrap();
    // With the roomier bounds again, the same update commits.
    d.h.sm.forget_loaded_documents();
    d.update_within(&editor, id, next, roomy).unwrap();
    assert_eq!(d.info(id).entities, 6);
}
