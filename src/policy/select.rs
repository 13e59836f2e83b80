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
mod tests;
