//! Cloud registry logins end to end: the controller's own identity (the seed's
//! `--aws-autologin-for-ecr` with an IRSA web identity token from the real TokenRequest
//! API) and object-level workload identity (the controller asks the API server for a
//! ServiceAccount's token with the cloud's audience; moto's STS, or the Entra ID and GCP
//! STS stand-ins, check its issuer, audience, signature and subject against the control
//! plane's own key). Registries are real docker-registries that refuse anyone without
//! the cloud's credential, named as the cloud names them and reached through the test
//! egress proxy (the repositories' `proxySecretRef`); the process trusts the test CAs
//! through `SSL_CERT_FILE`, as a pod would a mounted bundle.

use super::namespace;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use test_support::certs::TestCa;
use test_support::cloud_standins::{
    ACR_HOST, Azure, AzureOptions, FederatedTrust, Gcp, GcpOptions, acr_registry,
};
use test_support::cluster::{Cluster, condition, ready_is};
use test_support::control_plane::WriteCounts;
use test_support::egress::{Egress, named_registry};
use test_support::moto::{ECR_HOST, Moto, MotoOptions, OidcTrust, ROLE, ecr_password};
use test_support::registry::{Registry, RegistryOptions};

const UNTRUSTING_ROLE: &str = "arn:aws:iam::123456789012:role/trusts-nobody";
pub(super) const CONTROLLER: &str = "system:serviceaccount:flux-system:image-reflector-controller";
const PULLER: &str = "system:serviceaccount:apps:puller";

/// moto checking web identity tokens as an IAM OIDC provider for this control plane.
async fn moto_for(c: &Cluster, trust: &[(&str, &[&str])]) -> Moto {
    let oidc = OidcTrust {
        issuer: c.control_plane.service_account_issuer().into(),
        key_file: c.control_plane.service_account_public_key(),
        trust: trust
            .iter()
            .map(|(role, subjects)| {
                (
                    role.to_string(),
                    subjects.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect(),
    };
    tokio::task::spawn_blocking(move || {
        Moto::start(MotoOptions {
            oidc: Some(oidc),
            ..Default::default()
        })
    })
    .await
    .expect("moto")
}

/// moto, the egress proxy and the ECR registry (its password moto's token's).
pub(super) struct Ecr {
    pub moto: Moto,
    pub egress: Egress,
    pub registry: Registry,
}

pub(super) async fn ecr(c: &Cluster, trust: &[(&str, &[&str])], tags: &[&str]) -> Ecr {
    let moto = moto_for(c, trust).await;
    let egress = Egress::start().await;
    egress.allow(moto.addr());
    let registry = named_registry(
        ECR_HOST,
        "AWS",
        &ecr_password("123456789012"),
        tags,
        &egress,
    )
    .await;
    Ecr {
        moto,
        egress,
        registry,
    }
}

/// A PEM bundle of these CAs, for `SSL_CERT_FILE`.
pub(super) fn ca_bundle(dir: &Path, pems: &[&str]) -> PathBuf {
    let path = dir.join("test-cas.pem");
    std::fs::write(&path, pems.join("\n")).expect("write CA bundle");
    path
}

/// The namespace `apps` and the Secret `egress` naming the egress proxy.
pub(super) async fn apps_with_egress(c: &Cluster, egress: &Egress) {
    c.apply(&namespace("apps")).await;
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "egress",
        "-n",
        "apps",
        &format!("--from-literal=address={}", egress.url()),
    ])
    .await;
}

fn service_account(name: &str, annotations: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: apps\n"
    );
    if !annotations.is_empty() {
        yaml.push_str("  annotations:\n");
        for (k, v) in annotations {
            yaml.push_str(&format!("    {k}: {v:?}\n"));
        }
    }
    yaml
}

/// An ImageRepository in `apps` through the egress proxy; `extra` lines go under spec.
pub(super) fn repository(name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: {name}
  namespace: apps
spec:
  interval: 1h
  image: {image}
  proxySecretRef:
    name: egress
{extra}"
    )
}

pub(super) async fn ready_with_tags(c: &Cluster, name: &str, tags: i64) {
    let repo = c
        .wait_for_repository("apps", name, "Ready=True", |o| ready_is(o, "True", None))
        .await;
    assert_eq!(
        repo["status"]["lastScanResult"]["tagCount"], tags,
        "{repo:#}"
    );
}

