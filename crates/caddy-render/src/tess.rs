//! Pixel-space primitives to triangles, in bounded batches.
//!
//! The [`Batcher`] is the [`Sink`] of the drawing pass. Polylines are
//! clipped (in `f64`) to the image plus a margin, so coordinates far off
//! screen never reach `f32` or the GPU; dashed line types are split into
//! dashes along the clipped runs, keeping the phase of the whole polyline;
//! then lyon's stroke tessellator (round caps and joins like the SVG
//! export; square and mitered on strokes of at most 1.5 px) or fill
//! tessellator (even-odd) turns them into triangles. The triangles are
//! appended, in painter's order, to one batch of at most
//! [`BATCH_VERTICES`] vertices and [`BATCH_INDICES`] indices; a full batch
//! is handed to a [`BatchTarget`] (the GPU) and the batch memory reused.

use lyon_tessellation::math::{Point as LPoint, point as lpoint};
use lyon_tessellation::path::{Path, Polygon};
use lyon_tessellation::{
    BuffersBuilder, FillOptions, FillTessellator, FillVertex, FillVertexConstructor, LineCap, LineJoin, StrokeOptions,
    StrokeTessellator, StrokeVertex, StrokeVertexConstructor, VertexBuffers,
};

use crate::RenderError;
use crate::geom::P;
use crate::scene::{Pen, Sink};

/// Bytes of one batch's vertex buffer (and of its index buffer).
pub(crate) const BATCH_BYTES: usize = 4 << 20;
/// Vertices in one batch.
pub(crate) const BATCH_VERTICES: usize = BATCH_BYTES / std::mem::size_of::<Vertex>();
/// Indices in one batch.
pub(crate) const BATCH_INDICES: usize = BATCH_BYTES / std::mem::size_of::<u32>();
/// Tessellation tolerance of round caps and joins, pixels.
const LYON_TOLERANCE: f32 = 0.05;
/// Strokes up to this wide, pixels, get square caps and mitered joins.
const THIN_STROKE_PX: f64 = 1.5;
/// Most dashes drawn for one polyline (past that the rest is solid).
const MAX_DASHES: usize = 100_000;

/// One vertex: position in pixels (origin top left, y down) and RGBA8
/// colour (not premultiplied).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Vertex {
    pub pos: [f32; 2],
    pub color: [u8; 4],
}

/// Where full batches go.
pub(crate) trait BatchTarget {
    fn draw(&mut self, vertices: &[Vertex], indices: &[u32]) -> Result<(), RenderError>;
}

struct Color([u8; 4]);

impl StrokeVertexConstructor<Vertex> for Color {
    fn new_vertex(&mut self, v: StrokeVertex) -> Vertex {
        let p = v.position();
        Vertex { pos: [p.x, p.y], color: self.0 }
    }
}

impl FillVertexConstructor<Vertex> for Color {
    fn new_vertex(&mut self, v: FillVertex) -> Vertex {
        let p = v.position();
        Vertex { pos: [p.x, p.y], color: self.0 }
    }
}

/// Tessellates primitives and batches the triangles.
pub(crate) struct Batcher<'t, T: BatchTarget> {
    target: &'t mut T,
    /// Clip rectangle: the image plus a margin, pixels.
    min: P,
    max: P,
    vertices: Vec<Vertex>,
    indices: Vec<u32>,
    scratch: VertexBuffers<Vertex, u32>,
    remap: Vec<u32>,
    stroker: StrokeTessellator,
    filler: FillTessellator,
    lpts: Vec<LPoint>,
    run: Vec<P>,
    pub(crate) triangles: u64,
    pub(crate) batches: u64,
    pub(crate) error: Option<RenderError>,
    pub(crate) problems: Vec<String>,
}

impl<'t, T: BatchTarget> Batcher<'t, T> {
    pub(crate) fn new(target: &'t mut T, width: u32, height: u32) -> Self {
        const MARGIN: f64 = 256.0;
        Batcher {
            target,
            min: [-MARGIN, -MARGIN],
            max: [f64::from(width) + MARGIN, f64::from(height) + MARGIN],
            vertices: Vec::new(),
            indices: Vec::new(),
            scratch: VertexBuffers::new(),
            remap: Vec::new(),
            stroker: StrokeTessellator::new(),
            filler: FillTessellator::new(),
            lpts: Vec::new(),
            run: Vec::new(),
            triangles: 0,
            batches: 0,
            error: None,
            problems: Vec::new(),
        }
    }

