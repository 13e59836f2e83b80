use super::*;
use crate::api::ImageRepositorySpec;
use crate::store::{SecretVersion, TagStore};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta as PartialObjectMetadata;
use kube::runtime::reflector::Store;
use sha2::{Digest, Sha256};

fn at(secs: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(secs).expect("valid timestamp")
}

fn meta(uid: &str, revision: &str, scanned: i64) -> EntryMeta {
    EntryMeta {
        uid: uid.into(),
        canonical_image_name: "docker.io/library/alpine".into(),
        revision: revision.into(),
        scan_time: at(scanned),
        tag_count: 1,
        spec_fingerprint: "fp".into(),
        pull_secrets: Vec::new(),
    }
}

fn ready_status(revision: &str, scanned: i64) -> ImageRepositoryStatus {
    let mut s = ImageRepositoryStatus {
        last_scan_result: Some(ScanResult {
            tag_count: 1,
            scan_time: Some(Time(at(scanned))),
            latest_tags: vec!["1.0".into()],
            revision: Some(revision.into()),
        }),
        ..Default::default()
    };
    conditions::set(
        &mut s.conditions,
        READY,
        true,
        SUCCEEDED,
        "ok",
        Some(1),
        at(scanned),
    );
    s
}

const MIN: Duration = Duration::from_secs(60);

/// A repository with uid u1 and fingerprint fp, interval 1 min, looked at at t=1000.
fn observed() -> Observed<'static> {
    Observed {
        uid: "u1",
        fingerprint: "fp",
        requested_at: None,
        interval: MIN,
        now: at(1000),
    }
}

#[test]
fn the_scan_timeout_falls_back_to_the_interval() {
    let spec = |timeout: Option<&str>, interval: &str| ImageRepositorySpec {
        image: "alpine".into(),
        interval: interval.into(),
        timeout: timeout.map(str::to_string),
        ..Default::default()
    };
    assert_eq!(
        scan_timeout(&spec(Some("30s"), "5m")),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        scan_timeout(&spec(None, "5m")),
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        scan_timeout(&spec(Some("0s"), "5m")),
        Some(Duration::from_secs(300))
    );
    assert_eq!(scan_timeout(&spec(None, "soon")), None);
}

#[test]
fn a_repository_never_scanned_is_scanned_now() {
    let due = scan_due(&Default::default(), None, observed());
    assert_eq!(due, Due::Now("never scanned"));
}

#[test]
fn a_recreated_object_does_not_inherit_the_old_tags() {
    let m = meta("old-uid", "sha256:a", 990);
    let due = scan_due(
        &ready_status("sha256:a", 990),
        Some(&m),
        Observed {
            uid: "new-uid",
            ..observed()
        },
    );
    assert_eq!(due, Due::Now("never scanned"));
}

#[test]
fn a_recent_scan_waits_for_the_rest_of_the_interval() {
    let m = meta("u1", "sha256:a", 990);
    let due = scan_due(&ready_status("sha256:a", 990), Some(&m), observed());
    assert_eq!(due, Due::In(Duration::from_secs(50)));
}

#[test]
fn an_elapsed_interval_scans() {
    let m = meta("u1", "sha256:a", 900);
    let due = scan_due(&ready_status("sha256:a", 900), Some(&m), observed());
    assert_eq!(due, Due::Now("the interval has elapsed"));
}

#[test]
fn a_changed_fingerprint_scans_at_once() {
    let m = meta("u1", "sha256:a", 990);
    let due = scan_due(
        &ready_status("sha256:a", 990),
        Some(&m),
        Observed {
            fingerprint: "other",
            ..observed()
        },
    );
    assert!(matches!(due, Due::Now(_)));
}

#[test]
fn a_new_requested_at_scans_at_once_and_an_handled_one_does_not() {
    let m = meta("u1", "sha256:a", 990);
    let mut status = ready_status("sha256:a", 990);
    let due = scan_due(
        &status,
        Some(&m),
        Observed {
            requested_at: Some("now"),
            ..observed()
        },
    );
    assert_eq!(due, Due::Now("reconcile requested"));
    status.last_handled_reconcile_at = Some("now".into());
    let due = scan_due(
        &status,
        Some(&m),
        Observed {
            requested_at: Some("now"),
            ..observed()
        },
    );
    assert!(matches!(due, Due::In(_)));
}

