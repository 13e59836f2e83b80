//! Benchmark baseline for `make bench-webhook`: the least an axum + rustls server can do
//! for an admission webhook. It reads the body and answers a fixed AdmissionReview without
//! parsing anything, with the same TLS setup as `image-reflector serve` (TLS 1.2/1.3,
//! HTTP/1.1 + HTTP/2, aws-lc-rs).
//!
//!     cargo run --release --example webhook_baseline -- ADDR CERT_PEM KEY_PEM [BUSY_NS | --echo-uid]
//!
//! Prints `listening on ADDR` once bound (port 0 picks a free port). With BUSY_NS, every
//! request also keeps its thread busy for that many nanoseconds (a spin, no allocation):
//! `make bench-webhook` uses it to show what a given handler cost does to the ratio on the
//! machine at hand. With `--echo-uid` it answers with the request's uid, the least a
//! webhook must read for kube-apiserver to accept its answer: the bare webhook that
//! `bench_webhook_latency` registers beside image-reflector's.

#![forbid(unsafe_code)]

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ANSWER: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;

/// The fixed answer, after keeping the thread busy for `busy` (zero: not at all).
async fn fixed(busy: Duration) -> ([(header::HeaderName, &'static str); 1], &'static [u8]) {
    // Without BUSY_NS the baseline does no work at all, not even a clock read.
    if !busy.is_zero() {
        let start = Instant::now();
        while start.elapsed() < busy {
            std::hint::spin_loop();
        }
    }
    ([(header::CONTENT_TYPE, "application/json")], ANSWER)
}

/// The envelope's `request.uid`, every other field skipped unread.
#[derive(Deserialize)]
struct Review<'a> {
    #[serde(borrow)]
    request: Uid<'a>,
}

#[derive(Deserialize)]
struct Uid<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
}

/// The allowing answer to the review in `body`, with its uid; 400 if there is none.
async fn echo_uid(body: Bytes) -> Response {
    match serde_json::from_slice::<Review>(&body) {
        Ok(review) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": review.request.uid, "allowed": true},
            })
            .to_string(),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (addr, cert, key, mode) = match args.as_slice() {
        [_, addr, cert, key] => (addr, cert, key, None),
        [_, addr, cert, key, mode] => (addr, cert, key, Some(mode.as_str())),
        _ => {
            return Err(
                "usage: webhook_baseline ADDR CERT_PEM KEY_PEM [BUSY_NS | --echo-uid]".into(),
            );
        }
    };
    let router = match mode {
        Some("--echo-uid") => Router::new()
            .route("/mutate", post(echo_uid))
            .route("/validate", post(echo_uid)),
        _ => {
            let busy_ns = match mode {
                None => 0,
                Some(n) => n.parse::<u64>().map_err(|e| {
                    format!("webhook_baseline: {n:?} is neither BUSY_NS (nanoseconds) nor --echo-uid: {e}")
                })?,
            };
            let busy = Duration::from_nanos(busy_ns);
            // The body is read (as a bare server must, for keep-alive) and not parsed.
            let answer = move |_body: Bytes| fixed(busy);
            Router::new()
                .route("/mutate", post(answer))
                .route("/validate", post(answer))
        }
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("webhook_baseline: certificate {cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("webhook_baseline: key {key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(addr.as_str()).await?;
    println!("listening on {}", listener.local_addr()?);
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (acceptor, builder, router) = (acceptor.clone(), builder.clone(), router.clone());
        tokio::spawn(async move {
            if let Ok(stream) = acceptor.accept(tcp).await {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
                    .await;
            }
        });
    }
}
