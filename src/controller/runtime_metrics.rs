//! The controller-runtime series Flux's dashboards and alerts read, with controller-runtime's
//! names, labels and buckets, for a kube-runtime controller:
//!
//! - `controller_runtime_reconcile_total{controller,result}` (`success`, `error`,
//!   `requeue_after`), `controller_runtime_reconcile_errors_total{controller}`,
//!   `controller_runtime_reconcile_time_seconds{controller}`,
//!   `controller_runtime_max_concurrent_reconciles{controller}`,
//!   `controller_runtime_active_workers{controller}`;
//! - `workqueue_depth{name,controller,priority}`, `workqueue_adds_total`,
//!   `workqueue_queue_duration_seconds`, `workqueue_work_duration_seconds`,
//!   `workqueue_retries_total` (`{name,controller}`).
//!
//! kube-runtime has no client-go work queue to instrument, so [`WorkQueue`] keeps the same
//! books from the outside: an object is queued when a watch event or a mapped change
//! names it (queued twice counts once, as client-go's dirty set dedupes), and leaves the
//! queue when its reconcile starts. A reconcile that starts without a recorded event (a
//! requeue timer, the initial reconcile of everything) counts as an add that waited no
//! time. Every reconcile that ends asking to be requeued after a delay counts as a
//! retry, as client-go counts every delayed add.
//!
//! Controller names are the lower-cased kinds (`imagerepository`, `imagepolicy`), as
//! controller-runtime names Flux's controllers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub name: String,
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DepthLabels {
    pub name: String,
    pub controller: String,
    pub priority: String,
}

/// controller-runtime's reconcile time buckets.
const RECONCILE_BUCKETS: [f64; 40] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9,
    1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0,
    25.0, 30.0, 40.0, 50.0, 60.0,
];

/// The families, registered once and shared by both controllers.
#[derive(Clone)]
pub struct RuntimeMetrics {
    reconcile_total: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    reconcile_time: Family<ControllerLabels, Histogram>,
    max_concurrent: Family<ControllerLabels, Gauge>,
    active_workers: Family<ControllerLabels, Gauge>,
    depth: Family<DepthLabels, Gauge>,
    adds: Family<QueueLabels, Counter>,
    queue_duration: Family<QueueLabels, Histogram>,
    work_duration: Family<QueueLabels, Histogram>,
    retries: Family<QueueLabels, Counter>,
}

impl Default for RuntimeMetrics {
    fn default() -> Self {
        // client-go's workqueue buckets: 10 ns to 1000 s, by powers of ten.
        let queue = || Histogram::new(exponential_buckets(1e-8, 10.0, 12));
        RuntimeMetrics {
            reconcile_total: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_time: Family::new_with_constructor(|| {
                Histogram::new(RECONCILE_BUCKETS.iter().copied())
            }),
            max_concurrent: Family::default(),
            active_workers: Family::default(),
            depth: Family::default(),
            adds: Family::default(),
            queue_duration: Family::new_with_constructor(queue),
            work_duration: Family::new_with_constructor(queue),
            retries: Family::default(),
        }
    }
}

impl RuntimeMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            self.reconcile_total.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            self.reconcile_time.clone(),
        );
        registry.register(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            self.max_concurrent.clone(),
        );
        registry.register(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            self.active_workers.clone(),
        );
        registry.register(
            "workqueue_depth",
            "Current depth of workqueue by workqueue and priority",
            self.depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            self.adds.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            self.queue_duration.clone(),
        );
        registry.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes.",
            self.work_duration.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Total number of items added to the workqueue with a non-zero delay",
            self.retries.clone(),
        );
    }

    /// The books of one controller, `name` as controller-runtime names it.
    pub fn queue(&self, name: &str, max_concurrent: u16) -> WorkQueue {
        let controller = ControllerLabels {
            controller: name.to_string(),
        };
        let queue = QueueLabels {
            name: name.to_string(),
            controller: name.to_string(),
        };
        self.max_concurrent
            .get_or_create(&controller)
            .set(i64::from(max_concurrent));
        let depth = self
            .depth
            .get_or_create(&DepthLabels {
                name: name.to_string(),
                controller: name.to_string(),
                priority: String::new(),
            })
            .clone();
        depth.set(0);
        self.active_workers.get_or_create(&controller).set(0);
        let result = |r: &str| {
            self.reconcile_total
                .get_or_create(&ResultLabels {
                    controller: name.to_string(),
                    result: r.to_string(),
                })
                .clone()
        };
        WorkQueue {
            inner: Arc::new(Inner {
                queued: Mutex::new(HashMap::new()),
                depth,
                adds: self.adds.get_or_create(&queue).clone(),
                queue_duration: self.queue_duration.get_or_create(&queue).clone(),
                work_duration: self.work_duration.get_or_create(&queue).clone(),
                retries: self.retries.get_or_create(&queue).clone(),
                active: self.active_workers.get_or_create(&controller).clone(),
                reconcile_time: self.reconcile_time.get_or_create(&controller).clone(),
                errors: self.reconcile_errors.get_or_create(&controller).clone(),
                success: result("success"),
                error: result("error"),
                requeue_after: result("requeue_after"),
            }),
        }
    }
}

type Key = ObjectRef<kube::api::DynamicObject>;

struct Inner {
    queued: Mutex<HashMap<Key, Instant>>,
    depth: Gauge,
    adds: Counter,
    queue_duration: Histogram,
    work_duration: Histogram,
    retries: Counter,
    active: Gauge,
    reconcile_time: Histogram,
    errors: Counter,
    success: Counter,
    error: Counter,
    requeue_after: Counter,
}

