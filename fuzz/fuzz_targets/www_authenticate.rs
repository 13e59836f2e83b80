//! A registry's `WWW-Authenticate` answer: any header value is understood as no
//! challenge, Basic, or Bearer with a non-empty realm.
#![no_main]

use image_reflector::fuzzing::www_authenticate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    if let Some(challenge) = www_authenticate(input) {
        assert!(
            challenge == "Basic" || challenge.starts_with("Bearer { realm: \""),
            "{input:?} -> {challenge}"
        );
        assert!(!challenge.starts_with("Bearer { realm: \"\""), "{input:?}");
    }
});
