//! GCP: Artifact Registry and Container Registry, with a Google access token as the
//! password of the user `oauth2accesstoken`.
//!
//! - **The controller's identity**, in the order of Google's application default
//!   credentials: the file `GOOGLE_APPLICATION_CREDENTIALS` names, else gcloud's
//!   `application_default_credentials.json`, else the metadata server
//!   (`GCE_METADATA_HOST` moves it). A file may hold workload identity federation
//!   (`external_account`: the subject token from a file or URL, the STS exchange at its
//!   `token_url`, then impersonation at its `service_account_impersonation_url` when it
//!   has one), a user's refresh token (`authorized_user`) or a service account key
//!   (`service_account`: a signed JWT assertion).
//! - **A ServiceAccount's identity**: its TokenRequest token exchanged at Google's STS
//!   for a federated token, then, with the `iam.gke.io/gcp-service-account`
//!   annotation, for that service account's token (IAM Credentials
//!   `generateAccessToken`). The audience is the workload identity provider of the
//!   `gcp.auth.fluxcd.io/workload-identity-provider` annotation (outside GKE), or GKE's
//!   workload identity pool and cluster, read from the metadata server (Flux's rules).

use super::env::CloudEnv;
use super::http::{Call, host_of};
use super::metrics::CloudMetrics;
use super::{Cloud, CloudError, Step};
use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

pub const SERVICE_ACCOUNT_ANNOTATION: &str = "iam.gke.io/gcp-service-account";
pub const PROVIDER_ANNOTATION: &str = "gcp.auth.fluxcd.io/workload-identity-provider";
/// The user name GAR and GCR expect with an access token.
pub const USERNAME: &str = "oauth2accesstoken";
pub const SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
];
const STS_URL: &str = "https://sts.googleapis.com/v1/token";
const IAM_CREDENTIALS: &str =
    "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/";
const OAUTH2_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const METADATA: &str = "169.254.169.254";
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);

static EMAIL: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[a-zA-Z0-9-]{1,100}@[a-zA-Z0-9-]{1,100}\.iam\.gserviceaccount\.com$")
        .expect("static regex")
});
static PROVIDER: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r"^projects/\d{1,30}/locations/global/workloadIdentityPools/[^/]{1,100}/providers/[^/]{1,100}$",
    )
    .expect("static regex")
});

/// A ServiceAccount's Google identity: the service account to impersonate (if any) and
/// the STS audience of its workload identity provider (if outside GKE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SaIdentity {
    pub email: Option<String>,
    pub provider_audience: Option<String>,
}

impl SaIdentity {
    pub(super) fn key(&self) -> String {
        format!(
            "{}|{}",
            self.email.as_deref().unwrap_or(""),
            self.provider_audience.as_deref().unwrap_or("")
        )
    }
}

