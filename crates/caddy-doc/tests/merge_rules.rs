//! Small hand-written merge cases whose result follows from the documented
//! rules (crate docs, "Merge rules"), and the typed API.

mod common;

use caddy_doc::{
    BrokenReason, Color, DimPoint, DocError, Document, EditOp, Geometry, LayerProperty, NewEntity, NewLayer, NodeKind,
    Problem, Property, Snap, Style,
};
use common::*;

fn entity<'a>(r: &'a caddy_doc::ResolvedDoc, id: &str) -> Option<&'a caddy_doc::Entity> {
    r.entities.iter().find(|e| e.id == id)
}

fn two() -> (Document, Document) {
    let mut v = replicas(2);
    let b = v.pop().expect("b");
    let a = v.pop().expect("a");
    (a, b)
}

#[test]
fn concurrent_edits_of_different_properties_both_survive() {
    let (mut a, mut b) = two();
    let c = a.add_circle("0", [0.0, 0.0], 5.0).expect("add");
    sync(&mut a, &mut b);
    a.set_entity_property(&c, Property::Radius(7.0)).expect("radius");
    b.set_entity_property(&c, Property::Center([1.0, 2.0])).expect("center");
    sync(&mut a, &mut b);
    assert_eq!(json(&a), json(&b));
    let r = a.resolve();
    assert_eq!(entity(&r, &c).expect("circle").geometry, Geometry::Circle { center: [1.0, 2.0], radius: 7.0 });
}

#[test]
fn concurrent_colour_edits_are_last_writer_wins_with_peer_tie_break() {
    // Same Lamport time on both sides: the greater peer id (b = 2) wins.
    let (mut a, mut b) = two();
    let c = a.add_line("0", [0.0, 0.0], [1.0, 0.0]).expect("add");
    sync(&mut a, &mut b);
    a.set_entity_property(&c, Property::Color(Some(Color::rgb(255, 0, 0)))).expect("red");
    b.set_entity_property(&c, Property::Color(Some(Color::rgb(0, 0, 255)))).expect("blue");
    sync(&mut a, &mut b);
    assert_eq!(json(&a), json(&b));
    assert_eq!(entity(&a.resolve(), &c).expect("line").color, Some(Color::rgb(0, 0, 255)));

    // A writer that has seen more (greater Lamport time) wins regardless of peer id.
    a.set_entity_property(&c, Property::Color(Some(Color::rgb(0, 255, 0)))).expect("green");
    a.set_entity_property(&c, Property::Color(Some(Color::rgb(0, 255, 1)))).expect("green 2");
    b.set_entity_property(&c, Property::Color(Some(Color::rgb(9, 9, 9)))).expect("grey");
    sync(&mut a, &mut b);
    assert_eq!(json(&a), json(&b));
    assert_eq!(entity(&a.resolve(), &c).expect("line").color, Some(Color::rgb(0, 255, 1)));
}

#[test]
fn delete_wins_over_a_concurrent_edit_and_restore_brings_the_edit_back() {
    let (mut a, mut b) = two();
    let c = a.add_circle("0", [0.0, 0.0], 5.0).expect("add");
    sync(&mut a, &mut b);
    a.delete_entity(&c).expect("delete");
    b.set_entity_property(&c, Property::Radius(9.0)).expect("edit");
    sync(&mut a, &mut b);
    assert_eq!(json(&a), json(&b));
    assert!(entity(&a.resolve(), &c).is_none(), "delete wins");
    // Editing a deleted entity locally is refused.
    assert!(matches!(a.set_entity_property(&c, Property::Radius(1.0)), Err(DocError::Deleted { .. })));
    // The concurrent edit was kept in the tombstone.
    b.restore_entity(&c).expect("restore");
    sync(&mut a, &mut b);
    let r = a.resolve();
    assert_eq!(entity(&r, &c).expect("restored").geometry, Geometry::Circle { center: [0.0, 0.0], radius: 9.0 });
    assert_eq!(json(&a), json(&b));
}

