//! kube-rs 5 against the embedded stand-in: a watcher that sees every change once and in
//! order and relists after a forced 410; a Controller whose status writes do not
//! re-trigger it; the event Recorder; the finalizer helper; the write rules (409, 422,
//! status subresource, no-op writes); restart on the same port with the same data.

mod support;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{Controller, controller::Action, events, finalizer, watcher};
use kube_standin::{Options, StandIn};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

async fn standin() -> StandIn {
    StandIn::start(Options {
        crds_dir: Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crds"),
        ),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn widgets(client: kube::Client) -> (Api<DynamicObject>, ApiResource) {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.test", "v1", "Widget"),
        "widgets",
    );
    (Api::namespaced_with(client, "default", &ar), ar)
}

fn widget(ar: &ApiResource, name: &str, image: &str) -> DynamicObject {
    let mut o = DynamicObject::new(name, ar);
    o.data = json!({"spec": {"image": image}});
    o
}

async fn next_event<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("stream open")
}

/// (kind, name, image or status summary) for comparing watcher events.
fn summary(ev: &watcher::Event<DynamicObject>) -> (String, String) {
    let (k, o) = match ev {
        watcher::Event::Apply(o) => ("Apply", o),
        watcher::Event::Delete(o) => ("Delete", o),
        watcher::Event::InitApply(o) => ("InitApply", o),
        watcher::Event::Init => return ("Init".into(), String::new()),
        watcher::Event::InitDone => return ("InitDone".into(), String::new()),
    };
    let detail = format!(
        "{}:{}:{}",
        o.metadata.name.clone().unwrap_or_default(),
        o.data["spec"]["image"].as_str().unwrap_or(""),
        o.data["status"]["tagCount"]
    );
    (k.to_string(), detail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_every_change_once_in_order_and_relists_after_a_forced_410() {
    let api = standin().await;
    let client = kube::Client::try_from(api.kube_config().unwrap()).unwrap();
    let (wapi, ar) = widgets(client);
    wapi.create(&PostParams::default(), &widget(&ar, "pre", "img/pre"))
        .await
        .unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let errors = Arc::new(AtomicUsize::new(0));
    let errs = errors.clone();
    let stream = watcher(wapi.clone(), watcher::Config::default());
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(ev) => {
                    let _ = tx.send(summary(&ev));
                }
                Err(_) => {
                    errs.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });
    let expect = |k: &str, d: &str| (k.to_string(), d.to_string());
    assert_eq!(next_event(&mut rx).await, expect("Init", ""));
    assert_eq!(
        next_event(&mut rx).await,
        expect("InitApply", "pre:img/pre:null")
    );
    assert_eq!(next_event(&mut rx).await, expect("InitDone", ""));

    wapi.create(&PostParams::default(), &widget(&ar, "w", "img/one"))
        .await
        .unwrap();
    wapi.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "img/two"}})),
    )
    .await
    .unwrap();
    wapi.patch_status(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"tagCount": 3}})),
    )
    .await
    .unwrap();
    // A byte-identical write produces no event.
    wapi.patch_status(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"tagCount": 3}})),
    )
    .await
    .unwrap();
    wapi.delete("w", &DeleteParams::default()).await.unwrap();
    assert_eq!(next_event(&mut rx).await, expect("Apply", "w:img/one:null"));
    assert_eq!(next_event(&mut rx).await, expect("Apply", "w:img/two:null"));
    assert_eq!(next_event(&mut rx).await, expect("Apply", "w:img/two:3"));
    assert_eq!(next_event(&mut rx).await, expect("Delete", "w:img/two:3"));

    api.force_watch_expiry();
    assert_eq!(next_event(&mut rx).await, expect("Init", ""));
    assert_eq!(
        next_event(&mut rx).await,
        expect("InitApply", "pre:img/pre:null")
    );
    assert_eq!(next_event(&mut rx).await, expect("InitDone", ""));
    assert!(
        errors.load(Ordering::SeqCst) >= 1,
        "the 410 surfaced as a watcher error"
    );

    wapi.create(&PostParams::default(), &widget(&ar, "after", "img/after"))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        expect("Apply", "after:img/after:null")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "no duplicate or extra events");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_status_subresource_generation_and_conflict_rules() {
    let api = standin().await;
    let client = kube::Client::try_from(api.kube_config().unwrap()).unwrap();
    let (wapi, ar) = widgets(client);
    let mut w = widget(&ar, "w", "img/a");
    w.data["status"] = json!({"tagCount": 9});
    let created = wapi.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(
        created.data.get("status").is_none(),
        "status dropped on create"
    );
    assert_eq!(created.data["spec"]["interval"], "5m", "defaulted");

    let err = wapi.create(&PostParams::default(), &w).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err}"
    );

    // A metadata-only change keeps the generation; a status write is ignored on the main
    // resource and never bumps it.
    let p = wapi
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}, "status": {"tagCount": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(1));
    assert!(p.data.get("status").is_none());
    let s = wapi
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "img/ignored"}, "status": {"tagCount": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(s.metadata.generation, Some(1));
    assert_eq!(
        s.data["spec"]["image"], "img/a",
        "status writes change only status"
    );
    assert_eq!(s.data["status"]["tagCount"], 2);
    let g = wapi
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "img/b"}})),
        )
        .await
        .unwrap();
    assert_eq!(g.metadata.generation, Some(2));
    assert_eq!(
        g.data["status"]["tagCount"], 2,
        "status kept across a main-resource write"
    );

    // Stale resourceVersion: 409 Conflict with the API server's wording.
    let mut stale = s.clone();
    stale.data["spec"]["image"] = json!("img/c");
    let err = wapi
        .replace("w", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(
                s.message,
                "Operation cannot be fulfilled on widgets.example.test \"w\": the object has been modified; please apply your changes to the latest version and try again"
            );
        }
        other => panic!("{other}"),
    }
    let mut no_rv = g.clone();
    no_rv.metadata.resource_version = None;
    let err = wapi
        .replace("w", &PostParams::default(), &no_rv)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err}"
    );

    // A byte-identical write keeps the resourceVersion; counts tell requests from changes.
    api.reset_write_counts();
    let before = wapi.get("w").await.unwrap().metadata.resource_version;
    for _ in 0..3 {
        wapi.patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"tagCount": 2}})),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        wapi.get("w").await.unwrap().metadata.resource_version,
        before
    );
    let counts = api.write_counts();
    let status = counts["widgets.example.test/status"];
    assert_eq!((status.requests, status.persisted), (3, 0));
    // The same counters over HTTP, for benchmarks that run the stand-in as a process.
    let served: serde_json::Value = reqwest::get(format!("{}/debug/write-counts", api.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        served["widgets.example.test/status"],
        json!({"requests": 3, "persisted": 0})
    );

    // JSON Patch with a failing test is 422; server-side apply needs a field manager.
    let err = wapi
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([
            {"op": "test", "path": "/spec/image", "value": "nope"}]))
                .unwrap(),
            ),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err}"
    );
    let applied = wapi
        .patch(
            "w",
            &PatchParams::apply("tester"),
            &Patch::Apply(json!({
            "apiVersion": "example.test/v1", "kind": "Widget", "spec": {"image": "img/applied"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["image"], "img/applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finalizer_helper_adds_its_finalizer_and_deletion_waits_for_cleanup() {
    let api = standin().await;
    let client = kube::Client::try_from(api.kube_config().unwrap()).unwrap();
    let (wapi, ar) = widgets(client);
    wapi.create(&PostParams::default(), &widget(&ar, "f", "img/f"))
        .await
        .unwrap();
    let fin = "example.test/cleanup";
    let run = |obj: DynamicObject| {
        let wapi = wapi.clone();
        async move {
            finalizer::finalizer(&wapi, fin, Arc::new(obj), |ev| async move {
                Ok::<_, std::io::Error>(match ev {
                    finalizer::Event::Apply(_) | finalizer::Event::Cleanup(_) => {
                        Action::await_change()
                    }
                })
            })
            .await
        }
    };
    // First pass adds the finalizer with `test /metadata/finalizers == null` + `add`.
    run(wapi.get("f").await.unwrap()).await.unwrap();
    let o = wapi.get("f").await.unwrap();
    assert_eq!(o.metadata.finalizers, Some(vec![fin.to_string()]));
    run(o).await.unwrap();

    let deleted = wapi.delete("f", &DeleteParams::default()).await.unwrap();
    let o = deleted
        .left()
        .expect("the object comes back while finalizers remain");
    assert!(o.metadata.deletion_timestamp.is_some());

    let err = wapi
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [fin, "late/one"]}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err}"
    );

    run(wapi.get("f").await.unwrap()).await.unwrap();
    let err = wapi.get("f").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "gone once the finalizer is removed: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_are_listed_as_core_events_of_the_object() {
    let api = standin().await;
    let client = kube::Client::try_from(api.kube_config().unwrap()).unwrap();
    let (wapi, ar) = widgets(client.clone());
    let w = wapi
        .create(&PostParams::default(), &widget(&ar, "e", "img/e"))
        .await
        .unwrap();
    let recorder = events::Recorder::new(
        client.clone(),
        events::Reporter {
            controller: "widget-controller".into(),
            instance: Some("pod-0".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("example.test/v1".into()),
        kind: Some("Widget".into()),
        name: w.metadata.name.clone(),
        namespace: Some("default".into()),
        uid: w.metadata.uid.clone(),
        ..Default::default()
    };
    let ev = events::Event {
        type_: events::EventType::Normal,
        reason: "Scanned".into(),
        note: Some("found 3 tags".into()),
        action: "Scan".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();

    let core: Api<CoreEvent> = Api::namespaced(client, "default");
    let uid = w.metadata.uid.clone().unwrap();
    let selector = format!(
        "involvedObject.name=e,involvedObject.namespace=default,involvedObject.kind=Widget,involvedObject.uid={uid}"
    );
    let list = core
        .list(&ListParams::default().fields(&selector))
        .await
        .unwrap();
    assert_eq!(
        list.items.len(),
        1,
        "the repeat became a series, not a second event"
    );
    let e = &list.items[0];
    assert_eq!(e.message.as_deref(), Some("found 3 tags"));
    assert_eq!(e.reason.as_deref(), Some("Scanned"));
    assert_eq!(
        e.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("widget-controller")
    );
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(Some(2)));
    let other = core
        .list(&ListParams::default().fields("involvedObject.name=someone-else"))
        .await
        .unwrap();
    assert!(other.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_patching_status_settles_without_retriggering_itself() {
    let api = standin().await;
    let client = kube::Client::try_from(api.kube_config().unwrap()).unwrap();
    let (wapi, ar) = widgets(client);
    for n in ["c1", "c2"] {
        wapi.create(&PostParams::default(), &widget(&ar, n, "img/c"))
            .await
            .unwrap();
    }
    let reconciles = Arc::new(AtomicUsize::new(0));
    struct Ctx {
        api: Api<DynamicObject>,
        reconciles: Arc<AtomicUsize>,
    }
    let ctx = Arc::new(Ctx {
        api: wapi.clone(),
        reconciles: reconciles.clone(),
    });
    let controller = Controller::new_with(wapi.clone(), watcher::Config::default(), ar.clone())
        .run(
            |obj: Arc<DynamicObject>, ctx: Arc<Ctx>| async move {
                ctx.reconciles.fetch_add(1, Ordering::SeqCst);
                let status = json!({"status": {"observedGeneration": obj.metadata.generation, "tagCount": 1}});
                ctx.api
                    .patch_status(&obj.metadata.name.clone().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(status))
                    .await?;
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_, _, _| Action::requeue(Duration::from_secs(60)),
            ctx,
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);
    // Wait until the reconcile count has not moved for a second (a loaded machine is slow).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = usize::MAX;
    let mut stable_since = tokio::time::Instant::now();
    loop {
        let now = reconciles.load(Ordering::SeqCst);
        if now != last {
            last = now;
            stable_since = tokio::time::Instant::now();
        } else if now > 0 && stable_since.elapsed() >= Duration::from_secs(1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {now} reconciles"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        (2..=4).contains(&last),
        "each object reconciled once or twice (its own no-op status write adds nothing), got {last}"
    );
    let status = api.write_counts()["widgets.example.test/status"];
    assert_eq!(status.persisted, 2, "one status change per object");
    assert_eq!(
        status.requests as usize, last,
        "one status patch per reconcile"
    );
    task.abort();
    let c1 = wapi.get("c1").await.unwrap();
    assert_eq!(c1.data["status"]["observedGeneration"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_port_and_the_data() {
    let mut api = standin().await;
    let url = api.url();
    let client = kube::Client::try_from(api.kube_config().unwrap()).unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"}, "spec": {"holderIdentity": "pod-0", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();

    api.stop().await;
    assert!(leases.get("leader").await.is_err(), "down while stopped");
    api.restart().await.unwrap();
    assert_eq!(api.url(), url);
    let got = leases.get("leader").await.unwrap();
    assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("pod-0"));

    // The kubeconfig the stand-in writes works for kube-rs too.
    let kc = kube::config::Kubeconfig::read_from(api.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let from_file: Api<Lease> = Api::default_namespaced(kube::Client::try_from(config).unwrap());
    let names: Vec<String> = from_file
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|l| l.metadata.name)
        .collect();
    assert_eq!(names, vec!["leader".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_watches_with_a_label_selector_see_objects_enter_and_leave() {
    let api = standin().await;
    let client = kube::Client::try_from(api.kube_config().unwrap()).unwrap();
    let (wapi, ar) = widgets(client.clone());
    wapi.create(&PostParams::default(), &widget(&ar, "m", "img/m"))
        .await
        .unwrap();
    // What Controller::owns uses: metadata-only list and watch.
    let meta: Api<kube::core::PartialObjectMeta<DynamicObject>> =
        Api::namespaced_with(client, "default", &ar);
    let stream = watcher(meta, watcher::Config::default().labels("pick=me"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(ev)) = stream.next().await {
            let (kind, o) = match ev {
                watcher::Event::Apply(o) => ("Apply", o),
                watcher::Event::Delete(o) => ("Delete", o),
                watcher::Event::InitDone => {
                    let _ = tx.send(("InitDone", String::new(), String::new()));
                    continue;
                }
                _ => continue,
            };
            let k = o.types.map(|t| t.kind).unwrap_or_default();
            let _ = tx.send((kind, o.metadata.name.unwrap_or_default(), k));
        }
    });
    let ev = |a: &'static str, b: &str, c: &str| (a, b.to_string(), c.to_string());
    assert_eq!(next_event(&mut rx).await, ev("InitDone", "", ""));
    let label = |v: serde_json::Value| {
        let wapi = wapi.clone();
        async move {
            wapi.patch(
                "m",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"pick": v}}})),
            )
            .await
            .unwrap();
        }
    };
    label(json!("me")).await;
    assert_eq!(
        next_event(&mut rx).await,
        ev("Apply", "m", "PartialObjectMetadata")
    );
    label(json!("other")).await;
    assert_eq!(
        next_event(&mut rx).await,
        ev("Delete", "m", "PartialObjectMetadata")
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_webhooks_and_service_routes_can_be_added_while_running() {
    let api = StandIn::start(Options::default()).await.unwrap();
    assert_eq!(api.load_dir(&support::fixtures().join("crds")).unwrap(), 1);
    let ca = support::certs::TestCa::new("late CA");
    let leaf = ca.server(&["late.hooks.svc"]);
    let hooks = support::webhooks::Webhooks::start(&leaf.cert_pem, &leaf.key_pem);
    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "late"},
        "webhooks": [{
            "name": "late.example.test", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"namespace": "hooks", "name": "late", "path": "/validate"},
                "caBundle": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &ca.cert_pem)},
            "rules": [{"operations": ["CREATE"], "apiGroups": ["example.test"], "apiVersions": ["v1"], "resources": ["widgets"]}],
        }],
    });
    std::fs::write(dir.path().join("late.yaml"), config.to_string()).unwrap();
    assert_eq!(api.load_dir(dir.path()).unwrap(), 1);

    let (wapi, ar) = widgets(api.client().unwrap());
    let err = wapi
        .create(&PostParams::default(), &widget(&ar, "early", "img/a"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
            assert!(
                s.message.contains("no --service route for hooks/late"),
                "{}",
                s.message
            );
        }
        other => panic!("{other}"),
    }
    api.set_service(format!("hooks/late={}", hooks.addr).parse().unwrap());
    let mut large = widget(&ar, "large", "img/a");
    large.data["spec"]["size"] = json!("large");
    let err = wapi
        .create(&PostParams::default(), &large)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                s.message,
                "admission webhook \"late.example.test\" denied the request: spec.size: large widgets are not allowed here"
            );
        }
        other => panic!("{other}"),
    }
    wapi.create(&PostParams::default(), &widget(&ar, "small", "img/a"))
        .await
        .unwrap();
    assert_eq!(hooks.seen("/validate").len(), 2);
}
