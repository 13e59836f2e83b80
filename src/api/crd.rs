//! The CustomResourceDefinitions, generated from the Rust types: one superset schema
//! served as `v1beta1`, `v1beta2` and `v1` (conversion `None`, `v1` stored), with the
//! schema details schemars cannot express (patterns, defaults, CEL rules) added here.

use super::defaults::schema_defaults;
use super::{
    ImagePolicy, ImageRepository, Kind, MAX_EXCLUSION_LIST, SERVED_VERSIONS, STORAGE_VERSION,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

/// Flux's pattern for intervals.
pub const INTERVAL_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// Flux's pattern for timeouts (no hours).
pub const TIMEOUT_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$";

/// Both CRDs, ImageRepository first.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        multi_version(ImageRepository::crd(), image_repository_schema),
        multi_version(ImagePolicy::crd(), image_policy_schema),
    ]
}

/// Both CRDs as one multi-document YAML stream (what `image-reflector crds` prints and
/// `manifests/crds/` holds).
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

/// The files of `manifests/crds/`: (file name, YAML) for each CRD.
pub fn crd_files() -> Result<Vec<(&'static str, String)>, serde_yaml_ng::Error> {
    let crds = all_crds();
    let names = ["imagerepositories.yaml", "imagepolicies.yaml"];
    names
        .into_iter()
        .zip(crds)
        .map(|(name, crd)| Ok((name, format!("---\n{}", serde_yaml_ng::to_string(&crd)?))))
        .collect()
}

/// Walks `path` (object keys) inside `root`, which must exist.
fn at<'a>(root: &'a mut Value, path: &[&str]) -> &'a mut Value {
    let mut cur = root;
    for key in path {
        cur = &mut cur[*key];
    }
    cur
}

fn set(root: &mut Value, path: &[&str], key: &str, value: Value) {
    let target = at(root, path);
    assert!(
        target.is_object(),
        "generated schema lacks {}: the Rust types and crd.rs disagree",
        path.join(".")
    );
    target[key] = value;
}

/// [`set`] on the schema of `spec.FIELD...` (`field` the path below `spec`'s properties).
fn set_spec(root: &mut Value, field: &[&str], key: &str, value: Value) {
    let path = [&["properties", "spec", "properties"][..], field].concat();
    set(root, &path, key, value);
}

/// The defaults of [`super::defaults`] as `default:` of the fields they fill.
fn spec_defaults(schema: &mut Value, kind: Kind, version: &str) {
    for default in schema_defaults(kind, version) {
        // Each key below `spec` is one of the properties of the schema above it.
        let mut field = Vec::new();
        for key in default.path {
            if !field.is_empty() {
                field.push("properties");
            }
            field.push(*key);
        }
        set_spec(schema, &field, "default", (default.value)());
    }
}

/// What both kinds' status has as Flux has it: `observedGeneration` defaulting to -1 and
/// metav1's condition constraints.
fn status_schema(schema: &mut Value) {
    set(
        schema,
        &["properties", "status"],
        "default",
        json!({"observedGeneration": -1}),
    );
    condition_schema(schema);
}

