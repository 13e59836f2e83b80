//! The facts of a CustomResourceDefinition that compatibility with Flux depends on, one
//! line each: names, scope, printer columns, and for every schema node of the served
//! `v1` version its type, enum, default, pattern, size limits and CEL rules. The project
//! keeps Flux's facts in `tests/data/flux-v1-crd-facts.txt` (checked against Flux's own
//! CRDs, which `make control-plane` fetches with Flux's controller) and checks that its
//! own CRDs state every one of them.

use serde_json::Value;
use std::collections::BTreeSet;

/// Every fact of `crd` (a CRD as JSON), as `CRD-NAME WHERE KEY JSON` lines.
pub fn facts(crd: &Value) -> BTreeSet<String> {
    let name = crd["metadata"]["name"].as_str().unwrap_or("?").to_string();
    let mut out = BTreeSet::new();
    let mut add = |path: &str, key: &str, value: &Value| {
        out.insert(format!("{name} {path} {key} {value}"));
    };
    add("names", "shortNames", &crd["spec"]["names"]["shortNames"]);
    // Categories are a set others may add to (`kubectl get fluxcd-images`): one fact each.
    for category in crd["spec"]["names"]["categories"]
        .as_array()
        .into_iter()
        .flatten()
    {
        add("names", "category", category);
    }
    add("spec", "scope", &crd["spec"]["scope"]);
    let Some(v1) = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "v1"))
    else {
        add("versions", "v1", &Value::Null);
        return out;
    };
    add(
        "v1",
        "additionalPrinterColumns",
        &v1["additionalPrinterColumns"],
    );
    let mut nodes = Vec::new();
    walk(&v1["schema"]["openAPIV3Schema"], "v1", &mut nodes);
    for (path, key, value) in nodes {
        add(&path, key, &value);
    }
    out
}

const KEYS: [&str; 7] = [
    "type",
    "enum",
    "default",
    "pattern",
    "maxItems",
    "maxLength",
    "x-kubernetes-validations",
];

fn walk(node: &Value, path: &str, out: &mut Vec<(String, &'static str, Value)>) {
    out.push((path.to_string(), "exists", Value::Bool(true)));
    for key in KEYS {
        if let Some(value) = node.get(key) {
            let value = if key == "x-kubernetes-validations" {
                // The rules, not the messages, which each project words its own way.
                Value::Array(
                    value
                        .as_array()
                        .map(|rules| rules.iter().map(|r| r["rule"].clone()).collect())
                        .unwrap_or_default(),
                )
            } else {
                value.clone()
            };
            out.push((path.to_string(), key, value));
        }
    }
    if path.ends_with(".metadata") {
        return;
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(child, &format!("{path}.{name}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key).filter(|c| c.is_object()) {
            walk(child, &format!("{path}.{key}"), out);
        }
    }
}
