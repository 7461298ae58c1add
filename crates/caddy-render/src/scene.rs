//! From a [`ResolvedDoc`] to pixel-space primitives: which entities are
//! drawn, in which order, with which colour and width, and the geometry of
//! every kind, mirroring caddy-doc's SVG export (`svg.rs`).
//!
//! A [`Walker`] visits the model space in draw order and hands
//! [`Sink`] polylines and even-odd fills whose points are already mapped
//! to pixels (drawing coordinates through the enclosing insert transforms
//! and the view transform, in `f64`). Curves are flattened here with a
//! tolerance in pixels, so an arc is a curve at any zoom; with `coarse` set
//! (the extents pass of a fit view) curves get a fixed 32 segments per turn,
//! like the SVG export's extents.

use std::collections::{HashMap, HashSet};

use caddy_doc::{Entity, Fill, Geometry, Layer, LineType, Problem, ResolvedDoc};

use crate::font;
use crate::geom::{self, Affine, P};

/// Largest distance, in pixels, between a flattened curve and the true one.
pub(crate) const TOLERANCE_PX: f64 = 0.05;
/// Pixels per millimetre of line weight (96 dpi, the SVG export's default).
pub(crate) const PX_PER_MM: f64 = 96.0 / 25.4;
/// Thinnest stroke, pixels (so hairlines and 0 mm weights show).
pub(crate) const MIN_STROKE_PX: f64 = 1.0;
/// Line weight of an entity on a missing layer, mm.
const DEFAULT_WEIGHT_MM: f64 = 0.25;
/// Most segments one flattened arc, circle or ellipse may have.
const MAX_CURVE_SEGMENTS: f64 = 16_384.0;
/// Most points one flattened spline may have.
const MAX_SPLINE_POINTS: usize = 262_144;
/// Most points one flattened polyline may have (past that, bulges are
/// drawn as chords).
const MAX_POLYLINE_POINTS: usize = 1 << 20;
/// Most line-edge intersection tests one pattern hatch may cost.
const MAX_HATCH_WORK: f64 = 2e7;
/// Deepest nesting of block inserts drawn.
pub(crate) const MAX_INSERT_DEPTH: usize = 32;
/// Most entity draws in one render (an insert counts every entity it draws).
pub(crate) const MAX_DRAWS: u64 = 2_000_000;
/// Most problems listed; the rest are counted in one last line.
const MAX_PROBLEMS: usize = 1_000;
/// Most lines one pattern hatch may draw before it is shown as a tinted fill.
const MAX_HATCH_LINES: f64 = 20_000.0;
/// Closest spacing of pattern lines, pixels, before the hatch is shown as a
/// tinted fill.
const MIN_HATCH_SPACING_PX: f64 = 2.0;
/// Alpha of the tinted fill that stands in for a too-dense pattern.
const DENSE_PATTERN_ALPHA: u8 = 96;
/// Line spacing of text, in text heights (the SVG export's `dy`).
const LINE_SPACING: f64 = 1.2;

/// How a polyline is stroked, in pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Pen {
    /// RGBA colour.
    pub color: [u8; 4],
    /// Stroke width, pixels.
    pub width: f64,
    /// Dash pattern (on, off, …), pixels; empty for continuous.
    pub dash: &'static [f64],
}

/// Receives pixel-space primitives in painter's order.
pub(crate) trait Sink {
    /// Whether anything inside the pixel box `[min, max]` could be visible
    /// (lets the walker skip work on what is off screen).
    fn wants(&self, min: P, max: P) -> bool;
    /// A polyline (closed: the last point joins the first).
    fn polyline(&mut self, pts: &[P], closed: bool, pen: &Pen);
    /// A region filled with the even-odd rule.
    fn fill(&mut self, loops: &[Vec<P>], color: [u8; 4]);
}

/// Collects the extents of everything emitted.
pub(crate) struct BoundsSink(pub geom::Bounds);

