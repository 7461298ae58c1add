//! Bad input of every kind gets a typed error and leaves the document
//! exactly as it was (resolved model and version compared before and after).

mod common;

use caddy_doc::{
    DimPoint, DocError, Document, EditOp, Geometry, LayerProperty, Limits, NewEntity, NewLayer, Property, Vertex,
};
use common::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// A document with a bit of everything, and a copy on another peer.
fn fixture() -> (Document, Document) {
    let mut v = replicas(2);
    let mut b = v.pop().expect("b");
    let mut a = v.pop().expect("a");
    let ops = EditOp::parse_batch(
        r#"[
        {"op": "add_layer", "id": "walls"},
        {"op": "add", "kind": "line", "id": "l1", "layer": "walls", "from": [0, 0], "to": [10, 0]},
        {"op": "add", "kind": "text", "id": "t1", "position": [0, 0], "height": 1, "content": "abc"},
        {"op": "add_group", "id": "g1", "name": "G"},
        {"op": "add_group", "id": "g2", "name": "H", "parent": "g1"},
        {"op": "add_block", "id": "b1", "name": "B"}
    ]"#,
    )
    .expect("parse");
    a.apply_ops(&ops).expect("apply");
    sync(&mut a, &mut b);
    (a, b)
}

/// Runs `f` and checks it failed with a typed error and changed nothing.
fn refused(d: &mut Document, what: &str, f: impl FnOnce(&mut Document) -> Result<(), DocError>) -> DocError {
    let before = json(d);
    let version = d.version();
    let err = match f(d) {
        Ok(()) => panic!("{what}: expected an error"),
        Err(e) => e,
    };
    assert!(err.is_client_error(), "{what}: {err}");
    assert!(!err.to_string().is_empty());
    assert_eq!(json(d), before, "{what}: resolved model changed");
    assert_eq!(d.version(), version, "{what}: version changed");
    err
}

fn import(d: &mut Document, bytes: &[u8]) -> Result<(), DocError> {
    d.import(bytes).map(|_| ())
}

#[test]
fn garbage_truncated_and_corrupted_updates_are_refused() {
    let (mut a, mut b) = fixture();
    let since = b.version();
    a.add_circle("0", [1.0, 1.0], 2.0).expect("circle");
    a.text_insert("t1", 1, "XYZ").expect("text");
    let update = a.export_updates_since(&since).expect("export");
    assert!(update.len() > 40, "update is {} bytes", update.len());

    let mut rng = StdRng::seed_from_u64(7);
    for len in [0usize, 1, 3, 16, 22, 100, 5000] {
        let garbage: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let e = refused(&mut b, "garbage", |d| import(d, &garbage));
        assert!(matches!(e, DocError::Malformed(_)), "{e}");
    }
    // A valid header with a garbage body.
    let mut fake = update[..22.min(update.len())].to_vec();
    fake.extend((0..64).map(|_| rng.random::<u8>()));
    assert!(matches!(refused(&mut b, "fake body", |d| import(d, &fake)), DocError::Malformed(_)));
    // Every truncation.
    for cut in 0..update.len() {
        let e = refused(&mut b, "truncated", |d| import(d, &update[..cut]));
        assert!(matches!(e, DocError::Malformed(_)), "cut at {cut}: {e}");
    }
    // Single corrupted bytes: refused with the document unchanged, or (for
    // the header padding Loro does not read) exactly the genuine update.
    let mut genuine = Document::from_snapshot(&b.export_snapshot().expect("snap"), 3, Limits::default()).expect("copy");
    genuine.import(&update).expect("genuine");
    let snap = b.export_snapshot().expect("snap");
    let mut ignored = Vec::new();
    for i in 0..update.len() {
        let mut bad = update.clone();
        bad[i] ^= 0x5a;
        let mut c = Document::from_snapshot(&snap, 3, Limits::default()).expect("copy");
        let before = json(&c);
        match c.import(&bad) {
            Err(e) => {
                assert!(matches!(e, DocError::Malformed(_)), "byte {i}: {e}");
                assert_eq!(json(&c), before, "byte {i}");
            }
            Ok(_) => {
                assert_eq!(json(&c), json(&genuine), "byte {i} accepted with a different meaning");
                ignored.push(i);
            }
        }
    }
    assert!(ignored.iter().all(|i| (4..16).contains(i)), "accepted corruptions at {ignored:?}");
    // The real update still applies afterwards.
    b.import(&update).expect("valid update");
    assert_eq!(json(&a), json(&b));
}

