//! Stand-ins for Azure's and Google's token services, which no emulator plays: small
//! servers that follow the services' published API contracts and make the checks the
//! real ones make on a federated token (RS256 signature, issuer, audience, subject),
//! with counts of what they were asked. All listen on 127.0.0.1.
//!
//! - [`Azure`]: the Entra ID token endpoint (`POST /{tenant}/oauth2/v2.0/token`, client
//!   credentials with a client assertion or a secret; plain HTTP, reached through
//!   `AZURE_AUTHORITY_HOST`), the instance metadata service
//!   (`GET /metadata/identity/oauth2/token`, `Metadata: true`), and ACR's front
//!   (`myregistry.azurecr.io` over HTTPS): `/oauth2/exchange` for an Entra token,
//!   `/oauth2/token` (Basic `00000000-…:REFRESH_TOKEN`) for registry tokens, and every
//!   other path relayed to a real docker-registry whose token auth names that realm.
//! - [`Gcp`]: the metadata server (`/computeMetadata/v1/...`, `Metadata-Flavor:
//!   Google`), STS (`POST /v1/token`, RFC 8693 token exchange) and IAM Credentials
//!   (`POST /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`), the last two over
//!   plain HTTP and over HTTPS as `sts.googleapis.com` and `iamcredentials.googleapis.com`.

use crate::certs::TestCa;
use crate::token_server::TokenSigner;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A server of an axum app on 127.0.0.1 (stopped on drop).
pub struct Served {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `app` over plain HTTP.
pub async fn serve_http(app: Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Served { addr, task }
}

/// Serves `app` over HTTPS with a certificate for `names` signed by `ca`.
pub async fn serve_https(app: Router, ca: &TestCa, names: &[&str]) -> Served {
    use rustls_pki_types::pem::PemObject as _;
    let leaf = ca.server(names);
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    Served { addr, task }
}

/// Who may present a federated token, as a federated identity credential (Entra ID) or
/// a workload identity provider (Google) configures it.
#[derive(Clone, Debug)]
pub struct FederatedTrust {
    pub issuer: String,
    /// PEM public key (SubjectPublicKeyInfo) that signs the tokens.
    pub key_pem: String,
    pub audience: String,
    pub subjects: Vec<String>,
}

/// Checks a federated token; the error is what the service would say.
pub fn check_federated(token: &str, trust: &FederatedTrust) -> Result<serde_json::Value, String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err("the assertion is not a JWT".into());
    };
    let decode = |p: &str| {
        b64.decode(p.trim_end_matches('='))
            .map_err(|_| "the assertion is not base64url".to_string())
    };
    let der: String = trust
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .map_err(|_| "bad trust key".to_string())?;
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        der,
    )
    .verify(format!("{header}.{claims}").as_bytes(), &decode(signature)?)
    .map_err(|_| "the assertion's signature does not verify with the issuer's key".to_string())?;
    let claims: serde_json::Value = serde_json::from_slice(&decode(claims)?)
        .map_err(|_| "the assertion's claims are not JSON".to_string())?;
    if claims["iss"] != trust.issuer.as_str() {
        return Err(format!(
            "the assertion's issuer {} is not trusted",
            claims["iss"]
        ));
    }
    let audiences: Vec<&str> = match &claims["aud"] {
        serde_json::Value::String(a) => vec![a.as_str()],
        serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&trust.audience.as_str()) {
        return Err(format!(
            "the assertion's audience {audiences:?} is not {}",
            trust.audience
        ));
    }
    if claims["exp"].as_i64().unwrap_or(0) <= jiff::Timestamp::now().as_second() {
        return Err("the assertion has expired".into());
    }
    let subject = claims["sub"].as_str().unwrap_or_default();
    if !trust.subjects.iter().any(|s| s == subject) {
        return Err(format!(
            "no federated credential matches the subject {subject}"
        ));
    }
    Ok(claims)
}

