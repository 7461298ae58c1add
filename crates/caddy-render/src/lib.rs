//! Headless GPU rendering of CADDY drawings to PNG.
//!
//! This crate owns turning a [`ResolvedDoc`] into a raster image on a GPU
//! (wgpu, Vulkan; a software adapter such as Mesa's lavapipe works), for
//! render workers: a [`Renderer`] is created once per process and reused
//! for every [`RenderRequest`]. It draws what caddy-doc's SVG export draws,
//! with the same geometry decisions (see `scene.rs`): model space in draw
//! order, colour/line type/line weight by entity else by layer, hidden
//! layers skipped, block inserts expanded with their transform, dimensions
//! as extension lines + dimension line + filled arrowheads + the measured
//! label.
//!
//! # Pipeline
//!
//! 1. **View.** [`View::Fit`] measures the extents of what is drawn (a
//!    coarse pass of the same walker) in the view's rotated frame and adds
//!    a margin; [`View::Window`] names the drawing-space rectangle. Either
//!    way the rectangle is scaled uniformly to fit the image and centred.
//! 2. **Geometry.** Every entity becomes polylines and even-odd fills in
//!    *pixel space*, computed on the CPU in `f64` (drawing coordinates
//!    through insert transforms and the view transform). Arcs, circles,
//!    ellipses and bulges are flattened with a tolerance of 0.05 px, so they
//!    stay curves at any zoom; splines are the SVG export's clamped uniform
//!    B-splines, sampled densely enough for their pixel size. Text uses a
//!    built-in single-stroke font (`font.rs`).
//! 3. **Tessellation.** lyon strokes polylines (line weight in mm at 96 dpi,
//!    never thinner than 1 px; round caps and joins as in the SVG, square
//!    caps and mitered joins for strokes of at most 1.5 px, where they look
//!    the same at half the triangles) and
//!    fills hatches (even-odd). Pattern hatches (any pattern name) are drawn
//!    as parallel lines at the pattern's angle and spacing, clipped to the
//!    loops by the even-odd rule, like the SVG export's pattern; a pattern
//!    whose lines would be under 2 px apart (or too many to draw) is shown
//!    as an even-odd fill at alpha 96/255 instead.
//!    Geometry is clipped to the image plus a margin before it becomes
//!    `f32`.
//! 4. **GPU.** Vertices are `[f32; 2]` pixel positions plus RGBA8 colour;
//!    the vertex shader only maps pixels to clip space with a uniform
//!    holding the target size. Triangles go, in painter's order, into
//!    batches of at most 4 MiB of vertices and 4 MiB of indices, drawn one
//!    render pass after the other (two buffer pairs alternate, so the CPU
//!    tessellates a batch while the GPU draws the previous one; no depth
//!    buffer) into a 4× MSAA `Rgba8Unorm` target (1×
//!    where the adapter lacks 4×, with a warning), resolved, copied to a
//!    buffer with 256-byte row alignment, mapped, unpadded and PNG-encoded.
//!
//! # Invariants
//!
//! - **Bounded sizes.** Images are at most 8192 px a side and 32 Mi pixels;
//!   vertex and index memory is two 4 MiB batches each on the GPU (plus
//!   their staging copies) and one on the CPU, whatever the drawing's size;
//!   flattening, dashes, hatch lines,
//!   insert nesting (32 deep), entity draws (2 M per render) and the
//!   problem list (1000) are capped.
//! - **Render what you can.** One bad entity (a broken block reference, a
//!   recursive block, degenerate geometry, a dimension without measurement)
//!   never fails the render: it is skipped and listed in
//!   [`RenderOutput::problems`], after the document's own problems.
//!   Errors are only for a bad request, no adapter, or a GPU failure.
//! - **Deterministic.** The same document and request give the same bytes
//!   on the same adapter: no clock, no randomness, no map iteration order
//!   reaches the output. Different GPUs may differ in anti-aliasing by a few
//!   levels along edges (the golden tests allow for it).
//! - **Reuse.** Pipeline, bind group, uniform, vertex and index buffers are
//!   created once per [`Renderer`]; the MSAA, resolve and readback targets
//!   are kept for the last image size and rebuilt only when it changes.
//!   A `Renderer` is `Send + Sync`; renders on one `Renderer` run one at a
//!   time (a worker that wants parallel renders creates several).