fn spec_with(f: impl FnOnce(&mut ImageRepositorySpec)) -> ImageRepositorySpec {
    let mut spec = ImageRepositorySpec {
        image: "ghcr.io/org/app".into(),
        interval: "1m".into(),
        ..Default::default()
    };
    f(&mut spec);
    spec
}

fn inputs(spec: &ImageRepositorySpec, default_sa: Option<&str>) -> ScanInputs {
    let image = ImageRef::parse(&spec.image).expect("image");
    ScanInputs::of(spec, &image, default_sa, &|name| format!("{name}-v1"))
}

fn regcred(version: &str) -> SecretVersion {
    SecretVersion {
        name: "regcred".into(),
        resource_version: version.into(),
    }
}

/// The entry a scan of `inputs` that read regcred at version 7 stores.
fn scanned_with_regcred_7(inputs: &ScanInputs) -> EntryMeta {
    EntryMeta {
        spec_fingerprint: inputs.fingerprint(&[regcred("7")]),
        pull_secrets: vec![regcred("7")],
        ..meta("u1", "sha256:a", 990)
    }
}

#[test]
fn a_changed_pull_secret_of_the_service_account_scans_at_once_from_the_entry_alone() {
    let spec = spec_with(|s| s.service_account_name = Some("puller".into()));
    let inputs = inputs(&spec, None);
    let entry = scanned_with_regcred_7(&inputs);
    let status = ready_status("sha256:a", 990);
    let decide = |cached: &str| {
        let cached = cached.to_string();
        let fingerprint = inputs.current_fingerprint(Some(&entry), &|_| cached.clone());
        scan_due(
            &status,
            Some(&entry),
            Observed {
                fingerprint: &fingerprint,
                ..observed()
            },
        )
    };
    assert_eq!(decide("7"), Due::In(Duration::from_secs(50)));
    assert!(matches!(decide("8"), Due::Now(_)), "{:?}", decide("8"));
    assert!(
        matches!(decide(""), Due::Now(_)),
        "a deleted pull secret changes what the scan finds too"
    );
}

#[test]
fn pull_secrets_count_only_for_specs_that_read_a_service_account() {
    let via_default = inputs(&spec_with(|_| {}), Some("default"));
    assert!(via_default.reads_pull_secrets);
    assert_ne!(
        via_default.fingerprint(&[regcred("7")]),
        via_default.fingerprint(&[regcred("8")])
    );
    // secretRef and serviceAccountName make one keychain, as in Flux.
    let both = inputs(
        &spec_with(|s| {
            s.service_account_name = Some("puller".into());
            s.secret_ref = Some(api::LocalObjectReference {
                name: "creds".into(),
            });
        }),
        Some("default"),
    );
    assert!(both.reads_pull_secrets);
    for spec in [
        spec_with(|s| {
            s.secret_ref = Some(api::LocalObjectReference {
                name: "creds".into(),
            });
        }),
        spec_with(|s| {
            s.service_account_name = Some("puller".into());
            s.provider = Some(api::Provider::Aws);
        }),
        spec_with(|_| {}),
    ] {
        let i = inputs(&spec, None);
        assert!(!i.reads_pull_secrets, "{spec:?}");
        assert_eq!(i.fingerprint(&[regcred("7")]), i.fingerprint(&[]));
    }
}

/// The fingerprint as it was computed before pull secrets were recorded in the entry.
fn fingerprint_before_pull_secrets(spec: &ImageRepositorySpec) -> String {
    let v = |name: Option<&api::LocalObjectReference>| {
        name.map_or(serde_json::Value::Null, |r| {
            json!([r.name, format!("{}-v1", r.name)])
        })
    };
    let material = json!({
        "image": ImageRef::parse(&spec.image).expect("image").canonical(),
        "exclusionList": spec.effective_exclusion_list(),
        "provider": spec.effective_provider().as_str(),
        "insecure": spec.insecure,
        "serviceAccountName": spec.service_account_name,
        "secretRef": v(spec.secret_ref.as_ref()),
        "certSecretRef": v(spec.cert_secret_ref.as_ref()),
        "proxySecretRef": v(spec.proxy_secret_ref.as_ref()),
    });
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(material.to_string().as_bytes()))
    )
}

