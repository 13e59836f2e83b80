//! Crash and restart, control-plane and registry faults, and a full disk (issue 18, part
//! 2), on the real control plane with the real registry: `kill -9` image-reflector at
//! random moments while it scans, writes its store and writes status; restart
//! kube-apiserver and etcd and stop the registry while scans are asked for; fill the
//! disk under `--storage-path`. Afterwards every store entry verifies, every object's
//! status matches its store entry and the registry's tags, no entry is orphaned, and a
//! restart makes no registry request and no status write before the intervals elapse.
//!
//! `make chaos` runs the full plan (200 ImageRepositories, 50 kills) and prints its
//! figures; the suite runs a quick plan (20 objects, 5 kills, each fault once) so that a
//! regression is caught. Kill moments come from a seeded generator: the seed is printed,
//! and `CHAOS_SEED=N` replays a run.

use super::chaos_disk::{self as disk, SmallDisk};
use super::chaos_report::{Kill, Report};
use futures::StreamExt as _;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use test_support::cluster::{Cluster, GROUP, condition, metric_sum, ready_is};
use test_support::registry::{Registry, RegistryOptions};

const NS: &str = "chaos";
/// Long enough that nothing is rescanned by the clock during a run: every scan is one
/// the run asked for (a new object, a `requestedAt`), so after the last restart the
/// registry must see no request at all.
const INTERVAL: &str = "1h";
/// How long a fault or the last kill may take to heal before the run fails. A bound for
/// failing, not a figure: the figures are printed.
const HEAL: Duration = Duration::from_secs(240);

/// How hard the run is.
struct Plan {
    repositories: usize,
    kills: usize,
}

/// One ImageRepository of the run and its image (`chaos/img-ID`, its own).
#[derive(Clone, Debug, Default)]
struct Object {
    /// Tags pushed to its image, i.e. what the registry lists.
    tags: usize,
    /// The last `reconcile.fluxcd.io/requestedAt` written.
    requested: Option<String>,
}

struct Chaos {
    c: Cluster,
    rng: StdRng,
    live: BTreeMap<usize, Object>,
    deleted: BTreeSet<usize>,
    next_id: usize,
    report: Report,
}

fn name(id: usize) -> String {
    format!("repo-{id}")
}

fn image(id: usize) -> String {
    format!("chaos/img-{id}")
}

fn id_of(obj: &Value) -> Option<usize> {
    obj["metadata"]["name"]
        .as_str()?
        .strip_prefix("repo-")?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_faults_lose_nothing_and_everything_heals_by_itself() {
    run(Plan {
        repositories: 20,
        kills: 5,
    })
    .await;
}

/// `make chaos`: the full plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by `make chaos`"]
async fn chaos_200_repositories_50_kills() {
    run(Plan {
        repositories: 200,
        kills: 50,
    })
    .await;
}

async fn run(plan: Plan) {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!(
        "chaos: {} ImageRepositories, {} kills, seed {seed} (CHAOS_SEED={seed} replays it)",
        plan.repositories, plan.kills
    );
    let started = Instant::now();
    let mut c =
        Cluster::install_with_registry(|| Registry::start_on_disk(RegistryOptions::default()))
            .await;
    c.start_reflector().await;
    c.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n"
    ))
    .await;
    let mut chaos = Chaos {
        c,
        rng: StdRng::seed_from_u64(seed),
        live: BTreeMap::new(),
        deleted: BTreeSet::new(),
        next_id: 0,
        report: Report::new(seed, plan.repositories),
    };
    let ids: Vec<usize> = (0..plan.repositories).collect();
    chaos.next_id = plan.repositories;
    chaos.create(&ids).await;
    let ready = chaos.settle("the first scans").await;
    println!("chaos: {} objects Ready in {ready:.1?}", ids.len());

    for round in 1..=plan.kills {
        chaos.kill_round(round).await;
    }
    chaos.report.settled_after_kills = Some(chaos.settle("after the last kill").await);

    let apiserver = chaos.control_plane_fault("kube-apiserver").await;
    chaos
        .report
        .fault("kube-apiserver stopped 3 s, started", apiserver, "");
    let etcd = chaos.control_plane_fault("etcd").await;
    chaos.report.fault("etcd stopped 3 s, started", etcd, "");
    let (registry, said) = chaos.registry_fault().await;
    chaos
        .report
        .fault("registry stopped, started", registry, &said);

    let disk = SmallDisk::mount_over(&mut chaos.c).await;
    let (recovery, said) = chaos.full_disk(&disk).await;
    chaos.report.full_disk = Some((recovery, said));

    chaos.verify_after_restart().await;
    chaos.report.total = started.elapsed();
    chaos.report.print();
    drop(chaos);
    drop(disk);
}

