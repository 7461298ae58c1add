//! Human durations for flags: `500ms`, `10s`, `5m`, `1h30m`, `2d`; a bare
//! number is seconds.

use std::time::Duration;

/// Parses a human duration (see the module doc).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let is_number = |c: char| c.is_ascii_digit() || c == '.';
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !is_number(c)).unwrap_or(rest.len());
        if number_end == 0 {
            return Err(format!("invalid duration {text:?}: expected a number"));
        }
        let number: f64 = rest[..number_end].parse().map_err(|_| format!("invalid duration {text:?}: bad number"))?;
        rest = rest[number_end..].trim_start();
        let unit_end = rest.find(is_number).unwrap_or(rest.len());
        let unit = rest[..unit_end].trim();
        let scale = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" => 86_400.0,
            "" => {
                return Err(format!("invalid duration {text:?}: missing unit (ms, s, m, h, d)"));
            }
            other => return Err(format!("invalid duration {text:?}: unknown unit {other:?}")),
        };
        let part = Duration::try_from_secs_f64(number * scale)
            .map_err(|_| format!("invalid duration {text:?}: out of range"))?;
        total = total.checked_add(part).ok_or_else(|| format!("invalid duration {text:?}: out of range"))?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        let cases = [
            ("10", 10_000),
            ("10s", 10_000),
            ("500ms", 500),
            ("1.5s", 1500),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("2d", 172_800_000),
            (" 3 s ", 3000),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        for bad in ["", "s", "10x", "1.2.3s", "-1s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