    /// Hands the last partial batch to the target.
    pub(crate) fn finish(mut self) -> Result<(u64, u64, Vec<String>), RenderError> {
        self.flush();
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.triangles, self.batches, self.problems)),
        }
    }

    fn flush(&mut self) {
        if self.indices.is_empty() || self.error.is_some() {
            self.vertices.clear();
            self.indices.clear();
            return;
        }
        if let Err(e) = self.target.draw(&self.vertices, &self.indices) {
            self.error = Some(e);
        }
        self.batches += 1;
        self.vertices.clear();
        self.indices.clear();
    }

    /// Moves `self.scratch` into the batch, splitting it if it is larger
    /// than a batch.
    fn append_scratch(&mut self) {
        let (sv, si) = (self.scratch.vertices.len(), self.scratch.indices.len());
        self.triangles += (si / 3) as u64;
        if sv > BATCH_VERTICES - self.vertices.len() || si > BATCH_INDICES - self.indices.len() {
            self.flush();
        }
        if sv <= BATCH_VERTICES && si <= BATCH_INDICES {
            let base = self.vertices.len() as u32;
            self.vertices.extend_from_slice(&self.scratch.vertices);
            self.indices.extend(self.scratch.indices.iter().map(|i| i + base));
        } else {
            // Larger than a whole batch: copy triangle by triangle, each
            // batch holding the vertices its triangles use.
            self.remap.clear();
            self.remap.resize(sv, u32::MAX);
            let mut used: Vec<usize> = Vec::new();
            let scratch = std::mem::take(&mut self.scratch);
            for tri in scratch.indices.chunks_exact(3) {
                if self.vertices.len() + 3 > BATCH_VERTICES || self.indices.len() + 3 > BATCH_INDICES {
                    self.flush();
                    for u in used.drain(..) {
                        self.remap[u] = u32::MAX;
                    }
                }
                for &i in tri {
                    let i = i as usize;
                    let Some(v) = scratch.vertices.get(i) else { continue };
                    if self.remap[i] == u32::MAX {
                        self.remap[i] = self.vertices.len() as u32;
                        self.vertices.push(*v);
                        used.push(i);
                    }
                    self.indices.push(self.remap[i]);
                }
            }
            self.scratch = scratch;
        }
        self.scratch.vertices.clear();
        self.scratch.indices.clear();
    }

    fn stroke_run(&mut self, pts: &[P], closed: bool, pen: &Pen) {
        if self.error.is_some() || pts.len() < 2 {
            return;
        }
        self.lpts.clear();
        self.lpts.extend(pts.iter().map(|p| lpoint(p[0] as f32, p[1] as f32)));
        // Round caps and joins (the SVG export's) cost many triangles; on
        // strokes this thin they cannot be told from square caps and miter
        // joins.
        let (cap, join) = if pen.width <= THIN_STROKE_PX {
            (LineCap::Square, LineJoin::MiterClip)
        } else {
            (LineCap::Round, LineJoin::Round)
        };
        let opts = StrokeOptions::tolerance(LYON_TOLERANCE)
            .with_line_width(pen.width as f32)
            .with_line_cap(cap)
            .with_line_join(join);
        let mut out = BuffersBuilder::new(&mut self.scratch, Color(pen.color));
        let r = self.stroker.tessellate_polygon(Polygon { points: &self.lpts, closed }, &opts, &mut out);
        match r {
            Ok(()) => self.append_scratch(),
            Err(e) => {
                self.scratch.vertices.clear();
                self.scratch.indices.clear();
                self.problems.push(format!("a stroke could not be tessellated: {e:?}"));
            }
        }
    }

    /// Clips one segment to the clip rectangle (Liang–Barsky): the
    /// parameter range kept, if any.
    fn clip(&self, a: P, b: P) -> Option<(f64, f64)> {
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        let d = [b[0] - a[0], b[1] - a[1]];
        for axis in 0..2 {
            for (p, q) in [(-d[axis], a[axis] - self.min[axis]), (d[axis], self.max[axis] - a[axis])] {
                if p == 0.0 {
                    if q < 0.0 {
                        return None;
                    }
                } else {
                    let r = q / p;
                    if p < 0.0 {
                        t0 = t0.max(r);
                    } else {
                        t1 = t1.min(r);
                    }
                }
            }
        }
        (t0 <= t1).then_some((t0, t1))
    }

    fn inside(&self, p: P) -> bool {
        p[0] >= self.min[0] && p[0] <= self.max[0] && p[1] >= self.min[1] && p[1] <= self.max[1]
    }

    /// Strokes a clipped run, dashed if the pen says so; `dist` is the
    /// distance along the whole polyline at the run's first point.
    fn emit_run(&mut self, run: &[P], closed: bool, dist: f64, pen: &Pen) {
        let period: f64 = pen.dash.iter().sum();
        let usable = period > 0.0 && period.is_finite();
        if pen.dash.is_empty() || !usable {
            self.stroke_run(run, closed, pen);
            return;
        }
        // Position in the pattern at the run's start.
        let mut phase = dist.rem_euclid(period);
        let mut k = 0;
        while phase >= pen.dash[k] {
            phase -= pen.dash[k];
            k = (k + 1) % pen.dash.len();
        }
        let mut left = pen.dash[k] - phase; // of the current dash or gap
        let mut on = k % 2 == 0;
        let mut dash: Vec<P> = Vec::new();
        let mut dashes = 0usize;
        if on {
            dash.push(run[0]);
        }
        let mut segs: Vec<(P, P)> = run.windows(2).map(|w| (w[0], w[1])).collect();
        if closed {
            segs.push((run[run.len() - 1], run[0]));
        }
        for (a, b) in segs {
            let len = (b[0] - a[0]).hypot(b[1] - a[1]);
            let mut at = 0.0;
            while len - at > left {
                at += left;
                let p = crate::geom::lerp(a, b, at / len);
                if on {
                    dash.push(p);
                    let d = std::mem::take(&mut dash);
                    self.stroke_run(&d, false, pen);
                    dashes += 1;
                    if dashes >= MAX_DASHES {
                        // Pathologically long: draw the rest solid.
                        dash.push(p);
                        left = f64::INFINITY;
                        on = true;
                        break;
                    }
                } else {
                    dash.clear();
                    dash.push(p);
                }
                on = !on;
                k = (k + 1) % pen.dash.len();
                left = pen.dash[k];
            }
            if left.is_finite() {
                left -= len - at;
            }
            if on {
                dash.push(b);
            }
        }
        if on && dash.len() >= 2 {
            self.stroke_run(&dash, false, pen);
        }
    }
}

