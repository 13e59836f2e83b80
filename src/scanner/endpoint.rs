//! Which scheme and URL a registry answers on, and which authentication it asks for.
//!
//! `GET /v2/` is the probe: HTTPS, or plain HTTP for `insecure`; a local registry
//! (loopback, RFC 1918) is tried over HTTPS first and then over plain HTTP, as Docker and
//! go-containerregistry do, but only when the plain-HTTP answer comes from a registry, so
//! an mTLS refusal stays the TLS failure it is. What the probe learnt (the API base and
//! the `WWW-Authenticate` challenge) is cached per transport, API host and `insecure` for
//! ten minutes, and forgotten when a request to the registry fails or the registry's
//! challenge changes.

use super::auth::{self, Challenge};
use super::{ScanContext, ScanError, ScanErrorKind, Scanner};
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// The registry's API base and how it authenticates, learnt from `GET /v2/`.
#[derive(Clone)]
pub(super) struct RegistryEndpoint {
    pub(super) base: Url,
    pub(super) plain_http: bool,
    pub(super) challenge: Challenge,
    learnt: Instant,
}

/// Transport key, API host, insecure.
type EndpointKey = ([u8; 32], String, bool);

/// How long a probe's answer is trusted.
const ENDPOINT_TTL: Duration = Duration::from_secs(600);
/// More distinct endpoints than this empty the cache, so it cannot grow without bound.
const MAX_ENDPOINTS: usize = 10_000;

/// The probed endpoints, shared by every scan.
#[derive(Default)]
pub(super) struct EndpointCache {
    endpoints: Mutex<HashMap<EndpointKey, RegistryEndpoint>>,
}

impl EndpointCache {
    fn get(&self, key: &EndpointKey) -> Option<RegistryEndpoint> {
        let endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        endpoints
            .get(key)
            .filter(|e| e.learnt.elapsed() < ENDPOINT_TTL)
            .cloned()
    }

    fn insert(&self, key: EndpointKey, endpoint: RegistryEndpoint) {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if endpoints.len() > MAX_ENDPOINTS {
            endpoints.clear();
        }
        endpoints.insert(key, endpoint);
    }

    fn remove(&self, key: &EndpointKey) {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        endpoints.remove(key);
    }
}

fn key_of(ctx: &ScanContext<'_>) -> EndpointKey {
    (
        ctx.client_key,
        ctx.req.image.api_host().to_string(),
        ctx.req.insecure,
    )
}

impl Scanner {
    /// `GET /v2/`: which scheme answers (HTTPS, or plain HTTP for `insecure` and, as a
    /// fallback, for local registries) and which auth it asks for.
    pub(super) async fn endpoint(
        &self,
        ctx: &ScanContext<'_>,
    ) -> Result<RegistryEndpoint, ScanError> {
        let image = &ctx.req.image;
        let key = key_of(ctx);
        if let Some(e) = self.inner.endpoints.get(&key) {
            return Ok(e);
        }
        let schemes: &[&str] = if ctx.req.insecure {
            &["http"]
        } else if image.is_local() {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut first_err = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = Url::parse(&format!("{scheme}://{}/", image.api_host())).map_err(|e| {
                ctx.err(
                    ScanErrorKind::InvalidConfig,
                    format!("cannot form the registry URL: {e}"),
                )
            })?;
            let ping = base.join("v2/").map_err(|e| {
                ctx.err(
                    ScanErrorKind::InvalidConfig,
                    format!("cannot form the registry URL: {e}"),
                )
            })?;
            match self.send(ctx, Method::GET, &ping, None, None).await {
                Ok(resp)
                    if *scheme == "http" && first_err.is_some() && !looks_like_registry(&resp) =>
                {
                    // The plain-HTTP fallback reached something that is not a registry
                    // (typically a TLS server's "HTTP request to an HTTPS server" 400):
                    // the HTTPS failure is the real one.
                    return Err(first_err.unwrap_or_else(|| {
                        ctx.err(ScanErrorKind::Unreachable, "no registry answered")
                    }));
                }
                Ok(resp) => {
                    let challenge = if resp.status() == StatusCode::UNAUTHORIZED {
                        resp.headers()
                            .get(WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(auth::parse_challenge)
                            .unwrap_or(Challenge::Basic)
                    } else {
                        Challenge::None
                    };
                    let endpoint = RegistryEndpoint {
                        base,
                        plain_http: *scheme == "http",
                        challenge,
                        learnt: Instant::now(),
                    };
                    self.inner.endpoints.insert(key, endpoint.clone());
                    return Ok(endpoint);
                }
                Err((err, fallback_ok)) => {
                    let last = i + 1 == schemes.len();
                    if last || !fallback_ok {
                        return Err(first_err.unwrap_or(err));
                    }
                    tracing::debug!(registry = %image.api_host(), error = %err, "HTTPS failed on a local registry; trying plain HTTP");
                    first_err = Some(err);
                }
            }
        }
        Err(ctx.err(ScanErrorKind::Unreachable, "no scheme to try"))
    }

    /// Drops what the probe learnt, so the next request probes again.
    pub(super) fn forget_endpoint(&self, ctx: &ScanContext<'_>) {
        self.inner.endpoints.remove(&key_of(ctx));
    }
}

/// Whether a `/v2/` answer comes from a registry: 200 or 401, or the API version header.
fn looks_like_registry(resp: &reqwest::Response) -> bool {
    matches!(resp.status().as_u16(), 200 | 401)
        || resp
            .headers()
            .contains_key("docker-distribution-api-version")
}
