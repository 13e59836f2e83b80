//! The REST API: routing, reads (get, list, watch, tables), and the write pipeline
//! (decode → prune → defaults → mutating admission → system fields → validation →
//! validating admission → storage).

use crate::admission::{self, Attributes};
use crate::builtin;
use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::patch;
use crate::schema;
use crate::select::{FieldSelector, LabelSelector, human_duration, json_path};
use crate::store::{ResourceType, Shared, View, new_uid, now_rfc3339, obj_key};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub struct App {
    pub shared: Arc<Shared>,
    pub addr: std::net::SocketAddr,
}

type Query = HashMap<String, String>;

fn parse_query(uri: &Uri) -> Query {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

pub fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status(), &[])
}

/// A parsed resource path.
#[derive(Debug, Clone)]
struct Target {
    rt: Arc<ResourceType>,
    version: String,
    namespace: String,
    name: String,
    sub: String,
}

enum Accept {
    Full,
    Table,
    Metadata,
}

fn accept(headers: &HeaderMap) -> Accept {
    let a = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let first = a.split(',').next().unwrap_or("");
    if first.contains("as=Table") {
        Accept::Table
    } else if first.contains("as=PartialObjectMetadata") {
        Accept::Metadata
    } else {
        Accept::Full
    }
}

/// The user the stand-in attributes requests to (it does no authentication).
fn user_info(headers: &HeaderMap) -> Value {
    match headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
    {
        Some(u) => json!({"username": u, "groups": ["system:authenticated"]}),
        None => json!({
            "username": "kube-standin-admin",
            "uid": "00000000-0000-4000-8000-000000000001",
            "groups": ["system:masters", "system:authenticated"]
        }),
    }
}

pub async fn handle(
    app: Arc<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_string();
    let query = parse_query(&uri);
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    tracing::debug!(%method, %uri, "request");
    if method == Method::GET && segs == ["debug", "write-counts"] {
        return write_counts_response(&app);
    }
    if method == Method::GET
        && let Some(resp) = discovery::serve(&app, &segs, &uri)
    {
        return resp;
    }
    let target = match resolve(&app, &segs) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return error_response(&ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        Err(e) => return error_response(&e),
    };
    let result = match method {
        Method::GET if target.name.is_empty() => {
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                return watch(&app, &target, &query, &headers);
            }
            list(&app, &target, &query, &headers)
        }
        Method::GET => get(&app, &target, &headers),
        Method::POST if target.name.is_empty() => {
            create(&app, &target, &query, &headers, &body).await
        }
        Method::PUT if !target.name.is_empty() => {
            update(&app, &target, &query, &headers, &body).await
        }
        Method::PATCH if !target.name.is_empty() => {
            patch_object(&app, &target, &query, &headers, &body).await
        }
        Method::DELETE if !target.name.is_empty() => delete(&app, &target, &query, &headers).await,
        Method::DELETE => delete_collection(&app, &target, &query, &headers).await,
        _ => Err(ApiError::method_not_allowed(&target.rt.qualified())),
    };
    match result {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

/// `GET /debug/write-counts`: the write counters (see `StandIn::write_counts`) as JSON,
/// `{"imagerepositories.image.toolkit.fluxcd.io/status": {"requests": N, "persisted": M}}`,
/// for benchmarks that run the stand-in as a separate process. Read-only.
fn write_counts_response(app: &App) -> Response {
    let counts = serde_json::to_value(&app.shared.lock().writes).unwrap_or_default();
    json_response(200, &counts, &[])
}

fn resolve(app: &App, segs: &[&str]) -> ApiResult<Option<Target>> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(None),
    };
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] => ("", "namespaces", *ns, *sub),
        ["namespaces", ns, plural, more @ ..] => match more {
            [] => (*ns, *plural, "", ""),
            [name] => (*ns, *plural, *name, ""),
            [name, sub] => (*ns, *plural, *name, *sub),
            _ => return Ok(None),
        },
        [plural] => ("", *plural, "", ""),
        [plural, name] => ("", *plural, *name, ""),
        [plural, name, sub] => ("", *plural, *name, *sub),
        _ => return Ok(None),
    };
    let state = app.shared.lock();
    let Some(rt) = state.find_type(group, version, plural) else {
        return Ok(None);
    };
    if !rt.namespaced && !namespace.is_empty() {
        return Ok(None);
    }
    match sub {
        "" => {}
        "status" if rt.status_subresource => {}
        "finalize" if rt.plural == "namespaces" => {}
        _ => return Ok(None),
    }
    Ok(Some(Target {
        rt,
        version: version.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        sub: if sub == "finalize" { "status" } else { sub }.to_string(),
    }))
}

