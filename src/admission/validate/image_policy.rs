//! The rules of an ImagePolicy's spec.

use super::memo::Memo;
use super::{Validate, interval};
use crate::admission::Admission;
use crate::admission::names::{dns1123_label, dns1123_subdomain};
use crate::admission::report::{Problem, Verdict};
use crate::api::{DigestReflectionPolicy, ImagePolicyChoice, ImagePolicySpec, TagFilter};
use crate::policy::{FilterTags, PolicyError, semver::Range};
use serde_json::json;

impl Validate for ImagePolicySpec {
    fn validate(&self, namespace: &str, admission: &Admission) -> Verdict {
        let mut v = Verdict::default();
        let repository = repository_ref(&mut v, self, namespace);
        policy_choice(&mut v, &self.policy);
        if let Some(filter) = &self.filter_tags {
            filter_tags(&mut v, filter);
        }
        digest_interval(&mut v, self);
        if let Some((repo_namespace, repo_name)) = repository {
            access(&mut v, namespace, repo_namespace, repo_name, admission);
        }
        v
    }
}

/// `spec.imageRepositoryRef`: the names' syntax. Returns the repository's namespace and
/// name when both are valid.
fn repository_ref<'a>(
    v: &mut Verdict,
    spec: &'a ImagePolicySpec,
    namespace: &'a str,
) -> Option<(&'a str, &'a str)> {
    let reference = &spec.image_repository_ref;
    let mut valid = true;
    if let Err(e) = dns1123_subdomain(&reference.name) {
        v.invalid(
            "spec.imageRepositoryRef.name",
            json!(reference.name),
            format!("{e}; ImageRepository names are DNS subdomains"),
        );
        valid = false;
    }
    if let Some(ns) = &reference.namespace
        && let Err(e) = dns1123_label(ns)
    {
        v.invalid(
            "spec.imageRepositoryRef.namespace",
            json!(ns),
            format!("{e}; namespace names are DNS labels, or leave it out for the policy's own namespace"),
        );
        valid = false;
    }
    let repo_namespace = reference.namespace.as_deref().unwrap_or(namespace);
    valid.then_some((repo_namespace, reference.name.as_str()))
}

