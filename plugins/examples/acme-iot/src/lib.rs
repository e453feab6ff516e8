//! `acme-iot`: the transform of a (fictional) client, ACME, whose devices send nested JSON like
//!
//! ```json
//! {"device": {"id": "d-17", "site": "Berlin", "fw": "1.4.2"},
//!  "ts": "2026-11-22T10:00:00.250Z",
//!  "readings": {"temp_f": 70.3, "humidity_pct": 41, "battery": {"mv": 3012}, "door_open": false},
//!  "status": "ok"}
//! ```
//!
//! and want, in InfluxDB, one point per message with an allowlist of tags and every numeric or boolean
//! reading flattened into fields, in SI units:
//!
//! `acme_iot,device_id=d-17,site=berlin,fw=1.4.2 temp_c=21.28,humidity_pct=41,battery_v=3.012,door_open=false <ns>`
//!
//! Messages with a status other than `ok` are also indexed as events (`acme-iot-events`) for alerting.
//! Timestamps may be RFC 3339 text, or epoch numbers in seconds or milliseconds.

use millrace_plugin_sdk::{Level, Output, Point, Record, Reject, plugin};
use serde_json::{Map, Value};

/// Flattened paths kept as tags, and their tag names. Everything else textual is dropped: tag cardinality
/// is the client's cost, so it is an explicit allowlist.
const TAGS: &[(&str, &str)] = &[
    ("device.id", "device_id"),
    ("device.site", "site"),
    ("device.fw", "fw"),
];

/// Unit conversions applied to flattened field names: (suffix, new suffix, factor, offset).
const UNITS: &[(&str, &str, f64, f64)] = &[
    ("_f", "_c", 5.0 / 9.0, -32.0),
    ("_mv", "_v", 0.001, 0.0),
    ("_ms", "_s", 0.001, 0.0),
];

pub fn transform(record: &Record<'_>, out: &mut Output) -> Result<(), Reject> {
    let msg: Map<String, Value> = record.json()?;
    let mut point = Point::new("acme_iot");
    for (path, tag) in TAGS {
        if let Some(v) = lookup(&msg, path).and_then(Value::as_str) {
            point = point.tag(tag, &v.to_ascii_lowercase());
        }
    }
    let readings = msg
        .get("readings")
        .and_then(Value::as_object)
        .ok_or("message without `readings`")?;
    let mut fields = Vec::new();
    flatten("", readings, &mut fields);
    if fields.is_empty() {
        return Err(Reject::new("no numeric or boolean readings"));
    }
    for (name, value) in fields {
        point = match value {
            Value::Bool(b) => point.field(&name, b),
            Value::Number(n) if n.is_i64() && convert(&name).is_none() => {
                point.field(&name, n.as_i64().unwrap_or(0))
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                match convert(&name) {
                    Some((new_name, factor, offset)) => point.field(&new_name, round((x + offset) * factor)),
                    None => point.field(&name, x),
                }
            }
            _ => point,
        };
    }
    let ts_ns = match msg.get("ts") {
        Some(v) => parse_timestamp(v).ok_or_else(|| Reject::new(format!("unparseable timestamp {v}")))?,
        None => record.timestamp_ms().ok_or("no `ts` and no record timestamp")? * 1_000_000,
    };
    out.point(&point.timestamp_ns(ts_ns));

    if let Some(status) = msg.get("status").and_then(Value::as_str)
        && status != "ok"
    {
        let mut event = msg.clone();
        event.insert("@timestamp".into(), Value::from(ts_ns / 1_000_000));
        out.document("acme-iot-events", &event)?;
        out.log(Level::Info, &format!("event with status {status}"));
    }
    Ok(())
}

plugin!(transform);

fn lookup<'v>(msg: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut parts = path.split('.');
    let mut v = msg.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