#[test]
fn crossing_tree_moves_never_form_a_cycle() {
    let (mut a, mut b) = two();
    let x = a.add_group("X", None).expect("x");
    let y = a.add_group("Y", None).expect("y");
    sync(&mut a, &mut b);
    a.move_node(&x, Some(&y)).expect("x under y");
    b.move_node(&y, Some(&x)).expect("y under x");
    sync(&mut a, &mut b);
    assert_eq!(json(&a), json(&b));
    let r = a.resolve();
    assert_eq!(r.nodes.len(), 2, "both nodes still in the tree");
    let px = r.nodes.iter().find(|n| n.id == x).expect("x").parent.clone();
    let py = r.nodes.iter().find(|n| n.id == y).expect("y").parent.clone();
    // Exactly one of the moves took effect; the other was dropped.
    assert!(
        (px.as_deref() == Some(y.as_str()) && py.is_none()) || (py.as_deref() == Some(x.as_str()) && px.is_none()),
        "x.parent={px:?} y.parent={py:?}"
    );
    // A local move that would form a cycle is refused.
    let (child, parent) = if px.is_some() { (&x, &y) } else { (&y, &x) };
    assert!(matches!(a.move_node(parent, Some(child)), Err(DocError::CyclicMove { .. })));
}

#[test]
fn concurrent_text_edits_merge_per_character() {
    let (mut a, mut b) = two();
    let t = a.add_text("0", [0.0, 0.0], 2.5, "hello world").expect("text");
    sync(&mut a, &mut b);
    a.text_insert(&t, 5, ",").expect("comma");
    b.text_insert(&t, 11, "!").expect("bang");
    b.text_delete(&t, 0, 1).expect("delete h");
    b.text_insert(&t, 0, "H").expect("H");
    sync(&mut a, &mut b);
    assert_eq!(a.text(&t).expect("text"), "Hello, world!");
    assert_eq!(json(&a), json(&b));
}

#[test]
fn references_to_deleted_entities_are_kept_and_reported() {
    let (mut a, mut b) = two();
    let l = a.add_line("0", [0.0, 0.0], [10.0, 0.0]).expect("line");
    let c = a.add_circle("0", [20.0, 0.0], 3.0).expect("circle");
    let d = a
        .add_geometry(
            "0",
            Geometry::AlignedDim {
                p1: DimPoint::on(&l, Snap::Start),
                p2: DimPoint::on(&l, Snap::End),
                offset: 5.0,
                precision: 2,
                text_height: 2.5,
            },
        )
        .expect("dim");
    let rd = a
        .add_geometry("0", Geometry::RadialDim { target: c.clone(), angle: 45.0, precision: 1, text_height: 2.5 })
        .expect("radial");
    let g = a.add_group("G", None).expect("group");
    a.group_add(&g, &c).expect("member");
    sync(&mut a, &mut b);
    let r = a.resolve();
    let m = entity(&r, &d).expect("dim").measurement.clone().expect("measured");
    assert_eq!(m.value, 10.0);
    assert_eq!(m.text, "10.00");
    assert_eq!(entity(&r, &rd).expect("radial").measurement.as_ref().expect("m").text, "R3.0");
    assert!(r.problems.is_empty(), "{:?}", r.problems);

    // b edits the dimension while a concurrently deletes what it measures.
    a.delete_entity(&l).expect("delete line");
    a.delete_entity(&c).expect("delete circle");
    b.set_entity_property(&d, Property::Offset(8.0)).expect("offset");
    sync(&mut a, &mut b);
    assert_eq!(json(&a), json(&b));
    let r = a.resolve();
    let dim = entity(&r, &d).expect("dimension kept");
    assert!(dim.measurement.is_none());
    let expected = [
        Problem::BrokenReference { from: d.clone(), field: "p1".into(), to: l.clone(), reason: BrokenReason::Deleted },
        Problem::BrokenReference { from: d.clone(), field: "p2".into(), to: l.clone(), reason: BrokenReason::Deleted },
        Problem::BrokenReference {
            from: rd.clone(),
            field: "target".into(),
            to: c.clone(),
            reason: BrokenReason::Deleted,
        },
        Problem::BrokenReference {
            from: g.clone(),
            field: "members".into(),
            to: c.clone(),
            reason: BrokenReason::Deleted,
        },
    ];
    for p in &expected {
        assert!(r.problems.contains(p), "missing {p:?} in {:?}", r.problems);
    }
    assert_eq!(r.nodes[0].members, vec![c.clone()], "member kept");
    // A broken member can still be removed.
    a.group_remove(&g, &c).expect("remove broken member");
    assert!(a.resolve().nodes[0].members.is_empty());
}

