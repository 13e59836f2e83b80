//! Whole AdmissionReview requests to `/mutate` and `/validate`, through the server's own
//! routes (body limits included). Input: a selector byte (webhook, cluster view and
//! `--no-cross-namespace-refs`, how the body is split into chunks, a declared length),
//! then the body. Every request is answered 200, 400 or 413, and a 200 carries an
//! AdmissionReview response.
#![no_main]

use axum::body::Body;
use http::Request;
use image_reflector::admission::{Admission, ClusterView};
use image_reflector::api::ImageRepository;
use image_reflector::fuzzing::admission_router;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use tower::ServiceExt as _;

/// A cluster with one shared ImageRepository `shared/app` open to namespaces labelled
/// `team: a`, and namespace `a` so labelled.
struct Cluster(Arc<ImageRepository>);

impl ClusterView for Cluster {
    fn image_repository(&self, namespace: &str, name: &str) -> Option<Arc<ImageRepository>> {
        (namespace == "shared" && name == "app").then(|| self.0.clone())
    }
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        (namespace == "a").then(|| BTreeMap::from([("team".to_string(), "a".to_string())]))
    }
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    // Timers: the routes bound how long a body may take to arrive.
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
});

static ROUTERS: LazyLock<[axum::Router; 3]> = LazyLock::new(|| {
    let repository: ImageRepository = serde_json::from_value(serde_json::json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1",
        "kind": "ImageRepository",
        "metadata": {"name": "app", "namespace": "shared"},
        "spec": {
            "image": "ghcr.io/team/app",
            "interval": "5m",
            "accessFrom": {"namespaceSelectors": [{"matchLabels": {"team": "a"}}]}
        }
    }))
    .expect("repository");
    let cluster: Arc<dyn ClusterView> = Arc::new(Cluster(Arc::new(repository)));
    [
        admission_router(Admission::default()),
        admission_router(Admission {
            cluster: Some(cluster.clone()),
            no_cross_namespace_refs: false,
        }),
        admission_router(Admission {
            cluster: Some(cluster),
            no_cross_namespace_refs: true,
        }),
    ]
});

/// Larger than the 3 MiB the server accepts.
const OVERSIZED: usize = 3 * 1024 * 1024 + 1;

fuzz_target!(|input: &[u8]| {
    let Some((&select, body)) = input.split_first() else {
        return;
    };
    let path = if select & 1 == 0 {
        "/validate"
    } else {
        "/mutate"
    };
    let router = ROUTERS[usize::from(select >> 1 & 3) % 3].clone();
    let chunks = 1 + usize::from(select >> 3 & 3);
    let mut body = body.to_vec();
    if select == 0xff {
        body.resize(OVERSIZED, b' ');
    }
    let size = body.len().div_ceil(chunks).max(1);
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(size).map(|c| Ok(c.to_vec())).collect();
    let mut request = Request::post(path).header("content-type", "application/json");
    if select & 0x20 != 0 {
        request = request.header("content-length", body.len());
    }
    let request = request
        .body(Body::from_stream(futures::stream::iter(pieces)))
        .expect("request");
    let response = RUNTIME
        .block_on(router.oneshot(request))
        .expect("the router is infallible");
    let status = response.status().as_u16();
    assert!(matches!(status, 200 | 400 | 413), "answered {status}");
    assert_eq!(
        status == 413,
        body.len() > 3 * 1024 * 1024,
        "answered {status}"
    );
    if status == 200 {
        let bytes = RUNTIME
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .expect("answer body");
        let review: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON answer");
        assert_eq!(review["kind"], "AdmissionReview");
        assert!(review["response"]["uid"].is_string(), "{review}");
        assert!(review["response"]["allowed"].is_boolean(), "{review}");
    }
});
