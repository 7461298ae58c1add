//! CADDY's built-in single-stroke vector font, designed for this crate.
//!
//! Every printable ASCII character (U+0020..=U+007E) is a set of strokes
//! (open polylines) on a small grid: x from 0 to 6, y from -4 (descender)
//! through 0 (baseline) and 8 (x-height) to 12 (cap height). The cap height
//! is the text height, so one grid unit is `height / 12`; the advance is
//! 7.2 units (`0.6 × height`, the width the SVG export assumes per
//! character). A few CAD symbols (° ± Ø ø ×) have glyphs too; any other
//! character is drawn as a box the size of a capital.
//!
//! Glyphs are written as `"x,y x,y …; x,y …"`: strokes separated by `;`,
//! points by spaces. They are parsed once, on first use.

use std::sync::OnceLock;

/// Cap height in grid units.
pub(crate) const CAP: f64 = 12.0;
/// Advance per character in grid units.
pub(crate) const ADVANCE: f64 = 7.2;
/// Width of the ink of one glyph in grid units.
pub(crate) const INK: f64 = 6.0;

/// Strokes of the box drawn for characters the font does not have.
const MISSING: &str = "0,0 6,0 6,12 0,12 0,0";

/// Glyphs of U+0020..=U+007E, in order.
const GLYPHS: [&str; 95] = [
    "",                                                                    // space
    "3,12 3,4; 3,1 3,0",                                                   // !
    "2,12 2,9; 4,12 4,9",                                                  // "
    "2,1 2,11; 4,1 4,11; 0,4 6,4; 0,8 6,8",                                // #
    "6,10 4,11 2,11 0,10 0,7 2,6 4,6 6,5 6,2 4,1 2,1 0,2; 3,12 3,0",       // $
    "0,0 6,12; 0,12 2,12 2,10 0,10 0,12; 4,2 6,2 6,0 4,0 4,2",             // %
    "6,0 1,9 1,11 2,12 4,12 5,11 5,9 0,4 0,1 1,0 3,0 6,4",                 // &
    "3,12 3,9",                                                            // '
    "4,12 2,9 2,3 4,0",                                                    // (
    "2,12 4,9 4,3 2,0",                                                    // )
    "0,9 6,5; 0,5 6,9; 3,10 3,4",                                          // *
    "3,9 3,3; 0,6 6,6",                                                    // +
    "3,1 3,0 2,-2",                                                        // ,
    "1,6 5,6",                                                             // -
    "3,1 3,0",                                                             // .
    "0,0 6,12",                                                            // /
    "2,0 0,2 0,10 2,12 4,12 6,10 6,2 4,0 2,0; 6,10 0,2",                   // 0
    "1,10 3,12 3,0; 1,0 5,0",                                              // 1
    "0,10 2,12 4,12 6,10 6,8 0,0 6,0",                                     // 2
    "0,11 1,12 5,12 6,11 6,7 5,6 2,6; 5,6 6,5 6,1 5,0 1,0 0,1",            // 3
    "4,0 4,12 0,4 6,4",                                                    // 4
    "6,12 0,12 0,7 4,7 6,5 6,2 4,0 0,0",                                   // 5
    "6,11 5,12 2,12 0,10 0,2 2,0 4,0 6,2 6,5 4,7 2,7 0,5",                 // 6
    "0,12 6,12 2,0",                                                       // 7
    "2,6 0,8 0,10 2,12 4,12 6,10 6,8 4,6 2,6 0,4 0,2 2,0 4,0 6,2 6,4 4,6", // 8
    "6,7 4,5 2,5 0,7 0,10 2,12 4,12 6,10 6,2 4,0 1,0 0,1",                 // 9
    "3,8 3,7; 3,1 3,0",                                                    // :
    "3,8 3,7; 3,1 3,0 2,-2",                                               // ;
    "6,10 0,6 6,2",                                                        // <
    "0,8 6,8; 0,4 6,4",                                                    // =
    "0,10 6,6 0,2",                                                        // >
    "0,10 2,12 4,12 6,10 6,8 3,6 3,4; 3,1 3,0",                            // ?
    "4,4 2,4 1,5 1,7 2,8 4,8 4,4 5,3 6,5 6,9 4,12 2,12 0,10 0,2 2,0 5,0",  // @
    "0,0 3,12 6,0; 1,4 5,4",                                               // A
    "0,0 0,12 4,12 6,10 6,8 4,6 0,6; 4,6 6,4 6,2 4,0 0,0",                 // B
    "6,10 4,12 2,12 0,10 0,2 2,0 4,0 6,2",                                 // C
    "0,0 0,12 3,12 6,9 6,3 3,0 0,0",                                       // D
    "6,12 0,12 0,0 6,0; 0,6 4,6",                                          // E
    "6,12 0,12 0,0; 0,6 4,6",                                              // F
    "6,10 4,12 2,12 0,10 0,2 2,0 4,0 6,2 6,5 3,5",                         // G
    "0,0 0,12; 6,0 6,12; 0,6 6,6",                                         // H
    "1,12 5,12; 3,12 3,0; 1,0 5,0",                                        // I
    "6,12 6,2 4,0 2,0 0,2",                                                // J
    "0,0 0,12; 6,12 0,5; 2,7 6,0",                                         // K
    "0,12 0,0 6,0",                                                        // L
    "0,0 0,12 3,6 6,12 6,0",                                               // M
    "0,0 0,12 6,0 6,12",                                                   // N
    "2,0 0,2 0,10 2,12 4,12 6,10 6,2 4,0 2,0",                             // O
    "0,0 0,12 4,12 6,10 6,8 4,6 0,6",                                      // P
    "2,0 0,2 0,10 2,12 4,12 6,10 6,2 4,0 2,0; 3,3 6,0",                    // Q
    "0,0 0,12 4,12 6,10 6,8 4,6 0,6; 3,6 6,0",                             // R
    "6,10 4,12 2,12 0,10 0,8 2,6 4,6 6,4 6,2 4,0 2,0 0,2",                 // S
    "0,12 6,12; 3,12 3,0",                                                 // T
    "0,12 0,2 2,0 4,0 6,2 6,12",                                           // U
    "0,12 3,0 6,12",                                                       // V
    "0,12 1,0 3,6 5,0 6,12",                                               // W
    "0,0 6,12; 0,12 6,0",                                                  // X
    "0,12 3,6 6,12; 3,6 3,0",                                              // Y
    "0,12 6,12 0,0 6,0",                                                   // Z
    "4,12 2,12 2,0 4,0",                                                   // [
    "0,12 6,0",                                                            // backslash
    "2,12 4,12 4,0 2,0",                                                   // ]
    "1,9 3,12 5,9",                                                        // ^
    "0,-2 6,-2",                                                           // _
    "2,12 4,10",                                                           // `
    "0,7 1,8 4,8 5,7 5,0; 5,4 1,4 0,3 0,1 1,0 4,0 5,1",                    // a
    "0,12 0,0; 0,6 2,8 4,8 6,6 6,2 4,0 2,0 0,2",                           // b
    "6,7 5,8 1,8 0,7 0,1 1,0 5,0 6,1",                                     // c
    "6,12 6,0; 6,6 4,8 2,8 0,6 0,2 2,0 4,0 6,2",                           // d
    "0,4 6,4 6,6 4,8 2,8 0,6 0,2 2,0 5,0",                                 // e
    "5,11 4,12 3,12 2,11 2,0; 0,8 4,8",                                    // f
    "6,6 4,8 2,8 0,6 0,2 2,0 4,0 6,2; 6,8 6,-2 4,-4 1,-4",                 // g
    "0,12 0,0; 0,6 2,8 4,8 6,6 6,0",                                       // h
    "3,8 3,0; 3,11 3,10",                                                  // i
    "4,8 4,-2 2,-4 1,-4; 4,11 4,10",                                       // j
    "0,12 0,0; 5,8 0,3; 2,5 6,0",                                          // k
    "3,12 3,1 4,0",                                                        // l
    "0,8 0,0; 0,7 1,8 2,8 3,7 3,0; 3,7 4,8 5,8 6,7 6,0",                   // m
    "0,8 0,0; 0,6 2,8 4,8 6,6 6,0",                                        // n
    "2,0 0,2 0,6 2,8 4,8 6,6 6,2 4,0 2,0",                                 // o
    "0,8 0,-4; 0,6 2,8 4,8 6,6 6,2 4,0 2,0 0,2",                           // p
    "6,8 6,-4; 6,6 4,8 2,8 0,6 0,2 2,0 4,0 6,2",                           // q
    "0,8 0,0; 0,5 3,8 6,8",                                                // r
    "6,7 5,8 1,8 0,7 0,5 1,4 5,4 6,3 6,1 5,0 1,0 0,1",                     // s
    "2,12 2,1 3,0 5,0; 0,8 5,8",                                           // t
    "0,8 0,2 2,0 4,0 6,2; 6,8 6,0",                                        // u
    "0,8 3,0 6,8",                                                         // v
    "0,8 1,0 3,5 5,0 6,8",                                                 // w
    "0,8 6,0; 0,0 6,8",                                                    // x
    "0,8 3.3,0; 6,8 2,-4 1,-4",                                            // y
    "0,8 6,8 0,0 6,0",                                                     // z
    "4,12 3,11 3,7 2,6 3,5 3,1 4,0",                                       // {
    "3,12 3,-2",                                                           // |
    "2,12 3,11 3,7 4,6 3,5 3,1 2,0",                                       // }
    "0,6 1,7 2,7 4,5 5,5 6,6",                                             // ~
];

