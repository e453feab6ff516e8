//! The network side: resolve a tag, pull a manifest and the module layer with size caps and sha256
//! verification (through [`crate::distribution`]), push a module as a wasm OCI artifact (through
//! `oci-client`, after checking that the credentials would not leave the registry's host). Nothing here
//! touches the cache.

use std::time::Duration;

use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;

use crate::cache::sha256;
use crate::distribution::{Distribution, DistributionConfig, transport_message};
use crate::media;
use crate::{Credentials, PluginRef, RegistryError};

pub(crate) struct OciSource {
    /// Pushes only (see `distribution` for why pulls do not go through it).
    client: Client,
    /// Pulls: bounded reads, whole-transfer deadlines, credentials scoped to the registry's host.
    pull: Distribution,
    credentials: Credentials,
    max_module_bytes: u64,
}

impl std::fmt::Debug for OciSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciSource")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// Maps a client error to ours, naming the registry and reference.
fn map_err(e: OciDistributionError, r: &PluginRef) -> RegistryError {
    let registry = r.registry().to_string();
    let reference = r.to_string();
    match e {
        OciDistributionError::RequestError(ref re)
            if re.is_connect() || re.is_timeout() || re.is_request() =>
        {
            RegistryError::Unreachable {
                registry,
                message: transport_message(re),
            }
        }
        OciDistributionError::AuthenticationFailure(m) => RegistryError::Unauthorized {
            registry,
            reference,
            message: m,
        },
        OciDistributionError::UnauthorizedError { url } => RegistryError::Unauthorized {
            registry,
            reference,
            message: format!("401 Unauthorized at {url}"),
        },
        OciDistributionError::ImageManifestNotFoundError(m) => RegistryError::NotFound {
            reference,
            message: m,
        },
        OciDistributionError::ServerError { code, url, message } => match code {
            401 | 403 => RegistryError::Unauthorized {
                registry,
                reference,
                message: format!("{code} at {url}: {message}"),
            },
            404 => RegistryError::NotFound {
                reference,
                message: format!("404 at {url}: {message}"),
            },
            _ => RegistryError::Protocol {
                registry,
                message: format!("{code} at {url}: {message}"),
            },
        },
        OciDistributionError::RegistryError { envelope, url } => {
            let message = format!("{envelope} at {url}");
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                RegistryError::Unauthorized {
                    registry,
                    reference,
                    message,
                }
            } else if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                RegistryError::NotFound { reference, message }
            } else {
                RegistryError::Protocol { registry, message }
            }
        }
        OciDistributionError::DigestError(d) => RegistryError::DigestMismatch {
            what: format!("content of {reference}"),
            expected: "the digest the registry announced".into(),
            actual: d.to_string(),
        },
        other => RegistryError::Protocol {
            registry,
            message: other.to_string(),
        },
    }
}

/// The PEM certificates of a CA file, one entry each (a bundle may hold several).
pub(crate) fn read_pem_certificates(path: &std::path::Path) -> Result<Vec<Vec<u8>>, RegistryError> {
    let err = |message: String| RegistryError::InvalidCa {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            return Err(err("a certificate without its END line".into()));
        };
        let end = start + len + END.len();
        certs.push(format!("{}\n", &rest[start..end]).into_bytes());
        rest = &rest[end..];
    }
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

