//! Push notifications as each provider sends them. Input: a selector byte (provider,
//! `?registry=` override, GitHub event), the authentication header value on the first
//! line, the body after it. A delivery is refused (authentication or payload) with a
//! reason or parsed; every push names a repository.
#![no_main]

use http::{HeaderMap, HeaderValue};
use image_reflector::receiver::Provider;
use image_reflector::receiver::auth::{sign, verify};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret";

fuzz_target!(|input: &[u8]| {
    let Some((&select, rest)) = input.split_first() else {
        return;
    };
    let provider = Provider::ALL[usize::from(select) % Provider::ALL.len()];
    let registry = (select & 0x10 != 0).then_some("registry.example:5000");
    let (auth_value, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let mut headers = HeaderMap::new();
    let event = if select & 0x20 != 0 {
        "package"
    } else {
        "registry_package"
    };
    headers.insert("x-github-event", HeaderValue::from_static(event));
    headers.insert("x-github-delivery", HeaderValue::from_static("delivery-1"));
    if let Ok(v) = HeaderValue::from_bytes(auth_value) {
        headers.insert(http::header::AUTHORIZATION, v.clone());
        headers.insert("x-hub-signature-256", v.clone());
        headers.insert("x-signature", v);
    }
    let _ = verify(
        provider.auth_scheme(),
        SECRET,
        &headers,
        body,
        Some("token"),
    );
    // A correctly signed delivery passes the signature schemes.
    if select & 0x40 != 0
        && let Ok(signed) = HeaderValue::from_str(&sign(SECRET, body))
    {
        headers.remove(http::header::AUTHORIZATION);
        headers.insert("x-hub-signature-256", signed.clone());
        headers.insert("x-signature", signed);
        let signed_ok = verify(provider.auth_scheme(), SECRET, &headers, body, Some("x"));
        if matches!(provider, Provider::Github | Provider::Generic) {
            assert!(signed_ok.is_ok(), "{provider}: {signed_ok:?}");
        }
    }
    match provider.parse(&headers, body, registry) {
        Ok(notification) => {
            for push in &notification.pushes {
                assert!(!push.repository.is_empty(), "{provider}: {push:?}");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
