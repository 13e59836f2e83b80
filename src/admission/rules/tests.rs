use super::*;
use crate::api::{AccessFrom, ImageRepository, ImageRepositorySpec, NamespaceSelector};
use std::collections::BTreeMap;
use std::sync::Arc;

fn repo(spec: Value) -> Value {
    json!({"apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageRepository",
           "metadata": {"name": "podinfo", "namespace": "flux-system"}, "spec": spec})
}

fn policy(spec: Value) -> Value {
    json!({"apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
           "metadata": {"name": "podinfo", "namespace": "flux-system"}, "spec": spec})
}

fn check_repo(spec: Value) -> Verdict {
    validate(
        Kind::ImageRepository,
        "v1",
        "flux-system",
        &repo(spec),
        Context::default(),
    )
}

fn check_policy(spec: Value) -> Verdict {
    validate(
        Kind::ImagePolicy,
        "v1",
        "flux-system",
        &policy(spec),
        Context::default(),
    )
}

fn valid_repo() -> Value {
    json!({"image": "ghcr.io/stefanprodan/podinfo", "interval": "10m"})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn semver_policy() -> Value {
    json!({"imageRepositoryRef": {"name": "podinfo"}, "policy": {"semver": {"range": ">=1.0.0"}}})
}

/// The single error's text; fails when there is not exactly one.
fn one_error(v: &Verdict) -> String {
    assert_eq!(v.errors.len(), 1, "expected one error, got {:#?}", v.errors);
    v.errors[0].to_string()
}

fn apply(obj: &Value, patch: &Patch) -> Value {
    let mut out = obj.clone();
    json_patch::patch(&mut out, &patch.0).unwrap();
    out
}

// ---- defaulting ----

#[test]
fn defaults_the_seed_example_timeout_to_the_interval() {
    let obj = repo(valid_repo());
    let patch = defaults(Kind::ImageRepository, "v1beta1", &obj);
    let out = apply(&obj, &patch);
    assert_eq!(out["spec"]["timeout"], "10m");
    assert!(
        out["spec"].get("exclusionList").is_none(),
        "v1beta1 has no exclusionList default"
    );
    assert!(out["spec"].get("provider").is_none());
}

#[test]
fn defaults_timeout_in_minutes_when_the_interval_has_hours() {
    let obj = repo(with(valid_repo(), "interval", json!("2h")));
    let out = apply(&obj, &defaults(Kind::ImageRepository, "v1", &obj));
    assert_eq!(out["spec"]["timeout"], "120m");
    let obj = repo(with(valid_repo(), "interval", json!("1.5h")));
    let out = apply(&obj, &defaults(Kind::ImageRepository, "v1", &obj));
    assert_eq!(out["spec"]["timeout"], "90m");
}

#[test]
fn defaults_exclusion_list_and_provider_in_v1beta2_and_v1() {
    for version in ["v1beta2", "v1"] {
        let obj = repo(valid_repo());
        let out = apply(&obj, &defaults(Kind::ImageRepository, version, &obj));
        assert_eq!(out["spec"]["exclusionList"], json!(["^.*\\.sig$"]));
        assert_eq!(out["spec"]["provider"], "generic");
    }
}

#[test]
fn defaulting_never_changes_what_the_user_set_nor_status() {
    let spec = json!({"image": "x", "interval": "10m", "timeout": "30s", "exclusionList": [], "provider": "aws"});
    let mut obj = repo(spec);
    obj["status"] = json!({"observedGeneration": 3});
    let patch = defaults(Kind::ImageRepository, "v1", &obj);
    assert!(patch.0.is_empty(), "{patch:?}");
}

#[test]
fn defaulting_is_idempotent() {
    for (kind, version, obj) in [
        (Kind::ImageRepository, "v1", repo(valid_repo())),
        (Kind::ImageRepository, "v1beta1", repo(valid_repo())),
        (
            Kind::ImagePolicy,
            "v1beta2",
            policy(json!({"imageRepositoryRef": {"name": "a"}, "policy": {"numerical": {}}})),
        ),
    ] {
        let once = apply(&obj, &defaults(kind, version, &obj));
        assert!(
            defaults(kind, version, &once).0.is_empty(),
            "{kind} {version}: second pass patched"
        );
    }
}

#[test]
fn defaults_image_policy_digest_reflection_and_order() {
    let obj = policy(json!({"imageRepositoryRef": {"name": "a"}, "policy": {"alphabetical": {}}}));
    let out = apply(&obj, &defaults(Kind::ImagePolicy, "v1", &obj));
    assert_eq!(out["spec"]["digestReflectionPolicy"], "Never");
    assert_eq!(out["spec"]["policy"]["alphabetical"]["order"], "asc");
    let obj = policy(
        json!({"imageRepositoryRef": {"name": "a"}, "policy": {"numerical": {"order": "desc"}}}),
    );
    let out = apply(&obj, &defaults(Kind::ImagePolicy, "v1", &obj));
    assert_eq!(out["spec"]["policy"]["numerical"]["order"], "desc");
    assert!(
        defaults(Kind::ImagePolicy, "v1beta1", &obj).0.is_empty(),
        "v1beta1 has no policy defaults"
    );
}

#[test]
fn does_not_default_timeout_from_an_interval_that_does_not_parse() {
    let obj = repo(with(valid_repo(), "interval", json!("ten minutes")));
    assert!(
        defaults(Kind::ImageRepository, "v1beta1", &obj)
            .0
            .is_empty()
    );
}

// ---- ImageRepository validation ----

#[test]
fn accepts_the_seed_examples() {
    assert_eq!(check_repo(valid_repo()), Verdict::default());
    let v = check_repo(
        json!({"interval": "1m0s", "image": "docker.io/org/image", "secretRef": {"name": "regcred"}}),
    );
    assert!(v.allowed(), "{v:?}");
}

#[test]
fn refuses_a_missing_spec_image_and_interval_together() {
    let v = check_repo(json!({}));
    let text: Vec<String> = v.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(text[0].starts_with("spec.image: Required value"));
    assert!(text[1].starts_with("spec.interval: Required value"));
}

#[test]
fn refuses_an_empty_image() {
    let v = check_repo(with(valid_repo(), "image", json!("")));
    assert!(
        v.errors
            .iter()
            .any(|e| e.path == "spec.image" && e.detail.contains("empty")),
        "{v:?}"
    );
}

#[test]
fn refuses_a_tag_in_spec_image() {
    let msg = one_error(&check_repo(with(
        valid_repo(),
        "image",
        json!("alpine:3.1"),
    )));
    assert!(
        msg.contains("spec.image") && msg.contains("\"alpine:3.1\"") && msg.contains("tag"),
        "{msg}"
    );
}

#[test]
fn refuses_a_digest_in_spec_image() {
    let img = format!("alpine@sha256:{}", "a".repeat(64));
    let msg = one_error(&check_repo(with(valid_repo(), "image", json!(img))));
    assert!(msg.contains("digest"), "{msg}");
}

#[test]
fn refuses_a_scheme_in_spec_image() {
    let msg = one_error(&check_repo(with(
        valid_repo(),
        "image",
        json!("https://ghcr.io/org/app"),
    )));
    assert!(msg.contains("scheme"), "{msg}");
}

#[test]
fn accepts_a_registry_with_a_port() {
    assert!(check_repo(with(valid_repo(), "image", json!("localhost:5000/org/app"))).allowed());
}

#[test]
fn refuses_intervals_flux_would_not_parse_and_zero() {
    for bad in ["10", "5 minutes", "-1m", "1d"] {
        let msg = one_error(&check_repo(with(valid_repo(), "interval", json!(bad))));
        assert!(
            msg.starts_with("spec.interval: Invalid value") && msg.contains(bad),
            "{msg}"
        );
    }
    let msg = one_error(&check_repo(with(valid_repo(), "interval", json!("0s"))));
    assert!(msg.contains("greater than zero"), "{msg}");
}

#[test]
fn reports_an_invalid_interval_once_when_defaulting_copied_it_into_the_timeout() {
    // What the validating webhook sees after /mutate defaulted `timeout` from `interval`.
    let obj = repo(with(valid_repo(), "interval", json!("0s")));
    let defaulted = apply(&obj, &defaults(Kind::ImageRepository, "v1", &obj));
    assert_eq!(defaulted["spec"]["timeout"], json!("0s"));
    let v = validate(
        Kind::ImageRepository,
        "v1",
        "flux-system",
        &defaulted,
        Context::default(),
    );
    let msg = one_error(&v);
    assert!(
        msg.starts_with("spec.interval: Invalid value") && msg.contains("greater than zero"),
        "{msg}"
    );
}

#[test]
fn still_reports_a_written_timeout_that_is_invalid_on_its_own() {
    // Different text from the (also invalid) interval: both are reported.
    let spec = json!({"image": "a", "interval": "0s", "timeout": "ten seconds"});
    let v = check_repo(spec);
    let paths: Vec<&str> = v.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["spec.interval", "spec.timeout"], "{:#?}", v.errors);
    // A valid interval does not shield a timeout of the same text that is invalid as a
    // timeout (hours are not allowed there).
    let msg = one_error(&check_repo(
        json!({"image": "a", "interval": "2h", "timeout": "2h"}),
    ));
    assert!(msg.starts_with("spec.timeout: Invalid value"), "{msg}");
}

