//! The push receiver: registries' push notifications in, immediate scans of exactly the
//! ImageRepositories of the pushed image out.
//!
//! ```text
//! POST /hooks/PROVIDER[/TOKEN] ─> size limit ─> caches synced? ─> auth (Secret) ─> parse
//!      ─> dispatcher: match (watched cache) ─> dedupe ─> coalesce ─> patch requestedAt
//!                                                                       │ (API)
//!            leader's ImageRepository controller <── watch ─────────────┘
//! ```
//!
//! Served on its own listener (`--receiver-addr`, plain HTTP behind the Ingress that
//! terminates TLS), not on the admission port: see [`crate::server`] and the README for
//! why. Every replica serves it; the scan itself happens on the leader, reached through
//! the API (the `reconcile.fluxcd.io/requestedAt` annotation), so it does not matter
//! which replica a registry's delivery lands on.
//!
//! Answers: 202 with a small JSON summary for every authenticated, well-formed delivery
//! (whether or not anything watches the image: registries retry anything else, and a
//! push nobody watches is not an error); 401 when authentication fails (nothing else is
//! looked at, nothing changes); 400 for a body that is not the provider's JSON; 404 for
//! an unknown provider or a URL token given to a provider that authenticates otherwise;
//! 408 for a body that does not arrive within 10 s; 413 above 1 MiB; 503 until the
//! watched caches and the Secret have synced (the sender retries).

pub mod auth;
mod dispatch;
mod metrics;
pub mod providers;

pub use dispatch::Coalescing;
pub use metrics::Outcome;
pub use providers::Provider;

use crate::api::ImageRepository;
use crate::server::Readiness;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Largest delivery accepted; larger ones get 413. Push payloads are a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Time a delivery's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the receiver (flags of `serve`).
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Namespace of the Secret (`--runtime-namespace`).
    pub namespace: String,
    /// Name of the Secret holding the providers' secrets (`--receiver-secret`).
    pub secret_name: String,
    /// When bursts become scan requests.
    pub coalescing: Coalescing,
}

/// The receiver: handlers plus the dispatcher's background tasks.
pub struct Receiver {
    secrets: auth::Secrets,
    secrets_synced: Arc<AtomicBool>,
    dispatcher: Arc<dispatch::Dispatcher>,
    metrics: metrics::ReceiverMetrics,
    readiness: Readiness,
}

impl Receiver {
    /// Sets up the receiver and starts the watch of its Secret (only that one Secret, by
    /// name; its data stays in this process's memory and nowhere else).
    pub fn start(
        config: &ReceiverConfig,
        client: &Client,
        repositories: Store<ImageRepository>,
        readiness: Readiness,
    ) -> Arc<Receiver> {
        let (store, writer) = reflector::store();
        let watch = watcher(
            kube::Api::<Secret>::namespaced(client.clone(), &config.namespace),
            watcher::Config::default().fields(&format!("metadata.name={}", config.secret_name)),
        )
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .for_each(|r| {
            if let Err(e) = r {
                warn!(error = %e, "watching the receiver's Secret failed; retrying with backoff");
            }
            futures::future::ready(())
        });
        tokio::spawn(watch);
        let secrets_synced = Arc::new(AtomicBool::new(false));
        let synced = secrets_synced.clone();
        let ready_store = store.clone();
        tokio::spawn(async move {
            if ready_store.wait_until_ready().await.is_ok() {
                synced.store(true, Ordering::Release);
            }
        });
        let metrics = metrics::ReceiverMetrics::default();
        Arc::new(Receiver {
            secrets: auth::Secrets::new(store, &config.namespace, &config.secret_name),
            secrets_synced,
            dispatcher: Arc::new(dispatch::Dispatcher::new(
                repositories,
                config.coalescing,
                metrics.clone(),
            )),
            metrics,
            readiness,
        })
    }

    pub fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    /// Runs the scan requests and the wait measurement until `shutdown`. `changes`: every
    /// ImageRepository the watch sees (to notice when a requested scan is recorded).
    pub fn spawn_tasks(
        &self,
        client: Client,
        changes: broadcast::Receiver<ImageRepository>,
        shutdown: CancellationToken,
    ) {
        tokio::spawn(self.dispatcher.clone().run(client, shutdown.clone()));
        tokio::spawn(self.dispatcher.clone().track(changes, shutdown));
    }