impl Chaos {
    /// Pushes two tags to each object's image, then creates the objects (one `kubectl
    /// apply`, through the webhooks).
    async fn create(&mut self, ids: &[usize]) {
        let registry = &self.c.registry;
        futures::stream::iter(ids)
            .for_each_concurrent(8, |&id| async move {
                registry.push_tags(&image(id), &["1.0.0", "1.1.0"]).await;
            })
            .await;
        let host = self.c.registry.host();
        let yaml: String = ids
            .iter()
            .map(|&id| {
                format!(
                    "---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata:\n  name: {}\n  namespace: {NS}\nspec:\n  interval: {INTERVAL}\n  image: {host}/{}\n",
                    name(id),
                    image(id)
                )
            })
            .collect();
        self.c.apply(&yaml).await;
        for &id in ids {
            self.live.insert(
                id,
                Object {
                    tags: 2,
                    requested: None,
                },
            );
        }
    }

    /// Pushes one new tag to each image of `ids` and asks their objects to rescan.
    async fn push_and_request(&mut self, ids: &[usize], token: &str) {
        let registry = &self.c.registry;
        futures::stream::iter(ids)
            .for_each_concurrent(8, |&id| async move {
                registry.push_tags(&image(id), &[token]).await;
            })
            .await;
        for id in ids {
            if let Some(o) = self.live.get_mut(id) {
                o.tags += 1;
            }
        }
        self.request(ids, token).await;
    }

