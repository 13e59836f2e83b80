//! Resource types and in-memory storage: one object map and one append-only event log per
//! stored resource, stamped from one global resourceVersion counter.

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// How a resource's stored objects are shown to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Stored as served (only `apiVersion` is rewritten for the requested version).
    Plain,
    /// `events.k8s.io/v1` Events, stored in the `core/v1` shape.
    EventsV1,
}

/// One servable resource: a CRD's kind or a built-in kind.
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    /// Served versions, most preferred first.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// `openAPIV3Schema` per version (custom resources only).
    pub schemas: HashMap<String, Value>,
    /// `additionalPrinterColumns` per version (custom resources only).
    pub printer_columns: HashMap<String, Vec<Value>>,
    /// Key of the object store; two types share one store when they are views of one kind.
    pub store: String,
    pub view: View,
    /// Custom resources get `generation` bookkeeping, pruning and defaults.
    pub custom: bool,
}

impl ResourceType {
    /// `plural.group`, or `plural` for the core group: the name used in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group` (or `Kind`): the name used in 422 messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn preferred_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }
}

/// Events kept per store before the oldest half is compacted away.
pub const MAX_LOG: usize = 10_000;

/// One entry of a store's event log.
#[derive(Clone, Debug)]
pub struct LoggedEvent {
    pub rv: u64,
    pub kind: &'static str,
    pub object: Value,
    /// The object before a MODIFIED change (to tell selector transitions).
    pub previous: Option<Value>,
}

#[derive(Default, Debug)]
pub struct Store {
    /// (namespace, name) → stored object.
    pub objects: BTreeMap<(String, String), Value>,
    pub log: Vec<LoggedEvent>,
    /// Watches that start at a resourceVersion below this get 410 Expired.
    pub expired_below: u64,
}

impl Store {
    /// The logged events after resourceVersion `rv` (the log is in resourceVersion order).
    pub fn events_after(&self, rv: u64) -> &[LoggedEvent] {
        &self.log[self.log.partition_point(|e| e.rv <= rv)..]
    }
}

/// Request and persisted-change counts for one resource (and subresource).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteCount {
    /// POST, PUT, PATCH and DELETE requests received (including rejected and no-op ones).
    pub requests: u64,
    /// Writes that changed stored data (a new resourceVersion).
    pub persisted: u64,
}

pub struct State {
    /// (group, plural) → type.
    pub types: BTreeMap<(String, String), Arc<ResourceType>>,
    pub stores: HashMap<String, Store>,
    pub rv: u64,
    /// Bumped by a forced expiry: open watches end with a 410 ERROR event.
    pub expiry_epoch: u64,
    pub writes: BTreeMap<String, WriteCount>,
    /// Server-side apply: (store, namespace, name, manager) → what that manager last applied.
    pub applied: HashMap<(String, String, String, String), Value>,
    pub services: HashMap<(String, String), SocketAddr>,
}

pub struct Shared {
    state: Mutex<State>,
    pub changed: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub fn new(services: HashMap<(String, String), SocketAddr>) -> Shared {
        let mut state = State {
            types: BTreeMap::new(),
            stores: HashMap::new(),
            rv: 1,
            expiry_epoch: 0,
            writes: BTreeMap::new(),
            applied: HashMap::new(),
            services,
        };
        for rt in crate::builtin::builtin_types() {
            state.register(rt);
        }
        for ns in ["default", "kube-system", "kube-public"] {
            let obj = json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}
            });
            state.insert_new("namespaces", obj);
        }
        let (changed, _) = tokio::sync::watch::channel(state.rv);
        Shared {
            state: Mutex::new(state),
            changed,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the stand-in; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells open watches that something changed.
    pub fn notify(&self) {
        let rv = self.lock().rv;
        self.changed.send_replace(rv);
    }
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

pub fn obj_key(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or("").to_string(),
        m["name"].as_str().unwrap_or("").to_string(),
    )
}

