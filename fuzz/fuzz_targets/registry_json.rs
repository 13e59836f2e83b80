//! JSON bodies a registry or its token service sends: a `tags/list` page (read with and
//! without a cap on its tags), an error body, a token answer (and the lifetime read from
//! the token). Any bytes are refused with a reason or read; a capped read agrees with an
//! uncapped one; an error code quoted in messages is short upper-case ASCII.
#![no_main]

use image_reflector::fuzzing::{registry_error_code, tags_page, token_answer, token_lifetime};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|input: &[u8]| {
    // A capped read agrees with an uncapped one wherever the page fits the cap.
    let whole = tags_page(input, usize::MAX);
    match tags_page(input, 8) {
        Ok(tags) => assert_eq!(Ok(&tags), whole.as_ref()),
        Err(e) => {
            assert!(!e.is_empty());
            if let Ok(tags) = &whole {
                assert!(tags.len() > 8, "{e}");
            }
        }
    }
    if let Some(code) = registry_error_code(input) {
        assert!(!code.is_empty() && code.len() <= 64, "{code:?}");
        assert!(
            code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
            "{code:?}"
        );
    }
    if let Ok(Some((token, lifetime))) = token_answer(input) {
        assert!(lifetime >= Duration::from_secs(1));
        let _ = token_lifetime(&token, 1_700_000_000);
        let _ = token_lifetime(&token, i64::MIN);
        let _ = token_lifetime(&token, i64::MAX);
    }
});
