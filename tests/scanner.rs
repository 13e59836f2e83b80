//! The scanner against real servers on 127.0.0.1: Debian's docker-registry (anonymous,
//! htpasswd, token auth, TLS, mutual TLS, plain HTTP), registry 3 (real pages and `Link`),
//! tinyproxy, microsocks, and the paginating stand-in for what no real registry here plays
//! (refused page sizes, port-less and foreign links, 429, loops, malformed JSON, stalls).
//! Cloud registry logins are in `scanner/cloud.rs`; hostile registries (endless links,
//! gigantic or slow pages, gzip bombs, redirects) in `scanner/hostile.rs`.

use image_reflector::reference::ImageRef;
use image_reflector::scanner::{
    Credentials, DockerConfig, ProxyConfig, ScanErrorKind, ScanRequest, Scanner, ScannerConfig,
    TlsMaterial,
};
use std::time::{Duration, Instant};
use test_support::fake_registry::{LinkStyle, StandIn, StandInOptions};
use test_support::proxy::{Proxy, SOCKS_OUTGOING_ADDRESS, Socks5Proxy};
use test_support::registry::{Registry, RegistryAuth, RegistryOptions, RegistryTls};
use test_support::token_server::TokenServer;

#[path = "scanner/cloud.rs"]
mod cloud;
#[path = "scanner/hostile.rs"]
mod hostile;

fn scanner() -> Scanner {
    Scanner::new(ScannerConfig {
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        per_host_requests_per_second: 0.0,
        ..ScannerConfig::default()
    })
    .expect("scanner")
}

fn scanner_with(f: impl FnOnce(&mut ScannerConfig)) -> Scanner {
    let mut cfg = ScannerConfig {
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        per_host_requests_per_second: 0.0,
        ..ScannerConfig::default()
    };
    f(&mut cfg);
    Scanner::new(cfg).expect("scanner")
}

fn request(host: &str, repo: &str) -> ScanRequest {
    let mut r = ScanRequest::new(ImageRef::parse(&format!("{host}/{repo}")).expect("image"));
    r.timeout = Duration::from_secs(30);
    r
}

fn tags(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:05}")).collect()
}

/// Debian's docker-registry with token auth by the test token service `tokens`.
fn token_registry(tokens: &TokenServer, tls: RegistryTls) -> Registry {
    Registry::start(RegistryOptions {
        auth: RegistryAuth::Token {
            realm: tokens.realm(),
            signer: tokens.signer.clone(),
        },
        tls,
    })
}

/// A token service whose robot's password is `token-pw`, a plain-HTTP registry that uses
/// it with `tags` pushed to team/app, and a request for team/app with that password.
async fn robot_token_registry<S: AsRef<str>>(tags: &[S]) -> (TokenServer, Registry, ScanRequest) {
    let tokens = TokenServer::start(Some(("robot", "token-pw")), 300).await;
    let registry = token_registry(&tokens, RegistryTls::None);
    registry.push_tags("team/app", tags).await;
    let mut req = request(&registry.host(), "team/app");
    req.credentials = robot("token-pw");
    (tokens, registry, req)
}

/// The test token service's user with this password.
fn robot(password: &str) -> Credentials {
    Credentials::Basic {
        username: "robot".into(),
        password: password.into(),
    }
}

fn sorted_desc(mut v: Vec<String>) -> Vec<String> {
    v.sort_by(|a, b| b.cmp(a));
    v
}

#[tokio::test]
async fn lists_every_tag_of_a_local_registry_falling_back_to_plain_http() {
    let registry = Registry::start(RegistryOptions::default());
    let pushed = tags("1.0.", 25);
    registry.push_tags("team/app", &pushed).await;

    // No `insecure`: a loopback registry gets HTTPS first, then plain HTTP.
    let out = scanner()
        .scan(&request(&registry.host(), "team/app"))
        .await
        .unwrap();
    assert_eq!(
        out.canonical_image_name,
        format!("{}/team/app", registry.host())
    );
    assert_eq!(out.tags, sorted_desc(pushed.clone()));
    assert_eq!(out.tag_count, 25);
    assert_eq!(out.latest_tags, out.tags[..10].to_vec());
    assert!(out.revision.starts_with("sha256:"));
}

#[tokio::test]
async fn insecure_scans_plain_http_and_the_revision_is_stable() {
    let registry = Registry::start(RegistryOptions::default());
    registry.push_tags("app", &["b", "a", "c"]).await;
    let mut req = request(&registry.host(), "app");
    req.insecure = true;
    let s = scanner();
    let first = s.scan(&req).await.unwrap();
    let second = s.scan(&req).await.unwrap();
    assert_eq!(first.tags, vec!["c", "b", "a"]);
    assert_eq!(first.revision, second.revision);
}