#[test]
fn updates_past_the_bounds_are_refused_and_rolled_back() {
    let (mut a, mut b) = fixture();
    let since = b.version();
    for i in 0..5 {
        a.add_line("0", [f64::from(i), 0.0], [0.0, 1.0]).expect("line");
    }
    let update = a.export_updates_since(&since).expect("export");

    // Byte bound on one update.
    b.set_limits(Limits { max_update_bytes: update.len() - 1, ..Limits::default() });
    let e = refused(&mut b, "update too large", |d| import(d, &update));
    assert!(matches!(e, DocError::LimitExceeded { .. }), "{e}");

    // Byte bound on the document.
    b.set_limits(Limits { max_document_bytes: b.approx_bytes() + update.len() - 1, ..Limits::default() });
    let e = refused(&mut b, "document too large", |d| import(d, &update));
    assert!(matches!(e, DocError::LimitExceeded { .. }), "{e}");

    // Entity bound: decoded, merged, found too big, rolled back.
    b.set_limits(Limits { max_entities: b.entity_count() + 4, ..Limits::default() });
    b.enable_undo(10);
    let e = refused(&mut b, "too many entities", |d| import(d, &update));
    assert!(matches!(e, DocError::LimitExceeded { what: "entities", .. }), "{e}");

    // Points per entity and text length, arriving from a peer with looser limits.
    let since = b.version();
    let vertices: Vec<Vertex> = (0..50).map(|i| Vertex::new(f64::from(i), 0.0)).collect();
    a.add_polyline("0", vertices, false).expect("polyline");
    let points_update = a.export_updates_since(&since).expect("export");
    b.set_limits(Limits { max_points: 49, ..Limits::default() });
    let e = refused(&mut b, "too many points", |d| import(d, &points_update));
    assert!(matches!(e, DocError::LimitExceeded { .. }), "{e}");

    let since = b.version();
    a.text_insert("t1", 0, &"x".repeat(40)).expect("long text");
    let text_update = a.export_updates_since(&since).expect("export");
    b.set_limits(Limits { max_text_chars: 40, ..Limits::default() });
    let e = refused(&mut b, "text too long", |d| import(d, &text_update));
    assert!(matches!(e, DocError::LimitExceeded { .. }), "{e}");

    // With the default limits the replica still syncs and edits normally.
    b.set_limits(Limits::default());
    b.add_circle("0", [0.0, 0.0], 1.0).expect("b edits after rollbacks");
    sync(&mut a, &mut b);
    assert_eq!(json(&a), json(&b));
}

#[test]
fn newer_schema_and_foreign_documents_are_refused() {
    let (a, mut b) = fixture();
    // A peer that writes a newer schema marker.
    let raw = loro::LoroDoc::from_snapshot(&a.export_snapshot().expect("snap")).expect("raw");
    raw.set_peer_id(77).expect("peer");
    let since = loro::VersionVector::decode(&b.version()).expect("vv");
    raw.get_map("meta").insert("schema", 2).expect("schema");
    raw.commit();
    let update = raw.export(loro::ExportMode::updates(&since)).expect("export");
    let e = refused(&mut b, "newer schema update", |d| import(d, &update));
    assert_eq!(e, DocError::UnsupportedSchema { found: 2, supported: 1 });

    let snapshot = raw.export(loro::ExportMode::Snapshot).expect("snapshot");
    let e = Document::from_snapshot(&snapshot, 5, Limits::default()).expect_err("newer schema snapshot");
    assert_eq!(e, DocError::UnsupportedSchema { found: 2, supported: 1 });

    // A Loro snapshot that is not a CADDY document.
    let foreign = loro::LoroDoc::new();
    foreign.get_text("t").insert(0, "hi").expect("text");
    let bytes = foreign.export(loro::ExportMode::Snapshot).expect("snapshot");
    assert!(matches!(Document::from_snapshot(&bytes, 5, Limits::default()), Err(DocError::NotADocument(_))));
    // Update bytes are not a snapshot; garbage is garbage.
    let updates = a.export_updates_since(&Document::empty_version()).expect("updates");
    assert!(matches!(Document::from_snapshot(&updates, 5, Limits::default()), Err(DocError::Malformed(_))));
    assert!(matches!(Document::from_snapshot(b"\x00\x01garbage", 5, Limits::default()), Err(DocError::Malformed(_))));
    // Snapshot bounds.
    let snap = a.export_snapshot().expect("snap");
    let small = Limits { max_entities: 1, ..Limits::default() };
    assert!(matches!(Document::from_snapshot(&snap, 5, small), Err(DocError::LimitExceeded { .. })));
    assert!(matches!(Document::replica(u64::MAX, Limits::default()), Err(DocError::InvalidPeer(_))));
    assert!(matches!(a.export_updates_since(b"\xff\xff\xff"), Err(DocError::BadVersion(_))));
}

