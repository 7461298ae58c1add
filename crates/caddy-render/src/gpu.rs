//! The wgpu side: adapter and device, the one pipeline, reused buffers,
//! size-keyed render targets, batch submission and readback.

use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{debug, warn};
use wgpu::util::align_to;

use crate::RenderError;
use crate::tess::{BATCH_BYTES, BatchTarget, Vertex};

/// Colour format of the offscreen targets.
const FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;
/// Wanted MSAA sample count.
const MSAA: u32 = 4;

const SHADER: &str = r#"
// Vertices arrive in pixels (origin top left, y down); the uniform holds
// the target size in pixels.
struct Viewport { size: vec2<f32>, pad: vec2<f32> };
@group(0) @binding(0) var<uniform> viewport: Viewport;

struct VsOut {
    @builtin(position) position: vec4<f32>,
    @location(0) color: vec4<f32>,
};

@vertex
fn vs_main(@location(0) pos: vec2<f32>, @location(1) color: vec4<f32>) -> VsOut {
    var out: VsOut;
    let ndc = vec2<f32>(pos.x / viewport.size.x * 2.0 - 1.0, 1.0 - pos.y / viewport.size.y * 2.0);
    out.position = vec4<f32>(ndc, 0.0, 1.0);
    out.color = color;
    return out;
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    return in.color;
}
"#;

/// Offscreen targets for one image size.
struct Targets {
    width: u32,
    height: u32,
    /// The multisampled texture drawn into (`None` without MSAA).
    msaa: Option<wgpu::TextureView>,
    resolve: wgpu::Texture,
    resolve_view: wgpu::TextureView,
    readback: wgpu::Buffer,
    padded_row: u32,
}

/// Batches in flight at once: the CPU tessellates the next batch while the
/// GPU draws the last one.
const SLOTS: usize = 2;

/// One vertex + index buffer pair and the submission that last used it.
struct Slot {
    vertices: wgpu::Buffer,
    indices: wgpu::Buffer,
    in_flight: Option<wgpu::SubmissionIndex>,
}

/// What one render holds exclusively.
pub(crate) struct Frame {
    targets: Option<Targets>,
    slots: [Slot; SLOTS],
}