#[tokio::test]
async fn finds_every_one_of_ten_thousand_tags() {
    let registry = Registry::start(RegistryOptions::default());
    let pushed = tags("v", 10_000);
    registry.push_tags("big", &pushed).await;
    let out = scanner()
        .scan(&request(&registry.host(), "big"))
        .await
        .unwrap();
    assert_eq!(out.tag_count, 10_000);
    assert_eq!(out.tags, sorted_desc(pushed));
}

#[tokio::test]
async fn exclusions_drop_tags_before_they_are_counted() {
    let registry = Registry::start(RegistryOptions::default());
    registry
        .push_tags("app", &["1.0", "1.1", "sha256-abc.sig", "dev-1", "dev-2"])
        .await;
    let mut req = request(&registry.host(), "app");
    // The default list (Flux's) drops cosign signatures.
    let out = scanner().scan(&req).await.unwrap();
    assert_eq!(out.tags, vec!["dev-2", "dev-1", "1.1", "1.0"]);
    req.exclusion_list.push("^dev-".into());
    let out = scanner().scan(&req).await.unwrap();
    assert_eq!(out.tags, vec!["1.1", "1.0"]);
    assert_eq!(out.tag_count, 2);
}

#[tokio::test]
async fn basic_auth_lists_tags_and_a_wrong_password_is_an_authentication_failure() {
    let registry = Registry::start(RegistryOptions {
        auth: RegistryAuth::Basic {
            username: "reader".into(),
            password: "right-password".into(),
        },
        ..Default::default()
    });
    registry.push_tags("private/app", &["1.0"]).await;
    let s = scanner();

    let mut req = request(&registry.host(), "private/app");
    req.credentials = Credentials::Basic {
        username: "reader".into(),
        password: "right-password".into(),
    };
    assert_eq!(s.scan(&req).await.unwrap().tags, vec!["1.0"]);

    req.credentials = Credentials::Basic {
        username: "reader".into(),
        password: "wrong-password".into(),
    };
    let err = s.scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::AuthenticationFailed);
    assert_eq!(err.kind().condition_reason(), "AuthenticationFailed");
    let msg = err.to_string();
    assert!(
        msg.contains(&registry.host()) && msg.contains("private/app"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-password"), "{msg}");

    let err = s
        .scan(&request(&registry.host(), "private/app"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::AuthenticationFailed);
    assert!(err.to_string().contains("none are configured"), "{err}");
}

#[tokio::test]
async fn docker_config_credentials_are_picked_by_registry_host() {
    let registry = Registry::start(RegistryOptions {
        auth: RegistryAuth::Basic {
            username: "bot".into(),
            password: "pw".into(),
        },
        ..Default::default()
    });
    registry.push_tags("app", &["2.0"]).await;
    let json = format!(
        r#"{{"auths":{{"http://{}/v2/":{{"username":"bot","password":"pw"}},"ghcr.io":{{"auth":"eDp5"}}}}}}"#,
        registry.host()
    );
    let mut req = request(&registry.host(), "app");
    req.credentials = Credentials::DockerConfig(DockerConfig::from_json(json.as_bytes()).unwrap());
    assert_eq!(scanner().scan(&req).await.unwrap().tags, vec!["2.0"]);
}

#[tokio::test]
async fn token_auth_runs_the_bearer_flow_and_reuses_the_token() {
    let (tokens, _registry, mut req) = robot_token_registry(&tags("3.", 30)).await;
    let s = scanner();
    assert_eq!(s.scan(&req).await.unwrap().tag_count, 30);
    assert_eq!(s.scan(&req).await.unwrap().tag_count, 30);
    assert_eq!(
        tokens.issued(),
        1,
        "the second scan reuses the cached token"
    );
    assert_eq!(
        s.digest(&req, "3.00001").await.unwrap().len(),
        "sha256:".len() + 64
    );
    assert_eq!(tokens.issued(), 1);

    req.credentials = robot("nope");
    let err = s.scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::AuthenticationFailed, "{err}");
    assert!(!err.to_string().contains("nope"));
    assert_eq!(tokens.refused(), 1);
}

#[tokio::test]
async fn a_refused_token_request_names_the_realm_host_and_never_the_password() {
    let (tokens, _registry, mut req) = robot_token_registry(&["1.0"]).await;
    let s = scanner();
    req.credentials = robot("wrong-pw-4711");
    let err = s.scan(&req).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ScanErrorKind::AuthenticationFailed, "{text}");
    assert!(
        text.contains(&format!("token service at {}", tokens.realm_host())),
        "{text}"
    );
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(!text.contains("wrong-pw-4711"), "{text}");
    assert_eq!(tokens.refused(), 1);

    req.credentials = Credentials::Anonymous;
    let err = s.scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::AuthenticationFailed, "{err}");
    assert!(
        err.to_string().contains("refused anonymous access"),
        "{err}"
    );
    assert_eq!(tokens.refused(), 2);
    assert_eq!(tokens.issued(), 0);
}