    /// Sets `reconcile.fluxcd.io/requestedAt: TOKEN` on the objects of `ids`.
    async fn request(&mut self, ids: &[usize], token: &str) {
        let client = self.c.client().clone();
        let results: Vec<Result<(), String>> = futures::stream::iter(ids.to_vec())
            .map(|id| {
                let client = client.clone();
                async move {
                    let body = json!({"metadata": {"annotations": {
                        "reconcile.fluxcd.io/requestedAt": token}}});
                    let request = http::Request::patch(format!(
                        "/apis/{GROUP}/v1/namespaces/{NS}/imagerepositories/{}",
                        name(id)
                    ))
                    .header("content-type", "application/merge-patch+json")
                    .body(serde_json::to_vec(&body).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                    client
                        .request::<Value>(request)
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("{}: {e}", name(id)))
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for r in results {
            r.unwrap_or_else(|e| panic!("setting requestedAt={token}: {e}"));
        }
        for id in ids {
            if let Some(o) = self.live.get_mut(id) {
                o.requested = Some(token.to_string());
            }
        }
    }

    fn sample(&mut self, share: f64) -> Vec<usize> {
        let ids: Vec<usize> = self.live.keys().copied().collect();
        let n = ((ids.len() as f64 * share).ceil() as usize).clamp(1, ids.len());
        ids.choose_multiple(&mut self.rng, n).copied().collect()
    }

    /// One kill: work is asked for (new tags, rescans, now and then a deletion and a new
    /// object), then `kill -9` after a random delay, more work while it is down, and a
    /// restart.
    async fn kill_round(&mut self, round: usize) {
        if self.rng.random_bool(0.3) {
            // One object goes and another comes (its finalizer and first scan race the
            // kill too).
            let victim = self.sample(0.0)[0];
            self.c
                .kubectl_ok(&[
                    "delete",
                    "imagerepository",
                    &name(victim),
                    "-n",
                    NS,
                    "--wait=false",
                ])
                .await;
            self.live.remove(&victim);
            self.deleted.insert(victim);
            let new = self.next_id;
            self.next_id += 1;
            self.create(&[new]).await;
        }
        let token = format!("kill-{round}");
        let ids = self.sample(0.2);
        // Scans take tens of milliseconds each, four at a time: the kill lands within
        // about twice the time the asked work takes.
        let window = (30 * ids.len() as u64).clamp(100, 1500);
        self.push_and_request(&ids, &token).await;
        let delay = Duration::from_millis(self.rng.random_range(0..window));
        tokio::time::sleep(delay).await;
        self.c.kill_reflector().await;
        let kill = self.observe_kill(round, delay).await;
        println!(
            "chaos: kill {round} at {} ms: {} requested scans unfinished, {} temporary files, {} entries ahead of their status",
            delay.as_millis(),
            kill.pending_scans,
            kill.temp_files,
            kill.store_ahead_of_status
        );
        self.report.kills.push(kill);
        if self.rng.random_bool(0.5) {
            let ids = self.sample(0.05);
            self.push_and_request(&ids, &format!("down-{round}")).await;
        }
        self.c.start_reflector().await;
    }

    /// What the kill interrupted, read while image-reflector is dead (nothing changes).
    async fn observe_kill(&mut self, round: usize, delay: Duration) -> Kill {
        let storage = self.c.storage_path();
        let temp_files = std::fs::read_dir(&storage)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                    .count()
            })
            .unwrap_or(0);
        let objects = self.objects().await;
        let copy = disk::copy_dir(&storage, &self.c.dir().join(format!("kill-{round}")));
        let store =
            image_reflector::store::TagStore::open(&copy).expect("open a copy of the store");
        let (mut pending, mut store_ahead) = (0, 0);
        for obj in &objects {
            let Some(id) = id_of(obj) else { continue };
            let Some(expected) = self.live.get(&id) else {
                continue;
            };
            let handled = obj["status"]["lastHandledReconcileAt"].as_str();
            if expected.requested.is_some() && handled != expected.requested.as_deref() {
                pending += 1;
            }
            let key = image_reflector::store::ObjectKey::new(NS, name(id));
            let status_revision = obj["status"]["lastScanResult"]["revision"].as_str();
            if let Some(meta) = store.meta(&key)
                && Some(meta.revision.as_str()) != status_revision
            {
                store_ahead += 1;
            }
        }
        let _ = std::fs::remove_dir_all(&copy);
        Kill {
            delay,
            pending_scans: pending,
            temp_files,
            store_ahead_of_status: store_ahead,
        }
    }

    /// The ImageRepositories of the run, as the API server has them; empty while it
    /// does not answer.
    async fn objects(&self) -> Vec<Value> {
        let request = http::Request::get(format!(
            "/apis/{GROUP}/v1/namespaces/{NS}/imagerepositories"
        ))
        .body(Vec::new())
        .expect("list request");
        match self.c.client().request::<Value>(request).await {
            Ok(list) => list["items"].as_array().cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Whether `obj` shows the last scan asked of it, successfully, with every tag pushed.
    fn healed(&self, obj: &Value) -> bool {
        let Some(expected) = id_of(obj).and_then(|id| self.live.get(&id)) else {
            return false;
        };
        ready_is(obj, "True", Some("Succeeded"))
            && obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
            && obj["status"]["lastHandledReconcileAt"].as_str() == expected.requested.as_deref()
            && obj["status"]["lastScanResult"]["tagCount"].as_u64() == Some(expected.tags as u64)
    }

    /// What an unhealed object shows against what was asked of it, and the last lines
    /// image-reflector logged about it.
    fn why_not_healed(&self, obj: &Value) -> String {
        let name = obj["metadata"]["name"].as_str().unwrap_or("?");
        let expected = id_of(obj).and_then(|id| self.live.get(&id));
        let log = self.c.reflector().log();
        let about: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("/{name}\"")) || l.contains(&format!("/{name}.")))
            .collect();
        format!(
            "{name}: Ready {}, generation {} observed {}, requested {:?} handled {}, tags {} of {:?}; \
             its last log lines:\n{}",
            condition(obj, "Ready").cloned().unwrap_or_default(),
            obj["metadata"]["generation"],
            obj["status"]["observedGeneration"],
            expected.and_then(|e| e.requested.as_deref()),
            obj["status"]["lastHandledReconcileAt"],
            obj["status"]["lastScanResult"]["tagCount"],
            expected.map(|e| e.tags),
            about[about.len().saturating_sub(8)..].join("\n"),
        )
    }

    /// Waits until every live object is healed and every deleted one is gone; fails
    /// after [`HEAL`] naming what is not. Returns how long it took.
    async fn settle(&mut self, what: &str) -> Duration {
        self.wait_until(what, |chaos, objects| {
            let names: BTreeSet<usize> = objects.iter().filter_map(id_of).collect();
            let unhealed: Vec<String> = objects
                .iter()
                .filter(|o| !chaos.healed(o))
                .map(|o| chaos.why_not_healed(o))
                .collect();
            let missing = chaos.live.keys().filter(|id| !names.contains(id)).count();
            let lingering = chaos.deleted.iter().filter(|id| names.contains(id)).count();
            (unhealed.is_empty() && missing == 0 && lingering == 0).then_some(()).ok_or_else(
                || format!("not healed: {unhealed:?}; missing {missing}; deleted but present {lingering}"),
            )
        })
        .await
    }

    /// Polls the objects until `check` accepts them; fails after [`HEAL`], or at once if
    /// image-reflector exits.
    async fn wait_until(
        &mut self,
        what: &str,
        check: impl Fn(&Chaos, &[Value]) -> Result<(), String>,
    ) -> Duration {
        let started = Instant::now();
        loop {
            if let Some(status) = self.c.reflector_exit() {
                panic!(
                    "image-reflector exited ({status}) while waiting for {what}:\n{}",
                    self.c.reflector_log_tail()
                );
            }
            let objects = self.objects().await;
            let verdict = if objects.is_empty() {
                Err("the API server does not answer".to_string())
            } else {
                check(self, &objects)
            };
            match verdict {
                Ok(()) => return started.elapsed(),
                Err(why) if started.elapsed() > HEAL => panic!(
                    "{what}: not done after {HEAL:?}: {why}\n{}",
                    self.c.reflector_log_tail()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Scans are asked of every object, `component` is stopped for 3 s in the middle of
    /// them and started again; returns how long after the start every object showed the
    /// scan asked of it, Ready.
    async fn control_plane_fault(&mut self, component: &str) -> Duration {
        let token = format!("fault-{component}");
        let ids: Vec<usize> = self.live.keys().copied().collect();
        self.request(&ids, &token).await;
        tokio::time::sleep(Duration::from_millis(self.rng.random_range(0..500))).await;
        self.c.control_plane.stop_component(component).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.c.control_plane.start_component(component).await;
        self.settle(&format!("recovery from a {component} restart"))
            .await
    }

    /// The registry is stopped and scans are asked of every object: each says
    /// ReadOperationFailed; the registry starts again and every object becomes Ready by
    /// itself. Returns the time from the start to all Ready, and what a condition said.
    async fn registry_fault(&mut self) -> (Duration, String) {
        self.c.registry.stop();
        let ids: Vec<usize> = self.live.keys().copied().collect();
        self.request(&ids, "fault-registry").await;
        self.wait_until("ReadOperationFailed on every object", |chaos, objects| {
            let waiting = objects
                .iter()
                .filter(|o| {
                    id_of(o).is_some_and(|id| chaos.live.contains_key(&id))
                        && !(o["status"]["lastHandledReconcileAt"] == "fault-registry"
                            && ready_is(o, "False", Some("ReadOperationFailed")))
                })
                .count();
            (waiting == 0)
                .then_some(())
                .ok_or(format!("{waiting} objects do not say ReadOperationFailed"))
        })
        .await;
        let said = self.a_ready_message().await;
        assert!(
            said.contains(&self.c.registry.host()),
            "the condition names the registry: {said}"
        );
        self.c.registry.start_again();
        let healed = self.settle("recovery from the registry's restart").await;
        (healed, said)
    }

    /// The Ready message of one live object.
    async fn a_ready_message(&self) -> String {
        let objects = self.objects().await;
        objects
            .iter()
            .find(|o| id_of(o).is_some_and(|id| self.live.contains_key(&id)))
            .and_then(|o| condition(o, "Ready"))
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    /// The disk under `--storage-path` fills up while a new tag is pushed to every
    /// image: every scan fails saying so, no stored entry changes, and once space returns
    /// every object becomes Ready with the new tag by itself. Returns the time from
    /// freeing the space to all Ready, and what a condition said.
    async fn full_disk(&mut self, disk: &SmallDisk) -> (Duration, String) {
        let before = disk.entries();
        disk.fill();
        let ids: Vec<usize> = self.live.keys().copied().collect();
        self.push_and_request(&ids, "disk-full").await;
        self.wait_until("a full-disk failure on every object", |chaos, objects| {
            let waiting = objects
                .iter()
                .filter(|o| {
                    id_of(o).is_some_and(|id| chaos.live.contains_key(&id))
                        && !(o["status"]["lastHandledReconcileAt"] == "disk-full"
                            && ready_is(o, "False", None)
                            && condition(o, "Ready").is_some_and(|c| {
                                c["message"]
                                    .as_str()
                                    .is_some_and(|m| m.contains("No space left on device"))
                            }))
                })
                .count();
            (waiting == 0)
                .then_some(())
                .ok_or(format!("{waiting} objects do not say the disk is full"))
        })
        .await;
        let said = self.a_ready_message().await;
        assert_eq!(
            disk.entries(),
            before,
            "the stored entries changed while the disk was full"
        );
        disk.free();
        let healed = self.settle("recovery once the disk has space").await;
        (healed, said)
    }

    /// Kills image-reflector once more and checks the store it left (every entry
    /// verifies and matches its object's status and the registry's tags, none is
    /// orphaned); then restarts it and checks that before the intervals elapse it asks
    /// the registry nothing and writes no status.
    async fn verify_after_restart(&mut self) {
        self.settle("the last scans").await;
        self.c.kill_reflector().await;
        let storage = self.c.storage_path();
        let copy = disk::copy_dir(&storage, &self.c.dir().join("final"));
        let files = disk::entry_files(&copy);
        let store =
            image_reflector::store::TagStore::open(&copy).expect("open a copy of the store");
        assert_eq!(
            store.len(),
            files,
            "entries that did not verify were dropped when the store was opened"
        );
        let objects = self.objects().await;
        let mut keys: BTreeSet<String> = BTreeSet::new();
        for obj in &objects {
            let id = id_of(obj).expect("a chaos object");
            let key = image_reflector::store::ObjectKey::new(NS, name(id));
            let entry = store
                .get(&key)
                .expect("read the entry")
                .unwrap_or_else(|| panic!("{} has no verified store entry", name(id)));
            let status = &obj["status"];
            let result = &status["lastScanResult"];
            assert_eq!(
                result["revision"],
                entry.meta.revision.as_str(),
                "{}",
                name(id)
            );
            assert_eq!(result["tagCount"], entry.tags.len(), "{}", name(id));
            assert_eq!(
                status["canonicalImageName"],
                entry.meta.canonical_image_name.as_str()
            );
            assert_eq!(
                obj["metadata"]["uid"],
                entry.meta.uid.as_str(),
                "{}",
                name(id)
            );
            let mut stored = entry.tags.clone();
            stored.sort();
            assert_eq!(
                stored,
                self.c.registry.tags(&image(id)).await,
                "{}: the stored tags are the registry's",
                name(id)
            );
            keys.insert(key.to_string());
        }
        let orphans: Vec<String> = store
            .keys()
            .into_iter()
            .map(|k| k.to_string())
            .filter(|k| !keys.contains(k))
            .collect();
        assert!(orphans.is_empty(), "orphaned store entries: {orphans:?}");
        self.report.entries_verified = store.len();
        drop(store);
        let _ = std::fs::remove_dir_all(&copy);

        let requests = self.c.registry.requests_matching("/v2/");
        let writes = self.c.writes().await;
        self.c.start_reflector().await;
        let live = self.live.len() as f64;
        let started = Instant::now();
        loop {
            let text = self.c.reflector_metrics().await;
            let reconciled = metric_sum(
                &text,
                "gotk_reconcile_duration_seconds_count",
                &["kind=\"ImageRepository\""],
            );
            if reconciled >= live {
                break;
            }
            assert!(
                started.elapsed() < HEAL,
                "image-reflector reconciled {reconciled} of {live} objects after its restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = self.c.registry.requests_matching("/v2/") - requests;
        let status_writes = self
            .c
            .writes()
            .await
            .since(&writes)
            .get("imagerepositories.image.toolkit.fluxcd.io/status");
        assert_eq!(after, 0, "registry requests after the last restart");
        assert_eq!(status_writes, 0, "status writes after the last restart");
        self.report.requests_after_restart = Some((after, status_writes));
    }
}
