//! `spec.interval`, `spec.timeout` and the Go-syntax duration flags: any string is refused
//! with a reason or parsed; a parsed whole number of milliseconds is written back (with
//! and without hours) as text that parses to the same duration.
#![no_main]

use image_reflector::api::duration::{
    format_duration, format_duration_without_hours, parse_duration, uses_hours,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    match parse_duration(input) {
        Ok(d) => {
            if d.subsec_nanos() % 1_000_000 == 0 && !d.is_zero() {
                let go = format_duration(d);
                assert_eq!(parse_duration(&go).ok(), Some(d), "{input:?} -> {go:?}");
                let compact = format_duration_without_hours(d);
                assert!(!uses_hours(&compact), "{compact:?}");
                assert_eq!(
                    parse_duration(&compact).ok(),
                    Some(d),
                    "{input:?} -> {compact:?}"
                );
            }
        }
        Err(e) => assert!(!e.explanation().is_empty()),
    }
});
