//! Secrets stay secret. Every kind of credential the end-to-end suite hands
//! image-reflector goes through it at debug level, once in each log encoding: a Basic
//! password and a client key (a registry wanting both), a wrong password, a token
//! service's robot password, the Bearer tokens it issues and an identity token, a token
//! service that echoes the password in its refusal, the controller's own AWS web identity
//! token and ECR password (moto), the push receiver's token and HMAC key, and the
//! ServiceAccount token image-reflector runs with. Then every log line, Event, status,
//! `/metrics` line and tag store entry is searched for each of them and its base64: zero
//! hits. And the ServiceAccount may do exactly what `manifests/rbac/rbac.yaml` grants.

use super::cloud::{
    CONTROLLER, Ecr, apps_with_egress, ca_bundle, ecr, irsa_token_file, ready_with_tags,
};
use super::{create_docker_registry_secret, post, receiver_secret};
use base64::Engine as _;
use serde_json::Value;
use std::collections::BTreeSet;
use test_support::cluster::{Cluster, ready_is};
use test_support::moto::{ECR_HOST, ROLE, ecr_password};
use test_support::registry::{Registry, RegistryAuth, RegistryOptions, RegistryTls};
use test_support::token_server::TokenServer;

const BASIC_PASSWORD: &str = "basic-Pa55word-7f3a9c";
const WRONG_PASSWORD: &str = "wrong-Pa55word-1e8d40";
const ROBOT_PASSWORD: &str = "robot-Pa55word-c2b6e1";
const ECHOED_PASSWORD: &str = "echoed-Pa55word-90ad7f";
const IDENTITY_TOKEN: &str = "identity-token-5e1f0b2a";
const RECEIVER_TOKEN: &str = "receiver-token-d81c3e";
const RECEIVER_WRONG_TOKEN: &str = "receiver-wrong-token-62aa0f";
const GITHUB_KEY: &str = "github-hmac-key-0c77b9";

/// The secrets looked for: a label (printed) and the value (never printed).
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    /// `value`, and its base64 (as a Secret's data or a Basic header would carry it).
    fn add(&mut self, label: &str, value: &str) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        self.0.push((label.to_string(), value.to_string()));
        self.0.push((format!("{label} (base64)"), b64));
    }

    /// A password, and the base64 `user:password` of a Basic `Authorization` header.
    fn add_password(&mut self, label: &str, user: &str, password: &str) {
        self.add(label, password);
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.0.push((format!("{label} (Basic header)"), pair));
    }

    /// A PEM private key: each line of its body (any one would give part of the key
    /// away), and the whole PEM's base64.
    fn add_key(&mut self, label: &str, pem: &str) {
        for (i, line) in pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
            .enumerate()
        {
            self.0
                .push((format!("{label} (line {})", i + 1), line.to_string()));
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        self.0.push((format!("{label} (base64)"), b64));
    }

    /// The labels of the secrets `text` holds.
    fn found_in(&self, text: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(_, v)| text.contains(v.as_str()))
            .map(|(l, _)| l.as_str())
            .collect()
    }
}

/// One place searched, how much of it there was, and which secrets it held.
struct Searched {
    place: String,
    size: String,
    found: Vec<String>,
}

fn search(secrets: &Secrets, place: &str, size: String, text: &str) -> Searched {
    Searched {
        place: place.into(),
        size,
        found: secrets
            .found_in(text)
            .into_iter()
            .map(str::to_string)
            .collect(),
    }
}

fn repository(name: &str, image: &str, spec: &str) -> String {
    format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: {name}
  namespace: apps
spec:
  interval: 1h
  image: {image}
{spec}"
    )
}

fn policy(name: &str) -> String {
    format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata:
  name: {name}
  namespace: apps
spec:
  imageRepositoryRef:
    name: {name}
  policy:
    semver:
      range: '>=1.0.0'
"
    )
}

/// A registry with token auth by `tokens`, `team/app` pushed with two tags.
async fn token_registry(tokens: &TokenServer) -> Registry {
    let (realm, signer) = (tokens.realm(), tokens.signer.clone());
    let registry = tokio::task::spawn_blocking(move || {
        Registry::start(RegistryOptions {
            auth: RegistryAuth::Token { realm, signer },
            tls: RegistryTls::None,
        })
    })
    .await
    .expect("token registry");
    registry.push_tags("team/app", &["1.0.0", "1.1.0"]).await;
    registry
}

/// Waits until Ready is False with `reason`.
async fn failed_with(c: &Cluster, name: &str, reason: &str) {
    c.wait_for_repository("apps", name, reason, |o| ready_is(o, "False", Some(reason)))
        .await;
}

