//! PATCH bodies: JSON merge patch, JSON Patch (with the API server's `test` rule),
//! an approximation of strategic merge patch for built-in kinds, and a minimal
//! server-side apply.

use serde_json::{Map, Value};

/// RFC 7386 merge patch.
pub fn merge(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// RFC 6902 JSON Patch. As in kube-apiserver, `test` of a missing path against `null`
/// passes (kube-runtime's finalizer helper relies on it).
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON Patch must be a JSON array of operations")?;
    for op in ops {
        if op["op"] == "test" && op["value"].is_null() {
            let path = op["path"].as_str().unwrap_or("");
            match doc.pointer(path) {
                None | Some(Value::Null) => continue,
                Some(other) => {
                    return Err(format!(
                        "testing value {path} failed: expected null, found {other}"
                    ));
                }
            }
        }
        let one: json_patch::Patch = serde_json::from_value(Value::Array(vec![op.clone()]))
            .map_err(|e| format!("invalid JSON Patch operation {op}: {e}"))?;
        json_patch::patch(doc, &one).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Strategic merge patch, approximated: a merge patch in which lists replace, `$patch:
/// delete` removes a map, `$patch: replace` replaces it, and the `$setElementOrder/`,
/// `$retainKeys` and `$deleteFromPrimitiveList/` directives are ignored. Enough for what
/// kubectl sends for Secrets, Namespaces, ConfigMaps and the like.
pub fn strategic_merge(doc: &mut Value, patch: &Value) {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut p = p.clone();
                p.remove("$patch");
                *d = p;
                return;
            }
            for (k, v) in p {
                if k.starts_with("$setElementOrder/")
                    || k.starts_with("$deleteFromPrimitiveList/")
                    || k == "$retainKeys"
                    || k == "$patch"
                {
                    continue;
                }
                if v.is_null() || v.get("$patch").and_then(Value::as_str) == Some("delete") {
                    d.remove(k);
                    continue;
                }
                match d.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        strategic_merge(existing, v)
                    }
                    _ => {
                        let mut fresh = Value::Object(Map::new());
                        if v.is_object() {
                            strategic_merge(&mut fresh, v);
                            d.insert(k.clone(), fresh);
                        } else {
                            d.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
        (doc, patch) => *doc = patch.clone(),
    }
}

/// Minimal server-side apply: removes what this manager applied before and no longer
/// applies, then deep-merges the new configuration (maps merge, lists replace).
pub fn apply(current: &mut Value, previous: Option<&Value>, config: &Value) {
    if let Some(prev) = previous {
        remove_dropped(current, prev, config);
    }
    deep_merge(current, config);
}

fn remove_dropped(current: &mut Value, prev: &Value, config: &Value) {
    let (Value::Object(cur), Value::Object(prev)) = (current, prev) else {
        return;
    };
    for (k, pv) in prev {
        match config.get(k) {
            None => {
                cur.remove(k);
            }
            Some(cv) if pv.is_object() && cv.is_object() => {
                if let Some(c) = cur.get_mut(k) {
                    remove_dropped(c, pv, cv);
                }
            }
            Some(_) => {}
        }
    }
}

fn deep_merge(current: &mut Value, config: &Value) {
    match (current, config) {
        (Value::Object(cur), Value::Object(cfg)) => {
            for (k, v) in cfg {
                match cur.get_mut(k) {
                    Some(c) if c.is_object() && v.is_object() => deep_merge(c, v),
                    _ => {
                        cur.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (cur, cfg) => *cur = cfg.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_test_of_a_missing_path_against_null_passes() {
        let mut doc = json!({"metadata": {"name": "a"}});
        let patch = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}
        ]);
        json_patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["f"]));
    }

    #[test]
    fn a_failing_test_stops_the_patch() {
        let mut doc = json!({"metadata": {"finalizers": ["x"]}});
        let patch = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "f"}
        ]);
        assert!(json_patch(&mut doc, &patch).is_err());
        assert_eq!(doc["metadata"]["finalizers"], json!(["x"]));
    }

    #[test]
    fn apply_drops_fields_the_manager_no_longer_sets() {
        let mut cur = json!({"spec": {"a": 1, "b": 2, "other": 3}});
        let prev = json!({"spec": {"a": 1, "b": 2}});
        apply(&mut cur, Some(&prev), &json!({"spec": {"a": 5}}));
        assert_eq!(cur, json!({"spec": {"a": 5, "other": 3}}));
    }

    #[test]
    fn strategic_merge_ignores_directives() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "data": {"x": "eA=="}});
        let patch = json!({"$setElementOrder/finalizers": [], "metadata": {"labels": {"a": null, "b": "2"}}});
        strategic_merge(&mut doc, &patch);
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"b": "2"}}, "data": {"x": "eA=="}})
        );
    }
}
