//! The routes: `/mutate` and `/validate` (the body read within its limits of size, time
//! and shared memory, answered by [`crate::admission`]), `/healthz`, `/readyz` and
//! `/metrics`.

use super::AppState;
use super::listener::Abandoned;
use crate::admission::{self, Webhook};
use crate::metrics::AdmissionLabels;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

/// Largest AdmissionReview body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

pub(crate) fn webhook_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .with_state(state)
}

async fn mutate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match read_body(request, &state.body_budget).await {
        Ok((body, _share)) => answer(&state, Webhook::Mutate, &body),
        Err(response) => refuse_body(&state, "mutate", response),
    }
}

async fn validate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match read_body(request, &state.body_budget).await {
        Ok((body, _share)) => answer(&state, Webhook::Validate, &body),
        Err(response) => refuse_body(&state, "validate", response),
    }
}

/// Bodies over [`MAX_BODY_BYTES`] are still read (and dropped) up to this size, so that
/// the client, still sending, reliably receives the 413 instead of a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
/// Time an AdmissionReview body may take to arrive once its head has (kube-apiserver
/// gives a webhook 10 s by default); a body still incomplete then gets 408.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Memory for request bodies being read, across all requests at once; a body that would
/// go over waits for others to finish (within [`BODY_TIMEOUT`]).
const BODY_BUDGET: usize = 64 * 1024 * 1024;

/// The memory of the bodies being read, in KiB, shared by all requests.
#[derive(Clone, Debug)]
pub(super) struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    pub(super) fn new() -> BodyBudget {
        BodyBudget::of_kib(BODY_BUDGET / 1024)
    }

    fn of_kib(kib: usize) -> BodyBudget {
        BodyBudget(Arc::new(Semaphore::new(kib)))
    }
}

/// One request's share of the [`BodyBudget`], given back when dropped.
struct Share {
    budget: BodyBudget,
    permit: Option<OwnedSemaphorePermit>,
    kib: usize,
}

impl Share {
    fn new(budget: &BodyBudget) -> Share {
        Share {
            budget: budget.clone(),
            permit: None,
            kib: 0,
        }
    }

    /// Waits until the share covers `bytes`.
    async fn cover(&mut self, bytes: usize) {
        let kib = bytes.div_ceil(1024);
        if kib <= self.kib {
            return;
        }
        let more = u32::try_from(kib - self.kib).unwrap_or(u32::MAX);
        // The semaphore is never closed.
        if let Ok(permit) = self.budget.0.clone().acquire_many_owned(more).await {
            match &mut self.permit {
                Some(held) => held.merge(permit),
                None => self.permit = Some(permit),
            }
            self.kib = kib;
        }
    }

    fn give_back(&mut self) {
        self.permit = None;
        self.kib = 0;
    }
}

/// Reads the body within [`BODY_TIMEOUT`] and the [`BodyBudget`]; a body over
/// [`MAX_BODY_BYTES`] becomes a 413 response, one that does not arrive in time a 408.
/// The share of the budget is held until the caller drops it.
async fn read_body(
    request: Request,
    budget: &BodyBudget,
) -> Result<(Bytes, Share), (StatusCode, String)> {
    let read = read_body_within_budget(request, budget);
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err((
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the AdmissionReview body did not arrive within {} s\n",
                    BODY_TIMEOUT.as_secs()
                ),
            ))
        })
}

async fn read_body_within_budget(
    request: Request,
    budget: &BodyBudget,
) -> Result<(Bytes, Share), (StatusCode, String)> {
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
    let abandoned = request.extensions().get::<Abandoned>().cloned();
    let mut share = Share::new(budget);
    let mut stream = request.into_body().into_data_stream();
    // Most bodies arrive in one chunk, which is kept as is; more are copied together
    // into a buffer that grows with what arrived (never with what the client declared),
    // each growth covered by the share first.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<Vec<u8>> = None;
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if let Some(abandoned) = &abandoned {
                abandoned.one_more();
            }
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
            joined = None;
            share.give_back();
            continue;
        }
        match (&first, &mut joined) {
            (None, None) => {
                share.cover(total).await;
                first = Some(chunk);
            }
            (Some(head), None) => {
                let capacity = total.saturating_mul(2).clamp(total, MAX_BODY_BYTES);
                share.cover(capacity).await;
                let mut buf = Vec::new();
                buf.reserve_exact(capacity);
                buf.extend_from_slice(head);
                buf.extend_from_slice(&chunk);
                first = None;
                joined = Some(buf);
            }
            (_, Some(buf)) => {
                if buf.len() + chunk.len() > buf.capacity() {
                    let capacity = buf
                        .capacity()
                        .saturating_mul(2)
                        .clamp(total, MAX_BODY_BYTES);
                    share.cover(capacity).await;
                    buf.reserve_exact(capacity - buf.len());
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(too_large());
    }
    let body = match (first, joined) {
        (_, Some(buf)) => Bytes::from(buf),
        (Some(head), None) => head,
        (None, None) => Bytes::new(),
    };
    Ok((body, share))
}

fn refuse_body(
    state: &AppState,
    webhook: &'static str,
    (status, message): (StatusCode, String),
) -> Response {
    // A client that breaks off bodies (an HTTP/2 stream reset) is the client's business
    // and may come by the thousand: not worth a warning each.
    if status == StatusCode::BAD_REQUEST {
        debug!(webhook, %status, "admission request body refused");
    } else {
        warn!(webhook, %status, "admission request body refused");
    }
    let result = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        _ => "bad_request",
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

pub(super) fn health_router(state: Arc<AppState>) -> Router {
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

pub(super) fn metrics_router(state: Arc<AppState>) -> Router {
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

#[cfg(test)]
mod tests;