/// Flux's (metav1) constraints on `status.conditions[]` that k8s-openapi's schema lacks.
fn condition_schema(schema: &mut Value) {
    let item = [
        "properties",
        "status",
        "properties",
        "conditions",
        "items",
        "properties",
    ];
    let field = |f: &'static str| [&item[..], &[f]].concat();
    set(
        schema,
        &field("status"),
        "enum",
        json!(["True", "False", "Unknown"]),
    );
    set(schema, &field("message"), "maxLength", json!(32768));
    set(schema, &field("reason"), "maxLength", json!(1024));
    set(schema, &field("reason"), "minLength", json!(1));
    set(
        schema,
        &field("reason"),
        "pattern",
        json!(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
    );
    set(schema, &field("type"), "maxLength", json!(316));
    set(
        schema,
        &field("type"),
        "pattern",
        json!(
            r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        ),
    );
    set(schema, &field("observedGeneration"), "minimum", json!(0));
}

fn image_repository_schema(schema: &mut Value, version: &str) {
    set_spec(schema, &["interval"], "pattern", json!(INTERVAL_PATTERN));
    set_spec(schema, &["timeout"], "pattern", json!(TIMEOUT_PATTERN));
    set_spec(
        schema,
        &["exclusionList"],
        "maxItems",
        json!(MAX_EXCLUSION_LIST),
    );
    set_spec(schema, &["serviceAccountName"], "maxLength", json!(253));
    spec_defaults(schema, Kind::ImageRepository, version);
    status_schema(schema);
}

fn image_policy_schema(schema: &mut Value, version: &str) {
    set_spec(schema, &["interval"], "pattern", json!(INTERVAL_PATTERN));
    spec_defaults(schema, Kind::ImagePolicy, version);
    set(
        schema,
        &["properties", "spec"],
        "x-kubernetes-validations",
        json!([
            {
                "message": "spec.interval is only accepted when spec.digestReflectionPolicy is set to 'Always'",
                "rule": "!has(self.interval) || (has(self.digestReflectionPolicy) && self.digestReflectionPolicy == 'Always')"
            },
            {
                "message": "spec.interval must be set when spec.digestReflectionPolicy is set to 'Always'",
                "rule": "has(self.interval) || !has(self.digestReflectionPolicy) || self.digestReflectionPolicy != 'Always'"
            }
        ]),
    );
    status_schema(schema);
}

/// Turns the derive's single `v1` version into the three served versions, each with the
/// superset schema and the extras `extra` adds.
fn multi_version(
    crd: CustomResourceDefinition,
    extra: fn(&mut Value, &str),
) -> CustomResourceDefinition {
    let mut value = serde_json::to_value(&crd).expect("a generated CRD serialises");
    let template = value["spec"]["versions"][0].clone();
    let versions: Vec<Value> = SERVED_VERSIONS
        .iter()
        .map(|version| {
            let mut v = template.clone();
            v["name"] = json!(version);
            v["served"] = json!(true);
            v["storage"] = json!(*version == STORAGE_VERSION);
            let schema = &mut v["schema"]["openAPIV3Schema"];
            schema["properties"]["apiVersion"] = json!({"type": "string"});
            schema["properties"]["kind"] = json!({"type": "string"});
            schema["properties"]["metadata"] = json!({"type": "object"});
            extra(schema, version);
            v
        })
        .collect();
    value["spec"]["versions"] = Value::Array(versions);
    value["spec"]["conversion"] = json!({"strategy": "None"});
    serde_json::from_value(value).expect("the edited CRD is still a CRD")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_three_versions_and_stores_v1() {
        for crd in all_crds() {
            let names: Vec<_> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
            assert_eq!(names, ["v1beta1", "v1beta2", "v1"]);
            let stored: Vec<_> = crd
                .spec
                .versions
                .iter()
                .filter(|v| v.storage)
                .map(|v| v.name.as_str())
                .collect();
            assert_eq!(stored, ["v1"]);
            assert!(crd.spec.versions.iter().all(|v| v.served));
            assert!(crd.spec.versions.iter().all(|v| {
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            }));
        }
    }

    #[test]
    fn names_match_flux() {
        let crds = all_crds();
        assert_eq!(
            crds[0].metadata.name.as_deref(),
            Some("imagerepositories.image.toolkit.fluxcd.io")
        );
        assert_eq!(
            crds[0].spec.names.short_names,
            Some(vec!["imgrepo".to_string(), "imagerepo".to_string()])
        );
        assert_eq!(
            crds[1].metadata.name.as_deref(),
            Some("imagepolicies.image.toolkit.fluxcd.io")
        );
        assert_eq!(
            crds[1].spec.names.short_names,
            Some(vec!["imgpol".to_string(), "imagepol".to_string()])
        );
        for crd in &crds {
            assert!(
                crd.spec
                    .names
                    .categories
                    .as_ref()
                    .unwrap()
                    .contains(&"fluxcd-images".to_string())
            );
        }
    }

    fn manifest_dir() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn committed_crds_match_the_generated_ones() {
        for (file, yaml) in crd_files().unwrap() {
            let path = manifest_dir().join("manifests/crds").join(file);
            let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("reading {}: {e}; run `make manifests`", path.display())
            });
            assert!(
                committed == yaml,
                "{} differs from what the Rust types generate; run `make manifests` and commit",
                path.display()
            );
        }
    }

    #[test]
    fn v1beta1_has_every_field_but_leaves_defaults_to_v1beta2_and_v1() {
        let crd = serde_json::to_value(&all_crds()[0]).unwrap();
        let spec = |i: usize| {
            crd["spec"]["versions"][i]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"].clone()
        };
        assert!(spec(0)["exclusionList"].get("default").is_none());
        assert_eq!(spec(1)["exclusionList"]["default"], json!(["^.*\\.sig$"]));
        let keys = |v: Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(spec(0)), keys(spec(2)));
    }

    #[test]
    fn yaml_output_parses_back() {
        let yaml = crds_yaml().unwrap();
        let docs: Vec<_> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .collect();
        assert_eq!(docs.len(), 2);
        for doc in docs {
            let _: CustomResourceDefinition = serde_yaml_ng::from_str(doc).unwrap();
        }
    }
}
