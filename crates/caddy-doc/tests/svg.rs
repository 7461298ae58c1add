//! SVG export: every entity kind, layers, the y flip, escaping.

mod common;

use caddy_doc::{EditOp, SvgOptions};
use common::*;

/// A minimal well-formedness check: tags nest and close, attribute quotes
/// balance, every `&` starts an entity.
fn check_well_formed(svg: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let text = &rest[..start];
        check_text(text);
        let Some(len) = rest[start..].find('>') else {
            panic!("unclosed tag at {}", &rest[start..]);
        };
        let tag = &rest[start + 1..start + len];
        rest = &rest[start + len + 1..];
        if tag.starts_with('?') {
            continue;
        }
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in <{tag}>");
        check_text(tag);
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.trim()), "mismatched </{name}>");
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap_or_default();
            stack.push(name.to_owned());
        }
    }
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
}

fn check_text(s: &str) {
    for (i, _) in s.match_indices('&') {
        let ent = &s[i..];
        assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| ent.starts_with(e)), "raw & in {s:?}");
    }
}

/// The element (up to its end) that carries `data-id="id"`.
fn element<'a>(svg: &'a str, id: &str) -> &'a str {
    let key = format!("data-id=\"{id}\"");
    let i = svg.find(&key).unwrap_or_else(|| panic!("no element for {id}"));
    let start = svg[..i].rfind('<').unwrap_or(0);
    let end = svg[i..].find('>').map_or(svg.len(), |e| i + e + 1);
    &svg[start..end]
}

const DRAWING: &str = r##"[
  {"op": "add_layer", "id": "red", "color": "#ff0000", "line_weight": 0.5, "line_type": "dashed"},
  {"op": "add_layer", "id": "hidden", "visible": false},
  {"op": "add", "kind": "line", "id": "line", "layer": "red", "from": [0, 0], "to": [0, 10]},
  {"op": "add", "kind": "line", "id": "ghost", "layer": "hidden", "from": [0, 0], "to": [500, 500]},
  {"op": "add", "kind": "polyline", "id": "poly", "vertices": [[0, 0], [10, 0, 1], [20, 0], [20, 10]], "closed": true, "color": "#0000ff"},
  {"op": "add", "kind": "circle", "id": "circle", "center": [50, 50], "radius": 10},
  {"op": "add", "kind": "arc", "id": "arc", "center": [0, 0], "radius": 5, "start_angle": 0, "end_angle": 90},
  {"op": "add", "kind": "ellipse", "id": "ellipse", "center": [30, 0], "major_axis": [10, 0], "ratio": 0.5},
  {"op": "add", "kind": "ellipse", "id": "half_ellipse", "center": [30, 20], "major_axis": [0, 10], "ratio": 0.3, "start_param": 0, "end_param": 180},
  {"op": "add", "kind": "spline", "id": "spline", "control_points": [[0, 20], [5, 30], [10, 20], [15, 30]], "degree": 3},
  {"op": "add", "kind": "text", "id": "text", "position": [0, -10], "height": 2.5, "rotation": 30, "content": "a <b> & \"c\" 'd'\u0001"},
  {"op": "add", "kind": "linear_dim", "id": "lin", "p1": {"entity": "line", "snap": "start"}, "p2": {"entity": "line", "snap": "end"}, "offset": -5, "angle": 90},
  {"op": "add", "kind": "aligned_dim", "id": "ali", "p1": {"point": [0, 0]}, "p2": {"point": [30, 40]}, "offset": 3},
  {"op": "add", "kind": "radial_dim", "id": "rad", "target": "circle", "angle": 45},
  {"op": "add", "kind": "angular_dim", "id": "ang", "vertex": {"point": [60, 0]}, "p1": {"point": [70, 0]}, "p2": {"point": [60, 10]}, "radius": 5},
  {"op": "add", "kind": "hatch", "id": "solid", "loops": [[[0, 0], [5, 0], [5, 5]], [[1, 1], [2, 1], [2, 2]]], "color": "#00ff00"},
  {"op": "add", "kind": "hatch", "id": "pattern", "loops": [[[10, 0], [15, 0], [15, 5]]], "fill": {"type": "pattern", "name": "ANSI31", "scale": 1, "angle": 45}},
  {"op": "add_block", "id": "door", "name": "Door", "base": [0, 0]},
  {"op": "add", "kind": "arc", "id": "door_swing", "owner": "door", "center": [0, 0], "radius": 9, "start_angle": 0, "end_angle": 90},
  {"op": "add", "kind": "insert", "id": "ins", "block": "door", "position": [100, 0], "rotation": 90, "scale": [2, 2]}
]"##;

