//! Listing tags: `GET /v2/NAME/tags/list?n=N`, page after page, with the `Link` header's
//! safety rules (a link to another host is refused, so credentials stay with the
//! registry; one that lost the registry's port or scheme is repaired), a smaller page
//! after a refused page size (Quay), and loop detection.

use super::error::status_error;
use super::request::read_limited;
use super::{ScanContext, ScanError, ScanErrorKind, Scanner};
use reqwest::header::{HeaderMap, LINK};
use reqwest::{Method, StatusCode};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use url::Url;

impl Scanner {
    /// Every tag of the repository, page by page: `n` as configured (100 after a refused
    /// page size), following `rel="next"` links checked by [`resolve_next`], stopping at a
    /// loop (a repeated link, the same page twice, endless empty pages) and at
    /// `max_tags`. `progress` gets the running count after each page.
    pub(super) async fn list_all_tags(
        &self,
        ctx: &ScanContext<'_>,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<Vec<String>, ScanError> {
        let cfg = &self.inner.config;
        let mut endpoint = self.endpoint(ctx).await?;
        let mut url = endpoint
            .base
            .join(&format!("v2/{}/tags/list", ctx.req.image.repository()))
            .map_err(|e| {
                ctx.err(
                    ScanErrorKind::InvalidConfig,
                    format!("cannot form the URL: {e}"),
                )
            })?;
        if cfg.page_size > 0 {
            url.query_pairs_mut()
                .append_pair("n", &cfg.page_size.to_string());
        }
        let mut tags: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut pages_seen: HashSet<(String, String, usize)> = HashSet::new();
        let mut empty_pages = 0;
        loop {
            if !seen.insert(url.as_str().to_string()) {
                return Err(ctx.err(
                    ScanErrorKind::Malformed,
                    format!(
                        "the next-page link {:?} repeats an earlier page (a pagination loop)",
                        path_and_query(&url)
                    ),
                ));
            }
            let resp = self
                .registry_request(
                    ctx,
                    &mut endpoint,
                    Method::GET,
                    &url,
                    Some("application/json"),
                )
                .await?;
            let status = resp.status();
            let page_size_refused =
                status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::BAD_REQUEST;
            if let Some(smaller) = page_size_refused
                .then(|| with_smaller_page(&url, FALLBACK_PAGE_SIZE))
                .flatten()
            {
                tracing::debug!(registry = %ctx.req.image.api_host(), %status, "page size refused; asking for 100 tags per page");
                url = smaller;
                continue;
            }
            if !status.is_success() {
                return Err(status_error(ctx, resp, "listing tags").await);
            }
            let next = next_link(resp.headers());
            let body = read_limited(ctx, resp, cfg.max_page_bytes).await?;
            let page = match parse_page(&body, cfg.max_tags.saturating_sub(tags.len())) {
                Ok(page) => page,
                Err(PageError::TooMany) => return Err(too_many_tags(ctx, cfg.max_tags)),
                Err(PageError::Json(e)) => {
                    return Err(ctx.err(
                        ScanErrorKind::Malformed,
                        format!("the tags list is not valid JSON ({e})"),
                    ));
                }
            };
            if let (Some(first), Some(last)) = (page.first(), page.last()) {
                // Pages are disjoint ranges of the sorted tags: one seen before (under
                // whatever URL) means the links go round in a circle.
                let signature = (first.clone(), last.clone(), page.len());
                if !pages_seen.insert(signature) && next.is_some() {
                    return Err(ctx.err(
                        ScanErrorKind::Malformed,
                        "the registry returned the same page twice (a pagination loop)",
                    ));
                }
                empty_pages = 0;
            } else {
                empty_pages += 1;
                if empty_pages > 3 && next.is_some() {
                    return Err(ctx.err(
                        ScanErrorKind::Malformed,
                        "the registry keeps sending empty pages with a next link",
                    ));
                }
            }
            if tags.len() + page.len() > cfg.max_tags {
                return Err(too_many_tags(ctx, cfg.max_tags));
            }
            tags.extend(page);
            progress(tags.len());
            match next {
                None => break,
                Some(link) => {
                    url = resolve_next(&endpoint.base, &url, &link)
                        .map_err(|e| ctx.err(ScanErrorKind::Malformed, e))?;
                }
            }
        }
        Ok(tags)
    }
}

fn too_many_tags(ctx: &ScanContext<'_>, max_tags: usize) -> ScanError {
    ctx.err(
        ScanErrorKind::TooManyTags,
        format!(
            "the repository has more than {max_tags} tags, the scanner's cap; raise the cap (--max-tags) or scan a repository with fewer tags"
        ),
    )
}

