//! The HTTP clients a scan runs on, built from its transport (CA bundle, client
//! certificate, proxy: see `transport.rs`) and cached, so scans with the same transport
//! share connection pools.
//!
//! - **reqwest** (rustls), one client per transport: the `/v2/` probe, paging, digests
//!   and the hand-written token exchange. Through an HTTP(S) proxy (CONNECT for HTTPS
//!   registries) or a SOCKS5 one, with the proxy's username and password.
//! - **oci-client**, one per transport and scheme: its `Client::auth` token exchange,
//!   configured like the reqwest clients (roots, proxy with its credentials, timeouts,
//!   user agent). Each also keeps, unread, the first credential it was given per registry
//!   and a token per repository (its own caches, which its API cannot clear) until the
//!   cache is emptied.
//!
//! Either cache is emptied when it reaches [`MAX_CLIENTS`] distinct transports, so
//! distinct settings cannot grow it without bound.

use super::error::without_url;
use super::transport::redact_url_userinfo;
use super::{ProxyConfig, ScanContext, ScanError, ScanErrorKind, ScanRequest, ScannerConfig};
use super::{TlsMaterial, scan_error};
use oci_client::client::{CertificateEncoding, ClientConfig, ClientProtocol};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Distinct transports per cache before it is emptied.
const MAX_CLIENTS: usize = 256;
/// oci-client's read timeout in the token exchange (the scan's timeout bounds it too).
const TOKEN_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects followed for one request; credentials never follow one to another origin
/// (reqwest drops `Authorization` when the scheme, host or port changes).
pub(super) const MAX_REDIRECTS: usize = 5;

/// A hash of a transport: CA bundle, client certificate and key, proxy and its
/// credentials.
pub(super) type TransportKey = [u8; 32];

/// The cached clients, shared by every scan.
#[derive(Default)]
pub(super) struct Clients {
    http: Mutex<HashMap<TransportKey, reqwest::Client>>,
    /// By transport and plain HTTP.
    oci: Mutex<HashMap<(TransportKey, bool), oci_client::Client>>,
}

impl Clients {
    /// The pooled reqwest client for the request's transport, built once, and its key.
    pub(super) fn http(
        &self,
        config: &ScannerConfig,
        req: &ScanRequest,
    ) -> Result<(reqwest::Client, TransportKey), ScanError> {
        let key = transport_key(&req.tls, req.proxy.as_ref());
        let client = cached(&self.http, key, || build_http(config, req, &req.tls))?;
        Ok((client, key))
    }

    /// The pooled reqwest client for the request's cloud logins: its proxy, the system
    /// roots only (a registry's CA is not a cloud token service's).
    pub(super) fn cloud(
        &self,
        config: &ScannerConfig,
        req: &ScanRequest,
    ) -> Result<reqwest::Client, ScanError> {
        let tls = TlsMaterial::default();
        let key = transport_key(&tls, req.proxy.as_ref());
        cached(&self.http, key, || build_http(config, req, &tls))
    }

    /// The oci-client client for this transport (CA bundle, proxy) and scheme, built once.
    pub(super) fn oci(
        &self,
        config: &ScannerConfig,
        ctx: &ScanContext<'_>,
        plain_http: bool,
    ) -> Result<oci_client::Client, ScanError> {
        cached(&self.oci, (ctx.client_key, plain_http), || {
            build_oci(config, ctx, plain_http)
        })
    }
}

/// A reqwest client for `tls` (the scan's CA bundle and client certificate) and the
/// scan's proxy.
fn build_http(
    config: &ScannerConfig,
    req: &ScanRequest,
    tls: &TlsMaterial,
) -> Result<reqwest::Client, ScanError> {
    let bad = |detail: String| scan_error(req, ScanErrorKind::InvalidConfig, detail);
    let mut b = reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .connect_timeout(config.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS));
    if let Some(ca) = &tls.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(ca)
            .map_err(|e| bad(format!("the CA certificate is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(bad("the CA data holds no PEM certificate".into()));
        }
        b = b.tls_certs_merge(certs);
    }
    match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(cert), Some(key)) => {
            let mut pem = cert.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                bad(format!(
                    "the client certificate and key are not a valid PEM pair: {e}"
                ))
            })?;
            b = b.identity(id);
        }
        (Some(_), None) => {
            return Err(bad("a client certificate was given without its key".into()));
        }
        (None, Some(_)) => {
            return Err(bad("a client key was given without its certificate".into()));
        }
        (None, None) => {}
    }
    if let Some(proxy) = &req.proxy {
        let address = proxy.url();
        let shown = redact_url_userinfo(&address);
        proxy
            .scheme()
            .map_err(|e| bad(format!("the proxy address {shown:?}: {e}")))?;
        // With the `socks` feature, reqwest speaks SOCKS5 to socks5:// and socks5h://
        // proxies, authenticating with the username and password set here.
        let mut p = reqwest::Proxy::all(address.as_str()).map_err(|e| {
            bad(format!(
                "the proxy address {shown:?} is not a valid URL: {}",
                without_url(&e)
            ))
        })?;
        if let Some(user) = &proxy.username {
            p = p.basic_auth(user, proxy.password.as_deref().unwrap_or(""));
        }
        b = b.proxy(p);
    }
    // Without a proxy setting, reqwest honours HTTPS_PROXY/HTTP_PROXY/NO_PROXY.
    b.build()
        .map_err(|e| bad(format!("cannot build the HTTP client: {}", without_url(&e))))
}

