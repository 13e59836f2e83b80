//! `policy.semver.range` and the tags it is matched against. Input: the range on the
//! first line, tags on the others. A range is refused with a reason or parsed; the tag a
//! semver policy selects is one of the tags and satisfies the range.
#![no_main]

use image_reflector::policy::semver::{Range, parse_tag};
use image_reflector::policy::{Policy, Selector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let mut lines = input.split('\n');
    let range_text = lines.next().unwrap_or_default();
    let tags: Vec<&str> = lines.collect();
    let range = match Range::parse(range_text) {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(Policy::semver(range_text).is_err());
            return;
        }
    };
    for tag in &tags {
        if let Some(v) = parse_tag(tag) {
            let _ = range.matches(&v);
        }
    }
    let Ok(policy) = Policy::semver(range_text) else {
        panic!("{range_text:?} parses as a range but not as a policy");
    };
    let evaluation = Selector::new(policy, None).evaluate(tags.iter().copied());
    assert_eq!(evaluation.counts.tags, tags.len());
    if let Some(selected) = evaluation.selected {
        assert!(tags.contains(&selected.tag));
        let v = parse_tag(selected.tag).expect("a selected tag is a version");
        assert!(
            range.matches(&v),
            "{:?} selected under {range_text:?}",
            selected.tag
        );
    }
});
