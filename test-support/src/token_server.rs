//! A distribution token service for tests: `GET /token?service=&scope=` answers
//! `{"token", "access_token", "expires_in"}` with an RS256 JWT whose header carries the
//! signing certificate in `x5c`, as Debian's docker-registry (distribution 2.8) checks
//! against its `rootcertbundle`. Optional Basic credentials; requests are counted.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const TOKEN_ISSUER: &str = "image-reflector-test-issuer";
pub const TOKEN_SERVICE: &str = "image-reflector-test-registry";

/// The RSA key and its self-signed certificate that sign tokens.
pub struct TokenSigner {
    key: aws_lc_rs::rsa::KeyPair,
    cert_der: Vec<u8>,
    pub cert_pem: String,
    /// The public key (SubjectPublicKeyInfo PEM), to check tokens signed here.
    pub public_key_pem: String,
}

impl Default for TokenSigner {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenSigner {
    pub fn new() -> TokenSigner {
        let key =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .expect("RSA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test token signer");
        let cert = params.self_signed(&key).expect("self-signed token cert");
        let signing = aws_lc_rs::rsa::KeyPair::from_pkcs8(&key.serialize_der()).expect("pkcs8");
        TokenSigner {
            key: signing,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            public_key_pem: key.public_key_pem(),
        }
    }

    /// A JWT granting `actions` on `repository` for `lifetime_secs`.
    pub fn token(
        &self,
        subject: &str,
        repository: &str,
        actions: &[&str],
        lifetime_secs: i64,
    ) -> String {
        let now = jiff::Timestamp::now().as_second();
        self.jwt(&serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + lifetime_secs,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{:x}", rand::random::<u64>()),
            "access": [{"type": "repository", "name": repository, "actions": actions}],
        }))
    }

    /// An RS256 JWT of these claims, its header carrying the certificate in `x5c`.
    pub fn jwt(&self, claims: &serde_json::Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let std_b64 = base64::engine::general_purpose::STANDARD;
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [std_b64.encode(&self.cert_der)],
        });
        let signing_input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &rng,
                signing_input.as_bytes(),
                &mut sig,
            )
            .expect("sign");
        format!("{signing_input}.{}", b64.encode(sig))
    }
}

struct TokenState {
    signer: Arc<TokenSigner>,
    basic: Option<(String, String)>,
    lifetime_secs: i64,
    refresh_token: std::sync::Mutex<Option<String>>,
    requests: AtomicUsize,
    refused: AtomicUsize,
    /// An answer every token GET gets instead of a token, while set.
    answer_instead: std::sync::Mutex<Option<(StatusCode, String)>>,
    /// Every token issued, for tests that look for them where they must not be.
    tokens: std::sync::Mutex<Vec<String>>,
}

/// A running token service (stopped on drop).
pub struct TokenServer {
    pub addr: SocketAddr,
    pub signer: Arc<TokenSigner>,
    state: Arc<TokenState>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    /// Starts on 127.0.0.1:0. With `basic`, the token endpoint requires those credentials.
    pub async fn start(basic: Option<(&str, &str)>, lifetime_secs: i64) -> TokenServer {
        let signer = Arc::new(TokenSigner::new());
        let state = Arc::new(TokenState {
            signer: signer.clone(),
            basic: basic.map(|(u, p)| (u.to_string(), p.to_string())),
            lifetime_secs,
            refresh_token: std::sync::Mutex::new(None),
            requests: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            answer_instead: std::sync::Mutex::new(None),
            tokens: std::sync::Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::get(issue).post(refresh))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind token server");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenServer {
            addr,
            signer,
            state,
            task,
        }
    }

    /// The realm URL for the registry config: by the name `localhost`, as a realm at a
    /// loopback IP literal other than the registry's own is refused (the scanner's rule
    /// against token requests to internal addresses, go-containerregistry's too).
    pub fn realm(&self) -> String {
        format!("http://localhost:{}/token", self.addr.port())
    }

    /// `localhost:PORT`, the realm's host as the scanner names it.
    pub fn realm_host(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    /// The realm URL by IP literal (127.0.0.1:PORT), which the scanner refuses.
    pub fn realm_by_ip(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Also accept OAuth2 `grant_type=refresh_token` POSTs with this refresh token (a
    /// Docker config `identitytoken`).
    pub fn accept_refresh_token(&self, token: &str) {
        if let Ok(mut t) = self.state.refresh_token.lock() {
            *t = Some(token.to_string());
        }
    }

    /// Until called again with None, every token GET is answered with this status and
    /// body instead of a token (a rate limit, an outage).
    pub fn answer_instead(&self, answer: Option<(StatusCode, &str)>) {
        if let Ok(mut a) = self.state.answer_instead.lock() {
            *a = answer.map(|(status, body)| (status, body.to_string()));
        }
    }

    /// Token requests answered with a token.
    pub fn issued(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Token requests refused (wrong credentials).
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Every token issued so far (access tokens, from both grants).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state
            .tokens
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn issue(
    State(state): State<Arc<TokenState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let instead = state.answer_instead.lock().ok().and_then(|a| a.clone());
    if let Some((status, body)) = instead {
        return (status, body).into_response();
    }
    let mut subject = "anonymous".to_string();
    if let Some((user, pass)) = &state.basic {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if given != expected {
            state.refused.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
        }
        subject = user.clone();
    }
    if q.get("service").map(String::as_str) != Some(TOKEN_SERVICE) {
        return (StatusCode::BAD_REQUEST, "unknown service").into_response();
    }
    // scope=repository:NAME:pull[,push]
    let scope = q.get("scope").cloned().unwrap_or_default();
    let mut parts = scope.splitn(3, ':');
    let (kind, name, actions) = (parts.next(), parts.next(), parts.next());
    let (Some("repository"), Some(name), Some(actions)) = (kind, name, actions) else {
        return (StatusCode::BAD_REQUEST, "bad scope").into_response();
    };
    let actions: Vec<&str> = actions.split(',').collect();
    let token = state
        .signer
        .token(&subject, name, &actions, state.lifetime_secs);
    state.requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut issued) = state.tokens.lock() {
        issued.push(token.clone());
    }
    axum::Json(serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": state.lifetime_secs,
    }))
    .into_response()
}

async fn refresh(
    State(state): State<Arc<TokenState>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let expected = state.refresh_token.lock().ok().and_then(|t| t.clone());
    let given = form.get("refresh_token");
    if form.get("grant_type").map(String::as_str) != Some("refresh_token")
        || expected.is_none()
        || given != expected.as_ref()
    {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "bad refresh token").into_response();
    }
    if form.get("service").map(String::as_str) != Some(TOKEN_SERVICE) {
        return (StatusCode::BAD_REQUEST, "unknown service").into_response();
    }
    let scope = form.get("scope").cloned().unwrap_or_default();
    let mut parts = scope.splitn(3, ':');
    let (Some("repository"), Some(name), Some(actions)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return (StatusCode::BAD_REQUEST, "bad scope").into_response();
    };
    let actions: Vec<&str> = actions.split(',').collect();
    let token = state
        .signer
        .token("refresh-user", name, &actions, state.lifetime_secs);
    state.requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut issued) = state.tokens.lock() {
        issued.push(token.clone());
    }
    axum::Json(serde_json::json!({
        "access_token": token,
        "expires_in": state.lifetime_secs,
    }))
    .into_response()
}
