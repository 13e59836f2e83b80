//! Selecting the newest tag: the three policy kinds and the selector that applies
//! `filterTags` first. One pass over the tags, no sorting.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use semver::Version;

use super::semver::{Range, parse_tag};
use super::{FilterTags, PolicyError};

/// The order of an alphabetical or numerical policy. As in Flux, `asc` selects the *last*
/// value in ascending order (the highest) and `desc` the last in descending order (the
/// lowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Select the highest value (Flux's default).
    #[default]
    Asc,
    /// Select the lowest value.
    Desc,
}

impl Order {
    /// Parses `asc` or `desc` (any case; empty means `asc`, Flux's default). `field` names
    /// the field in the error, e.g. `spec.policy.numerical.order`.
    pub fn parse(s: &str, field: &'static str) -> Result<Order, PolicyError> {
        match s.to_ascii_lowercase().as_str() {
            "" | "asc" => Ok(Order::Asc),
            "desc" => Ok(Order::Desc),
            _ => Err(PolicyError::InvalidOrder {
                field,
                order: s.to_owned(),
            }),
        }
    }

    /// `asc` or `desc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }

    /// Orients an ascending comparison so that `Greater` means "selected over".
    fn orient(self, ord: Ordering) -> Ordering {
        match self {
            Order::Asc => ord,
            Order::Desc => ord.reverse(),
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An ImagePolicy's `spec.policy`: how to choose the newest among the (extracted) values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// The highest version within the range; values that are not strict semver (an
    /// optional leading `v` allowed) are skipped.
    Semver(Range),
    /// The last value when sorted bytewise (as Go compares strings).
    Alphabetical {
        /// `asc` selects the bytewise greatest, `desc` the least.
        order: Order,
    },
    /// The last value when sorted as 64-bit floating point numbers.
    ///
    /// Values are parsed like Go's `strconv.ParseFloat` for decimal input (`42`, `-1.5`,
    /// `1e6`, `.5`, `+3`, `Inf`); unlike Flux, which fails the whole evaluation on the
    /// first value that does not parse, values that do not parse (including `NaN`, values
    /// beyond the range of a float, and Go's hexadecimal floats) are skipped.
    Numerical {
        /// `asc` selects the greatest number, `desc` the least.
        order: Order,
    },
}

impl Policy {
    /// A semver policy from a range in the Masterminds syntax.
    pub fn semver(range: &str) -> Result<Policy, PolicyError> {
        Range::parse(range).map(Policy::Semver)
    }

    /// An alphabetical policy from `asc`/`desc` (empty means `asc`).
    pub fn alphabetical(order: &str) -> Result<Policy, PolicyError> {
        Order::parse(order, "spec.policy.alphabetical.order")
            .map(|order| Policy::Alphabetical { order })
    }

    /// A numerical policy from `asc`/`desc` (empty means `asc`).
    pub fn numerical(order: &str) -> Result<Policy, PolicyError> {
        Order::parse(order, "spec.policy.numerical.order").map(|order| Policy::Numerical { order })
    }

    /// `semver`, `alphabetical` or `numerical`.
    pub fn kind(&self) -> &'static str {
        match self {
            Policy::Semver(_) => "semver",
            Policy::Alphabetical { .. } => "alphabetical",
            Policy::Numerical { .. } => "numerical",
        }
    }
}

/// Parses a value for the numerical policy; `None` for values it skips.
pub fn parse_number(value: &str) -> Option<f64> {
    let n: f64 = value.parse().ok()?;
    if n.is_nan() {
        return None;
    }
    // Rust rounds out-of-range input to infinity where Go reports a range error.
    if n.is_infinite() && !value.to_ascii_lowercase().contains("inf") {
        return None;
    }
    Some(n)
}

/// A policy with its optional `filterTags`: the whole of an ImagePolicy's selection rule.
///
/// # Ties
///
/// When two candidates are equal under the policy (tags that extract to the same value;
/// versions of equal semver precedence such as `v1.2.3` and `1.2.3`, or `1.2.3+a` and
/// `1.2.3+b`; numbers that are equal such as `1.0` and `1`), the one whose *original tag*
/// is bytewise greatest is selected, whatever the order of the input and whatever the
/// policy's `order`. (Flux leaves this to map iteration order, i.e. random.)
#[derive(Debug, Clone)]
pub struct Selector {
    /// The policy applied to the values.
    pub policy: Policy,
    /// The filter applied first; `None` passes every tag through unchanged.
    pub filter: Option<FilterTags>,
}

/// The selected tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection<'a> {
    /// The original tag, as the registry lists it.
    pub tag: &'a str,
    /// The value the policy compared (the extracted value, or the tag itself).
    pub value: Cow<'a, str>,
}