/// A stored object as the client's version shows it.
pub fn present(rt: &ResourceType, version: &str, stored: &Value) -> Value {
    let mut o = match rt.view {
        View::EventsV1 => builtin::event_to_v1(stored),
        View::Plain => stored.clone(),
    };
    o["apiVersion"] = json!(rt.api_version(version));
    o["kind"] = json!(rt.kind);
    // As kube-apiserver, defaults also apply when reading from storage (e.g. a defaulted
    // `status` shows on an object whose status was dropped on create).
    if let Some(s) = rt.schemas.get(version) {
        schema::apply_defaults(s, &mut o);
    }
    o
}

/// A served object back to its stored shape.
fn to_stored(rt: &ResourceType, version: &str, obj: Value) -> Value {
    let mut o = match rt.view {
        View::EventsV1 => builtin::event_from_v1(obj),
        View::Plain => obj,
    };
    if rt.view == View::Plain {
        o["apiVersion"] = json!(rt.api_version(version));
    }
    o
}

fn partial(obj: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]})
}

struct Filters {
    labels: LabelSelector,
    fields: FieldSelector,
}

fn filters(q: &Query) -> ApiResult<Filters> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("labelSelector: {e}")))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("fieldSelector: {e}")))?;
    Ok(Filters { labels, fields })
}

impl Filters {
    fn matches(&self, t: &Target, shown: &Value) -> bool {
        (t.namespace.is_empty() || shown["metadata"]["namespace"].as_str() == Some(&t.namespace))
            && self.labels.matches(&shown["metadata"]["labels"])
            && self.fields.matches(shown)
    }
}

fn get(app: &App, t: &Target, headers: &HeaderMap) -> ApiResult<Response> {
    let stored = app
        .shared
        .lock()
        .get(&t.rt.store, &t.namespace, &t.name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.rt, &t.name))?;
    let shown = present(&t.rt, &t.version, &stored);
    let body = match accept(headers) {
        Accept::Table => table(
            &t.rt,
            &t.version,
            &[shown],
            &stored["metadata"]["resourceVersion"],
        ),
        Accept::Metadata => partial(&shown),
        Accept::Full => shown,
    };
    Ok(json_response(200, &body, &[]))
}

fn list(app: &App, t: &Target, q: &Query, headers: &HeaderMap) -> ApiResult<Response> {
    let f = filters(q)?;
    let (items, rv) = {
        let state = app.shared.lock();
        let items: Vec<Value> = state
            .stores
            .get(&t.rt.store)
            .map(|s| {
                s.objects
                    .values()
                    .map(|o| present(&t.rt, &t.version, o))
                    .filter(|o| f.matches(t, o))
                    .collect()
            })
            .unwrap_or_default();
        (items, state.rv.to_string())
    };
    let body = match accept(headers) {
        Accept::Table => table(&t.rt, &t.version, &items, &json!(rv)),
        Accept::Metadata => json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": {"resourceVersion": rv},
            "items": items.iter().map(partial).collect::<Vec<_>>(),
        }),
        Accept::Full => json!({
            "apiVersion": t.rt.api_version(&t.version),
            "kind": format!("{}List", t.rt.kind),
            "metadata": {"resourceVersion": rv},
            "items": items,
        }),
    };
    Ok(json_response(200, &body, &[]))
}

/// A `meta.k8s.io/v1` Table: Name, then the CRD's printer columns (or the built-in
/// kind's), with `date` columns rendered as ages.
pub fn table(rt: &ResourceType, version: &str, items: &[Value], rv: &Value) -> Value {
    let name_col = json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0});
    let age_col = json!({"name": "Age", "type": "date", "format": "", "priority": 0,
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created."});
    let age = |o: &Value| -> Value { render_date(&o["metadata"]["creationTimestamp"]) };
    let mut defs = vec![name_col];
    let rows: Vec<Value> = if rt.custom {
        let cols = rt.printer_columns.get(version).cloned().unwrap_or_else(|| {
            vec![json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})]
        });
        for c in &cols {
            defs.push(json!({
                "name": c["name"], "type": c["type"], "format": c["format"].as_str().unwrap_or(""),
                "description": c["description"].as_str().unwrap_or(""),
                "priority": c["priority"].as_i64().unwrap_or(0),
            }));
        }
        items
            .iter()
            .map(|o| {
                let mut cells = vec![o["metadata"]["name"].clone()];
                for c in &cols {
                    let found = json_path(o, c["jsonPath"].as_str().unwrap_or(""));
                    let cell = match found.as_slice() {
                        [] => Value::Null,
                        [one] if c["type"] == "date" => render_date(one),
                        [one] => one.clone(),
                        many => json!(many.iter().map(cell_text).collect::<Vec<_>>().join(",")),
                    };
                    cells.push(cell);
                }
                json!({"cells": cells, "object": partial(o)})
            })
            .collect()
    } else {
        let cols = builtin::builtin_columns(rt);
        for (d, _) in &cols {
            defs.push(d.clone());
        }
        defs.push(age_col);
        items
            .iter()
            .map(|o| {
                let mut cells = vec![o["metadata"]["name"].clone()];
                cells.extend(cols.iter().map(|(_, f)| f(o)));
                cells.push(age(o));
                json!({"cells": cells, "object": partial(o)})
            })
            .collect()
    };
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render_date(v: &Value) -> Value {
    match v.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
        Some(ts) => json!(human_duration(
            jiff::Timestamp::now().as_second() - ts.as_second()
        )),
        None => Value::Null,
    }
}