/// How often each thing was asked of a stand-in.
#[derive(Default)]
struct Counts(Mutex<BTreeMap<&'static str, usize>>);

impl Counts {
    fn inc(&self, what: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what)
            .or_default() += 1;
    }

    fn get(&self, what: &str) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(what)
            .copied()
            .unwrap_or(0)
    }
}

fn random_token(prefix: &str) -> String {
    format!(
        "{prefix}-{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": error, "error_description": description})),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Azure

/// What the Azure stand-ins accept.
#[derive(Clone, Debug, Default)]
pub struct AzureOptions {
    pub tenant: String,
    pub client_id: String,
    /// Federated credential: client assertions this trust admits.
    pub federated: Option<FederatedTrust>,
    /// Client secret accepted for `client_id`.
    pub client_secret: Option<String>,
}

impl AzureOptions {
    /// A federated identity credential of `client_id` in `tenant` for `subject`'s
    /// tokens from `issuer`, signed by `key_pem`, with Entra ID's audience.
    pub fn federated(
        tenant: &str,
        client_id: &str,
        issuer: &str,
        key_pem: &str,
        subject: &str,
    ) -> AzureOptions {
        AzureOptions {
            tenant: tenant.into(),
            client_id: client_id.into(),
            federated: Some(FederatedTrust {
                issuer: issuer.into(),
                key_pem: key_pem.into(),
                audience: "api://AzureADTokenExchange".into(),
                subjects: vec![subject.into()],
            }),
            client_secret: None,
        }
    }
}

#[derive(Default)]
struct AzureState {
    options: AzureOptions,
    /// Entra tokens issued, with their scope.
    access_tokens: Mutex<HashMap<String, String>>,
    refresh_tokens: Mutex<HashSet<String>>,
    counts: Counts,
    signer: Option<Arc<TokenSigner>>,
    registry: String,
    registry_host: String,
    http: reqwest::Client,
}

impl AzureState {
    fn count(&self, what: &'static str) {
        self.counts.inc(what);
    }

    fn issue(&self, scope: &str) -> Response {
        let token = random_token("entra");
        self.access_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone(), scope.to_string());
        axum::Json(serde_json::json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": token,
        }))
        .into_response()
    }
}

/// The Azure stand-ins: Entra ID and IMDS (plain HTTP), ACR's front (HTTPS).
pub struct Azure {
    pub entra: Served,
    pub imds: Served,
    pub acr: Served,
    state: Arc<AzureState>,
}

/// The ACR host the front answers as.
pub const ACR_HOST: &str = "myregistry.azurecr.io";

/// The docker-registry ACR's stand-in sits in front of: token auth whose realm is ACR's
/// `/oauth2/token`, tokens signed by the returned signer (hand it to [`Azure::start`]).
pub async fn acr_registry() -> (crate::registry::Registry, Arc<TokenSigner>) {
    use crate::registry::{Registry, RegistryAuth, RegistryOptions, RegistryTls};
    let signer = Arc::new(TokenSigner::new());
    let for_registry = signer.clone();
    let registry = tokio::task::spawn_blocking(move || {
        Registry::start(RegistryOptions {
            auth: RegistryAuth::Token {
                realm: format!("https://{ACR_HOST}/oauth2/token"),
                signer: for_registry,
            },
            tls: RegistryTls::None,
        })
    })
    .await
    .expect("registry");
    (registry, signer)
}