#[tokio::test]
async fn a_rate_limited_or_failing_token_service_is_not_called_a_credential_refusal() {
    let (tokens, _registry, req) = robot_token_registry(&["1.0"]).await;
    let s = scanner();

    tokens.answer_instead(Some((
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit reached"}]}"#,
    )));
    let err = s.scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::RateLimited, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("token service at {}", tokens.realm_host())),
        "{err}"
    );

    tokens.answer_instead(Some((
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable",
    )));
    let err = s.scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::RegistryError, "{err}");

    tokens.answer_instead(None);
    let out = s
        .scan(&req)
        .await
        .expect("scan once the token service recovers");
    assert_eq!(out.tags, vec!["1.0".to_string()]);
    assert_eq!(tokens.refused(), 0);
}

#[tokio::test]
async fn the_token_exchange_goes_through_an_authenticating_proxy() {
    let (tokens, registry, mut req) = robot_token_registry(&["1.0", "1.1", "2.0"]).await;
    let proxy = Proxy::start("proxyuser", "proxy.pw-1");
    req.insecure = true;
    req.proxy = Some(ProxyConfig {
        address: proxy.address(),
        username: Some("proxyuser".into()),
        password: Some("proxy.pw-1".into()),
    });
    assert_eq!(
        scanner().scan(&req).await.unwrap().tags,
        vec!["2.0", "1.1", "1.0"]
    );
    assert_eq!(tokens.issued(), 1);
    let token_requests =
        proxy.log_lines_matching(&format!("GET http://{}/token?", tokens.realm_host()));
    assert_eq!(
        token_requests,
        1,
        "the token request did not go through the proxy:\n{}",
        std::fs::read_to_string(proxy.log_path()).unwrap_or_default()
    );
    assert!(proxy.log_lines_matching(&format!("GET http://{}/v2/", registry.host())) >= 2);
}

#[tokio::test]
async fn a_mutual_tls_registry_with_token_auth_gets_its_token_by_the_hand_written_flow() {
    // oci-client 0.18 cannot present a client certificate, so it could not even probe
    // this registry: the token comes from the scanner's own flow.
    let tokens = TokenServer::start(None, 300).await;
    let registry = token_registry(&tokens, RegistryTls::Mutual);
    registry.push_tags("team/app", &["1.0", "1.1"]).await;
    let leaf = registry.client_cert().unwrap();
    let mut req = request(&registry.host(), "team/app");
    req.tls = TlsMaterial {
        ca_pem: registry.ca_pem().map(|p| p.as_bytes().to_vec()),
        client_cert_pem: Some(leaf.cert_pem.as_bytes().to_vec()),
        client_key_pem: Some(leaf.key_pem.as_bytes().to_vec()),
    };
    assert_eq!(scanner().scan(&req).await.unwrap().tags, vec!["1.1", "1.0"]);
    assert_eq!(tokens.issued(), 1);
}