/// Device-level state, created once.
pub(crate) struct Gpu {
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) sample_count: u32,
    pub(crate) max_dimension: u32,
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::RenderPipeline,
    uniform: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    frame: Mutex<Frame>,
    /// The last error wgpu reported outside an error scope.
    uncaptured: Arc<Mutex<Option<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Gpu {
    pub(crate) async fn create() -> Result<Gpu, RenderError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::all(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let mut adapter = None;
        for force_fallback_adapter in [false, true] {
            let opts = wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter,
                compatible_surface: None,
                apply_limit_buckets: false,
            };
            match instance.request_adapter(&opts).await {
                Ok(a) => {
                    adapter = Some(a);
                    break;
                }
                Err(e) => debug!(force_fallback_adapter, error = %e, "no adapter"),
            }
        }
        let adapter = adapter.ok_or(RenderError::NoAdapter)?;
        let info = adapter.get_info();
        let sample_count = if adapter.get_texture_format_features(FORMAT).flags.sample_count_supported(MSAA) {
            MSAA
        } else {
            warn!(adapter = %info.name, "{MSAA}x MSAA of {FORMAT:?} unsupported; rendering without anti-aliasing");
            1
        };
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("caddy-render"),
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| RenderError::Device { adapter: info.name.clone(), reason: e.to_string() })?;
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            warn!(error = %e, "uncaptured wgpu error");
            *lock(&sink) = Some(e.to_string());
        }));

        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("caddy-render shader"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("caddy-render viewport"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::VERTEX,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
        let uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("caddy-render viewport"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("caddy-render viewport"),
            layout: &bgl,
            entries: &[wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }],
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("caddy-render"),
            bind_group_layouts: &[Some(&bgl)],
            immediate_size: 0,
        });
        let attributes = wgpu::vertex_attr_array![0 => Float32x2, 1 => Unorm8x4];
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("caddy-render"),
            layout: Some(&layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                compilation_options: Default::default(),
                buffers: &[Some(wgpu::VertexBufferLayout {
                    array_stride: std::mem::size_of::<Vertex>() as u64,
                    step_mode: wgpu::VertexStepMode::Vertex,
                    attributes: &attributes,
                })],
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState { count: sample_count, mask: !0, alpha_to_coverage_enabled: false },
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                compilation_options: Default::default(),
                targets: &[Some(wgpu::ColorTargetState {
                    format: FORMAT,
                    blend: Some(wgpu::BlendState::ALPHA_BLENDING),
                    write_mask: wgpu::ColorWrites::ALL,
                })],
            }),
            multiview_mask: None,
            cache: None,
        });
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: BATCH_BYTES as u64,
                usage: usage | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let slot = || Slot {
            vertices: buffer("caddy-render vertices", wgpu::BufferUsages::VERTEX),
            indices: buffer("caddy-render indices", wgpu::BufferUsages::INDEX),
            in_flight: None,
        };
        let frame = Frame { targets: None, slots: [slot(), slot()] };
        Ok(Gpu {
            sample_count,
            max_dimension: limits.max_texture_dimension_2d,
            info,
            device,
            queue,
            pipeline,
            uniform,
            bind_group,
            frame: Mutex::new(frame),
            uncaptured,
        })
    }

    /// Runs `draw` with a pass sequence over a `width × height` target
    /// cleared to `background`, then reads the image back as tightly
    /// packed RGBA8 rows.
    pub(crate) fn render<R>(
        &self,
        width: u32,
        height: u32,
        background: [u8; 4],
        draw: impl FnOnce(&mut Passes<'_>) -> Result<R, RenderError>,
    ) -> Result<(R, Vec<u8>), RenderError> {
        let mut frame = lock(&self.frame);
        let scope_oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let scope_val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result = self.render_scoped(&mut frame, width, height, background, draw);
        let val = pollster::block_on(scope_val.pop());
        let oom = pollster::block_on(scope_oom.pop());
        if let Some(e) = oom.or(val) {
            // Targets may be in a bad state: rebuild them next time.
            frame.targets = None;
            return Err(RenderError::Gpu(e.to_string()));
        }
        if let Some(e) = lock(&self.uncaptured).take() {
            frame.targets = None;
            return Err(RenderError::Gpu(e));
        }
        result
    }

    fn render_scoped<R>(
        &self,
        frame: &mut Frame,
        width: u32,
        height: u32,
        background: [u8; 4],
        draw: impl FnOnce(&mut Passes<'_>) -> Result<R, RenderError>,
    ) -> Result<(R, Vec<u8>), RenderError> {
        if frame.targets.as_ref().is_none_or(|t| t.width != width || t.height != height) {
            frame.targets = None; // free the old ones first
            frame.targets = Some(self.targets(width, height));
        }
        let Frame { targets, slots } = frame;
        let targets = targets.as_ref().ok_or_else(|| RenderError::Gpu("render targets missing".into()))?;
        let size: [f32; 4] = [width as f32, height as f32, 0.0, 0.0];
        self.queue.write_buffer(&self.uniform, 0, bytemuck::cast_slice(&size));
        let mut passes = Passes { gpu: self, targets, slots, background, passes: 0 };
        let r = draw(&mut passes)?;
        if passes.passes == 0 {
            // Nothing drawn: one pass clears to the background.
            passes.pass(&[], &[])?;
        }
        let pixels = self.read_back(targets)?;
        Ok((r, pixels))
    }

    fn targets(&self, width: u32, height: u32) -> Targets {
        let size = wgpu::Extent3d { width, height, depth_or_array_layers: 1 };
        let texture = |label, sample_count, usage| {
            self.device.create_texture(&wgpu::TextureDescriptor {
                label: Some(label),
                size,
                mip_level_count: 1,
                sample_count,
                dimension: wgpu::TextureDimension::D2,
                format: FORMAT,
                usage,
                view_formats: &[],
            })
        };
        let msaa = (self.sample_count > 1).then(|| {
            texture("caddy-render msaa", self.sample_count, wgpu::TextureUsages::RENDER_ATTACHMENT)
                .create_view(&Default::default())
        });
        let resolve =
            texture("caddy-render resolve", 1, wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC);
        let resolve_view = resolve.create_view(&Default::default());
        let padded_row = align_to(width * 4, wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
        let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("caddy-render readback"),
            size: u64::from(padded_row) * u64::from(height),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        debug!(width, height, sample_count = self.sample_count, "created render targets");
        Targets { width, height, msaa, resolve, resolve_view, readback, padded_row }
    }

    fn read_back(&self, t: &Targets) -> Result<Vec<u8>, RenderError> {
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &t.resolve,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &t.readback,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(t.padded_row),
                    rows_per_image: Some(t.height),
                },
            },
            wgpu::Extent3d { width: t.width, height: t.height, depth_or_array_layers: 1 },
        );
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        t.readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait(None)?;
        rx.recv()
            .map_err(|_| RenderError::Gpu("readback mapping was dropped".into()))?
            .map_err(|e| RenderError::Gpu(format!("readback mapping failed: {e}")))?;
        let row = t.width as usize * 4;
        let mut pixels = Vec::with_capacity(row * t.height as usize);
        {
            let view = t.readback.get_mapped_range(..).map_err(|e| RenderError::Gpu(format!("readback: {e}")))?;
            for r in 0..t.height as usize {
                let start = r * t.padded_row as usize;
                pixels.extend_from_slice(view.get(start..start + row).unwrap_or(&[]));
            }
        }
        t.readback.unmap();
        if pixels.len() != row * t.height as usize {
            return Err(RenderError::Gpu("readback was short".into()));
        }
        Ok(pixels)
    }

    /// Waits for `submission` (`None`: for everything submitted).
    fn wait(&self, submission: Option<wgpu::SubmissionIndex>) -> Result<(), RenderError> {
        self.device
            .poll(wgpu::PollType::Wait { submission_index: submission, timeout: None })
            .map(|_| ())
            .map_err(|e| RenderError::Gpu(format!("waiting for the GPU: {e}")))
    }
}

