//! Turning an ImageRepository's spec and the Secrets it names into a scan request:
//! `secretRef` (Docker config), the image pull secrets of `serviceAccountName` (or of
//! `--default-service-account`), `certSecretRef` and `proxySecretRef`; and the cloud
//! login of `provider: aws|azure|gcp` (or of an autologin flag for a `generic`
//! repository on that cloud's registry that has no credential of its own), with the
//! controller's identity or, with `serviceAccountName` (or `--default-service-account`)
//! and the `ObjectLevelWorkloadIdentity` gate, that ServiceAccount's: its annotations, and
//! tokens from the TokenRequest API, asked for only when the scanner's cache has none.
//!
//! Secrets are read with one GET each, only when a scan is due; they are never cached
//! (the controller watches Secrets' metadata only, to notice changes). The pull secrets a
//! scan reads through a service account are returned with the resourceVersions the
//! Secret cache had before they were read, for the store entry: a version read before
//! the GET can only be older than what the GET returned, so a change in between is
//! noticed (one scan too many at worst, never one too few).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::core::PartialObjectMeta as PartialObjectMetadata;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{ImageRepositorySpec, Provider};
use crate::reference::ImageRef;
use crate::scanner::cloud::{self, Cloud, CloudLogin, Identity, InvolvedObject};
use crate::scanner::{Credentials, ProxyConfig, ScanRequest, TlsMaterial};
use crate::store::SecretVersion;

/// How the controller logs in to cloud registries (flags of `serve`).
#[derive(Clone, Debug, Default)]
pub struct CloudOptions {
    /// The clouds whose registries `generic` repositories without credentials log in to
    /// with the controller's identity (`--aws-autologin-for-ecr`,
    /// `--azure-autologin-for-acr`, `--gcp-autologin-for-gcr`).
    pub autologin: Vec<Cloud>,
    /// Flux's `ObjectLevelWorkloadIdentity` feature gate: cloud logins with a
    /// ServiceAccount's identity.
    pub object_level_workload_identity: bool,
}

/// The kind of the objects whose scans this module prepares (metric labels).
const KIND: &str = "ImageRepository";

/// Why the cluster side of a scan request could not be assembled. The messages name the
/// field and the Secret, never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{field}: secret {namespace}/{name} not found; create it or fix the reference")]
    SecretNotFound {
        field: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{field}: secret {namespace}/{name} cannot be used: {detail}")]
    BadSecret {
        field: &'static str,
        namespace: String,
        name: String,
        detail: String,
    },
    #[error("spec.serviceAccountName: service account {namespace}/{name} not found")]
    ServiceAccountNotFound { namespace: String, name: String },
    #[error(
        "{field}: logging in to the {cloud} registry as service account {namespace}/{name} is object-level workload identity, which needs the feature gate ObjectLevelWorkloadIdentity (start the controller with --feature-gates=ObjectLevelWorkloadIdentity=true)"
    )]
    ObjectLevelIdentityDisabled {
        field: &'static str,
        cloud: &'static str,
        namespace: String,
        name: String,
    },
    #[error(
        "--default-service-account: service account {namespace}/{name} does not exist; this controller logs in to cloud registries only as that service account in each namespace (multi-tenant workload identity lockdown): create it, or ask your cluster administrator"
    )]
    DefaultServiceAccountNotFound { namespace: String, name: String },
    #[error("reading {what} from the API server: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl CredentialsError {
    /// Whether this is the user's to fix (a missing or malformed Secret) rather than a
    /// passing API failure. Both are retried: a Secret may appear later.
    pub fn is_configuration(&self) -> bool {
        !matches!(self, CredentialsError::Api { .. })
    }
}

/// The service account whose image pull secrets a scan of `spec` reads, only for the
/// `generic` provider: its `serviceAccountName` (beside `secretRef`, as Flux builds one
/// keychain of both), else `--default-service-account` when the spec names no
/// `secretRef` either.
pub fn pull_secret_account<'a>(
    spec: &'a ImageRepositorySpec,
    default_service_account: Option<&'a str>,
) -> Option<&'a str> {
    // Cloud providers authenticate with workload identity, and ignore pull secrets.
    if spec.effective_provider() != Provider::Generic {
        return None;
    }
    match (&spec.service_account_name, &spec.secret_ref) {
        (Some(sa), _) => Some(sa.as_str()),
        (None, None) => default_service_account,
        (None, Some(_)) => None,
    }
}

/// The resourceVersion of Secret `namespace/name` in the watched cache ("" when the
/// cache has no such Secret).
pub fn cached_version(
    cache: &Store<PartialObjectMetadata<Secret>>,
    namespace: &str,
    name: &str,
) -> String {
    cache
        .get(&ObjectRef::new(name).within(namespace))
        .and_then(|s| s.metadata.resource_version.clone())
        .unwrap_or_default()
}