impl OciSource {
    pub fn new(
        credentials: Credentials,
        insecure_registries: &[String],
        token_realms: &[String],
        ca_certs: Vec<Vec<u8>>,
        timeout: Duration,
        max_manifest_bytes: u64,
        max_module_bytes: u64,
    ) -> Result<Self, RegistryError> {
        let pull = Distribution::new(DistributionConfig {
            credentials: credentials.clone(),
            insecure_registries: insecure_registries.to_vec(),
            token_realms: token_realms.to_vec(),
            ca_certs: ca_certs.clone(),
            timeout,
            max_manifest_bytes,
        })?;
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure_registries.to_vec()),
            connect_timeout: Some(timeout.min(Duration::from_secs(10))),
            read_timeout: Some(timeout),
            extra_root_certificates: ca_certs
                .into_iter()
                .map(|data| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data,
                })
                .collect(),
            ..Default::default()
        };
        Ok(Self {
            client: Client::new(config),
            pull,
            credentials,
            max_module_bytes,
        })
    }

    fn auth(&self, r: &PluginRef) -> Result<RegistryAuth, RegistryError> {
        self.credentials.for_registry(r.registry())
    }

    /// The manifest digest a tag points to now.
    pub async fn resolve(&self, r: &PluginRef) -> Result<String, RegistryError> {
        self.pull.resolve(r).await
    }

    /// The manifest with digest `digest`, verified against it and parsed.
    pub async fn manifest(
        &self,
        r: &PluginRef,
        digest: &str,
    ) -> Result<(Vec<u8>, OciImageManifest), RegistryError> {
        let pinned = r.pinned(digest);
        let raw = self.pull.manifest(&pinned, digest).await?;
        let manifest = parse_manifest(&raw, &pinned)?;
        Ok((raw, manifest))
    }

    /// Whether the repository of `r` holds manifest `digest`.
    pub async fn has_manifest(&self, r: &PluginRef, digest: &str) -> Result<bool, RegistryError> {
        self.pull.has_manifest(r, digest).await
    }

    /// The raw manifest a tag of the repository of `r` names, if there is one.
    pub async fn manifest_by_tag(&self, r: &PluginRef, tag: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        self.pull.manifest_by_tag(r, tag).await
    }

    /// A small blob (at most `limit` bytes) of the repository of `r`, verified against its digest.
    pub async fn blob(&self, r: &PluginRef, digest: &str, limit: u64) -> Result<Vec<u8>, RegistryError> {
        self.pull.blob(r, digest, limit).await
    }

    /// The module layer's bytes, streamed with a size cap and verified against the layer digest.
    pub async fn module(&self, r: &PluginRef, layer: &OciDescriptor) -> Result<Vec<u8>, RegistryError> {
        let limit = self.max_module_bytes;
        if layer.size < 0 || layer.size as u64 > limit {
            return Err(RegistryError::TooLarge {
                what: format!("module layer {} of {r}", layer.digest),
                size: layer.size.max(0) as u64,
                limit,
            });
        }
        self.pull.blob(r, &layer.digest, layer.size as u64).await
    }

    /// Pushes `wasm` as a wasm OCI artifact (config `application/vnd.wasm.config.v0+json`, one
    /// `application/wasm` layer titled `file_name`) and returns the manifest digest.
    pub async fn push(&self, r: &PluginRef, wasm: &[u8], file_name: &str) -> Result<String, RegistryError> {
        self.pull.check_token_realm(r).await?;
        let auth = self.auth(r)?;
        self.client.store_auth_if_needed(r.registry(), &auth).await;
        let layer_digest = sha256(wasm);
        let config = serde_json::json!({
            "created": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "architecture": "wasm",
            "os": "wasip1",
            "layerDigests": [layer_digest],
        })
        .to_string()
        .into_bytes();
        let config_digest = sha256(&config);
        self.client
            .push_blob(r.oci(), wasm.to_vec(), &layer_digest)
            .await
            .map_err(|e| map_err(e, r))?;
        self.client
            .push_blob(r.oci(), config.clone(), &config_digest)
            .await
            .map_err(|e| map_err(e, r))?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.wasm.config.v0+json",
            "config": {"mediaType": media::PUSH_CONFIG_TYPE, "digest": config_digest, "size": config.len()},
            "layers": [{
                "mediaType": media::PUSH_LAYER_TYPE,
                "digest": layer_digest,
                "size": wasm.len(),
                "annotations": {"org.opencontainers.image.title": file_name},
            }],
        })
        .to_string()
        .into_bytes();
        let digest = sha256(&manifest);
        let content_type =
            reqwest::header::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json");
        self.client
            .push_manifest_raw(r.oci(), manifest, content_type)
            .await
            .map_err(|e| map_err(e, r))?;
        Ok(digest)
    }
}

impl OciSource {
    /// Pushes a signature artifact (payload and config blobs, then the manifest) to `tag` of the
    /// repository of `r`.
    pub async fn push_signature(
        &self,
        r: &PluginRef,
        tag: &str,
        payload: &[u8],
        config: &[u8],
        manifest: Vec<u8>,
    ) -> Result<(), RegistryError> {
        self.pull.check_token_realm(r).await?;
        let auth = self.auth(r)?;
        self.client.store_auth_if_needed(r.registry(), &auth).await;
        for blob in [payload, config] {
            self.client
                .push_blob(r.oci(), blob.to_vec(), &sha256(blob))
                .await
                .map_err(|e| map_err(e, r))?;
        }
        let target = oci_client::Reference::with_tag(
            r.oci().registry().to_string(),
            r.repository().to_string(),
            tag.to_string(),
        );
        let content_type =
            reqwest::header::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json");
        self.client
            .push_manifest_raw(&target, manifest, content_type)
            .await
            .map_err(|e| map_err(e, r))?;
        Ok(())
    }
}

fn parse_manifest(raw: &[u8], r: &PluginRef) -> Result<OciImageManifest, RegistryError> {
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| RegistryError::UnsupportedArtifact {
            reference: r.to_string(),
            detail: format!("manifest is not JSON: {e}"),
        })?;
    let media_type = value.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
    if media_type.contains("index")
        || media_type.contains("manifest.list")
        || value.get("manifests").is_some()
    {
        return Err(RegistryError::UnsupportedArtifact {
            reference: r.to_string(),
            detail: format!(
                "`{media_type}` is an index of several artifacts; reference one manifest by digest"
            ),
        });
    }
    serde_json::from_value(value).map_err(|e| RegistryError::UnsupportedArtifact {
        reference: r.to_string(),
        detail: format!("not an OCI image manifest: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_is_split_into_its_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let bundle = write(
            "bundle.pem",
            "# corporate roots\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n",
        );
        let certs = read_pem_certificates(&bundle).unwrap();
        assert_eq!(certs.len(), 2);
        assert!(String::from_utf8_lossy(&certs[1]).contains("BBBB"));
        for (name, text) in [
            ("empty.pem", "nothing here\n"),
            ("cut.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n"),
        ] {
            let err = read_pem_certificates(&write(name, text)).unwrap_err();
            assert_eq!(err.kind(), "invalid_ca", "{name}: {err}");
        }
        let err = read_pem_certificates(&dir.path().join("missing.pem")).unwrap_err();
        assert_eq!(err.kind(), "invalid_ca");
    }
}
