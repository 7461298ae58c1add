//! Rendering of responses: aligned tables and lines for people, JSON for
//! machines. Pure functions, so they are tested without a cluster.

use caddy_client::pb;
use serde_json::{Value, json};

/// Collapses a multi-line message into one line.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A value as text: lossy UTF-8.
pub fn value_text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

/// A value for a one-line human rendering: lossy UTF-8 with control
/// characters escaped, so one record stays on one line.
pub fn value_inline(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Columns aligned with two spaces between them; no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let render = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            line.push_str(cell);
            if i < last {
                let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        line.trim_end().to_string()
    };
    let mut out = render(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&render(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// A key-value record as JSON: `value` is lossy UTF-8, and `value_hex`
/// carries the exact bytes when they are not valid UTF-8.
pub fn kv_json(kv: &pb::KeyValue) -> Value {
    let mut obj = json!({
        "key": kv.key,
        "value": value_text(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    });
    if std::str::from_utf8(&kv.value).is_err() {
        obj["value_hex"] = Value::String(hex(&kv.value));
    }
    obj
}

/// `kv list` as a table.
pub fn list_text(kvs: &[pb::KeyValue]) -> String {
    let rows: Vec<Vec<String>> = kvs
        .iter()
        .map(|kv| vec![kv.key.clone(), kv.mod_revision.to_string(), kv.version.to_string(), value_inline(&kv.value)])
        .collect();
    table(&["KEY", "MOD REV", "VERSION", "VALUE"], &rows)
}

/// `kv list` as JSON.
pub fn list_json(kvs: &[pb::KeyValue], more: bool, revision: u64) -> Value {
    json!({ "kvs": kvs.iter().map(kv_json).collect::<Vec<_>>(), "more": more, "revision": revision })
}

fn event_kind(event: &pb::WatchEvent) -> String {
    match pb::watch_event::Kind::try_from(event.kind) {
        Ok(pb::watch_event::Kind::Put) => "PUT".into(),
        Ok(pb::watch_event::Kind::Delete) => "DELETE".into(),
        Err(_) => format!("UNKNOWN({})", event.kind),
    }
}

/// One watch event as a human line: `PUT key=value rev=N` / `DELETE key rev=N`.
pub fn event_line(event: &pb::WatchEvent) -> String {
    let kind = event_kind(event);
    let key = event.kv.as_ref().map_or("", |kv| kv.key.as_str());
    match pb::watch_event::Kind::try_from(event.kind) {
        Ok(pb::watch_event::Kind::Delete) => format!("DELETE {key} rev={}", event.revision),
        _ => {
            let value = event.kv.as_ref().map(|kv| value_inline(&kv.value)).unwrap_or_default();
            format!("{kind} {key}={value} rev={}", event.revision)
        }
    }
}

/// One watch event as a JSON object (one line).
pub fn event_json(event: &pb::WatchEvent) -> Value {
    let mut obj = match &event.kv {
        Some(kv) => kv_json(kv),
        None => json!({ "key": "" }),
    };
    obj["kind"] = Value::String(event_kind(event));
    obj["revision"] = json!(event.revision);
    if pb::watch_event::Kind::try_from(event.kind) == Ok(pb::watch_event::Kind::Delete)
        && let Some(map) = obj.as_object_mut()
    {
        for field in ["value", "value_hex", "create_revision", "mod_revision", "version"] {
            map.remove(field);
        }
    }
    obj
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `cluster status` for people: a header block, then one row per member.
pub fn status_text(status: &pb::StatusResponse) -> String {
    let header = [
        ("node", status.cluster_node.to_string()),
        ("term", status.term.to_string()),
        ("leader", opt(status.leader)),
        ("commit index", status.commit_index.to_string()),
        ("applied index", status.applied_index.to_string()),
        ("last log index", status.last_log_index.to_string()),
        ("snapshot index", opt(status.snapshot_index)),
        ("revision", status.revision.to_string()),
        ("render", if status.render.is_empty() { "-".into() } else { status.render.clone() }),
        ("cluster id", if status.cluster_id.is_empty() { "-".into() } else { status.cluster_id.clone() }),
    ];
    let width = header.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in header {
        out.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = status
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.raft_addr.clone(),
                m.client_addr.clone(),
                m.role.clone(),
                if m.leader { "*".into() } else { String::new() },
                opt(m.lag),
                m.health.clone(),
                if m.render.is_empty() { "-".into() } else { m.render.clone() },
            ]
        })
        .collect();
    out.push_str(&table(&["ID", "RAFT ADDR", "CLIENT ADDR", "ROLE", "LEADER", "LAG", "HEALTH", "RENDER"], &rows));
    out
}

/// `cluster status` as JSON.
pub fn status_json(status: &pb::StatusResponse) -> Value {
    json!({
        "cluster_id": status.cluster_id,
        "cluster_node": status.cluster_node,
        "term": status.term,
        "leader": status.leader,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "last_log_index": status.last_log_index,
        "snapshot_index": status.snapshot_index,
        "revision": status.revision,
        "render": status.render,
        "members": status.members.iter().map(|m| json!({
            "id": m.id,
            "raft_addr": m.raft_addr,
            "client_addr": m.client_addr,
            "admin_addr": m.admin_addr,
            "role": m.role,
            "leader": m.leader,
            "lag": m.lag,
            "health": m.health,
            "render": m.render,
        })).collect::<Vec<_>>(),
    })
}

fn ids(ids: &[u64]) -> String {
    if ids.is_empty() { "-".into() } else { ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",") }
}

/// `cluster join-token --list` for people.
pub fn join_tokens_text(tokens: &[pb::JoinTokenInfo]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.state.clone(),
                datetime(t.created_at_ms),
                datetime(t.expires_at_ms),
                if t.used_by == 0 { "-".into() } else { t.used_by.to_string() },
                if t.ended_at_ms == 0 { "-".into() } else { datetime(t.ended_at_ms) },
            ]
        })
        .collect();
    table(&["ID", "STATE", "CREATED", "EXPIRES", "USED BY", "ENDED"], &rows)
}