fn watch(app: &App, t: &Target, q: &Query, headers: &HeaderMap) -> Response {
    let f = match filters(q) {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    let start: Option<u64> = q
        .get("resourceVersion")
        .and_then(|s| s.parse().ok())
        .filter(|rv| *rv != 0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let metadata_only = matches!(accept(headers), Accept::Metadata);
    // `kubectl get -w` watches Tables: column definitions in the first event only.
    let as_table = matches!(accept(headers), Accept::Table);
    let shared = app.shared.clone();
    let t = t.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(256);
    tokio::spawn(async move {
        let line = |kind: &str, obj: Value| {
            let mut s = json!({"type": kind, "object": obj}).to_string();
            s.push('\n');
            Ok(Bytes::from(s))
        };
        let show = |o: &Value| {
            let shown = present(&t.rt, &t.version, o);
            if metadata_only {
                partial(&shown)
            } else {
                shown
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut changed = shared.changed.subscribe();
        let mut batch = vec![];
        let mut expired = None;
        let (epoch, mut last) = {
            let state = shared.lock();
            let store = state.stores.get(&t.rt.store);
            match start {
                Some(rv) if store.is_some_and(|s| rv < s.expired_below) => {
                    let oldest = store.map(|s| s.expired_below).unwrap_or(0);
                    expired = Some(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "Expired", "code": 410,
                        "message": format!("too old resource version: {rv} ({oldest})")}));
                }
                Some(rv) => {
                    for e in store.into_iter().flat_map(|s| s.events_after(rv)) {
                        batch.push((e.kind, e.object.clone(), e.previous.clone()));
                    }
                }
                None => {
                    for o in store.into_iter().flat_map(|s| s.objects.values()) {
                        batch.push(("ADDED", o.clone(), None));
                    }
                }
            }
            (state.expiry_epoch, state.rv)
        };
        if let Some(status) = expired {
            let _ = tx.send(line("ERROR", status)).await;
            return;
        }
        let mut bookmark_tick = tokio::time::interval(Duration::from_secs(5));
        bookmark_tick.tick().await;
        let mut first_table = true;
        loop {
            for (kind, o, previous) in batch.drain(..) {
                let shown = present(&t.rt, &t.version, &o);
                // As kube-apiserver: an object entering the selection is ADDED, one
                // leaving it is DELETED.
                let was = previous.map(|p| f.matches(&t, &present(&t.rt, &t.version, &p)));
                let kind = match (kind, was, f.matches(&t, &shown)) {
                    ("MODIFIED", Some(true), false) => "DELETED",
                    (_, _, false) => continue,
                    ("MODIFIED", Some(false), true) => "ADDED",
                    (k, _, true) => k,
                };
                let out = if as_table {
                    let mut tb = table(
                        &t.rt,
                        &t.version,
                        std::slice::from_ref(&shown),
                        &shown["metadata"]["resourceVersion"],
                    );
                    if !first_table {
                        tb.as_object_mut().map(|m| m.remove("columnDefinitions"));
                    }
                    first_table = false;
                    tb
                } else {
                    show(&o)
                };
                if tx.send(line(kind, out)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                r = changed.changed() => {
                    if r.is_err() { return; }
                    let expired = {
                        let state = shared.lock();
                        let compacted = state
                            .stores
                            .get(&t.rt.store)
                            .is_some_and(|s| last < s.expired_below);
                        if state.expiry_epoch != epoch || compacted {
                            Some(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "reason": "Expired", "code": 410,
                                "message": format!("too old resource version: {last} ({})", state.rv)}))
                        } else {
                            if let Some(s) = state.stores.get(&t.rt.store) {
                                for e in s.events_after(last) {
                                    batch.push((e.kind, e.object.clone(), e.previous.clone()));
                                }
                            }
                            last = state.rv;
                            None
                        }
                    };
                    if let Some(status) = expired {
                        let _ = tx.send(line("ERROR", status)).await;
                        return;
                    }
                }
                _ = bookmark_tick.tick(), if bookmarks => {
                    let bm = json!({"apiVersion": t.rt.api_version(&t.version), "kind": t.rt.kind,
                        "metadata": {"resourceVersion": last.to_string()}});
                    if tx.send(line("BOOKMARK", bm)).await.is_err() { return; }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp
}

// ---------------------------------------------------------------- writes

fn write_key(t: &Target) -> String {
    if t.sub.is_empty() {
        t.rt.qualified()
    } else {
        format!("{}/{}", t.rt.qualified(), t.sub)
    }
}

fn decode_body(body: &Bytes, yaml: bool) -> ApiResult<Value> {
    let v: Value = if yaml {
        serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))?
    };
    Ok(v)
}

fn dry_run(q: &Query) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

fn options(kind: &str, q: &Query) -> Value {
    let mut o = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
    if let Some(m) = q.get("fieldManager") {
        o["fieldManager"] = json!(m);
    }
    if dry_run(q) {
        o["dryRun"] = json!(["All"]);
    }
    o
}

/// Prune, default, check unknown fields per `fieldValidation`; normalise built-ins.
fn decode_steps(
    t: &Target,
    q: &Query,
    obj: &mut Value,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    if let Some(s) = t.rt.schemas.get(&t.version) {
        let mut unknown = vec![];
        schema::prune(s, obj, "", &mut unknown);
        schema::apply_defaults(s, obj);
        if !unknown.is_empty() {
            match q.get("fieldValidation").map(String::as_str) {
                Some("Strict") => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|u| format!("unknown field \"{u}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        t.rt.kind,
                        t.version,
                        t.rt.kind,
                        list.join(", ")
                    )));
                }
                Some("Ignore") => {}
                _ => warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\""))),
            }
        }
    }
    let mut stored_shape = to_stored(&t.rt, &t.version, obj.clone());
    builtin::normalise(&t.rt, &mut stored_shape);
    *obj = present(&t.rt, &t.version, &stored_shape);
    Ok(())
}

