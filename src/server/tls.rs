//! The serving certificate, reloaded when its files change: a resolver that hands out
//! the current certificate and a reloader that swaps it.

use super::ServerError;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tracing::{info, warn};

/// Serves the current certificate; swapped when the files change.
#[derive(Debug)]
pub(super) struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let guard = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(guard.clone())
    }
}

pub(super) struct CertReloader {
    cert_file: PathBuf,
    key_file: PathBuf,
    resolver: Arc<CertResolver>,
    /// The file contents last loaded (or last rejected), to notice changes.
    last: Mutex<(Vec<u8>, Vec<u8>)>,
}

fn read_file(path: &Path, flag: &str) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|e| ServerError::Tls(format!("{flag} {}: {e}", path.display())))
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_file: &Path,
    key_file: &Path,
) -> Result<CertifiedKey, ServerError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            ServerError::Tls(format!(
                "--tls-cert-file {}: not PEM certificates: {e}",
                cert_file.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "--tls-cert-file {}: no CERTIFICATE block found; give a PEM certificate chain, leaf first",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        ServerError::Tls(format!(
            "--tls-key-file {}: no usable PEM private key: {e}",
            key_file.display()
        ))
    })?;
    CertifiedKey::from_der(certs, key, &rustls::crypto::aws_lc_rs::default_provider()).map_err(|e| {
        ServerError::Tls(format!(
            "--tls-cert-file {} and --tls-key-file {}: {e}; give the key that belongs to the certificate",
            cert_file.display(),
            key_file.display()
        ))
    })
}

impl CertReloader {
    pub(super) fn load(cert_file: &Path, key_file: &Path) -> Result<CertReloader, ServerError> {
        let cert = read_file(cert_file, "--tls-cert-file")?;
        let key = read_file(key_file, "--tls-key-file")?;
        let ck = certified_key(&cert, &key, cert_file, key_file)?;
        Ok(CertReloader {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            resolver: Arc::new(CertResolver {
                current: RwLock::new(Arc::new(ck)),
            }),
            last: Mutex::new((cert, key)),
        })
    }

    /// Reloads when either file's content changed. A pair that does not load (a rotation
    /// half-written, a key that does not match) keeps the old certificate in service and
    /// is tried again when the files change again.
    pub(super) fn reload_if_changed(&self) {
        let (Ok(cert), Ok(key)) = (
            std::fs::read(&self.cert_file),
            std::fs::read(&self.key_file),
        ) else {
            return;
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.0 == cert && last.1 == key {
            return;
        }
        match certified_key(&cert, &key, &self.cert_file, &self.key_file) {
            Ok(ck) => {
                *self
                    .resolver
                    .current
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
                info!(cert = %self.cert_file.display(), "serving certificate reloaded");
            }
            Err(e) => {
                warn!(error = %e, "serving certificate changed but does not load; keeping the previous one")
            }
        }
        *last = (cert, key);
    }

    pub(super) fn server_config(&self) -> Result<rustls::ServerConfig, ServerError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ServerError::Tls(format!("TLS configuration: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}
