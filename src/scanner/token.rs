//! The two Bearer token exchanges, and the rules both follow.
//!
//! - **oci-client's** (`oci_client::Client::auth`), for anonymous, Basic and ready-made
//!   registry tokens over a transport without a client certificate: it probes `/v2/`
//!   itself, follows that challenge and GETs the realm with `service` and `scope`. Its
//!   errors are mapped to ours here; what is pure about it (which flow, token lifetimes,
//!   reasons without secrets) is in `oci_token.rs`, its client in `client.rs`.
//! - **The hand-written one**, for what oci-client 0.18 cannot do: an `identitytoken`
//!   POSTed to the realm as an OAuth2 refresh token, and any registry needing a client
//!   certificate (oci-client's client has no mTLS identity).
//!
//! Both first check the realm: it must be an http(s) URL, and credentials go to a
//! plain-HTTP realm only when the registry itself is plain HTTP.

use super::auth::basic_header;
use super::endpoint::RegistryEndpoint;
use super::error::classify_transport;
use super::oci_token;
use super::request::{host_port, read_limited};
use super::{RegistryCredential, ScanContext, ScanError, ScanErrorKind, Scanner};
use oci_client::RegistryOperation;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use reqwest::header::AUTHORIZATION;
use reqwest::{Method, StatusCode};
use std::time::Duration;
use url::Url;

/// Whether `url`'s host is an IP address in a loopback, private (RFC 1918, fc00::/7),
/// link-local (169.254/16, fe80::/10) or unspecified range, IPv4-mapped IPv6 included.
/// (The URL parser has already turned legacy IPv4 forms such as `0x7f.1` into addresses.)
fn is_internal_ip(url: &Url) -> bool {
    let v4 = |a: std::net::Ipv4Addr| {
        a.is_loopback() || a.is_private() || a.is_link_local() || a.is_unspecified()
    };
    match url.host() {
        Some(url::Host::Ipv4(a)) => v4(a),
        Some(url::Host::Ipv6(a)) => match a.to_ipv4_mapped() {
            Some(mapped) => v4(mapped),
            None => {
                let first = a.segments()[0];
                a.is_loopback()
                    || a.is_unspecified()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
            }
        },
        _ => false,
    }
}

impl Scanner {
    /// The realm's URL and `host[:port]`, after the rules that hold whoever fetches the
    /// token: the realm is an http(s) URL, and credentials go to a plain-HTTP realm only
    /// when the registry itself is plain HTTP.
    fn checked_realm(
        &self,
        ctx: &ScanContext<'_>,
        endpoint: &RegistryEndpoint,
        realm: &str,
    ) -> Result<(Url, String), ScanError> {
        let realm_url = Url::parse(realm).map_err(|_| {
            ctx.err(
                ScanErrorKind::Malformed,
                format!("the registry's token realm {realm:?} is not a URL"),
            )
        })?;
        let realm_host = host_port(&realm_url);
        if !matches!(realm_url.scheme(), "https" | "http") {
            return Err(ctx.err(
                ScanErrorKind::Malformed,
                format!("the token realm at {realm_host} is not an http(s) URL"),
            ));
        }
        // As go-containerregistry (and so Flux) does: a realm that is an IP literal in a
        // loopback, private, link-local or unspecified range is refused unless it is the
        // registry's own host and port, so a registry cannot point the token request at
        // the cloud metadata service or another internal address.
        if realm_host != host_port(&endpoint.base) && is_internal_ip(&realm_url) {
            return Err(ctx.err(
                ScanErrorKind::AuthenticationFailed,
                format!(
                    "the registry's token realm {realm_host} is a loopback, private or link-local address other than the registry's own; refusing to send a token request there"
                ),
            ));
        }
        if ctx.credential.is_some() && realm_url.scheme() == "http" && !endpoint.plain_http {
            return Err(ctx.err(
                ScanErrorKind::AuthenticationFailed,
                format!(
                    "the token realm at {realm_host} is plain HTTP; credentials are only sent to an HTTPS realm unless the repository is insecure"
                ),
            ));
        }
        Ok((realm_url, realm_host))
    }