/// Flattens nested objects into `a_b_c` names, keeping numbers and booleans.
fn flatten(prefix: &str, obj: &Map<String, Value>, out: &mut Vec<(String, Value)>) {
    for (k, v) in obj {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}_{k}")
        };
        match v {
            Value::Object(inner) => flatten(&name, inner, out),
            Value::Number(_) | Value::Bool(_) => out.push((name, v.clone())),
            _ => {}
        }
    }
}

fn convert(name: &str) -> Option<(String, f64, f64)> {
    UNITS.iter().find_map(|(suffix, new_suffix, factor, offset)| {
        name.strip_suffix(suffix)
            .map(|stem| (format!("{stem}{new_suffix}"), *factor, *offset))
    })
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// RFC 3339 text (`2026-11-22T10:00:00.250Z`, `...+01:00`), or epoch seconds / milliseconds.
fn parse_timestamp(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) if n.is_i64() => {
            let x = n.as_i64()?;
            Some(if x.abs() < 100_000_000_000 {
                x.checked_mul(1_000_000_000)?
            } else {
                x.checked_mul(1_000_000)?
            })
        }
        Value::Number(n) => {
            let x = n.as_f64()?;
            // Before 2001-09-09 in ms is after 5138 in s: numbers below 1e11 are seconds.
            Some(if x.abs() < 1e11 {
                (x * 1e9) as i64
            } else {
                (x * 1e6) as i64
            })
        }
        Value::String(s) => parse_rfc3339(s),
        _ => None,
    }
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() {
            return None;
        }
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = digits.parse().ok()?;
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(secs * 1_000_000_000 + nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_plugin_sdk::testing::{TestRecord, run};

    const MSG: &str = r#"{"device":{"id":"d-17","site":"Berlin","fw":"1.4.2","owner":"x"},
        "ts":"2026-11-22T10:00:00.250Z",
        "readings":{"temp_f":70.3,"humidity_pct":41,"battery":{"mv":3012},"door_open":false,"note":"n/a"},
        "status":"ok"}"#;

    #[test]
    fn flattens_converts_and_stamps() {
        let o = run(transform, &TestRecord::json(MSG));
        assert_eq!(
            o.points,
            ["acme_iot,device_id=d-17,site=berlin,fw=1.4.2 \
              battery_v=3.012,door_open=false,humidity_pct=41i,temp_c=21.278 1795341600250000000"]
        );
        assert!(o.documents.is_empty());
    }

    #[test]
    fn bad_status_is_also_an_event() {
        let o = run(
            transform,
            &TestRecord::json(&MSG.replace("\"ok\"", "\"overheat\"")),
        );
        assert_eq!(o.points.len(), 1);
        assert_eq!(o.documents.len(), 1);
        assert_eq!(o.documents[0].index, "acme-iot-events");
        assert!(o.documents[0].body.contains("\"@timestamp\":1795341600250"));
    }

    #[test]
    fn timestamps_in_every_accepted_form() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-22T11:00:00.25+01:00"),
            Some(1_795_341_600_250_000_000)
        );
        assert_eq!(
            parse_timestamp(&Value::from(1_795_341_600)),
            Some(1_795_341_600_000_000_000)
        );
        assert_eq!(
            parse_timestamp(&Value::from(1_795_341_600_250i64)),
            Some(1_795_341_600_250_000_000)
        );
        for bad in [
            "2026-13-01T00:00:00Z",
            "yesterday",
            "2026-11-22T10:00:00",
            "2026-11-22T10:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        let o = run(
            transform,
            &TestRecord::json(r#"{"readings":{"a":1},"ts":"soon"}"#),
        );
        assert_eq!(o.rejected.as_deref(), Some("unparseable timestamp \"soon\""));
        let o = run(
            transform,
            &TestRecord::json(r#"{"readings":{"a":1}}"#).with_timestamp_ms(Some(5)),
        );
        assert_eq!(o.points, ["acme_iot a=1i 5000000"]);
    }
}
