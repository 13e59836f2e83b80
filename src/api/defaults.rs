//! Defaults, defined once.
//!
//! The ones a schema can express are written into the CRDs as `default:` (v1beta2 and v1,
//! as Flux has them; v1beta1 has none, as the seed), so the API server fills them in
//! before any webhook sees the object; `validate -o yaml` applies the same table offline.
//! What no schema can default, because it follows another field, is left to the mutating
//! webhook: [`timeout_for_interval`].

use super::{
    DEFAULT_EXCLUSION_LIST, DigestReflectionPolicy, Kind, Provider, SortOrder,
    format_duration_without_hours, parse_duration, uses_hours,
};
use serde_json::{Value, json};

/// One default of the CRD schema: the field's path below `spec`, and its value.
pub struct SchemaDefault {
    /// Object keys below `spec`, e.g. `["policy", "numerical", "order"]`.
    pub path: &'static [&'static str],
    /// The value the field gets when it is absent.
    pub value: fn() -> Value,
}

const IMAGE_REPOSITORY: &[SchemaDefault] = &[
    SchemaDefault {
        path: &["exclusionList"],
        value: || json!(DEFAULT_EXCLUSION_LIST),
    },
    SchemaDefault {
        path: &["provider"],
        value: || json!(Provider::default()),
    },
];

const IMAGE_POLICY: &[SchemaDefault] = &[
    SchemaDefault {
        path: &["digestReflectionPolicy"],
        value: || json!(DigestReflectionPolicy::default()),
    },
    SchemaDefault {
        path: &["policy", "alphabetical", "order"],
        value: || json!(SortOrder::default()),
    },
    SchemaDefault {
        path: &["policy", "numerical", "order"],
        value: || json!(SortOrder::default()),
    },
];

/// The schema defaults of `kind` in API `version` (none in v1beta1).
pub fn schema_defaults(kind: Kind, version: &str) -> &'static [SchemaDefault] {
    if version == "v1beta1" {
        return &[];
    }
    match kind {
        Kind::ImageRepository => IMAGE_REPOSITORY,
        Kind::ImagePolicy => IMAGE_POLICY,
    }
}

/// Applies the schema defaults to a whole `object` as an API server does: a field that is
/// absent (or null) gets its default when the object holding it exists.
pub fn apply_schema_defaults(kind: Kind, version: &str, object: &mut Value) {
    for default in schema_defaults(kind, version) {
        let Some((field, parents)) = default.path.split_last() else {
            continue;
        };
        let mut holder = object.get_mut("spec");
        for key in parents {
            holder = holder.and_then(|h| h.get_mut(*key));
        }
        if let Some(Value::Object(holder)) = holder
            && holder.get(*field).is_none_or(Value::is_null)
        {
            holder.insert(field.to_string(), (default.value)());
        }
    }
}

/// The timeout of an ImageRepository without `spec.timeout`: its interval as written, or
/// in minutes when the interval has hours, since the timeout's pattern has no `h` unit
/// (`2h` gives `120m`). None when the interval does not parse (validation reports it).
pub fn timeout_for_interval(interval: &str) -> Option<String> {
    let duration = parse_duration(interval).ok()?;
    if uses_hours(interval) {
        Some(format_duration_without_hours(duration))
    } else {
        Some(interval.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1beta1_has_no_schema_defaults() {
        for kind in [Kind::ImageRepository, Kind::ImagePolicy] {
            assert!(schema_defaults(kind, "v1beta1").is_empty());
            assert!(!schema_defaults(kind, "v1beta2").is_empty());
        }
    }

    #[test]
    fn schema_defaults_fill_absent_and_null_fields_whose_holder_exists() {
        let mut repo = json!({"spec": {"image": "a", "provider": null}});
        apply_schema_defaults(Kind::ImageRepository, "v1", &mut repo);
        assert_eq!(
            repo["spec"],
            json!({"image": "a", "provider": "generic", "exclusionList": ["^.*\\.sig$"]})
        );
        let mut policy = json!({"spec": {"policy": {"numerical": {}}}});
        apply_schema_defaults(Kind::ImagePolicy, "v1", &mut policy);
        assert_eq!(
            policy["spec"],
            json!({"policy": {"numerical": {"order": "asc"}}, "digestReflectionPolicy": "Never"})
        );
    }

    #[test]
    fn schema_defaults_never_change_what_is_set() {
        let spec = json!({"exclusionList": [], "provider": "aws"});
        let mut repo = json!({ "spec": spec.clone() });
        apply_schema_defaults(Kind::ImageRepository, "v1", &mut repo);
        assert_eq!(repo["spec"], spec);
        let mut no_spec = json!({"metadata": {}});
        apply_schema_defaults(Kind::ImagePolicy, "v1", &mut no_spec);
        assert_eq!(no_spec, json!({"metadata": {}}));
    }

    #[test]
    fn the_timeout_follows_the_interval_in_minutes_when_it_has_hours() {
        assert_eq!(timeout_for_interval("10m").as_deref(), Some("10m"));
        assert_eq!(timeout_for_interval("1m30s").as_deref(), Some("1m30s"));
        assert_eq!(timeout_for_interval("2h").as_deref(), Some("120m"));
        assert_eq!(timeout_for_interval("1.5h").as_deref(), Some("90m"));
        assert_eq!(timeout_for_interval("ten minutes"), None);
    }
}
