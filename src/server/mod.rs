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

mod listener;
mod routes;
mod tls;

pub use routes::MAX_BODY_BYTES;
pub(crate) use routes::webhook_router;

use crate::admission::Admission;
use crate::metrics::AdmissionMetrics;
use axum::Router;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tls::CertReloader;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

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
    body_budget: routes::BodyBudget,
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
            body_budget: routes::BodyBudget::new(),
        }
    }

    /// Serves `receiver` (the push receiver's routes) on `--receiver-addr`.
    pub fn with_receiver(mut self, receiver: Router) -> AppState {
        self.receiver = Some(receiver);
        self
    }
}

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

        let health = axum::serve(self.health, routes::health_router(self.state.clone()))
            .with_graceful_shutdown(token.clone().cancelled_owned());
        let metrics = axum::serve(self.metrics, routes::metrics_router(self.state.clone()))
            .with_graceful_shutdown(token.clone().cancelled_owned());
        let tls = self.reloader.server_config()?;
        let webhook = listener::serve_tls(
            self.webhook,
            tls,
            routes::webhook_router(self.state.clone()),
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
/// Binds and serves until `shutdown` resolves (bind + run).
pub async fn serve(
    config: &ServerConfig,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::bind(config, state).await?.run(shutdown).await
}
