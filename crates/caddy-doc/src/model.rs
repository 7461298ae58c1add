//! Value types of the document model: points, colours, line types, entity
//! geometry and the typed entity properties, with their validation.
//!
//! Units: coordinates and lengths are in drawing units (see [`Units`]);
//! **all angles are in degrees, counter-clockwise from the +x axis**, like
//! DXF; line weights are in millimetres (a plotted width, independent of
//! zoom).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{DocError, Result};
use crate::limits::Limits;

/// A 2-D point or vector `[x, y]`, in drawing units.
pub type Point = [f64; 2];

/// A Loro peer id: identifies one writer session. Two sessions (users,
/// devices, tabs) must never write with the same peer id at the same time.
pub type PeerId = u64;

/// Largest absolute coordinate or length accepted in an edit.
pub const MAX_COORD: f64 = 1e12;

/// Largest absolute polyline bulge accepted (a bulge of 1 is a half circle).
pub const MAX_BULGE: f64 = 1e3;

/// Largest spline degree accepted.
pub const MAX_SPLINE_DEGREE: u32 = 10;

/// Largest line weight accepted, in millimetres.
pub const MAX_LINE_WEIGHT_MM: f64 = 100.0;

/// Longest id (entity, layer or node), in bytes.
pub const MAX_ID_BYTES: usize = 64;

pub(crate) fn check_finite(field: &str, v: f64) -> Result<()> {
    if !v.is_finite() {
        return Err(DocError::number(field, format!("{v} is not a finite number")));
    }
    if v.abs() > MAX_COORD {
        return Err(DocError::number(field, format!("{v} is outside ±{MAX_COORD:e}")));
    }
    Ok(())
}

pub(crate) fn check_positive(field: &str, v: f64) -> Result<()> {
    check_finite(field, v)?;
    if v <= 0.0 {
        return Err(DocError::number(field, format!("{v} must be greater than 0")));
    }
    Ok(())
}

pub(crate) fn check_point(field: &str, p: &Point) -> Result<()> {
    check_finite(field, p[0])?;
    check_finite(field, p[1])
}

pub(crate) fn check_string(field: &str, s: &str, limits: &Limits) -> Result<()> {
    Limits::check_named(field, s.len(), limits.max_string_bytes)
}

impl Limits {
    fn check_named(_field: &str, actual: usize, limit: usize) -> Result<()> {
        Limits::check("string length in bytes", actual, limit)
    }
}

/// Checks an id chosen by a caller for a new entity, layer or node:
/// 1..=64 bytes of `[A-Za-z0-9_.:-]`. `@` is reserved for generated ids
/// (`<counter>@<peer>`), so a chosen id never collides with a generated one.
pub fn validate_new_id(id: &str) -> Result<()> {
    validate_id_chars(id, false)
}

/// Checks an id used to refer to an existing item (generated ids contain `@`).
pub(crate) fn validate_ref_id(id: &str) -> Result<()> {
    validate_id_chars(id, true)
}

fn validate_id_chars(id: &str, allow_at: bool) -> Result<()> {
    let bad = |reason: &str| DocError::InvalidId { id: id.chars().take(80).collect(), reason: reason.to_owned() };
    if id.is_empty() {
        return Err(bad("empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(bad("longer than 64 bytes"));
    }
    for c in id.chars() {
        let ok = c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') || (allow_at && c == '@');
        if !ok {
            return Err(bad(if c == '@' {
                "'@' is reserved for generated ids"
            } else {
                "only A-Z a-z 0-9 _ . : - are allowed"
            }));
        }
    }
    Ok(())
}

/// An RGB colour, always `#rrggbb` in lower case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Color(String);

impl Color {
    /// Black, the default colour of layer `"0"`.
    pub fn black() -> Color {
        Color("#000000".to_owned())
    }

    /// A colour from its red, green and blue components.
    pub fn rgb(r: u8, g: u8, b: u8) -> Color {
        Color(format!("#{r:02x}{g:02x}{b:02x}"))
    }

    /// Parses `#rrggbb` (either case).
    pub fn parse(s: &str) -> Result<Color> {
        let hex = s.strip_prefix('#').unwrap_or("");
        if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(DocError::value(
                "color",
                format!("{:?} is not of the form #rrggbb", s.chars().take(20).collect::<String>()),
            ));
        }
        Ok(Color(format!("#{}", hex.to_ascii_lowercase())))
    }

    /// The `#rrggbb` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Color {
    type Error = DocError;
    fn try_from(s: String) -> Result<Color> {
        Color::parse(&s)
    }
}

impl From<Color> for String {
    fn from(c: Color) -> String {
        c.0
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $var),+
        }
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// The stored and JSON spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }
            /// Parses the stored and JSON spelling.
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$var),)+ _ => None }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// How a curve is stroked.
    LineType {
        /// Solid.
        Continuous = "continuous",
        /// Long dashes.
        Dashed = "dashed",
        /// Dots.
        Dotted = "dotted",
        /// Dash, dot.
        DashDot = "dashdot",
        /// Long dash, short dash (centre lines).
        Center = "center",
        /// Short dashes (hidden edges).
        Hidden = "hidden",
    }
}

