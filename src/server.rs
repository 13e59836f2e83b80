//! The combined server: the admission webhooks over HTTPS (rustls, TLS 1.2/1.3,
//! HTTP/1.1 and HTTP/2, certificate reloaded when its files change), health probes and
//! Prometheus metrics over plain HTTP. Controllers plug in through [`AppState`]: a
//! [`ClusterView`](crate::admission::ClusterView), a [`Readiness`] handle they flip once
//! their caches have synced, and the metrics [`Registry`] they register into first.
//!
//! With `--receiver-addr`, a fourth listener serves the push receiver
//! ([`crate::receiver`]) over plain HTTP. It does not share the admission port: that port
//! is reached only by kube-apiserver, with a certificate for the in-cluster Service name
//! that registries on the internet would not trust, and its hot path is kept small; the
//! receiver is reached by registries, usually through an Ingress that terminates TLS
//! with a public certificate (as Flux's notification-controller receiver is), and may be
//! exposed or firewalled on its own.

use crate::admission::{self, Admission, Webhook};
use crate::metrics::{AdmissionLabels, AdmissionMetrics};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Largest AdmissionReview body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time in-flight requests get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {flag} {addr}: {source}")]
    Bind {
        /// The flag that set the address.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The certificate or key is unusable.
    #[error("{0}")]
    Tls(String),
    /// A listener failed while serving.
    #[error("{what}: {source}")]
    Io {
        /// Which listener.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Where to listen and which certificate to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// HTTPS: `/mutate`, `/validate`.
    pub webhook_addr: SocketAddr,
    /// HTTP: `/healthz`, `/readyz`.
    pub health_addr: SocketAddr,
    /// HTTP: `/metrics`.
    pub metrics_addr: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub tls_cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: PathBuf,
    /// How often the certificate files are checked for changes.
    pub tls_reload_interval: Duration,
    /// HTTP: the push receiver's `/hooks/...`, when enabled.
    pub receiver_addr: Option<SocketAddr>,
}

/// Readiness: the TLS material is loaded and, when controllers run, their caches synced.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<ReadinessInner>);

#[derive(Debug)]
struct ReadinessInner {
    tls_loaded: AtomicBool,
    caches_synced: AtomicBool,
}

impl Readiness {
    /// `wait_for_caches`: true when controllers run and must call
    /// [`Readiness::mark_caches_synced`] before `/readyz` answers 200.
    pub fn new(wait_for_caches: bool) -> Readiness {
        Readiness(Arc::new(ReadinessInner {
            tls_loaded: AtomicBool::new(false),
            caches_synced: AtomicBool::new(!wait_for_caches),
        }))
    }

    /// Called by the controllers once their caches have synced.
    pub fn mark_caches_synced(&self) {
        self.0.caches_synced.store(true, Ordering::Release);
    }

    fn mark_tls_loaded(&self) {
        self.0.tls_loaded.store(true, Ordering::Release);
    }

    /// Ready from the start, for tests of what reads readiness.
    #[cfg(test)]
    pub(crate) fn ready() -> Readiness {
        let r = Readiness::new(false);
        r.mark_tls_loaded();
        r
    }

    /// Ok when ready, else what is still missing.
    pub fn check(&self) -> Result<(), &'static str> {
        if !self.0.tls_loaded.load(Ordering::Acquire) {
            return Err("the serving certificate is not loaded yet");
        }
        if !self.0.caches_synced.load(Ordering::Acquire) {
            return Err("the controllers' caches have not synced yet");
        }
        Ok(())
    }
}

/// Everything the handlers share.
pub struct AppState {
    /// Admission configuration (cluster view, flags).
    pub admission: Admission,
    /// Readiness for `/readyz`.
    pub readiness: Readiness,
    metrics: AdmissionMetrics,
    registry: Registry,
    receiver: Option<Router>,
}

