//! Semver ranges as Flux users write them: the Masterminds/semver v3 constraint syntax,
//! with its own parser here (the `semver` crate's Cargo requirement syntax differs), and
//! the `semver` crate only for versions and their precedence.
//!
//! # Syntax
//!
//! A range is one or more AND groups separated by `||` (OR). An AND group is one or more
//! comparators separated by whitespace or a comma (optionally surrounded by whitespace). A
//! comparator is an optional operator, optional whitespace, and a version:
//!
//! - operators `=` (also no operator), `!=`, `>`, `<`, `>=` (or `=>`), `<=` (or `=<`),
//!   `~` (or `~>`) and `^`;
//! - versions with an optional leading `v`, one to three numeric parts (`1`, `1.2`,
//!   `1.2.3`), any of which may be a wildcard `x`, `X` or `*` (parts after a wildcard are
//!   ignored), then an optional `-pre.release` and `+build` (build is ignored);
//! - a hyphen range `A - B` (whitespace on both sides of the `-`, no operators) means
//!   `>= A, <= B`; without the whitespace `1.2-1.4` is version `1.2` with pre-release
//!   `1.4`.
//!
//! Partial versions and wildcards behave as in Masterminds: `1.2.x` and `=1.2` mean
//! `>=1.2.0 <1.3.0`, `1` and `1.x` mean `>=1.0.0 <2.0.0`, `*` matches every release,
//! `>1.2` means "minor above 1.2" (`>=1.3.0`), `<=1.2` means `<1.3.0`, `~1.2.3` means
//! `>=1.2.3 <1.3.0`, `~1` means `>=1.0.0 <2.0.0`, `^1.2.3` means `>=1.2.3 <2.0.0`,
//! `^0.2.3` means `>=0.2.3 <0.3.0` and `^0.0.3` means `>=0.0.3 <0.0.4`.
//!
//! # Pre-releases
//!
//! The rule of Masterminds/semver v3 (since v3.4.0): a version with a pre-release
//! (`1.2.3-rc.1`) can match an AND group only if at least one comparator of that group has
//! a pre-release itself (`>=1.2.3-0`, `^1.x-0`); within such a group every comparator
//! then compares pre-releases by ordinary semver precedence (so `>=1.0.0-0 <2.0.0` admits
//! `1.5.0-rc.1`, and so does `^1.x-0`). Unlike npm, the pre-release need not be on the same
//! `major.minor.patch` as the comparator. Groups without a pre-release comparator only
//! ever match releases. (Masterminds before v3.4.0 required every comparator of the group
//! to carry a pre-release; the ranges Flux documents, such as `^1.x-0`, behave the same
//! under both rules.)
//!
//! # Tags
//!
//! A tag is a version if it is strict semver 2.0 after removing one optional leading `v`
//! ([`parse_tag`]): `1.2.3`, `v1.2.3-rc.1+build.5`; not `1.2`, `01.2.3`, `V1.2.3`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use semver::{Prerelease, Version};

use super::PolicyError;

/// Parses a tag as a version: strict semver 2.0 with one optional leading `v`. `None` for
/// tags that are not versions (a semver policy skips them).
pub fn parse_tag(tag: &str) -> Option<Version> {
    let text = tag.strip_prefix('v').unwrap_or(tag);
    // Cheap rejections before the full parser: a version starts with a digit.
    if !text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Version::parse(text).ok()
}

/// A parsed semver range (Masterminds/semver v3 constraint syntax); see the module docs for
/// the syntax and the pre-release rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    source: String,
    groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    comparators: Vec<Comparator>,
    /// At least one comparator has a pre-release: pre-release versions may match.
    admits_prereleases: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Tilde,
    Caret,
}

/// Which part of the comparator's version was a wildcard or missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wild {
    /// `1.2.3`: fully specified.
    None,
    /// `*`, `x`: the major part is a wildcard.
    Major,
    /// `1`, `1.x`: the minor part is missing or a wildcard.
    Minor,
    /// `1.2`, `1.2.x`: the patch part is missing or a wildcard.
    Patch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    op: Op,
    /// The comparator's version, wildcard parts as 0, build metadata dropped.
    version: Version,
    wild: Wild,
}

impl Range {
    /// Parses a range written in the Masterminds/semver v3 constraint syntax.
    pub fn parse(s: &str) -> Result<Range, PolicyError> {
        let invalid = |problem: String| PolicyError::InvalidRange {
            range: s.to_owned(),
            problem,
        };
        let mut groups = Vec::new();
        for (index, text) in s.split("||").enumerate() {
            let comparators = parse_group(text).map_err(|problem| {
                if s.contains("||") {
                    invalid(format!(
                        "in OR group {} ({:?}): {problem}",
                        index + 1,
                        text.trim()
                    ))
                } else {
                    invalid(problem)
                }
            })?;
            let admits_prereleases = comparators.iter().any(|c| !c.version.pre.is_empty());
            groups.push(Group {
                comparators,
                admits_prereleases,
            });
        }
        Ok(Range {
            source: s.to_owned(),
            groups,
        })
    }

