//! What a plugin produces for a record, validated at the sandbox boundary: a malformed point or document is
//! refused here, with a precise reason, instead of failing a whole batch at the store later.

use std::fmt;

/// One output of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Point(Point),
    Document(Document),
}

/// One InfluxDB point as a single line of line protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    line: String,
    measurement_end: usize,
    has_timestamp: bool,
}

impl Point {
    /// Validates one line of line protocol (`measurement[,tag=v...] field=v[,...] [timestamp]`).
    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return Err("empty line protocol".into());
        }
        if line.contains('\n') {
            return Err("a point must be a single line of line protocol".into());
        }
        if line.starts_with('#') {
            return Err("a point must not be a line protocol comment".into());
        }
        let (measurement_end, has_timestamp) = match check_plain_line(line) {
            Some(checked) => checked,
            None => check_line(line).map_err(|e| format!("{e} in `{}`", cut(line)))?,
        };
        Ok(Self {
            line: line.to_string(),
            measurement_end,
            has_timestamp,
        })
    }

    /// The line, without a trailing newline.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The measurement name, unescaped part of the line up to the first unescaped `,` or space.
    pub fn measurement(&self) -> &str {
        &self.line[..self.measurement_end]
    }

    /// Whether the plugin set a timestamp; if not, the worker stamps the point with the record's timestamp.
    pub fn has_timestamp(&self) -> bool {
        self.has_timestamp
    }

    /// The line with a nanosecond timestamp appended when it has none.
    pub fn line_with_default_timestamp(&self, timestamp_ns: i64) -> String {
        if self.has_timestamp {
            self.line.clone()
        } else {
            // Joined by hand: one allocation of the right size, no `core::fmt` (once per point).
            let mut digits = itoa::Buffer::new();
            let ts = digits.format(timestamp_ns);
            let mut line = String::with_capacity(self.line.len() + 1 + ts.len());
            line.push_str(&self.line);
            line.push(' ');
            line.push_str(ts);
            line
        }
    }
}

fn cut(s: &str) -> &str {
    match s.char_indices().nth(120) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The common line in one pass: no backslash anywhere, quotes only around string field values. `None` hands
/// the line to [`check_line`], which handles every shape and says what is wrong; `Some` only for lines that
/// `check_line` accepts with the same result (a test compares the two on generated lines).
fn check_plain_line(line: &str) -> Option<(usize, bool)> {
    let (b, n) = (line.as_bytes(), line.len());
    let mut i = 0;
    while i < n && b[i] != b',' && b[i] != b' ' {
        if b[i] == b'\\' {
            return None;
        }
        i += 1;
    }
    let measurement_end = i;
    if measurement_end == 0 {
        return None;
    }
    // Tags: `,key=value` each, exactly one `=` and both sides non-empty.
    while i < n && b[i] == b',' {
        i += 1;
        let (start, mut eq) = (i, None);
        while i < n && b[i] != b',' && b[i] != b' ' {
            match b[i] {
                b'\\' => return None,
                b'=' if eq.is_some() => return None,
                b'=' => eq = Some(i),
                _ => {}
            }
            i += 1;
        }
        let eq = eq?;
        if eq == start || eq + 1 == i {
            return None;
        }
    }
    if i >= n {
        return None;
    }
    i += 1;
    // Fields: `key=value` separated by `,`, up to a space or the end.
    loop {
        let start = i;
        while i < n && b[i] != b'=' {
            if matches!(b[i], b'\\' | b'"' | b',' | b' ') {
                return None;
            }
            i += 1;
        }
        if i >= n || i == start {
            return None;
        }
        i += 1;
        let value_start = i;
        if b.get(i) == Some(&b'"') {
            i += 1;
            while i < n && b[i] != b'"' {
                if b[i] == b'\\' {
                    return None;
                }
                i += 1;
            }
            if i >= n {
                return None;
            }
            i += 1;
        } else {
            while i < n && b[i] != b',' && b[i] != b' ' {
                if matches!(b[i], b'\\' | b'"' | b'=') {
                    return None;
                }
                i += 1;
            }
            // `value_start` follows `=` and `i` is at `,`, ` ` or the end: both are char boundaries.
            if !valid_field_value(&line[value_start..i]) {
                return None;
            }
        }
        match b.get(i) {
            None => return Some((measurement_end, false)),
            Some(b',') => i += 1,
            Some(b' ') => break,
            Some(_) => return None,
        }
    }
    // Timestamp: an i64, nothing after it.
    is_timestamp(&line[i + 1..]).then_some((measurement_end, true))
}

/// An integer timestamp: an optional `-` and digits that fit an i64. Fewer than 19 digits always fit; 19
/// digits (every timestamp in nanoseconds since 2001) fit when they compare at most `i64::MAX` (or
/// `|i64::MIN|` after a `-`), which for strings of equal length is their byte order; longer ones are parsed.
fn is_timestamp(ts: &str) -> bool {
    let (digits, limit) = match ts.strip_prefix('-') {
        Some(d) => (d, "9223372036854775808"),
        None => (ts, "9223372036854775807"),
    };
    !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit())
        && match digits.len().cmp(&limit.len()) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => digits <= limit,
            // Leading zeros: rare enough to parse.
            std::cmp::Ordering::Greater => ts.parse::<i64>().is_ok(),
        }
}