#[test]
fn every_entity_kind_is_drawn() {
    let mut d = new_doc(1);
    d.apply_ops(&EditOp::parse_batch(DRAWING).expect("parse")).expect("apply");
    let r = d.resolve();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let svg = r.to_svg(&SvgOptions::default());
    check_well_formed(&svg);
    assert!(svg.starts_with("<?xml"));
    assert!(svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.contains("viewBox=\""));
    assert!(svg.contains("<title>test drawing</title>"));

    // Layer style: colour, dash, weight (0.5 mm at 96 dpi).
    let line = element(&svg, "line");
    assert!(line.contains("stroke=\"#ff0000\""), "{line}");
    assert!(line.contains("stroke-dasharray"), "{line}");
    // 0.5 mm is 1.89 px at the exported width, written in drawing units.
    let attr = |el: &str, name: &str| -> f64 {
        let key = format!(" {name}=\"");
        let at = el.find(&key).unwrap_or_else(|| panic!("no {name} in {el}")) + key.len();
        el[at..at + el[at..].find('"').expect("quote")].split(' ').next().expect("v").parse().expect("number")
    };
    let view_w: f64 = {
        let at = svg.find("viewBox=\"").expect("viewBox") + 9;
        let vb: Vec<f64> =
            svg[at..at + svg[at..].find('"').expect("q")].split(' ').map(|v| v.parse().expect("n")).collect();
        vb[2]
    };
    let px = attr(line, "stroke-width") * 1024.0 / view_w;
    assert!((px - 0.5 * 96.0 / 25.4).abs() < 1e-3, "{px} px: {line}");
    // Inside an insert scaled 2x the same plotted width is half as many units.
    let swing = element(&svg, "door_swing");
    let outside = element(&svg, "arc");
    assert!((attr(swing, "stroke-width") * 2.0 - attr(outside, "stroke-width")).abs() < 1e-5);
    // y flipped.
    assert!(line.contains("d=\"M 0 0 L 0 -10\""), "{line}");
    // Hidden layer: absent.
    assert!(!svg.contains("ghost"));
    // Entity colour override; bulge as an arc; closed.
    let poly = element(&svg, "poly");
    assert!(poly.contains("stroke=\"#0000ff\""));
    assert!(poly.contains(" A 5 5 0 0 0 20 0"), "{poly}");
    assert!(poly.ends_with("Z\"/>"), "{poly}");
    assert!(element(&svg, "circle").starts_with("<circle"));
    // A real arc: counter-clockwise from (5,0) to (0,5), i.e. sweep flag 0 after the flip.
    let arc = element(&svg, "arc");
    assert!(arc.contains("d=\"M 5 0 A 5 5 0 0 0 0 -5\""), "{arc}");
    assert!(!arc.contains(" L "));
    assert!(element(&svg, "ellipse").starts_with("<ellipse"));
    let half = element(&svg, "half_ellipse");
    assert!(half.contains(" A 10 3 -90 0 0 "), "{half}");
    let spline = element(&svg, "spline");
    assert!(spline.matches(" L ").count() >= 16, "{spline}");
    // Text escaped, rotated, control character replaced.
    let text_start = svg.find("<text data-id=\"text\"").expect("text");
    let text = &svg[text_start..svg[text_start..].find("</text>").expect("end") + text_start];
    assert!(text.contains("a &lt;b&gt; &amp; &quot;c&quot; &apos;d&apos;\u{FFFD}"), "{text}");
    assert!(text.contains("transform=\"rotate(-30 0 10)\""), "{text}");
    // Dimensions: extension lines, arrows, measured value.
    for (id, label) in [("lin", "10.00"), ("ali", "50.00"), ("rad", "R10.00"), ("ang", "90.00°")] {
        let start = svg.find(&format!("<g class=\"dimension\" data-id=\"{id}\">")).expect(id);
        let group = &svg[start..start + svg[start..].find("</g>").expect("end")];
        assert!(group.contains("class=\"arrow\""), "{id}: {group}");
        assert!(group.contains(&format!(">{label}</text>")), "{id}: {group}");
    }
    // Hatches filled.
    let solid = element(&svg, "solid");
    assert!(solid.contains("fill=\"#00ff00\"") && solid.contains("evenodd"), "{solid}");
    assert!(element(&svg, "pattern").contains("fill=\"url(#hatch-1)\""));
    assert!(svg.contains("<pattern id=\"hatch-1\""));
    // The insert draws the block's arc with its transform; the block member
    // is not drawn in model space.
    let ins = element(&svg, "ins");
    assert!(ins.contains("transform=\"matrix(0 -2 2 0 100 0)\""), "{ins}");
    assert_eq!(svg.matches("data-id=\"door_swing\"").count(), 1);
    let swing_at = svg.find("data-id=\"door_swing\"").expect("swing");
    assert!(swing_at > svg.find("data-id=\"ins\"").expect("ins"));
}

#[test]
fn view_box_fits_the_extents() {
    let mut d = new_doc(1);
    d.add_line("0", [0.0, 0.0], [100.0, 50.0]).expect("line");
    let svg =
        d.resolve().to_svg(&SvgOptions { margin: 0.0, width_px: 200.0, background: None, ..SvgOptions::default() });
    assert!(svg.contains("viewBox=\"0 -50 100 50\" width=\"200\" height=\"100\""), "{svg}");
    assert!(!svg.contains("<rect"));
    // An arc's extents are those of the arc, not of its chord.
    let mut d = new_doc(1);
    d.add_arc("0", [0.0, 0.0], 10.0, 0.0, 180.0).expect("arc");
    let svg = d.resolve().to_svg(&SvgOptions { margin: 0.0, ..SvgOptions::default() });
    assert!(svg.contains("viewBox=\"-10 -10 20 10\""), "{svg}");
}

#[test]
fn empty_and_broken_drawings_still_render() {
    let d = new_doc(1);
    check_well_formed(&d.resolve().to_svg(&SvgOptions::default()));
    let mut d = new_doc(1);
    let c = d.add_circle("0", [0.0, 0.0], 1.0).expect("circle");
    d.add_geometry(
        "0",
        caddy_doc::Geometry::RadialDim { target: c.clone(), angle: 0.0, precision: 2, text_height: 1.0 },
    )
    .expect("dim");
    d.delete_entity(&c).expect("delete");
    let svg = d.resolve().to_svg(&SvgOptions::default());
    check_well_formed(&svg);
    assert!(!svg.contains("class=\"dimension\""));
}
