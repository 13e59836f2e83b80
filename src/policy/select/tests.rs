use super::*;

fn pick(policy: Policy, filter: Option<(&str, Option<&str>)>, tags: &[&str]) -> Option<String> {
    let filter = filter.map(|(p, e)| FilterTags::new(p, e).unwrap());
    Selector::new(policy, filter)
        .select(tags.iter().copied())
        .map(|s| s.tag.to_owned())
}

fn semver(range: &str) -> Policy {
    Policy::semver(range).unwrap()
}

fn alphabetical(order: &str) -> Policy {
    Policy::alphabetical(order).unwrap()
}

fn numerical(order: &str) -> Policy {
    Policy::numerical(order).unwrap()
}

#[test]
fn semver_selects_the_highest_version_in_range_and_skips_non_versions() {
    let tags = ["1.0.0", "1.0.0.1", "1.0.0p", "1.0.1", "1.2.0", "0.1.0"];
    assert_eq!(pick(semver("1.0.x"), None, &tags).as_deref(), Some("1.0.1"));
}

#[test]
fn semver_reports_the_tag_with_its_v_prefix() {
    let tags = ["v1.2.3", "v1.0.0", "v0.1.0"];
    assert_eq!(
        pick(semver("1.0.x"), None, &tags).as_deref(),
        Some("v1.0.0")
    );
    assert_eq!(
        pick(semver(">=1.0.0"), None, &tags).as_deref(),
        Some("v1.2.3")
    );
}

#[test]
fn semver_selects_nothing_when_no_tag_is_a_version_in_range() {
    assert_eq!(pick(semver("1.0.x"), None, &["b1.2.3", "b1.0.0"]), None);
    assert_eq!(pick(semver("1.0.x"), None, &[]), None);
    assert_eq!(pick(semver("1.0.x"), None, &["1.2.0"]), None);
}

#[test]
fn semver_selects_the_latest_stable_version_over_newer_prereleases() {
    let tags = ["5.1.3", "5.1.4", "6.0.0-rc.1", "5.1.5-rc.1", "latest"];
    assert_eq!(
        pick(semver(">=1.0.0"), None, &tags).as_deref(),
        Some("5.1.4")
    );
    assert_eq!(pick(semver("5.1.x"), None, &tags).as_deref(), Some("5.1.4"));
}

#[test]
fn semver_release_candidates_with_a_filter_as_flux_documents() {
    let tags = [
        "1.0.0-rc.1",
        "1.0.0-rc.2",
        "1.0.0",
        "1.1.0-rc.1",
        "2.0.0-rc.1",
        "1.2.0",
    ];
    let rc = Some((".*-rc.*", None));
    assert_eq!(
        pick(semver("^1.x-0"), rc, &tags).as_deref(),
        Some("1.1.0-rc.1")
    );
}

#[test]
fn semver_on_extracted_values_reports_the_original_tag() {
    let tags = ["app-1.2.3", "app-1.10.0", "app-1.9.9", "other-9.9.9"];
    let extract = Some((r"^app-(?P<version>.*)$", Some("$version")));
    assert_eq!(
        pick(semver("^1"), extract, &tags).as_deref(),
        Some("app-1.10.0")
    );
}

#[test]
fn alphabetical_asc_selects_the_latest_rfc3339_timestamp() {
    let tags = [
        "RELEASE.2021-09-09T21-37-07Z",
        "RELEASE.2021-10-13T00-23-17Z",
        "RELEASE.2021-08-25T00-41-18Z",
        "latest",
    ];
    let extract = Some((r"^RELEASE\.(?P<timestamp>.*)Z$", Some("$timestamp")));
    assert_eq!(
        pick(alphabetical("asc"), extract, &tags).as_deref(),
        Some("RELEASE.2021-10-13T00-23-17Z")
    );
    assert_eq!(
        pick(alphabetical("desc"), extract, &tags).as_deref(),
        Some("RELEASE.2021-08-25T00-41-18Z")
    );
}

