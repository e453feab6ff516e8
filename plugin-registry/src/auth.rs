//! Registry credentials: anonymous, basic, a bearer token, or a Docker `config.json` (the form Kubernetes
//! mounts for imagePullSecrets). With basic credentials the OCI token flow (`WWW-Authenticate: Bearer`) is
//! followed by the client. A config file is read at each pull, so a rotated secret is picked up.

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::RegistryError;

/// How to authenticate to registries.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    Bearer {
        token: String,
    },
    /// A Docker `config.json` / `.dockerconfigjson`: credentials per registry host; hosts without an entry
    /// are accessed anonymously.
    DockerConfig {
        path: PathBuf,
    },
}

/// Credentials given in a way that cannot be used: half of a user name and password, or two kinds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("a user name needs a password")]
    UsernameWithoutPassword,
    #[error("a password needs a user name")]
    PasswordWithoutUsername,
    #[error("give a user name and password or a Docker config, not both")]
    BasicAndDockerConfig,
}

impl Credentials {
    /// The one reading of the ways credentials are given, shared by the worker's configuration and the
    /// command line: a user name with its password (basic, following the registry's token flow), a Docker
    /// `config.json`, or none of them (anonymous).
    pub fn from_parts(
        username: Option<String>,
        password: Option<String>,
        docker_config: Option<PathBuf>,
    ) -> Result<Self, CredentialsError> {
        match (username, password, docker_config) {
            (Some(username), Some(password), None) => Ok(Self::Basic { username, password }),
            (None, None, Some(path)) => Ok(Self::DockerConfig { path }),
            (None, None, None) => Ok(Self::Anonymous),
            (Some(_), Some(_), Some(_)) | (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
                Err(CredentialsError::BasicAndDockerConfig)
            }
            (Some(_), None, None) => Err(CredentialsError::UsernameWithoutPassword),
            (None, Some(_), None) => Err(CredentialsError::PasswordWithoutUsername),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::Bearer { .. } => f.write_str("Bearer(<redacted>)"),
            Self::DockerConfig { path } => write!(f, "DockerConfig({})", path.display()),
        }
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    registrytoken: Option<String>,
    identitytoken: Option<String>,
}

/// `https://host:port/v1/` -> `host:port`.
fn normalize_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

impl Credentials {
    /// The authentication to use against `registry` (`host[:port]`).
    pub(crate) fn for_registry(&self, registry: &str) -> Result<RegistryAuth, RegistryError> {
        match self {
            Self::Anonymous => Ok(RegistryAuth::Anonymous),
            Self::Basic { username, password } => Ok(RegistryAuth::Basic(username.clone(), password.clone())),
            Self::Bearer { token } => Ok(RegistryAuth::Bearer(token.clone())),
            Self::DockerConfig { path } => {
                let bad = |message: String| RegistryError::Credentials {
                    source_name: path.display().to_string(),
                    message,
                };
                let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
                let config: DockerConfig =
                    serde_json::from_str(&text).map_err(|e| bad(format!("not a Docker config.json: {e}")))?;
                let docker_hub = matches!(registry, "docker.io" | "index.docker.io" | "registry-1.docker.io");
                let entry = config.auths.iter().find(|(k, _)| {
                    let h = normalize_host(k);
                    h == registry || (docker_hub && matches!(h, "docker.io" | "index.docker.io"))
                });
                let Some((_, a)) = entry else {
                    return Ok(RegistryAuth::Anonymous);
                };
                if let Some(token) = &a.registrytoken {
                    return Ok(RegistryAuth::Bearer(token.clone()));
                }
                if let (Some(u), Some(p)) = (&a.username, &a.password) {
                    return Ok(RegistryAuth::Basic(u.clone(), p.clone()));
                }
                if let Some(auth) = &a.auth {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|e| bad(format!("`auth` of {registry} is not base64: {e}")))?;
                    let decoded = String::from_utf8(decoded)
                        .map_err(|_| bad(format!("`auth` of {registry} is not UTF-8")))?;
                    let (u, p) = decoded
                        .split_once(':')
                        .ok_or_else(|| bad(format!("`auth` of {registry} is not user:password")))?;
                    return Ok(RegistryAuth::Basic(u.to_string(), p.to_string()));
                }
                if a.identitytoken.is_some() {
                    return Err(bad(format!(
                        "the entry of {registry} holds an identity token (OAuth refresh token), which is not \
                         supported; use a username and password or a registry token"
                    )));
                }
                Err(bad(format!("the entry of {registry} has no credentials")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_config(json: &str, registry: &str) -> Result<RegistryAuth, RegistryError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        Credentials::DockerConfig { path }.for_registry(registry)
    }

    #[test]
    fn docker_config_forms() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let json = format!(
            r#"{{"auths":{{"https://reg.example:5000/v1/":{{"auth":"{b64}"}},"other.example":{{"username":"bob","password":"pw"}},"tok.example":{{"registrytoken":"T"}}}}}}"#
        );
        assert!(
            matches!(with_config(&json, "reg.example:5000").unwrap(), RegistryAuth::Basic(u, p) if u == "alice" && p == "s3cret")
        );
        assert!(
            matches!(with_config(&json, "other.example").unwrap(), RegistryAuth::Basic(u, _) if u == "bob")
        );
        assert!(matches!(with_config(&json, "tok.example").unwrap(), RegistryAuth::Bearer(t) if t == "T"));
        assert!(matches!(
            with_config(&json, "unknown.example").unwrap(),
            RegistryAuth::Anonymous
        ));
        assert_eq!(with_config("{nope", "x").unwrap_err().kind(), "credentials");
        assert_eq!(
            with_config(r#"{"auths":{"x":{"auth":"%%%"}}}"#, "x")
                .unwrap_err()
                .kind(),
            "credentials"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn credentials_are_one_of_three_ways() {
        let some = |s: &str| Some(s.to_string());
        assert!(matches!(
            Credentials::from_parts(some("u"), some("p"), None),
            Ok(Credentials::Basic { .. })
        ));
        assert!(matches!(
            Credentials::from_parts(None, None, Some("c.json".into())),
            Ok(Credentials::DockerConfig { .. })
        ));
        assert!(matches!(
            Credentials::from_parts(None, None, None),
            Ok(Credentials::Anonymous)
        ));
        assert_eq!(
            Credentials::from_parts(some("u"), None, None).unwrap_err(),
            CredentialsError::UsernameWithoutPassword
        );
        assert_eq!(
            Credentials::from_parts(None, some("p"), None).unwrap_err(),
            CredentialsError::PasswordWithoutUsername
        );
        assert_eq!(
            Credentials::from_parts(some("u"), some("p"), Some("c.json".into())).unwrap_err(),
            CredentialsError::BasicAndDockerConfig
        );
    }
}
