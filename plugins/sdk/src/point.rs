//! A builder for InfluxDB line protocol that gets the escaping right.

use std::fmt::Write;

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

/// Writes `s` escaped for line protocol: a backslash before `,` and space, and before `=` when `EQ` (tag
/// and field keys, tag values); a newline becomes `\\n`. Copies unescaped runs whole.
fn escape<const EQ: bool>(out: &mut String, s: &str) {
    let b = s.as_bytes();
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
        let _ = match value {
            FieldValue::Float(f) => write!(self.line, "{f}"),
            FieldValue::Int(i) => write!(self.line, "{i}i"),
            FieldValue::UInt(u) => write!(self.line, "{u}u"),
            FieldValue::Bool(b) => write!(self.line, "{b}"),
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
                Ok(())
            }
        };
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

    /// Calls `f` with the point as one line of line protocol, without copying when it has no timestamp.
    pub(crate) fn with_line<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self.timestamp_ns {
            None => f(&self.line),
            Some(ts) => {
                let mut line = String::with_capacity(self.line.len() + 21);
                line.push_str(&self.line);
                let _ = write!(line, " {ts}");
                f(&line)
            }
        }
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
}
