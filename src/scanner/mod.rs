//! The registry scanner: lists every tag of an image repository, and resolves a tag's
//! manifest digest.
//!
//! One [`Scanner`] per process (cheap to clone) holds the connection pools, the Bearer
//! token cache, the registry endpoint cache and the per-registry-host limits shared by
//! every scan.
//!
//! ## What `oci-client` does, and what reqwest does
//! - **The Bearer token exchange** is `oci_client::Client::auth` (oci-client 0.18): it
//!   probes `/v2/` (its own probe, besides the scanner's), parses the `WWW-Authenticate`
//!   challenge and GETs the realm with `service` and `scope`, with Basic credentials
//!   when there are some, and returns the token. One oci-client client per transport
//!   (CA bundle, proxy) and scheme, configured like the reqwest clients (roots, proxy
//!   with its credentials, timeouts, user agent).
//!   Before calling it, the scanner checks the challenge its own probe parsed (cached
//!   with the endpoint for up to 10 minutes): the realm must be an http(s) URL, and
//!   credentials go to a plain-HTTP realm only when the registry itself is plain HTTP
//!   (oci-client would send them anywhere). oci-client follows the challenge of its own
//!   probe, which `auth` does not let us check; over HTTPS that answer can only come from
//!   the registry itself, so the two differ only when the registry changes its
//!   configuration within that window. Each cached oci-client client also keeps, unread,
//!   the first credential it was given per registry and a token per repository (its
//!   own caches, not clearable through its API) until the client cache is emptied at
//!   `MAX_CLIENTS` distinct transports. The token is
//!   cached here (realm, service, scope, credential) until its JWT `exp`, or 60 seconds
//!   for an opaque token, since `auth` returns only the token string.
//! - **Everything else is reqwest** (rustls), one pooled client per distinct TLS/proxy
//!   setting: the `/v2/` probe with its HTTPS-then-plain-HTTP fallback for local
//!   registries, `tags/list` paging and manifest digests. oci-client 0.18 cannot do
//!   these: `Client::list_tags` returns only the parsed body (the `Link` header, the
//!   status of a refused page size (413/400) and `Retry-After` are hidden), and its
//!   authenticated request builder is private, so paging cannot be built on its requests.
//! - **Two token exchanges stay hand-written** (`Scanner::fetch_token`, chosen by
//!   `oci_token::token_flow`), only because oci-client 0.18 cannot do them:
//!   - an `identitytoken` credential, an OAuth2 refresh token POSTed to the realm
//!     (`grant_type=refresh_token`): `RegistryAuth` has no such grant;
//!   - a transport with a client certificate (mutual TLS): `ClientConfig` has no client
//!     identity, so oci-client cannot even reach the registry.

mod auth;
mod credentials;
mod error;
mod limits;
mod metrics;
mod oci_token;
mod paging;
mod transport;

pub use credentials::{Credentials, CredentialsError, DockerConfig, RegistryCredential};
pub use error::{ScanError, ScanErrorKind};
pub use transport::{ProxyConfig, SecretDataError, TlsMaterial};

use crate::reference::ImageRef;
use auth::{Challenge, TokenCache, TokenKey, TokenResponse};
use base64::Engine as _;
use limits::HostLimits;
use metrics::ScannerMetrics;
use oci_client::RegistryOperation;
use oci_client::client::{CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_token::TokenFlow;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Flux's default `spec.exclusionList`: cosign signature tags.
pub const DEFAULT_EXCLUSION_LIST: &[&str] = &["^.*\\.sig$"];

/// The manifest media types asked for when resolving a digest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Process-wide scanner settings.
#[derive(Debug, Clone)]
pub struct ScannerConfig {
    /// `n` asked for on each `tags/list` page; 0 asks for no page size. A registry that
    /// refuses it (413, or 400 above 1000) is asked again with 100.
    pub page_size: usize,
    /// More tags than this fails the scan with [`ScanErrorKind::TooManyTags`].
    pub max_tags: usize,
    /// Concurrent requests to one registry host, across every scan.
    pub per_host_concurrency: usize,
    /// Requests per second to one registry host, across every scan (0: unlimited).
    pub per_host_requests_per_second: f64,
    /// The longest `Retry-After` honoured; a longer one fails the scan as rate limited.
    pub max_retry_wait: Duration,
    /// Retries of one request after 429, 503 and other 5xx answers.
    pub max_retries: u32,
    /// First backoff for 5xx without `Retry-After` (doubles, with jitter).
    pub backoff_base: Duration,
    /// The longest backoff between retries.
    pub backoff_max: Duration,
    /// The largest page body read.
    pub max_page_bytes: usize,
    pub connect_timeout: Duration,
    /// Used when a [`ScanRequest`] has a zero timeout.
    pub default_timeout: Duration,
    pub user_agent: String,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            page_size: 1000,
            max_tags: 250_000,
            per_host_concurrency: 8,
            per_host_requests_per_second: 50.0,
            max_retry_wait: Duration::from_secs(60),
            max_retries: 5,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            max_page_bytes: 32 << 20,
            connect_timeout: Duration::from_secs(10),
            default_timeout: Duration::from_secs(60),
            user_agent: concat!("image-reflector/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// One scan: an ImageRepository's spec, resolved (secrets read).
#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub image: ImageRef,
    /// Plain HTTP.
    pub insecure: bool,
    /// Regular expressions; a tag matching any is dropped.
    pub exclusion_list: Vec<String>,
    pub credentials: Credentials,
    pub tls: TlsMaterial,
    pub proxy: Option<ProxyConfig>,
    /// The whole scan's deadline (`spec.timeout`); zero means the scanner's default.
    pub timeout: Duration,
}

impl ScanRequest {
    /// Anonymous, HTTPS, Flux's default exclusion list, a 60 s timeout.
    pub fn new(image: ImageRef) -> ScanRequest {
        ScanRequest {
            image,
            insecure: false,
            exclusion_list: DEFAULT_EXCLUSION_LIST
                .iter()
                .map(|s| s.to_string())
                .collect(),
            credentials: Credentials::Anonymous,
            tls: TlsMaterial::default(),
            proxy: None,
            timeout: Duration::from_secs(60),
        }
    }
}

/// A finished scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    pub canonical_image_name: String,
    /// Every tag kept after exclusions, sorted descending (byte order).
    pub tags: Vec<String>,
    pub tag_count: usize,
    /// The first 10 of `tags`.
    pub latest_tags: Vec<String>,
    /// `sha256:` over the sorted tags, each followed by a newline.
    pub revision: String,
    pub scan_time: jiff::Timestamp,
}

/// The registry's API base and how it authenticates, learnt from `GET /v2/`.
#[derive(Clone)]
struct Endpoint {
    base: Url,
    plain_http: bool,
    challenge: Challenge,
    learnt: Instant,
}

/// Transport key, API host, insecure.
type EndpointKey = ([u8; 32], String, bool);

const ENDPOINT_TTL: Duration = Duration::from_secs(600);
const MAX_CLIENTS: usize = 256;
/// oci-client's read timeout in the token exchange (the scan's timeout bounds it too).
const TOKEN_READ_TIMEOUT: Duration = Duration::from_secs(30);

struct Inner {
    config: ScannerConfig,
    limits: HostLimits,
    metrics: ScannerMetrics,
    clients: Mutex<HashMap<[u8; 32], reqwest::Client>>,
    /// oci-client clients for the token exchange, by transport key and plain HTTP.
    oci_clients: Mutex<HashMap<([u8; 32], bool), oci_client::Client>>,
    endpoints: Mutex<HashMap<EndpointKey, Endpoint>>,
    tokens: TokenCache,
}

/// The shared registry client. Clone freely: clones share pools, caches and limits.
#[derive(Clone)]
pub struct Scanner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Everything one scan or digest lookup needs, resolved once.
struct Ctx<'a> {
    req: &'a ScanRequest,
    client: reqwest::Client,
    client_key: [u8; 32],
    credential: Option<RegistryCredential>,
    credential_hash: [u8; 32],
}