/// One controller's queue books. Clone freely.
#[derive(Clone)]
pub struct WorkQueue {
    inner: Arc<Inner>,
}

/// A reconcile in progress; [`Work::finish`] records how it ended.
pub struct Work {
    queue: WorkQueue,
    started: Instant,
    finished: bool,
}

impl WorkQueue {
    /// A watch event or a mapped change names `key`.
    pub fn add(&self, key: Key) {
        let Ok(mut queued) = self.inner.queued.lock() else {
            return;
        };
        if let std::collections::hash_map::Entry::Vacant(e) = queued.entry(key) {
            e.insert(Instant::now());
            self.inner.adds.inc();
            self.inner.depth.set(queued.len() as i64);
        }
    }

    /// Records every reference of `refs` as queued and passes them on (for the mappers of
    /// watched changes).
    pub fn add_all<K>(&self, refs: impl IntoIterator<Item = ObjectRef<K>>) -> Vec<ObjectRef<K>>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let refs: Vec<ObjectRef<K>> = refs.into_iter().collect();
        for r in &refs {
            self.add(r.clone().erase());
        }
        refs
    }

    /// The reconcile of `key` starts.
    pub fn start(&self, key: Key) -> Work {
        let now = Instant::now();
        if let Ok(mut queued) = self.inner.queued.lock() {
            match queued.remove(&key) {
                Some(since) => self
                    .inner
                    .queue_duration
                    .observe(now.duration_since(since).as_secs_f64()),
                None => {
                    self.inner.adds.inc();
                    self.inner.queue_duration.observe(0.0);
                }
            }
            self.inner.depth.set(queued.len() as i64);
        }
        self.inner.active.inc();
        Work {
            queue: self.clone(),
            started: now,
            finished: false,
        }
    }
}

impl Work {
    /// The reconcile ended with `action` (a success) or an error.
    pub fn finish<E>(mut self, result: &Result<Action, E>) {
        self.finished = true;
        let inner = &self.queue.inner;
        let seconds = self.started.elapsed().as_secs_f64();
        inner.reconcile_time.observe(seconds);
        inner.work_duration.observe(seconds);
        match result {
            Err(_) => {
                inner.error.inc();
                inner.errors.inc();
                // The error policy requeues it after a backoff.
                inner.retries.inc();
            }
            Ok(action) if *action == Action::await_change() => {
                inner.success.inc();
            }
            Ok(_) => {
                inner.requeue_after.inc();
                inner.retries.inc();
            }
        }
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        self.queue.inner.active.dec();
        if !self.finished {
            // Cancelled (shutdown): neither a success nor an error.
            self.queue
                .inner
                .work_duration
                .observe(self.started.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn key(name: &str) -> Key {
        ObjectRef::<kube::api::DynamicObject>::new_with(
            name,
            kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
        )
        .within("ns")
    }

    fn scrape(m: &RuntimeMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        encode(&mut out, &registry).expect("encode");
        out
    }

    fn sample<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn queue_books_follow_client_gos_rules_and_names() {
        let m = RuntimeMetrics::default();
        let q = m.queue("imagerepository", 4);
        q.add(key("a"));
        q.add(key("a")); // deduped while queued
        q.add(key("b"));
        let text = scrape(&m);
        let labels = r#"{name="imagerepository",controller="imagerepository"}"#;
        assert_eq!(sample(&text, &format!("workqueue_adds_total{labels}")), "2");
        assert_eq!(
            sample(
                &text,
                r#"workqueue_depth{name="imagerepository",controller="imagerepository",priority=""}"#
            ),
            "2"
        );
        let work = q.start(key("a"));
        assert_eq!(
            sample(
                &scrape(&m),
                r#"controller_runtime_active_workers{controller="imagerepository"}"#
            ),
            "1"
        );
        work.finish::<()>(&Ok(Action::requeue(std::time::Duration::from_secs(60))));
        q.start(key("b")).finish::<()>(&Ok(Action::await_change()));
        q.start(key("c")).finish(&Err(()));
        let text = scrape(&m);
        let result = |r: &str| {
            format!(
                r#"controller_runtime_reconcile_total{{controller="imagerepository",result="{r}"}}"#
            )
        };
        assert_eq!(sample(&text, &result("requeue_after")), "1");
        assert_eq!(sample(&text, &result("success")), "1");
        assert_eq!(sample(&text, &result("error")), "1");
        assert_eq!(
            sample(
                &text,
                r#"controller_runtime_reconcile_errors_total{controller="imagerepository"}"#
            ),
            "1"
        );
        // c started without an event: an add that waited no time.
        assert_eq!(sample(&text, &format!("workqueue_adds_total{labels}")), "3");
        assert_eq!(
            sample(&text, &format!("workqueue_retries_total{labels}")),
            "2"
        );
        assert_eq!(
            sample(
                &text,
                &format!("workqueue_queue_duration_seconds_count{labels}")
            ),
            "3"
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_runtime_max_concurrent_reconciles{controller="imagerepository"}"#
            ),
            "4"
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_runtime_active_workers{controller="imagerepository"}"#
            ),
            "0"
        );
        assert!(text.contains(r#"controller_runtime_reconcile_time_seconds_bucket{le="60.0",controller="imagerepository"}"#), "{text}");
    }
}