/// Waits for Ready=False AuthenticationFailed and returns its message.
async fn authentication_failure(c: &Cluster, name: &str) -> String {
    let repo = c
        .wait_for_repository("apps", name, "Ready=False AuthenticationFailed", |o| {
            ready_is(o, "False", Some("AuthenticationFailed"))
        })
        .await;
    condition(&repo, "Ready").expect("Ready")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn assert_log_free_of(c: &Cluster, secrets: &[&str]) {
    let log = c.reflector().log();
    for s in secrets {
        assert!(!log.contains(s), "a secret is in image-reflector's log");
    }
}

/// IRSA as EKS plays it: a token of the controller's ServiceAccount for STS, written to
/// the file `AWS_WEB_IDENTITY_TOKEN_FILE` names. Returns the token and the file.
pub(super) async fn irsa_token_file(c: &Cluster) -> (String, std::path::PathBuf) {
    let token = c
        .kubectl_ok(&[
            "create",
            "token",
            "image-reflector-controller",
            "-n",
            "flux-system",
            "--audience",
            "sts.amazonaws.com",
            "--duration",
            "1h",
        ])
        .await
        .trim()
        .to_string();
    let file = c.dir().join("irsa-token");
    std::fs::write(&file, &token).expect("token file");
    (token, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_aws_autologin_for_ecr_scans_ecr_with_the_controllers_web_identity() {
    let mut c = Cluster::install(RegistryOptions::default()).await;
    let Ecr {
        moto,
        egress,
        registry,
    } = ecr(&c, &[(ROLE, &[CONTROLLER])], &["1.0.0", "1.1.0", "2.0.0"]).await;
    let (token, token_file) = irsa_token_file(&c).await;
    let bundle = ca_bundle(c.dir(), &[registry.ca_pem().expect("CA")]);
    let (endpoint, token_path, bundle_path) = (
        moto.endpoint(),
        token_file.display().to_string(),
        bundle.display().to_string(),
    );
    let home = c.dir().display().to_string();
    c.start_reflector_with_env(
        &["--aws-autologin-for-ecr"],
        &[
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_path),
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("HOME", &home),
            ("SSL_CERT_FILE", &bundle_path),
        ],
    )
    .await;
    apps_with_egress(&c, &egress).await;
    let image = format!("{ECR_HOST}/team/app");
    // The seed's way: provider generic, no secretRef; and Flux v1's: provider aws.
    c.apply(&repository("seed", &image, "")).await;
    c.apply(&repository("flux", &image, "  provider: aws\n"))
        .await;
    ready_with_tags(&c, "seed", 3).await;
    ready_with_tags(&c, "flux", 3).await;
    assert_eq!(moto.count("sts:AssumeRoleWithWebIdentity").await, 1);
    assert_eq!(
        moto.count("ecr:GetAuthorizationToken").await,
        1,
        "one ECR token for both repositories of the registry"
    );
    assert!(egress.refused().is_empty(), "{:?}", egress.refused());
    assert_log_free_of(&c, &[&token, &ecr_password("123456789012")]);
    // moto's ECR token expires in 2015: kept briefly, and the log says so.
    assert!(
        c.reflector().log().contains("expiry lies in the past"),
        "{}",
        c.reflector_log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_level_workload_identity_scans_ecr_as_the_repositorys_service_account_and_names_the_failed_step()
 {
    let mut c = Cluster::install(RegistryOptions::default()).await;
    let Ecr {
        moto,
        egress,
        registry,
    } = ecr(
        &c,
        &[(ROLE, &[PULLER]), (UNTRUSTING_ROLE, &[])],
        &["1.0.0", "1.1.0", "2.0.0", "3.0.0"],
    )
    .await;
    let bundle = ca_bundle(c.dir(), &[registry.ca_pem().expect("CA")])
        .display()
        .to_string();
    let endpoint = moto.endpoint();
    c.start_reflector_with_env(
        &["--feature-gates=ObjectLevelWorkloadIdentity=true"],
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("SSL_CERT_FILE", &bundle),
        ],
    )
    .await;
    apps_with_egress(&c, &egress).await;
    c.apply(&service_account(
        "puller",
        &[("eks.amazonaws.com/role-arn", ROLE)],
    ))
    .await;
    c.apply(&service_account("unannotated", &[])).await;
    c.apply(&service_account(
        "untrusted",
        &[("eks.amazonaws.com/role-arn", UNTRUSTING_ROLE)],
    ))
    .await;
    let image = format!("{ECR_HOST}/team/app");
    let as_account = |sa: &str| format!("  provider: aws\n  serviceAccountName: {sa}\n");
    let before = c.writes().await;
    c.apply(&repository("app", &image, &as_account("puller")))
        .await;
    ready_with_tags(&c, "app", 4).await;
    assert_eq!(
        c.writes().await.since(&before).get("serviceaccounts/token"),
        1,
        "one TokenRequest for the ServiceAccount"
    );
    assert_eq!(moto.count("sts:AssumeRoleWithWebIdentity").await, 1);
    assert_eq!(moto.count("ecr:GetAuthorizationToken").await, 1);

    c.apply(&repository("no-role", &image, &as_account("unannotated")))
        .await;
    let message = authentication_failure(&c, "no-role").await;
    assert!(
        message.contains(
            "service account apps/unannotated has no eks.amazonaws.com/role-arn annotation"
        ) && message.contains(ECR_HOST),
        "{message}"
    );

    c.apply(&repository("refused", &image, &as_account("untrusted")))
        .await;
    let message = authentication_failure(&c, "refused").await;
    assert!(
        message.contains("STS refused AssumeRoleWithWebIdentity for role arn:aws:iam::123456789012:role/trusts-nobody")
            && message.contains("AccessDenied"),
        "{message}"
    );
    assert!(moto.count("sts:AssumeRoleWithWebIdentity:refused").await >= 1);
    assert_log_free_of(&c, &[&ecr_password("123456789012")]);
}

/// TokenRequests since `before`, and moto's STS and ECR calls.
async fn exchanges(c: &Cluster, moto: &Moto, before: &WriteCounts) -> (u64, u64, u64) {
    (
        c.writes().await.since(before).get("serviceaccounts/token"),
        moto.count("sts:AssumeRoleWithWebIdentity").await,
        moto.count("ecr:GetAuthorizationToken").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_repositories_of_one_registry_make_one_exchange_per_expiry_window() {
    let mut c = Cluster::install(RegistryOptions::default()).await;
    let Ecr {
        moto,
        egress,
        registry,
    } = ecr(&c, &[(ROLE, &[PULLER])], &["1.0.0", "2.0.0"]).await;
    let bundle = ca_bundle(c.dir(), &[registry.ca_pem().expect("CA")])
        .display()
        .to_string();
    let endpoint = moto.endpoint();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("SSL_CERT_FILE", bundle.as_str()),
    ];
    let gate = "--feature-gates=ObjectLevelWorkloadIdentity=true";
    c.start_reflector_with_env(&[gate], &env).await;
    apps_with_egress(&c, &egress).await;
    c.apply(&service_account(
        "puller",
        &[("eks.amazonaws.com/role-arn", ROLE)],
    ))
    .await;
    let image = format!("{ECR_HOST}/team/app");
    let all: Vec<String> = (0..50)
        .map(|i| {
            repository(
                &format!("app-{i:02}"),
                &image,
                "  provider: aws\n  serviceAccountName: puller\n",
            )
        })
        .collect();
    let before = c.writes().await;
    c.apply(&all.join("---\n")).await;
    for i in 0..50 {
        ready_with_tags(&c, &format!("app-{i:02}"), 2).await;
    }
    assert_eq!(
        exchanges(&c, &moto, &before).await,
        (1, 1, 1),
        "TokenRequests, STS and ECR calls for fifty scans"
    );
    let metrics = c.reflector_metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gotk_token_cache_events_total{")
                && l.contains("event_type=\"cache_hit\"")
                && l.contains("name=\"app-49\"")),
        "Flux's cache events per object:\n{metrics}"
    );

    // A five-second window: a rescan within it reuses the tokens, one after it logs in
    // again (the restart itself scans nothing: every repository was scanned within its
    // interval).
    c.kill_reflector().await;
    c.start_reflector_with_env(&[gate, "--token-cache-max-duration=5s"], &env)
        .await;
    let request = |name: &'static str, at: &'static str| {
        let c = &c;
        async move {
            c.request_scan("apps", name, at).await;
            c.wait_for_repository("apps", name, "requestedAt handled", |o| {
                o["status"]["lastHandledReconcileAt"] == at && ready_is(o, "True", None)
            })
            .await;
        }
    };
    let window = Instant::now();
    request("app-00", "first").await;
    assert_eq!(
        exchanges(&c, &moto, &before).await,
        (2, 2, 2),
        "a new process logs in once"
    );
    request("app-01", "within-the-window").await;
    if window.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            exchanges(&c, &moto, &before).await,
            (2, 2, 2),
            "within the window the tokens are reused"
        );
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    request("app-02", "after-the-window").await;
    assert_eq!(
        exchanges(&c, &moto, &before).await,
        (3, 3, 3),
        "after the window it logs in again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_level_workload_identity_scans_acr_with_an_entra_id_token() {
    let mut c = Cluster::install(RegistryOptions::default()).await;
    let (registry, registry_signer) = acr_registry().await;
    registry.push_tags("team/app", &["1.0", "1.1"]).await;
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let client = "11111111-2222-3333-4444-555555555555";
    let key_pem =
        std::fs::read_to_string(c.control_plane.service_account_public_key()).expect("SA key");
    let ca = TestCa::new("azure test CA");
    let azure = Azure::start(
        AzureOptions::federated(
            tenant,
            client,
            c.control_plane.service_account_issuer(),
            &key_pem,
            "system:serviceaccount:apps:acr-puller",
        ),
        &ca,
        &registry.base_url(),
        registry_signer,
    )
    .await;
    let egress = azure.egress().await;
    let bundle = ca_bundle(c.dir(), &[&ca.cert_pem]).display().to_string();
    let authority = azure.authority();
    c.start_reflector_with_env(
        &["--feature-gates=ObjectLevelWorkloadIdentity=true"],
        &[
            ("AZURE_AUTHORITY_HOST", &authority),
            ("SSL_CERT_FILE", &bundle),
        ],
    )
    .await;
    apps_with_egress(&c, &egress).await;
    c.apply(&service_account(
        "acr-puller",
        &[
            ("azure.workload.identity/client-id", client),
            ("azure.workload.identity/tenant-id", tenant),
        ],
    ))
    .await;
    c.apply(&service_account(
        "no-client",
        &[("azure.workload.identity/tenant-id", tenant)],
    ))
    .await;
    let image = format!("{ACR_HOST}/team/app");
    c.apply(&repository(
        "acr",
        &image,
        "  provider: azure\n  serviceAccountName: acr-puller\n",
    ))
    .await;
    ready_with_tags(&c, "acr", 2).await;
    assert_eq!((azure.count("entra"), azure.count("exchange")), (1, 1));

    c.apply(&repository(
        "no-client",
        &image,
        "  provider: azure\n  serviceAccountName: no-client\n",
    ))
    .await;
    let message = authentication_failure(&c, "no-client").await;
    assert!(
        message.contains("has no azure.workload.identity/client-id annotation"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_level_workload_identity_scans_artifact_registry_through_sts_and_impersonation() {
    const GSA: &str = "reader@my-project.iam.gserviceaccount.com";
    const WIP: &str = "projects/123456/locations/global/workloadIdentityPools/pool/providers/k8s";
    let mut c = Cluster::install(RegistryOptions::default()).await;
    let egress = Egress::start().await;
    let access = "ya29.e2e-access-token";
    let registry = named_registry(
        "us-docker.pkg.dev",
        "oauth2accesstoken",
        access,
        &["1.0", "2.0", "3.0"],
        &egress,
    )
    .await;
    let key_pem =
        std::fs::read_to_string(c.control_plane.service_account_public_key()).expect("SA key");
    let ca = TestCa::new("gcp test CA");
    let gcp = Gcp::start(
        GcpOptions {
            access_token: access.into(),
            federated: Some(FederatedTrust {
                issuer: c.control_plane.service_account_issuer().into(),
                key_pem,
                audience: format!("//iam.googleapis.com/{WIP}"),
                subjects: vec![
                    "system:serviceaccount:apps:gar-puller".into(),
                    "system:serviceaccount:apps:gar-denied".into(),
                ],
            }),
            impersonable: vec![GSA.into()],
            gke: None,
        },
        &ca,
    )
    .await;
    egress.route("sts.googleapis.com:443", gcp.apis_tls.addr);
    egress.route("iamcredentials.googleapis.com:443", gcp.apis_tls.addr);
    let bundle = ca_bundle(c.dir(), &[&ca.cert_pem, registry.ca_pem().expect("CA")])
        .display()
        .to_string();
    c.start_reflector_with_env(
        &["--feature-gates=ObjectLevelWorkloadIdentity=true"],
        &[("SSL_CERT_FILE", &bundle)],
    )
    .await;
    apps_with_egress(&c, &egress).await;
    let wip = ("gcp.auth.fluxcd.io/workload-identity-provider", WIP);
    c.apply(&service_account(
        "gar-puller",
        &[wip, ("iam.gke.io/gcp-service-account", GSA)],
    ))
    .await;
    c.apply(&service_account(
        "gar-denied",
        &[
            wip,
            (
                "iam.gke.io/gcp-service-account",
                "writer@my-project.iam.gserviceaccount.com",
            ),
        ],
    ))
    .await;
    let image = "us-docker.pkg.dev/team/app";
    c.apply(&repository(
        "gar",
        image,
        "  provider: gcp\n  serviceAccountName: gar-puller\n",
    ))
    .await;
    ready_with_tags(&c, "gar", 3).await;
    assert_eq!((gcp.count("sts"), gcp.count("impersonate")), (1, 1));

    c.apply(&repository(
        "denied",
        image,
        "  provider: gcp\n  serviceAccountName: gar-denied\n",
    ))
    .await;
    let message = authentication_failure(&c, "denied").await;
    assert!(
        message.contains("IAM Credentials") && message.contains("PERMISSION_DENIED"),
        "{message}"
    );
    assert_log_free_of(&c, &[access]);
}
