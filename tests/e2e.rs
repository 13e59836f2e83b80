//! End to end, with no cluster: the real OCI registry (Debian's `docker-registry`), the
//! project's Kubernetes API stand-in (embedded), the real `image-reflector serve` binary
//! (webhooks over HTTPS with a CA made at test time, controllers, tag store) and the real
//! `kubectl`. The ImageRepository controller (issue 5) and ImagePolicy with
//! cross-namespace access and digest reflection (issue 6), as a user sees them.

mod common;

use common::cluster::{Cluster, condition, docker_config_secret, ready_is};
use common::registry::{RegistryAuth, RegistryOptions, RegistryTls};
use serde_json::Value;
use std::time::{Duration, Instant};

const REPO_STATUS: &str = "imagerepositories.image.toolkit.fluxcd.io/status";
const POLICY_STATUS: &str = "imagepolicies.image.toolkit.fluxcd.io/status";

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

/// The seed's first ImageRepository example, pointed at the local registry.
fn seed_podinfo(host: &str, interval: &str) -> String {
    podinfo_repository("v1beta1", "flux-system", "podinfo", host, interval)
}

/// An ImageRepository `namespace/name` of the registry's `stefanprodan/podinfo`.
fn podinfo_repository(
    version: &str,
    namespace: &str,
    name: &str,
    host: &str,
    interval: &str,
) -> String {
    format!(
        "apiVersion: image.toolkit.fluxcd.io/{version}
kind: ImageRepository
metadata:
  name: {name}
  namespace: {namespace}
spec:
  interval: {interval}
  image: {host}/stefanprodan/podinfo
"
    )
}

fn tag_count(obj: &Value) -> Option<i64> {
    obj["status"]["lastScanResult"]["tagCount"].as_i64()
}

fn scan_time(obj: &Value) -> Option<String> {
    obj["status"]["lastScanResult"]["scanTime"]
        .as_str()
        .map(str::to_string)
}

/// The header of a `kubectl get` table, split on runs of two or more spaces.
fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{table}"))
}

fn status_writes(c: &Cluster, key: &str) -> u64 {
    c.api
        .write_counts()
        .get(key)
        .map(|w| w.requests)
        .unwrap_or(0)
}

/// Registry requests to the distribution API (every `/v2/` line of its access log).
fn registry_requests(c: &Cluster) -> usize {
    c.registry.requests_matching("/v2/")
}

async fn ready_podinfo(c: &Cluster, tags: usize) -> Value {
    c.wait_for_repository("flux-system", "podinfo", "Ready=True", |o| {
        ready_is(o, "True", Some("Succeeded")) && tag_count(o) == Some(tags as i64)
    })
    .await
}

async fn start_with_podinfo(interval: &str, tags: &[&str]) -> Cluster {
    let c = Cluster::start(RegistryOptions::default()).await;
    c.registry.push_tags("stefanprodan/podinfo", tags).await;
    c.apply(&namespace("flux-system")).await;
    c.apply(&seed_podinfo(&c.registry.host(), interval)).await;
    c
}

