//! The rules of an ImageRepository's spec.

use super::memo::Memo;
use super::{Validate, duration, interval};
use crate::admission::Admission;
use crate::admission::names::{dns1123_subdomain, label_key, label_value};
use crate::admission::report::{Problem, Verdict};
use crate::api::{AccessFrom, ImageRepositorySpec, MAX_EXCLUSION_LIST, Provider};
use serde_json::json;

/// Tags an exclusion regex is tried on: one that matches all of them excludes everything.
const SAMPLE_TAGS: [&str; 7] = [
    "latest",
    "v1.2.3",
    "1.0.0",
    "1.0.0-rc.1",
    "main-0a1b2c3-1700000000",
    "sha256-0a1b2c3d.sig",
    "20240101",
];

impl Validate for ImageRepositorySpec {
    fn validate(&self, _namespace: &str, _admission: &Admission) -> Verdict {
        let mut v = Verdict::default();
        image(&mut v, &self.image);

        let scan_interval = interval(&mut v, "spec.interval", &self.interval);
        // The mutating webhook copies an absent timeout from the interval, so an invalid
        // interval arrives twice; a timeout written exactly as the invalid interval is not
        // reported again (a timeout invalid on its own still is).
        if let Some(timeout) = &self.timeout
            && !(scan_interval.is_none() && *timeout == self.interval)
            && let Some(t) = duration(&mut v, "spec.timeout", timeout, false)
            && scan_interval.is_some_and(|i| t > i)
        {
            v.warn(format!(
                "spec.timeout: {timeout:?} is longer than spec.interval; a scan may still run when the next is due"
            ));
        }

        if let Some(list) = &self.exclusion_list {
            exclusion_list(&mut v, list);
        }

        let secrets = [
            ("spec.secretRef.name", &self.secret_ref),
            ("spec.certSecretRef.name", &self.cert_secret_ref),
            ("spec.proxySecretRef.name", &self.proxy_secret_ref),
        ];
        for (path, secret) in secrets {
            if let Some(secret) = secret
                && let Err(e) = dns1123_subdomain(&secret.name)
            {
                let why = format!("{e}; a Secret name is a DNS subdomain, e.g. \"regcred\"");
                v.invalid(path, json!(secret.name), why);
            }
        }
        if let Some(account) = &self.service_account_name
            && let Err(e) = dns1123_subdomain(account)
        {
            let why = format!("{e}; name a ServiceAccount in the object's namespace");
            v.invalid("spec.serviceAccountName", json!(account), why);
        }

        if let Some(access) = &self.access_from {
            access_from(&mut v, access);
        }

        let provider = self.effective_provider();
        if self.secret_ref.is_some() && provider != Provider::Generic {
            v.warn(format!(
                "spec.secretRef is ignored with spec.provider {:?}: credentials come from the cloud provider; remove secretRef or use provider \"generic\"",
                provider.as_str()
            ));
        }
        if self.insecure {
            v.warn("spec.insecure: true makes the controller talk plain HTTP to the registry; credentials and tags travel unencrypted");
        }
        v
    }
}

/// `spec.image`: a repository name by the distribution grammar (shared with the scanner).
fn image(v: &mut Verdict, image: &str) {
    if image.is_empty() {
        v.invalid(
            "spec.image",
            json!(image),
            "must not be empty; name the image repository, e.g. \"ghcr.io/org/app\"",
        );
    } else if let Err(e) = crate::reference::ImageRef::check(image) {
        v.fail("spec.image", Problem::InvalidQuoted(e.to_string()));
    }
}

