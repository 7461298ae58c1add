//! Render jobs: a CAD document at a version turned into an image by a node
//! with a working graphics adapter, scheduled through Raft.
//!
//! A job's life: `queued` (submitted) → `running` (claimed by a worker with
//! a lease, recorded through Raft) → `done` (the image's chunks are in the
//! blob store, referenced by the job) or `failed` (the error kept) or
//! `cancelled`. A lease that runs out puts the job back in the queue for
//! another worker, up to a bounded number of attempts.
//!
//! **Invariants** (judged in apply, by stamped time only):
//! - A worker's claim, renewal and result carry the job's attempt number; a
//!   result or renewal for an attempt that is no longer the current one (its
//!   lease ran out and another worker took the job) is refused, so a job
//!   completes at most once.
//! - Identical requests (same document, same resolved version, same view,
//!   size, background and layers) share one job and one image.
//! - Every spec is validated before it is recorded: sizes within
//!   [`MAX_RENDER_SIDE`] and [`MAX_RENDER_PIXELS`], finite view numbers,
//!   bounded layer lists.

use serde::{Deserialize, Serialize};

use crate::docs::DocId;
use crate::error::CaddyError;
use crate::files::ChunkRef;

/// Largest width or height of a rendered image, in pixels.
pub const MAX_RENDER_SIDE: u32 = 8192;
/// Largest width × height of a rendered image (32 Mpx: 128 MiB of RGBA).
pub const MAX_RENDER_PIXELS: u64 = 32 * 1024 * 1024;
/// Most layers a request may name.
pub const MAX_RENDER_LAYERS: usize = 256;
/// Attempts a job gets before it fails (a lost worker costs one).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Problems kept per finished job (the rest are counted).
pub const MAX_JOB_PROBLEMS: usize = 50;
/// Longest error message kept for a failed job.
pub const MAX_JOB_ERROR_BYTES: usize = 2048;

/// A render job id: `job-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl JobId {
    /// Parses `job-N` (or a bare `N`).
    pub fn parse(s: &str) -> Result<JobId, CaddyError> {
        let digits = s.strip_prefix("job-").unwrap_or(s);
        match digits.parse::<u64>() {
            Ok(n) if n > 0 && !digits.starts_with('0') && !digits.starts_with('+') => Ok(JobId(n)),
            _ => Err(CaddyError::invalid(format!("{s:?} is not a render job id (job-N)"))),
        }
    }
    /// Fixed-width form for storage keys, so keys sort by id.
    pub fn key_part(&self) -> String {
        format!("{:016x}", self.0)
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "job-{}", self.0)
    }
}

/// Which part of the drawing the image shows. Externally tagged (JSON
/// `{"fit": {...}}` or `{"window": {...}}`): specs are also stored with
/// postcard, which cannot read internally tagged enums.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenderView {
    /// Everything drawn, scaled to fit with a margin (fraction of the
    /// smaller side, 0 to 0.45), rotated about its centre.
    Fit {
        #[serde(default = "default_margin")]
        margin: f64,
        #[serde(default)]
        rotation_deg: f64,
    },
    /// A window in drawing units, rotated about its centre.
    Window {
        min: [f64; 2],
        max: [f64; 2],
        #[serde(default)]
        rotation_deg: f64,
    },
}

fn default_margin() -> f64 {
    0.05
}

impl Default for RenderView {
    fn default() -> Self {
        RenderView::Fit { margin: default_margin(), rotation_deg: 0.0 }
    }
}

/// What to render. `version: None` means the document's latest committed
/// change, resolved to a number when the job is recorded.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderSpec {
    pub doc: DocId,
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub view: RenderView,
    pub width: u32,
    pub height: u32,
    /// RGBA background.
    #[serde(default = "white")]
    pub background: [u8; 4],
    /// Only these layers (by id); `None`: the layers the document shows.
    #[serde(default)]
    pub layers: Option<Vec<String>>,
}

fn white() -> [u8; 4] {
    [255, 255, 255, 255]
}

