//! Azure: ACR, with an Entra ID token exchanged at the registry.
//!
//! - **The controller's identity**, in the order of Azure's own credential chain without
//!   a shell-out: workload identity (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`,
//!   `AZURE_TENANT_ID`, `AZURE_AUTHORITY_HOST`, as the workload identity webhook sets
//!   them: the file's token is the client assertion), a client secret
//!   (`AZURE_CLIENT_SECRET`), then managed identity from the instance metadata service
//!   (`AZURE_CLIENT_ID` picks a user-assigned identity; `AZURE_POD_IDENTITY_AUTHORITY_HOST`
//!   moves the service, as Azure's SDKs allow).
//! - **A ServiceAccount's identity**: its TokenRequest token (audience
//!   `api://AzureADTokenExchange`) as the client assertion for the
//!   `azure.workload.identity/client-id` annotation, in the tenant of
//!   `azure.workload.identity/tenant-id` (or the controller's `AZURE_TENANT_ID`).
//! - **The registry credential**: the Entra ID token (scope
//!   `https://containerregistry.azure.net/.default`) POSTed to the registry's
//!   `/oauth2/exchange` for a refresh token, used as the password of the user
//!   `00000000-0000-0000-0000-000000000000`; the registry's own Bearer flow does the rest.

use super::env::CloudEnv;
use super::http::{Call, host_of, secure_endpoint};
use super::metrics::CloudMetrics;
use super::{Cloud, CloudError, Step};
use std::collections::BTreeMap;
use std::time::Duration;

pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
/// The audience of a ServiceAccount token Entra ID accepts as a federated credential.
pub const AUDIENCE: &str = "api://AzureADTokenExchange";
/// The scope of tokens ACR exchanges, in every Azure cloud.
pub const ACR_SCOPE: &str = "https://containerregistry.azure.net/.default";
/// The user name ACR expects with a refresh token.
pub const ACR_USERNAME: &str = "00000000-0000-0000-0000-000000000000";

const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com/";
const IMDS: &str = "http://169.254.169.254";
/// The metadata service answers on the node; waiting longer means there is none.
const IMDS_TIMEOUT: Duration = Duration::from_secs(3);

/// A ServiceAccount's tenant and client id.
pub(super) fn identity(
    namespace: &str,
    name: &str,
    annotations: &BTreeMap<String, String>,
    env: &CloudEnv,
) -> Result<(String, String), CloudError> {
    let get = |k: &str| {
        annotations
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let client = get(CLIENT_ID_ANNOTATION).ok_or_else(|| {
        CloudError::new(
            Cloud::Azure,
            Step::NoIdentity,
            format!(
                "service account {namespace}/{name} has no {CLIENT_ID_ANNOTATION} annotation; annotate it with the client id of the managed identity or application to use"
            ),
        )
    })?;
    let tenant = get(TENANT_ID_ANNOTATION)
        .or_else(|| env.get("AZURE_TENANT_ID").map(str::to_string))
        .ok_or_else(|| {
            CloudError::new(
                Cloud::Azure,
                Step::NoIdentity,
                format!(
                    "service account {namespace}/{name} has no {TENANT_ID_ANNOTATION} annotation and the controller has no AZURE_TENANT_ID"
                ),
            )
        })?;
    Ok((tenant, client))
}

fn authority(env: &CloudEnv) -> String {
    let a = env.get("AZURE_AUTHORITY_HOST").unwrap_or(DEFAULT_AUTHORITY);
    if a.ends_with('/') {
        a.to_string()
    } else {
        format!("{a}/")
    }
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
}

impl TokenAnswer {
    /// The expiry in Unix seconds: `expires_on` (IMDS) or now plus `expires_in` (a
    /// number, or a string of one, as IMDS writes it).
    fn expiry(&self, now: i64) -> Option<i64> {
        let num = |v: &serde_json::Value| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        };
        self.expires_on
            .as_ref()
            .and_then(num)
            .or_else(|| self.expires_in.as_ref().and_then(num).map(|s| now + s))
    }
}