fn drop_empty_metadata(obj: &mut Value) {
    if let Some(meta) = obj["metadata"].as_object_mut() {
        for k in ["finalizers", "labels", "annotations", "ownerReferences"] {
            let empty = match meta.get(k) {
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(m)) => m.is_empty(),
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                meta.remove(k);
            }
        }
        meta.remove("managedFields");
        meta.remove("selfLink");
    }
}

fn without_meta_and_status(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    o
}

/// System fields, status rules and generation, then OpenAPI validation.
fn finalize(t: &Target, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    match old {
        None => {
            let meta = &mut obj["metadata"];
            meta["uid"] = json!(new_uid());
            meta["creationTimestamp"] = json!(now_rfc3339());
            if let Some(m) = meta.as_object_mut() {
                m.remove("resourceVersion");
                m.remove("deletionTimestamp");
                m.remove("deletionGracePeriodSeconds");
                m.remove("generation");
            }
            if t.rt.custom || t.rt.plural == "customresourcedefinitions" {
                meta["generation"] = json!(1);
            }
            if t.rt.status_subresource && t.rt.custom {
                obj.as_object_mut().map(|m| m.remove("status"));
            }
        }
        Some(old) => {
            for k in [
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "name",
                "namespace",
            ] {
                match old["metadata"].get(k) {
                    Some(v) => obj["metadata"][k] = v.clone(),
                    None => {
                        obj["metadata"].as_object_mut().map(|m| m.remove(k));
                    }
                }
            }
            if t.sub == "status" {
                let status = obj.get("status").cloned();
                let mut fresh = old.clone();
                match status {
                    Some(s) => fresh["status"] = s,
                    None => {
                        fresh.as_object_mut().map(|m| m.remove("status"));
                    }
                }
                fresh["apiVersion"] = obj["apiVersion"].clone();
                *obj = fresh;
            } else if t.rt.status_subresource && t.rt.custom {
                match old.get("status") {
                    Some(s) => obj["status"] = s.clone(),
                    None => {
                        obj.as_object_mut().map(|m| m.remove("status"));
                    }
                }
            }
            if t.rt.custom
                && t.sub.is_empty()
                && without_meta_and_status(obj) != without_meta_and_status(old)
            {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                obj["metadata"]["generation"] = json!(g);
            }
            if !t.rt.status_subresource && t.rt.custom && obj.get("status") != old.get("status") {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                obj["metadata"]["generation"] = json!(g);
            }
            if old["metadata"].get("deletionTimestamp").is_some() {
                let before: Vec<&Value> = old["metadata"]["finalizers"]
                    .as_array()
                    .map(|a| a.iter().collect())
                    .unwrap_or_default();
                let added: Vec<String> = obj["metadata"]["finalizers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|f| !before.contains(f))
                    .map(|f| f.to_string())
                    .collect();
                if !added.is_empty() {
                    return Err(ApiError::invalid(
                        &t.rt,
                        &name,
                        &[format!(
                            "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            added.join(", ")
                        )],
                    ));
                }
            }
        }
    }
    drop_empty_metadata(obj);
    let mut errs = vec![];
    if t.rt.custom {
        if let Some(e) = schema::validate_name(&name) {
            errs.push(e);
        }
        if let Some(s) = t.rt.schemas.get(&t.version) {
            schema::validate(s, obj, "", &mut errs);
        }
    }
    if t.rt.plural == "customresourcedefinitions"
        && let Err(e) = schema::crd_to_type(obj)
    {
        errs.push(e);
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(&t.rt, &name, &errs));
    }
    Ok(())
}

