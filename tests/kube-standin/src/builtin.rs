//! Built-in kinds: their types, the two views of Events, Secrets' `stringData`, and the
//! table columns kubectl shows for them.

use crate::store::{ResourceType, View};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

fn builtin(
    group: &str,
    plural: &str,
    singular: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
) -> ResourceType {
    ResourceType {
        group: group.to_string(),
        versions: vec!["v1".to_string()],
        plural: plural.to_string(),
        singular: singular.to_string(),
        kind: kind.to_string(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: vec![],
        status_subresource: false,
        schemas: HashMap::new(),
        printer_columns: HashMap::new(),
        store: if group.is_empty() {
            plural.to_string()
        } else {
            format!("{plural}.{group}")
        },
        view: View::Plain,
        custom: false,
    }
}

pub fn builtin_types() -> Vec<ResourceType> {
    let mut namespaces = builtin("", "namespaces", "namespace", "Namespace", false, &["ns"]);
    namespaces.status_subresource = true;
    let core_events = builtin("", "events", "event", "Event", true, &["ev"]);
    let mut events_v1 = builtin("events.k8s.io", "events", "event", "Event", true, &["ev"]);
    events_v1.store = "events".to_string();
    events_v1.view = View::EventsV1;
    vec![
        namespaces,
        builtin("", "secrets", "secret", "Secret", true, &[]),
        builtin("", "configmaps", "configmap", "ConfigMap", true, &["cm"]),
        builtin(
            "",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            true,
            &["sa"],
        ),
        // Stored only (nothing routes through them; `--service` does the routing).
        builtin("", "services", "service", "Service", true, &["svc"]),
        core_events,
        events_v1,
        builtin("coordination.k8s.io", "leases", "lease", "Lease", true, &[]),
        builtin(
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "mutatingwebhookconfiguration",
            "MutatingWebhookConfiguration",
            false,
            &[],
        ),
        builtin(
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "validatingwebhookconfiguration",
            "ValidatingWebhookConfiguration",
            false,
            &[],
        ),
        builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
        ),
    ]
}

fn move_field(from: &mut Map<String, Value>, to: &mut Map<String, Value>, a: &str, b: &str) {
    if let Some(v) = from.remove(a)
        && !v.is_null()
    {
        to.insert(b.to_string(), v);
    }
}

/// Event fields with the same name in `events.k8s.io/v1` and `core/v1`.
const EVENT_FIELDS_SAME: [&str; 8] = [
    "metadata",
    "eventTime",
    "series",
    "reportingInstance",
    "action",
    "reason",
    "related",
    "type",
];

/// Event fields renamed between the two views: (`events.k8s.io/v1`, `core/v1`).
const EVENT_FIELDS_RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedCount", "count"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
];

/// One Event view into the other: `to_core` maps `events.k8s.io/v1` names to `core/v1`
/// ones, otherwise the reverse. Fields of neither table are dropped.
fn convert_event(
    mut src: Map<String, Value>,
    api_version: &str,
    to_core: bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    for same in EVENT_FIELDS_SAME {
        move_field(&mut src, &mut out, same, same);
    }
    for (v1, core) in EVENT_FIELDS_RENAMED {
        let (from, to) = if to_core { (v1, core) } else { (core, v1) };
        move_field(&mut src, &mut out, from, to);
    }
    out
}

/// `events.k8s.io/v1` Event → stored `core/v1` shape.
pub fn event_from_v1(v1: Value) -> Value {
    let Value::Object(src) = v1 else {
        return v1;
    };
    let mut out = convert_event(src, "v1", true);
    // kubectl describe shows `source.component` in its "From" column.
    if out.get("source").is_none()
        && let Some(c) = out.get("reportingComponent").cloned()
    {
        out.insert("source".into(), json!({"component": c}));
    }
    Value::Object(out)
}

/// Stored `core/v1` Event → `events.k8s.io/v1` shape.
pub fn event_to_v1(core: &Value) -> Value {
    let Value::Object(src) = core.clone() else {
        return core.clone();
    };
    Value::Object(convert_event(src, "events.k8s.io/v1", false))
}

/// What the API server does to built-in kinds on every write: Secrets' `stringData`
/// folded into `data`, Events given first/last timestamps.
pub fn normalise(rt: &ResourceType, obj: &mut Value) {
    if rt.group.is_empty() && rt.plural == "secrets" {
        if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
            let data = obj["data"].as_object().cloned().unwrap_or_default();
            let mut data = data;
            for (k, v) in sd {
                let s = v.as_str().unwrap_or_default().to_string();
                data.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(s)),
                );
            }
            obj["data"] = Value::Object(data);
        }
        if obj.get("type").is_none() {
            obj["type"] = json!("Opaque");
        }
    }
    if rt.group.is_empty() && rt.plural == "namespaces" {
        if let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) {
            if !obj["metadata"]["labels"].is_object() {
                obj["metadata"]["labels"] = json!({});
            }
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        if obj["spec"]["finalizers"].is_null() {
            obj["spec"]["finalizers"] = json!(["kubernetes"]);
        }
        if obj["status"]["phase"].is_null() {
            obj["status"]["phase"] = json!("Active");
        }
    }
    if rt.store == "events"
        && obj.get("firstTimestamp").is_none()
        && let Some(t) = obj.get("eventTime").and_then(Value::as_str)
    {
        // eventTime is a MicroTime; firstTimestamp is whole seconds.
        let secs = t.split('.').next().unwrap_or(t).trim_end_matches('Z');
        obj["firstTimestamp"] = json!(format!("{secs}Z"));
    }
}

/// Columns (definition, cell function) for the built-in kinds' tables; None means the
/// default `Name`, `Age`.
pub type CellFn = fn(&Value) -> Value;

pub fn builtin_columns(rt: &ResourceType) -> Vec<(Value, CellFn)> {
    fn col(name: &str, ty: &str) -> Value {
        json!({"name": name, "type": ty, "format": "", "description": name, "priority": 0})
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => vec![(col("Status", "string"), |o| o["status"]["phase"].clone())],
        ("", "secrets") => vec![
            (col("Type", "string"), |o| o["type"].clone()),
            (col("Data", "integer"), |o| {
                json!(o["data"].as_object().map(|m| m.len()).unwrap_or(0))
            }),
        ],
        ("", "configmaps") => vec![(col("Data", "integer"), |o| {
            json!(
                o["data"].as_object().map(|m| m.len()).unwrap_or(0)
                    + o["binaryData"].as_object().map(|m| m.len()).unwrap_or(0)
            )
        })],
        ("", "events") => vec![
            (col("Type", "string"), |o| o["type"].clone()),
            (col("Reason", "string"), |o| o["reason"].clone()),
            (col("Object", "string"), |o| {
                let io = &o["involvedObject"];
                json!(format!(
                    "{}/{}",
                    io["kind"].as_str().unwrap_or("").to_lowercase(),
                    io["name"].as_str().unwrap_or("")
                ))
            }),
            (col("Message", "string"), |o| o["message"].clone()),
        ],
        ("", "services") => vec![
            (col("Type", "string"), |o| {
                json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP"))
            }),
            (col("Ports", "string"), |o| {
                let ports: Vec<String> = o["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
                    .collect();
                json!(ports.join(","))
            }),
        ],
        ("coordination.k8s.io", "leases") => vec![(col("Holder", "string"), |o| {
            o["spec"]["holderIdentity"].clone()
        })],
        ("admissionregistration.k8s.io", _) => vec![(col("Webhooks", "integer"), |o| {
            json!(o["webhooks"].as_array().map(|a| a.len()).unwrap_or(0))
        })],
        _ => vec![],
    }
}