#[test]
fn edits_with_bad_ids_numbers_and_sizes_are_refused() {
    let (mut a, _) = fixture();
    let line = |from: [f64; 2], to: [f64; 2]| Geometry::Line { from, to };
    let add = |d: &mut Document, g: Geometry| d.add_geometry("0", g).map(|_| ());

    // Unknown and deleted ids.
    assert!(matches!(
        refused(&mut a, "set unknown", |d| d.set_entity_property("nope", Property::Radius(1.0))),
        DocError::UnknownId { what: "entity", .. }
    ));
    refused(&mut a, "delete unknown", |d| d.delete_entity("nope"));
    refused(&mut a, "text unknown", |d| d.text_insert("nope", 0, "x"));
    refused(&mut a, "unknown layer", |d| d.add_line("nolayer", [0.0, 0.0], [1.0, 1.0]).map(|_| ()));
    refused(&mut a, "unknown node", |d| d.move_node("nonode", None));
    refused(&mut a, "unknown parent", |d| d.move_node("g1", Some("nonode")));
    refused(&mut a, "unknown group", |d| d.group_add("nonode", "l1"));
    refused(&mut a, "unknown member", |d| d.group_add("g1", "nope"));
    refused(&mut a, "unknown block", |d| d.add_insert("0", "nonode", [0.0, 0.0], 0.0, [1.0, 1.0]).map(|_| ()));
    refused(&mut a, "group is not a block", |d| d.add_insert("0", "g1", [0.0, 0.0], 0.0, [1.0, 1.0]).map(|_| ()));
    refused(&mut a, "unknown dim anchor", |d| {
        add(
            d,
            Geometry::AlignedDim {
                p1: DimPoint::on("nope", caddy_doc::Snap::Start),
                p2: DimPoint::at([1.0, 1.0]),
                offset: 1.0,
                precision: 2,
                text_height: 1.0,
            },
        )
    });
    refused(&mut a, "radial on a line", |d| {
        add(d, Geometry::RadialDim { target: "l1".into(), angle: 0.0, precision: 2, text_height: 1.0 })
    });

    // Bad numbers.
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
        let e = refused(&mut a, "bad coordinate", |d| add(d, line([bad, 0.0], [1.0, 1.0])));
        assert!(matches!(e, DocError::InvalidNumber { .. }), "{e}");
        refused(&mut a, "bad radius", |d| d.add_circle("0", [0.0, 0.0], bad).map(|_| ()));
        refused(&mut a, "bad property", |d| d.set_entity_property("l1", Property::From([0.0, bad])));
    }
    refused(&mut a, "zero radius", |d| d.add_circle("0", [0.0, 0.0], 0.0).map(|_| ()));
    refused(&mut a, "negative height", |d| d.add_text("0", [0.0, 0.0], -1.0, "x").map(|_| ()));
    refused(&mut a, "ratio", |d| {
        add(
            d,
            Geometry::Ellipse {
                center: [0.0, 0.0],
                major_axis: [1.0, 0.0],
                ratio: 1.5,
                start_param: 0.0,
                end_param: 360.0,
            },
        )
    });
    refused(&mut a, "spline degree", |d| {
        add(d, Geometry::Spline { control_points: vec![[0.0, 0.0], [1.0, 1.0]], degree: 3 })
    });
    refused(&mut a, "one vertex", |d| d.add_polyline("0", vec![Vertex::new(0.0, 0.0)], false).map(|_| ()));
    refused(&mut a, "zero scale", |d| d.add_insert("0", "b1", [0.0, 0.0], 0.0, [0.0, 1.0]).map(|_| ()));
    refused(&mut a, "line weight", |d| d.set_layer_property("walls", LayerProperty::LineWeight(-1.0)));

    // Sizes.
    let small = Limits {
        max_points: 10,
        max_text_chars: 5,
        max_string_bytes: 8,
        max_ops_per_batch: 2,
        max_entities: a.entity_count(),
        ..Limits::default()
    };
    a.set_limits(small);
    let many: Vec<Vertex> = (0..11).map(|i| Vertex::new(f64::from(i), 0.0)).collect();
    assert!(matches!(
        refused(&mut a, "too many points", |d| d.set_entity_property("l1", Property::Vertices(many))),
        DocError::PropertyNotApplicable { .. }
    ));
    let many: Vec<Vertex> = (0..11).map(|i| Vertex::new(f64::from(i), 0.0)).collect();
    assert!(matches!(
        refused(&mut a, "too many points", |d| d.add_polyline("0", many, false).map(|_| ())),
        DocError::LimitExceeded { .. }
    ));
    refused(&mut a, "text too long", |d| d.text_insert("t1", 0, "abc"));
    refused(&mut a, "content too long", |d| d.set_entity_property("t1", Property::Content("123456".into())));
    refused(&mut a, "long name", |d| d.rename_node("g1", "a very long name"));
    refused(&mut a, "long layer name", |d| {
        d.add_layer(NewLayer { name: Some("a very long name".into()), ..NewLayer::new("x") })
    });
    refused(&mut a, "too many entities", |d| d.add_line("0", [0.0, 0.0], [1.0, 1.0]).map(|_| ()));
    let three = vec![
        EditOp::Delete { id: "l1".into() },
        EditOp::Restore { id: "l1".into() },
        EditOp::Delete { id: "l1".into() },
    ];
    refused(&mut a, "batch too big", |d| d.apply_ops(&three).map(|_| ()));
    a.set_limits(Limits::default());

    // Ids.
    for id in ["", "has space", "at@sign", &"x".repeat(65), "ünïcode"] {
        let e = refused(&mut a, "bad id", |d| {
            d.add(NewEntity::new("0", line([0.0, 0.0], [1.0, 0.0])).with_id(id)).map(|_| ())
        });
        assert!(matches!(e, DocError::InvalidId { .. }), "{id:?}: {e}");
    }
    let e = refused(&mut a, "duplicate id", |d| {
        d.add(NewEntity::new("0", line([0.0, 0.0], [1.0, 0.0])).with_id("l1")).map(|_| ())
    });
    assert!(matches!(e, DocError::DuplicateId { .. }));
    refused(&mut a, "duplicate layer", |d| d.add_layer(NewLayer::new("walls")));

    // Wrong kinds, ranges, cycles, locks.
    refused(&mut a, "radius on a line", |d| d.set_entity_property("l1", Property::Radius(2.0)));
    refused(&mut a, "text edit on a line", |d| d.text_insert("l1", 0, "x"));
    refused(&mut a, "text position", |d| d.text_insert("t1", 4, "x"));
    refused(&mut a, "text range", |d| d.text_delete("t1", 2, 2));
    refused(&mut a, "text range overflow", |d| d.text_delete("t1", usize::MAX, 2));
    refused(&mut a, "cycle", |d| d.move_node("g1", Some("g2")));
    refused(&mut a, "self parent", |d| d.move_node("g1", Some("g1")));
    a.set_layer_property("walls", LayerProperty::Locked(true)).expect("lock");
    assert!(matches!(
        refused(&mut a, "locked", |d| d.set_entity_property("l1", Property::To([3.0, 3.0]))),
        DocError::LayerLocked { .. }
    ));
    refused(&mut a, "locked delete", |d| d.delete_entity("l1"));
    refused(&mut a, "add to locked", |d| d.add_line("walls", [0.0, 0.0], [1.0, 1.0]).map(|_| ()));
    refused(&mut a, "move to locked", |d| d.set_entity_property("t1", Property::Layer("walls".into())));
}