impl Sink for BoundsSink {
    fn wants(&self, _: P, _: P) -> bool {
        true
    }
    fn polyline(&mut self, pts: &[P], _: bool, _: &Pen) {
        pts.iter().for_each(|p| self.0.add(*p));
    }
    fn fill(&mut self, loops: &[Vec<P>], _: [u8; 4]) {
        loops.iter().flatten().for_each(|p| self.0.add(*p));
    }
}

/// A finite number above zero.
fn positive(v: f64) -> bool {
    v > 0.0 && v.is_finite()
}

/// `#rrggbb` to opaque RGBA; black if malformed.
pub(crate) fn parse_color(s: &str) -> [u8; 4] {
    let hex = s.strip_prefix('#').unwrap_or("");
    let byte = |i: usize| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok());
    match (hex.len(), byte(0), byte(2), byte(4)) {
        (6, Some(r), Some(g), Some(b)) => [r, g, b, 255],
        _ => [0, 0, 0, 255],
    }
}

/// Describes a document-level problem in one line.
pub(crate) fn describe(p: &Problem) -> String {
    match p {
        Problem::BrokenReference { from, field, to, reason } => {
            format!("broken reference: {from}.{field} -> {to} ({reason:?})")
        }
        Problem::Malformed { what, id, reason } => format!("malformed {what} {id}: {reason} (not drawn)"),
        Problem::RecursiveBlock { block } => format!("recursive block {block}: drawn up to the repetition"),
        Problem::DuplicateNode { id } => format!("duplicate node id {id}"),
    }
}

/// Problems in first-seen order, without duplicates (an insert drawn many
/// times reports a bad member once), bounded.
#[derive(Default)]
pub(crate) struct Problems {
    list: Vec<String>,
    seen: HashSet<String>,
    dropped: usize,
}

impl Problems {
    pub(crate) fn push(&mut self, p: String) {
        if self.seen.contains(&p) {
            return;
        }
        if self.list.len() >= MAX_PROBLEMS {
            self.dropped += 1;
            return;
        }
        self.seen.insert(p.clone());
        self.list.push(p);
    }

    pub(crate) fn into_vec(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list.push(format!("... and {} more problems", self.dropped));
        }
        self.list
    }
}

/// The parts of a document the walker looks things up in.
pub(crate) struct Scene<'a> {
    layers: HashMap<&'a str, &'a Layer>,
    blocks: HashMap<&'a str, (P, Vec<&'a Entity>)>,
    /// `Some`: exactly these layers are drawn, whatever their visibility.
    only: Option<HashSet<&'a str>>,
    doc: &'a ResolvedDoc,
}

impl<'a> Scene<'a> {
    pub(crate) fn new(doc: &'a ResolvedDoc, only: Option<&'a [String]>) -> Scene<'a> {
        let layers = doc.layers.iter().map(|l| (l.id.as_str(), l)).collect();
        let blocks = doc.block_members();
        let only = only.map(|l| l.iter().map(String::as_str).collect());
        Scene { layers, blocks, only, doc }
    }

    fn visible(&self, e: &Entity) -> bool {
        match &self.only {
            Some(set) => set.contains(e.layer.as_str()),
            None => self.layers.get(e.layer.as_str()).is_none_or(|l| l.visible),
        }
    }

    fn pen(&self, e: &Entity) -> Pen {
        let layer = self.layers.get(e.layer.as_str());
        let color = e.color.as_ref().or(layer.map(|l| &l.color)).map_or([0, 0, 0, 255], |c| parse_color(c.as_str()));
        let lt = e.line_type.or(layer.map(|l| l.line_type)).unwrap_or(LineType::Continuous);
        let lw = e.line_weight.or(layer.map(|l| l.line_weight)).unwrap_or(DEFAULT_WEIGHT_MM);
        let lw = if lw.is_finite() { lw } else { DEFAULT_WEIGHT_MM };
        Pen { color, width: (lw * PX_PER_MM).max(MIN_STROKE_PX), dash: lt.dash_px() }
    }
}

