//! Cloud registry logins against what plays the clouds here: moto (AWS STS and ECR, for
//! real), the Azure and GCP stand-ins (token endpoints and ACR's exchange, after the
//! services' published contracts), real registries that refuse anyone without the
//! cloud's credential, all reached by their cloud host names through the test egress
//! proxy (`test_support::egress`: CONNECT to the name, tunnelled to 127.0.0.1), so TLS is
//! checked against certificates carrying those names.
//!
//! AWS runs through the binary (`image-reflector scan --provider aws`), since the AWS SDK
//! reads the process environment; Azure and GCP run in process with an environment of
//! their own (`Scanner::with_cloud_env`).

use image_reflector::reference::ImageRef;
use image_reflector::scanner::cloud::{Cloud, CloudEnv, CloudLogin, Identity};
use image_reflector::scanner::{ProxyConfig, ScanErrorKind, ScanRequest, Scanner, ScannerConfig};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use test_support::certs::TestCa;
use test_support::cloud_standins::{
    ACR_HOST, Azure, AzureOptions, FederatedTrust, Gcp, GcpOptions, acr_registry,
};
use test_support::egress::{Egress, named_registry};
use test_support::moto::{
    ACCOUNT, ECR_HOST, ECR_PUBLIC_PASSWORD, Moto, MotoOptions, OidcTrust, ROLE, ecr_password,
};
use test_support::registry::Registry;
use test_support::token_server::TokenSigner;

const ISSUER: &str = "https://oidc.image-reflector.test";
const SUBJECT: &str = "system:serviceaccount:flux-system:image-reflector-controller";

