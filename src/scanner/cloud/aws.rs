//! AWS: ECR and ECR Public, through the official AWS SDK crates.
//!
//! - **The controller's identity** is the SDK's default credential chain (`aws-config`):
//!   environment keys, the shared config and credentials files, a web identity token
//!   file with a role (IRSA: `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`, STS
//!   `AssumeRoleWithWebIdentity`), the container credentials endpoint (EKS Pod Identity,
//!   ECS), instance metadata (IMDSv2). Its region is the registry's (ECR's region from
//!   the host, us-east-1 for ECR Public), as in Flux.
//! - **A ServiceAccount's identity**: its TokenRequest token (audience
//!   `sts.amazonaws.com`) and its `eks.amazonaws.com/role-arn` annotation, exchanged with
//!   STS `AssumeRoleWithWebIdentity` in the registry's region, session name
//!   `NAME.NAMESPACE.REGION.fluxcd.io` (Flux's).
//! - **The registry credential**: ECR `GetAuthorizationToken` (ECR Public's in
//!   us-east-1) with those credentials; its token is base64 `AWS:PASSWORD`, used as
//!   Basic credentials.
//!
//! Endpoints are the SDK's own: its resolution (FIPS for `dkr.ecr-fips` hosts) and its
//! overrides (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL_ECR`,
//! `AWS_ENDPOINT_URL_ECR_PUBLIC`, the config file's `endpoint_url`). HTTP goes through
//! reqwest (`http.rs`), with the scan's proxy for STS and ECR.

use super::env::CloudEnv;
use super::hosts::RegistryTarget;
use super::http::aws_http_client;
use super::metrics::CloudMetrics;
use super::{Cloud, CloudError, Step, error::quote};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use base64::Engine as _;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// The annotation naming the IAM role a ServiceAccount assumes (as EKS IRSA has it).
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// The audience of a ServiceAccount token STS accepts.
pub const AUDIENCE: &str = "sts.amazonaws.com";

static ROLE_ARN: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^arn:aws[\w-]*:iam::[0-9]{1,30}:role/.{1,200}$").expect("static regex")
});

/// The role a ServiceAccount's annotation names.
pub(super) fn role_arn(
    namespace: &str,
    name: &str,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<String, CloudError> {
    match annotations.get(ROLE_ARN_ANNOTATION).map(|s| s.trim()) {
        None | Some("") => Err(CloudError::new(
            Cloud::Aws,
            Step::NoIdentity,
            format!(
                "service account {namespace}/{name} has no {ROLE_ARN_ANNOTATION} annotation; annotate it with the IAM role to assume (arn:aws:iam::ACCOUNT:role/NAME)"
            ),
        )),
        Some(arn) if ROLE_ARN.is_match(arn) => Ok(arn.to_string()),
        Some(arn) => Err(CloudError::new(
            Cloud::Aws,
            Step::NoIdentity,
            format!(
                "service account {namespace}/{name}: the {ROLE_ARN_ANNOTATION} annotation {arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
            ),
        )),
    }
}

/// Flux's role session name, within STS's 64 characters.
pub(super) fn session_name(namespace: &str, name: &str, region: &str) -> String {
    let full = format!("{name}.{namespace}.{region}.fluxcd.io");
    full.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(*c))
        .take(64)
        .collect()
}

/// The SDK configurations, one per region and kind (with or without the controller's
/// credential chain), loaded once: loading reads the environment and shared files.
#[derive(Default)]
pub(super) struct Aws {
    configs: Mutex<HashMap<(String, bool), SdkConfig>>,
}

