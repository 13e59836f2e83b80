//! Scan errors, classified for status conditions and metrics. Messages name the registry
//! host and the repository, and never a credential or a token.

use std::fmt;

/// What kind of failure a scan met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanErrorKind {
    /// 401/403 from the registry or its token service, or credentials it refused.
    AuthenticationFailed,
    /// 404: the repository does not exist (`NAME_UNKNOWN`) or the tag is missing.
    NotFound,
    /// The registry (or its token service, or the proxy) could not be reached.
    Unreachable,
    /// The scan took longer than its timeout.
    TimedOut,
    /// 429 (or 503 with `Retry-After`) after the bounded retries.
    RateLimited,
    /// A response that does not follow the distribution API (bad JSON, unsafe or looping
    /// `Link`, oversized page).
    Malformed,
    /// More tags than the configured cap.
    TooManyTags,
    /// The TLS handshake failed (unknown CA, missing client certificate, ...).
    Tls,
    /// The request could not be built: bad CA/certificate PEM, bad proxy address, bad
    /// exclusion regex.
    InvalidConfig,
    /// Any other registry answer (5xx after retries, unexpected status).
    RegistryError,
}

impl ScanErrorKind {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanErrorKind::AuthenticationFailed => "authentication_failed",
            ScanErrorKind::NotFound => "not_found",
            ScanErrorKind::Unreachable => "unreachable",
            ScanErrorKind::TimedOut => "timed_out",
            ScanErrorKind::RateLimited => "rate_limited",
            ScanErrorKind::Malformed => "malformed_response",
            ScanErrorKind::TooManyTags => "too_many_tags",
            ScanErrorKind::Tls => "tls",
            ScanErrorKind::InvalidConfig => "invalid_config",
            ScanErrorKind::RegistryError => "registry_error",
        }
    }

    /// The Flux condition reason: `AuthenticationFailed` for 401/403, otherwise
    /// `ReadOperationFailed`.
    pub fn condition_reason(self) -> &'static str {
        match self {
            ScanErrorKind::AuthenticationFailed => "AuthenticationFailed",
            _ => "ReadOperationFailed",
        }
    }
}

impl fmt::Display for ScanErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed scan or digest lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    kind: ScanErrorKind,
    registry: String,
    repository: String,
    detail: String,
}

impl ScanError {
    pub(crate) fn new(
        kind: ScanErrorKind,
        registry: &str,
        repository: &str,
        detail: impl Into<String>,
    ) -> ScanError {
        ScanError {
            kind,
            registry: registry.to_string(),
            repository: repository.to_string(),
            detail: detail.into(),
        }
    }

    /// An error about the scanner's own configuration, before any registry is involved.
    pub(crate) fn config(detail: impl Into<String>) -> ScanError {
        ScanError::new(ScanErrorKind::InvalidConfig, "", "", detail)
    }

    pub fn kind(&self) -> ScanErrorKind {
        self.kind
    }

    /// The registry API host the error is about (empty for configuration errors).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The detail without the registry/repository prefix.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ScanErrorKind::AuthenticationFailed => "authentication failed",
            ScanErrorKind::NotFound => "not found",
            ScanErrorKind::Unreachable => "registry unreachable",
            ScanErrorKind::TimedOut => "timed out",
            ScanErrorKind::RateLimited => "rate limited",
            ScanErrorKind::Malformed => "malformed registry response",
            ScanErrorKind::TooManyTags => "too many tags",
            ScanErrorKind::Tls => "TLS failure",
            ScanErrorKind::InvalidConfig => "invalid scan configuration",
            ScanErrorKind::RegistryError => "registry error",
        };
        if self.registry.is_empty() {
            write!(f, "{what}: {}", self.detail)
        } else {
            write!(
                f,
                "{what} for repository {:?} on registry {}: {}",
                self.repository, self.registry, self.detail
            )
        }
    }
}

impl std::error::Error for ScanError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_authentication_failures_get_the_authentication_reason() {
        assert_eq!(
            ScanErrorKind::AuthenticationFailed.condition_reason(),
            "AuthenticationFailed"
        );
        for k in [
            ScanErrorKind::NotFound,
            ScanErrorKind::Unreachable,
            ScanErrorKind::TimedOut,
            ScanErrorKind::RateLimited,
            ScanErrorKind::Malformed,
            ScanErrorKind::TooManyTags,
            ScanErrorKind::Tls,
        ] {
            assert_eq!(k.condition_reason(), "ReadOperationFailed");
        }
    }

    #[test]
    fn messages_name_the_registry_and_repository() {
        let e = ScanError::new(
            ScanErrorKind::NotFound,
            "localhost:5000",
            "team/app",
            "404 NAME_UNKNOWN",
        );
        assert_eq!(
            e.to_string(),
            "not found for repository \"team/app\" on registry localhost:5000: 404 NAME_UNKNOWN"
        );
    }
}