/// An oci-client client with the same roots, proxy, timeouts and user agent as the
/// reqwest clients.
fn build_oci(
    config: &ScannerConfig,
    ctx: &ScanContext<'_>,
    plain_http: bool,
) -> Result<oci_client::Client, ScanError> {
    let bad = |detail: String| ctx.err(ScanErrorKind::InvalidConfig, detail);
    let proxy = ctx
        .req
        .proxy
        .as_ref()
        .map(proxy_url)
        .transpose()
        .map_err(bad)?;
    let client_config = ClientConfig {
        protocol: if plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        extra_root_certificates: ctx
            .req
            .tls
            .ca_pem
            .iter()
            .map(|pem| oci_client::client::Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        platform_resolver: None,
        connect_timeout: Some(config.connect_timeout),
        read_timeout: Some(TOKEN_READ_TIMEOUT),
        user_agent: static_user_agent(&config.user_agent),
        // With a proxy setting, every request goes through it (as with the reqwest
        // clients' `Proxy::all`); without one, reqwest reads HTTPS_PROXY, HTTP_PROXY
        // and NO_PROXY from the environment, for both kinds of client alike.
        https_proxy: proxy.clone(),
        http_proxy: proxy.clone(),
        no_proxy: None,
        ..ClientConfig::default()
    };
    oci_client::Client::try_from(client_config).map_err(|e| {
        let mut detail = format!("cannot build the token client: {e}");
        if let Some(p) = &proxy {
            detail = detail.replace(p.as_str(), "<proxy>");
        }
        if let Some(pw) = ctx
            .req
            .proxy
            .as_ref()
            .and_then(|p| p.password.as_deref())
            .filter(|p| !p.is_empty())
        {
            detail = detail.replace(pw, "<redacted>");
        }
        bad(detail)
    })
}

/// The client under `key`, built by `build` the first time (and again after the map is
/// emptied at [`MAX_CLIENTS`] entries, so distinct settings cannot grow it without bound).
fn cached<K, C, E>(
    clients: &Mutex<HashMap<K, C>>,
    key: K,
    build: impl FnOnce() -> Result<C, E>,
) -> Result<C, E>
where
    K: std::hash::Hash + Eq,
    C: Clone,
{
    if let Some(c) = clients.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    let client = build()?;
    let mut clients = clients.lock().unwrap_or_else(|p| p.into_inner());
    if clients.len() >= MAX_CLIENTS {
        clients.clear();
    }
    clients.insert(key, client.clone());
    Ok(client)
}

fn transport_key(tls: &TlsMaterial, proxy: Option<&ProxyConfig>) -> TransportKey {
    let mut h = Sha256::new();
    for part in [&tls.ca_pem, &tls.client_cert_pem, &tls.client_key_pem] {
        match part {
            Some(p) => {
                h.update((p.len() as u64).to_le_bytes());
                h.update(p);
            }
            None => h.update(u64::MAX.to_le_bytes()),
        }
    }
    match proxy {
        Some(p) => {
            for s in [Some(&p.address), p.username.as_ref(), p.password.as_ref()] {
                match s {
                    Some(s) => {
                        h.update((s.len() as u64).to_le_bytes());
                        h.update(s.as_bytes());
                    }
                    None => h.update(u64::MAX.to_le_bytes()),
                }
            }
        }
        None => h.update(b"no-proxy"),
    }
    h.finalize().into()
}

/// The proxy URL for oci-client's `ClientConfig`: the address (an `http://` scheme added
/// when it has none) with the username and password as percent-encoded userinfo, from
/// which reqwest sends Basic proxy authentication.
fn proxy_url(proxy: &ProxyConfig) -> Result<String, String> {
    let address = proxy.url();
    let shown = redact_url_userinfo(&address);
    let mut url = url::Url::parse(&address)
        .map_err(|e| format!("the proxy address {shown:?} is not a valid URL: {e}"))?;
    if let Some(user) = &proxy.username {
        url.set_username(user)
            .and_then(|()| url.set_password(Some(proxy.password.as_deref().unwrap_or(""))))
            .map_err(|()| format!("the proxy address {shown:?} cannot carry credentials"))?;
    }
    Ok(url.into())
}

/// A `&'static str` for `ClientConfig::user_agent`, leaked once per distinct value.
fn static_user_agent(user_agent: &str) -> &'static str {
    static SEEN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = seen.iter().find(|s| **s == user_agent) {
        return s;
    }
    let leaked: &'static str = Box::leak(user_agent.to_owned().into_boxed_str());
    seen.push(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_credentials_become_percent_encoded_userinfo() {
        let p = ProxyConfig {
            address: "proxy.internal:3128".into(),
            username: Some("team user".into()),
            password: Some("p@ss:w/rd".into()),
        };
        let u = url::Url::parse(&proxy_url(&p).unwrap()).unwrap();
        assert_eq!(u.scheme(), "http");
        assert_eq!(u.host_str(), Some("proxy.internal"));
        assert_eq!(u.port(), Some(3128));
        assert_eq!(u.username(), "team%20user");
        assert_eq!(u.password(), Some("p%40ss%3Aw%2Frd"));

        let anonymous = ProxyConfig {
            address: "https://proxy:443".into(),
            username: None,
            password: None,
        };
        assert_eq!(proxy_url(&anonymous).unwrap(), "https://proxy/");
    }

    #[test]
    fn a_bad_proxy_address_is_named_without_its_password() {
        let p = ProxyConfig {
            address: "http://u:hunter2@[bad".into(),
            username: Some("u".into()),
            password: Some("hunter2".into()),
        };
        let e = proxy_url(&p).unwrap_err();
        assert!(e.contains("not a valid URL"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn user_agents_are_leaked_once_per_value() {
        let a = static_user_agent("image-reflector/test-ua");
        let b = static_user_agent(&String::from("image-reflector/test-ua"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(a, "image-reflector/test-ua");
    }
}