/// Asks for a scan of every repository now (a restart alone scans nothing before the
/// interval), and waits until each has handled the request.
async fn rescan_all(c: &Cluster, names: &[&str], at: &str) {
    for name in names {
        c.request_scan("apps", name, at).await;
    }
    for name in names {
        c.wait_for_repository("apps", name, "the requested scan handled", |o| {
            o["status"]["lastHandledReconcileAt"] == at
        })
        .await;
    }
}

/// Push deliveries with the right token, a wrong one, and a GitHub event signed with the
/// HMAC key: each exercises the receiver's checks of a secret.
async fn deliver(c: &Cluster, host: &str) {
    let base = format!(
        "http://{}/hooks",
        c.reflector().receiver.expect("the receiver listens")
    );
    let envelope = serde_json::json!({"events": [{
        "id": format!("secrets-{}", rand_suffix()), "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "repository": "org/private", "tag": "1.1.0"},
        "request": {"host": host},
    }]})
    .to_string();
    for token in [RECEIVER_TOKEN, RECEIVER_WRONG_TOKEN] {
        let bearer = format!("Bearer {token}");
        let (status, _) = post(
            &format!("{base}/distribution"),
            &[("authorization", bearer.as_str())],
            envelope.clone(),
        )
        .await;
        assert!(status == 202 || status == 401, "delivery answered {status}");
    }
    let github = serde_json::json!({"action": "published", "package": {
        "name": "app", "package_type": "CONTAINER",
        "package_version": {"package_url": format!("{host}/org/private:1.1.0"),
            "container_metadata": {"tag": {"name": "1.1.0"}}}}})
    .to_string();
    let signature = image_reflector::receiver::auth::sign(GITHUB_KEY.as_bytes(), github.as_bytes());
    let (status, text) = post(
        &format!("{base}/github"),
        &[
            ("x-github-event", "package"),
            ("x-hub-signature-256", signature.as_str()),
        ],
        github,
    )
    .await;
    assert_eq!(status, 202, "{text}");
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// Every line image-reflector has logged, and how many of them are at debug level.
fn log_lines(c: &Cluster, encoding: &str) -> (String, usize, usize) {
    let log = c.reflector().log();
    let debug = log
        .lines()
        .filter(|l| match encoding {
            "json" => l.contains("\"level\":\"DEBUG\""),
            _ => l.contains("DEBUG"),
        })
        .count();
    let lines = log.lines().count();
    (log, lines, debug)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_a_log_event_status_metric_or_the_tag_store_in_either_log_encoding() {
    let mut c = Cluster::install(RegistryOptions {
        auth: RegistryAuth::Basic {
            username: "flux".into(),
            password: BASIC_PASSWORD.into(),
        },
        tls: RegistryTls::Mutual,
    })
    .await;
    let host = c.registry.host();
    c.registry
        .push_tags("org/private", &["1.0.0", "1.1.0", "2.0.0"])
        .await;
    let client = c.registry.client_cert().expect("client certificate");
    let (client_cert, client_key) = (client.cert_pem.clone(), client.key_pem.clone());
    let registry_ca = c.registry.ca_pem().expect("CA").to_string();

    let tokens = TokenServer::start(Some(("robot", ROBOT_PASSWORD)), 300).await;
    tokens.accept_refresh_token(IDENTITY_TOKEN);
    let token_registry_ = token_registry(&tokens).await;
    // A token service that quotes what it was sent when it refuses it.
    let echoing = TokenServer::start(Some(("robot", ECHOED_PASSWORD)), 300).await;
    let echoed_pair =
        base64::engine::general_purpose::STANDARD.encode(format!("robot:{ECHOED_PASSWORD}"));
    echoing.answer_instead(Some((
        http::StatusCode::UNAUTHORIZED,
        &format!(
            "{{\"errors\":[{{\"code\":\"UNAUTHORIZED\",\"message\":\"robot:{ECHOED_PASSWORD} (Basic {echoed_pair}) refused\"}}]}}"
        ),
    )));
    let echoing_registry = token_registry(&echoing).await;

    // The controller's own AWS identity (IRSA): a web identity token for STS, ECR's
    // password from moto.
    let Ecr {
        moto,
        egress,
        registry: ecr_registry,
    } = ecr(&c, &[(ROLE, &[CONTROLLER])], &["1.0.0"]).await;
    let (web_identity, token_file) = irsa_token_file(&c).await;
    let bundle = ca_bundle(c.dir(), &[ecr_registry.ca_pem().expect("ECR CA")]);
    let env = [
        ("AWS_ROLE_ARN", ROLE.to_string()),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("HOME", c.dir().display().to_string()),
        ("SSL_CERT_FILE", bundle.display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let kubeconfig = std::fs::read_to_string(c.reflector_kubeconfig()).expect("kubeconfig");
    let service_account_token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("a token in the kubeconfig")
        .to_string();

    apps_with_egress(&c, &egress).await;
    receiver_secret(&c, &[("token", RECEIVER_TOKEN), ("github", GITHUB_KEY)]).await;
    // Basic credentials and a client certificate for the registry that wants both.
    create_docker_registry_secret(&c, "apps", "regcred", &host, "flux", BASIC_PASSWORD).await;
    create_docker_registry_secret(&c, "apps", "wrongcred", &host, "flux", WRONG_PASSWORD).await;
    let files = c.dir().join("tls-certs");
    std::fs::create_dir_all(&files).expect("dir");
    std::fs::write(files.join("tls.crt"), &client_cert).expect("tls.crt");
    std::fs::write(files.join("tls.key"), &client_key).expect("tls.key");
    std::fs::write(files.join("ca.crt"), &registry_ca).expect("ca.crt");
    let from = |key: &str| format!("--from-file={key}={}", files.join(key).display());
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "tls-certs",
        "-n",
        "apps",
        &from("tls.crt"),
        &from("tls.key"),
        &from("ca.crt"),
    ])
    .await;
    for (name, password) in [("robot", ROBOT_PASSWORD), ("echoed", ECHOED_PASSWORD)] {
        c.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            name,
            "-n",
            "apps",
            "--from-literal=username=robot",
            &format!("--from-literal=password={password}"),
        ])
        .await;
    }
    let identity_config = serde_json::json!({"auths": {token_registry_.host(): {
        "username": "robot", "identitytoken": IDENTITY_TOKEN}}});
    let identity_file = c.dir().join("identity.json");
    std::fs::write(&identity_file, identity_config.to_string()).expect("identity config");
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "identity",
        "-n",
        "apps",
        "--type=kubernetes.io/dockerconfigjson",
        &format!("--from-file=.dockerconfigjson={}", identity_file.display()),
    ])
    .await;

    let mtls = "  certSecretRef:\n    name: tls-certs\n";
    let repositories = [
        repository(
            "basic-mtls",
            &format!("{host}/org/private"),
            &format!("  secretRef:\n    name: regcred\n{mtls}"),
        ),
        repository(
            "wrong-password",
            &format!("{host}/org/private"),
            &format!("  secretRef:\n    name: wrongcred\n{mtls}"),
        ),
        repository(
            "token",
            &format!("{}/team/app", token_registry_.host()),
            "  secretRef:\n    name: robot\n",
        ),
        repository(
            "identity-token",
            &format!("{}/team/app", token_registry_.host()),
            "  secretRef:\n    name: identity\n",
        ),
        repository(
            "echoed",
            &format!("{}/team/app", echoing_registry.host()),
            "  secretRef:\n    name: echoed\n",
        ),
        repository(
            "ecr",
            &format!("{ECR_HOST}/team/app"),
            "  provider: aws\n  proxySecretRef:\n    name: egress\n",
        ),
    ];
    let names = [
        "basic-mtls",
        "wrong-password",
        "token",
        "identity-token",
        "echoed",
        "ecr",
    ];

    let mut searched: Vec<Searched> = Vec::new();
    let mut logs = Vec::new();
    for (round, encoding) in ["json", "console"].into_iter().enumerate() {
        c.start_reflector_with_env(
            &[
                "--log-level",
                "debug",
                "--log-encoding",
                encoding,
                "--aws-autologin-for-ecr",
                "--receiver-addr",
                "127.0.0.1:0",
            ],
            &env,
        )
        .await;
        if round == 0 {
            c.apply(&repositories.join("---\n")).await;
            c.apply(&[policy("basic-mtls"), policy("token")].join("---\n"))
                .await;
        } else {
            rescan_all(&c, &names, "secrets-second-round").await;
        }
        ready_with_tags(&c, "basic-mtls", 3).await;
        ready_with_tags(&c, "token", 2).await;
        ready_with_tags(&c, "identity-token", 2).await;
        ready_with_tags(&c, "ecr", 1).await;
        failed_with(&c, "wrong-password", "AuthenticationFailed").await;
        failed_with(&c, "echoed", "AuthenticationFailed").await;
        // The echoing service's refusal reached the message, with the echo redacted.
        let echoed = c.repository("apps", "echoed").await.expect("echoed");
        let message = test_support::cluster::condition(&echoed, "Ready").expect("Ready")["message"]
            .to_string();
        assert!(message.contains("<redacted>"), "{message}");
        for name in ["basic-mtls", "token"] {
            c.wait_for_policy("apps", name, "a latestRef", |o| {
                o["status"]["latestRef"]["tag"].is_string()
            })
            .await;
        }
        deliver(&c, &host).await;
        let metrics = c.reflector_metrics().await;
        let (log, lines, debug) = log_lines(&c, encoding);
        assert!(debug > 0, "no debug line in the {encoding} log");
        logs.push((encoding, log, lines, debug, metrics));
        c.kill_reflector().await;
    }

    let mut secrets = Secrets::default();
    secrets.add_password("Basic password", "flux", BASIC_PASSWORD);
    secrets.add_password("wrong Basic password", "flux", WRONG_PASSWORD);
    secrets.add_key("client key", &client_key);
    secrets.add_password("token service password", "robot", ROBOT_PASSWORD);
    secrets.add_password("echoed password", "robot", ECHOED_PASSWORD);
    secrets.add("identity token", IDENTITY_TOKEN);
    let issued = tokens.issued_tokens();
    assert!(!issued.is_empty(), "the token service issued no token");
    for (i, t) in issued.iter().enumerate() {
        secrets.add(&format!("issued Bearer token {}", i + 1), t);
    }
    secrets.add("AWS web identity token", &web_identity);
    secrets.add_password("ECR password", "AWS", &ecr_password("123456789012"));
    secrets.add("receiver token", RECEIVER_TOKEN);
    secrets.add("wrong receiver token", RECEIVER_WRONG_TOKEN);
    secrets.add("receiver HMAC key", GITHUB_KEY);
    secrets.add("ServiceAccount token", &service_account_token);

    for (encoding, log, lines, debug, metrics) in &logs {
        searched.push(search(
            &secrets,
            &format!("log, {encoding}, debug level"),
            format!("{lines} lines ({debug} debug)"),
            log,
        ));
        searched.push(search(
            &secrets,
            &format!("/metrics ({encoding} run)"),
            format!("{} lines", metrics.lines().count()),
            metrics,
        ));
    }
    for kind in ["events.v1.events.k8s.io", "events"] {
        let events = c.kubectl_ok(&["get", kind, "-A", "-o", "json"]).await;
        let count = serde_json::from_str::<Value>(&events)
            .ok()
            .and_then(|v| v["items"].as_array().map(Vec::len))
            .unwrap_or_default();
        searched.push(search(
            &secrets,
            &format!("Events ({kind})"),
            format!("{count} events"),
            &events,
        ));
    }
    let objects = c
        .kubectl_ok(&["get", "imagerepositories,imagepolicies", "-A", "-o", "json"])
        .await;
    let count = serde_json::from_str::<Value>(&objects)
        .ok()
        .and_then(|v| v["items"].as_array().map(Vec::len))
        .unwrap_or_default();
    searched.push(search(
        &secrets,
        "ImageRepositories and ImagePolicies (status included)",
        format!("{count} objects"),
        &objects,
    ));
    let files = c.store_files();
    let mut store = String::new();
    for file in &files {
        let bytes = std::fs::read(file).expect("store file");
        store.push_str(&String::from_utf8_lossy(&bytes));
        let (_, read) = image_reflector::fuzzing::tag_store_file(&bytes);
        let (key, entry) = read.expect("a store file the store reads");
        store.push_str(&format!("{key:?} {entry:?}\n"));
    }
    searched.push(search(
        &secrets,
        "tag store (files and decoded entries)",
        format!("{} files", files.len()),
        &store,
    ));
    drop((moto, ecr_registry, echoing_registry, token_registry_));

    let found: usize = searched.iter().map(|s| s.found.len()).sum();
    println!(
        "{} secret values searched ({} with their encodings):",
        secrets.0.len() / 2,
        secrets.0.len()
    );
    println!("| searched | size | secrets found |\n|---|---|---|");
    for s in &searched {
        println!("| {} | {} | {} |", s.place, s.size, s.found.len());
    }
    println!("secrets found: {found}");
    let leaks: Vec<String> = searched
        .iter()
        .filter(|s| !s.found.is_empty())
        .map(|s| format!("{}: {}", s.place, s.found.join(", ")))
        .collect();
    assert!(leaks.is_empty(), "secrets found:\n{}", leaks.join("\n"));
}