fn attributes(
    t: &Target,
    op: &'static str,
    name: &str,
    old: Option<Value>,
    q: &Query,
    headers: &HeaderMap,
    opts: &str,
) -> Attributes {
    Attributes {
        rt: t.rt.clone(),
        version: t.version.clone(),
        subresource: t.sub.clone(),
        operation: op,
        name: name.to_string(),
        namespace: t.namespace.clone(),
        old_object: old,
        dry_run: dry_run(q),
        options: options(opts, q),
        user: user_info(headers),
    }
}

/// Runs the admission chain on a candidate (served shape) and returns the final object and
/// the warnings. `old` is the current object (served shape) for updates.
async fn admit(
    app: &App,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    mut obj: Value,
    old: Option<&Value>,
    warnings: &mut Vec<String>,
) -> ApiResult<Value> {
    if t.rt.namespaced {
        obj["metadata"]["namespace"] = json!(t.namespace);
    }
    decode_steps(t, q, &mut obj, warnings)?;
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let (op, opts) = if old.is_some() {
        ("UPDATE", "UpdateOptions")
    } else {
        ("CREATE", "CreateOptions")
    };
    let attrs = attributes(t, op, &name, old.cloned(), q, headers, opts);
    let schema = t.rt.schemas.get(&t.version).cloned();
    let fixup = move |o: &mut Value| {
        if let Some(s) = &schema {
            schema::prune(s, o, "", &mut vec![]);
            schema::apply_defaults(s, o);
        }
    };
    let mut candidate = Some(obj);
    warnings.extend(admission::mutate(&app.shared, &attrs, &mut candidate, &fixup).await?);
    let mut obj = candidate.unwrap_or(Value::Null);
    finalize(t, &mut obj, old)?;
    warnings.extend(admission::validate(&app.shared, &attrs, Some(&obj)).await?);
    Ok(obj)
}

/// After a CRD or Namespace changes: register types, cascade deletes.
fn side_effects(state: &mut crate::store::State, t: &Target, stored: &Value, deleted: bool) {
    if t.rt.plural == "customresourcedefinitions" && t.rt.group == "apiextensions.k8s.io" {
        let group = stored["spec"]["group"].as_str().unwrap_or("").to_string();
        let plural = stored["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if deleted {
            state.unregister(&group, &plural);
        } else if let Ok(rt) = schema::crd_to_type(stored) {
            state.register(rt);
        }
    }
    if deleted && t.rt.plural == "namespaces" && t.rt.group.is_empty() {
        let ns = stored["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let stores: Vec<String> = state
            .types
            .values()
            .filter(|t| t.namespaced)
            .map(|t| t.store.clone())
            .collect();
        for s in stores {
            let doomed: Vec<Value> = state
                .stores
                .get(&s)
                .map(|st| {
                    st.objects
                        .iter()
                        .filter(|((n, _), _)| *n == ns)
                        .map(|(_, o)| o.clone())
                        .collect()
                })
                .unwrap_or_default();
            for o in doomed {
                state.persist(&s, o, "DELETED");
            }
        }
    }
}

/// Status for the CRD itself, as the API server sets it.
fn crd_status(obj: &mut Value) {
    let now = now_rfc3339();
    let storage = obj["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str())
        .unwrap_or("")
        .to_string();
    obj["status"] = json!({
        "acceptedNames": obj["spec"]["names"],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": [storage],
    });
}

/// The stand-in speaks JSON (and YAML for apply) only.
fn check_content_type(headers: &HeaderMap) -> ApiResult<()> {
    let ctype = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.contains("protobuf") || ctype.contains("cbor") {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "kube-standin accepts JSON request bodies only, not {ctype:?} (kubectl's `create secret|configmap|namespace` send protobuf: use `kubectl apply -f` or `kubectl create ... --dry-run=client -o yaml | kubectl apply -f -`)"
            ),
        ));
    }
    Ok(())
}

async fn create(
    app: &App,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    app.shared.lock().count_request(&write_key(t));
    check_content_type(headers)?;
    let obj = decode_body(body, false)?;
    let (stored, warnings) = create_object(app, t, q, headers, obj).await?;
    Ok(json_response(
        201,
        &present(&t.rt, &t.version, &stored),
        &warnings,
    ))
}