#[test]
fn refuses_a_timeout_with_hours_suggesting_minutes() {
    let spec = json!({"image": "a", "interval": "3h", "timeout": "2h"});
    let msg = one_error(&check_repo(spec));
    assert!(
        msg.contains("spec.timeout") && msg.contains("\"120m\""),
        "{msg}"
    );
}

#[test]
fn refuses_a_non_string_interval() {
    let msg = one_error(&check_repo(with(valid_repo(), "interval", json!(600))));
    assert!(msg.contains("must be a string"), "{msg}");
}

#[test]
fn warns_about_an_interval_under_a_minute() {
    let v = check_repo(with(valid_repo(), "interval", json!("30s")));
    assert!(v.allowed());
    assert!(
        v.warnings.iter().any(|w| w.contains("under one minute")),
        "{v:?}"
    );
}

#[test]
fn warns_when_timeout_exceeds_interval() {
    let v = check_repo(json!({"image": "a", "interval": "1m", "timeout": "5m"}));
    assert!(v.allowed());
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("spec.timeout") && w.contains("longer")),
        "{v:?}"
    );
}

#[test]
fn refuses_more_than_25_exclusions() {
    let list: Vec<String> = (0..26).map(|i| format!("^x{i}$")).collect();
    let msg = one_error(&check_repo(with(
        valid_repo(),
        "exclusionList",
        json!(list),
    )));
    assert!(
        msg.contains("spec.exclusionList") && msg.contains("26") && msg.contains("25"),
        "{msg}"
    );
}