/// Draws batches into the current target, one render pass per batch: the
/// first pass clears, the later ones load what is there (painter's order
/// across batches).
pub(crate) struct Passes<'f> {
    gpu: &'f Gpu,
    targets: &'f Targets,
    slots: &'f mut [Slot; SLOTS],
    background: [u8; 4],
    passes: u64,
}

impl Passes<'_> {
    fn pass(&mut self, vertices: &[Vertex], indices: &[u32]) -> Result<(), RenderError> {
        let gpu = self.gpu;
        let slot = &mut self.slots[(self.passes % SLOTS as u64) as usize];
        // Each buffer write stages a copy: waiting until the slot's last
        // batch is drawn bounds memory to SLOTS batches in flight.
        if let Some(done) = slot.in_flight.take() {
            gpu.wait(Some(done))?;
        }
        if !indices.is_empty() {
            gpu.queue.write_buffer(&slot.vertices, 0, bytemuck::cast_slice(vertices));
            gpu.queue.write_buffer(&slot.indices, 0, bytemuck::cast_slice(indices));
        }
        let load = if self.passes == 0 {
            let c = |v: u8| f64::from(v) / 255.0;
            let [r, g, b, a] = self.background;
            wgpu::LoadOp::Clear(wgpu::Color { r: c(r), g: c(g), b: c(b), a: c(a) })
        } else {
            wgpu::LoadOp::Load
        };
        let t = self.targets;
        let (view, resolve_target) = match &t.msaa {
            Some(msaa) => (msaa, Some(&t.resolve_view)),
            None => (&t.resolve_view, None),
        };
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("caddy-render batch"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view,
                    depth_slice: None,
                    resolve_target,
                    ops: wgpu::Operations { load, store: wgpu::StoreOp::Store },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            if !indices.is_empty() {
                pass.set_pipeline(&gpu.pipeline);
                pass.set_bind_group(0, &gpu.bind_group, &[]);
                let vbytes = std::mem::size_of_val(vertices) as u64;
                let ibytes = std::mem::size_of_val(indices) as u64;
                pass.set_vertex_buffer(0, slot.vertices.slice(..vbytes));
                pass.set_index_buffer(slot.indices.slice(..ibytes), wgpu::IndexFormat::Uint32);
                pass.draw_indexed(0..indices.len() as u32, 0, 0..1);
            }
        }
        slot.in_flight = Some(gpu.queue.submit([encoder.finish()]));
        self.passes += 1;
        Ok(())
    }
}

impl BatchTarget for Passes<'_> {
    fn draw(&mut self, vertices: &[Vertex], indices: &[u32]) -> Result<(), RenderError> {
        self.pass(vertices, indices)
    }
}