impl Aws {
    async fn config(&self, region: &str, with_chain: bool, http: &reqwest::Client) -> SdkConfig {
        let key = (region.to_string(), with_chain);
        if let Some(c) = self
            .configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return c.clone();
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .http_client(aws_http_client(http.clone()));
        if !with_chain {
            loader = loader.no_credentials();
        }
        let config = loader.load().await;
        self.configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, config.clone());
        config
    }

    /// The controller's credentials from the default chain, with their expiry (Unix
    /// seconds). `http` serves the chain's own requests (STS, the container endpoint,
    /// instance metadata): the process's client, not an object's proxy.
    pub(super) async fn controller_credentials(
        &self,
        region: &str,
        http: &reqwest::Client,
        metrics: &CloudMetrics,
    ) -> Result<(Credentials, Option<i64>), CloudError> {
        let config = self.config(region, true, http).await;
        let no_identity = || {
            CloudError::new(
                Cloud::Aws,
                Step::NoIdentity,
                "no AWS credentials: the default chain (environment keys, shared config and credentials files, web identity token file, container credentials endpoint, instance metadata) found none",
            )
        };
        let provider = config.credentials_provider().ok_or_else(no_identity)?;
        let result = provider.provide_credentials().await;
        metrics.exchange(Cloud::Aws, Step::TokenService, result.is_ok());
        match result {
            Ok(c) => {
                let expiry = c.expiry().and_then(unix_seconds);
                Ok((c, expiry))
            }
            Err(CredentialsError::CredentialsNotLoaded(_)) => Err(no_identity()),
            Err(e) => Err(CloudError::new(
                Cloud::Aws,
                Step::TokenService,
                format!(
                    "the AWS credential chain failed (in {region}): {}",
                    quote(&DisplayErrorContext(&e).to_string(), &[])
                ),
            )),
        }
    }

    /// STS `AssumeRoleWithWebIdentity` with a ServiceAccount's token.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn assume_role(
        &self,
        region: &str,
        role_arn: &str,
        session: &str,
        web_identity_token: &str,
        process_http: &reqwest::Client,
        http: &reqwest::Client,
        metrics: &CloudMetrics,
    ) -> Result<(Credentials, Option<i64>), CloudError> {
        let config = self.config(region, false, process_http).await;
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&config)
                .http_client(aws_http_client(http.clone()))
                .build(),
        );
        let result = sts
            .assume_role_with_web_identity()
            .role_arn(role_arn)
            .role_session_name(session)
            .web_identity_token(web_identity_token)
            .send()
            .await;
        metrics.exchange(Cloud::Aws, Step::TokenService, result.is_ok());
        let what = format!("AssumeRoleWithWebIdentity for role {role_arn} in {region}");
        let out = result
            .map_err(|e| sdk_error(Step::TokenService, "STS", &what, &e, &[web_identity_token]))?;
        let c = out.credentials().ok_or_else(|| {
            CloudError::new(
                Cloud::Aws,
                Step::TokenService,
                format!("STS answered {what} without credentials"),
            )
        })?;
        let expiry = c.expiration().secs();
        let credentials = Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(expiry.max(0) as u64)),
            "image-reflector-sts-web-identity",
        );
        Ok((credentials, Some(expiry)))
    }

    /// ECR's (or ECR Public's) authorization token for `target`: the Basic username and
    /// password, and when they expire.
    pub(super) async fn registry_credential(
        &self,
        target: &RegistryTarget,
        credentials: Credentials,
        process_http: &reqwest::Client,
        http: &reqwest::Client,
        metrics: &CloudMetrics,
    ) -> Result<(String, String, Option<i64>), CloudError> {
        let region = target
            .aws_region()
            .unwrap_or(super::hosts::ECR_PUBLIC_REGION);
        let config = self.config(region, false, process_http).await;
        let secret = credentials.secret_access_key().to_string();
        let session = credentials.session_token().unwrap_or_default().to_string();
        let secrets = [secret.as_str(), session.as_str()];
        let (token, expires_at, service) = match target {
            RegistryTarget::EcrPublic => {
                let client = aws_sdk_ecrpublic::Client::from_conf(
                    aws_sdk_ecrpublic::config::Builder::from(&config)
                        .credentials_provider(credentials)
                        .http_client(aws_http_client(http.clone()))
                        .build(),
                );
                let result = client.get_authorization_token().send().await;
                metrics.exchange(Cloud::Aws, Step::RegistryExchange, result.is_ok());
                let what = format!("GetAuthorizationToken in {region}");
                let out = result.map_err(|e| {
                    sdk_error(Step::RegistryExchange, "ECR Public", &what, &e, &secrets)
                })?;
                let data = out.authorization_data();
                (
                    data.and_then(|d| d.authorization_token())
                        .map(str::to_string),
                    data.and_then(|d| d.expires_at()).map(|t| t.secs()),
                    "ECR Public",
                )
            }
            _ => {
                let fips = matches!(target, RegistryTarget::Ecr { fips: true, .. });
                let client = aws_sdk_ecr::Client::from_conf(
                    aws_sdk_ecr::config::Builder::from(&config)
                        .credentials_provider(credentials)
                        .use_fips(fips)
                        .http_client(aws_http_client(http.clone()))
                        .build(),
                );
                let result = client.get_authorization_token().send().await;
                metrics.exchange(Cloud::Aws, Step::RegistryExchange, result.is_ok());
                let what = format!("GetAuthorizationToken in {region}");
                let out = result
                    .map_err(|e| sdk_error(Step::RegistryExchange, "ECR", &what, &e, &secrets))?;
                let data = out.authorization_data().first();
                (
                    data.and_then(|d| d.authorization_token())
                        .map(str::to_string),
                    data.and_then(|d| d.expires_at()).map(|t| t.secs()),
                    "ECR",
                )
            }
        };
        let bad = |why: &str| {
            CloudError::new(
                Cloud::Aws,
                Step::RegistryExchange,
                format!("{service} answered GetAuthorizationToken in {region} {why}"),
            )
        };
        let token = token.ok_or_else(|| bad("without an authorization token"))?;
        let (username, password) = decode_authorization_token(&token)
            .ok_or_else(|| bad("with a token that is not base64 of USER:PASSWORD"))?;
        Ok((username, password, expires_at))
    }
}

