//! The admission webhooks end to end: the real binary (`serve --webhook-only`) with
//! certificates made at test time, driven over HTTPS by a client that trusts only the
//! test CA; plus `validate`, `crds` and the webhook registration manifests.

use base64::Engine;
use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use test_support::webhook::{Webhook, binary};

#[path = "admission/limits.rs"]
mod limits;

const PODINFO: &str = "ghcr.io/stefanprodan/podinfo";

fn review(uid: &str, version: &str, kind: &str, operation: &str, object: Value) -> Value {
    let resource = if kind == "ImageRepository" {
        "imagerepositories"
    } else {
        "imagepolicies"
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "image.toolkit.fluxcd.io", "version": version, "kind": kind},
            "resource": {"group": "image.toolkit.fluxcd.io", "version": version, "resource": resource},
            "requestKind": {"group": "image.toolkit.fluxcd.io", "version": version, "kind": kind},
            "name": object["metadata"]["name"],
            "namespace": "flux-system",
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": if operation == "DELETE" { Value::Null } else { object.clone() },
            "oldObject": if operation == "CREATE" { Value::Null } else { object },
            "dryRun": false,
        }
    })
}

fn podinfo(version: &str, spec: Value) -> Value {
    json!({
        "apiVersion": format!("image.toolkit.fluxcd.io/{version}"),
        "kind": "ImageRepository",
        "metadata": {"name": "podinfo", "namespace": "flux-system"},
        "spec": spec,
    })
}

fn policy(spec: Value) -> Value {
    json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": "podinfo", "namespace": "flux-system"},
        "spec": spec,
    })
}

async fn post(client: &reqwest::Client, server: &Webhook, path: &str, body: &Value) -> Value {
    let resp = client
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200, "{path}");
    let out: Value = resp.json().await.expect("JSON answer");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    out["response"].clone()
}

/// The mutating webhook's patch for an object without annotations: the timeout, and the
/// annotation that marks it as the webhook's (so that it follows the interval).
fn defaulted_timeout(timeout: &str) -> Value {
    json!([
        {"op": "add", "path": "/spec/timeout", "value": timeout},
        {"op": "add", "path": "/metadata/annotations", "value": {}},
        {"op": "add", "path": "/metadata/annotations/image-reflector~1defaulted-timeout", "value": timeout},
    ])
}

fn decode_patch(response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("patch is base64 text"))
        .expect("base64");
    serde_json::from_slice(&bytes).expect("patch is JSON")
}

#[tokio::test]
async fn defaults_the_seed_podinfo_example_and_echoes_the_uid() {
    let server = Webhook::start(&[]);
    let client = server.client();
    let obj = podinfo("v1beta1", json!({"interval": "10m", "image": PODINFO}));
    let r = post(
        &client,
        &server,
        "/mutate",
        &review("uid-1", "v1beta1", "ImageRepository", "CREATE", obj),
    )
    .await;
    assert_eq!(r["uid"], "uid-1");
    assert_eq!(r["allowed"], true);
    assert_eq!(decode_patch(&r), defaulted_timeout("10m"));

    let obj = podinfo("v1", json!({"interval": "2h", "image": PODINFO}));
    let r = post(
        &client,
        &server,
        "/mutate",
        &review("uid-2", "v1", "ImageRepository", "CREATE", obj),
    )
    .await;
    // Only the timeout: exclusionList and provider are the CRD schema's defaults, which the
    // API server applies before calling the webhook.
    assert_eq!(decode_patch(&r), defaulted_timeout("120m"));
}

#[tokio::test]
async fn a_defaulted_object_and_an_image_policy_get_no_patch() {
    let server = Webhook::start(&[]);
    let client = server.client();
    let spec = json!({"interval": "10m", "timeout": "10m", "image": PODINFO, "exclusionList": [], "provider": "generic"});
    let r = post(
        &client,
        &server,
        "/mutate",
        &review("u", "v1", "ImageRepository", "UPDATE", podinfo("v1", spec)),
    )
    .await;
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none(), "{r}");
    // Every default of an ImagePolicy is the CRD schema's.
    let p =
        policy(json!({"imageRepositoryRef": {"name": "podinfo"}, "policy": {"alphabetical": {}}}));
    let r = post(
        &client,
        &server,
        "/mutate",
        &review("u", "v1", "ImagePolicy", "CREATE", p),
    )
    .await;
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none(), "{r}");
}

