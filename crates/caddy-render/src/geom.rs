//! Small 2-D geometry helpers, in `f64`, with the same conventions as
//! caddy-doc's SVG export: angles in degrees, counter-clockwise from +x.

/// A point or vector `[x, y]`.
pub(crate) type P = [f64; 2];

pub(crate) fn polar(c: P, r: f64, deg: f64) -> P {
    let (s, co) = deg.to_radians().sin_cos();
    [c[0] + r * co, c[1] + r * s]
}

pub(crate) fn add(a: P, b: P) -> P {
    [a[0] + b[0], a[1] + b[1]]
}

pub(crate) fn sub(a: P, b: P) -> P {
    [a[0] - b[0], a[1] - b[1]]
}

pub(crate) fn scale(a: P, k: f64) -> P {
    [a[0] * k, a[1] * k]
}

pub(crate) fn dot(a: P, b: P) -> f64 {
    a[0] * b[0] + a[1] * b[1]
}

pub(crate) fn len(a: P) -> f64 {
    a[0].hypot(a[1])
}

pub(crate) fn lerp(a: P, b: P, t: f64) -> P {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]
}

/// Left normal (rotated 90° counter-clockwise).
pub(crate) fn perp(a: P) -> P {
    [-a[1], a[0]]
}

pub(crate) fn normalize(a: P) -> P {
    let l = len(a);
    if l > 0.0 { scale(a, 1.0 / l) } else { [1.0, 0.0] }
}

pub(crate) fn finite(p: P) -> bool {
    p[0].is_finite() && p[1].is_finite()
}

/// Counter-clockwise sweep from `start` to `end`, degrees, in (0, 360].
pub(crate) fn ccw_sweep(start: f64, end: f64) -> f64 {
    let s = (end - start).rem_euclid(360.0);
    if s < 1e-9 { 360.0 } else { s }
}

/// Point of an ellipse at parameter `param` (degrees).
pub(crate) fn ellipse_point(center: P, major: P, ratio: f64, param: f64) -> P {
    let minor = scale(perp(major), ratio);
    let (s, c) = param.to_radians().sin_cos();
    add(center, add(scale(major, c), scale(minor, s)))
}

/// The arc of a polyline segment with a bulge: centre, radius, start angle
/// and signed sweep (degrees). `None` for a straight or degenerate segment.
pub(crate) fn bulge_arc(p0: P, p1: P, bulge: f64) -> Option<(P, f64, f64, f64)> {
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

/// Samples a clamped uniform B-spline (degree clamped to `cps.len() - 1`)
/// with `per_span` points per knot span; the knot vector and evaluation
/// are the SVG export's.
pub(crate) fn bspline_samples(cps: &[P], degree: u32, per_span: usize) -> Vec<P> {
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
    let mut d = Vec::with_capacity(p + 1);
    (0..=total).map(|i| de_boor(cps, p, &knots, i as f64 / per_span as f64, &mut d)).collect()
}

fn de_boor(cps: &[P], p: usize, knots: &[f64], t: f64, d: &mut Vec<P>) -> P {
    let n = cps.len();
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

/// Keeps labels upright: angles in (90, 270] are turned by 180°.
pub(crate) fn readable(deg: f64) -> f64 {
    let a = deg.rem_euclid(360.0);
    if a > 90.0 && a <= 270.0 { a - 180.0 } else { a }
}

/// A 2-D affine map `x' = a·x + c·y + e`, `y' = b·x + d·y + f`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Affine {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub d: f64,
    pub e: f64,
    pub f: f64,
}

impl Affine {
    #[cfg(test)]
    pub(crate) const IDENTITY: Affine = Affine { a: 1.0, b: 0.0, c: 0.0, d: 1.0, e: 0.0, f: 0.0 };

    /// The block insert map `p ↦ position + R(rotation) · diag(scale) · (p − base)`.
    pub(crate) fn insert(position: P, rotation: f64, scale: [f64; 2], base: P) -> Affine {
        let (s, c) = rotation.to_radians().sin_cos();
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

    /// Rotation by `deg` about the origin.
    pub(crate) fn rotation(deg: f64) -> Affine {
        let (s, c) = deg.to_radians().sin_cos();
        Affine { a: c, b: s, c: -s, d: c, e: 0.0, f: 0.0 }
    }

    pub(crate) fn apply(&self, p: P) -> P {
        [self.a * p[0] + self.c * p[1] + self.e, self.b * p[0] + self.d * p[1] + self.f]
    }

    /// `self ∘ inner` (apply `inner` first).
    pub(crate) fn then_inner(&self, inner: &Affine) -> Affine {
        Affine {
            a: self.a * inner.a + self.c * inner.b,
            b: self.b * inner.a + self.d * inner.b,
            c: self.a * inner.c + self.c * inner.d,
            d: self.b * inner.c + self.d * inner.d,
            e: self.a * inner.e + self.c * inner.f + self.e,
            f: self.b * inner.e + self.d * inner.f + self.f,
        }
    }

    /// The largest factor by which the map stretches a length.
    pub(crate) fn max_stretch(&self) -> f64 {
        let s = self.a * self.a + self.b * self.b + self.c * self.c + self.d * self.d;
        let det = self.a * self.d - self.b * self.c;
        let disc = (s * s - 4.0 * det * det).max(0.0).sqrt();
        ((s + disc) / 2.0).max(0.0).sqrt()
    }

    pub(crate) fn is_finite(&self) -> bool {
        [self.a, self.b, self.c, self.d, self.e, self.f].iter().all(|v| v.is_finite())
    }
}

/// An axis-aligned box, empty until a point is added.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub min: P,
    pub max: P,
}

impl Bounds {
    pub(crate) fn empty() -> Bounds {
        Bounds { min: [f64::INFINITY, f64::INFINITY], max: [f64::NEG_INFINITY, f64::NEG_INFINITY] }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.min[0] > self.max[0]
    }

    pub(crate) fn add(&mut self, p: P) {
        if finite(p) {
            self.min = [self.min[0].min(p[0]), self.min[1].min(p[1])];
            self.max = [self.max[0].max(p[0]), self.max[1].max(p[1])];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: P, b: P) -> bool {
        (a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9
    }

    #[test]
    fn bulge_one_is_a_half_circle() {
        let Some((c, r, _, sweep)) = bulge_arc([0.0, 0.0], [2.0, 0.0], 1.0) else {
            panic!("expected an arc");
        };
        assert!(close(c, [1.0, 0.0]));
        assert!((r - 1.0).abs() < 1e-9);
        assert!((sweep - 180.0).abs() < 1e-9);
    }

    #[test]
    fn insert_maps_base_to_position_and_stretch_is_the_scale() {
        let t = Affine::insert([10.0, 5.0], 90.0, [2.0, 3.0], [1.0, 1.0]);
        assert!(close(t.apply([1.0, 1.0]), [10.0, 5.0]));
        assert!((t.max_stretch() - 3.0).abs() < 1e-9);
        assert!(close(Affine::IDENTITY.then_inner(&t).apply([2.0, 1.0]), t.apply([2.0, 1.0])));
    }

    #[test]
    fn spline_ends_are_the_end_control_points() {
        let cps = [[0.0, 0.0], [1.0, 2.0], [3.0, 2.0], [4.0, 0.0]];
        let s = bspline_samples(&cps, 3, 8);
        assert!(close(s[0], cps[0]));
        assert!(close(s[s.len() - 1], cps[3]));
    }
}