impl RenderSpec {
    /// Refuses sizes, views and layer lists the renderer must not be given.
    pub fn validate(&self) -> Result<(), CaddyError> {
        if self.width == 0 || self.height == 0 {
            return Err(CaddyError::invalid(format!("image size {}x{} has a zero side", self.width, self.height)));
        }
        if self.width > MAX_RENDER_SIDE || self.height > MAX_RENDER_SIDE {
            return Err(CaddyError::invalid(format!(
                "image size {}x{} exceeds {MAX_RENDER_SIDE} pixels on a side",
                self.width, self.height
            )));
        }
        if u64::from(self.width) * u64::from(self.height) > MAX_RENDER_PIXELS {
            return Err(CaddyError::invalid(format!(
                "image size {}x{} exceeds {MAX_RENDER_PIXELS} pixels",
                self.width, self.height
            )));
        }
        match &self.view {
            RenderView::Fit { margin, rotation_deg } => {
                if !margin.is_finite() || !(0.0..=0.45).contains(margin) {
                    return Err(CaddyError::invalid("a fit margin is a fraction from 0 to 0.45"));
                }
                finite_angle(*rotation_deg)?;
            }
            RenderView::Window { min, max, rotation_deg } => {
                let all = [min[0], min[1], max[0], max[1]];
                if all.iter().any(|v| !v.is_finite() || v.abs() > 1e12) {
                    return Err(CaddyError::invalid("a view window needs finite coordinates within ±1e12"));
                }
                if max[0] <= min[0] || max[1] <= min[1] {
                    return Err(CaddyError::invalid("a view window's max must exceed its min on both axes"));
                }
                finite_angle(*rotation_deg)?;
            }
        }
        if let Some(layers) = &self.layers {
            if layers.len() > MAX_RENDER_LAYERS {
                return Err(CaddyError::invalid(format!("at most {MAX_RENDER_LAYERS} layers may be named")));
            }
            if layers.iter().any(|l| l.is_empty() || l.len() > 64) {
                return Err(CaddyError::invalid("a layer id is 1 to 64 bytes"));
            }
        }
        Ok(())
    }

    /// The deduplication key of this spec at `version` (blake3 over its
    /// canonical encoding; layer order does not matter).
    pub fn dedup_key(&self, version: u64) -> [u8; 32] {
        let mut canonical = self.clone();
        canonical.version = Some(version);
        if let Some(layers) = &mut canonical.layers {
            layers.sort();
            layers.dedup();
        }
        // postcard is deterministic: fields in declaration order, floats as
        // their IEEE bytes.
        let bytes = postcard::to_allocvec(&canonical).unwrap_or_default();
        *blake3::hash(&bytes).as_bytes()
    }
}

fn finite_angle(deg: f64) -> Result<(), CaddyError> {
    if deg.is_finite() && deg.abs() <= 360.0 {
        Ok(())
    } else {
        Err(CaddyError::invalid("a rotation is an angle in degrees from -360 to 360"))
    }
}

/// A finished job's image, stored as blob-store chunks of the tenant.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderImage {
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
    pub width: u32,
    pub height: u32,
    pub triangles: u64,
    pub render_ms: u64,
    /// Entities that could not be drawn (at most [`MAX_JOB_PROBLEMS`]).
    pub problems: Vec<String>,
    /// How many problems there were in all.
    pub problem_count: u64,
    /// The adapter that drew it.
    pub adapter: String,
}

/// How a worker's attempt ended.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RenderOutcome {
    Done(RenderImage),
    /// The job cannot succeed (unknown version, nothing renderable): fail
    /// it now, without further attempts.
    Failed(String),
    /// This attempt broke (adapter lost, out of memory): retry elsewhere
    /// while attempts remain.
    Retry(String),
}

/// A job's state as clients see it.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    /// Whether the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
}

