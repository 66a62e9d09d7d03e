//! Registry credentials from Docker's `config.json` (`auths`: base64 `auth`, or
//! `username`/`password`), keyed by registry host as docker writes them.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::Credentials;
use crate::reference::RegistryHost;

/// Why a docker config cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("docker config {path}: {detail}")]
pub struct DockerConfigError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub detail: String,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// A login docker's config.json holds for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerLogin {
    /// A user name and password (`auth` or `username`/`password`).
    Basic(Credentials),
    /// An `identitytoken`: an OAuth2 refresh token exchanged at the token realm.
    IdentityToken(String),
}

/// Logins by registry host.
#[derive(Debug, Default, Clone)]
pub struct DockerConfig {
    logins: BTreeMap<RegistryHost, DockerLogin>,
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://host:5000` → `host:5000`.
fn host_of(key: &str) -> Option<RegistryHost> {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next()?.parse().ok()
}

impl DockerConfig {
    /// Reads `dir/config.json`; a missing file is an empty config.
    pub fn load(dir: &Path) -> Result<Self, DockerConfigError> {
        let path = dir.join("config.json");
        let error = |detail: String| DockerConfigError {
            path: path.display().to_string(),
            detail,
        };
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(error(e.to_string())),
        };
        let file: File =
            serde_json::from_slice(&text).map_err(|e| error(format!("not valid JSON: {e}")))?;
        if let Some(store) = file.creds_store {
            tracing::warn!(
                "docker config: credsStore {store:?} is not supported; only `auths` entries are used"
            );
        }
        let mut logins = BTreeMap::new();
        for (key, entry) in file.auths {
            let Some(host) = host_of(&key) else { continue };
            let credentials = match (
                entry.auth,
                entry.username,
                entry.password,
                entry.identitytoken,
            ) {
                (Some(auth), ..) if !auth.is_empty() => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .ok()
                        .and_then(|d| String::from_utf8(d).ok())
                        .ok_or_else(|| {
                            error(format!("auths.{key}.auth is not base64 of user:password"))
                        })?;
                    let (user, password) = decoded.split_once(':').ok_or_else(|| {
                        error(format!("auths.{key}.auth is not base64 of user:password"))
                    })?;
                    DockerLogin::Basic(Credentials {
                        username: user.into(),
                        password: password.into(),
                    })
                }
                (_, Some(username), Some(password), _) => {
                    DockerLogin::Basic(Credentials { username, password })
                }
                (_, _, _, Some(token)) if !token.is_empty() => DockerLogin::IdentityToken(token),
                _ => continue,
            };
            logins.insert(host, credentials);
        }
        Ok(DockerConfig { logins })
    }

    /// Every password and token, for masking.
    pub fn passwords(&self) -> impl Iterator<Item = String> + '_ {
        self.logins.values().map(|login| match login {
            DockerLogin::Basic(c) => c.password.clone(),
            DockerLogin::IdentityToken(token) => token.clone(),
        })
    }

    /// The login for `host`, if any.
    pub fn get(&self, host: &RegistryHost) -> Option<&DockerLogin> {
        self.logins.get(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auths_by_host_in_every_form_docker_writes() {
        let dir = tempfile::tempdir().unwrap();
        let config = r#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "localhost:5000": {"username": "a", "password": "b"},
            "https://quay.io": {"auth": "cTpy"},
            "ghcr.io": {"identitytoken": "x"}
        }, "credsStore": "desktop"}"#;
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let c = DockerConfig::load(dir.path()).unwrap();
        let get = |h: &str| match c.get(&h.parse().unwrap()) {
            Some(DockerLogin::Basic(c)) => Some((c.username.clone(), c.password.clone())),
            Some(DockerLogin::IdentityToken(t)) => Some(("<identity token>".into(), t.clone())),
            _ => None,
        };
        assert_eq!(get("docker.io"), Some(("user".into(), "pa:ss".into())));
        assert_eq!(get("localhost:5000"), Some(("a".into(), "b".into())));
        assert_eq!(get("quay.io"), Some(("q".into(), "r".into())));
        assert_eq!(
            get("ghcr.io"),
            Some(("<identity token>".into(), "x".into()))
        );
        assert!(
            DockerConfig::load(&dir.path().join("missing"))
                .unwrap()
                .get(&"docker.io".parse().unwrap())
                .is_none()
        );
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths": {"x.io": {"auth": "!!"}}}"#,
        )
        .unwrap();
        assert!(
            DockerConfig::load(dir.path())
                .unwrap_err()
                .to_string()
                .contains("auths.x.io.auth")
        );
    }
}