    /// `/hooks/{provider}` and `/hooks/{provider}/{token}`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/hooks/{provider}", post(hook))
            .route("/hooks/{provider}/{token}", post(hook_with_token))
            .fallback(not_found)
            .with_state(self.clone())
    }

    async fn handle(
        &self,
        provider_name: &str,
        url_token: Option<&str>,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Body,
    ) -> Response {
        let Some(provider) = Provider::from_name(provider_name) else {
            self.metrics.event("unknown", Outcome::UnknownProvider);
            let known: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
            return refuse(
                StatusCode::NOT_FOUND,
                format!(
                    "no provider {provider_name:?}; use one of {}",
                    known.join(", ")
                ),
            );
        };
        let label = provider.as_str();
        let takes_url_token = provider.auth_scheme() == providers::AuthScheme::UrlToken;
        if url_token.is_some() && !takes_url_token {
            self.metrics.event(label, Outcome::UnknownProvider);
            return refuse(
                StatusCode::NOT_FOUND,
                format!(
                    "{provider} deliveries carry their secret in a header, not in the URL; use /hooks/{provider}"
                ),
            );
        }
        let body = match read_body(headers, body).await {
            Ok(body) => body,
            Err((status, outcome, message)) => {
                self.metrics.event(label, outcome);
                return refuse(status, message);
            }
        };
        if self.readiness.check().is_err() || !self.secrets_synced.load(Ordering::Acquire) {
            self.metrics.event(label, Outcome::Unavailable);
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the watched caches have not synced yet; retry".into(),
            );
        }
        if let Err(e) = self.secrets.verify(provider, headers, &body, url_token) {
            // The reason is logged for the operator; the sender learns only the status.
            warn!(%provider, reason = %e, "push notification refused: authentication failed");
            self.metrics.event(label, Outcome::Unauthorized);
            return refuse(StatusCode::UNAUTHORIZED, "authentication failed".into());
        }
        let registry = match registry_override(query) {
            Ok(registry) => registry,
            Err(message) => {
                self.metrics.event(label, Outcome::BadRequest);
                return refuse(StatusCode::BAD_REQUEST, message);
            }
        };
        let notification = match provider.parse(headers, &body, registry.as_deref()) {
            Ok(n) => n,
            Err(e) => {
                warn!(%provider, error = %e, "push notification refused: malformed");
                self.metrics.event(label, Outcome::BadRequest);
                return refuse(StatusCode::BAD_REQUEST, e.to_string());
            }
        };
        let pushes = notification.pushes.len();
        let accepted = self.dispatcher.accept(provider, notification.pushes);
        let outcome = if pushes == 0 {
            Outcome::Ignored
        } else if accepted.duplicates == pushes {
            Outcome::Duplicate
        } else if accepted.repositories == 0 {
            Outcome::Unwatched
        } else {
            Outcome::Triggered
        };
        debug!(%provider, pushes, ignored = notification.ignored, result = outcome.as_str(), "push notification received");
        self.metrics.event(label, outcome);
        let summary = serde_json::json!({
            "result": outcome.as_str(),
            "pushes": pushes,
            "ignored": notification.ignored,
            "duplicates": accepted.duplicates,
            "repositories": accepted.repositories,
        });
        (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{summary}\n"),
        )
            .into_response()
    }
}

async fn hook(
    State(receiver): State<Arc<Receiver>>,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receiver
        .handle(&provider, None, query.as_deref(), &headers, body)
        .await
}

async fn hook_with_token(
    State(receiver): State<Arc<Receiver>>,
    Path((provider, token)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receiver
        .handle(&provider, Some(&token), query.as_deref(), &headers, body)
        .await
}

async fn not_found() -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        "push notifications go to POST /hooks/PROVIDER (or /hooks/PROVIDER/TOKEN)".into(),
    )
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, format!("{message}\n")).into_response()
}

/// `?registry=HOST[:PORT]`: the registry as ImageRepositories name it, when the payload
/// names it otherwise.
fn registry_override(query: Option<&str>) -> Result<Option<String>, String> {
    let Some(query) = query else {
        return Ok(None);
    };
    let Some((_, value)) =
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "registry")
    else {
        return Ok(None);
    };
    let valid = crate::reference::ImageRef::parse(&format!("{value}/x"))
        .is_ok_and(|r| r.registry() == value);
    if valid {
        Ok(Some(value.into_owned()))
    } else {
        Err(format!(
            "?registry={value:?} is not a registry host; write HOST or HOST:PORT, e.g. registry.example.com:5000"
        ))
    }
}

/// The body, up to [`MAX_BODY_BYTES`] and within [`BODY_TIMEOUT`].
async fn read_body(
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, (StatusCode, Outcome, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::TooLarge,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(MAX_BODY_BYTES));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    Outcome::BadRequest,
                    format!("reading the body: {e}"),
                )
            })?;
            if buf.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err((
                StatusCode::REQUEST_TIMEOUT,
                Outcome::BadRequest,
                format!("the body did not arrive within {BODY_TIMEOUT:?}"),
            ))
        })
}

#[cfg(test)]
mod http_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_override_must_be_a_host() {
        assert_eq!(registry_override(None), Ok(None));
        assert_eq!(registry_override(Some("other=1")), Ok(None));
        assert_eq!(
            registry_override(Some("registry=registry.example.com%3A5000")),
            Ok(Some("registry.example.com:5000".into()))
        );
        assert!(registry_override(Some("registry=a/b")).is_err());
        assert!(registry_override(Some("registry=")).is_err());
        assert!(registry_override(Some("registry=UPPER.example.com:x")).is_err());
    }
}
