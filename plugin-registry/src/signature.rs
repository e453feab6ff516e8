//! Cosign-compatible plugin signatures, so that an operator can demand that only plugins signed by a trusted
//! key run, with the tools the OCI world already uses (`cosign sign --key`, `cosign verify --key`), and so that
//! `millrace plugin sign` writes signatures cosign itself accepts.
//!
//! The format is Sigstore "simple signing" as cosign stores it in an OCI registry, with no transparency log
//! and no certificates (key-pair mode):
//! - the signature of manifest `sha256:<hex>` is an OCI image manifest in the same repository, under the tag
//!   `sha256-<hex>.sig` ([`signature_tag`]);
//! - each of its layers of type [`SIMPLE_SIGNING_TYPE`] is a payload JSON ([`payload`]) naming the repository
//!   and the signed digest, and carries in the annotation [`SIGNATURE_ANNOTATION`] the base64 signature over
//!   the payload's exact bytes (ECDSA with SHA-256, DER, for cosign's default P-256 keys; RSA PKCS#1 v1.5 or
//!   PSS with SHA-256 and Ed25519 keys are accepted too).
//!
//! Everything here is pure: no network. The caller fetches the `.sig` manifest and hands [`verify_artifact`] a
//! closure that fetches blobs. The closure is synchronous; an async caller uses [`signature_layers`] and
//! [`SignatureLayer::verify`] instead, fetching the blobs in between.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private, Public};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};
use serde::Deserialize;
use serde_json::json;

use crate::sha256;

/// Media type of a layer holding a simple-signing payload.
pub const SIMPLE_SIGNING_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 signature over the layer's payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign payload.
pub const PAYLOAD_KIND: &str = "cosign container image signature";
/// Config media type cosign writes for a signature manifest (any is accepted on verify).
pub const SIGNATURE_CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of the signature manifest.
pub const SIGNATURE_MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Largest payload looked at (cosign's are a few hundred bytes; annotations in `optional` add a little).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Largest signature manifest parsed.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// Most simple-signing layers tried in one signature manifest (cosign appends one per signature).
pub const MAX_SIGNATURE_LAYERS: usize = 32;
/// Smallest RSA key accepted.
const MIN_RSA_BITS: u32 = 2048;

/// Why a signature could not be made or does not hold.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The digest is not `sha256:<64 lowercase hex>` (or `sha512:<128 lowercase hex>`).
    #[error("`{digest}` is not a manifest digest: {reason}")]
    InvalidDigest { digest: String, reason: String },

    /// A key file could not be read, is not a PEM key of the expected kind, or its algorithm is not supported.
    #[error("key {name}: {message}")]
    InvalidKey { name: String, message: String },

    /// No signature at all: no signature artifact, or one without any simple-signing layer.
    #[error("{digest} is not signed: {detail}")]
    Unsigned { digest: String, detail: String },

    /// A signature is there but does not hold: it verifies with none of the trusted keys, its payload names
    /// another digest or repository, or the signature artifact is malformed.
    #[error("signature of {digest} rejected: {reason}")]
    BadSignature { digest: String, reason: String },

    /// Fetching a signature blob failed (returned by the caller's fetch closure).
    #[error("fetching signature blob {digest}: {message}")]
    Fetch {
        digest: String,
        message: String,
        retriable: bool,
    },

    /// Making a key or a signature failed inside the crypto library.
    #[error("signing with {name}: {message}")]
    Signing { name: String, message: String },
}

impl SignatureError {
    /// Every value [`SignatureError::kind`] returns.
    pub const KINDS: &'static [&'static str] = &[
        "invalid_digest",
        "invalid_key",
        "unsigned",
        "bad_signature",
        "fetch",
        "signing",
    ];

    /// A short, stable name of the error's kind (metric label, policy decisions).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidDigest { .. } => "invalid_digest",
            Self::InvalidKey { .. } => "invalid_key",
            Self::Unsigned { .. } => "unsigned",
            Self::BadSignature { .. } => "bad_signature",
            Self::Fetch { .. } => "fetch",
            Self::Signing { .. } => "signing",
        }
    }

    /// Whether trying again later could succeed without anyone changing anything (only a failed fetch can).
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Fetch { retriable: true, .. })
    }

    fn bad(digest: &str, reason: impl Into<String>) -> Self {
        Self::BadSignature {
            digest: digest.to_string(),
            reason: reason.into(),
        }
    }

    fn key(name: &str, message: impl Into<String>) -> Self {
        Self::InvalidKey {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

/// Splits a digest into algorithm and hex, checking both.
fn parse_digest(digest: &str) -> Result<(&str, &str), SignatureError> {
    let invalid = |reason: &str| SignatureError::InvalidDigest {
        digest: digest.to_string(),
        reason: reason.to_string(),
    };
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| invalid("expected <algorithm>:<hex>"))?;
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(invalid("the algorithm is neither sha256 nor sha512")),
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(invalid(&format!(
            "expected {len} lowercase hex digits after `{alg}:`"
        )));
    }
    Ok((alg, hex))
}

/// The tag under which cosign stores the signature of `manifest_digest`: `sha256:<hex>` -> `sha256-<hex>.sig`.
pub fn signature_tag(manifest_digest: &str) -> Result<String, SignatureError> {
    let (alg, hex) = parse_digest(manifest_digest)?;
    Ok(format!("{alg}-{hex}.sig"))
}