impl Ctx<'_> {
    fn err(&self, kind: ScanErrorKind, detail: impl Into<String>) -> ScanError {
        ScanError::new(
            kind,
            self.req.image.api_host(),
            self.req.image.repository(),
            detail,
        )
    }
}

impl Scanner {
    pub fn new(config: ScannerConfig) -> Result<Scanner, ScanError> {
        if config.max_tags == 0 {
            return Err(ScanError::config("max_tags must be at least 1"));
        }
        let limits = HostLimits::new(
            config.per_host_concurrency,
            config.per_host_requests_per_second,
        );
        Ok(Scanner {
            inner: Arc::new(Inner {
                config,
                limits,
                metrics: ScannerMetrics::default(),
                clients: Mutex::new(HashMap::new()),
                oci_clients: Mutex::new(HashMap::new()),
                endpoints: Mutex::new(HashMap::new()),
                tokens: TokenCache::default(),
            }),
        })
    }

    pub fn config(&self) -> &ScannerConfig {
        &self.inner.config
    }

    /// Registers `image_reflector_registry_requests` (by host and status code) and
    /// `image_reflector_registry_rate_limited` (429s by host).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.metrics.register(registry);
    }

    /// Lists every tag of the repository, applies the exclusions and sorts.
    pub async fn scan(&self, req: &ScanRequest) -> Result<ScanOutcome, ScanError> {
        self.scan_with_progress(req, &|_| {}).await
    }

    /// As [`Scanner::scan`], calling `progress` with the running tag count after each
    /// page.
    pub async fn scan_with_progress(
        &self,
        req: &ScanRequest,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<ScanOutcome, ScanError> {
        let exclusions = compile_exclusions(&req.exclusion_list)?;
        let timeout = self.timeout_of(req);
        let ctx = self.context(req)?;
        let all = tokio::time::timeout(timeout, self.list_all_tags(&ctx, progress))
            .await
            .map_err(|_| {
                ctx.err(
                    ScanErrorKind::TimedOut,
                    format!("the scan did not finish within {}", humanize(timeout)),
                )
            })??;
        Ok(finish(&req.image, all, &exclusions))
    }

    /// The manifest digest of `tag` (`Docker-Content-Digest` of a HEAD, accepting OCI
    /// index and manifest and Docker manifest list and v2 manifest).
    pub async fn digest(&self, req: &ScanRequest, tag: &str) -> Result<String, ScanError> {
        if !valid_tag(tag) {
            return Err(ScanError::new(
                ScanErrorKind::InvalidConfig,
                req.image.api_host(),
                req.image.repository(),
                format!(
                    "{tag:?} is not a valid tag (letters, digits, '_', '.', '-'; at most 128, not starting with '.' or '-')"
                ),
            ));
        }
        let timeout = self.timeout_of(req);
        let ctx = self.context(req)?;
        tokio::time::timeout(timeout, self.digest_inner(&ctx, tag))
            .await
            .map_err(|_| {
                ctx.err(
                    ScanErrorKind::TimedOut,
                    format!(
                        "resolving the digest of tag {tag:?} did not finish within {}",
                        humanize(timeout)
                    ),
                )
            })?
    }

    fn timeout_of(&self, req: &ScanRequest) -> Duration {
        if req.timeout.is_zero() {
            self.inner.config.default_timeout
        } else {
            req.timeout
        }
    }

    fn context<'a>(&self, req: &'a ScanRequest) -> Result<Ctx<'a>, ScanError> {
        let (client, client_key) = self.client_for(req)?;
        let credential = req.credentials.for_registry(req.image.registry());
        let credential_hash = credential_fingerprint(credential.as_ref());
        Ok(Ctx {
            req,
            client,
            client_key,
            credential,
            credential_hash,
        })
    }

    /// The pooled client for this TLS/proxy setting, built once.
    fn client_for(&self, req: &ScanRequest) -> Result<(reqwest::Client, [u8; 32]), ScanError> {
        let key = transport_key(&req.tls, req.proxy.as_ref());
        let client = cached(&self.inner.clients, key, || self.build_client(req))?;
        Ok((client, key))
    }

    /// A reqwest client for the scan's CA bundle, client certificate and proxy.
    fn build_client(&self, req: &ScanRequest) -> Result<reqwest::Client, ScanError> {
        let cfg = &self.inner.config;
        let bad = |detail: String| {
            ScanError::new(
                ScanErrorKind::InvalidConfig,
                req.image.api_host(),
                req.image.repository(),
                detail,
            )
        };
        let mut b = reqwest::Client::builder()
            .user_agent(cfg.user_agent.clone())
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::limited(5));
        if let Some(ca) = &req.tls.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| bad(format!("the CA certificate is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(bad("the CA data holds no PEM certificate".into()));
            }
            b = b.tls_certs_merge(certs);
        }
        match (&req.tls.client_cert_pem, &req.tls.client_key_pem) {
            (Some(cert), Some(key)) => {
                let mut pem = cert.clone();
                pem.push(b'\n');
                pem.extend_from_slice(key);
                let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    bad(format!(
                        "the client certificate and key are not a valid PEM pair: {e}"
                    ))
                })?;
                b = b.identity(id);
            }
            (Some(_), None) => {
                return Err(bad("a client certificate was given without its key".into()));
            }
            (None, Some(_)) => {
                return Err(bad("a client key was given without its certificate".into()));
            }
            (None, None) => {}
        }
        if let Some(proxy) = &req.proxy {
            let address = proxy.url();
            let shown = transport::redact_url_userinfo(&address);
            let mut p = reqwest::Proxy::all(address.as_str()).map_err(|e| {
                bad(format!(
                    "the proxy address {shown:?} is not a valid URL: {}",
                    without_url(&e)
                ))
            })?;
            if let Some(user) = &proxy.username {
                p = p.basic_auth(user, proxy.password.as_deref().unwrap_or(""));
            }
            b = b.proxy(p);
        }
        // Without a proxy setting, reqwest honours HTTPS_PROXY/HTTP_PROXY/NO_PROXY.
        b.build()
            .map_err(|e| bad(format!("cannot build the HTTP client: {}", without_url(&e))))
    }

    /// `GET /v2/`: which scheme answers (HTTPS, or plain HTTP for `insecure` and, as a
    /// fallback, for local registries) and which auth it asks for.
    async fn endpoint(&self, ctx: &Ctx<'_>) -> Result<Endpoint, ScanError> {
        let image = &ctx.req.image;
        let key = (
            ctx.client_key,
            image.api_host().to_string(),
            ctx.req.insecure,
        );
        {
            let endpoints = self
                .inner
                .endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(e) = endpoints
                .get(&key)
                .filter(|e| e.learnt.elapsed() < ENDPOINT_TTL)
            {
                return Ok(e.clone());
            }
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
                    let endpoint = Endpoint {
                        base,
                        plain_http: *scheme == "http",
                        challenge,
                        learnt: Instant::now(),
                    };
                    let mut endpoints = self
                        .inner
                        .endpoints
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if endpoints.len() > 10_000 {
                        endpoints.clear();
                    }
                    endpoints.insert(key, endpoint.clone());
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

    fn forget_endpoint(&self, ctx: &Ctx<'_>) {
        let key = (
            ctx.client_key,
            ctx.req.image.api_host().to_string(),
            ctx.req.insecure,
        );
        let mut endpoints = self
            .inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        endpoints.remove(&key);
    }

    /// One HTTP exchange with the per-host limits, metrics and retries for 429/5xx.
    /// On a transport failure, the error and whether plain HTTP may be tried instead.
    async fn send(
        &self,
        ctx: &Ctx<'_>,
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

    /// The `Authorization` value for requests to the registry, fetching a Bearer token
    /// when needed.
    async fn authorization(
        &self,
        ctx: &Ctx<'_>,
        endpoint: &Endpoint,
        scope: &str,
    ) -> Result<Option<HeaderValue>, ScanError> {
        match &endpoint.challenge {
            Challenge::None => Ok(None),
            Challenge::Basic => match &ctx.credential {
                Some(RegistryCredential::Basic { username, password }) => {
                    Ok(Some(basic_header(username, password)))
                }
                Some(RegistryCredential::RegistryToken(t)) => Ok(Some(bearer_header(t))),
                Some(RegistryCredential::IdentityToken { .. }) => Err(ctx.err(
                    ScanErrorKind::AuthenticationFailed,
                    "the registry asks for Basic authentication but the credential is an identity token",
                )),
                None => Ok(None),
            },
            Challenge::Bearer { realm, service } => {
                if let Some(RegistryCredential::RegistryToken(t)) = &ctx.credential {
                    return Ok(Some(bearer_header(t)));
                }
                let key = TokenKey {
                    realm: realm.clone(),
                    service: service.clone().unwrap_or_default(),
                    scope: scope.to_string(),
                    credential: ctx.credential_hash,
                };
                if let Some(t) = self.inner.tokens.get(&key) {
                    return Ok(Some(bearer_header(&t)));
                }
                let (token, lifetime) =
                    match oci_token::token_flow(ctx.credential.as_ref(), &ctx.req.tls) {
                        TokenFlow::OciClient(auth) => {
                            self.fetch_token_with_oci_client(ctx, endpoint, realm, auth)
                                .await?
                        }
                        TokenFlow::HandWritten(because) => {
                            tracing::debug!(registry = %ctx.req.image.api_host(), ?because, "fetching the token with the hand-written flow");
                            self.fetch_token(ctx, endpoint, realm, service.as_deref(), scope)
                                .await?
                        }
                    };
                let header = bearer_header(&token);
                self.inner.tokens.insert(key, token, lifetime);
                Ok(Some(header))
            }
        }
    }

    fn forget_token(&self, ctx: &Ctx<'_>, endpoint: &Endpoint, scope: &str) {
        if let Challenge::Bearer { realm, service } = &endpoint.challenge {
            self.inner.tokens.remove(&TokenKey {
                realm: realm.clone(),
                service: service.clone().unwrap_or_default(),
                scope: scope.to_string(),
                credential: ctx.credential_hash,
            });
        }
    }

    /// The realm's URL and `host[:port]`, after the rules that hold whoever fetches the
    /// token: the realm is an http(s) URL, and credentials go to a plain-HTTP realm only
    /// when the registry itself is plain HTTP.
    fn checked_realm(
        &self,
        ctx: &Ctx<'_>,
        endpoint: &Endpoint,
        realm: &str,
    ) -> Result<(Url, String), ScanError> {
        let realm_url = Url::parse(realm).map_err(|_| {
            ctx.err(
                ScanErrorKind::Malformed,
                format!("the registry's token realm {realm:?} is not a URL"),
            )
        })?;
        let realm_host = host_port(&realm_url);
        if !matches!(realm_url.scheme(), "https" | "http") {
            return Err(ctx.err(
                ScanErrorKind::Malformed,
                format!("the token realm at {realm_host} is not an http(s) URL"),
            ));
        }
        if ctx.credential.is_some() && realm_url.scheme() == "http" && !endpoint.plain_http {
            return Err(ctx.err(
                ScanErrorKind::AuthenticationFailed,
                format!(
                    "the token realm at {realm_host} is plain HTTP; credentials are only sent to an HTTPS realm unless the repository is insecure"
                ),
            ));
        }
        Ok((realm_url, realm_host))
    }

    /// The token exchange through `oci_client::Client::auth` (anonymous or Basic): it
    /// probes `/v2/` once more, parses the challenge and GETs the realm with `service`
    /// and `scope`. It holds a request slot on the registry host and on the realm host
    /// meanwhile (one request to each); the scan's timeout bounds it like any request.
    async fn fetch_token_with_oci_client(
        &self,
        ctx: &Ctx<'_>,
        endpoint: &Endpoint,
        realm: &str,
        auth: RegistryAuth,
    ) -> Result<(String, Duration), ScanError> {
        let (_, realm_host) = self.checked_realm(ctx, endpoint, realm)?;
        let client = self.oci_client_for(ctx, endpoint.plain_http)?;
        let registry_host = host_port(&endpoint.base);
        let reference = oci_client::Reference::with_tag(
            ctx.req.image.api_host().to_string(),
            ctx.req.image.repository().to_string(),
            "latest".to_string(),
        );
        let result = {
            let _permits = self.acquire_both(&registry_host, &realm_host).await;
            client
                .auth(&reference, &auth, RegistryOperation::Pull)
                .await
        };
        match result {
            Ok(Some(token)) => {
                let lifetime =
                    oci_token::token_lifetime(&token, jiff::Timestamp::now().as_second());
                Ok((token, lifetime))
            }
            Ok(None) => {
                // Our probe saw a Bearer challenge, oci-client's did not: learn again.
                self.forget_endpoint(ctx);
                Err(ctx.err(
                    ScanErrorKind::RegistryError,
                    format!(
                        "{registry_host} asked for a Bearer token from {realm_host}, then stopped asking (its /v2/ answer changed); the next scan probes again"
                    ),
                ))
            }
            Err(e) => Err(self.oci_error(ctx, e, &realm_host)),
        }
    }

    /// Maps an oci-client error of the token exchange to our classification; no
    /// credential or token can appear in the message.
    fn oci_error(&self, ctx: &Ctx<'_>, e: OciDistributionError, realm_host: &str) -> ScanError {
        match e {
            OciDistributionError::AuthenticationFailure(reason) => {
                let refusal = oci_token::refusal_kind(&reason);
                let reason = oci_token::safe_reason(&reason, ctx.credential.as_ref());
                match refusal {
                    oci_token::Refusal::RateLimited => {
                        return ctx.err(
                            ScanErrorKind::RateLimited,
                            format!("the token service at {realm_host} answered: too many requests ({reason})"),
                        );
                    }
                    oci_token::Refusal::ServiceFailed => {
                        return ctx.err(
                            ScanErrorKind::RegistryError,
                            format!("the token service at {realm_host} failed ({reason})"),
                        );
                    }
                    oci_token::Refusal::Credentials => {}
                }
                ctx.err(
                    ScanErrorKind::AuthenticationFailed,
                    format!(
                        "the token service at {realm_host} refused {}{}",
                        if ctx.credential.is_some() {
                            "the credentials"
                        } else {
                            "anonymous access"
                        },
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(" ({reason})")
                        }
                    ),
                )
            }
            OciDistributionError::RequestError(e) => {
                let host = e.url().map(host_port).unwrap_or_else(|| realm_host.into());
                self.inner.metrics.observe(&host, None);
                let (err, _) = classify_transport(ctx, &host, &e);
                let during = if host == realm_host {
                    "token service"
                } else {
                    "token exchange"
                };
                ctx.err(err.kind(), format!("{during}: {}", err.detail()))
            }
            OciDistributionError::RegistryTokenDecodeError(_) => ctx.err(
                ScanErrorKind::Malformed,
                format!(
                    "the token service at {realm_host} answered without a token (no JSON with \"token\" or \"access_token\")"
                ),
            ),
            other => ctx.err(
                ScanErrorKind::RegistryError,
                format!(
                    "the token exchange with {realm_host} failed: {}",
                    oci_token::safe_reason(&other.to_string(), ctx.credential.as_ref())
                ),
            ),
        }
    }

    /// Request slots on two hosts, in name order (so two scans never wait on each other
    /// crosswise), once when they are the same host.
    async fn acquire_both(
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

    /// The oci-client client for this transport (CA bundle, proxy) and scheme, built once:
    /// the same roots, proxy, timeouts and user agent as the reqwest clients.
    fn oci_client_for(
        &self,
        ctx: &Ctx<'_>,
        plain_http: bool,
    ) -> Result<oci_client::Client, ScanError> {
        cached(
            &self.inner.oci_clients,
            (ctx.client_key, plain_http),
            || self.build_oci_client(ctx, plain_http),
        )
    }

    fn build_oci_client(
        &self,
        ctx: &Ctx<'_>,
        plain_http: bool,
    ) -> Result<oci_client::Client, ScanError> {
        let cfg = &self.inner.config;
        let bad = |detail: String| ctx.err(ScanErrorKind::InvalidConfig, detail);
        let proxy = ctx
            .req
            .proxy
            .as_ref()
            .map(oci_token::proxy_url)
            .transpose()
            .map_err(bad)?;
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: ctx
                .req
                .tls
                .ca_pem
                .iter()
                .map(|pem| oci_client::client::Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            platform_resolver: None,
            connect_timeout: Some(cfg.connect_timeout),
            read_timeout: Some(TOKEN_READ_TIMEOUT),
            user_agent: oci_token::static_user_agent(&cfg.user_agent),
            // With a proxy setting, every request goes through it (as with the reqwest
            // clients' `Proxy::all`); without one, reqwest reads HTTPS_PROXY, HTTP_PROXY
            // and NO_PROXY from the environment, for both kinds of client alike.
            https_proxy: proxy.clone(),
            http_proxy: proxy.clone(),
            no_proxy: None,
            ..ClientConfig::default()
        };
        oci_client::Client::try_from(config).map_err(|e| {
            let mut detail = format!("cannot build the token client: {e}");
            if let Some(p) = &proxy {
                detail = detail.replace(p.as_str(), "<proxy>");
            }
            if let Some(pw) = ctx
                .req
                .proxy
                .as_ref()
                .and_then(|p| p.password.as_deref())
                .filter(|p| !p.is_empty())
            {
                detail = detail.replace(pw, "<redacted>");
            }
            bad(detail)
        })
    }

    /// The hand-written token flow, for what oci-client 0.18 cannot do (see the module
    /// docs): POST an identity token as an OAuth2 refresh token, or GET the realm with
    /// `service` and `scope` over a transport with a client certificate.
    async fn fetch_token(
        &self,
        ctx: &Ctx<'_>,
        endpoint: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), ScanError> {
        let (realm_url, realm_host) = self.checked_realm(ctx, endpoint, realm)?;
        let sends_credential = ctx.credential.is_some();
        let (method, url, authorization, body) = match &ctx.credential {
            Some(RegistryCredential::IdentityToken { token, .. }) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", token)
                    .append_pair("client_id", "image-reflector")
                    .append_pair("scope", scope);
                if let Some(s) = service {
                    form.append_pair("service", s);
                }
                (Method::POST, realm_url.clone(), None, Some(form.finish()))
            }
            other => {
                let mut u = realm_url.clone();
                {
                    let mut q = u.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", scope);
                }
                let auth = match other {
                    Some(RegistryCredential::Basic { username, password }) => {
                        Some(basic_header(username, password))
                    }
                    _ => None,
                };
                (Method::GET, u, auth, None)
            }
        };
        let host = realm_host.clone();
        let _permit = self.inner.limits.acquire(&host).await;
        let mut rb = ctx.client.request(method, url);
        if let Some(a) = authorization {
            rb = rb.header(AUTHORIZATION, a);
        }
        if let Some(body) = body {
            rb = rb
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                self.inner.metrics.observe(&host, None);
                let (mut err, _) = classify_transport(ctx, &host, &e);
                err = ctx.err(err.kind(), format!("token service: {}", err.detail()));
                return Err(err);
            }
        };
        let status = resp.status();
        self.inner.metrics.observe(&host, Some(status.as_u16()));
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ctx.err(
                ScanErrorKind::AuthenticationFailed,
                format!(
                    "the token service at {realm_host} refused {} (HTTP {})",
                    if sends_credential {
                        "the credentials"
                    } else {
                        "anonymous access"
                    },
                    status.as_u16()
                ),
            ));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ctx.err(
                ScanErrorKind::RateLimited,
                format!("the token service at {realm_host} answered 429"),
            ));
        }
        if !status.is_success() {
            return Err(ctx.err(
                ScanErrorKind::RegistryError,
                format!(
                    "the token service at {realm_host} answered HTTP {}",
                    status.as_u16()
                ),
            ));
        }
        let body = read_limited(ctx, resp, 1 << 20).await?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            ctx.err(
                ScanErrorKind::Malformed,
                format!("the token service at {realm_host} sent invalid JSON: {e}"),
            )
        })?;
        parsed.into_token().ok_or_else(|| {
            ctx.err(
                ScanErrorKind::Malformed,
                format!("the token service at {realm_host} sent no token"),
            )
        })
    }

    /// A request to the registry with its credentials, renewing the token once on 401.
    async fn registry_request(
        &self,
        ctx: &Ctx<'_>,
        endpoint: &mut Endpoint,
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

    async fn list_all_tags(
        &self,
        ctx: &Ctx<'_>,
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
        let mut previous_page: Option<(String, String, usize)> = None;
        let mut empty_pages = 0;
        loop {
            if !seen.insert(url.as_str().to_string()) {
                return Err(ctx.err(
                    ScanErrorKind::Malformed,
                    format!(
                        "the next-page link {:?} repeats an earlier page (a pagination loop)",
                        paging::path_and_query(&url)
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
                .then(|| paging::with_smaller_page(&url, paging::FALLBACK_PAGE_SIZE))
                .flatten()
            {
                tracing::debug!(registry = %ctx.req.image.api_host(), %status, "page size refused; asking for 100 tags per page");
                url = smaller;
                continue;
            }
            if !status.is_success() {
                return Err(status_error(ctx, resp, "listing tags").await);
            }
            let next = paging::next_link(resp.headers());
            let body = read_limited(ctx, resp, cfg.max_page_bytes).await?;
            let page = paging::parse_page(&body).map_err(|e| {
                ctx.err(
                    ScanErrorKind::Malformed,
                    format!("the tags list is not valid JSON ({e})"),
                )
            })?;
            if let (Some(first), Some(last)) = (page.first(), page.last()) {
                let signature = (first.clone(), last.clone(), page.len());
                if next.is_some() && previous_page.as_ref() == Some(&signature) {
                    return Err(ctx.err(
                        ScanErrorKind::Malformed,
                        "the registry returned the same page twice (a pagination loop)",
                    ));
                }
                previous_page = Some(signature);
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
                return Err(ctx.err(
                    ScanErrorKind::TooManyTags,
                    format!(
                        "the repository has more than {} tags, the scanner's cap; raise the cap (--max-tags) or scan a repository with fewer tags",
                        cfg.max_tags
                    ),
                ));
            }
            tags.extend(page);
            progress(tags.len());
            match next {
                None => break,
                Some(link) => {
                    url = paging::resolve_next(&endpoint.base, &url, &link)
                        .map_err(|e| ctx.err(ScanErrorKind::Malformed, e))?;
                }
            }
        }
        Ok(tags)
    }

    async fn digest_inner(&self, ctx: &Ctx<'_>, tag: &str) -> Result<String, ScanError> {
        let mut endpoint = self.endpoint(ctx).await?;
        let url = endpoint
            .base
            .join(&format!(
                "v2/{}/manifests/{tag}",
                ctx.req.image.repository()
            ))
            .map_err(|e| {
                ctx.err(
                    ScanErrorKind::InvalidConfig,
                    format!("cannot form the URL: {e}"),
                )
            })?;
        let resp = self
            .registry_request(
                ctx,
                &mut endpoint,
                Method::HEAD,
                &url,
                Some(MANIFEST_ACCEPT),
            )
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(ctx.err(
                ScanErrorKind::NotFound,
                format!("tag {tag:?} has no manifest (HTTP 404)"),
            ));
        }
        if !status.is_success() {
            return Err(status_error(ctx, resp, "resolving a digest").await);
        }
        if let Some(d) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|d| valid_digest(d))
        {
            return Ok(d.to_string());
        }
        // No digest header: GET the manifest and hash it.
        let resp = self
            .registry_request(ctx, &mut endpoint, Method::GET, &url, Some(MANIFEST_ACCEPT))
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(ctx, resp, "resolving a digest").await);
        }
        let body = read_limited(ctx, resp, 4 << 20).await?;
        Ok(format!("sha256:{}", hex::encode(Sha256::digest(&body))))
    }
}