    /// Whether `v` satisfies the range: some OR group has every comparator satisfied, and
    /// `v` is a release or the group admits pre-releases.
    pub fn matches(&self, v: &Version) -> bool {
        self.groups.iter().any(|g| g.matches(v))
    }

    /// The range as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Range {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Range::parse(s)
    }
}

impl Group {
    fn matches(&self, v: &Version) -> bool {
        if !v.pre.is_empty() && !self.admits_prereleases {
            return false;
        }
        self.comparators.iter().all(|c| c.matches(v))
    }
}

impl Comparator {
    fn matches(&self, v: &Version) -> bool {
        let c = &self.version;
        let ord = v.cmp_precedence(c);
        match self.op {
            Op::Eq => {
                if self.wild == Wild::None {
                    ord == Ordering::Equal
                } else {
                    self.tilde(v, ord)
                }
            }
            Op::Ne => {
                if self.wild != Wild::None {
                    if v.major != c.major {
                        return true;
                    }
                    if self.wild == Wild::Minor {
                        return false;
                    }
                    if v.minor != c.minor {
                        return true;
                    }
                    if self.wild == Wild::Patch {
                        return v.pre != c.pre;
                    }
                    if v.patch != c.patch {
                        return true;
                    }
                }
                ord != Ordering::Equal
            }
            Op::Gt => {
                if self.wild == Wild::None {
                    return ord == Ordering::Greater;
                }
                if v.major != c.major {
                    return v.major > c.major;
                }
                match self.wild {
                    // `>1`: a higher major; `>1.2`: a higher minor.
                    Wild::Minor => false,
                    Wild::Patch => v.minor > c.minor,
                    Wild::Major | Wild::None => ord == Ordering::Greater,
                }
            }
            Op::Lt => ord == Ordering::Less,
            Op::Ge => ord != Ordering::Less,
            Op::Le => match self.wild {
                Wild::None => ord != Ordering::Greater,
                Wild::Minor => v.major <= c.major,
                Wild::Major | Wild::Patch => {
                    v.major < c.major || (v.major == c.major && v.minor <= c.minor)
                }
            },
            Op::Tilde => self.tilde(v, ord),
            Op::Caret => {
                if ord == Ordering::Less {
                    return false;
                }
                if c.major > 0 || self.wild == Wild::Minor {
                    return v.major == c.major;
                }
                if v.major > 0 {
                    return false;
                }
                if c.minor > 0 || self.wild == Wild::Patch {
                    return v.minor == c.minor;
                }
                if v.minor > 0 {
                    return false;
                }
                v.patch == c.patch
            }
        }
    }

    /// `~`: at least the comparator's version, same major, and same minor unless the minor
    /// was a wildcard; `~0.0.0` (and `~*`) admits everything.
    fn tilde(&self, v: &Version, ord: Ordering) -> bool {
        let c = &self.version;
        if ord == Ordering::Less {
            return false;
        }
        if c.major == 0
            && c.minor == 0
            && c.patch == 0
            && matches!(self.wild, Wild::None | Wild::Major)
        {
            return true;
        }
        if v.major != c.major {
            return false;
        }
        v.minor == c.minor || self.wild == Wild::Minor
    }
}

/// Whitespace as Masterminds sees it.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

fn skip_space(s: &str) -> &str {
    s.trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8))
}

fn is_segment_char(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'x' | b'X' | b'*')
}

fn is_identifier_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// One AND group: comparators separated by whitespace or a comma.
fn parse_group(text: &str) -> Result<Vec<Comparator>, String> {
    let mut rest = skip_space(text);
    if rest.is_empty() {
        return Err(if text.is_empty() {
            "empty constraint".to_owned()
        } else {
            "blank constraint".to_owned()
        });
    }
    let mut out = Vec::with_capacity(2);
    loop {
        let (op, after_op) = scan_op(rest);
        let after_op = skip_space(after_op);
        let start = rest;
        let (version, after) = scan_version(after_op).map_err(|p| {
            format!(
                "{p} in {:?}",
                start.split([',']).next().unwrap_or(start).trim()
            )
        })?;

        // A hyphen range: a bare version, whitespace, `-`, whitespace, a bare version.
        let trimmed = skip_space(after);
        let mut after = after;
        if op.is_none() && trimmed.len() < after.len() && trimmed.starts_with('-') {
            let past_hyphen = &trimmed[1..];
            let upper_text = skip_space(past_hyphen);
            if upper_text.len() < past_hyphen.len() {
                let (upper, after_upper) = scan_version(upper_text)
                    .map_err(|p| format!("{p} after the \"-\" of a hyphen range"))?;
                out.push(version.with_op(Op::Ge));
                out.push(upper.with_op(Op::Le));
                after = after_upper;
                let trimmed = skip_space(after);
                if trimmed.is_empty() {
                    return Ok(out);
                }
                rest = next_comparator(after, trimmed)?;
                continue;
            }
        }
        out.push(version.with_op(op.unwrap_or(Op::Eq)));
        let trimmed = skip_space(after);
        if trimmed.is_empty() {
            return Ok(out);
        }
        rest = next_comparator(after, trimmed)?;
    }
}

