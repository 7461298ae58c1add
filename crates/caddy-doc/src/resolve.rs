//! The resolved model: plain data computed from the CRDT state, identical on
//! every replica that has seen the same changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use loro::{LoroDoc, LoroMap, LoroValue, TreeID, TreeParentId};
use serde::{Deserialize, Serialize};

use crate::geom;
use crate::model::{Color, DimPoint, EntityKind, Fill, Geometry, LineType, NodeKind, Point, Snap, Units};
use crate::store::*;

/// The whole drawing as plain data. Deterministic: layers, nodes, children,
/// members and problems are sorted by id; entities are in draw order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedDoc {
    /// Schema version of the document (0 for an empty replica).
    pub schema: i64,
    /// Name, units, creator.
    pub meta: Metadata,
    /// Live layers, by id.
    pub layers: Vec<Layer>,
    /// Live entities, bottom first (draw order).
    pub entities: Vec<Entity>,
    /// Live nodes of the group/block hierarchy, by id.
    pub nodes: Vec<Node>,
    /// Broken references and malformed data, sorted.
    pub problems: Vec<Problem>,
}

impl ResolvedDoc {
    /// Every block definition by id: its base point and the entities it
    /// owns, in the document's order (what drawing an insert expands).
    pub fn block_members(&self) -> HashMap<&str, (Point, Vec<&Entity>)> {
        let mut blocks: HashMap<&str, (Point, Vec<&Entity>)> = self
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Block)
            .map(|n| (n.id.as_str(), (n.base.unwrap_or([0.0, 0.0]), Vec::new())))
            .collect();
        for e in &self.entities {
            if let Some(o) = &e.owner
                && let Some((_, members)) = blocks.get_mut(o.as_str())
            {
                members.push(e);
            }
        }
        blocks
    }
}

/// Document metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Display name.
    pub name: String,
    /// Drawing units.
    pub units: Units,
    /// Creator's user id.
    pub created_by: String,
    /// Creation time (ms since the epoch), as stamped by the creator.
    pub created_at_ms: i64,
}

/// A layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Colour of entities without an override.
    pub color: Color,
    /// Line type of entities without an override.
    pub line_type: LineType,
    /// Line weight (mm) of entities without an override.
    pub line_weight: f64,
    /// Whether the layer is drawn.
    pub visible: bool,
    /// Whether local edits of its entities are refused.
    pub locked: bool,
}

/// An entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// Id.
    pub id: String,
    /// Layer id.
    pub layer: String,
    /// Colour override (`None`: by layer).
    pub color: Option<Color>,
    /// Line type override (`None`: by layer).
    pub line_type: Option<LineType>,
    /// Line weight override in mm (`None`: by layer).
    pub line_weight: Option<f64>,
    /// The block definition it belongs to (`None`: model space).
    pub owner: Option<String>,
    /// Kind and geometry.
    #[serde(flatten)]
    pub geometry: Geometry,
    /// For dimensions whose references resolve: the measured value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<Measurement>,
}

/// What a dimension measures, computed from its (possibly referenced) anchors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The measured value (drawing units, or degrees for angular dimensions).
    pub value: f64,
    /// The label, e.g. `12.50`, `R5.00`, `45.00°`.
    pub text: String,
    /// Resolved anchor points: `[p1, p2]` (linear, aligned), `[center,
    /// point on the circle]` (radial), `[vertex, p1, p2]` (angular).
    pub points: Vec<Point>,
}

/// A node of the group/block hierarchy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Id.
    pub id: String,
    /// Group or block.
    pub kind: NodeKind,
    /// Name.
    pub name: String,
    /// Nearest live ancestor (`None`: a root).
    pub parent: Option<String>,
    /// Live nodes whose `parent` is this one, sorted.
    pub children: Vec<String>,
    /// Group: its member entity ids (broken ones included, and reported).
    /// Block: the live entities whose `owner` is this block.
    pub members: Vec<String>,
    /// Block base point.
    pub base: Option<Point>,
}

/// Why a reference is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokenReason {
    /// Nothing has this id.
    Missing,
    /// The target is deleted.
    Deleted,
    /// The target has the wrong kind (e.g. a radial dimension on a line, a
    /// snap the target does not have, an insert of a group).
    WrongKind,
    /// The target is malformed (see its own problem).
    Invalid,
}

