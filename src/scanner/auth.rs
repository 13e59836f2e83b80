//! What a request to the registry carries as `Authorization`, and with which credential.
//!
//! - [`Scanner::registry_credential`] is the one place a scan's credential for its
//!   registry host is obtained.
//! - The registry's challenge (`WWW-Authenticate` on `/v2/`) picks the scheme: none,
//!   Basic (the credential as it is), or Bearer: a token for the repository's pull scope,
//!   from the cache or fetched by one of the two exchanges in `token.rs`.
//! - Tokens are cached per realm, service, scope and a hash of the credential, until
//!   shortly before they expire, so repositories with different credentials on one
//!   registry never share one.

use super::endpoint::RegistryEndpoint;
use super::oci_token::{self, TokenFlow};
use super::{RegistryCredential, ScanContext, ScanError, ScanErrorKind, ScanRequest, Scanner};
use base64::Engine as _;
use reqwest::header::HeaderValue;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

impl Scanner {
    /// The credential a scan sends to its registry and token realm: the one place a
    /// credential for a registry host is obtained. Without a cloud login it comes from
    /// the request's [`Credentials`](super::Credentials) (a Secret's Docker config or
    /// username and password, or the command line's flags). With one (`spec.provider`,
    /// an autologin flag, `scan --provider`), it is the cloud's registry credential for
    /// the host (`cloud/`): obtained within the scan's timeout, with requests of its own
    /// (through the scan's proxy; the registry's own exchange also with its CA), cached
    /// per identity and registry, and a failure is an authentication failure naming the
    /// cloud and the step. What it returns flows into the token exchange and the token
    /// cache unchanged (the cache keys on a hash of the credential, so a renewed cloud
    /// token gets Bearer tokens of its own).
    pub(super) async fn registry_credential(
        &self,
        req: &ScanRequest,
        client: &reqwest::Client,
    ) -> Result<Option<RegistryCredential>, ScanError> {
        let Some(login) = &req.cloud else {
            return Ok(req.credentials.for_registry(req.image.registry()));
        };
        let cloud_client = self.inner.clients.cloud(&self.inner.config, req)?;
        let scheme = if req.insecure { "http" } else { "https" };
        let base =
            url::Url::parse(&format!("{scheme}://{}/", req.image.api_host())).map_err(|e| {
                super::scan_error(
                    req,
                    ScanErrorKind::InvalidConfig,
                    format!("cannot form the registry URL: {e}"),
                )
            })?;
        let clients = super::cloud::LoginClients {
            cloud: &cloud_client,
            registry: client,
            registry_base: &base,
        };
        // Boxed: the login's future is large, and scans are awaited deep in callers.
        let login = Box::pin(self.inner.cloud.registry_credential(
            login,
            req.image.registry(),
            clients,
        ));
        match login.await {
            Ok((username, password)) => Ok(Some(RegistryCredential::Basic { username, password })),
            Err(e) => Err(super::scan_error(
                req,
                ScanErrorKind::AuthenticationFailed,
                e.to_string(),
            )),
        }
    }

    /// The `Authorization` value for requests to the registry, fetching a Bearer token
    /// when needed.
    pub(super) async fn authorization(
        &self,
        ctx: &ScanContext<'_>,
        endpoint: &RegistryEndpoint,
        scope: &str,
    ) -> Result<Option<HeaderValue>, ScanError> {
        match &endpoint.challenge {
            Challenge::None => Ok(None),
            Challenge::Basic => match &ctx.credential {
                Some(RegistryCredential::Basic { username, password }) => {
                    Ok(Some(basic_header(username, password)))
                }
                Some(RegistryCredential::RegistryToken(t)) => Ok(Some(bearer_header(t))),
                Some(RegistryCredential::IdentityToken { .. }) => Err(ctx.err(
                    ScanErrorKind::AuthenticationFailed,
                    "the registry asks for Basic authentication but the credential is an identity token",
                )),
                None => Ok(None),
            },
            Challenge::Bearer { realm, service } => {
                if let Some(RegistryCredential::RegistryToken(t)) = &ctx.credential {
                    return Ok(Some(bearer_header(t)));
                }
                let key = TokenKey::new(ctx, realm, service.as_deref(), scope);
                if let Some(t) = self.inner.tokens.get(&key) {
                    return Ok(Some(bearer_header(&t)));
                }
                let (token, lifetime) =
                    match oci_token::token_flow(ctx.credential.as_ref(), &ctx.req.tls) {
                        TokenFlow::OciClient(auth) => {
                            self.fetch_token_with_oci_client(ctx, endpoint, realm, auth)
                                .await?
                        }
                        TokenFlow::HandWritten(because) => {
                            tracing::debug!(registry = %ctx.req.image.api_host(), ?because, "fetching the token with the hand-written flow");
                            self.fetch_token(ctx, endpoint, realm, service.as_deref(), scope)
                                .await?
                        }
                    };
                let header = bearer_header(&token);
                self.inner.tokens.insert(key, token, lifetime);
                Ok(Some(header))
            }
        }
    }

    /// Drops the cached token of this scope, which the registry no longer accepts.
    pub(super) fn forget_token(
        &self,
        ctx: &ScanContext<'_>,
        endpoint: &RegistryEndpoint,
        scope: &str,
    ) {
        if let Challenge::Bearer { realm, service } = &endpoint.challenge {
            let key = TokenKey::new(ctx, realm, service.as_deref(), scope);
            self.inner.tokens.remove(&key);
        }
    }
}