/// A render job as answered to clients.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    pub doc: String,
    /// The document change rendered.
    pub version: u64,
    pub spec: RenderSpec,
    pub state: JobState,
    pub attempts: u32,
    /// Node running it (while running), or that finished it.
    pub node: Option<u64>,
    pub error: Option<String>,
    pub created_ms: u64,
    pub created_by: String,
    pub finished_ms: Option<u64>,
    pub image: Option<RenderImageView>,
    /// This answer names an existing job for an identical request.
    #[serde(default)]
    pub deduplicated: bool,
    /// Submitted by the cluster for the tenant's automatic thumbnails.
    #[serde(default)]
    pub thumbnail: bool,
}

/// A finished image's description (its bytes come with a download).
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderImageView {
    pub size: u64,
    pub width: u32,
    pub height: u32,
    pub triangles: u64,
    pub render_ms: u64,
    pub problems: Vec<String>,
    pub problem_count: u64,
    pub adapter: String,
}

impl From<&RenderImage> for RenderImageView {
    fn from(i: &RenderImage) -> Self {
        RenderImageView {
            size: i.size,
            width: i.width,
            height: i.height,
            triangles: i.triangles,
            render_ms: i.render_ms,
            problems: i.problems.clone(),
            problem_count: i.problem_count,
            adapter: i.adapter.clone(),
        }
    }
}

/// A client's render write, proposed through Raft as an identity-checked
/// call (`docs:read` on the tenant; cancelling someone else's job also
/// needs `docs:admin`, checked in apply). New variants go at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum RenderOp {
    Submit {
        spec: RenderSpec,
    },
    Cancel {
        job: JobId,
    },
    /// Automatic thumbnails of every committed document change, at this
    /// size (`None`: off). Needs `docs:admin`.
    Thumbnails {
        size: Option<[u32; 2]>,
    },
}

impl RenderOp {
    /// Name for logs, metrics and the audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            RenderOp::Submit { .. } => "render.submit",
            RenderOp::Cancel { .. } => "render.cancel",
            RenderOp::Thumbnails { .. } => "render.thumbnails",
        }
    }

    /// What the audit entry names.
    pub fn resource(&self) -> String {
        match self {
            RenderOp::Submit { spec } => format!("render of {}", spec.doc),
            RenderOp::Cancel { job } => job.to_string(),
            RenderOp::Thumbnails { size: Some([w, h]) } => format!("thumbnails {w}x{h}"),
            RenderOp::Thumbnails { size: None } => "thumbnails off".into(),
        }
    }
}

/// A job a worker has claimed: everything it needs to render it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RenderClaim {
    pub tenant: String,
    pub job: JobId,
    pub attempt: u32,
    pub version: u64,
    pub spec: RenderSpec,
}

/// A client's render request (JSON, tag `op`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum RenderCall {
    /// Records a job (or finds the identical one); answers `job`.
    Submit { spec: RenderSpec },
    /// One job; answers `job`.
    Get { job: String },
    /// The tenant's jobs, newest first, paged; answers `jobs`.
    List {
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Cancels a queued or running job; answers `job`.
    Cancel { job: String },
    /// Answers `job` once the job is final, or when `timeout_ms` passes
    /// (the job as it is then).
    Wait {
        job: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// A finished job's image: answers `image`, then the PNG bytes as
    /// payload frames.
    Image { job: String },
    /// The tenant's automatic thumbnail setting: with `set`, changes it
    /// first (`{"size": [w, h]}` on, `{"size": null}` off; `docs:admin`).
    /// Answers `thumbnails`.
    Thumbnails {
        #[serde(default)]
        set: Option<ThumbnailSetting>,
    },
    /// The newest finished thumbnail of a document; answers `job` (its
    /// image comes with `image`).
    Thumbnail { doc: String },
}

/// The tenant's automatic thumbnails: their size, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThumbnailSetting {
    /// Width and height in pixels; `None` when thumbnails are off.
    pub size: Option<[u32; 2]>,
}