/// Something a CAD tool would flag. The resolver never drops data
/// silently: whatever it cannot use is listed here.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// `from`'s `field` names `to`, which is not usable. The referencing
    /// item is kept (a dimension is listed without a measurement, an
    /// insert draws nothing, a group keeps the member id).
    BrokenReference {
        /// The referencing entity, node or group.
        from: String,
        /// Which field holds the reference.
        field: String,
        /// The referenced id.
        to: String,
        /// Why it is unusable.
        reason: BrokenReason,
    },
    /// An item whose stored data does not fit the schema (e.g. written by a
    /// faulty peer); it is left out of the lists above.
    Malformed {
        /// `"entity"`, `"layer"` or `"node"`.
        what: String,
        /// Its id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A block that (through inserts) contains itself; such inserts are
    /// drawn only up to the repetition.
    RecursiveBlock {
        /// A block on the cycle.
        block: String,
    },
    /// Two nodes were created concurrently with the same caller-chosen id;
    /// the one the id index names is kept.
    DuplicateNode {
        /// The id.
        id: String,
    },
}

type Fields = HashMap<String, LoroValue>;

fn fields_of(map: &LoroMap) -> Fields {
    match map.get_value() {
        LoroValue::Map(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => Fields::new(),
    }
}

struct Reader<'a> {
    f: &'a Fields,
}

impl Reader<'_> {
    fn get(&self, k: &str) -> Option<&LoroValue> {
        self.f.get(k).filter(|v| !matches!(v, LoroValue::Null))
    }
    fn req<T>(&self, k: &str, conv: impl Fn(&LoroValue) -> Option<T>) -> Result<T, String> {
        self.get(k).and_then(conv).ok_or_else(|| format!("missing or invalid {k}"))
    }
    /// Optional value: default when absent, an error when present but invalid.
    fn opt<T>(&self, k: &str, conv: impl Fn(&LoroValue) -> Option<T>, default: T) -> Result<T, String> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => conv(v).ok_or_else(|| format!("invalid {k}")),
        }
    }
    fn point(&self, k: &str) -> Result<Point, String> {
        self.req(k, as_point)
    }
    fn num(&self, k: &str) -> Result<f64, String> {
        self.req(k, as_f64)
    }
    fn positive(&self, k: &str) -> Result<f64, String> {
        let v = self.num(k)?;
        if v > 0.0 { Ok(v) } else { Err(format!("{k} must be positive")) }
    }
    fn dim(&self, k: &str) -> Result<DimPoint, String> {
        self.req(k, as_dim_point)
    }
    fn precision(&self) -> Result<u32, String> {
        self.opt("precision", |v| as_i64(v).and_then(|i| u32::try_from(i.clamp(0, 10)).ok()), 2)
    }
    fn text_height(&self) -> Result<f64, String> {
        let h = self.opt("text_height", as_f64, 2.5)?;
        if h > 0.0 { Ok(h) } else { Err("text_height must be positive".into()) }
    }
    fn string(&self, k: &str) -> Result<String, String> {
        self.req(k, |v| as_str(v).map(str::to_owned))
    }
}

