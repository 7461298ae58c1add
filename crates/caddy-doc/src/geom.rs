//! Small 2-D geometry helpers in `f64`, shared by the resolver, the SVG
//! export and the GPU renderer (`caddy-render`), so that every way of
//! drawing a document agrees on the same curves: angles in degrees,
//! counter-clockwise from +x.

use crate::model::Point;

/// Degrees to radians.
pub fn rad(deg: f64) -> f64 {
    deg.to_radians()
}

/// The point at distance `r` from `c` in direction `deg`.
pub fn polar(c: Point, r: f64, deg: f64) -> Point {
    let a = rad(deg);
    [c[0] + r * a.cos(), c[1] + r * a.sin()]
}

/// `a + b`.
pub fn add(a: Point, b: Point) -> Point {
    [a[0] + b[0], a[1] + b[1]]
}

/// `a - b`.
pub fn sub(a: Point, b: Point) -> Point {
    [a[0] - b[0], a[1] - b[1]]
}

/// `a * k`.
pub fn scale(a: Point, k: f64) -> Point {
    [a[0] * k, a[1] * k]
}

/// Dot product.
pub fn dot(a: Point, b: Point) -> f64 {
    a[0] * b[0] + a[1] * b[1]
}

/// Euclidean length.
pub fn len(a: Point) -> f64 {
    a[0].hypot(a[1])
}

/// `a + (b - a) * t`.
pub fn lerp(a: Point, b: Point, t: f64) -> Point {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]
}

/// Left normal (the vector rotated 90° counter-clockwise).
pub fn perp(a: Point) -> Point {
    [-a[1], a[0]]
}

/// `a` scaled to length 1 (`[1, 0]` for the zero vector).
pub fn normalize(a: Point) -> Point {
    let l = len(a);
    if l > 0.0 { scale(a, 1.0 / l) } else { [1.0, 0.0] }
}

/// Counter-clockwise sweep from `start` to `end`, in degrees, in (0, 360].
pub fn ccw_sweep(start: f64, end: f64) -> f64 {
    let s = (end - start).rem_euclid(360.0);
    if s < 1e-9 { 360.0 } else { s }
}

/// Point of an ellipse at parameter `param` (degrees).
pub fn ellipse_point(center: Point, major: Point, ratio: f64, param: f64) -> Point {
    let minor = scale(perp(major), ratio);
    let t = rad(param);
    add(center, add(scale(major, t.cos()), scale(minor, t.sin())))
}

/// The arc of a polyline segment with a bulge: its centre, radius, start
/// angle and signed sweep (degrees, positive counter-clockwise). `None` for
/// a straight or degenerate segment.
pub fn bulge_arc(p0: Point, p1: Point, bulge: f64) -> Option<(Point, f64, f64, f64)> {
    let chord = sub(p1, p0);
    let c = len(chord);
    if bulge.abs() < 1e-12 || c < 1e-12 || !bulge.is_finite() {
        return None;
    }
    let theta = 4.0 * bulge.atan();
    let half = theta / 2.0;
    let m = lerp(p0, p1, 0.5);
    let n = perp(normalize(chord));
    let center = add(m, scale(n, (c / 2.0) / half.tan()));
    let r = (c / 2.0) / half.sin().abs();
    let start = (p0[1] - center[1]).atan2(p0[0] - center[0]).to_degrees();
    Some((center, r, start, theta.to_degrees()))
}

/// Samples a clamped uniform B-spline (`degree` clamped to
/// `control_points.len() - 1`) with `per_span` points per knot span.
pub fn bspline_samples(cps: &[Point], degree: u32, per_span: usize) -> Vec<Point> {
    let n = cps.len();
    if n < 2 {
        return cps.to_vec();
    }
    let p = (degree as usize).clamp(1, n - 1);
    let spans = n - p;
    let mut knots = Vec::with_capacity(n + p + 1);
    knots.extend(std::iter::repeat_n(0.0, p + 1));
    for i in 1..spans {
        knots.push(i as f64);
    }
    knots.extend(std::iter::repeat_n(spans as f64, p + 1));
    let per_span = per_span.max(1);
    let total = spans * per_span;
    let mut scratch = Vec::with_capacity(p + 1);
    (0..=total).map(|i| de_boor(cps, p, &knots, i as f64 / per_span as f64, &mut scratch)).collect()
}

fn de_boor(cps: &[Point], p: usize, knots: &[f64], t: f64, d: &mut Vec<Point>) -> Point {
    let n = cps.len();
    // Knot span k with knots[k] <= t < knots[k+1], k in p..n.
    let mut k = p;
    while k + 1 < n && knots[k + 1] <= t {
        k += 1;
    }
    d.clear();
    d.extend((0..=p).map(|j| cps[j + k - p]));
    for r in 1..=p {
        for j in (r..=p).rev() {
            let i = j + k - p;
            let denom = knots[i + p + 1 - r] - knots[i];
            let alpha = if denom.abs() < 1e-12 { 0.0 } else { (t - knots[i]) / denom };
            d[j] = lerp(d[j - 1], d[j], alpha);
        }
    }
    d[p]
}

/// Whether both coordinates are finite.
pub fn finite(p: Point) -> bool {
    p[0].is_finite() && p[1].is_finite()
}

/// Keeps labels upright: angles in (90, 270] are turned by 180°.
pub fn readable(deg: f64) -> f64 {
    let a = deg.rem_euclid(360.0);
    if a > 90.0 && a <= 270.0 { a - 180.0 } else { a }
}

