//! The registry auth challenge (`WWW-Authenticate`) and the Bearer token cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

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

/// The distribution spec's token lifetime when the service does not say.
pub(crate) const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// The token service's answer.
#[derive(serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub(crate) fn into_token(self) -> Option<(String, Duration)> {
        let token = self.token.filter(|t| !t.is_empty()).or(self.access_token)?;
        let lifetime = self.expires_in.map_or(DEFAULT_TOKEN_LIFETIME, |secs| {
            Duration::from_secs(secs.max(1))
        });
        Some((token, lifetime))
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
    fn tokens_default_to_sixty_seconds_and_accept_access_token() {
        let r: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(r.into_token(), Some(("a".into(), Duration::from_secs(60))));
        let r: TokenResponse = serde_json::from_str(r#"{"token":"t","expires_in":300}"#).unwrap();
        assert_eq!(r.into_token(), Some(("t".into(), Duration::from_secs(300))));
        let r: TokenResponse = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(r.into_token(), None);
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