pub(super) fn basic_header(username: &str, password: &str) -> HeaderValue {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    v.set_sensitive(true);
    v
}

pub(super) fn bearer_header(token: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    v.set_sensitive(true);
    v
}

/// A hash of the credential: part of token keys, never the credential itself.
pub(super) fn credential_fingerprint(c: Option<&RegistryCredential>) -> [u8; 32] {
    let mut h = Sha256::new();
    match c {
        None => h.update(b"anonymous"),
        Some(RegistryCredential::Basic { username, password }) => {
            h.update(b"basic\0");
            h.update(username.as_bytes());
            h.update(b"\0");
            h.update(password.as_bytes());
        }
        Some(RegistryCredential::IdentityToken { username, token }) => {
            h.update(b"identity\0");
            h.update(username.as_bytes());
            h.update(b"\0");
            h.update(token.as_bytes());
        }
        Some(RegistryCredential::RegistryToken(t)) => {
            h.update(b"token\0");
            h.update(t.as_bytes());
        }
    }
    h.finalize().into()
}

/// What the registry's `/v2/` answered about authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// No authentication asked for.
    None,
    /// HTTP Basic.
    Basic,
    /// The distribution token flow.
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value; Bearer wins over Basic when both are offered.
pub(crate) fn parse_challenge(value: &str) -> Option<Challenge> {
    let mut basic = false;
    for challenge in http_auth::ChallengeParser::new(value).flatten() {
        if challenge.scheme.eq_ignore_ascii_case("bearer") {
            let mut realm = None;
            let mut service = None;
            for (k, v) in &challenge.params {
                if k.eq_ignore_ascii_case("realm") {
                    realm = Some(v.to_unescaped());
                } else if k.eq_ignore_ascii_case("service") {
                    service = Some(v.to_unescaped());
                }
            }
            if let Some(realm) = realm.filter(|r| !r.is_empty()) {
                return Some(Challenge::Bearer { realm, service });
            }
        } else if challenge.scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    // A bare "Basic" without parameters does not parse as a challenge with params.
    if basic || value.trim().eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else {
        None
    }
}

/// The longest a token is cached, whatever its service says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct TokenKey {
    pub realm: String,
    pub service: String,
    pub scope: String,
    /// A hash of the credential used, so repositories with different credentials on one
    /// registry never share a token.
    pub credential: [u8; 32],
}

impl TokenKey {
    fn new(ctx: &ScanContext<'_>, realm: &str, service: Option<&str>, scope: &str) -> TokenKey {
        TokenKey {
            realm: realm.to_string(),
            service: service.unwrap_or_default().to_string(),
            scope: scope.to_string(),
            credential: ctx.credential_hash,
        }
    }
}

/// Bearer tokens per realm, service, scope and credential, until shortly before they
/// expire.
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

impl TokenCache {
    pub(crate) fn get(&self, key: &TokenKey) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }

    pub(crate) fn insert(&self, key: TokenKey, token: String, lifetime: Duration) {
        if lifetime.is_zero() {
            return;
        }
        // A day at most, whatever the service claims (and no Instant overflow).
        let lifetime = lifetime.min(MAX_TOKEN_LIFETIME);
        // Renew a little early: a tenth of the lifetime, at most 30 seconds.
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        let until = Instant::now() + lifetime - margin;
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if tokens.len() > 10_000 {
            tokens.retain(|_, (_, u)| *u > now);
        }
        tokens.insert(key, (token, until));
    }

    pub(crate) fn remove(&self, key: &TokenKey) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_bearer_challenge_with_realm_and_service() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
    }

    #[test]
    fn parses_basic_challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Basic"), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn credentials_with_different_secrets_get_different_token_keys() {
        let a = RegistryCredential::Basic {
            username: "u".into(),
            password: "a".into(),
        };
        let b = RegistryCredential::Basic {
            username: "u".into(),
            password: "b".into(),
        };
        assert_ne!(
            credential_fingerprint(Some(&a)),
            credential_fingerprint(Some(&b))
        );
        assert_ne!(
            credential_fingerprint(Some(&a)),
            credential_fingerprint(None)
        );
    }

    fn a_key() -> TokenKey {
        TokenKey {
            realm: "r".into(),
            service: "s".into(),
            scope: "repository:a:pull".into(),
            credential: [0; 32],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cached_tokens_expire_before_their_lifetime_ends() {
        let cache = TokenCache::default();
        let key = a_key();
        cache.insert(key.clone(), "tok".into(), Duration::from_secs(100));
        assert_eq!(cache.get(&key).as_deref(), Some("tok"));
        tokio::time::advance(Duration::from_secs(89)).await;
        assert_eq!(cache.get(&key).as_deref(), Some("tok"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.get(&key), None);
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_lifetimes_are_capped_and_expired_tokens_not_kept() {
        let cache = TokenCache::default();
        let key = a_key();
        cache.insert(key.clone(), "gone".into(), Duration::ZERO);
        assert_eq!(cache.get(&key), None);
        cache.insert(key.clone(), "tok".into(), Duration::from_secs(u64::MAX));
        assert_eq!(cache.get(&key).as_deref(), Some("tok"));
        tokio::time::advance(MAX_TOKEN_LIFETIME).await;
        assert_eq!(cache.get(&key), None);
    }
}