/// Why a tag that passed `filterTags` was not considered by the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The value is not strict semver (semver policy).
    NotSemver,
    /// The value is a version outside the range (semver policy).
    OutOfRange,
    /// The value is not a number (numerical policy).
    NotANumber,
}

impl Skip {
    /// A short, stable label (used in JSON output).
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotSemver => "not semver",
            Skip::OutOfRange => "out of range",
            Skip::NotANumber => "not a number",
        }
    }
}

/// A tag that passed `filterTags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The original tag.
    pub tag: &'a str,
    /// The value the policy saw.
    pub value: Cow<'a, str>,
    /// Why the policy did not consider it, if it did not.
    pub skipped: Option<Skip>,
}

/// How many tags reached each stage of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Tags given.
    pub tags: usize,
    /// Tags that passed `filterTags` (all of them without a filter).
    pub filtered: usize,
    /// Filtered tags whose value is not a version or number (semver, numerical).
    pub not_parsed: usize,
    /// Versions outside the semver range.
    pub out_of_range: usize,
    /// Values the policy chose among.
    pub eligible: usize,
}

/// A full evaluation: the selection, the candidates after filtering, and counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation<'a> {
    /// The selected tag, if any value was eligible.
    pub selected: Option<Selection<'a>>,
    /// Tags that passed `filterTags`, in input order.
    pub candidates: Vec<Candidate<'a>>,
    /// Stage counts.
    pub counts: Counts,
}

/// The best candidate so far, with the key the policy compares.
struct Best<'a, K> {
    key: K,
    tag: &'a str,
    value: Cow<'a, str>,
}

impl<'a, K> Best<'a, K> {
    /// Keeps the new candidate if it beats the current best: by `cmp` (`Greater` means the
    /// new key is selected over the best one), ties to the bytewise greater original tag.
    fn offer(
        best: &mut Option<Best<'a, K>>,
        key: K,
        tag: &'a str,
        value: Cow<'a, str>,
        cmp: impl FnOnce(&K, &K) -> Ordering,
    ) {
        let wins = match best {
            None => true,
            Some(b) => cmp(&key, &b.key).then_with(|| tag.cmp(b.tag)) == Ordering::Greater,
        };
        if wins {
            *best = Some(Best { key, tag, value });
        }
    }

    fn into_selection(self) -> Selection<'a> {
        Selection {
            tag: self.tag,
            value: self.value,
        }
    }
}

impl Selector {
    /// A selector from a policy and an optional filter.
    pub fn new(policy: Policy, filter: Option<FilterTags>) -> Selector {
        Selector { policy, filter }
    }

    /// A selector from a policy and a `filterTags` as the API holds it: no filter when
    /// both `pattern` and `extract` are absent or empty; an absent pattern with an extract
    /// is the empty pattern, which matches every tag (as in Flux).
    pub fn from_spec(
        policy: Policy,
        pattern: Option<&str>,
        extract: Option<&str>,
    ) -> Result<Selector, PolicyError> {
        let pattern = pattern.unwrap_or("");
        let extract = extract.filter(|e| !e.is_empty());
        let filter = if pattern.is_empty() && extract.is_none() {
            None
        } else {
            Some(FilterTags::new(pattern, extract)?)
        };
        Ok(Selector { policy, filter })
    }