#[test]
fn refuses_an_exclusion_regex_that_does_not_compile_naming_its_index() {
    let v = check_repo(with(
        valid_repo(),
        "exclusionList",
        json!(["^ok$", "(unclosed", "[z-a]"]),
    ));
    assert_eq!(v.errors.len(), 2, "{v:?}");
    assert_eq!(v.errors[0].path, "spec.exclusionList[1]");
    assert!(
        v.errors[0]
            .detail
            .contains("not a valid regular expression")
    );
    assert_eq!(v.errors[1].path, "spec.exclusionList[2]");
}

#[test]
fn warns_about_an_exclusion_that_matches_every_tag() {
    let v = check_repo(with(valid_repo(), "exclusionList", json!([".*"])));
    assert!(v.allowed());
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("spec.exclusionList[0]") && w.contains("every tag")),
        "{v:?}"
    );
    let v = check_repo(with(valid_repo(), "exclusionList", json!(["^.*\\.sig$"])));
    assert!(v.warnings.is_empty(), "{v:?}");
}

#[test]
fn refuses_invalid_secret_and_service_account_names() {
    let spec = json!({"image": "a", "interval": "5m", "secretRef": {"name": "Reg_Cred"}, "certSecretRef": {},
                      "proxySecretRef": {"name": "ok"}, "serviceAccountName": "-sa"});
    let v = check_repo(spec);
    let paths: Vec<&str> = v.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.secretRef.name",
            "spec.certSecretRef.name",
            "spec.serviceAccountName"
        ],
        "{v:?}"
    );
}

#[test]
fn refuses_access_from_without_selectors() {
    let msg = one_error(&check_repo(with(valid_repo(), "accessFrom", json!({}))));
    assert!(
        msg.contains("spec.accessFrom.namespaceSelectors: Required value"),
        "{msg}"
    );
}