impl State {
    pub fn register(&mut self, rt: ResourceType) {
        self.stores.entry(rt.store.clone()).or_default();
        self.types
            .insert((rt.group.clone(), rt.plural.clone()), Arc::new(rt));
    }

    pub fn unregister(&mut self, group: &str, plural: &str) {
        if let Some(rt) = self.types.remove(&(group.to_string(), plural.to_string())) {
            let still_used = self.types.values().any(|t| t.store == rt.store);
            if !still_used {
                self.stores.remove(&rt.store);
            }
        }
    }

    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .get(&(group.to_string(), plural.to_string()))
            .filter(|t| t.versions.iter().any(|v| v == version))
            .cloned()
    }

    pub fn store(&mut self, key: &str) -> &mut Store {
        self.stores.entry(key.to_string()).or_default()
    }

    pub fn get(&self, store: &str, ns: &str, name: &str) -> Option<&Value> {
        self.stores
            .get(store)?
            .objects
            .get(&(ns.to_string(), name.to_string()))
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores a new object with system fields set (used for seeded objects).
    pub fn insert_new(&mut self, store: &str, mut obj: Value) -> Value {
        let meta = &mut obj["metadata"];
        meta["uid"] = json!(new_uid());
        meta["creationTimestamp"] = json!(now_rfc3339());
        self.persist(store, obj, "ADDED")
    }

    /// Stamps a new resourceVersion on `obj`, stores it and logs the event. `DELETED`
    /// removes it.
    pub fn persist(&mut self, store: &str, mut obj: Value, kind: &'static str) -> Value {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = obj_key(&obj);
        if kind == "DELETED" {
            // A later object of the same name starts with no server-side-apply history.
            self.applied
                .retain(|k, _| !(k.0 == store && k.1 == key.0 && k.2 == key.1));
        }
        let s = self.store(store);
        let previous = if kind == "MODIFIED" {
            s.objects.get(&key).cloned()
        } else {
            None
        };
        if kind == "DELETED" {
            s.objects.remove(&key);
        } else {
            s.objects.insert(key, obj.clone());
        }
        s.log.push(LoggedEvent {
            rv,
            kind,
            object: obj.clone(),
            previous,
        });
        // Compaction, as etcd and the watch cache do: keep the newest half once the log
        // is long; watches from before the cut get 410 Expired and relist.
        if s.log.len() > MAX_LOG {
            let cut = s.log.len() - MAX_LOG / 2;
            s.expired_below = s.log[cut - 1].rv;
            s.log.drain(..cut);
        }
        obj
    }

    pub fn count_request(&mut self, key: &str) {
        self.writes.entry(key.to_string()).or_default().requests += 1;
    }

    pub fn count_persisted(&mut self, key: &str) {
        self.writes.entry(key.to_string()).or_default().persisted += 1;
    }

    /// Makes every resourceVersion issued so far too old to watch from, and ends open
    /// watches with a 410 ERROR event.
    pub fn force_expiry(&mut self) {
        let rv = self.next_rv();
        for s in self.stores.values_mut() {
            s.expired_below = rv;
            s.log.clear();
        }
        self.expiry_epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_log_is_compacted_and_older_versions_expire() {
        let shared = Shared::new(HashMap::new());
        let mut state = shared.lock();
        let first = state.rv + 1;
        for i in 0..=MAX_LOG {
            state.persist(
                "secrets",
                json!({"metadata": {"namespace": "default", "name": format!("s{i}")}}),
                "ADDED",
            );
        }
        let store = &state.stores["secrets"];
        assert_eq!(store.log.len(), MAX_LOG / 2);
        assert!(store.expired_below > first);
        assert_eq!(store.log[0].rv, store.expired_below + 1);
        assert_eq!(
            store.objects.len(),
            MAX_LOG + 1,
            "objects are kept, only history goes"
        );
    }
}