    /// The token exchange through `oci_client::Client::auth` (anonymous or Basic): it
    /// probes `/v2/` once more, parses the challenge and GETs the realm with `service`
    /// and `scope`. It holds a request slot on the registry host and on the realm host
    /// meanwhile (one request to each); the scan's timeout bounds it like any request.
    pub(super) async fn fetch_token_with_oci_client(
        &self,
        ctx: &ScanContext<'_>,
        endpoint: &RegistryEndpoint,
        realm: &str,
        auth: RegistryAuth,
    ) -> Result<(String, Duration), ScanError> {
        let (_, realm_host) = self.checked_realm(ctx, endpoint, realm)?;
        let client = self
            .inner
            .clients
            .oci(&self.inner.config, ctx, endpoint.plain_http)?;
        let registry_host = host_port(&endpoint.base);
        let reference = oci_client::Reference::with_tag(
            ctx.req.image.api_host().to_string(),
            ctx.req.image.repository().to_string(),
            "latest".to_string(),
        );
        let result = {
            let _permits = self.acquire_both(&registry_host, &realm_host).await;
            client
                .auth(&reference, &auth, RegistryOperation::Pull)
                .await
        };
        match result {
            Ok(Some(token)) => {
                let lifetime =
                    oci_token::token_lifetime(&token, jiff::Timestamp::now().as_second());
                Ok((token, lifetime))
            }
            Ok(None) => {
                // Our probe saw a Bearer challenge, oci-client's did not: learn again.
                self.forget_endpoint(ctx);
                Err(ctx.err(
                    ScanErrorKind::RegistryError,
                    format!(
                        "{registry_host} asked for a Bearer token from {realm_host}, then stopped asking (its /v2/ answer changed); the next scan probes again"
                    ),
                ))
            }
            Err(e) => Err(self.oci_error(ctx, e, &realm_host)),
        }
    }

    /// Maps an oci-client error of the token exchange to our classification; no
    /// credential or token can appear in the message.
    fn oci_error(
        &self,
        ctx: &ScanContext<'_>,
        e: OciDistributionError,
        realm_host: &str,
    ) -> ScanError {
        match e {
            OciDistributionError::AuthenticationFailure(reason) => {
                let refusal = oci_token::refusal_kind(&reason);
                let reason = oci_token::safe_reason(&reason, ctx.credential.as_ref());
                match refusal {
                    oci_token::Refusal::RateLimited => {
                        return ctx.err(
                            ScanErrorKind::RateLimited,
                            format!("the token service at {realm_host} answered: too many requests ({reason})"),
                        );
                    }
                    oci_token::Refusal::ServiceFailed => {
                        return ctx.err(
                            ScanErrorKind::RegistryError,
                            format!("the token service at {realm_host} failed ({reason})"),
                        );
                    }
                    oci_token::Refusal::Credentials => {}
                }
                ctx.err(
                    ScanErrorKind::AuthenticationFailed,
                    format!(
                        "the token service at {realm_host} refused {}{}",
                        if ctx.credential.is_some() {
                            "the credentials"
                        } else {
                            "anonymous access"
                        },
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(" ({reason})")
                        }
                    ),
                )
            }
            OciDistributionError::RequestError(e) => {
                let host = e.url().map(host_port).unwrap_or_else(|| realm_host.into());
                self.inner.metrics.observe(&host, None);
                let (err, _) = classify_transport(ctx, &host, &e);
                let during = if host == realm_host {
                    "token service"
                } else {
                    "token exchange"
                };
                ctx.err(err.kind(), format!("{during}: {}", err.detail()))
            }
            OciDistributionError::RegistryTokenDecodeError(_) => ctx.err(
                ScanErrorKind::Malformed,
                format!(
                    "the token service at {realm_host} answered without a token (no JSON with \"token\" or \"access_token\")"
                ),
            ),
            other => ctx.err(
                ScanErrorKind::RegistryError,
                format!(
                    "the token exchange with {realm_host} failed: {}",
                    oci_token::safe_reason(&other.to_string(), ctx.credential.as_ref())
                ),
            ),
        }
    }

    /// The hand-written token flow, for what oci-client 0.18 cannot do (see the module
    /// docs): POST an identity token as an OAuth2 refresh token, or GET the realm with
    /// `service` and `scope` over a transport with a client certificate.
    pub(super) async fn fetch_token(
        &self,
        ctx: &ScanContext<'_>,
        endpoint: &RegistryEndpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), ScanError> {
        let (realm_url, realm_host) = self.checked_realm(ctx, endpoint, realm)?;
        let sends_credential = ctx.credential.is_some();
        let (method, url, authorization, body) = match &ctx.credential {
            Some(RegistryCredential::IdentityToken { token, .. }) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", token)
                    .append_pair("client_id", "image-reflector")
                    .append_pair("scope", scope);
                if let Some(s) = service {
                    form.append_pair("service", s);
                }
                (Method::POST, realm_url.clone(), None, Some(form.finish()))
            }
            other => {
                let mut u = realm_url.clone();
                {
                    let mut q = u.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", scope);
                }
                let auth = match other {
                    Some(RegistryCredential::Basic { username, password }) => {
                        Some(basic_header(username, password))
                    }
                    _ => None,
                };
                (Method::GET, u, auth, None)
            }
        };
        let host = realm_host.clone();
        let _permit = self.inner.limits.acquire(&host).await;
        let mut rb = ctx.client.request(method, url);
        if let Some(a) = authorization {
            rb = rb.header(AUTHORIZATION, a);
        }
        if let Some(body) = body {
            rb = rb
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                self.inner.metrics.observe(&host, None);
                let (mut err, _) = classify_transport(ctx, &host, &e);
                err = ctx.err(err.kind(), format!("token service: {}", err.detail()));
                return Err(err);
            }
        };
        let status = resp.status();
        self.inner.metrics.observe(&host, Some(status.as_u16()));
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(ctx.err(
                ScanErrorKind::AuthenticationFailed,
                format!(
                    "the token service at {realm_host} refused {} (HTTP {})",
                    if sends_credential {
                        "the credentials"
                    } else {
                        "anonymous access"
                    },
                    status.as_u16()
                ),
            ));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ctx.err(
                ScanErrorKind::RateLimited,
                format!("the token service at {realm_host} answered 429"),
            ));
        }
        if !status.is_success() {
            return Err(ctx.err(
                ScanErrorKind::RegistryError,
                format!(
                    "the token service at {realm_host} answered HTTP {}",
                    status.as_u16()
                ),
            ));
        }
        let body = read_limited(ctx, resp, 1 << 20).await?;
        parse_token_answer(&body)
            .map_err(|e| {
                ctx.err(
                    ScanErrorKind::Malformed,
                    format!("the token service at {realm_host} sent invalid JSON: {e}"),
                )
            })?
            .ok_or_else(|| {
                ctx.err(
                    ScanErrorKind::Malformed,
                    format!("the token service at {realm_host} sent no token"),
                )
            })
    }
}