#[tokio::test]
async fn a_stalled_token_service_times_the_scan_out() {
    // A listener that never accepts: the kernel completes the connection, nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let signer = std::sync::Arc::new(test_support::token_server::TokenSigner::new());
    let registry = Registry::start(RegistryOptions {
        auth: RegistryAuth::Token {
            realm: format!(
                "http://localhost:{}/token",
                silent.local_addr().unwrap().port()
            ),
            signer,
        },
        ..Default::default()
    });
    let mut req = request(&registry.host(), "team/app");
    req.insecure = true;
    req.timeout = Duration::from_millis(800);
    let started = Instant::now();
    let err = scanner().scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_identity_token_is_exchanged_for_an_access_token() {
    let tokens = TokenServer::start(Some(("robot", "token-pw")), 300).await;
    tokens.accept_refresh_token("refresh-me");
    let registry = token_registry(&tokens, RegistryTls::None);
    registry.push_tags("team/app", &["1.0", "1.1"]).await;
    let json = format!(
        r#"{{"auths":{{"{}":{{"auth":"MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwOg==","identitytoken":"refresh-me"}}}}}}"#,
        registry.host()
    );
    let mut req = request(&registry.host(), "team/app");
    req.credentials = Credentials::DockerConfig(DockerConfig::from_json(json.as_bytes()).unwrap());
    assert_eq!(scanner().scan(&req).await.unwrap().tags, vec!["1.1", "1.0"]);
    assert_eq!(tokens.issued(), 1);
    assert_eq!(tokens.refused(), 0);
}

#[tokio::test]
async fn a_token_realm_at_an_internal_address_other_than_the_registry_is_refused() {
    let tokens = TokenServer::start(Some(("robot", "token-pw")), 300).await;
    let registry = Registry::start(RegistryOptions {
        auth: RegistryAuth::Token {
            realm: tokens.realm_by_ip(),
            signer: tokens.signer.clone(),
        },
        ..Default::default()
    });
    let mut req = request(&registry.host(), "team/app");
    req.credentials = robot("token-pw");
    let err = scanner().scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::AuthenticationFailed, "{err}");
    assert!(
        err.to_string().contains("loopback, private or link-local"),
        "{err}"
    );
    assert_eq!(
        tokens.issued() + tokens.refused(),
        0,
        "a token request went out"
    );
}

#[tokio::test]
async fn credentials_never_go_to_a_plain_http_realm_of_an_https_registry() {
    let tokens = TokenServer::start(Some(("robot", "token-pw")), 300).await;
    let registry = token_registry(&tokens, RegistryTls::Server);
    let mut req = request(&registry.host(), "team/app");
    req.tls.ca_pem = registry.ca_pem().map(|p| p.as_bytes().to_vec());
    req.credentials = robot("token-pw");
    let err = scanner().scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::AuthenticationFailed);
    assert!(err.to_string().contains("plain HTTP"), "{err}");
    assert_eq!(tokens.issued() + tokens.refused(), 0);
}

#[tokio::test]
async fn an_anonymous_token_exchange_trusts_the_given_ca_and_may_use_a_plain_http_realm() {
    let tokens = TokenServer::start(None, 300).await;
    let registry = token_registry(&tokens, RegistryTls::Server);
    registry.push_tags("team/app", &["0.9", "1.0"]).await;
    let mut req = request(&registry.host(), "team/app");
    req.tls.ca_pem = registry.ca_pem().map(|p| p.as_bytes().to_vec());
    assert_eq!(scanner().scan(&req).await.unwrap().tags, vec!["1.0", "0.9"]);
    assert_eq!(tokens.issued(), 1);
}

#[tokio::test]
async fn tls_registries_need_their_ca() {
    let registry = Registry::start(RegistryOptions {
        tls: RegistryTls::Server,
        ..Default::default()
    });
    registry.push_tags("app", &["1"]).await;
    let mut req = request(&registry.host(), "app");
    let err = scanner().scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::Tls, "{err}");
    assert!(err.to_string().contains("CA"), "{err}");

    req.tls = TlsMaterial {
        ca_pem: registry.ca_pem().map(|p| p.as_bytes().to_vec()),
        ..Default::default()
    };
    assert_eq!(scanner().scan(&req).await.unwrap().tags, vec!["1"]);
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate() {
    let registry = Registry::start(RegistryOptions {
        tls: RegistryTls::Mutual,
        ..Default::default()
    });
    registry.push_tags("app", &["1", "2"]).await;
    let ca = registry.ca_pem().map(|p| p.as_bytes().to_vec());
    let mut req = request(&registry.host(), "app");
    req.tls.ca_pem = ca.clone();
    let err = scanner().scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::Tls, "{err}");
    assert!(err.to_string().contains("client certificate"), "{err}");

    let leaf = registry.client_cert().unwrap();
    req.tls = TlsMaterial {
        ca_pem: ca,
        client_cert_pem: Some(leaf.cert_pem.as_bytes().to_vec()),
        client_key_pem: Some(leaf.key_pem.as_bytes().to_vec()),
    };
    assert_eq!(scanner().scan(&req).await.unwrap().tags, vec!["2", "1"]);
}

/// An HTTPS registry (a CA made at test time) with tags 1.0 and 2.0 pushed to `app`, and a
/// request for `app` that trusts that CA.
async fn https_app_registry() -> (Registry, ScanRequest) {
    let registry = Registry::start(RegistryOptions {
        tls: RegistryTls::Server,
        ..Default::default()
    });
    registry.push_tags("app", &["1.0", "2.0"]).await;
    let mut req = request(&registry.host(), "app");
    req.tls.ca_pem = registry.ca_pem().map(|p| p.as_bytes().to_vec());
    (registry, req)
}

