//! SVG export of a resolved drawing.
//!
//! * The y axis is flipped (CAD y points up, SVG y points down): every
//!   coordinate is written as `(x, -y)`, so text stays upright.
//! * The `viewBox` is fitted to the extents of what is drawn, plus a margin.
//! * Colours, line types and line weights come from the entity, else its
//!   layer. Line weights are plotted widths: a weight of `w` mm is drawn
//!   `w × px_per_mm` pixels wide at the exported image size (the stroke
//!   width is written in drawing units, so it does not depend on the SVG
//!   renderer supporting `vector-effect`); dash patterns likewise.
//! * Hidden layers are not drawn; neither are block members outside an
//!   insert, nor entities whose references are broken beyond drawing (a
//!   dimension without measurement, an insert of a missing block). An
//!   entity on a deleted layer is drawn in black, continuous, 0.25 mm.
//! * Arcs, bulged polyline segments and elliptical arcs are SVG arc
//!   commands (`A`). Splines are polylines through
//!   [`SvgOptions::spline_segments`] evaluated points per knot span.
//! * Block inserts are `<g transform="matrix(...)">` groups holding the
//!   block's entities; recursion stops at a block already being drawn, and
//!   drawing stops after [`SvgOptions::max_elements`] entities.
//! * Text is XML-escaped; characters XML 1.0 forbids become U+FFFD.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::geom::{self, Affine, Bounds, readable};
use crate::model::{Color, Fill, Geometry, LineType, Point};
use crate::resolve::{Entity, Layer, ResolvedDoc};

/// How to draw a [`ResolvedDoc`] as SVG.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SvgOptions {
    /// Width of the image in pixels (the height follows the aspect ratio).
    pub width_px: f64,
    /// Margin around the extents, as a fraction of the larger extent.
    pub margin: f64,
    /// Background colour; transparent when `None`.
    pub background: Option<Color>,
    /// Pixels per millimetre of line weight.
    pub px_per_mm: f64,
    /// Thinnest stroke drawn, pixels (a line weight of 0 is a hairline).
    pub min_stroke_px: f64,
    /// Points per knot span when drawing splines.
    pub spline_segments: usize,
    /// Most entities drawn (inserts count every entity they draw), so that
    /// deeply nested inserts cannot blow up the output.
    pub max_elements: usize,
}

impl Default for SvgOptions {
    fn default() -> Self {
        SvgOptions {
            width_px: 1024.0,
            margin: 0.05,
            background: Some(Color::rgb(255, 255, 255)),
            px_per_mm: 96.0 / 25.4,
            min_stroke_px: 0.5,
            spline_segments: 16,
            max_elements: 1_000_000,
        }
    }
}

/// Formats a coordinate compactly and deterministically.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "0".into();
    }
    let mut s = format!("{v:.6}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

/// `(x, -y)` as `"x y"`.
fn pt(p: Point) -> String {
    format!("{} {}", num(p[0]), num(-p[1]))
}

/// Escapes text for XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || matches!(c, '\u{FFFE}' | '\u{FFFF}') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Where and how a text is placed.
struct TextAt {
    p: Point,
    height: f64,
    rotation: f64,
    middle: bool,
}

struct Style {
    color: String,
    width_px: f64,
    dash: &'static [f64],
}

struct Renderer<'a> {
    opts: &'a SvgOptions,
    layers: HashMap<&'a str, &'a Layer>,
    blocks: HashMap<&'a str, (Point, Vec<&'a Entity>)>,
    out: String,
    bounds: Bounds,
    transform: Affine,
    stack: Vec<&'a str>,
    patterns: usize,
    /// Drawing units per output pixel (at the top level).
    units_per_px: f64,
    /// Entities drawn so far.
    drawn: usize,
}

