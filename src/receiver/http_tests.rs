//! Every provider through the receiver's HTTP handler: its documented payload with valid
//! credentials is accepted and schedules the ImageRepository of the pushed image; the
//! same payload with forged credentials gets 401 and schedules nothing. No cluster: the
//! caches are reflector stores filled here.

use super::*;
use crate::api::ImageRepositorySpec;
use axum::http::Request;
use k8s_openapi::ByteString;
use kube::api::ObjectMeta;
use kube::runtime::watcher::Event;
use tower::ServiceExt as _;

const TOKEN: &str = "shared-token";
const GITHUB_KEY: &str = "github-key";

fn receiver() -> Arc<Receiver> {
    let (repositories, mut repo_writer) = reflector::store::<ImageRepository>();
    for (i, image) in [
        "registry.example.com:5000/team/app",
        "registry.gitlab.example.com/acme/web/frontend",
        "acme/web",
        "ghcr.io/acme-corp/web",
        "quay.io/acme/web",
        "harbor.example.com/acme/web",
        "acmeprod.azurecr.io/team/web",
        "europe-west1-docker.pkg.dev/acme-prod/images/web",
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = ImageRepository::new(
            &format!("repo-{i}"),
            ImageRepositorySpec {
                image: image.into(),
                interval: "1h".into(),
                ..Default::default()
            },
        );
        r.metadata.namespace = Some("apps".into());
        repo_writer.apply_watcher_event(&Event::Apply(r));
    }
    let (secrets, mut secret_writer) = reflector::store::<Secret>();
    secret_writer.apply_watcher_event(&Event::Apply(Secret {
        metadata: ObjectMeta {
            name: Some("image-reflector-receiver".into()),
            namespace: Some("flux-system".into()),
            ..Default::default()
        },
        data: Some(
            [
                ("token".to_string(), ByteString(TOKEN.into())),
                ("github".to_string(), ByteString(GITHUB_KEY.into())),
            ]
            .into(),
        ),
        ..Default::default()
    }));
    let metrics = metrics::ReceiverMetrics::default();
    Arc::new(Receiver {
        secrets: auth::Secrets::new(secrets, "flux-system", "image-reflector-receiver"),
        secrets_synced: Arc::new(AtomicBool::new(true)),
        dispatcher: Arc::new(dispatch::Dispatcher::new(
            repositories,
            Coalescing {
                quiet_period: Duration::from_millis(500),
                max_delay: Duration::from_secs(5),
            },
            metrics.clone(),
        )),
        metrics,
        readiness: Readiness::ready(),
    })
}

fn body_of(file: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/receiver/testdata")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// How a provider's delivery is authenticated, genuinely or not.
fn credentials(provider: Provider, body: &[u8], genuine: bool) -> (String, Vec<(String, String)>) {
    let path = format!("/hooks/{provider}");
    let token = if genuine { TOKEN } else { "forged-token" };
    match provider.auth_scheme() {
        providers::AuthScheme::AuthorizationHeader => (
            path,
            vec![("authorization".into(), format!("Bearer {token}"))],
        ),
        providers::AuthScheme::GithubSignature => {
            let key = if genuine { GITHUB_KEY } else { TOKEN };
            (
                path,
                vec![
                    ("x-github-event".into(), "package".into()),
                    ("x-github-delivery".into(), format!("delivery-{genuine}")),
                    (
                        "x-hub-signature-256".into(),
                        auth::sign(key.as_bytes(), body),
                    ),
                ],
            )
        }
        providers::AuthScheme::UrlToken => (format!("{path}/{token}"), vec![]),
        providers::AuthScheme::HeaderOrSignature => (
            path,
            vec![("x-signature".into(), auth::sign(token.as_bytes(), body))],
        ),
    }
}

async fn deliver(
    receiver: &Arc<Receiver>,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut request = Request::post(path).header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let response = receiver
        .router()
        .oneshot(request.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn every_provider_accepts_its_documented_push_with_valid_credentials_and_refuses_forged_ones()
{
    for (provider, file) in [
        (
            Provider::Distribution,
            "distribution-2.8-push-manifest.json",
        ),
        (Provider::Distribution, "distribution-3-push-manifest.json"),
        (Provider::Gitlab, "gitlab-push.json"),
        (Provider::DockerHub, "dockerhub-push.json"),
        (Provider::Github, "github-package-published.json"),
        (Provider::Quay, "quay-repo-push.json"),
        (Provider::Harbor, "harbor-push-artifact.json"),
        (Provider::Harbor, "harbor-cloudevents-pushed.json"),
        (Provider::Acr, "acr-push.json"),
        (Provider::Gar, "gar-insert-tag.json"),
        (Provider::Generic, "generic.json"),
    ] {
        let receiver = receiver();
        let body = body_of(file);

        let (path, headers) = credentials(provider, &body, false);
        let (status, text) = deliver(&receiver, &path, &headers, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{provider} {file} forged: {text}"
        );
        assert!(
            receiver.dispatcher.pending_is_empty(),
            "{provider} {file}: a forged delivery scheduled something"
        );

        let (path, headers) = credentials(provider, &body, true);
        let (status, text) = deliver(&receiver, &path, &headers, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{provider} {file}: {text}");
        assert!(
            text.contains("\"result\":\"triggered\"") && text.contains("\"repositories\":1"),
            "{provider} {file}: {text}"
        );
    }
}

#[tokio::test]
async fn unknown_providers_misplaced_tokens_bad_json_and_large_bodies_get_clear_4xx() {
    let receiver = receiver();
    let bearer = vec![("authorization".to_string(), format!("Bearer {TOKEN}"))];
    for (path, headers, body, expected) in [
        (
            "/hooks/nexus",
            bearer.clone(),
            b"{}".to_vec(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/elsewhere",
            bearer.clone(),
            b"{}".to_vec(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/hooks/distribution/shared-token",
            vec![],
            b"{}".to_vec(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/hooks/distribution",
            bearer.clone(),
            b"{\"events\":".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/hooks/generic",
            bearer.clone(),
            b"{\"image\":\"\"}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/hooks/distribution?registry=a/b",
            bearer.clone(),
            body_of("distribution-2.8-push-manifest.json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/hooks/distribution",
            bearer.clone(),
            vec![b' '; MAX_BODY_BYTES + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        // Authenticated and well-formed, for an image nobody watches: accepted, a no-op.
        (
            "/hooks/generic",
            bearer.clone(),
            br#"{"image":"ghcr.io/nobody/watches","tag":"1"}"#.to_vec(),
            StatusCode::ACCEPTED,
        ),
        // A pull: accepted and ignored.
        (
            "/hooks/distribution",
            bearer,
            body_of("distribution-2.8-pull.json"),
            StatusCode::ACCEPTED,
        ),
    ] {
        let (status, text) = deliver(&receiver, path, &headers, body).await;
        assert_eq!(status, expected, "{path}: {text}");
    }
    assert!(receiver.dispatcher.pending_is_empty());
}