#[test]
fn entries_from_before_pull_secrets_were_recorded_rescan_only_if_they_read_some() {
    let named = spec_with(|s| {
        s.secret_ref = Some(api::LocalObjectReference {
            name: "creds".into(),
        });
        s.cert_secret_ref = Some(api::LocalObjectReference { name: "ca".into() });
    });
    let i = inputs(&named, None);
    assert_eq!(
        i.current_fingerprint(None, &|name| format!("{name}-v1")),
        fingerprint_before_pull_secrets(&named),
        "no rescan after the upgrade"
    );
    let via_account = spec_with(|s| s.service_account_name = Some("puller".into()));
    let old = EntryMeta {
        spec_fingerprint: fingerprint_before_pull_secrets(&via_account),
        ..meta("u1", "sha256:a", 990)
    };
    let i = inputs(&via_account, None);
    let fingerprint = i.current_fingerprint(Some(&old), &|name| format!("{name}-v1"));
    assert_ne!(
        fingerprint, old.spec_fingerprint,
        "one rescan records which pull secrets it read"
    );
}

#[test]
fn a_secret_change_maps_to_the_repositories_that_name_it_or_last_read_it() {
    use kube::core::{ObjectMeta, PartialObjectMetaExt};
    use kube::runtime::{reflector, watcher};

    let (repositories, mut repo_writer) = reflector::store::<ImageRepository>();
    let mut named = ImageRepository::new(
        "names-it",
        spec_with(|s| {
            s.proxy_secret_ref = Some(api::LocalObjectReference {
                name: "regcred".into(),
            })
        }),
    );
    named.metadata.namespace = Some("apps".into());
    repo_writer.apply_watcher_event(&watcher::Event::Apply(named));

    let (secrets, mut secret_writer) = reflector::store::<PartialObjectMetadata<Secret>>();
    let set_version = |writer: &mut reflector::store::Writer<_>, version: &str| {
        let secret = ObjectMeta {
            name: Some("regcred".into()),
            namespace: Some("apps".into()),
            resource_version: Some(version.into()),
            ..Default::default()
        }
        .into_response_partial::<Secret>();
        writer.apply_watcher_event(&watcher::Event::Apply(secret));
    };
    set_version(&mut secret_writer, "7");

    let dir = tempfile::tempdir().expect("temp dir");
    let store = TagStore::open(dir.path()).expect("store");
    let put = |name: &str, namespace: &str, meta: EntryMeta| {
        let entry = Entry {
            meta: EntryMeta {
                tag_count: 0,
                ..meta
            },
            tags: Vec::new(),
        };
        store
            .put(&ObjectKey::new(namespace, name), &entry)
            .expect("put");
    };
    let read_7 = EntryMeta {
        pull_secrets: vec![regcred("7")],
        ..meta("u1", "sha256:a", 990)
    };
    put("read-it", "apps", read_7.clone());
    put("read-it-elsewhere", "other", read_7);
    put("read-none", "apps", meta("u2", "sha256:b", 990));

    let users = |secrets: &Store<PartialObjectMetadata<Secret>>| {
        let mut names: Vec<String> =
            repositories_using_secret(&repositories, secrets, &store, "apps", "regcred")
                .into_iter()
                .map(|r| r.name)
                .collect();
        names.sort();
        names
    };
    assert_eq!(
        users(&secrets),
        ["names-it"],
        "a relist at the version the scan read rescans nothing"
    );
    set_version(&mut secret_writer, "8");
    assert_eq!(users(&secrets), ["names-it", "read-it"]);
}

#[test]
fn a_failed_last_attempt_scans_again() {
    let m = meta("u1", "sha256:a", 990);
    let mut status = ready_status("sha256:a", 990);
    conditions::set(
        &mut status.conditions,
        READY,
        false,
        "AuthenticationFailed",
        "401",
        Some(1),
        at(995),
    );
    let due = scan_due(&status, Some(&m), observed());
    assert_eq!(due, Due::Now("the last attempt failed"));
}

#[test]
fn a_status_that_does_not_match_the_store_scans_again() {
    let m = meta("u1", "sha256:b", 990);
    let due = scan_due(&ready_status("sha256:a", 990), Some(&m), observed());
    assert_eq!(due, Due::Now("the status does not match the stored tags"));
}

#[test]
fn referenced_secrets_lists_every_reference() {
    let repo = ImageRepository::new(
        "r",
        ImageRepositorySpec {
            image: "alpine".into(),
            interval: "1m".into(),
            secret_ref: Some(api::LocalObjectReference {
                name: "creds".into(),
            }),
            proxy_secret_ref: Some(api::LocalObjectReference {
                name: "proxy".into(),
            }),
            ..Default::default()
        },
    );
    let names: Vec<&str> = referenced_secrets(&repo).collect();
    assert_eq!(names, ["creds", "proxy"]);
}