/// The simple-signing payload cosign signs for `docker_reference` (`registry/repository`, no tag) at
/// `manifest_digest`: compact JSON, keys in cosign's order, `optional` null.
pub fn payload(docker_reference: &str, manifest_digest: &str) -> Vec<u8> {
    // Keys are in alphabetical order, which is also cosign's order: the bytes are the same whether or not
    // serde_json preserves insertion order.
    json!({
        "critical": {
            "identity": { "docker-reference": docker_reference },
            "image": { "docker-manifest-digest": manifest_digest },
            "type": PAYLOAD_KIND,
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

/// The repository part of a reference: without `@digest` and without `:tag`.
fn repository_of(reference: &str) -> &str {
    let reference = reference.split_once('@').map_or(reference, |(r, _)| r);
    match (reference.rfind(':'), reference.rfind('/')) {
        (Some(colon), Some(slash)) if colon > slash => &reference[..colon],
        (Some(colon), None) => &reference[..colon],
        _ => reference,
    }
}

/// Label of the PEM block(s) in `pem`; refuses anything but exactly one block.
fn pem_label<'a>(name: &str, pem: &'a [u8]) -> Result<&'a str, SignatureError> {
    let text =
        std::str::from_utf8(pem).map_err(|_| SignatureError::key(name, "not a PEM file (not text)"))?;
    let mut blocks = text.match_indices("-----BEGIN ");
    let (start, _) = blocks
        .next()
        .ok_or_else(|| SignatureError::key(name, "not a PEM file (no -----BEGIN line)"))?;
    if blocks.next().is_some() {
        return Err(SignatureError::key(
            name,
            "holds more than one PEM block; put one key per file",
        ));
    }
    let rest = &text[start + "-----BEGIN ".len()..];
    rest.split_once("-----")
        .map(|(label, _)| label)
        .ok_or_else(|| SignatureError::key(name, "malformed PEM header"))
}

/// A stable description of a supported key (`ecdsa-p256`, `rsa-3072`, `ed25519`), or why it is not supported.
fn key_type<T: HasPublic>(key: &PKeyRef<T>) -> Result<String, String> {
    match key.id() {
        Id::EC => {
            let ec = key.ec_key().map_err(|e| e.to_string())?;
            match ec.group().curve_name() {
                Some(Nid::X9_62_PRIME256V1) => Ok("ecdsa-p256".into()),
                Some(Nid::SECP384R1) => Ok("ecdsa-p384".into()),
                Some(Nid::SECP521R1) => Ok("ecdsa-p521".into()),
                other => Err(format!(
                    "unsupported elliptic curve {}; use P-256, P-384 or P-521",
                    other.and_then(|n| n.short_name().ok()).unwrap_or("(unnamed)")
                )),
            }
        }
        Id::RSA if key.bits() < MIN_RSA_BITS => Err(format!(
            "RSA key of {} bits, fewer than {MIN_RSA_BITS}",
            key.bits()
        )),
        Id::RSA => Ok(format!("rsa-{}", key.bits())),
        Id::ED25519 => Ok("ed25519".into()),
        _ => Err("unsupported key algorithm; use ECDSA (P-256, as cosign), RSA or Ed25519".into()),
    }
}

fn read_key_file(path: &Path) -> Result<(String, Vec<u8>), SignatureError> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| SignatureError::key(&name, e.to_string()))?;
    if meta.len() > 64 * 1024 {
        return Err(SignatureError::key(
            &name,
            format!("{} bytes: too large for a PEM key", meta.len()),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| SignatureError::key(&name, e.to_string()))?;
    Ok((name, bytes))
}

/// A key with the name it was loaded under (its file, usually) and its type; shown without the key material.
struct NamedKey<T> {
    name: String,
    kind: String,
    key: PKey<T>,
}

impl<T> Clone for NamedKey<T>
where
    PKey<T>: Clone,
{
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            kind: self.kind.clone(),
            key: self.key.clone(),
        }
    }
}

impl<T> std::fmt::Debug for NamedKey<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("type", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A public key whose signatures are trusted, with a name for logs (the file it came from, usually).
#[derive(Clone, Debug)]
pub struct TrustedKey(NamedKey<Public>);

impl TrustedKey {
    /// Parses a `PUBLIC KEY` PEM block (SubjectPublicKeyInfo, what `cosign generate-key-pair` writes to
    /// `cosign.pub`): ECDSA P-256/P-384/P-521, RSA of 2048 bits or more, or Ed25519.
    pub fn from_pem(name: impl Into<String>, pem: &[u8]) -> Result<Self, SignatureError> {
        let name = name.into();
        let label = pem_label(&name, pem)?;
        if label.contains("PRIVATE KEY") {
            return Err(SignatureError::key(
                &name,
                format!(
                    "is a private key ({label}); trust the public key (cosign.pub), never the private one"
                ),
            ));
        }
        if label != "PUBLIC KEY" {
            return Err(SignatureError::key(
                &name,
                format!("PEM block `{label}` is not a `PUBLIC KEY` (SubjectPublicKeyInfo)"),
            ));
        }
        let key = PKey::public_key_from_pem(pem).map_err(|e| SignatureError::key(&name, e.to_string()))?;
        let kind = key_type(&key).map_err(|m| SignatureError::key(&name, m))?;
        Ok(Self(NamedKey { name, kind, key }))
    }

    /// Reads [`TrustedKey::from_pem`] from a file; the path is the key's name.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SignatureError> {
        let (name, bytes) = read_key_file(path.as_ref())?;
        Self::from_pem(name, &bytes)
    }

    /// The name given at load (file path).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// `ecdsa-p256`, `ecdsa-p384`, `ecdsa-p521`, `rsa-<bits>` or `ed25519`.
    pub fn key_type(&self) -> &str {
        &self.0.kind
    }

    /// Whether `signature` is this key's signature over `message` (any malformed signature is simply `false`).
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let check = |padding: Option<Padding>| -> Result<bool, openssl::error::ErrorStack> {
            match self.0.key.id() {
                Id::ED25519 => Verifier::new_without_digest(&self.0.key)?.verify_oneshot(signature, message),
                _ => {
                    let mut v = Verifier::new(MessageDigest::sha256(), &self.0.key)?;
                    if let Some(padding) = padding {
                        v.set_rsa_padding(padding)?;
                        if padding == Padding::PKCS1_PSS {
                            // -2 on verification: the salt length is read from the signature.
                            v.set_rsa_pss_saltlen(RsaPssSaltlen::MAXIMUM_LENGTH)?;
                            v.set_rsa_mgf1_md(MessageDigest::sha256())?;
                        }
                    }
                    v.update(message)?;
                    v.verify(signature)
                }
            }
        };
        if self.0.key.id() == Id::RSA {
            [Padding::PKCS1, Padding::PKCS1_PSS]
                .into_iter()
                .any(|p| check(Some(p)).unwrap_or(false))
        } else {
            check(None).unwrap_or(false)
        }
    }
}