impl LineType {
    /// The dash pattern (on, off, ... lengths in output pixels) every
    /// renderer uses, so the SVG export and the GPU path agree; empty for
    /// a solid line.
    pub fn dash_px(self) -> &'static [f64] {
        match self {
            LineType::Continuous => &[],
            LineType::Dashed => &[8.0, 4.0],
            LineType::Dotted => &[1.0, 3.0],
            LineType::DashDot => &[8.0, 3.0, 1.0, 3.0],
            LineType::Center => &[12.0, 3.0, 3.0, 3.0],
            LineType::Hidden => &[4.0, 3.0],
        }
    }
}

string_enum! {
    /// Drawing units.
    Units {
        /// No unit.
        Unitless = "unitless",
        /// Millimetres.
        Millimeters = "mm",
        /// Centimetres.
        Centimeters = "cm",
        /// Metres.
        Meters = "m",
        /// Inches.
        Inches = "in",
        /// Feet.
        Feet = "ft",
    }
}

string_enum! {
    /// The kind of an entity, stored as the entity's `kind` property.
    EntityKind {
        /// [`Geometry::Line`].
        Line = "line",
        /// [`Geometry::Polyline`].
        Polyline = "polyline",
        /// [`Geometry::Circle`].
        Circle = "circle",
        /// [`Geometry::Arc`].
        Arc = "arc",
        /// [`Geometry::Ellipse`].
        Ellipse = "ellipse",
        /// [`Geometry::Spline`].
        Spline = "spline",
        /// [`Geometry::Text`].
        Text = "text",
        /// [`Geometry::LinearDim`].
        LinearDim = "linear_dim",
        /// [`Geometry::AlignedDim`].
        AlignedDim = "aligned_dim",
        /// [`Geometry::RadialDim`].
        RadialDim = "radial_dim",
        /// [`Geometry::AngularDim`].
        AngularDim = "angular_dim",
        /// [`Geometry::Hatch`].
        Hatch = "hatch",
        /// [`Geometry::Insert`].
        Insert = "insert",
    }
}

string_enum! {
    /// Which point of a referenced entity a dimension measures from.
    Snap {
        /// Start point (line, arc, polyline, spline; the position of a text or insert).
        Start = "start",
        /// End point (line, arc, polyline, spline).
        End = "end",
        /// Centre (circle, arc, ellipse).
        Center = "center",
        /// Midpoint (line; the middle of an arc).
        Mid = "mid",
    }
}

string_enum! {
    /// The kind of a node of the group/block hierarchy.
    NodeKind {
        /// A named group of entities (and, through the tree, of other nodes).
        Group = "group",
        /// A block definition: the entities whose `owner` is this node, drawn
        /// wherever an [`Geometry::Insert`] names it.
        Block = "block",
    }
}

