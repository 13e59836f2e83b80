//! Registry credentials: anonymous, basic, and Docker config JSON (`~/.docker/config.json`,
//! Kubernetes `kubernetes.io/dockerconfigjson` and legacy `.dockercfg` Secrets).

use base64::Engine as _;
use std::collections::BTreeMap;
use std::fmt;

/// The credentials a scan may use. They are sent only to the registry and its token
/// realm (see the scanner).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    DockerConfig(DockerConfig),
}

/// One registry's credential, resolved from [`Credentials`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum RegistryCredential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token realm.
    IdentityToken {
        username: String,
        token: String,
    },
    /// A ready bearer token (`registrytoken`).
    RegistryToken(String),
}

/// Where a credential for a registry comes from, without revealing it (for `--dry-run`
/// and logs).
impl RegistryCredential {
    pub fn describe(&self) -> String {
        match self {
            RegistryCredential::Basic { username, .. } => {
                format!("username and password for user {username:?}")
            }
            RegistryCredential::IdentityToken { .. } => "identity token".to_string(),
            RegistryCredential::RegistryToken(_) => "registry token".to_string(),
        }
    }
}

impl fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistryCredential({})", self.describe())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Credentials::DockerConfig(c) => write!(f, "{c:?}"),
        }
    }
}

impl Credentials {
    /// The credential for a registry (as in [`crate::reference::ImageRef::registry`]).
    pub fn for_registry(&self, registry: &str) -> Option<RegistryCredential> {
        match self {
            Credentials::Anonymous => None,
            Credentials::Basic { username, password } => Some(RegistryCredential::Basic {
                username: username.clone(),
                password: password.clone(),
            }),
            Credentials::DockerConfig(c) => c.lookup(registry).cloned(),
        }
    }

    /// Credentials from a Kubernetes Secret's data: `.dockerconfigjson` or `.dockercfg`
    /// (Docker config), or `username` and `password` (basic).
    pub fn from_secret_data(
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Credentials, CredentialsError> {
        if let Some(json) = data
            .get(".dockerconfigjson")
            .or_else(|| data.get(".dockercfg"))
        {
            return Ok(Credentials::DockerConfig(DockerConfig::from_json(json)?));
        }
        match (data.get("username"), data.get("password")) {
            (Some(u), Some(p)) => Ok(Credentials::Basic {
                username: utf8(u, "username")?,
                password: utf8(p, "password")?,
            }),
            _ => Err(CredentialsError::NoCredentialKeys {
                keys: data.keys().cloned().collect(),
            }),
        }
    }
}

fn utf8(b: &[u8], key: &str) -> Result<String, CredentialsError> {
    String::from_utf8(b.to_vec()).map_err(|_| CredentialsError::NotUtf8 {
        key: key.to_string(),
    })
}

/// Why credentials could not be read. Messages never include the secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("the Docker config is not valid JSON: {0}")]
    InvalidJson(String),
    #[error(
        "the Docker config has neither an \"auths\" object nor legacy per-registry entries; expected {{\"auths\": {{\"HOST\": {{\"auth\": \"BASE64(user:password)\"}}}}}}"
    )]
    NoAuths,
    #[error(
        "the Docker config entry for {host:?} has an \"auth\" that is not base64 of \"user:password\""
    )]
    BadAuthField { host: String },
    #[error(
        "the Docker config entry for {host:?} has no credential: give \"auth\", \"username\" and \"password\", or \"identitytoken\""
    )]
    EmptyEntry { host: String },
    #[error("the secret value {key:?} is not UTF-8")]
    NotUtf8 { key: String },
    #[error(
        "the secret has none of the keys \".dockerconfigjson\", \".dockercfg\", or \"username\" and \"password\" (it has {keys:?})"
    )]
    NoCredentialKeys { keys: Vec<String> },
}

/// A parsed Docker config: credentials per registry host, keys normalised to
/// `host[:port]` (Docker Hub's many spellings to `docker.io`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DockerConfig {
    auths: BTreeMap<String, RegistryCredential>,
}

impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("hosts", &self.auths.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

impl DockerConfig {
    /// Parses `config.json` (`{"auths": {...}}`) or the legacy `.dockercfg` shape (the
    /// per-registry entries at top level).
    pub fn from_json(bytes: &[u8]) -> Result<DockerConfig, CredentialsError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| CredentialsError::InvalidJson(e.to_string()))?;
        let obj = value.as_object().ok_or(CredentialsError::NoAuths)?;
        let entries = match obj.get("auths") {
            Some(serde_json::Value::Object(a)) => a.clone(),
            Some(_) => return Err(CredentialsError::NoAuths),
            None => {
                // Legacy .dockercfg: HOST -> {auth, email}. Other config.json keys
                // (credsStore, HttpHeaders, ...) are not objects with credentials.
                let legacy: serde_json::Map<_, _> = obj
                    .iter()
                    .filter(|(_, v)| {
                        v.as_object().is_some_and(|o| {
                            o.contains_key("auth")
                                || o.contains_key("username")
                                || o.contains_key("identitytoken")
                        })
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if legacy.is_empty() && !obj.is_empty() && !obj.contains_key("credsStore") {
                    return Err(CredentialsError::NoAuths);
                }
                legacy
            }
        };
        let mut auths = BTreeMap::new();
        for (key, v) in entries {
            let entry: AuthEntry = serde_json::from_value(v).unwrap_or_default();
            let host = normalise_host(&key);
            let cred = entry_credential(&key, entry)?;
            if let Some(cred) = cred {
                auths.insert(host, cred);
            }
        }
        Ok(DockerConfig { auths })
    }

    /// The credential for a registry host (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub fn lookup(&self, registry: &str) -> Option<&RegistryCredential> {
        self.auths.get(&normalise_host(registry))
    }

    /// The hosts that have credentials.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.auths.keys().map(String::as_str)
    }
}

fn entry_credential(
    key: &str,
    e: AuthEntry,
) -> Result<Option<RegistryCredential>, CredentialsError> {
    let (mut username, mut password) = (
        e.username.unwrap_or_default(),
        e.password.unwrap_or_default(),
    );
    if let Some(auth) = e.auth.filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| CredentialsError::BadAuthField {
                host: key.to_string(),
            })?;
        let (u, p) = decoded
            .split_once(':')
            .ok_or_else(|| CredentialsError::BadAuthField {
                host: key.to_string(),
            })?;
        username = u.to_string();
        password = p.to_string();
    }
    if let Some(token) = e.identitytoken.filter(|t| !t.is_empty()) {
        return Ok(Some(RegistryCredential::IdentityToken { username, token }));
    }
    if let Some(token) = e.registrytoken.filter(|t| !t.is_empty()) {
        return Ok(Some(RegistryCredential::RegistryToken(token)));
    }
    if username.is_empty() && password.is_empty() {
        return Err(CredentialsError::EmptyEntry {
            host: key.to_string(),
        });
    }
    Ok(Some(RegistryCredential::Basic { username, password }))
}

