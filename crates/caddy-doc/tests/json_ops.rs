//! The JSON edit-operation format read by `caddyctl doc apply`.

mod common;

use caddy_doc::{DimPoint, DocError, EditOp, Fill, Geometry, NewEntity, Snap, Vertex};
use common::*;

/// One of every operation, the example a user would script from.
const EVERY_OP: &str = r##"{"ops": [
  {"op": "set_meta", "name": "Ground floor", "units": "m"},
  {"op": "add_layer", "id": "walls", "name": "Walls", "color": "#aa0000", "line_type": "continuous", "line_weight": 0.5, "visible": true, "locked": false},
  {"op": "add_layer", "id": "tmp"},
  {"op": "set_layer", "id": "tmp", "set": {"line_type": "dashed"}},
  {"op": "delete_layer", "id": "tmp"},
  {"op": "restore_layer", "id": "tmp"},
  {"op": "add", "kind": "line", "id": "l1", "layer": "walls", "from": [0, 0], "to": [100, 0]},
  {"op": "add", "kind": "polyline", "id": "p1", "vertices": [[0, 0], [10, 0, 0.5], [10, 10]], "closed": true, "color": "#00ff00", "line_type": "dashdot", "line_weight": 0.35},
  {"op": "add", "kind": "circle", "id": "c1", "center": [50, 50], "radius": 10},
  {"op": "add", "kind": "arc", "id": "a1", "center": [0, 0], "radius": 5, "start_angle": 0, "end_angle": 90},
  {"op": "add", "kind": "ellipse", "id": "e1", "center": [0, 0], "major_axis": [10, 0], "ratio": 0.5},
  {"op": "add", "kind": "spline", "id": "s1", "control_points": [[0, 0], [1, 2], [3, 2], [4, 0]], "degree": 3},
  {"op": "add", "kind": "text", "id": "t1", "position": [0, -10], "height": 2.5, "content": "Room 1"},
  {"op": "add", "kind": "linear_dim", "id": "d1", "p1": {"entity": "l1", "snap": "start"}, "p2": {"entity": "l1", "snap": "end"}, "offset": -10},
  {"op": "add", "kind": "aligned_dim", "id": "d2", "p1": {"point": [0, 0]}, "p2": {"point": [3, 4]}, "offset": 2},
  {"op": "add", "kind": "radial_dim", "id": "d3", "target": "c1", "angle": 30},
  {"op": "add", "kind": "angular_dim", "id": "d4", "vertex": {"entity": "a1", "snap": "center"}, "p1": {"entity": "a1", "snap": "start"}, "p2": {"entity": "a1", "snap": "end"}, "radius": 4},
  {"op": "add", "kind": "hatch", "id": "h1", "loops": [[[0, 0], [5, 0], [5, 5]]], "fill": {"type": "pattern", "name": "ANSI31", "scale": 1, "angle": 45}},
  {"op": "add_block", "id": "door", "name": "Door", "base": [0, 0]},
  {"op": "add", "kind": "arc", "owner": "door", "center": [0, 0], "radius": 9, "start_angle": 0, "end_angle": 90},
  {"op": "add", "kind": "insert", "id": "i1", "block": "door", "position": [20, 0], "rotation": 90, "scale": [1, -1]},
  {"op": "add_group", "id": "g1", "name": "Furniture"},
  {"op": "add_group", "id": "g2", "name": "Chairs", "parent": "g1"},
  {"op": "move_node", "id": "g2"},
  {"op": "move_node", "id": "door", "parent": "g1"},
  {"op": "rename_node", "id": "g2", "name": "Seats"},
  {"op": "set_block_base", "id": "door", "base": [1, 1]},
  {"op": "group_add", "group": "g1", "entity": "c1"},
  {"op": "group_add", "group": "g1", "entity": "l1"},
  {"op": "group_remove", "group": "g1", "entity": "l1"},
  {"op": "delete_node", "id": "g2"},
  {"op": "restore_node", "id": "g2"},
  {"op": "set", "id": "c1", "set": {"radius": 12.5}},
  {"op": "set", "id": "c1", "set": {"color": null}},
  {"op": "set", "id": "l1", "set": {"layer": "0"}},
  {"op": "text_insert", "id": "t1", "pos": 6, "text": " (kitchen)"},
  {"op": "text_delete", "id": "t1", "pos": 0, "len": 5},
  {"op": "bring_to_front", "id": "l1"},
  {"op": "send_to_back", "id": "h1"},
  {"op": "delete", "id": "e1"},
  {"op": "restore", "id": "e1"}
]}"##;

