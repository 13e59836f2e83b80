//! Cloud registry logins: ECR and ECR Public (`aws.rs`), ACR (`azure.rs`), Artifact
//! Registry and Container Registry (`gcp.rs`), with the controller's own identity or a
//! Kubernetes ServiceAccount's (object-level workload identity).
//!
//! A login turns an identity into a registry credential in two steps, each cached
//! (`cache.rs`) per identity and what it is for:
//!
//! ```text
//! identity ──> cloud credential (AWS keys, Entra ID token)  key: cloud, identity, region/scope
//!          ──> registry credential (ECR token, ACR refresh token, Google access token)
//!                                                           key: cloud, identity, registry input
//! ```
//!
//! A ServiceAccount's identity starts with a token from the Kubernetes TokenRequest API
//! for the audience the cloud expects, asked for only when the cloud credential is not
//! cached. The registry credential goes to the scanner as Basic credentials, into the
//! registry's own token flow like any other. Errors (`error.rs`) name the cloud and the
//! step that failed, never a secret.
//!
//! | file | what it holds |
//! |---|---|
//! | `hosts.rs` | which cloud a registry host belongs to, and its account and region (pure) |
//! | `cache.rs` | the token cache: lifetimes, one fetch per key, LRU bound |
//! | `http.rs` | requests to cloud services, their refusals; the AWS SDK's HTTP client |
//! | `env.rs` | the environment variables a login reads |
//! | `metrics.rs` | Flux's token cache metrics, exchanges by step |

mod aws;
mod azure;
mod cache;
mod env;
mod error;
mod gcp;
pub mod hosts;
mod http;
mod metrics;

pub use cache::{MAX_DURATION, SHORT_LIFETIME};
pub use env::CloudEnv;
pub use error::{CloudError, Step};
pub use hosts::RegistryTarget;

use crate::api::Provider;
use cache::{Token, TokenCache};
use metrics::CloudMetrics;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The ServiceAccount annotations each cloud reads.
pub mod annotations {
    pub use super::aws::ROLE_ARN_ANNOTATION as AWS_ROLE_ARN;
    pub use super::azure::CLIENT_ID_ANNOTATION as AZURE_CLIENT_ID;
    pub use super::azure::TENANT_ID_ANNOTATION as AZURE_TENANT_ID;
    pub use super::gcp::PROVIDER_ANNOTATION as GCP_WORKLOAD_IDENTITY_PROVIDER;
    pub use super::gcp::SERVICE_ACCOUNT_ANNOTATION as GCP_SERVICE_ACCOUNT;
}

/// A cloud whose registries a login serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cloud {
    Aws,
    Azure,
    Gcp,
}

impl Cloud {
    pub const ALL: [Cloud; 3] = [Cloud::Aws, Cloud::Azure, Cloud::Gcp];

    /// The spelling of `spec.provider`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Azure => "azure",
            Cloud::Gcp => "gcp",
        }
    }

    /// The cloud of a `spec.provider` (none for `generic`).
    pub fn of_provider(p: Provider) -> Option<Cloud> {
        match p {
            Provider::Generic => None,
            Provider::Aws => Some(Cloud::Aws),
            Provider::Azure => Some(Cloud::Azure),
            Provider::Gcp => Some(Cloud::Gcp),
        }
    }
}

/// A scan's cloud login: which cloud, with whose identity.
#[derive(Clone, Debug)]
pub struct CloudLogin {
    pub cloud: Cloud,
    pub identity: Identity,
    /// The object the scan is for, for Flux's per-object cache metrics.
    pub involved: Option<InvolvedObject>,
}

/// Whose identity a login uses.
#[derive(Clone, Debug)]
pub enum Identity {
    /// The process's own: its environment, files and the cloud's metadata services.
    Controller,
    /// A Kubernetes ServiceAccount's (object-level workload identity).
    ServiceAccount(ServiceAccountIdentity),
}

/// A ServiceAccount, its annotations, and a way to get a token for it.
#[derive(Clone)]
pub struct ServiceAccountIdentity {
    pub namespace: String,
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    pub tokens: Arc<dyn ServiceAccountTokens>,
}

impl std::fmt::Debug for ServiceAccountIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountIdentity")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("annotations", &self.annotations)
            .finish_non_exhaustive()
    }
}

