//! The registry scanner: lists every tag of an image repository, and resolves a tag's
//! manifest digest.
//!
//! One [`Scanner`] per process (cheap to clone) holds the connection pools, the Bearer
//! token cache, the registry endpoint cache and the per-registry-host limits shared by
//! every scan. This file is the façade: the public API ([`Scanner`], [`ScannerConfig`],
//! [`ScanRequest`], [`ScanOutcome`], the errors) and the steps of a scan and of a digest
//! lookup. Each concern has its own file:
//!
//! | file | what it holds |
//! |---|---|
//! | `transport.rs` | a scan's TLS material and proxy, read from Secrets and flags |
//! | `client.rs` | the reqwest and oci-client clients built for a transport, cached |
//! | `credentials.rs` | registry credentials: Docker config, Basic |
//! | `auth.rs` | which credential a scan uses (`Scanner::registry_credential`), and the `Authorization` it sends: challenges, Basic, Bearer tokens and their cache |
//! | `token.rs` | the two Bearer token exchanges (oci-client's and the hand-written one) |
//! | `oci_token.rs` | the pure parts around oci-client's exchange: routing, token lifetimes, refusals |
//! | `endpoint.rs` | which scheme and URL a registry answers on (`/v2/` probe, plain-HTTP fallback) |
//! | `request.rs` | one exchange: per-host limits, retries and `Retry-After`, bounded bodies |
//! | `limits.rs` | the per-host concurrency and rate limits |
//! | `paging.rs` | `tags/list` paging and its `Link` rules |
//! | `digest.rs` | manifest digests |
//! | `error.rs` | [`ScanError`] and the classification of failures |
//! | `metrics.rs` | registry request metrics |
//! | `cloud/` | cloud registry logins (ECR, ACR, GAR/GCR) and their token cache, behind `auth.rs`'s `Scanner::registry_credential` |
//!
//! A scan: a `ScanContext` (the client for the transport, the credential for the
//! registry), the endpoint probe, the `tags/list` pages (each request with its
//! `Authorization`), then exclusions, sorting and the revision (here).
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

pub(crate) mod auth;
mod client;
pub mod cloud;
mod credentials;
mod digest;
mod endpoint;
pub(crate) mod error;
mod limits;
mod metrics;
pub(crate) mod oci_token;
pub(crate) mod paging;
mod request;
pub(crate) mod token;
mod transport;

pub use credentials::{Credentials, CredentialsError, DockerConfig, RegistryCredential};
pub use digest::MANIFEST_ACCEPT;
pub use error::{ScanError, ScanErrorKind};
pub use transport::{
    PROXY_SCHEMES, ProxyConfig, SecretDataError, TlsMaterial, UnsupportedProxyScheme,
};

use crate::reference::ImageRef;
use auth::{TokenCache, credential_fingerprint};
use client::{Clients, TransportKey};
use endpoint::EndpointCache;
use limits::HostLimits;
use metrics::ScannerMetrics;
use request::humanize;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::time::Duration;

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
    /// The cloud token cache's bounds.
    pub cloud: cloud::CloudConfig,
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
            cloud: cloud::CloudConfig::default(),
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
    /// A cloud login (`spec.provider`, or an autologin flag): its registry credential
    /// replaces `credentials`.
    pub cloud: Option<cloud::CloudLogin>,
}