async fn create_object(
    app: &App,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    mut obj: Value,
) -> ApiResult<(Value, Vec<String>)> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let body_ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
    if t.rt.namespaced && !body_ns.is_empty() && body_ns != t.namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if obj["metadata"]["name"].as_str().unwrap_or("").is_empty() {
        match obj["metadata"]["generateName"].as_str() {
            Some(prefix) if !prefix.is_empty() => {
                let suffix: String = (0..5)
                    .map(|_| {
                        let c = b"bcdfghjklmnpqrstvwxz2456789"[rand::random_range(0..27)];
                        c as char
                    })
                    .collect();
                obj["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
            }
            _ => {
                return Err(ApiError::invalid(
                    &t.rt,
                    "",
                    &[
                        "metadata.name: Required value: name or generateName is required"
                            .to_string(),
                    ],
                ));
            }
        }
    }
    {
        let state = app.shared.lock();
        if t.rt.namespaced && state.get("namespaces", "", &t.namespace).is_none() {
            return Err(ApiError::namespace_not_found(&t.namespace));
        }
    }
    obj["apiVersion"] = json!(t.rt.api_version(&t.version));
    obj["kind"] = json!(t.rt.kind);
    let mut warnings = vec![];
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if app
        .shared
        .lock()
        .get(&t.rt.store, &t.namespace, &name)
        .is_some()
    {
        return Err(ApiError::already_exists(&t.rt, &name));
    }
    let mut final_obj = admit(app, t, q, headers, obj, None, &mut warnings).await?;
    if t.rt.plural == "customresourcedefinitions" {
        crd_status(&mut final_obj);
    }
    let mut stored = to_stored(&t.rt, &t.version, final_obj);
    if dry_run(q) {
        return Ok((stored, warnings));
    }
    {
        let mut state = app.shared.lock();
        if state.get(&t.rt.store, &t.namespace, &name).is_some() {
            return Err(ApiError::already_exists(&t.rt, &name));
        }
        stored = state.persist(&t.rt.store, stored, "ADDED");
        state.count_persisted(&write_key(t));
        side_effects(&mut state, t, &stored, false);
    }
    app.shared.notify();
    Ok((stored, warnings))
}

/// Stores an update if it changes anything; returns the stored object. Fails with
/// `Err(None)` when the object changed since `base_rv` (the caller retries or reports 409).
fn commit_update(
    app: &App,
    t: &Target,
    base_rv: &Value,
    new_stored: Value,
) -> Result<Value, Option<ApiError>> {
    let mut state = app.shared.lock();
    let key = (t.namespace.clone(), t.name.clone());
    let Some(current) = state
        .stores
        .get(&t.rt.store)
        .and_then(|s| s.objects.get(&key))
        .cloned()
    else {
        return Err(Some(ApiError::not_found(&t.rt, &t.name)));
    };
    if current["metadata"]["resourceVersion"] != *base_rv {
        return Err(None);
    }
    let mut candidate = new_stored;
    candidate["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    candidate["apiVersion"] = current["apiVersion"].clone();
    if candidate == current {
        return Ok(current);
    }
    let deleting = candidate["metadata"].get("deletionTimestamp").is_some()
        && candidate["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|a| a.is_empty());
    let stored = state.persist(
        &t.rt.store,
        candidate,
        if deleting { "DELETED" } else { "MODIFIED" },
    );
    state.count_persisted(&write_key(t));
    side_effects(&mut state, t, &stored, deleting);
    drop(state);
    app.shared.notify();
    Ok(stored)
}

fn current(app: &App, t: &Target) -> ApiResult<Value> {
    app.shared
        .lock()
        .get(&t.rt.store, &t.namespace, &t.name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.rt, &t.name))
}

fn check_name(t: &Target, obj: &Value) -> ApiResult<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if !name.is_empty() && name != t.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            t.name
        )));
    }
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
    if t.rt.namespaced && !ns.is_empty() && ns != t.namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

async fn update(
    app: &App,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    app.shared.lock().count_request(&write_key(t));
    check_content_type(headers)?;
    let mut obj = decode_body(body, false)?;
    if !obj.is_object() || !obj["metadata"].is_object() {
        return Err(ApiError::bad_request(
            "the request body must be an object with metadata",
        ));
    }
    check_name(t, &obj)?;
    let cur = current(app, t)?;
    let rv = obj["metadata"]["resourceVersion"].clone();
    let given = rv.as_str().unwrap_or("");
    if given.is_empty() {
        if t.rt.custom {
            return Err(ApiError::invalid(
                &t.rt,
                &t.name,
                &[
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                        .to_string(),
                ],
            ));
        }
    } else if rv != cur["metadata"]["resourceVersion"] {
        return Err(ApiError::conflict(&t.rt, &t.name));
    }
    obj["metadata"]["name"] = json!(t.name);
    obj["apiVersion"] = json!(t.rt.api_version(&t.version));
    obj["kind"] = json!(t.rt.kind);
    let old_shown = present(&t.rt, &t.version, &cur);
    admit_and_update(app, t, q, headers, obj, &old_shown, &cur, || {})
        .await?
        .ok_or_else(|| ApiError::conflict(&t.rt, &t.name))
}