/// Tokens for a ServiceAccount (the Kubernetes TokenRequest API, in the controller).
pub trait ServiceAccountTokens: Send + Sync {
    /// A token for these audiences; the error says why, without a token.
    fn token<'a>(
        &'a self,
        audiences: &'a [String],
    ) -> futures::future::BoxFuture<'a, Result<String, String>>;
}

/// The object a login is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InvolvedObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// Token cache settings (`--token-cache-max-size`, `--token-cache-max-duration`).
#[derive(Clone, Debug)]
pub struct CloudConfig {
    /// Tokens kept at most; 0 turns the cache off.
    pub cache_max_size: usize,
    /// The longest a token is kept (at most an hour).
    pub cache_max_duration: Duration,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            cache_max_size: 100,
            cache_max_duration: MAX_DURATION,
        }
    }
}

/// The HTTP clients of one login.
pub(crate) struct LoginClients<'a> {
    /// For the cloud's token services: the scan's proxy, the system roots.
    pub cloud: &'a reqwest::Client,
    /// For the registry's own exchange (ACR): the scan's client, with its CA and proxy.
    pub registry: &'a reqwest::Client,
    /// The registry's base URL (`https://HOST/`).
    pub registry_base: &'a url::Url,
}

/// The identity a login resolves to, its annotations checked.
enum Who<'a> {
    Controller,
    Aws {
        sa: &'a ServiceAccountIdentity,
        role: String,
    },
    Azure {
        sa: &'a ServiceAccountIdentity,
        tenant: String,
        client: String,
    },
    Gcp {
        sa: &'a ServiceAccountIdentity,
        id: gcp::SaIdentity,
    },
}

impl Who<'_> {
    /// The identity part of cache keys.
    fn key(&self) -> String {
        match self {
            Who::Controller => "controller".to_string(),
            Who::Aws { sa, role } => format!("sa:{}/{}:{role}", sa.namespace, sa.name),
            Who::Azure { sa, tenant, client } => {
                format!("sa:{}/{}:{tenant}/{client}", sa.namespace, sa.name)
            }
            Who::Gcp { sa, id } => format!("sa:{}/{}:{}", sa.namespace, sa.name, id.key()),
        }
    }
}

/// Cloud logins for every scan of the process, with one token cache.
pub(crate) struct CloudAuth {
    env: CloudEnv,
    cache: TokenCache,
    metrics: Arc<CloudMetrics>,
    aws: aws::Aws,
    gke: gcp::Gke,
    /// For the controller's own credential sources (AWS's chain): no object's proxy.
    process_http: reqwest::Client,
}

impl CloudAuth {
    pub(crate) fn new(config: &CloudConfig, env: CloudEnv, user_agent: &str) -> CloudAuth {
        let metrics = Arc::new(CloudMetrics::default());
        CloudAuth {
            env,
            cache: TokenCache::new(
                config.cache_max_size,
                config.cache_max_duration,
                metrics.clone(),
            ),
            metrics,
            aws: aws::Aws::default(),
            gke: gcp::Gke::default(),
            process_http: reqwest::Client::builder()
                .user_agent(user_agent)
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    pub(crate) fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    /// Drops the cache metrics of a deleted object.
    pub(crate) fn forget_object(&self, o: &InvolvedObject) {
        self.metrics.forget(o);
    }

    fn who<'a>(&self, login: &'a CloudLogin) -> Result<Who<'a>, CloudError> {
        let Identity::ServiceAccount(sa) = &login.identity else {
            return Ok(Who::Controller);
        };
        Ok(match login.cloud {
            Cloud::Aws => Who::Aws {
                sa,
                role: aws::role_arn(&sa.namespace, &sa.name, &sa.annotations)?,
            },
            Cloud::Azure => {
                let (tenant, client) =
                    azure::identity(&sa.namespace, &sa.name, &sa.annotations, &self.env)?;
                Who::Azure { sa, tenant, client }
            }
            Cloud::Gcp => Who::Gcp {
                sa,
                id: gcp::identity(&sa.namespace, &sa.name, &sa.annotations)?,
            },
        })
    }