/// `spec.exclusionList`: at most [`MAX_EXCLUSION_LIST`] regexes that compile; a warning
/// for one that would exclude every tag.
fn exclusion_list(v: &mut Verdict, list: &[String]) {
    if list.len() > MAX_EXCLUSION_LIST {
        v.invalid(
            "spec.exclusionList",
            json!(format!("{} entries", list.len())),
            format!("at most {MAX_EXCLUSION_LIST} entries are allowed; combine regexes with '|'"),
        );
    }
    static EXCLUSIONS: Memo<Result<bool, String>> = Memo::new();
    for (i, pattern) in list.iter().enumerate() {
        let path = format!("spec.exclusionList[{i}]");
        // Whether it compiles, and then whether it matches every sample tag.
        let verdict = EXCLUSIONS.get(pattern, || match regex::Regex::new(pattern) {
            Ok(re) => Ok(SAMPLE_TAGS.iter().all(|tag| re.is_match(tag))),
            Err(e) => Err(crate::policy::regex_problem(&e)),
        });
        match verdict {
            Err(problem) => v.invalid(
                path,
                json!(pattern),
                format!("is not a valid regular expression: {problem}"),
            ),
            Ok(true) => v.warn(format!(
                "{path}: {pattern:?} matches every tag, so no tag will be stored; anchor it, e.g. \"^.*\\\\.sig$\""
            )),
            Ok(false) => {}
        }
    }
}

