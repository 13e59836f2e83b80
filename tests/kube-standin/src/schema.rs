//! CustomResourceDefinitions → resource types, and the structural-schema steps the API
//! server runs on custom resources: pruning, defaults and OpenAPI validation.
//!
//! Applied: `type` (incl. `x-kubernetes-int-or-string`), `nullable`, `required`, `enum`,
//! `pattern`, `minLength`/`maxLength`, `minimum`/`maximum` (and exclusive), `minItems`/
//! `maxItems`, `minProperties`/`maxProperties`, `format: date-time`, and the object name
//! (DNS-1123 subdomain). Skipped: CEL (`x-kubernetes-validations`), other `format`s,
//! `anyOf`/`oneOf`/`allOf`/`not`, `uniqueItems`, `x-kubernetes-list-type` uniqueness.

use crate::store::{ResourceType, View};
use regex::Regex;
use serde_json::{Map, Value, json};
use std::cmp::Ordering;
use std::collections::HashMap;

/// Kubernetes version priority: GA before beta before alpha, higher numbers first, then
/// non-Kubernetes-like names alphabetically.
pub fn version_order(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let major: u64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((3, major, 0));
        }
        for (pre, rank) in [("beta", 2u8), ("alpha", 1u8)] {
            if let Some(n) = tail.strip_prefix(pre) {
                return Some((rank, major, n.parse().ok()?));
            }
        }
        None
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// Reads an `apiextensions.k8s.io/v1` CustomResourceDefinition into a resource type.
pub fn crd_to_type(crd: &Value) -> Result<ResourceType, String> {
    let spec = &crd["spec"];
    let text = |v: &Value, what: &str| -> Result<String, String> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("CustomResourceDefinition is missing {what}"))
    };
    let group = text(&spec["group"], "spec.group")?;
    let names = &spec["names"];
    let plural = text(&names["plural"], "spec.names.plural")?;
    let kind = text(&names["kind"], "spec.names.kind")?;
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let expected = format!("{plural}.{group}");
    if crd["metadata"]["name"].as_str() != Some(expected.as_str()) {
        return Err(format!(
            "metadata.name: Invalid value: {}: must be spec.names.plural+\".\"+spec.group ({expected})",
            crd["metadata"]["name"]
        ));
    }
    if spec["conversion"]["strategy"] == "Webhook" {
        tracing::warn!(
            crd = %expected,
            "conversion webhooks are not supported: every served version is served from one store with apiVersion rewritten"
        );
    }
    let scope = spec["scope"].as_str().unwrap_or("Namespaced");
    let mut versions = Vec::new();
    let mut schemas = HashMap::new();
    let mut printer_columns = HashMap::new();
    let mut status_subresource = false;
    for v in spec["versions"].as_array().into_iter().flatten() {
        let name = text(&v["name"], "spec.versions[].name")?;
        if v["served"].as_bool() != Some(true) {
            continue;
        }
        if let Some(s) = v["schema"].get("openAPIV3Schema") {
            schemas.insert(name.clone(), s.clone());
        }
        if let Some(cols) = v["additionalPrinterColumns"].as_array() {
            printer_columns.insert(name.clone(), cols.clone());
        }
        if v["subresources"].get("status").is_some() {
            status_subresource = true;
        }
        versions.push(name);
    }
    if versions.is_empty() {
        return Err(format!("{expected}: spec.versions has no served version"));
    }
    versions.sort_by(|a, b| version_order(a, b));
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    Ok(ResourceType {
        group,
        versions,
        singular,
        kind,
        namespaced: scope != "Cluster",
        short_names: strs(&names["shortNames"]),
        categories: strs(&names["categories"]),
        status_subresource,
        schemas,
        printer_columns,
        store: expected,
        view: View::Plain,
        custom: true,
        plural,
    })
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
}