    /// The registry credential (username, password) a login gives for `registry`
    /// (`host[:port]`).
    pub(crate) async fn registry_credential(
        &self,
        login: &CloudLogin,
        registry: &str,
        clients: LoginClients<'_>,
    ) -> Result<(String, String), CloudError> {
        let target = hosts::target(login.cloud, registry)?;
        let who = self.who(login)?;
        let key = registry_key(login.cloud, &who, &target);
        let what = format!(
            "the {} registry credential for {registry}",
            login.cloud.as_str()
        );
        let involved = login.involved.as_ref();
        let token = self
            .cache
            .get_or_fetch(&key, &what, involved, || async {
                let (username, password, expiry) = match &target {
                    RegistryTarget::Ecr { .. } | RegistryTarget::EcrPublic => {
                        let credentials = self
                            .aws_credentials(&who, &target, &clients, involved)
                            .await?;
                        self.aws
                            .registry_credential(
                                &target,
                                credentials,
                                &self.process_http,
                                clients.cloud,
                                &self.metrics,
                            )
                            .await?
                    }
                    RegistryTarget::Acr { host } => {
                        let access = self.azure_token(&who, &clients, involved).await?;
                        let (refresh, expiry) = azure::exchange(
                            &self.metrics,
                            clients.registry,
                            clients.registry_base,
                            host,
                            &access,
                        )
                        .await?;
                        (azure::ACR_USERNAME.to_string(), refresh, expiry)
                    }
                    RegistryTarget::Gcp { .. } => {
                        let (token, expiry) = self.gcp_token(&who, &clients).await?;
                        (gcp::USERNAME.to_string(), token, expiry)
                    }
                };
                Ok((Token::Registry { username, password }, expiry))
            })
            .await?;
        match token {
            Token::Registry { username, password } => Ok((username, password)),
            other => Err(CloudError::new(
                login.cloud,
                Step::RegistryExchange,
                format!("the token cache held {other:?} under a registry credential's key"),
            )),
        }
    }

    /// Forgets what a login cached for `registry` (the registry refused it), so the
    /// next scan logs in again.
    pub(crate) fn forget(&self, login: &CloudLogin, registry: &str) {
        let (Ok(target), Ok(who)) = (hosts::target(login.cloud, registry), self.who(login)) else {
            return;
        };
        self.cache.remove(&registry_key(login.cloud, &who, &target));
        self.cache
            .remove(&access_key(login.cloud, &who, &access_input(&target)));
    }

    async fn service_account_token(
        &self,
        cloud: Cloud,
        sa: &ServiceAccountIdentity,
        audiences: Vec<String>,
    ) -> Result<String, CloudError> {
        let result = sa.tokens.token(&audiences).await;
        self.metrics
            .exchange(cloud, Step::ServiceAccountToken, result.is_ok());
        result.map_err(|why| {
            CloudError::new(
                cloud,
                Step::ServiceAccountToken,
                format!(
                    "the TokenRequest for service account {}/{} (audience {}) failed: {why}",
                    sa.namespace,
                    sa.name,
                    audiences.join(",")
                ),
            )
        })
    }

    async fn aws_credentials(
        &self,
        who: &Who<'_>,
        target: &RegistryTarget,
        clients: &LoginClients<'_>,
        involved: Option<&InvolvedObject>,
    ) -> Result<aws_credential_types::Credentials, CloudError> {
        let region = target.aws_region().unwrap_or(hosts::ECR_PUBLIC_REGION);
        let key = access_key(Cloud::Aws, who, &access_input(target));
        let token = self
            .cache
            .get_or_fetch(&key, "the AWS credentials", involved, || async {
                let (credentials, expiry) = match who {
                    Who::Aws { sa, role } => {
                        let jwt = self
                            .service_account_token(Cloud::Aws, sa, vec![aws::AUDIENCE.to_string()])
                            .await?;
                        let session = aws::session_name(&sa.namespace, &sa.name, region);
                        self.aws
                            .assume_role(
                                region,
                                role,
                                &session,
                                &jwt,
                                &self.process_http,
                                clients.cloud,
                                &self.metrics,
                            )
                            .await?
                    }
                    _ => {
                        self.aws
                            .controller_credentials(region, &self.process_http, &self.metrics)
                            .await?
                    }
                };
                Ok((Token::Aws(credentials), expiry))
            })
            .await?;
        match token {
            Token::Aws(c) => Ok(c),
            other => Err(CloudError::new(
                Cloud::Aws,
                Step::TokenService,
                format!("the token cache held {other:?} under AWS credentials' key"),
            )),
        }
    }

