//! A builder for InfluxDB line protocol that gets the escaping right.

use std::cell::RefCell;
use std::fmt::Write;

/// Appends `f` as `Display` writes it (the shortest digits that read back to the same value, never an
/// exponent), through `zmij`, which is much faster than `core::fmt`'s formatter in WebAssembly; the rare
/// values `zmij` writes with an exponent go through `core::fmt`. In an exact tie between two shortest forms
/// the last digit may differ from `Display`'s; both read back to the same value.
fn push_float(out: &mut String, f: f64) {
    let mut buf = zmij::Buffer::new();
    let s = buf.format_finite(f);
    if s.contains('e') {
        let _ = write!(out, "{f}");
    } else {
        out.push_str(s.strip_suffix(".0").unwrap_or(s));
    }
}

/// A field value of a point.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(String),
}

impl From<f64> for FieldValue {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}
impl From<f32> for FieldValue {
    fn from(v: f32) -> Self {
        Self::Float(f64::from(v))
    }
}
impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<i32> for FieldValue {
    fn from(v: i32) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<u64> for FieldValue {
    fn from(v: u64) -> Self {
        Self::UInt(v)
    }
}
impl From<u32> for FieldValue {
    fn from(v: u32) -> Self {
        Self::UInt(u64::from(v))
    }
}
impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        Self::Str(v.to_string())
    }
}
impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}

