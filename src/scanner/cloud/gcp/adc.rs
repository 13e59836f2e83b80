//! Application default credentials: the controller's own Google identity from a
//! credentials file (`external_account`, `authorized_user` or `service_account`), in
//! the order Google's client libraries read them, else the metadata server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;

use super::super::env::CloudEnv;
use super::super::http::{Call, host_of, secure_endpoint};
use super::super::metrics::CloudMetrics;
use super::super::{Cloud, CloudError, Step};
use super::{OAUTH2_TOKEN_URL, OAuthToken, SCOPES, impersonate, metadata_token, sts_exchange};

/// An application default credentials file.
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum CredentialsFile {
    ExternalAccount {
        audience: String,
        subject_token_type: String,
        token_url: String,
        #[serde(default)]
        service_account_impersonation_url: Option<String>,
        #[serde(default)]
        service_account_impersonation: Option<Impersonation>,
        credential_source: CredentialSource,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        #[serde(default)]
        token_uri: Option<String>,
    },
    ServiceAccount {
        client_email: String,
        private_key: String,
        #[serde(default)]
        private_key_id: Option<String>,
        #[serde(default)]
        token_uri: Option<String>,
    },
}

#[derive(serde::Deserialize)]
struct Impersonation {
    #[serde(default)]
    token_lifetime_seconds: Option<u64>,
}

#[derive(serde::Deserialize, Default)]
pub(super) struct CredentialSource {
    #[serde(default)]
    pub(super) file: Option<String>,
    #[serde(default)]
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) format: Option<SourceFormat>,
}

#[derive(serde::Deserialize)]
pub(super) struct SourceFormat {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) subject_token_field_name: Option<String>,
}

/// The application default credentials file in use: `GOOGLE_APPLICATION_CREDENTIALS`,
/// else gcloud's well-known file when it exists.
pub(super) fn credentials_file(env: &CloudEnv) -> Option<PathBuf> {
    if let Some(p) = env.path("GOOGLE_APPLICATION_CREDENTIALS") {
        return Some(p);
    }
    let well_known = env
        .path("CLOUDSDK_CONFIG")
        .map(|d| d.join("application_default_credentials.json"))
        .or_else(|| env.home_path(".config/gcloud/application_default_credentials.json"))?;
    well_known.is_file().then_some(well_known)
}

/// The controller's Google access token.
pub(in super::super) async fn controller_token(
    metrics: &CloudMetrics,
    http: &reqwest::Client,
    env: &CloudEnv,
) -> Result<(String, Option<i64>), CloudError> {
    let Some(path) = credentials_file(env) else {
        return metadata_token(metrics, env).await;
    };
    let no_identity = |why: String| {
        CloudError::new(
            Cloud::Gcp,
            Step::NoIdentity,
            format!("the credentials file {}: {why}", path.display()),
        )
    };
    let text = std::fs::read(&path).map_err(|e| no_identity(e.to_string()))?;
    let file: CredentialsFile = serde_json::from_slice(&text).map_err(|e| {
        // serde_json's message names the field, never its value.
        no_identity(format!(
            "not an external_account, authorized_user or service_account credentials file ({})",
            e.to_string().split(" at line").next().unwrap_or_default()
        ))
    })?;
    match file {
        CredentialsFile::ExternalAccount {
            audience,
            subject_token_type,
            token_url,
            service_account_impersonation_url,
            service_account_impersonation,
            credential_source,
        } => {
            let subject = subject_token(metrics, http, &credential_source)
                .await
                .map_err(&no_identity)?;
            secure_endpoint(&token_url).map_err(&no_identity)?;
            let (federated, expiry) = sts_exchange(
                metrics,
                http,
                &token_url,
                &audience,
                &subject_token_type,
                &subject,
            )
            .await?;
            match service_account_impersonation_url {
                Some(url) => {
                    secure_endpoint(&url).map_err(&no_identity)?;
                    let lifetime =
                        service_account_impersonation.and_then(|i| i.token_lifetime_seconds);
                    impersonate(metrics, http, &url, &federated, lifetime).await
                }
                None => Ok((federated, expiry)),
            }
        }
        CredentialsFile::AuthorizedUser {
            client_id,
            client_secret,
            refresh_token,
            token_uri,
        } => {
            let url = token_uri.unwrap_or_else(|| OAUTH2_TOKEN_URL.to_string());
            secure_endpoint(&url).map_err(&no_identity)?;
            let form = [
                ("grant_type", "refresh_token"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.as_str()),
                ("refresh_token", refresh_token.as_str()),
            ];
            oauth2_token(
                metrics,
                http,
                GOOGLE_OAUTH2,
                &url,
                &form,
                &[&client_secret, &refresh_token],
            )
            .await
        }
        CredentialsFile::ServiceAccount {
            client_email,
            private_key,
            private_key_id,
            token_uri,
        } => {
            let url = token_uri.unwrap_or_else(|| OAUTH2_TOKEN_URL.to_string());
            secure_endpoint(&url).map_err(&no_identity)?;
            let assertion =
                signed_assertion(&client_email, private_key_id.as_deref(), &private_key, &url)
                    .map_err(no_identity)?;
            let form = [
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ];
            oauth2_token(metrics, http, GOOGLE_OAUTH2, &url, &form, &[&assertion]).await
        }
    }
}