/// `https://index.docker.io/v1/` -> `docker.io`; `http://host:5000/x` -> `host:5000`.
fn normalise_host(key: &str) -> String {
    let k = key.trim();
    let k = k.split_once("://").map(|(_, rest)| rest).unwrap_or(k);
    let k = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match k.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | "docker.io" => {
            "docker.io".to_string()
        }
        _ => k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn basic(u: &str, p: &str) -> RegistryCredential {
        RegistryCredential::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn reads_auth_fields_as_base64_user_and_password() {
        let json = format!(
            r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}}}}}}"#,
            b64("bot:s3:cret")
        );
        let c = DockerConfig::from_json(json.as_bytes()).unwrap();
        assert_eq!(c.lookup("ghcr.io"), Some(&basic("bot", "s3:cret")));
        assert_eq!(c.lookup("quay.io"), None);
    }

    #[test]
    fn reads_username_and_password_fields() {
        let json = r#"{"auths":{"localhost:5000":{"username":"u","password":"p"}}}"#;
        let c = DockerConfig::from_json(json.as_bytes()).unwrap();
        assert_eq!(c.lookup("localhost:5000"), Some(&basic("u", "p")));
    }

    #[test]
    fn reads_identity_tokens() {
        let json = r#"{"auths":{"myregistry.azurecr.io":{"auth":"MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwOg==","identitytoken":"refresh"}}}"#;
        let c = DockerConfig::from_json(json.as_bytes()).unwrap();
        assert!(matches!(
            c.lookup("myregistry.azurecr.io"),
            Some(RegistryCredential::IdentityToken { token, .. }) if token == "refresh"
        ));
    }

    #[test]
    fn host_keys_may_have_a_scheme_and_path_and_docker_hub_has_many_names() {
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"http://LOCALHOST:5000/v2/":{{"auth":"{}"}}}}}}"#,
            b64("hub:pw"),
            b64("local:pw")
        );
        let c = DockerConfig::from_json(json.as_bytes()).unwrap();
        assert_eq!(c.lookup("docker.io"), Some(&basic("hub", "pw")));
        assert_eq!(c.lookup("registry-1.docker.io"), Some(&basic("hub", "pw")));
        assert_eq!(c.lookup("localhost:5000"), Some(&basic("local", "pw")));
    }

    #[test]
    fn reads_the_legacy_dockercfg_shape() {
        let json = format!(
            r#"{{"quay.io":{{"auth":"{}","email":"x@example.com"}}}}"#,
            b64("q:pw")
        );
        let c = DockerConfig::from_json(json.as_bytes()).unwrap();
        assert_eq!(c.lookup("quay.io"), Some(&basic("q", "pw")));
    }

    #[test]
    fn refuses_broken_configs_without_echoing_secrets() {
        assert!(matches!(
            DockerConfig::from_json(b"not json"),
            Err(CredentialsError::InvalidJson(_))
        ));
        let e = DockerConfig::from_json(br#"{"auths":{"ghcr.io":{"auth":"!!!secret!!!"}}}"#)
            .unwrap_err();
        assert!(matches!(e, CredentialsError::BadAuthField { .. }));
        assert!(!e.to_string().contains("secret!!!"));
        let e = DockerConfig::from_json(br#"{"auths":{"ghcr.io":{}}}"#).unwrap_err();
        assert!(matches!(e, CredentialsError::EmptyEntry { .. }));
        assert!(matches!(
            DockerConfig::from_json(br#"{"foo": 1}"#),
            Err(CredentialsError::NoAuths)
        ));
    }

    #[test]
    fn debug_output_never_shows_passwords() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let json = format!(
            r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}}}}}}"#,
            b64("bot:hunter2")
        );
        let c = Credentials::DockerConfig(DockerConfig::from_json(json.as_bytes()).unwrap());
        assert!(!format!("{c:?} {:?}", c.for_registry("ghcr.io")).contains("hunter2"));
    }

    #[test]
    fn secret_data_gives_docker_config_or_basic_credentials() {
        let mut data = BTreeMap::new();
        data.insert("username".to_string(), b"u".to_vec());
        data.insert("password".to_string(), b"p".to_vec());
        assert_eq!(
            Credentials::from_secret_data(&data)
                .unwrap()
                .for_registry("any"),
            Some(basic("u", "p"))
        );
        let mut data = BTreeMap::new();
        data.insert(
            ".dockerconfigjson".to_string(),
            br#"{"auths":{"ghcr.io":{"username":"a","password":"b"}}}"#.to_vec(),
        );
        let c = Credentials::from_secret_data(&data).unwrap();
        assert_eq!(c.for_registry("ghcr.io"), Some(basic("a", "b")));
        assert!(Credentials::from_secret_data(&BTreeMap::new()).is_err());
    }
}