#[tokio::test]
async fn scans_through_an_authenticating_connect_proxy() {
    let (_registry, mut req) = https_app_registry().await;
    let proxy = Proxy::start("proxyuser", "proxypass");
    req.proxy = Some(ProxyConfig {
        address: proxy.address(),
        username: Some("proxyuser".into()),
        password: Some("proxypass".into()),
    });
    assert_eq!(scanner().scan(&req).await.unwrap().tags, vec!["2.0", "1.0"]);
    assert!(
        proxy.log_lines_matching("CONNECT") >= 1,
        "the proxy saw no CONNECT"
    );

    req.proxy = Some(ProxyConfig {
        address: proxy.address(),
        username: Some("proxyuser".into()),
        password: Some("not-the-proxy-password".into()),
    });
    let err = scanner().scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::Unreachable, "{err}");
    assert!(!err.to_string().contains("not-the-proxy-password"), "{err}");
}

fn socks5(proxy: &Socks5Proxy, scheme: &str, credentials: Option<(&str, &str)>) -> ProxyConfig {
    ProxyConfig {
        address: format!("{scheme}://{}", proxy.addr()),
        username: credentials.map(|(u, _)| u.to_string()),
        password: credentials.map(|(_, p)| p.to_string()),
    }
}

#[tokio::test]
async fn scans_through_a_socks5_proxy_that_requires_credentials() {
    let (registry, mut req) = https_app_registry().await;
    let proxy = Socks5Proxy::start(Some(("socksuser", "socks.pw-1")));
    let direct = registry.requests_matching(&format!("{} - ", SOCKS_OUTGOING_ADDRESS));
    assert_eq!(direct, 0);

    // Local name resolution (socks5) and the proxy's (socks5h), with the credentials.
    for scheme in ["socks5", "socks5h"] {
        req.proxy = Some(socks5(&proxy, scheme, Some(("socksuser", "socks.pw-1"))));
        let out = scanner().scan(&req).await;
        assert_eq!(
            out.map(|o| o.tags).map_err(|e| e.to_string()),
            Ok(vec!["2.0".to_string(), "1.0".to_string()]),
            "through {scheme}://; proxy log:\n{}",
            std::fs::read_to_string(proxy.log_path()).unwrap_or_default()
        );
    }
    assert!(
        proxy.connections_to(&registry.host()) >= 2,
        "the proxy made no connection to the registry:\n{}",
        std::fs::read_to_string(proxy.log_path()).unwrap_or_default()
    );
    assert!(
        registry.requests_matching(&format!("{} - ", SOCKS_OUTGOING_ADDRESS)) >= 2,
        "the registry saw no request from the proxy's address"
    );

    // A wrong password is refused by the proxy, and never shown.
    req.proxy = Some(socks5(&proxy, "socks5", Some(("socksuser", "not-the-pw"))));
    let err = scanner().scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains("socks proxy"), "{err}");
    assert!(!err.to_string().contains("not-the-pw"), "{err}");
}

#[tokio::test]
async fn scans_and_exchanges_tokens_through_an_open_socks5_proxy() {
    let (tokens, registry, mut req) = robot_token_registry(&["1.0", "1.1"]).await;
    let proxy = Socks5Proxy::start(None);
    req.insecure = true;
    req.proxy = Some(socks5(&proxy, "socks5h", None));
    assert_eq!(scanner().scan(&req).await.unwrap().tags, vec!["1.1", "1.0"]);
    assert_eq!(tokens.issued(), 1);
    assert!(
        proxy.connections_to(&tokens.realm_host()) >= 1,
        "oci-client's token request did not go through the proxy:\n{}",
        std::fs::read_to_string(proxy.log_path()).unwrap_or_default()
    );
    assert!(proxy.connections_to(&registry.host()) >= 1);
}