const GOOGLE_OAUTH2: &str = "Google's OAuth2 token endpoint";

/// A form POST to an OAuth2 token endpoint (`kind`, for messages: `GCP STS`), and the
/// access token it answers with.
pub(super) async fn oauth2_token(
    metrics: &CloudMetrics,
    http: &reqwest::Client,
    kind: &str,
    url: &str,
    form: &[(&str, &str)],
    secrets: &[&str],
) -> Result<(String, Option<i64>), CloudError> {
    let service = format!("{kind} at {}", host_of(url));
    let call = Call {
        cloud: Cloud::Gcp,
        step: Step::TokenService,
        service: &service,
        secrets,
    };
    let body = call.send(metrics, http.post(url).form(form)).await?;
    let t: OAuthToken = call.parse(&body, "an access token")?;
    let now = jiff::Timestamp::now().as_second();
    Ok((t.access_token, t.expires_in.map(|s| now + s)))
}

/// The subject token of an `external_account` credential source: a file or a URL, as
/// text or as a JSON field.
pub(super) async fn subject_token(
    metrics: &CloudMetrics,
    http: &reqwest::Client,
    source: &CredentialSource,
) -> Result<String, String> {
    let raw = match (&source.file, &source.url) {
        (Some(file), _) => std::fs::read_to_string(file)
            .map_err(|e| format!("credential_source.file {file}: {e}"))?,
        (None, Some(url)) => {
            let service = format!("the credential source at {}", host_of(url));
            let call = Call {
                cloud: Cloud::Gcp,
                step: Step::NoIdentity,
                service: &service,
                secrets: &[],
            };
            let mut rb = http.get(url);
            for (k, v) in &source.headers {
                rb = rb.header(k, v);
            }
            let body = call
                .send(metrics, rb)
                .await
                .map_err(|e| e.detail().to_string())?;
            String::from_utf8_lossy(&body).into_owned()
        }
        (None, None) => {
            return Err("credential_source has neither \"file\" nor \"url\" (executable and AWS sources are not supported)".into());
        }
    };
    match &source.format {
        Some(f) if f.kind == "json" => {
            let field = f
                .subject_token_field_name
                .as_deref()
                .unwrap_or("access_token");
            let v: serde_json::Value = serde_json::from_str(&raw)
                .map_err(|_| "the subject token source is not JSON".to_string())?;
            v[field]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("the subject token source has no string field {field:?}"))
        }
        _ => Ok(raw.trim().to_string()),
    }
}

/// A service account key's JWT assertion (RS256) for Google's token endpoint.
pub(super) fn signed_assertion(
    email: &str,
    key_id: Option<&str>,
    private_key_pem: &str,
    audience: &str,
) -> Result<String, String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let der: String = private_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der.trim())
        .map_err(|_| "private_key is not a PEM key".to_string())?;
    let key = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der)
        .map_err(|_| "private_key is not an RSA PKCS#8 key".to_string())?;
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = key_id {
        header["kid"] = kid.into();
    }
    let now = jiff::Timestamp::now().as_second();
    let claims = serde_json::json!({
        "iss": email,
        "scope": SCOPES.join(" "),
        "aud": audience,
        "iat": now,
        "exp": now + 3600,
    });
    let input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let mut signature = vec![0u8; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "signing with private_key failed".to_string())?;
    Ok(format!("{input}.{}", b64.encode(signature)))
}