impl AppState {
    /// Registers the webhook metrics into `registry` (which may already hold the
    /// controllers' metrics) and keeps it for `/metrics`.
    pub fn new(admission: Admission, readiness: Readiness, mut registry: Registry) -> AppState {
        let metrics = AdmissionMetrics::register(&mut registry);
        AppState {
            admission,
            readiness,
            metrics,
            registry,
            receiver: None,
        }
    }

    /// Serves `receiver` (the push receiver's routes) on `--receiver-addr`.
    pub fn with_receiver(mut self, receiver: Router) -> AppState {
        self.receiver = Some(receiver);
        self
    }
}

// ---------------------------------------------------------------------------------------
// TLS with reload

/// Serves the current certificate; swapped when the files change.
#[derive(Debug)]
struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let guard = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(guard.clone())
    }
}

struct CertReloader {
    cert_file: PathBuf,
    key_file: PathBuf,
    resolver: Arc<CertResolver>,
    /// The file contents last loaded (or last rejected), to notice changes.
    last: Mutex<(Vec<u8>, Vec<u8>)>,
}

fn read_file(path: &Path, flag: &str) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|e| ServerError::Tls(format!("{flag} {}: {e}", path.display())))
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_file: &Path,
    key_file: &Path,
) -> Result<CertifiedKey, ServerError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            ServerError::Tls(format!(
                "--tls-cert-file {}: not PEM certificates: {e}",
                cert_file.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "--tls-cert-file {}: no CERTIFICATE block found; give a PEM certificate chain, leaf first",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        ServerError::Tls(format!(
            "--tls-key-file {}: no usable PEM private key: {e}",
            key_file.display()
        ))
    })?;
    CertifiedKey::from_der(certs, key, &rustls::crypto::aws_lc_rs::default_provider()).map_err(|e| {
        ServerError::Tls(format!(
            "--tls-cert-file {} and --tls-key-file {}: {e}; give the key that belongs to the certificate",
            cert_file.display(),
            key_file.display()
        ))
    })
}

impl CertReloader {
    fn load(cert_file: &Path, key_file: &Path) -> Result<CertReloader, ServerError> {
        let cert = read_file(cert_file, "--tls-cert-file")?;
        let key = read_file(key_file, "--tls-key-file")?;
        let ck = certified_key(&cert, &key, cert_file, key_file)?;
        Ok(CertReloader {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            resolver: Arc::new(CertResolver {
                current: RwLock::new(Arc::new(ck)),
            }),
            last: Mutex::new((cert, key)),
        })
    }

    /// Reloads when either file's content changed. A pair that does not load (a rotation
    /// half-written, a key that does not match) keeps the old certificate in service and
    /// is tried again when the files change again.
    fn reload_if_changed(&self) {
        let (Ok(cert), Ok(key)) = (
            std::fs::read(&self.cert_file),
            std::fs::read(&self.key_file),
        ) else {
            return;
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.0 == cert && last.1 == key {
            return;
        }
        match certified_key(&cert, &key, &self.cert_file, &self.key_file) {
            Ok(ck) => {
                *self
                    .resolver
                    .current
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
                info!(cert = %self.cert_file.display(), "serving certificate reloaded");
            }
            Err(e) => {
                warn!(error = %e, "serving certificate changed but does not load; keeping the previous one")
            }
        }
        *last = (cert, key);
    }

    fn server_config(&self) -> Result<rustls::ServerConfig, ServerError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ServerError::Tls(format!("TLS configuration: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

// ---------------------------------------------------------------------------------------
// Handlers

pub(crate) fn webhook_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .with_state(state)
}

async fn mutate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match read_body(request).await {
        Ok(body) => answer(&state, Webhook::Mutate, &body),
        Err(response) => refuse_body(&state, "mutate", response),
    }
}

async fn validate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match read_body(request).await {
        Ok(body) => answer(&state, Webhook::Validate, &body),
        Err(response) => refuse_body(&state, "validate", response),
    }
}

/// Bodies over [`MAX_BODY_BYTES`] are still read (and dropped) up to this size, so that
/// the client, still sending, reliably receives the 413 instead of a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads the body; a body over [`MAX_BODY_BYTES`] becomes a 413 response.
async fn read_body(request: Request) -> Result<Bytes, (StatusCode, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the AdmissionReview body is larger than {MAX_BODY_BYTES} bytes (3 MiB)\n"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut stream = request.into_body().into_data_stream();
    // Most bodies arrive in one chunk, which is kept as is; more are copied together.
    let mut first: Option<Bytes> = None;
    let mut buf: Option<bytes::BytesMut> = None;
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}\n"),
            )
        })?;
        total += chunk.len();
        if total > DRAIN_LIMIT {
            return Err(too_large());
        }
        if total > MAX_BODY_BYTES {
            first = None;
            buf = None;
            continue;
        }
        match (&mut first, &mut buf) {
            (None, None) => first = Some(chunk),
            (Some(head), None) => {
                let mut joined = bytes::BytesMut::with_capacity(
                    declared.unwrap_or(0).clamp(total, MAX_BODY_BYTES),
                );
                joined.extend_from_slice(head);
                joined.extend_from_slice(&chunk);
                first = None;
                buf = Some(joined);
            }
            (_, Some(joined)) => joined.extend_from_slice(&chunk),
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(match (first, buf) {
        (_, Some(joined)) => joined.freeze(),
        (Some(head), None) => head,
        (None, None) => Bytes::new(),
    })
}