/// A polyline vertex. In JSON: `[x, y]` or `[x, y, bulge]`.
///
/// The bulge describes the segment from this vertex to the next one (for the
/// last vertex of a closed polyline, the closing segment): it is
/// `tan(θ/4)` where `θ` is the arc's included angle, positive for a
/// counter-clockwise arc, 0 for a straight segment (DXF convention).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<f64>", into = "Vec<f64>")]
pub struct Vertex {
    /// X coordinate.
    pub x: f64,
    /// Y coordinate.
    pub y: f64,
    /// Bulge of the segment that starts here.
    pub bulge: f64,
}

impl Vertex {
    /// A vertex with a straight outgoing segment.
    pub fn new(x: f64, y: f64) -> Vertex {
        Vertex { x, y, bulge: 0.0 }
    }

    /// A vertex whose outgoing segment is an arc of the given bulge.
    pub fn with_bulge(x: f64, y: f64, bulge: f64) -> Vertex {
        Vertex { x, y, bulge }
    }

    /// The vertex position.
    pub fn point(&self) -> Point {
        [self.x, self.y]
    }
}

impl TryFrom<Vec<f64>> for Vertex {
    type Error = String;
    fn try_from(v: Vec<f64>) -> std::result::Result<Vertex, String> {
        match v.as_slice() {
            [x, y] => Ok(Vertex::new(*x, *y)),
            [x, y, b] => Ok(Vertex::with_bulge(*x, *y, *b)),
            _ => Err(format!("a vertex is [x, y] or [x, y, bulge], got {} numbers", v.len())),
        }
    }
}

impl From<Vertex> for Vec<f64> {
    fn from(v: Vertex) -> Vec<f64> {
        vec![v.x, v.y, v.bulge]
    }
}

/// An anchor of a dimension: a fixed point, or a point of another entity.
///
/// JSON: `{"point": [x, y]}` or `{"entity": "id", "snap": "start"}` (`snap`
/// defaults to `start`). An entity anchor follows the entity when it moves;
/// if the entity is deleted the dimension is kept and reported as broken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum DimPoint {
    /// A fixed point.
    Point {
        /// The point.
        point: Point,
    },
    /// A point of another entity.
    Entity {
        /// The referenced entity.
        entity: String,
        /// Which of its points.
        #[serde(default = "default_snap")]
        snap: Snap,
    },
}

fn default_snap() -> Snap {
    Snap::Start
}

impl DimPoint {
    /// A fixed anchor.
    pub fn at(p: Point) -> DimPoint {
        DimPoint::Point { point: p }
    }

    /// An anchor on another entity.
    pub fn on(entity: impl Into<String>, snap: Snap) -> DimPoint {
        DimPoint::Entity { entity: entity.into(), snap }
    }

    fn validate(&self, field: &str) -> Result<()> {
        match self {
            DimPoint::Point { point } => check_point(field, point),
            DimPoint::Entity { entity, .. } => validate_ref_id(entity),
        }
    }
}

/// How a hatch is filled. JSON: `{"type": "solid"}` or
/// `{"type": "pattern", "name": "ANSI31", "scale": 1, "angle": 45}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fill {
    /// Solid fill in the entity colour.
    #[default]
    Solid,
    /// Parallel lines (the SVG export draws every named pattern as lines at
    /// `angle`, spaced `scale` drawing units apart).
    Pattern {
        /// Pattern name, e.g. `ANSI31`.
        name: String,
        /// Line spacing, drawing units.
        #[serde(default = "one")]
        scale: f64,
        /// Line angle, degrees.
        #[serde(default)]
        angle: f64,
    },
}

fn one() -> f64 {
    1.0
}
fn full_turn() -> f64 {
    360.0
}
fn two() -> u32 {
    2
}
fn default_text_height() -> f64 {
    2.5
}
fn unit_scale() -> [f64; 2] {
    [1.0, 1.0]
}

