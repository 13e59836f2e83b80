//! A token service's refusal, quoted in error messages. Input: the credential's
//! username, its password (or token) and the refusal body, one a line. The quoted text is
//! short and never holds the secret, nor the base64 of `username:password`.
#![no_main]

use base64::Engine as _;
use image_reflector::fuzzing::{refusal_kind, refusal_reason};
use image_reflector::scanner::RegistryCredential;
use libfuzzer_sys::fuzz_target;

/// A secret the check can look for: long enough not to occur by chance, and of
/// characters that the quoting can neither fold (whitespace, controls) nor assemble from
/// its own marker or ellipsis (`<redacted>`, `...`).
fn checkable(s: &str) -> bool {
    s.len() >= 4 && s.bytes().all(|b| b.is_ascii_alphanumeric()) && !"redacted".contains(s)
}

fuzz_target!(|input: &str| {
    let mut parts = input.splitn(3, '\n');
    let (Some(username), Some(secret), Some(reason)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let _ = refusal_kind(reason);
    let basic = RegistryCredential::Basic {
        username: username.to_string(),
        password: secret.to_string(),
    };
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{secret}"));
    let identity = RegistryCredential::IdentityToken {
        username: username.to_string(),
        token: secret.to_string(),
    };
    let token = RegistryCredential::RegistryToken(secret.to_string());
    for credential in [&basic, &identity, &token] {
        let quoted = refusal_reason(reason, Some(credential));
        assert!(
            quoted.chars().count() <= 203,
            "{} chars",
            quoted.chars().count()
        );
        if checkable(secret) {
            assert!(
                !quoted.contains(secret),
                "{quoted:?} holds the secret {secret:?}"
            );
        }
    }
    let quoted = refusal_reason(reason, Some(&basic));
    if checkable(&pair) {
        assert!(
            !quoted.contains(&pair),
            "{quoted:?} holds base64 of the pair"
        );
    }
    let _ = refusal_reason(reason, None);
});
