//! Authenticity of deliveries, per provider, against one Kubernetes Secret.
//!
//! The Secret (`--receiver-secret`, in `--runtime-namespace`) is watched by name, so a
//! rotation applies at once; only that one Secret's data is held in memory. A provider
//! uses the key named after it (`github`, `dockerhub`, ...) if there is one, else
//! `token`. Values are trimmed of surrounding whitespace (a file with a final newline
//! works), and an empty value counts as absent: no provider is ever open by default.
//!
//! Every comparison is constant-time: tokens are compared as SHA-256 digests (so not even
//! their length leaks), signatures with `hmac`'s own `verify_slice`. Nothing here logs,
//! and no error message carries a secret or what the sender sent.

use super::providers::{AuthScheme, Provider};
use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// The key every provider falls back to.
pub const SHARED_KEY: &str = "token";

/// Why a delivery is refused with 401. The messages name what to fix, never a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "the Secret {namespace}/{name} does not exist; create it with a `token` key (see --receiver-secret)"
    )]
    NoSecret { namespace: String, name: String },
    #[error(
        "the Secret {namespace}/{name} has neither a `{provider}` nor a `token` key with a value"
    )]
    NoKey {
        namespace: String,
        name: String,
        provider: Provider,
    },
    #[error("{0}")]
    Missing(&'static str),
    #[error("{0}")]
    Mismatch(&'static str),
}

/// The receiver's Secret, read from its watch.
#[derive(Clone)]
pub struct Secrets {
    store: Store<Secret>,
    namespace: String,
    name: String,
}

impl Secrets {
    pub fn new(store: Store<Secret>, namespace: &str, name: &str) -> Secrets {
        Secrets {
            store,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// Checks a delivery of `provider` (`url_token`: the last path segment, if any).
    pub fn verify(
        &self,
        provider: Provider,
        headers: &HeaderMap,
        body: &[u8],
        url_token: Option<&str>,
    ) -> Result<(), AuthError> {
        let secret = self
            .store
            .get(&ObjectRef::new(&self.name).within(&self.namespace))
            .ok_or_else(|| AuthError::NoSecret {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
            })?;
        let empty = BTreeMap::new();
        let data = secret.data.as_ref().unwrap_or(&empty);
        let key = secret_for(data, provider).ok_or_else(|| AuthError::NoKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            provider,
        })?;
        verify(provider.auth_scheme(), key, headers, body, url_token)
    }
}

/// The provider's own key, else `token`; trimmed; `None` when absent or empty.
pub fn secret_for(data: &BTreeMap<String, ByteString>, provider: Provider) -> Option<&[u8]> {
    [provider.as_str(), SHARED_KEY]
        .into_iter()
        .filter_map(|key| data.get(key))
        .map(|value| value.0.trim_ascii())
        .find(|value| !value.is_empty())
}

/// Checks a delivery against `secret` by `scheme`.
pub fn verify(
    scheme: AuthScheme,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    url_token: Option<&str>,
) -> Result<(), AuthError> {
    match scheme {
        AuthScheme::AuthorizationHeader => authorization(headers, secret),
        AuthScheme::GithubSignature => {
            let value = headers
                .get("x-hub-signature-256")
                .ok_or(AuthError::Missing(
                    "no X-Hub-Signature-256 header; set the webhook's secret in GitHub",
                ))?;
            signature(value.as_bytes(), secret, body)
        }
        AuthScheme::UrlToken => {
            let token = url_token.ok_or(AuthError::Missing(
                "no token in the URL; use /hooks/PROVIDER/TOKEN",
            ))?;
            if same(token.as_bytes(), secret) {
                Ok(())
            } else {
                Err(AuthError::Mismatch("the token in the URL does not match"))
            }
        }
        AuthScheme::HeaderOrSignature => match headers.get("x-signature") {
            Some(value) if !headers.contains_key(http::header::AUTHORIZATION) => {
                signature(value.as_bytes(), secret, body)
            }
            _ => authorization(headers, secret),
        },
    }
}

/// Any `Authorization` header that is `Bearer SECRET`, `Basic` of `ANYUSER:SECRET`, or
/// SECRET itself (GitLab's and Harbor's documented form).
fn authorization(headers: &HeaderMap, secret: &[u8]) -> Result<(), AuthError> {
    let mut values = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .peekable();
    if values.peek().is_none() {
        return Err(AuthError::Missing(
            "no Authorization header; configure the registry to send one",
        ));
    }
    // Every value is checked (no early exit), so the time taken does not say which matched.
    let mut ok = false;
    for value in values {
        ok |= authorization_matches(value.as_bytes(), secret);
    }
    if ok {
        Ok(())
    } else {
        Err(AuthError::Mismatch(
            "the Authorization header does not match",
        ))
    }
}

fn authorization_matches(value: &[u8], secret: &[u8]) -> bool {
    let value = value.trim_ascii();
    let mut ok = same(value, secret);
    if let Some(token) = strip_scheme(value, b"bearer") {
        ok |= same(token, secret);
    }
    if let Some(encoded) = strip_scheme(value, b"basic")
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded)
        && let Some(colon) = decoded.iter().position(|b| *b == b':')
    {
        ok |= same(&decoded[colon + 1..], secret);
    }
    ok
}

/// `SCHEME rest` (scheme case-insensitive) → `rest`, trimmed.
fn strip_scheme<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let head = value.get(..scheme.len())?;
    let rest = value.get(scheme.len()..)?;
    (head.eq_ignore_ascii_case(scheme) && rest.first() == Some(&b' ')).then(|| rest.trim_ascii())
}

