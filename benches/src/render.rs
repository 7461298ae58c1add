//! `caddy-bench render`: renders per second of `caddy-render` (the GPU path,
//! on whatever adapter is present) against a CPU reference rasterizer,
//! tiny-skia, drawing the same drawing into the same image.
//!
//! For each size, a seeded drawing of N entities is built through
//! caddy-doc's typed operations and resolved once, outside the timing: a
//! frame (a closed polyline, entity 0, which sets the fit view's extents),
//! then lines, polylines without bulges, circles, arcs and solid hatches
//! (triangles and quads) on 3 layers, with layer and entity colours and
//! line weights.
//!
//! A frame is, on each side, everything from the resolved document to the
//! PNG bytes:
//!
//! - **GPU**: `Renderer::render` with `RenderRequest::fit`: the fit view's
//!   extents pass, flattening and tessellation on the CPU, the draw on the
//!   adapter (4× MSAA), readback, PNG encoding.
//! - **CPU (tiny-skia)**: the extents of the same entities, the same fit
//!   transform (checked once against `caddy_render::project`), a white
//!   pixmap, anti-aliased strokes of the same pixel widths (line weight mm
//!   at 96 dpi, at least 1 px), caps and joins (square and mitered up to
//!   1.5 px, round above) and colours, arcs as cubic Béziers, circles as
//!   tiny-skia circles, hatches as even-odd fills; then PNG encoding with
//!   the same encoder and settings as the GPU path (the `png` crate,
//!   `Compression::Fast`). tiny-skia's own `encode_png` needs its
//!   `png-format` feature, which pulls a second, older `png`; using one
//!   encoder keeps the comparison about rasterizing.
//!
//! After one unmeasured frame per side, `--frames` frames are timed per
//! side, the sides taking turns (which goes first alternates per round).
//! The medians are reported, with the process CPU time per frame (all
//! threads: lavapipe rasterizes on worker threads, tiny-skia on one).
//!
//! The two warm-up images are compared: the share of pixels that differ by
//! more than 64 in some channel is reported, not checked (MSAA and
//! tiny-skia's analytic coverage differ along every edge). A blank image on
//! either side fails the run.
//!
//! One JSON line per size on stdout, a summary on stderr.

use std::io::Cursor;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use caddy_doc::{
    Color, Document, EditOp, Fill, Geometry, Limits, LineType, NewDocument, NewEntity, NewLayer, ResolvedDoc, Style,
    Units, Vertex,
};
use caddy_render::{RenderRequest, Renderer};
use clap::Args;
use serde_json::json;
use tiny_skia::{FillRule, LineCap, LineJoin, Paint, PathBuilder, Pixmap, Stroke, Transform};