impl<T: BatchTarget> Sink for Batcher<'_, T> {
    fn wants(&self, min: P, max: P) -> bool {
        max[0] >= self.min[0] && min[0] <= self.max[0] && max[1] >= self.min[1] && min[1] <= self.max[1]
    }

    fn polyline(&mut self, pts: &[P], closed: bool, pen: &Pen) {
        if self.error.is_some() || pts.len() < 2 {
            return;
        }
        let pen = Pen { width: pen.width.min(4096.0), ..*pen };
        if pts.iter().all(|p| self.inside(*p)) {
            self.emit_run(pts, closed, 0.0, &pen);
            return;
        }
        let mut run = std::mem::take(&mut self.run);
        run.clear();
        let mut run_start = 0.0;
        let mut dist = 0.0;
        let n = pts.len();
        let segs = if closed { n } else { n - 1 };
        for i in 0..segs {
            let (a, b) = (pts[i], pts[(i + 1) % n]);
            let len = (b[0] - a[0]).hypot(b[1] - a[1]);
            match self.clip(a, b) {
                None => {
                    if run.len() >= 2 {
                        self.emit_run(&run, false, run_start, &pen);
                    }
                    run.clear();
                }
                Some((t0, t1)) => {
                    if run.is_empty() || t0 > 0.0 {
                        if run.len() >= 2 {
                            self.emit_run(&run, false, run_start, &pen);
                        }
                        run.clear();
                        run.push(crate::geom::lerp(a, b, t0));
                        run_start = dist + t0 * len;
                    }
                    run.push(crate::geom::lerp(a, b, t1));
                    if t1 < 1.0 {
                        self.emit_run(&run, false, run_start, &pen);
                        run.clear();
                    }
                }
            }
            dist += len;
        }
        if run.len() >= 2 {
            self.emit_run(&run, false, run_start, &pen);
        }
        run.clear();
        self.run = run;
    }

    fn fill(&mut self, loops: &[Vec<P>], color: [u8; 4]) {
        if self.error.is_some() {
            return;
        }
        let mut b = crate::geom::Bounds::empty();
        loops.iter().flatten().for_each(|p| b.add(*p));
        if b.is_empty() || !self.wants(b.min, b.max) {
            return;
        }
        let mut builder = Path::builder();
        for l in loops {
            let clipped;
            let l = if l.iter().all(|p| self.inside(*p)) {
                l.as_slice()
            } else {
                clipped = clip_polygon(l, self.min, self.max);
                clipped.as_slice()
            };
            if l.len() < 3 {
                continue;
            }
            builder.begin(lpoint(l[0][0] as f32, l[0][1] as f32));
            for p in &l[1..] {
                builder.line_to(lpoint(p[0] as f32, p[1] as f32));
            }
            builder.end(true);
        }
        let path = builder.build();
        let opts = FillOptions::even_odd().with_tolerance(LYON_TOLERANCE);
        let mut out = BuffersBuilder::new(&mut self.scratch, Color(color));
        match self.filler.tessellate_path(&path, &opts, &mut out) {
            Ok(()) => self.append_scratch(),
            Err(e) => {
                self.scratch.vertices.clear();
                self.scratch.indices.clear();
                self.problems.push(format!("a fill could not be tessellated: {e:?}"));
            }
        }
    }
}

