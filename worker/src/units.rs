//! Human units in configuration and on the command line: sizes (`4MiB`, `512KiB`, `1048576`) and durations
//! (`50ms`, `2s`). Besides the parsers, serde adapters let configuration fields keep the std types
//! (`Duration`, `u64`, `usize`) while being written, documented and shown as these strings.

use std::time::Duration;

/// Parses a byte size: a number with an optional unit B, KB/KiB, MB/MiB, GB/GiB (KB = 1000, KiB = 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (try 4MiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "kib" => 1024.0,
        "mb" | "m" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "gb" | "g" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit `{other}` in `{s}`")),
    };
    Ok((num * mult).round() as u64)
}

/// Writes a byte size as it would be configured: the largest binary unit dividing it exactly (`5MiB`), else
/// plain bytes. `parse_size` reads it back to the same number.
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// Parses a duration like `50ms`, `2s`, `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration (try 50ms): {e}"))
}

/// A string schema with a `format` naming the unit, which the configuration reference shows as the type.
fn unit_schema(format: &str) -> schemars::Schema {
    let mut map = serde_json::Map::new();
    map.insert("type".into(), "string".into());
    map.insert("format".into(), format.into());
    map.into()
}

/// Serde adapter for a [`Duration`] written as a human duration (`200ms`, `30s`):
/// `#[serde(with = "crate::units::duration")]` with `#[schemars(schema_with = "crate::units::duration::schema")]`.
///
/// The value is read as a string, so numbers from the environment or YAML are coerced as before.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(D::Error::custom)
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*v))
    }

    /// Shown as the type `duration`.
    pub fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        super::unit_schema("duration")
    }
}

/// Serde adapter for a byte count (`u64` or `usize`) written as a size (`5MiB`, `65536`):
/// `#[serde(with = "crate::units::size")]` with `#[schemars(schema_with = "crate::units::size::schema")]`.
pub mod size {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};

    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let s = String::deserialize(d)?;
        let bytes = super::parse_size(&s).map_err(D::Error::custom)?;
        T::try_from(bytes).map_err(|_| D::Error::custom(format!("`{s}` is too large")))
    }

    pub fn serialize<S, T>(v: &T, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        T: Copy + TryInto<u64>,
    {
        let bytes = (*v)
            .try_into()
            .map_err(|_| S::Error::custom("size out of range"))?;
        s.collect_str(&super::format_size(bytes))
    }

    /// Shown as the type `size`.
    pub fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        super::unit_schema("size")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1.5MB"), Ok(1_500_000));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn sizes_are_written_back_as_configured() {
        assert_eq!(format_size(5 << 20), "5MiB");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(0), "0");
        for n in [0, 1, 1023, 1024, 5 << 20, 3 << 30, 1_500_000] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert!(parse_duration("soon").is_err());
    }
}
