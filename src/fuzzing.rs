//! Entry points for the fuzz targets in `fuzz/`: the parsers of outside input that are
//! private to their modules, reached from one place so that fuzzing widens this module
//! instead of many items. Not a stable API; the public parsers (`reference`,
//! `api::parse_duration`, `policy`, `scanner::DockerConfig`, `admission::handle`,
//! `receiver::Provider::parse`) are fuzzed as they are.

use crate::admission::Admission;
use crate::scanner::RegistryCredential;
use crate::scanner::{auth, error, oci_token, paging, token};
use crate::server::{AppState, Readiness};
use crate::store::format::{self, ReadFailure};
use crate::store::{Entry, ObjectKey};
use std::time::Duration;

/// A `WWW-Authenticate` value as the scanner reads it: `None` when it asks for nothing
/// the scanner knows, else `Basic` or `Bearer realm=... service=...`.
pub fn www_authenticate(value: &str) -> Option<String> {
    auth::parse_challenge(value).map(|c| format!("{c:?}"))
}

/// The `rel="next"` target of one `Link` header value.
pub fn link_next(value: &str) -> Option<String> {
    paging::parse_next(value)
}

/// The next page's URL after `current`, as the scanner checks it against the registry's
/// `base` (same host; a lost port or scheme repaired).
pub fn resolve_next_page(
    base: &url::Url,
    current: &url::Url,
    link: &str,
) -> Result<url::Url, String> {
    paging::resolve_next(base, current, link)
}

/// The tags of one `tags/list` page, at most `cap` of them.
pub fn tags_page(body: &[u8], cap: usize) -> Result<Vec<String>, String> {
    paging::parse_page(body, cap).map_err(|e| match e {
        paging::PageError::Json(e) => e.to_string(),
        paging::PageError::TooMany => format!("more than {cap} tags"),
    })
}

/// The distribution error code of an error body, as messages quote it.
pub fn registry_error_code(body: &[u8]) -> Option<String> {
    error::error_code(body)
}

/// A token service's answer: the token and its lifetime.
pub fn token_answer(body: &[u8]) -> Result<Option<(String, Duration)>, String> {
    token::parse_token_answer(body).map_err(|e| e.to_string())
}

/// How long a token may be used (its JWT `exp`, else 60 s); `now` in Unix seconds.
pub fn token_lifetime(token: &str, now: i64) -> Duration {
    oci_token::token_lifetime(token, now)
}

/// A token service's refusal text as error messages quote it, with `credential`'s
/// secrets replaced.
pub fn refusal_reason(reason: &str, credential: Option<&RegistryCredential>) -> String {
    oci_token::safe_reason(reason, credential)
}

/// What a token service's refusal body means: `credentials`, `rate-limited` or
/// `service-failed`.
pub fn refusal_kind(reason: &str) -> &'static str {
    match oci_token::refusal_kind(reason) {
        oci_token::Refusal::Credentials => "credentials",
        oci_token::Refusal::RateLimited => "rate-limited",
        oci_token::Refusal::ServiceFailed => "service-failed",
    }
}

/// A tag store entry file read as the store reads it: first as opening the store does
/// (header and checksum, the payload only hashed), then as `TagStore::get` does (tags
/// decoded). The first verdict is `Ok(())` or why the file is refused.
pub fn tag_store_file(bytes: &[u8]) -> (Result<(), String>, Result<(ObjectKey, Entry), String>) {
    let len = bytes.len() as u64;
    let opened = format::read_verified(&mut &bytes[..], len, false)
        .map(|_| ())
        .map_err(read_failure);
    let read = format::read_entry(&mut &bytes[..], len, None).map_err(read_failure);
    (opened, read)
}

/// The bytes of the file the store writes for `entry`.
pub fn tag_store_encode(key: &ObjectKey, entry: &Entry) -> Result<Vec<u8>, String> {
    format::encode(key, entry).map_err(|e| e.to_string())
}

/// Recomputes an entry file's checksum, so that a forged file gets past it.
pub fn tag_store_reseal(bytes: &mut [u8]) {
    format::reseal(bytes);
}

fn read_failure(f: ReadFailure) -> String {
    match f {
        ReadFailure::Corrupt(c) => c.to_string(),
        ReadFailure::Io(e) => format!("i/o: {e}"),
    }
}

/// The HTTP routes `/mutate` and `/validate` exactly as the server serves them (body
/// limits, AdmissionReview handling, answers), with `admission` as their configuration.
pub fn admission_router(admission: Admission) -> axum::Router {
    let state = AppState::new(admission, Readiness::new(false), Default::default());
    crate::server::webhook_router(std::sync::Arc::new(state))
}