#[tokio::test]
async fn denies_with_422_invalid_naming_every_failed_field() {
    let server = Webhook::start(&[]);
    let client = server.client();
    let obj = podinfo(
        "v1",
        json!({"interval": "ten", "image": "ghcr.io/stefanprodan/podinfo:6.0", "exclusionList": ["(x"]}),
    );
    let r = post(
        &client,
        &server,
        "/validate",
        &review("uid-9", "v1", "ImageRepository", "CREATE", obj),
    )
    .await;
    assert_eq!(r["uid"], "uid-9");
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 422);
    assert_eq!(r["status"]["reason"], "Invalid");
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("ImageRepository.image.toolkit.fluxcd.io \"podinfo\" is invalid: ["),
        "{msg}"
    );
    for needle in [
        "spec.image",
        "\"ghcr.io/stefanprodan/podinfo:6.0\" names a tag",
        "use \"ghcr.io/stefanprodan/podinfo\"",
        "spec.interval: Invalid value: \"ten\"",
        "spec.exclusionList[0]: Invalid value: \"(x\": is not a valid regular expression",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from {msg}");
    }
    let causes = r["status"]["details"]["causes"].as_array().unwrap();
    let fields: Vec<&str> = causes
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["spec.image", "spec.interval", "spec.exclusionList[0]"]
    );
}

#[tokio::test]
async fn denies_an_image_policy_with_two_orderings_and_a_bad_range() {
    let server = Webhook::start(&[]);
    let client = server.client();
    let p = policy(
        json!({"imageRepositoryRef": {"name": "podinfo"}, "policy": {"semver": {"range": "1.2.3.4.x"}, "numerical": {}}}),
    );
    let r = post(
        &client,
        &server,
        "/validate",
        &review("u", "v1beta2", "ImagePolicy", "CREATE", p),
    )
    .await;
    assert_eq!(r["allowed"], false);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("spec.policy: Invalid value") && msg.contains("set exactly one"),
        "{msg}"
    );
    assert!(msg.contains("spec.policy.semver.range"), "{msg}");
}

#[tokio::test]
async fn allows_with_warnings() {
    let server = Webhook::start(&[]);
    let client = server.client();
    let obj = podinfo(
        "v1",
        json!({"interval": "30s", "image": PODINFO, "insecure": true}),
    );
    let r = post(
        &client,
        &server,
        "/validate",
        &review("u", "v1", "ImageRepository", "CREATE", obj),
    )
    .await;
    assert_eq!(r["allowed"], true);
    let warnings: Vec<&str> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("under one minute"));
    assert!(warnings[1].contains("spec.insecure"));
}

#[tokio::test]
async fn validates_updates_that_change_the_spec_and_lets_delete_through() {
    let server = Webhook::start(&[]);
    let client = server.client();
    let bad = podinfo("v1", json!({"interval": "10m", "image": "Alpine"}));
    // UPDATE with a changed spec is validated.
    let mut body = review("u1", "v1", "ImageRepository", "UPDATE", bad.clone());
    body["request"]["oldObject"] = podinfo("v1", json!({"interval": "10m", "image": "alpine"}));
    let r = post(&client, &server, "/validate", &body).await;
    assert_eq!(r["allowed"], false, "{r}");
    // UPDATE that leaves the spec alone (a finalizer added) is allowed, even for an old
    // object that breaks today's rules.
    let mut with_finalizer = bad.clone();
    with_finalizer["metadata"]["finalizers"] = json!(["finalizers.fluxcd.io"]);
    let mut body = review("u2", "v1", "ImageRepository", "UPDATE", with_finalizer);
    body["request"]["oldObject"] = bad.clone();
    let r = post(&client, &server, "/validate", &body).await;
    assert_eq!(r["allowed"], true, "{r}");
    // DELETE: allowed, nothing to default.
    let r = post(
        &client,
        &server,
        "/validate",
        &review("u3", "v1", "ImageRepository", "DELETE", bad.clone()),
    )
    .await;
    assert_eq!(
        (r["uid"].as_str(), r["allowed"].as_bool()),
        (Some("u3"), Some(true))
    );
    let r = post(
        &client,
        &server,
        "/mutate",
        &review("u4", "v1", "ImageRepository", "DELETE", bad),
    )
    .await;
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none());
}