fn read_geometry(kind: EntityKind, r: &Reader<'_>, content: Option<String>) -> Result<Geometry, String> {
    use EntityKind as K;
    Ok(match kind {
        K::Line => Geometry::Line { from: r.point("from")?, to: r.point("to")? },
        K::Polyline => {
            let vertices = r.req("vertices", as_vertices)?;
            if vertices.len() < 2 {
                return Err("a polyline needs at least 2 vertices".into());
            }
            Geometry::Polyline { vertices, closed: r.opt("closed", as_bool, false)? }
        }
        K::Circle => Geometry::Circle { center: r.point("center")?, radius: r.positive("radius")? },
        K::Arc => Geometry::Arc {
            center: r.point("center")?,
            radius: r.positive("radius")?,
            start_angle: r.num("start_angle")?,
            end_angle: r.num("end_angle")?,
        },
        K::Ellipse => {
            let major_axis = r.point("major_axis")?;
            let ratio = r.num("ratio")?;
            if geom::len(major_axis) == 0.0 || !(ratio > 0.0 && ratio <= 1.0) {
                return Err("degenerate ellipse".into());
            }
            Geometry::Ellipse {
                center: r.point("center")?,
                major_axis,
                ratio,
                start_param: r.opt("start_param", as_f64, 0.0)?,
                end_param: r.opt("end_param", as_f64, 360.0)?,
            }
        }
        K::Spline => {
            let control_points = r.req("control_points", as_points)?;
            if control_points.len() < 2 {
                return Err("a spline needs at least 2 control points".into());
            }
            let degree = r.req("degree", |v| as_i64(v).and_then(|i| u32::try_from(i).ok()))?;
            if degree == 0 {
                return Err("spline degree must be at least 1".into());
            }
            Geometry::Spline { control_points, degree }
        }
        K::Text => Geometry::Text {
            position: r.point("position")?,
            height: r.positive("height")?,
            rotation: r.opt("rotation", as_f64, 0.0)?,
            content: content.unwrap_or_default(),
        },
        K::LinearDim => Geometry::LinearDim {
            p1: r.dim("p1")?,
            p2: r.dim("p2")?,
            offset: r.num("offset")?,
            angle: r.opt("angle", as_f64, 0.0)?,
            precision: r.precision()?,
            text_height: r.text_height()?,
        },
        K::AlignedDim => Geometry::AlignedDim {
            p1: r.dim("p1")?,
            p2: r.dim("p2")?,
            offset: r.num("offset")?,
            precision: r.precision()?,
            text_height: r.text_height()?,
        },
        K::RadialDim => Geometry::RadialDim {
            target: r.string("target")?,
            angle: r.opt("angle", as_f64, 0.0)?,
            precision: r.precision()?,
            text_height: r.text_height()?,
        },
        K::AngularDim => Geometry::AngularDim {
            vertex: r.dim("vertex")?,
            p1: r.dim("p1")?,
            p2: r.dim("p2")?,
            radius: r.positive("radius")?,
            precision: r.precision()?,
            text_height: r.text_height()?,
        },
        K::Hatch => {
            let loops = r.req("loops", as_loops)?;
            if loops.is_empty() || loops.iter().any(|l| l.len() < 3) {
                return Err("a hatch needs loops of at least 3 points".into());
            }
            Geometry::Hatch { loops, fill: r.opt("fill", as_fill, Fill::Solid)? }
        }
        K::Insert => {
            let scale = r.opt("scale", as_point, [1.0, 1.0])?;
            if scale[0] == 0.0 || scale[1] == 0.0 {
                return Err("insert scale must not be zero".into());
            }
            Geometry::Insert {
                block: r.string("block")?,
                position: r.point("position")?,
                rotation: r.opt("rotation", as_f64, 0.0)?,
                scale,
            }
        }
    })
}

/// The status of an id, for reporting references.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Live,
    Deleted,
    Invalid,
}

fn broken(from: &str, field: &str, to: &str, reason: BrokenReason) -> Problem {
    Problem::BrokenReference { from: from.to_owned(), field: field.to_owned(), to: to.to_owned(), reason }
}

fn status_reason(s: Option<Status>) -> Option<BrokenReason> {
    match s {
        None => Some(BrokenReason::Missing),
        Some(Status::Deleted) => Some(BrokenReason::Deleted),
        Some(Status::Invalid) => Some(BrokenReason::Invalid),
        Some(Status::Live) => None,
    }
}