/// Visits entities and emits their primitives.
pub(crate) struct Walker<'s, 'a, S: Sink> {
    scene: &'s Scene<'a>,
    sink: &'s mut S,
    /// Local drawing coordinates to pixels.
    xf: Affine,
    coarse: bool,
    stack: Vec<&'a str>,
    pub(crate) problems: Problems,
    pub(crate) drawn: u64,
    pts: Vec<P>,
    loops: Vec<Vec<P>>,
}

type Drawn = Result<(), String>;

impl<'s, 'a, S: Sink> Walker<'s, 'a, S> {
    pub(crate) fn new(scene: &'s Scene<'a>, sink: &'s mut S, view: Affine, coarse: bool) -> Self {
        Walker {
            scene,
            sink,
            xf: view,
            coarse,
            stack: Vec::new(),
            problems: Problems::default(),
            drawn: 0,
            pts: Vec::new(),
            loops: Vec::new(),
        }
    }

    /// Draws the model space: entities without an owner, in draw order.
    pub(crate) fn model_space(&mut self) {
        let doc = self.scene.doc;
        for e in &doc.entities {
            if e.owner.is_none() {
                self.entity(e);
            }
        }
    }

    fn entity(&mut self, e: &'a Entity) {
        if !self.scene.visible(e) {
            return;
        }
        if self.drawn >= MAX_DRAWS {
            self.problems.push(format!("drawing stopped after {MAX_DRAWS} entities (nested inserts?)"));
            return;
        }
        self.drawn += 1;
        let pen = self.scene.pen(e);
        if let Err(why) = self.geometry(e, &pen) {
            self.drawn -= 1;
            self.problems.push(format!("entity {} ({}) not drawn: {why}", e.id, e.geometry.kind()));
        }
    }

    /// Maps a local point to pixels.
    fn px(&self, p: P) -> Result<P, String> {
        let q = self.xf.apply(p);
        if geom::finite(q) { Ok(q) } else { Err("non-finite coordinates".into()) }
    }

    /// Emits the local points in `self.pts` as a polyline.
    fn flush_pts(&mut self, closed: bool, pen: &Pen) -> Drawn {
        let mut pts = std::mem::take(&mut self.pts);
        let r = (|| {
            for p in pts.iter_mut() {
                *p = self.px(*p)?;
            }
            if pts.len() >= 2 {
                self.sink.polyline(&pts, closed, pen);
            }
            Ok(())
        })();
        pts.clear();
        self.pts = pts;
        r
    }

    fn line(&mut self, a: P, b: P, pen: &Pen) -> Drawn {
        self.pts.clear();
        self.pts.extend([a, b]);
        self.flush_pts(false, pen)
    }

    /// Segments for `sweep` degrees of a curve of (local) radius `r`.
    fn segments(&self, r: f64, sweep: f64) -> usize {
        let turns = sweep.abs() / 360.0;
        if self.coarse {
            return (32.0 * turns).ceil().max(1.0) as usize;
        }
        let r_px = r * self.xf.max_stretch();
        let step = if r_px > TOLERANCE_PX * 2.0 {
            2.0 * (1.0 - TOLERANCE_PX / r_px).acos()
        } else {
            std::f64::consts::FRAC_PI_2
        };
        let n = (turns * std::f64::consts::TAU / step).ceil();
        n.clamp((4.0 * turns).ceil().max(1.0), MAX_CURVE_SEGMENTS) as usize
    }

    /// Whether a local circle's pixel box may be visible.
    fn circle_wanted(&self, c: P, r: f64) -> Result<bool, String> {
        let cp = self.px(c)?;
        let rp = r * self.xf.max_stretch();
        if !rp.is_finite() {
            return Err("non-finite radius".into());
        }
        Ok(self.sink.wants([cp[0] - rp, cp[1] - rp], [cp[0] + rp, cp[1] + rp]))
    }

    /// Appends an arc's points (start included) to `self.pts`.
    fn push_arc(&mut self, c: P, r: f64, start: f64, sweep: f64) {
        let n = self.segments(r, sweep);
        self.pts.reserve(n + 1);
        for i in 0..=n {
            self.pts.push(geom::polar(c, r, start + sweep * i as f64 / n as f64));
        }
    }