#[tokio::test]
async fn a_proxy_scheme_the_scanner_cannot_use_is_refused_by_name() {
    let mut req = request("127.0.0.1:1", "app");
    req.proxy = Some(ProxyConfig {
        address: "socks4://127.0.0.1:1080".into(),
        username: None,
        password: None,
    });
    let err = scanner().scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::InvalidConfig, "{err}");
    assert!(
        err.to_string().contains(
            "scheme \"socks4\" is not supported; use http://, https://, socks5:// or socks5h://"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_repository_is_not_found() {
    let registry = Registry::start(RegistryOptions::default());
    registry.push_tags("exists", &["1"]).await;
    let err = scanner()
        .scan(&request(&registry.host(), "does/not/exist"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::NotFound, "{err}");
    assert_eq!(err.kind().condition_reason(), "ReadOperationFailed");
    let msg = err.to_string();
    assert!(
        msg.contains("NAME_UNKNOWN") && msg.contains("does/not/exist"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_unreachable_registry_is_classified() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let err = scanner().scan(&request(&host, "app")).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains(&host), "{err}");
}

#[tokio::test]
async fn digest_returns_the_manifest_digest_of_a_tag() {
    let registry = Registry::start(RegistryOptions::default());
    let digest = registry.push_tags("app", &["1.0"]).await;
    let s = scanner();
    let req = request(&registry.host(), "app");
    assert_eq!(s.digest(&req, "1.0").await.unwrap(), digest);
    let err = s.digest(&req, "9.9").await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::NotFound, "{err}");
}

fn standin(tags: Vec<String>) -> StandInOptions {
    StandInOptions {
        repository: "org/app".into(),
        tags,
        ..Default::default()
    }
}

#[tokio::test]
async fn follows_relative_next_links_page_by_page() {
    let all = tags("t", 1050);
    let stand_in = StandIn::start(standin(all.clone())).await;
    let s = scanner_with(|c| c.page_size = 100);
    let out = s.scan(&request(&stand_in.host(), "org/app")).await.unwrap();
    assert_eq!(out.tags, sorted_desc(all));
    assert_eq!(stand_in.tag_requests(), 11);
    assert!(
        stand_in.uris()[0].ends_with("?n=100"),
        "{:?}",
        stand_in.uris()
    );
}

#[tokio::test]
async fn lists_a_repository_of_many_pages_from_registry_3_by_its_link_headers() {
    // Registry 3 pages `tags/list` with `n` and `last` and a relative `Link`, and cuts an
    // `n` above 1000 to 1000 without saying so: 1,050 tags are 11 pages of 100, or 2 when
    // 5,000 are asked for.
    let registry = Registry::start_v3();
    let pushed = tags("v", 1_050);
    registry.push_tags("team/app", &pushed).await;
    for (page_size, pages) in [(100, 11), (5_000, 2)] {
        let before = registry.requests_matching("GET /v2/team/app/tags/list");
        let s = scanner_with(|c| c.page_size = page_size);
        let out = s
            .scan(&request(&registry.host(), "team/app"))
            .await
            .unwrap();
        assert_eq!(
            out.tags,
            sorted_desc(pushed.clone()),
            "page size {page_size}"
        );
        assert_eq!(
            registry.requests_matching("GET /v2/team/app/tags/list") - before,
            pages,
            "page size {page_size}"
        );
    }
}

#[tokio::test]
async fn follows_absolute_links_and_repairs_a_link_without_the_port() {
    for link in [LinkStyle::Absolute, LinkStyle::Portless] {
        let all = tags("t", 250);
        let stand_in = StandIn::start(StandInOptions {
            link: link.clone(),
            ..standin(all.clone())
        })
        .await;
        let s = scanner_with(|c| c.page_size = 100);
        let out = s.scan(&request(&stand_in.host(), "org/app")).await.unwrap();
        assert_eq!(out.tag_count, 250, "{link:?}");
        assert_eq!(stand_in.tag_requests(), 3, "{link:?}");
    }
}

#[tokio::test]
async fn a_refused_page_size_is_retried_with_100() {
    // Quay: 413 TOO_MANY_TAGS_REQUESTED above 100.
    let all = tags("q", 420);
    let stand_in = StandIn::start(StandInOptions {
        max_page_size: Some((100, 413)),
        ..standin(all.clone())
    })
    .await;
    let out = scanner()
        .scan(&request(&stand_in.host(), "org/app"))
        .await
        .unwrap();
    assert_eq!(out.tags, sorted_desc(all));
    assert!(
        stand_in.uris()[1].contains("n=100"),
        "{:?}",
        stand_in.uris()
    );

    // distribution 3: 400 above 1000.
    let all = tags("d", 300);
    let stand_in = StandIn::start(StandInOptions {
        max_page_size: Some((1000, 400)),
        ..standin(all)
    })
    .await;
    let s = scanner_with(|c| c.page_size = 5000);
    let out = s.scan(&request(&stand_in.host(), "org/app")).await.unwrap();
    assert_eq!(out.tag_count, 300);
}

#[tokio::test]
async fn honours_retry_after_on_429_and_counts_it() {
    let stand_in = StandIn::start(StandInOptions {
        rate_limit_first: 2,
        retry_after: Some("1".into()),
        ..standin(tags("r", 5))
    })
    .await;
    let s = scanner();
    let mut metrics = prometheus_client::registry::Registry::default();
    s.register_metrics(&mut metrics);
    let start = Instant::now();
    let out = s.scan(&request(&stand_in.host(), "org/app")).await.unwrap();
    assert_eq!(out.tag_count, 5);
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics).unwrap();
    let host = stand_in.host();
    assert!(
        text.contains(&format!(
            "image_reflector_registry_rate_limited_total{{host=\"{host}\"}} 2"
        )),
        "{text}"
    );
    assert!(text.contains("code=\"429\""), "{text}");
    assert!(text.contains("code=\"200\""), "{text}");
}

#[tokio::test]
async fn a_retry_after_beyond_the_bound_fails_as_rate_limited_at_once() {
    let stand_in = StandIn::start(StandInOptions {
        rate_limit_first: 100,
        retry_after: Some("3600".into()),
        ..standin(tags("r", 5))
    })
    .await;
    let s = scanner_with(|c| c.max_retry_wait = Duration::from_secs(5));
    let start = Instant::now();
    let err = s
        .scan(&request(&stand_in.host(), "org/app"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::RateLimited, "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(stand_in.tag_requests(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let stand_in = StandIn::start(StandInOptions {
        server_errors_first: 3,
        ..standin(tags("e", 7))
    })
    .await;
    let out = scanner()
        .scan(&request(&stand_in.host(), "org/app"))
        .await
        .unwrap();
    assert_eq!(out.tag_count, 7);
    assert_eq!(stand_in.tag_requests(), 4);

    let stand_in = StandIn::start(StandInOptions {
        server_errors_first: 100,
        ..standin(tags("e", 7))
    })
    .await;
    let err = scanner_with(|c| c.max_retries = 2)
        .scan(&request(&stand_in.host(), "org/app"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::RegistryError, "{err}");
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    assert_eq!(stand_in.tag_requests(), 3);
}

#[tokio::test]
async fn a_pagination_loop_stops_the_scan() {
    for link in [LinkStyle::RepeatSameUrl, LinkStyle::RepeatContent] {
        let stand_in = StandIn::start(StandInOptions {
            link: link.clone(),
            ..standin(tags("l", 30))
        })
        .await;
        let s = scanner_with(|c| c.page_size = 10);
        let err = s
            .scan(&request(&stand_in.host(), "org/app"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ScanErrorKind::Malformed, "{link:?}: {err}");
        assert!(err.to_string().contains("loop"), "{err}");
        assert!(stand_in.tag_requests() <= 3, "{link:?}");
    }
}

#[tokio::test]
async fn malformed_json_is_classified() {
    let stand_in = StandIn::start(StandInOptions {
        malformed: true,
        ..standin(tags("m", 3))
    })
    .await;
    let err = scanner()
        .scan(&request(&stand_in.host(), "org/app"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::Malformed, "{err}");
    assert!(err.to_string().contains("not valid JSON"), "{err}");
}

#[tokio::test]
async fn a_stalled_registry_times_the_scan_out() {
    let stand_in = StandIn::start(StandInOptions {
        stall: Some(Duration::from_secs(30)),
        ..standin(tags("s", 3))
    })
    .await;
    let mut req = request(&stand_in.host(), "org/app");
    req.timeout = Duration::from_millis(700);
    let start = Instant::now();
    let err = scanner().scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::TimedOut, "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(err.to_string().contains("org/app"), "{err}");
}

#[tokio::test]
async fn a_next_link_to_another_host_is_refused_and_gets_no_credentials() {
    let other = StandIn::start(standin(tags("x", 3))).await;
    let stand_in = StandIn::start(StandInOptions {
        link: LinkStyle::OtherHost(format!("localhost:{}", other.addr().port())),
        basic: Some(("u".into(), "secret-pw".into())),
        ..standin(tags("o", 30))
    })
    .await;
    let s = scanner_with(|c| c.page_size = 10);
    let mut req = request(&stand_in.host(), "org/app");
    req.credentials = Credentials::Basic {
        username: "u".into(),
        password: "secret-pw".into(),
    };
    let err = s.scan(&req).await.unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::Malformed, "{err}");
    assert!(err.to_string().contains("another host"), "{err}");
    assert_eq!(other.requests(), 0);
    assert!(stand_in.authorizations().iter().any(Option::is_some));
}

#[tokio::test]
async fn more_tags_than_the_cap_fail_clearly() {
    let stand_in = StandIn::start(standin(tags("c", 150))).await;
    let s = scanner_with(|c| {
        c.page_size = 50;
        c.max_tags = 120;
    });
    let err = s
        .scan(&request(&stand_in.host(), "org/app"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ScanErrorKind::TooManyTags, "{err}");
    assert!(err.to_string().contains("more than 120 tags"), "{err}");
}

#[tokio::test]
async fn scans_of_one_registry_share_its_concurrency_limit() {
    let stand_in = StandIn::start(StandInOptions {
        stall: Some(Duration::from_millis(200)),
        ..standin(tags("p", 3))
    })
    .await;
    let s = scanner_with(|c| c.per_host_concurrency = 1);
    let req = request(&stand_in.host(), "org/app");
    let start = Instant::now();
    let (a, b, c) = tokio::join!(s.scan(&req), s.scan(&req), s.scan(&req));
    assert!(a.is_ok() && b.is_ok() && c.is_ok());
    // One at a time: three stalled pages back to back.
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
}

fn cli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_image-reflector"))
        .arg("scan")
        .args(args)
        .env("HOME", "/nonexistent")
        .env_remove("DOCKER_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run image-reflector");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_scan_command_prints_json_and_exit_codes_tell_failures_apart() {
    let registry = Registry::start(RegistryOptions {
        auth: RegistryAuth::Basic {
            username: "cli".into(),
            password: "cli-pw".into(),
        },
        ..Default::default()
    });
    registry
        .push_tags("team/app", &["1.0", "1.1", "2.0", "2.0.sig"])
        .await;
    let image = format!("{}/team/app", registry.host());
    let cmd = {
        let image = image.clone();
        move |extra: &'static [&'static str], pw: Option<&'static str>| {
            let image = image.clone();
            tokio::task::spawn_blocking(move || {
                let mut args: Vec<&str> = vec![&image];
                args.extend_from_slice(extra);
                if pw.is_some() {
                    args.extend_from_slice(&["--username", "cli", "--password-stdin"]);
                }
                cli(&args, pw)
            })
        }
    };

    let (code, stdout, stderr) = cmd(&["-o", "json", "--all-tags"], Some("cli-pw\n"))
        .await
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["canonicalImageName"], image);
    assert_eq!(v["tagCount"], 3);
    assert_eq!(v["tags"], serde_json::json!(["2.0", "1.1", "1.0"]));
    assert_eq!(v["latestTags"], serde_json::json!(["2.0", "1.1", "1.0"]));
    assert!(v["revision"].as_str().unwrap().starts_with("sha256:"));
    assert!(v["scanTime"].as_str().unwrap().ends_with('Z'));

    let (code, stdout, _) = cmd(&["--exclude", "^1\\."], Some("cli-pw")).await.unwrap();
    assert_eq!(code, 0);
    assert!(stdout.contains("TAG COUNT       2"), "{stdout}");

    let (code, _, stderr) = cmd(&[], Some("wrong")).await.unwrap();
    assert_eq!(code, 3, "authentication failure: {stderr}");
    let (code, _, stderr) = cmd(&[], None).await.unwrap();
    assert_eq!(code, 3, "no credentials: {stderr}");

    let missing = format!("{}/team/missing", registry.host());
    let (code, _, stderr) = tokio::task::spawn_blocking(move || {
        cli(
            &[&missing, "--username", "cli", "--password-stdin"],
            Some("cli-pw"),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 4, "not found: {stderr}");

    let (code, _, stderr) = tokio::task::spawn_blocking(|| cli(&["alpine:3.1"], None))
        .await
        .unwrap();
    assert_eq!(code, 2);
    assert!(stderr.contains("names a tag"), "{stderr}");
    let (code, _, _) =
        tokio::task::spawn_blocking(|| cli(&["127.0.0.1:1/x", "--timeout", "5s"], None))
            .await
            .unwrap();
    assert_eq!(code, 1);
}

#[tokio::test]
async fn the_scan_command_dry_run_touches_no_network() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="}}}"#,
    )
    .unwrap();
    let path = config.to_str().unwrap().to_string();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        cli(&["alpine", "--dry-run", "--docker-config", &path], None)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("docker.io/library/alpine"), "{stdout}");
    assert!(
        stdout.contains("https://registry-1.docker.io/v2/"),
        "{stdout}"
    );
    assert!(stdout.contains("user \"hub\""), "{stdout}");
    assert!(!stdout.contains("secret"), "{stdout}");
}