// ---------------------------------------------------------------------------------------
// Issue 5: the ImageRepository controller
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_example_becomes_ready_with_the_exact_tag_count_and_flux_columns() {
    // A signature tag is left out by the default exclusion list.
    let c = start_with_podinfo(
        "10m",
        &[
            "5.0.0",
            "5.0.3",
            "5.1.0",
            "6.0.0",
            "latest",
            "sha256-abc.sig",
        ],
    )
    .await;
    let host = c.registry.host();
    let repo = ready_podinfo(&c, 5).await;
    let status = &repo["status"];
    assert_eq!(
        status["canonicalImageName"],
        format!("{host}/stefanprodan/podinfo")
    );
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        status["observedExclusionList"],
        serde_json::json!(["^.*\\.sig$"])
    );
    let mut latest: Vec<String> = status["lastScanResult"]["latestTags"]
        .as_array()
        .expect("latestTags")
        .iter()
        .map(|t| t.as_str().unwrap_or_default().to_string())
        .collect();
    latest.sort();
    assert_eq!(latest, ["5.0.0", "5.0.3", "5.1.0", "6.0.0", "latest"]);
    assert_eq!(
        repo["metadata"]["finalizers"],
        serde_json::json!(["finalizers.fluxcd.io"])
    );

    let table = c
        .kubectl_ok(&["get", "imagerepositories", "-n", "flux-system"])
        .await;
    assert_eq!(
        header(&table),
        ["NAME", "IMAGE", "TAGS", "READY", "STATUS", "AGE"],
        "{table}"
    );
    let cells: Vec<&str> = row(&table, "podinfo").split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        [
            "podinfo",
            &format!("{host}/stefanprodan/podinfo"),
            "5",
            "True"
        ],
        "{table}"
    );
    let wide = c
        .kubectl_ok(&[
            "get",
            "imagerepositories",
            "-n",
            "flux-system",
            "-o",
            "wide",
        ])
        .await;
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "IMAGE",
            "TAGS",
            "READY",
            "STATUS",
            "LAST SCAN",
            "AGE"
        ],
        "{wide}"
    );
    let scanned = scan_time(&repo).expect("scanTime");
    assert!(row(&wide, "podinfo").contains(&scanned), "{wide}");

    // One Normal event for the first success, which kubectl describe shows.
    let events = c
        .events_about("flux-system", "ImageRepository", "podinfo")
        .await;
    let normal: Vec<&Value> = events.iter().filter(|e| e["type"] == "Normal").collect();
    assert_eq!(normal.len(), 1, "{events:#?}");
    assert_eq!(normal[0]["reason"], "Succeeded");
    assert!(normal[0]["series"].is_null(), "{events:#?}");
    let described = c
        .kubectl_ok(&[
            "describe",
            "imagerepository",
            "podinfo",
            "-n",
            "flux-system",
        ])
        .await;
    let event_line = described
        .lines()
        .find(|l| l.contains("Succeeded") && l.contains("Normal"))
        .unwrap_or_else(|| panic!("no Normal Succeeded event in describe:\n{described}"));
    assert!(
        event_line.contains("successful scan, found 5 tags"),
        "{described}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_that_does_not_scan_writes_nothing() {
    let c = start_with_podinfo("10m", &["1.0.0", "1.1.0"]).await;
    let before = ready_podinfo(&c, 2).await;
    let requests = registry_requests(&c);
    assert!(requests > 0, "the registry's access log counts requests");
    let reconciles = c
        .reconcile_count("ImageRepository", "flux-system", "podinfo")
        .await;
    c.api.reset_write_counts();
    // A label changes neither the spec nor anything scan-relevant, but is a watch event.
    c.kubectl_ok(&[
        "label",
        "imagerepository",
        "podinfo",
        "-n",
        "flux-system",
        "team=apps",
    ])
    .await;
    c.wait_for_reconcile("ImageRepository", "flux-system", "podinfo", reconciles)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status_writes(&c, REPO_STATUS),
        0,
        "{:?}",
        c.api.write_counts()
    );
    assert_eq!(registry_requests(&c), requests, "the reconcile scanned");
    let after = c.repository("flux-system", "podinfo").expect("exists");
    assert_eq!(after["status"], before["status"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tags_appear_after_the_interval_and_an_unchanged_rescan_writes_one_status_patch() {
    let c = start_with_podinfo("2s", &["1.0.0", "1.1.0"]).await;
    let first = ready_podinfo(&c, 2).await;

    // Rescans that find the same tags: one status write each (the new scanTime), with
    // nothing else in the status changed.
    let t0 = scan_time(&first);
    let settled = c
        .wait_for_repository("flux-system", "podinfo", "a rescan", |o| scan_time(o) != t0)
        .await;
    c.api.reset_write_counts();
    let lists = c.registry.requests_matching("/tags/list");
    let t1 = scan_time(&settled);
    let rescanned = c
        .wait_for_repository("flux-system", "podinfo", "another rescan", |o| {
            scan_time(o) != t1
        })
        .await;
    let writes = c.api.write_counts();
    assert_eq!(
        c.registry.requests_matching("/tags/list") - lists,
        1,
        "one scan expected between two scanTimes"
    );
    assert_eq!(
        writes.get(REPO_STATUS).map(|w| (w.requests, w.persisted)),
        Some((1, 1)),
        "{writes:?}"
    );
    assert!(
        !writes.contains_key("imagerepositories.image.toolkit.fluxcd.io"),
        "{writes:?}"
    );
    let mut a = settled["status"].clone();
    let mut b = rescanned["status"].clone();
    a["lastScanResult"]["scanTime"] = Value::Null;
    b["lastScanResult"]["scanTime"] = Value::Null;
    assert_eq!(a, b, "an unchanged rescan changed more than scanTime");

    // New tags: the status follows at the next interval.
    c.registry
        .push_tags("stefanprodan/podinfo", &["2.0.0", "2.1.0"])
        .await;
    let pushed = Instant::now();
    let after = ready_podinfo(&c, 4).await;
    assert!(
        pushed.elapsed() < Duration::from_secs(10),
        "took {:?}",
        pushed.elapsed()
    );
    let latest = after["status"]["lastScanResult"]["latestTags"].to_string();
    assert!(
        latest.contains("2.0.0") && latest.contains("2.1.0"),
        "{latest}"
    );
    // A new tag set is news (a Normal event); the unchanged rescans before it were not.
    let events = c
        .events_about("flux-system", "ImageRepository", "podinfo")
        .await;
    let mut notes: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "Normal")
        .filter_map(|e| e["note"].as_str())
        .collect();
    notes.sort();
    assert_eq!(
        notes,
        [
            "successful scan, found 2 tags",
            "successful scan, found 4 tags"
        ],
        "{events:#?}"
    );
    assert!(events.iter().all(|e| e["series"].is_null()), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_exclusion_list_rescans_at_once_and_a_changed_interval_only_records_the_generation()
 {
    let c = start_with_podinfo("10m", &["1.0.0", "1.1.0", "1.2.0-rc.1", "latest"]).await;
    let host = c.registry.host();
    ready_podinfo(&c, 4).await;
    let with = |interval: &str, exclusions: &str| {
        podinfo_repository("v1", "flux-system", "podinfo", &host, interval)
            + &format!("  exclusionList: {exclusions}\n")
    };

    // A scan-relevant field: scanned again at once, well before the 10m interval.
    c.apply(&with("10m", r#"["^latest$", "-rc"]"#)).await;
    let repo = c
        .wait_for_repository(
            "flux-system",
            "podinfo",
            "2 tags after the exclusions",
            |o| tag_count(o) == Some(2) && o["status"]["observedGeneration"] == 2,
        )
        .await;
    assert_eq!(
        repo["status"]["observedExclusionList"],
        serde_json::json!(["^latest$", "-rc"])
    );
    assert!(ready_is(&repo, "True", Some("Succeeded")));

    // Only the interval: no scan, one status write recording the generation.
    let requests = registry_requests(&c);
    c.api.reset_write_counts();
    c.apply(&with("20m", r#"["^latest$", "-rc"]"#)).await;
    let after = c
        .wait_for_repository("flux-system", "podinfo", "observedGeneration 3", |o| {
            o["status"]["observedGeneration"] == 3
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(registry_requests(&c), requests, "a new interval rescanned");
    assert_eq!(
        status_writes(&c, REPO_STATUS),
        1,
        "{:?}",
        c.api.write_counts()
    );
    assert_eq!(
        after["status"]["lastScanResult"],
        repo["status"]["lastScanResult"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requested_at_annotation_rescans_at_once() {
    let c = start_with_podinfo("10m", &["1.0.0"]).await;
    ready_podinfo(&c, 1).await;
    c.registry
        .push_tags("stefanprodan/podinfo", &["1.1.0", "1.2.0"])
        .await;
    let requested = "2026-11-28T08:00:00.000000001Z";
    c.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "imagerepository",
        "podinfo",
        "-n",
        "flux-system",
        &format!("reconcile.fluxcd.io/requestedAt={requested}"),
    ])
    .await;
    let repo = c
        .wait_for_repository(
            "flux-system",
            "podinfo",
            "3 tags and lastHandledReconcileAt",
            |o| tag_count(o) == Some(3) && o["status"]["lastHandledReconcileAt"] == requested,
        )
        .await;
    assert!(ready_is(&repo, "True", Some("Succeeded")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_once_with_authentication_failed_and_fixing_the_secret_rescans_at_once()
 {
    let password = "s3cret-registry-password";
    let c = Cluster::start(RegistryOptions {
        auth: RegistryAuth::Basic {
            username: "flux".into(),
            password: password.into(),
        },
        ..Default::default()
    })
    .await;
    let host = c.registry.host();
    c.registry
        .push_tags("org/image", &["1.0.0", "1.1.0", "2.0.0"])
        .await;
    c.apply(&namespace("flux-system")).await;
    let wrong = "not-the-password";
    c.apply(&docker_config_secret(
        "flux-system",
        "regcred",
        &host,
        "flux",
        wrong,
    ))
    .await;
    // The seed's private-image example: every minute, with secretRef regcred.
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1beta1
kind: ImageRepository
metadata:
  name: podinfo
  namespace: flux-system
spec:
  interval: 1m0s
  image: {host}/org/image
  secretRef:
    name: regcred
"
    ))
    .await;
    let failed = c
        .wait_for_repository(
            "flux-system",
            "podinfo",
            "Ready=False AuthenticationFailed",
            |o| ready_is(o, "False", Some("AuthenticationFailed")),
        )
        .await;
    let message = condition(&failed, "Ready").expect("Ready")["message"].to_string();
    assert!(
        !message.contains(wrong) && !message.contains(password),
        "{message}"
    );

    // Let it retry with backoff (1 s, 2 s, 4 s ...): four attempts in about 7 s, the next
    // one about 8 s later.
    let attempts = |c: &Cluster| {
        c.reflector()
            .log()
            .lines()
            .filter(|l| l.contains("scan failed; retrying with backoff"))
            .count()
    };
    let started = Instant::now();
    while attempts(&c) < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "fewer than 4 attempts in 20 s: {}",
            c.reflector_log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "4 attempts in {:?}: no backoff between retries",
        started.elapsed()
    );
    let events = c
        .events_about("flux-system", "ImageRepository", "podinfo")
        .await;
    let warnings: Vec<&Value> = events.iter().filter(|e| e["type"] == "Warning").collect();
    assert_eq!(warnings.len(), 1, "one Warning per transition: {events:#?}");
    assert_eq!(warnings[0]["reason"], "AuthenticationFailed");
    assert!(
        warnings[0]["series"].is_null(),
        "the Warning was repeated on retries: {events:#?}"
    );
    let note = warnings[0]["note"].to_string();
    assert!(!note.contains(wrong) && !note.contains(password), "{note}");

    // Fixing the Secret rescans at once: well before both the interval and the next retry.
    c.apply(&docker_config_secret(
        "flux-system",
        "regcred",
        &host,
        "flux",
        password,
    ))
    .await;
    let fixed = Instant::now();
    c.wait_for_repository("flux-system", "podinfo", "Ready=True", |o| {
        ready_is(o, "True", Some("Succeeded")) && tag_count(o) == Some(3)
    })
    .await;
    assert!(
        fixed.elapsed() < Duration::from_secs(6),
        "the fixed Secret took {:?} to be used",
        fixed.elapsed()
    );
    // Recovery is news: one Normal event.
    let events = c
        .events_about("flux-system", "ImageRepository", "podinfo")
        .await;
    let normal: Vec<&Value> = events.iter().filter(|e| e["type"] == "Normal").collect();
    assert_eq!(normal.len(), 1, "{events:#?}");
    assert_eq!(normal[0]["note"], "successful scan, found 3 tags");

    // Neither password (nor the encoded auth) appears in the process's log.
    use base64::Engine as _;
    let log = c.reflector().log();
    for secret in [
        password.to_string(),
        wrong.to_string(),
        base64::engine::general_purpose::STANDARD.encode(format!("flux:{password}")),
        base64::engine::general_purpose::STANDARD.encode(format!("flux:{wrong}")),
    ] {
        assert!(!log.contains(&secret), "a credential leaked into the log");
    }
}

/// A registry that wants the user `flux` with the password `pull-only`, `tags` pushed to
/// its `org/private`, the namespace `flux-system` and in it the pull secret `regcred` with
/// those credentials.
async fn start_with_private_image(tls: RegistryTls, tags: &[&str]) -> Cluster {
    let c = Cluster::start(RegistryOptions {
        auth: RegistryAuth::Basic {
            username: "flux".into(),
            password: "pull-only".into(),
        },
        tls,
    })
    .await;
    let host = c.registry.host();
    c.registry.push_tags("org/private", tags).await;
    c.apply(&namespace("flux-system")).await;
    c.apply(&docker_config_secret(
        "flux-system",
        "regcred",
        &host,
        "flux",
        "pull-only",
    ))
    .await;
    c
}

/// The service account `puller` (image pull secret `regcred`) and the ImageRepository
/// `via-service-account` of `org/private` that uses it, every 10 minutes, with
/// `more_spec` (indented YAML) added to its spec.
fn via_service_account(host: &str, more_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: ServiceAccount
metadata:
  name: puller
  namespace: flux-system
imagePullSecrets:
  - name: regcred
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: via-service-account
  namespace: flux-system
spec:
  interval: 10m
  image: {host}/org/private
  serviceAccountName: puller
{more_spec}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_a_service_account_and_a_ca_from_cert_secret_ref_in_both_key_sets() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let c = start_with_private_image(RegistryTls::Server, &["1.0.0", "1.0.1"]).await;
    let host = c.registry.host();
    let ca = c.registry.ca_pem().expect("a CA").to_string();
    c.apply(&format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: registry-ca
  namespace: flux-system
type: Opaque
data:
  ca.crt: {}
---
apiVersion: v1
kind: Secret
metadata:
  name: seed-ca
  namespace: flux-system
type: Opaque
data:
  caFile: {}
---
{}---
apiVersion: image.toolkit.fluxcd.io/v1beta1
kind: ImageRepository
metadata:
  name: seed-keys
  namespace: flux-system
spec:
  interval: 10m
  image: {host}/org/private
  secretRef:
    name: regcred
  certSecretRef:
    name: seed-ca
",
        b64(&ca),
        b64(&ca),
        via_service_account(&host, "  certSecretRef:\n    name: registry-ca\n"),
    ))
    .await;
    for name in ["via-service-account", "seed-keys"] {
        c.wait_for_repository("flux-system", name, "Ready=True with 2 tags", |o| {
            ready_is(o, "True", Some("Succeeded")) && tag_count(o) == Some(2)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_changed_pull_secret_of_the_service_account_rescans_at_once() {
    let mut c = start_with_private_image(RegistryTls::None, &["1.0.0", "1.1.0"]).await;
    let host = c.registry.host();
    // The pull secret is named by the service account only, never by the spec.
    c.apply(&via_service_account(&host, "")).await;
    c.wait_for_repository("flux-system", "via-service-account", "Ready=True", |o| {
        ready_is(o, "True", Some("Succeeded")) && tag_count(o) == Some(2)
    })
    .await;

    // A restart forgets everything in memory; the restart itself scans nothing.
    c.kill_reflector().await;
    c.start_reflector().await;
    c.wait_for_reconcile("ImageRepository", "flux-system", "via-service-account", 0)
        .await;
    let requests = registry_requests(&c);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(registry_requests(&c), requests, "the restart rescanned");

    // The pull secret's password is changed: the repository is scanned with it at once,
    // long before its 10-minute interval, and the registry refuses it.
    c.apply(&docker_config_secret(
        "flux-system",
        "regcred",
        &host,
        "flux",
        "rotated-but-wrong",
    ))
    .await;
    let changed = Instant::now();
    c.wait_for_repository(
        "flux-system",
        "via-service-account",
        "Ready=False AuthenticationFailed after the pull secret changed",
        |o| ready_is(o, "False", Some("AuthenticationFailed")),
    )
    .await;
    assert!(
        changed.elapsed() < Duration::from_secs(6),
        "the changed pull secret took {:?} to be used",
        changed.elapsed()
    );
    assert!(registry_requests(&c) > requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_refused_by_kubectl_with_the_webhooks_message_and_nothing_is_stored() {
    let c = Cluster::start(RegistryOptions::default()).await;
    let host = c.registry.host();
    c.apply(&namespace("flux-system")).await;
    let ran = c
        .apply_result(&format!(
            "apiVersion: image.toolkit.fluxcd.io/v1beta1
kind: ImageRepository
metadata:
  name: podinfo
  namespace: flux-system
spec:
  interval: 10m
  image: {host}/stefanprodan/podinfo:6.0.0
"
        ))
        .await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains(
            "admission webhook \"validation.image.toolkit.fluxcd.io\" denied the request"
        ),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("spec.image"), "{}", ran.stderr);
    assert!(ran.stderr.contains("6.0.0"), "{}", ran.stderr);

    let ran = c
        .apply_result(
            "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata:
  name: podinfo
  namespace: flux-system
spec:
  imageRepositoryRef:
    name: podinfo
  policy:
    semver:
      range: '>=>1.0'
",
        )
        .await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("denied the request"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("spec.policy.semver.range"),
        "{}",
        ran.stderr
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.repository("flux-system", "podinfo").is_none());
    assert!(c.policy("flux-system", "podinfo").is_none());
    assert!(c.store_files().is_empty(), "{:?}", c.store_files());
    assert_eq!(registry_requests(&c), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_repository_is_not_scanned_until_resumed() {
    let c = start_with_podinfo("2s", &["1.0.0"]).await;
    ready_podinfo(&c, 1).await;
    let reconciles = c
        .reconcile_count("ImageRepository", "flux-system", "podinfo")
        .await;
    c.kubectl_ok(&[
        "patch",
        "imagerepository",
        "podinfo",
        "-n",
        "flux-system",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ])
    .await;
    c.wait_for_reconcile("ImageRepository", "flux-system", "podinfo", reconciles)
        .await;
    // A scan that had started before the patch may still finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests = registry_requests(&c);
    let suspended = c.repository("flux-system", "podinfo").expect("exists");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        registry_requests(&c),
        requests,
        "scanned while suspended (interval 2s)"
    );
    assert_eq!(
        scan_time(&c.repository("flux-system", "podinfo").expect("exists")),
        scan_time(&suspended)
    );

    c.kubectl_ok(&[
        "patch",
        "imagerepository",
        "podinfo",
        "-n",
        "flux-system",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ])
    .await;
    let t = scan_time(&suspended);
    c.wait_for_repository("flux-system", "podinfo", "a scan after resuming", |o| {
        scan_time(o) != t
    })
    .await;
    assert!(registry_requests(&c) > requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_repository_runs_the_finalizer_and_its_tags_leave_the_store() {
    let c = start_with_podinfo("10m", &["1.0.0", "2.0.0"]).await;
    ready_podinfo(&c, 2).await;
    let file = c.store_file("flux-system", "podinfo");
    assert!(
        file.is_file(),
        "no store entry {file:?}: {:?}",
        c.store_files()
    );
    assert_eq!(c.store_files(), std::slice::from_ref(&file));

    c.kubectl_ok(&[
        "delete",
        "imagerepository",
        "podinfo",
        "-n",
        "flux-system",
        "--timeout",
        "30s",
    ])
    .await;
    assert!(c.repository("flux-system", "podinfo").is_none());
    assert!(!file.exists(), "the store entry survived the delete");
    assert!(c.store_files().is_empty(), "{:?}", c.store_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_deleted_while_stopped_leave_the_store_at_start() {
    let mut c = start_with_podinfo("10m", &["1.0.0"]).await;
    let host = c.registry.host();
    c.apply(&namespace("team-a")).await;
    c.apply(&podinfo_repository("v1", "team-a", "app", &host, "10m"))
        .await;
    ready_podinfo(&c, 1).await;
    c.wait_for_repository("team-a", "app", "Ready=True", |o| {
        ready_is(o, "True", Some("Succeeded"))
    })
    .await;
    let terminating = c.store_file("flux-system", "podinfo");
    let gone = c.store_file("team-a", "app");
    assert!(
        terminating.is_file() && gone.is_file(),
        "{:?}",
        c.store_files()
    );

    // While image-reflector is down: one repository is deleted (it waits, Terminating,
    // for the finalizer), the other goes with its namespace (at once, finalizer or not).
    c.kill_reflector().await;
    c.kubectl_ok(&[
        "delete",
        "imagerepository",
        "podinfo",
        "-n",
        "flux-system",
        "--wait=false",
    ])
    .await;
    c.kubectl_ok(&["delete", "namespace", "team-a", "--wait=false"])
        .await;
    let pending = c.repository("flux-system", "podinfo").expect("Terminating");
    assert!(pending["metadata"]["deletionTimestamp"].is_string());
    assert!(c.repository("team-a", "app").is_none());

    c.start_reflector().await;
    let started = Instant::now();
    while terminating.exists() || gone.exists() || c.repository("flux-system", "podinfo").is_some()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "after the restart: store {:?}, podinfo {:?}; {}",
            c.store_files(),
            c.repository("flux-system", "podinfo")
                .map(|o| o["metadata"].clone()),
            c.reflector_log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(c.store_files().is_empty(), "{:?}", c.store_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_scans_nothing_before_the_interval_and_leaves_every_status_unchanged() {
    let mut c = start_with_podinfo("10m", &["5.0.0", "5.1.0", "6.0.0"]).await;
    c.apply(
        "apiVersion: image.toolkit.fluxcd.io/v1beta1
kind: ImagePolicy
metadata:
  name: podinfo
  namespace: flux-system
spec:
  imageRepositoryRef:
    name: podinfo
  policy:
    semver:
      range: 5.x
",
    )
    .await;
    ready_podinfo(&c, 3).await;
    c.wait_for_policy("flux-system", "podinfo", "Ready=True", |o| {
        ready_is(o, "True", None) && o["status"]["latestRef"]["tag"] == "5.1.0"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let repo = c.repository("flux-system", "podinfo").expect("exists");
    let policy = c.policy("flux-system", "podinfo").expect("exists");
    let events = c
        .events_about("flux-system", "ImageRepository", "podinfo")
        .await
        .len();

    c.kill_reflector().await;
    c.api.reset_write_counts();
    let requests = registry_requests(&c);
    assert!(requests > 0, "the registry's access log counts requests");
    c.start_reflector().await;
    c.wait_for_reconcile("ImageRepository", "flux-system", "podinfo", 0)
        .await;
    c.wait_for_reconcile("ImagePolicy", "flux-system", "podinfo", 0)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(
        registry_requests(&c),
        requests,
        "registry requests after a restart, before the interval"
    );
    let repo_after = c.repository("flux-system", "podinfo").expect("exists");
    let policy_after = c.policy("flux-system", "podinfo").expect("exists");
    assert_eq!(
        serde_json::to_string(&repo_after["status"]).unwrap(),
        serde_json::to_string(&repo["status"]).unwrap()
    );
    assert_eq!(
        repo_after["metadata"]["resourceVersion"],
        repo["metadata"]["resourceVersion"]
    );
    assert_eq!(
        serde_json::to_string(&policy_after["status"]).unwrap(),
        serde_json::to_string(&policy["status"]).unwrap()
    );
    let writes = c.api.write_counts();
    assert_eq!(status_writes(&c, REPO_STATUS), 0, "{writes:?}");
    assert_eq!(status_writes(&c, POLICY_STATUS), 0, "{writes:?}");
    assert_eq!(
        c.events_about("flux-system", "ImageRepository", "podinfo")
            .await
            .len(),
        events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_recovers_by_itself_from_a_410_and_an_api_server_restart() {
    let mut c = start_with_podinfo("10m", &["1.0.0"]).await;
    let host = c.registry.host();
    ready_podinfo(&c, 1).await;

    // Every open watch ends with 410 Expired; the controller must relist and go on.
    c.api.force_watch_expiry();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.registry
        .push_tags("stefanprodan/podinfo", &["1.1.0"])
        .await;
    c.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "imagerepository",
        "podinfo",
        "-n",
        "flux-system",
        "reconcile.fluxcd.io/requestedAt=after-410",
    ])
    .await;
    c.wait_for_repository(
        "flux-system",
        "podinfo",
        "the rescan asked after the 410",
        |o| tag_count(o) == Some(2) && o["status"]["lastHandledReconcileAt"] == "after-410",
    )
    .await;

    // The API server goes away (watches drop, requests fail) and comes back.
    c.api.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.api.restart().await.expect("restart the API stand-in");
    c.apply(&podinfo_repository(
        "v1beta1",
        "flux-system",
        "app",
        &host,
        "10m",
    ))
    .await;
    c.wait_for_repository("flux-system", "app", "Ready=True after the restart", |o| {
        ready_is(o, "True", Some("Succeeded")) && tag_count(o) == Some(2)
    })
    .await;
    c.registry
        .push_tags("stefanprodan/podinfo", &["1.2.0"])
        .await;
    c.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "imagerepository",
        "podinfo",
        "-n",
        "flux-system",
        "reconcile.fluxcd.io/requestedAt=after-restart",
    ])
    .await;
    c.wait_for_repository(
        "flux-system",
        "podinfo",
        "the rescan asked after the restart",
        |o| tag_count(o) == Some(3) && o["status"]["lastHandledReconcileAt"] == "after-restart",
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Issue 6: ImagePolicy, cross-namespace access, digest reflection
// ---------------------------------------------------------------------------------------

/// The seed's cross-namespace example: ImageRepository app1 in `apps` admits policies
/// from namespaces labelled `kubernetes.io/metadata.name: flux-system`.
fn seed_app1(host: &str, match_labels: &str) -> String {
    format!(
        "apiVersion: image.toolkit.fluxcd.io/v1beta1
kind: ImageRepository
metadata:
  name: app1
  namespace: apps
spec:
  interval: 5m
  image: {host}/org/image
  accessFrom:
    namespaceSelectors:
      - matchLabels:
          {match_labels}
"
    )
}

fn seed_app1_policy(namespace: &str) -> String {
    format!(
        "apiVersion: image.toolkit.fluxcd.io/v1beta1
kind: ImagePolicy
metadata:
  name: app1
  namespace: {namespace}
spec:
  imageRepositoryRef:
    name: app1
    namespace: apps
  policy:
    semver:
      range: 1.0.x
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_cross_namespace_example_is_allowed_by_labels_refused_otherwise_and_follows_new_tags()
 {
    let c = Cluster::start(RegistryOptions::default()).await;
    let host = c.registry.host();
    let image = format!("{host}/org/image");
    c.registry
        .push_tags("org/image", &["1.0.0", "1.0.1", "1.1.0", "0.9.0"])
        .await;
    for ns in ["apps", "flux-system", "team-b"] {
        c.apply(&namespace(ns)).await;
    }
    c.apply(&seed_app1(
        &host,
        "kubernetes.io/metadata.name: flux-system",
    ))
    .await;
    c.apply(&seed_app1_policy("flux-system")).await;

    // Allowed by the namespace's labels.
    let policy = c
        .wait_for_policy("flux-system", "app1", "Ready=True with latestRef", |o| {
            ready_is(o, "True", Some("Succeeded"))
        })
        .await;
    assert_eq!(
        policy["status"]["latestRef"],
        serde_json::json!({"name": image, "tag": "1.0.1"})
    );
    let ready = condition(&policy, "Ready").expect("Ready");
    assert_eq!(
        ready["message"],
        format!("Latest image tag for '{image}' resolved to 1.0.1")
    );

    let table = c
        .kubectl_ok(&["get", "imagepolicies", "-n", "flux-system"])
        .await;
    assert_eq!(
        header(&table),
        ["NAME", "IMAGE", "TAG", "READY", "STATUS", "AGE"],
        "{table}"
    );
    let cells: Vec<&str> = row(&table, "app1").split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        ["app1", image.as_str(), "1.0.1", "True"],
        "{table}"
    );

    // Refused at admission from a namespace whose labels match no selector.
    let ran = c.apply_result(&seed_app1_policy("team-b")).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    for needle in [
        "denied the request",
        "apps/app1",
        "kubernetes.io/metadata.name=flux-system",
        "kubernetes.io/metadata.name=team-b",
    ] {
        assert!(ran.stderr.contains(needle), "{needle:?} in {}", ran.stderr);
    }
    assert!(c.policy("team-b", "app1").is_none());

    // A new tag moves latestRef; observedPreviousRef takes the old one.
    c.registry.push_tags("org/image", &["1.0.2"]).await;
    c.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "imagerepository",
        "app1",
        "-n",
        "apps",
        "reconcile.fluxcd.io/requestedAt=new-tag",
    ])
    .await;
    let moved = c
        .wait_for_policy("flux-system", "app1", "latestRef 1.0.2", |o| {
            o["status"]["latestRef"]["tag"] == "1.0.2"
        })
        .await;
    assert_eq!(
        moved["status"]["observedPreviousRef"],
        serde_json::json!({"name": image, "tag": "1.0.1"})
    );
    // v1beta2 readers see latestImage.
    let latest_image = c
        .kubectl_ok(&[
            "get",
            "imagepolicies.v1beta2.image.toolkit.fluxcd.io",
            "app1",
            "-n",
            "flux-system",
            "-o",
            "jsonpath={.status.latestImage}",
        ])
        .await;
    assert_eq!(latest_image, format!("{image}:1.0.2"));
    let events = c.events_about("flux-system", "ImagePolicy", "app1").await;
    assert!(
        events.iter().any(|e| e["type"] == "Normal"
            && e["note"]
                .as_str()
                .is_some_and(|n| n.contains("resolved to 1.0.2"))),
        "no Normal event for the new latest tag: {events:#?}"
    );

    // Denied at reconcile once the repository's accessFrom no longer admits flux-system.
    c.apply(&seed_app1(&host, "team: nobody")).await;
    let denied = c
        .wait_for_policy("flux-system", "app1", "Ready=False AccessDenied", |o| {
            ready_is(o, "False", Some("AccessDenied"))
        })
        .await;
    let message = condition(&denied, "Ready").expect("Ready")["message"].to_string();
    assert!(
        message.contains("apps/app1") && message.contains("team=nobody"),
        "{message}"
    );
    let events = c.events_about("flux-system", "ImagePolicy", "app1").await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "Warning" && e["reason"] == "AccessDenied"),
        "{events:#?}"
    );

    // Re-evaluated when the namespace's labels change: labelled to match, it is allowed.
    c.kubectl_ok(&["label", "namespace", "flux-system", "team=nobody"])
        .await;
    c.wait_for_policy("flux-system", "app1", "Ready=True once labelled", |o| {
        ready_is(o, "True", Some("Succeeded")) && o["status"]["latestRef"]["tag"] == "1.0.2"
    })
    .await;

    // A reference to a repository that does not exist yet is admitted with a warning.
    let ran = c
        .apply_result(
            "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata:
  name: later
  namespace: team-b
spec:
  imageRepositoryRef:
    name: not-yet
    namespace: apps
  policy:
    semver:
      range: 1.x
",
        )
        .await;
    assert!(ran.success(), "{ran:?}");
    assert!(
        ran.stderr.contains("Warning:") && ran.stderr.contains("not-yet"),
        "{}",
        ran.stderr
    );
    c.wait_for_policy("team-b", "later", "DependencyNotReady", |o| {
        ready_is(o, "False", Some("DependencyNotReady"))
    })
    .await;
    // The repository appears (admitting every namespace) and is scanned: the policy
    // follows without being touched.
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: not-yet
  namespace: apps
spec:
  interval: 5m
  image: {host}/org/image
  accessFrom:
    namespaceSelectors:
      - matchLabels: {{}}
"
    ))
    .await;
    let later = c
        .wait_for_policy("team-b", "later", "Ready=True", |o| {
            ready_is(o, "True", Some("Succeeded"))
        })
        .await;
    assert_eq!(later["status"]["latestRef"]["tag"], "1.1.0");
}

/// The digest the registry reports for `repo:tag` (a manifest HEAD).
async fn registry_digest(c: &Cluster, repo: &str, tag: &str) -> String {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = http
        .head(format!(
            "{}/v2/{repo}/manifests/{tag}",
            c.registry.base_url()
        ))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_reflection_always_reports_the_registrys_digest_and_rechecks_it_every_interval() {
    let c = Cluster::start(RegistryOptions::default()).await;
    let host = c.registry.host();
    let pushed = c.registry.push_tags("org/app", &["1.0.0", "1.1.0"]).await;
    assert_eq!(registry_digest(&c, "org/app", "1.1.0").await, pushed);
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: app
  namespace: default
spec:
  interval: 10m
  image: {host}/org/app
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata:
  name: app
  namespace: default
spec:
  imageRepositoryRef:
    name: app
  digestReflectionPolicy: Always
  interval: 2s
  policy:
    semver:
      range: '>=1.0.0'
"
    ))
    .await;
    let policy = c
        .wait_for_policy("default", "app", "Ready=True with a digest", |o| {
            ready_is(o, "True", Some("Succeeded")) && o["status"]["latestRef"]["digest"].is_string()
        })
        .await;
    assert_eq!(
        policy["status"]["latestRef"],
        serde_json::json!({"name": format!("{host}/org/app"), "tag": "1.1.0", "digest": pushed})
    );
    assert_eq!(
        policy["status"]["latestImage"],
        format!("{host}/org/app:1.1.0@{pushed}")
    );

    // The tag now points at another image: the next check (every 2 s) reports it, with
    // no rescan of the repository (its interval is 10m).
    let moved = c
        .registry
        .push_image("org/app", br#"{"rebuilt":true}"#, &["1.1.0"])
        .await;
    assert_ne!(moved, pushed);
    assert_eq!(registry_digest(&c, "org/app", "1.1.0").await, moved);
    c.wait_for_policy("default", "app", "the new digest", |o| {
        o["status"]["latestRef"]["digest"] == moved.as_str()
    })
    .await;

    // The requestedAt annotation on a policy is handled and recorded.
    c.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "imagepolicy",
        "app",
        "reconcile.fluxcd.io/requestedAt=now-please",
    ])
    .await;
    c.wait_for_policy("default", "app", "lastHandledReconcileAt", |o| {
        o["status"]["lastHandledReconcileAt"] == "now-please"
    })
    .await;
}

/// Two replicas compete for the Lease on the API stand-in: one leads, the other waits;
/// when the leader shuts down it releases the Lease and the other takes over at once,
/// without waiting for the lease duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_gives_one_leader_and_hands_over_on_release() {
    use image_reflector::controller::leader::{LeaderConfig, spawn};
    use tokio_util::sync::CancellationToken;

    let api = kube_standin::StandIn::start(kube_standin::Options::default())
        .await
        .expect("API stand-in");
    let client = api.client().expect("client");
    let config = |identity: &str| {
        let mut c = LeaderConfig::new("default", "image-reflector-test", identity);
        c.lease_duration = Duration::from_secs(30);
        c.renew_every = Duration::from_millis(200);
        c.retry_every = Duration::from_millis(100);
        c
    };
    let stop_a = CancellationToken::new();
    let mut a = spawn(client.clone(), config("replica-a"), stop_a.clone());
    tokio::time::timeout(Duration::from_secs(10), a.wait_for(|l| *l))
        .await
        .expect("replica a leads within 10 s")
        .expect("election loop alive");

    let stop_b = CancellationToken::new();
    let mut b = spawn(client.clone(), config("replica-b"), stop_b.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !*b.borrow(),
        "a second replica does not lead while the first renews"
    );
    assert!(*a.borrow(), "the first replica keeps the lease");

    let released = Instant::now();
    stop_a.cancel();
    tokio::time::timeout(Duration::from_secs(10), b.wait_for(|l| *l))
        .await
        .expect("replica b takes over well before the 30 s lease duration")
        .expect("election loop alive");
    assert!(released.elapsed() < Duration::from_secs(10));
    let lease = api
        .object(
            "coordination.k8s.io",
            "leases",
            "default",
            "image-reflector-test",
        )
        .expect("the lease exists");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    stop_b.cancel();
}