    async fn azure_token(
        &self,
        who: &Who<'_>,
        clients: &LoginClients<'_>,
        involved: Option<&InvolvedObject>,
    ) -> Result<String, CloudError> {
        let key = access_key(Cloud::Azure, who, azure::ACR_SCOPE);
        let token = self
            .cache
            .get_or_fetch(&key, "the Entra ID token", involved, || async {
                let (token, expiry) = match who {
                    Who::Azure { sa, tenant, client } => {
                        let jwt = self
                            .service_account_token(
                                Cloud::Azure,
                                sa,
                                vec![azure::AUDIENCE.to_string()],
                            )
                            .await?;
                        azure::service_account_token(
                            &self.metrics,
                            clients.cloud,
                            &self.env,
                            tenant,
                            client,
                            &jwt,
                            azure::ACR_SCOPE,
                        )
                        .await?
                    }
                    _ => {
                        azure::controller_token(
                            &self.metrics,
                            clients.cloud,
                            &self.env,
                            azure::ACR_SCOPE,
                        )
                        .await?
                    }
                };
                Ok((Token::Bearer(token), expiry))
            })
            .await?;
        match token {
            Token::Bearer(t) => Ok(t),
            other => Err(CloudError::new(
                Cloud::Azure,
                Step::TokenService,
                format!("the token cache held {other:?} under an Entra ID token's key"),
            )),
        }
    }

    async fn gcp_token(
        &self,
        who: &Who<'_>,
        clients: &LoginClients<'_>,
    ) -> Result<(String, Option<i64>), CloudError> {
        match who {
            Who::Gcp { sa, id } => {
                let audiences = self.gke.audiences(&self.metrics, &self.env, id).await?;
                let jwt = self
                    .service_account_token(Cloud::Gcp, sa, audiences)
                    .await?;
                self.gke
                    .service_account_token(&self.metrics, clients.cloud, &self.env, id, &jwt)
                    .await
            }
            _ => gcp::controller_token(&self.metrics, clients.cloud, &self.env).await,
        }
    }
}

fn registry_key(cloud: Cloud, who: &Who<'_>, target: &RegistryTarget) -> String {
    format!(
        "registry\n{}\n{}\n{}",
        cloud.as_str(),
        who.key(),
        target.cache_input()
    )
}

fn access_key(cloud: Cloud, who: &Who<'_>, input: &str) -> String {
    format!("access\n{}\n{}\n{input}", cloud.as_str(), who.key())
}

/// What a cloud credential depends on besides the identity: the AWS region, ACR's scope.
fn access_input(target: &RegistryTarget) -> String {
    match target {
        RegistryTarget::Acr { .. } => azure::ACR_SCOPE.to_string(),
        RegistryTarget::Gcp { .. } => gcp::SCOPES.join(","),
        other => other.aws_region().unwrap_or_default().to_string(),
    }
}

/// What a controller-level login for `registry` on `cloud` would use, for
/// `scan --dry-run`: the credential source and the registry step. Reads only the
/// environment and whether files exist.
pub fn describe(cloud: Cloud, env: &CloudEnv, registry: &str) -> Result<String, CloudError> {
    let target = hosts::target(cloud, registry)?;
    Ok(match &target {
        RegistryTarget::Ecr { region, .. } => format!(
            "aws: {}; then ECR GetAuthorizationToken in {region}, as Basic credentials",
            aws::describe(env)
        ),
        RegistryTarget::EcrPublic => format!(
            "aws: {}; then ECR Public GetAuthorizationToken in {}, as Basic credentials",
            aws::describe(env),
            hosts::ECR_PUBLIC_REGION
        ),
        RegistryTarget::Acr { host } => format!(
            "azure: {}; then the Entra ID token exchanged at https://{host}/oauth2/exchange for a refresh token, as user {}",
            azure::describe(env),
            azure::ACR_USERNAME
        ),
        RegistryTarget::Gcp { .. } => format!(
            "gcp: {}; the access token as the password of user {}",
            gcp::describe(env),
            gcp::USERNAME
        ),
    })
}

#[cfg(test)]
mod tests;