/// An Entra ID token for `scope`, with a client assertion (a federated token) or a
/// client secret.
#[allow(clippy::too_many_arguments)]
async fn token_endpoint(
    metrics: &CloudMetrics,
    http: &reqwest::Client,
    env: &CloudEnv,
    tenant: &str,
    client_id: &str,
    secret: Secret<'_>,
    scope: &str,
) -> Result<(String, Option<i64>), CloudError> {
    let url = format!("{}{tenant}/oauth2/v2.0/token", authority(env));
    secure_endpoint(&url).map_err(|why| {
        CloudError::new(
            Cloud::Azure,
            Step::NoIdentity,
            format!("AZURE_AUTHORITY_HOST: {why}"),
        )
    })?;
    let service = format!(
        "the Entra ID token endpoint at {} (tenant {tenant}, client {client_id})",
        host_of(&url)
    );
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", scope),
    ];
    let secret_value = match secret {
        Secret::Assertion(a) => {
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
            form.push(("client_assertion", a));
            a
        }
        Secret::ClientSecret(s) => {
            form.push(("client_secret", s));
            s
        }
    };
    let call = Call {
        cloud: Cloud::Azure,
        step: Step::TokenService,
        service: &service,
        secrets: &[secret_value],
    };
    let body = call.send(metrics, http.post(&url).form(&form)).await?;
    let answer: TokenAnswer = call.parse(&body, "an access token")?;
    let expiry = answer.expiry(jiff::Timestamp::now().as_second());
    Ok((answer.access_token, expiry))
}