/// Sutherland–Hodgman clipping of one loop to a rectangle. Points strictly
/// inside the rectangle keep their even-odd parity.
fn clip_polygon(l: &[P], min: P, max: P) -> Vec<P> {
    let mut cur: Vec<P> = l.to_vec();
    for (axis, bound, keep_less) in [(0, min[0], false), (0, max[0], true), (1, min[1], false), (1, max[1], true)] {
        if cur.is_empty() {
            break;
        }
        let inside = |p: &P| if keep_less { p[axis] <= bound } else { p[axis] >= bound };
        let mut next = Vec::with_capacity(cur.len() + 4);
        for i in 0..cur.len() {
            let a = cur[i];
            let b = cur[(i + 1) % cur.len()];
            let (ia, ib) = (inside(&a), inside(&b));
            if ia {
                next.push(a);
            }
            if ia != ib {
                let t = (bound - a[axis]) / (b[axis] - a[axis]);
                next.push(crate::geom::lerp(a, b, t));
            }
        }
        cur = next;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        batches: Vec<(usize, usize)>,
        max_index_ok: bool,
    }

    impl BatchTarget for Collect {
        fn draw(&mut self, v: &[Vertex], i: &[u32]) -> Result<(), RenderError> {
            self.max_index_ok = i.iter().all(|&x| (x as usize) < v.len());
            assert!(v.len() <= BATCH_VERTICES && i.len() <= BATCH_INDICES);
            self.batches.push((v.len(), i.len()));
            Ok(())
        }
    }

    fn pen(dash: &'static [f64]) -> Pen {
        Pen { color: [0, 0, 0, 255], width: 1.0, dash }
    }

    #[test]
    fn far_off_screen_lines_are_clipped_and_huge_polylines_split_into_batches() {
        let mut t = Collect::default();
        let mut b = Batcher::new(&mut t, 100, 100);
        // A line from -1e12 to +1e12 across the image: clipped, a few triangles.
        b.polyline(&[[-1e12, 50.0], [1e12, 50.0]], false, &pen(&[]));
        assert!(b.triangles > 0 && b.triangles < 100, "{}", b.triangles);
        // A zig-zag with more vertices than one batch holds.
        let pts: Vec<P> = (0..400_000).map(|i| [(i % 100) as f64, (i % 7) as f64 * 10.0]).collect();
        b.polyline(&pts, false, &pen(&[]));
        let r = b.finish();
        assert!(r.is_ok());
        assert!(t.batches.len() >= 2, "{:?}", t.batches);
        assert!(t.max_index_ok);
    }

    #[test]
    fn dashes_leave_gaps() {
        let mut t = Collect::default();
        let mut b = Batcher::new(&mut t, 100, 100);
        b.polyline(&[[0.0, 10.0], [96.0, 10.0]], false, &pen(&[8.0, 4.0]));
        // 96 px of an 8-on/4-off pattern: 8 dashes, each a separate stroke.
        let mut solid = Collect::default();
        let mut s = Batcher::new(&mut solid, 100, 100);
        s.polyline(&[[0.0, 10.0], [96.0, 10.0]], false, &pen(&[]));
        assert!(b.triangles > 4 * s.triangles, "{} vs {}", b.triangles, s.triangles);
    }

    #[test]
    fn clipped_polygon_stays_inside() {
        let l = vec![[-50.0, -50.0], [150.0, -50.0], [150.0, 150.0], [-50.0, 150.0]];
        let c = clip_polygon(&l, [0.0, 0.0], [100.0, 100.0]);
        assert_eq!(c.len(), 4);
        assert!(c.iter().all(|p| (0.0..=100.0).contains(&p[0]) && (0.0..=100.0).contains(&p[1])));
    }
}
