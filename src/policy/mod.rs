//! Image policies, pure: which tag is the newest under a semver range, alphabetical or
//! numerical order, after an optional `filterTags`. No HTTP, no Kubernetes.

mod error;
mod filter;
pub mod semver;

pub use error::{INVALID_POLICY_REASON, PolicyError};
pub use filter::FilterTags;
