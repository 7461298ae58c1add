//! The storage layout inside the Loro document, and conversions between
//! typed values and Loro values. Nothing outside this crate sees these.
//!
//! Reading is total: a value of the wrong shape (from a buggy or hostile
//! peer) reads as `None`, which the resolver reports as a problem.

use loro::{Container, LoroMap, LoroText, LoroValue, ValueOrContainer};

use crate::model::{DimPoint, Fill, Point, Property, Snap, Vertex};

/// Schema version written by this build. Documents with a greater value are
/// refused ([`DocError::UnsupportedSchema`](crate::DocError::UnsupportedSchema)).
pub const SCHEMA_VERSION: i64 = 1;

pub(crate) const META: &str = "meta";
pub(crate) const LAYERS: &str = "layers";
pub(crate) const ENTITIES: &str = "entities";
pub(crate) const ORDER: &str = "order";
pub(crate) const TREE: &str = "tree";
pub(crate) const NODES: &str = "nodes";

pub(crate) const K_SCHEMA: &str = "schema";
pub(crate) const K_KIND: &str = "kind";
pub(crate) const K_LAYER: &str = "layer";
pub(crate) const K_DELETED: &str = "deleted";
pub(crate) const K_CONTENT: &str = "content";
pub(crate) const K_ID: &str = "id";
pub(crate) const K_NAME: &str = "name";
pub(crate) const K_BASE: &str = "base";
pub(crate) const K_MEMBERS: &str = "members";

/// Default layer, created with every document; it cannot be deleted.
pub const DEFAULT_LAYER: &str = "0";

pub(crate) fn child_map(map: &LoroMap, key: &str) -> Option<LoroMap> {
    match map.get(key)? {
        ValueOrContainer::Container(Container::Map(m)) => Some(m),
        _ => None,
    }
}

pub(crate) fn child_text(map: &LoroMap, key: &str) -> Option<LoroText> {
    match map.get(key)? {
        ValueOrContainer::Container(Container::Text(t)) => Some(t),
        _ => None,
    }
}

pub(crate) fn get_val(map: &LoroMap, key: &str) -> Option<LoroValue> {
    match map.get(key)? {
        ValueOrContainer::Value(v) => Some(v),
        _ => None,
    }
}

pub(crate) fn as_str(v: &LoroValue) -> Option<&str> {
    match v {
        LoroValue::String(s) => Some(s.as_str()),
        _ => None,
    }
}

/// A finite number (integers are accepted too).
pub(crate) fn as_f64(v: &LoroValue) -> Option<f64> {
    let f = match v {
        LoroValue::Double(d) => *d,
        LoroValue::I64(i) => *i as f64,
        _ => return None,
    };
    f.is_finite().then_some(f)
}

pub(crate) fn as_i64(v: &LoroValue) -> Option<i64> {
    match v {
        LoroValue::I64(i) => Some(*i),
        LoroValue::Double(d) if d.fract() == 0.0 && d.abs() < 9e15 => Some(*d as i64),
        _ => None,
    }
}

pub(crate) fn as_bool(v: &LoroValue) -> Option<bool> {
    match v {
        LoroValue::Bool(b) => Some(*b),
        _ => None,
    }
}

fn as_list(v: &LoroValue) -> Option<&[LoroValue]> {
    match v {
        LoroValue::List(l) => Some(l.as_slice()),
        _ => None,
    }
}

pub(crate) fn as_point(v: &LoroValue) -> Option<Point> {
    match as_list(v)? {
        [x, y] => Some([as_f64(x)?, as_f64(y)?]),
        _ => None,
    }
}

pub(crate) fn as_points(v: &LoroValue) -> Option<Vec<Point>> {
    as_list(v)?.iter().map(as_point).collect()
}

pub(crate) fn as_vertices(v: &LoroValue) -> Option<Vec<Vertex>> {
    as_list(v)?
        .iter()
        .map(|v| match as_list(v)? {
            [x, y] => Some(Vertex::new(as_f64(x)?, as_f64(y)?)),
            [x, y, b] => Some(Vertex::with_bulge(as_f64(x)?, as_f64(y)?, as_f64(b)?)),
            _ => None,
        })
        .collect()
}

pub(crate) fn as_loops(v: &LoroValue) -> Option<Vec<Vec<Point>>> {
    as_list(v)?.iter().map(as_points).collect()
}

