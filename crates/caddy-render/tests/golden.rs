//! Golden images: small drawings covering every entity kind, rendered and
//! compared with `tests/golden/NAME.png`.
//!
//! # Tolerance
//!
//! A pixel matches when every channel is within 24 levels of the
//! reference; at an anti-aliased edge of the reference (a pixel that
//! differs from one of its 8 neighbours by more than 24) within 80 levels.
//! At most 0.5 % of the pixels may fail that.
//!
//! Why: all geometry (flattening, text, tessellation) is computed on the
//! CPU and reaches the GPU as the same `f32` vertices everywhere. What a
//! GPU may change is which of the 4 MSAA samples an edge covers: its
//! sub-pixel precision (Vulkan allows 4 to 8+ bits), rasterization rules,
//! resolve and blend rounding. One sample is a step of about 64 levels,
//! which is why edges get 80; flat areas keep 24, so a missing or
//! misplaced fill fails at once. Measured on lavapipe: moving every vertex
//! by 0.1 px (25 times an 8-bit sub-pixel step) still passes every
//! golden, 0.25 px fails most of them, and so does dropping one stroke or
//! moving the drawing by one pixel (`the_comparison_catches_...`). The
//! references are rendered with 4x MSAA; an adapter without it (none that
//! wgpu reports as WebGPU-compliant) fails them.
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the references;
//! look at them before committing.

mod common;

use caddy_doc::LayerProperty;
use caddy_render::{RenderRequest, View, project};
use common::*;

const BG: [u8; 4] = [255, 255, 255, 255];

fn golden(name: &str, ops: &str, req: &RenderRequest) {
    assert_eq!(renderer().adapter_info().sample_count, 4, "the references are 4x MSAA");
    let doc = doc_from_ops(ops).resolve();
    let out = render(&doc, req);
    assert!(out.problems.is_empty(), "{name}: unexpected problems {:?}", out.problems);
    assert!(out.triangles > 0 && out.entities_drawn > 0, "{name}: nothing drawn");
    check_golden(name, &out);
}

const LINES: &str = r##"[
        {"op": "add_layer", "id": "red", "color": "#e00000", "line_weight": 0.5},
        {"op": "add_layer", "id": "blue", "color": "#0030d0", "line_weight": 1.0},
        {"op": "add", "kind": "line", "from": [10, 10], "to": [90, 10]},
        {"op": "add", "kind": "line", "layer": "red", "from": [10, 18], "to": [90, 30]},
        {"op": "add", "kind": "line", "from": [10, 38], "to": [90, 38], "line_type": "dashed"},
        {"op": "add", "kind": "line", "from": [10, 43], "to": [90, 43], "line_type": "dotted", "line_weight": 0.5},
        {"op": "add", "kind": "line", "from": [10, 48], "to": [90, 48], "line_type": "center", "color": "#008000"},
        {"op": "add", "kind": "polyline", "layer": "blue",
         "vertices": [[10, 55], [30, 72], [50, 55], [70, 72], [90, 55]]},
        {"op": "add", "kind": "polyline", "layer": "red", "closed": true,
         "vertices": [[15, 80], [40, 80, 0.6], [40, 95], [15, 95, -0.4]]},
        {"op": "add", "kind": "polyline", "color": "#804000",
         "vertices": [[55, 80], [75, 80, 1], [75, 95], [90, 95, -1], [90, 80]]}
    ]"##;

#[test]
fn lines_polylines_and_line_types() {
    golden("lines", LINES, &request(window(100.0), 256, 256));
}

#[test]
fn circles_arcs_and_ellipses() {
    golden(
        "curves",
        r##"[
        {"op": "add", "kind": "circle", "center": [28, 72], "radius": 20},
        {"op": "add", "kind": "circle", "center": [28, 72], "radius": 2, "color": "#ff0000"},
        {"op": "add", "kind": "arc", "center": [72, 62], "radius": 20, "start_angle": 30, "end_angle": 150,
         "color": "#0000ff", "line_weight": 0.7},
        {"op": "add", "kind": "arc", "center": [72, 62], "radius": 12, "start_angle": 270, "end_angle": 90,
         "color": "#008000"},
        {"op": "add", "kind": "ellipse", "center": [28, 25], "major_axis": [20, 0], "ratio": 0.5},
        {"op": "add", "kind": "ellipse", "center": [72, 25], "major_axis": [14, 14], "ratio": 0.4,
         "start_param": 0, "end_param": 270, "color": "#a000a0", "line_weight": 0.5}
    ]"##,
        &request(window(100.0), 256, 256),
    );
}

