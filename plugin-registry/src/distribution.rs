//! The pull side of the OCI distribution protocol on our own HTTP client, because a registry is untrusted
//! input: every body (manifest, blob, token response, error) is read with a size cap while it streams, a
//! whole operation has one deadline (not just the gaps between packets), and credentials go only to the
//! registry's own host. `oci-client` reads bodies whole, times only idle gaps and hands the user's basic
//! credentials to any token realm a registry names, so it is kept for pushing alone.
//!
//! Authentication follows the registry's challenge: `Basic` gets the configured user and password (the
//! registry's own host), `Bearer realm=...` gets a token from the realm, with the credentials only when the
//! realm is on the registry's host or listed in `token_realms` (Docker Hub's `auth.docker.io`); otherwise an
//! anonymous token is asked for, and a refusal names the option. Redirects (blob storage) drop the
//! `Authorization` header when they leave the host.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use reqwest::{Method, StatusCode, header};

use crate::media::MANIFEST_TYPES;
use crate::{Credentials, PluginRef, RegistryError, lock};

/// Cap of token responses and error bodies.
const MAX_SMALL_BODY: u64 = 64 << 10;
/// How much of an error body goes into an error message.
const ERROR_EXCERPT: usize = 300;

/// Settings of the pull client.
#[derive(Debug, Clone)]
pub(crate) struct DistributionConfig {
    pub credentials: Credentials,
    pub insecure_registries: Vec<String>,
    pub token_realms: Vec<String>,
    pub ca_certs: Vec<Vec<u8>>,
    /// Deadline of one whole operation (all its requests and bodies).
    pub timeout: Duration,
    pub max_manifest_bytes: u64,
}

pub(crate) struct Distribution {
    http: reqwest::Client,
    config: DistributionConfig,
    /// `Authorization` values that worked, per `registry/repository`.
    authorizations: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distribution")
            .field("credentials", &self.config.credentials)
            .field("token_realms", &self.config.token_realms)
            .finish_non_exhaustive()
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params: HashMap<String, String> = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, value.to_string());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// The host of `host[:port]` or of `[v6]:port`.
fn host_of(registry: &str) -> &str {
    if let Some(v6) = registry.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(ERROR_EXCERPT)
        .collect();
    text.trim().to_string()
}

