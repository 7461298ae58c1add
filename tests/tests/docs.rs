//! CAD documents on a real 3-node cluster through the SDK: two people edit
//! one drawing through different nodes, one of them offline for a while,
//! the leader killed mid-session; live updates and presence cross nodes;
//! bad requests get typed errors and change nothing.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caddy_client::caddy_doc::{Document, Limits, Property};
use caddy_client::doc_api::{DocCall, DocEvent, PresenceState};
use caddy_client::identity::IdentityCall;
use caddy_client::{Client, ClientConfig, ClientError, DocChange, DocHandle, ErrorCode};
use support::{Dev, client_as, eventually, setup};

/// Pushes until the cluster acknowledges (retrying only "unavailable").
async fn push_acked(handle: &DocHandle) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match handle.push().await {
            Ok(Some(seq)) => return seq,
            Ok(None) => panic!("nothing to push"),
            Err(e) if e.code() == ErrorCode::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("push failed: {e}"),
        }
    }
}

fn live_ids(handle: &DocHandle) -> BTreeSet<String> {
    handle.resolve().entities.into_iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_edit_through_different_nodes_across_a_leader_kill() {
    let mut dev = Dev::start(3, &[]);
    let tokens = setup(&dev, &[("alice@acme.test", "editor"), ("bob@acme.test", "editor")]).await;
    let leader = dev.leader();
    let followers: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();
    let alice = client_as(&dev, Some(followers[0]), &tokens[0], "acme").await;
    let bob = client_as(&dev, Some(followers[1]), &tokens[1], "acme").await;

    let info = alice.doc_create("Bracket", Some("mm")).await.expect("create");
    let a = alice.doc_open(&info.id).await.expect("open a");
    let b = bob.doc_open(&info.id).await.expect("open b");
    let heard: Arc<Mutex<Vec<DocChange>>> = Arc::default();
    let sink = heard.clone();
    b.on_change(move |c| sink.lock().expect("lock").push(c.clone()));
    b.go_live();

    // Presence set through one node reaches a watcher on another.
    let cursor = PresenceState { cursor: Some([12.5, 40.0]), color: "#1f77b4".into(), ..Default::default() };
    a.set_presence(cursor.clone()).await.expect("presence");
    eventually("alice's presence at bob", Duration::from_secs(10), async || {
        b.presences().iter().any(|p| p.state == cursor && p.client == alice.presence_id())
    })
    .await;

    // Online: alice's edit reaches bob live, through bob's node.
    let first = a.edit(|d| d.add_line("0", [0.0, 0.0], [100.0, 0.0])).expect("edit");
    push_acked(&a).await;
    eventually("alice's first line at bob", Duration::from_secs(10), async || live_ids(&b).contains(&first)).await;
    assert!(heard.lock().expect("lock").iter().any(|c| matches!(c, DocChange::Remote { .. })));

    // Bob goes offline and keeps drawing; he also moves alice's line, which
    // alice deletes meanwhile (delete wins).
    b.stop_live();
    let mut bobs = Vec::new();
    for i in 0..5 {
        bobs.push(b.edit(|d| d.add_circle("0", [f64::from(i) * 10.0, 50.0], 4.0)).expect("circle"));
    }
    b.edit(|d| d.set_entity_property(&first, Property::To([100.0, 30.0]))).expect("move");
    let text = b.edit(|d| d.add_text("0", [0.0, -20.0], 5.0, "Rev A")).expect("text");

    // Alice edits through a leader kill; every acknowledged edit must survive.
    let mut acked = Vec::new();
    for i in 0..10 {
        let id = a.edit(|d| d.add_line("0", [0.0, f64::from(i)], [10.0, f64::from(i)])).expect("line");
        push_acked(&a).await;
        acked.push(id);
        if i == 3 {
            dev.kill9(leader);
        }
    }
    a.edit(|d| d.delete_entity(&first)).expect("delete");
    push_acked(&a).await;

    // Bob comes back: pushes his offline edits, pulls alice's, goes live.
    b.sync().await.expect("bob sync");
    b.go_live();
    a.edit(|d| d.text_insert(&text, 5, " (checked)")).expect_err("alice cannot see bob's text yet");
    a.pull().await.expect("alice pull");
    a.edit(|d| d.text_insert(&text, 5, " checked")).expect("text edit");
    push_acked(&a).await;
    dev.restart(leader);

    eventually("both replicas converge", Duration::from_secs(20), async || {
        let _ = a.pull().await;
        a.resolve() == b.resolve()
    })
    .await;
    let ids = live_ids(&a);
    for id in acked.iter().chain(bobs.iter()).chain([&text]) {
        assert!(ids.contains(id), "acknowledged entity {id} lost");
    }
    assert!(!ids.contains(&first), "a delete concurrent with an edit must win");
    assert_eq!(a.read(|d| d.text(&text)).expect("text"), "Rev A checked");

    // History is complete: contiguous change numbers up to the record's.
    let info = alice.doc_info(&info.id).await.expect("info");
    let (history, more) = alice.doc_history(&info.id, None, 1000).await.expect("history");
    assert!(!more);
    assert_eq!(history.iter().map(|h| h.seq).collect::<Vec<_>>(), (0..=info.seq).collect::<Vec<_>>());
    let authors: BTreeSet<&str> = history.iter().map(|h| h.author.as_str()).collect();
    assert_eq!(authors.len(), 2, "{authors:?}");
    assert!(info.seq >= 14, "{} changes", info.seq);

    // The restarted node caught up and serves the same drawing.
    let late = client_as(&dev, Some(leader), &tokens[0], "acme").await;
    eventually("the restarted node to catch up", Duration::from_secs(20), async || {
        late.doc_resolve(&info.id, None).await.is_ok_and(|r| r == a.resolve())
    })
    .await;
    // A past version is still there.
    let past = late.doc_resolve(&info.id, Some("1")).await.expect("past");
    assert_eq!(past.entities.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![first.clone()]);
    dev.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_and_bad_requests_are_typed_and_harmless() {
    let mut dev = Dev::start(3, &[("CADDY_LIMITS_PRESENCE_TTL_MS", "1000")]);
    let tokens = setup(&dev, &[("ed@acme.test", "editor"), ("vi@acme.test", "viewer")]).await;
    let editor = client_as(&dev, None, &tokens[0], "acme").await;
    let viewer = client_as(&dev, None, &tokens[1], "acme").await;
    let info = editor.doc_create("Gearbox", None).await.expect("create");
    let id = info.id.clone();
    let handle = editor.doc_open(&id).await.expect("open");

    // A watcher from the empty version gets the whole document, then updates in order.
    let mut watch = viewer.doc_watch(&id, None).await.expect("watch");
    let mut replica = Document::replica(77, Limits::default()).expect("replica");
    let (first, bytes) = timeout_next(&mut watch).await;
    assert!(matches!(first, DocEvent::Update { seq: 0, .. }), "{first:?}");
    replica.import(&bytes).expect("import");
    assert!(matches!(timeout_next(&mut watch).await.0, DocEvent::CaughtUp { seq: 0, .. }));
    for i in 0..3 {
        handle.edit(|d| d.add_line("0", [0.0, f64::from(i)], [1.0, f64::from(i)])).expect("edit");
        handle.push().await.expect("push");
    }
    for want in 1..=3 {
        let (event, bytes) = timeout_next(&mut watch).await;
        match event {
            DocEvent::Update { seq, .. } => assert_eq!(seq, want),
            other => panic!("{other:?}"),
        }
        replica.import(&bytes).expect("import");
    }
    drop(watch);
    // Changes while nobody watches; a watch resumed from the replica's
    // version brings exactly what is missing.
    for i in 3..6 {
        handle.edit(|d| d.add_line("0", [0.0, f64::from(i)], [1.0, f64::from(i)])).expect("edit");
        handle.push().await.expect("push");
    }
    let mut watch = viewer.doc_watch(&id, Some(&replica.version())).await.expect("resume");
    let (event, bytes) = timeout_next(&mut watch).await;
    assert!(matches!(event, DocEvent::Update { seq: 6, .. }), "{event:?}");
    replica.import(&bytes).expect("import");
    assert_eq!(replica.resolve(), handle.resolve());

    // Presence set through one node reaches a watcher on another, and
    // expires there when its client stops refreshing it.
    let setter = client_as(&dev, Some(1), &tokens[0], "acme").await;
    let seer = client_as(&dev, Some(2), &tokens[1], "acme").await;
    let mut seen = seer.doc_watch(&id, Some(&replica.version())).await.expect("presence watch");
    let state = PresenceState { selection: vec!["a".into()], color: "#00aa00".into(), ..Default::default() };
    setter.doc_presence(&id, state.clone()).await.expect("presence");
    let (mut arrived, mut expired) = (false, false);
    while !expired {
        match timeout_next(&mut seen).await.0 {
            DocEvent::Presence(p) if p.client == setter.presence_id() => {
                assert_eq!(p.state, state);
                arrived = true;
            }
            DocEvent::PresenceGone { client, .. } if client == setter.presence_id() => expired = true,
            _ => {}
        }
    }
    assert!(arrived, "the presence expired before it was seen");

    // Undo takes back one's own edit, never someone else's.
    let other = editor.doc_open(&id).await.expect("second replica");
    let theirs = other.edit(|d| d.add_circle("0", [5.0, 5.0], 1.0)).expect("circle");
    other.push().await.expect("push");
    handle.pull().await.expect("pull");
    let mine = handle.edit(|d| d.add_circle("0", [9.0, 9.0], 2.0)).expect("circle");
    assert!(handle.undo().expect("undo"));
    handle.push().await.expect("push");
    other.pull().await.expect("pull");
    for replica in [&handle, &other] {
        let ids = live_ids(replica);
        assert!(ids.contains(&theirs) && !ids.contains(&mine), "{ids:?}");
    }
    assert!(handle.redo().expect("redo"));
    assert!(live_ids(&handle).contains(&mine));

    // Bad requests: typed errors, document unchanged.
    let before = editor.doc_info(&id).await.expect("info");
    let update = DocCall::Update { doc: id.clone() };
    let garbage = editor.doc(&update, b"not a document update".to_vec()).await.expect_err("garbage");
    assert_eq!(garbage.code(), ErrorCode::InvalidArgument, "{garbage}");
    let good = handle.read(|d| d.export_updates_since(&Document::empty_version())).expect("export");
    let truncated = editor.doc(&update, good[..good.len() / 2].to_vec()).await.expect_err("truncated");
    assert_eq!(truncated.code(), ErrorCode::InvalidArgument, "{truncated}");
    let huge = editor.doc(&update, vec![0u8; 1024 * 1024 + 1]).await.expect_err("huge");
    assert_eq!(huge.code(), ErrorCode::ResourceExhausted, "{huge}");
    let denied = viewer.doc(&update, good.clone()).await.expect_err("viewer write");
    assert_eq!(denied.code(), ErrorCode::PermissionDenied, "{denied}");
    let unknown = editor.doc(&DocCall::Update { doc: "doc-999".into() }, good).await.expect_err("unknown");
    assert_eq!(unknown.code(), ErrorCode::NotFound, "{unknown}");
    let bad_edit = handle.edit(|d| d.set_entity_property("no-such-entity", Property::Radius(1.0)));
    assert!(bad_edit.is_err(), "edits referencing unknown ids are refused locally");
    assert_eq!(editor.doc_info(&id).await.expect("info"), before);

    // A user of another tenant cannot read it; a credential-less client neither.
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
    config.tenant = None;
    let operator = Client::connect(config).await.expect("operator");
    let call = IdentityCall::TenantCreate { id: "globex".into(), name: "G".into(), plan: String::new(), quotas: None };
    operator.identity(&call).await.expect("tenant");
    let globex = client_as(&dev, None, "", "globex").await;
    let call = IdentityCall::UserCreate {
        email: "eve@globex.test".into(),
        display_name: "Eve".into(),
        password: "correct horse battery".into(),
        roles: ["owner".to_string()].into(),
    };
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
    config.tenant = Some("globex".into());
    let globex_admin = Client::connect(config).await.expect("operator for globex");
    globex_admin.identity(&call).await.expect("user in globex");
    let (eve_token, _) = globex.login("eve@globex.test", "correct horse battery").await.expect("login");
    let eve = client_as(&dev, None, &eve_token, "globex").await;
    let err = eve.doc_fetch(&id, None, None).await.expect_err("other tenant");
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    let eve_into_acme = client_as(&dev, None, &eve_token, "acme").await;
    let err = eve_into_acme.doc_info(&id).await.expect_err("naming acme");
    assert_eq!(err.code(), ErrorCode::PermissionDenied, "{err}");
    let anonymous = client_as(&dev, None, "", "acme").await;
    let err: ClientError = anonymous.doc_info(&id).await.expect_err("anonymous");
    assert_eq!(err.code(), ErrorCode::Unauthenticated, "{err}");
    dev.stop();
}

async fn timeout_next(watch: &mut caddy_client::DocWatch) -> (DocEvent, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event")
}