/// What a verified signature said, and which key verified it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedBy {
    /// Name of the trusted key that verified the signature.
    pub key: String,
    /// `critical.identity.docker-reference` of the payload.
    pub docker_reference: String,
    /// `optional` of the payload (cosign's `-a key=value` annotations), when not null.
    pub optional: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SimpleSigning {
    critical: Critical,
    #[serde(default)]
    optional: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Verifies one simple-signing layer: `signature_b64` must be a signature over the exact `payload` bytes by one
/// of `keys`; then the payload must be a cosign payload for `expected_digest` and, when `expected_reference` is
/// given, for the same repository (tags and digests on either side are ignored, as cosign does).
///
/// `bad_signature` when any of that fails (also with no keys at all); `invalid_digest` when `expected_digest`
/// itself is malformed.
pub fn verify_layer(
    payload: &[u8],
    signature_b64: &str,
    expected_digest: &str,
    expected_reference: Option<&str>,
    keys: &[TrustedKey],
) -> Result<VerifiedBy, SignatureError> {
    parse_digest(expected_digest)?;
    let bad = |reason: String| SignatureError::bad(expected_digest, reason);
    if keys.is_empty() {
        return Err(bad("no trusted key to verify with".into()));
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(bad(format!(
            "payload is {} bytes, more than the limit of {MAX_PAYLOAD_BYTES}",
            payload.len()
        )));
    }
    let signature = BASE64
        .decode(signature_b64.trim())
        .map_err(|e| bad(format!("signature annotation is not base64: {e}")))?;
    let key = keys
        .iter()
        .find(|k| k.verifies(payload, &signature))
        .ok_or_else(|| {
            bad(format!(
                "the signature verifies with none of the {} trusted key(s) [{}]",
                keys.len(),
                keys.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
            ))
        })?;
    let signed: SimpleSigning = serde_json::from_slice(payload)
        .map_err(|e| bad(format!("signed payload is not a simple-signing document: {e}")))?;
    let critical = &signed.critical;
    if critical.kind != PAYLOAD_KIND {
        return Err(bad(format!(
            "signed payload has type `{}`, not `{PAYLOAD_KIND}`",
            critical.kind
        )));
    }
    if critical.image.docker_manifest_digest != expected_digest {
        return Err(bad(format!(
            "the signature is for another manifest, {}",
            critical.image.docker_manifest_digest
        )));
    }
    if let Some(expected) = expected_reference {
        let signed_repo = repository_of(&critical.identity.docker_reference);
        if signed_repo != repository_of(expected) {
            return Err(bad(format!(
                "the signature is for another repository, {signed_repo}, not {}",
                repository_of(expected)
            )));
        }
    }
    Ok(VerifiedBy {
        key: key.name().to_string(),
        docker_reference: critical.identity.docker_reference.clone(),
        optional: signed.optional.filter(|o| !o.is_null()),
    })
}

#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(default)]
    layers: Vec<LayerDoc>,
}

#[derive(Deserialize)]
struct LayerDoc {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// One simple-signing layer of a signature manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    /// Digest of the payload blob.
    pub digest: String,
    /// Size of the payload blob, as the manifest says.
    pub size: u64,
    /// The `dev.cosignproject.cosign/signature` annotation, if any.
    pub signature_b64: Option<String>,
}

impl SignatureLayer {
    /// Checks the fetched payload blob against the layer's size and digest, then [`verify_layer`]s it.
    pub fn verify(
        &self,
        blob: &[u8],
        expected_digest: &str,
        expected_reference: Option<&str>,
        keys: &[TrustedKey],
    ) -> Result<VerifiedBy, SignatureError> {
        let bad =
            |reason: String| SignatureError::bad(expected_digest, format!("layer {}: {reason}", self.digest));
        let signature = self
            .signature_b64
            .as_deref()
            .ok_or_else(|| bad(format!("no {SIGNATURE_ANNOTATION} annotation")))?;
        if blob.len() as u64 != self.size {
            return Err(bad(format!(
                "payload blob is {} bytes, the manifest says {}",
                blob.len(),
                self.size
            )));
        }
        if !self.digest.starts_with("sha256:") {
            return Err(bad("only sha256 layer digests are supported".into()));
        }
        let actual = sha256(blob);
        if actual != self.digest {
            return Err(bad(format!(
                "payload blob does not match its digest (got {actual})"
            )));
        }
        verify_layer(blob, signature, expected_digest, expected_reference, keys).map_err(|e| match e {
            SignatureError::BadSignature { digest, reason } => SignatureError::BadSignature {
                digest,
                reason: format!("layer {}: {reason}", self.digest),
            },
            other => other,
        })
    }
}

/// The simple-signing layers of the signature manifest stored for `signed_digest` (the digest is only used in
/// errors). `unsigned` when there is none; `bad_signature` when the manifest is unreadable or holds more than
/// [`MAX_SIGNATURE_LAYERS`] of them.
pub fn signature_layers(
    manifest_json: &[u8],
    signed_digest: &str,
) -> Result<Vec<SignatureLayer>, SignatureError> {
    if manifest_json.len() > MAX_MANIFEST_BYTES {
        return Err(SignatureError::bad(
            signed_digest,
            format!(
                "signature manifest is {} bytes, more than the limit of {MAX_MANIFEST_BYTES}",
                manifest_json.len()
            ),
        ));
    }
    let manifest: ManifestDoc = serde_json::from_slice(manifest_json)
        .map_err(|e| SignatureError::bad(signed_digest, format!("signature manifest does not parse: {e}")))?;
    let layers: Vec<SignatureLayer> = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_TYPE)
        .map(|l| SignatureLayer {
            digest: l.digest.clone(),
            size: l.size,
            signature_b64: l
                .annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                .cloned(),
        })
        .collect();
    if layers.is_empty() {
        let found: Vec<&str> = manifest.layers.iter().map(|l| l.media_type.as_str()).collect();
        return Err(SignatureError::Unsigned {
            digest: signed_digest.to_string(),
            detail: format!(
                "the signature manifest has no {SIMPLE_SIGNING_TYPE} layer among {} layer(s) [{}]",
                found.len(),
                found.join(", ")
            ),
        });
    }
    if layers.len() > MAX_SIGNATURE_LAYERS {
        return Err(SignatureError::bad(
            signed_digest,
            format!(
                "{} signature layers, more than the limit of {MAX_SIGNATURE_LAYERS}",
                layers.len()
            ),
        ));
    }
    Ok(layers)
}