/// Everything a scan needs from the cluster, and the service account's image pull
/// secrets it consulted, with their cached versions (so a change to one of them rescans).
#[allow(clippy::too_many_arguments)]
pub async fn scan_request(
    client: &Client,
    cache: &Store<PartialObjectMetadata<Secret>>,
    namespace: &str,
    name: &str,
    spec: &ImageRepositorySpec,
    image: ImageRef,
    default_service_account: Option<&str>,
    cloud_options: &CloudOptions,
    timeout: Duration,
) -> Result<(ScanRequest, Vec<SecretVersion>), CredentialsError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut credentials = Credentials::Anonymous;
    let mut pull_secrets = Vec::new();
    // One keychain, as Flux's: `secretRef` first, then the service account's image pull
    // secrets; the first with credentials for the image's registry is used.
    if spec.effective_provider() == Provider::Generic
        && let Some(r) = &spec.secret_ref
    {
        let data = secret_data(&secrets, "spec.secretRef", namespace, &r.name).await?;
        credentials = Credentials::from_secret_data(&data)
            .map_err(|e| bad("spec.secretRef", namespace, &r.name, e.to_string()))?;
    }
    if let Some(sa) = pull_secret_account(spec, default_service_account) {
        let from_account;
        (from_account, pull_secrets) =
            pull_secret_credentials(client, cache, namespace, sa, &image).await?;
        if credentials.for_registry(image.registry()).is_none() {
            credentials = from_account;
        }
    }
    let tls = match &spec.cert_secret_ref {
        Some(r) => {
            let data = secret_data(&secrets, "spec.certSecretRef", namespace, &r.name).await?;
            TlsMaterial::from_secret_data(&data)
                .map_err(|e| bad("spec.certSecretRef", namespace, &r.name, e.to_string()))?
        }
        None => TlsMaterial::default(),
    };
    let involved = InvolvedObject {
        kind: KIND.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let cloud = match Cloud::of_provider(spec.effective_provider()) {
        Some(c) => Some(
            cloud_login(
                client,
                namespace,
                spec,
                c,
                default_service_account,
                cloud_options,
                involved,
            )
            .await?,
        ),
        // The seed's autologin: a generic repository on the cloud's registry with no
        // credential of its own logs in with the controller's identity.
        None => cloud::hosts::cloud_of(image.registry())
            .filter(|c| cloud_options.autologin.contains(c))
            .filter(|_| credentials.for_registry(image.registry()).is_none())
            .map(|c| CloudLogin {
                cloud: c,
                identity: Identity::Controller,
                involved: Some(involved),
            }),
    };
    let proxy = match &spec.proxy_secret_ref {
        Some(r) => {
            let data = secret_data(&secrets, "spec.proxySecretRef", namespace, &r.name).await?;
            Some(
                ProxyConfig::from_secret_data(&data)
                    .map_err(|e| bad("spec.proxySecretRef", namespace, &r.name, e.to_string()))?,
            )
        }
        None => None,
    };
    let request = ScanRequest {
        image,
        insecure: spec.insecure,
        exclusion_list: spec.effective_exclusion_list(),
        credentials,
        tls,
        proxy,
        timeout,
        cloud,
    };
    Ok((request, pull_secrets))
}

/// The login of a repository with a cloud provider: as the ServiceAccount
/// `serviceAccountName` names (or `--default-service-account`, Flux's lockdown), which
/// needs the ObjectLevelWorkloadIdentity gate, else as the controller.
async fn cloud_login(
    client: &Client,
    namespace: &str,
    spec: &ImageRepositorySpec,
    cloud: Cloud,
    default_service_account: Option<&str>,
    options: &CloudOptions,
    involved: InvolvedObject,
) -> Result<CloudLogin, CredentialsError> {
    let account = match (&spec.service_account_name, default_service_account) {
        (Some(sa), _) => Some((sa.as_str(), "spec.serviceAccountName")),
        (None, Some(sa)) => Some((sa, "--default-service-account")),
        (None, None) => None,
    };
    let Some((name, field)) = account else {
        return Ok(CloudLogin {
            cloud,
            identity: Identity::Controller,
            involved: Some(involved),
        });
    };
    if !options.object_level_workload_identity {
        return Err(CredentialsError::ObjectLevelIdentityDisabled {
            field,
            cloud: cloud.as_str(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let sa = accounts
        .get_opt(name)
        .await
        .map_err(|source| CredentialsError::Api {
            what: format!("service account {namespace}/{name}"),
            source,
        })?
        .ok_or_else(|| {
            let (namespace, name) = (namespace.to_string(), name.to_string());
            if spec.service_account_name.is_some() {
                CredentialsError::ServiceAccountNotFound { namespace, name }
            } else {
                CredentialsError::DefaultServiceAccountNotFound { namespace, name }
            }
        })?;
    Ok(CloudLogin {
        cloud,
        identity: Identity::ServiceAccount(cloud::ServiceAccountIdentity {
            namespace: namespace.to_string(),
            name: name.to_string(),
            annotations: sa.metadata.annotations.unwrap_or_default(),
            tokens: Arc::new(TokenRequests {
                client: client.clone(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            }),
        }),
        involved: Some(involved),
    })
}

/// A ServiceAccount's tokens from the TokenRequest API (`serviceaccounts/token`
/// `create`), one hour each.
struct TokenRequests {
    client: Client,
    namespace: String,
    name: String,
}

impl cloud::ServiceAccountTokens for TokenRequests {
    fn token<'a>(
        &'a self,
        audiences: &'a [String],
    ) -> futures::future::BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: audiences.to_vec(),
                    expiration_seconds: Some(3600),
                    bound_object_ref: None,
                },
                ..Default::default()
            };
            let answer = api
                .create_token_request(&self.name, &PostParams::default(), &request)
                .await
                .map_err(|e| match e {
                    kube::Error::Api(s) if s.code == 403 => format!(
                        "{}; the controller's role needs create on serviceaccounts/token",
                        s.message
                    ),
                    other => other.to_string(),
                })?;
            answer
                .status
                .map(|s| s.token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| "the API server answered without a token".to_string())
        })
    }
}

