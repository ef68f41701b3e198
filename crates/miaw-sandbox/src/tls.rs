//! TLS for browser clients, which insist on https: a self-signed certificate made at start, or
//! certificate and key files.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its key, PEM-encoded.
#[derive(Clone)]
pub struct Identity {
    /// The certificate chain, PEM.
    pub certificate_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A self-signed certificate for `localhost` and `127.0.0.1`.
    pub fn self_signed() -> anyhow::Result<Self> {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .context("generating a self-signed certificate")?;
        Ok(Self {
            certificate_pem: certified.cert.pem(),
            key_pem: certified.key_pair.serialize_pem(),
        })
    }

    /// A certificate and key from PEM files.
    pub fn from_files(certificate: &Path, key: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            certificate_pem: std::fs::read_to_string(certificate)
                .with_context(|| format!("reading the certificate {}", certificate.display()))?,
            key_pem: std::fs::read_to_string(key)
                .with_context(|| format!("reading the key {}", key.display()))?,
        })
    }

    /// The rustls server configuration (ring provider; HTTP/2 or HTTP/1.1 by ALPN).
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let certificates: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.certificate_pem.as_bytes())
                .collect::<Result<_, _>>()
                .context("parsing the certificate PEM")?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .context("parsing the key PEM")?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .context("choosing TLS versions")?
                .with_no_client_auth()
                .with_single_cert(certificates, key)
                .context("loading the certificate")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