/// Verifies a whole signature manifest (the one at [`signature_tag`]): walks its simple-signing layers, fetches
/// each payload blob through `fetch_blob(digest)` (payloads over [`MAX_PAYLOAD_BYTES`] are refused before the
/// fetch), checks it against the layer's digest and [`verify_layer`]s it. Succeeds as soon as one layer
/// verifies.
///
/// Otherwise: `unsigned` when there is no simple-signing layer; a retriable error from `fetch_blob` when a
/// fetch failed that way (the verdict is not known); else `bad_signature`, whose reason is the first
/// layer's failure. The closure is synchronous: async callers use [`signature_layers`] and
/// [`SignatureLayer::verify`].
pub fn verify_artifact<F>(
    manifest_json: &[u8],
    expected_digest: &str,
    expected_reference: Option<&str>,
    keys: &[TrustedKey],
    mut fetch_blob: F,
) -> Result<VerifiedBy, SignatureError>
where
    F: FnMut(&str) -> Result<Vec<u8>, SignatureError>,
{
    parse_digest(expected_digest)?;
    let layers = signature_layers(manifest_json, expected_digest)?;
    let mut first_failure: Option<SignatureError> = None;
    let mut undecided: Option<SignatureError> = None;
    for layer in &layers {
        let outcome = if layer.signature_b64.is_none() || layer.size > MAX_PAYLOAD_BYTES as u64 {
            // Refused without fetching: verify() names the missing annotation; the size is named here.
            match layer.signature_b64 {
                None => layer.verify(&[], expected_digest, expected_reference, keys),
                Some(_) => Err(SignatureError::bad(
                    expected_digest,
                    format!(
                        "layer {}: payload is {} bytes, more than the limit of {MAX_PAYLOAD_BYTES}",
                        layer.digest, layer.size
                    ),
                )),
            }
        } else {
            match fetch_blob(&layer.digest) {
                Ok(blob) => layer.verify(&blob, expected_digest, expected_reference, keys),
                Err(e) if e.is_retriable() => {
                    undecided.get_or_insert(e);
                    continue;
                }
                Err(e) => Err(e),
            }
        };
        match outcome {
            Ok(verified) => return Ok(verified),
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    let failure = undecided
        .or(first_failure)
        .unwrap_or_else(|| SignatureError::bad(expected_digest, "no signature layer verifies"));
    Err(match failure {
        SignatureError::BadSignature { digest, reason } if layers.len() > 1 => SignatureError::BadSignature {
            digest,
            reason: format!(
                "none of {} signature layers verifies; first: {reason}",
                layers.len()
            ),
        },
        other => other,
    })
}

/// The signature manifest and its config blob for one payload and its signature, as cosign writes them: an
/// OCI image manifest with a small image config and one [`SIMPLE_SIGNING_TYPE`] layer (the payload) annotated
/// with the signature. Push the config and the payload as blobs, then the manifest (media type
/// [`SIGNATURE_MANIFEST_TYPE`]) under [`signature_tag`]. Returns `(manifest, config)`.
pub fn signature_manifest(payload: &[u8], signature_b64: &str) -> (Vec<u8>, Vec<u8>) {
    let payload_digest = sha256(payload);
    let config = json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{ "created": "0001-01-01T00:00:00Z" }],
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": [payload_digest] },
    })
    .to_string()
    .into_bytes();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": SIGNATURE_MANIFEST_TYPE,
        "config": {
            "mediaType": SIGNATURE_CONFIG_TYPE,
            "size": config.len(),
            "digest": sha256(&config),
        },
        "layers": [{
            "mediaType": SIMPLE_SIGNING_TYPE,
            "size": payload.len(),
            "digest": payload_digest,
            "annotations": { SIGNATURE_ANNOTATION: signature_b64 },
        }],
    })
    .to_string()
    .into_bytes();
    (manifest, config)
}

/// A private key to sign with (`millrace plugin sign`): unencrypted PEM, `PRIVATE KEY` (PKCS#8) or
/// `EC PRIVATE KEY` (SEC1). ECDSA keys sign with SHA-256 (DER), as cosign; RSA with PKCS#1 v1.5 and SHA-256;
/// Ed25519 as is.
#[derive(Debug)]
pub struct SigningKey(NamedKey<Private>);

impl SigningKey {
    /// Parses an unencrypted PEM private key. Encrypted keys (including cosign's own `ENCRYPTED SIGSTORE
    /// PRIVATE KEY`) are refused, never prompted for.
    pub fn from_pem(name: impl Into<String>, pem: &[u8]) -> Result<Self, SignatureError> {
        let name = name.into();
        let label = pem_label(&name, pem)?;
        if label.contains("ENCRYPTED") {
            return Err(SignatureError::key(
                &name,
                format!("`{label}` is encrypted; an unencrypted PKCS#8 (`PRIVATE KEY`) PEM key is expected"),
            ));
        }
        if !matches!(label, "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY") {
            return Err(SignatureError::key(
                &name,
                format!("PEM block `{label}` is not a private key (`PRIVATE KEY` or `EC PRIVATE KEY`)"),
            ));
        }
        // An empty passphrase instead of the default callback, which would prompt on the terminal.
        let key = PKey::private_key_from_pem_passphrase(pem, b"")
            .map_err(|e| SignatureError::key(&name, e.to_string()))?;
        let kind = key_type(&key).map_err(|m| SignatureError::key(&name, m))?;
        Ok(Self(NamedKey { name, kind, key }))
    }

