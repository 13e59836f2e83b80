//! What validation reports: every failure with its field path, and the warnings.

use super::Kind;
use serde_json::Value;
use std::fmt;

/// One failure: the field path and what is wrong with the field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted path, e.g. `spec.exclusionList[3]`.
    pub path: String,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// The field is missing; the text says what to set (it may be empty).
    Required(String),
    /// The field holds `value`, which is wrong; `why` says why and how to fix it.
    Invalid {
        /// The offending value.
        value: Value,
        /// What is wrong and the fix.
        why: String,
    },
    /// The field holds a wrong value, which the text (a shared parser's message) quotes.
    InvalidQuoted(String),
    /// The value is not of the field's type, in serde's words.
    WrongType(String),
}

impl FieldError {
    /// The Kubernetes `StatusCause.reason` for this failure.
    pub fn cause_reason(&self) -> &'static str {
        match self.problem {
            Problem::Required(_) => "FieldValueRequired",
            Problem::Invalid { .. } | Problem::InvalidQuoted(_) => "FieldValueInvalid",
            Problem::WrongType(_) => "FieldValueTypeInvalid",
        }
    }
}

impl FieldError {
    /// What is wrong, without the field path: the message of a `StatusCause`, whose
    /// `field` holds the path (the API server's own causes are written so, and kubectl
    /// prints them as `* FIELD: MESSAGE`).
    pub fn body(&self) -> String {
        match &self.problem {
            Problem::Required(what) if what.is_empty() => "Required value".to_string(),
            Problem::Required(what) => format!("Required value: {what}"),
            Problem::Invalid { value, why } => format!("Invalid value: {value}: {why}"),
            Problem::InvalidQuoted(text) => format!("Invalid value: {text}"),
            Problem::WrongType(text) => text.clone(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.body())
    }
}

/// The outcome of validating one object: every failure and every warning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Failures; the object is denied when there is any.
    pub errors: Vec<FieldError>,
    /// Warnings, shown by kubectl as `Warning: ...`; they never deny.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// True when nothing failed.
    pub fn allowed(&self) -> bool {
        self.errors.is_empty()
    }

    /// The denial message in the API server's style:
    /// `ImageRepository.image.toolkit.fluxcd.io "name" is invalid: [a, b]`.
    pub fn denial_message(&self, kind: Kind, name: &str) -> String {
        let list: Vec<String> = self.errors.iter().map(|e| e.to_string()).collect();
        let body = match list.as_slice() {
            [one] => one.clone(),
            _ => format!("[{}]", list.join(", ")),
        };
        format!("{kind}.{} {name:?} is invalid: {body}", crate::api::GROUP)
    }

    /// Records a failure.
    pub fn fail(&mut self, path: impl Into<String>, problem: Problem) {
        self.errors.push(FieldError {
            path: path.into(),
            problem,
        });
    }

    /// Records that the field at `path` holds the wrong `value`, and why.
    pub fn invalid(&mut self, path: impl Into<String>, value: Value, why: impl Into<String>) {
        let why = why.into();
        self.fail(path, Problem::Invalid { value, why });
    }

    /// Records that the field at `path` is missing, and what to set.
    pub fn required(&mut self, path: impl Into<String>, what: impl Into<String>) {
        self.fail(path, Problem::Required(what.into()));
    }

    /// Records a warning.
    pub fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }
}

impl From<FieldError> for Verdict {
    fn from(error: FieldError) -> Self {
        Verdict {
            errors: vec![error],
            warnings: Vec::new(),
        }
    }
}
