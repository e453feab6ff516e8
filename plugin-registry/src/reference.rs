//! Plugin references: `registry/repository[:tag][@sha256:<hex>]`. When both tag and digest are given the
//! digest wins (the tag is only a label); a reference with a digest is *pinned* and never re-resolved.

use std::fmt;

use oci_client::Reference;

use crate::RegistryError;

/// A parsed plugin reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PluginRef {
    original: String,
    inner: Reference,
}

impl PluginRef {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let bad = |reason: String| RegistryError::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        let s = s.trim();
        if s.is_empty() {
            return Err(bad("empty".into()));
        }
        if s.contains("://") {
            return Err(bad(
                "a reference has no scheme: write host:port/repository:tag".into()
            ));
        }
        // Docker's rule: the first component names a registry only if it looks like a host. Without one,
        // a reference would silently mean Docker Hub; a plugin reference must say where it comes from.
        let first = s.split('/').next().unwrap_or("");
        let has_host = s.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('['));
        if !has_host {
            return Err(bad(format!(
                "no registry host: write it in full, e.g. registry.example.com/{s} (docker.io/{s} for Docker Hub)"
            )));
        }
        let inner: Reference = s.parse().map_err(|e| bad(format!("{e}")))?;
        if let Some(d) = inner.digest() {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| bad(format!("digest `{d}` is not sha256")))?;
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad(format!(
                    "digest `{d}` is not sha256:<64 lower-case hex digits>"
                )));
            }
        }
        Ok(Self {
            original: s.to_string(),
            inner,
        })
    }

    /// The registry host (with port), as written or defaulted.
    pub fn registry(&self) -> &str {
        self.inner.resolve_registry()
    }

    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The pinned manifest digest, when the reference has one.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    pub fn is_pinned(&self) -> bool {
        self.inner.digest().is_some()
    }

    /// The same repository pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> Self {
        let inner = Reference::with_digest(
            self.inner.registry().to_string(),
            self.inner.repository().to_string(),
            digest.to_string(),
        );
        Self {
            original: format!("{}/{}@{digest}", self.inner.registry(), self.inner.repository()),
            inner,
        }
    }

    pub(crate) fn oci(&self) -> &Reference {
        &self.inner
    }

    /// The reference as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.original
    }
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl std::str::FromStr for PluginRef {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0aa8ff924b4b35dde400c751cef3723be903cd64d9963b80db646836a77ae74f";

    #[test]
    fn parses_tags_digests_and_both() {
        let r = PluginRef::parse("127.0.0.1:15000/acme/router:v1").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag(), r.digest()),
            ("127.0.0.1:15000", "acme/router", Some("v1"), None)
        );
        assert!(!r.is_pinned());
        let r = PluginRef::parse(&format!("127.0.0.1:15000/acme/router:v1@{D}")).unwrap();
        assert_eq!(r.digest(), Some(D));
        assert!(r.is_pinned());
        let p = PluginRef::parse("registry.example.com/a/b:v2").unwrap().pinned(D);
        assert_eq!(p.to_string(), format!("registry.example.com/a/b@{D}"));
    }

    #[test]
    fn references_without_a_registry_host_are_refused() {
        let err = PluginRef::parse("acme/router:v1").unwrap_err();
        assert!(err.to_string().contains("no registry host"), "{err}");
        for good in [
            "localhost/acme/r:v1",
            "localhost:5000/r:v1",
            "docker.io/acme/r:v1",
        ] {
            assert!(PluginRef::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "http://host/repo:v1",
            "host.example/Repo Name:v1",
            "host.example/repo@sha256:abc",
            "host.example/repo@md5:0123",
            "acme/router:v1",
            "router:v1",
            "router",
        ] {
            assert!(PluginRef::parse(bad).is_err(), "{bad}");
        }
    }
}