/// The geometry of an entity; `kind` in JSON. Used both to create entities
/// (the body of an `add` operation) and in the resolved model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Geometry {
    /// A straight segment.
    Line {
        /// Start point.
        from: Point,
        /// End point.
        to: Point,
    },
    /// Connected segments, straight or arcs (per-vertex bulge).
    Polyline {
        /// At least 2 vertices.
        vertices: Vec<Vertex>,
        /// Whether the last vertex connects back to the first.
        #[serde(default)]
        closed: bool,
    },
    /// A full circle.
    Circle {
        /// Centre.
        center: Point,
        /// Radius, > 0.
        radius: f64,
    },
    /// A circular arc, counter-clockwise from `start_angle` to `end_angle`.
    Arc {
        /// Centre.
        center: Point,
        /// Radius, > 0.
        radius: f64,
        /// Start angle, degrees.
        start_angle: f64,
        /// End angle, degrees.
        end_angle: f64,
    },
    /// An ellipse or elliptical arc (DXF form).
    Ellipse {
        /// Centre.
        center: Point,
        /// Vector from the centre to one end of the major axis.
        major_axis: Point,
        /// Minor/major axis ratio, in (0, 1].
        ratio: f64,
        /// Start parameter, degrees (0 for a full ellipse).
        #[serde(default)]
        start_param: f64,
        /// End parameter, degrees (360 for a full ellipse).
        #[serde(default = "full_turn")]
        end_param: f64,
    },
    /// A clamped, uniform B-spline through its control points' hull.
    Spline {
        /// At least 2 control points.
        control_points: Vec<Point>,
        /// Degree, 1..=10 (clamped to `control_points.len() - 1` when drawn).
        degree: u32,
    },
    /// A line of text; its content is a collaborative text.
    Text {
        /// Insertion point (left end of the baseline).
        position: Point,
        /// Cap height, drawing units, > 0.
        height: f64,
        /// Rotation, degrees.
        #[serde(default)]
        rotation: f64,
        /// The text.
        content: String,
    },
    /// A dimension measuring the distance between two anchors along a
    /// direction (`angle` 0: horizontal, 90: vertical).
    LinearDim {
        /// First anchor.
        p1: DimPoint,
        /// Second anchor.
        p2: DimPoint,
        /// Distance of the dimension line from `p1`, perpendicular to the
        /// measuring direction.
        offset: f64,
        /// Measuring direction, degrees.
        #[serde(default)]
        angle: f64,
        /// Decimals shown.
        #[serde(default = "two")]
        precision: u32,
        /// Text and arrow size, drawing units.
        #[serde(default = "default_text_height")]
        text_height: f64,
    },
    /// A dimension measuring the true distance between two anchors.
    AlignedDim {
        /// First anchor.
        p1: DimPoint,
        /// Second anchor.
        p2: DimPoint,
        /// Distance of the dimension line from the measured segment (to its left).
        offset: f64,
        /// Decimals shown.
        #[serde(default = "two")]
        precision: u32,
        /// Text and arrow size, drawing units.
        #[serde(default = "default_text_height")]
        text_height: f64,
    },
    /// The radius of a circle or arc.
    RadialDim {
        /// The circle or arc measured.
        target: String,
        /// Direction of the leader from the centre, degrees.
        #[serde(default)]
        angle: f64,
        /// Decimals shown.
        #[serde(default = "two")]
        precision: u32,
        /// Text and arrow size, drawing units.
        #[serde(default = "default_text_height")]
        text_height: f64,
    },
    /// The angle at `vertex` from `p1` counter-clockwise to `p2`, in degrees.
    AngularDim {
        /// Apex of the angle.
        vertex: DimPoint,
        /// Point on the first leg.
        p1: DimPoint,
        /// Point on the second leg.
        p2: DimPoint,
        /// Radius of the dimension arc, > 0.
        radius: f64,
        /// Decimals shown.
        #[serde(default = "two")]
        precision: u32,
        /// Text and arrow size, drawing units.
        #[serde(default = "default_text_height")]
        text_height: f64,
    },
    /// A filled region: the even-odd union of its boundary loops.
    Hatch {
        /// Closed loops of at least 3 points each.
        loops: Vec<Vec<Point>>,
        /// Solid or pattern.
        #[serde(default)]
        fill: Fill,
    },
    /// An instance of a block definition: the block's entities mapped by
    /// `p ↦ position + R(rotation) · diag(scale) · (p − base)`.
    Insert {
        /// The block definition (a node of kind `block`).
        block: String,
        /// Where the block's base point lands.
        position: Point,
        /// Rotation, degrees.
        #[serde(default)]
        rotation: f64,
        /// Scale factors along x and y, non-zero.
        #[serde(default = "unit_scale")]
        scale: [f64; 2],
    },
}