#[test]
fn inserts_of_deleted_blocks_and_entities_on_deleted_layers_are_reported() {
    let mut a = new_doc(1);
    a.add_layer(NewLayer::new("walls")).expect("layer");
    let blk = a.add_block("door", [0.0, 0.0], None).expect("block");
    a.add(NewEntity::new("walls", Geometry::Line { from: [0.0, 0.0], to: [1.0, 0.0] }).with_owner(&blk))
        .expect("member");
    let ins = a.add_insert("0", &blk, [5.0, 5.0], 0.0, [1.0, 1.0]).expect("insert");
    let r = a.resolve();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.nodes[0].kind, NodeKind::Block);
    assert_eq!(r.nodes[0].members.len(), 1);

    a.delete_node(&blk).expect("delete block");
    a.delete_layer("walls").expect("delete layer");
    let r = a.resolve();
    assert!(entity(&r, &ins).is_some());
    assert!(r.problems.contains(&Problem::BrokenReference {
        from: ins.clone(),
        field: "block".into(),
        to: blk.clone(),
        reason: BrokenReason::Deleted
    }));
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::BrokenReference { field, to, .. } if field == "layer" && to == "walls"))
    );
    assert!(matches!(a.delete_layer("0"), Err(DocError::DefaultLayer)));
}

#[test]
fn recursive_blocks_are_reported() {
    let mut a = new_doc(1);
    let b1 = a.add_block("b1", [0.0, 0.0], None).expect("b1");
    let b2 = a.add_block("b2", [0.0, 0.0], None).expect("b2");
    let ins = |block: &str| Geometry::Insert {
        block: block.to_owned(),
        position: [0.0, 0.0],
        rotation: 0.0,
        scale: [1.0, 1.0],
    };
    a.add(NewEntity::new("0", ins(&b2)).with_owner(&b1)).expect("b1 contains b2");
    a.add(NewEntity::new("0", ins(&b1)).with_owner(&b2)).expect("b2 contains b1");
    a.add_geometry("0", ins(&b1)).expect("model-space insert");
    let r = a.resolve();
    assert!(r.problems.contains(&Problem::RecursiveBlock { block: b1.clone() }));
    assert!(r.problems.contains(&Problem::RecursiveBlock { block: b2.clone() }));
    // Drawing terminates.
    let svg = r.to_svg(&Default::default());
    assert!(svg.contains("data-block"));
}

#[test]
fn deleting_a_node_shows_its_children_under_the_nearest_live_ancestor() {
    let mut a = new_doc(1);
    let top = a.add_group("top", None).expect("top");
    let mid = a.add_group("mid", Some(&top)).expect("mid");
    let leaf = a.add_group("leaf", Some(&mid)).expect("leaf");
    a.delete_node(&mid).expect("delete");
    let r = a.resolve();
    assert_eq!(r.nodes.len(), 2);
    assert_eq!(r.nodes.iter().find(|n| n.id == leaf).expect("leaf").parent.as_deref(), Some(top.as_str()));
    assert_eq!(r.nodes.iter().find(|n| n.id == top).expect("top").children, vec![leaf.clone()]);
}

#[test]
fn draw_order_moves_merge() {
    let (mut a, mut b) = two();
    let l1 = a.add_line("0", [0.0, 0.0], [1.0, 0.0]).expect("l1");
    let l2 = a.add_line("0", [0.0, 1.0], [1.0, 1.0]).expect("l2");
    let l3 = a.add_line("0", [0.0, 2.0], [1.0, 2.0]).expect("l3");
    sync(&mut a, &mut b);
    a.send_to_back(&l3).expect("l3 back");
    b.bring_to_front(&l1).expect("l1 front");
    sync(&mut a, &mut b);
    assert_eq!(json(&a), json(&b));
    let order: Vec<String> = a.resolve().entities.into_iter().map(|e| e.id).collect();
    assert_eq!(order, vec![l3, l2, l1]);
}

#[test]
fn concurrent_moves_of_one_entity_keep_the_lowest_copy_until_it_moves_again() {
    let (mut a, mut b) = two();
    let l1 = a.add_line("0", [0.0, 0.0], [1.0, 0.0]).expect("l1");
    let l2 = a.add_line("0", [0.0, 1.0], [1.0, 1.0]).expect("l2");
    let l3 = a.add_line("0", [0.0, 2.0], [1.0, 2.0]).expect("l3");
    sync(&mut a, &mut b);
    a.bring_to_front(&l2).expect("front");
    b.send_to_back(&l2).expect("back");
    sync(&mut a, &mut b);
    assert_eq!(json(&a), json(&b));
    let order = |d: &caddy_doc::Document| d.resolve().entities.into_iter().map(|e| e.id).collect::<Vec<String>>();
    assert_eq!(order(&a), vec![l2.clone(), l1.clone(), l3.clone()], "the back (lowest) copy counts");
    // The next move removes every copy: it really goes to the front.
    a.bring_to_front(&l2).expect("front again");
    sync(&mut a, &mut b);
    assert_eq!(order(&b), vec![l1, l3, l2]);
}