#[test]
fn alphabetical_compares_bytewise() {
    let tags = ["xenon", "argon", "Zinc", "helium"];
    assert_eq!(
        pick(alphabetical("asc"), None, &tags).as_deref(),
        Some("xenon")
    );
    // Upper case sorts before lower case, as Go compares strings.
    assert_eq!(
        pick(alphabetical("desc"), None, &tags).as_deref(),
        Some("Zinc")
    );
    assert_eq!(
        pick(alphabetical(""), None, &tags).as_deref(),
        Some("xenon")
    );
}

#[test]
fn alphabetical_on_rfc3339_timestamps() {
    let tags = [
        "2021-01-08T19:02:39-08:00",
        "2021-01-08T19:20:00-08:00",
        "2020-12-31T23:59:59-08:00",
    ];
    assert_eq!(
        pick(alphabetical("asc"), None, &tags).as_deref(),
        Some("2021-01-08T19:20:00-08:00")
    );
}

#[test]
fn numerical_selects_by_value_not_by_text() {
    let ints = [
        "-62", "-88", "73", "72", "15", "16", "15", "29", "-33", "-91", "9",
    ];
    assert_eq!(pick(numerical("asc"), None, &ints).as_deref(), Some("73"));
    assert_eq!(pick(numerical("desc"), None, &ints).as_deref(), Some("-91"));
    let floats = [
        "47.40896403322944",
        "-27.85",
        "53.47333823144817",
        "3.2008658570411086",
    ];
    assert_eq!(
        pick(numerical("asc"), None, &floats).as_deref(),
        Some("53.47333823144817")
    );
    let unix = ["1606234201", "1606364286", "1606334092", "1606334284"];
    assert_eq!(
        pick(numerical("asc"), None, &unix).as_deref(),
        Some("1606364286")
    );
    assert_eq!(
        pick(numerical("desc"), None, &unix).as_deref(),
        Some("1606234201")
    );
}

#[test]
fn numerical_build_numbers_via_extract() {
    let tags = [
        "main-3c1f9a2-1611",
        "main-0d2e7b1-1612",
        "main-9f8e7d6-998",
        "feature-x-abc1234-5000",
    ];
    let extract = Some((r"^main-[a-fA-F0-9]+-(?P<ts>.*)", Some("$ts")));
    assert_eq!(
        pick(numerical("asc"), extract, &tags).as_deref(),
        Some("main-0d2e7b1-1612")
    );
}

#[test]
fn numerical_skips_values_that_are_not_numbers() {
    assert_eq!(
        pick(numerical("asc"), None, &["0", "1a", "b"]).as_deref(),
        Some("0")
    );
    assert_eq!(
        pick(numerical("asc"), None, &["NaN", "1e999", "2"]).as_deref(),
        Some("2")
    );
    assert_eq!(pick(numerical("asc"), None, &["latest"]), None);
    assert_eq!(
        pick(numerical("asc"), None, &["1", "Inf"]).as_deref(),
        Some("Inf")
    );
}

#[test]
fn ties_go_to_the_bytewise_greatest_original_tag() {
    // Same extracted value.
    let same = Some((r"^(\d+)-", Some("$1")));
    let tags = ["7-b", "7-c", "7-a", "6-z"];
    assert_eq!(pick(numerical("asc"), same, &tags).as_deref(), Some("7-c"));
    assert_eq!(
        pick(alphabetical("asc"), same, &tags).as_deref(),
        Some("7-c")
    );
    assert_eq!(pick(numerical("desc"), same, &tags).as_deref(), Some("6-z"));
    // Equal semver precedence.
    let tags = ["1.2.3", "v1.2.3", "1.2.3+b", "1.2.3+a"];
    assert_eq!(pick(semver("*"), None, &tags).as_deref(), Some("v1.2.3"));
    // Equal numbers.
    assert_eq!(
        pick(numerical("asc"), None, &["1", "1.0", "01"]).as_deref(),
        Some("1.0")
    );
}