impl Geometry {
    /// The kind of this geometry.
    pub fn kind(&self) -> EntityKind {
        match self {
            Geometry::Line { .. } => EntityKind::Line,
            Geometry::Polyline { .. } => EntityKind::Polyline,
            Geometry::Circle { .. } => EntityKind::Circle,
            Geometry::Arc { .. } => EntityKind::Arc,
            Geometry::Ellipse { .. } => EntityKind::Ellipse,
            Geometry::Spline { .. } => EntityKind::Spline,
            Geometry::Text { .. } => EntityKind::Text,
            Geometry::LinearDim { .. } => EntityKind::LinearDim,
            Geometry::AlignedDim { .. } => EntityKind::AlignedDim,
            Geometry::RadialDim { .. } => EntityKind::RadialDim,
            Geometry::AngularDim { .. } => EntityKind::AngularDim,
            Geometry::Hatch { .. } => EntityKind::Hatch,
            Geometry::Insert { .. } => EntityKind::Insert,
        }
    }

    /// The geometry as a list of properties (what an add writes).
    pub fn into_properties(self) -> Vec<Property> {
        use Property as P;
        match self {
            Geometry::Line { from, to } => vec![P::From(from), P::To(to)],
            Geometry::Polyline { vertices, closed } => {
                vec![P::Vertices(vertices), P::Closed(closed)]
            }
            Geometry::Circle { center, radius } => vec![P::Center(center), P::Radius(radius)],
            Geometry::Arc { center, radius, start_angle, end_angle } => {
                vec![P::Center(center), P::Radius(radius), P::StartAngle(start_angle), P::EndAngle(end_angle)]
            }
            Geometry::Ellipse { center, major_axis, ratio, start_param, end_param } => vec![
                P::Center(center),
                P::MajorAxis(major_axis),
                P::Ratio(ratio),
                P::StartParam(start_param),
                P::EndParam(end_param),
            ],
            Geometry::Spline { control_points, degree } => vec![P::ControlPoints(control_points), P::Degree(degree)],
            Geometry::Text { position, height, rotation, content } => {
                vec![P::Position(position), P::Height(height), P::Rotation(rotation), P::Content(content)]
            }
            Geometry::LinearDim { p1, p2, offset, angle, precision, text_height } => vec![
                P::P1(p1),
                P::P2(p2),
                P::Offset(offset),
                P::Angle(angle),
                P::Precision(precision),
                P::TextHeight(text_height),
            ],
            Geometry::AlignedDim { p1, p2, offset, precision, text_height } => {
                vec![P::P1(p1), P::P2(p2), P::Offset(offset), P::Precision(precision), P::TextHeight(text_height)]
            }
            Geometry::RadialDim { target, angle, precision, text_height } => {
                vec![P::Target(target), P::Angle(angle), P::Precision(precision), P::TextHeight(text_height)]
            }
            Geometry::AngularDim { vertex, p1, p2, radius, precision, text_height } => vec![
                P::Vertex(vertex),
                P::P1(p1),
                P::P2(p2),
                P::Radius(radius),
                P::Precision(precision),
                P::TextHeight(text_height),
            ],
            Geometry::Hatch { loops, fill } => vec![P::Loops(loops), P::Fill(fill)],
            Geometry::Insert { block, position, rotation, scale } => {
                vec![P::Block(block), P::Position(position), P::Rotation(rotation), P::Scale(scale)]
            }
        }
    }

    /// Checks every value and the cross-field rules of a new entity.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        if let Geometry::Spline { control_points, degree } = self
            && control_points.len() < *degree as usize + 1
        {
            return Err(DocError::value(
                "control_points",
                format!(
                    "a degree {degree} spline needs at least {} control points, got {}",
                    degree + 1,
                    control_points.len()
                ),
            ));
        }
        for p in self.clone().into_properties() {
            p.validate(limits)?;
        }
        Ok(())
    }
}

