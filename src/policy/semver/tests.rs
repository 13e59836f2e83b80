use super::*;

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

fn admits(range: &str, version: &str) -> bool {
    Range::parse(range)
        .unwrap_or_else(|e| panic!("{range:?} should parse: {e}"))
        .matches(&v(version))
}

fn check(range: &str, yes: &[&str], no: &[&str]) {
    for version in yes {
        assert!(admits(range, version), "{range:?} should admit {version}");
    }
    for version in no {
        assert!(!admits(range, version), "{range:?} should refuse {version}");
    }
}

#[test]
fn wildcard_patch_selects_one_minor_line() {
    check(
        "1.0.x",
        &["1.0.0", "1.0.1", "1.0.99"],
        &["0.9.9", "1.1.0", "2.0.0"],
    );
    check("1.2", &["1.2.0", "1.2.9"], &["1.3.0", "1.1.9"]);
    check("=1.2", &["1.2.0", "1.2.9"], &["1.3.0"]);
    check("v1.0.x", &["1.0.3"], &["1.1.0"]);
}

#[test]
fn wildcard_minor_selects_one_major_line() {
    check("1.x", &["1.0.0", "1.9.9"], &["2.0.0", "0.9.0"]);
    check("1", &["1.0.0", "1.9.9"], &["2.0.0"]);
    check("1.X.x", &["1.5.0"], &["2.0.0"]);
}

#[test]
fn star_matches_every_release_but_no_prerelease() {
    check("*", &["0.0.0", "1.2.3", "99.0.0"], &["1.2.3-rc.1"]);
    check("x", &["3.0.0"], &["3.0.0-alpha"]);
}

#[test]
fn explicit_comparisons() {
    check(">=1.2.0 <2.0.0", &["1.2.0", "1.9.9"], &["1.1.9", "2.0.0"]);
    check(">=1.2.0, <2.0.0", &["1.5.0"], &["2.0.0"]);
    check(">= 1.2.0 , < 2.0.0", &["1.5.0"], &["2.0.0"]);
    check("=1.2.3", &["1.2.3"], &["1.2.4"]);
    check("1.2.3", &["1.2.3"], &["1.2.4"]);
    check("!=1.2.3", &["1.2.4", "1.2.2"], &["1.2.3"]);
    check(">1.2.3", &["1.2.4"], &["1.2.3"]);
    check("<1.2.3", &["1.2.2"], &["1.2.3"]);
    check("<=1.2.3", &["1.2.3"], &["1.2.4"]);
    check("=>1.2.3", &["1.2.3"], &["1.2.2"]);
    check("=<1.2.3", &["1.2.3"], &["1.2.4"]);
    check(">0,<2.0", &["1.0.0", "1.9.9"], &["0.5.0", "2.0.0"]);
}

#[test]
fn partial_versions_in_comparisons_follow_masterminds() {
    // `>1.2` means a higher minor, `>1` a higher major.
    check(">1.2", &["1.3.0", "2.0.0"], &["1.2.9"]);
    check(">1", &["2.0.0"], &["1.9.9"]);
    // `<=1.2` includes all of 1.2.x; `<=2.x` all of 2.
    check("<=1.2", &["1.2.9", "0.1.0"], &["1.3.0"]);
    check("<=2.x", &["2.9.9"], &["3.0.0"]);
    check(">=1.2.x", &["1.2.0"], &["1.1.9"]);
    check("<1.2", &["1.1.9"], &["1.2.0"]);
    check("!=1.2.x", &["1.3.0", "2.2.0"], &["1.2.0", "1.2.7"]);
    check("!=1.x", &["2.0.0"], &["1.5.0"]);
}

#[test]
fn caret_ranges() {
    check("^1.2.3", &["1.2.3", "1.9.0"], &["1.2.2", "2.0.0"]);
    check("^1.2", &["1.2.0", "1.9.9"], &["1.1.0", "2.0.0"]);
    check("^1.2.x", &["1.2.0", "1.9.9"], &["2.0.0"]);
    check("^2.x", &["2.0.0", "2.5.0"], &["3.0.0"]);
    check("^0.2.3", &["0.2.3", "0.2.9"], &["0.3.0", "0.2.2"]);
    check("^0.2", &["0.2.0", "0.2.9"], &["0.3.0"]);
    check("^0.0.3", &["0.0.3"], &["0.0.4"]);
    check("^0.0", &["0.0.3"], &["0.1.0"]);
    check("^0", &["0.2.3"], &["1.0.0"]);
}

