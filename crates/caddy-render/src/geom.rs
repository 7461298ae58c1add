//! The 2-D geometry helpers, shared with caddy-doc's resolver and SVG
//! export (`caddy_doc::geom`) so the GPU path draws the same curves: angles
//! in degrees, counter-clockwise from +x.

pub(crate) use caddy_doc::geom::*;

/// A point or vector `[x, y]`.
pub(crate) type P = caddy_doc::Point;