/// `cluster join-token --list` as JSON.
pub fn join_tokens_json(tokens: &[pb::JoinTokenInfo]) -> Value {
    json!(
        tokens
            .iter()
            .map(|t| json!({
                "id": t.id,
                "state": t.state,
                "created_at_ms": t.created_at_ms,
                "expires_at_ms": t.expires_at_ms,
                "used_by": (t.used_by != 0).then_some(t.used_by),
                "ended_at_ms": (t.ended_at_ms != 0).then_some(t.ended_at_ms),
            }))
            .collect::<Vec<_>>()
    )
}

/// `cluster rotate-certs` for people: one line per member.
pub fn rotated_text(r: &pb::RotateCertsResponse) -> String {
    r.members
        .iter()
        .map(|m| {
            if m.error.is_empty() {
                format!("node {}: certificate generation {}\n", m.id, m.generation)
            } else {
                format!("node {}: FAILED: {}\n", m.id, m.error)
            }
        })
        .collect()
}

/// `cluster rotate-certs` as JSON.
pub fn rotated_json(r: &pb::RotateCertsResponse) -> Value {
    json!(
        r.members
            .iter()
            .map(|m| json!({
                "id": m.id,
                "generation": (m.error.is_empty()).then_some(m.generation),
                "error": (!m.error.is_empty()).then_some(&m.error),
            }))
            .collect::<Vec<_>>()
    )
}

/// A membership answer for people.
pub fn membership_text(m: &pb::MembershipResponse) -> String {
    format!("voters={} learners={}", ids(&m.voters), ids(&m.learners))
}