#[test]
fn splines() {
    golden(
        "splines",
        r##"[
        {"op": "add", "kind": "polyline", "color": "#c0c0c0",
         "vertices": [[10, 10], [30, 90], [50, 10], [70, 90], [90, 10]]},
        {"op": "add", "kind": "spline", "degree": 3, "line_weight": 0.5,
         "control_points": [[10, 10], [30, 90], [50, 10], [70, 90], [90, 10]]},
        {"op": "add", "kind": "spline", "degree": 2, "color": "#0000ff",
         "control_points": [[10, 50], [50, 95], [90, 50]]},
        {"op": "add", "kind": "spline", "degree": 1, "color": "#00a000",
         "control_points": [[10, 95], [20, 85], [30, 95]]}
    ]"##,
        &request(window(100.0), 256, 256),
    );
}

#[test]
fn text_in_the_built_in_font() {
    golden(
        "text",
        r##"[
        {"op": "add", "kind": "text", "position": [4, 86], "height": 8, "content": "Hello, CADDY!"},
        {"op": "add", "kind": "text", "position": [4, 70], "height": 6, "content": "0123456789", "color": "#0000c0"},
        {"op": "add", "kind": "text", "position": [4, 52], "height": 5, "content": "two\nlines"},
        {"op": "add", "kind": "text", "position": [55, 20], "height": 6, "rotation": 45, "content": "rotated",
         "color": "#c00000"},
        {"op": "add", "kind": "text", "position": [4, 8], "height": 6,
         "content": "fa\u00e7ade \u2192 \u00d810\u00b10.1 45\u00b0"}
    ]"##,
        &request(window(100.0), 256, 256),
    );
}

#[test]
fn every_printable_ascii_glyph() {
    let mut lines = Vec::new();
    let all: Vec<char> = (' '..='~').collect();
    for (i, chunk) in all.chunks(32).enumerate() {
        let s: String = chunk.iter().collect();
        let content = serde_json::to_string(&s).expect("json");
        lines.push(format!(
            r#"{{"op": "add", "kind": "text", "position": [2, {}], "height": 8, "content": {content}}}"#,
            40 - i * 14
        ));
    }
    let ops = format!("[{}]", lines.join(","));
    let req = request(View::Window { min: [0.0, 0.0], max: [200.0, 50.0], rotation_deg: 0.0 }, 768, 192);
    golden("font", &ops, &req);
}

#[test]
fn dimensions() {
    golden(
        "dimensions",
        r##"[
        {"op": "add", "kind": "line", "id": "l1", "from": [10, 15], "to": [55, 15]},
        {"op": "add", "kind": "linear_dim", "p1": {"entity": "l1", "snap": "start"},
         "p2": {"entity": "l1", "snap": "end"}, "offset": 10, "text_height": 4, "color": "#0000c0"},
        {"op": "add", "kind": "aligned_dim", "p1": {"point": [65, 15]}, "p2": {"point": [90, 45]}, "offset": 6,
         "text_height": 4, "precision": 1, "color": "#0000c0"},
        {"op": "add", "kind": "circle", "id": "c1", "center": [28, 65], "radius": 16},
        {"op": "add", "kind": "radial_dim", "target": "c1", "angle": 35, "text_height": 4, "color": "#c00000"},
        {"op": "add", "kind": "line", "id": "a", "from": [55, 60], "to": [95, 60]},
        {"op": "add", "kind": "line", "id": "b", "from": [55, 60], "to": [75, 92]},
        {"op": "add", "kind": "angular_dim", "vertex": {"point": [55, 60]}, "p1": {"entity": "a", "snap": "end"},
         "p2": {"entity": "b", "snap": "end"}, "radius": 22, "text_height": 4, "precision": 0, "color": "#008000"}
    ]"##,
        &request(window(100.0), 256, 256),
    );
}

#[test]
fn hatches_solid_pattern_and_even_odd() {
    golden(
        "hatches",
        r##"[
        {"op": "add", "kind": "hatch", "color": "#2060c0",
         "loops": [[[8, 55], [45, 55], [45, 92], [8, 92]], [[18, 65], [35, 65], [35, 82], [18, 82]]]},
        {"op": "add", "kind": "hatch", "color": "#c03000",
         "fill": {"type": "pattern", "name": "ANSI31", "scale": 3, "angle": 45},
         "loops": [[[55, 55], [92, 55], [73, 92]]]},
        {"op": "add", "kind": "hatch", "color": "#008040",
         "loops": [[[27, 48], [38, 10], [8, 34], [46, 34], [16, 10]]]},
        {"op": "add", "kind": "hatch", "color": "#000000",
         "fill": {"type": "pattern", "name": "dense", "scale": 0.05, "angle": 0},
         "loops": [[[55, 10], [92, 10], [92, 45], [55, 45]]]}
    ]"##,
        &request(window(100.0), 256, 256),
    );
}