impl ScanRequest {
    /// Anonymous, HTTPS, Flux's default exclusion list (the API's
    /// [`DEFAULT_EXCLUSION_LIST`](crate::api::DEFAULT_EXCLUSION_LIST)), a 60 s timeout.
    pub fn new(image: ImageRef) -> ScanRequest {
        ScanRequest {
            image,
            insecure: false,
            exclusion_list: crate::api::default_exclusion_list(),
            credentials: Credentials::Anonymous,
            tls: TlsMaterial::default(),
            proxy: None,
            timeout: Duration::from_secs(60),
            cloud: None,
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

struct Inner {
    config: ScannerConfig,
    limits: HostLimits,
    metrics: ScannerMetrics,
    clients: Clients,
    endpoints: EndpointCache,
    tokens: TokenCache,
    cloud: cloud::CloudAuth,
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

/// Everything one scan or digest lookup needs, resolved once: the request, the client for
/// its transport and the credential for its registry.
struct ScanContext<'a> {
    req: &'a ScanRequest,
    client: reqwest::Client,
    client_key: TransportKey,
    credential: Option<RegistryCredential>,
    credential_hash: [u8; 32],
}

impl ScanContext<'_> {
    fn err(&self, kind: ScanErrorKind, detail: impl Into<String>) -> ScanError {
        scan_error(self.req, kind, detail)
    }
}

/// An error about `req`'s repository on its registry.
fn scan_error(req: &ScanRequest, kind: ScanErrorKind, detail: impl Into<String>) -> ScanError {
    ScanError::new(kind, req.image.api_host(), req.image.repository(), detail)
}

impl Scanner {
    /// A scanner whose cloud logins read the process environment as it is now.
    pub fn new(config: ScannerConfig) -> Result<Scanner, ScanError> {
        Scanner::with_cloud_env(config, cloud::CloudEnv::from_process())
    }

    /// A scanner whose cloud logins read `env` instead of the process environment (the
    /// AWS SDK reads the process environment in either case).
    pub fn with_cloud_env(
        config: ScannerConfig,
        env: cloud::CloudEnv,
    ) -> Result<Scanner, ScanError> {
        if config.max_tags == 0 {
            return Err(ScanError::config("max_tags must be at least 1"));
        }
        let limits = HostLimits::new(
            config.per_host_concurrency,
            config.per_host_requests_per_second,
        );
        let cloud = cloud::CloudAuth::new(&config.cloud, env, &config.user_agent);
        Ok(Scanner {
            inner: Arc::new(Inner {
                cloud,
                config,
                limits,
                metrics: ScannerMetrics::default(),
                clients: Clients::default(),
                endpoints: EndpointCache::default(),
                tokens: TokenCache::default(),
            }),
        })
    }

    pub fn config(&self) -> &ScannerConfig {
        &self.inner.config
    }

    /// Registers `image_reflector_registry_requests` (by host and status code),
    /// `image_reflector_registry_rate_limited` (429s by host), and the cloud logins'
    /// token cache and exchange metrics.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.metrics.register(registry);
        self.inner.cloud.register_metrics(registry);
    }

    /// Drops the per-object metrics of a deleted object.
    pub fn forget_object(&self, o: &cloud::InvolvedObject) {
        self.inner.cloud.forget_object(o);
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
        let list = async {
            let ctx = self.context(req).await?;
            self.list_all_tags(&ctx, progress).await
        };
        let all = tokio::time::timeout(timeout, list)
            .await
            .map_err(|_| {
                scan_error(
                    req,
                    ScanErrorKind::TimedOut,
                    format!("the scan did not finish within {}", humanize(timeout)),
                )
            })
            .and_then(|r| r)
            .inspect_err(|e| self.after_failure(req, e))?;
        Ok(finish(&req.image, all, &exclusions))
    }

    /// The manifest digest of `tag` (`Docker-Content-Digest` of a HEAD, accepting OCI
    /// index and manifest and Docker manifest list and v2 manifest).
    pub async fn digest(&self, req: &ScanRequest, tag: &str) -> Result<String, ScanError> {
        if !valid_tag(tag) {
            return Err(scan_error(
                req,
                ScanErrorKind::InvalidConfig,
                format!(
                    "{tag:?} is not a valid tag (letters, digits, '_', '.', '-'; at most 128, not starting with '.' or '-')"
                ),
            ));
        }
        let timeout = self.timeout_of(req);
        let lookup = async {
            let ctx = self.context(req).await?;
            self.digest_inner(&ctx, tag).await
        };
        tokio::time::timeout(timeout, lookup)
            .await
            .map_err(|_| {
                scan_error(
                    req,
                    ScanErrorKind::TimedOut,
                    format!(
                        "resolving the digest of tag {tag:?} did not finish within {}",
                        humanize(timeout)
                    ),
                )
            })
            .and_then(|r| r)
            .inspect_err(|e| self.after_failure(req, e))
    }

    /// After an authentication failure, a cloud login's cached credentials go: the
    /// registry may have refused them, and the next attempt logs in afresh.
    fn after_failure(&self, req: &ScanRequest, e: &ScanError) {
        if let Some(login) = &req.cloud
            && e.kind() == ScanErrorKind::AuthenticationFailed
        {
            self.inner.cloud.forget(login, req.image.registry());
        }
    }

    fn timeout_of(&self, req: &ScanRequest) -> Duration {
        if req.timeout.is_zero() {
            self.inner.config.default_timeout
        } else {
            req.timeout
        }
    }

    /// The client for the request's transport and the credential for its registry,
    /// within the scan's timeout (obtaining a credential may take requests of its own).
    async fn context<'a>(&self, req: &'a ScanRequest) -> Result<ScanContext<'a>, ScanError> {
        let (client, client_key) = self.inner.clients.http(&self.inner.config, req)?;
        let credential = self.registry_credential(req, &client).await?;
        let credential_hash = credential_fingerprint(credential.as_ref());
        Ok(ScanContext {
            req,
            client,
            client_key,
            credential,
            credential_hash,
        })
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
    fn tags_follow_the_distribution_grammar() {
        assert!(valid_tag("v1.2.3-rc.1_x"));
        assert!(valid_tag("_x"));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag(""));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(!valid_tag("a/b"));
    }
}