#[test]
fn concurrent_adds_with_the_same_chosen_id_merge_into_one_entity() {
    let (mut a, mut b) = two();
    a.add(NewEntity::new("0", Geometry::Circle { center: [0.0, 0.0], radius: 1.0 }).with_id("c")).expect("a");
    b.add(
        NewEntity::new("0", Geometry::Circle { center: [5.0, 5.0], radius: 2.0 })
            .with_id("c")
            .with_style(Style { color: Some(Color::rgb(1, 2, 3)), ..Style::default() }),
    )
    .expect("b");
    sync(&mut a, &mut b);
    assert_eq!(json(&a), json(&b));
    let r = a.resolve();
    assert_eq!(r.entities.len(), 1);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
}

#[test]
fn apply_ops_is_all_or_nothing_and_later_ops_see_earlier_ones() {
    let mut a = new_doc(1);
    let before = json(&a);
    let ops = EditOp::parse_batch(
        r##"[
        {"op": "add_layer", "id": "walls", "color": "#FF0000"},
        {"op": "add", "kind": "line", "id": "l1", "layer": "walls", "from": [0, 0], "to": [10, 0]},
        {"op": "set", "id": "l1", "set": {"color": "#00ff00"}},
        {"op": "add", "kind": "circle", "id": "c1", "center": [0, 0], "radius": -1}
    ]"##,
    )
    .expect("parse");
    let err = a.apply_ops(&ops).expect_err("negative radius");
    assert!(matches!(err, DocError::InOp { index: 3, .. }), "{err}");
    assert_eq!(json(&a), before, "nothing applied");

    let report = a.apply_ops(&ops[..3]).expect("valid prefix");
    assert!(report.created.contains(&"l1".to_owned()));
    let r = a.resolve();
    assert_eq!(r.layers.iter().find(|l| l.id == "walls").expect("walls").color, Color::rgb(255, 0, 0));
    assert_eq!(entity(&r, "l1").expect("l1").color, Some(Color::rgb(0, 255, 0)));

    // Locked layers refuse edits, in the same batch too.
    let ops = vec![
        EditOp::SetLayer { id: "walls".into(), set: LayerProperty::Locked(true) },
        EditOp::Set { id: "l1".into(), set: Property::To([5.0, 5.0]) },
    ];
    assert!(matches!(a.apply_ops(&ops).map_err(|e| e.root_cause().clone()), Err(DocError::LayerLocked { .. })));
}

#[test]
fn generated_ids_are_unique_and_stable_across_replicas() {
    let (mut a, mut b) = two();
    let mut ids = std::collections::HashSet::new();
    for i in 0..20 {
        let x = f64::from(i);
        assert!(ids.insert(a.add_line("0", [x, 0.0], [x, 1.0]).expect("a")));
        assert!(ids.insert(b.add_line("0", [x, 2.0], [x, 3.0]).expect("b")));
    }
    sync(&mut a, &mut b);
    let r = a.resolve();
    assert_eq!(r.entities.len(), 40);
    for e in &r.entities {
        assert!(ids.contains(&e.id));
    }
}

#[test]
fn undo_reverts_only_own_edits() {
    let (mut a, mut b) = two();
    a.enable_undo(100);
    let c = a.add_circle("0", [0.0, 0.0], 5.0).expect("add");
    sync(&mut a, &mut b);
    a.set_entity_property(&c, Property::Radius(6.0)).expect("a radius");
    b.set_entity_property(&c, Property::Center([3.0, 3.0])).expect("b center");
    sync(&mut a, &mut b);
    assert!(a.can_undo());
    assert!(a.undo().expect("undo radius"));
    sync(&mut a, &mut b);
    let g = entity(&a.resolve(), &c).expect("c").geometry.clone();
    assert_eq!(g, Geometry::Circle { center: [3.0, 3.0], radius: 5.0 }, "own edit undone, the other's kept");
    assert!(a.redo().expect("redo"));
    assert!(a.undo().expect("undo radius again"));
    assert!(a.undo().expect("undo add"));
    assert!(entity(&a.resolve(), &c).is_none());
    assert!(a.redo().expect("redo add"));
    assert!(entity(&a.resolve(), &c).is_some());
    a.delete_entity(&c).expect("delete");
    assert!(entity(&a.resolve(), &c).is_none());
    assert!(a.undo().expect("undo delete"));
    assert!(entity(&a.resolve(), &c).is_some());
    sync(&mut a, &mut b);
    assert_eq!(json(&a), json(&b));
    assert!(matches!(b.undo(), Err(DocError::UndoNotEnabled)));
}