mod font;
mod geom;
mod gpu;
mod scene;
mod tess;

use std::io::Cursor;
use std::time::Instant;

use caddy_doc::ResolvedDoc;
use tracing::debug;

use crate::geom::{Affine, P};
use crate::scene::{BoundsSink, Scene, Walker};
use crate::tess::Batcher;

/// Largest width or height of an image, pixels.
pub const MAX_DIMENSION: u32 = 8192;
/// Largest number of pixels of an image (`width × height`).
pub const MAX_PIXELS: u64 = 33_554_432;

/// Why a render failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No GPU (or software) adapter exists. Render workers should stay off.
    #[error("no GPU adapter found (for a software Vulkan adapter install mesa-vulkan-drivers)")]
    NoAdapter,
    /// An adapter exists but a device could not be opened on it.
    #[error("could not open a device on adapter {adapter}: {reason}")]
    Device {
        /// Adapter name.
        adapter: String,
        /// What wgpu said.
        reason: String,
    },
    /// The request is not acceptable (size, view); retrying will not help.
    #[error("invalid render request: {0}")]
    InvalidRequest(String),
    /// The GPU failed while rendering (validation, out of memory, lost
    /// device); another attempt may succeed.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The image could not be encoded.
    #[error("PNG encoding failed: {0}")]
    Encode(String),
}

impl RenderError {
    /// Whether the caller's request is at fault (not the machine).
    pub fn is_invalid_request(&self) -> bool {
        matches!(self, RenderError::InvalidRequest(_))
    }

    /// Whether the same request might succeed later or elsewhere.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RenderError::Gpu(_))
    }
}

/// Which part of the drawing is shown.
#[derive(Clone, Debug, PartialEq)]
pub enum View {
    /// The extents of what is drawn, plus a margin on every side of
    /// `margin_frac` × the larger extent, rotated by `rotation_deg`
    /// (counter-clockwise: the drawing's direction `rotation_deg` points to
    /// the right of the image). Scaled uniformly and centred.
    Fit {
        /// Margin as a fraction of the larger extent, in `0..=10`.
        margin_frac: f64,
        /// View rotation, degrees.
        rotation_deg: f64,
    },
    /// A rectangle of the drawing: `min`/`max` are its corners in the
    /// view's frame, i.e. after rotating the drawing by `-rotation_deg`
    /// about the rectangle's centre `(min + max) / 2`. Scaled uniformly to
    /// fit the image (the other axis shows more) and centred.
    Window {
        /// Lower left corner, drawing units.
        min: [f64; 2],
        /// Upper right corner, drawing units.
        max: [f64; 2],
        /// View rotation, degrees.
        rotation_deg: f64,
    },
}

impl View {
    /// Fit to extents with a 5 % margin and no rotation.
    pub fn fit() -> View {
        View::Fit { margin_frac: 0.05, rotation_deg: 0.0 }
    }
}

/// One image to render.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderRequest {
    /// What part of the drawing.
    pub view: View,
    /// Image width, pixels (1..=8192).
    pub width: u32,
    /// Image height, pixels (1..=8192; width × height ≤ 32 Mi).
    pub height: u32,
    /// Background colour, RGBA (alpha 0 gives a transparent PNG).
    pub background: [u8; 4],
    /// `None`: the layers the document shows as visible; `Some(list)`:
    /// exactly these layer ids, visible or not.
    pub layers: Option<Vec<String>>,
}

impl RenderRequest {
    /// A fit view of the visible layers on white.
    pub fn fit(width: u32, height: u32) -> RenderRequest {
        RenderRequest { view: View::fit(), width, height, background: [255, 255, 255, 255], layers: None }
    }

