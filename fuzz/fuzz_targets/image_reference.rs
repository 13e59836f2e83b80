//! `spec.image`: any string is refused with a reason or parsed; a parsed name's canonical
//! form parses to the same name (unless canonicalising made it longer than names may be).
#![no_main]

use image_reflector::reference::{ImageRef, NAME_MAX_LEN, ReferenceError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let parsed = ImageRef::parse(input);
    assert_eq!(parsed.is_ok(), ImageRef::check(input).is_ok(), "{input:?}");
    match parsed {
        Ok(image) => {
            let canonical = image.canonical();
            match ImageRef::parse(&canonical) {
                Ok(again) => assert_eq!(again, image, "{input:?} -> {canonical:?}"),
                Err(ReferenceError::TooLong { .. }) => assert!(canonical.len() > NAME_MAX_LEN),
                Err(e) => panic!("{input:?} parsed, its canonical {canonical:?} does not: {e}"),
            }
            let _ = (
                image.api_host(),
                image.host(),
                image.port(),
                image.is_local(),
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