    fn arrow(&mut self, tip: P, dir: P, size: f64, color: [u8; 4]) -> Drawn {
        let dir = geom::normalize(dir);
        let back = geom::sub(tip, geom::scale(dir, size));
        let side = geom::scale(geom::perp(dir), size / 3.0);
        let tri = vec![self.px(tip)?, self.px(geom::add(back, side))?, self.px(geom::sub(back, side))?];
        self.loops.clear();
        self.loops.push(tri);
        let loops = std::mem::take(&mut self.loops);
        self.sink.fill(&loops, color);
        self.loops = loops;
        Ok(())
    }

    /// Text in the built-in font: `p` is the left (or, `middle`, centre)
    /// end of the first line's baseline; further lines go down by 1.2
    /// heights, like the SVG export's `tspan`s.
    fn text(&mut self, p: P, height: f64, rotation: f64, middle: bool, content: &str, pen: &Pen) -> Drawn {
        if !(height > 0.0 && height.is_finite() && rotation.is_finite()) {
            return Err(format!("text height {height} / rotation {rotation} is not drawable"));
        }
        let dir = geom::polar([0.0, 0.0], 1.0, rotation);
        let up = geom::perp(dir);
        let unit = height / font::CAP;
        let height_px = height * self.xf.max_stretch();
        // A single-stroke font needs some weight to read at large sizes.
        let tpen = Pen { width: pen.width.max(height_px / 12.0), dash: &[], ..*pen };
        for (line_no, line) in content.split('\n').enumerate() {
            let n = line.chars().count() as f64;
            let x0 = if middle { -(n * font::ADVANCE - (font::ADVANCE - font::INK)) / 2.0 } else { 0.0 };
            let base = geom::sub(p, geom::scale(up, line_no as f64 * LINE_SPACING * height));
            let at =
                |gx: f64, gy: f64| geom::add(base, geom::add(geom::scale(dir, gx * unit), geom::scale(up, gy * unit)));
            // Skip whole lines off screen.
            if !self.coarse
                && !self.box_wanted(&[
                    at(x0, -4.0),
                    at(x0 + n * font::ADVANCE, -4.0),
                    at(x0, font::CAP),
                    at(x0 + n * font::ADVANCE, font::CAP),
                ])?
            {
                continue;
            }
            for (k, ch) in line.chars().enumerate() {
                let Some(glyph) = font::glyph(ch) else { continue };
                let gx0 = x0 + k as f64 * font::ADVANCE;
                if !self.coarse
                    && !self.box_wanted(&[
                        at(gx0, -4.0),
                        at(gx0 + font::INK, -4.0),
                        at(gx0, font::CAP),
                        at(gx0 + font::INK, font::CAP),
                    ])?
                {
                    continue;
                }
                for stroke in glyph {
                    self.pts.clear();
                    self.pts.extend(stroke.iter().map(|g| at(gx0 + g[0], g[1])));
                    if self.pts.len() == 1 {
                        let q = self.pts[0];
                        self.pts.push(q);
                    }
                    self.flush_pts(false, &tpen)?;
                }
            }
        }
        Ok(())
    }

    /// Whether the pixel box of local points may be visible.
    fn box_wanted(&self, pts: &[P]) -> Result<bool, String> {
        let mut b = geom::Bounds::empty();
        for p in pts {
            b.add(self.px(*p)?);
        }
        Ok(!b.is_empty() && self.sink.wants(b.min, b.max))
    }