    /// Reads [`SigningKey::from_pem`] from a file; the path is the key's name.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SignatureError> {
        let (name, bytes) = read_key_file(path.as_ref())?;
        Self::from_pem(name, &bytes)
    }

    /// The name given at load (file path).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// `ecdsa-p256`, `ecdsa-p384`, `ecdsa-p521`, `rsa-<bits>` or `ed25519`.
    pub fn key_type(&self) -> &str {
        &self.0.kind
    }

    fn failed(&self, e: impl std::fmt::Display) -> SignatureError {
        SignatureError::Signing {
            name: self.0.name.clone(),
            message: e.to_string(),
        }
    }

    /// The base64 signature over `payload`, for the [`SIGNATURE_ANNOTATION`] annotation.
    pub fn sign(&self, payload: &[u8]) -> Result<String, SignatureError> {
        let signature = if self.0.key.id() == Id::ED25519 {
            Signer::new_without_digest(&self.0.key)
                .and_then(|mut s| s.sign_oneshot_to_vec(payload))
                .map_err(|e| self.failed(e))?
        } else {
            let mut signer = Signer::new(MessageDigest::sha256(), &self.0.key).map_err(|e| self.failed(e))?;
            if self.0.key.id() == Id::RSA {
                signer
                    .set_rsa_padding(Padding::PKCS1)
                    .map_err(|e| self.failed(e))?;
            }
            signer.update(payload).map_err(|e| self.failed(e))?;
            signer.sign_to_vec().map_err(|e| self.failed(e))?
        };
        Ok(BASE64.encode(signature))
    }

    /// The public key as a `PUBLIC KEY` PEM (what to hand to verifiers, cosign.pub).
    pub fn public_key_pem(&self) -> Result<Vec<u8>, SignatureError> {
        self.0.key.public_key_to_pem().map_err(|e| self.failed(e))
    }

    /// The matching [`TrustedKey`], under the same name.
    pub fn trusted_key(&self) -> Result<TrustedKey, SignatureError> {
        TrustedKey::from_pem(self.0.name.clone(), &self.public_key_pem()?)
    }
}

