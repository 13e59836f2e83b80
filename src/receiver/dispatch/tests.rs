use super::*;
use crate::api::ImageRepositoryStatus;
use kube::api::ObjectMeta;

fn repo(namespace: &str, name: &str, image: &str) -> ImageRepository {
    let mut r = ImageRepository::new(
        name,
        ImageRepositorySpec {
            image: image.to_string(),
            interval: "1h".to_string(),
            ..Default::default()
        },
    );
    r.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        ..Default::default()
    };
    r
}

fn keys(repos: Vec<ImageRepository>, canonical: &str, tag: Option<&str>) -> Vec<String> {
    let repos: Vec<Arc<ImageRepository>> = repos.into_iter().map(Arc::new).collect();
    let mut keys: Vec<String> = matching(&repos, canonical, tag)
        .into_iter()
        .map(|k| k.to_string())
        .collect();
    keys.sort();
    keys
}

#[test]
fn a_push_matches_every_repository_of_that_canonical_name_in_every_namespace() {
    let repos = vec![
        repo("apps", "web", "ghcr.io/acme/web"),
        repo("staging", "web", "ghcr.io/acme/web"),
        repo("apps", "web-docker", "docker.io/acme/web"),
        repo("apps", "api", "ghcr.io/acme/api"),
        repo("apps", "webapp", "ghcr.io/acme/mywebapp"),
    ];
    assert_eq!(
        keys(repos, "ghcr.io/acme/web", Some("1.0")),
        ["apps/web", "staging/web"]
    );
}

#[test]
fn docker_hub_names_match_in_every_spelling() {
    let repos = vec![
        repo("a", "short", "nginx"),
        repo("a", "library", "library/nginx"),
        repo("a", "full", "docker.io/library/nginx"),
        repo("a", "index", "index.docker.io/library/nginx"),
    ];
    assert_eq!(
        keys(repos, "docker.io/library/nginx", None),
        ["a/full", "a/index", "a/library", "a/short"]
    );
}

#[test]
fn suspended_or_deleting_repositories_and_excluded_tags_are_left_out() {
    let mut suspended = repo("a", "suspended", "ghcr.io/acme/web");
    suspended.spec.suspend = true;
    let mut deleting = repo("a", "deleting", "ghcr.io/acme/web");
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
    );
    let mut no_rc = repo("a", "no-rc", "ghcr.io/acme/web");
    no_rc.spec.exclusion_list = Some(vec!["-rc".into(), "[".into()]);
    let plain = repo("a", "plain", "ghcr.io/acme/web");
    let all = vec![suspended, deleting, no_rc, plain];
    assert_eq!(
        keys(all.clone(), "ghcr.io/acme/web", Some("1.0")),
        ["a/no-rc", "a/plain"]
    );
    assert_eq!(
        keys(all.clone(), "ghcr.io/acme/web", Some("1.1-rc")),
        ["a/plain"]
    );
    // The default exclusion list leaves out cosign's signature tags; a list of one's
    // own replaces it.
    assert_eq!(
        keys(all.clone(), "ghcr.io/acme/web", Some("sha256-abc.sig")),
        ["a/no-rc"]
    );
    // A deletion by digest names no tag: it concerns every repository of the image.
    assert_eq!(keys(all, "ghcr.io/acme/web", None), ["a/no-rc", "a/plain"]);
}

fn c() -> Coalescing {
    Coalescing {
        quiet_period: Duration::from_millis(500),
        max_delay: Duration::from_secs(5),
    }
}

#[test]
fn a_burst_is_due_once_pushes_stop_for_the_quiet_period() {
    let t0 = Instant::now();
    let key = ObjectKey::new("a", "web");
    let mut pending = HashMap::new();
    pending.insert(
        key.clone(),
        Pending {
            first: t0,
            last: t0 + Duration::from_millis(300),
            pushes: 50,
        },
    );
    let (due, next) = take_due(&mut pending, t0 + Duration::from_millis(700), &c());
    assert!(due.is_empty());
    assert_eq!(next, Some(t0 + Duration::from_millis(800)));
    let (due, next) = take_due(&mut pending, t0 + Duration::from_millis(800), &c());
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].1.pushes, 50);
    assert_eq!(next, None);
    assert!(pending.is_empty());
}