/// `(resource, verb)` pairs, `resource` as kubectl prints it (`secrets`,
/// `leases.coordination.k8s.io`, `imagerepositories.image.toolkit.fluxcd.io/status`).
type Grants = BTreeSet<(String, String)>;

/// What `kubectl auth can-i --list --as USER -n NAMESPACE` says USER may do (rows whose
/// Resource Names column is empty; non-resource URLs as `URL` rows).
async fn can_i_list(c: &Cluster, user: &str, namespace: &str) -> Grants {
    let out = c
        .kubectl_ok(&[
            "auth",
            "can-i",
            "--list",
            "--no-headers",
            "-n",
            namespace,
            "--as",
            user,
        ])
        .await;
    let mut grants = Grants::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let brackets: Vec<&str> = line
            .split('[')
            .skip(1)
            .filter_map(|s| s.split(']').next())
            .collect();
        let head = line.split('[').next().unwrap_or_default().trim();
        let verbs = brackets.last().copied().unwrap_or_default();
        let names_empty = brackets
            .get(brackets.len().saturating_sub(2))
            .is_none_or(|n| n.trim().is_empty());
        let subject = if head.is_empty() {
            format!("url {}", brackets.first().copied().unwrap_or_default())
        } else if names_empty {
            head.to_string()
        } else {
            // A grant on named objects only: kept apart from a grant on every object.
            format!("{head} (named)")
        };
        for verb in verbs.split_whitespace() {
            grants.insert((subject.clone(), verb.to_string()));
        }
    }
    grants
}