/// One typed entity property, as set by [`Document::set_entity_property`]
/// and the `set` operation. JSON: a one-key object, e.g. `{"radius": 7.5}`,
/// `{"color": "#ff0000"}`, `{"color": null}` (back to the layer colour).
///
/// [`Document::set_entity_property`]: crate::Document::set_entity_property
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Property {
    /// Layer id (every kind).
    Layer(String),
    /// Colour override; `None` means "by layer" (every kind).
    Color(Option<Color>),
    /// Line type override; `None` means "by layer" (every kind).
    LineType(Option<LineType>),
    /// Line weight override in mm; `None` means "by layer" (every kind).
    LineWeight(Option<f64>),
    /// The block definition this entity belongs to; `None` is model space
    /// (every kind).
    Owner(Option<String>),
    /// Line start.
    From(Point),
    /// Line end.
    To(Point),
    /// Polyline vertices.
    Vertices(Vec<Vertex>),
    /// Polyline closed flag.
    Closed(bool),
    /// Centre of a circle, arc or ellipse.
    Center(Point),
    /// Radius of a circle or arc, or of an angular dimension's arc.
    Radius(f64),
    /// Arc start angle.
    StartAngle(f64),
    /// Arc end angle.
    EndAngle(f64),
    /// Ellipse major axis vector.
    MajorAxis(Point),
    /// Ellipse axis ratio.
    Ratio(f64),
    /// Ellipse start parameter.
    StartParam(f64),
    /// Ellipse end parameter.
    EndParam(f64),
    /// Spline control points.
    ControlPoints(Vec<Point>),
    /// Spline degree.
    Degree(u32),
    /// Position of a text or insert.
    Position(Point),
    /// Text height.
    Height(f64),
    /// Rotation of a text or insert.
    Rotation(f64),
    /// Replaces the whole content of a text (character edits merge better:
    /// use `text_insert` / `text_delete`).
    Content(String),
    /// First anchor of a linear, aligned or angular dimension.
    P1(DimPoint),
    /// Second anchor of a linear, aligned or angular dimension.
    P2(DimPoint),
    /// Apex of an angular dimension.
    Vertex(DimPoint),
    /// Target of a radial dimension.
    Target(String),
    /// Offset of a linear or aligned dimension.
    Offset(f64),
    /// Direction of a linear or radial dimension.
    Angle(f64),
    /// Decimals of a dimension.
    Precision(u32),
    /// Text size of a dimension.
    TextHeight(f64),
    /// Hatch loops.
    Loops(Vec<Vec<Point>>),
    /// Hatch fill.
    Fill(Fill),
    /// Block inserted by an insert.
    Block(String),
    /// Scale of an insert.
    Scale([f64; 2]),
}