#[test]
fn refuses_invalid_label_keys_and_values_in_selectors() {
    let access = json!({"namespaceSelectors": [{"matchLabels": {"kubernetes.io/metadata.name": "flux-system"}},
                                               {"matchLabels": {"bad key": "x", "team": "-no"}}, {"matchLabels": {}}]});
    let v = check_repo(with(valid_repo(), "accessFrom", access));
    assert_eq!(v.errors.len(), 2, "{v:?}");
    assert!(
        v.errors[0]
            .path
            .starts_with("spec.accessFrom.namespaceSelectors[1].matchLabels")
    );
    assert!(v.errors[0].detail.contains("label key"));
    assert!(v.errors[1].detail.contains("label value"));
}

#[test]
fn refuses_an_unknown_provider() {
    let msg = one_error(&check_repo(with(
        valid_repo(),
        "provider",
        json!("azure-ad"),
    )));
    assert!(
        msg.contains("spec.provider") && msg.contains("\"generic\", \"aws\", \"azure\", \"gcp\""),
        "{msg}"
    );
}

#[test]
fn warns_about_insecure_and_about_secret_ref_with_a_cloud_provider() {
    let spec = json!({"image": "a", "interval": "5m", "insecure": true, "provider": "aws", "secretRef": {"name": "x"}});
    let v = check_repo(spec);
    assert!(v.allowed(), "{v:?}");
    assert_eq!(v.warnings.len(), 2, "{v:?}");
    assert!(v.warnings.iter().any(|w| w.contains("spec.insecure")));
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("spec.secretRef is ignored") && w.contains("\"aws\""))
    );
}

#[test]
fn reports_every_failure_of_an_object_together() {
    let spec = json!({"image": "alpine:latest", "interval": "x", "provider": "foo", "exclusionList": ["("]});
    let v = check_repo(spec);
    assert!(v.errors.len() >= 4, "{v:?}");
    let msg = v.denial_message(Kind::ImageRepository, "podinfo");
    assert!(
        msg.starts_with("ImageRepository.image.toolkit.fluxcd.io \"podinfo\" is invalid: ["),
        "{msg}"
    );
}

#[test]
fn refuses_a_missing_or_non_object_spec() {
    let obj = json!({"metadata": {"name": "x"}});
    let v = validate(Kind::ImageRepository, "v1", "ns", &obj, Context::default());
    assert!(one_error(&v).contains("spec: Required value"));
    let obj = json!({"metadata": {"name": "x"}, "spec": "yes"});
    let v = validate(Kind::ImagePolicy, "v1", "ns", &obj, Context::default());
    assert!(one_error(&v).contains("must be an object"));
}

// ---- ImagePolicy validation ----

#[test]
fn accepts_a_plain_semver_policy() {
    assert_eq!(check_policy(semver_policy()), Verdict::default());
}

#[test]
fn refuses_a_policy_without_a_repository_reference() {
    let v = check_policy(json!({"policy": {"semver": {"range": "1.x"}}}));
    assert!(one_error(&v).starts_with("spec.imageRepositoryRef: Required value"));
    let v = check_policy(
        json!({"imageRepositoryRef": {"name": "Bad_Name", "namespace": "Other"}, "policy": {"numerical": {}}}),
    );
    let paths: Vec<&str> = v.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.imageRepositoryRef.name",
            "spec.imageRepositoryRef.namespace"
        ]
    );
}

#[test]
fn refuses_none_or_several_orderings() {
    let msg = one_error(&check_policy(
        json!({"imageRepositoryRef": {"name": "a"}, "policy": {}}),
    ));
    assert!(
        msg.contains("spec.policy") && msg.contains("exactly one"),
        "{msg}"
    );
    let msg = one_error(&check_policy(json!({"imageRepositoryRef": {"name": "a"},
        "policy": {"semver": {"range": "1.x"}, "alphabetical": {}}})));
    assert!(msg.contains("semver and alphabetical"), "{msg}");
}

#[test]
fn refuses_a_semver_policy_without_a_range() {
    let msg = one_error(&check_policy(
        json!({"imageRepositoryRef": {"name": "a"}, "policy": {"semver": {}}}),
    ));
    assert!(
        msg.contains("spec.policy.semver.range: Required value"),
        "{msg}"
    );
}

#[test]
fn refuses_an_unknown_order() {
    let msg = one_error(&check_policy(
        json!({"imageRepositoryRef": {"name": "a"}, "policy": {"numerical": {"order": "up"}}}),
    ));
    assert!(
        msg.contains("spec.policy.numerical.order") && msg.contains("\"asc\" or \"desc\""),
        "{msg}"
    );
}