impl ThumbnailSetting {
    /// The render spec of a thumbnail of `doc` at `version` under this
    /// setting (`None` when off): the whole drawing fitted, every layer, on
    /// white.
    pub fn spec(&self, doc: DocId, version: u64) -> Option<RenderSpec> {
        let [width, height] = self.size?;
        Some(RenderSpec {
            doc,
            version: Some(version),
            view: RenderView::default(),
            width,
            height,
            background: [255, 255, 255, 255],
            layers: None,
        })
    }
}

/// A render answer (JSON, tag `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum RenderAnswer {
    Job(JobView),
    Jobs {
        jobs: Vec<JobView>,
        next: Option<String>,
    },
    /// The image's bytes follow (`size` of them).
    Image {
        job: JobView,
        size: u64,
    },
    Thumbnails(ThumbnailSetting),
}

/// Bounds a worker's error text to [`MAX_JOB_ERROR_BYTES`] on a character
/// boundary.
pub fn bounded_error(message: &str) -> String {
    if message.len() <= MAX_JOB_ERROR_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_JOB_ERROR_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RenderSpec {
        RenderSpec {
            doc: DocId(1),
            version: None,
            view: RenderView::default(),
            width: 640,
            height: 480,
            background: white(),
            layers: None,
        }
    }

    #[test]
    fn specs_out_of_bounds_are_refused() {
        assert!(spec().validate().is_ok());
        for (w, h) in [(0, 10), (10, 0), (8193, 10), (8192, 8192)] {
            let s = RenderSpec { width: w, height: h, ..spec() };
            assert!(s.validate().is_err(), "{w}x{h}");
        }
        let window = |min: [f64; 2], max: [f64; 2]| RenderSpec {
            view: RenderView::Window { min, max, rotation_deg: 0.0 },
            ..spec()
        };
        assert!(window([0.0, 0.0], [10.0, 5.0]).validate().is_ok());
        assert!(window([0.0, 0.0], [0.0, 5.0]).validate().is_err());
        assert!(window([0.0, f64::NAN], [1.0, 5.0]).validate().is_err());
        assert!(window([0.0, 0.0], [1e13, 5.0]).validate().is_err());
        let fit = RenderSpec { view: RenderView::Fit { margin: 0.5, rotation_deg: 0.0 }, ..spec() };
        assert!(fit.validate().is_err());
        let spun = RenderSpec { view: RenderView::Fit { margin: 0.1, rotation_deg: f64::INFINITY }, ..spec() };
        assert!(spun.validate().is_err());
        let many = RenderSpec { layers: Some(vec!["a".into(); MAX_RENDER_LAYERS + 1]), ..spec() };
        assert!(many.validate().is_err());
    }

    #[test]
    fn dedup_keys_ignore_layer_order_and_see_every_other_field() {
        let a = RenderSpec { layers: Some(vec!["walls".into(), "doors".into()]), ..spec() };
        let b = RenderSpec { layers: Some(vec!["doors".into(), "walls".into()]), ..spec() };
        assert_eq!(a.dedup_key(3), b.dedup_key(3));
        assert_ne!(a.dedup_key(3), a.dedup_key(4));
        assert_ne!(spec().dedup_key(3), RenderSpec { width: 641, ..spec() }.dedup_key(3));
        assert_ne!(spec().dedup_key(3), RenderSpec { background: [0, 0, 0, 255], ..spec() }.dedup_key(3));
        assert_ne!(spec().dedup_key(3), a.dedup_key(3));
        // `latest` and the number it resolved to are the same request.
        assert_eq!(spec().dedup_key(3), RenderSpec { version: Some(3), ..spec() }.dedup_key(3));
    }

    #[test]
    fn job_ids_and_errors() {
        assert_eq!(JobId::parse("job-12").map(|j| j.to_string()).ok(), Some("job-12".into()));
        assert!(JobId::parse("job-0").is_err() && JobId::parse("job-x").is_err() && JobId::parse("07").is_err());
        let long = "é".repeat(MAX_JOB_ERROR_BYTES);
        let b = bounded_error(&long);
        assert!(b.len() <= MAX_JOB_ERROR_BYTES + 3 && b.ends_with('…'));
    }
}
