//! Secrets in configuration: a value that is never printed, given inline (`password = "..."`) or in a file
//! beside it (`password_file = "/var/run/secrets/..."`, as Kubernetes mounts secrets). Every section with a
//! secret resolves it here, so the rule (one form or the other, trailing newline dropped) is written once.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use super::invalid;

/// A secret value: never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret given inline or in a file (trailing newline trimmed), not both; `key` is the inline
    /// option's full key (`sinks.influxdb.password`), the file's is `key` + `_file`.
    pub(super) fn inline_or_file(
        key: &str,
        inline: Option<Secret>,
        file: Option<PathBuf>,
    ) -> Result<Option<Secret>, ConfigError> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(invalid(key, format!("give `{key}` or `{key}_file`, not both"))),
            (Some(v), None) => Ok(Some(v)),
            (None, Some(path)) => {
                let v = std::fs::read_to_string(&path).map_err(|e| {
                    invalid(&format!("{key}_file"), format!("reading {}: {e}", path.display()))
                })?;
                Ok(Some(Secret(v.trim_end_matches(['\n', '\r']).to_string())))
            }
            (None, None) => Ok(None),
        }
    }

    pub(super) fn into_inner(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Shown as the type `secret`: a string, which the `_file` option beside it can replace.
impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut map = serde_json::Map::new();
        map.insert("type".into(), "string".into());
        map.insert("format".into(), "secret".into());
        map.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_inline_or_in_a_file_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\r\n").unwrap();
        let inline = Some(Secret("x".into()));
        assert_eq!(
            Secret::inline_or_file("a.password", inline.clone(), None).unwrap(),
            inline
        );
        let read = Secret::inline_or_file("a.password", None, Some(file.clone())).unwrap();
        assert_eq!(read.unwrap().expose(), "s3cret");
        assert!(
            Secret::inline_or_file("a.password", None, None)
                .unwrap()
                .is_none()
        );
        let both = Secret::inline_or_file("a.password", inline, Some(file)).unwrap_err();
        assert!(both.to_string().contains("a.password_file"), "{both}");
        let missing = Secret::inline_or_file("a.password", None, Some(dir.path().join("nope"))).unwrap_err();
        assert!(matches!(missing, ConfigError { ref key, .. } if key == "a.password_file"));
        assert_eq!(format!("{:?}", Secret("s3cret".into())), "<redacted>");
    }
}
