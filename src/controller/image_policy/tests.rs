use super::*;
use crate::api::{
    AlphabeticalPolicy, ImagePolicyChoice, NamespacedObjectReference, SemVerPolicy, TagFilter,
};

fn spec(choice: ImagePolicyChoice) -> ImagePolicySpec {
    ImagePolicySpec {
        image_repository_ref: NamespacedObjectReference {
            name: "podinfo".into(),
            namespace: None,
        },
        policy: choice,
        ..Default::default()
    }
}

#[test]
fn a_semver_spec_selects_the_highest_version_in_range() {
    let s = spec(ImagePolicyChoice {
        semver: Some(SemVerPolicy {
            range: "5.x".into(),
        }),
        ..Default::default()
    });
    let sel = selector(&s).expect("valid");
    let chosen = sel
        .select(["5.0.1", "5.1.4", "6.0.0", "latest"])
        .expect("a match");
    assert_eq!(chosen.tag, "5.1.4");
}

#[test]
fn filter_tags_extracts_before_the_policy_and_reports_the_original_tag() {
    let mut s = spec(ImagePolicyChoice {
        alphabetical: Some(AlphabeticalPolicy { order: None }),
        ..Default::default()
    });
    s.filter_tags = Some(TagFilter {
        pattern: Some(r"^main-(?P<ts>\d+)$".into()),
        extract: Some("$ts".into()),
    });
    let sel = selector(&s).expect("valid");
    let chosen = sel
        .select(["main-100", "main-200", "dev-999"])
        .expect("a match");
    assert_eq!(chosen.tag, "main-200");
}

#[test]
fn a_spec_with_no_policy_is_refused() {
    let s = spec(ImagePolicyChoice::default());
    let e = selector(&s).expect_err("no policy");
    assert!(
        e.contains("exactly one of semver, alphabetical or numerical"),
        "{e}"
    );
}

#[test]
fn an_invalid_range_is_an_invalid_policy() {
    let s = spec(ImagePolicyChoice {
        semver: Some(SemVerPolicy {
            range: ">=>1".into(),
        }),
        ..Default::default()
    });
    let e = selector(&s).expect_err("invalid range");
    assert!(e.starts_with("spec.policy.semver.range: "), "{e}");
}

#[test]
fn latest_image_carries_the_digest_when_reflected() {
    let r = LatestRef {
        name: "ghcr.io/a/b".into(),
        tag: "1.0".into(),
        digest: Some("sha256:abc".into()),
    };
    assert_eq!(latest_image(&r), "ghcr.io/a/b:1.0@sha256:abc");
}

fn latest(name: &str, tag: &str, digest: Option<&str>) -> LatestRef {
    LatestRef {
        name: name.into(),
        tag: tag.into(),
        digest: digest.map(str::to_string),
    }
}

#[test]
fn the_ready_message_has_fluxs_shape() {
    assert_eq!(
        ready_message(&latest("nginx", "1.27.0", None), None),
        "Latest image tag for nginx resolved to 1.27.0"
    );
    assert_eq!(
        ready_message(
            &latest("nginx", "1.27.1", Some("sha256:b")),
            Some(&latest("nginx", "1.27.0", Some("sha256:a")))
        ),
        "Latest image tag for nginx resolved to 1.27.1 with digest sha256:b (previously nginx:1.27.0@sha256:a)"
    );
    // A previous ref equal to the latest one is not "previous".
    let same = latest("nginx", "1", None);
    assert_eq!(
        ready_message(&same, Some(&same)),
        "Latest image tag for nginx resolved to 1"
    );
}