/// `sha256=HEX` of HMAC-SHA256(secret, body), as GitHub (and notification-controller's
/// generic-hmac) send it.
fn signature(value: &[u8], secret: &[u8], body: &[u8]) -> Result<(), AuthError> {
    let hex_digest = value
        .trim_ascii()
        .strip_prefix(b"sha256=")
        .ok_or(AuthError::Mismatch(
            "the signature is not of the form sha256=HEX",
        ))?;
    let given = hex::decode(hex_digest)
        .map_err(|_| AuthError::Mismatch("the signature is not hexadecimal"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|_| AuthError::Mismatch("the secret cannot key an HMAC"))?;
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| AuthError::Mismatch("the signature does not match the body"))
}

/// Constant-time equality that does not reveal the length either.
fn same(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// `sha256=HEX` of HMAC-SHA256(secret, body): what a sender puts in the signature header.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // An HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"s3cret-token";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn auth(pairs: &[(&str, &str)]) -> Result<(), AuthError> {
        verify(
            AuthScheme::AuthorizationHeader,
            SECRET,
            &headers(pairs),
            b"{}",
            None,
        )
    }

    #[test]
    fn a_bearer_token_basic_password_or_bare_token_is_accepted() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("anyone:s3cret-token")
        );
        for value in [
            "Bearer s3cret-token",
            "bearer  s3cret-token ",
            basic.as_str(),
            "s3cret-token",
        ] {
            assert_eq!(auth(&[("authorization", value)]), Ok(()), "{value}");
        }
    }

    #[test]
    fn a_wrong_or_missing_authorization_header_is_refused() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("s3cret-token:wrong")
        );
        for value in [
            "Bearer s3cret-tokeN",
            "Bearer",
            "Bearers3cret-token",
            "Token s3cret-token",
            basic.as_str(),
            "Basic !!!",
            "",
        ] {
            assert!(
                matches!(
                    auth(&[("authorization", value)]),
                    Err(AuthError::Mismatch(_))
                ),
                "{value:?}"
            );
        }
        assert!(matches!(auth(&[]), Err(AuthError::Missing(_))));
    }

    #[test]
    fn one_matching_value_among_several_authorization_headers_is_enough() {
        assert_eq!(
            auth(&[
                ("authorization", "Bearer old"),
                ("authorization", "Bearer s3cret-token")
            ]),
            Ok(())
        );
    }

    #[test]
    fn githubs_signature_of_the_exact_body_is_accepted_and_a_forged_one_is_not() {
        let body = br#"{"action":"published"}"#;
        let good = sign(SECRET, body);
        let check = |value: &str, body: &[u8]| {
            verify(
                AuthScheme::GithubSignature,
                SECRET,
                &headers(&[("x-hub-signature-256", value)]),
                body,
                None,
            )
        };
        assert_eq!(check(&good, body), Ok(()));
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        assert_eq!(
            verify(
                AuthScheme::GithubSignature,
                b"It's a Secret to Everybody",
                &headers(&[(
                    "x-hub-signature-256",
                    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
                )]),
                b"Hello, World!",
                None
            ),
            Ok(())
        );
        let forged = sign(b"another secret", body);
        for (value, body) in [
            (forged.as_str(), &body[..]),
            (good.as_str(), br#"{"action":"published" }"#),
            (&good[7..], body),
            ("sha256=zz", body),
            ("sha1=0123", body),
        ] {
            assert!(
                matches!(check(value, body), Err(AuthError::Mismatch(_))),
                "{value}"
            );
        }
        assert!(matches!(
            verify(
                AuthScheme::GithubSignature,
                SECRET,
                &headers(&[]),
                body,
                None
            ),
            Err(AuthError::Missing(_))
        ));
    }

    #[test]
    fn a_url_token_must_equal_the_secret() {
        let check = |token| verify(AuthScheme::UrlToken, SECRET, &HeaderMap::new(), b"", token);
        assert_eq!(check(Some("s3cret-token")), Ok(()));
        assert!(matches!(check(Some("s3cret")), Err(AuthError::Mismatch(_))));
        assert!(matches!(check(Some("")), Err(AuthError::Mismatch(_))));
        assert!(matches!(check(None), Err(AuthError::Missing(_))));
    }

    #[test]
    fn the_generic_form_takes_a_bearer_token_or_a_signature() {
        let body = br#"{"image":"a/b"}"#;
        let check = |pairs: &[(&str, &str)]| {
            verify(
                AuthScheme::HeaderOrSignature,
                SECRET,
                &headers(pairs),
                body,
                None,
            )
        };
        assert_eq!(check(&[("authorization", "Bearer s3cret-token")]), Ok(()));
        assert_eq!(check(&[("x-signature", &sign(SECRET, body))]), Ok(()));
        assert!(check(&[("x-signature", &sign(b"x", body))]).is_err());
        assert!(check(&[]).is_err());
    }

    #[test]
    fn the_providers_own_key_wins_over_token_and_empty_values_count_as_absent() {
        let mut data = BTreeMap::new();
        data.insert("token".to_string(), ByteString(b"shared\n".to_vec()));
        data.insert("github".to_string(), ByteString(b"hub".to_vec()));
        data.insert("quay".to_string(), ByteString(b"  ".to_vec()));
        assert_eq!(secret_for(&data, Provider::Github), Some(&b"hub"[..]));
        assert_eq!(secret_for(&data, Provider::Quay), Some(&b"shared"[..]));
        assert_eq!(secret_for(&data, Provider::Harbor), Some(&b"shared"[..]));
        data.remove("token");
        assert_eq!(secret_for(&data, Provider::Harbor), None);
        assert_eq!(secret_for(&data, Provider::Quay), None);
    }
}