/// The point `snap` of an entity, if it has one.
pub(crate) fn snap_point(g: &Geometry, snap: Snap) -> Option<Point> {
    match (g, snap) {
        (Geometry::Line { from, .. }, Snap::Start) => Some(*from),
        (Geometry::Line { to, .. }, Snap::End) => Some(*to),
        (Geometry::Line { from, to }, Snap::Mid) => Some(geom::lerp(*from, *to, 0.5)),
        (Geometry::Circle { center, .. } | Geometry::Ellipse { center, .. }, Snap::Center) => Some(*center),
        (Geometry::Arc { center, .. }, Snap::Center) => Some(*center),
        (Geometry::Arc { center, radius, start_angle, end_angle }, s) => {
            let a = match s {
                Snap::Start => *start_angle,
                Snap::End => *end_angle,
                _ => start_angle + geom::ccw_sweep(*start_angle, *end_angle) / 2.0,
            };
            Some(geom::polar(*center, *radius, a))
        }
        (Geometry::Ellipse { center, major_axis, ratio, start_param, end_param }, Snap::Start | Snap::End) => {
            let t = if snap == Snap::Start { *start_param } else { *end_param };
            Some(geom::ellipse_point(*center, *major_axis, *ratio, t))
        }
        (Geometry::Polyline { vertices, .. }, Snap::Start) => vertices.first().map(|v| v.point()),
        (Geometry::Polyline { vertices, .. }, Snap::End) => vertices.last().map(|v| v.point()),
        (Geometry::Spline { control_points, .. }, Snap::Start) => control_points.first().copied(),
        (Geometry::Spline { control_points, .. }, Snap::End) => control_points.last().copied(),
        (Geometry::Text { position, .. } | Geometry::Insert { position, .. }, Snap::Start) => Some(*position),
        _ => None,
    }
}

struct Ctx {
    entities: BTreeMap<String, Entity>,
    status: HashMap<String, Status>,
}

impl Ctx {
    fn anchor(&self, from: &str, field: &str, d: &DimPoint, problems: &mut Vec<Problem>) -> Option<Point> {
        match d {
            DimPoint::Point { point } => Some(*point),
            DimPoint::Entity { entity, snap } => {
                if let Some(reason) = status_reason(self.status.get(entity).copied()) {
                    problems.push(broken(from, field, entity, reason));
                    return None;
                }
                let p = self.entities.get(entity).and_then(|e| snap_point(&e.geometry, *snap));
                if p.is_none() {
                    problems.push(broken(from, field, entity, BrokenReason::WrongKind));
                }
                p
            }
        }
    }

    fn measure(&self, e: &Entity, problems: &mut Vec<Problem>) -> Option<Measurement> {
        let label = |v: f64, prec: u32| format!("{v:.prec$}", prec = prec as usize);
        match &e.geometry {
            Geometry::LinearDim { p1, p2, angle, precision, .. } => {
                let a = self.anchor(&e.id, "p1", p1, problems);
                let b = self.anchor(&e.id, "p2", p2, problems);
                let (a, b) = (a?, b?);
                let dir = geom::polar([0.0, 0.0], 1.0, *angle);
                let value = geom::dot(geom::sub(b, a), dir).abs();
                Some(Measurement { value, text: label(value, *precision), points: vec![a, b] })
            }
            Geometry::AlignedDim { p1, p2, precision, .. } => {
                let a = self.anchor(&e.id, "p1", p1, problems);
                let b = self.anchor(&e.id, "p2", p2, problems);
                let (a, b) = (a?, b?);
                let value = geom::len(geom::sub(b, a));
                Some(Measurement { value, text: label(value, *precision), points: vec![a, b] })
            }
            Geometry::RadialDim { target, angle, precision, .. } => {
                if let Some(reason) = status_reason(self.status.get(target).copied()) {
                    problems.push(broken(&e.id, "target", target, reason));
                    return None;
                }
                match self.entities.get(target).map(|t| &t.geometry) {
                    Some(Geometry::Circle { center, radius } | Geometry::Arc { center, radius, .. }) => {
                        Some(Measurement {
                            value: *radius,
                            text: format!("R{}", label(*radius, *precision)),
                            points: vec![*center, geom::polar(*center, *radius, *angle)],
                        })
                    }
                    _ => {
                        problems.push(broken(&e.id, "target", target, BrokenReason::WrongKind));
                        None
                    }
                }
            }
            Geometry::AngularDim { vertex, p1, p2, precision, .. } => {
                let v = self.anchor(&e.id, "vertex", vertex, problems);
                let a = self.anchor(&e.id, "p1", p1, problems);
                let b = self.anchor(&e.id, "p2", p2, problems);
                let (v, a, b) = (v?, a?, b?);
                let da = geom::sub(a, v);
                let db = geom::sub(b, v);
                let a1 = da[1].atan2(da[0]).to_degrees();
                let a2 = db[1].atan2(db[0]).to_degrees();
                let value = (a2 - a1).rem_euclid(360.0);
                Some(Measurement { value, text: format!("{}°", label(value, *precision)), points: vec![v, a, b] })
            }
            _ => None,
        }
    }
}