impl<'a> Renderer<'a> {
    fn new(doc: &'a ResolvedDoc, opts: &'a SvgOptions, units_per_px: f64) -> Renderer<'a> {
        let layers = doc.layers.iter().map(|l| (l.id.as_str(), l)).collect();
        let blocks = doc.block_members();
        Renderer {
            opts,
            layers,
            blocks,
            out: String::new(),
            bounds: Bounds::empty(),
            transform: Affine::IDENTITY,
            stack: Vec::new(),
            patterns: 0,
            units_per_px,
            drawn: 0,
        }
    }

    fn visible(&self, e: &Entity) -> bool {
        self.layers.get(e.layer.as_str()).is_none_or(|l| l.visible)
    }

    fn style(&self, e: &Entity) -> Style {
        let layer = self.layers.get(e.layer.as_str());
        let color = e.color.clone().or_else(|| layer.map(|l| l.color.clone())).unwrap_or_else(Color::black);
        let lt = e.line_type.or(layer.map(|l| l.line_type)).unwrap_or(LineType::Continuous);
        let lw = e.line_weight.or(layer.map(|l| l.line_weight)).unwrap_or(0.25);
        Style {
            color: color.as_str().to_owned(),
            width_px: (lw * self.opts.px_per_mm).max(self.opts.min_stroke_px),
            dash: lt.dash_px(),
        }
    }

    fn see(&mut self, p: Point) {
        let q = self.transform.apply(p);
        self.bounds.add(q);
    }

    fn see_all(&mut self, ps: &[Point]) {
        for p in ps {
            self.see(*p);
        }
    }

    fn see_arc(&mut self, c: Point, r: f64, start: f64, sweep: f64) {
        let n = 32;
        for i in 0..=n {
            let a = start + sweep * f64::from(i) / f64::from(n);
            self.see(geom::polar(c, r, a));
        }
    }

    /// Pixels to local drawing units (undoing the scale of enclosing inserts).
    fn px(&self, v: f64) -> f64 {
        let t = &self.transform;
        let det = (t.a * t.d - t.b * t.c).abs().sqrt();
        let det = if det > 1e-12 { det } else { 1.0 };
        v * self.units_per_px / det
    }

    fn stroke_attrs(&self, e: &Entity, s: &Style) -> String {
        let mut a = format!(
            "data-id=\"{}\" data-layer=\"{}\" stroke=\"{}\" stroke-width=\"{}\"",
            xml_escape(&e.id),
            xml_escape(&e.layer),
            s.color,
            num(self.px(s.width_px))
        );
        if !s.dash.is_empty() {
            let d: Vec<String> = s.dash.iter().map(|v| num(self.px(*v))).collect();
            let _ = write!(a, " stroke-dasharray=\"{}\"", d.join(" "));
        }
        a
    }

    fn path(&mut self, e: &Entity, s: &Style, d: &str) {
        let attrs = self.stroke_attrs(e, s);
        let _ = writeln!(self.out, "<path {attrs} d=\"{d}\"/>");
    }

    /// `A` command for a circular arc from angle `start` sweeping `sweep`
    /// degrees (positive: counter-clockwise in CAD, i.e. sweep-flag 0 after
    /// the y flip). Full turns are split in two.
    fn arc_cmd(c: Point, r: f64, start: f64, sweep: f64) -> String {
        let mut d = String::new();
        let parts = if sweep.abs() >= 359.999 { 2 } else { 1 };
        for i in 1..=parts {
            let end = start + sweep * f64::from(i) / f64::from(parts);
            let part = sweep / f64::from(parts);
            let large = u8::from(part.abs() > 180.0);
            let flag = u8::from(part < 0.0);
            let _ = write!(d, " A {} {} 0 {large} {flag} {}", num(r), num(r), pt(geom::polar(c, r, end)));
        }
        d
    }

    fn text_el(&mut self, color: &str, id: &str, at: TextAt, content: &str) {
        let TextAt { p, height, rotation, middle } = at;
        let anchor = if middle { "middle" } else { "start" };
        let dir = geom::polar([0.0, 0.0], 1.0, rotation);
        let up = geom::perp(dir);
        let lines: Vec<&str> = content.split('\n').collect();
        let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64 * 0.6 * height;
        let (x0, x1) = if middle { (-width / 2.0, width / 2.0) } else { (0.0, width) };
        let depth = (lines.len() as f64 - 1.0) * 1.2 * height;
        for (dx, dy) in [(x0, height), (x1, height), (x0, -depth), (x1, -depth)] {
            self.see(geom::add(p, geom::add(geom::scale(dir, dx), geom::scale(up, dy))));
        }
        let _ = write!(
            self.out,
            "<text data-id=\"{}\" x=\"{}\" y=\"{}\" font-size=\"{}\" font-family=\"sans-serif\" fill=\"{color}\" stroke=\"none\" text-anchor=\"{anchor}\"",
            xml_escape(id),
            num(p[0]),
            num(-p[1]),
            num(height)
        );
        if rotation.rem_euclid(360.0).abs() > 1e-9 {
            let _ = write!(self.out, " transform=\"rotate({} {} {})\"", num(-rotation), num(p[0]), num(-p[1]));
        }
        self.out.push('>');
        if lines.len() == 1 {
            self.out.push_str(&xml_escape(content));
        } else {
            for (i, l) in lines.iter().enumerate() {
                let dy = if i == 0 { "0".to_owned() } else { num(1.2 * height) };
                let _ = write!(self.out, "<tspan x=\"{}\" dy=\"{dy}\">{}</tspan>", num(p[0]), xml_escape(l));
            }
        }
        self.out.push_str("</text>\n");
    }

    /// A filled arrowhead with its tip at `tip`, pointing along `dir`.
    fn arrow(&mut self, s: &Style, tip: Point, dir: Point, size: f64) {
        let dir = geom::normalize(dir);
        let back = geom::sub(tip, geom::scale(dir, size));
        let side = geom::scale(geom::perp(dir), size / 3.0);
        let a = geom::add(back, side);
        let b = geom::sub(back, side);
        self.see_all(&[tip, a, b]);
        let _ = writeln!(
            self.out,
            "<path class=\"arrow\" d=\"M {} L {} L {} Z\" fill=\"{}\" stroke=\"none\"/>",
            pt(tip),
            pt(a),
            pt(b),
            s.color
        );
    }

    fn entity(&mut self, e: &'a Entity) {
        if !self.visible(e) || self.drawn >= self.opts.max_elements {
            return;
        }
        self.drawn += 1;
        let s = self.style(e);
        match &e.geometry {
            Geometry::Line { from, to } => {
                self.see_all(&[*from, *to]);
                self.path(e, &s, &format!("M {} L {}", pt(*from), pt(*to)));
            }
            Geometry::Polyline { vertices, closed } => {
                let n = vertices.len();
                let mut d = format!("M {}", pt(vertices[0].point()));
                let segs = if *closed { n } else { n - 1 };
                for i in 0..segs {
                    let v0 = vertices[i];
                    let p1 = vertices[(i + 1) % n].point();
                    self.see(v0.point());
                    match geom::bulge_arc(v0.point(), p1, v0.bulge) {
                        Some((c, r, start, sweep)) => {
                            self.see_arc(c, r, start, sweep);
                            let large = u8::from(sweep.abs() > 180.0);
                            let flag = u8::from(sweep < 0.0);
                            let _ = write!(d, " A {} {} 0 {large} {flag} {}", num(r), num(r), pt(p1));
                        }
                        None => {
                            let _ = write!(d, " L {}", pt(p1));
                        }
                    }
                }
                self.see(vertices[n - 1].point());
                if *closed {
                    d.push_str(" Z");
                }
                self.path(e, &s, &d);
            }
            Geometry::Circle { center, radius } => {
                self.see_arc(*center, *radius, 0.0, 360.0);
                let attrs = self.stroke_attrs(e, &s);
                let _ = writeln!(
                    self.out,
                    "<circle {attrs} cx=\"{}\" cy=\"{}\" r=\"{}\"/>",
                    num(center[0]),
                    num(-center[1]),
                    num(*radius)
                );
            }
            Geometry::Arc { center, radius, start_angle, end_angle } => {
                let sweep = geom::ccw_sweep(*start_angle, *end_angle);
                self.see_arc(*center, *radius, *start_angle, sweep);
                let d = format!(
                    "M {}{}",
                    pt(geom::polar(*center, *radius, *start_angle)),
                    Self::arc_cmd(*center, *radius, *start_angle, sweep)
                );
                self.path(e, &s, &d);
            }
            Geometry::Ellipse { center, major_axis, ratio, start_param, end_param } => {
                let rx = geom::len(*major_axis);
                let ry = rx * ratio;
                let rot = major_axis[1].atan2(major_axis[0]).to_degrees();
                let sweep = geom::ccw_sweep(*start_param, *end_param);
                for i in 0..=32 {
                    let t = start_param + sweep * f64::from(i) / 32.0;
                    self.see(geom::ellipse_point(*center, *major_axis, *ratio, t));
                }
                let attrs = self.stroke_attrs(e, &s);
                if sweep >= 359.999 {
                    let _ = writeln!(
                        self.out,
                        "<ellipse {attrs} cx=\"{}\" cy=\"{}\" rx=\"{}\" ry=\"{}\" transform=\"rotate({} {} {})\"/>",
                        num(center[0]),
                        num(-center[1]),
                        num(rx),
                        num(ry),
                        num(-rot),
                        num(center[0]),
                        num(-center[1])
                    );
                } else {
                    let p0 = geom::ellipse_point(*center, *major_axis, *ratio, *start_param);
                    let p1 = geom::ellipse_point(*center, *major_axis, *ratio, start_param + sweep);
                    let large = u8::from(sweep > 180.0);
                    let d = format!("M {} A {} {} {} {large} 0 {}", pt(p0), num(rx), num(ry), num(-rot), pt(p1));
                    self.path(e, &s, &d);
                }
            }
            Geometry::Spline { control_points, degree } => {
                let samples = geom::bspline_samples(control_points, *degree, self.opts.spline_segments);
                self.see_all(&samples);
                let mut d = String::new();
                for (i, p) in samples.iter().enumerate() {
                    let _ = write!(d, "{}{}", if i == 0 { "M " } else { " L " }, pt(*p));
                }
                self.path(e, &s, &d);
            }
            Geometry::Text { position, height, rotation, content } => {
                self.text_el(
                    &s.color,
                    &e.id,
                    TextAt { p: *position, height: *height, rotation: *rotation, middle: false },
                    content,
                );
            }
            Geometry::LinearDim { .. } | Geometry::AlignedDim { .. } => self.linear_dim(e, &s),
            Geometry::RadialDim { text_height, .. } => {
                let Some(m) = &e.measurement else { return };
                let (c, p) = (m.points[0], m.points[1]);
                self.see_all(&[c, p]);
                let _ = writeln!(self.out, "<g class=\"dimension\" data-id=\"{}\">", xml_escape(&e.id));
                self.path(e, &s, &format!("M {} L {}", pt(c), pt(p)));
                self.arrow(&s, p, geom::sub(p, c), *text_height);
                let dir = geom::sub(p, c);
                let mid = geom::lerp(c, p, 0.5);
                let label_at = geom::add(mid, geom::scale(geom::perp(geom::normalize(dir)), text_height * 0.4));
                let ang = readable(dir[1].atan2(dir[0]).to_degrees());
                self.text_el(
                    &s.color,
                    &e.id,
                    TextAt { p: label_at, height: *text_height, rotation: ang, middle: true },
                    &m.text,
                );
                self.out.push_str("</g>\n");
            }
            Geometry::AngularDim { radius, text_height, .. } => {
                let Some(m) = &e.measurement else { return };
                let (v, a, b) = (m.points[0], m.points[1], m.points[2]);
                let da = geom::sub(a, v);
                let a1 = da[1].atan2(da[0]).to_degrees();
                let sweep = m.value.max(1e-6);
                let p1 = geom::polar(v, *radius, a1);
                let p2 = geom::polar(v, *radius, a1 + sweep);
                self.see_arc(v, *radius, a1, sweep);
                let _ = writeln!(self.out, "<g class=\"dimension\" data-id=\"{}\">", xml_escape(&e.id));
                // Extension lines from the legs' points out to the arc.
                for (leg, on_arc) in [(a, p1), (b, p2)] {
                    if geom::len(geom::sub(leg, v)) < *radius {
                        self.see(leg);
                        self.path(e, &s, &format!("M {} L {}", pt(leg), pt(on_arc)));
                    }
                }
                self.path(e, &s, &format!("M {}{}", pt(p1), Self::arc_cmd(v, *radius, a1, sweep)));
                // Arrows tangent to the arc, pointing outwards along it.
                self.arrow(&s, p1, geom::polar([0.0, 0.0], 1.0, a1 - 90.0), *text_height);
                self.arrow(&s, p2, geom::polar([0.0, 0.0], 1.0, a1 + sweep + 90.0), *text_height);
                let mid_ang = a1 + sweep / 2.0;
                let label_at = geom::polar(v, radius + text_height * 0.4, mid_ang);
                let rotation = readable(mid_ang - 90.0);
                self.text_el(
                    &s.color,
                    &e.id,
                    TextAt { p: label_at, height: *text_height, rotation, middle: true },
                    &m.text,
                );
                self.out.push_str("</g>\n");
            }
            Geometry::Hatch { loops, fill } => {
                let mut d = String::new();
                for l in loops {
                    self.see_all(l);
                    for (i, p) in l.iter().enumerate() {
                        let _ = write!(d, "{}{}", if i == 0 { " M " } else { " L " }, pt(*p));
                    }
                    d.push_str(" Z");
                }
                let fill_attr = match fill {
                    Fill::Solid => s.color.clone(),
                    Fill::Pattern { scale, angle, .. } => {
                        self.patterns += 1;
                        let pid = format!("hatch-{}", self.patterns);
                        let _ = writeln!(
                            self.out,
                            "<defs><pattern id=\"{pid}\" patternUnits=\"userSpaceOnUse\" width=\"{w}\" height=\"{w}\" patternTransform=\"rotate({})\"><path d=\"M 0 0 H {w}\" stroke=\"{}\" stroke-width=\"{}\"/></pattern></defs>",
                            num(-angle),
                            s.color,
                            num(self.px(s.width_px)),
                            w = num(*scale)
                        );
                        format!("url(#{pid})")
                    }
                };
                let _ = writeln!(
                    self.out,
                    "<path class=\"hatch\" data-id=\"{}\" data-layer=\"{}\" d=\"{}\" fill=\"{fill_attr}\" fill-rule=\"evenodd\" stroke=\"none\"/>",
                    xml_escape(&e.id),
                    xml_escape(&e.layer),
                    d.trim_start()
                );
            }
            Geometry::Insert { block, position, rotation, scale } => {
                let Some((base, members)) = self.blocks.get(block.as_str()).cloned() else {
                    return;
                };
                if self.stack.contains(&block.as_str()) || self.stack.len() >= 32 {
                    return;
                }
                let m = Affine::insert(*position, *rotation, *scale, base);
                // In flipped coordinates the map is F·M·F with F = diag(1, -1).
                let _ = writeln!(
                    self.out,
                    "<g class=\"insert\" data-id=\"{}\" data-block=\"{}\" transform=\"matrix({} {} {} {} {} {})\">",
                    xml_escape(&e.id),
                    xml_escape(block),
                    num(m.a),
                    num(-m.b),
                    num(-m.c),
                    num(m.d),
                    num(m.e),
                    num(-m.f)
                );
                let saved = self.transform;
                self.transform = saved.then_inner(&m);
                self.stack.push(block.as_str());
                for member in members {
                    self.entity(member);
                }
                self.stack.pop();
                self.transform = saved;
                self.out.push_str("</g>\n");
            }
        }
    }

    fn linear_dim(&mut self, e: &Entity, s: &Style) {
        let Some(m) = &e.measurement else { return };
        let (p1, p2) = (m.points[0], m.points[1]);
        let (dir, offset, th) = match &e.geometry {
            Geometry::LinearDim { angle, offset, text_height, .. } => {
                (geom::polar([0.0, 0.0], 1.0, *angle), *offset, *text_height)
            }
            Geometry::AlignedDim { offset, text_height, .. } => {
                (geom::normalize(geom::sub(p2, p1)), *offset, *text_height)
            }
            _ => return,
        };
        let n = geom::perp(dir);
        let c = geom::dot(p1, n) + offset;
        let q1 = geom::add(p1, geom::scale(n, c - geom::dot(p1, n)));
        let q2 = geom::add(p2, geom::scale(n, c - geom::dot(p2, n)));
        self.see_all(&[p1, p2, q1, q2]);
        let _ = writeln!(self.out, "<g class=\"dimension\" data-id=\"{}\">", xml_escape(&e.id));
        // Extension lines, a little past the dimension line.
        for (p, q) in [(p1, q1), (p2, q2)] {
            let out_dir = geom::normalize(geom::sub(q, p));
            let past = if geom::len(geom::sub(q, p)) > 0.0 { geom::add(q, geom::scale(out_dir, th * 0.5)) } else { q };
            self.see(past);
            self.path(e, s, &format!("M {} L {}", pt(p), pt(past)));
        }
        self.path(e, s, &format!("M {} L {}", pt(q1), pt(q2)));
        let along = geom::sub(q2, q1);
        if geom::len(along) > 0.0 {
            self.arrow(s, q1, geom::scale(along, -1.0), th);
            self.arrow(s, q2, along, th);
        }
        let label_at = geom::add(geom::lerp(q1, q2, 0.5), geom::scale(n, th * 0.4));
        let ang = readable(dir[1].atan2(dir[0]).to_degrees());
        self.text_el(&s.color, &e.id, TextAt { p: label_at, height: th, rotation: ang, middle: true }, &m.text);
        self.out.push_str("</g>\n");
    }
}