pub(crate) fn as_dim_point(v: &LoroValue) -> Option<DimPoint> {
    let LoroValue::Map(m) = v else { return None };
    if let Some(p) = m.get("point") {
        return Some(DimPoint::Point { point: as_point(p)? });
    }
    let entity = as_str(m.get("entity")?)?.to_owned();
    let snap = match m.get("snap") {
        Some(s) => Snap::parse(as_str(s)?)?,
        None => Snap::Start,
    };
    Some(DimPoint::Entity { entity, snap })
}

pub(crate) fn as_fill(v: &LoroValue) -> Option<Fill> {
    let LoroValue::Map(m) = v else { return None };
    match as_str(m.get("type")?)? {
        "solid" => Some(Fill::Solid),
        "pattern" => Some(Fill::Pattern {
            name: as_str(m.get("name")?)?.to_owned(),
            scale: m.get("scale").and_then(as_f64).unwrap_or(1.0),
            angle: m.get("angle").and_then(as_f64).unwrap_or(0.0),
        }),
        _ => None,
    }
}

/// Number of points held under the point-carrying keys of an entity map
/// value, for the import-time bound on points per entity.
pub(crate) fn point_count(map_value: &LoroValue) -> usize {
    let LoroValue::Map(m) = map_value else {
        return 0;
    };
    let mut n = 0;
    for key in ["vertices", "control_points"] {
        if let Some(l) = m.get(key).and_then(as_list) {
            n += l.len();
        }
    }
    if let Some(loops) = m.get("loops").and_then(as_list) {
        for l in loops {
            n += as_list(l).map_or(1, <[LoroValue]>::len);
        }
    }
    n
}

pub(crate) fn point_value(p: &Point) -> LoroValue {
    LoroValue::from(vec![p[0], p[1]])
}

fn points_value(ps: &[Point]) -> LoroValue {
    LoroValue::List(ps.iter().map(point_value).collect::<Vec<_>>().into())
}

fn map_value(entries: Vec<(&str, LoroValue)>) -> LoroValue {
    let v: Vec<(String, LoroValue)> = entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    LoroValue::Map(v.into())
}

fn dim_point_value(d: &DimPoint) -> LoroValue {
    match d {
        DimPoint::Point { point } => map_value(vec![("point", point_value(point))]),
        DimPoint::Entity { entity, snap } => {
            map_value(vec![("entity", entity.as_str().into()), ("snap", snap.as_str().into())])
        }
    }
}

fn opt<T>(v: &Option<T>, f: impl FnOnce(&T) -> LoroValue) -> LoroValue {
    v.as_ref().map_or(LoroValue::Null, f)
}

/// The stored value of a property. `Content` is not a plain value (it is a
/// Loro text) and maps to `Null`; callers handle it separately.
pub(crate) fn property_value(p: &Property) -> LoroValue {
    use Property as P;
    match p {
        P::Layer(s) | P::Target(s) | P::Block(s) => s.as_str().into(),
        P::Color(c) => opt(c, |c| c.as_str().into()),
        P::LineType(t) => opt(t, |t| t.as_str().into()),
        P::LineWeight(w) => opt(w, |w| (*w).into()),
        P::Owner(o) => opt(o, |o| o.as_str().into()),
        P::From(p) | P::To(p) | P::Center(p) | P::MajorAxis(p) | P::Position(p) | P::Scale(p) => point_value(p),
        P::Vertices(vs) => {
            LoroValue::List(vs.iter().map(|v| LoroValue::from(vec![v.x, v.y, v.bulge])).collect::<Vec<_>>().into())
        }
        P::Closed(b) => (*b).into(),
        P::Radius(v)
        | P::StartAngle(v)
        | P::EndAngle(v)
        | P::Ratio(v)
        | P::StartParam(v)
        | P::EndParam(v)
        | P::Height(v)
        | P::Rotation(v)
        | P::Offset(v)
        | P::Angle(v)
        | P::TextHeight(v) => (*v).into(),
        P::ControlPoints(ps) => points_value(ps),
        P::Degree(d) | P::Precision(d) => LoroValue::I64(i64::from(*d)),
        P::Content(_) => LoroValue::Null,
        P::P1(d) | P::P2(d) | P::Vertex(d) => dim_point_value(d),
        P::Loops(ls) => LoroValue::List(ls.iter().map(|l| points_value(l)).collect::<Vec<_>>().into()),
        P::Fill(Fill::Solid) => map_value(vec![("type", "solid".into())]),
        P::Fill(Fill::Pattern { name, scale, angle }) => map_value(vec![
            ("type", "pattern".into()),
            ("name", name.as_str().into()),
            ("scale", (*scale).into()),
            ("angle", (*angle).into()),
        ]),
    }
}