#[test]
fn refuses_a_filter_pattern_that_does_not_compile() {
    let msg = one_error(&check_policy(with(
        semver_policy(),
        "filterTags",
        json!({"pattern": "^main-(?P<ts"}),
    )));
    assert!(
        msg.contains("spec.filterTags.pattern") && msg.contains("regular expression"),
        "{msg}"
    );
}

#[test]
fn refuses_an_unknown_digest_reflection_policy() {
    let msg = one_error(&check_policy(with(
        semver_policy(),
        "digestReflectionPolicy",
        json!("Sometimes"),
    )));
    assert!(
        msg.contains("\"Always\", \"IfNotPresent\", \"Never\""),
        "{msg}"
    );
}

#[test]
fn requires_interval_with_always_and_only_with_always() {
    let spec = with(semver_policy(), "digestReflectionPolicy", json!("Always"));
    let msg = one_error(&check_policy(spec.clone()));
    assert!(msg.contains("spec.interval: Required value"), "{msg}");
    assert!(check_policy(with(spec, "interval", json!("10m"))).allowed());
    let spec = with(
        with(
            semver_policy(),
            "digestReflectionPolicy",
            json!("IfNotPresent"),
        ),
        "interval",
        json!("10m"),
    );
    let msg = one_error(&check_policy(spec));
    assert!(
        msg.contains("spec.interval") && msg.contains("\"IfNotPresent\""),
        "{msg}"
    );
    let msg = one_error(&check_policy(with(
        semver_policy(),
        "interval",
        json!("10m"),
    )));
    assert!(msg.contains("unset"), "{msg}");
}

#[test]
fn validates_the_policy_interval_as_a_duration() {
    let spec = with(
        with(semver_policy(), "digestReflectionPolicy", json!("Always")),
        "interval",
        json!("soon"),
    );
    assert!(one_error(&check_policy(spec)).contains("spec.interval: Invalid value: \"soon\""));
    let spec = with(
        with(semver_policy(), "digestReflectionPolicy", json!("Always")),
        "interval",
        json!("10s"),
    );
    let v = check_policy(spec);
    assert!(
        v.allowed() && v.warnings.iter().any(|w| w.contains("under one minute")),
        "{v:?}"
    );
}

// ---- cross-namespace access through a cluster view ----

#[derive(Default)]
struct MemoryView {
    repos: Vec<ImageRepository>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl ClusterView for MemoryView {
    fn image_repository(&self, namespace: &str, name: &str) -> Option<Arc<ImageRepository>> {
        self.repos
            .iter()
            .find(|r| {
                r.metadata.namespace.as_deref() == Some(namespace)
                    && r.metadata.name.as_deref() == Some(name)
            })
            .map(|r| Arc::new(r.clone()))
    }
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.get(namespace).cloned()
    }
}

fn view() -> MemoryView {
    let mut open = ImageRepository::new(
        "shared",
        ImageRepositorySpec {
            image: "ghcr.io/org/app".into(),
            interval: "5m".into(),
            access_from: Some(AccessFrom {
                namespace_selectors: vec![NamespaceSelector {
                    match_labels: Some([("team".to_string(), "a".to_string())].into()),
                }],
            }),
            ..Default::default()
        },
    );
    open.metadata.namespace = Some("apps".into());
    let mut closed = ImageRepository::new("private", ImageRepositorySpec::default());
    closed.metadata.namespace = Some("apps".into());
    let mut namespaces = BTreeMap::new();
    namespaces.insert(
        "team-a".to_string(),
        [("team".to_string(), "a".to_string())].into(),
    );
    namespaces.insert(
        "team-b".to_string(),
        [("team".to_string(), "b".to_string())].into(),
    );
    MemoryView {
        repos: vec![open, closed],
        namespaces,
    }
}

fn check_policy_in(
    namespace: &str,
    reference: Value,
    view: &MemoryView,
    no_cross: bool,
) -> Verdict {
    let obj = policy(json!({"imageRepositoryRef": reference, "policy": {"numerical": {}}}));
    let ctx = Context {
        cluster: Some(view),
        no_cross_namespace_refs: no_cross,
    };
    validate(Kind::ImagePolicy, "v1", namespace, &obj, ctx)
}