#[test]
fn a_steady_stream_of_pushes_is_requested_at_the_maximum_delay() {
    let t0 = Instant::now();
    let mut pending = HashMap::new();
    pending.insert(
        ObjectKey::new("a", "web"),
        Pending {
            first: t0,
            last: t0 + Duration::from_millis(4900),
            pushes: 49,
        },
    );
    let (due, _) = take_due(&mut pending, t0 + Duration::from_secs(5), &c());
    assert_eq!(due.len(), 1);
}

#[test]
fn a_redelivered_id_is_seen_once_and_forgotten_after_an_hour() {
    let mut seen = Seen::default();
    let t0 = Instant::now();
    assert!(seen.first_time("distribution/e1".into(), t0));
    assert!(!seen.first_time("distribution/e1".into(), t0 + Duration::from_secs(5)));
    assert!(seen.first_time("github/e1".into(), t0));
    assert!(seen.first_time(
        "distribution/e1".into(),
        t0 + SEEN_FOR + Duration::from_secs(1)
    ));
}

#[tokio::test]
async fn accept_schedules_each_repository_once_per_delivery_and_skips_redeliveries() {
    let (store, mut writer) = kube::runtime::reflector::store::<ImageRepository>();
    for r in [
        repo("apps", "web", "registry.example.com:5000/team/app"),
        repo("other", "web", "registry.example.com:5000/team/app"),
        repo("apps", "api", "registry.example.com:5000/team/api"),
    ] {
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(r));
    }
    let d = Dispatcher::new(store, c(), ReceiverMetrics::default());
    let push = |tag: &str, id: &str| Push {
        repository: "registry.example.com:5000/team/app".into(),
        tag: Some(tag.into()),
        id: Some(id.into()),
    };
    let a = d.accept(
        Provider::Distribution,
        vec![push("1", "e1"), push("2", "e2")],
    );
    assert_eq!(
        a,
        Accepted {
            new: 2,
            duplicates: 0,
            invalid: 0,
            repositories: 2
        }
    );
    assert_eq!(lock(&d.pending).len(), 2);
    assert!(lock(&d.pending).values().all(|p| p.pushes == 2));
    let again = d.accept(Provider::Distribution, vec![push("1", "e1")]);
    assert_eq!(again.duplicates, 1);
    assert_eq!(again.repositories, 0);
    let unwatched = d.accept(
        Provider::Generic,
        vec![Push {
            repository: "registry.example.com:5000/team/nobody".into(),
            tag: Some("1".into()),
            id: None,
        }],
    );
    assert_eq!(unwatched.repositories, 0);
    let invalid = d.accept(
        Provider::Generic,
        vec![Push {
            repository: "Not An Image".into(),
            tag: None,
            id: None,
        }],
    );
    assert_eq!(invalid.invalid, 1);
}

#[test]
fn the_wait_is_observed_when_the_status_records_the_request() {
    let (store, _writer) = kube::runtime::reflector::store::<ImageRepository>();
    let metrics = ReceiverMetrics::default();
    let d = Dispatcher::new(store, c(), metrics);
    let key = ObjectKey::new("apps", "web");
    let requested: jiff::Timestamp = "2026-12-02T06:00:00.5Z".parse().unwrap();
    lock(&d.awaiting).insert(
        key.clone(),
        Awaiting {
            requested,
            first: Instant::now(),
            since: Instant::now(),
        },
    );
    let mut obj = repo("apps", "web", "ghcr.io/acme/web");
    obj.status = Some(ImageRepositoryStatus {
        last_handled_reconcile_at: Some("2026-12-02T06:00:00.4Z".into()),
        ..Default::default()
    });
    d.observe(&obj);
    assert!(
        lock(&d.awaiting).contains_key(&key),
        "an older request was handled"
    );
    obj.status = Some(ImageRepositoryStatus {
        last_handled_reconcile_at: Some("2026-12-02T06:00:00.500000000Z".into()),
        ..Default::default()
    });
    d.observe(&obj);
    assert!(lock(&d.awaiting).is_empty());
}