#[test]
fn block_inserts_nested_rotated_mirrored() {
    golden(
        "inserts",
        r##"[
        {"op": "add_block", "id": "b", "name": "box", "base": [0, 0]},
        {"op": "add", "kind": "polyline", "owner": "b", "closed": true,
         "vertices": [[0, 0], [10, 0], [10, 10], [0, 10]]},
        {"op": "add", "kind": "circle", "owner": "b", "center": [5, 5], "radius": 3, "color": "#d00000"},
        {"op": "add", "kind": "text", "owner": "b", "position": [1, 1], "height": 3, "content": "F"},
        {"op": "add", "kind": "insert", "block": "b", "position": [8, 8]},
        {"op": "add", "kind": "insert", "block": "b", "position": [40, 8], "rotation": 30, "scale": [2, 2]},
        {"op": "add", "kind": "insert", "block": "b", "position": [90, 8], "scale": [-1.5, 1.5]},
        {"op": "add_block", "id": "n", "name": "nest", "base": [5, 5]},
        {"op": "add", "kind": "insert", "owner": "n", "block": "b", "position": [0, 0]},
        {"op": "add", "kind": "insert", "owner": "n", "block": "b", "position": [12, 0], "scale": [0.5, 0.5]},
        {"op": "add", "kind": "line", "owner": "n", "from": [0, -2], "to": [20, -2], "color": "#0000ff"},
        {"op": "add", "kind": "insert", "block": "n", "position": [25, 65], "rotation": -15, "scale": [2, 2]}
    ]"##,
        &request(window(100.0), 256, 256),
    );
}

/// Red under blue under green by draw order; the green square sits on
/// layer `hidden` (visible here; see `hidden_layer_is_not_drawn`).
const LAYERS: &str = r##"[
    {"op": "add_layer", "id": "a", "color": "#e00000"},
    {"op": "add_layer", "id": "b", "color": "#0000e0"},
    {"op": "add_layer", "id": "hidden", "color": "#00a000"},
    {"op": "add", "kind": "hatch", "id": "ha", "layer": "a", "loops": [[[10, 10], [50, 10], [50, 50], [10, 50]]]},
    {"op": "add", "kind": "hatch", "id": "hb", "layer": "b", "loops": [[[30, 30], [70, 30], [70, 70], [30, 70]]]},
    {"op": "add", "kind": "hatch", "id": "hh", "layer": "hidden",
     "loops": [[[60, 60], [92, 60], [92, 92], [60, 92]]]},
    {"op": "add", "kind": "line", "layer": "hidden", "from": [5, 95], "to": [95, 95]}
]"##;

#[test]
fn layers_colours_and_draw_order() {
    golden("layers", LAYERS, &request(window(100.0), 256, 256));
}

#[test]
fn hidden_layer_is_not_drawn() {
    let mut doc = doc_from_ops(LAYERS);
    let req = request(window(100.0), 256, 256);
    // The visible version is the `layers` golden.
    let shown = render(&doc.resolve(), &req);
    check_golden("layers", &shown);
    let visible = Image::decode(&std::fs::read(golden_path("layers")).expect("layers golden"));
    doc.set_layer_property("hidden", LayerProperty::Visible(false)).expect("hide");
    let resolved = doc.resolve();
    let hidden = Image::decode(&render(&resolved, &req).png);
    let bad = differing_pixels(&visible, &hidden);
    assert!(bad > allowed(&visible), "hiding a layer changed only {bad} pixels");
    // The centre of the green square is background now, and was green.
    let centre = project(&resolved, &req, [76.0, 76.0]);
    assert_eq!(hidden.at(centre), BG);
    assert_eq!(visible.at(centre), [0, 160, 0, 255]);
    // Other layers are unchanged: red and blue where they do not overlap it.
    assert_eq!(hidden.at(project(&resolved, &req, [20.0, 20.0])), [224, 0, 0, 255]);
    assert_eq!(hidden.at(project(&resolved, &req, [40.0, 40.0])), [0, 0, 224, 255]);

    // An explicit layer list draws exactly those layers, hidden or not.
    let only = RenderRequest { layers: Some(vec!["hidden".into()]), ..req.clone() };
    let img = Image::decode(&render(&resolved, &only).png);
    assert_eq!(img.at(centre), [0, 160, 0, 255]);
    assert_eq!(img.at(project(&resolved, &req, [20.0, 20.0])), BG);
}

#[test]
fn draw_order_is_painter_order() {
    let mut doc = doc_from_ops(LAYERS);
    let req = request(window(100.0), 256, 256);
    let overlap = [40.0, 40.0];
    let before = Image::decode(&render(&doc.resolve(), &req).png);
    assert_eq!(before.at(project(&doc.resolve(), &req, overlap)), [0, 0, 224, 255]);
    doc.bring_to_front("ha").expect("bring to front");
    let after = Image::decode(&render(&doc.resolve(), &req).png);
    assert_eq!(after.at(project(&doc.resolve(), &req, overlap)), [224, 0, 0, 255]);
}

