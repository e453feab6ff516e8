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
/// to write them); a point without any field is invalid and the host refuses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    measurement: String,
    tags: String,
    fields: String,
    timestamp_ns: Option<i64>,
}

fn escape(out: &mut String, s: &str, specials: &[char]) {
    for c in s.chars() {
        if specials.contains(&c) {
            out.push('\\');
        }
        match c {
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
}

impl Point {
    pub fn new(measurement: &str) -> Self {
        let mut m = String::with_capacity(measurement.len());
        escape(&mut m, measurement, &[',', ' ']);
        Self {
            measurement: m,
            tags: String::new(),
            fields: String::new(),
            timestamp_ns: None,
        }
    }

    /// Adds a tag (indexed, string-valued).
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        if key.is_empty() || value.is_empty() {
            return self;
        }
        self.tags.push(',');
        escape(&mut self.tags, key, &[',', '=', ' ']);
        self.tags.push('=');
        escape(&mut self.tags, value, &[',', '=', ' ']);
        self
    }

    /// Adds a field.
    pub fn field(mut self, key: &str, value: impl Into<FieldValue>) -> Self {
        let value = value.into();
        if key.is_empty() || matches!(value, FieldValue::Float(f) if !f.is_finite()) {
            return self;
        }
        if !self.fields.is_empty() {
            self.fields.push(',');
        }
        escape(&mut self.fields, key, &[',', '=', ' ']);
        self.fields.push('=');
        let _ = match value {
            FieldValue::Float(f) => write!(self.fields, "{f}"),
            FieldValue::Int(i) => write!(self.fields, "{i}i"),
            FieldValue::UInt(u) => write!(self.fields, "{u}u"),
            FieldValue::Bool(b) => write!(self.fields, "{b}"),
            FieldValue::Str(s) => {
                self.fields.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        self.fields.push('\\');
                    }
                    if c == '\n' {
                        self.fields.push_str("\\n");
                    } else {
                        self.fields.push(c);
                    }
                }
                self.fields.push('"');
                Ok(())
            }
        };
        self
    }

    /// Whether the point has at least one field (a point without fields is invalid).
    pub fn has_fields(&self) -> bool {
        !self.fields.is_empty()
    }

    pub fn timestamp_ns(mut self, ns: i64) -> Self {
        self.timestamp_ns = Some(ns);
        self
    }

    pub fn timestamp_ms(self, ms: i64) -> Self {
        self.timestamp_ns(ms.saturating_mul(1_000_000))
    }

    /// The point as one line of line protocol.
    pub fn to_line(&self) -> String {
        let mut line =
            String::with_capacity(self.measurement.len() + self.tags.len() + self.fields.len() + 22);
        line.push_str(&self.measurement);
        line.push_str(&self.tags);
        line.push(' ');
        line.push_str(&self.fields);
        if let Some(ts) = self.timestamp_ns {
            let _ = write!(line, " {ts}");
        }
        line
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
    fn integral_floats_stay_floats() {
        assert_eq!(Point::new("m").field("v", 21.0).to_line(), "m v=21");
    }
}