/// One point: `measurement,tag=v field=v timestamp`.
///
/// Tags with an empty value and float fields that are not finite are left out (line protocol has no way
/// to write them); a point without any field is invalid and the host refuses it. The line is built in one
/// buffer as tags and fields are added, so emitting a point costs no further copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// `measurement[,tags]` and, once a field was added, ` field=v[,...]`.
    line: String,
    /// Where the field set starts (the space before it); 0 while there is none.
    fields_at: usize,
    timestamp_ns: Option<i64>,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` that differs from `b` (exact, no carries between bytes).
#[inline]
fn differs(w: u64, b: u8) -> u64 {
    let x = w ^ (ONES * u64::from(b));
    ((x & !HIGH).wrapping_add(!HIGH) | x) & HIGH
}

/// Whether `s` has a byte that line protocol escapes: `,`, space, newline, and `=` when `EQ`. Eight bytes
/// per step in `u64` words (native in WebAssembly too, where `usize` is 32 bits); the last word is padded
/// with zero bytes, which are never special.
#[inline]
fn needs_escape<const EQ: bool>(s: &[u8]) -> bool {
    let word_has = |w: u64| {
        let eq = if EQ { differs(w, b'=') } else { HIGH };
        differs(w, b',') & differs(w, b' ') & differs(w, b'\n') & eq != HIGH
    };
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        if word_has(u64::from_le_bytes(a)) {
            return true;
        }
    }
    let rest = chunks.remainder();
    if rest.is_empty() {
        return false;
    }
    let mut a = [0u8; 8];
    a[..rest.len()].copy_from_slice(rest);
    word_has(u64::from_le_bytes(a))
}

/// Writes `s` escaped for line protocol: a backslash before `,` and space, and before `=` when `EQ` (tag
/// and field keys, tag values); a newline becomes `\\n`. Names and values without any of those (nearly
/// all) are found so a word at a time and copied whole.
fn escape<const EQ: bool>(out: &mut String, s: &str) {
    let b = s.as_bytes();
    if !needs_escape::<EQ>(b) {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let special = c == b',' || c == b' ' || c == b'\n' || (EQ && c == b'=');
        if special {
            // `c` is ASCII, so `i` is a char boundary.
            out.push_str(&s[start..i]);
            out.push('\\');
            out.push(if c == b'\n' { 'n' } else { c as char });
            start = i + 1;
        }
    }
    out.push_str(&s[start..]);
}

impl Point {
    pub fn new(measurement: &str) -> Self {
        let mut line = String::with_capacity(measurement.len() + 96);
        escape::<false>(&mut line, measurement);
        Self {
            line,
            fields_at: 0,
            timestamp_ns: None,
        }
    }

    /// Adds a tag (indexed, string-valued).
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        if key.is_empty() || value.is_empty() {
            return self;
        }
        let write = |out: &mut String| {
            out.push(',');
            escape::<true>(out, key);
            out.push('=');
            escape::<true>(out, value);
        };
        if self.fields_at == 0 {
            write(&mut self.line);
        } else {
            let mut tag = String::with_capacity(key.len() + value.len() + 2);
            write(&mut tag);
            // A tag after fields: it still belongs before the field set.
            self.line.insert_str(self.fields_at, &tag);
            self.fields_at += tag.len();
        }
        self
    }

    /// Adds a field.
    pub fn field(mut self, key: &str, value: impl Into<FieldValue>) -> Self {
        let value = value.into();
        if key.is_empty() || matches!(value, FieldValue::Float(f) if !f.is_finite()) {
            return self;
        }
        if self.fields_at == 0 {
            self.fields_at = self.line.len();
            self.line.push(' ');
        } else {
            self.line.push(',');
        }
        escape::<true>(&mut self.line, key);
        self.line.push('=');
        match value {
            FieldValue::Float(f) => push_float(&mut self.line, f),
            FieldValue::Int(i) => {
                self.line.push_str(itoa::Buffer::new().format(i));
                self.line.push('i');
            }
            FieldValue::UInt(u) => {
                self.line.push_str(itoa::Buffer::new().format(u));
                self.line.push('u');
            }
            FieldValue::Bool(b) => self.line.push_str(if b { "true" } else { "false" }),
            FieldValue::Str(s) => {
                self.line.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        self.line.push('\\');
                    }
                    if c == '\n' {
                        self.line.push_str("\\n");
                    } else {
                        self.line.push(c);
                    }
                }
                self.line.push('"');
            }
        }
        self
    }

    /// Whether the point has at least one field (a point without fields is invalid).
    pub fn has_fields(&self) -> bool {
        self.fields_at != 0
    }

    pub fn timestamp_ns(mut self, ns: i64) -> Self {
        self.timestamp_ns = Some(ns);
        self
    }

    pub fn timestamp_ms(self, ms: i64) -> Self {
        self.timestamp_ns(ms.saturating_mul(1_000_000))
    }

    /// Calls `f` with the point as one line of line protocol, without copying when it has no timestamp; a
    /// timestamped line is joined in a buffer kept for the next one.
    pub(crate) fn with_line<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        thread_local! {
            static JOINED: RefCell<String> = const { RefCell::new(String::new()) };
        }
        let Some(ts) = self.timestamp_ns else {
            return f(&self.line);
        };
        JOINED.with(|joined| {
            let mut line = joined.borrow_mut();
            line.clear();
            line.push_str(&self.line);
            line.push(' ');
            line.push_str(itoa::Buffer::new().format(ts));
            f(&line)
        })
    }

    /// The point as one line of line protocol.
    pub fn to_line(&self) -> String {
        self.with_line(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_per_line_protocol() {
        let p = Point::new("my meas,x")
            .tag("t k", "a=b,c")
            .tag("empty", "")
            .field("f", 1.5)
            .field("i", 2i64)
            .field("u", 3u64)
            .field("b", true)
            .field("s", "say \"hi\"\\")
            .field("nan", f64::NAN)
            .timestamp_ms(1_700_000_000_000);
        assert_eq!(
            p.to_line(),
            r#"my\ meas\,x,t\ k=a\=b\,c f=1.5,i=2i,u=3u,b=true,s="say \"hi\"\\" 1700000000000000000"#
        );
    }

    #[test]
    fn tags_added_after_fields_land_before_them() {
        let p = Point::new("m")
            .field("f", 1i64)
            .tag("t", "v")
            .field("g", 2i64)
            .tag("u", "w");
        assert_eq!(p.to_line(), "m,t=v,u=w f=1i,g=2i");
        assert!(p.has_fields());
        assert!(!Point::new("m").tag("t", "v").has_fields());
    }

    #[test]
    fn integral_floats_stay_floats() {
        assert_eq!(Point::new("m").field("v", 21.0).to_line(), "m v=21");
    }

    /// The escape check a word at a time agrees with a byte at a time for each special byte at each
    /// position of strings up to three words long (the padded last word included).
    #[test]
    fn word_check_finds_every_special_byte_at_every_position() {
        for len in 0..25 {
            for pos in 0..len {
                for special in [
                    b',', b' ', b'\n', b'=', b'a', 0x7f, 0x80, 0xff, 0xa0, 0xac, 0xbd, 0x8a, b'<', b'-',
                    b'\\',
                ] {
                    let mut s = vec![b'x'; len];
                    s[pos] = special;
                    let naive = |eq: bool| {
                        s.iter()
                            .any(|&c| c == b',' || c == b' ' || c == b'\n' || (eq && c == b'='))
                    };
                    assert_eq!(needs_escape::<true>(&s), naive(true), "{s:?}");
                    assert_eq!(needs_escape::<false>(&s), naive(false), "{s:?}");
                }
            }
            assert!(!needs_escape::<true>(&vec![b'q'; len]));
        }
        let mut p = Point::new("m").tag("k", "a b,c=d\ne").field("v", 1i64);
        assert_eq!(p.to_line(), r"m,k=a\ b\,c\=d\ne v=1i");
        p = p.tag("long key with spaces", "0123456789=");
        assert_eq!(
            p.to_line(),
            r"m,k=a\ b\,c\=d\ne,long\ key\ with\ spaces=0123456789\= v=1i"
        );
    }

    /// Floats come out as `Display` writes them, over edge values and random bit patterns: the same shortest
    /// digits that read back to the same value, without an exponent; where two shortest forms are equally
    /// near (an exact tie), `zmij` may take the other one, which reads back to the same value all the same.
    #[test]
    fn floats_are_written_as_display_writes_them() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            21.5,
            0.1,
            0.3,
            1e15,
            1e16,
            1e17,
            1e21,
            1e22,
            1e100,
            1e300,
            1e-5,
            1e-7,
            1e-300,
            5e-324,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            123456789.125,
            2f64.powi(53),
            9007199254740993.0,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(f64::from_bits(x));
            // Values of everyday magnitudes too (random bits are mostly huge or tiny).
            values.push((x % 10_000_000) as f64 / 1000.0 - 5000.0);
        }
        let (mut all, mut ties) = (0, 0);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            let mut out = String::new();
            push_float(&mut out, v);
            let display = format!("{v}");
            all += 1;
            if out != display {
                ties += 1;
                assert_eq!(
                    out.len(),
                    display.len(),
                    "bits {:#x}: {out} vs {display}",
                    v.to_bits()
                );
                let (a, b) = out.split_at(out.len() - 1);
                let (c, d) = display.split_at(display.len() - 1);
                assert_eq!(
                    a, c,
                    "only the last digit of a tie may differ: {out} vs {display}"
                );
                let (a, b) = (b.as_bytes()[0], d.as_bytes()[0]);
                assert_eq!(a.abs_diff(b), 1, "{out} vs {display}");
            }
            assert!(!out.contains('e'), "{out}");
            assert_eq!(out.parse::<f64>().map(f64::to_bits), Ok(v.to_bits()), "{out}");
        }
        assert!(ties * 1000 < all, "{ties} of {all} differ from Display");
    }

    /// Integer fields and timestamps, at their extremes; lines of different lengths one after the other get
    /// their timestamps whole (the joining buffer is reused).
    #[test]
    fn integers_and_timestamps_are_written_in_full() {
        let p = Point::new("m")
            .field("a", i64::MIN)
            .field("b", u64::MAX)
            .field("c", false)
            .timestamp_ns(i64::MIN);
        assert_eq!(
            p.to_line(),
            format!("m a={}i,b={}u,c=false {}", i64::MIN, u64::MAX, i64::MIN)
        );
        let long = "v".repeat(300);
        let p = Point::new("m").field("s", long.as_str()).timestamp_ms(1);
        assert_eq!(p.to_line(), format!("m s=\"{long}\" 1000000"));
        let p = Point::new("m").field("v", 1i64).timestamp_ns(5);
        assert_eq!(p.to_line(), "m v=1i 5");
    }
}
