//! A real HTTPS admission webhook server for the tests: mutates (patch as an array of
//! bytes, as kube-rs sends it, or base64), validates (denies large widgets, warns on names
//! starting with `warn`), and answers `/slow` after 15 s.

use base64::Engine;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A real HTTPS admission webhook server on its own thread; records every request.
pub struct Webhooks {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn review_response(uid: &Value, mut response: Value) -> Value {
    response["uid"] = uid.clone();
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

fn answer(path: &str, review: &Value) -> Value {
    let req = &review["request"];
    let uid = &req["uid"];
    let obj = &req["object"];
    let add_annotation = |key: &str| {
        if obj["metadata"]["annotations"].is_object() {
            json!([{"op": "add", "path": format!("/metadata/annotations/{key}"), "value": "yes"}])
        } else {
            json!([{"op": "add", "path": "/metadata/annotations", "value": {key: "yes"}}])
        }
    };
    match path {
        // kube-rs's AdmissionResponse::with_patch sends the patch as an array of bytes.
        "/mutate-bytes" => {
            let bytes: Vec<u8> = serde_json::to_vec(&add_annotation("mutated-bytes")).unwrap();
            review_response(
                uid,
                json!({"allowed": true, "patchType": "JSONPatch", "patch": bytes}),
            )
        }
        "/mutate-b64" => {
            let patch = base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(&add_annotation("mutated-b64")).unwrap());
            review_response(
                uid,
                json!({"allowed": true, "patchType": "JSONPatch", "patch": patch}),
            )
        }
        "/validate" | "/slow" => {
            let name = obj["metadata"]["name"].as_str().unwrap_or("");
            if obj["spec"]["size"] == "large" {
                review_response(
                    uid,
                    json!({"allowed": false, "status": {
                    "code": 403, "reason": "Forbidden", "message": "spec.size: large widgets are not allowed here"}}),
                )
            } else if name.starts_with("deny-plain") {
                review_response(
                    uid,
                    json!({"allowed": false, "status": {"message": "plain denial"}}),
                )
            } else if name.starts_with("warn") {
                review_response(
                    uid,
                    json!({"allowed": true, "warnings": ["spec.interval: 5m is the default; consider 1h"]}),
                )
            } else {
                review_response(uid, json!({"allowed": true}))
            }
        }
        _ => json!({}),
    }
}

impl Webhooks {
    pub fn start(cert_pem: &str, key_pem: &str) -> Webhooks {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let seen2 = seen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let router = axum::Router::new().fallback(
                    move |uri: axum::http::Uri, body: axum::Json<Value>| {
                        let seen = seen2.clone();
                        async move {
                            if uri.path() == "/slow" {
                                tokio::time::sleep(std::time::Duration::from_secs(15)).await;
                            }
                            seen.lock()
                                .unwrap()
                                .push((uri.path().to_string(), body.0.clone()));
                            axum::Json(answer(uri.path(), &body.0))
                        }
                    },
                );
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        Ok((tcp, _)) = listener.accept() => {
                            let acceptor = acceptor.clone();
                            let router = router.clone();
                            tokio::spawn(async move {
                                let Ok(tls) = acceptor.accept(tcp).await else { return };
                                let svc = hyper_util::service::TowerToHyperService::new(router);
                                let _ = hyper_util::server::conn::auto::Builder::new(
                                    hyper_util::rt::TokioExecutor::new(),
                                )
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                                .await;
                            });
                        }
                    }
                }
            });
        });
        Webhooks {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn seen(&self, path: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
