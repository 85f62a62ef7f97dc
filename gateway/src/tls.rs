//! TLS for listeners with `tls`: rustls with TLS 1.2 and 1.3 only, ALPN `h2` and
//! `http/1.1`, and a certificate that a config reload replaces without touching open
//! connections ([`CertStore`]).

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest as _, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::config::Tls;

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("certificate {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file is unreadable or holds no PEM private key.
    #[error("key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("certificate and key: {0}")]
    Pair(#[from] rustls::Error),
}

/// The certificate a TLS listener presents, replaceable at run time.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<Certified>,
}

impl CertStore {
    /// Presents `certified` to new handshakes from now on.
    pub fn replace(&self, certified: Certified) {
        self.current.store(Arc::new(certified));
    }

    /// The digest of the files the certificate in use was loaded from.
    pub fn files(&self) -> FilesDigest {
        self.current.load().files
    }
}

/// SHA-256 of a certificate file and its key file, to tell renewed files from loaded ones
/// without keeping the key's text.
pub type FilesDigest = [u8; 32];

/// The digest of a certificate file's bytes and its key file's bytes.
pub fn files_digest(cert: &[u8], key: &[u8]) -> FilesDigest {
    Sha256::new()
        .chain_update((cert.len() as u64).to_le_bytes())
        .chain_update(cert)
        .chain_update(key)
        .finalize()
        .into()
}

/// A certificate chain and key that belong together, and the digest of their files.
#[derive(Debug)]
pub struct Certified {
    key: Arc<CertifiedKey>,
    files: FilesDigest,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.load().key))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a listener's certificate chain and key, and checks that they belong together.
pub fn certified_key(tls: &Tls) -> Result<Certified, TlsError> {
    let cert_path = tls.cert.display().to_string();
    let key_path = tls.key.display().to_string();
    let cert_bytes = std::fs::read(&tls.cert).map_err(|err| TlsError::Certificate {
        path: cert_path.clone(),
        reason: err.to_string(),
    })?;
    let key_bytes = std::fs::read(&tls.key).map_err(|err| TlsError::Key {
        path: key_path.clone(),
        reason: err.to_string(),
    })?;
    let certs = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Certificate {
            path: cert_path.clone(),
            reason: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate {
            path: cert_path,
            reason: "no PEM certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|err| TlsError::Key {
        path: key_path,
        reason: err.to_string(),
    })?;
    Ok(Certified {
        key: Arc::new(CertifiedKey::from_der(certs, key, &provider())?),
        files: files_digest(&cert_bytes, &key_bytes),
    })
}

/// Builds the acceptor for a listener, and the store through which a reload replaces its
/// certificate.
pub fn acceptor(tls: &Tls) -> Result<(TlsAcceptor, Arc<CertStore>), TlsError> {
    let store = Arc::new(CertStore {
        current: ArcSwap::from_pointee(certified_key(tls)?),
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&store) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), store))
}
