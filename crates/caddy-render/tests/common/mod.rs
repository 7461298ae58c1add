//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::OnceLock;

use caddy_doc::{Document, EditOp, Limits, NewDocument, ResolvedDoc, Units};
use caddy_render::{RenderOutput, RenderRequest, Renderer, View};

/// Per channel, the most two renders of one golden may differ by.
pub const CHANNEL_TOLERANCE: u8 = 24;
/// Per channel, the most they may differ by at an anti-aliased edge: one
/// 4x MSAA coverage step (64 levels) plus rounding.
pub const EDGE_TOLERANCE: u8 = 80;
/// The share of pixels that may differ by more than that.
pub const PIXEL_FRACTION: f64 = 0.005;

/// The renderer shared by the tests of one binary. No adapter is a test
/// failure, never a skip.
pub fn renderer() -> &'static Renderer {
    static R: OnceLock<Result<Renderer, String>> = OnceLock::new();
    match R.get_or_init(|| Renderer::new().map_err(|e| e.to_string())) {
        Ok(r) => r,
        Err(e) => panic!(
            "caddy-render tests need a GPU or software Vulkan adapter and found none ({e}). \
             Install Mesa's lavapipe: `apt-get install mesa-vulkan-drivers` (CI does)."
        ),
    }
}

/// A document built from JSON edit operations.
pub fn doc_from_ops(json: &str) -> Document {
    let mut doc = Document::new(
        1,
        NewDocument { name: "test".into(), units: Units::Millimeters, created_by: "test".into(), created_at_ms: 0 },
        Limits::default(),
    )
    .expect("new document");
    let ops: Vec<EditOp> = serde_json::from_str(json).expect("ops parse");
    doc.apply_ops(&ops).expect("ops apply");
    doc
}

/// A square window `0..size` in both axes.
pub fn window(size: f64) -> View {
    View::Window { min: [0.0, 0.0], max: [size, size], rotation_deg: 0.0 }
}

/// A white `w × h` request.
pub fn request(view: View, w: u32, h: u32) -> RenderRequest {
    RenderRequest { view, width: w, height: h, background: [255, 255, 255, 255], layers: None }
}

pub fn render(doc: &ResolvedDoc, req: &RenderRequest) -> RenderOutput {
    renderer().render(doc, req).expect("render")
}

/// Decoded RGBA8 pixels.
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

impl Image {
    pub fn decode(png_bytes: &[u8]) -> Image {
        let mut reader = png::Decoder::new(Cursor::new(png_bytes)).read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
        let info = reader.next_frame(&mut buf).expect("png data");
        assert_eq!(info.color_type, png::ColorType::Rgba, "expected RGBA");
        buf.truncate(info.buffer_size());
        Image { width: info.width, height: info.height, rgba: buf }
    }

    pub fn px(&self, x: u32, y: u32) -> [u8; 4] {
        let i = ((y * self.width + x) * 4) as usize;
        [self.rgba[i], self.rgba[i + 1], self.rgba[i + 2], self.rgba[i + 3]]
    }

    /// The pixel under pixel-space point `p`.
    pub fn at(&self, p: [f64; 2]) -> [u8; 4] {
        self.px(p[0].floor() as u32, p[1].floor() as u32)
    }

    /// Whether any pixel within `r` of `p` differs from `bg` by more than 64
    /// in some channel (i.e. something is drawn there).
    pub fn ink_near(&self, p: [f64; 2], r: i64, bg: [u8; 4]) -> bool {
        let (cx, cy) = (p[0].floor() as i64, p[1].floor() as i64);
        for y in cy - r..=cy + r {
            for x in cx - r..=cx + r {
                if x < 0 || y < 0 || x >= i64::from(self.width) || y >= i64::from(self.height) {
                    continue;
                }
                let c = self.px(x as u32, y as u32);
                if (0..4).any(|k| c[k].abs_diff(bg[k]) > 64) {
                    return true;
                }
            }
        }
        false
    }
}

/// Pixels that do not match: some channel differs by more than
/// [`CHANNEL_TOLERANCE`], or, at an anti-aliased edge of the reference
/// (a pixel differing from one of its 8 neighbours by more than
/// [`CHANNEL_TOLERANCE`]), by more than [`EDGE_TOLERANCE`].
pub fn differing_pixels(reference: &Image, actual: &Image) -> usize {
    assert_eq!((reference.width, reference.height), (actual.width, actual.height), "image sizes differ");
    let (w, h) = (reference.width as i64, reference.height as i64);
    let diff = |a: [u8; 4], b: [u8; 4]| (0..4).map(|k| a[k].abs_diff(b[k])).max().unwrap_or(0);
    let mut bad = 0;
    for y in 0..h {
        for x in 0..w {
            let r = reference.px(x as u32, y as u32);
            let d = diff(r, actual.px(x as u32, y as u32));
            if d <= CHANNEL_TOLERANCE {
                continue;
            }
            let edge = (-1..=1i64).any(|dy| {
                (-1..=1i64).any(|dx| {
                    let (nx, ny) = (x + dx, y + dy);
                    nx >= 0
                        && ny >= 0
                        && nx < w
                        && ny < h
                        && diff(r, reference.px(nx as u32, ny as u32)) > CHANNEL_TOLERANCE
                })
            });
            if !edge || d > EDGE_TOLERANCE {
                bad += 1;
            }
        }
    }
    bad
}

/// Most differing pixels allowed for an image of this size.
pub fn allowed(img: &Image) -> usize {
    (f64::from(img.width) * f64::from(img.height) * PIXEL_FRACTION) as usize
}

pub fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.png"))
}

/// Compares with `tests/golden/NAME.png`; `UPDATE_GOLDEN=1` rewrites it.
/// On a mismatch the actual image is written next to the target dir for
/// inspection.
pub fn check_golden(name: &str, out: &RenderOutput) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &out.png).expect("write golden");
        return;
    }
    let expected_bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    let expected = Image::decode(&expected_bytes);
    let actual = Image::decode(&out.png);
    let bad = differing_pixels(&expected, &actual);
    if bad > allowed(&expected) {
        let dir = std::env::temp_dir().join("caddy-render-golden");
        let _ = std::fs::create_dir_all(&dir);
        let keep = dir.join(format!("{name}.actual.png"));
        let _ = std::fs::write(&keep, &out.png);
        panic!(
            "{name}: {bad} pixels differ by more than {CHANNEL_TOLERANCE} (allowed {}); actual image: {}",
            allowed(&expected),
            keep.display()
        );
    }
}
