//! One exchange with a registry (or its token service), as every scan makes it.
//!
//! - **Per-host limits**: a request slot on the host (concurrency and rate, shared by every
//!   scan, see `limits.rs`) is held while the request is sent.
//! - **Retries**: 429 and 503 with `Retry-After` wait as asked, up to
//!   `ScannerConfig::max_retry_wait` (longer fails the scan at once); other 5xx (and
//!   those two without the header) back off exponentially with jitter; at most
//!   `ScannerConfig::max_retries` times.
//! - **Credentials**: a request to the registry carries its `Authorization` (see
//!   `auth.rs`) only to the registry's own origin; a 401 renews the token, or follows a
//!   changed challenge, once.
//! - **Bounded bodies**: no answer is read beyond a limit.

use super::auth::{self, Challenge};
use super::endpoint::RegistryEndpoint;
use super::error::classify_transport;
use super::{ScanContext, ScanError, ScanErrorKind, Scanner, ScannerConfig};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use std::time::Duration;
use url::Url;

impl Scanner {
    /// One HTTP exchange with the per-host limits, metrics and retries for 429/5xx.
    /// On a transport failure, the error and whether plain HTTP may be tried instead.
    pub(super) async fn send(
        &self,
        ctx: &ScanContext<'_>,
        method: Method,
        url: &Url,
        authorization: Option<&HeaderValue>,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, (ScanError, bool)> {
        let cfg = &self.inner.config;
        let host = host_port(url);
        let mut attempt = 0u32;
        loop {
            let permit = self.inner.limits.acquire(&host).await;
            let mut rb = ctx.client.request(method.clone(), url.clone());
            if let Some(a) = authorization {
                rb = rb.header(AUTHORIZATION, a.clone());
            }
            if let Some(a) = accept {
                rb = rb.header(ACCEPT, a);
            }
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.inner.metrics.observe(&host, None);
                    return Err(classify_transport(ctx, &host, &e));
                }
            };
            drop(permit);
            let status = resp.status();
            self.inner.metrics.observe(&host, Some(status.as_u16()));
            let retryable = matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504);
            if !retryable || attempt >= cfg.max_retries {
                return Ok(resp);
            }
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let wait = match (status.as_u16(), retry_after) {
                (429 | 503, Some(w)) => {
                    if w > cfg.max_retry_wait {
                        let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                            ScanErrorKind::RateLimited
                        } else {
                            ScanErrorKind::RegistryError
                        };
                        return Err((
                            ctx.err(
                                kind,
                                format!(
                                    "{host} answered {status} asking to retry after {}, longer than the {} the scanner waits",
                                    humanize(w),
                                    humanize(cfg.max_retry_wait)
                                ),
                            ),
                            false,
                        ));
                    }
                    w
                }
                _ => backoff(cfg, attempt),
            };
            tracing::debug!(%host, %status, wait_ms = wait.as_millis() as u64, attempt, "registry asked to retry");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// A request to the registry with its credentials, renewing the token once on 401.
    pub(super) async fn registry_request(
        &self,
        ctx: &ScanContext<'_>,
        endpoint: &mut RegistryEndpoint,
        method: Method,
        url: &Url,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, ScanError> {
        let scope = format!("repository:{}:pull", ctx.req.image.repository());
        let same_origin = same_origin(url, &endpoint.base);
        let mut renewed = false;
        loop {
            let authorization = if same_origin {
                self.authorization(ctx, endpoint, &scope).await?
            } else {
                None
            };
            let resp = self
                .send(ctx, method.clone(), url, authorization.as_ref(), accept)
                .await
                .map_err(|(e, _)| {
                    self.forget_endpoint(ctx);
                    e
                })?;
            if resp.status() == StatusCode::UNAUTHORIZED && !renewed && same_origin {
                renewed = true;
                self.forget_token(ctx, endpoint, &scope);
                let fresh = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(auth::parse_challenge);
                if let Some(c) = fresh.filter(|c| *c != endpoint.challenge) {
                    endpoint.challenge = c;
                    self.forget_endpoint(ctx);
                    continue;
                }
                if authorization.is_some() && matches!(endpoint.challenge, Challenge::Bearer { .. })
                {
                    // A cached token the registry no longer accepts: fetch a new one.
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// Request slots on two hosts, in name order (so two scans never wait on each other
    /// crosswise), once when they are the same host.
    pub(super) async fn acquire_both(
        &self,
        a: &str,
        b: &str,
    ) -> (
        tokio::sync::OwnedSemaphorePermit,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        let p1 = self.inner.limits.acquire(first).await;
        let p2 = if first == second {
            None
        } else {
            Some(self.inner.limits.acquire(second).await)
        };
        (p1, p2)
    }
}

/// Reads a body up to `limit` bytes.
pub(super) async fn read_limited(
    ctx: &ScanContext<'_>,
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ScanError> {
    let host = resp.url().host_str().unwrap_or_default().to_string();
    if resp.content_length().is_some_and(|l| l as usize > limit) {
        return Err(ctx.err(
            ScanErrorKind::Malformed,
            format!("a response from {host} is larger than {limit} bytes"),
        ));
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(ctx.err(
                        ScanErrorKind::Malformed,
                        format!("a response from {host} is larger than {limit} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(classify_transport(ctx, &host, &e).0),
        }
    }
}

/// `host[:port]` of a URL, for limits, metrics and messages.
pub(super) fn host_port(url: &Url) -> String {
    let host = match url.host() {
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn backoff(cfg: &ScannerConfig, attempt: u32) -> Duration {
    let exp = cfg
        .backoff_base
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(cfg.backoff_max);
    // Jitter: between half and the full backoff.
    let factor = 0.5 + rand::random::<f64>() * 0.5;
    exp.mul_f64(factor)
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_to_timestamp(v)?;
    let now = jiff::Timestamp::now();
    let secs = when.as_second().saturating_sub(now.as_second()).max(0);
    Some(Duration::from_secs(secs as u64))
}

fn httpdate_to_timestamp(v: &str) -> Option<jiff::Timestamp> {
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    jiff::fmt::rfc2822::parse(v).ok().map(|z| z.timestamp())
}

pub(super) fn humanize(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{s:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let cfg = ScannerConfig::default();
        for attempt in 0..10 {
            let b = backoff(&cfg, attempt);
            let full = cfg.backoff_base * 2u32.pow(attempt);
            let full = full.min(cfg.backoff_max);
            assert!(b >= full / 2 && b <= full, "{attempt}: {b:?}");
        }
    }
}
