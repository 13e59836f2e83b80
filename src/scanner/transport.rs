//! The transport settings of a scan: TLS material (CA bundle, client certificate) and a
//! proxy, as read from Secrets (`certSecretRef`, `proxySecretRef`) and flags. The clients
//! built from them are in `client.rs`.

use std::collections::BTreeMap;
use std::fmt;

/// PEM material for a registry: a CA bundle added to the system roots, and a client
/// certificate and key for mutual TLS.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsMaterial {
    pub ca_pem: Option<Vec<u8>>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert_pem.is_some())
            .field(
                "client_key",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why a Secret's TLS or proxy data cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretDataError {
    #[error(
        "the secret has a client certificate ({cert_key:?}) but no private key; add \"tls.key\" (or \"keyFile\")"
    )]
    CertWithoutKey { cert_key: &'static str },
    #[error(
        "the secret has a private key ({key_key:?}) but no client certificate; add \"tls.crt\" (or \"certFile\")"
    )]
    KeyWithoutCert { key_key: &'static str },
    #[error(
        "the secret has none of the keys \"ca.crt\", \"tls.crt\"/\"tls.key\", \"caFile\", \"certFile\"/\"keyFile\""
    )]
    NoTlsKeys,
    #[error(
        "the proxy secret has no \"address\" key; add the proxy URL, e.g. \"http://proxy:3128\""
    )]
    NoProxyAddress,
    #[error("the proxy secret value {key:?} is not UTF-8")]
    NotUtf8 { key: &'static str },
    #[error("the proxy secret has a \"password\" but no \"username\"")]
    PasswordWithoutUsername,
    #[error("the proxy secret's \"address\": {0}")]
    UnsupportedProxyScheme(UnsupportedProxyScheme),
}

/// The proxy schemes a scan can go through: HTTP CONNECT (`http`, `https`) and SOCKS5,
/// with the registry's name resolved locally (`socks5`) or by the proxy (`socks5h`).
pub const PROXY_SCHEMES: [&str; 4] = ["http", "https", "socks5", "socks5h"];

/// A proxy address whose scheme is not one of [`PROXY_SCHEMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "scheme {scheme:?} is not supported; use http://, https://, socks5:// or socks5h:// (e.g. socks5://proxy.example:1080)"
)]
pub struct UnsupportedProxyScheme {
    pub scheme: String,
}