/// The page size asked for after a registry refuses a larger one (Quay's maximum).
const FALLBACK_PAGE_SIZE: usize = 100;

/// The `rel="next"` target of the `Link` headers, if any.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_next)
}

/// `<url>; rel="next", <url2>; rel="prev"` -> `url`.
pub(crate) fn parse_next(value: &str) -> Option<String> {
    let mut rest = value;
    loop {
        let start = rest.find('<')?;
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        let after = &rest[end + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            match p.split_once('=') {
                Some((k, v)) if k.trim().eq_ignore_ascii_case("rel") => v
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next")),
                _ => false,
            }
        });
        if is_next {
            return Some(target.trim().to_string());
        }
        rest = after;
    }
}

/// Resolves a next link against the current page and checks it stays on the registry:
/// another host is refused; a link that lost the registry's port (Nexus) or scheme
/// (a TLS-terminating proxy) is repaired.
pub(crate) fn resolve_next(base: &Url, current: &Url, link: &str) -> Result<Url, String> {
    let mut next = current
        .join(link)
        .map_err(|e| format!("the next-page link is not a URL ({e})"))?;
    if next.host_str() != base.host_str() {
        return Err(format!(
            "the next-page link points at another host ({}); it is not followed, so no credentials leave the registry",
            next.host_str().unwrap_or("none")
        ));
    }
    if next.scheme() != base.scheme() {
        let explicit_port = next.port();
        next.set_scheme(base.scheme())
            .map_err(|()| "the next-page link has an unusable scheme".to_string())?;
        // An explicit port kept by set_scheme is compared below.
        let _ = next.set_port(explicit_port);
    }
    if next.port_or_known_default() != base.port_or_known_default() {
        if next.port().is_none() {
            next.set_port(base.port())
                .map_err(|()| "the next-page link cannot take the registry's port".to_string())?;
        } else {
            return Err(format!(
                "the next-page link points at another port ({}) of the registry host; it is not followed",
                next.port_or_known_default().unwrap_or(0)
            ));
        }
    }
    Ok(next)
}

/// The same page URL asking for `size` tags, when it asked for more (or for none).
fn with_smaller_page(url: &Url, size: usize) -> Option<Url> {
    let n = url
        .query_pairs()
        .find(|(k, _)| k == "n")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    if n.is_some_and(|n| n <= size) {
        return None;
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "n")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut smaller = url.clone();
    {
        let mut q = smaller.query_pairs_mut();
        q.clear();
        q.append_pair("n", &size.to_string());
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
    }
    Some(smaller)
}

/// Why a page's tags could not be read.
#[derive(Debug)]
pub(crate) enum PageError {
    Json(serde_json::Error),
    /// More tags than the cap given.
    TooMany,
}

/// The tags of one page (`"tags": null` is an empty page), refusing more than `cap` as
/// soon as the cap is passed: a gigantic page costs no more memory than the scan may keep
/// (32 MiB of one-character tags would otherwise become 8 million strings).
pub(crate) fn parse_page(body: &[u8], cap: usize) -> Result<Vec<String>, PageError> {
    let over = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = PageSeed { cap, over: &over }
        .deserialize(&mut de)
        .and_then(|tags| de.end().map(|()| tags));
    match parsed {
        Ok(tags) => Ok(tags),
        Err(_) if over.get() => Err(PageError::TooMany),
        Err(e) => Err(PageError::Json(e)),
    }
}

/// `{"name": ..., "tags": [...] | null}`; other fields are skipped.
struct PageSeed<'c> {
    cap: usize,
    over: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for PageSeed<'_> {
    type Value = Vec<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tags list object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut tags: Option<Vec<String>> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "tags" {
                map.next_value::<IgnoredAny>()?;
            } else if tags.is_some() {
                return Err(de::Error::duplicate_field("tags"));
            } else {
                tags = Some(map.next_value_seed(TagsSeed {
                    cap: self.cap,
                    over: self.over,
                })?);
            }
        }
        Ok(tags.unwrap_or_default())
    }
}

/// The `tags` array (or null), at most `cap` strings.
struct TagsSeed<'c> {
    cap: usize,
    over: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for TagsSeed<'_> {
    type Value = Vec<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for TagsSeed<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tags or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut tags = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.cap).min(4096));
        while let Some(tag) = seq.next_element::<String>()? {
            if tags.len() == self.cap {
                self.over.set(true);
                return Err(de::Error::custom("more tags than the cap"));
            }
            tags.push(tag);
        }
        Ok(tags)
    }
}

fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn finds_the_next_link_among_others() {
        assert_eq!(
            parse_next(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(
            parse_next(r#"<https://r/prev>; rel="prev", <https://r/next>; rel=next"#).as_deref(),
            Some("https://r/next")
        );
        assert_eq!(parse_next(r#"<https://r/prev>; rel="prev""#), None);
    }

    #[test]
    fn relative_and_absolute_links_resolve_against_the_registry() {
        let base = url("https://ghcr.io/");
        let cur = url("https://ghcr.io/v2/a/tags/list?n=100");
        assert_eq!(
            resolve_next(&base, &cur, "/v2/a/tags/list?last=x&n=100")
                .unwrap()
                .as_str(),
            "https://ghcr.io/v2/a/tags/list?last=x&n=100"
        );
        assert_eq!(
            resolve_next(&base, &cur, "https://ghcr.io/v2/a/tags/list?last=y")
                .unwrap()
                .as_str(),
            "https://ghcr.io/v2/a/tags/list?last=y"
        );
    }

    #[test]
    fn refuses_a_link_to_another_host() {
        let base = url("https://ghcr.io/");
        let cur = url("https://ghcr.io/v2/a/tags/list");
        let e = resolve_next(&base, &cur, "https://evil.example/v2/a/tags/list").unwrap_err();
        assert!(e.contains("evil.example"), "{e}");
        assert!(resolve_next(&base, &cur, "//evil.example/x").is_err());
    }

    #[test]
    fn repairs_a_link_that_lost_the_port_or_scheme() {
        let base = url("https://nexus.local:8443/");
        let cur = url("https://nexus.local:8443/v2/a/tags/list");
        assert_eq!(
            resolve_next(&base, &cur, "https://nexus.local/v2/a/tags/list?last=b")
                .unwrap()
                .as_str(),
            "https://nexus.local:8443/v2/a/tags/list?last=b"
        );
        assert_eq!(
            resolve_next(&base, &cur, "http://nexus.local/v2/a/tags/list?last=b")
                .unwrap()
                .as_str(),
            "https://nexus.local:8443/v2/a/tags/list?last=b"
        );
        assert!(resolve_next(&base, &cur, "https://nexus.local:9999/v2/a/tags/list").is_err());
    }

    #[test]
    fn a_refused_page_size_falls_back_to_100_once() {
        let u = url("https://quay.io/v2/a/tags/list?n=1000");
        let smaller = with_smaller_page(&u, 100).unwrap();
        assert_eq!(smaller.as_str(), "https://quay.io/v2/a/tags/list?n=100");
        assert!(with_smaller_page(&smaller, 100).is_none());
        let with_last = url("https://quay.io/v2/a/tags/list?last=x&n=500");
        assert_eq!(
            with_smaller_page(&with_last, 100).unwrap().as_str(),
            "https://quay.io/v2/a/tags/list?n=100&last=x"
        );
    }

    #[test]
    fn pages_parse_with_null_tags() {
        assert_eq!(
            parse_page(br#"{"name":"a","tags":["1","2"]}"#, 10).unwrap(),
            vec!["1", "2"]
        );
        assert!(
            parse_page(br#"{"name":"a","tags":null}"#, 10)
                .unwrap()
                .is_empty()
        );
        assert!(parse_page(br#"{"name":"a"}"#, 10).unwrap().is_empty());
        assert!(matches!(parse_page(b"<html>", 10), Err(PageError::Json(_))));
        assert!(matches!(
            parse_page(br#"{"tags":["a"]} trailing"#, 10),
            Err(PageError::Json(_))
        ));
        assert!(matches!(
            parse_page(br#"{"tags":["a"],"tags":["b"]}"#, 10),
            Err(PageError::Json(_))
        ));
    }

    #[test]
    fn a_page_is_read_no_further_than_the_tag_cap() {
        assert_eq!(parse_page(br#"{"tags":["a","b"]}"#, 2).unwrap().len(), 2);
        assert!(matches!(
            parse_page(br#"{"tags":["a","b","c"]}"#, 2),
            Err(PageError::TooMany)
        ));
        // The cap is met before the rest of the body is even looked at.
        assert!(matches!(
            parse_page(br#"{"tags":["a","b","c", not json"#, 2),
            Err(PageError::TooMany)
        ));
    }
}