    fn geometry(&mut self, e: &'a Entity, pen: &Pen) -> Drawn {
        match &e.geometry {
            Geometry::Line { from, to } => self.line(*from, *to, pen),
            Geometry::Polyline { vertices, closed } => {
                let n = vertices.len();
                if n < 2 {
                    return Err("a polyline needs at least 2 vertices".into());
                }
                self.pts.clear();
                self.pts.push(vertices[0].point());
                let segs = if *closed { n } else { n - 1 };
                for i in 0..segs {
                    let v0 = vertices[i];
                    let p1 = vertices[(i + 1) % n].point();
                    match geom::bulge_arc(v0.point(), p1, v0.bulge) {
                        Some((c, r, start, sweep)) => {
                            let budget = MAX_POLYLINE_POINTS.saturating_sub(self.pts.len() + n);
                            let k = self.segments(r, sweep).min(budget.max(1));
                            for j in 1..k {
                                self.pts.push(geom::polar(c, r, start + sweep * j as f64 / k as f64));
                            }
                            if !*closed || i + 1 < n {
                                self.pts.push(p1);
                            }
                        }
                        None if !*closed || i + 1 < n => self.pts.push(p1),
                        None => {}
                    }
                }
                self.flush_pts(*closed, pen)
            }
            Geometry::Circle { center, radius } => {
                if !positive(*radius) {
                    return Err(format!("radius {radius} is not positive"));
                }
                if !self.circle_wanted(*center, *radius)? {
                    return Ok(());
                }
                self.pts.clear();
                self.push_arc(*center, *radius, 0.0, 360.0);
                self.pts.pop();
                self.flush_pts(true, pen)
            }
            Geometry::Arc { center, radius, start_angle, end_angle } => {
                if !(positive(*radius) && start_angle.is_finite() && end_angle.is_finite()) {
                    return Err("degenerate arc".into());
                }
                if !self.circle_wanted(*center, *radius)? {
                    return Ok(());
                }
                self.pts.clear();
                self.push_arc(*center, *radius, *start_angle, geom::ccw_sweep(*start_angle, *end_angle));
                self.flush_pts(false, pen)
            }
            Geometry::Ellipse { center, major_axis, ratio, start_param, end_param } => {
                let rx = geom::len(*major_axis);
                if !(positive(rx)
                    && positive(*ratio)
                    && *ratio <= 1.0
                    && start_param.is_finite()
                    && end_param.is_finite())
                {
                    return Err("degenerate ellipse".into());
                }
                if !self.circle_wanted(*center, rx)? {
                    return Ok(());
                }
                let sweep = geom::ccw_sweep(*start_param, *end_param);
                let full = sweep >= 359.999;
                let n = self.segments(rx, sweep);
                self.pts.clear();
                let last = if full { n - 1 } else { n };
                for i in 0..=last {
                    let t = start_param + sweep * i as f64 / n as f64;
                    self.pts.push(geom::ellipse_point(*center, *major_axis, *ratio, t));
                }
                self.flush_pts(full, pen)
            }
            Geometry::Spline { control_points, degree } => {
                if *degree > caddy_doc::MAX_SPLINE_DEGREE {
                    return Err(format!("degree {degree} is above {}", caddy_doc::MAX_SPLINE_DEGREE));
                }
                if control_points.len() < 2 || *degree == 0 {
                    return Err("a spline needs at least 2 control points and degree 1 or more".into());
                }
                let spans = control_points.len() - (*degree as usize).clamp(1, control_points.len() - 1);
                let per_span = if self.coarse {
                    16
                } else {
                    // Enough samples that a span's chords stay short in pixels.
                    let poly_px: f64 = control_points
                        .windows(2)
                        .map(|w| geom::len(geom::sub(self.xf.apply(w[1]), self.xf.apply(w[0]))))
                        .sum();
                    let want = (poly_px / spans as f64 / 2.0).ceil();
                    let want = if want.is_finite() { want.clamp(16.0, 256.0) as usize } else { 16 };
                    want.min((MAX_SPLINE_POINTS / spans).max(1))
                };
                self.pts = geom::bspline_samples(control_points, *degree, per_span);
                self.flush_pts(false, pen)
            }
            Geometry::Text { position, height, rotation, content } => {
                self.text(*position, *height, *rotation, false, content, pen)
            }
            Geometry::LinearDim { .. } | Geometry::AlignedDim { .. } => self.linear_dim(e, pen),
            Geometry::RadialDim { text_height, .. } => {
                let m = e.measurement.as_ref().ok_or("no measurement (broken reference)")?;
                let [c, p] = m.points[..] else { return Err("malformed measurement".into()) };
                let th = *text_height;
                self.line(c, p, pen)?;
                let dir = geom::sub(p, c);
                self.arrow(p, dir, th, pen.color)?;
                let label_at =
                    geom::add(geom::lerp(c, p, 0.5), geom::scale(geom::perp(geom::normalize(dir)), th * 0.4));
                let ang = geom::readable(dir[1].atan2(dir[0]).to_degrees());
                self.text(label_at, th, ang, true, &m.text, pen)
            }
            Geometry::AngularDim { radius, text_height, .. } => {
                let m = e.measurement.as_ref().ok_or("no measurement (broken reference)")?;
                let [v, a, b] = m.points[..] else { return Err("malformed measurement".into()) };
                let (radius, th) = (*radius, *text_height);
                if !positive(radius) {
                    return Err("degenerate angular dimension".into());
                }
                let da = geom::sub(a, v);
                let a1 = da[1].atan2(da[0]).to_degrees();
                let sweep = m.value.max(1e-6);
                let p1 = geom::polar(v, radius, a1);
                let p2 = geom::polar(v, radius, a1 + sweep);
                for (leg, on_arc) in [(a, p1), (b, p2)] {
                    if geom::len(geom::sub(leg, v)) < radius {
                        self.line(leg, on_arc, pen)?;
                    }
                }
                self.pts.clear();
                self.push_arc(v, radius, a1, sweep);
                self.flush_pts(false, pen)?;
                self.arrow(p1, geom::polar([0.0, 0.0], 1.0, a1 - 90.0), th, pen.color)?;
                self.arrow(p2, geom::polar([0.0, 0.0], 1.0, a1 + sweep + 90.0), th, pen.color)?;
                let mid = a1 + sweep / 2.0;
                self.text(geom::polar(v, radius + th * 0.4, mid), th, geom::readable(mid - 90.0), true, &m.text, pen)
            }
            Geometry::Hatch { loops, fill } => self.hatch(loops, fill, pen),
            Geometry::Insert { block, position, rotation, scale } => {
                let scene = self.scene;
                let Some((base, members)) = scene.blocks.get(block.as_str()) else {
                    return Err(format!("block {block} does not exist"));
                };
                if self.stack.contains(&block.as_str()) {
                    return Err(format!("block {block} contains itself; drawn up to the repetition"));
                }
                if self.stack.len() >= MAX_INSERT_DEPTH {
                    return Err(format!("inserts nested deeper than {MAX_INSERT_DEPTH}"));
                }
                let m = Affine::insert(*position, *rotation, *scale, *base);
                if !m.is_finite() {
                    return Err("non-finite insert transform".into());
                }
                let saved = self.xf;
                self.xf = saved.then_inner(&m);
                self.stack.push(block.as_str());
                for member in members {
                    self.entity(member);
                }
                self.stack.pop();
                self.xf = saved;
                Ok(())
            }
        }
    }