/// A new ECDSA P-256 key pair, as `cosign generate-key-pair` makes (but unencrypted): `(private key as
/// PKCS#8 `PRIVATE KEY` PEM, public key as `PUBLIC KEY` PEM)`.
pub fn generate_p256() -> Result<(Vec<u8>, Vec<u8>), SignatureError> {
    let failed = |e: openssl::error::ErrorStack| SignatureError::Signing {
        name: "new P-256 key".into(),
        message: e.to_string(),
    };
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(failed)?;
    let key = PKey::from_ec_key(EcKey::generate(&group).map_err(failed)?).map_err(failed)?;
    let private = key.private_key_to_pem_pkcs8().map_err(failed)?;
    let public = key.public_key_to_pem().map_err(failed)?;
    Ok((private, public))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use openssl::rsa::Rsa;
    use openssl::symm::Cipher;

    use super::*;

    const DIGEST: &str = "sha256:c88009c3b2c1fe64de85fbdde5c61548bec5c7d4af90f07cc3a006aaaa9dabf6";
    const OTHER_DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    const REPO: &str = "registry.example:5000/team/router";

    fn pair() -> (SigningKey, TrustedKey) {
        let (private, public) = generate_p256().unwrap();
        (
            SigningKey::from_pem("test.key", &private).unwrap(),
            TrustedKey::from_pem("test.pub", &public).unwrap(),
        )
    }

    fn kind<T: std::fmt::Debug>(r: Result<T, SignatureError>) -> &'static str {
        r.unwrap_err().kind()
    }

    /// Blob store for `verify_artifact`, serving the payload and the config of `signature_manifest`.
    fn store(blobs: &[&[u8]]) -> HashMap<String, Vec<u8>> {
        blobs.iter().map(|b| (sha256(b), b.to_vec())).collect()
    }

    fn fetch(store: &HashMap<String, Vec<u8>>) -> impl FnMut(&str) -> Result<Vec<u8>, SignatureError> + '_ {
        move |d: &str| {
            store.get(d).cloned().ok_or_else(|| SignatureError::Fetch {
                digest: d.to_string(),
                message: "404".into(),
                retriable: false,
            })
        }
    }

    #[test]
    fn tag_and_payload_are_cosigns() {
        assert_eq!(
            signature_tag(DIGEST).unwrap(),
            "sha256-c88009c3b2c1fe64de85fbdde5c61548bec5c7d4af90f07cc3a006aaaa9dabf6.sig"
        );
        for bad in [
            "sha256:abc",
            "md5:00",
            "c88009c3",
            &DIGEST.replace('c', "C"),
            &format!("{DIGEST}0"),
        ] {
            assert_eq!(kind(signature_tag(bad)), "invalid_digest", "{bad}");
        }
        assert_eq!(
            String::from_utf8(payload("127.0.0.1:57569/demo/plugin", DIGEST)).unwrap(),
            PY_PAYLOAD
        );
    }

    #[test]
    fn round_trip_and_which_key_verified() {
        let (signer, trusted) = pair();
        let (_, other) = pair();
        let body = payload(REPO, DIGEST);
        let sig = signer.sign(&body).unwrap();
        let v = verify_layer(&body, &sig, DIGEST, Some(REPO), &[other, trusted]).unwrap();
        assert_eq!(v.key, "test.pub");
        assert_eq!(v.docker_reference, REPO);
        assert_eq!(v.optional, None);
        // Without a reference to check, and with a tag or digest on the expected reference (ignored).
        let t = signer.trusted_key().unwrap();
        assert!(verify_layer(&body, &sig, DIGEST, None, std::slice::from_ref(&t)).is_ok());
        for r in [
            format!("{REPO}:v1"),
            format!("{REPO}@{DIGEST}"),
            format!("{REPO}:v1@{DIGEST}"),
        ] {
            assert!(
                verify_layer(&body, &sig, DIGEST, Some(&r), std::slice::from_ref(&t)).is_ok(),
                "{r}"
            );
        }
    }

    #[test]
    fn what_does_not_verify_is_a_bad_signature() {
        let (signer, trusted) = pair();
        let (_, other) = pair();
        let keys = std::slice::from_ref(&trusted);
        let body = payload(REPO, DIGEST);
        let sig = signer.sign(&body).unwrap();

        let mut tampered = body.clone();
        tampered[20] ^= 1;
        assert_eq!(
            kind(verify_layer(&tampered, &sig, DIGEST, Some(REPO), keys)),
            "bad_signature"
        );
        let e = verify_layer(&body, &sig, DIGEST, Some(REPO), &[other]).unwrap_err();
        assert_eq!(e.kind(), "bad_signature");
        assert!(
            e.to_string().contains("none of the 1 trusted key(s) [test.pub]"),
            "{e}"
        );
        assert!(!e.is_retriable());
        assert_eq!(
            kind(verify_layer(&body, &sig, DIGEST, Some(REPO), &[])),
            "bad_signature"
        );
        assert_eq!(
            kind(verify_layer(&body, "not base64!", DIGEST, Some(REPO), keys)),
            "bad_signature"
        );
        assert_eq!(
            kind(verify_layer(&body, &sig[..sig.len() - 8], DIGEST, None, keys)),
            "bad_signature"
        );

        // Validly signed, but for something else.
        let e = verify_layer(&body, &sig, OTHER_DIGEST, Some(REPO), keys).unwrap_err();
        assert_eq!(e.kind(), "bad_signature");
        assert!(e.to_string().contains("another manifest"), "{e}");
        let e = verify_layer(
            &body,
            &sig,
            DIGEST,
            Some("registry.example:5000/team/other"),
            keys,
        )
        .unwrap_err();
        assert!(e.to_string().contains("another repository"), "{e}");
        let other_type = String::from_utf8(body.clone())
            .unwrap()
            .replace(PAYLOAD_KIND, "something else");
        let s = signer.sign(other_type.as_bytes()).unwrap();
        assert_eq!(
            kind(verify_layer(other_type.as_bytes(), &s, DIGEST, None, keys)),
            "bad_signature"
        );
        let not_json = b"signed, but not json";
        let s = signer.sign(not_json).unwrap();
        assert_eq!(
            kind(verify_layer(not_json, &s, DIGEST, None, keys)),
            "bad_signature"
        );
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        let s = signer.sign(&big).unwrap();
        assert_eq!(kind(verify_layer(&big, &s, DIGEST, None, keys)), "bad_signature");
        assert_eq!(
            kind(verify_layer(&body, &sig, "sha256:nope", None, keys)),
            "invalid_digest"
        );
    }

    #[test]
    fn optional_annotations_are_returned() {
        let (signer, trusted) = pair();
        let body = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{REPO}"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"{PAYLOAD_KIND}"}},"optional":{{"team":"routing"}}}}"#
        );
        let sig = signer.sign(body.as_bytes()).unwrap();
        let v = verify_layer(body.as_bytes(), &sig, DIGEST, Some(REPO), &[trusted]).unwrap();
        assert_eq!(v.optional, Some(json!({"team": "routing"})));
    }

    #[test]
    fn artifact_round_trip_and_failures() {
        let (signer, trusted) = pair();
        let keys = std::slice::from_ref(&trusted);
        let body = payload(REPO, DIGEST);
        let sig = signer.sign(&body).unwrap();
        let (manifest, config) = signature_manifest(&body, &sig);

        // Shape: what cosign writes.
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["schemaVersion"], 2);
        assert_eq!(m["mediaType"], SIGNATURE_MANIFEST_TYPE);
        assert_eq!(m["config"]["mediaType"], SIGNATURE_CONFIG_TYPE);
        assert_eq!(m["config"]["digest"], sha256(&config));
        assert_eq!(m["config"]["size"], config.len());
        assert_eq!(m["layers"][0]["mediaType"], SIMPLE_SIGNING_TYPE);
        assert_eq!(m["layers"][0]["digest"], sha256(&body));
        assert_eq!(m["layers"][0]["size"], body.len());
        assert_eq!(m["layers"][0]["annotations"][SIGNATURE_ANNOTATION], sig.as_str());
        let c: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(c["rootfs"]["diff_ids"][0], sha256(&body));

        let blobs = store(&[&body, &config]);
        let v = verify_artifact(&manifest, DIGEST, Some(REPO), keys, fetch(&blobs)).unwrap();
        assert_eq!(v.key, "test.pub");
        assert_eq!(
            kind(verify_artifact(
                &manifest,
                OTHER_DIGEST,
                Some(REPO),
                keys,
                fetch(&blobs)
            )),
            "bad_signature"
        );

        // The registry serves other bytes than the digest names.
        let mut evil = body.clone();
        evil[30] ^= 1;
        let wrong: HashMap<String, Vec<u8>> = [(sha256(&body), evil)].into_iter().collect();
        let e = verify_artifact(&manifest, DIGEST, Some(REPO), keys, fetch(&wrong)).unwrap_err();
        assert_eq!(e.kind(), "bad_signature");
        assert!(e.to_string().contains("does not match its digest"), "{e}");

        // A fetch that may work later is reported as such, not as a bad signature.
        let e = verify_artifact(&manifest, DIGEST, Some(REPO), keys, |d: &str| {
            Err(SignatureError::Fetch {
                digest: d.into(),
                message: "connection refused".into(),
                retriable: true,
            })
        })
        .unwrap_err();
        assert_eq!(e.kind(), "fetch");
        assert!(e.is_retriable());

        // Two layers (cosign appends one per signature): one by another key, one by ours.
        let (other_signer, _) = pair();
        let other_body = payload(REPO, DIGEST);
        let other_sig = other_signer.sign(&other_body).unwrap();
        let two = json!({
            "schemaVersion": 2,
            "config": m["config"],
            "layers": [
                { "mediaType": SIMPLE_SIGNING_TYPE, "digest": sha256(&other_body), "size": other_body.len(),
                  "annotations": { SIGNATURE_ANNOTATION: other_sig } },
                m["layers"][0],
            ],
        })
        .to_string();
        assert!(verify_artifact(two.as_bytes(), DIGEST, Some(REPO), keys, fetch(&blobs)).is_ok());
        let (_, stranger) = pair();
        let e = verify_artifact(two.as_bytes(), DIGEST, Some(REPO), &[stranger], fetch(&blobs)).unwrap_err();
        assert_eq!(e.kind(), "bad_signature");
        assert!(e.to_string().contains("none of 2 signature layers"), "{e}");

        // A simple-signing layer without its annotation, or too big to fetch.
        let no_annotation = json!({ "layers": [
            { "mediaType": SIMPLE_SIGNING_TYPE, "digest": sha256(&body), "size": body.len() } ] })
        .to_string();
        let e = verify_artifact(no_annotation.as_bytes(), DIGEST, None, keys, fetch(&blobs)).unwrap_err();
        assert!(e.to_string().contains(SIGNATURE_ANNOTATION), "{e}");
        let huge = json!({ "layers": [
            { "mediaType": SIMPLE_SIGNING_TYPE, "digest": sha256(&body), "size": 1u64 << 40,
              "annotations": { SIGNATURE_ANNOTATION: sig } } ] })
        .to_string();
        let e = verify_artifact(
            huge.as_bytes(),
            DIGEST,
            None,
            keys,
            |_: &str| -> Result<Vec<u8>, _> { panic!("must not fetch an oversized payload") },
        )
        .unwrap_err();
        assert_eq!(e.kind(), "bad_signature");
        assert_eq!(
            kind(verify_artifact(b"{not json", DIGEST, None, keys, fetch(&blobs))),
            "bad_signature"
        );
    }

    #[test]
    fn no_cosign_layer_is_unsigned() {
        let (_, trusted) = pair();
        let wasm = json!({ "schemaVersion": 2, "config": {}, "layers": [
            { "mediaType": "application/wasm", "digest": OTHER_DIGEST, "size": 8 } ] })
        .to_string();
        let e = verify_artifact(
            wasm.as_bytes(),
            DIGEST,
            None,
            &[trusted],
            |_: &str| -> Result<Vec<u8>, _> { panic!("nothing to fetch") },
        )
        .unwrap_err();
        assert_eq!(e.kind(), "unsigned");
        assert!(!e.is_retriable());
        assert!(e.to_string().contains("application/wasm"), "{e}");
        assert_eq!(
            kind(signature_layers(br#"{"schemaVersion":2,"layers":[]}"#, DIGEST)),
            "unsigned"
        );
    }

    // Made once by scripts/cosign-sign.py (Python `cryptography` + ORAS SDK, nothing of ours): a P-256 key
    // pair, a plugin pushed to a CNCF distribution registry on 127.0.0.1:57569 as demo/plugin, signed there.
    // The manifest is the registry's bytes of the `.sig` tag.
    const PY_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEbcqV/ks2p66sA3+XGZQPKWkBTRlK
CU72GF4nko2cd2StuowgdTQNHNMtrH+JYQw65R8TxYANviwc0BTKAmiUBw==
-----END PUBLIC KEY-----
";
    const PY_PAYLOAD: &str = r#"{"critical":{"identity":{"docker-reference":"127.0.0.1:57569/demo/plugin"},"image":{"docker-manifest-digest":"sha256:c88009c3b2c1fe64de85fbdde5c61548bec5c7d4af90f07cc3a006aaaa9dabf6"},"type":"cosign container image signature"},"optional":null}"#;
    const PY_SIGNATURE: &str =
        "MEYCIQC5TGHkLvlS22Q5cRYKz/ODmNFiG05KtGxgcB0hhkQAOQIhAPyzRs1lUBei3snnFuRDNQztUYYANO0bEtEa8VaJ37JI";
    const PY_MANIFEST: &str = r#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 233, "digest": "sha256:1bbe3e62d8ecdfbc7d57c61f1f4a40384457812a8442b0d7ef69b44af2d08ba4"}, "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": 243, "digest": "sha256:c8bc87decaf7943a54df9023bc5e922a168f82d91a4a92a39081542ac0bc0669", "annotations": {"dev.cosignproject.cosign/signature": "MEYCIQC5TGHkLvlS22Q5cRYKz/ODmNFiG05KtGxgcB0hhkQAOQIhAPyzRs1lUBei3snnFuRDNQztUYYANO0bEtEa8VaJ37JI"}}]}"#;
    const PY_REFERENCE: &str = "127.0.0.1:57569/demo/plugin";

    #[test]
    fn verifies_an_independent_implementation() {
        let key = TrustedKey::from_pem("python.pub", PY_PUBLIC_KEY.as_bytes()).unwrap();
        assert_eq!(key.key_type(), "ecdsa-p256");
        let keys = std::slice::from_ref(&key);
        let v = verify_layer(
            PY_PAYLOAD.as_bytes(),
            PY_SIGNATURE,
            DIGEST,
            Some(PY_REFERENCE),
            keys,
        )
        .unwrap();
        assert_eq!(v.key, "python.pub");
        let blobs = store(&[PY_PAYLOAD.as_bytes()]);
        let v = verify_artifact(
            PY_MANIFEST.as_bytes(),
            DIGEST,
            Some(PY_REFERENCE),
            keys,
            fetch(&blobs),
        )
        .unwrap();
        assert_eq!(v.docker_reference, PY_REFERENCE);
        // One bit off in the signature, and it no longer holds.
        let mut raw = BASE64.decode(PY_SIGNATURE).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let flipped = BASE64.encode(raw);
        assert_eq!(
            kind(verify_layer(PY_PAYLOAD.as_bytes(), &flipped, DIGEST, None, keys)),
            "bad_signature"
        );
        let manifest = PY_MANIFEST.replace(PY_SIGNATURE, &flipped);
        assert_eq!(
            kind(verify_artifact(
                manifest.as_bytes(),
                DIGEST,
                None,
                keys,
                fetch(&blobs)
            )),
            "bad_signature"
        );
        // Our payload() is byte for byte the same, so our signatures are over what cosign would sign.
        assert_eq!(payload(PY_REFERENCE, DIGEST), PY_PAYLOAD.as_bytes());
    }

    #[test]
    fn rsa_and_ed25519_keys() {
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let trusted = TrustedKey::from_pem("rsa.pub", &rsa.public_key_to_pem().unwrap()).unwrap();
        assert_eq!(trusted.key_type(), "rsa-2048");
        let keys = std::slice::from_ref(&trusted);
        let body = payload(REPO, DIGEST);
        // PKCS#1 v1.5, through SigningKey (a PKCS#1 `RSA PRIVATE KEY` PEM).
        let signer =
            SigningKey::from_pem("rsa.key", &rsa.rsa().unwrap().private_key_to_pem().unwrap()).unwrap();
        let sig = signer.sign(&body).unwrap();
        assert!(verify_layer(&body, &sig, DIGEST, Some(REPO), keys).is_ok());
        // PSS, salt as long as the digest (Go's default when signing).
        let mut s = Signer::new(MessageDigest::sha256(), &rsa).unwrap();
        s.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
        s.update(&body).unwrap();
        let pss = BASE64.encode(s.sign_to_vec().unwrap());
        assert!(verify_layer(&body, &pss, DIGEST, Some(REPO), keys).is_ok());
        let small = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        assert_eq!(
            kind(TrustedKey::from_pem(
                "small.pub",
                &small.public_key_to_pem().unwrap()
            )),
            "invalid_key"
        );

        let ed = PKey::generate_ed25519().unwrap();
        let signer = SigningKey::from_pem("ed.key", &ed.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let trusted = signer.trusted_key().unwrap();
        assert_eq!(trusted.key_type(), "ed25519");
        let sig = signer.sign(&body).unwrap();
        assert!(verify_layer(&body, &sig, DIGEST, Some(REPO), &[trusted]).is_ok());
    }

    #[test]
    fn key_files() {
        let (private, public) = generate_p256().unwrap();
        assert!(String::from_utf8_lossy(&private).starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(String::from_utf8_lossy(&public).starts_with("-----BEGIN PUBLIC KEY-----"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cosign.pub");
        std::fs::write(&path, &public).unwrap();
        let key = TrustedKey::from_file(&path).unwrap();
        assert_eq!(key.name(), path.display().to_string());
        let debug = format!("{key:?}");
        assert!(
            debug.contains("cosign.pub") && debug.contains("ecdsa-p256"),
            "{debug}"
        );
        assert!(!debug.contains("BEGIN") && !debug.contains("MFkw"), "{debug}");

        // Mistakes people make, each named.
        for (pem, says) in [
            (private.clone(), "trust the public key"),
            (b"hello".to_vec(), "not a PEM file"),
            (
                [public.clone(), public.clone()].concat(),
                "more than one PEM block",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
                "CERTIFICATE",
            ),
            (
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_vec(),
                "key",
            ),
        ] {
            let e = TrustedKey::from_pem("k", &pem).unwrap_err();
            assert_eq!(e.kind(), "invalid_key");
            assert!(e.to_string().contains(says), "{e}");
            assert!(!e.is_retriable());
        }
        assert_eq!(
            kind(TrustedKey::from_file(dir.path().join("missing.pub"))),
            "invalid_key"
        );
        assert_eq!(kind(SigningKey::from_pem("k", &public)), "invalid_key");

        // Private keys: PKCS#8 and SEC1 load; encrypted ones are refused (not prompted for).
        let path = dir.path().join("cosign.key");
        std::fs::write(&path, &private).unwrap();
        let signer = SigningKey::from_file(&path).unwrap();
        assert_eq!(signer.key_type(), "ecdsa-p256");
        assert!(!format!("{signer:?}").contains("BEGIN"));
        assert_eq!(signer.public_key_pem().unwrap(), public);
        let pkey = PKey::private_key_from_pem(&private).unwrap();
        let sec1 = pkey.ec_key().unwrap().private_key_to_pem().unwrap();
        assert!(String::from_utf8_lossy(&sec1).contains("EC PRIVATE KEY"));
        assert!(SigningKey::from_pem("sec1", &sec1).is_ok());
        let encrypted = pkey
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_128_cbc(), b"secret")
            .unwrap();
        let e = SigningKey::from_pem("enc", &encrypted).unwrap_err();
        assert!(e.to_string().contains("encrypted"), "{e}");
        let sigstore = b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
        assert_eq!(kind(SigningKey::from_pem("cosign.key", sigstore)), "invalid_key");
    }

    #[test]
    fn every_kind_is_listed() {
        let s = || String::from("x");
        let all = [
            SignatureError::InvalidDigest {
                digest: s(),
                reason: s(),
            },
            SignatureError::InvalidKey {
                name: s(),
                message: s(),
            },
            SignatureError::Unsigned {
                digest: s(),
                detail: s(),
            },
            SignatureError::BadSignature {
                digest: s(),
                reason: s(),
            },
            SignatureError::Fetch {
                digest: s(),
                message: s(),
                retriable: false,
            },
            SignatureError::Signing {
                name: s(),
                message: s(),
            },
        ];
        let kinds: Vec<&str> = all.iter().map(SignatureError::kind).collect();
        assert_eq!(kinds, SignatureError::KINDS);
        assert!(all.iter().all(|e| !e.is_retriable()));
    }

    #[test]
    fn repository_without_tag_or_digest() {
        assert_eq!(repository_of("host:5000/a/b:v1"), "host:5000/a/b");
        assert_eq!(repository_of("host:5000/a/b"), "host:5000/a/b");
        assert_eq!(repository_of(&format!("host:5000/a/b@{DIGEST}")), "host:5000/a/b");
        assert_eq!(repository_of(&format!("host/a:v1@{DIGEST}")), "host/a");
    }
}

/// Who must have signed the plugins of which repositories.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    pub rules: Vec<TrustRule>,
}

/// One rule of a [`TrustPolicy`]: for references under `prefix` (a registry `host[:port]`, or
/// `host[:port]/path` of repositories), whether a signature is required and by which keys.
#[derive(Debug, Clone)]
pub struct TrustRule {
    pub prefix: String,
    pub require_signature: bool,
    pub keys: Vec<TrustedKey>,
}

impl TrustPolicy {
    /// The rule for `repository` (`host[:port]/path`): the one with the longest prefix matching whole
    /// components (`reg/team` matches `reg/team/x`, not `reg/teammate`).
    pub fn rule_for(&self, repository: &str) -> Option<&TrustRule> {
        self.rules
            .iter()
            .filter(|r| {
                let p = r.prefix.trim_end_matches('/');
                repository == p
                    || repository
                        .strip_prefix(p)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|r| r.prefix.trim_end_matches('/').len())
    }
}