#[test]
fn every_operation_parses_and_applies() {
    let ops = EditOp::parse_batch(EVERY_OP).expect("parse");
    assert_eq!(ops.len(), 41);
    let mut d = new_doc(1);
    let report = d.apply_ops(&ops).expect("apply");
    assert_eq!(report.created.len(), 17);
    let r = d.resolve();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.meta.name, "Ground floor");
    assert_eq!(d.text("t1").expect("text"), "1 (kitchen)");
    assert_eq!(r.entities.first().map(|e| e.id.as_str()), Some("h1"));
    assert_eq!(r.entities.last().map(|e| e.id.as_str()), Some("l1"));
    assert_eq!(r.nodes.len(), 3);
    let d1 = r.entities.iter().find(|e| e.id == "d1").expect("d1");
    assert_eq!(d1.measurement.as_ref().expect("m").value, 100.0);
    let d4 = r.entities.iter().find(|e| e.id == "d4").expect("d4");
    assert_eq!(d4.measurement.as_ref().expect("m").text, "90.00°");
}

#[test]
fn operations_round_trip_through_json() {
    let ops = EditOp::parse_batch(EVERY_OP).expect("parse");
    let again = EditOp::parse_batch(&EditOp::to_json_batch(&ops)).expect("reparse");
    assert_eq!(ops, again);
}

#[test]
fn typed_values_have_the_documented_json_shape() {
    let op = EditOp::Add(
        NewEntity::new(
            "0",
            Geometry::Polyline {
                vertices: vec![Vertex::new(0.0, 0.0), Vertex::with_bulge(1.0, 0.0, 0.5)],
                closed: false,
            },
        )
        .with_id("p"),
    );
    let v = serde_json::to_value(&op).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"op": "add", "kind": "polyline", "id": "p", "layer": "0",
            "vertices": [[0.0, 0.0, 0.0], [1.0, 0.0, 0.5]], "closed": false})
    );
    let d: DimPoint = serde_json::from_str(r#"{"entity": "x"}"#).expect("snap defaults");
    assert_eq!(d, DimPoint::on("x", Snap::Start));
    let f: Fill = serde_json::from_str(r#"{"type": "solid"}"#).expect("fill");
    assert_eq!(f, Fill::Solid);
}

#[test]
fn malformed_json_is_a_typed_error() {
    let bad = [
        // Unknown op.
        r#"[{"op": "explode", "id": "x"}]"#,
        // Unknown field on a plain op.
        r#"[{"op": "delete", "id": "x", "force": true}]"#,
        // Unknown field on an add (typo of "color").
        r#"[{"op": "add", "kind": "line", "from": [0, 0], "to": [1, 0], "colour": "red"}]"#,
        // Field of another kind.
        r#"[{"op": "add", "kind": "line", "from": [0, 0], "to": [1, 0], "radius": 3}]"#,
        // Unknown kind.
        r#"[{"op": "add", "kind": "blob", "from": [0, 0]}]"#,
        // Missing field.
        r#"[{"op": "add", "kind": "circle", "center": [0, 0]}]"#,
        // Bad point.
        r#"[{"op": "add", "kind": "line", "from": [0], "to": [1, 0]}]"#,
        // Bad colour.
        r##"[{"op": "add", "kind": "line", "from": [0, 0], "to": [1, 0], "color": "#12"}]"##,
        // Unknown property.
        r#"[{"op": "set", "id": "x", "set": {"size": 3}}]"#,
        // Two properties in one set.
        r#"[{"op": "set", "id": "x", "set": {"radius": 3, "height": 2}}]"#,
        // Dimension anchor with both forms.
        r#"[{"op": "add", "kind": "aligned_dim", "p1": {"point": [0, 0], "entity": "x"}, "p2": {"point": [1, 1]}, "offset": 1}]"#,
        // Not a batch.
        r#"{"op": "delete", "id": "x"}"#,
        "not json",
        "",
    ];
    for json in bad {
        match EditOp::parse_batch(json) {
            Err(DocError::Json(msg)) => assert!(!msg.is_empty()),
            other => panic!("{json}: expected a JSON error, got {other:?}"),
        }
    }
}

#[test]
fn generated_ids_never_collide_across_batches() {
    let mut d = new_doc(9);
    let mut ids = std::collections::BTreeSet::new();
    for batch in 0..20 {
        let ops: Vec<EditOp> = (0..50)
            .map(|i| {
                let json = format!(r#"{{"op": "add", "kind": "line", "from": [{batch}, {i}], "to": [1, 1]}}"#);
                serde_json::from_str(&json).expect("op")
            })
            .collect();
        for id in d.apply_ops(&ops).expect("apply").created {
            assert!(ids.insert(id.clone()), "id {id} generated twice");
        }
        // Single edits between batches, too.
        ids.insert(d.add_line("0", [0.0, 0.0], [f64::from(batch), 1.0]).expect("line"));
    }
    assert_eq!(ids.len(), 20 * 51);
    assert_eq!(d.resolve().entities.len(), 20 * 51, "an entity was overwritten by a colliding id");
}