    fn linear_dim(&mut self, e: &Entity, pen: &Pen) -> Drawn {
        let m = e.measurement.as_ref().ok_or("no measurement (broken reference)")?;
        let [p1, p2] = m.points[..] else { return Err("malformed measurement".into()) };
        let (dir, offset, th) = match &e.geometry {
            Geometry::LinearDim { angle, offset, text_height, .. } => {
                (geom::polar([0.0, 0.0], 1.0, *angle), *offset, *text_height)
            }
            Geometry::AlignedDim { offset, text_height, .. } => {
                (geom::normalize(geom::sub(p2, p1)), *offset, *text_height)
            }
            _ => return Ok(()),
        };
        let n = geom::perp(dir);
        let c = geom::dot(p1, n) + offset;
        let q1 = geom::add(p1, geom::scale(n, c - geom::dot(p1, n)));
        let q2 = geom::add(p2, geom::scale(n, c - geom::dot(p2, n)));
        // Extension lines, a little past the dimension line.
        for (p, q) in [(p1, q1), (p2, q2)] {
            let out = geom::sub(q, p);
            let past = if geom::len(out) > 0.0 { geom::add(q, geom::scale(geom::normalize(out), th * 0.5)) } else { q };
            self.line(p, past, pen)?;
        }
        self.line(q1, q2, pen)?;
        let along = geom::sub(q2, q1);
        if geom::len(along) > 0.0 {
            self.arrow(q1, geom::scale(along, -1.0), th, pen.color)?;
            self.arrow(q2, along, th, pen.color)?;
        }
        let label_at = geom::add(geom::lerp(q1, q2, 0.5), geom::scale(n, th * 0.4));
        let ang = geom::readable(dir[1].atan2(dir[0]).to_degrees());
        self.text(label_at, th, ang, true, &m.text, pen)
    }