#[derive(Args)]
pub struct RenderArgs {
    /// Entity counts of the drawings, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    sizes: Vec<usize>,
    /// Image width, pixels.
    #[arg(long, default_value_t = 1024)]
    width: u32,
    /// Image height, pixels.
    #[arg(long, default_value_t = 1024)]
    height: u32,
    /// Timed frames per side for every size (default: 20 up to 1000
    /// entities, 10 up to 10 000, 3 above).
    #[arg(long)]
    frames: Option<usize>,
    /// Seed of the drawings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Pixels per millimetre of line weight (96 dpi), as caddy-render.
const PX_PER_MM: f64 = 96.0 / 25.4;
/// Thinnest stroke, pixels, as caddy-render.
const MIN_STROKE_PX: f64 = 1.0;
/// Strokes up to this wide get square caps and mitered joins in
/// caddy-render; wider ones round caps and joins.
const THIN_STROKE_PX: f64 = 1.5;
/// Line weight of an entity on a missing layer, mm, as caddy-render.
const DEFAULT_WEIGHT_MM: f64 = 0.25;
/// Side of the square drawing, mm; the frame entity is its border.
const DRAWING_MM: f64 = 10_000.0;
/// Entities per `apply_ops` batch while building a drawing.
const BATCH: usize = 1000;
/// A pixel "differs" when some channel differs by more than this.
const MISMATCH_LEVELS: u8 = 64;

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    ensure!(!args.sizes.is_empty(), "--sizes is empty");
    ensure!(args.sizes.iter().all(|&n| n >= 1), "every size must be at least 1 entity");
    ensure!(args.frames != Some(0), "--frames must be at least 1");
    let req = RenderRequest::fit(args.width, args.height);
    req.validate().context("--width/--height")?;
    let renderer = Renderer::new().context("caddy-bench render needs a GPU or a software Vulkan adapter")?;
    let adapter = renderer.adapter_info();
    eprintln!(
        "adapter: {} ({}, {}, {}x MSAA)",
        adapter.name, adapter.backend, adapter.device_type, adapter.sample_count
    );
    let adapter_json = json!({"name": adapter.name, "backend": adapter.backend,
                              "device_type": adapter.device_type, "sample_count": adapter.sample_count});
    for &n in &args.sizes {
        let frames = args.frames.unwrap_or(match n {
            0..=1000 => 20,
            1001..=10_000 => 10,
            _ => 3,
        });
        let started = Instant::now();
        let doc = build_drawing(n, args.seed)?;
        let built_ms = ms(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let resolved = doc.resolve();
        let resolve_ms = ms(started.elapsed().as_secs_f64());
        drop(doc);
        ensure!(resolved.entities.len() == n, "the drawing resolved to {} entities, not {n}", resolved.entities.len());
        check_view(&resolved, &req)?;

        // One unmeasured frame per side; their images are the sanity check.
        let gpu_out = renderer.render(&resolved, &req).context("GPU render")?;
        ensure!(
            gpu_out.problems.is_empty() && gpu_out.entities_drawn == n as u64,
            "the GPU path drew {} of {n} entities: {:?}",
            gpu_out.entities_drawn,
            gpu_out.problems.iter().take(5).collect::<Vec<_>>()
        );
        let cpu_out = cpu_frame(&resolved, &req)?;
        ensure!(cpu_out.skipped == 0, "tiny-skia skipped {} entities (empty paths)", cpu_out.skipped);
        let gpu_rgba = decode_png(&gpu_out.png, args.width, args.height)?;
        let bg = req.background;
        let (gpu_ink, cpu_ink) = (ink_frac(&gpu_rgba, bg), ink_frac(cpu_out.pixmap.data(), bg));
        ensure!(gpu_ink > 0.0, "the GPU image is blank");
        ensure!(cpu_ink > 0.0, "the tiny-skia image is blank");
        let mismatch = mismatch_frac(&gpu_rgba, cpu_out.pixmap.data());
        let (gpu_png_bytes, cpu_png_bytes, triangles) = (gpu_out.png.len(), cpu_out.png.len(), gpu_out.triangles);
        drop((gpu_out, cpu_out, gpu_rgba));

        let (mut gpu_ms, mut cpu_ms, mut raster_ms, mut encode_ms) = (vec![], vec![], vec![], vec![]);
        let (mut gpu_cpu_time, mut cpu_cpu_time) = (0.0, 0.0);
        for round in 0..frames {
            for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                let (t0, c0) = (Instant::now(), process_cpu_secs()?);
                if side == 0 {
                    let out = renderer.render(&resolved, &req).context("GPU render")?;
                    std::hint::black_box(out.png.len());
                    gpu_ms.push(ms(t0.elapsed().as_secs_f64()));
                    gpu_cpu_time += process_cpu_secs()? - c0;
                } else {
                    let out = cpu_frame(&resolved, &req)?;
                    std::hint::black_box(out.png.len());
                    cpu_ms.push(ms(t0.elapsed().as_secs_f64()));
                    cpu_cpu_time += process_cpu_secs()? - c0;
                    raster_ms.push(ms(out.raster_secs));
                    encode_ms.push(ms(out.encode_secs));
                }
            }
        }
        let (g, c) = (median(gpu_ms), median(cpu_ms));
        let (g_cpu, c_cpu) = (ms(gpu_cpu_time) / frames as f64, ms(cpu_cpu_time) / frames as f64);
        let (r_ms, e_ms) = (median(raster_ms), median(encode_ms));
        let ratio = c / g;
        eprintln!(
            "render {n} entities, {}x{}, {frames} frames per side: GPU path {g:.1} ms/frame ({:.1}/s, {triangles} \
             triangles, {:.1} CPU cores busy); tiny-skia {c:.1} ms/frame ({:.1}/s: raster {r_ms:.1} + PNG {e_ms:.1} ms, \
             {:.1} cores); GPU/CPU renders/s {ratio:.2}x; pixels differing by >{MISMATCH_LEVELS}: {:.2}% \
             (ink: GPU {:.1}%, CPU {:.1}%); built in {built_ms:.0} ms, resolved in {resolve_ms:.0} ms",
            args.width,
            args.height,
            1000.0 / g,
            g_cpu / g,
            1000.0 / c,
            c_cpu / c,
            mismatch * 100.0,
            gpu_ink * 100.0,
            cpu_ink * 100.0,
        );
        println!(
            "{}",
            json!({"bench": "render", "entities": n, "width": args.width, "height": args.height,
                   "frames": frames, "seed": args.seed, "includes_png_encoding": true,
                   "adapter": adapter_json,
                   "gpu": {"ms_per_frame": round(g, 2), "renders_per_s": round(1000.0 / g, 2),
                           "triangles": triangles, "cpu_ms_per_frame": round(g_cpu, 2), "png_bytes": gpu_png_bytes},
                   "cpu_tiny_skia": {"ms_per_frame": round(c, 2), "renders_per_s": round(1000.0 / c, 2),
                                     "raster_ms": round(r_ms, 2), "encode_ms": round(e_ms, 2),
                                     "cpu_ms_per_frame": round(c_cpu, 2), "png_bytes": cpu_png_bytes},
                   "ratio_gpu_over_cpu": round(ratio, 3), "pixel_mismatch_frac": round(mismatch, 4),
                   "gpu_ink_frac": round(gpu_ink, 4), "cpu_ink_frac": round(cpu_ink, 4),
                   "resolve_ms": round(resolve_ms, 1)})
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ drawing

/// xorshift64*: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(crate::mix(seed) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[lo, hi)`, rounded to 0.01 (a drawing's precision).
    fn coord(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((lo + u * (hi - lo)) * 100.0).round() / 100.0
    }

    /// A point within `r` of `c` (in both axes).
    fn near(&mut self, c: [f64; 2], r: f64) -> [f64; 2] {
        [self.coord(c[0] - r, c[0] + r), self.coord(c[1] - r, c[1] + r)]
    }
}

/// Colours of entities with a colour override.
const PALETTE: [(u8, u8, u8); 5] =
    [(0x27, 0xae, 0x60), (0x8e, 0x44, 0xad), (0xd3, 0x54, 0x00), (0x16, 0xa0, 0x85), (0, 0, 0)];
/// Line weights (mm) of entities with a weight override: 0.49, 1.32 and
/// 2.65 px.
const WEIGHTS: [f64; 3] = [0.13, 0.35, 0.70];

/// A drawing of `n` entities: the frame, then a seeded mix of lines,
/// polylines, circles, arcs and solid hatches, each within 250 mm of a
/// centre at least 300 mm inside the frame.
fn build_drawing(n: usize, seed: u64) -> anyhow::Result<Document> {
    let mut d = Document::new(
        1,
        NewDocument {
            name: "render bench".into(),
            units: Units::Millimeters,
            created_by: "bench".into(),
            created_at_ms: 1_700_000_000_000,
        },
        Limits { max_document_bytes: 1 << 30, ..Limits::default() },
    )
    .context("new document")?;
    let layer = |id: &str, c: (u8, u8, u8), weight: f64| {
        EditOp::AddLayer(NewLayer {
            color: Some(Color::rgb(c.0, c.1, c.2)),
            line_weight: Some(weight),
            ..NewLayer::new(id)
        })
    };
    d.apply_ops(&[
        layer("walls", (0x1f, 0x3a, 0x93), 0.50),
        layer("details", (0xc0, 0x39, 0x2b), 0.18),
        layer("fills", (0x95, 0xa5, 0xa6), 0.25),
    ])
    .context("layers")?;
    let mut rng = Rng::new(seed);
    let mut ops = Vec::with_capacity(BATCH);
    for i in 0..n {
        ops.push(EditOp::Add(entity(i, &mut rng)));
        if ops.len() == BATCH || i + 1 == n {
            d.apply_ops(&ops).context("apply_ops")?;
            ops.clear();
        }
    }
    Ok(d)
}

fn entity(i: usize, rng: &mut Rng) -> NewEntity {
    // Chosen ids, so the drawing depends on the seed only.
    let id = format!("e{i:06}");
    if i == 0 {
        let s = DRAWING_MM;
        let vertices = [[0.0, 0.0], [s, 0.0], [s, s], [0.0, s]].map(|[x, y]| Vertex::new(x, y)).to_vec();
        return NewEntity::new("walls", Geometry::Polyline { vertices, closed: true }).with_id(id);
    }
    let c = [rng.coord(300.0, DRAWING_MM - 300.0), rng.coord(300.0, DRAWING_MM - 300.0)];
    let size = rng.coord(20.0, 250.0);
    let kind = rng.below(100);
    let geometry = match kind {
        0..35 => Geometry::Line { from: rng.near(c, size), to: rng.near(c, size) },
        35..55 => {
            let k = 3 + rng.below(6);
            let vertices = (0..k).map(|_| rng.near(c, size)).map(|[x, y]| Vertex::new(x, y)).collect();
            Geometry::Polyline { vertices, closed: rng.below(3) == 0 }
        }
        55..70 => Geometry::Circle { center: c, radius: size },
        70..85 => {
            let start = rng.coord(0.0, 360.0);
            Geometry::Arc { center: c, radius: size, start_angle: start, end_angle: start + rng.coord(20.0, 300.0) }
        }
        _ => {
            let k = 3 + rng.below(2);
            let s = size.min(150.0);
            let pts = (0..k).map(|j| polar(c, s * (0.6 + 0.4 * rng.coord(0.0, 1.0)), j as f64 * 360.0 / k as f64));
            Geometry::Hatch { loops: vec![pts.collect()], fill: Fill::Solid }
        }
    };
    let layer = match kind {
        85.. => "fills",
        _ if rng.below(2) == 0 => "walls",
        _ => "details",
    };
    let mut style = Style::default();
    if rng.below(5) == 0 {
        let (r, g, b) = PALETTE[rng.below(PALETTE.len())];
        style.color = Some(Color::rgb(r, g, b));
    }
    if rng.below(7) == 0 {
        style.line_weight = Some(WEIGHTS[rng.below(WEIGHTS.len())]);
    }
    NewEntity::new(layer, geometry).with_style(style).with_id(id)
}

fn polar(c: [f64; 2], r: f64, deg: f64) -> [f64; 2] {
    let (s, co) = deg.to_radians().sin_cos();
    [c[0] + r * co, c[1] + r * s]
}

// ------------------------------------------------------------- CPU (tiny-skia)

/// Drawing coordinates to pixels: `x' = s·x + e`, `y' = −s·y + f`.
#[derive(Clone, Copy, Debug)]
struct View {
    s: f64,
    e: f64,
    f: f64,
}

impl View {
    fn px(&self, p: [f64; 2]) -> (f32, f32) {
        ((self.s * p[0] + self.e) as f32, (-self.s * p[1] + self.f) as f32)
    }
}

/// What the tiny-skia side draws: model-space entities on visible layers.
fn drawn(doc: &ResolvedDoc) -> impl Iterator<Item = &caddy_doc::Entity> {
    let hidden: Vec<&str> = doc.layers.iter().filter(|l| !l.visible).map(|l| l.id.as_str()).collect();
    doc.entities.iter().filter(move |e| e.owner.is_none() && !hidden.contains(&e.layer.as_str()))
}

/// The fit view of `caddy_render` (5 % margin, no rotation), from the
/// entities' exact extents. It matches caddy-render's (which measures
/// curves coarsely) when the extents are set by straight geometry, as the
/// bench drawing's frame does; `check_view` verifies it.
fn fit_view(doc: &ResolvedDoc, req: &RenderRequest) -> anyhow::Result<View> {
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    let mut add = |p: [f64; 2]| {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    };
    for e in drawn(doc) {
        match &e.geometry {
            Geometry::Line { from, to } => {
                add(*from);
                add(*to);
            }
            Geometry::Polyline { vertices, .. } => vertices.iter().for_each(|v| add(v.point())),
            Geometry::Circle { center, radius } | Geometry::Arc { center, radius, .. } => {
                add([center[0] - radius, center[1] - radius]);
                add([center[0] + radius, center[1] + radius]);
            }
            Geometry::Hatch { loops, .. } => loops.iter().flatten().for_each(|p| add(*p)),
            other => bail!("the tiny-skia side does not draw {}", other.kind()),
        }
    }
    ensure!(lo[0] <= hi[0] && lo[1] <= hi[1], "nothing to draw");
    let (w0, h0) = (hi[0] - lo[0], hi[1] - lo[1]);
    let m = w0.max(h0) * 0.05;
    let (ew, eh) = (w0 + 2.0 * m, h0 + 2.0 * m);
    let (w, h) = (f64::from(req.width), f64::from(req.height));
    let s = (w / ew.max(1e-300)).min(h / eh.max(1e-300));
    let center = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    Ok(View { s, e: w / 2.0 - s * center[0], f: h / 2.0 + s * center[1] })
}

/// Both sides must cover the same area: the tiny-skia view must map
/// points where `caddy_render::project` does.
fn check_view(doc: &ResolvedDoc, req: &RenderRequest) -> anyhow::Result<()> {
    let v = fit_view(doc, req)?;
    for p in [[0.0, 0.0], [DRAWING_MM, DRAWING_MM], [1234.5, 6789.0]] {
        let want = caddy_render::project(doc, req, p);
        let got = [v.s * p[0] + v.e, -v.s * p[1] + v.f];
        ensure!(
            (want[0] - got[0]).abs() < 1e-6 && (want[1] - got[1]).abs() < 1e-6,
            "view mismatch at {p:?}: caddy-render {want:?}, tiny-skia side {got:?}"
        );
    }
    Ok(())
}

/// `#rrggbb` to RGB; black if malformed (as caddy-render).
fn rgb(c: &Color) -> (u8, u8, u8) {
    let hex = c.as_str().strip_prefix('#').unwrap_or("");
    let byte = |i: usize| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok());
    match (hex.len(), byte(0), byte(2), byte(4)) {
        (6, Some(r), Some(g), Some(b)) => (r, g, b),
        _ => (0, 0, 0),
    }
}

struct CpuFrame {
    pixmap: Pixmap,
    png: Vec<u8>,
    raster_secs: f64,
    encode_secs: f64,
    /// Entities whose path came out empty (not drawn).
    skipped: usize,
}

/// One tiny-skia frame: view, raster, PNG.
fn cpu_frame(doc: &ResolvedDoc, req: &RenderRequest) -> anyhow::Result<CpuFrame> {
    let started = Instant::now();
    let [br, bg, bb, ba] = req.background;
    // An opaque background keeps every pixel opaque, so tiny-skia's
    // premultiplied pixels are also straight RGBA, ready for the encoder.
    ensure!(ba == 255, "the tiny-skia side needs an opaque background");
    let view = fit_view(doc, req)?;
    let mut pixmap = Pixmap::new(req.width, req.height).context("pixmap size")?;
    pixmap.fill(tiny_skia::Color::from_rgba8(br, bg, bb, ba));
    let layers: Vec<&caddy_doc::Layer> = doc.layers.iter().collect();
    let mut pb = PathBuilder::new();
    let mut paint = Paint { anti_alias: true, ..Paint::default() };
    let mut skipped = 0;
    let id = Transform::identity();
    for e in drawn(doc) {
        let layer = layers.iter().find(|l| l.id == e.layer);
        let (r, g, b) = e.color.as_ref().or(layer.map(|l| &l.color)).map_or((0, 0, 0), rgb);
        paint.set_color_rgba8(r, g, b, 255);
        if e.line_type.or(layer.map(|l| l.line_type)).is_some_and(|t| t != LineType::Continuous) {
            bail!("entity {}: the tiny-skia side draws continuous lines only", e.id);
        }
        let lw = e.line_weight.or(layer.map(|l| l.line_weight)).unwrap_or(DEFAULT_WEIGHT_MM);
        let lw = if lw.is_finite() { lw } else { DEFAULT_WEIGHT_MM };
        let width = (lw * PX_PER_MM).max(MIN_STROKE_PX);
        let fill = match &e.geometry {
            Geometry::Line { from, to } => {
                let ((x0, y0), (x1, y1)) = (view.px(*from), view.px(*to));
                pb.move_to(x0, y0);
                pb.line_to(x1, y1);
                false
            }
            Geometry::Polyline { vertices, closed } => {
                for (k, v) in vertices.iter().enumerate() {
                    if v.bulge != 0.0 {
                        bail!("entity {}: the tiny-skia side draws polylines without bulges only", e.id);
                    }
                    let (x, y) = view.px(v.point());
                    if k == 0 { pb.move_to(x, y) } else { pb.line_to(x, y) }
                }
                if *closed {
                    pb.close();
                }
                false
            }
            Geometry::Circle { center, radius } => {
                let (x, y) = view.px(*center);
                pb.push_circle(x, y, (radius * view.s) as f32);
                false
            }
            Geometry::Arc { center, radius, start_angle, end_angle } => {
                push_arc(&mut pb, &view, *center, *radius, *start_angle, ccw_sweep(*start_angle, *end_angle));
                false
            }
            Geometry::Hatch { loops, fill: Fill::Solid } => {
                for l in loops {
                    for (k, p) in l.iter().enumerate() {
                        let (x, y) = view.px(*p);
                        if k == 0 { pb.move_to(x, y) } else { pb.line_to(x, y) }
                    }
                    pb.close();
                }
                true
            }
            other => bail!("entity {}: the tiny-skia side does not draw {}", e.id, other.kind()),
        };
        let Some(path) = pb.finish() else {
            skipped += 1;
            pb = PathBuilder::new();
            continue;
        };
        if fill {
            pixmap.fill_path(&path, &paint, FillRule::EvenOdd, id, None);
        } else {
            let (line_cap, line_join) = if width <= THIN_STROKE_PX {
                (LineCap::Square, LineJoin::MiterClip)
            } else {
                (LineCap::Round, LineJoin::Round)
            };
            let stroke = Stroke { width: width as f32, line_cap, line_join, ..Stroke::default() };
            pixmap.stroke_path(&path, &paint, &stroke, id, None);
        }
        pb = path.clear();
    }
    let raster_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let png = encode_png(req.width, req.height, pixmap.data())?;
    Ok(CpuFrame { pixmap, png, raster_secs, encode_secs: started.elapsed().as_secs_f64(), skipped })
}

/// Counter-clockwise sweep from `start` to `end`, degrees, in (0, 360], as
/// caddy-render.
fn ccw_sweep(start: f64, end: f64) -> f64 {
    let s = (end - start).rem_euclid(360.0);
    if s < 1e-9 { 360.0 } else { s }
}

/// A circular arc (drawing space, degrees, counter-clockwise) as cubic
/// Béziers of at most 90° each, mapped to pixels.
fn push_arc(pb: &mut PathBuilder, view: &View, c: [f64; 2], r: f64, start: f64, sweep: f64) {
    let n = (sweep / 90.0).ceil().max(1.0);
    let step = (sweep / n).to_radians();
    let k = 4.0 / 3.0 * (step / 4.0).tan() * r;
    let at = |a: f64| ([c[0] + r * a.cos(), c[1] + r * a.sin()], [-a.sin(), a.cos()]);
    let (p0, _) = at(start.to_radians());
    let (x, y) = view.px(p0);
    pb.move_to(x, y);
    for i in 0..n as usize {
        let a0 = start.to_radians() + step * i as f64;
        let ((p0, t0), (p3, t3)) = (at(a0), at(a0 + step));
        let p1 = view.px([p0[0] + k * t0[0], p0[1] + k * t0[1]]);
        let p2 = view.px([p3[0] - k * t3[0], p3[1] - k * t3[1]]);
        let p3 = view.px(p3);
        pb.cubic_to(p1.0, p1.1, p2.0, p2.1, p3.0, p3.1);
    }
}

/// RGBA8 to PNG with caddy-render's encoder settings.
fn encode_png(width: u32, height: u32, rgba: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(Cursor::new(&mut out), width, height);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header()?;
    w.write_image_data(rgba)?;
    w.finish()?;
    Ok(out)
}

// ---------------------------------------------------------------- checking

fn decode_png(bytes: &[u8], width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let mut reader = png::Decoder::new(Cursor::new(bytes)).read_info().context("GPU PNG header")?;
    let mut buf = vec![0; reader.output_buffer_size().context("GPU PNG size")?];
    let info = reader.next_frame(&mut buf).context("GPU PNG data")?;
    ensure!(
        info.color_type == png::ColorType::Rgba
            && info.bit_depth == png::BitDepth::Eight
            && (info.width, info.height) == (width, height),
        "the GPU PNG is {:?}/{:?} {}x{}, expected RGBA8 {width}x{height}",
        info.color_type,
        info.bit_depth,
        info.width,
        info.height
    );
    buf.truncate(info.buffer_size());
    Ok(buf)
}

fn differs(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).any(|(x, y)| x.abs_diff(*y) > MISMATCH_LEVELS)
}

/// Share of pixels that differ from the background.
fn ink_frac(rgba: &[u8], bg: [u8; 4]) -> f64 {
    let n = rgba.chunks_exact(4).filter(|p| differs(p, &bg)).count();
    n as f64 / (rgba.len() / 4).max(1) as f64
}

/// Share of pixels that differ between two images of the same size.
fn mismatch_frac(a: &[u8], b: &[u8]) -> f64 {
    let n = a.chunks_exact(4).zip(b.chunks_exact(4)).filter(|(p, q)| differs(p, q)).count();
    n as f64 / (a.len() / 4).max(1) as f64
}

// ----------------------------------------------------------------- helpers

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(secs: f64) -> f64 {
    secs * 1000.0
}

fn round(v: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (v * k).round() / k
}

/// CPU time of the whole process (every thread), seconds.
fn process_cpu_secs() -> anyhow::Result<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    #[allow(unsafe_code)]
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ensure!(rc == 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID): {}", std::io::Error::last_os_error());
    Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}