/// A federated token as a Kubernetes TokenRequest would issue it.
fn federated_token(signer: &TokenSigner, audience: &str, subject: &str) -> String {
    let now = jiff::Timestamp::now().as_second();
    signer.jwt(&serde_json::json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": [audience],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// `image-reflector` with none of the test's own cloud or proxy variables, and a HOME
/// of its own (no shared AWS or gcloud files).
fn binary(home: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_image-reflector"));
    for (k, _) in std::env::vars() {
        let cloud = ["AWS_", "AZURE_", "GOOGLE_", "GCE_"]
            .iter()
            .any(|p| k.starts_with(p));
        if cloud || k.to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

/// `scan --provider aws -o json IMAGE` through the egress proxy, trusting `ca`.
fn aws_scan(home: &Path, egress: &Egress, ca: &str, image: &str) -> tokio::process::Command {
    let mut cmd = binary(home);
    cmd.args([
        "scan",
        "--provider",
        "aws",
        "--proxy",
        &egress.url(),
        "--ca-file",
        ca,
        "-o",
        "json",
        image,
    ]);
    cmd
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(cmd: &mut tokio::process::Command) -> Ran {
    let out = cmd.output().await.expect("run image-reflector");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn moto(options: MotoOptions) -> Moto {
    tokio::task::spawn_blocking(move || Moto::start(options))
        .await
        .expect("moto")
}

#[tokio::test]
async fn scan_with_provider_aws_logs_in_to_ecr_with_a_web_identity_and_the_registry_refuses_anyone_else()
 {
    let dir = tempfile::tempdir().expect("dir");
    let signer = TokenSigner::new();
    let moto = moto(MotoOptions {
        oidc: Some(OidcTrust {
            issuer: ISSUER.into(),
            key_file: write(dir.path(), "oidc.pub", &signer.public_key_pem).into(),
            trust: BTreeMap::from([(ROLE.to_string(), vec![SUBJECT.to_string()])]),
        }),
        ..Default::default()
    })
    .await;
    let egress = Egress::start().await;
    egress.allow(moto.addr());
    let registry = named_registry(
        ECR_HOST,
        "AWS",
        &ecr_password(ACCOUNT),
        &["1.0.0", "1.1.0", "2.0.0"],
        &egress,
    )
    .await;
    let ca = write(dir.path(), "ca.crt", registry.ca_pem().expect("CA"));
    let token = federated_token(&signer, "sts.amazonaws.com", SUBJECT);
    let token_file = write(dir.path(), "token", &token);
    let image = format!("{ECR_HOST}/team/app");
    let irsa = |cmd: &mut tokio::process::Command| {
        cmd.env("AWS_ROLE_ARN", ROLE)
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
            .env("AWS_ENDPOINT_URL", moto.endpoint());
    };

    let mut dry = binary(dir.path());
    dry.args(["scan", "--provider", "aws", "--dry-run", &image]);
    irsa(&mut dry);
    let ran = run(&mut dry).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stdout.contains("web identity token file")
            && ran.stdout.contains("(IRSA)")
            && ran
                .stdout
                .contains("ECR GetAuthorizationToken in us-east-1"),
        "{}",
        ran.stdout
    );
    assert!(moto.counts().await.is_empty(), "a dry run asks nobody");

    let mut scan = aws_scan(dir.path(), &egress, &ca, &image);
    irsa(&mut scan);
    let ran = run(&mut scan).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let out: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
    assert_eq!(out["tagCount"], 3, "{out}");
    assert_eq!(out["canonicalImageName"], image);
    assert_eq!(moto.count("sts:AssumeRoleWithWebIdentity").await, 1);
    assert_eq!(moto.count("ecr:GetAuthorizationToken").await, 1);
    assert!(egress.refused().is_empty(), "{:?}", egress.refused());
    for secret in [token.as_str(), &ecr_password(ACCOUNT)] {
        assert!(!ran.stderr.contains(secret) && !ran.stdout.contains(secret));
    }

    // Without the login the registry refuses the scan.
    let mut anonymous = binary(dir.path());
    anonymous.args(["scan", "--proxy", &egress.url(), "--ca-file", &ca, &image]);
    let ran = run(&mut anonymous).await;
    assert_eq!(ran.code, 3, "{}", ran.stderr);

    // A token for another audience: STS refuses it, and the message says so.
    let wrong = write(
        dir.path(),
        "wrong",
        &federated_token(&signer, "api://AzureADTokenExchange", SUBJECT),
    );
    let mut refused = aws_scan(dir.path(), &egress, &ca, &image);
    refused
        .env("AWS_ROLE_ARN", ROLE)
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &wrong)
        .env("AWS_ENDPOINT_URL", moto.endpoint());
    let ran = run(&mut refused).await;
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("aws login: the AWS credential chain failed")
            && ran.stderr.contains("Incorrect token audience"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains(ECR_HOST),
        "the registry is named: {}",
        ran.stderr
    );
}

#[tokio::test]
async fn ecr_refusing_the_keys_and_no_aws_identity_at_all_are_named_as_their_steps() {
    let dir = tempfile::tempdir().expect("dir");
    // moto checks signatures: keys it never issued are refused by ECR itself.
    let moto = moto(MotoOptions {
        enforce_signatures: true,
        ..Default::default()
    })
    .await;
    let image = format!("{ECR_HOST}/team/app");
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let mut cmd = binary(dir.path());
    cmd.args(["scan", "--provider", "aws", &image])
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_ENDPOINT_URL", moto.endpoint());
    let ran = run(&mut cmd).await;
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    // moto answers this refusal in XML, which the JSON protocol's parser cannot read
    // (ECR itself says UnrecognizedClientException in JSON): the status is what is left.
    assert!(
        ran.stderr
            .contains("aws login: ECR refused GetAuthorizationToken in us-east-1: HTTP 403"),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains(secret), "{}", ran.stderr);

    let mut cmd = binary(dir.path());
    cmd.args(["scan", "--provider", "aws", &image]);
    let ran = run(&mut cmd).await;
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("no AWS credentials: the default chain"),
        "{}",
        ran.stderr
    );

    let mut cmd = binary(dir.path());
    cmd.args(["scan", "--provider", "aws", "ghcr.io/org/app"]);
    let ran = run(&mut cmd).await;
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("ghcr.io is not an ECR registry"),
        "{}",
        ran.stderr
    );
}

#[tokio::test]
async fn public_ecr_logs_in_through_ecr_public() {
    let dir = tempfile::tempdir().expect("dir");
    let moto = moto(MotoOptions::default()).await;
    let egress = Egress::start().await;
    egress.allow(moto.addr());
    let registry = named_registry(
        "public.ecr.aws",
        "AWS",
        ECR_PUBLIC_PASSWORD,
        &["v1", "v2"],
        &egress,
    )
    .await;
    let ca = write(dir.path(), "ca.crt", registry.ca_pem().expect("CA"));
    let mut cmd = aws_scan(dir.path(), &egress, &ca, "public.ecr.aws/team/app");
    cmd.env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_ENDPOINT_URL", moto.endpoint());
    let ran = run(&mut cmd).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(ran.stdout.contains("\"tagCount\": 2"), "{}", ran.stdout);
    assert_eq!(moto.count("ecr-public:GetAuthorizationToken").await, 1);
    assert_eq!(moto.count("ecr:GetAuthorizationToken").await, 0);
}

#[tokio::test]
async fn dry_runs_name_each_cloud_s_credential_source_without_asking_anyone() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cmd = binary(dir.path());
    cmd.args([
        "scan",
        "--provider",
        "azure",
        "--dry-run",
        "myregistry.azurecr.io/team/app",
    ])
    .env(
        "AZURE_FEDERATED_TOKEN_FILE",
        "/var/run/secrets/azure/tokens/azure-identity-token",
    )
    .env("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
    .env("AZURE_TENANT_ID", "tenant");
    let ran = run(&mut cmd).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stdout.contains("workload identity") && ran.stdout.contains("/oauth2/exchange"),
        "{}",
        ran.stdout
    );

    let mut cmd = binary(dir.path());
    cmd.args([
        "scan",
        "--provider",
        "gcp",
        "--dry-run",
        "-o",
        "json",
        "us-docker.pkg.dev/p/r/app",
    ])
    .env("GCE_METADATA_HOST", "127.0.0.1:1");
    let ran = run(&mut cmd).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let out: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
    assert!(
        out["credentials"]
            .as_str()
            .unwrap_or_default()
            .contains("metadata server at 127.0.0.1:1"),
        "{out}"
    );

    let mut cmd = binary(dir.path());
    cmd.args([
        "scan",
        "--provider",
        "gcp",
        "--username",
        "u",
        "--password-stdin",
        "gcr.io/p/app",
    ]);
    let ran = run(&mut cmd).await;
    assert_eq!(
        ran.code, 2,
        "--provider and --username conflict: {}",
        ran.stderr
    );
}

// ---------------------------------------------------------------------------------------
// Azure and GCP, in process

fn cloud_scanner(env: &[(&str, &str)]) -> Scanner {
    Scanner::with_cloud_env(
        ScannerConfig {
            per_host_requests_per_second: 0.0,
            ..ScannerConfig::default()
        },
        CloudEnv::from_pairs(env.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
    )
    .expect("scanner")
}

/// A controller-level login to `host/repo` through the egress proxy, trusting `ca`.
fn cloud_request(cloud: Cloud, host: &str, repo: &str, egress: &Egress, ca: &str) -> ScanRequest {
    let mut r = ScanRequest::new(ImageRef::parse(&format!("{host}/{repo}")).expect("image"));
    r.timeout = Duration::from_secs(30);
    r.proxy = Some(ProxyConfig {
        address: egress.url(),
        username: None,
        password: None,
    });
    r.tls.ca_pem = Some(ca.as_bytes().to_vec());
    r.cloud = Some(CloudLogin {
        cloud,
        identity: Identity::Controller,
        involved: None,
    });
    r
}

struct AcrSetup {
    azure: Azure,
    egress: Egress,
    ca: TestCa,
    oidc: TokenSigner,
    _registry: Registry,
}

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";

/// ACR's stand-in in front of a docker-registry (token auth, realm on ACR's host) with
/// `repos` of one tag each, and a federated credential trusting SUBJECT's tokens.
async fn acr(repos: usize) -> AcrSetup {
    let (registry, registry_signer) = acr_registry().await;
    for i in 0..repos {
        registry
            .push_tags(&format!("team/app{i}"), &["1.0", "1.1"])
            .await;
    }
    let ca = TestCa::new("cloud test CA");
    let oidc = TokenSigner::new();
    let azure = Azure::start(
        AzureOptions::federated(TENANT, CLIENT, ISSUER, &oidc.public_key_pem, SUBJECT),
        &ca,
        &registry.base_url(),
        registry_signer,
    )
    .await;
    let egress = azure.egress().await;
    AcrSetup {
        azure,
        egress,
        ca,
        oidc,
        _registry: registry,
    }
}

/// A scanner with Azure workload identity's environment, the token in `token_file`.
fn workload_identity_scanner(a: &AcrSetup, token_file: &str) -> Scanner {
    let authority = a.azure.authority();
    cloud_scanner(&[
        ("AZURE_FEDERATED_TOKEN_FILE", token_file),
        ("AZURE_CLIENT_ID", CLIENT),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_AUTHORITY_HOST", &authority),
    ])
}

#[tokio::test]
async fn acr_logs_in_with_workload_identity_once_for_fifty_repositories() {
    let a = acr(50).await;
    let dir = tempfile::tempdir().expect("dir");
    let token = federated_token(&a.oidc, "api://AzureADTokenExchange", SUBJECT);
    let token_file = write(dir.path(), "azure-identity-token", &token);
    let scanner = workload_identity_scanner(&a, &token_file);
    let scans = (0..50).map(|i| {
        let req = cloud_request(
            Cloud::Azure,
            ACR_HOST,
            &format!("team/app{i}"),
            &a.egress,
            &a.ca.cert_pem,
        );
        let scanner = scanner.clone();
        async move { scanner.scan(&req).await }
    });
    for result in futures::future::join_all(scans).await {
        let outcome = result.expect("scan");
        assert_eq!(outcome.tag_count, 2);
    }
    assert_eq!(
        a.azure.count("entra"),
        1,
        "one Entra ID token for fifty scans"
    );
    assert_eq!(
        a.azure.count("exchange"),
        1,
        "one ACR exchange for fifty scans"
    );

    // Without the login, ACR's token service refuses.
    let mut anonymous = cloud_request(
        Cloud::Azure,
        ACR_HOST,
        "team/app0",
        &a.egress,
        &a.ca.cert_pem,
    );
    anonymous.cloud = None;
    let e = scanner.scan(&anonymous).await.unwrap_err();
    assert_eq!(e.kind(), ScanErrorKind::AuthenticationFailed, "{e}");
}

#[tokio::test]
async fn acr_logs_in_with_a_managed_identity_and_a_refused_assertion_names_entra_id() {
    let a = acr(1).await;
    let imds = a.azure.imds_host();
    let scanner = cloud_scanner(&[("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds)]);
    let req = cloud_request(
        Cloud::Azure,
        ACR_HOST,
        "team/app0",
        &a.egress,
        &a.ca.cert_pem,
    );
    assert_eq!(scanner.scan(&req).await.expect("scan").tag_count, 2);
    assert_eq!(a.azure.count("imds"), 1);

    let dir = tempfile::tempdir().expect("dir");
    let stranger = federated_token(
        &a.oidc,
        "api://AzureADTokenExchange",
        "system:serviceaccount:other:stranger",
    );
    let token_file = write(dir.path(), "azure-identity-token", &stranger);
    let scanner = workload_identity_scanner(&a, &token_file);
    let e = scanner.scan(&req).await.unwrap_err();
    assert_eq!(e.kind(), ScanErrorKind::AuthenticationFailed);
    let msg = e.to_string();
    assert!(
        msg.contains("azure login: the Entra ID token endpoint")
            && msg.contains("AADSTS70021")
            && msg.contains(ACR_HOST),
        "{msg}"
    );
    assert!(!msg.contains(&stranger), "{msg}");
    assert_eq!(a.azure.count("exchange"), 1, "no exchange without a token");
}

const GAR_HOST: &str = "us-docker.pkg.dev";
const GSA: &str = "reader@my-project.iam.gserviceaccount.com";
const WIP: &str = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/k8s";

async fn gar(
    options: impl FnOnce(&TokenSigner) -> GcpOptions,
) -> (Gcp, Registry, Egress, TestCa, TokenSigner) {
    let egress = Egress::start().await;
    let oidc = TokenSigner::new();
    let options = options(&oidc);
    let registry = named_registry(
        GAR_HOST,
        "oauth2accesstoken",
        &options.access_token,
        &["1.0", "2.0", "3.0"],
        &egress,
    )
    .await;
    let ca = TestCa::new("gcp test CA");
    let gcp = Gcp::start(options, &ca).await;
    egress.allow(gcp.apis.addr);
    (gcp, registry, egress, ca, oidc)
}

#[tokio::test]
async fn gar_logs_in_with_the_metadata_server_s_token() {
    let access = "ya29.metadata-token";
    let (gcp, registry, egress, _, _) = gar(|_| GcpOptions {
        access_token: access.into(),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let home = dir.path().display().to_string();
    let metadata = gcp.metadata_host();
    let scanner = cloud_scanner(&[("GCE_METADATA_HOST", &metadata), ("HOME", &home)]);
    let ca = registry.ca_pem().expect("CA").to_string();
    let req = cloud_request(Cloud::Gcp, GAR_HOST, "team/app", &egress, &ca);
    assert_eq!(scanner.scan(&req).await.expect("scan").tag_count, 3);
    assert_eq!(gcp.count("metadata-token"), 1);

    let mut anonymous = req.clone();
    anonymous.cloud = None;
    assert_eq!(
        scanner.scan(&anonymous).await.unwrap_err().kind(),
        ScanErrorKind::AuthenticationFailed
    );
}

#[tokio::test]
async fn gar_logs_in_with_workload_identity_federation_and_impersonation_and_names_a_refusal() {
    let access = "ya29.impersonated-token";
    let (gcp, registry, egress, _, oidc) = gar(|oidc| GcpOptions {
        access_token: access.into(),
        federated: Some(FederatedTrust {
            issuer: ISSUER.into(),
            key_pem: oidc.public_key_pem.clone(),
            audience: WIP.into(),
            subjects: vec![SUBJECT.into()],
        }),
        impersonable: vec![GSA.into()],
        gke: None,
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let token_file = write(dir.path(), "token", &federated_token(&oidc, WIP, SUBJECT));
    let apis = format!("http://{}", gcp.apis.addr);
    let config = |account: &str| {
        serde_json::json!({
            "type": "external_account",
            "audience": WIP,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{apis}/v1/token"),
            "service_account_impersonation_url": format!("{apis}/v1/projects/-/serviceAccounts/{account}:generateAccessToken"),
            "credential_source": {"file": token_file, "format": {"type": "text"}},
        })
        .to_string()
    };
    let ca = registry.ca_pem().expect("CA").to_string();
    let req = cloud_request(Cloud::Gcp, GAR_HOST, "team/app", &egress, &ca);

    let file = write(dir.path(), "credentials.json", &config(GSA));
    let scanner = cloud_scanner(&[("GOOGLE_APPLICATION_CREDENTIALS", &file)]);
    assert_eq!(scanner.scan(&req).await.expect("scan").tag_count, 3);
    assert_eq!((gcp.count("sts"), gcp.count("impersonate")), (1, 1));

    let other = "writer@my-project.iam.gserviceaccount.com";
    let file = write(dir.path(), "other.json", &config(other));
    let scanner = cloud_scanner(&[("GOOGLE_APPLICATION_CREDENTIALS", &file)]);
    let e = scanner.scan(&req).await.unwrap_err();
    assert_eq!(e.kind(), ScanErrorKind::AuthenticationFailed);
    let msg = e.to_string();
    assert!(
        msg.contains("gcp login: IAM Credentials")
            && msg.contains(&format!("impersonating {other}"))
            && msg.contains("PERMISSION_DENIED"),
        "{msg}"
    );
}
