//! The one error type of the policy module: every way a user can write a policy that can
//! never be evaluated.

/// Flux's condition reason for every [`PolicyError`]: the object is stalled until its spec
/// is fixed.
pub const INVALID_POLICY_REASON: &str = "InvalidPolicy";

/// A policy that cannot be evaluated. Each message names the bad value, what is wrong with
/// it and how to write it instead; [`PolicyError::field`] gives the ImagePolicy field it
/// came from, for callers (the admission webhook) that report field paths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `spec.policy.semver.range` does not parse as a Masterminds/semver v3 constraint.
    #[error(
        "invalid semver range {range:?}: {problem}; write a Masterminds/semver constraint \
         such as \"1.2.x\", \">=1.2.0 <2.0.0\", \"^1.2\", \"~1.2.3\" or \"1.2 - 1.4\" \
         (comma or space for AND, \"||\" for OR)"
    )]
    InvalidRange {
        /// The range as written.
        range: String,
        /// What is wrong, and where.
        problem: String,
    },
    /// `spec.filterTags.pattern` is not a regular expression.
    #[error(
        "invalid filterTags pattern {pattern:?}: {problem}; write a regular expression in \
         Go's RE2 syntax, e.g. \"^v(?P<version>[0-9.]+)$\""
    )]
    InvalidPattern {
        /// The pattern as written.
        pattern: String,
        /// The regular expression compiler's complaint.
        problem: String,
    },
    /// `spec.filterTags.extract` is malformed or names a group the pattern does not have.
    #[error("invalid filterTags extract {extract:?}: {problem}")]
    InvalidExtract {
        /// The extract template as written.
        extract: String,
        /// What is wrong, and how to fix it.
        problem: String,
    },
    /// `spec.policy.{alphabetical,numerical}.order` is neither `asc` nor `desc`.
    #[error(
        "invalid {field} {order:?}: write \"asc\" (select the highest) or \"desc\" (select \
         the lowest)"
    )]
    InvalidOrder {
        /// The field path, `spec.policy.alphabetical.order` or `spec.policy.numerical.order`.
        field: &'static str,
        /// The order as written.
        order: String,
    },
}

impl PolicyError {
    /// Flux's condition reason for this error (always `InvalidPolicy`).
    pub fn reason(&self) -> &'static str {
        INVALID_POLICY_REASON
    }

    /// The ImagePolicy field the bad value came from (v1 field paths).
    pub fn field(&self) -> &'static str {
        match self {
            PolicyError::InvalidRange { .. } => "spec.policy.semver.range",
            PolicyError::InvalidPattern { .. } => "spec.filterTags.pattern",
            PolicyError::InvalidExtract { .. } => "spec.filterTags.extract",
            PolicyError::InvalidOrder { field, .. } => field,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_flux_reason_invalid_policy() {
        let errors = [
            PolicyError::InvalidRange {
                range: "x".into(),
                problem: "p".into(),
            },
            PolicyError::InvalidPattern {
                pattern: "(".into(),
                problem: "p".into(),
            },
            PolicyError::InvalidExtract {
                extract: "$x".into(),
                problem: "p".into(),
            },
            PolicyError::InvalidOrder {
                field: "spec.policy.numerical.order",
                order: "up".into(),
            },
        ];
        for e in errors {
            assert_eq!(e.reason(), "InvalidPolicy");
        }
    }

    #[test]
    fn range_error_names_the_value_and_shows_valid_syntax() {
        let e = PolicyError::InvalidRange {
            range: "1.0.0p".into(),
            problem: "unexpected \"p\"".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("\"1.0.0p\""), "{msg}");
        assert!(msg.contains(">=1.2.0 <2.0.0"), "{msg}");
        assert_eq!(e.field(), "spec.policy.semver.range");
    }
}