impl Property {
    /// The property's name, which is also its storage key.
    pub fn name(&self) -> &'static str {
        use Property as P;
        match self {
            P::Layer(_) => "layer",
            P::Color(_) => "color",
            P::LineType(_) => "line_type",
            P::LineWeight(_) => "line_weight",
            P::Owner(_) => "owner",
            P::From(_) => "from",
            P::To(_) => "to",
            P::Vertices(_) => "vertices",
            P::Closed(_) => "closed",
            P::Center(_) => "center",
            P::Radius(_) => "radius",
            P::StartAngle(_) => "start_angle",
            P::EndAngle(_) => "end_angle",
            P::MajorAxis(_) => "major_axis",
            P::Ratio(_) => "ratio",
            P::StartParam(_) => "start_param",
            P::EndParam(_) => "end_param",
            P::ControlPoints(_) => "control_points",
            P::Degree(_) => "degree",
            P::Position(_) => "position",
            P::Height(_) => "height",
            P::Rotation(_) => "rotation",
            P::Content(_) => "content",
            P::P1(_) => "p1",
            P::P2(_) => "p2",
            P::Vertex(_) => "vertex",
            P::Target(_) => "target",
            P::Offset(_) => "offset",
            P::Angle(_) => "angle",
            P::Precision(_) => "precision",
            P::TextHeight(_) => "text_height",
            P::Loops(_) => "loops",
            P::Fill(_) => "fill",
            P::Block(_) => "block",
            P::Scale(_) => "scale",
        }
    }

    /// Whether an entity of `kind` has this property.
    pub fn applies_to(&self, kind: EntityKind) -> bool {
        use EntityKind as K;
        use Property as P;
        match self {
            P::Layer(_) | P::Color(_) | P::LineType(_) | P::LineWeight(_) | P::Owner(_) => true,
            P::From(_) | P::To(_) => kind == K::Line,
            P::Vertices(_) | P::Closed(_) => kind == K::Polyline,
            P::Center(_) => matches!(kind, K::Circle | K::Arc | K::Ellipse),
            P::Radius(_) => matches!(kind, K::Circle | K::Arc | K::AngularDim),
            P::StartAngle(_) | P::EndAngle(_) => kind == K::Arc,
            P::MajorAxis(_) | P::Ratio(_) | P::StartParam(_) | P::EndParam(_) => kind == K::Ellipse,
            P::ControlPoints(_) | P::Degree(_) => kind == K::Spline,
            P::Position(_) | P::Rotation(_) => matches!(kind, K::Text | K::Insert),
            P::Height(_) | P::Content(_) => kind == K::Text,
            P::P1(_) | P::P2(_) => matches!(kind, K::LinearDim | K::AlignedDim | K::AngularDim),
            P::Vertex(_) => kind == K::AngularDim,
            P::Target(_) => kind == K::RadialDim,
            P::Offset(_) => matches!(kind, K::LinearDim | K::AlignedDim),
            P::Angle(_) => matches!(kind, K::LinearDim | K::RadialDim),
            P::Precision(_) | P::TextHeight(_) => {
                matches!(kind, K::LinearDim | K::AlignedDim | K::RadialDim | K::AngularDim)
            }
            P::Loops(_) | P::Fill(_) => kind == K::Hatch,
            P::Block(_) | P::Scale(_) => kind == K::Insert,
        }
    }

    /// Number of points the value carries (checked against
    /// [`Limits::max_points`]).
    pub(crate) fn point_count(&self) -> usize {
        match self {
            Property::Vertices(v) => v.len(),
            Property::ControlPoints(v) => v.len(),
            Property::Loops(l) => l.iter().map(Vec::len).sum(),
            _ => 0,
        }
    }

    /// Checks the value on its own (finite numbers, ranges, sizes, syntax).
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        use Property as P;
        let name = self.name();
        Limits::check("points in one entity", self.point_count(), limits.max_points)?;
        match self {
            P::Layer(id) => validate_ref_id(id),
            P::Owner(Some(id)) | P::Target(id) | P::Block(id) => validate_ref_id(id),
            P::Owner(None) | P::Color(_) | P::LineType(_) | P::Closed(_) => Ok(()),
            P::LineWeight(Some(w)) => {
                check_finite(name, *w)?;
                if !(0.0..=MAX_LINE_WEIGHT_MM).contains(w) {
                    return Err(DocError::number(name, format!("{w} mm is outside 0..={MAX_LINE_WEIGHT_MM}")));
                }
                Ok(())
            }
            P::LineWeight(None) => Ok(()),
            P::From(p) | P::To(p) | P::Center(p) | P::Position(p) => check_point(name, p),
            P::MajorAxis(p) => {
                check_point(name, p)?;
                if p[0] == 0.0 && p[1] == 0.0 {
                    return Err(DocError::number(name, "the major axis must not be zero"));
                }
                Ok(())
            }
            P::Vertices(vs) => {
                if vs.len() < 2 {
                    return Err(DocError::value(name, "a polyline needs at least 2 vertices"));
                }
                for v in vs {
                    check_finite(name, v.x)?;
                    check_finite(name, v.y)?;
                    check_finite(name, v.bulge)?;
                    if v.bulge.abs() > MAX_BULGE {
                        return Err(DocError::number(name, format!("bulge {} is outside ±{MAX_BULGE}", v.bulge)));
                    }
                }
                Ok(())
            }
            P::ControlPoints(ps) => {
                if ps.len() < 2 {
                    return Err(DocError::value(name, "a spline needs at least 2 control points"));
                }
                ps.iter().try_for_each(|p| check_point(name, p))
            }
            P::Loops(loops) => {
                if loops.is_empty() {
                    return Err(DocError::value(name, "a hatch needs at least one loop"));
                }
                for l in loops {
                    if l.len() < 3 {
                        return Err(DocError::value(name, "each hatch loop needs at least 3 points"));
                    }
                    l.iter().try_for_each(|p| check_point(name, p))?;
                }
                Ok(())
            }
            P::Radius(r) | P::Height(r) | P::TextHeight(r) => check_positive(name, *r),
            P::StartAngle(v)
            | P::EndAngle(v)
            | P::StartParam(v)
            | P::EndParam(v)
            | P::Rotation(v)
            | P::Offset(v)
            | P::Angle(v) => check_finite(name, *v),
            P::Ratio(r) => {
                check_finite(name, *r)?;
                if !(*r > 0.0 && *r <= 1.0) {
                    return Err(DocError::number(name, format!("{r} is outside (0, 1]")));
                }
                Ok(())
            }
            P::Degree(d) => {
                if *d == 0 || *d > MAX_SPLINE_DEGREE {
                    return Err(DocError::number(name, format!("{d} is outside 1..={MAX_SPLINE_DEGREE}")));
                }
                Ok(())
            }
            P::Precision(p) => {
                if *p > 10 {
                    return Err(DocError::number(name, format!("{p} is outside 0..=10")));
                }
                Ok(())
            }
            P::Content(s) => Limits::check("text length in characters", s.chars().count(), limits.max_text_chars),
            P::P1(d) | P::P2(d) | P::Vertex(d) => d.validate(name),
            P::Fill(f) => match f {
                Fill::Solid => Ok(()),
                Fill::Pattern { name: n, scale, angle } => {
                    check_string(name, n, limits)?;
                    check_positive(name, *scale)?;
                    check_finite(name, *angle)
                }
            },
            P::Scale(s) => {
                check_point(name, s)?;
                if s[0] == 0.0 || s[1] == 0.0 {
                    return Err(DocError::number(name, "scale factors must not be zero"));
                }
                Ok(())
            }
        }
    }
}