#[test]
fn an_arc_is_a_curve_not_a_chord() {
    // Arc of radius 40 from 30° to 150° around (50, 20): its midpoint is
    // (50, 60), its chord's midpoint (50, 40).
    let ops = r##"[
        {"op": "add", "kind": "arc", "center": [50, 20], "radius": 40, "start_angle": 30, "end_angle": 150},
        {"op": "add", "kind": "polyline", "vertices": [[10, 90], [30, 90, 1], [50, 90]]}
    ]"##;
    let doc = doc_from_ops(ops).resolve();
    let req = request(window(100.0), 256, 256);
    let img = Image::decode(&render(&doc, &req).png);
    for deg in [30.0f64, 50.0, 70.0, 90.0, 110.0, 130.0, 150.0] {
        let (s, c) = deg.to_radians().sin_cos();
        let on_arc = project(&doc, &req, [50.0 + 40.0 * c, 20.0 + 40.0 * s]);
        assert!(img.ink_near(on_arc, 1, BG), "arc not drawn at {deg}°");
    }
    let chord_mid = project(&doc, &req, [50.0, 40.0]);
    assert!(!img.ink_near(chord_mid, 3, BG), "something is drawn on the chord");
    // Points between the arc and its chord are empty too.
    for (s, y) in [(-0.5, 50.0), (0.0, 50.0), (0.5, 50.0)] {
        assert!(!img.ink_near(project(&doc, &req, [50.0 + 20.0 * s, y]), 2, BG), "ink inside the arc");
    }
    // The bulged segment from (30, 90) to (50, 90): bulge 1 is a half
    // circle turning counter-clockwise, through (40, 80).
    assert!(img.ink_near(project(&doc, &req, [40.0, 80.0]), 1, BG), "bulge arc not drawn");
    assert!(!img.ink_near(project(&doc, &req, [40.0, 90.0]), 3, BG), "bulge drawn as a chord");
}

#[test]
fn fit_view_fills_the_image_with_the_margin() {
    let ops = r##"[{"op": "add", "kind": "polyline", "closed": true,
        "vertices": [[0, 0], [100, 0], [100, 50], [0, 50]]},
        {"op": "add", "kind": "circle", "center": [50, 25], "radius": 20, "color": "#ff0000"}]"##;
    let doc = doc_from_ops(ops).resolve();
    let req = request(View::Fit { margin_frac: 0.05, rotation_deg: 0.0 }, 256, 256);
    let out = render(&doc, &req);
    check_golden("fit", &out);
    // Width 100 + 2 × 5 margin over 256 px: the left edge sits at 5 / 110 × 256.
    let left = project(&doc, &req, [0.0, 25.0]);
    assert!((left[0] - 5.0 / 110.0 * 256.0).abs() < 1e-6, "{left:?}");
    assert!((left[1] - 128.0).abs() < 1e-6, "{left:?}");
    let rotated = RenderRequest { view: View::Fit { margin_frac: 0.05, rotation_deg: 90.0 }, ..req };
    check_golden("fit_rotated", &render(&doc, &rotated));
}

#[test]
fn rendering_is_deterministic() {
    let doc = doc_from_ops(LAYERS).resolve();
    let req = request(View::fit(), 200, 120);
    let a = render(&doc, &req);
    let b = render(&doc, &req);
    assert_eq!(a, b);
}

#[test]
fn the_comparison_catches_a_missing_or_shifted_entity() {
    let reference = Image::decode(&std::fs::read(golden_path("lines")).expect("lines golden"));
    let ops: serde_json::Value = serde_json::from_str(LINES).expect("json");
    let mut ops = ops.as_array().cloned().expect("array");
    // Without the blue zig-zag.
    ops.retain(|op| op.get("layer").and_then(|l| l.as_str()) != Some("blue") || op["op"] == "add_layer");
    let missing = doc_from_ops(&serde_json::to_string(&ops).expect("json")).resolve();
    let img = Image::decode(&render(&missing, &request(window(100.0), 256, 256)).png);
    let bad = differing_pixels(&reference, &img);
    assert!(bad > allowed(&reference), "a missing polyline changed only {bad} pixels");
    // Everything one pixel to the right.
    let doc = doc_from_ops(LINES).resolve();
    let px = 100.0 / 256.0;
    let shifted = View::Window { min: [-px, 0.0], max: [100.0 - px, 100.0], rotation_deg: 0.0 };
    let img = Image::decode(&render(&doc, &request(shifted, 256, 256)).png);
    let bad = differing_pixels(&reference, &img);
    assert!(bad > allowed(&reference), "a one-pixel shift changed only {bad} pixels");
}