/// Exclusions, sorting, counting and the revision.
fn finish(
    image: &ImageRef,
    mut tags: Vec<String>,
    exclusions: &Option<regex::RegexSet>,
) -> ScanOutcome {
    if let Some(set) = exclusions {
        tags.retain(|t| !set.is_match(t));
    }
    tags.sort_unstable_by(|a, b| b.cmp(a));
    tags.dedup();
    let mut h = Sha256::new();
    for t in &tags {
        h.update(t.as_bytes());
        h.update(b"\n");
    }
    ScanOutcome {
        canonical_image_name: image.canonical(),
        tag_count: tags.len(),
        latest_tags: tags.iter().take(10).cloned().collect(),
        revision: format!("sha256:{}", hex::encode(h.finalize())),
        tags,
        scan_time: jiff::Timestamp::now(),
    }
}

fn compile_exclusions(list: &[String]) -> Result<Option<regex::RegexSet>, ScanError> {
    if list.is_empty() {
        return Ok(None);
    }
    for (i, p) in list.iter().enumerate() {
        if let Err(e) = regex::Regex::new(p) {
            return Err(ScanError::config(format!(
                "exclusionList[{i}] {p:?} is not a valid regular expression: {e}"
            )));
        }
    }
    regex::RegexSet::new(list)
        .map(Some)
        .map_err(|e| ScanError::config(format!("the exclusion list cannot be compiled: {e}")))
}