pub(super) fn identity(
    namespace: &str,
    name: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<SaIdentity, CloudError> {
    let get = |k: &str| {
        annotations
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let bad = |k: &str, v: &str, shape: &str| {
        CloudError::new(
            Cloud::Gcp,
            Step::NoIdentity,
            format!("service account {namespace}/{name}: the {k} annotation {v:?} is not {shape}"),
        )
    };
    let email = match get(SERVICE_ACCOUNT_ANNOTATION) {
        Some(e) if EMAIL.is_match(&e) => Some(e),
        Some(e) => {
            return Err(bad(
                SERVICE_ACCOUNT_ANNOTATION,
                &e,
                "a service account e-mail (NAME@PROJECT.iam.gserviceaccount.com)",
            ));
        }
        None => None,
    };
    let provider_audience = match get(PROVIDER_ANNOTATION) {
        Some(p) if PROVIDER.is_match(&p) => Some(format!("//iam.googleapis.com/{p}")),
        Some(p) => {
            return Err(bad(
                PROVIDER_ANNOTATION,
                &p,
                "a workload identity provider (projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER)",
            ));
        }
        None => None,
    };
    Ok(SaIdentity {
        email,
        provider_audience,
    })
}

/// GKE's project, location and cluster name, read from the metadata server once.
#[derive(Default)]
pub(super) struct Gke {
    cluster: Mutex<Option<(String, String, String)>>,
}

impl Gke {
    async fn cluster(
        &self,
        metrics: &CloudMetrics,
        env: &CloudEnv,
    ) -> Result<(String, String, String), CloudError> {
        if let Some(c) = self
            .cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(c);
        }
        let get = |path: &'static str| metadata_get(metrics, env, path, Step::NoIdentity);
        let project = get("project/project-id").await?;
        let location = get("instance/attributes/cluster-location").await?;
        let name = get("instance/attributes/cluster-name").await?;
        let c = (project, location, name);
        *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// The audiences of the ServiceAccount token, before it is requested.
    pub(super) async fn audiences(
        &self,
        metrics: &CloudMetrics,
        env: &CloudEnv,
        id: &SaIdentity,
    ) -> Result<Vec<String>, CloudError> {
        if let Some(a) = &id.provider_audience {
            return Ok(vec![a.clone()]);
        }
        let (project, _, _) = self.cluster(metrics, env).await?;
        Ok(vec![format!("{project}.svc.id.goog")])
    }

    /// The STS audience.
    async fn sts_audience(
        &self,
        metrics: &CloudMetrics,
        env: &CloudEnv,
        id: &SaIdentity,
    ) -> Result<String, CloudError> {
        if let Some(a) = &id.provider_audience {
            return Ok(a.clone());
        }
        let (project, location, name) = self.cluster(metrics, env).await?;
        Ok(format!(
            "identitynamespace:{project}.svc.id.goog:https://container.googleapis.com/v1/projects/{project}/locations/{location}/clusters/{name}"
        ))
    }

    /// A ServiceAccount's Google access token.
    pub(super) async fn service_account_token(
        &self,
        metrics: &CloudMetrics,
        http: &reqwest::Client,
        env: &CloudEnv,
        id: &SaIdentity,
        subject_token: &str,
    ) -> Result<(String, Option<i64>), CloudError> {
        let audience = self.sts_audience(metrics, env, id).await?;
        let (federated, expiry) = sts_exchange(
            metrics,
            http,
            STS_URL,
            &audience,
            "urn:ietf:params:oauth:token-type:jwt",
            subject_token,
        )
        .await?;
        match &id.email {
            Some(email) => {
                let url = format!("{IAM_CREDENTIALS}{email}:generateAccessToken");
                impersonate(metrics, http, &url, &federated, None).await
            }
            None => Ok((federated, expiry)),
        }
    }
}

/// `GET http://METADATA/computeMetadata/v1/PATH` (never through a proxy).
async fn metadata_get(
    metrics: &CloudMetrics,
    env: &CloudEnv,
    path: &str,
    step: Step,
) -> Result<String, CloudError> {
    let body = metadata(metrics, env, path, step).await?;
    Ok(String::from_utf8_lossy(&body).trim().to_string())
}

async fn metadata(
    metrics: &CloudMetrics,
    env: &CloudEnv,
    path: &str,
    step: Step,
) -> Result<Vec<u8>, CloudError> {
    let host = env.get("GCE_METADATA_HOST").unwrap_or(METADATA);
    let service = format!("the GCP metadata server at {host}");
    let call = Call {
        cloud: Cloud::Gcp,
        step,
        service: &service,
        secrets: &[],
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(METADATA_TIMEOUT)
        .timeout(METADATA_TIMEOUT * 3)
        .build()
        .map_err(|e| call.err(format!("cannot build the metadata client: {e}")))?;
    let rb = http
        .get(format!("http://{host}/computeMetadata/v1/{path}"))
        .header("Metadata-Flavor", "Google");
    call.send(metrics, rb).await
}

#[derive(serde::Deserialize)]
struct OAuthToken {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// Google STS's token exchange (RFC 8693).
async fn sts_exchange(
    metrics: &CloudMetrics,
    http: &reqwest::Client,
    url: &str,
    audience: &str,
    subject_token_type: &str,
    subject_token: &str,
) -> Result<(String, Option<i64>), CloudError> {
    let scope = SCOPES[0];
    let form = [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("audience", audience),
        ("scope", scope),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("subject_token", subject_token),
        ("subject_token_type", subject_token_type),
    ];
    oauth2_token(metrics, http, "GCP STS", url, &form, &[subject_token]).await
}

/// IAM Credentials `generateAccessToken` for a service account, with a federated token.
async fn impersonate(
    metrics: &CloudMetrics,
    http: &reqwest::Client,
    url: &str,
    federated: &str,
    lifetime_secs: Option<u64>,
) -> Result<(String, Option<i64>), CloudError> {
    let who = url
        .rsplit('/')
        .next()
        .and_then(|s| s.strip_suffix(":generateAccessToken"))
        .unwrap_or(url);
    let service = format!("IAM Credentials at {} (impersonating {who})", host_of(url));
    let call = Call {
        cloud: Cloud::Gcp,
        step: Step::Impersonation,
        service: &service,
        secrets: &[federated],
    };
    let body = serde_json::json!({
        "scope": SCOPES,
        "lifetime": format!("{}s", lifetime_secs.unwrap_or(3600)),
    });
    let rb = http.post(url).bearer_auth(federated).json(&body);
    let answer = call.send(metrics, rb).await?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        access_token: String,
        #[serde(default)]
        expire_time: Option<String>,
    }
    let a: Answer = call.parse(&answer, "an access token")?;
    let expiry = a
        .expire_time
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second());
    Ok((a.access_token, expiry))
}

/// The default service account's token from the metadata server.
async fn metadata_token(
    metrics: &CloudMetrics,
    env: &CloudEnv,
) -> Result<(String, Option<i64>), CloudError> {
    let path = format!(
        "instance/service-accounts/default/token?scopes={}",
        SCOPES.join(",")
    );
    let body = metadata(metrics, env, &path, Step::TokenService).await.map_err(|e| {
        if e.detail().starts_with("cannot reach") {
            CloudError::new(
                Cloud::Gcp,
                Step::NoIdentity,
                format!(
                    "no GCP identity: no GOOGLE_APPLICATION_CREDENTIALS, no application default credentials file, and {}",
                    e.detail()
                ),
            )
        } else {
            e
        }
    })?;
    let t: OAuthToken = serde_json::from_slice(&body).map_err(|_| {
        CloudError::new(
            Cloud::Gcp,
            Step::TokenService,
            "the GCP metadata server answered without an access token",
        )
    })?;
    let now = jiff::Timestamp::now().as_second();
    Ok((t.access_token, t.expires_in.map(|s| now + s)))
}

/// Which source the controller's Google identity would come from, for `scan --dry-run`.
pub(super) fn describe(env: &CloudEnv) -> String {
    match credentials_file(env) {
        Some(path) => {
            let kind = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["type"].as_str().map(str::to_string))
                .unwrap_or_else(|| "unreadable".to_string());
            let what = match kind.as_str() {
                "external_account" => "workload identity federation",
                "authorized_user" => "a user's refresh token",
                "service_account" => "a service account key",
                _ => "an unknown kind of credentials",
            };
            format!(
                "{what} from the credentials file {} (type {kind})",
                path.display()
            )
        }
        None => format!(
            "the default service account of the metadata server at {}",
            env.get("GCE_METADATA_HOST").unwrap_or(METADATA)
        ),
    }
}

mod adc;
pub(super) use adc::controller_token;
#[cfg(test)]
use adc::{CredentialSource, SourceFormat, signed_assertion, subject_token};
use adc::{credentials_file, oauth2_token};
#[cfg(test)]
mod tests;
