//! Bad requests, broken documents, empty and large drawings.

mod common;

use std::time::Instant;

use caddy_doc::{Entity, Geometry, ResolvedDoc, Vertex};
use caddy_render::{RenderError, RenderRequest, View};
use common::*;

fn invalid(doc: &ResolvedDoc, req: &RenderRequest) -> String {
    match renderer().render(doc, req) {
        Err(RenderError::InvalidRequest(m)) => m,
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

#[test]
fn bad_sizes_and_views_are_invalid_requests() {
    let doc = doc_from_ops("[]").resolve();
    for (w, h) in [(0, 100), (100, 0), (0, 0), (100_000, 100_000), (8193, 10), (8192, 8192)] {
        let m = invalid(&doc, &request(View::fit(), w, h));
        assert!(m.contains(&format!("{w}x{h}")), "{m}");
    }
    let empty_window = View::Window { min: [10.0, 0.0], max: [10.0, 5.0], rotation_deg: 0.0 };
    invalid(&doc, &request(empty_window, 10, 10));
    let nan = View::Window { min: [f64::NAN, 0.0], max: [10.0, 5.0], rotation_deg: 0.0 };
    invalid(&doc, &request(nan, 10, 10));
    invalid(&doc, &request(View::Fit { margin_frac: -1.0, rotation_deg: 0.0 }, 10, 10));
    invalid(&doc, &request(View::Fit { margin_frac: 0.1, rotation_deg: f64::INFINITY }, 10, 10));
    // The largest allowed size passes validation.
    assert!(request(View::fit(), 8192, 4096).validate().is_ok());
}

#[test]
fn an_empty_drawing_is_the_background() {
    let doc = doc_from_ops("[]").resolve();
    for view in [View::fit(), window(10.0)] {
        let req = RenderRequest { background: [10, 20, 30, 255], ..request(view, 64, 48) };
        let out = render(&doc, &req);
        assert_eq!((out.width, out.height, out.triangles, out.entities_drawn), (64, 48, 0, 0));
        let img = Image::decode(&out.png);
        assert_eq!((img.width, img.height), (64, 48));
        assert!(img.rgba.chunks_exact(4).all(|p| p == [10, 20, 30, 255]));
    }
    // Transparent backgrounds stay transparent.
    let req = RenderRequest { background: [0, 0, 0, 0], ..request(View::fit(), 8, 8) };
    let img = Image::decode(&render(&doc, &req).png);
    assert!(img.rgba.chunks_exact(4).all(|p| p == [0, 0, 0, 0]));
}

#[test]
fn a_missing_block_is_reported_and_the_rest_drawn() {
    let mut doc = doc_from_ops(
        r##"[
        {"op": "add_block", "id": "gone", "name": "gone"},
        {"op": "add", "kind": "circle", "owner": "gone", "center": [0, 0], "radius": 5},
        {"op": "add", "kind": "insert", "id": "ins", "block": "gone", "position": [50, 50]},
        {"op": "add", "kind": "line", "id": "l", "from": [10, 10], "to": [90, 10], "line_weight": 1}
    ]"##,
    );
    doc.delete_node("gone").expect("delete block");
    let resolved = doc.resolve();
    assert!(!resolved.problems.is_empty(), "caddy-doc reports the broken insert");
    let req = request(window(100.0), 128, 128);
    let out = render(&resolved, &req);
    assert!(out.problems.iter().any(|p| p.contains("ins") && p.contains("gone")), "{:?}", out.problems);
    assert!(out.problems.len() > resolved.problems.len(), "the renderer adds its own: {:?}", out.problems);
    let img = Image::decode(&out.png);
    let on_line = caddy_render::project(&resolved, &req, [50.0, 10.0]);
    assert!(img.ink_near(on_line, 1, [255, 255, 255, 255]), "the line is drawn");
    assert_eq!(out.entities_drawn, 1);
}

fn entity(id: usize, geometry: Geometry) -> Entity {
    Entity {
        id: format!("e{id}"),
        layer: "0".into(),
        color: None,
        line_type: None,
        line_weight: None,
        owner: None,
        geometry,
        measurement: None,
    }
}

#[test]
fn degenerate_and_malformed_entities_are_skipped_not_fatal() {
    // A resolved document can be built (or deserialized) with anything in
    // it: the renderer must cope.
    let mut doc = doc_from_ops("[]").resolve();
    doc.entities.push(entity(0, Geometry::Circle { center: [0.0, 0.0], radius: -1.0 }));
    doc.entities.push(entity(1, Geometry::Line { from: [f64::NAN, 0.0], to: [1.0, 1.0] }));
    doc.entities.push(entity(2, Geometry::Polyline { vertices: vec![Vertex::new(0.0, 0.0)], closed: false }));
    doc.entities.push(entity(
        3,
        Geometry::LinearDim {
            p1: caddy_doc::DimPoint::at([0.0, 0.0]),
            p2: caddy_doc::DimPoint::at([5.0, 0.0]),
            offset: 1.0,
            angle: 0.0,
            precision: 2,
            text_height: 1.0,
        },
    ));
    doc.entities
        .push(entity(4, Geometry::Hatch { loops: vec![vec![[0.0, 0.0], [1.0, 1.0]]], fill: Default::default() }));
    doc.entities.push(entity(5, Geometry::Line { from: [0.0, 0.0], to: [10.0, 10.0] }));
    doc.entities.push(entity(6, Geometry::Line { from: [-1e12, 5.0], to: [1e12, 5.0] }));
    let out = render(&doc, &request(window(10.0), 64, 64));
    for id in ["e0", "e1", "e2", "e3", "e4"] {
        assert!(out.problems.iter().any(|p| p.contains(&format!("entity {id} "))), "{id}: {:?}", out.problems);
    }
    assert_eq!(out.entities_drawn, 2, "{:?}", out.problems);
    // A fit view of it still works (non-finite points are ignored).
    render(&doc, &request(View::fit(), 64, 64));
}

#[test]
fn recursive_blocks_are_cut_and_reported() {
    let mut doc = doc_from_ops(
        r##"[
        {"op": "add_block", "id": "a", "name": "a"},
        {"op": "add", "kind": "circle", "owner": "a", "center": [0, 0], "radius": 1},
        {"op": "add", "kind": "insert", "block": "a", "position": [0, 0]}
    ]"##,
    )
    .resolve();
    // caddy-doc's edits refuse a block containing itself; a merge or a
    // faulty peer can still produce one.
    doc.entities.push(Entity {
        owner: Some("a".into()),
        ..entity(99, Geometry::Insert { block: "a".into(), position: [3.0, 0.0], rotation: 0.0, scale: [0.5, 0.5] })
    });
    let out = render(&doc, &request(View::fit(), 64, 64));
    assert!(out.problems.iter().any(|p| p.contains("contains itself")), "{:?}", out.problems);
    // The outer insert and the circle; the inner insert is cut.
    assert_eq!(out.entities_drawn, 2);
}

