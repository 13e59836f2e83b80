//! End to end on the real control plane (kube-apiserver, etcd, kube-controller-manager
//! from `make control-plane`): the real OCI registry (Debian's `docker-registry`), the
//! real `image-reflector serve` binary running as its ServiceAccount (webhooks over HTTPS
//! with a CA made at test time, called by kube-apiserver's admission chain; controllers;
//! tag store) and the real `kubectl`. See `test_support::cluster`. The ImageRepository controller (issue 5) and ImagePolicy with
//! cross-namespace access and digest reflection (issue 6), as a user sees them; cloud
//! registry logins (issue 16) in `e2e/cloud.rs`; secrets kept out of logs, Events,
//! statuses, metrics and the store, and the ServiceAccount's exact permissions, in
//! `e2e/secrets.rs`.

use serde_json::Value;
use std::time::{Duration, Instant};
use test_support::cluster::{Cluster, WAIT, condition, ready_is};
use test_support::control_plane::WriteCounts;
use test_support::registry::{RegistryAuth, RegistryOptions, RegistryTls};

#[path = "e2e/chaos.rs"]
mod chaos;
#[path = "e2e/chaos_disk.rs"]
mod chaos_disk;
#[path = "e2e/chaos_report.rs"]
mod chaos_report;
#[path = "e2e/cloud.rs"]
mod cloud;
#[path = "e2e/secrets.rs"]
mod secrets;

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

/// Writes to `key` (e.g. REPO_STATUS) the API server answered since `baseline`.
async fn status_writes(c: &Cluster, baseline: &WriteCounts, key: &str) -> u64 {
    c.writes().await.since(baseline).get(key)
}

