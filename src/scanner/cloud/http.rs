//! Requests to cloud token services, for every cloud alike: reqwest (rustls), bounded
//! bodies, the service's own refusal (OAuth2 `error`/`error_description`, Google's
//! `error.message`, the distribution `errors[]`) quoted without a secret, and a metric
//! per exchange. Also the AWS SDK's HTTP client: the same reqwest clients, so AWS calls
//! take the scan's proxy and the same TLS roots as every other request.

use super::error::quote;
use super::metrics::CloudMetrics;
use super::{Cloud, CloudError, Step};
use crate::scanner::error::without_url;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;

/// The largest answer read from a cloud service.
const MAX_BODY: usize = 1 << 20;

/// One request to a cloud service, as messages and metrics name it.
pub(crate) struct Call<'a> {
    pub cloud: Cloud,
    pub step: Step,
    /// The service, for messages: `"the Entra ID token endpoint at login.microsoftonline.com"`.
    pub service: &'a str,
    /// What the request sends that must never appear in a message.
    pub secrets: &'a [&'a str],
}

impl Call<'_> {
    pub(crate) fn err(&self, detail: impl Into<String>) -> CloudError {
        CloudError::new(self.cloud, self.step, detail)
    }

    /// Sends the request and returns the body of a successful answer; a refusal or a
    /// transport failure becomes an error naming the service.
    pub(crate) async fn send(
        &self,
        metrics: &CloudMetrics,
        rb: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, CloudError> {
        let result = self.exchange(rb).await;
        metrics.exchange(self.cloud, self.step, result.is_ok());
        result
    }

    async fn exchange(&self, rb: reqwest::RequestBuilder) -> Result<Vec<u8>, CloudError> {
        let resp = rb.send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "it did not answer in time".to_string()
            } else {
                quote(&without_url(&e), self.secrets)
            };
            self.err(format!("cannot reach {}: {why}", self.service))
        })?;
        let status = resp.status();
        let body = read_bounded(resp).await.map_err(|why| {
            self.err(format!(
                "reading the answer of {} failed: {why}",
                self.service
            ))
        })?;
        if status.is_success() {
            return Ok(body);
        }
        let reason = refusal_reason(&body)
            .map(|r| format!(": {}", quote(&r, self.secrets)))
            .unwrap_or_default();
        Err(self.err(format!(
            "{} refused the request (HTTP {}{reason})",
            self.service,
            status.as_u16()
        )))
    }

    /// Parses a successful answer.
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(
        &self,
        body: &[u8],
        expected: &str,
    ) -> Result<T, CloudError> {
        serde_json::from_slice(body).map_err(|_| {
            self.err(format!(
                "{} answered without {expected} (not the JSON its API returns)",
                self.service
            ))
        })
    }
}

/// `host[:port]` of a URL, for messages.
pub(crate) fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| {
                u.port()
                    .map_or_else(|| h.to_string(), |p| format!("{h}:{p}"))
            })
        })
        .unwrap_or_else(|| url.to_string())
}

/// Token endpoints a login is configured with (an environment variable, a credentials
/// file) take secrets: HTTPS, or plain HTTP on loopback only.
pub(crate) fn secure_endpoint(url: &str) -> Result<(), String> {
    let u = url::Url::parse(url).map_err(|_| format!("{url:?} is not a URL"))?;
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!("{url} is not an HTTPS URL")),
    }
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|l| l as usize > MAX_BODY) {
        return Err(format!("the answer is larger than {MAX_BODY} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| without_url(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("the answer is larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The reason a service gives in an error body: OAuth2 (`error`, `error_description`),
/// Google APIs (`error.status`, `error.message`), the distribution spec (`errors[]`), or
/// the text itself when it is short and not HTML.
fn refusal_reason(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
        if let Some(code) = s(&v["error"]) {
            return Some(match s(&v["error_description"]) {
                Some(d) => format!("{code}: {d}"),
                None => code,
            });
        }
        if v["error"].is_object() {
            let status = s(&v["error"]["status"]).unwrap_or_default();
            let message = s(&v["error"]["message"]).unwrap_or_default();
            return Some(
                format!("{status}: {message}")
                    .trim_matches([':', ' '])
                    .to_string(),
            );
        }
        if let Some(first) = v["errors"].as_array().and_then(|e| e.first()) {
            let code = s(&first["code"]).unwrap_or_default();
            let message = s(&first["message"]).unwrap_or_default();
            return Some(
                format!("{code}: {message}")
                    .trim_matches([':', ' '])
                    .to_string(),
            );
        }
        if let Some(m) = s(&v["message"]) {
            return Some(m);
        }
    }
    let t = text.trim();
    (!t.is_empty() && !t.starts_with('<') && t.len() <= 1000).then(|| t.to_string())
}

/// The AWS SDK's HTTP client over a reqwest client.
pub(crate) fn aws_http_client(client: reqwest::Client) -> SharedHttpClient {
    http_client_fn(move |_settings, _components| {
        SharedHttpConnector::new(ReqwestConnector(client.clone()))
    })
}

#[derive(Debug)]
struct ReqwestConnector(reqwest::Client);

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.0.clone();
        HttpConnectorFuture::new(async move {
            let method = reqwest::Method::from_bytes(request.method().as_bytes())
                .map_err(|e| ConnectorError::user(e.into()))?;
            let mut rb = client.request(method, request.uri());
            for (name, value) in request.headers().iter() {
                rb = rb.header(name, value);
            }
            // The requests made here (STS, ECR, credential endpoints) have bodies in memory.
            let body = request
                .body()
                .bytes()
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            let resp = rb.body(body).send().await.map_err(connector_error)?;
            let status = StatusCode::try_from(resp.status().as_u16())
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            let body = read_bounded(resp)
                .await
                .map_err(|e| ConnectorError::io(e.into()))?;
            let mut out = HttpResponse::new(status, SdkBody::from(body));
            for (k, v) in headers {
                out.headers_mut().append(k, v);
            }
            Ok(out)
        })
    }
}

fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else {
        ConnectorError::io(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_endpoints_must_be_https_or_loopback() {
        assert!(secure_endpoint("https://sts.googleapis.com/v1/token").is_ok());
        assert!(secure_endpoint("http://127.0.0.1:8080/v1/token").is_ok());
        assert!(secure_endpoint("http://[::1]:8080/").is_ok());
        assert!(secure_endpoint("http://sts.example.com/v1/token").is_err());
        assert!(secure_endpoint("ftp://x").is_err());
    }

    #[test]
    fn refusals_give_the_service_s_own_reason() {
        assert_eq!(
            refusal_reason(
                br#"{"error":"invalid_client","error_description":"AADSTS700016: app not found"}"#
            )
            .as_deref(),
            Some("invalid_client: AADSTS700016: app not found")
        );
        assert_eq!(
            refusal_reason(br#"{"error":{"code":403,"message":"Permission denied","status":"PERMISSION_DENIED"}}"#)
                .as_deref(),
            Some("PERMISSION_DENIED: Permission denied")
        );
        assert_eq!(
            refusal_reason(br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad token"}]}"#)
                .as_deref(),
            Some("UNAUTHORIZED: bad token")
        );
        assert_eq!(refusal_reason(b"<html>oops</html>"), None);
        assert_eq!(refusal_reason(b"denied").as_deref(), Some("denied"));
    }
}