fn bad(field: &'static str, namespace: &str, name: &str, detail: String) -> CredentialsError {
    CredentialsError::BadSecret {
        field,
        namespace: namespace.to_string(),
        name: name.to_string(),
        detail,
    }
}

async fn secret_data(
    api: &Api<Secret>,
    field: &'static str,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, CredentialsError> {
    let secret = api
        .get_opt(name)
        .await
        .map_err(|source| CredentialsError::Api {
            what: format!("secret {namespace}/{name}"),
            source,
        })?
        .ok_or_else(|| CredentialsError::SecretNotFound {
            field,
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?;
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    // stringData is write-only in a real API server, but a stand-in or an old object may
    // still carry it.
    for (k, v) in secret.string_data.unwrap_or_default() {
        data.entry(k).or_insert_with(|| v.into_bytes());
    }
    Ok(data)
}

/// The first image pull secret of the service account that has credentials for the
/// image's registry (anonymous when none has), and all its pull secrets with the
/// versions the cache had before any was read.
async fn pull_secret_credentials(
    client: &Client,
    cache: &Store<PartialObjectMetadata<Secret>>,
    namespace: &str,
    service_account: &str,
    image: &ImageRef,
) -> Result<(Credentials, Vec<SecretVersion>), CredentialsError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let sa = accounts
        .get_opt(service_account)
        .await
        .map_err(|source| CredentialsError::Api {
            what: format!("service account {namespace}/{service_account}"),
            source,
        })?
        .ok_or_else(|| CredentialsError::ServiceAccountNotFound {
            namespace: namespace.to_string(),
            name: service_account.to_string(),
        })?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let names: Vec<String> = sa
        .image_pull_secrets
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .filter(|n| !n.is_empty())
        .collect();
    let versions: Vec<SecretVersion> = names
        .iter()
        .map(|name| SecretVersion {
            name: name.clone(),
            resource_version: cached_version(cache, namespace, name),
        })
        .collect();
    for name in &names {
        let name = name.clone();
        let data = match secret_data(&secrets, "imagePullSecrets", namespace, &name).await {
            Ok(data) => data,
            // A service account may list pull secrets that do not exist (yet); the
            // kubelet skips those too.
            Err(CredentialsError::SecretNotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let Ok(credentials) = Credentials::from_secret_data(&data) else {
            continue;
        };
        if credentials.for_registry(image.registry()).is_some() {
            return Ok((credentials, versions));
        }
    }
    Ok((Credentials::Anonymous, versions))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client for an API server nobody runs: these cases must not need one.
    fn offline_client() -> Client {
        let url = "http://127.0.0.1:9".parse().expect("URL");
        Client::try_from(kube::Config::new(url)).expect("client")
    }

    fn spec(service_account: Option<&str>) -> ImageRepositorySpec {
        ImageRepositorySpec {
            image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/app".into(),
            interval: "1m".into(),
            service_account_name: service_account.map(str::to_string),
            ..Default::default()
        }
    }

    fn involved() -> InvolvedObject {
        InvolvedObject {
            kind: KIND.into(),
            namespace: "apps".into(),
            name: "app".into(),
        }
    }

    #[tokio::test]
    async fn without_a_service_account_the_login_is_the_controller_s() {
        let login = cloud_login(
            &offline_client(),
            "apps",
            &spec(None),
            Cloud::Aws,
            None,
            &CloudOptions::default(),
            involved(),
        )
        .await
        .expect("login");
        assert!(matches!(login.identity, Identity::Controller));
        assert_eq!(login.involved, Some(involved()));
    }

    #[tokio::test]
    async fn a_service_account_or_the_default_one_needs_the_feature_gate() {
        for (sa, default, field) in [
            (Some("puller"), None, "spec.serviceAccountName"),
            (None, Some("tenant"), "--default-service-account"),
        ] {
            let e = cloud_login(
                &offline_client(),
                "apps",
                &spec(sa),
                Cloud::Gcp,
                default,
                &CloudOptions::default(),
                involved(),
            )
            .await
            .unwrap_err();
            let message = e.to_string();
            assert!(
                message.starts_with(field)
                    && message.contains("--feature-gates=ObjectLevelWorkloadIdentity=true")
                    && message.contains("gcp registry"),
                "{message}"
            );
            assert!(e.is_configuration(), "AuthenticationFailed, not Failure");
        }
    }
}