impl TlsMaterial {
    /// Reads `ca.crt`, `tls.crt`, `tls.key` (Flux v1) or `caFile`, `certFile`, `keyFile`
    /// (the v1beta1 seed). Either a CA, a certificate with its key, or both.
    pub fn from_secret_data(
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<TlsMaterial, SecretDataError> {
        let pick = |a: &'static str, b: &'static str| {
            data.get(a)
                .map(|v| (a, v.clone()))
                .or_else(|| data.get(b).map(|v| (b, v.clone())))
        };
        let ca = pick("ca.crt", "caFile");
        let cert = pick("tls.crt", "certFile");
        let key = pick("tls.key", "keyFile");
        match (&cert, &key) {
            (Some((k, _)), None) => return Err(SecretDataError::CertWithoutKey { cert_key: k }),
            (None, Some((k, _))) => return Err(SecretDataError::KeyWithoutCert { key_key: k }),
            _ => {}
        }
        if ca.is_none() && cert.is_none() {
            return Err(SecretDataError::NoTlsKeys);
        }
        Ok(TlsMaterial {
            ca_pem: ca.map(|(_, v)| v),
            client_cert_pem: cert.map(|(_, v)| v),
            client_key_pem: key.map(|(_, v)| v),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.ca_pem.is_none() && self.client_cert_pem.is_none() && self.client_key_pem.is_none()
    }
}

/// A proxy, as Flux's `proxySecretRef` has it: HTTP(S), through which HTTPS registries
/// are reached with HTTP CONNECT, or SOCKS5 (`socks5://`, `socks5h://`). `username` and
/// `password` go to either kind (Basic proxy authentication, or SOCKS5's
/// username/password method).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyConfig {
    pub address: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl ProxyConfig {
    /// The proxy's URL, `http://` assumed when the address has no scheme (as Flux's
    /// `proxySecretRef` `address` is often written `host:port`).
    pub(crate) fn url(&self) -> String {
        if self.address.contains("://") {
            self.address.clone()
        } else {
            format!("http://{}", self.address)
        }
    }

    /// The address's scheme (`http` when it has none), if a scan can use it.
    pub fn scheme(&self) -> Result<&'static str, UnsupportedProxyScheme> {
        let scheme = match self.address.split_once("://") {
            Some((scheme, _)) => scheme.to_ascii_lowercase(),
            None => "http".to_string(),
        };
        PROXY_SCHEMES
            .into_iter()
            .find(|s| *s == scheme)
            .ok_or(UnsupportedProxyScheme { scheme })
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("address", &redact_url_userinfo(&self.address))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ProxyConfig {
    /// Reads `address` (required), `username` and `password`.
    pub fn from_secret_data(
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<ProxyConfig, SecretDataError> {
        let get = |k: &'static str| -> Result<Option<String>, SecretDataError> {
            data.get(k)
                .map(|v| {
                    String::from_utf8(v.clone())
                        .map(|s| s.trim().to_string())
                        .map_err(|_| SecretDataError::NotUtf8 { key: k })
                })
                .transpose()
        };
        let address = get("address")?
            .filter(|a| !a.is_empty())
            .ok_or(SecretDataError::NoProxyAddress)?;
        let username = get("username")?.filter(|u| !u.is_empty());
        let password = get("password")?.filter(|p| !p.is_empty());
        if username.is_none() && password.is_some() {
            return Err(SecretDataError::PasswordWithoutUsername);
        }
        let proxy = ProxyConfig {
            address,
            username,
            password,
        };
        proxy
            .scheme()
            .map_err(SecretDataError::UnsupportedProxyScheme)?;
        Ok(proxy)
    }
}

/// `http://user:pass@host` -> `http://host` for messages.
pub(crate) fn redact_url_userinfo(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => match s.rsplit_once('@') {
            Some((_, host)) => host.to_string(),
            None => s.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn tls_material_reads_flux_v1_keys() {
        let t = TlsMaterial::from_secret_data(&data(&[
            ("ca.crt", "CA"),
            ("tls.crt", "CERT"),
            ("tls.key", "KEY"),
        ]))
        .unwrap();
        assert_eq!(t.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert_eq!(t.client_cert_pem.as_deref(), Some(&b"CERT"[..]));
        assert_eq!(t.client_key_pem.as_deref(), Some(&b"KEY"[..]));
    }

    #[test]
    fn tls_material_reads_the_seed_keys() {
        let t = TlsMaterial::from_secret_data(&data(&[
            ("caFile", "CA"),
            ("certFile", "CERT"),
            ("keyFile", "KEY"),
        ]))
        .unwrap();
        assert_eq!(t.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert_eq!(t.client_key_pem.as_deref(), Some(&b"KEY"[..]));
        let only_ca = TlsMaterial::from_secret_data(&data(&[("caFile", "CA")])).unwrap();
        assert!(only_ca.client_cert_pem.is_none());
    }

    #[test]
    fn tls_material_refuses_a_certificate_without_its_key() {
        assert_eq!(
            TlsMaterial::from_secret_data(&data(&[("tls.crt", "CERT")])),
            Err(SecretDataError::CertWithoutKey {
                cert_key: "tls.crt"
            })
        );
        assert_eq!(
            TlsMaterial::from_secret_data(&data(&[("keyFile", "KEY")])),
            Err(SecretDataError::KeyWithoutCert { key_key: "keyFile" })
        );
        assert_eq!(
            TlsMaterial::from_secret_data(&data(&[("other", "x")])),
            Err(SecretDataError::NoTlsKeys)
        );
    }

    #[test]
    fn proxy_config_needs_an_address() {
        let p = ProxyConfig::from_secret_data(&data(&[
            ("address", "http://proxy:3128"),
            ("username", "u"),
            ("password", "hunter2"),
        ]))
        .unwrap();
        assert_eq!(p.address, "http://proxy:3128");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert_eq!(
            ProxyConfig::from_secret_data(&data(&[("username", "u")])),
            Err(SecretDataError::NoProxyAddress)
        );
    }

    #[test]
    fn proxy_secrets_take_http_and_socks5_addresses_and_name_the_scheme_they_refuse() {
        for address in [
            "proxy:3128",
            "http://proxy:3128",
            "https://proxy:443",
            "socks5://proxy:1080",
            "SOCKS5H://proxy:1080",
        ] {
            let p = ProxyConfig::from_secret_data(&data(&[("address", address)]));
            assert!(p.is_ok(), "{address}: {p:?}");
        }
        let e = ProxyConfig::from_secret_data(&data(&[("address", "socks4://proxy:1080")]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the proxy secret's \"address\": scheme \"socks4\" is not supported; use http://, https://, socks5:// or socks5h:// (e.g. socks5://proxy.example:1080)"
        );
    }

    #[test]
    fn proxy_addresses_lose_their_credentials_in_messages() {
        assert_eq!(
            redact_url_userinfo("http://u:hunter2@proxy:3128"),
            "http://proxy:3128/"
        );
    }
}