impl Azure {
    /// Starts them; ACR's front relays to `registry_base` (`http://127.0.0.1:PORT`, a
    /// docker-registry whose token realm is `https://myregistry.azurecr.io/oauth2/token`
    /// and whose tokens `signer` signs), with a certificate from `ca`.
    pub async fn start(
        options: AzureOptions,
        ca: &TestCa,
        registry_base: &str,
        signer: Arc<TokenSigner>,
    ) -> Azure {
        let state = Arc::new(AzureState {
            options,
            signer: Some(signer),
            registry: registry_base.trim_end_matches('/').to_string(),
            registry_host: ACR_HOST.to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
            ..Default::default()
        });
        let entra = Router::new()
            .route(
                "/{tenant}/oauth2/v2.0/token",
                axum::routing::post(entra_token),
            )
            .with_state(state.clone());
        let imds = Router::new()
            .route(
                "/metadata/identity/oauth2/token",
                axum::routing::get(imds_token),
            )
            .with_state(state.clone());
        let acr = Router::new()
            .route("/oauth2/exchange", axum::routing::post(acr_exchange))
            .route("/oauth2/token", axum::routing::get(acr_token))
            .fallback(acr_relay)
            .with_state(state.clone());
        Azure {
            entra: serve_http(entra).await,
            imds: serve_http(imds).await,
            acr: serve_https(acr, ca, &[ACR_HOST]).await,
            state,
        }
    }

    /// An egress proxy routing ACR's host to its front and letting the Entra ID
    /// stand-in through.
    pub async fn egress(&self) -> crate::egress::Egress {
        let egress = crate::egress::Egress::start().await;
        egress.route(&format!("{ACR_HOST}:443"), self.acr.addr);
        egress.allow(self.entra.addr);
        egress
    }

    /// `http://127.0.0.1:PORT/`, for `AZURE_AUTHORITY_HOST`.
    pub fn authority(&self) -> String {
        format!("http://{}/", self.entra.addr)
    }

    /// `http://127.0.0.1:PORT`, for `AZURE_POD_IDENTITY_AUTHORITY_HOST`.
    pub fn imds_host(&self) -> String {
        format!("http://{}", self.imds.addr)
    }

    /// How often each was asked: `entra`, `entra-refused`, `imds`, `exchange`,
    /// `exchange-refused`, `registry-token`.
    pub fn count(&self, what: &str) -> usize {
        self.state.counts.get(what)
    }
}

async fn entra_token(
    State(s): State<Arc<AzureState>>,
    Path(tenant): Path<String>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    s.count("entra");
    let o = &s.options;
    let refuse = |description: String| {
        s.count("entra-refused");
        oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &description)
    };
    if tenant != o.tenant {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003",
        );
    }
    if form.get("client_id") != Some(&o.client_id) {
        return refuse(format!(
            "AADSTS700016: Application with identifier '{}' was not found.",
            form.get("client_id").cloned().unwrap_or_default()
        ));
    }
    let scope = form.get("scope").cloned().unwrap_or_default();
    match (form.get("client_assertion"), form.get("client_secret")) {
        (Some(assertion), _) => {
            if form.get("client_assertion_type").map(String::as_str)
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            {
                return refuse("AADSTS50027: invalid client_assertion_type".into());
            }
            match o.federated.as_ref().map(|t| check_federated(assertion, t)) {
                Some(Ok(_)) => s.issue(&scope),
                Some(Err(why)) => refuse(format!(
                    "AADSTS70021: No matching federated identity record found for presented assertion: {why}"
                )),
                None => refuse("AADSTS70021: the application has no federated credential".into()),
            }
        }
        (None, Some(secret)) if o.client_secret.as_ref() == Some(secret) => s.issue(&scope),
        _ => refuse("AADSTS7000215: Invalid client secret provided.".into()),
    }
}