#[test]
fn a_hundred_thousand_entities_render() {
    let mut doc = doc_from_ops("[]").resolve();
    for i in 0..100_000usize {
        let (x, y) = ((i % 400) as f64, (i / 400) as f64 * 1.6);
        let g = if i % 2 == 0 {
            Geometry::Line { from: [x, y], to: [x + 0.8, y + 1.2] }
        } else {
            Geometry::Circle { center: [x + 0.5, y + 0.5], radius: 0.4 }
        };
        doc.entities.push(entity(i, g));
    }
    let req = request(View::fit(), 512, 512);
    let start = Instant::now();
    let out = render(&doc, &req);
    let first = start.elapsed();
    let start = Instant::now();
    let again = render(&doc, &req);
    let second = start.elapsed();
    eprintln!(
        "100k entities at 512x512: {first:?} first, {second:?} reused; {} triangles, adapter {:?}",
        out.triangles,
        renderer().adapter_info()
    );
    assert_eq!(out.entities_drawn, 100_000);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(out.png, again.png);
}

#[test]
fn a_renderer_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<caddy_render::Renderer>();
    let doc = doc_from_ops(r#"[{"op": "add", "kind": "circle", "center": [0, 0], "radius": 5}]"#).resolve();
    let outputs: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let doc = &doc;
                // Different sizes, so the cached targets are rebuilt in between.
                s.spawn(move || render(doc, &request(View::fit(), 32 + i, 32)).png)
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("render thread")).collect()
    });
    assert_eq!(outputs.len(), 3);
    assert_eq!(render(&doc, &request(View::fit(), 32, 32)).png, outputs[0]);
}