/// Drops fields the schema does not declare; returns their paths (for fieldValidation).
pub fn prune(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match value {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                let root = path.is_empty();
                let keep_unknown = preserves_unknown(schema);
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    match props.get(&k) {
                        Some(sub) => {
                            if let Some(v) = map.get_mut(&k) {
                                prune(sub, v, &join(&k), unknown);
                            }
                        }
                        None if keep_unknown => {}
                        None => {
                            map.remove(&k);
                            unknown.push(join(&k));
                        }
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, v) in map.iter_mut() {
                    prune(ap, v, &join(k), unknown);
                }
            } else if schema["type"] == "object" && !preserves_unknown(schema) {
                let root = path.is_empty();
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    map.remove(&k);
                    unknown.push(join(&k));
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    prune(item_schema, v, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Applies OpenAPI `default`s to absent fields, recursively.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, sub) in props {
                    if !map.contains_key(k)
                        && let Some(d) = sub.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                    if let Some(v) = map.get_mut(k) {
                        apply_defaults(sub, v);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for v in map.values_mut() {
                    apply_defaults(ap, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for v in items.iter_mut() {
                    apply_defaults(item_schema, v);
                }
            }
        }
        _ => {}
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".to_string(),
        Value::Array(_) => "\"array\"".to_string(),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// OpenAPI validation; returns kube-apiserver-worded causes (`spec.x: Invalid value: ...`).
pub fn validate(schema: &Value, value: &Value, path: &str, errs: &mut Vec<String>) {
    let here = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if schema["nullable"].as_bool() != Some(true) && !path.is_empty() {
            errs.push(format!(
                "{here}: Invalid value: \"null\": {here} in body must be of type {}: \"null\"",
                schema["type"].as_str().unwrap_or("object")
            ));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"].as_bool() == Some(true) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errs.push(format!(
                "{here}: Invalid value: {}: {here} in body must be of type int-or-string: {:?}",
                short(value),
                type_name(value)
            ));
        }
        return;
    }
    if let Some(ty) = schema["type"].as_str() {
        let actual = type_name(value);
        let ok = actual == ty || (ty == "number" && actual == "integer");
        if !ok {
            errs.push(format!(
                "{here}: Invalid value: {}: {here} in body must be of type {ty}: {actual:?}",
                short(value)
            ));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        let list: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        errs.push(format!(
            "{here}: Unsupported value: {}: supported values: {}",
            value,
            list.join(", ")
        ));
    }
    match value {
        Value::String(s) => {
            if let Some(p) = schema["pattern"].as_str() {
                match Regex::new(p) {
                    Ok(re) if !re.is_match(s) => errs.push(format!(
                        "{here}: Invalid value: {s:?}: {here} in body should match '{p}'"
                    )),
                    Ok(_) => {}
                    Err(e) => errs.push(format!("{here}: Invalid value: {p:?}: pattern: {e}")),
                }
            }
            let len = s.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64().filter(|m| len > *m) {
                errs.push(format!(
                    "{here}: Too long: may not be more than {max} bytes"
                ));
            }
            if let Some(min) = schema["minLength"].as_u64().filter(|m| len < *m) {
                errs.push(format!(
                    "{here}: Invalid value: {s:?}: {here} in body should be at least {min} chars long"
                ));
            }
            if schema["format"] == "date-time"
                && jiff::Timestamp::strptime("%+", s).is_err()
                && s.parse::<jiff::Timestamp>().is_err()
            {
                errs.push(format!(
                    "{here}: Invalid value: {s:?}: {here} in body must be of type date-time: {s:?}"
                ));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema["minimum"].as_f64() {
                let excl = schema["exclusiveMinimum"].as_bool() == Some(true);
                if x < min || (excl && x == min) {
                    let rel = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    errs.push(format!(
                        "{here}: Invalid value: {n}: {here} in body should be {rel} {min}"
                    ));
                }
            }
            if let Some(max) = schema["maximum"].as_f64() {
                let excl = schema["exclusiveMaximum"].as_bool() == Some(true);
                if x > max || (excl && x == max) {
                    let rel = if excl {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    errs.push(format!(
                        "{here}: Invalid value: {n}: {here} in body should be {rel} {max}"
                    ));
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"]
                .as_u64()
                .filter(|m| items.len() as u64 > *m)
            {
                errs.push(format!(
                    "{here}: Too many: {}: must have at most {max} items",
                    items.len()
                ));
            }
            if let Some(min) = schema["minItems"]
                .as_u64()
                .filter(|m| (items.len() as u64) < *m)
            {
                errs.push(format!(
                    "{here}: Invalid value: {}: {here} in body should have at least {min} items",
                    items.len()
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    validate(item_schema, v, &format!("{path}[{i}]"), errs);
                }
            }
        }
        Value::Object(map) => validate_object(schema, map, path, errs),
        _ => {}
    }
}

fn validate_object(schema: &Value, map: &Map<String, Value>, path: &str, errs: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    for req in schema["required"].as_array().into_iter().flatten() {
        if let Some(k) = req.as_str()
            && !map.contains_key(k)
        {
            errs.push(format!("{}: Required value", join(k)));
        }
    }
    let here = if path.is_empty() { "<root>" } else { path };
    if let Some(max) = schema["maxProperties"]
        .as_u64()
        .filter(|m| map.len() as u64 > *m)
    {
        errs.push(format!(
            "{here}: Too many: {}: must have at most {max} items",
            map.len()
        ));
    }
    if let Some(min) = schema["minProperties"]
        .as_u64()
        .filter(|m| (map.len() as u64) < *m)
    {
        errs.push(format!(
            "{here}: Invalid value: {}: {here} in body should have at least {min} properties",
            map.len()
        ));
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in map {
            if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(sub) = props.get(k) {
                validate(sub, v, &join(k), errs);
            }
        }
    } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        for (k, v) in map {
            validate(ap, v, &join(k), errs);
        }
    }
}

/// DNS-1123 subdomain check for object names, as the API server does for custom resources.
pub fn validate_name(name: &str) -> Option<String> {
    let re =
        Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").ok()?;
    if name.len() > 253 || !re.is_match(name) {
        return Some(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ));
    }
    None
}

/// Minimal stand-in of the schema for built-ins' OpenAPI documents.
pub fn opaque_schema() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_versions_as_kubernetes_does() {
        let mut v = vec!["v1beta1", "v1", "v1alpha1", "v1beta2", "v2", "foo"];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(v, vec!["v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }

    #[test]
    fn prunes_undeclared_fields_and_reports_their_paths() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"a": {"type": "string"}}}}});
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"a": "1", "b": 2}, "extra": true});
        let mut unknown = vec![];
        prune(&schema, &mut obj, "", &mut unknown);
        assert_eq!(obj["spec"], json!({"a": "1"}));
        assert!(obj.get("extra").is_none());
        assert_eq!(unknown, vec!["extra".to_string(), "spec.b".to_string()]);
    }

    #[test]
    fn applies_nested_defaults() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "default": {}, "properties": {"p": {"type": "string", "default": "generic"}}}}});
        let mut obj = json!({});
        apply_defaults(&schema, &mut obj);
        assert_eq!(obj, json!({"spec": {"p": "generic"}}));
    }

    #[test]
    fn reports_pattern_enum_and_required_failures() {
        let schema = json!({"type": "object", "required": ["a"], "properties": {
            "b": {"type": "string", "pattern": "^[0-9]+s$"},
            "c": {"type": "string", "enum": ["x", "y"]}}});
        let mut errs = vec![];
        validate(&schema, &json!({"b": "ten", "c": "z"}), "spec", &mut errs);
        assert_eq!(
            errs,
            vec![
                "spec.a: Required value".to_string(),
                "spec.b: Invalid value: \"ten\": spec.b in body should match '^[0-9]+s$'"
                    .to_string(),
                "spec.c: Unsupported value: \"z\": supported values: \"x\", \"y\"".to_string(),
            ]
        );
    }
}