/// Splits the line into its sections, honouring escapes and quoted string fields, and checks each.
/// Returns the end of the measurement and whether a timestamp is present.
fn check_line(line: &str) -> Result<(usize, bool), String> {
    let b = line.as_bytes();
    // Section 1: measurement and tags, up to the first unescaped space.
    let mut i = 0;
    let mut measurement_end = None;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b',' if measurement_end.is_none() => {
                measurement_end = Some(i);
                i += 1;
            }
            b' ' => break,
            _ => i += 1,
        }
    }
    let key_end = i.min(b.len());
    let measurement_end = measurement_end.unwrap_or(key_end);
    if measurement_end == 0 {
        return Err("missing measurement".into());
    }
    if key_end > measurement_end {
        check_tags(&line[measurement_end + 1..key_end])?;
    }
    if key_end >= b.len() {
        return Err("missing fields".into());
    }
    // Section 2: fields, up to the first unescaped space outside a quoted string.
    let fields_start = key_end + 1;
    let mut j = fields_start;
    let mut in_quotes = false;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => {
                in_quotes = !in_quotes;
                j += 1;
            }
            b' ' if !in_quotes => break,
            _ => j += 1,
        }
    }
    if in_quotes {
        return Err("unterminated string field".into());
    }
    let fields_end = j.min(b.len());
    check_fields(&line[fields_start..fields_end])?;
    // Section 3: optional integer timestamp.
    if fields_end >= b.len() {
        return Ok((measurement_end, false));
    }
    let ts = &line[fields_end + 1..];
    if !is_timestamp(ts) {
        return Err(format!("invalid timestamp `{ts}`"));
    }
    Ok((measurement_end, true))
}

