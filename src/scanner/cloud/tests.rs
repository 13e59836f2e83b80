use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

struct CountingTokens(AtomicUsize, Result<String, String>);

impl ServiceAccountTokens for CountingTokens {
    fn token<'a>(
        &'a self,
        _audiences: &'a [String],
    ) -> futures::future::BoxFuture<'a, Result<String, String>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { self.1.clone() })
    }
}

fn sa_login(cloud: Cloud, annotations: &[(&str, &str)], tokens: Arc<CountingTokens>) -> CloudLogin {
    CloudLogin {
        cloud,
        identity: Identity::ServiceAccount(ServiceAccountIdentity {
            namespace: "apps".into(),
            name: "puller".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tokens,
        }),
        involved: None,
    }
}

async fn credential(
    auth: &CloudAuth,
    login: &CloudLogin,
    registry: &str,
) -> Result<(String, String), CloudError> {
    let http = reqwest::Client::new();
    let base = url::Url::parse(&format!("https://{registry}/")).unwrap();
    auth.registry_credential(
        login,
        registry,
        LoginClients {
            cloud: &http,
            registry: &http,
            registry_base: &base,
        },
    )
    .await
}

#[tokio::test]
async fn a_missing_annotation_fails_before_any_token_is_requested() {
    let auth = CloudAuth::new(&CloudConfig::default(), CloudEnv::default(), "test");
    let tokens = Arc::new(CountingTokens(AtomicUsize::new(0), Ok("jwt".into())));
    let login = sa_login(Cloud::Aws, &[], tokens.clone());
    let e = credential(
        &auth,
        &login,
        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
    )
    .await
    .unwrap_err();
    assert_eq!(e.step, Step::NoIdentity);
    assert!(e.to_string().contains("eks.amazonaws.com/role-arn"), "{e}");
    assert_eq!(tokens.0.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_refused_token_request_is_named_as_that_step() {
    let auth = CloudAuth::new(&CloudConfig::default(), CloudEnv::default(), "test");
    let tokens = Arc::new(CountingTokens(
        AtomicUsize::new(0),
        Err("serviceaccounts \"puller\" is forbidden".into()),
    ));
    let login = sa_login(
        Cloud::Azure,
        &[
            (annotations::AZURE_CLIENT_ID, "c"),
            (annotations::AZURE_TENANT_ID, "t"),
        ],
        tokens,
    );
    let e = credential(&auth, &login, "myregistry.azurecr.io")
        .await
        .unwrap_err();
    assert_eq!(e.step, Step::ServiceAccountToken);
    assert!(
            e.to_string()
                .contains("TokenRequest for service account apps/puller (audience api://AzureADTokenExchange) failed"),
            "{e}"
        );
}

#[tokio::test]
async fn a_host_of_another_cloud_is_refused() {
    let auth = CloudAuth::new(&CloudConfig::default(), CloudEnv::default(), "test");
    let login = CloudLogin {
        cloud: Cloud::Gcp,
        identity: Identity::Controller,
        involved: None,
    };
    let e = credential(&auth, &login, "ghcr.io").await.unwrap_err();
    assert_eq!(e.step, Step::UnsupportedRegistry);
}

#[test]
fn cache_keys_separate_identities_and_registries() {
    let tokens = Arc::new(CountingTokens(AtomicUsize::new(0), Ok(String::new())));
    let a = sa_login(
        Cloud::Aws,
        &[(annotations::AWS_ROLE_ARN, "arn:aws:iam::1:role/a")],
        tokens.clone(),
    );
    let b = sa_login(
        Cloud::Aws,
        &[(annotations::AWS_ROLE_ARN, "arn:aws:iam::1:role/b")],
        tokens,
    );
    let auth = CloudAuth::new(&CloudConfig::default(), CloudEnv::default(), "test");
    let t = hosts::target(Cloud::Aws, "123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
    let ka = registry_key(Cloud::Aws, &auth.who(&a).unwrap(), &t);
    let kb = registry_key(Cloud::Aws, &auth.who(&b).unwrap(), &t);
    assert_ne!(ka, kb);
    let controller = CloudLogin {
        cloud: Cloud::Aws,
        identity: Identity::Controller,
        involved: None,
    };
    assert_ne!(
        ka,
        registry_key(Cloud::Aws, &auth.who(&controller).unwrap(), &t)
    );
}

#[test]
fn dry_runs_say_the_source_and_the_registry_step() {
    let env = CloudEnv::from_pairs([
        ("GCE_METADATA_HOST", "127.0.0.1:9999"),
        ("HOME", "/nonexistent"),
    ]);
    let d = describe(Cloud::Gcp, &env, "us-docker.pkg.dev").unwrap();
    assert!(
        d.contains("metadata server at 127.0.0.1:9999") && d.contains("oauth2accesstoken"),
        "{d}"
    );
    let d = describe(Cloud::Azure, &CloudEnv::default(), "r.azurecr.io").unwrap();
    assert!(d.contains("https://r.azurecr.io/oauth2/exchange"), "{d}");
    assert!(describe(Cloud::Aws, &env, "ghcr.io").is_err());
}