/// Runs the admission webhooks on `obj` as an update of `cur` (`old_shown` is `cur` as
/// the request's version shows it), then answers a dry run with what would be stored, or
/// stores it and calls `on_commit`. None: `cur` changed meanwhile (a conflict).
#[allow(clippy::too_many_arguments)]
async fn admit_and_update(
    app: &App,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    obj: Value,
    old_shown: &Value,
    cur: &Value,
    on_commit: impl FnOnce(),
) -> ApiResult<Option<Response>> {
    let mut warnings = vec![];
    let final_obj = admit(app, t, q, headers, obj, Some(old_shown), &mut warnings).await?;
    let stored = to_stored(&t.rt, &t.version, final_obj);
    if dry_run(q) {
        return Ok(Some(json_response(
            200,
            &present(&t.rt, &t.version, &stored),
            &warnings,
        )));
    }
    match commit_update(app, t, &cur["metadata"]["resourceVersion"], stored) {
        Ok(s) => {
            on_commit();
            Ok(Some(json_response(
                200,
                &present(&t.rt, &t.version, &s),
                &warnings,
            )))
        }
        Err(Some(e)) => Err(e),
        Err(None) => Ok(None),
    }
}

async fn patch_object(
    app: &App,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    app.shared.lock().count_request(&write_key(t));
    let ctype = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let is_apply = ctype == "application/apply-patch+yaml";
    let body_value = decode_body(body, is_apply)?;
    if ctype == "application/strategic-merge-patch+json" && t.rt.custom {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".to_string(),
        ));
    }
    if !matches!(
        ctype.as_str(),
        "application/merge-patch+json"
            | "application/json-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/apply-patch+yaml"
    ) {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, not {ctype:?}"
            ),
        ));
    }
    let manager = q.get("fieldManager").cloned().unwrap_or_default();
    if is_apply {
        if manager.is_empty() {
            return Err(ApiError::invalid(
                &t.rt,
                &t.name,
                &["fieldManager: Required value: is required for apply patch".to_string()],
            ));
        }
        check_name(t, &body_value)?;
    }
    for _attempt in 0..16 {
        let cur = app
            .shared
            .lock()
            .get(&t.rt.store, &t.namespace, &t.name)
            .cloned();
        let ssa_key = (
            t.rt.store.clone(),
            t.namespace.clone(),
            t.name.clone(),
            manager.clone(),
        );
        let Some(cur) = cur else {
            if is_apply && t.sub.is_empty() {
                let mut obj = body_value.clone();
                obj["metadata"]["name"] = json!(t.name);
                let (stored, warnings) = create_object(app, t, q, headers, obj).await?;
                if !dry_run(q) {
                    app.shared
                        .lock()
                        .applied
                        .insert(ssa_key, body_value.clone());
                }
                return Ok(json_response(
                    201,
                    &present(&t.rt, &t.version, &stored),
                    &warnings,
                ));
            }
            return Err(ApiError::not_found(&t.rt, &t.name));
        };
        let old_shown = present(&t.rt, &t.version, &cur);
        let mut doc = old_shown.clone();
        match ctype.as_str() {
            "application/merge-patch+json" => patch::merge(&mut doc, &body_value),
            "application/strategic-merge-patch+json" => {
                patch::strategic_merge(&mut doc, &body_value)
            }
            "application/json-patch+json" => patch::json_patch(&mut doc, &body_value)
                .map_err(|e| ApiError::new(422, "Invalid", e))?,
            _ => {
                let prev = app.shared.lock().applied.get(&ssa_key).cloned();
                patch::apply(&mut doc, prev.as_ref(), &body_value);
            }
        }
        if !doc.is_object() || !doc["metadata"].is_object() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "the patched object is not a Kubernetes object",
            ));
        }
        let want_rv = doc["metadata"]["resourceVersion"].clone();
        if want_rv != old_shown["metadata"]["resourceVersion"] && !want_rv.is_null() {
            return Err(ApiError::conflict(&t.rt, &t.name));
        }
        doc["metadata"]["name"] = json!(t.name);
        doc["apiVersion"] = json!(t.rt.api_version(&t.version));
        doc["kind"] = json!(t.rt.kind);
        let remember_apply = || {
            if is_apply {
                app.shared
                    .lock()
                    .applied
                    .insert(ssa_key.clone(), body_value.clone());
            }
        };
        let done = admit_and_update(app, t, q, headers, doc, &old_shown, &cur, remember_apply);
        if let Some(response) = done.await? {
            return Ok(response);
        }
    }
    Err(ApiError::conflict(&t.rt, &t.name))
}