impl ResolvedDoc {
    /// Draws the model space (entities without an owner block, and inserts)
    /// as a standalone SVG document. See the [`svg`](crate::svg) module docs.
    pub fn to_svg(&self, opts: &SvgOptions) -> String {
        let draw = |units_per_px: f64| {
            let mut r = Renderer::new(self, opts, units_per_px);
            for e in &self.entities {
                if e.owner.is_none() {
                    r.entity(e);
                }
            }
            r
        };
        // First pass for the extents, second pass with stroke widths in
        // drawing units for the final scale.
        let probe = draw(1.0);
        let b = if probe.bounds.is_empty() { Bounds { min: [0.0, 0.0], max: [100.0, 100.0] } } else { probe.bounds };
        let w0 = (b.max[0] - b.min[0]).max(1e-9);
        let h0 = (b.max[1] - b.min[1]).max(1e-9);
        let m = w0.max(h0) * opts.margin.max(0.0);
        let (x, y, w, h) = (b.min[0] - m, -(b.max[1] + m), w0 + 2.0 * m, h0 + 2.0 * m);
        let width = if opts.width_px.is_finite() && opts.width_px > 0.0 { opts.width_px } else { 1024.0 };
        let height = width * h / w;
        let r = draw(w / width);
        let mut out = String::with_capacity(r.out.len() + 512);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" viewBox=\"{} {} {} {}\" width=\"{}\" height=\"{}\">",
            num(x),
            num(y),
            num(w),
            num(h),
            num(width),
            num(height)
        );
        let _ = writeln!(out, "<title>{}</title>", xml_escape(&self.meta.name));
        if let Some(bg) = &opts.background {
            let _ = writeln!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>",
                num(x),
                num(y),
                num(w),
                num(h),
                bg
            );
        }
        out.push_str("<g id=\"drawing\" fill=\"none\" stroke-linecap=\"round\" stroke-linejoin=\"round\">\n");
        out.push_str(&r.out);
        out.push_str("</g>\n</svg>\n");
        out
    }
}
