//! The pure pieces around `oci_client::Client::auth`, which runs the Bearer token
//! exchange: which credentials and transports it can serve (the rest stay on the
//! hand-written flow), how long the token it returns lives, and what its refusals mean
//! and say without a secret in them. The exchange itself is in `token.rs`, its client in
//! `client.rs`.

use super::credentials::RegistryCredential;
use super::token::DEFAULT_TOKEN_LIFETIME;
use super::transport::TlsMaterial;
use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use std::time::Duration;

/// The longest a reason from a token service is quoted in an error.
const MAX_REASON_CHARS: usize = 200;

/// Who fetches the Bearer token for a scan.
#[derive(Debug, PartialEq)]
pub(crate) enum TokenFlow {
    /// `oci_client::Client::auth` with this credential.
    OciClient(RegistryAuth),
    /// The hand-written flow (`Scanner::fetch_token`), for what oci-client 0.18 cannot do.
    HandWritten(HandWrittenBecause),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandWrittenBecause {
    /// `ClientConfig` has no client identity: oci-client cannot reach an mTLS registry.
    MutualTls,
    /// An `identitytoken` is an OAuth2 refresh token, POSTed to the realm;
    /// `RegistryAuth` has no such grant.
    IdentityToken,
}

/// Routes a scan's token fetch: oci-client for anonymous, Basic and ready-made registry
/// tokens over a transport without a client certificate; the hand-written flow for the
/// two cases oci-client 0.18 cannot serve.
pub(crate) fn token_flow(credential: Option<&RegistryCredential>, tls: &TlsMaterial) -> TokenFlow {
    if tls.client_cert_pem.is_some() {
        return TokenFlow::HandWritten(HandWrittenBecause::MutualTls);
    }
    match credential {
        None => TokenFlow::OciClient(RegistryAuth::Anonymous),
        Some(RegistryCredential::Basic { username, password }) => {
            TokenFlow::OciClient(RegistryAuth::Basic(username.clone(), password.clone()))
        }
        Some(RegistryCredential::RegistryToken(t)) => {
            TokenFlow::OciClient(RegistryAuth::Bearer(t.clone()))
        }
        Some(RegistryCredential::IdentityToken { .. }) => {
            TokenFlow::HandWritten(HandWrittenBecause::IdentityToken)
        }
    }
}

/// How long a token returned by oci-client may be used: until its JWT `exp` claim (read,
/// not verified) when it is a JWT with one, else the spec's 60 seconds. `now` is Unix
/// seconds.
pub(crate) fn token_lifetime(token: &str, now: i64) -> Duration {
    match jwt_expiry(token) {
        Some(exp) => Duration::from_secs(exp.saturating_sub(now).max(0) as u64),
        None => DEFAULT_TOKEN_LIFETIME,
    }
}

/// The `exp` claim of a compact JWS (`header.payload.signature`, base64url).
pub(crate) fn jwt_expiry(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    exp.as_i64()
        .or_else(|| exp.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

/// A token service's refusal text, fit for an error message: every secret (and the
/// base64 `user:password` pair of a Basic credential) replaced, control characters and
/// runs of whitespace folded to one space, at most 200 characters.
pub(crate) fn safe_reason(reason: &str, credential: Option<&RegistryCredential>) -> String {
    let mut secrets: Vec<String> = Vec::new();
    match credential {
        Some(RegistryCredential::Basic { username, password }) => {
            secrets.push(password.clone());
            secrets.push(
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")),
            );
        }
        Some(RegistryCredential::IdentityToken { token, .. }) => secrets.push(token.clone()),
        Some(RegistryCredential::RegistryToken(t)) => secrets.push(t.clone()),
        None => {}
    }
    let mut text = reason.to_string();
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(s.as_str(), "<redacted>");
    }
    let folded = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if folded.chars().count() > MAX_REASON_CHARS {
        let cut: String = folded.chars().take(MAX_REASON_CHARS).collect();
        format!("{cut}...")
    } else {
        folded
    }
}

/// What a token service's refusal means, read from its body: oci-client reports every
/// non-200 answer of the token service as `AuthenticationFailure` with the body text only
/// (no status code), so the distribution error codes in it (`{"errors":[{"code":...}]}`,
/// what registries and their token services answer) or a plain "too many requests" tell a
/// rate limit and a failing service from refused credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 401/403 and anything that does not say otherwise.
    Credentials,
    /// `TOOMANYREQUESTS` (429).
    RateLimited,
    /// `UNAVAILABLE` or a server error page (5xx).
    ServiceFailed,
}

pub(crate) fn refusal_kind(reason: &str) -> Refusal {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<Code>,
    }
    #[derive(serde::Deserialize)]
    struct Code {
        #[serde(default)]
        code: String,
    }
    // Only a body that carries distribution errors is read as one: any other JSON (say
    // `{"message":"Internal Server Error"}`) is judged by its words below.
    if let Ok(parsed) = serde_json::from_str::<Errors>(reason)
        && !parsed.errors.is_empty()
    {
        for e in &parsed.errors {
            match e.code.to_ascii_uppercase().as_str() {
                "TOOMANYREQUESTS" => return Refusal::RateLimited,
                "UNAVAILABLE" => return Refusal::ServiceFailed,
                _ => {}
            }
        }
        return Refusal::Credentials;
    }
    let lower = reason.to_ascii_lowercase();
    if lower.contains("too many requests") || lower.contains("rate limit") {
        Refusal::RateLimited
    } else if [
        "internal server error",
        "bad gateway",
        "service unavailable",
        "gateway timeout",
    ]
    .iter()
    .any(|p| lower.contains(p))
    {
        Refusal::ServiceFailed
    } else {
        Refusal::Credentials
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> RegistryCredential {
        RegistryCredential::Basic {
            username: user.into(),
            password: pass.into(),
        }
    }

    fn jwt(claims: serde_json::Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.c2ln",
            b64.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
            b64.encode(claims.to_string())
        )
    }

