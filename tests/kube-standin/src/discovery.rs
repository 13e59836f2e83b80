//! Legacy discovery (`/api`, `/apis`, `/api/v1`, `/apis/G/V`), `/version`, and the minimal
//! `/openapi/v3` kubectl needs to trust server-side field validation.

use crate::schema::version_order;
use crate::server::{App, json_response};
use crate::store::ResourceType;
use axum::http::Uri;
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

fn groups(app: &App) -> BTreeMap<String, Vec<String>> {
    let state = app.shared.lock();
    let mut g: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rt in state.types.values() {
        let e = g.entry(rt.group.clone()).or_default();
        for v in &rt.versions {
            if !e.contains(v) {
                e.push(v.clone());
            }
        }
    }
    for v in g.values_mut() {
        v.sort_by(|a, b| version_order(a, b));
    }
    g
}

fn types_in(app: &App, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
    app.shared
        .lock()
        .types
        .values()
        .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
        .cloned()
        .collect()
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let gv = |v: &String| json!({"groupVersion": format!("{name}/{v}"), "version": v});
    json!({
        "name": name,
        "versions": versions.iter().map(gv).collect::<Vec<_>>(),
        "preferredVersion": versions.first().map(gv).unwrap_or(Value::Null),
    })
}

fn resource_list(app: &App, group: &str, version: &str) -> Option<Value> {
    let types = types_in(app, group, version);
    if types.is_empty() {
        return None;
    }
    let mut resources = vec![];
    for t in &types {
        let mut verbs = vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        verbs.sort();
        resources.push(json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
            "kind": t.kind, "verbs": verbs, "shortNames": t.short_names,
            "categories": t.categories,
        }));
        if t.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", t.plural), "singularName": "",
                "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn openapi_path_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// One group-version's OpenAPI v3 document: per resource, an item path whose `patch`
/// carries the kind and a `fieldValidation` parameter (what kubectl looks for), and the
/// schemas of custom resources.
fn openapi_doc(app: &App, group: &str, version: &str) -> Option<Value> {
    let types = types_in(app, group, version);
    if types.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    for t in &types {
        let gvk = json!({"group": t.group, "version": version, "kind": t.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let op = |verb: &str| {
            json!({"operationId": format!("{verb}{}", t.kind), "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk, "parameters": params,
                "responses": {"200": {"description": "OK"}}})
        };
        let item = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{prefix}/{}/{{name}}", t.plural)
        };
        let collection = item.trim_end_matches("/{name}").to_string();
        paths.insert(item, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        paths.insert(collection, json!({"get": op("list"), "post": op("post")}));
        if let Some(s) = t.schemas.get(version) {
            let mut s = s.clone();
            s["x-kubernetes-group-version-kind"] = json!([gvk]);
            let rev: Vec<&str> = t.group.split('.').rev().collect();
            schemas.insert(format!("{}.{version}.{}", rev.join("."), t.kind), s);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn hash_of(v: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

pub fn serve(app: &App, segs: &[&str], _uri: &Uri) -> Option<Response> {
    let body = match segs {
        ["version"] => json!({
            "major": "1", "minor": "32", "gitVersion": "v1.32.0-kube-standin",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.0", "compiler": "gc",
            "platform": "linux/amd64",
        }),
        ["healthz" | "readyz" | "livez"] => {
            let mut r = Response::new(axum::body::Body::from("ok"));
            r.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("text/plain"),
            );
            return Some(r);
        }
        ["api"] => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": app.addr.to_string()}],
        }),
        ["apis"] => {
            let gs: Vec<Value> = groups(app)
                .iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, v)| group_json(g, v))
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
        }
        ["apis", g] => {
            let all = groups(app);
            let versions = all.get(*g)?;
            let mut gj = group_json(g, versions);
            gj["kind"] = json!("APIGroup");
            gj["apiVersion"] = json!("v1");
            gj
        }
        ["api", v] => resource_list(app, "", v)?,
        ["apis", g, v] => resource_list(app, g, v)?,
        ["openapi", "v3"] => {
            let mut paths = serde_json::Map::new();
            for (g, versions) in groups(app) {
                for v in versions {
                    if let Some(doc) = openapi_doc(app, &g, &v) {
                        let key = openapi_path_key(&g, &v);
                        paths.insert(
                            key.clone(),
                            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash_of(&doc))}),
                        );
                    }
                }
            }
            json!({"paths": paths})
        }
        ["openapi", "v3", "api", v] => openapi_doc(app, "", v)?,
        ["openapi", "v3", "apis", g, v] => openapi_doc(app, g, v)?,
        _ => return None,
    };
    Some(json_response(200, &body, &[]))
}