#[test]
fn tilde_ranges() {
    check("~1.2.3", &["1.2.3", "1.2.9"], &["1.3.0", "1.2.2"]);
    check("~>1.2.3", &["1.2.4"], &["1.3.0"]);
    check("~1", &["1.0.0", "1.9.0"], &["2.0.0"]);
    check("~2.3", &["2.3.0", "2.3.9"], &["2.4.0"]);
    check("~1.2.x", &["1.2.0"], &["1.3.0"]);
    check("~1.x", &["1.5.0"], &["2.0.0"]);
}

#[test]
fn hyphen_ranges_are_inclusive() {
    check(
        "1.2 - 1.4",
        &["1.2.0", "1.4.0", "1.4.9"],
        &["1.1.9", "1.5.0"],
    );
    check("1.2.3 - 2.3.4", &["1.2.3", "2.3.4"], &["2.3.5", "1.2.2"]);
    check("v1.2 - v1.4.5", &["1.4.5"], &["1.4.6"]);
    check("1.2 - 1.4, !=1.3.1", &["1.3.0"], &["1.3.1"]);
}

#[test]
fn hyphen_without_spaces_is_a_prerelease() {
    // Masterminds: `1.2-1.4.5` is 1.2 with pre-release 1.4.5.
    check("1.2-1.4.5", &["1.2.0-1.4.5", "1.2.3"], &["1.3.0"]);
}

#[test]
fn or_groups() {
    check(
        ">= 1.2, < 3.0.0 || >= 4.2.3",
        &["1.2.0", "2.9.9", "4.2.3"],
        &["3.0.0", "4.2.2"],
    );
    check("1.0.x || 2.0.x", &["1.0.1", "2.0.1"], &["1.1.0"]);
}

#[test]
fn prereleases_only_when_a_comparator_in_the_group_has_one() {
    check(">=1.2.3", &["1.2.3"], &["1.2.4-rc.1", "2.0.0-alpha"]);
    check(
        ">=1.2.3-0",
        &["1.2.3-rc.1", "1.2.4-beta", "1.2.3"],
        &["1.2.2"],
    );
    // One comparator with a pre-release opens the whole group (Masterminds v3.4).
    // 2.0.0-rc.1 sorts before 2.0.0, so `<2.0.0` admits it here (as in Masterminds).
    check(
        ">=1.0.0-0 <2.0.0",
        &["1.5.0-rc.1", "2.0.0-rc.1"],
        &["2.0.0", "0.9.0-rc.1"],
    );
    // Flux's documented release-candidate example.
    check(
        "^1.x-0",
        &["1.0.0-rc.1", "1.9.0-rc.2", "1.9.0"],
        &["2.0.0-rc.1", "0.9.0"],
    );
    // The other OR group does not admit pre-releases.
    check(
        "1.0.x || >=2.0.0-0",
        &["2.1.0-rc.1", "1.0.3"],
        &["1.0.4-rc.1"],
    );
    check(
        "^0.2.3-beta.2",
        &["0.2.3-beta.4", "0.2.4-beta.2"],
        &["0.3.4-beta.2"],
    );
    check("=1.2.3-rc.1", &["1.2.3-rc.1"], &["1.2.3-rc.2", "1.2.3"]);
}

#[test]
fn prerelease_precedence_is_ascii_by_spec() {
    // A-Z sort before a-z, so `>=1.2.3-BETA` admits 1.2.3-alpha.
    check(">=1.2.3-BETA", &["1.2.3-alpha"], &[]);
    check(
        ">=1.2.3-alpha.2",
        &["1.2.3-alpha.10", "1.2.3-beta"],
        &["1.2.3-alpha.1"],
    );
}

#[test]
fn build_metadata_is_ignored_in_ranges_and_versions() {
    check("=1.2.3+abc", &["1.2.3", "1.2.3+zzz"], &["1.2.4"]);
}