    #[test]
    fn anonymous_and_basic_credentials_go_through_oci_client() {
        let tls = TlsMaterial::default();
        assert_eq!(
            token_flow(None, &tls),
            TokenFlow::OciClient(RegistryAuth::Anonymous)
        );
        assert_eq!(
            token_flow(Some(&basic("u", "p")), &tls),
            TokenFlow::OciClient(RegistryAuth::Basic("u".into(), "p".into()))
        );
        assert_eq!(
            token_flow(Some(&RegistryCredential::RegistryToken("t".into())), &tls),
            TokenFlow::OciClient(RegistryAuth::Bearer("t".into()))
        );
    }

    #[test]
    fn a_ca_bundle_alone_still_goes_through_oci_client() {
        let tls = TlsMaterial {
            ca_pem: Some(b"CA".to_vec()),
            ..Default::default()
        };
        assert_eq!(
            token_flow(None, &tls),
            TokenFlow::OciClient(RegistryAuth::Anonymous)
        );
    }

    #[test]
    fn identity_tokens_and_client_certificates_stay_on_the_hand_written_flow() {
        let identity = RegistryCredential::IdentityToken {
            username: "00000000-0000-0000-0000-000000000000".into(),
            token: "refresh".into(),
        };
        assert_eq!(
            token_flow(Some(&identity), &TlsMaterial::default()),
            TokenFlow::HandWritten(HandWrittenBecause::IdentityToken)
        );
        let mtls = TlsMaterial {
            ca_pem: Some(b"CA".to_vec()),
            client_cert_pem: Some(b"CERT".to_vec()),
            client_key_pem: Some(b"KEY".to_vec()),
        };
        for credential in [None, Some(&identity), Some(&basic("u", "p"))] {
            assert_eq!(
                token_flow(credential, &mtls),
                TokenFlow::HandWritten(HandWrittenBecause::MutualTls)
            );
        }
    }

    #[test]
    fn a_jwt_lives_until_its_exp_claim() {
        let now = 1_700_000_000;
        assert_eq!(
            token_lifetime(&jwt(serde_json::json!({"exp": now + 300})), now),
            Duration::from_secs(300)
        );
        assert_eq!(
            token_lifetime(
                &jwt(serde_json::json!({"exp": (now + 90) as f64 + 0.5})),
                now
            ),
            Duration::from_secs(90)
        );
        assert_eq!(
            token_lifetime(&jwt(serde_json::json!({"exp": now - 5})), now),
            Duration::ZERO,
            "an expired token is not cached"
        );
    }

    #[test]
    fn other_tokens_live_sixty_seconds() {
        let now = 1_700_000_000;
        assert_eq!(token_lifetime("opaque-token", now), DEFAULT_TOKEN_LIFETIME);
        assert_eq!(
            token_lifetime(&jwt(serde_json::json!({"sub": "x"})), now),
            DEFAULT_TOKEN_LIFETIME,
            "a JWT without exp"
        );
        assert_eq!(token_lifetime("a.%%%.c", now), DEFAULT_TOKEN_LIFETIME);
        assert_eq!(token_lifetime("a.b.c.d", now), DEFAULT_TOKEN_LIFETIME);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(
            token_lifetime(&format!("a.{}.c", b64.encode("not json")), now),
            DEFAULT_TOKEN_LIFETIME
        );
    }

    #[test]
    fn refusal_reasons_lose_secrets_and_are_kept_short() {
        let cred = basic("robot", "s3cret-pw");
        let encoded = base64::engine::general_purpose::STANDARD.encode("robot:s3cret-pw");
        let r = safe_reason(
            &format!("bad credentials for robot:s3cret-pw\n(Basic {encoded})"),
            Some(&cred),
        );
        assert_eq!(r, "bad credentials for robot:<redacted> (Basic <redacted>)");
        let long = safe_reason(&"x".repeat(5000), None);
        assert_eq!(long.chars().count(), 203);
        assert!(long.ends_with("..."));
    }

    #[test]
    fn refusals_are_told_apart_by_their_body() {
        assert_eq!(
            refusal_kind(r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#),
            Refusal::RateLimited
        );
        assert_eq!(
            refusal_kind(r#"{"errors":[{"code":"UNAVAILABLE","message":"maintenance"}]}"#),
            Refusal::ServiceFailed
        );
        assert_eq!(
            refusal_kind(
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
            ),
            Refusal::Credentials
        );
        assert_eq!(refusal_kind("429 Too Many Requests"), Refusal::RateLimited);
        assert_eq!(
            refusal_kind("<html><title>502 Bad Gateway</title></html>"),
            Refusal::ServiceFailed
        );
        assert_eq!(
            refusal_kind(r#"{"message":"Internal Server Error"}"#),
            Refusal::ServiceFailed
        );
        assert_eq!(refusal_kind("bad credentials"), Refusal::Credentials);
        assert_eq!(refusal_kind(""), Refusal::Credentials);
    }
}