    /// Checks sizes and view parameters.
    pub fn validate(&self) -> Result<(), RenderError> {
        let bad = |m: String| Err(RenderError::InvalidRequest(m));
        if !(1..=MAX_DIMENSION).contains(&self.width) || !(1..=MAX_DIMENSION).contains(&self.height) {
            return bad(format!("size {}x{} is outside 1..={MAX_DIMENSION} per side", self.width, self.height));
        }
        if u64::from(self.width) * u64::from(self.height) > MAX_PIXELS {
            return bad(format!("size {}x{} exceeds {MAX_PIXELS} pixels", self.width, self.height));
        }
        match &self.view {
            View::Fit { margin_frac, rotation_deg } => {
                if !(0.0..=10.0).contains(margin_frac) {
                    return bad(format!("margin_frac {margin_frac} is outside 0..=10"));
                }
                if !rotation_deg.is_finite() {
                    return bad("rotation_deg is not finite".into());
                }
            }
            View::Window { min, max, rotation_deg } => {
                if !(geom::finite(*min) && geom::finite(*max) && rotation_deg.is_finite()) {
                    return bad("the window must be finite".into());
                }
                if !(max[0] > min[0] && max[1] > min[1]) {
                    return bad(format!("window {min:?}..{max:?} is empty"));
                }
            }
        }
        Ok(())
    }
}

/// A rendered image and what went into it.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderOutput {
    /// The PNG file (RGBA8).
    pub png: Vec<u8>,
    /// Image width, pixels.
    pub width: u32,
    /// Image height, pixels.
    pub height: u32,
    /// Triangles drawn.
    pub triangles: u64,
    /// Entities drawn (an insert and each entity it draws count one each).
    pub entities_drawn: u64,
    /// What could not be drawn: the document's own problems first, then
    /// the renderer's, one line each.
    pub problems: Vec<String>,
}

/// The adapter a [`Renderer`] runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterInfo {
    /// Adapter name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// Backend, e.g. `vulkan`.
    pub backend: String,
    /// Device type, e.g. `Cpu`, `DiscreteGpu`.
    pub device_type: String,
    /// MSAA samples per pixel used (4, or 1 where unsupported).
    pub sample_count: u32,
}

/// Renders drawings; create once, reuse for every request.
pub struct Renderer {
    gpu: gpu::Gpu,
}

impl Renderer {
    /// Probes for an adapter (any backend; a hardware one first, then a
    /// fallback) and builds the pipeline. [`RenderError::NoAdapter`] when
    /// there is none.
    pub async fn create() -> Result<Renderer, RenderError> {
        let gpu = gpu::Gpu::create().await?;
        debug!(adapter = %gpu.info.name, backend = %gpu.info.backend, "renderer ready");
        Ok(Renderer { gpu })
    }

    /// [`Renderer::create`], blocking.
    pub fn new() -> Result<Renderer, RenderError> {
        pollster::block_on(Renderer::create())
    }

    /// The adapter in use.
    pub fn adapter_info(&self) -> AdapterInfo {
        let i = &self.gpu.info;
        AdapterInfo {
            name: i.name.clone(),
            backend: i.backend.to_str().to_owned(),
            device_type: format!("{:?}", i.device_type),
            sample_count: self.gpu.sample_count,
        }
    }

