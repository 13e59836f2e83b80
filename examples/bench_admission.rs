//! Micro-benchmark of the webhook handler alone (no HTTP, no TLS): calls
//! `image_reflector::admission::handle` in a loop on the AdmissionReview body that
//! `make bench-webhook` sends and prints nanoseconds per call for `/validate` and `/mutate`.
//!
//!     cargo run --release --example bench_admission -- [BODY_JSON] [ITERATIONS]
//!
//! Without BODY_JSON it uses the same ImageRepository CREATE as bench/webhook.sh.

use image_reflector::admission::{Admission, Endpoint, handle};
use std::time::Instant;

const BODY: &str = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","kind":{"group":"image.toolkit.fluxcd.io","version":"v1","kind":"ImageRepository"},"resource":{"group":"image.toolkit.fluxcd.io","version":"v1","resource":"imagerepositories"},"requestKind":{"group":"image.toolkit.fluxcd.io","version":"v1","kind":"ImageRepository"},"requestResource":{"group":"image.toolkit.fluxcd.io","version":"v1","resource":"imagerepositories"},"name":"podinfo","namespace":"flux-system","operation":"CREATE","userInfo":{"username":"system:serviceaccount:flux-system:kustomize-controller","uid":"8f2c0a4e-8a1d-4c1b-9a55-2c7d3f0e9b11","groups":["system:serviceaccounts","system:serviceaccounts:flux-system","system:authenticated"]},"object":{"apiVersion":"image.toolkit.fluxcd.io/v1","kind":"ImageRepository","metadata":{"name":"podinfo","namespace":"flux-system","labels":{"kustomize.toolkit.fluxcd.io/name":"flux-system","kustomize.toolkit.fluxcd.io/namespace":"flux-system"},"annotations":{"reconcile.fluxcd.io/requestedAt":"2024-05-01T10:00:00Z"},"managedFields":[{"manager":"kustomize-controller","operation":"Apply","apiVersion":"image.toolkit.fluxcd.io/v1","time":"2024-05-01T10:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{"f:kustomize.toolkit.fluxcd.io/name":{},"f:kustomize.toolkit.fluxcd.io/namespace":{}}},"f:spec":{"f:image":{},"f:interval":{},"f:secretRef":{"f:name":{}},"f:exclusionList":{}}}}]},"spec":{"image":"ghcr.io/stefanprodan/podinfo","interval":"5m","timeout":"1m","provider":"generic","secretRef":{"name":"ghcr-auth"},"exclusionList":["^.*\\.sig$","^sha256-.*$"],"accessFrom":{"namespaceSelectors":[{"matchLabels":{"kubernetes.io/metadata.name":"apps"}}]}}},"oldObject":null,"dryRun":false,"options":{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1","fieldManager":"kustomize-controller"}}}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let body = match args.get(1) {
        Some(path) if path != "-" => std::fs::read(path)?,
        _ => BODY.as_bytes().to_vec(),
    };
    let iterations: u32 = match args.get(2) {
        Some(n) => n.parse()?,
        None => 200_000,
    };
    let admission = Admission::default();
    for (name, endpoint) in [
        ("validate", Endpoint::Validate),
        ("mutate", Endpoint::Mutate),
    ] {
        let first = handle(&body, endpoint, &admission)?;
        // Warm-up (regex verdict cache, allocator).
        for _ in 0..iterations / 10 {
            std::hint::black_box(handle(std::hint::black_box(&body), endpoint, &admission)?);
        }
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(handle(std::hint::black_box(&body), endpoint, &admission)?);
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(iterations);
        println!(
            "{name:<9} {ns:>8.0} ns/op  ({} -> {}, {} response bytes)",
            body.len(),
            first.result,
            first.body.len()
        );
    }
    Ok(())
}
