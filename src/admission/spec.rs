//! An object's spec read into the typed API structs (`crate::api`), the same ones the
//! controllers read. serde is the only parser: a value of the wrong type is reported with
//! its field path (`spec.interval: invalid type: integer 5, expected a string`).
//!
//! Unknown fields are ignored, not refused: an API server prunes them from a structural
//! schema's objects before any webhook runs, and accepts the request.

use super::Kind;
use super::report::{FieldError, Problem};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

/// Reads `spec` (None or null when the object has none) as the typed spec `S` of `kind`.
/// Nulls inside it read as absent fields, as an API server drops them before the
/// webhooks (none of these fields is nullable).
pub fn read<S: DeserializeOwned>(kind: Kind, spec: Option<Value>) -> Result<S, FieldError> {
    let Some(mut spec) = spec.filter(|s| !s.is_null()) else {
        return Err(FieldError {
            path: "spec".into(),
            problem: Problem::Required(format!("an {kind} needs a spec")),
        });
    };
    drop_nulls(&mut spec);
    serde_path_to_error::deserialize(spec).map_err(|e| type_error(e.path(), &e.inner().to_string()))
}

/// Removes the null members of every object in `value`.
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(members) => {
            members.retain(|_, v| !v.is_null());
            members.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// serde's error at `path` (below `spec`) as a failure of that field. A missing field is
/// reported at its own path, as the API server reports one.
fn type_error(path: &serde_path_to_error::Path, message: &str) -> FieldError {
    let mut at = String::from("spec");
    for segment in path {
        match segment {
            Segment::Seq { index } => at.push_str(&format!("[{index}]")),
            Segment::Map { key } if !is_plain_key(key) => at.push_str(&format!("[{key:?}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                at.push('.');
                at.push_str(key);
            }
            Segment::Unknown => at.push_str(".?"),
        }
    }
    // serde words a missing field as "missing field `name`" at the path of its parent.
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return FieldError {
            path: format!("{at}.{field}"),
            problem: Problem::Required(String::new()),
        };
    }
    FieldError {
        path: at,
        problem: Problem::WrongType(plain_quotes(message)),
    }
}

/// A map key that reads unambiguously after a `.` (label keys like `a.io/b` do not).
fn is_plain_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric())
}

/// serde quotes values and names in backticks; kubectl users read Kubernetes' style:
/// names and strings in double quotes, numbers and booleans bare
/// (``integer `5` `` becomes `integer 5`, ``variant `up` `` becomes `variant "up"`).
fn plain_quotes(message: &str) -> String {
    let mut out = String::new();
    let mut parts = message.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    // Every other part was between backticks.
    let mut quoted = true;
    for part in parts {
        let bare = part.parse::<f64>().is_ok() || part == "true" || part == "false";
        if quoted && !bare {
            out.push_str(&format!("{part:?}"));
        } else {
            out.push_str(part);
        }
        quoted = !quoted;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ImagePolicySpec, ImageRepositorySpec};
    use serde_json::json;

    fn repo(spec: Value) -> Result<ImageRepositorySpec, String> {
        read(Kind::ImageRepository, Some(spec)).map_err(|e| e.to_string())
    }

    fn policy(spec: Value) -> Result<ImagePolicySpec, String> {
        read(Kind::ImagePolicy, Some(spec)).map_err(|e| e.to_string())
    }

    #[test]
    fn a_wrong_type_names_its_field_path_and_what_was_expected() {
        let err = repo(json!({"image": "a", "interval": 5})).unwrap_err();
        assert_eq!(
            err,
            "spec.interval: invalid type: integer 5, expected a string"
        );
        let err =
            repo(json!({"image": "a", "interval": "5m", "exclusionList": ["a", 7]})).unwrap_err();
        assert_eq!(
            err,
            "spec.exclusionList[1]: invalid type: integer 7, expected a string"
        );
        let err = repo(json!({"image": "a", "interval": "5m", "suspend": "yes"})).unwrap_err();
        assert_eq!(
            err,
            "spec.suspend: invalid type: string \"yes\", expected a boolean"
        );
    }

    #[test]
    fn an_unknown_value_of_an_enumerated_field_lists_the_known_ones() {
        let err = repo(json!({"image": "a", "interval": "5m", "provider": "ibm"})).unwrap_err();
        assert_eq!(
            err,
            "spec.provider: unknown variant \"ibm\", expected one of \"generic\", \"aws\", \"azure\", \"gcp\""
        );
    }

    #[test]
    fn a_missing_field_is_a_required_value_at_its_own_path() {
        assert_eq!(
            repo(json!({"image": "a"})).unwrap_err(),
            "spec.interval: Required value"
        );
        let err = policy(json!({"imageRepositoryRef": {}, "policy": {}})).unwrap_err();
        assert_eq!(err, "spec.imageRepositoryRef.name: Required value");
    }

    #[test]
    fn map_keys_with_dots_or_slashes_are_written_in_brackets() {
        let access =
            json!({"namespaceSelectors": [{"matchLabels": {"kubernetes.io/metadata.name": 1}}]});
        let err = repo(json!({"image": "a", "interval": "5m", "accessFrom": access})).unwrap_err();
        assert!(
            err.starts_with(
                "spec.accessFrom.namespaceSelectors[0].matchLabels[\"kubernetes.io/metadata.name\"]: invalid type: integer 1"
            ),
            "{err}"
        );
    }

    #[test]
    fn nulls_read_as_absent_fields() {
        let spec = repo(json!({"image": "a", "interval": "5m", "suspend": null, "timeout": null}))
            .unwrap();
        assert!(!spec.suspend && spec.timeout.is_none());
        assert_eq!(
            repo(json!({"image": null, "interval": "5m"})).unwrap_err(),
            "spec.image: Required value"
        );
    }

    #[test]
    fn unknown_fields_are_ignored_as_the_api_server_prunes_them() {
        let spec = repo(json!({"image": "a", "interval": "5m", "fromTheFuture": {"x": 1}}));
        assert!(spec.is_ok(), "{spec:?}");
    }

    #[test]
    fn a_missing_or_non_object_spec_is_reported_at_spec() {
        let err = read::<ImageRepositorySpec>(Kind::ImageRepository, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec: Required value: an ImageRepository needs a spec"
        );
        let err = repo(json!("yes")).unwrap_err();
        assert!(
            err.starts_with("spec: invalid type: string \"yes\", expected "),
            "{err}"
        );
    }
}