    /// Renders `doc` as `req` says. Entities that cannot be drawn are
    /// skipped and listed in [`RenderOutput::problems`].
    #[tracing::instrument(level = "debug", skip_all, fields(width = req.width, height = req.height))]
    pub fn render(&self, doc: &ResolvedDoc, req: &RenderRequest) -> Result<RenderOutput, RenderError> {
        req.validate()?;
        if req.width > self.gpu.max_dimension || req.height > self.gpu.max_dimension {
            return Err(RenderError::InvalidRequest(format!(
                "size {}x{} exceeds this adapter's limit of {} per side",
                req.width, req.height, self.gpu.max_dimension
            )));
        }
        let started = Instant::now();
        let scene = Scene::new(doc, req.layers.as_deref());
        let view = view_transform(&scene, req);
        let ((triangles, drawn, batches, problems), rgba) =
            self.gpu.render(req.width, req.height, req.background, |passes| {
                let mut batcher = Batcher::new(passes, req.width, req.height);
                let mut walker = Walker::new(&scene, &mut batcher, view, false);
                walker.model_space();
                let drawn = walker.drawn;
                let walker_problems = walker.problems.into_vec();
                let (triangles, batches, tess_problems) = batcher.finish()?;
                let mut problems: Vec<String> = doc.problems.iter().map(scene::describe).collect();
                problems.extend(walker_problems);
                problems.extend(tess_problems);
                Ok((triangles, drawn, batches, problems))
            })?;
        let drawn_at = started.elapsed();
        let png = encode_png(req.width, req.height, &rgba)?;
        debug!(triangles, batches, entities = drawn, ?drawn_at, total = ?started.elapsed(), "rendered");
        Ok(RenderOutput { png, width: req.width, height: req.height, triangles, entities_drawn: drawn, problems })
    }
}

/// Drawing coordinates to pixels (origin top left, y down).
fn view_transform(scene: &Scene<'_>, req: &RenderRequest) -> Affine {
    let (w, h) = (f64::from(req.width), f64::from(req.height));
    let (rotation, center, extent) = match &req.view {
        View::Window { min, max, rotation_deg } => {
            let c = geom::lerp(*min, *max, 0.5);
            // Rotate about the window centre: express the centre in the
            // rotated frame.
            let c_rot = Affine::rotation(-rotation_deg).apply(c);
            (*rotation_deg, c_rot, [max[0] - min[0], max[1] - min[1]])
        }
        View::Fit { margin_frac, rotation_deg } => {
            let rot = Affine::rotation(-rotation_deg);
            let mut sink = BoundsSink(geom::Bounds::empty());
            let mut walker = Walker::new(scene, &mut sink, rot, true);
            walker.model_space();
            let b = if sink.0.is_empty() { geom::Bounds { min: [0.0, 0.0], max: [100.0, 100.0] } } else { sink.0 };
            let (mut w0, mut h0) = (b.max[0] - b.min[0], b.max[1] - b.min[1]);
            if w0 < 1e-9 && h0 < 1e-9 {
                (w0, h0) = (1.0, 1.0);
            }
            let m = w0.max(h0) * margin_frac;
            (*rotation_deg, geom::lerp(b.min, b.max, 0.5), [w0 + 2.0 * m, h0 + 2.0 * m])
        }
    };
    let s = (w / extent[0].max(1e-300)).min(h / extent[1].max(1e-300));
    let to_px = Affine { a: s, b: 0.0, c: 0.0, d: -s, e: w / 2.0 - s * center[0], f: h / 2.0 + s * center[1] };
    to_px.then_inner(&Affine::rotation(-rotation))
}

fn encode_png(width: u32, height: u32, rgba: &[u8]) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(Cursor::new(&mut out), width, height);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut w = enc.write_header().map_err(|e| RenderError::Encode(e.to_string()))?;
        w.write_image_data(rgba).map_err(|e| RenderError::Encode(e.to_string()))?;
        w.finish().map_err(|e| RenderError::Encode(e.to_string()))?;
    }
    Ok(out)
}

/// Where the drawing point `p` lands in the image `req` describes, in
/// pixels (origin top left, y down; pixel `(i, j)` covers `[i, i + 1) ×
/// [j, j + 1)`). Computes the same view transform as [`Renderer::render`]
/// (a fit view measures the drawing), without a GPU.
pub fn project(doc: &ResolvedDoc, req: &RenderRequest, p: [f64; 2]) -> [f64; 2] {
    let scene = Scene::new(doc, req.layers.as_deref());
    let v: P = view_transform(&scene, req).apply(p);
    v
}