/// `spec.policy`: exactly one ordering, and a semver range that parses.
fn policy_choice(v: &mut Verdict, policy: &ImagePolicyChoice) {
    let chosen: Vec<&str> = [
        ("semver", policy.semver.is_some()),
        ("alphabetical", policy.alphabetical.is_some()),
        ("numerical", policy.numerical.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    match chosen.as_slice() {
        [_] => {}
        [] => v.invalid(
            "spec.policy",
            json!(policy),
            "sets none of semver, alphabetical, numerical; set exactly one",
        ),
        several => v.invalid(
            "spec.policy",
            json!(policy),
            format!(
                "sets {}; set exactly one of semver, alphabetical, numerical",
                several.join(" and ")
            ),
        ),
    }
    if let Some(semver) = &policy.semver
        && let Err(e) = Range::parse(&semver.range)
    {
        v.fail(e.field(), Problem::InvalidQuoted(e.to_string()));
    }
}

/// `spec.filterTags`: the pattern compiles and the extract names its groups.
fn filter_tags(v: &mut Verdict, filter: &TagFilter) {
    static FILTERS: Memo<Result<(), PolicyError>> = Memo::new();
    let pattern = filter.pattern.as_deref().unwrap_or("");
    let extract = filter.extract.as_deref();
    let key = format!("{pattern}\u{0}{}", extract.unwrap_or(""));
    let verdict = FILTERS.get(&key, || FilterTags::new(pattern, extract).map(|_| ()));
    if let Err(e) = verdict {
        v.fail(e.field(), Problem::InvalidQuoted(e.to_string()));
    }
}

/// `spec.interval` is used, and then required, only with digestReflectionPolicy `Always`.
fn digest_interval(v: &mut Verdict, spec: &ImagePolicySpec) {
    let always = spec.digest_reflection_policy == Some(DigestReflectionPolicy::Always);
    match (&spec.interval, always) {
        (Some(every), true) => {
            interval(v, "spec.interval", every);
        }
        (Some(every), false) => {
            let policy = spec
                .digest_reflection_policy
                .map(|p| format!("{:?}", p.as_str()))
                .unwrap_or_else(|| "unset".into());
            v.invalid(
                "spec.interval",
                json!(every),
                format!(
                    "is only used with spec.digestReflectionPolicy \"Always\" (it is {policy}); remove spec.interval or set the policy to \"Always\""
                ),
            );
        }
        (None, true) => v.required(
            "spec.interval",
            "spec.digestReflectionPolicy \"Always\" refreshes the digest every spec.interval; set it, e.g. \"10m\"",
        ),
        (None, false) => {}
    }
}

/// Cross-namespace access, when the controllers' caches are available: the repository's
/// `accessFrom` must admit the policy's namespace.
fn access(
    v: &mut Verdict,
    namespace: &str,
    repo_namespace: &str,
    repo_name: &str,
    admission: &Admission,
) {
    let Some(cluster) = &admission.cluster else {
        return;
    };
    let Some(repo) = cluster.image_repository(repo_namespace, repo_name) else {
        v.warn(format!(
            "spec.imageRepositoryRef: ImageRepository {repo_namespace}/{repo_name} does not exist (yet); the policy stays not ready until it does"
        ));
        return;
    };
    let labels = cluster.namespace_labels(namespace).unwrap_or_default();
    if let Err(denied) =
        crate::api::access_allowed(&repo, namespace, &labels, admission.no_cross_namespace_refs)
    {
        v.invalid(
            "spec.imageRepositoryRef",
            json!({"name": repo_name, "namespace": repo_namespace}),
            denied.to_string(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{one_error, paths, with};
    use super::super::verdict;
    use crate::admission::{Admission, ClusterView, Kind, Verdict};
    use crate::api::{AccessFrom, ImageRepository, ImageRepositorySpec, NamespaceSelector};
    use serde_json::{Value, json};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn check(spec: Value) -> Verdict {
        verdict(
            Kind::ImagePolicy,
            "flux-system",
            Some(spec),
            &Admission::default(),
        )
    }

    fn semver_policy() -> Value {
        json!({"imageRepositoryRef": {"name": "podinfo"}, "policy": {"semver": {"range": ">=1.0.0"}}})
    }

    fn always_every(interval: Value) -> Value {
        let spec = with(semver_policy(), "digestReflectionPolicy", json!("Always"));
        with(spec, "interval", interval)
    }

    #[test]
    fn accepts_a_plain_semver_policy() {
        assert_eq!(check(semver_policy()), Verdict::default());
    }

    #[test]
    fn refuses_a_policy_without_a_repository_reference() {
        let msg = one_error(&check(json!({"policy": {"semver": {"range": "1.x"}}})));
        assert_eq!(msg, "spec.imageRepositoryRef: Required value");
    }

    #[test]
    fn refuses_invalid_repository_and_namespace_names() {
        let v = check(
            json!({"imageRepositoryRef": {"name": "Bad_Name", "namespace": "Other"}, "policy": {"numerical": {}}}),
        );
        assert_eq!(
            paths(&v),
            [
                "spec.imageRepositoryRef.name",
                "spec.imageRepositoryRef.namespace"
            ]
        );
    }

    #[test]
    fn refuses_none_or_several_orderings() {
        let msg = one_error(&check(
            json!({"imageRepositoryRef": {"name": "a"}, "policy": {}}),
        ));
        assert!(
            msg.contains("spec.policy") && msg.contains("exactly one"),
            "{msg}"
        );
        let msg = one_error(&check(json!({"imageRepositoryRef": {"name": "a"},
            "policy": {"semver": {"range": "1.x"}, "alphabetical": {}}})));
        assert!(msg.contains("semver and alphabetical"), "{msg}");
    }

    #[test]
    fn refuses_a_semver_policy_without_a_range() {
        let msg = one_error(&check(
            json!({"imageRepositoryRef": {"name": "a"}, "policy": {"semver": {}}}),
        ));
        assert_eq!(msg, "spec.policy.semver.range: Required value");
    }

    #[test]
    fn refuses_a_semver_range_that_does_not_parse() {
        let spec = json!({"imageRepositoryRef": {"name": "a"}, "policy": {"semver": {"range": ">=1.0.0 <<2"}}});
        let msg = one_error(&check(spec));
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
            let spec = json!({"imageRepositoryRef": {"name": "a"}, "policy": {"semver": {"range": range}}});
            assert!(check(spec).allowed(), "{range}");
        }
    }

    #[test]
    fn refuses_an_unknown_order() {
        let msg = one_error(&check(
            json!({"imageRepositoryRef": {"name": "a"}, "policy": {"numerical": {"order": "up"}}}),
        ));
        assert_eq!(
            msg,
            "spec.policy.numerical.order: unknown variant \"up\", expected \"asc\" or \"desc\""
        );
    }

    #[test]
    fn refuses_a_filter_pattern_that_does_not_compile() {
        let msg = one_error(&check(with(
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
    fn refuses_an_extract_naming_a_group_the_pattern_lacks() {
        let filter = |extract| json!({"pattern": "^main-(?P<ts>[0-9]+)$", "extract": extract});
        let msg = one_error(&check(with(
            semver_policy(),
            "filterTags",
            filter("$version"),
        )));
        assert!(
            msg.starts_with("spec.filterTags.extract: Invalid value") && msg.contains("$version"),
            "{msg}"
        );
        assert!(check(with(semver_policy(), "filterTags", filter("$ts"))).allowed());
    }

    #[test]
    fn refuses_an_unknown_digest_reflection_policy() {
        let msg = one_error(&check(with(
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
        let always = with(semver_policy(), "digestReflectionPolicy", json!("Always"));
        let msg = one_error(&check(always));
        assert!(msg.contains("spec.interval: Required value"), "{msg}");
        assert!(check(always_every(json!("10m"))).allowed());
        let if_not_present = with(
            semver_policy(),
            "digestReflectionPolicy",
            json!("IfNotPresent"),
        );
        let msg = one_error(&check(with(if_not_present, "interval", json!("10m"))));
        assert!(
            msg.contains("spec.interval") && msg.contains("\"IfNotPresent\""),
            "{msg}"
        );
        let msg = one_error(&check(with(semver_policy(), "interval", json!("10m"))));
        assert!(msg.contains("unset"), "{msg}");
    }

    #[test]
    fn validates_the_policy_interval_as_a_duration() {
        let msg = one_error(&check(always_every(json!("soon"))));
        assert!(
            msg.starts_with("spec.interval: Invalid value: \"soon\""),
            "{msg}"
        );
        let v = check(always_every(json!("10s")));
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

    fn labels(key: &str, value: &str) -> BTreeMap<String, String> {
        [(key.to_string(), value.to_string())].into()
    }

    /// Namespace `apps` holds `shared` (open to namespaces labelled team=a) and `private`
    /// (no accessFrom); namespaces team-a and team-b carry team=a and team=b.
    fn view() -> MemoryView {
        let mut open = ImageRepository::new(
            "shared",
            ImageRepositorySpec {
                image: "ghcr.io/org/app".into(),
                interval: "5m".into(),
                access_from: Some(AccessFrom {
                    namespace_selectors: vec![NamespaceSelector {
                        match_labels: Some(labels("team", "a")),
                    }],
                }),
                ..Default::default()
            },
        );
        open.metadata.namespace = Some("apps".into());
        let mut closed = ImageRepository::new("private", ImageRepositorySpec::default());
        closed.metadata.namespace = Some("apps".into());
        MemoryView {
            repos: vec![open, closed],
            namespaces: [
                ("team-a".to_string(), labels("team", "a")),
                ("team-b".to_string(), labels("team", "b")),
            ]
            .into(),
        }
    }

    fn check_in(namespace: &str, name: &str, no_cross_namespace_refs: bool) -> Verdict {
        let spec = json!({"imageRepositoryRef": {"name": name, "namespace": "apps"}, "policy": {"numerical": {}}});
        let admission = Admission {
            cluster: Some(Arc::new(view())),
            no_cross_namespace_refs,
        };
        verdict(Kind::ImagePolicy, namespace, Some(spec), &admission)
    }

    #[test]
    fn admits_a_reference_the_repository_access_list_allows() {
        assert_eq!(check_in("team-a", "shared", false), Verdict::default());
    }

    #[test]
    fn refuses_a_reference_the_repository_access_list_denies() {
        let msg = one_error(&check_in("team-b", "shared", false));
        assert!(
            msg.contains("spec.imageRepositoryRef")
                && msg.contains("team=a")
                && msg.contains("team=b"),
            "{msg}"
        );
        let msg = one_error(&check_in("team-a", "private", false));
        assert!(msg.contains("no spec.accessFrom"), "{msg}");
    }

    #[test]
    fn refuses_any_cross_namespace_reference_when_disabled() {
        assert!(one_error(&check_in("team-a", "shared", true)).contains("disabled"));
    }

    #[test]
    fn warns_about_a_repository_that_does_not_exist_yet() {
        let v = check_in("team-a", "later", false);
        assert!(v.allowed());
        assert!(
            v.warnings[0].contains("apps/later") && v.warnings[0].contains("does not exist"),
            "{v:?}"
        );
    }

    #[test]
    fn skips_the_access_check_without_a_cluster_view() {
        let spec = json!({"imageRepositoryRef": {"name": "private", "namespace": "apps"}, "policy": {"numerical": {}}});
        let v = verdict(
            Kind::ImagePolicy,
            "team-b",
            Some(spec),
            &Admission::default(),
        );
        assert_eq!(v, Verdict::default());
    }
}