/// CAD symbols beyond ASCII: degree, plus-minus, diameter, times.
const EXTRA: [(char, &str); 5] = [
    ('\u{b0}', "2,12 1,11 1,10 2,9 3,9 4,10 4,11 3,12 2,12"),
    ('\u{b1}', "3,10 3,4; 0,7 6,7; 0,1 6,1"),
    ('\u{d8}', "2,0 0,2 0,10 2,12 4,12 6,10 6,2 4,0 2,0; 6,12 0,0"),
    ('\u{f8}', "2,0 0,2 0,6 2,8 4,8 6,6 6,2 4,0 2,0; 6,8 0,0"),
    ('\u{d7}', "1,9 5,3; 1,3 5,9"),
];

/// A parsed glyph: its strokes, each a polyline in grid units.
pub(crate) type Glyph = Vec<Vec<[f64; 2]>>;

struct Font {
    glyphs: Vec<Glyph>,
    extra: Vec<(char, Glyph)>,
    missing: Glyph,
}

fn parse(src: &str) -> Glyph {
    src.split(';')
        .map(|stroke| {
            stroke
                .split_whitespace()
                .filter_map(|pt| {
                    let (x, y) = pt.split_once(',')?;
                    Some([x.trim().parse().ok()?, y.trim().parse().ok()?])
                })
                .collect::<Vec<[f64; 2]>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn font() -> &'static Font {
    static FONT: OnceLock<Font> = OnceLock::new();
    FONT.get_or_init(|| Font {
        glyphs: GLYPHS.iter().map(|g| parse(g)).collect(),
        extra: EXTRA.iter().map(|(c, g)| (*c, parse(g))).collect(),
        missing: parse(MISSING),
    })
}

/// The strokes of `c`; `None` for whitespace (nothing drawn).
pub(crate) fn glyph(c: char) -> Option<&'static Glyph> {
    let f = font();
    match c {
        ' ' | '\t' | '\r' | '\u{a0}' => None,
        '!'..='~' => f.glyphs.get(c as usize - 0x20),
        _ => Some(f.extra.iter().find(|(e, _)| *e == c).map_or(&f.missing, |(_, g)| g)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_printable_glyph_parses_and_stays_on_the_grid() {
        for c in '!'..='~' {
            let g = glyph(c).unwrap_or_else(|| panic!("{c:?} has no glyph"));
            assert!(!g.is_empty(), "{c:?} is empty");
            let n: usize = g.iter().map(Vec::len).sum();
            let expected = GLYPHS[c as usize - 0x20].split([' ', ';']).filter(|s| !s.is_empty()).count();
            assert_eq!(n, expected, "{c:?}: a point failed to parse");
            for p in g.iter().flatten() {
                assert!((0.0..=INK).contains(&p[0]) && (-4.0..=CAP).contains(&p[1]), "{c:?} {p:?}");
            }
        }
        for (c, src) in EXTRA {
            let n: usize = glyph(c).map_or(0, |g| g.iter().map(Vec::len).sum());
            assert_eq!(n, src.split([' ', ';']).filter(|s| !s.is_empty()).count(), "{c:?}");
        }
        assert!(glyph(' ').is_none());
        assert_eq!(glyph('é').map(Vec::len), Some(1));
    }
}