/// A 2-D affine map `x' = a·x + c·y + e`, `y' = b·x + d·y + f` (SVG's
/// `matrix(a b c d e f)` order).
#[derive(Clone, Copy, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct Affine {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub d: f64,
    pub e: f64,
    pub f: f64,
}

impl Affine {
    /// The identity map.
    pub const IDENTITY: Affine = Affine { a: 1.0, b: 0.0, c: 0.0, d: 1.0, e: 0.0, f: 0.0 };

    /// `p ↦ position + R(rotation) · diag(scale) · (p − base)`.
    pub fn insert(position: Point, rotation: f64, scale: [f64; 2], base: Point) -> Affine {
        let (s, c) = rad(rotation).sin_cos();
        let a = c * scale[0];
        let b = s * scale[0];
        let cc = -s * scale[1];
        let d = c * scale[1];
        Affine {
            a,
            b,
            c: cc,
            d,
            e: position[0] - (a * base[0] + cc * base[1]),
            f: position[1] - (b * base[0] + d * base[1]),
        }
    }

    /// The image of `p`.
    pub fn apply(&self, p: Point) -> Point {
        [self.a * p[0] + self.c * p[1] + self.e, self.b * p[0] + self.d * p[1] + self.f]
    }

    /// `self ∘ inner` (apply `inner` first).
    pub fn then_inner(&self, inner: &Affine) -> Affine {
        Affine {
            a: self.a * inner.a + self.c * inner.b,
            b: self.b * inner.a + self.d * inner.b,
            c: self.a * inner.c + self.c * inner.d,
            d: self.b * inner.c + self.d * inner.d,
            e: self.a * inner.e + self.c * inner.f + self.e,
            f: self.b * inner.e + self.d * inner.f + self.f,
        }
    }

    /// Rotation by `deg` about the origin.
    pub fn rotation(deg: f64) -> Affine {
        let (s, c) = rad(deg).sin_cos();
        Affine { a: c, b: s, c: -s, d: c, e: 0.0, f: 0.0 }
    }

    /// The largest factor by which the map stretches a length.
    pub fn max_stretch(&self) -> f64 {
        let s = self.a * self.a + self.b * self.b + self.c * self.c + self.d * self.d;
        let det = self.a * self.d - self.b * self.c;
        let disc = (s * s - 4.0 * det * det).max(0.0).sqrt();
        ((s + disc) / 2.0).max(0.0).sqrt()
    }

    /// Whether every coefficient is finite.
    pub fn is_finite(&self) -> bool {
        [self.a, self.b, self.c, self.d, self.e, self.f].iter().all(|v| v.is_finite())
    }
}

/// An axis-aligned bounding box, empty until a point is added.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Lower left corner.
    pub min: Point,
    /// Upper right corner.
    pub max: Point,
}

impl Bounds {
    /// A box holding nothing.
    pub fn empty() -> Bounds {
        Bounds { min: [f64::INFINITY, f64::INFINITY], max: [f64::NEG_INFINITY, f64::NEG_INFINITY] }
    }

    /// Whether no point was added.
    pub fn is_empty(&self) -> bool {
        self.min[0] > self.max[0]
    }

    /// Grows the box to hold `p` (non-finite points are ignored).
    pub fn add(&mut self, p: Point) {
        if finite(p) {
            self.min = [self.min[0].min(p[0]), self.min[1].min(p[1])];
            self.max = [self.max[0].max(p[0]), self.max[1].max(p[1])];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Point, b: Point) -> bool {
        (a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9
    }

    #[test]
    fn bulge_one_is_a_half_circle() {
        let Some((c, r, start, sweep)) = bulge_arc([0.0, 0.0], [2.0, 0.0], 1.0) else {
            panic!("expected an arc");
        };
        assert!(close(c, [1.0, 0.0]));
        assert!((r - 1.0).abs() < 1e-9);
        assert!((start.rem_euclid(360.0) - 180.0).abs() < 1e-6, "{start}");
        assert!((sweep - 180.0).abs() < 1e-9);
    }

    #[test]
    fn clamped_spline_passes_through_end_points() {
        let cps = [[0.0, 0.0], [1.0, 2.0], [3.0, 2.0], [4.0, 0.0], [6.0, 1.0]];
        let s = bspline_samples(&cps, 3, 8);
        assert!(close(s[0], cps[0]));
        assert!(close(s[s.len() - 1], cps[4]));
        assert_eq!(s.len(), 2 * 8 + 1);
        // Degree 1 is the control polygon.
        let s = bspline_samples(&cps, 1, 1);
        assert_eq!(s.len(), 5);
        assert!(close(s[2], cps[2]));
    }

    #[test]
    fn insert_transform_maps_base_to_position() {
        let t = Affine::insert([10.0, 5.0], 90.0, [2.0, 2.0], [1.0, 1.0]);
        assert!(close(t.apply([1.0, 1.0]), [10.0, 5.0]));
        assert!(close(t.apply([2.0, 1.0]), [10.0, 7.0]));
        let id = Affine::IDENTITY.then_inner(&t);
        assert!(close(id.apply([2.0, 1.0]), [10.0, 7.0]));
        let stretched = Affine::insert([0.0, 0.0], 30.0, [2.0, 3.0], [0.0, 0.0]);
        assert!((stretched.max_stretch() - 3.0).abs() < 1e-9);
    }
}
