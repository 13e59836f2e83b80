//! Validation: one [`Validate`] per kind, over the typed spec. The rules check meaning
//! (references parse, regexes compile, ranges parse, durations, names, access); whether a
//! field has the right type is serde's to say while the spec is read ([`super::spec`]).

mod image_policy;
mod image_repository;
mod memo;

use super::report::Verdict;
use super::{Admission, Kind, spec};
use crate::api::{
    ImagePolicySpec, ImageRepositorySpec, format_duration_without_hours, parse_duration, uses_hours,
};
use serde_json::Value;
use std::time::Duration;

/// The rules of one kind's spec.
pub trait Validate {
    /// Every failure and warning of this spec, for an object in `namespace`; `admission`
    /// gives the cluster view the cross-namespace access check reads.
    fn validate(&self, namespace: &str, admission: &Admission) -> Verdict;
}

/// The verdict on `spec` (None when the object has none) of an object of `kind` in
/// `namespace`: its type error if it does not read as the typed spec, else its rules'.
pub fn verdict(kind: Kind, namespace: &str, spec: Option<Value>, admission: &Admission) -> Verdict {
    fn read_and_validate<S: Validate + serde::de::DeserializeOwned>(
        kind: Kind,
        namespace: &str,
        spec: Option<Value>,
        admission: &Admission,
    ) -> Verdict {
        match spec::read::<S>(kind, spec) {
            Ok(spec) => spec.validate(namespace, admission),
            Err(error) => Verdict::from(error),
        }
    }
    match kind {
        Kind::ImageRepository => {
            read_and_validate::<ImageRepositorySpec>(kind, namespace, spec, admission)
        }
        Kind::ImagePolicy => read_and_validate::<ImagePolicySpec>(kind, namespace, spec, admission),
    }
}

/// Below this, an interval earns a warning about registry rate limits.
pub const SHORT_INTERVAL: Duration = Duration::from_secs(60);

/// Checks the duration `value` at `path` (`allow_hours` false for timeouts, whose pattern
/// has no `h` unit); returns it when it is valid.
fn duration(verdict: &mut Verdict, path: &str, value: &str, allow_hours: bool) -> Option<Duration> {
    match parse_duration(value) {
        Err(e) => {
            verdict.invalid(path, value.into(), e.explanation());
            None
        }
        Ok(d) if !allow_hours && uses_hours(value) => {
            verdict.invalid(
                path,
                value.into(),
                format!(
                    "the timeout may not use hours (Flux's schema has no 'h' unit); write {:?}",
                    format_duration_without_hours(d)
                ),
            );
            None
        }
        Ok(d) if d.is_zero() => {
            verdict.invalid(path, value.into(), "must be greater than zero, e.g. \"5m\"");
            None
        }
        Ok(d) => Some(d),
    }
}

/// Checks an interval at `path`, warning when it is under [`SHORT_INTERVAL`].
fn interval(verdict: &mut Verdict, path: &str, value: &str) -> Option<Duration> {
    let d = duration(verdict, path, value, true)?;
    if d < SHORT_INTERVAL {
        verdict.warn(format!(
            "{path}: {value:?} is under one minute; registries rate-limit frequent scans, consider \"1m\" or more"
        ));
    }
    Some(d)
}

#[cfg(test)]
mod test_support {
    use super::*;

    /// The single error's text; fails when there is not exactly one.
    pub fn one_error(v: &Verdict) -> String {
        assert_eq!(v.errors.len(), 1, "expected one error, got {:#?}", v.errors);
        v.errors[0].to_string()
    }

    /// The failed field paths, in order.
    pub fn paths(v: &Verdict) -> Vec<&str> {
        v.errors.iter().map(|e| e.path.as_str()).collect()
    }

    /// `base` with `key` set to `value`.
    pub fn with(mut base: Value, key: &str, value: Value) -> Value {
        base[key] = value;
        base
    }
}