async fn delete(app: &App, t: &Target, q: &Query, headers: &HeaderMap) -> ApiResult<Response> {
    app.shared.lock().count_request(&write_key(t));
    let stored = delete_one(app, t, q, headers).await?;
    let shown = present(&t.rt, &t.version, &stored);
    if t.rt.custom || shown["metadata"].get("deletionTimestamp").is_some() {
        return Ok(json_response(200, &shown, &[]));
    }
    Ok(json_response(
        200,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": t.name, "group": t.rt.group, "kind": t.rt.plural, "uid": shown["metadata"]["uid"]}}),
        &[],
    ))
}

async fn delete_one(app: &App, t: &Target, q: &Query, headers: &HeaderMap) -> ApiResult<Value> {
    let cur = current(app, t)?;
    let old_shown = present(&t.rt, &t.version, &cur);
    let attrs = attributes(
        t,
        "DELETE",
        &t.name,
        Some(old_shown),
        q,
        headers,
        "DeleteOptions",
    );
    let mut none = None;
    admission::mutate(&app.shared, &attrs, &mut none, &|_| {}).await?;
    admission::validate(&app.shared, &attrs, None).await?;
    if dry_run(q) {
        return Ok(cur);
    }
    let mut state = app.shared.lock();
    let Some(cur) = state.get(&t.rt.store, &t.namespace, &t.name).cloned() else {
        return Err(ApiError::not_found(&t.rt, &t.name));
    };
    let has_finalizers = cur["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    let stored = if has_finalizers {
        if cur["metadata"].get("deletionTimestamp").is_some() {
            return Ok(cur);
        }
        let mut o = cur;
        o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        state.persist(&t.rt.store, o, "MODIFIED")
    } else {
        let s = state.persist(&t.rt.store, cur, "DELETED");
        side_effects(&mut state, t, &s, true);
        s
    };
    state.count_persisted(&write_key(t));
    drop(state);
    app.shared.notify();
    Ok(stored)
}

async fn delete_collection(
    app: &App,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let f = filters(q)?;
    let names: Vec<(String, String)> = {
        let state = app.shared.lock();
        state
            .stores
            .get(&t.rt.store)
            .map(|s| {
                s.objects
                    .values()
                    .filter(|o| f.matches(t, &present(&t.rt, &t.version, o)))
                    .map(obj_key)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut items = vec![];
    for (ns, name) in names {
        let one = Target {
            namespace: ns,
            name,
            ..t.clone()
        };
        app.shared.lock().count_request(&write_key(&one));
        items.push(present(
            &t.rt,
            &t.version,
            &delete_one(app, &one, q, headers).await?,
        ));
    }
    let rv = app.shared.lock().rv.to_string();
    Ok(json_response(
        200,
        &json!({"apiVersion": t.rt.api_version(&t.version), "kind": format!("{}List", t.rt.kind),
            "metadata": {"resourceVersion": rv}, "items": items}),
        &[],
    ))
}

/// Objects kept by the store and found in YAML files, for `--crds` and `--webhooks`.
pub fn load_objects(shared: &Shared, docs: Vec<Value>) -> anyhow::Result<usize> {
    let mut n = 0;
    let mut state = shared.lock();
    for mut doc in docs {
        let kind = doc["kind"].as_str().unwrap_or("").to_string();
        let (group, plural) = match kind.as_str() {
            "CustomResourceDefinition" => ("apiextensions.k8s.io", "customresourcedefinitions"),
            "MutatingWebhookConfiguration" => (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
            ),
            "ValidatingWebhookConfiguration" => (
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
            ),
            _ => continue,
        };
        let name = doc["metadata"]["name"].as_str().unwrap_or("").to_string();
        let Some(rt) = state.find_type(group, "v1", plural) else {
            continue;
        };
        if kind == "CustomResourceDefinition" {
            let ty = schema::crd_to_type(&doc)
                .map_err(|e| anyhow::anyhow!("CustomResourceDefinition {name}: {e}"))?;
            crd_status(&mut doc);
            state.register(ty);
        }
        if let Some(m) = doc["metadata"].as_object_mut() {
            m.insert("generation".into(), json!(1));
        }
        drop_empty_metadata(&mut doc);
        if let Some(old) = state.get(&rt.store, "", &name).cloned() {
            doc["metadata"]["uid"] = old["metadata"]["uid"].clone();
            doc["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            state.persist(&rt.store, doc, "MODIFIED");
        } else {
            state.insert_new(&rt.store, doc);
        }
        n += 1;
    }
    drop(state);
    shared.notify();
    Ok(n)
}

/// Every YAML document in the files under `dir`, recursively.
pub fn read_yaml_dir(dir: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let mut out = vec![];
    let mut paths = vec![];
    collect_files(dir, &mut paths)?;
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| anyhow::anyhow!("parsing {}: {e}", p.display()))?;
            if v.is_object() {
                out.push(v);
            }
        }
    }
    Ok(out)
}

fn collect_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("reading directory {}: {e}", dir.display()))?;
    for entry in entries {
        let p = entry?.path();
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    Ok(())
}