#[test]
fn admits_a_reference_the_repository_access_list_allows() {
    let v = check_policy_in(
        "team-a",
        json!({"name": "shared", "namespace": "apps"}),
        &view(),
        false,
    );
    assert_eq!(v, Verdict::default());
}

#[test]
fn refuses_a_reference_the_repository_access_list_denies() {
    let v = check_policy_in(
        "team-b",
        json!({"name": "shared", "namespace": "apps"}),
        &view(),
        false,
    );
    let msg = one_error(&v);
    assert!(
        msg.contains("spec.imageRepositoryRef") && msg.contains("team=a") && msg.contains("team=b"),
        "{msg}"
    );
    let v = check_policy_in(
        "team-a",
        json!({"name": "private", "namespace": "apps"}),
        &view(),
        false,
    );
    assert!(one_error(&v).contains("no spec.accessFrom"));
}

#[test]
fn refuses_any_cross_namespace_reference_when_disabled() {
    let v = check_policy_in(
        "team-a",
        json!({"name": "shared", "namespace": "apps"}),
        &view(),
        true,
    );
    assert!(one_error(&v).contains("disabled"));
}

#[test]
fn warns_about_a_repository_that_does_not_exist_yet() {
    let v = check_policy_in(
        "team-a",
        json!({"name": "later", "namespace": "apps"}),
        &view(),
        false,
    );
    assert!(v.allowed());
    assert!(
        v.warnings[0].contains("apps/later") && v.warnings[0].contains("does not exist"),
        "{v:?}"
    );
}

#[test]
fn skips_the_access_check_without_a_cluster_view() {
    let obj = policy(
        json!({"imageRepositoryRef": {"name": "private", "namespace": "apps"}, "policy": {"numerical": {}}}),
    );
    let v = validate(Kind::ImagePolicy, "v1", "team-b", &obj, Context::default());
    assert_eq!(v, Verdict::default());
}

// ---- the shared parsers' checks ----

#[test]
fn refuses_upper_case_and_bare_hex_image_names() {
    let msg = one_error(&check_repo(with(
        valid_repo(),
        "image",
        json!("ghcr.io/Org/App"),
    )));
    assert!(
        msg.starts_with("spec.image: Invalid value: \"ghcr.io/Org/App\"")
            && msg.contains("upper-case"),
        "{msg}"
    );
    let msg = one_error(&check_repo(with(
        valid_repo(),
        "image",
        json!("a".repeat(64)),
    )));
    assert!(msg.contains("64-digit"), "{msg}");
}

#[test]
fn accepts_an_ipv6_registry_in_brackets() {
    assert!(check_repo(with(valid_repo(), "image", json!("[::1]:5000/org/app"))).allowed());
}

#[test]
fn refuses_a_semver_range_that_does_not_parse() {
    let spec = json!({"imageRepositoryRef": {"name": "a"}, "policy": {"semver": {"range": ">=1.0.0 <<2"}}});
    let msg = one_error(&check_policy(spec));
    assert!(
        msg.starts_with(
            "spec.policy.semver.range: Invalid value: invalid semver range \">=1.0.0 <<2\""
        ),
        "{msg}"
    );
}

#[test]
fn accepts_masterminds_range_forms() {
    for range in [
        "1.0.x",
        ">=1.2 <2",
        "^1.2",
        "~1.2.3",
        "1.2 - 1.4",
        "1.x || >=3",
    ] {
        let spec =
            json!({"imageRepositoryRef": {"name": "a"}, "policy": {"semver": {"range": range}}});
        assert!(check_policy(spec).allowed(), "{range}");
    }
}

#[test]
fn refuses_an_extract_naming_a_group_the_pattern_lacks() {
    let spec = with(
        semver_policy(),
        "filterTags",
        json!({"pattern": "^main-(?P<ts>[0-9]+)$", "extract": "$version"}),
    );
    let msg = one_error(&check_policy(spec));
    assert!(
        msg.starts_with("spec.filterTags.extract: Invalid value") && msg.contains("$version"),
        "{msg}"
    );
    let spec = with(
        semver_policy(),
        "filterTags",
        json!({"pattern": "^main-(?P<ts>[0-9]+)$", "extract": "$ts"}),
    );
    assert!(check_policy(spec).allowed());
}