/// After a comparator: a comma or whitespace must separate it from the next one.
fn next_comparator<'a>(after: &'a str, trimmed: &'a str) -> Result<&'a str, String> {
    let next = if let Some(past_comma) = trimmed.strip_prefix(',') {
        skip_space(past_comma)
    } else if trimmed.len() < after.len() {
        trimmed
    } else {
        return Err(format!(
            "unexpected {:?} after a version",
            trimmed.chars().take(12).collect::<String>()
        ));
    };
    if next.is_empty() {
        return Err("a comma must be followed by another comparator".to_owned());
    }
    Ok(next)
}

fn scan_op(s: &str) -> (Option<Op>, &str) {
    let two = |op| (Some(op), &s[2..]);
    let one = |op| (Some(op), &s[1..]);
    match s.as_bytes() {
        [b'!', b'=', ..] => two(Op::Ne),
        [b'>', b'=', ..] | [b'=', b'>', ..] => two(Op::Ge),
        [b'<', b'=', ..] | [b'=', b'<', ..] => two(Op::Le),
        [b'~', b'>', ..] => two(Op::Tilde),
        [b'=', ..] => one(Op::Eq),
        [b'>', ..] => one(Op::Gt),
        [b'<', ..] => one(Op::Lt),
        [b'~', ..] => one(Op::Tilde),
        [b'^', ..] => one(Op::Caret),
        _ => (None, s),
    }
}

/// A comparator's version before its operator is known.
struct Partial {
    version: Version,
    wild: Wild,
}

impl Partial {
    fn with_op(self, op: Op) -> Comparator {
        Comparator {
            op,
            version: self.version,
            wild: self.wild,
        }
    }
}

/// Scans `v?SEG(.SEG(.SEG)?)?(-PRE)?(+BUILD)?` from the front of `s`; returns the version
/// and the unread rest.
fn scan_version(s: &str) -> Result<(Partial, &str), String> {
    let bytes = s.as_bytes();
    let mut i = usize::from(bytes.first() == Some(&b'v'));
    let mut segments: [&str; 3] = ["", "", ""];
    let mut n = 0;
    loop {
        let start = i;
        while i < bytes.len() && is_segment_char(bytes[i]) {
            i += 1;
        }
        if i == start {
            return Err(if s.is_empty() {
                "missing version".to_owned()
            } else {
                format!(
                    "expected a version (like 1.2.3, 1.2.x or *) at {:?}",
                    s.chars().take(12).collect::<String>()
                )
            });
        }
        segments[n] = &s[start..i];
        n += 1;
        if n == 3 || i + 1 >= bytes.len() || bytes[i] != b'.' || !is_segment_char(bytes[i + 1]) {
            break;
        }
        i += 1;
    }
    let mut pre = "";
    if bytes.get(i) == Some(&b'-') {
        let end = scan_identifiers(bytes, i + 1);
        if end > i + 1 {
            pre = &s[i + 1..end];
            i = end;
        }
    }
    if bytes.get(i) == Some(&b'+') {
        let end = scan_identifiers(bytes, i + 1);
        if end > i + 1 {
            i = end;
        }
    }

    let is_wild = |seg: &str| matches!(seg, "x" | "X" | "*");
    let number = |seg: &str| -> Result<u64, String> {
        if !seg.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "version part {seg:?} is neither a number nor a wildcard (x, X, *)"
            ));
        }
        seg.parse::<u64>()
            .map_err(|_| format!("version part {seg:?} is too large"))
    };
    let (wild, major, minor, patch) = if is_wild(segments[0]) {
        (Wild::Major, 0, 0, 0)
    } else if n < 2 || is_wild(segments[1]) {
        (Wild::Minor, number(segments[0])?, 0, 0)
    } else if n < 3 || is_wild(segments[2]) {
        (Wild::Patch, number(segments[0])?, number(segments[1])?, 0)
    } else {
        (
            Wild::None,
            number(segments[0])?,
            number(segments[1])?,
            number(segments[2])?,
        )
    };
    let pre = if pre.is_empty() {
        Prerelease::EMPTY
    } else {
        Prerelease::new(pre).map_err(|e| format!("pre-release {pre:?}: {e}"))?
    };
    let version = Version {
        major,
        minor,
        patch,
        pre,
        build: semver::BuildMetadata::EMPTY,
    };
    Ok((Partial { version, wild }, &s[i..]))
}

/// The index just past dot-separated identifiers (`[0-9A-Za-z-]+`) starting at `i`, or `i`
/// when there is none.
fn scan_identifiers(bytes: &[u8], i: usize) -> usize {
    let mut end = i;
    loop {
        let start = end;
        while end < bytes.len() && is_identifier_char(bytes[end]) {
            end += 1;
        }
        if end == start {
            return start;
        }
        if end + 1 < bytes.len() && bytes[end] == b'.' && is_identifier_char(bytes[end + 1]) {
            end += 1;
            continue;
        }
        return end;
    }
}

#[cfg(test)]
mod tests;