/// Facts about Masterminds v3.4's `Check`: (range, version, admitted).
#[test]
fn agrees_with_masterminds_on_its_documented_cases() {
    let cases = [
        ("~0.0.0", "1.2.3", true),
        ("0.x.x", "1.2.3", false),
        ("0.0.x", "1.2.3", false),
        ("0.0.0", "1.2.3", false),
        ("^0.0.0", "1.2.3", false),
        ("= 2.0", "1.2.3", false),
        ("= 2.0", "2.0.0", true),
        ("4.1", "4.1.0", true),
        ("4.1.x", "4.1.3", true),
        ("1.x", "1.4.0", true),
        ("!=4.1", "4.1.0", false),
        ("!=4.1-alpha", "4.1.0-alpha", false),
        ("!=4.1-alpha", "4.1.1-alpha", false),
        ("!=4.1-alpha", "4.1.0", true),
        ("!=4.1", "5.1.0", true),
        ("!=4.x", "5.1.0", true),
        ("!=4.x", "4.1.0", false),
        ("!=4.1.x", "4.2.0", true),
        ("!=4.2.x", "4.2.3", false),
        (">1.1", "4.1.0", true),
        (">1.1", "1.1.0", false),
        ("<1.1", "0.1.0", true),
        ("<1.1", "1.1.0", false),
        ("<1.1", "1.1.1", false),
        ("<1.x", "1.1.1", false),
        ("<1.x", "0.1.1", true),
        ("<1.x", "2.0.0", false),
        ("<1.1.x", "1.2.1", false),
        ("<1.1.x", "1.1.500", false),
        ("<1.1.x", "1.0.500", true),
        ("<1.2.x", "1.1.1", true),
        (">=1.1", "4.1.0", true),
        (">=1.1", "4.1.0-beta", false),
        (">=1.1", "1.1.0", true),
        (">=1.1", "0.0.9", false),
        ("<=1.1", "0.1.0", true),
        ("<=1.1", "0.1.0-alpha", false),
        ("<=1.1-a", "0.1.0-alpha", true),
        ("<=1.1", "1.1.0", true),
        ("<=1.x", "1.1.0", true),
        ("<=2.x", "3.0.0", false),
        ("<=1.1", "1.1.1", true),
        ("<=1.1.x", "1.2.500", false),
        ("<=4.5", "3.4.0", true),
        ("<=4.5", "3.7.0", true),
        ("<=4.5", "4.6.3", false),
        (">1.1, <2", "1.1.1", false),
        (">1.1, <2", "1.2.1", true),
        (">1.1, <3", "4.3.2", false),
        (">=1.1, <2, !=1.2.3", "1.2.3", false),
        (">1.1    <3", "4.3.2", false),
        (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", true),
        (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", false),
        (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", true),
        (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", false),
        ("> 1.1, <     2", "1.1.1", false),
        (">=1.1    < 2    != 1.2.3", "1.2.3", false),
        (">= 1.0.0  <= 2.0.0-beta", "1.0.1-beta", true),
        (">= 1.0.0  <= 2.0.0-beta", "1.0.1", true),
        (">= 1.0.0  <= 2.0.0-beta", "3.0.0", false),
        (">= 1.0.0  <= 2.0.0-beta || > 3", "1.0.1-beta", true),
        (">= 1.0.0  <= 2.0.0-beta || > 3", "3.0.1-beta", false),
        (
            ">= 1.0.0  <= 2.0.0-beta != 1.0.1 || > 3",
            "1.0.1-beta",
            true,
        ),
        (
            ">= 1.0.0  <= 2.0.0-beta != 1.0.1-beta || > 3",
            "1.0.1-beta",
            false,
        ),
        (">= 1.0.0-0  <= 2.0.0", "1.0.1-beta", true),
        ("1.1 - 2", "1.1.1", true),
        ("1.5.0 - 4.5", "3.7.0", true),
        ("1.1-3", "4.3.2", false),
        ("^1.1", "1.1.1", true),
        ("^1.1", "4.3.2", false),
        ("^1.x", "1.1.1", true),
        ("^2.x", "1.1.1", false),
        ("^1.x", "2.1.1", false),
        ("^1.x", "1.1.1-beta1", false),
        ("^1.1.2-alpha", "1.2.1-beta1", true),
        ("^1.2.x-alpha", "1.1.1-beta1", false),
        ("^0.0.1", "0.0.1", true),
        ("^0.0.1", "0.3.1", false),
        ("~*", "2.1.1", true),
        ("~1", "2.1.1", false),
        ("~1", "1.3.5", true),
        ("~1.x", "2.1.1", false),
        ("~1.x", "1.3.5", true),
        ("~1.1", "1.1.1", true),
        ("~1.1", "1.1.1-alpha", false),
        ("~1.1-alpha", "1.1.1-beta", true),
        ("~1.1.1-beta", "1.1.1-alpha", false),
        ("~1.1.1-beta", "1.1.1", true),
        ("~1.2.3", "1.2.5", true),
        ("~1.2.3", "1.2.2", false),
        ("~1.2.3", "1.3.2", false),
        ("~1.1", "1.2.3", false),
        ("~1.3", "2.4.5", false),
        ("1.0.0 - 2.0.0 <=2.0.0", "1.5.0", true),
        ("1.0.0 - 2.0.0, <=2.0.0", "1.5.0", true),
        ("^1.1.1-alpha", "1.1.1-beta", true),
        ("^1.1.1-beta", "1.1.1-alpha", false),
        ("~1.3.6-alpha", "1.3.5-beta", false),
        ("~1.3.5-alpha", "1.3.5-beta", true),
    ];
    for (range, version, expected) in cases {
        assert_eq!(admits(range, version), expected, "{range:?} on {version}");
    }
}

#[test]
fn refuses_ranges_masterminds_refuses() {
    for bad in [
        "",
        " ",
        "1.0.0p",
        "1x",
        "x1",
        "-1",
        "a",
        ">= bar",
        "BAR >= 1.2.3",
        "1.2.3.4",
        "1.0 ||",
        "|| 1.0",
        ">=1.0,",
        ">=1.0,,<2",
        "~1.2 - 1.4",
        "1.0 - >2.0",
        "1.",
        "1.2.3-",
        "1.2.3-01",
        "> = 1.2",
        "18446744073709551616",
    ] {
        let err = Range::parse(bad).expect_err(bad);
        assert!(
            matches!(err, PolicyError::InvalidRange { .. }),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn accepts_flux_documented_ranges() {
    for good in [
        "1.0.x",
        "^1.0",
        "=1.0.0",
        "~1.0",
        ">=1.0",
        ">0,<2.0",
        "5.1.x",
        ">=1.0.0",
        "^1.x-0",
        "v2.3.5-20161202202307-sha.e8fc5e5",
        ">= 1.2.3 < 2.0 || => 3.0 < 4",
        "3 - 4 || => 3.0, < 4",
        "01.2.3",
    ] {
        Range::parse(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
}

#[test]
fn error_points_at_the_bad_part() {
    let msg = Range::parse(">=1.0 <2.0 || 1.0.0p")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("OR group 2"), "{msg}");
    assert!(msg.contains("\"p\""), "{msg}");
    let msg = Range::parse("1x").unwrap_err().to_string();
    assert!(
        msg.contains("\"1x\" is neither a number nor a wildcard"),
        "{msg}"
    );
}

#[test]
fn tags_are_strict_semver_with_an_optional_v() {
    assert_eq!(parse_tag("1.2.3"), Some(v("1.2.3")));
    assert_eq!(parse_tag("v1.2.3-rc.1+b5"), Some(v("1.2.3-rc.1+b5")));
    for not_a_version in [
        "1.2", "1.0.0.1", "1.0.0p", "01.2.3", "V1.2.3", "vv1.2.3", "b1.2.3", "latest", "1.2.3-01",
        "", "v",
    ] {
        assert_eq!(parse_tag(not_a_version), None, "{not_a_version:?}");
    }
}

mod properties {
    use super::super::*;
    use proptest::prelude::*;

    fn version() -> impl Strategy<Value = Version> {
        (
            0u64..4,
            0u64..4,
            0u64..4,
            prop::option::of("(alpha|beta|rc)(\\.[0-9])?"),
        )
            .prop_map(|(major, minor, patch, pre)| Version {
                major,
                minor,
                patch,
                pre: pre.map_or(Prerelease::EMPTY, |p| Prerelease::new(&p).unwrap()),
                build: semver::BuildMetadata::EMPTY,
            })
    }

    fn partial() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..4).prop_map(|a| a.to_string()),
            (0u64..4, 0u64..4).prop_map(|(a, b)| format!("{a}.{b}")),
            (0u64..4, 0u64..4, 0u64..4).prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
            (0u64..4).prop_map(|a| format!("{a}.x")),
        ]
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,24}") {
            let _ = Range::parse(&s);
        }

        #[test]
        fn parsing_operator_soup_never_panics(s in "[0-9xv*.\\-+ ,|<>=!~^a-c]{0,20}") {
            let _ = Range::parse(&s);
        }

        #[test]
        fn a_hyphen_range_is_ge_and_le(a in partial(), b in partial(), v in version()) {
            let hyphen = Range::parse(&format!("{a} - {b}")).unwrap();
            let explicit = Range::parse(&format!(">={a}, <={b}")).unwrap();
            prop_assert_eq!(hyphen.matches(&v), explicit.matches(&v));
        }

        #[test]
        fn or_is_the_union_of_its_groups(a in partial(), b in partial(), v in version()) {
            let either = Range::parse(&format!("^{a} || ~{b}")).unwrap();
            let left = Range::parse(&format!("^{a}")).unwrap();
            let right = Range::parse(&format!("~{b}")).unwrap();
            prop_assert_eq!(either.matches(&v), left.matches(&v) || right.matches(&v));
        }

        #[test]
        fn a_release_range_never_admits_a_prerelease(a in partial(), v in version()) {
            for op in ["", "=", "!=", ">", "<", ">=", "<=", "~", "^"] {
                let range = Range::parse(&format!("{op}{a}")).unwrap();
                if !v.pre.is_empty() {
                    prop_assert!(!range.matches(&v), "{op}{a} admitted {v}");
                }
            }
        }

        #[test]
        fn exact_version_matches_only_itself_by_precedence(v in version(), w in version()) {
            let range = Range::parse(&format!("={v}")).unwrap();
            prop_assert_eq!(range.matches(&w), w.cmp_precedence(&v) == Ordering::Equal);
        }
    }
}