/// The seed's `kubectl create secret docker-registry NAME --docker-server=...
/// --docker-username=... --docker-password=...`, literally.
async fn create_docker_registry_secret(
    c: &Cluster,
    namespace: &str,
    name: &str,
    server: &str,
    username: &str,
    password: &str,
) {
    c.kubectl_ok(
        &docker_registry_secret_args(namespace, name, server, username, password, &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
}

/// Changes that Secret as users do: the same command with `--dry-run=client -o yaml`,
/// piped to `kubectl apply -f -`.
async fn replace_docker_registry_secret(
    c: &Cluster,
    namespace: &str,
    name: &str,
    server: &str,
    username: &str,
    password: &str,
) {
    let args = docker_registry_secret_args(
        namespace,
        name,
        server,
        username,
        password,
        &["--dry-run=client", "-o", "yaml"],
    );
    let yaml = c
        .kubectl_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    c.apply(&yaml).await;
}

fn docker_registry_secret_args(
    namespace: &str,
    name: &str,
    server: &str,
    username: &str,
    password: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = ["create", "secret", "docker-registry", name, "-n", namespace]
        .map(String::from)
        .to_vec();
    args.push(format!("--docker-server={server}"));
    args.push(format!("--docker-username={username}"));
    args.push(format!("--docker-password={password}"));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A v1 ImagePolicy `namespace/name` selecting by semver `range` from the ImageRepository
/// `repository` of its namespace.
fn semver_policy(namespace: &str, name: &str, repository: &str, range: &str) -> String {
    format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata:
  name: {name}
  namespace: {namespace}
spec:
  imageRepositoryRef:
    name: {repository}
  policy:
    semver:
      range: '{range}'
"
    )
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
        event_line.contains("successful scan: found 5 tags with checksum sha256:"),
        "{described}"
    );
    assert_flux_dashboard_metrics(&c).await;
}

/// The series Flux's dashboards and alerts read, with Flux's names and labels, after a
/// repository was scanned.
async fn assert_flux_dashboard_metrics(c: &Cluster) {
    let text = c.reflector_metrics().await;
    let value = |series: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let repo = r#"controller="imagerepository""#;
    let queue = r#"{name="imagerepository",controller="imagerepository"}"#;
    for (series, at_least) in [
        (format!("controller_runtime_reconcile_total{{{repo},result=\"requeue_after\"}}"), 1.0),
        (format!("controller_runtime_max_concurrent_reconciles{{{repo}}}"), 4.0),
        (format!("controller_runtime_reconcile_time_seconds_count{{{repo}}}"), 1.0),
        (format!("workqueue_adds_total{queue}"), 1.0),
        (format!("workqueue_queue_duration_seconds_count{queue}"), 1.0),
        (format!("workqueue_work_duration_seconds_count{queue}"), 1.0),
        (format!("workqueue_retries_total{queue}"), 1.0),
        ("rest_client_requests_total{code=\"200\",method=\"GET\"".to_string(), 1.0),
        ("rest_client_requests_total{code=\"200\",method=\"PATCH\"".to_string(), 1.0),
        ("process_resident_memory_bytes".to_string(), 1.0),
        ("process_cpu_seconds_total".to_string(), 0.0),
        ("process_open_fds".to_string(), 3.0),
        ("process_start_time_seconds".to_string(), 1.0e9),
        (
            "gotk_reconcile_duration_seconds_count{kind=\"ImageRepository\",name=\"podinfo\",namespace=\"flux-system\"}".to_string(),
            1.0,
        ),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&series)) && value(&series) >= at_least,
            "{series} >= {at_least} in:\n{text}"
        );
    }
    for series in [
        format!("controller_runtime_reconcile_errors_total{{{repo}}}"),
        format!("controller_runtime_active_workers{{{repo}}}"),
        "workqueue_depth{name=\"imagerepository\",controller=\"imagerepository\",priority=\"\"}"
            .to_string(),
        "controller_runtime_reconcile_total{controller=\"imagepolicy\"".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&series)),
            "{series} in:\n{text}"
        );
    }
    // Flux's buckets reach 30 minutes.
    assert!(
        text.lines()
            .any(|l| l.starts_with("gotk_reconcile_duration_seconds_bucket{le=\"1800")),
        "{text}"
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
    let baseline = c.writes().await;
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
        status_writes(&c, &baseline, REPO_STATUS).await,
        0,
        "{:?}",
        c.writes().await.since(&baseline)
    );
    assert_eq!(registry_requests(&c), requests, "the reconcile scanned");
    let after = c
        .repository("flux-system", "podinfo")
        .await
        .expect("exists");
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
    let baseline = c.writes().await;
    let lists = c.registry.requests_matching("/tags/list");
    let t1 = scan_time(&settled);
    let rescanned = c
        .wait_for_repository("flux-system", "podinfo", "another rescan", |o| {
            scan_time(o) != t1
        })
        .await;
    // On a slow machine the poll can see a later rescan than the next one (the interval
    // is 2 s): count the scans since the baseline, at once, and expect one status write
    // for each.
    let scans = c.registry.requests_matching("/tags/list") - lists;
    let writes = c.writes().await.since(&baseline);
    assert!(
        (1..=3).contains(&scans),
        "{scans} scans between two scanTimes"
    );
    assert_eq!(
        writes.get(REPO_STATUS),
        scans as u64,
        "one status write per unchanged rescan: {writes:?}"
    );
    assert_ne!(
        rescanned["metadata"]["resourceVersion"], settled["metadata"]["resourceVersion"],
        "the one status write was persisted"
    );
    assert_eq!(
        writes.get("imagerepositories.image.toolkit.fluxcd.io"),
        0,
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
    let found: Vec<&str> = notes
        .iter()
        .map(|n| n.split(" with checksum ").next().unwrap_or(n))
        .collect();
    assert_eq!(
        found,
        [
            "successful scan: found 2 tags",
            "successful scan: found 4 tags"
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
    let baseline = c.writes().await;
    c.apply(&with("20m", r#"["^latest$", "-rc"]"#)).await;
    let after = c
        .wait_for_repository("flux-system", "podinfo", "observedGeneration 3", |o| {
            o["status"]["observedGeneration"] == 3
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(registry_requests(&c), requests, "a new interval rescanned");
    assert_eq!(
        status_writes(&c, &baseline, REPO_STATUS).await,
        1,
        "{:?}",
        c.writes().await.since(&baseline)
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
    c.request_scan("flux-system", "podinfo", requested).await;
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
    create_docker_registry_secret(&c, "flux-system", "regcred", &host, "flux", wrong).await;
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
    replace_docker_registry_secret(&c, "flux-system", "regcred", &host, "flux", password).await;
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
    assert!(
        normal[0]["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("successful scan: found 3 tags with checksum sha256:")),
        "{events:#?}"
    );

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
    create_docker_registry_secret(&c, "flux-system", "regcred", &host, "flux", "pull-only").await;
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
    replace_docker_registry_secret(
        &c,
        "flux-system",
        "regcred",
        &host,
        "flux",
        "rotated-but-wrong",
    )
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
    let denials = c.admission_denials().await;
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
    // kubectl prints a 422 with causes as "The KIND "NAME" is invalid: FIELD: MESSAGE",
    // the field named once (a cause's message does not repeat its field).
    for needle in [
        "The ImageRepository \"podinfo\" is invalid",
        "spec.image: Invalid value: \"",
        "6.0.0\" names a tag",
    ] {
        assert!(ran.stderr.contains(needle), "{needle:?} in {}", ran.stderr);
    }
    assert!(
        !ran.stderr.contains("spec.image: spec.image"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        c.admission_denials().await,
        denials + 1,
        "refused by our webhook"
    );

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
    assert_eq!(
        c.admission_denials().await,
        denials + 2,
        "refused by our webhook"
    );
    assert!(
        ran.stderr.contains("spec.policy.semver.range"),
        "{}",
        ran.stderr
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.repository("flux-system", "podinfo").await.is_none());
    assert!(c.policy("flux-system", "podinfo").await.is_none());
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
    let suspended = c
        .repository("flux-system", "podinfo")
        .await
        .expect("exists");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        registry_requests(&c),
        requests,
        "scanned while suspended (interval 2s)"
    );
    assert_eq!(
        scan_time(
            &c.repository("flux-system", "podinfo")
                .await
                .expect("exists")
        ),
        scan_time(&suspended)
    );
    // As in Flux, a suspended object still records its new generation (it was Ready) and
    // a reconcile request as handled, without scanning.
    assert_eq!(
        suspended["status"]["observedGeneration"],
        suspended["metadata"]["generation"]
    );
    c.request_scan("flux-system", "podinfo", "while-suspended")
        .await;
    c.wait_for_repository("flux-system", "podinfo", "the request handled", |o| {
        o["status"]["lastHandledReconcileAt"] == "while-suspended"
    })
    .await;
    assert_eq!(
        registry_requests(&c),
        requests,
        "the request scanned while suspended"
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
    assert!(c.repository("flux-system", "podinfo").await.is_none());
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
    // for the finalizer); the other goes with its namespace, whose deletion a user forces
    // by removing the finalizer by hand, so the store entry is left without an object.
    c.kill_reflector().await;
    // With no replica answering, failurePolicy Fail refuses a spec change (the webhooks'
    // matchConditions let the metadata-only edits below through).
    let ran = c
        .apply_result(&podinfo_repository("v1", "team-a", "app", &host, "20m"))
        .await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("failed calling webhook"),
        "{}",
        ran.stderr
    );
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
    c.wait_for_repository("team-a", "app", "Terminating with its namespace", |o| {
        o["metadata"]["deletionTimestamp"].is_string()
    })
    .await;
    c.kubectl_ok(&[
        "patch",
        "imagerepository",
        "app",
        "-n",
        "team-a",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .await;
    let started = Instant::now();
    while c.repository("team-a", "app").await.is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "team-a/app is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending = c
        .repository("flux-system", "podinfo")
        .await
        .expect("Terminating");
    assert!(pending["metadata"]["deletionTimestamp"].is_string());
    assert!(c.repository("team-a", "app").await.is_none());

    c.start_reflector().await;
    let started = Instant::now();
    while terminating.exists()
        || gone.exists()
        || c.repository("flux-system", "podinfo").await.is_some()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "after the restart: store {:?}, podinfo {:?}; {}",
            c.store_files(),
            c.repository("flux-system", "podinfo")
                .await
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
    let repo = c
        .repository("flux-system", "podinfo")
        .await
        .expect("exists");
    let policy = c.policy("flux-system", "podinfo").await.expect("exists");
    let events = c
        .events_about("flux-system", "ImageRepository", "podinfo")
        .await
        .len();

    c.kill_reflector().await;
    let baseline = c.writes().await;
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
    let repo_after = c
        .repository("flux-system", "podinfo")
        .await
        .expect("exists");
    let policy_after = c.policy("flux-system", "podinfo").await.expect("exists");
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
    let writes = c.writes().await.since(&baseline);
    assert_eq!(
        status_writes(&c, &baseline, REPO_STATUS).await,
        0,
        "{writes:?}"
    );
    assert_eq!(
        status_writes(&c, &baseline, POLICY_STATUS).await,
        0,
        "{writes:?}"
    );
    assert_eq!(
        c.events_about("flux-system", "ImageRepository", "podinfo")
            .await
            .len(),
        events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_recovers_by_itself_from_a_410_and_an_api_server_restart() {
    let c = start_with_podinfo("10m", &["1.0.0"]).await;
    let host = c.registry.host();
    ready_podinfo(&c, 1).await;

    // etcd's history is compacted and kube-apiserver restarted with an empty watch
    // cache: a watch that resumes from the old resourceVersion gets 410 Gone, and the
    // controller must relist and go on.
    c.kubectl_ok(&["label", "namespace", "default", "churn=1"])
        .await;
    c.control_plane.compact_etcd().await;
    c.control_plane.restart("kube-apiserver").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.registry
        .push_tags("stefanprodan/podinfo", &["1.1.0"])
        .await;
    c.request_scan("flux-system", "podinfo", "after-410").await;
    c.wait_for_repository(
        "flux-system",
        "podinfo",
        "the rescan asked after the 410",
        |o| tag_count(o) == Some(2) && o["status"]["lastHandledReconcileAt"] == "after-410",
    )
    .await;

    // The API server goes away for two seconds (watches drop, requests fail) and comes
    // back; then etcd does.
    c.control_plane.stop_component("kube-apiserver").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.control_plane.start_component("kube-apiserver").await;
    c.control_plane.restart("etcd").await;
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
    c.request_scan("flux-system", "podinfo", "after-restart")
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
        format!("Latest image tag for {image} resolved to 1.0.1")
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
    let denials = c.admission_denials().await;
    let ran = c.apply_result(&seed_app1_policy("team-b")).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        c.admission_denials().await,
        denials + 1,
        "refused by our webhook"
    );
    for needle in [
        "is invalid",
        "apps/app1",
        "kubernetes.io/metadata.name=flux-system",
        "kubernetes.io/metadata.name=team-b",
    ] {
        assert!(ran.stderr.contains(needle), "{needle:?} in {}", ran.stderr);
    }
    assert!(c.policy("team-b", "app1").await.is_none());

    // A new tag moves latestRef; observedPreviousRef takes the old one.
    c.registry.push_tags("org/image", &["1.0.2"]).await;
    c.request_scan("apps", "app1", "new-tag").await;
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
    let redigested = c
        .wait_for_policy("default", "app", "the new digest", |o| {
            o["status"]["latestRef"]["digest"] == moved.as_str()
        })
        .await;
    // The digest alone moved: the old ref becomes observedPreviousRef, as in Flux.
    assert_eq!(
        redigested["status"]["observedPreviousRef"],
        serde_json::json!({"name": format!("{host}/org/app"), "tag": "1.1.0", "digest": pushed})
    );
    assert_eq!(
        condition(&redigested, "Ready").expect("Ready")["message"],
        format!(
            "Latest image tag for {host}/org/app resolved to 1.1.0 with digest {moved} (previously {host}/org/app:1.1.0@{pushed})"
        )
    );

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

/// Two replicas compete for a Lease on the real API server: one leads, the other waits;
/// when the leader shuts down it releases the Lease and the other takes over at once,
/// without waiting for the lease duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_gives_one_leader_and_hands_over_on_release() {
    use image_reflector::controller::leader::{LeaderConfig, spawn};
    use tokio_util::sync::CancellationToken;

    let control_plane = test_support::control_plane::ControlPlane::start().await;
    let client = control_plane.client().await;
    let config = |identity: &str| {
        let mut c = LeaderConfig::new("default", "image-reflector-test", identity);
        c.lease_duration = Duration::from_secs(30);
        c.retry_period = Duration::from_millis(100);
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
    let lease = test_support::cluster::get_object(
        &client,
        "coordination.k8s.io",
        "v1",
        "leases",
        "default",
        "image-reflector-test",
    )
    .await
    .expect("the lease exists");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    stop_b.cancel();
}

// ---------------------------------------------------------------------------------------
// What only a real API server shows: the seed's kubectl workflows, CEL rules, schema
// defaults, server-side apply, namespace deletion, RBAC, failurePolicy
// ---------------------------------------------------------------------------------------

/// The seed's mutual-TLS instructions, literally: `kubectl create secret generic tls-certs
/// --from-file=certFile=client.crt --from-file=keyFile=client.key --from-file=caFile=ca.crt`,
/// named by `certSecretRef`, against a registry that requires a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_kubectl_create_secret_generic_from_files_authenticates_to_a_mutual_tls_registry()
{
    let c = Cluster::start(RegistryOptions {
        tls: RegistryTls::Mutual,
        ..Default::default()
    })
    .await;
    let host = c.registry.host();
    c.registry
        .push_tags("org/secure", &["1.0.0", "1.1.0"])
        .await;
    let client = c.registry.client_cert().expect("a client certificate");
    let files = c.dir().join("seed-certs");
    std::fs::create_dir_all(&files).expect("dir");
    std::fs::write(files.join("client.crt"), &client.cert_pem).expect("client.crt");
    std::fs::write(files.join("client.key"), &client.key_pem).expect("client.key");
    std::fs::write(files.join("ca.crt"), c.registry.ca_pem().expect("CA")).expect("ca.crt");
    let from = |key: &str, file: &str| format!("--from-file={key}={}", files.join(file).display());
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "tls-certs",
        "-n",
        "flux-system",
        &from("certFile", "client.crt"),
        &from("keyFile", "client.key"),
        &from("caFile", "ca.crt"),
    ])
    .await;
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1beta1
kind: ImageRepository
metadata:
  name: secure
  namespace: flux-system
spec:
  interval: 10m
  image: {host}/org/secure
  certSecretRef:
    name: tls-certs
"
    ))
    .await;
    c.wait_for_repository("flux-system", "secure", "Ready=True with 2 tags", |o| {
        ready_is(o, "True", Some("Succeeded")) && tag_count(o) == Some(2)
    })
    .await;
}

/// The CRDs are structural, their CEL rules compile, and kube-apiserver enforces them
/// itself: a policy that breaks one is refused before our validating webhook is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crds_cel_rules_are_enforced_by_the_api_server_before_the_webhook() {
    let c = Cluster::start(RegistryOptions::default()).await;
    for crd in [
        "imagerepositories.image.toolkit.fluxcd.io",
        "imagepolicies.image.toolkit.fluxcd.io",
    ] {
        let conditions = c
            .kubectl_ok(&["get", "crd", crd, "-o", "jsonpath={.status.conditions}"])
            .await;
        let conditions: Value = serde_json::from_str(&conditions).expect("conditions");
        let by_type = |t: &str| {
            conditions
                .as_array()
                .and_then(|a| a.iter().find(|c| c["type"] == t))
                .cloned()
        };
        assert_eq!(
            by_type("Established").map(|c| c["status"].clone()),
            Some("True".into())
        );
        assert!(
            by_type("NonStructuralSchema").is_none(),
            "{crd}: {conditions}"
        );
    }
    let before = validations(&c).await;
    let ran = c
        .apply_result(
            "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata:
  name: always-without-interval
  namespace: flux-system
spec:
  imageRepositoryRef:
    name: podinfo
  digestReflectionPolicy: Always
  policy:
    semver:
      range: 1.x
",
        )
        .await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains(
            "spec.interval must be set when spec.digestReflectionPolicy is set to 'Always'"
        ),
        "{}",
        ran.stderr
    );
    assert_eq!(
        validations(&c).await,
        before,
        "the validating webhook was asked"
    );
    assert!(
        c.policy("flux-system", "always-without-interval")
            .await
            .is_none()
    );
}

/// kube-apiserver applies the CRDs' schema defaults itself (here with our mutating webhook
/// out of the way); the webhook adds only what a schema cannot express, the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_defaults_come_from_the_api_server_and_the_webhook_adds_only_the_timeout() {
    let c = Cluster::start(RegistryOptions::default()).await;
    let repository = "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: defaults
  namespace: flux-system
spec:
  interval: 10m
  image: ghcr.io/org/app
";
    let mutating = c
        .saved_object("mutatingwebhookconfiguration", "image-reflector-defaulting")
        .await;
    c.kubectl_ok(&[
        "delete",
        "mutatingwebhookconfiguration",
        "image-reflector-defaulting",
    ])
    .await;
    let schema_only = dry_run_create(&c, repository).await;
    assert_eq!(schema_only["spec"]["provider"], "generic", "{schema_only}");
    assert_eq!(
        schema_only["spec"]["exclusionList"],
        serde_json::json!(["^.*\\.sig$"]),
        "{schema_only}"
    );
    assert!(schema_only["spec"]["timeout"].is_null(), "{schema_only}");

    c.kubectl_with_stdin(&["create", "-f", "-"], &mutating.to_string())
        .await;
    let started = Instant::now();
    loop {
        let defaulted = dry_run_create(&c, repository).await;
        if defaulted["spec"]["timeout"] == "10m" {
            assert_eq!(defaulted["spec"]["provider"], "generic");
            break;
        }
        assert!(
            started.elapsed() < WAIT_FOR_WEBHOOK,
            "no timeout defaulted: {defaulted}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An ImageRepository `name` in flux-system with `interval` and, if given, `timeout`.
fn timed_repository(name: &str, interval: &str, timeout: Option<&str>) -> String {
    let timeout = timeout
        .map(|t| format!("  timeout: {t}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: {name}
  namespace: flux-system
spec:
  interval: {interval}
  image: ghcr.io/org/app
{timeout}"
    )
}

/// The stored `spec.timeout` of the ImageRepository `name` in flux-system.
async fn stored_timeout(c: &Cluster, name: &str) -> String {
    let repo = c.repository("flux-system", name).await.expect("stored");
    repo["spec"]["timeout"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

/// The seed's rule, "the timeout defaults to the interval", through the real API server on
/// every path that changes an interval: client-side apply, server-side apply, edit and
/// patch. A timeout nobody wrote follows the interval, with no warning; a timeout the user
/// wrote (even one equal to the default) is never changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_nobody_wrote_follows_the_interval_on_every_path_and_a_written_one_is_kept() {
    let c = Cluster::start(RegistryOptions::default()).await;
    // Client-side apply, then server-side apply (as "gitops", forcing: after the patch
    // below, kubectl-patch owns the interval), through the same steps.
    for (name, server_side) in [("csa", false), ("ssa", true)] {
        let apply = async |interval: &str, timeout: Option<&str>| {
            let yaml = timed_repository(name, interval, timeout);
            let ran = if server_side {
                apply_server_side(&c, "gitops", &yaml, true).await
            } else {
                c.apply_result(&yaml).await
            };
            assert!(ran.success(), "{name}: {ran:?}");
            ran
        };
        for (interval, expected) in [("10m", "10m"), ("1h", "60m"), ("2m", "2m")] {
            let ran = apply(interval, None).await;
            assert!(
                !ran.stderr.contains("timeout"),
                "{name}: a warning: {}",
                ran.stderr
            );
            assert_eq!(
                stored_timeout(&c, name).await,
                expected,
                "{name}: {interval}"
            );
        }
        // Another client changes the interval of the applied object: the default follows.
        patch_repository(&c, name, "merge", r#"{"spec":{"interval":"6m"}}"#).await;
        assert_eq!(stored_timeout(&c, name).await, "6m", "{name}");
        // The user writes the default's own value, then changes the interval: theirs now.
        apply("6m", Some("6m")).await;
        apply("5m", Some("6m")).await;
        assert_eq!(stored_timeout(&c, name).await, "6m", "{name}");
        // Dropped from the configuration again: it goes, and the default follows.
        apply("7m", None).await;
        assert_eq!(stored_timeout(&c, name).await, "7m", "{name}");
    }

    // kubectl patch, merge and JSON, and kubectl edit (through its editor), of an object
    // made with kubectl create.
    c.kubectl_with_stdin(
        &["create", "-f", "-"],
        &timed_repository("edited", "10m", None),
    )
    .await;
    assert_eq!(stored_timeout(&c, "edited").await, "10m");
    patch_repository(&c, "edited", "merge", r#"{"spec":{"interval":"3m"}}"#).await;
    assert_eq!(stored_timeout(&c, "edited").await, "3m");
    let replace = r#"[{"op":"replace","path":"/spec/interval","value":"4m"}]"#;
    patch_repository(&c, "edited", "json", replace).await;
    assert_eq!(stored_timeout(&c, "edited").await, "4m");
    edit_repository(&c, "edited", "s/interval: 4m/interval: 8m/").await;
    assert_eq!(stored_timeout(&c, "edited").await, "8m");
    // A timeout of the user's own, by patch: kept through the next interval change.
    patch_repository(&c, "edited", "merge", r#"{"spec":{"timeout":"30s"}}"#).await;
    patch_repository(&c, "edited", "merge", r#"{"spec":{"interval":"9m"}}"#).await;
    assert_eq!(stored_timeout(&c, "edited").await, "30s");
    let repo = c.repository("flux-system", "edited").await.expect("stored");
    assert!(
        repo["metadata"]["annotations"]["image-reflector/defaulted-timeout"].is_null(),
        "{repo}"
    );
}

/// `kubectl patch imagerepository NAME -n flux-system --type KIND -p BODY`, which must succeed.
async fn patch_repository(c: &Cluster, name: &str, kind: &str, body: &str) {
    c.kubectl_ok(&[
        "patch",
        "imagerepository",
        name,
        "-n",
        "flux-system",
        "--type",
        kind,
        "-p",
        body,
    ])
    .await;
}

/// `kubectl edit imagerepository NAME -n flux-system` with `sed -i -e SCRIPT` as the
/// editor, which must succeed and change something.
async fn edit_repository(c: &Cluster, name: &str, script: &str) {
    let ran = c
        .kubectl_editing(
            &["edit", "imagerepository", name, "-n", "flux-system"],
            script,
        )
        .await;
    assert!(ran.success(), "kubectl edit: {ran:?}");
    assert!(
        ran.stdout.contains("edited"),
        "kubectl edit changed nothing: {ran:?}"
    );
}

/// kube-apiserver takes a moment to see a webhook configuration that was just created.
const WAIT_FOR_WEBHOOK: Duration = Duration::from_secs(10);

/// Two field managers apply the same ImageRepository server-side: the second conflicts on
/// the field the first owns until it forces, and neither conflicts with what
/// image-reflector writes (status, through its own subresource, and the finalizer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_by_two_field_managers_conflicts_until_forced_and_leaves_status_alone() {
    let c = Cluster::start(RegistryOptions::default()).await;
    let host = c.registry.host();
    c.registry
        .push_tags("stefanprodan/podinfo", &["1.0.0", "1.1.0", "latest"])
        .await;
    let with = |exclusions: &str| {
        format!(
            "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: podinfo
  namespace: flux-system
spec:
  interval: 10m
  image: {host}/stefanprodan/podinfo
  exclusionList: {exclusions}
"
        )
    };
    let ran = apply_server_side(&c, "platform", &with(r#"["^latest$"]"#), false).await;
    assert!(ran.success(), "{ran:?}");
    c.wait_for_repository("flux-system", "podinfo", "2 tags", |o| {
        ready_is(o, "True", Some("Succeeded")) && tag_count(o) == Some(2)
    })
    .await;

    let ran = apply_server_side(&c, "team", &with(r#"["^1\\.0"]"#), false).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("conflict"), "{}", ran.stderr);
    assert!(ran.stderr.contains("platform"), "{}", ran.stderr);
    assert!(ran.stderr.contains(".spec.exclusionList"), "{}", ran.stderr);

    let ran = apply_server_side(&c, "team", &with(r#"["^1\\.0"]"#), true).await;
    assert!(ran.success(), "{ran:?}");
    let repo = c
        .wait_for_repository("flux-system", "podinfo", "the forced exclusions", |o| {
            o["status"]["observedExclusionList"] == serde_json::json!(["^1\\.0"])
                && tag_count(o) == Some(2)
        })
        .await;
    let managers: Vec<(String, String)> = repo["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap_or_default().to_string(),
                m["subresource"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (manager, subresource) in [
        ("platform", ""),
        ("team", ""),
        ("image-reflector-controller", "status"),
        ("image-reflector-controller", ""),
    ] {
        assert!(
            managers
                .iter()
                .any(|(m, s)| m == manager && s == subresource),
            "{manager} {subresource:?} in {managers:?}"
        );
    }
    // The platform manager re-applies its old config: no longer the owner, it conflicts.
    let ran = apply_server_side(&c, "platform", &with(r#"["^latest$"]"#), false).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
}

/// Deleting a namespace deletes the ImageRepositories and ImagePolicies in it: the
/// controller releases its finalizers, the namespace controller finishes, within 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_with_repositories_and_policies_completes_within_30_seconds() {
    let c = Cluster::start(RegistryOptions::default()).await;
    let host = c.registry.host();
    c.registry
        .push_tags("stefanprodan/podinfo", &["1.0.0"])
        .await;
    c.apply(&namespace("team-gone")).await;
    for name in ["one", "two", "three"] {
        c.apply(&podinfo_repository("v1", "team-gone", name, &host, "10m"))
            .await;
        c.apply(&semver_policy("team-gone", name, name, "1.x"))
            .await;
    }
    for name in ["one", "two", "three"] {
        c.wait_for_policy("team-gone", name, "Ready=True", |o| {
            ready_is(o, "True", None)
        })
        .await;
    }
    let started = Instant::now();
    c.kubectl_ok(&["delete", "namespace", "team-gone", "--wait=false"])
        .await;
    loop {
        let ran = c.kubectl(&["get", "namespace", "team-gone"]).await;
        if ran.code == Some(1) && ran.stderr.contains("NotFound") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "namespace still there after {:?}: {}\n{}",
            started.elapsed(),
            c.kubectl_ok(&["get", "namespace", "team-gone", "-o", "yaml"])
                .await,
            c.reflector_log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("namespace deleted in {:?}", started.elapsed());
    assert!(c.store_files().is_empty(), "{:?}", c.store_files());
}

/// The ServiceAccount image-reflector runs as in every test here is allowed what it uses
/// and nothing more: it cannot write Secrets, read other kinds, create Pods, or write the
/// specs of ImageRepositories beyond their finalizers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_is_allowed_what_it_uses_and_nothing_else() {
    let c = Cluster::install(RegistryOptions::default()).await;
    let me = "system:serviceaccount:flux-system:image-reflector-controller";
    let allowed = [
        ("list", "imagerepositories.image.toolkit.fluxcd.io", "apps"),
        ("watch", "imagepolicies.image.toolkit.fluxcd.io", "apps"),
        // The push receiver's reconcile.fluxcd.io/requestedAt (and the finalizer).
        ("patch", "imagerepositories.image.toolkit.fluxcd.io", "apps"),
        (
            "patch",
            "imagerepositories.image.toolkit.fluxcd.io/status",
            "apps",
        ),
        (
            "patch",
            "imagepolicies.image.toolkit.fluxcd.io/status",
            "apps",
        ),
        (
            "update",
            "imagerepositories.image.toolkit.fluxcd.io/finalizers",
            "apps",
        ),
        // Registry credentials, and the push receiver's Secret (watched by name).
        ("get", "secrets", "apps"),
        ("watch", "secrets", "apps"),
        ("watch", "secrets", "flux-system"),
        ("get", "serviceaccounts", "apps"),
        ("create", "serviceaccounts/token", "apps"),
        ("watch", "namespaces", "apps"),
        ("create", "events.events.k8s.io", "apps"),
        ("create", "events", "apps"),
        ("get", "leases.coordination.k8s.io", "flux-system"),
        ("update", "leases.coordination.k8s.io", "flux-system"),
    ];
    let refused = [
        ("create", "secrets", "apps"),
        ("update", "secrets", "apps"),
        ("delete", "secrets", "apps"),
        ("create", "pods", "apps"),
        ("get", "pods", "apps"),
        ("get", "configmaps", "apps"),
        ("get", "deployments.apps", "apps"),
        (
            "create",
            "imagerepositories.image.toolkit.fluxcd.io",
            "apps",
        ),
        (
            "delete",
            "imagerepositories.image.toolkit.fluxcd.io",
            "apps",
        ),
        ("delete", "imagepolicies.image.toolkit.fluxcd.io", "apps"),
        ("update", "serviceaccounts", "apps"),
        ("create", "serviceaccounts", "apps"),
        ("update", "namespaces", "apps"),
        ("update", "leases.coordination.k8s.io", "apps"),
        (
            "create",
            "clusterrolebindings.rbac.authorization.k8s.io",
            "apps",
        ),
    ];
    for (verb, resource, ns) in allowed {
        assert!(
            can_i(&c, me, verb, resource, ns).await,
            "may {verb} {resource} in {ns}"
        );
    }
    for (verb, resource, ns) in refused {
        assert!(
            !can_i(&c, me, verb, resource, ns).await,
            "may not {verb} {resource} in {ns}"
        );
    }
}

/// How many reviews our validating webhook has answered.
async fn validations(c: &Cluster) -> f64 {
    c.reflector_metrics()
        .await
        .lines()
        .filter(|l| {
            l.starts_with("admission_requests_total{") && l.contains("webhook=\"validate\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `kubectl create --dry-run=server -o json` of `yaml`: the object as the API server
/// would store it.
async fn dry_run_create(c: &Cluster, yaml: &str) -> Value {
    let out = c
        .kubectl_with_stdin(
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            yaml,
        )
        .await;
    assert!(out.success(), "{out:?}");
    serde_json::from_str::<Value>(&out.stdout).expect("object JSON")
}

/// `kubectl apply --server-side --field-manager=MANAGER [--force-conflicts] -f -`.
async fn apply_server_side(
    c: &Cluster,
    manager: &str,
    yaml: &str,
    force: bool,
) -> test_support::kubectl::Ran {
    let manager = format!("--field-manager={manager}");
    let mut args = vec!["apply", "--server-side", manager.as_str(), "-f", "-"];
    if force {
        args.push("--force-conflicts");
    }
    c.kubectl_with_stdin(&args, yaml).await
}

/// `kubectl auth can-i VERB RESOURCE -n NAMESPACE --as USER`.
async fn can_i(c: &Cluster, user: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    // `RESOURCE/SUB` is a subresource (kubectl would read SUB as an object's name).
    let mut args = vec!["auth", "can-i", verb];
    match resource.split_once('/') {
        Some((resource, sub)) => args.extend([resource, "--subresource", sub]),
        None => args.push(resource),
    }
    args.extend(["-n", namespace, "--as", user]);
    let ran = c.kubectl(&args).await;
    match ran.stdout.trim() {
        "yes" => true,
        "no" => false,
        _ => panic!("kubectl auth can-i {verb} {resource}: {ran:?}"),
    }
}

/// Flux's own image-reflector-controller runs on our CRDs (one superset schema for every
/// version): the CRDs are a drop-in for Flux's, and its statuses survive our schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluxs_own_controller_reconciles_on_our_crds() {
    let c = Cluster::install(RegistryOptions::default()).await;
    let host = c.registry.host();
    c.registry
        .push_tags("stefanprodan/podinfo", &["1.0.0", "1.1.0"])
        .await;
    let flux = test_support::flux::FluxController::start(
        "image-reflector-controller",
        c.control_plane.kubeconfig(),
        &[],
    )
    .await;
    c.kubectl_ok(&[
        "delete",
        "mutatingwebhookconfiguration,validatingwebhookconfiguration",
        "--all",
    ])
    .await;
    c.apply(&format!(
        "{}  insecure: true\n",
        podinfo_repository("v1", "flux-system", "podinfo", &host, "10m")
    ))
    .await;
    c.apply(&semver_policy("flux-system", "podinfo", "podinfo", "1.x"))
        .await;
    c.wait_for_policy(
        "flux-system",
        "podinfo",
        "Flux's controller selects 1.1.0",
        |o| o["status"]["latestRef"]["tag"] == "1.1.0",
    )
    .await;
    let repo = c
        .wait_for_repository("flux-system", "podinfo", "Ready", |o| {
            ready_is(o, "True", None) && tag_count(o) == Some(2)
        })
        .await;
    assert!(flux.log().contains("podinfo"), "{}", flux.log());
    assert_eq!(
        repo["status"]["canonicalImageName"],
        format!("{host}/stefanprodan/podinfo")
    );
}

/// Flux's own Deployment args (tests/data/flux-deployment-args.txt) start image-reflector
/// unchanged: it becomes ready, leads through the Lease Flux's controller would use, and
/// reconciles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluxs_deployment_args_start_it_and_it_leads_and_reconciles() {
    let mut c = Cluster::install(RegistryOptions::default()).await;
    let args = std::fs::read_to_string(
        test_support::repo_root().join("tests/data/flux-deployment-args.txt"),
    )
    .expect("Flux's args");
    let args: Vec<&str> = args
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(args.contains(&"--enable-leader-election"), "{args:?}");
    c.start_reflector_with(&args).await;
    c.registry
        .push_tags("stefanprodan/podinfo", &["1.0.0"])
        .await;
    c.apply(&seed_podinfo(&c.registry.host(), "10m")).await;
    ready_podinfo(&c, 1).await;
    let lease = test_support::cluster::get_object(
        c.client(),
        "coordination.k8s.io",
        "v1",
        "leases",
        "flux-system",
        "image-reflector-controller-leader-election",
    )
    .await
    .expect("the Lease Flux's controller uses");
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{lease}"
    );
}

/// With `--events-addr`, events reach Flux's real notification-controller in Flux's event
/// format: a `generic` Provider pointing at a local HTTP sink and an Alert on ImagePolicy
/// events; a pushed tag that moves `latestRef` arrives at the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_fluxs_notification_controller_and_an_alert_delivers_a_moved_latest_ref() {
    let mut c = Cluster::install(RegistryOptions::default()).await;
    let crds = test_support::repo_root().join("target/control-plane/flux-crds/notification");
    c.kubectl_ok(&["apply", "-f", crds.to_str().expect("UTF-8 path")])
        .await;
    c.kubectl_ok(&[
        "wait",
        "--for",
        "condition=Established",
        "--timeout",
        "60s",
        "crd/alerts.notification.toolkit.fluxcd.io",
        "crd/providers.notification.toolkit.fluxcd.io",
    ])
    .await;
    let nc = test_support::flux::FluxController::start(
        "notification-controller",
        c.control_plane.kubeconfig(),
        &[],
    )
    .await;
    let sink = test_support::http_sink::HttpSink::start().await;
    c.apply(&format!(
        "apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata:
  name: sink
  namespace: flux-system
spec:
  type: generic
  address: {}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata:
  name: image-policies
  namespace: flux-system
spec:
  providerRef:
    name: sink
  eventSeverity: info
  eventSources:
    - kind: ImagePolicy
      name: '*'
",
        sink.url()
    ))
    .await;
    let events = format!(
        "--events-addr=http://{}/",
        nc.events.expect("events address")
    );
    c.start_reflector_with(&[&events]).await;

    c.registry
        .push_tags("stefanprodan/podinfo", &["1.0.0"])
        .await;
    c.apply(&seed_podinfo(&c.registry.host(), "10m")).await;
    c.apply(&semver_policy("flux-system", "podinfo", "podinfo", "1.x"))
        .await;
    c.wait_for_policy("flux-system", "podinfo", "1.0.0", |o| {
        o["status"]["latestRef"]["tag"] == "1.0.0"
    })
    .await;
    c.registry
        .push_tags("stefanprodan/podinfo", &["1.0.1"])
        .await;
    c.request_scan("flux-system", "podinfo", "pushed").await;
    let delivered = sink
        .wait_for("about the move to 1.0.1", Duration::from_secs(60), |r| {
            r.json().is_some_and(|e| {
                e["involvedObject"]["kind"] == "ImagePolicy"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("resolved to 1.0.1"))
            })
        })
        .await;
    let event = delivered.json().expect("JSON");
    assert_eq!(event["involvedObject"]["name"], "podinfo");
    assert_eq!(event["involvedObject"]["namespace"], "flux-system");
    assert_eq!(event["severity"], "info");
    assert_eq!(event["reason"], "Succeeded");
    assert_eq!(event["reportingController"], "image-reflector-controller");
    // Sent as image.toolkit.fluxcd.io/revision; the generic provider forwards it without
    // the group prefix.
    assert!(
        event["metadata"]["revision"]
            .as_str()
            .is_some_and(|r| r.ends_with(":1.0.1")),
        "{event}"
    );
    drop(nc);
}

/// A scan someone asked for shows Reconciling=True (reason Progressing, "scanning: ...")
/// while it runs, as Flux's does; when it ends, Reconciling is gone and Ready says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_scan_shows_reconciling_while_it_runs() {
    use test_support::fake_registry::{StandIn, StandInOptions};
    let c = Cluster::start(RegistryOptions::default()).await;
    let slow = StandIn::start(StandInOptions {
        repository: "org/slow".into(),
        tags: vec!["1.0.0".into(), "1.1.0".into()],
        stall: Some(Duration::from_secs(3)),
        ..Default::default()
    })
    .await;
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: slow
  namespace: flux-system
spec:
  interval: 1h
  insecure: true
  image: {}/org/slow
",
        slow.host()
    ))
    .await;
    c.wait_for_repository("flux-system", "slow", "Ready=True", |o| {
        ready_is(o, "True", Some("Succeeded")) && tag_count(o) == Some(2)
    })
    .await;
    c.request_scan("flux-system", "slow", "slow-please").await;
    let during = c
        .wait_for_repository("flux-system", "slow", "Reconciling=True", |o| {
            condition(o, "Reconciling").is_some_and(|r| r["status"] == "True")
        })
        .await;
    let reconciling = condition(&during, "Reconciling").expect("Reconciling");
    assert_eq!(reconciling["reason"], "Progressing");
    assert_eq!(reconciling["message"], "scanning: reconcile requested");
    assert!(
        ready_is(&during, "True", Some("Succeeded")),
        "the earlier verdict stays"
    );
    let after = c
        .wait_for_repository("flux-system", "slow", "the requested scan done", |o| {
            o["status"]["lastHandledReconcileAt"] == "slow-please"
        })
        .await;
    assert!(condition(&after, "Reconciling").is_none(), "{after}");
    assert!(ready_is(&after, "True", Some("Succeeded")));
}

/// As in Flux, `secretRef` and the service account's image pull secrets make one
/// keychain: a `secretRef` with credentials for another registry does not hide the
/// service account's pull secret for this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_ref_and_the_service_accounts_pull_secrets_make_one_keychain() {
    let c = start_with_private_image(RegistryTls::None, &["1.0.0", "1.1.0", "1.2.0"]).await;
    let host = c.registry.host();
    create_docker_registry_secret(
        &c,
        "flux-system",
        "elsewhere",
        "registry.elsewhere.example",
        "someone",
        "not-for-this-registry",
    )
    .await;
    c.apply(&via_service_account(
        &host,
        "  secretRef:\n    name: elsewhere\n",
    ))
    .await;
    c.wait_for_repository("flux-system", "via-service-account", "Ready=True", |o| {
        ready_is(o, "True", Some("Succeeded")) && tag_count(o) == Some(3)
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Issue 17: the push receiver
// ---------------------------------------------------------------------------------------

const RECEIVER_SECRET: &str = "image-reflector-receiver";
const LEADER_LEASE: &str = "image-reflector-controller-leader-election";

/// An ImageRepository `namespace/name` of `host/path`, scanned every hour.
fn hourly_repository(namespace: &str, name: &str, host: &str, path: &str) -> String {
    format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: {name}
  namespace: {namespace}
spec:
  interval: 1h
  image: {host}/{path}
"
    )
}

fn latest_tag(policy: &Value) -> Option<&str> {
    policy["status"]["latestRef"]["tag"].as_str()
}

/// `kubectl create secret generic image-reflector-receiver -n flux-system
/// --from-literal=KEY=VALUE...`, replacing it if it exists.
async fn receiver_secret(c: &Cluster, keys: &[(&str, &str)]) {
    let mut args = vec![
        "create".to_string(),
        "secret".into(),
        "generic".into(),
        RECEIVER_SECRET.into(),
        "-n".into(),
        "flux-system".into(),
        "--dry-run=client".into(),
        "-o".into(),
        "yaml".into(),
    ];
    args.extend(keys.iter().map(|(k, v)| format!("--from-literal={k}={v}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let yaml = c.kubectl_ok(&args).await;
    c.apply(&yaml).await;
}

/// Requests of image-reflector's scans of `path` in the registry's access log.
fn tag_listings(c: &Cluster, path: &str) -> usize {
    c.registry
        .requests_matching(&format!("GET /v2/{path}/tags/list"))
}

async fn lease_holder(c: &Cluster) -> Option<String> {
    test_support::cluster::get_object(
        c.client(),
        "coordination.k8s.io",
        "v1",
        "leases",
        "flux-system",
        LEADER_LEASE,
    )
    .await
    .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The registry (Debian's docker-registry with a `notifications` endpoint and its bearer
/// token, as the README tells users to configure it) notifies a replica that is not the
/// leader; that replica asks for the scans through the API, and the leader scans every
/// ImageRepository of the pushed image, in every namespace, within seconds although
/// their interval is an hour; no other repository is scanned, and a burst of 50 pushes
/// is one scan per repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_moves_latest_ref_within_seconds_through_a_replica_that_does_not_lead_and_scans_only_that_image()
 {
    let token = "e2e-push-token-3b7f";
    let port = test_support::free_port();
    let mut c = Cluster::install_notifying(
        RegistryOptions::default(),
        Some(test_support::registry::RegistryNotifications {
            url: format!("http://127.0.0.1:{port}/hooks/distribution"),
            headers: vec![("Authorization".into(), format!("Bearer {token}"))],
        }),
    )
    .await;
    let host = c.registry.host();
    receiver_secret(&c, &[("token", token)]).await;

    // The leader: started first, it takes the Lease and runs the controllers.
    c.start_reflector_with(&["--enable-leader-election"]).await;
    wait_until("the first replica leads", WAIT, async || {
        c.reflector().logged("controllers started")
    })
    .await;
    let leader = lease_holder(&c).await.expect("the Lease has a holder");
    // The replica the registry notifies: it serves the receiver and waits for the Lease.
    let follower = c
        .start_replica_with(
            "follower",
            &[
                "--enable-leader-election",
                "--receiver-addr",
                &format!("127.0.0.1:{port}"),
            ],
        )
        .await;
    assert_eq!(
        follower.receiver,
        Some(format!("127.0.0.1:{port}").parse().unwrap())
    );
    assert!(follower.logged("waiting for leadership"));

    // Pushed before anything watches them: logged no-ops.
    c.registry.push_tags("team/app", &["1.0.0"]).await;
    c.registry.push_tags("team/other", &["1.0.0"]).await;
    wait_until("the setup pushes were delivered", WAIT, async || {
        let m = follower.metrics_text().await;
        test_support::cluster::metric_sum(
            &m,
            "image_reflector_receiver_events_total",
            &["result=\"unwatched\""],
        ) >= 2.0
    })
    .await;

    c.apply(&namespace("apps")).await;
    c.apply(&namespace("staging")).await;
    c.apply(&hourly_repository("apps", "app", &host, "team/app"))
        .await;
    c.apply(&hourly_repository("staging", "app", &host, "team/app"))
        .await;
    c.apply(&hourly_repository("apps", "other", &host, "team/other"))
        .await;
    c.apply(&semver_policy("apps", "app", "app", ">=1.0.0"))
        .await;
    for (ns, name) in [("apps", "app"), ("staging", "app"), ("apps", "other")] {
        c.wait_for_repository(ns, name, "Ready with 1 tag", |o| {
            ready_is(o, "True", Some("Succeeded")) && tag_count(o) == Some(1)
        })
        .await;
    }
    c.wait_for_policy("apps", "app", "latestRef 1.0.0", |o| {
        latest_tag(o) == Some("1.0.0")
    })
    .await;
    let other = c.repository("apps", "other").await.expect("other");
    let other_reconciles = c.reconcile_count("ImageRepository", "apps", "other").await;
    let (app_listings, other_listings) =
        (tag_listings(&c, "team/app"), tag_listings(&c, "team/other"));

    // One push: latestRef moves within seconds, and both repositories of the image scan.
    let pushed = Instant::now();
    c.registry.push_tags("team/app", &["1.1.0"]).await;
    c.wait_for_policy("apps", "app", "latestRef 1.1.0", |o| {
        latest_tag(o) == Some("1.1.0")
    })
    .await;
    let latency = pushed.elapsed();
    assert!(
        latency < Duration::from_secs(10),
        "latestRef moved {latency:?} after the push (the interval is 1h)"
    );
    c.wait_for_repository("staging", "app", "2 tags", |o| tag_count(o) == Some(2))
        .await;
    assert_eq!(tag_listings(&c, "team/app"), app_listings + 2);

    // A burst of 50 tags: one scan per repository.
    let tags: Vec<String> = (0..50).map(|i| format!("2.0.{i}")).collect();
    c.registry.push_tags("team/app", &tags).await;
    c.wait_for_policy("apps", "app", "latestRef 2.0.49", |o| {
        latest_tag(o) == Some("2.0.49")
    })
    .await;
    c.wait_for_repository("staging", "app", "52 tags", |o| tag_count(o) == Some(52))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        tag_listings(&c, "team/app"),
        app_listings + 4,
        "two scans per repository in all: one for the single push, one for the burst"
    );

    // Nothing else was scanned, or even reconciled.
    let other_now = c.repository("apps", "other").await.expect("other");
    assert_eq!(scan_time(&other_now), scan_time(&other));
    assert_eq!(tag_listings(&c, "team/other"), other_listings);
    assert_eq!(
        c.reconcile_count("ImageRepository", "apps", "other").await,
        other_reconciles
    );
    let app = c.repository("apps", "app").await.expect("app");
    assert!(
        app["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"].is_string()
            && app["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
                == app["status"]["lastHandledReconcileAt"],
        "the request went through the API and was handled: {}",
        app["metadata"]
    );

    // The follower never led; it counted what it received and measured the waits.
    assert_eq!(lease_holder(&c).await.as_deref(), Some(leader.as_str()));
    assert!(!follower.logged("controllers started"));
    let sum = |m: &str, metric: &str, labels: &[&str]| {
        test_support::cluster::metric_sum(m, metric, labels)
    };
    wait_until(
        "the follower saw all four scans recorded",
        WAIT,
        async || {
            let m = follower.metrics_text().await;
            sum(
                &m,
                "image_reflector_receiver_push_to_scan_seconds_count",
                &[],
            ) >= 4.0
        },
    )
    .await;
    let m = follower.metrics_text().await;
    assert_eq!(
        sum(
            &m,
            "image_reflector_receiver_scan_requests_total",
            &["result=\"requested\""]
        ),
        4.0,
        "{m}"
    );
    assert!(
        sum(
            &m,
            "image_reflector_receiver_events_total",
            &["provider=\"distribution\"", "result=\"triggered\""]
        ) >= 51.0,
        "{m}"
    );
    assert_eq!(
        sum(
            &m,
            "image_reflector_receiver_events_total",
            &["result=\"unauthorized\""]
        ),
        0.0
    );
}

/// A delivery was accepted (202) with this `result`.
fn assert_accepted(status: u16, text: &str, result: &str) {
    assert!(
        status == 202 && text.contains(&format!("\"result\":\"{result}\"")),
        "expected 202 {result}, got {status}: {text}"
    );
}

async fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut request = http.post(url).header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.body(body).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// What a forged, malformed or misdirected delivery gets, and that it changes nothing;
/// then a GitHub `package` event signed with the Secret's `github` key scans at once, its
/// redelivery scans nothing more, and a rotated token applies without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_malformed_and_unknown_deliveries_change_nothing_and_a_signed_one_scans_at_once() {
    let (token, github_secret) = ("e2e-shared-9c1d", "e2e-github-hmac-44a0");
    let mut c = Cluster::install(RegistryOptions::default()).await;
    let host = c.registry.host();
    receiver_secret(&c, &[("token", token), ("github", github_secret)]).await;
    c.start_reflector_with(&["--receiver-addr", "127.0.0.1:0"])
        .await;
    let base = format!(
        "http://{}/hooks",
        c.reflector().receiver.expect("the receiver listens")
    );
    c.registry.push_tags("team/app", &["1.0.0"]).await;
    c.apply(&namespace("apps")).await;
    c.apply(&hourly_repository("apps", "app", &host, "team/app"))
        .await;
    let before = c
        .wait_for_repository("apps", "app", "Ready with 1 tag", |o| {
            ready_is(o, "True", Some("Succeeded")) && tag_count(o) == Some(1)
        })
        .await;
    c.registry.push_tags("team/app", &["1.1.0"]).await;

    let envelope = serde_json::json!({"events": [{
        "id": "e2e-event-1", "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "repository": "team/app", "tag": "1.1.0"},
        "request": {"host": host},
    }]})
    .to_string();
    let bearer = format!("Bearer {token}");
    let distribution = format!("{base}/distribution");
    let unsigned_github = serde_json::json!({"action": "published", "package": {
        "name": "app", "package_type": "CONTAINER",
        "package_version": {"package_url": format!("{host}/team/app:1.1.0"),
            "container_metadata": {"tag": {"name": "1.1.0"}}}}})
    .to_string();
    let forged =
        image_reflector::receiver::auth::sign(b"not the secret", unsigned_github.as_bytes());
    // (URL, headers, body, the status it gets)
    type Delivery<'a> = (String, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let refused: Vec<Delivery> = vec![
        (distribution.clone(), vec![], envelope.clone().into(), 401),
        (
            distribution.clone(),
            vec![("authorization", "Bearer wrong")],
            envelope.clone().into(),
            401,
        ),
        (
            format!("{base}/github"),
            vec![
                ("x-github-event", "package"),
                ("x-hub-signature-256", &forged),
            ],
            unsigned_github.clone().into(),
            401,
        ),
        (
            format!("{base}/github"),
            vec![("x-github-event", "package")],
            unsigned_github.clone().into(),
            401,
        ),
        (format!("{base}/dockerhub"), vec![], b"{}".to_vec(), 401),
        (
            format!("{base}/dockerhub/wrong-token"),
            vec![],
            b"{}".to_vec(),
            401,
        ),
        (
            format!("{distribution}/{token}"),
            vec![],
            envelope.clone().into(),
            404,
        ),
        (
            format!("{base}/nexus"),
            vec![("authorization", &bearer)],
            envelope.clone().into(),
            404,
        ),
        (
            distribution.clone(),
            vec![("authorization", &bearer)],
            b"{\"events\": [".to_vec(),
            400,
        ),
        (
            distribution.clone(),
            vec![("authorization", &bearer)],
            vec![b' '; 2 * 1024 * 1024],
            413,
        ),
    ];
    for (url, headers, body, expected) in refused {
        let (status, text) = post(&url, &headers, body).await;
        assert_eq!(status, expected, "POST {url} {headers:?}: {text}");
    }
    // Authenticated, but for an image nobody watches: accepted, and nothing to do.
    let (status, text) = post(
        &format!("{base}/generic"),
        &[("authorization", &bearer)],
        format!(r#"{{"image": "{host}/team/nobody", "tag": "1.0"}}"#),
    )
    .await;
    assert_accepted(status, &text, "unwatched");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = c.repository("apps", "app").await.expect("app");
    assert_eq!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "no refused delivery wrote anything"
    );
    assert_eq!(tag_count(&after), Some(1));

    // A GitHub package event signed with the `github` key: scanned at once.
    let signed =
        image_reflector::receiver::auth::sign(github_secret.as_bytes(), unsigned_github.as_bytes());
    let github_headers = [
        ("x-github-event", "package"),
        ("x-github-delivery", "e2e-delivery-1"),
        ("x-hub-signature-256", signed.as_str()),
    ];
    let (status, text) = post(
        &format!("{base}/github"),
        &github_headers,
        unsigned_github.clone(),
    )
    .await;
    assert_accepted(status, &text, "triggered");
    let scanned = c
        .wait_for_repository("apps", "app", "2 tags after the GitHub event", |o| {
            tag_count(o) == Some(2) && o["status"]["lastHandledReconcileAt"].is_string()
        })
        .await;
    // Its redelivery is recognised and asks for nothing.
    let (status, text) = post(&format!("{base}/github"), &github_headers, unsigned_github).await;
    assert_accepted(status, &text, "duplicate");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = c.repository("apps", "app").await.expect("app");
    assert_eq!(
        again["metadata"]["annotations"], scanned["metadata"]["annotations"],
        "a redelivery requests no scan"
    );

    // A rotated token applies at once; the old one no longer does.
    receiver_secret(
        &c,
        &[("token", "e2e-rotated-77e2"), ("github", github_secret)],
    )
    .await;
    wait_until("the rotated token is accepted", WAIT, async || {
        post(
            &distribution,
            &[("authorization", "Bearer e2e-rotated-77e2")],
            envelope.clone(),
        )
        .await
        .0 == 202
    })
    .await;
    assert_eq!(
        post(&distribution, &[("authorization", &bearer)], envelope)
            .await
            .0,
        401
    );

    let m = c.reflector_metrics().await;
    let events = |labels: &[&str]| {
        test_support::cluster::metric_sum(&m, "image_reflector_receiver_events_total", labels)
    };
    assert!(events(&["result=\"unauthorized\""]) >= 7.0, "{m}");
    assert_eq!(events(&["result=\"unknown_provider\""]), 2.0, "{m}");
    assert_eq!(events(&["result=\"bad_request\""]), 1.0, "{m}");
    assert_eq!(events(&["result=\"too_large\""]), 1.0, "{m}");
    assert_eq!(
        events(&["provider=\"github\"", "result=\"duplicate\""]),
        1.0,
        "{m}"
    );
    assert!(
        !c.reflector_log_tail().contains(token),
        "no secret is logged"
    );
}