/// Tag grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_digest(d: &str) -> bool {
    match d.split_once(':') {
        Some((alg, hex)) => {
            !alg.is_empty()
                && alg
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+._-".contains(&c))
                && hex.len() >= 32
                && hex.bytes().all(|c| c.is_ascii_hexdigit())
        }
        None => false,
    }
}

fn basic_header(username: &str, password: &str) -> HeaderValue {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    v.set_sensitive(true);
    v
}

fn bearer_header(token: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    v.set_sensitive(true);
    v
}

fn credential_fingerprint(c: Option<&RegistryCredential>) -> [u8; 32] {
    let mut h = Sha256::new();
    match c {
        None => h.update(b"anonymous"),
        Some(RegistryCredential::Basic { username, password }) => {
            h.update(b"basic\0");
            h.update(username.as_bytes());
            h.update(b"\0");
            h.update(password.as_bytes());
        }
        Some(RegistryCredential::IdentityToken { username, token }) => {
            h.update(b"identity\0");
            h.update(username.as_bytes());
            h.update(b"\0");
            h.update(token.as_bytes());
        }
        Some(RegistryCredential::RegistryToken(t)) => {
            h.update(b"token\0");
            h.update(t.as_bytes());
        }
    }
    h.finalize().into()
}

/// The client under `key`, built by `build` the first time (and again after the map is
/// emptied at [`MAX_CLIENTS`] entries, so distinct settings cannot grow it without bound).
fn cached<K, C, E>(
    clients: &Mutex<HashMap<K, C>>,
    key: K,
    build: impl FnOnce() -> Result<C, E>,
) -> Result<C, E>
where
    K: std::hash::Hash + Eq,
    C: Clone,
{
    if let Some(c) = clients.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    let client = build()?;
    let mut clients = clients.lock().unwrap_or_else(|p| p.into_inner());
    if clients.len() >= MAX_CLIENTS {
        clients.clear();
    }
    clients.insert(key, client.clone());
    Ok(client)
}