#[test]
fn evaluate_lists_candidates_after_filtering_with_counts() {
    let selector = Selector::new(
        semver("1.x"),
        Some(FilterTags::new(r"^v?(.*)$", None).unwrap()),
    );
    let filtered = Selector::new(
        semver("1.x"),
        Some(FilterTags::new(r"^v", Some("")).unwrap()),
    );
    let tags = ["v1.0.0", "v2.0.0", "vnext", "1.5.0"];
    let e = selector.evaluate(tags);
    assert_eq!(e.selected.map(|s| s.tag), Some("1.5.0"));
    assert_eq!(
        e.counts,
        Counts {
            tags: 4,
            filtered: 4,
            not_parsed: 1,
            out_of_range: 1,
            eligible: 2
        }
    );
    let e = filtered.evaluate(tags);
    assert_eq!(e.selected.as_ref().map(|s| s.tag), Some("v1.0.0"));
    let skips: Vec<_> = e.candidates.iter().map(|c| (c.tag, c.skipped)).collect();
    assert_eq!(
        skips,
        [
            ("v1.0.0", None),
            ("v2.0.0", Some(Skip::OutOfRange)),
            ("vnext", Some(Skip::NotSemver))
        ]
    );
    assert_eq!(e.counts.tags, 4);
    assert_eq!(e.counts.filtered, 3);
}

#[test]
fn selection_reports_the_extracted_value() {
    let selector = Selector::new(
        numerical("asc"),
        Some(FilterTags::new(r"^build-(\d+)$", Some("$1")).unwrap()),
    );
    let s = selector.select(["build-10", "build-9"]).unwrap();
    assert_eq!((s.tag, s.value.as_ref()), ("build-10", "10"));
}

#[test]
fn from_spec_treats_empty_filter_fields_as_absent() {
    let s = Selector::from_spec(semver("*"), Some(""), Some("")).unwrap();
    assert!(s.filter.is_none());
    let s = Selector::from_spec(semver("*"), None, Some("v$0")).unwrap();
    assert_eq!(s.select(["1.0.0"]).map(|s| s.value.into_owned()), None);
    // The empty pattern matches the empty string at the start, so $0 is empty.
    let s = Selector::from_spec(alphabetical("asc"), None, Some("x$0")).unwrap();
    assert_eq!(
        s.select(["a"]).map(|s| s.value.into_owned()).as_deref(),
        Some("x")
    );
    let err = Selector::from_spec(semver("*"), Some("("), None).unwrap_err();
    assert_eq!(err.field(), "spec.filterTags.pattern");
}