/// What the manifests grant the ServiceAccount in `namespace`: the ClusterRole's rules
/// everywhere, each Role's in its own namespace.
fn granted_by_manifests(namespace: &str) -> Grants {
    let path = test_support::repo_root().join("manifests/rbac/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("read manifests/rbac/rbac.yaml");
    let mut grants = Grants::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: Value = serde::Deserialize::deserialize(doc).expect("rbac.yaml document");
        let applies = match doc["kind"].as_str() {
            Some("ClusterRole") => true,
            Some("Role") => doc["metadata"]["namespace"] == namespace,
            _ => false,
        };
        if !applies {
            continue;
        }
        for rule in doc["rules"].as_array().into_iter().flatten() {
            let strings = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    // kubectl prints RESOURCE.GROUP, the subresource after the group.
                    let printed = match (group.as_str(), resource.split_once('/')) {
                        ("", _) => resource.clone(),
                        (g, Some((r, sub))) => format!("{r}.{g}/{sub}"),
                        (g, None) => format!("{resource}.{g}"),
                    };
                    for verb in strings("verbs") {
                        grants.insert((printed.clone(), verb));
                    }
                }
            }
        }
    }
    grants
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_may_do_exactly_what_the_manifests_grant_and_nothing_more() {
    let c = Cluster::install(RegistryOptions::default()).await;
    c.apply(&super::namespace("apps")).await;
    // What any ServiceAccount may do (discovery, self-reviews): the baseline.
    c.kubectl_ok(&["create", "serviceaccount", "nobody", "-n", "apps"])
        .await;
    let nobody = "system:serviceaccount:apps:nobody";
    let mut report = vec![
        "| namespace | (resource, verb) allowed beyond any ServiceAccount | granted by the manifests | differences |"
            .to_string(),
        "|---|---|---|---|".to_string(),
    ];
    let mut wrong = Vec::new();
    for namespace in ["apps", "flux-system"] {
        let baseline = can_i_list(&c, nobody, namespace).await;
        let ours = can_i_list(&c, CONTROLLER, namespace).await;
        let beyond: Grants = ours.difference(&baseline).cloned().collect();
        let expected = granted_by_manifests(namespace);
        let unexpected: Vec<_> = beyond.difference(&expected).collect();
        let missing: Vec<_> = expected.difference(&beyond).collect();
        let show = |g: &Grants| {
            let mut by_resource: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for (r, v) in g {
                by_resource.entry(r).or_default().push(v);
            }
            by_resource
                .iter()
                .map(|(r, v)| format!("{r} [{}]", v.join(" ")))
                .collect::<Vec<_>>()
                .join("; ")
        };
        println!("{namespace}: may {}", show(&beyond));
        report.push(format!(
            "| {namespace} | {} | {} | {} |",
            beyond.len(),
            expected.len(),
            unexpected.len() + missing.len()
        ));
        if !unexpected.is_empty() {
            wrong.push(format!(
                "{namespace}: allowed beyond the manifests: {unexpected:?}"
            ));
        }
        if !missing.is_empty() {
            wrong.push(format!(
                "{namespace}: granted by the manifests but not allowed: {missing:?}"
            ));
        }
    }
    println!("{}", report.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
