//! A registry's `Link` header on a `tags/list` page. Input: a selector byte (which
//! registry base), then the header value. Whatever next-page URL is accepted stays on the
//! registry's scheme, host and port, so credentials never follow it elsewhere.
#![no_main]

use image_reflector::fuzzing::{link_next, resolve_next_page};
use libfuzzer_sys::fuzz_target;
use url::Url;

const BASES: [&str; 4] = [
    "http://127.0.0.1:5000/",
    "https://registry.example/",
    "https://[::1]:8443/",
    "https://nexus.example:8082/",
];

fuzz_target!(|input: &[u8]| {
    let Some((&select, rest)) = input.split_first() else {
        return;
    };
    let Ok(value) = std::str::from_utf8(rest) else {
        return;
    };
    let base = Url::parse(BASES[usize::from(select) % BASES.len()]).expect("base");
    let current = base
        .join("v2/team/app/tags/list?n=100")
        .expect("current page");
    let Some(link) = link_next(value) else {
        return;
    };
    if let Ok(next) = resolve_next_page(&base, &current, &link) {
        assert_eq!(next.scheme(), base.scheme(), "{value:?} -> {next}");
        assert_eq!(next.host_str(), base.host_str(), "{value:?} -> {next}");
        assert_eq!(
            next.port_or_known_default(),
            base.port_or_known_default(),
            "{value:?} -> {next}"
        );
    }
});