#[test]
fn refuses_an_unknown_order_naming_the_field() {
    let err = Policy::numerical("up").unwrap_err();
    assert_eq!(err.field(), "spec.policy.numerical.order");
    assert!(err.to_string().contains("\"up\""), "{err}");
    assert_eq!(Policy::alphabetical("DESC").unwrap(), alphabetical("desc"));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Tags that exercise every policy: versions (some with `v`, pre-releases, build
    /// metadata), numbers, words, and shared prefixes for extraction.
    fn tag() -> impl Strategy<Value = String> {
        prop_oneof![
            (
                0u8..3,
                0u8..3,
                0u8..3,
                prop::option::of("(rc|beta)\\.[1-3]"),
                any::<bool>()
            )
                .prop_map(|(a, b, c, pre, v)| {
                    let pre = pre.map(|p| format!("-{p}")).unwrap_or_default();
                    format!("{}{a}.{b}.{c}{pre}", if v { "v" } else { "" })
                }),
            (-50i32..50).prop_map(|n| n.to_string()),
            (0u8..20, 0u8..4).prop_map(|(n, f)| format!("{n}.{f}")),
            "[a-c]{1,3}",
            ("[ab]", 0u8..5).prop_map(|(p, n)| format!("{p}-{n}")),
        ]
    }

    fn policy() -> impl Strategy<Value = Policy> {
        prop_oneof![
            prop::sample::select(vec!["*", "1.x", ">=1.0.0-0", "^0.1", "<2.0.0 || 2.1.x"])
                .prop_map(|r| Policy::semver(r).unwrap()),
            prop::sample::select(vec!["asc", "desc"])
                .prop_map(|o| Policy::alphabetical(o).unwrap()),
            prop::sample::select(vec!["asc", "desc"]).prop_map(|o| Policy::numerical(o).unwrap()),
        ]
    }

    fn filter() -> impl Strategy<Value = Option<FilterTags>> {
        prop::sample::select(vec![
            None,
            Some((r"^v?(.*)$", "$1")),
            Some((r"^[ab]-(\d+)$", "$1")),
            Some((r"^[ab]-(\d+)$", "")),
            Some((r"\d", "")),
        ])
        .prop_map(|f| f.map(|(p, e)| FilterTags::new(p, Some(e)).unwrap()))
    }

    /// The policy's key for a value, if the policy considers it, as an independent
    /// restatement of the policy.
    #[derive(Debug)]
    enum Key {
        Version(Version),
        Text(String),
        Number(f64),
    }

    fn key(policy: &Policy, value: &str) -> Option<Key> {
        match policy {
            Policy::Semver(range) => {
                let v = parse_tag(value)?;
                range.matches(&v).then_some(Key::Version(v))
            }
            Policy::Alphabetical { .. } => Some(Key::Text(value.to_owned())),
            Policy::Numerical { .. } => parse_number(value).map(Key::Number),
        }
    }

    /// `Greater` when `a` is preferred to `b` by the policy (ties not broken).
    fn prefer(policy: &Policy, a: &Key, b: &Key) -> Ordering {
        let asc = match (a, b) {
            (Key::Version(a), Key::Version(b)) => a.cmp_precedence(b),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            (Key::Number(a), Key::Number(b)) => a.partial_cmp(b).unwrap(),
            _ => unreachable!(),
        };
        match policy {
            Policy::Alphabetical { order: Order::Desc }
            | Policy::Numerical { order: Order::Desc } => asc.reverse(),
            _ => asc,
        }
    }

    proptest! {
        #[test]
        fn the_selected_tag_is_never_beaten_by_another_candidate(
            tags in prop::collection::vec(tag(), 0..40),
            policy in policy(),
            filter in filter(),
        ) {
            let selector = Selector::new(policy.clone(), filter.clone());
            let selected = selector.select(tags.iter().map(String::as_str));
            let eligible: Vec<(&str, Key)> = tags
                .iter()
                .filter_map(|t| {
                    let value = match &filter {
                        Some(f) => f.apply(t)?.into_owned(),
                        None => t.clone(),
                    };
                    Some((t.as_str(), key(&policy, &value)?))
                })
                .collect();
            match selected {
                None => prop_assert!(eligible.is_empty()),
                Some(s) => {
                    let (_, chosen) = eligible
                        .iter()
                        .find(|(t, _)| *t == s.tag)
                        .expect("the selected tag is eligible");
                    for (t, k) in &eligible {
                        let beats = prefer(&policy, k, chosen).then_with(|| t.cmp(&s.tag));
                        prop_assert_ne!(beats, Ordering::Greater, "{} beats {}", t, s.tag);
                    }
                }
            }
        }

        #[test]
        fn selection_does_not_depend_on_input_order(
            tags in prop::collection::vec(tag(), 0..40),
            policy in policy(),
            filter in filter(),
            seed in any::<u64>(),
        ) {
            let selector = Selector::new(policy, filter);
            let forward = selector.select(tags.iter().map(String::as_str));
            let mut shuffled = tags.clone();
            // A deterministic shuffle from the seed (Fisher-Yates with an LCG).
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                shuffled.swap(i, (state >> 33) as usize % (i + 1));
            }
            let mixed = selector.select(shuffled.iter().map(String::as_str));
            prop_assert_eq!(forward, mixed);
        }

        #[test]
        fn evaluate_and_select_agree(
            tags in prop::collection::vec(tag(), 0..40),
            policy in policy(),
            filter in filter(),
        ) {
            let selector = Selector::new(policy, filter);
            let e = selector.evaluate(tags.iter().map(String::as_str));
            prop_assert_eq!(&e.selected, &selector.select(tags.iter().map(String::as_str)));
            prop_assert_eq!(e.counts.tags, tags.len());
            prop_assert_eq!(e.counts.filtered, e.candidates.len());
            prop_assert_eq!(
                e.counts.eligible,
                e.candidates.iter().filter(|c| c.skipped.is_none()).count()
            );
            prop_assert_eq!(
                e.counts.filtered,
                e.counts.eligible + e.counts.not_parsed + e.counts.out_of_range
            );
        }
    }
}