/// Calls `f` on each part of `s` split on a separator byte that is not escaped (and, with `quotes`, not
/// inside double quotes), without allocating.
fn for_each_part(
    s: &str,
    sep: u8,
    quotes: bool,
    mut f: impl FnMut(&str) -> Result<(), String>,
) -> Result<(), String> {
    let b = s.as_bytes();
    let (mut start, mut i, mut quoted) = (0, 0, false);
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'"' if quotes => quoted = !quoted,
            c if c == sep && !quoted => {
                f(&s[start..i])?;
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    f(&s[start.min(s.len())..])
}

/// Splits `kv` at its first unescaped `=`.
fn split_key_value(kv: &str) -> Option<(&str, &str)> {
    let b = kv.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'=' => return Some((&kv[..i], &kv[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

fn check_tags(tags: &str) -> Result<(), String> {
    for_each_part(tags, b',', false, |tag| match split_key_value(tag) {
        Some((k, v)) if !k.is_empty() && !v.is_empty() && split_key_value(v).is_none() => Ok(()),
        _ => Err(format!("invalid tag `{tag}` (want key=value)")),
    })
}

fn check_fields(fields: &str) -> Result<(), String> {
    if fields.is_empty() {
        return Err("missing fields".into());
    }
    for_each_part(fields, b',', true, |field| {
        let Some((k, v)) = split_key_value(field) else {
            return Err(format!("invalid field `{field}` (want key=value)"));
        };
        if k.is_empty() {
            return Err(format!("field without a name `{field}`"));
        }
        if !valid_field_value(v) {
            return Err(format!("invalid value of field `{k}`: `{v}`"));
        }
        Ok(())
    })
}

fn valid_field_value(v: &str) -> bool {
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        return true;
    }
    if matches!(
        v,
        "t" | "T" | "true" | "True" | "TRUE" | "f" | "F" | "false" | "False" | "FALSE"
    ) {
        return true;
    }
    if let Some(int) = v.strip_suffix('i') {
        return int.parse::<i64>().is_ok();
    }
    if let Some(uint) = v.strip_suffix('u') {
        return uint.parse::<u64>().is_ok();
    }
    plain_decimal(v) || v.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Whether `v` is a decimal that `f64` parsing accepts as a finite number, seen without parsing it: an
/// optional sign, digits with at most one `.` among them, no exponent, and at most 300 digits before the
/// point (fewer than `f64::MAX`'s 309). The common float field (`21.75`) is decided here; anything else
/// (exponents, `inf`, longer numbers) goes to the full parse.
fn plain_decimal(v: &str) -> bool {
    let b = v.as_bytes();
    let b = match b.first() {
        Some(b'-' | b'+') => &b[1..],
        _ => b,
    };
    let (mut digits, mut point, mut before_point) = (0usize, false, 0usize);
    for &c in b {
        match c {
            b'0'..=b'9' => digits += 1,
            b'.' if !point => {
                point = true;
                before_point = digits;
            }
            _ => return false,
        }
    }
    if !point {
        before_point = digits;
    }
    digits > 0 && before_point <= 300
}

/// One Elasticsearch/OpenSearch document: target index, compact JSON object body, optional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    index: String,
    body: String,
    id: Option<String>,
}

impl Document {
    /// Validates index name, body and id.
    pub fn new(index: &str, body: &[u8], id: Option<&str>) -> Result<Self, String> {
        check_index_name(index)?;
        let body = std::str::from_utf8(body).map_err(|e| format!("document body is not UTF-8: {e}"))?;
        let first = body.trim_start().as_bytes().first().copied();
        if first != Some(b'{') {
            return Err(format!(
                "document body must be a JSON object, got `{}`",
                cut(body)
            ));
        }
        let line_breaks = crate::json_check::check(body.as_bytes())
            .map_err(|e| format!("document body is not valid JSON: {e}"))?;
        let body = if line_breaks {
            // Pretty-printed JSON: newlines would break the bulk request's NDJSON; re-serialize compactly.
            let v: serde_json::Value =
                serde_json::from_str(body).map_err(|e| format!("document body is not valid JSON: {e}"))?;
            v.to_string()
        } else {
            body.to_string()
        };
        if let Some(id) = id
            && (id.is_empty() || id.len() > 512)
        {
            return Err(format!("document id must be 1 to 512 bytes, got {}", id.len()));
        }
        Ok(Self {
            index: index.to_string(),
            body,
            id: id.map(str::to_string),
        })
    }

    pub fn index(&self) -> &str {
        &self.index
    }

    /// The body: one line of compact JSON, ready for a bulk request.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The id the plugin chose; `None` lets the worker assign a deterministic one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Index, body and id, without copying.
    pub fn into_parts(self) -> (String, String, Option<String>) {
        (self.index, self.body, self.id)
    }
}

/// Elasticsearch's rules for index names (which OpenSearch shares).
fn check_index_name(index: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid index name `{}`: {why}", cut(index)));
    if index.is_empty() {
        return bad("empty");
    }
    if index.len() > 255 {
        return bad("longer than 255 bytes");
    }
    if index.starts_with('.') {
        // `.` and `..` are reserved; other dot names are system and hidden indices (`.kibana`,
        // `.security-7`, `.opendistro_security`, `.ds-*` backing indices): never a plugin's to write.
        return bad("must not start with `.` (system and hidden indices)");
    }
    if index.starts_with(['-', '_', '+']) {
        return bad("must not start with `-`, `_` or `+`");
    }
    if index.chars().any(|c| c.is_uppercase()) {
        return bad("must be lower case");
    }
    if let Some(c) = index.chars().find(|c| {
        matches!(
            c,
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
        ) || c.is_control()
    }) {
        return bad(&format!("must not contain `{}`", c.escape_default()));
    }
    Ok(())
}

/// Severity of a plugin log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The ABI's numbering: 0 error, 1 warn, 2 info, 3 debug, 4 trace; anything else is info.
    pub fn from_abi(level: i32) -> Self {
        match level {
            0 => Self::Error,
            1 => Self::Warn,
            3 => Self::Debug,
            4 => Self::Trace,
            _ => Self::Info,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        })
    }
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The ABI's log call (`millrace.log` or the seed's `host_log`).
    Log,
    Stdout,
    Stderr,
}

/// One log line of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub source: LogSource,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcuts decide exactly as the parsers they stand in for, over every string of up to five
    /// characters from the bytes that matter and over the i64 edges.
    #[test]
    fn number_shortcuts_agree_with_the_parsers() {
        let parsed_timestamp = |v: &str| {
            let digits = v.strip_prefix('-').unwrap_or(v);
            !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) && v.parse::<i64>().is_ok()
        };
        let alphabet = b"0123456789.-+eEin";
        let mut s = Vec::new();
        for len in 0..=5u32 {
            for mut n in 0..(alphabet.len() as u64).pow(len) {
                s.clear();
                for _ in 0..len {
                    s.push(alphabet[(n % alphabet.len() as u64) as usize]);
                    n /= alphabet.len() as u64;
                }
                let v = std::str::from_utf8(&s).unwrap();
                // A plain decimal is always a finite float (others go to the parser anyway).
                assert!(
                    !plain_decimal(v) || v.parse::<f64>().is_ok_and(f64::is_finite),
                    "{v}"
                );
                assert_eq!(is_timestamp(v), parsed_timestamp(v), "{v}");
            }
        }
        let long = |n: usize| "9".repeat(n);
        for (v, float) in [
            (long(300), true),
            (format!("{}.5", long(300)), true),
            (format!("-{}", long(300)), true),
            (long(308), true),
            (long(309), false),
            (long(400), false),
            (format!("0.{}", long(400)), true),
        ] {
            assert_eq!(v.parse::<f64>().is_ok_and(f64::is_finite), float, "{v}");
            assert_eq!(valid_field_value(&v), float, "{v}");
        }
        for v in [
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "1700000000000000000",
            "09223372036854775807",
            "99999999999999999999",
            "-",
            "",
            "+1",
        ] {
            assert_eq!(is_timestamp(v), parsed_timestamp(v), "{v}");
        }
    }

    #[test]
    fn line_protocol_accepts_the_usual_shapes() {
        for ok in [
            "env_metrics,source=s1,unit=C value=21.5",
            "env_metrics,source=s1,unit=C value=21.5 1700000000000000000",
            "m f=1i,g=2u,h=true,s=\"a b, c=d\"",
            "m\\ x,t\\,a=b\\ c f=-1.5e3 -10",
            "m s=\"quote \\\" inside\"",
        ] {
            let p = Point::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(p.line(), ok);
        }
        let p = Point::parse("env_metrics,source=s1 value=1 123\n").unwrap();
        assert_eq!(p.measurement(), "env_metrics");
        assert!(p.has_timestamp());
        assert_eq!(
            Point::parse("cpu value=1")
                .unwrap()
                .line_with_default_timestamp(5),
            "cpu value=1 5"
        );
        assert_eq!(Point::parse("a\\ b,x=y v=1").unwrap().measurement(), "a\\ b");
    }

    #[test]
    fn line_protocol_refuses_malformed_lines() {
        for bad in [
            "",
            "just_a_measurement",
            ",t=v f=1",
            "m,t f=1",
            "m f=",
            "m f=abc",
            "m f=1 notatime",
            "m f=\"open",
            "m f=1\nm f=2",
            "# comment",
            "m f=NaN",
            "m f=1i2",
        ] {
            assert!(Point::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_full_one() {
        let typical =
            "env_metrics,source=sensor-1,unit=C value=21.5,n=3i,ok=true,s=\"a b, c=d\" 1700000000000000000";
        assert_eq!(check_plain_line(typical), Some((11, true)));
        assert_eq!(check_plain_line("cpu value=1"), Some((3, false)));
        // Generated lines from the characters that matter: whenever the one-pass check answers, the full
        // check must accept the line with the same measurement end and timestamp flag.
        let alphabet = b"ab=, \"\\1.i-etu9";
        let templates = [
            "m,t=v f=1 1",
            "m f=\"x\",g=2i",
            "m,a=b,c=d x=1.5e3,y=t -5",
            "m f=1u 99999999999999999999",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m as u64) as usize
        };
        let (mut answered, mut accepted) = (0, 0);
        for _ in 0..200_000 {
            let mut line: Vec<u8> = if next(2) == 0 {
                templates[next(templates.len())].as_bytes().to_vec()
            } else {
                (0..next(16)).map(|_| alphabet[next(alphabet.len())]).collect()
            };
            for _ in 0..next(3) {
                if !line.is_empty() {
                    let at = next(line.len());
                    line[at] = alphabet[next(alphabet.len())];
                }
            }
            let line = String::from_utf8(line).unwrap();
            let full = check_line(&line);
            if let Some(fast) = check_plain_line(&line) {
                answered += 1;
                assert_eq!(full, Ok(fast), "{line:?}");
            }
            accepted += usize::from(full.is_ok());
        }
        assert!(
            answered > 10_000 && accepted >= answered,
            "{answered} answered, {accepted} accepted"
        );
    }

    #[test]
    fn documents_are_validated_and_compacted() {
        let d = Document::new("svc-logs-daily", b"{\n  \"a\": 1\n}", Some("id-1")).unwrap();
        assert_eq!(d.body(), "{\"a\":1}");
        assert_eq!(d.id(), Some("id-1"));
        assert!(Document::new("Upper", b"{}", None).is_err());
        assert!(Document::new("a/b", b"{}", None).is_err());
        assert!(Document::new("_x", b"{}", None).is_err());
        for system in [
            ".kibana",
            ".security-7",
            ".ds-logs-x-2026.12.05-000001",
            ".",
            "..",
        ] {
            let err = Document::new(system, b"{}", None).unwrap_err();
            assert!(err.contains("must not start with `.`"), "{system}: {err}");
        }
        assert!(Document::new("ok", b"[1]", None).is_err());
        assert!(Document::new("ok", b"{\"a\":", None).is_err());
        assert!(Document::new("ok", b"{}", Some("")).is_err());
        assert!(Document::new("ok", b"{} trailing", None).is_err());
    }
}