async fn imds_token(
    State(s): State<Arc<AzureState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    s.count("imds");
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}))).into_response();
    }
    let resource = q.get("resource").cloned().unwrap_or_default();
    let token = random_token("imds");
    s.access_tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(token.clone(), format!("{resource}/.default"));
    let now = jiff::Timestamp::now().as_second();
    axum::Json(serde_json::json!({
        "access_token": token,
        "expires_in": "3599",
        "expires_on": (now + 3599).to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn acr_exchange(
    State(s): State<Arc<AzureState>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    s.count("exchange");
    let scope = form.get("access_token").and_then(|t| {
        s.access_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(t)
            .cloned()
    });
    let refuse = |why: &str| {
        s.count("exchange-refused");
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": why}]})),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("access_token") {
        return refuse("grant_type must be access_token");
    }
    if form.get("service") != Some(&s.registry_host) {
        return refuse("unknown service");
    }
    match scope {
        Some(scope) if scope == "https://containerregistry.azure.net/.default" => {}
        Some(_) => return refuse("the access token's audience is not ACR"),
        None => return refuse("the access token is not valid"),
    }
    let exp = jiff::Timestamp::now().as_second() + 3 * 3600;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let refresh = format!(
        "{}.{}.{}",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(serde_json::json!({"exp": exp, "jti": random_token("r")}).to_string()),
        b64.encode("x")
    );
    s.refresh_tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(refresh.clone());
    axum::Json(serde_json::json!({"refresh_token": refresh})).into_response()
}

async fn acr_token(
    State(s): State<Arc<AzureState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok());
    let known = basic
        .as_deref()
        .and_then(|b| b.split_once(':'))
        .is_some_and(|(user, refresh)| {
            user == "00000000-0000-0000-0000-000000000000"
                && s.refresh_tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(refresh)
        });
    if !known {
        return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    }
    let scope = q.get("scope").cloned().unwrap_or_default();
    let Some(repository) = scope
        .strip_prefix("repository:")
        .and_then(|r| r.strip_suffix(":pull"))
    else {
        return (StatusCode::BAD_REQUEST, "bad scope").into_response();
    };
    let Some(signer) = &s.signer else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no signer").into_response();
    };
    s.count("registry-token");
    let token = signer.token("acr-user", repository, &["pull"], 300);
    axum::Json(serde_json::json!({"access_token": token})).into_response()
}

/// Everything else goes to the registry, headers and all.
async fn acr_relay(
    State(s): State<Arc<AzureState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut rb = s.http.request(method, format!("{}{path}", s.registry));
    for (k, v) in &headers {
        if k != "host" {
            rb = rb.header(k, v);
        }
    }
    match rb.body(body).send().await {
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.unwrap_or_default();
            let mut out = (status, body).into_response();
            for (k, v) in &headers {
                if k != "content-length" && k != "transfer-encoding" {
                    out.headers_mut().insert(k, v.clone());
                }
            }
            out
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

// ---------------------------------------------------------------------------------------
// GCP

/// What the GCP stand-ins accept and issue.
#[derive(Clone, Debug, Default)]
pub struct GcpOptions {
    /// The access token every path ends with (the registry's password).
    pub access_token: String,
    /// Subject tokens STS exchanges (its audience is the STS `audience` parameter).
    pub federated: Option<FederatedTrust>,
    /// Service accounts IAM lets federated tokens impersonate.
    pub impersonable: Vec<String>,
    /// GKE's project, location and cluster name on the metadata server.
    pub gke: Option<(String, String, String)>,
}

#[derive(Default)]
struct GcpState {
    options: GcpOptions,
    federated_tokens: Mutex<HashSet<String>>,
    counts: Counts,
}

impl GcpState {
    fn count(&self, what: &'static str) {
        self.counts.inc(what);
    }
}

/// The GCP stand-ins.
pub struct Gcp {
    pub metadata: Served,
    /// STS and IAM Credentials over plain HTTP.
    pub apis: Served,
    /// The same over HTTPS as `sts.googleapis.com` and `iamcredentials.googleapis.com`.
    pub apis_tls: Served,
    state: Arc<GcpState>,
}

impl Gcp {
    pub async fn start(options: GcpOptions, ca: &TestCa) -> Gcp {
        let state = Arc::new(GcpState {
            options,
            ..Default::default()
        });
        let metadata = Router::new()
            .route(
                "/computeMetadata/v1/{*path}",
                axum::routing::get(gcp_metadata),
            )
            .with_state(state.clone());
        let apis = Router::new()
            .route("/v1/token", axum::routing::post(gcp_sts))
            .route(
                "/v1/projects/-/serviceAccounts/{call}",
                axum::routing::post(gcp_impersonate),
            )
            .with_state(state.clone());
        Gcp {
            metadata: serve_http(metadata).await,
            apis: serve_http(apis.clone()).await,
            apis_tls: serve_https(
                apis,
                ca,
                &["sts.googleapis.com", "iamcredentials.googleapis.com"],
            )
            .await,
            state,
        }
    }

    /// `127.0.0.1:PORT`, for `GCE_METADATA_HOST`.
    pub fn metadata_host(&self) -> String {
        self.metadata.addr.to_string()
    }

    /// How often each was asked: `metadata-token`, `sts`, `sts-refused`, `impersonate`,
    /// `impersonate-refused`.
    pub fn count(&self, what: &str) -> usize {
        self.state.counts.get(what)
    }
}

async fn gcp_metadata(
    State(s): State<Arc<GcpState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    let gke = s.options.gke.clone().unwrap_or_default();
    match path.as_str() {
        "instance/service-accounts/default/token" => {
            s.count("metadata-token");
            axum::Json(serde_json::json!({
                "access_token": s.options.access_token,
                "expires_in": 3599,
                "token_type": "Bearer",
            }))
            .into_response()
        }
        "project/project-id" if s.options.gke.is_some() => gke.0.into_response(),
        "instance/attributes/cluster-location" if s.options.gke.is_some() => gke.1.into_response(),
        "instance/attributes/cluster-name" if s.options.gke.is_some() => gke.2.into_response(),
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn gcp_sts(
    State(s): State<Arc<GcpState>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    s.count("sts");
    let refuse = |why: String| {
        s.count("sts-refused");
        oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &why)
    };
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:token-exchange")
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type",
        );
    }
    let Some(trust) = &s.options.federated else {
        return refuse("no workload identity pool".into());
    };
    if form.get("audience") != Some(&trust.audience) {
        return refuse(format!(
            "The audience {:?} does not match a workload identity provider",
            form.get("audience")
        ));
    }
    // The token's own audience is the provider (outside GKE) or the pool (in GKE).
    let mut token_trust = trust.clone();
    if let Some(pool) = trust
        .audience
        .strip_prefix("identitynamespace:")
        .and_then(|r| r.split(':').next())
    {
        token_trust.audience = pool.to_string();
    }
    match check_federated(
        form.get("subject_token")
            .map(String::as_str)
            .unwrap_or_default(),
        &token_trust,
    ) {
        Ok(_) => {
            let token = if s.options.impersonable.is_empty() {
                s.options.access_token.clone()
            } else {
                random_token("federated")
            };
            s.federated_tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(token.clone());
            axum::Json(serde_json::json!({
                "access_token": token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            }))
            .into_response()
        }
        Err(why) => refuse(why),
    }
}

async fn gcp_impersonate(
    State(s): State<Arc<GcpState>>,
    Path(call): Path<String>,
    headers: HeaderMap,
) -> Response {
    s.count("impersonate");
    let refuse = |status: StatusCode, message: String| {
        s.count("impersonate-refused");
        (status, axum::Json(serde_json::json!({"error": {"code": status.as_u16(), "message": message, "status": "PERMISSION_DENIED"}}))).into_response()
    };
    let Some(email) = call.strip_suffix(":generateAccessToken") else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !s
        .federated_tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(bearer)
    {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.".into(),
        );
    }
    if !s.options.impersonable.iter().any(|e| e == email) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("Permission 'iam.serviceAccounts.getAccessToken' denied on resource {email}"),
        );
    }
    let expire = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    axum::Json(serde_json::json!({
        "accessToken": s.options.access_token,
        "expireTime": expire.to_string(),
    }))
    .into_response()
}