enum Secret<'a> {
    Assertion(&'a str),
    ClientSecret(&'a str),
}

/// The controller's Entra ID token for `scope`.
pub(super) async fn controller_token(
    metrics: &CloudMetrics,
    http: &reqwest::Client,
    env: &CloudEnv,
    scope: &str,
) -> Result<(String, Option<i64>), CloudError> {
    let client = env.get("AZURE_CLIENT_ID");
    let tenant = env.get("AZURE_TENANT_ID");
    let (Some(client), Some(tenant)) = (client, tenant) else {
        return managed_identity(metrics, env, scope).await;
    };
    let assertion = match env.get("AZURE_FEDERATED_TOKEN_FILE") {
        Some(file) => Some(std::fs::read_to_string(file).map_err(|e| {
            CloudError::new(
                Cloud::Azure,
                Step::NoIdentity,
                format!("AZURE_FEDERATED_TOKEN_FILE {file}: {e}"),
            )
        })?),
        None => None,
    };
    let secret = match (&assertion, env.get("AZURE_CLIENT_SECRET")) {
        (Some(a), _) => Secret::Assertion(a.trim()),
        (None, Some(s)) => Secret::ClientSecret(s),
        (None, None) => return managed_identity(metrics, env, scope).await,
    };
    token_endpoint(metrics, http, env, tenant, client, secret, scope).await
}

/// A ServiceAccount's Entra ID token: its TokenRequest token as the client assertion.
pub(super) async fn service_account_token(
    metrics: &CloudMetrics,
    http: &reqwest::Client,
    env: &CloudEnv,
    tenant: &str,
    client: &str,
    assertion: &str,
    scope: &str,
) -> Result<(String, Option<i64>), CloudError> {
    token_endpoint(
        metrics,
        http,
        env,
        tenant,
        client,
        Secret::Assertion(assertion),
        scope,
    )
    .await
}

/// Managed identity from the instance metadata service (never through a proxy: it
/// answers on the node's link-local address).
async fn managed_identity(
    metrics: &CloudMetrics,
    env: &CloudEnv,
    scope: &str,
) -> Result<(String, Option<i64>), CloudError> {
    let base = env
        .get("AZURE_POD_IDENTITY_AUTHORITY_HOST")
        .unwrap_or(IMDS)
        .trim_end_matches('/')
        .to_string();
    let resource = scope.trim_end_matches("/.default");
    let mut query = vec![("api-version", "2018-02-01"), ("resource", resource)];
    if let Some(client) = env.get("AZURE_CLIENT_ID") {
        query.push(("client_id", client));
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(IMDS_TIMEOUT)
        .timeout(IMDS_TIMEOUT * 3)
        .build()
        .map_err(|e| {
            CloudError::new(
                Cloud::Azure,
                Step::NoIdentity,
                format!("cannot build the metadata client: {e}"),
            )
        })?;
    let url = format!("{base}/metadata/identity/oauth2/token");
    let service = format!("the Azure instance metadata service at {}", host_of(&url));
    let call = Call {
        cloud: Cloud::Azure,
        step: Step::TokenService,
        service: &service,
        secrets: &[],
    };
    let rb = http.get(&url).query(&query).header("Metadata", "true");
    let body = call.send(metrics, rb).await.map_err(|e| {
        if e.detail().starts_with("cannot reach") {
            CloudError::new(
                Cloud::Azure,
                Step::NoIdentity,
                format!(
                    "no Azure identity: no workload identity (AZURE_FEDERATED_TOKEN_FILE with AZURE_CLIENT_ID and AZURE_TENANT_ID), no client secret (AZURE_CLIENT_SECRET), and {}",
                    e.detail()
                ),
            )
        } else {
            e
        }
    })?;
    let answer: TokenAnswer = call.parse(&body, "an access token")?;
    let expiry = answer.expiry(jiff::Timestamp::now().as_second());
    Ok((answer.access_token, expiry))
}

/// ACR's refresh token for an Entra ID token, from the registry's `/oauth2/exchange`,
/// and its expiry (the JWT's `exp`).
pub(super) async fn exchange(
    metrics: &CloudMetrics,
    registry_http: &reqwest::Client,
    base: &url::Url,
    registry_host: &str,
    access_token: &str,
) -> Result<(String, Option<i64>), CloudError> {
    let service = format!("the ACR token exchange at {registry_host}");
    let call = Call {
        cloud: Cloud::Azure,
        step: Step::RegistryExchange,
        service: &service,
        secrets: &[access_token],
    };
    let url = base
        .join("oauth2/exchange?api-version=2021-07-01")
        .map_err(|e| call.err(format!("cannot form the exchange URL: {e}")))?;
    let form = [
        ("grant_type", "access_token"),
        ("service", registry_host),
        ("access_token", access_token),
    ];
    let rb = registry_http
        .post(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form);
    let body = call.send(metrics, rb).await?;
    #[derive(serde::Deserialize)]
    struct Answer {
        refresh_token: String,
    }
    let answer: Answer = call.parse(&body, "a refresh token")?;
    let expiry = crate::scanner::oci_token::jwt_expiry(&answer.refresh_token);
    Ok((answer.refresh_token, expiry))
}

/// Which source the controller's Azure identity would come from, for `scan --dry-run`.
pub(super) fn describe(env: &CloudEnv) -> String {
    let client = env.get("AZURE_CLIENT_ID");
    let tenant = env.get("AZURE_TENANT_ID");
    match (
        env.get("AZURE_FEDERATED_TOKEN_FILE"),
        env.get("AZURE_CLIENT_SECRET"),
        client,
        tenant,
    ) {
        (Some(file), _, Some(c), Some(t)) => format!(
            "workload identity: the token in {file} as the assertion of client {c} in tenant {t}, at {}",
            host_of(&authority(env))
        ),
        (None, Some(_), Some(c), Some(t)) => format!(
            "client secret (AZURE_CLIENT_SECRET) of client {c} in tenant {t}, at {}",
            host_of(&authority(env))
        ),
        _ => format!(
            "managed identity{} from the instance metadata service at {}",
            client.map(|c| format!(" {c}")).unwrap_or_default(),
            env.get("AZURE_POD_IDENTITY_AUTHORITY_HOST").unwrap_or(IMDS)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_needs_a_client_id_and_a_tenant_from_the_annotation_or_the_controller() {
        let a: BTreeMap<String, String> =
            [(CLIENT_ID_ANNOTATION.to_string(), "cid".to_string())].into();
        let e = identity("apps", "puller", &a, &CloudEnv::default()).unwrap_err();
        assert_eq!(e.step, Step::NoIdentity);
        assert!(e.to_string().contains("tenant-id"), "{e}");
        let env = CloudEnv::from_pairs([("AZURE_TENANT_ID", "t1")]);
        assert_eq!(
            identity("apps", "puller", &a, &env).unwrap(),
            ("t1".into(), "cid".into())
        );
        let e = identity("apps", "puller", &BTreeMap::new(), &env).unwrap_err();
        assert!(
            e.to_string()
                .contains("has no azure.workload.identity/client-id annotation"),
            "{e}"
        );
    }

    #[test]
    fn token_expiries_come_as_numbers_or_strings() {
        let a: TokenAnswer = serde_json::from_str(
            r#"{"access_token":"x","expires_in":"3599","expires_on":"1700003599"}"#,
        )
        .unwrap();
        assert_eq!(a.expiry(1_700_000_000), Some(1_700_003_599));
        let a: TokenAnswer =
            serde_json::from_str(r#"{"access_token":"x","expires_in":3600}"#).unwrap();
        assert_eq!(a.expiry(100), Some(3700));
    }

    #[test]
    fn the_authority_host_has_a_default_and_a_trailing_slash() {
        assert_eq!(authority(&CloudEnv::default()), DEFAULT_AUTHORITY);
        let env =
            CloudEnv::from_pairs([("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us")]);
        assert_eq!(authority(&env), "https://login.microsoftonline.us/");
    }

    #[test]
    fn dry_runs_name_the_source() {
        let env = CloudEnv::from_pairs([
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_TENANT_ID", "t"),
        ]);
        assert!(
            describe(&env).starts_with("workload identity"),
            "{}",
            describe(&env)
        );
        assert!(describe(&CloudEnv::default()).contains("managed identity"));
    }
}
