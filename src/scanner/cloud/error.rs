//! Why a cloud login failed: the cloud, the step that failed and what its service said,
//! never a token, key or assertion.

use super::Cloud;
use std::fmt;

/// The step of a cloud login that failed (also a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The registry's host does not belong to the provider's registries.
    UnsupportedRegistry,
    /// No identity to log in with: nothing in the environment or on the metadata
    /// server, a ServiceAccount annotation missing or malformed, or the feature gate off.
    NoIdentity,
    /// The Kubernetes TokenRequest for the ServiceAccount.
    ServiceAccountToken,
    /// The cloud's token service: AWS STS (or the AWS credential chain), Entra ID, the
    /// GCP metadata server, GCP STS or Google's OAuth2 endpoint.
    TokenService,
    /// GCP service account impersonation (IAM Credentials `generateAccessToken`).
    Impersonation,
    /// The registry's own exchange: ECR `GetAuthorizationToken`, ACR `/oauth2/exchange`.
    RegistryExchange,
}

impl Step {
    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::UnsupportedRegistry => "unsupported_registry",
            Step::NoIdentity => "no_identity",
            Step::ServiceAccountToken => "service_account_token",
            Step::TokenService => "token_service",
            Step::Impersonation => "impersonation",
            Step::RegistryExchange => "registry_exchange",
        }
    }
}

/// A failed cloud login. The message says which cloud, which step and what its service
/// answered (codes and descriptions, with every secret the login sent removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudError {
    pub cloud: Cloud,
    pub step: Step,
    detail: String,
}

impl CloudError {
    pub(crate) fn new(cloud: Cloud, step: Step, detail: impl Into<String>) -> CloudError {
        CloudError {
            cloud,
            step,
            detail: detail.into(),
        }
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} login: {}", self.cloud.as_str(), self.detail)
    }
}

impl std::error::Error for CloudError {}

/// The longest part of a service's answer quoted in an error.
const MAX_QUOTE_CHARS: usize = 300;

/// A service's answer fit for an error message: every secret replaced, control
/// characters and runs of whitespace folded to one space, at most 300 characters.
pub(crate) fn quote(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(*s, "<redacted>");
    }
    let folded: String = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if folded.chars().count() > MAX_QUOTE_CHARS {
        let cut: String = folded.chars().take(MAX_QUOTE_CHARS).collect();
        format!("{cut}...")
    } else {
        folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_lose_secrets_control_characters_and_length() {
        let q = quote(
            "bad\n token  s3cr3t-value\r\n rejected",
            &["s3cr3t-value", ""],
        );
        assert_eq!(q, "bad token <redacted> rejected");
        let long = "x ".repeat(400);
        assert!(quote(&long, &[]).ends_with("..."));
        assert!(quote(&long, &[]).chars().count() <= MAX_QUOTE_CHARS + 3);
    }

    #[test]
    fn messages_name_the_cloud() {
        let e = CloudError::new(Cloud::Aws, Step::RegistryExchange, "ECR refused");
        assert_eq!(e.to_string(), "aws login: ECR refused");
        assert_eq!(e.step.as_str(), "registry_exchange");
    }
}