/// An ECR authorization token: base64 of `USER:PASSWORD`.
pub(super) fn decode_authorization_token(token: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty() && !password.is_empty()).then(|| (user.to_string(), password.to_string()))
}

fn unix_seconds(t: std::time::SystemTime) -> Option<i64> {
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
}

/// An SDK error as a login error: a service's refusal with its code and message, or why
/// the service could not be asked.
fn sdk_error<E>(
    step: Step,
    service: &str,
    what: &str,
    e: &SdkError<E, HttpResponse>,
    secrets: &[&str],
) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = match e {
        SdkError::ServiceError(se) => {
            let meta = se.err().meta();
            let reason = match (meta.code(), meta.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                (None, Some(m)) => m.to_string(),
                // An error body the SDK could not read (not the service's protocol).
                (None, None) => format!("HTTP {}", se.raw().status().as_u16()),
            };
            format!("{service} refused {what}: {}", quote(&reason, secrets))
        }
        SdkError::TimeoutError(_) => format!("{service} did not answer {what} in time"),
        other => format!(
            "cannot reach {service} for {what}: {}",
            quote(&DisplayErrorContext(other).to_string(), secrets)
        ),
    };
    CloudError::new(Cloud::Aws, step, detail)
}

/// Which source of the default chain would give the controller's credentials, for
/// `scan --dry-run` (the chain's order; nothing is read but the environment and whether
/// files exist).
pub(super) fn describe(env: &CloudEnv) -> String {
    let profile = env.get("AWS_PROFILE").unwrap_or("default");
    let shared = [
        env.path("AWS_SHARED_CREDENTIALS_FILE")
            .or_else(|| env.home_path(".aws/credentials")),
        env.path("AWS_CONFIG_FILE")
            .or_else(|| env.home_path(".aws/config")),
    ];
    if env.get("AWS_ACCESS_KEY_ID").is_some() && env.get("AWS_SECRET_ACCESS_KEY").is_some() {
        "access keys from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)".to_string()
    } else if let Some(file) = shared.iter().flatten().find(|p| p.is_file()) {
        format!(
            "profile {profile:?} of the shared config ({}; further sources of the default chain if it has none)",
            file.display()
        )
    } else if let (Some(file), Some(role)) = (
        env.get("AWS_WEB_IDENTITY_TOKEN_FILE"),
        env.get("AWS_ROLE_ARN"),
    ) {
        format!(
            "web identity token file {file} for role {role} (IRSA), through STS AssumeRoleWithWebIdentity"
        )
    } else if let Some(uri) = env
        .get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .or(env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"))
    {
        format!("the container credentials endpoint {uri} (EKS Pod Identity, ECS)")
    } else if env.is_true("AWS_EC2_METADATA_DISABLED") {
        "none: no keys, profile, web identity or container endpoint, and instance metadata is disabled (AWS_EC2_METADATA_DISABLED)".to_string()
    } else {
        let at = env
            .get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or("http://169.254.169.254");
        format!("instance metadata (IMDSv2) at {at}, the last source of the default chain")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn annotated(arn: Option<&str>) -> BTreeMap<String, String> {
        arn.map(|a| (ROLE_ARN_ANNOTATION.to_string(), a.to_string()))
            .into_iter()
            .collect()
    }

    #[test]
    fn the_role_comes_from_the_annotation_or_its_absence_is_named() {
        assert_eq!(
            role_arn(
                "apps",
                "puller",
                &annotated(Some("arn:aws:iam::123456789012:role/ecr-pull"))
            )
            .unwrap(),
            "arn:aws:iam::123456789012:role/ecr-pull"
        );
        let e = role_arn("apps", "puller", &annotated(None)).unwrap_err();
        assert_eq!(e.step, Step::NoIdentity);
        assert!(
            e.to_string()
                .contains("apps/puller has no eks.amazonaws.com/role-arn annotation"),
            "{e}"
        );
        let e = role_arn("apps", "puller", &annotated(Some("ecr-pull"))).unwrap_err();
        assert!(e.to_string().contains("is not an IAM role ARN"), "{e}");
        assert!(
            role_arn(
                "a",
                "b",
                &annotated(Some("arn:aws-cn:iam::123456789012:role/x"))
            )
            .is_ok()
        );
    }

    #[test]
    fn session_names_are_flux_s_within_sts_limits() {
        assert_eq!(
            session_name("apps", "puller", "us-east-1"),
            "puller.apps.us-east-1.fluxcd.io"
        );
        assert_eq!(session_name(&"n".repeat(63), "x", "eu-west-1").len(), 64);
    }

    #[test]
    fn authorization_tokens_decode_to_basic_credentials() {
        // moto's token.
        assert_eq!(
            decode_authorization_token("QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu"),
            Some(("AWS".into(), "123456789012-auth-token".into()))
        );
        assert_eq!(decode_authorization_token("not base64!"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("AWS");
        assert_eq!(decode_authorization_token(&no_colon), None);
    }

    #[test]
    fn dry_runs_name_the_source_the_chain_would_use() {
        let env = CloudEnv::from_pairs([
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        assert!(describe(&env).starts_with("access keys from the environment"));
        let env = CloudEnv::from_pairs([
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            ),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("HOME", "/nonexistent"),
        ]);
        assert!(describe(&env).contains("(IRSA)"), "{}", describe(&env));
        let env = CloudEnv::from_pairs([
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("HOME", "/nonexistent"),
        ]);
        assert!(describe(&env).starts_with("none"));
        let env = CloudEnv::from_pairs([("HOME", "/nonexistent")]);
        assert!(describe(&env).contains("IMDSv2"));
    }
}