#[tokio::test]
async fn answers_dry_run_requests_like_any_other() {
    let server = Webhook::start(&[]);
    let client = server.client();
    let mut body = review(
        "dry",
        "v1beta1",
        "ImageRepository",
        "CREATE",
        podinfo("v1beta1", json!({"interval": "10m", "image": PODINFO})),
    );
    body["request"]["dryRun"] = json!(true);
    let r = post(&client, &server, "/mutate", &body).await;
    assert_eq!(r["uid"], "dry");
    assert_eq!(decode_patch(&r), defaulted_timeout("10m"));
    body["request"]["object"]["spec"]["image"] = json!("https://ghcr.io/x");
    let r = post(&client, &server, "/validate", &body).await;
    assert_eq!(r["allowed"], false);
}

#[tokio::test]
async fn refuses_malformed_bodies_with_400_and_keeps_serving() {
    let server = Webhook::start(&[]);
    let client = server.client();
    let cases: [(&str, &str); 4] = [
        ("{not json", "not a valid AdmissionReview"),
        (
            r#"{"apiVersion":"v1","kind":"Pod"}"#,
            "expected apiVersion \"admission.k8s.io/v1\" and kind \"AdmissionReview\"",
        ),
        (
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "has no request",
        ),
        (
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x"}}"#,
            "missing field",
        ),
    ];
    for (body, expected) in cases {
        let resp = client
            .post(server.url("/validate"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(expected), "{body}: {text}");
    }
    // Still serving.
    let ok = podinfo("v1", json!({"interval": "10m", "image": PODINFO}));
    let r = post(
        &client,
        &server,
        "/validate",
        &review("after", "v1", "ImageRepository", "CREATE", ok),
    )
    .await;
    assert_eq!(r["allowed"], true);
}

#[tokio::test]
async fn lets_a_kind_it_does_not_handle_through_untouched() {
    let server = Webhook::start(&[]);
    let client = server.client();
    let mut body = review(
        "k",
        "v1",
        "ImageRepository",
        "CREATE",
        podinfo("v1", json!({})),
    );
    body["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    for path in ["/mutate", "/validate"] {
        let r = post(&client, &server, path, &body).await;
        assert_eq!(r, json!({"uid": "k", "allowed": true}), "{path}");
    }
}

#[tokio::test]
async fn refuses_a_body_over_3_mib_with_413() {
    let server = Webhook::start(&[]);
    for http1 in [true, false] {
        let builder = server.client_builder();
        let client = if http1 {
            builder.http1_only().build().unwrap()
        } else {
            builder.build().unwrap()
        };
        let big = podinfo(
            "v1",
            json!({"interval": "10m", "image": PODINFO, "padding": "x".repeat(3 * 1024 * 1024)}),
        );
        let body =
            serde_json::to_vec(&review("big", "v1", "ImageRepository", "CREATE", big)).unwrap();
        let resp = client
            .post(server.url("/validate"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413);
        assert!(resp.text().await.unwrap().contains("3 MiB"));
        // Just under the limit is answered.
        let near = podinfo(
            "v1",
            json!({"interval": "10m", "image": PODINFO, "padding": "x".repeat(3 * 1024 * 1024 - 4096)}),
        );
        let r = post(
            &client,
            &server,
            "/validate",
            &review("near", "v1", "ImageRepository", "CREATE", near),
        )
        .await;
        assert_eq!(r["uid"], "near");
    }
}

#[tokio::test]
async fn speaks_http2_and_http1_over_tls_1_2_and_1_3() {
    let server = Webhook::start(&[]);
    let body = review(
        "v",
        "v1",
        "ImageRepository",
        "CREATE",
        podinfo("v1", json!({"interval": "10m", "image": PODINFO})),
    );
    let tls = reqwest::tls::Version::TLS_1_2;
    let clients = [
        ("HTTP/2", server.client(), reqwest::Version::HTTP_2),
        (
            "HTTP/1.1",
            server.client_builder().http1_only().build().unwrap(),
            reqwest::Version::HTTP_11,
        ),
        (
            "TLS 1.2",
            server
                .client_builder()
                .tls_version_max(tls)
                .build()
                .unwrap(),
            reqwest::Version::HTTP_2,
        ),
        (
            "TLS 1.3",
            server
                .client_builder()
                .tls_version_min(reqwest::tls::Version::TLS_1_3)
                .build()
                .unwrap(),
            reqwest::Version::HTTP_2,
        ),
    ];
    for (name, client, version) in clients {
        let resp = client
            .post(server.url("/validate"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(resp.version(), version, "{name}");
    }
}

#[test]
fn refuses_tls_1_1() {
    let server = Webhook::start(&[]);
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &server.webhook.to_string(),
            "-tls1_1",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed by scripts/install-test-deps.sh (make test-deps)");
    assert!(!out.status.success(), "a TLS 1.1 handshake succeeded");
}

#[tokio::test]
async fn rotates_the_certificate_without_failing_a_request() {
    let server = Webhook::start(&[]);
    let body = Arc::new(review(
        "r",
        "v1",
        "ImageRepository",
        "CREATE",
        podinfo("v1", json!({"interval": "10m", "image": PODINFO})),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..4 {
        // Half keep their connection alive, half reconnect for every request.
        let client = if i % 2 == 0 {
            server.client()
        } else {
            server
                .client_builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap()
        };
        let (url, body, stop, ok) = (
            server.url("/validate"),
            body.clone(),
            stop.clone(),
            ok.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client.post(&url).json(&*body).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("{e:?}")),
                }
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ok.load(Ordering::Relaxed);
    let new_leaf = server.ca.server(&["localhost", "127.0.0.1"]);
    server.rotate(&new_leaf);

    // Wait until a fresh connection is served the new certificate.
    let new_der = pem_to_der(&new_leaf.cert_pem);
    let mut served_new = false;
    for _ in 0..100 {
        let probe = server
            .client_builder()
            .tls_info(true)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let resp = probe
            .post(server.url("/validate"))
            .json(&*body)
            .send()
            .await
            .unwrap();
        let info = resp.extensions().get::<reqwest::tls::TlsInfo>().cloned();
        if info.and_then(|i| i.peer_certificate().map(|c| c.to_vec())) == Some(new_der.clone()) {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        served_new,
        "the new certificate was never served; log:\n{}",
        server.log()
    );
    assert!(
        failures.is_empty(),
        "requests failed during rotation: {failures:?}"
    );
    assert!(
        ok.load(Ordering::Relaxed) > before,
        "no requests ran after the rotation"
    );
    assert!(server.log().contains("serving certificate reloaded"));
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[tokio::test]
async fn keeps_the_old_certificate_when_the_new_files_do_not_load() {
    let server = Webhook::start(&[]);
    let client = server.client();
    test_support::webhook::write_atomically(&server.key_file, "not a key");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let body = review(
        "k",
        "v1",
        "ImageRepository",
        "CREATE",
        podinfo("v1", json!({"interval": "10m", "image": PODINFO})),
    );
    let fresh = server
        .client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    assert_eq!(
        fresh
            .post(server.url("/validate"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .post(server.url("/validate"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        server.log().contains("keeping the previous one"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn serves_health_readiness_and_metrics_over_plain_http() {
    let server = Webhook::start(&[]);
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let resp = http
            .get(format!("http://{}{path}", server.health))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let client = server.client();
    let obj = podinfo("v1", json!({"interval": "10m", "image": "alpine:3"}));
    post(
        &client,
        &server,
        "/validate",
        &review("m", "v1", "ImageRepository", "CREATE", obj),
    )
    .await;
    let text = http
        .get(format!("http://{}/metrics", server.metrics))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"admission_requests_total{webhook="validate",kind="ImageRepository",operation="CREATE",result="denied"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("admission_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[test]
fn stops_gracefully_on_sigterm() {
    let mut server = Webhook::start(&[]);
    let status = server
        .terminate(Duration::from_secs(10))
        .expect("exited within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(server.log().contains("server stopped"), "{}", server.log());
}

#[test]
fn serve_without_a_cluster_says_where_it_looked_and_suggests_webhook_only() {
    let store = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .env_remove("KUBECONFIG")
        .env("HOME", store.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args([
            "serve",
            "--webhook-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--storage-path")
        .arg(store.path().join("tags"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KUBECONFIG"), "{stderr}");
    assert!(stderr.contains("--webhook-only"), "{stderr}");
    assert!(
        !store.path().join("tags").exists(),
        "nothing is created before the cluster is found"
    );
}

#[test]
fn refuses_to_start_with_a_key_that_does_not_match_the_certificate() {
    let ca = test_support::certs::TestCa::new("ca");
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = ca.server(&["localhost"]).write(dir.path(), "a");
    let (_, key) = ca.server(&["localhost"]).write(dir.path(), "b");
    let out = Command::new(binary())
        .args([
            "serve",
            "--webhook-only",
            "--webhook-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--tls-key-file") && stderr.contains("belongs to the certificate"),
        "{stderr}"
    );
}

// ---- the offline validator, the CRDs, the registration manifests ----

#[test]
fn validate_command_exits_1_when_an_object_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, format!("apiVersion: image.toolkit.fluxcd.io/v1beta1\nkind: ImageRepository\nmetadata: {{name: podinfo, namespace: flux-system}}\nspec: {{interval: 10m, image: {PODINFO}}}\n")).unwrap();
    let out = Command::new(binary())
        .arg("validate")
        .arg("-f")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("ImageRepository flux-system/podinfo: allowed")
    );

    let out = Command::new(binary())
        .arg("validate")
        .arg("-f")
        .arg(&good)
        .args(["-o", "yaml"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("timeout: 10m"),
        "{out:?}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata: {name: x}\nspec: {interval: 1d, image: alpine}\n").unwrap();
    let out = Command::new(binary())
        .arg("validate")
        .arg("-f")
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.contains("denied: spec.interval: Invalid value: \"1d\""),
        "{stdout}"
    );
}

#[test]
fn validate_command_reads_stdin() {
    use std::io::Write;
    let mut child = Command::new(binary())
        .args(["validate", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"apiVersion":"image.toolkit.fluxcd.io/v1","kind":"ImagePolicy","metadata":{"name":"p"},"spec":{"imageRepositoryRef":{"name":"r"},"policy":{"numerical":{"order":"up"}}}}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("<stdin>#1 ImagePolicy default/p: denied: spec.policy.numerical.order")
    );
}

#[test]
fn crds_command_prints_the_committed_manifests() {
    let out = Command::new(binary()).arg("crds").output().unwrap();
    assert!(out.status.success());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed: String = ["imagerepositories.yaml", "imagepolicies.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(root.join("manifests/crds").join(f)).unwrap())
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        committed,
        "run `make manifests`"
    );
}

#[test]
fn webhook_registrations_cover_both_kinds_every_version_create_and_update() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("webhook");
    for file in [
        "cert-manager/webhook-configurations.yaml",
        "ca-bundle/webhook-configurations.yaml.in",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut kinds = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            kinds.push(v["kind"].as_str().unwrap().to_string());
            for hook in v["webhooks"].as_array().unwrap() {
                assert_eq!(hook["sideEffects"], "None", "{file}");
                assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
                assert_eq!(hook["failurePolicy"], "Fail");
                assert_eq!(hook["timeoutSeconds"], 10);
                let rule = &hook["rules"][0];
                assert_eq!(rule["apiVersions"], json!(["v1beta1", "v1beta2", "v1"]));
                assert_eq!(rule["operations"], json!(["CREATE", "UPDATE"]));
                assert_eq!(
                    rule["resources"],
                    json!(["imagerepositories", "imagepolicies"])
                );
                let path = hook["clientConfig"]["service"]["path"].as_str().unwrap();
                assert!(path == "/mutate" || path == "/validate");
                if file.starts_with("cert-manager") {
                    assert!(
                        v["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].is_string()
                    );
                } else {
                    assert_eq!(hook["clientConfig"]["caBundle"], "${CA_BUNDLE}");
                }
            }
        }
        assert_eq!(
            kinds,
            [
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration"
            ],
            "{file}"
        );
    }
}