#[test]
fn values_written_by_a_faulty_peer_are_reported_not_drawn() {
    let (a, mut b) = fixture();
    let raw = loro::LoroDoc::from_snapshot(&a.export_snapshot().expect("snap")).expect("raw");
    raw.set_peer_id(66).expect("peer");
    let since = loro::VersionVector::decode(&b.version()).expect("vv");
    let ents = raw.get_map("entities");
    ents.insert("x1", "not a map").expect("x1");
    let x2 = ents.ensure_mergeable_map("x2").expect("x2");
    x2.insert("kind", "circle").expect("kind");
    x2.insert("layer", "0").expect("layer");
    x2.insert("center", vec![f64::NAN, 0.0]).expect("center");
    x2.insert("radius", 1.0).expect("radius");
    let x3 = ents.ensure_mergeable_map("x3").expect("x3");
    x3.insert("kind", "blob").expect("kind");
    x3.insert("layer", "0").expect("layer");
    let x4 = ents.ensure_mergeable_map("x4").expect("x4");
    x4.insert("kind", "line").expect("kind");
    x4.insert("layer", "0").expect("layer");
    x4.insert("from", "oops").expect("from");
    x4.insert("to", vec![1.0, 1.0]).expect("to");
    let x5 = ents.ensure_mergeable_map("x5").expect("x5");
    x5.insert("kind", "circle").expect("kind");
    x5.insert("layer", 7).expect("layer");
    x5.insert("center", vec![0.0, 0.0]).expect("center");
    x5.insert("radius", -1.0).expect("radius");
    // A valid entity whose colour is junk: refused as a whole, not half-drawn.
    let x6 = ents.ensure_mergeable_map("x6").expect("x6");
    x6.insert("kind", "line").expect("kind");
    x6.insert("layer", "0").expect("layer");
    x6.insert("from", vec![0.0, 0.0]).expect("from");
    x6.insert("to", vec![1.0, 1.0]).expect("to");
    x6.insert("color", "red").expect("color");
    raw.get_map("layers").ensure_mergeable_map("bad").expect("layer").insert("color", 42).expect("color");
    raw.get_movable_list("order").push(123).expect("order");
    raw.get_map("nodes").insert("n1", "junk").expect("node");
    raw.commit();
    let update = raw.export(loro::ExportMode::updates(&since)).expect("export");
    b.import(&update).expect("well-formed bytes are accepted");
    let r = b.resolve();
    for id in ["x1", "x2", "x3", "x4", "x5", "x6", "bad", "n1"] {
        assert!(
            r.problems.iter().any(|p| matches!(p, caddy_doc::Problem::Malformed { id: i, .. } if i == id)),
            "{id} not reported: {:?}",
            r.problems
        );
        assert!(r.entities.iter().all(|e| e.id != id));
    }
    let svg = r.to_svg(&Default::default());
    assert!(!svg.contains("NaN") && !svg.contains("x2"));
    // Edits on malformed entities are refused with a typed error.
    refused(&mut b, "malformed kind", |d| d.set_entity_property("x3", Property::Radius(1.0)));
    refused(&mut b, "not a map", |d| d.delete_entity("x1"));
}

#[test]
fn snapshots_imported_into_an_empty_replica_are_checked_too() {
    let (mut a, _) = fixture();
    a.text_insert("t1", 0, &"y".repeat(30)).expect("text");
    let snap = a.export_snapshot().expect("snapshot");
    let mut r = Document::replica(9, Limits { max_text_chars: 10, ..Limits::default() }).expect("replica");
    let e = refused(&mut r, "snapshot with a long text", |d| import(d, &snap));
    assert!(matches!(e, DocError::LimitExceeded { .. }), "{e}");
    r.set_limits(Limits::default());
    r.import(&snap).expect("within limits");
    assert_eq!(json(&r), json(&a));
}
