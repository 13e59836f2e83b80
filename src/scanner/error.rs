//! Scan errors, and how failures are classified for status conditions and metrics.
//!
//! [`ScanError`] carries a [`ScanErrorKind`], the registry host and repository, and a
//! detail; messages never hold a credential or a token. The classification of what went
//! wrong lives here too: a transport failure (TLS refusals with a hint at the fix,
//! timeouts, refused connections, and whether a plain-HTTP fallback makes sense) and a
//! registry's final non-success answer (401/403, 404 with its distribution error code,
//! 429 after the retries, other statuses).

use super::ScanContext;
use super::client::MAX_REDIRECTS;
use super::request::read_limited;
use std::fmt;

/// What kind of failure a scan met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanErrorKind {
    /// 401/403 from the registry or its token service, or credentials it refused.
    AuthenticationFailed,
    /// 404: the repository does not exist (`NAME_UNKNOWN`) or the tag is missing.
    NotFound,
    /// The registry (or its token service, or the proxy) could not be reached.
    Unreachable,
    /// The scan took longer than its timeout.
    TimedOut,
    /// 429 (or 503 with `Retry-After`) after the bounded retries.
    RateLimited,
    /// A response that does not follow the distribution API (bad JSON, unsafe or looping
    /// `Link`, oversized page).
    Malformed,
    /// More tags than the configured cap.
    TooManyTags,
    /// The TLS handshake failed (unknown CA, missing client certificate, ...).
    Tls,
    /// The request could not be built: bad CA/certificate PEM, bad proxy address, bad
    /// exclusion regex.
    InvalidConfig,
    /// Any other registry answer (5xx after retries, unexpected status).
    RegistryError,
}

impl ScanErrorKind {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanErrorKind::AuthenticationFailed => "authentication_failed",
            ScanErrorKind::NotFound => "not_found",
            ScanErrorKind::Unreachable => "unreachable",
            ScanErrorKind::TimedOut => "timed_out",
            ScanErrorKind::RateLimited => "rate_limited",
            ScanErrorKind::Malformed => "malformed_response",
            ScanErrorKind::TooManyTags => "too_many_tags",
            ScanErrorKind::Tls => "tls",
            ScanErrorKind::InvalidConfig => "invalid_config",
            ScanErrorKind::RegistryError => "registry_error",
        }
    }

    /// The Flux condition reason: `AuthenticationFailed` for 401/403, otherwise
    /// `ReadOperationFailed`.
    pub fn condition_reason(self) -> &'static str {
        match self {
            ScanErrorKind::AuthenticationFailed => "AuthenticationFailed",
            _ => "ReadOperationFailed",
        }
    }
}

impl fmt::Display for ScanErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed scan or digest lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    kind: ScanErrorKind,
    registry: String,
    repository: String,
    detail: String,
}

impl ScanError {
    pub(crate) fn new(
        kind: ScanErrorKind,
        registry: &str,
        repository: &str,
        detail: impl Into<String>,
    ) -> ScanError {
        ScanError {
            kind,
            registry: registry.to_string(),
            repository: repository.to_string(),
            detail: detail.into(),
        }
    }

    /// An error about the scanner's own configuration, before any registry is involved.
    pub(crate) fn config(detail: impl Into<String>) -> ScanError {
        ScanError::new(ScanErrorKind::InvalidConfig, "", "", detail)
    }

    pub fn kind(&self) -> ScanErrorKind {
        self.kind
    }

    /// The registry API host the error is about (empty for configuration errors).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The detail without the registry/repository prefix.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ScanErrorKind::AuthenticationFailed => "authentication failed",
            ScanErrorKind::NotFound => "not found",
            ScanErrorKind::Unreachable => "registry unreachable",
            ScanErrorKind::TimedOut => "timed out",
            ScanErrorKind::RateLimited => "rate limited",
            ScanErrorKind::Malformed => "malformed registry response",
            ScanErrorKind::TooManyTags => "too many tags",
            ScanErrorKind::Tls => "TLS failure",
            ScanErrorKind::InvalidConfig => "invalid scan configuration",
            ScanErrorKind::RegistryError => "registry error",
        };
        if self.registry.is_empty() {
            write!(f, "{what}: {}", self.detail)
        } else {
            write!(
                f,
                "{what} for repository {:?} on registry {}: {}",
                self.repository, self.registry, self.detail
            )
        }
    }
}