fn transport_key(tls: &TlsMaterial, proxy: Option<&ProxyConfig>) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [&tls.ca_pem, &tls.client_cert_pem, &tls.client_key_pem] {
        match part {
            Some(p) => {
                h.update((p.len() as u64).to_le_bytes());
                h.update(p);
            }
            None => h.update(u64::MAX.to_le_bytes()),
        }
    }
    match proxy {
        Some(p) => {
            for s in [Some(&p.address), p.username.as_ref(), p.password.as_ref()] {
                match s {
                    Some(s) => {
                        h.update((s.len() as u64).to_le_bytes());
                        h.update(s.as_bytes());
                    }
                    None => h.update(u64::MAX.to_le_bytes()),
                }
            }
        }
        None => h.update(b"no-proxy"),
    }
    h.finalize().into()
}

/// Whether a `/v2/` answer comes from a registry: 200 or 401, or the API version header.
fn looks_like_registry(resp: &reqwest::Response) -> bool {
    matches!(resp.status().as_u16(), 200 | 401)
        || resp
            .headers()
            .contains_key("docker-distribution-api-version")
}

/// `host[:port]` of a URL, for limits, metrics and messages.
fn host_port(url: &Url) -> String {
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

fn humanize(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{s:.1}s")
    }
}

/// reqwest errors print the URL; none of ours carry credentials, but strip it anyway so
/// messages stay short and stable.
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(u) = e.url() {
        msg = msg.replace(&format!(" ({u})"), "").replace(u.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// Classifies a failed exchange. The bool says whether a plain-HTTP fallback makes sense
/// (the server does not speak TLS, or refused the connection), as opposed to a TLS
/// server that refused us (unknown CA, missing client certificate).
fn classify_transport(ctx: &Ctx<'_>, host: &str, e: &reqwest::Error) -> (ScanError, bool) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut io_kind = None;
    while let Some(s) = source {
        let tls = s.downcast_ref::<rustls::Error>();
        if let Some(tls) = tls {
            let not_tls = matches!(tls, rustls::Error::InvalidMessage(_));
            let hint = match tls {
                rustls::Error::AlertReceived(
                    rustls::AlertDescription::CertificateRequired
                    | rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::HandshakeFailure,
                ) => {
                    "; the registry probably requires a client certificate (tls.crt and tls.key in certSecretRef)"
                }
                rustls::Error::InvalidCertificate(_) => {
                    "; add the registry's CA (ca.crt in certSecretRef, or --ca-file)"
                }
                rustls::Error::InvalidMessage(_) => {
                    "; the server does not speak TLS: is it a plain HTTP registry (insecure)?"
                }
                _ => "",
            };
            return (
                ctx.err(
                    ScanErrorKind::Tls,
                    format!("TLS with {host} failed: {tls}{hint}"),
                ),
                not_tls,
            );
        }
        // tokio-rustls reports alerts that arrive after the handshake (TLS 1.3 client
        // certificate checks) as a bare io::Error message.
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            let text = io.to_string();
            if io.kind() == std::io::ErrorKind::InvalidData
                && text.starts_with("received fatal alert")
            {
                let client_cert = [
                    "BadCertificate",
                    "CertificateRequired",
                    "HandshakeFailure",
                    "UnknownCA",
                ]
                .iter()
                .any(|a| text.contains(a));
                let hint = if client_cert {
                    "; the registry probably requires a client certificate (tls.crt and tls.key in certSecretRef, or --cert-file/--key-file)"
                } else {
                    ""
                };
                return (
                    ctx.err(
                        ScanErrorKind::Tls,
                        format!("TLS with {host} failed: {text}{hint}"),
                    ),
                    false,
                );
            }
        }
        // std's io::Error::source() skips the error it wraps: descend with get_ref().
        source = match s.downcast_ref::<std::io::Error>() {
            Some(io) => {
                if io.kind() != std::io::ErrorKind::Other || io_kind.is_none() {
                    io_kind = Some(io.kind());
                }
                io.get_ref()
                    .map(|e| e as &(dyn std::error::Error + 'static))
                    .or_else(|| s.source())
            }
            None => s.source(),
        };
    }
    // A TLS 1.3 server that refuses the client certificate may close the connection
    // before its alert is read: the request then fails as "connection closed".
    let closed = without_url(e).contains("connection closed");
    if closed
        && !e.is_connect()
        && e.url().is_some_and(|u| u.scheme() == "https")
        && ctx.req.tls.client_cert_pem.is_none()
    {
        return (
            ctx.err(
                ScanErrorKind::Tls,
                format!(
                    "{host} closed the TLS connection without answering; the registry probably requires a client certificate (tls.crt and tls.key in certSecretRef, or --cert-file/--key-file)"
                ),
            ),
            false,
        );
    }
    if e.is_timeout() {
        return (
            ctx.err(
                ScanErrorKind::TimedOut,
                format!("{host} did not answer in time"),
            ),
            false,
        );
    }
    let detail = without_url(e);
    if e.is_connect() || io_kind.is_some() {
        let refused = io_kind == Some(std::io::ErrorKind::ConnectionRefused);
        return (
            ctx.err(
                ScanErrorKind::Unreachable,
                format!("cannot connect to {host}: {detail}"),
            ),
            refused
                || io_kind == Some(std::io::ErrorKind::ConnectionReset)
                || io_kind == Some(std::io::ErrorKind::UnexpectedEof),
        );
    }
    (
        ctx.err(
            ScanErrorKind::Unreachable,
            format!("the exchange with {host} failed: {detail}"),
        ),
        true,
    )
}

/// Maps a final non-success answer to a classified error, with the registry's error code.
async fn status_error(ctx: &Ctx<'_>, resp: reqwest::Response, doing: &str) -> ScanError {
    let status = resp.status();
    let body = read_limited(ctx, resp, 64 << 10).await.unwrap_or_default();
    let code = paging::error_code(&body);
    let code_text = code.as_deref().map(|c| format!(" {c}")).unwrap_or_default();
    let (kind, detail) = match status.as_u16() {
        401 => (
            ScanErrorKind::AuthenticationFailed,
            if ctx.credential.is_some() {
                format!("{doing}: the registry refused the credentials (HTTP 401{code_text})")
            } else {
                format!(
                    "{doing}: the registry requires credentials and none are configured for {} (HTTP 401{code_text})",
                    ctx.req.image.registry()
                )
            },
        ),
        403 => (
            ScanErrorKind::AuthenticationFailed,
            format!("{doing}: access denied (HTTP 403{code_text})"),
        ),
        404 => (
            ScanErrorKind::NotFound,
            format!(
                "{doing}: the repository does not exist (HTTP 404{})",
                if code.is_some() {
                    code_text.clone()
                } else {
                    " NAME_UNKNOWN".into()
                }
            ),
        ),
        429 => (
            ScanErrorKind::RateLimited,
            format!("{doing}: still answering 429 Too Many Requests after the retries"),
        ),
        s => (
            ScanErrorKind::RegistryError,
            format!("{doing}: HTTP {s}{code_text}"),
        ),
    };
    ctx.err(kind, detail)
}

/// Reads a body up to `limit` bytes.
async fn read_limited(
    ctx: &Ctx<'_>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(tags: &[&str], exclude: &[&str]) -> ScanOutcome {
        let image = ImageRef::parse("ghcr.io/org/app").unwrap();
        let ex =
            compile_exclusions(&exclude.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        finish(&image, tags.iter().map(|s| s.to_string()).collect(), &ex)
    }

    #[test]
    fn results_are_sorted_descending_with_the_first_ten_as_latest() {
        let tags: Vec<String> = (0..15).map(|i| format!("1.{i:02}")).collect();
        let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        let o = outcome(&refs, &[]);
        assert_eq!(o.tag_count, 15);
        assert_eq!(o.tags[0], "1.14");
        assert_eq!(o.latest_tags.len(), 10);
        assert_eq!(o.latest_tags[9], "1.05");
        assert_eq!(o.canonical_image_name, "ghcr.io/org/app");
    }

    #[test]
    fn the_revision_does_not_depend_on_the_registry_order() {
        let a = outcome(&["a", "b", "c"], &[]);
        let b = outcome(&["c", "a", "b"], &[]);
        assert_eq!(a.revision, b.revision);
        assert!(a.revision.starts_with("sha256:") && a.revision.len() == 71);
        assert_ne!(a.revision, outcome(&["a", "b"], &[]).revision);
    }

    #[test]
    fn exclusions_drop_tags_before_counting() {
        let o = outcome(
            &["1.0", "1.0.sig", "latest", "dev-1"],
            &["^.*\\.sig$", "^dev-"],
        );
        assert_eq!(o.tags, vec!["latest", "1.0"]);
        assert_eq!(o.tag_count, 2);
    }

    #[test]
    fn a_bad_exclusion_regex_is_named() {
        let e = compile_exclusions(&["ok".into(), "(".into()]).unwrap_err();
        assert_eq!(e.kind(), ScanErrorKind::InvalidConfig);
        assert!(e.to_string().contains("exclusionList[1] \"(\""), "{e}");
    }

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

    #[test]
    fn tags_follow_the_distribution_grammar() {
        assert!(valid_tag("v1.2.3-rc.1_x"));
        assert!(valid_tag("_x"));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag(""));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(!valid_tag("a/b"));
    }

    #[test]
    fn credentials_with_different_secrets_get_different_token_keys() {
        let a = RegistryCredential::Basic {
            username: "u".into(),
            password: "a".into(),
        };
        let b = RegistryCredential::Basic {
            username: "u".into(),
            password: "b".into(),
        };
        assert_ne!(
            credential_fingerprint(Some(&a)),
            credential_fingerprint(Some(&b))
        );
        assert_ne!(
            credential_fingerprint(Some(&a)),
            credential_fingerprint(None)
        );
    }
}