fn refuse_body(
    state: &AppState,
    webhook: &'static str,
    (status, message): (StatusCode, String),
) -> Response {
    warn!(webhook, %status, "admission request body refused");
    let result = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else {
        "bad_request"
    };
    state.metrics.observe(
        AdmissionLabels {
            webhook,
            kind: "unknown",
            operation: "none",
            result,
        },
        Duration::ZERO,
    );
    (status, message).into_response()
}

fn answer(state: &AppState, hook: Webhook, body: &[u8]) -> Response {
    let start = Instant::now();
    let webhook = hook.as_str();
    match admission::handle(body, hook, &state.admission) {
        Ok(outcome) => {
            let kind = outcome.kind.map(|k| k.as_str()).unwrap_or("unknown");
            debug!(
                webhook,
                kind,
                operation = outcome.operation,
                result = outcome.result,
                "admission request answered"
            );
            state.metrics.observe(
                AdmissionLabels {
                    webhook,
                    kind,
                    operation: outcome.operation,
                    result: outcome.result,
                },
                start.elapsed(),
            );
            ([(header::CONTENT_TYPE, "application/json")], outcome.body).into_response()
        }
        Err(e) => {
            warn!(webhook, error = %e, "bad admission request");
            state.metrics.observe(
                AdmissionLabels {
                    webhook,
                    kind: "unknown",
                    operation: "none",
                    result: "bad_request",
                },
                start.elapsed(),
            );
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
    }
}

fn health_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(state): State<Arc<AppState>>| async move {
                match state.readiness.check() {
                    Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                    Err(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {why}\n"),
                    ),
                }
            }),
        )
        .with_state(state)
}

fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<Arc<AppState>>| async move {
                match crate::metrics::encode(&state.registry) {
                    Ok(text) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(_) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "encoding metrics failed\n",
                    )
                        .into_response(),
                }
            }),
        )
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Listeners

/// The three listeners, bound, with the certificate loaded; [`Server::run`] serves them.
pub struct Server {
    webhook: TcpListener,
    health: TcpListener,
    metrics: TcpListener,
    receiver: Option<(TcpListener, Router)>,
    reloader: Arc<CertReloader>,
    reload_interval: Duration,
    state: Arc<AppState>,
}

async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { flag, addr, source })
}