/// A token service's answer: the token and how long it may be used, or `None` when it
/// holds none.
pub(crate) fn parse_token_answer(
    body: &[u8],
) -> Result<Option<(String, Duration)>, serde_json::Error> {
    serde_json::from_slice::<TokenResponse>(body).map(TokenResponse::into_token)
}

/// The distribution spec's token lifetime when the service does not say.
pub(super) const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// The token service's answer.
#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    fn into_token(self) -> Option<(String, Duration)> {
        let token = self.token.filter(|t| !t.is_empty()).or(self.access_token)?;
        let lifetime = self.expires_in.map_or(DEFAULT_TOKEN_LIFETIME, |secs| {
            Duration::from_secs(secs.max(1))
        });
        Some((token, lifetime))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn internal_addresses_are_told_from_public_ones_and_names() {
        for internal in [
            "https://127.0.0.1:5000/token",
            "http://169.254.169.254/latest",
            "https://10.1.2.3/t",
            "https://172.16.0.1/t",
            "https://192.168.1.1/t",
            "https://[::1]/t",
            "https://[fe80::1]/t",
            "https://[fd00:ec2::254]/t",
            "https://[::ffff:127.0.0.1]/t",
            "https://0.0.0.0/t",
            "https://0x7f.1/t",
        ] {
            assert!(is_internal_ip(&Url::parse(internal).unwrap()), "{internal}");
        }
        for public in [
            "https://auth.docker.io/token",
            "https://localhost/token",
            "https://8.8.8.8/t",
            "https://[2001:db8::1]/t",
        ] {
            assert!(!is_internal_ip(&Url::parse(public).unwrap()), "{public}");
        }
    }

    use super::*;

    #[test]
    fn tokens_default_to_sixty_seconds_and_accept_access_token() {
        let r: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(r.into_token(), Some(("a".into(), Duration::from_secs(60))));
        let r: TokenResponse = serde_json::from_str(r#"{"token":"t","expires_in":300}"#).unwrap();
        assert_eq!(r.into_token(), Some(("t".into(), Duration::from_secs(300))));
        let r: TokenResponse = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(r.into_token(), None);
    }
}