/// A transport error's message with its causes, and what to do about a TLS handshake with a plain-HTTP
/// registry (shared with the push side, whose errors come from `oci-client`'s own HTTP client).
pub(crate) fn transport_message(e: &dyn std::error::Error) -> String {
    let mut message = source_chain(e);
    if message.contains("wrong version number") {
        message.push_str(" (the registry speaks plain HTTP: declare it insecure if that is intended)");
    }
    message
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

impl Distribution {
    pub fn new(config: DistributionConfig) -> Result<Self, RegistryError> {
        let mut certs = Vec::new();
        for pem in &config.ca_certs {
            certs.push(
                reqwest::Certificate::from_pem(pem).map_err(|e| RegistryError::InvalidCa {
                    path: "ca_file".into(),
                    message: e.to_string(),
                })?,
            );
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("millrace/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .read_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .tls_certs_merge(certs)
            .build()
            .map_err(|e| RegistryError::Protocol {
                registry: "*".into(),
                message: format!("building the HTTP client: {e}"),
            })?;
        Ok(Self {
            http,
            config,
            authorizations: Mutex::new(HashMap::new()),
        })
    }

    fn scheme(&self, registry: &str) -> &'static str {
        if self.config.insecure_registries.iter().any(|r| r == registry) {
            "http"
        } else {
            "https"
        }
    }

    fn url(&self, r: &PluginRef, tail: &str) -> String {
        format!(
            "{}://{}/v2/{}/{tail}",
            self.scheme(r.registry()),
            r.registry(),
            r.repository()
        )
    }

    /// Runs `op` under the whole-operation deadline.
    async fn deadline<T>(
        &self,
        r: &PluginRef,
        what: &str,
        op: impl std::future::Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(self.config.timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(RegistryError::Unreachable {
                registry: r.registry().into(),
                message: format!(
                    "{what} of {r} not complete within {} (registry.timeout bounds a whole transfer)",
                    humantime::format_duration(self.config.timeout)
                ),
            }),
        }
    }

    fn transport_error(&self, registry: &str, e: &reqwest::Error) -> RegistryError {
        RegistryError::Unreachable {
            registry: registry.into(),
            message: transport_message(e),
        }
    }

    async fn raw(
        &self,
        registry: &str,
        method: Method,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut req = self.http.request(method, url);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        req.send().await.map_err(|e| self.transport_error(registry, &e))
    }

    /// A request to the registry about `r`, authenticating when challenged.
    async fn send(
        &self,
        r: &PluginRef,
        method: Method,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let key = format!("{}/{}", r.registry(), r.repository());
        let known = lock(&self.authorizations).get(&key).cloned();
        let resp = self
            .raw(r.registry(), method.clone(), url, accept, known.as_deref())
            .await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        drop(resp);
        let authorization = self.authorize(r, challenge.as_deref()).await?;
        let resp = self
            .raw(r.registry(), method, url, accept, Some(&authorization))
            .await?;
        if resp.status().is_success() {
            lock(&self.authorizations).insert(key, authorization);
        }
        Ok(resp)
    }

    fn unauthorized(r: &PluginRef, message: String) -> RegistryError {
        RegistryError::Unauthorized {
            registry: r.registry().into(),
            reference: r.to_string(),
            message,
        }
    }

    /// Whether credentials for `registry` may be sent to the token service at `realm_host`.
    fn realm_trusted(&self, registry: &str, realm: &reqwest::Url) -> bool {
        let Some(realm_host) = realm.host_str() else {
            return false;
        };
        let realm_host = realm_host.trim_start_matches('[').trim_end_matches(']');
        let with_port = match realm.port() {
            Some(p) => format!("{realm_host}:{p}"),
            None => realm_host.to_string(),
        };
        realm_host.eq_ignore_ascii_case(host_of(registry))
            || self
                .config
                .token_realms
                .iter()
                .any(|t| t.eq_ignore_ascii_case(realm_host) || t.eq_ignore_ascii_case(&with_port))
    }

    /// The `Authorization` value answering `challenge`.
    async fn authorize(&self, r: &PluginRef, challenge: Option<&str>) -> Result<String, RegistryError> {
        let auth = self.config.credentials.for_registry(r.registry())?;
        let Some(challenge) = challenge.and_then(parse_challenge) else {
            return Err(Self::unauthorized(
                r,
                format!(
                    "401 without a challenge this client understands ({})",
                    challenge.unwrap_or("no WWW-Authenticate header")
                ),
            ));
        };
        let (realm, service, scope) = match (challenge, &auth) {
            (_, RegistryAuth::Bearer(token)) => return Ok(format!("Bearer {token}")),
            (Challenge::Basic, RegistryAuth::Basic(u, p)) => return Ok(basic(u, p)),
            (Challenge::Basic, RegistryAuth::Anonymous) => {
                return Err(Self::unauthorized(
                    r,
                    "the registry asks for credentials and none are configured for it".into(),
                ));
            }
            (
                Challenge::Bearer {
                    realm,
                    service,
                    scope,
                },
                _,
            ) => (realm, service, scope),
        };
        let realm_url = reqwest::Url::parse(&realm).map_err(|e| RegistryError::Protocol {
            registry: r.registry().into(),
            message: format!("token realm `{realm}` is not a URL: {e}"),
        })?;
        if realm_url.scheme() != "https" && self.scheme(r.registry()) == "https" {
            return Err(RegistryError::Protocol {
                registry: r.registry().into(),
                message: format!("token realm `{realm}` is not HTTPS while the registry is"),
            });
        }
        let trusted = self.realm_trusted(r.registry(), &realm_url);
        let withheld = matches!(auth, RegistryAuth::Basic(..)) && !trusted;
        if withheld {
            tracing::warn!(registry = r.registry(), realm = %realm_url,
                "the registry's token service is on another host; asking for an anonymous token \
                 (list the host in registry.token_realms to send it the credentials)");
        }
        let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", r.repository()));
        let mut req = self
            .http
            .get(realm_url.clone())
            .query(&[("scope", scope.as_str())]);
        if let Some(service) = &service {
            req = req.query(&[("service", service.as_str())]);
        }
        if let (RegistryAuth::Basic(u, p), true) = (&auth, trusted) {
            req = req.header(header::AUTHORIZATION, basic(u, p));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(r.registry(), &e))?;
        let status = resp.status();
        let body = read_capped(resp, MAX_SMALL_BODY, || format!("token response of {realm}"), r).await?;
        let hint = if withheld {
            format!(
                "; the credentials were not sent to the token service at {}, which is not the \
                 registry's host: list it in registry.token_realms to trust it",
                realm_url.host_str().unwrap_or("?")
            )
        } else {
            String::new()
        };
        if !status.is_success() {
            return Err(Self::unauthorized(
                r,
                format!(
                    "token service {realm} answered {status}: {}{hint}",
                    excerpt(&body)
                ),
            ));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            registry: r.registry().into(),
            message: format!("token response of {realm} is not JSON: {e}"),
        })?;
        let token = token
            .token
            .or(token.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                registry: r.registry().into(),
                message: format!("token response of {realm} holds no token"),
            })?;
        if token.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(RegistryError::Protocol {
                registry: r.registry().into(),
                message: format!("token response of {realm} holds a malformed token"),
            });
        }
        Ok(format!("Bearer {token}"))
    }

    /// The error an unsuccessful answer stands for (its body read with a cap).
    async fn status_error(&self, r: &PluginRef, what: &str, resp: reqwest::Response) -> RegistryError {
        let status = resp.status();
        let url = resp.url().clone();
        let body = read_capped(resp, MAX_SMALL_BODY, || format!("error body of {what}"), r)
            .await
            .unwrap_or_default();
        let detail = format!("{status} at {url}: {}", excerpt(&body));
        let code_says = |codes: &[&str]| {
            let text = String::from_utf8_lossy(&body);
            codes.iter().any(|c| text.contains(c))
        };
        match status.as_u16() {
            401 | 403 => Self::unauthorized(r, detail),
            404 => RegistryError::NotFound {
                reference: r.to_string(),
                message: detail,
            },
            _ if code_says(&["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"]) => {
                RegistryError::NotFound {
                    reference: r.to_string(),
                    message: detail,
                }
            }
            _ => RegistryError::Protocol {
                registry: r.registry().into(),
                message: detail,
            },
        }
    }

    /// The manifest digest a tag points to now (`HEAD`, or the digest of the body where a registry does not
    /// say it).
    pub async fn resolve(&self, r: &PluginRef) -> Result<String, RegistryError> {
        self.deadline(r, "resolving the tag", async {
            let tag = r.tag().unwrap_or("latest");
            let url = self.url(r, &format!("manifests/{tag}"));
            let accept = MANIFEST_TYPES.join(", ");
            let head = self.send(r, Method::HEAD, &url, Some(&accept)).await?;
            if head.status().is_success()
                && let Some(d) = head
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .filter(|d| is_sha256(d))
            {
                return Ok(d.to_string());
            }
            if head.status() == StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound {
                    reference: r.to_string(),
                    message: format!("404 at {url}"),
                });
            }
            let raw = self.get_manifest(r, &url).await?;
            Ok(crate::cache::sha256(&raw))
        })
        .await
    }

    async fn get_manifest(&self, r: &PluginRef, url: &str) -> Result<Vec<u8>, RegistryError> {
        let accept = MANIFEST_TYPES.join(", ");
        let resp = self.send(r, Method::GET, url, Some(&accept)).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(r, "manifest", resp).await);
        }
        read_capped(
            resp,
            self.config.max_manifest_bytes,
            || format!("manifest of {r}"),
            r,
        )
        .await
    }

    /// The raw manifest with digest `digest`, verified against it.
    pub async fn manifest(&self, r: &PluginRef, digest: &str) -> Result<Vec<u8>, RegistryError> {
        self.deadline(r, "pulling the manifest", async {
            let raw = self
                .get_manifest(r, &self.url(r, &format!("manifests/{digest}")))
                .await?;
            verified(raw, digest, || format!("manifest of {r}"))
        })
        .await
    }

    /// The raw manifest a tag names, or `None` when the repository has no such tag.
    pub async fn manifest_by_tag(&self, r: &PluginRef, tag: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        self.deadline(r, "pulling a manifest", async {
            match self
                .get_manifest(r, &self.url(r, &format!("manifests/{tag}")))
                .await
            {
                Ok(raw) => Ok(Some(raw)),
                Err(RegistryError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Whether the repository of `r` holds the manifest `digest` (the registry confirms a cache entry).
    pub async fn has_manifest(&self, r: &PluginRef, digest: &str) -> Result<bool, RegistryError> {
        self.deadline(r, "checking the manifest", async {
            let url = self.url(r, &format!("manifests/{digest}"));
            let accept = MANIFEST_TYPES.join(", ");
            let resp = self.send(r, Method::HEAD, &url, Some(&accept)).await?;
            match resp.status() {
                s if s.is_success() => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(self.status_error(r, "manifest", resp).await),
            }
        })
        .await
    }

    /// Blob `digest` of the repository of `r`, at most `limit` bytes, verified against its digest.
    pub async fn blob(&self, r: &PluginRef, digest: &str, limit: u64) -> Result<Vec<u8>, RegistryError> {
        self.deadline(r, "pulling a blob", async {
            let url = self.url(r, &format!("blobs/{digest}"));
            let resp = self.send(r, Method::GET, &url, None).await?;
            if !resp.status().is_success() {
                return Err(self.status_error(r, "blob", resp).await);
            }
            let bytes = read_capped(resp, limit, || format!("blob {digest} of {r}"), r).await?;
            verified(bytes, digest, || format!("blob {digest} of {r}"))
        })
        .await
    }

    /// Refuses to hand credentials to a registry whose token service is on an untrusted host (checked before
    /// a push, which goes through `oci-client`).
    pub async fn check_token_realm(&self, r: &PluginRef) -> Result<(), RegistryError> {
        if matches!(
            self.config.credentials.for_registry(r.registry())?,
            RegistryAuth::Anonymous | RegistryAuth::Bearer(_)
        ) {
            return Ok(());
        }
        self.deadline(r, "asking the registry how to authenticate", async {
            let url = format!("{}://{}/v2/", self.scheme(r.registry()), r.registry());
            let resp = self.raw(r.registry(), Method::GET, &url, None, None).await?;
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge);
            if let Some(Challenge::Bearer { realm, .. }) = challenge
                && let Ok(url) = reqwest::Url::parse(&realm)
                && !self.realm_trusted(r.registry(), &url)
            {
                return Err(Self::unauthorized(
                    r,
                    format!(
                        "the registry's token service {realm} is not on the registry's host; the \
                         credentials are not sent there unless it is listed in registry.token_realms"
                    ),
                ));
            }
            Ok(())
        })
        .await
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn is_sha256(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `bytes` if they hash to `digest`, else a `digest_mismatch` naming `what`.
fn verified(bytes: Vec<u8>, digest: &str, what: impl Fn() -> String) -> Result<Vec<u8>, RegistryError> {
    let actual = crate::cache::sha256(&bytes);
    if actual != digest {
        return Err(RegistryError::DigestMismatch {
            what: what(),
            expected: digest.into(),
            actual,
        });
    }
    Ok(bytes)
}

/// Reads a body, failing with `too_large` as soon as it passes `limit` (announced or streamed).
async fn read_capped(
    mut resp: reqwest::Response,
    limit: u64,
    what: impl Fn() -> String,
    r: &PluginRef,
) -> Result<Vec<u8>, RegistryError> {
    if let Some(len) = resp.content_length()
        && len > limit
    {
        return Err(RegistryError::TooLarge {
            what: what(),
            size: len,
            limit,
        });
    }
    let mut body = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|e| RegistryError::Unreachable {
            registry: r.registry().into(),
            message: format!("reading {}: {}", what(), source_chain(&e)),
        })?;
        let Some(chunk) = chunk else { break };
        let size = (body.len() + chunk.len()) as u64;
        if size > limit {
            return Err(RegistryError::TooLarge {
                what: format!("{} (stopped reading)", what()),
                size,
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_as_registries_send_them() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=https://r.example/token, service=r.example"),
            Some(Challenge::Bearer {
                realm: "https://r.example/token".into(),
                service: Some("r.example".into()),
                scope: None,
            })
        );
        assert_eq!(parse_challenge("Bearer service=\"x\""), None, "no realm");
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn hosts_are_compared_without_ports() {
        assert_eq!(host_of("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(host_of("ghcr.io"), "ghcr.io");
        assert_eq!(host_of("[::1]:5000"), "::1");
        let d = Distribution::new(DistributionConfig {
            credentials: Credentials::Anonymous,
            insecure_registries: vec![],
            token_realms: vec!["auth.docker.io".into()],
            ca_certs: vec![],
            timeout: Duration::from_secs(1),
            max_manifest_bytes: 1,
        })
        .unwrap();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(d.realm_trusted("ghcr.io", &url("https://ghcr.io/token")));
        assert!(d.realm_trusted("127.0.0.1:5000", &url("http://127.0.0.1:5001/token")));
        assert!(d.realm_trusted("registry-1.docker.io", &url("https://auth.docker.io/token")));
        assert!(!d.realm_trusted("registry.example", &url("https://evil.example/token")));
        assert!(!d.realm_trusted("127.0.0.1:5000", &url("http://localhost:5001/token")));
    }
}