impl std::error::Error for ScanError {}

/// reqwest errors print the URL; none of ours carry credentials, but strip it anyway so
/// messages stay short and stable.
pub(super) fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(u) = e.url() {
        msg = msg.replace(&format!(" ({u})"), "").replace(u.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// Classifies a failed exchange. The bool says whether a plain-HTTP fallback makes sense
/// (the server does not speak TLS, or refused the connection), as opposed to a TLS
/// server that refused us (unknown CA, missing client certificate).
pub(super) fn classify_transport(
    ctx: &ScanContext<'_>,
    host: &str,
    e: &reqwest::Error,
) -> (ScanError, bool) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut io_kind = None;
    while let Some(s) = source {
        let tls = s.downcast_ref::<rustls::Error>();
        if let Some(tls) = tls {
            let not_tls = matches!(tls, rustls::Error::InvalidMessage(_));
            let hint = match tls {
                rustls::Error::AlertReceived(
                    rustls::AlertDescription::CertificateRequired
                    | rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::HandshakeFailure,
                ) => {
                    "; the registry probably requires a client certificate (tls.crt and tls.key in certSecretRef)"
                }
                rustls::Error::InvalidCertificate(_) => {
                    "; add the registry's CA (ca.crt in certSecretRef, or --ca-file)"
                }
                rustls::Error::InvalidMessage(_) => {
                    "; the server does not speak TLS: is it a plain HTTP registry (insecure)?"
                }
                _ => "",
            };
            return (
                ctx.err(
                    ScanErrorKind::Tls,
                    format!("TLS with {host} failed: {tls}{hint}"),
                ),
                not_tls,
            );
        }
        // tokio-rustls reports alerts that arrive after the handshake (TLS 1.3 client
        // certificate checks) as a bare io::Error message.
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            let text = io.to_string();
            if io.kind() == std::io::ErrorKind::InvalidData
                && text.starts_with("received fatal alert")
            {
                let client_cert = [
                    "BadCertificate",
                    "CertificateRequired",
                    "HandshakeFailure",
                    "UnknownCA",
                ]
                .iter()
                .any(|a| text.contains(a));
                let hint = if client_cert {
                    "; the registry probably requires a client certificate (tls.crt and tls.key in certSecretRef, or --cert-file/--key-file)"
                } else {
                    ""
                };
                return (
                    ctx.err(
                        ScanErrorKind::Tls,
                        format!("TLS with {host} failed: {text}{hint}"),
                    ),
                    false,
                );
            }
        }
        // std's io::Error::source() skips the error it wraps: descend with get_ref().
        source = match s.downcast_ref::<std::io::Error>() {
            Some(io) => {
                if io.kind() != std::io::ErrorKind::Other || io_kind.is_none() {
                    io_kind = Some(io.kind());
                }
                io.get_ref()
                    .map(|e| e as &(dyn std::error::Error + 'static))
                    .or_else(|| s.source())
            }
            None => s.source(),
        };
    }
    // A TLS 1.3 server that refuses the client certificate may close the connection
    // before its alert is read: the request then fails as "connection closed", or, when
    // the close wins the race with the request's write, as a broken pipe or a reset.
    let closed = without_url(e).contains("connection closed")
        || matches!(
            io_kind,
            Some(std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
        );
    if closed
        && !e.is_connect()
        && e.url().is_some_and(|u| u.scheme() == "https")
        && ctx.req.tls.client_cert_pem.is_none()
    {
        return (
            ctx.err(
                ScanErrorKind::Tls,
                format!(
                    "{host} closed the TLS connection without answering; the registry probably requires a client certificate (tls.crt and tls.key in certSecretRef, or --cert-file/--key-file)"
                ),
            ),
            false,
        );
    }
    if e.is_timeout() {
        return (
            ctx.err(
                ScanErrorKind::TimedOut,
                format!("{host} did not answer in time"),
            ),
            false,
        );
    }
    if e.is_redirect() {
        return (
            ctx.err(
                ScanErrorKind::Malformed,
                format!(
                    "{host} redirected the request more than {MAX_REDIRECTS} times (a redirect loop?)"
                ),
            ),
            false,
        );
    }
    let detail = without_url(e);
    if e.is_connect() || io_kind.is_some() {
        let refused = io_kind == Some(std::io::ErrorKind::ConnectionRefused);
        return (
            ctx.err(
                ScanErrorKind::Unreachable,
                format!("cannot connect to {host}: {detail}"),
            ),
            refused
                || io_kind == Some(std::io::ErrorKind::ConnectionReset)
                || io_kind == Some(std::io::ErrorKind::UnexpectedEof),
        );
    }
    (
        ctx.err(
            ScanErrorKind::Unreachable,
            format!("the exchange with {host} failed: {detail}"),
        ),
        true,
    )
}

/// Maps a final non-success answer to a classified error, with the registry's error code.
pub(super) async fn status_error(
    ctx: &ScanContext<'_>,
    resp: reqwest::Response,
    doing: &str,
) -> ScanError {
    let status = resp.status();
    let body = read_limited(ctx, resp, 64 << 10).await.unwrap_or_default();
    let code = error_code(&body);
    let code_text = code.as_deref().map(|c| format!(" {c}")).unwrap_or_default();
    let (kind, detail) = match status.as_u16() {
        401 => (
            ScanErrorKind::AuthenticationFailed,
            if let Some(login) = &ctx.req.cloud {
                format!(
                    "{doing}: the registry refused the credentials of the {} login (HTTP 401{code_text}); they are dropped and the next attempt logs in again",
                    login.cloud.as_str()
                )
            } else if ctx.credential.is_some() {
                format!("{doing}: the registry refused the credentials (HTTP 401{code_text})")
            } else {
                format!(
                    "{doing}: the registry requires credentials and none are configured for {} (HTTP 401{code_text})",
                    ctx.req.image.registry()
                )
            },
        ),
        403 => (
            ScanErrorKind::AuthenticationFailed,
            format!("{doing}: access denied (HTTP 403{code_text})"),
        ),
        404 => (
            ScanErrorKind::NotFound,
            format!(
                "{doing}: the repository does not exist (HTTP 404{})",
                if code.is_some() {
                    code_text.clone()
                } else {
                    " NAME_UNKNOWN".into()
                }
            ),
        ),
        429 => (
            ScanErrorKind::RateLimited,
            format!("{doing}: still answering 429 Too Many Requests after the retries"),
        ),
        s => (
            ScanErrorKind::RegistryError,
            format!("{doing}: HTTP {s}{code_text}"),
        ),
    };
    ctx.err(kind, detail)
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
}

/// The first distribution error code of an error body (`NAME_UNKNOWN`, ...).
pub(crate) fn error_code(body: &[u8]) -> Option<String> {
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    parsed.errors.into_iter().map(|e| e.code).find(|c| {
        !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_authentication_failures_get_the_authentication_reason() {
        assert_eq!(
            ScanErrorKind::AuthenticationFailed.condition_reason(),
            "AuthenticationFailed"
        );
        for k in [
            ScanErrorKind::NotFound,
            ScanErrorKind::Unreachable,
            ScanErrorKind::TimedOut,
            ScanErrorKind::RateLimited,
            ScanErrorKind::Malformed,
            ScanErrorKind::TooManyTags,
            ScanErrorKind::Tls,
        ] {
            assert_eq!(k.condition_reason(), "ReadOperationFailed");
        }
    }

    #[test]
    fn error_bodies_give_their_distribution_code() {
        assert_eq!(
            error_code(br#"{"errors":[{"code":"NAME_UNKNOWN","message":"x"}]}"#).as_deref(),
            Some("NAME_UNKNOWN")
        );
        assert_eq!(error_code(b"nope"), None);
    }

    #[test]
    fn messages_name_the_registry_and_repository() {
        let e = ScanError::new(
            ScanErrorKind::NotFound,
            "localhost:5000",
            "team/app",
            "404 NAME_UNKNOWN",
        );
        assert_eq!(
            e.to_string(),
            "not found for repository \"team/app\" on registry localhost:5000: 404 NAME_UNKNOWN"
        );
    }
}