/// Drawing-wide style overrides of a new entity (`None`: by layer).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Style {
    /// Colour override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<Color>,
    /// Line type override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_type: Option<LineType>,
    /// Line weight override, mm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_weight: Option<f64>,
}

/// One layer property, as set by [`Document::set_layer_property`] and the
/// `set_layer` operation. JSON: a one-key object, e.g. `{"visible": false}`.
///
/// [`Document::set_layer_property`]: crate::Document::set_layer_property
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerProperty {
    /// Display name.
    Name(String),
    /// Colour of entities without an override.
    Color(Color),
    /// Line type of entities without an override.
    LineType(LineType),
    /// Line weight (mm) of entities without an override.
    LineWeight(f64),
    /// Hidden layers are not drawn.
    Visible(bool),
    /// Entities on a locked layer cannot be edited locally.
    Locked(bool),
}

impl LayerProperty {
    /// Storage key.
    pub fn name(&self) -> &'static str {
        match self {
            LayerProperty::Name(_) => "name",
            LayerProperty::Color(_) => "color",
            LayerProperty::LineType(_) => "line_type",
            LayerProperty::LineWeight(_) => "line_weight",
            LayerProperty::Visible(_) => "visible",
            LayerProperty::Locked(_) => "locked",
        }
    }

    pub(crate) fn validate(&self, limits: &Limits) -> Result<()> {
        match self {
            LayerProperty::Name(n) => check_name("name", n, limits),
            LayerProperty::LineWeight(w) => Property::LineWeight(Some(*w)).validate(limits),
            _ => Ok(()),
        }
    }
}

pub(crate) fn check_name(field: &str, n: &str, limits: &Limits) -> Result<()> {
    if n.trim().is_empty() {
        return Err(DocError::value(field, "must not be empty"));
    }
    check_string(field, n, limits)
}
