//! The routes: `/mutate` and `/validate` (the body read within its limits, answered by
//! [`crate::admission`]), `/healthz`, `/readyz` and `/metrics`.

use super::AppState;
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
use tracing::{debug, warn};

/// Largest AdmissionReview body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

pub(super) fn webhook_router(state: Arc<AppState>) -> Router {
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
