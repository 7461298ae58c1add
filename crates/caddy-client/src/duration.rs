//! Durations as people write them, for messages: `400ms`, `2.5s`, `1m30s`,
//! `2h`. `Duration`'s `Debug` form shows every nanosecond of a computed
//! budget (`1.666666666s`), which reads like noise in an error line.

use std::time::Duration;

/// `d` rounded for reading: milliseconds below a second, tenths of a
/// second below a minute, then whole seconds as `1m30s` or `2h0m5s`. The
/// result is also what `caddyctl` accepts as a duration.
pub fn human_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_millis(1) {
        return format!("{}µs", d.as_micros().max(1));
    }
    // Rounded to the nearest millisecond: a budget computed from a clock
    // reads `600ms`, not `599ms`.
    let ms = (d.as_micros() + 500) / 1000;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    // Rounded to a tenth first, so that 59.96 s reads `1m`, not `60.0s`.
    let tenths = (ms + 50) / 100;
    if tenths < 600 {
        return if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        };
    }
    let secs = (ms + 500) / 1000;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, s) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{m}m{s}s"),
        (_, 0) if m == 0 => format!("{h}h"),
        (_, 0) => format!("{h}h{m}m"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1µs"),
            (Duration::from_micros(250), "250µs"),
            (Duration::from_millis(400), "400ms"),
            (Duration::from_millis(999), "999ms"),
            (Duration::from_nanos(599_999_100), "600ms"),
            (Duration::from_nanos(999_600_000), "1s"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(2500), "2.5s"),
            (Duration::from_nanos(1_666_666_666), "1.7s"),
            (Duration::from_millis(59_960), "1m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(7205), "2h0m5s"),
            (Duration::MAX, "5124095576030431h0m16s"),
        ];
        for (d, text) in cases {
            assert_eq!(human_duration(d), text, "{d:?}");
        }
    }
}