    /// The newest tag under the policy, after filtering; `None` when no tag is eligible.
    /// Linear in the number of tags.
    pub fn select<'a, I>(&self, tags: I) -> Option<Selection<'a>>
    where
        I: IntoIterator<Item = &'a str>,
    {
        self.run(tags, |_, _, _| {}).0
    }

    /// Like [`Selector::select`], and also lists the candidates after filtering (with the
    /// value each one had and why the policy skipped it, if it did) and counts.
    pub fn evaluate<'a, I>(&self, tags: I) -> Evaluation<'a>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut candidates = Vec::new();
        let (selected, counts) = self.run(tags, |tag, value, skipped| {
            candidates.push(Candidate {
                tag,
                value: value.clone(),
                skipped,
            })
        });
        Evaluation {
            selected,
            candidates,
            counts,
        }
    }

    /// The one pass: filter, parse, keep the best. `visit` sees every filtered tag.
    fn run<'a, I, V>(&self, tags: I, mut visit: V) -> (Option<Selection<'a>>, Counts)
    where
        I: IntoIterator<Item = &'a str>,
        V: FnMut(&'a str, &Cow<'a, str>, Option<Skip>),
    {
        let mut counts = Counts::default();
        let mut scratch = self.filter.as_ref().map(FilterTags::scratch);
        let filtered = tags.into_iter().filter_map(|tag| {
            counts.tags += 1;
            let value = match (&self.filter, &mut scratch) {
                (Some(filter), Some(scratch)) => filter.apply_with(tag, scratch)?,
                _ => Cow::Borrowed(tag),
            };
            Some((tag, value))
        });
        let mut stage = Counts::default();
        let selected = match &self.policy {
            Policy::Semver(range) => {
                let mut best: Option<Best<'a, Version>> = None;
                for (tag, value) in filtered {
                    stage.filtered += 1;
                    let Some(version) = parse_tag(&value) else {
                        stage.not_parsed += 1;
                        visit(tag, &value, Some(Skip::NotSemver));
                        continue;
                    };
                    if !range.matches(&version) {
                        stage.out_of_range += 1;
                        visit(tag, &value, Some(Skip::OutOfRange));
                        continue;
                    }
                    stage.eligible += 1;
                    visit(tag, &value, None);
                    Best::offer(&mut best, version, tag, value, Version::cmp_precedence);
                }
                best.map(Best::into_selection)
            }
            Policy::Alphabetical { order } => {
                let mut best: Option<Best<'a, ()>> = None;
                for (tag, value) in filtered {
                    stage.filtered += 1;
                    stage.eligible += 1;
                    visit(tag, &value, None);
                    let wins = match &best {
                        None => true,
                        Some(b) => {
                            order
                                .orient(value.as_ref().cmp(b.value.as_ref()))
                                .then_with(|| tag.cmp(b.tag))
                                == Ordering::Greater
                        }
                    };
                    if wins {
                        best = Some(Best {
                            key: (),
                            tag,
                            value,
                        });
                    }
                }
                best.map(Best::into_selection)
            }
            Policy::Numerical { order } => {
                let mut best: Option<Best<'a, f64>> = None;
                for (tag, value) in filtered {
                    stage.filtered += 1;
                    let Some(n) = parse_number(&value) else {
                        stage.not_parsed += 1;
                        visit(tag, &value, Some(Skip::NotANumber));
                        continue;
                    };
                    stage.eligible += 1;
                    visit(tag, &value, None);
                    Best::offer(&mut best, n, tag, value, |a, b| {
                        // NaN never gets here, so partial_cmp always answers.
                        order.orient(a.partial_cmp(b).unwrap_or(Ordering::Equal))
                    });
                }
                best.map(Best::into_selection)
            }
        };
        let counts = Counts {
            tags: counts.tags,
            ..stage
        };
        (selected, counts)
    }
}

#[cfg(test)]
mod tests {
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
                prop::sample::select(vec!["asc", "desc"])
                    .prop_map(|o| Policy::numerical(o).unwrap()),
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
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
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
}