#[test]
fn past_versions_can_be_read() {
    let mut a = new_doc(1);
    let v0 = a.version();
    let l = a.add_line("0", [0.0, 0.0], [1.0, 0.0]).expect("line");
    let v1 = a.version();
    let before_delete = json(&a);
    a.delete_entity(&l).expect("delete");
    assert_eq!(a.at_version(&v0).expect("v0").entities.len(), 0);
    let at_v1 = a.at_version(&v1).expect("v1");
    assert_eq!(serde_json::to_string(&at_v1).expect("json"), before_delete);
    assert!(a.resolve().entities.is_empty());
    // A version this replica has not seen.
    let mut other = new_doc(9);
    other.add_line("0", [0.0, 0.0], [1.0, 0.0]).expect("line");
    assert!(matches!(a.at_version(&other.version()), Err(DocError::UnknownVersion)));
    assert!(matches!(a.at_version(b"\xff\xfe garbage"), Err(DocError::BadVersion(_))));
}

#[test]
fn resolved_model_round_trips_through_json() {
    let mut a = new_doc(1);
    a.add_text("0", [1.0, 2.0], 3.0, "x").expect("text");
    let r = a.resolve();
    let s = serde_json::to_string(&r).expect("ser");
    let back: caddy_doc::ResolvedDoc = serde_json::from_str(&s).expect("de");
    assert_eq!(back, r);
}

#[test]
fn document_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Document>();
}

#[test]
fn strict_import_refuses_missing_dependencies() {
    let (mut a, mut b) = two();
    let v0 = a.version();
    a.add_line("0", [0.0, 0.0], [1.0, 0.0]).expect("l1");
    let v1 = a.version();
    a.add_line("0", [0.0, 1.0], [1.0, 1.0]).expect("l2");
    let u1 = a.export_updates_since(&v0).expect("u1");
    let u2 = a.export_updates_since(&v1).expect("u2");
    let before = json(&b);
    assert!(matches!(b.import_complete(&u2), Err(DocError::MissingDependencies)));
    assert_eq!(json(&b), before);
    b.import_complete(&u1).expect("u1");
    b.import_complete(&u2).expect("u2");
    assert_eq!(json(&a), json(&b));
    // The lenient import keeps it waiting instead.
    let (mut a, mut c) = two();
    let v0 = a.version();
    a.add_line("0", [0.0, 0.0], [1.0, 0.0]).expect("l1");
    let v1 = a.version();
    a.add_line("0", [0.0, 1.0], [1.0, 1.0]).expect("l2");
    let report = c.import(&a.export_updates_since(&v1).expect("u2")).expect("pending");
    assert!(report.pending && !report.applied);
    let report = c.import(&a.export_updates_since(&v0).expect("u1")).expect("u1");
    assert!(report.applied);
    assert_eq!(json(&a), json(&c));
}

#[test]
fn snapshots_at_past_versions_load() {
    let mut a = new_doc(1);
    a.add_line("0", [0.0, 0.0], [1.0, 0.0]).expect("line");
    let v1 = a.version();
    let at_v1 = a.at_version(&v1).expect("v1");
    a.add_circle("0", [0.0, 0.0], 1.0).expect("circle");
    let snap = a.export_snapshot_at(&v1).expect("snapshot at");
    let past = Document::from_snapshot(&snap, 5, caddy_doc::Limits::default()).expect("load");
    assert_eq!(past.resolve(), at_v1);
    assert_eq!(past.resolve().entities.len(), 1);
}

#[test]
fn nested_inserts_are_drawn_within_a_budget() {
    let mut a = new_doc(1);
    let mut prev = a.add_block("b0", [0.0, 0.0], None).expect("b0");
    a.add(NewEntity::new("0", Geometry::Line { from: [0.0, 0.0], to: [1.0, 0.0] }).with_owner(&prev)).expect("line");
    for i in 1..10 {
        let b = a.add_block(&format!("b{i}"), [0.0, 0.0], None).expect("block");
        for j in 0..10 {
            a.add(
                NewEntity::new(
                    "0",
                    Geometry::Insert {
                        block: prev.clone(),
                        position: [f64::from(j), 0.0],
                        rotation: 0.0,
                        scale: [1.0, 1.0],
                    },
                )
                .with_owner(&b),
            )
            .expect("insert");
        }
        prev = b;
    }
    a.add_insert("0", &prev, [0.0, 0.0], 0.0, [1.0, 1.0]).expect("top insert");
    let svg = a.resolve().to_svg(&caddy_doc::SvgOptions { max_elements: 5_000, ..Default::default() });
    assert!(svg.matches("data-id=").count() <= 5_000);
    assert!(svg.ends_with("</svg>\n"));
}