/// A membership answer as JSON.
pub fn membership_json(m: &pb::MembershipResponse) -> Value {
    json!({ "voters": m.voters, "learners": m.learners })
}

/// Latency in milliseconds with two decimals.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// `bench kv` results for people.
pub fn bench_text(report: &caddy_client::LoadReport) -> String {
    format!(
        "throughput: {:.1} ops/s ({} ops, {} errors in {:.2}s)\nlatency:    p50 {} ms  p90 {} ms  p99 {} ms  max {} ms\n",
        report.throughput,
        report.ops,
        report.errors,
        report.elapsed_secs,
        ms(report.p50_us),
        ms(report.p90_us),
        ms(report.p99_us),
        ms(report.max_us),
    )
}

/// Year, month (1..=12) and day (1..=31) of a day number counted from
/// 1970-01-01 (proleptic Gregorian calendar; Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day number counted from 1970-01-01 of a proleptic Gregorian date (the
/// inverse of [`civil_from_days`]).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400); // [0, 399]
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 }; // [0, 11]
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn datetime(ms: u64) -> String {
    let secs = ms / 1000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// [`datetime`] of an optional time; `-` when absent.
pub fn datetime_opt(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_string(), datetime)
}

/// Parses a point in time into milliseconds since the epoch: a bare number
/// of milliseconds, or RFC 3339 (`2024-05-01T12:00:00Z`, fractions and
/// `±HH:MM` offsets allowed; a space may replace the `T`, and a missing
/// offset means UTC, so [`datetime`]'s output parses back), or a date alone
/// (midnight UTC).
pub fn parse_time(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let bad = |why: &str| format!("invalid time {text:?}: {why} (use RFC 3339 or milliseconds since the epoch)");
    let num = |s: &str| -> Result<u32, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expected digits"));
        }
        s.parse::<u32>().map_err(|_| bad("number out of range"))
    };
    let (date, rest) = match text.find(['T', 't', ' ']) {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, ""),
    };
    let mut parts = date.splitn(3, '-');
    let (Some(y), Some(mo), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected YYYY-MM-DD"));
    };
    if y.len() != 4 || mo.len() != 2 || d.len() != 2 {
        return Err(bad("expected YYYY-MM-DD"));
    }
    let (year, month, day) = (num(y)?, num(mo)?, num(d)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day == 0 || day > month_days[(month - 1) as usize] {
        return Err(bad("no such date"));
    }
    let mut offset_secs: i64 = 0;
    let mut secs_of_day: i64 = 0;
    let mut millis: i64 = 0;
    if !rest.is_empty() {
        // Split the offset off: `Z`, or the last `+`/`-`.
        let (clock, offset) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
            (clock, None)
        } else if let Some(i) = rest.rfind(['+', '-']) {
            (&rest[..i], Some(&rest[i..]))
        } else {
            (rest, None)
        };
        if let Some(offset) = offset {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (h, m) = offset[1..].split_once(':').ok_or_else(|| bad("expected a ±HH:MM offset"))?;
            let (h, m) = (num(h)?, num(m)?);
            if h > 23 || m > 59 {
                return Err(bad("offset out of range"));
            }
            offset_secs = sign * (i64::from(h) * 3600 + i64::from(m) * 60);
        }
        let (hms, fraction) = match clock.split_once('.') {
            Some((hms, fraction)) => (hms, Some(fraction)),
            None => (clock, None),
        };
        let mut fields = hms.split(':');
        let (Some(h), Some(m)) = (fields.next(), fields.next()) else { return Err(bad("expected HH:MM:SS")) };
        let s = fields.next().unwrap_or("00");
        if fields.next().is_some() || h.len() != 2 || m.len() != 2 || s.len() != 2 {
            return Err(bad("expected HH:MM:SS"));
        }
        let (h, m, s) = (num(h)?, num(m)?, num(s)?);
        if h > 23 || m > 59 || s > 60 {
            return Err(bad("time of day out of range"));
        }
        secs_of_day = i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s.min(59));
        if let Some(fraction) = fraction {
            num(fraction)?;
            let digits: String = fraction.chars().chain(std::iter::repeat('0')).take(3).collect();
            millis = i64::from(num(&digits)?);
        }
    }
    let days = days_from_civil(i64::from(year), month, day);
    let ms = (days * 86_400 + secs_of_day - offset_secs) * 1000 + millis;
    u64::try_from(ms).map_err(|_| bad("before 1970"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &[u8]) -> pb::KeyValue {
        pb::KeyValue { key: key.into(), value: value.to_vec(), create_revision: 2, mod_revision: 5, version: 3 }
    }

    #[test]
    fn tables_align_without_trailing_spaces() {
        let t = table(&["A", "LONG HEADER", "C"], &[vec!["wide cell".into(), "x".into(), String::new()]]);
        assert_eq!(t, "A          LONG HEADER  C\nwide cell  x\n");
    }

    #[test]
    fn kv_json_marks_binary_values() {
        let text = kv_json(&kv("a", b"hello"));
        assert_eq!(text["value"], "hello");
        assert_eq!(text["mod_revision"], 5);
        assert!(text.get("value_hex").is_none());
        let binary = kv_json(&kv("b", &[0xff, 0x00, 0x41]));
        assert_eq!(binary["value_hex"], "ff0041");
        assert_eq!(binary["value"], "\u{fffd}\u{0}A");
        assert_eq!(binary["create_revision"], 2);
        assert_eq!(binary["version"], 3);
    }

    #[test]
    fn watch_lines() {
        let put = pb::WatchEvent { kind: pb::watch_event::Kind::Put as i32, kv: Some(kv("k", b"v\n1")), revision: 9 };
        assert_eq!(event_line(&put), "PUT k=v\\n1 rev=9");
        let del = pb::WatchEvent { kind: pb::watch_event::Kind::Delete as i32, kv: Some(kv("k", b"")), revision: 10 };
        assert_eq!(event_line(&del), "DELETE k rev=10");
        let json = event_json(&put);
        assert_eq!(
            (json["kind"].as_str(), json["key"].as_str(), json["value"].as_str()),
            (Some("PUT"), Some("k"), Some("v\n1"))
        );
        assert_eq!(json["revision"], 9);
        let json = event_json(&del);
        assert_eq!(json["kind"], "DELETE");
        assert!(json.get("value").is_none());
        assert!(!serde_json::to_string(&json).unwrap().contains('\n'));
    }

    #[test]
    fn status_rendering() {
        let status = pb::StatusResponse {
            cluster_node: 1,
            term: 4,
            leader: Some(2),
            commit_index: 120,
            applied_index: 119,
            revision: 57,
            last_log_index: 121,
            snapshot_index: None,
            render: "on: llvmpipe (Cpu, vulkan), 1 worker".into(),
            cluster_id: "c1d".into(),
            members: vec![
                pb::MemberStatus {
                    id: 1,
                    raft_addr: "127.0.0.1:7001".into(),
                    client_addr: "127.0.0.1:7101".into(),
                    admin_addr: "127.0.0.1:7201".into(),
                    role: "voter".into(),
                    leader: false,
                    lag: Some(1),
                    health: "healthy".into(),
                    render: "on: llvmpipe (Cpu, vulkan), 1 worker".into(),
                },
                pb::MemberStatus {
                    id: 2,
                    raft_addr: "127.0.0.1:7002".into(),
                    client_addr: "127.0.0.1:7102".into(),
                    admin_addr: String::new(),
                    role: "voter".into(),
                    leader: true,
                    lag: None,
                    health: "healthy".into(),
                    render: String::new(),
                },
            ],
        };
        let text = status_text(&status);
        assert!(text.starts_with("node:           1\nterm:           4\nleader:         2\n"), "{text}");
        assert!(text.contains("snapshot index: -\n"), "{text}");
        assert!(text.contains("cluster id:     c1d\n"), "{text}");
        assert!(text.contains("\nID  RAFT ADDR       CLIENT ADDR     ROLE   LEADER  LAG  HEALTH   RENDER\n"), "{text}");
        assert!(
            text.contains("\n1   127.0.0.1:7001  127.0.0.1:7101  voter          1    healthy  on: llvmpipe (Cpu, vulkan), 1 worker\n"),
            "{text}"
        );
        assert!(text.contains("\n2   127.0.0.1:7002  127.0.0.1:7102  voter  *       -    healthy  -\n"), "{text}");
        let json = status_json(&status);
        assert_eq!(json["leader"], 2);
        assert_eq!(json["cluster_id"], "c1d");
        assert!(json["snapshot_index"].is_null());
        assert_eq!(json["members"][1]["leader"], true);
        assert!(json["members"][1]["lag"].is_null());
        assert_eq!(json["members"][0]["render"], "on: llvmpipe (Cpu, vulkan), 1 worker");
    }

    #[test]
    fn list_and_membership() {
        let text = list_text(&[kv("a", b"1"), kv("bb", b"two")]);
        assert_eq!(text, "KEY  MOD REV  VERSION  VALUE\na    5        3        1\nbb   5        3        two\n");
        let json = list_json(&[kv("a", b"1")], true, 8);
        assert_eq!(json["kvs"][0]["key"], "a");
        assert_eq!(json["more"], true);
        let m = pb::MembershipResponse { voters: vec![1, 2, 3], learners: vec![] };
        assert_eq!(membership_text(&m), "voters=1,2,3 learners=-");
        assert_eq!(membership_json(&m)["voters"][2], 3);
    }

    #[test]
    fn bench_and_misc() {
        let report = caddy_client::LoadReport {
            ops: 1000,
            errors: 2,
            elapsed_secs: 2.0,
            throughput: 500.0,
            p50_us: 1234,
            p90_us: 2000,
            p99_us: 10_500,
            max_us: 20_001,
        };
        let text = bench_text(&report);
        assert!(text.contains("throughput: 500.0 ops/s"), "{text}");
        assert!(text.contains("p50 1.23 ms  p90 2.00 ms  p99 10.50 ms  max 20.00 ms"), "{text}");
        assert_eq!(one_line("a\n  b\tc"), "a b c");
        assert_eq!(hex(&[0, 255]), "00ff");
    }

    #[test]
    fn datetimes_of_fixed_epochs() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00");
        assert_eq!(datetime(999), "1970-01-01 00:00:00");
        assert_eq!(datetime(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(datetime(1_000_000_000_000), "2001-09-09 01:46:40");
        assert_eq!(datetime(1_700_000_000_123), "2023-11-14 22:13:20");
        assert_eq!(datetime(4_102_444_799_000), "2099-12-31 23:59:59");
        assert_eq!(datetime(253_402_300_799_000), "9999-12-31 23:59:59");
        assert_eq!(datetime_opt(None), "-");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for days in [-800_000, -1, 0, 1, 59, 60, 11_016, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn times_parse_in_every_form() {
        assert_eq!(parse_time("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20.123Z"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-14T22:13:20.5Z"), Ok(1_700_000_000_500));
        assert_eq!(parse_time("2023-11-15T00:13:20+02:00"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T17:13:20-05:00"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14 22:13:20"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13Z"), Ok(1_699_999_980_000));
        assert_eq!(parse_time("2000-02-29"), Ok(951_782_400_000));
        assert_eq!(parse_time(&datetime(1_234_567_890_000)), Ok(1_234_567_890_000));
        for bad in ["", "yesterday", "2023-13-01", "2023-02-29", "2023-1-01", "2023-11-14T25:00:00Z", "1969-12-31"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert!(parse_time("2023-11-14T22:13:20+0200").is_err());
    }
}