impl Server {
    /// Loads the certificate and binds the three listeners (port 0 picks a free port).
    pub async fn bind(config: &ServerConfig, state: AppState) -> Result<Server, ServerError> {
        let reloader = Arc::new(CertReloader::load(
            &config.tls_cert_file,
            &config.tls_key_file,
        )?);
        state.readiness.mark_tls_loaded();
        let webhook = bind("--webhook-addr", config.webhook_addr).await?;
        let health = bind("--health-addr", config.health_addr).await?;
        let metrics = bind("--metrics-addr", config.metrics_addr).await?;
        let receiver = match (config.receiver_addr, &state.receiver) {
            (Some(addr), Some(router)) => {
                Some((bind("--receiver-addr", addr).await?, router.clone()))
            }
            _ => None,
        };
        Ok(Server {
            webhook,
            health,
            metrics,
            receiver,
            reloader,
            reload_interval: config.tls_reload_interval,
            state: Arc::new(state),
        })
    }

    /// The bound addresses: (webhook, health, metrics).
    pub fn local_addrs(&self) -> Result<(SocketAddr, SocketAddr, SocketAddr), ServerError> {
        let addr = |l: &TcpListener, what| {
            l.local_addr()
                .map_err(|source| ServerError::Io { what, source })
        };
        Ok((
            addr(&self.webhook, "webhook listener")?,
            addr(&self.health, "health listener")?,
            addr(&self.metrics, "metrics listener")?,
        ))
    }

    /// The push receiver's bound address, when it is served.
    pub fn receiver_addr(&self) -> Result<Option<SocketAddr>, ServerError> {
        self.receiver
            .as_ref()
            .map(|(l, _)| {
                l.local_addr().map_err(|source| ServerError::Io {
                    what: "receiver listener",
                    source,
                })
            })
            .transpose()
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
    /// finish (up to 25 s).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let (webhook_addr, health_addr, metrics_addr) = self.local_addrs()?;
        match self.receiver_addr()? {
            Some(receiver) => {
                info!(webhook = %webhook_addr, health = %health_addr, metrics = %metrics_addr, %receiver, "listening")
            }
            None => {
                info!(webhook = %webhook_addr, health = %health_addr, metrics = %metrics_addr, "listening")
            }
        }

        let token = CancellationToken::new();
        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });

        let reloader = self.reloader.clone();
        let interval = self.reload_interval;
        let reload_token = token.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let r = reloader.clone();
                        // File reads are blocking; keep them off the request threads.
                        let _ = tokio::task::spawn_blocking(move || r.reload_if_changed()).await;
                    }
                    _ = reload_token.cancelled() => break,
                }
            }
        });

        let health = axum::serve(self.health, health_router(self.state.clone()))
            .with_graceful_shutdown(token.clone().cancelled_owned());
        let metrics = axum::serve(self.metrics, metrics_router(self.state.clone()))
            .with_graceful_shutdown(token.clone().cancelled_owned());
        let tls = self.reloader.server_config()?;
        let webhook = serve_tls(
            self.webhook,
            tls,
            webhook_router(self.state.clone()),
            token.clone(),
        );

        let receiver_listener = self.receiver;
        let receiver_token = token.clone();
        let receiver = async move {
            match receiver_listener {
                Some((listener, router)) => {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(receiver_token.cancelled_owned())
                        .await
                }
                None => Ok(()),
            }
        };

        let (h, m, w, r) = tokio::join!(health, metrics, webhook, receiver);
        r.map_err(|source| ServerError::Io {
            what: "receiver listener",
            source,
        })?;
        h.map_err(|source| ServerError::Io {
            what: "health listener",
            source,
        })?;
        m.map_err(|source| ServerError::Io {
            what: "metrics listener",
            source,
        })?;
        w?;
        info!("server stopped");
        Ok(())
    }
}

async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    token: CancellationToken,
) -> Result<(), ServerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    warn!(error = %e, "accepting a webhook connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = token.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("in-flight webhook requests did not finish within {DRAIN_TIMEOUT:?}");
    }
    Ok(())
}

/// Binds and serves until `shutdown` resolves (bind + run).
pub async fn serve(
    config: &ServerConfig,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::bind(config, state).await?.run(shutdown).await
}
