//! `filterTags.pattern` and `filterTags.extract`, applied to tags under each policy kind.
//! Input: pattern, extract, then tags, one a line. A filter is refused with a reason or
//! compiled; every selection is one of the tags, and one that the filter keeps.
#![no_main]

use image_reflector::policy::{FilterTags, Policy, Selector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let mut lines = input.split('\n');
    let pattern = lines.next().unwrap_or_default();
    let extract = lines.next().unwrap_or_default();
    let tags: Vec<&str> = lines.collect();
    let filter = match FilterTags::new(pattern, Some(extract)) {
        Ok(f) => f,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    for tag in &tags {
        let _ = filter.apply(tag);
    }
    let policies = [
        Policy::alphabetical("asc"),
        Policy::alphabetical("desc"),
        Policy::numerical("asc"),
        Policy::numerical("desc"),
        Policy::semver(">=0.0.0-0"),
    ];
    for policy in policies.into_iter().flatten() {
        let selector = Selector::new(policy, Some(filter.clone()));
        let evaluation = selector.evaluate(tags.iter().copied());
        assert_eq!(evaluation.counts.tags, tags.len());
        if let Some(selected) = evaluation.selected {
            assert!(tags.contains(&selected.tag));
            assert!(filter.apply(selected.tag).is_some());
        }
    }
});
