//! Image policies, pure: which tag is the newest under a semver range, alphabetical or
//! numerical order, after an optional `filterTags`. No HTTP, no Kubernetes.
//!
//! ```
//! use image_reflector::policy::{FilterTags, Policy, Selector};
//!
//! let selector = Selector::new(
//!     Policy::numerical("asc")?,
//!     Some(FilterTags::new(r"^main-[a-f0-9]+-(?P<ts>\d+)$", Some("$ts"))?),
//! );
//! let tags = ["main-3c1f9a2-1611", "main-0d2e7b1-1612", "latest"];
//! let selected = selector.select(tags).expect("a tag matches");
//! assert_eq!((selected.tag, selected.value.as_ref()), ("main-0d2e7b1-1612", "1612"));
//! # Ok::<(), image_reflector::policy::PolicyError>(())
//! ```

mod error;
mod filter;
mod select;
pub mod semver;

pub use error::{INVALID_POLICY_REASON, PolicyError};
pub use filter::FilterTags;
pub(crate) use filter::regex_problem;
pub use select::{
    Candidate, Counts, Evaluation, Order, Policy, Selection, Selector, Skip, parse_number,
};