    fn hatch(&mut self, loops: &[Vec<P>], fill: &Fill, pen: &Pen) -> Drawn {
        if loops.is_empty() || loops.iter().any(|l| l.len() < 3) {
            return Err("a hatch needs loops of at least 3 points".into());
        }
        let mut px_loops = std::mem::take(&mut self.loops);
        px_loops.clear();
        for l in loops {
            px_loops.push(l.iter().map(|p| self.px(*p)).collect::<Result<Vec<P>, String>>()?);
        }
        let result = match fill {
            Fill::Solid => {
                self.sink.fill(&px_loops, pen.color);
                Ok(())
            }
            Fill::Pattern { scale, angle, .. } => self.pattern(loops, &px_loops, *scale, *angle, pen),
        };
        self.loops = px_loops;
        result
    }

    /// Parallel lines at `angle` through the origin, `spacing` apart (local
    /// units), clipped to the loops by the even-odd rule: the SVG export's
    /// pattern. Patterns too dense to see (or to draw) become a fill at
    /// reduced alpha.
    fn pattern(&mut self, loops: &[Vec<P>], px_loops: &[Vec<P>], spacing: f64, angle: f64, pen: &Pen) -> Drawn {
        if self.coarse {
            self.sink.fill(px_loops, pen.color);
            return Ok(());
        }
        if !(spacing > 0.0 && spacing.is_finite() && angle.is_finite()) {
            return Err("degenerate hatch pattern".into());
        }
        let d = geom::polar([0.0, 0.0], 1.0, angle);
        let n = geom::perp(d);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for p in loops.iter().flatten() {
            let s = geom::dot(*p, n);
            lo = lo.min(s);
            hi = hi.max(s);
        }
        // Pixel distance between neighbouring lines.
        let o = self.xf.apply([0.0, 0.0]);
        let step_px = geom::len(geom::sub(self.xf.apply(geom::scale(n, spacing)), o));
        let k0 = (lo / spacing).ceil();
        let k1 = (hi / spacing).floor();
        let edges: usize = loops.iter().map(Vec::len).sum();
        let lines = k1 - k0 + 1.0;
        if step_px < MIN_HATCH_SPACING_PX || lines > MAX_HATCH_LINES || lines * edges as f64 > MAX_HATCH_WORK {
            self.sink.fill(px_loops, [pen.color[0], pen.color[1], pen.color[2], DENSE_PATTERN_ALPHA]);
            return Ok(());
        }
        let lpen = Pen { dash: &[], ..*pen };
        let mut ts: Vec<f64> = Vec::new();
        let mut k = k0;
        while k <= k1 {
            let c = k * spacing;
            ts.clear();
            for l in loops {
                for (i, a) in l.iter().enumerate() {
                    let b = l[(i + 1) % l.len()];
                    let (sa, sb) = (geom::dot(*a, n) - c, geom::dot(b, n) - c);
                    if (sa < 0.0) != (sb < 0.0) {
                        let t = sa / (sa - sb);
                        ts.push(geom::dot(geom::lerp(*a, b, t), d));
                    }
                }
            }
            ts.sort_by(f64::total_cmp);
            let base = geom::scale(n, c);
            for pair in ts.chunks_exact(2) {
                self.line(geom::add(base, geom::scale(d, pair[0])), geom::add(base, geom::scale(d, pair[1])), &lpen)?;
            }
            k += 1.0;
        }
        Ok(())
    }
}