/// `spec.accessFrom`: the label syntax of every selector.
fn access_from(v: &mut Verdict, access: &AccessFrom) {
    for (i, selector) in access.namespace_selectors.iter().enumerate() {
        for (key, value) in selector.match_labels.iter().flatten() {
            let path = format!("spec.accessFrom.namespaceSelectors[{i}].matchLabels[{key:?}]");
            if let Err(e) = label_key(key) {
                v.invalid(&path, json!(key), format!("is not a valid label key: {e}"));
            }
            if let Err(e) = label_value(value) {
                v.invalid(
                    &path,
                    json!(value),
                    format!("is not a valid label value: {e}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{one_error, paths, with};
    use super::super::verdict;
    use crate::admission::{Admission, Kind, Verdict};
    use serde_json::{Value, json};

    fn check(spec: Value) -> Verdict {
        verdict(
            Kind::ImageRepository,
            "flux-system",
            Some(spec),
            &Admission::default(),
        )
    }

    fn valid() -> Value {
        json!({"image": "ghcr.io/stefanprodan/podinfo", "interval": "10m"})
    }

    fn check_with(key: &str, value: Value) -> Verdict {
        check(with(valid(), key, value))
    }

    #[test]
    fn accepts_the_seed_examples() {
        assert_eq!(check(valid()), Verdict::default());
        let v = check(
            json!({"interval": "1m0s", "image": "docker.io/org/image", "secretRef": {"name": "regcred"}}),
        );
        assert!(v.allowed(), "{v:?}");
    }

    #[test]
    fn refuses_a_spec_without_an_image_naming_the_field() {
        let msg = one_error(&check(json!({"interval": "5m"})));
        assert_eq!(msg, "spec.image: Required value");
        let msg = one_error(&check(json!({"image": "alpine"})));
        assert_eq!(msg, "spec.interval: Required value");
    }

    #[test]
    fn refuses_an_empty_image() {
        let msg = one_error(&check_with("image", json!("")));
        assert!(
            msg.starts_with("spec.image: Invalid value: \"\": must not be empty"),
            "{msg}"
        );
    }

    #[test]
    fn refuses_a_tag_in_spec_image() {
        let msg = one_error(&check_with("image", json!("alpine:3.1")));
        assert!(
            msg.contains("spec.image") && msg.contains("\"alpine:3.1\"") && msg.contains("tag"),
            "{msg}"
        );
    }

    #[test]
    fn refuses_a_digest_in_spec_image() {
        let img = format!("alpine@sha256:{}", "a".repeat(64));
        let msg = one_error(&check_with("image", json!(img)));
        assert!(msg.contains("digest"), "{msg}");
    }

    #[test]
    fn refuses_a_scheme_in_spec_image() {
        let msg = one_error(&check_with("image", json!("https://ghcr.io/org/app")));
        assert!(msg.contains("scheme"), "{msg}");
    }

    #[test]
    fn refuses_upper_case_and_bare_hex_image_names() {
        let msg = one_error(&check_with("image", json!("ghcr.io/Org/App")));
        assert!(
            msg.starts_with("spec.image: Invalid value: \"ghcr.io/Org/App\"")
                && msg.contains("upper-case"),
            "{msg}"
        );
        let msg = one_error(&check_with("image", json!("a".repeat(64))));
        assert!(msg.contains("64-digit"), "{msg}");
    }

    #[test]
    fn accepts_registries_with_a_port_and_ipv6_registries_in_brackets() {
        for image in ["localhost:5000/org/app", "[::1]:5000/org/app"] {
            assert!(check_with("image", json!(image)).allowed(), "{image}");
        }
    }

    #[test]
    fn refuses_intervals_flux_would_not_parse_and_zero() {
        for bad in ["10", "5 minutes", "-1m", "1d"] {
            let msg = one_error(&check_with("interval", json!(bad)));
            assert!(
                msg.starts_with("spec.interval: Invalid value") && msg.contains(bad),
                "{msg}"
            );
        }
        let msg = one_error(&check_with("interval", json!("0s")));
        assert!(msg.contains("greater than zero"), "{msg}");
    }

    #[test]
    fn reports_an_invalid_interval_once_when_defaulting_copied_it_into_the_timeout() {
        // What the validating webhook sees after /mutate copied `interval` into `timeout`.
        let spec = json!({"image": "a", "interval": "0s", "timeout": "0s"});
        let msg = one_error(&check(spec));
        assert!(
            msg.starts_with("spec.interval: Invalid value") && msg.contains("greater than zero"),
            "{msg}"
        );
    }

    #[test]
    fn still_reports_a_written_timeout_that_is_invalid_on_its_own() {
        // Different text from the (also invalid) interval: both are reported.
        let v = check(json!({"image": "a", "interval": "0s", "timeout": "ten seconds"}));
        assert_eq!(paths(&v), ["spec.interval", "spec.timeout"], "{v:#?}");
        // A valid interval does not shield a timeout of the same text that is invalid as a
        // timeout (hours are not allowed there).
        let msg = one_error(&check(
            json!({"image": "a", "interval": "2h", "timeout": "2h"}),
        ));
        assert!(msg.starts_with("spec.timeout: Invalid value"), "{msg}");
    }

    #[test]
    fn refuses_a_timeout_with_hours_suggesting_minutes() {
        let msg = one_error(&check(
            json!({"image": "a", "interval": "3h", "timeout": "2h"}),
        ));
        assert!(
            msg.contains("spec.timeout") && msg.contains("\"120m\""),
            "{msg}"
        );
    }

    #[test]
    fn refuses_a_non_string_interval_naming_the_expected_type() {
        let msg = one_error(&check_with("interval", json!(600)));
        assert_eq!(
            msg,
            "spec.interval: invalid type: integer 600, expected a string"
        );
    }

    #[test]
    fn warns_about_an_interval_under_a_minute() {
        let v = check_with("interval", json!("30s"));
        assert!(v.allowed());
        assert!(
            v.warnings.iter().any(|w| w.contains("under one minute")),
            "{v:?}"
        );
    }

    #[test]
    fn warns_when_timeout_exceeds_interval() {
        let v = check(json!({"image": "a", "interval": "1m", "timeout": "5m"}));
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
        let msg = one_error(&check_with("exclusionList", json!(list)));
        assert!(
            msg.contains("spec.exclusionList") && msg.contains("26") && msg.contains("25"),
            "{msg}"
        );
    }

    #[test]
    fn refuses_an_exclusion_regex_that_does_not_compile_naming_its_index() {
        let v = check_with("exclusionList", json!(["^ok$", "(unclosed", "[z-a]"]));
        assert_eq!(
            paths(&v),
            ["spec.exclusionList[1]", "spec.exclusionList[2]"],
            "{v:?}"
        );
        assert!(
            v.errors[0]
                .to_string()
                .contains("is not a valid regular expression: unclosed group"),
            "{v:?}"
        );
    }

    #[test]
    fn warns_about_an_exclusion_that_matches_every_tag() {
        let v = check_with("exclusionList", json!([".*"]));
        assert!(v.allowed());
        assert!(
            v.warnings
                .iter()
                .any(|w| w.contains("spec.exclusionList[0]") && w.contains("every tag")),
            "{v:?}"
        );
        let v = check_with("exclusionList", json!(["^.*\\.sig$"]));
        assert!(v.warnings.is_empty(), "{v:?}");
    }

    #[test]
    fn refuses_invalid_secret_and_service_account_names() {
        let spec = json!({"image": "a", "interval": "5m", "secretRef": {"name": "Reg_Cred"},
                          "certSecretRef": {"name": ""}, "proxySecretRef": {"name": "ok"},
                          "serviceAccountName": "-sa"});
        let v = check(spec);
        assert_eq!(
            paths(&v),
            [
                "spec.secretRef.name",
                "spec.certSecretRef.name",
                "spec.serviceAccountName"
            ],
            "{v:?}"
        );
    }

    #[test]
    fn refuses_a_secret_reference_without_a_name() {
        let msg = one_error(&check_with("certSecretRef", json!({})));
        assert_eq!(msg, "spec.certSecretRef.name: Required value");
    }

    #[test]
    fn refuses_access_from_without_selectors() {
        let msg = one_error(&check_with("accessFrom", json!({})));
        assert_eq!(msg, "spec.accessFrom.namespaceSelectors: Required value");
    }

    #[test]
    fn refuses_invalid_label_keys_and_values_in_selectors() {
        let access = json!({"namespaceSelectors": [{"matchLabels": {"kubernetes.io/metadata.name": "flux-system"}},
                                                   {"matchLabels": {"bad key": "x", "team": "-no"}}, {"matchLabels": {}}]});
        let v = check_with("accessFrom", access);
        assert_eq!(v.errors.len(), 2, "{v:?}");
        let (key, value) = (v.errors[0].to_string(), v.errors[1].to_string());
        assert!(
            key.starts_with(
                "spec.accessFrom.namespaceSelectors[1].matchLabels[\"bad key\"]: Invalid value: \"bad key\": is not a valid label key"
            ),
            "{key}"
        );
        assert!(value.contains("is not a valid label value"), "{value}");
    }

    #[test]
    fn refuses_an_unknown_provider_listing_the_known_ones() {
        let msg = one_error(&check_with("provider", json!("azure-ad")));
        assert!(
            msg.starts_with("spec.provider: unknown variant \"azure-ad\"")
                && msg.contains("\"generic\", \"aws\", \"azure\", \"gcp\""),
            "{msg}"
        );
    }

    #[test]
    fn warns_about_insecure_and_about_secret_ref_with_a_cloud_provider() {
        let spec = json!({"image": "a", "interval": "5m", "insecure": true, "provider": "aws", "secretRef": {"name": "x"}});
        let v = check(spec);
        assert!(v.allowed(), "{v:?}");
        assert_eq!(v.warnings.len(), 2, "{v:?}");
        assert!(
            v.warnings
                .iter()
                .any(|w| w.contains("spec.secretRef is ignored") && w.contains("\"aws\""))
        );
        assert!(v.warnings.iter().any(|w| w.contains("spec.insecure")));
    }

    #[test]
    fn reports_every_failure_of_an_object_together() {
        let spec = json!({"image": "alpine:latest", "interval": "x", "exclusionList": ["("],
                          "serviceAccountName": "Bad"});
        let v = check(spec);
        assert_eq!(
            paths(&v),
            [
                "spec.image",
                "spec.interval",
                "spec.exclusionList[0]",
                "spec.serviceAccountName"
            ],
            "{v:?}"
        );
        let msg = v.denial_message(Kind::ImageRepository, "podinfo");
        assert!(
            msg.starts_with("ImageRepository.image.toolkit.fluxcd.io \"podinfo\" is invalid: ["),
            "{msg}"
        );
    }
}