/// Computes the resolved model of a Loro document laid out by this crate.
pub(crate) fn resolve_doc(doc: &LoroDoc) -> ResolvedDoc {
    let mut problems = Vec::new();

    // Metadata.
    let meta_fields = fields_of(&doc.get_map(META));
    let mr = Reader { f: &meta_fields };
    let schema = mr.get(K_SCHEMA).and_then(as_i64).unwrap_or(0);
    let text = |k: &str| mr.get(k).and_then(as_str).unwrap_or("").to_owned();
    let meta = Metadata {
        name: text(K_NAME),
        units: mr.get("units").and_then(as_str).and_then(Units::parse).unwrap_or(Units::Unitless),
        created_by: text("created_by"),
        created_at_ms: mr.get("created_at_ms").and_then(as_i64).unwrap_or(0),
    };

    // Layers.
    let layers_map = doc.get_map(LAYERS);
    let mut layer_keys: Vec<String> = layers_map.keys().map(|k| k.to_string()).collect();
    layer_keys.sort();
    let mut layers = Vec::new();
    let mut layer_status: HashMap<String, Status> = HashMap::new();
    for id in layer_keys {
        let Some(m) = child_map(&layers_map, &id) else {
            problems.push(malformed("layer", &id, "not a map"));
            layer_status.insert(id, Status::Invalid);
            continue;
        };
        let f = fields_of(&m);
        let r = Reader { f: &f };
        if r.get(K_DELETED).and_then(as_bool) == Some(true) {
            layer_status.insert(id, Status::Deleted);
            continue;
        }
        let layer = (|| -> Result<Layer, String> {
            Ok(Layer {
                name: r.opt(K_NAME, |v| as_str(v).map(str::to_owned), id.clone())?,
                color: r.opt("color", |v| as_str(v).and_then(|s| Color::parse(s).ok()), Color::black())?,
                line_type: r.opt("line_type", |v| as_str(v).and_then(LineType::parse), LineType::Continuous)?,
                line_weight: r.opt("line_weight", as_f64, 0.25)?,
                visible: r.opt("visible", as_bool, true)?,
                locked: r.opt("locked", as_bool, false)?,
                id: id.clone(),
            })
        })();
        match layer {
            Ok(l) => {
                layer_status.insert(id, Status::Live);
                layers.push(l);
            }
            Err(reason) => {
                problems.push(malformed("layer", &id, &reason));
                layer_status.insert(id, Status::Invalid);
            }
        }
    }

    // Entities.
    let ents = doc.get_map(ENTITIES);
    let mut ctx = Ctx { entities: BTreeMap::new(), status: HashMap::new() };
    for key in ents.keys() {
        let id = key.to_string();
        let Some(m) = child_map(&ents, &id) else {
            problems.push(malformed("entity", &id, "not a map"));
            ctx.status.insert(id, Status::Invalid);
            continue;
        };
        let f = fields_of(&m);
        let r = Reader { f: &f };
        if r.get(K_DELETED).and_then(as_bool) == Some(true) {
            ctx.status.insert(id, Status::Deleted);
            continue;
        }
        let entity = (|| -> Result<Entity, String> {
            let kind_s = r.string(K_KIND)?;
            let kind = EntityKind::parse(&kind_s).ok_or_else(|| format!("unknown kind {kind_s:?}"))?;
            let content =
                if kind == EntityKind::Text { child_text(&m, K_CONTENT).map(|t| t.to_string()) } else { None };
            Ok(Entity {
                id: id.clone(),
                layer: r.string(K_LAYER)?,
                color: r.opt("color", |v| as_str(v).and_then(|s| Color::parse(s).ok()).map(Some), None)?,
                line_type: r.opt("line_type", |v| as_str(v).and_then(LineType::parse).map(Some), None)?,
                line_weight: r.opt("line_weight", |v| as_f64(v).filter(|w| *w >= 0.0).map(Some), None)?,
                owner: r.opt("owner", |v| as_str(v).map(|s| Some(s.to_owned())), None)?,
                geometry: read_geometry(kind, &r, content)?,
                measurement: None,
            })
        })();
        match entity {
            Ok(e) => {
                ctx.status.insert(id.clone(), Status::Live);
                ctx.entities.insert(id, e);
            }
            Err(reason) => {
                problems.push(malformed("entity", &id, &reason));
                ctx.status.insert(id, Status::Invalid);
            }
        }
    }

    // Nodes.
    let tree = doc.get_tree(TREE);
    let index_map = doc.get_map(NODES);
    let mut index: BTreeMap<String, TreeID> = BTreeMap::new();
    let mut by_tid: HashMap<TreeID, String> = HashMap::new();
    let mut node_status: HashMap<String, Status> = HashMap::new();
    for key in index_map.keys() {
        let id = key.to_string();
        let tid = get_val(&index_map, &id).as_ref().and_then(|v| {
            let LoroValue::List(l) = v else { return None };
            match l.as_slice() {
                [LoroValue::I64(p), LoroValue::I64(c)] => {
                    Some(TreeID { peer: *p as u64, counter: i32::try_from(*c).ok()? })
                }
                _ => None,
            }
        });
        match tid.filter(|t| tree.contains(*t)) {
            // Undoing a node's creation deletes it from the Loro tree.
            Some(t) if tree.is_node_deleted(&t) != Ok(false) => {
                by_tid.insert(t, id.clone());
                node_status.insert(id, Status::Deleted);
            }
            Some(t) => {
                by_tid.insert(t, id.clone());
                index.insert(id, t);
            }
            None => problems.push(malformed("node", &id, "index entry names no tree node")),
        }
    }
    let mut duplicates = BTreeSet::new();
    for tid in tree.nodes() {
        if !by_tid.contains_key(&tid)
            && let Ok(m) = tree.get_meta(tid)
            && let Some(id) = get_val(&m, K_ID).as_ref().and_then(as_str)
        {
            duplicates.insert(id.to_owned());
        }
    }
    problems.extend(duplicates.into_iter().map(|id| Problem::DuplicateNode { id }));

    struct RawNode {
        kind: NodeKind,
        name: String,
        base: Option<Point>,
        members: Vec<String>,
    }
    let mut raw: BTreeMap<String, RawNode> = BTreeMap::new();
    for (id, tid) in &index {
        let Ok(m) = tree.get_meta(*tid) else {
            node_status.insert(id.clone(), Status::Invalid);
            continue;
        };
        let f = fields_of(&m);
        let r = Reader { f: &f };
        if r.get(K_DELETED).and_then(as_bool) == Some(true) {
            node_status.insert(id.clone(), Status::Deleted);
            continue;
        }
        let node = (|| -> Result<RawNode, String> {
            let kind = r.req(K_KIND, |v| as_str(v).and_then(NodeKind::parse))?;
            let mut members: Vec<String> =
                child_map(&m, K_MEMBERS).map(|mm| mm.keys().map(|k| k.to_string()).collect()).unwrap_or_default();
            members.sort();
            Ok(RawNode {
                kind,
                name: r.opt(K_NAME, |v| as_str(v).map(str::to_owned), String::new())?,
                base: match kind {
                    NodeKind::Block => Some(r.opt(K_BASE, as_point, [0.0, 0.0])?),
                    NodeKind::Group => None,
                },
                members,
            })
        })();
        match node {
            Ok(n) => {
                node_status.insert(id.clone(), Status::Live);
                raw.insert(id.clone(), n);
            }
            Err(reason) => {
                problems.push(malformed("node", id, &reason));
                node_status.insert(id.clone(), Status::Invalid);
            }
        }
    }
    // Effective parent: the nearest live ancestor.
    let effective_parent = |tid: TreeID| -> Option<String> {
        let mut cur = tid;
        for _ in 0..=index.len() + by_tid.len() + 1 {
            match tree.parent(cur) {
                Some(TreeParentId::Node(p)) => {
                    if let Some(pid) = by_tid.get(&p)
                        && raw.contains_key(pid)
                    {
                        return Some(pid.clone());
                    }
                    cur = p;
                }
                _ => return None,
            }
        }
        None
    };
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (id, rn) in &raw {
        let parent = index.get(id).and_then(|t| effective_parent(*t));
        nodes.insert(
            id.clone(),
            Node {
                id: id.clone(),
                kind: rn.kind,
                name: rn.name.clone(),
                parent,
                children: Vec::new(),
                members: rn.members.clone(),
                base: rn.base,
            },
        );
    }
    let child_links: Vec<(String, String)> =
        nodes.values().filter_map(|n| n.parent.clone().map(|p| (p, n.id.clone()))).collect();
    for (p, c) in child_links {
        if let Some(n) = nodes.get_mut(&p) {
            n.children.push(c);
        }
    }
    for n in nodes.values_mut() {
        n.children.sort();
        if n.kind == NodeKind::Group {
            for m in &n.members {
                if let Some(reason) = status_reason(ctx.status.get(m).copied()) {
                    problems.push(broken(&n.id, "members", m, reason));
                }
            }
        }
    }
    let node_ref = |from: &str, field: &str, to: &str, problems: &mut Vec<Problem>| -> bool {
        if let Some(reason) = status_reason(node_status.get(to).copied()) {
            problems.push(broken(from, field, to, reason));
            return false;
        }
        if nodes.get(to).map(|n| n.kind) != Some(NodeKind::Block) {
            problems.push(broken(from, field, to, BrokenReason::WrongKind));
            return false;
        }
        true
    };

    // References of entities, measurements, block membership.
    let mut measurements = Vec::new();
    let mut block_members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut block_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in ctx.entities.values() {
        if let Some(reason) = status_reason(layer_status.get(&e.layer).copied()) {
            problems.push(broken(&e.id, "layer", &e.layer, reason));
        }
        let owner_ok = match &e.owner {
            Some(o) if node_ref(&e.id, "owner", o, &mut problems) => {
                block_members.entry(o.clone()).or_default().push(e.id.clone());
                Some(o.clone())
            }
            _ => None,
        };
        if let Geometry::Insert { block, .. } = &e.geometry
            && node_ref(&e.id, "block", block, &mut problems)
            && let Some(o) = owner_ok
        {
            block_edges.entry(o).or_default().insert(block.clone());
        }
        if let Some(m) = ctx.measure(e, &mut problems) {
            measurements.push((e.id.clone(), m));
        }
    }
    for (id, m) in measurements {
        if let Some(e) = ctx.entities.get_mut(&id) {
            e.measurement = Some(m);
        }
    }
    for (b, members) in block_members {
        if let Some(n) = nodes.get_mut(&b) {
            n.members = members;
        }
    }
    problems.extend(recursive_blocks(&block_edges).into_iter().map(|block| Problem::RecursiveBlock { block }));

    // Draw order: the order list first (first occurrence wins), then live
    // entities missing from it, by id.
    let mut entities = Vec::with_capacity(ctx.entities.len());
    if let LoroValue::List(order) = doc.get_list(ORDER).get_value() {
        for v in order.iter() {
            if let Some(id) = as_str(v)
                && let Some(e) = ctx.entities.remove(id)
            {
                entities.push(e);
            }
        }
    }
    entities.extend(ctx.entities.into_values());

    problems.sort();
    problems.dedup();
    ResolvedDoc { schema, meta, layers, entities, nodes: nodes.into_values().collect(), problems }
}

fn malformed(what: &str, id: &str, reason: &str) -> Problem {
    Problem::Malformed { what: what.to_owned(), id: id.to_owned(), reason: reason.to_owned() }
}

/// Blocks that reach themselves through the "contains an insert of" graph.
fn recursive_blocks(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for start in edges.keys() {
        let mut stack: Vec<&String> = edges[start].iter().collect();
        let mut seen: HashSet<&String> = HashSet::new();
        while let Some(b) = stack.pop() {
            if b == start {
                out.insert(start.clone());
                break;
            }
            if seen.insert(b)
                && let Some(next) = edges.get(b)
            {
                stack.extend(next.iter());
            }
        }
    }
    out
}
