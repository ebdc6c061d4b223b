//! TLS for QUIC: the certificate chain and key, and the rustls server configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("cannot generate a development certificate: {0}")]
    DevCert(#[from] rcgen::Error),
    #[error("certificate and key are not usable together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Whether this is a generated, self-signed certificate.
    pub self_signed: bool,
}

impl Identity {
    /// The configured files, or a self-signed development certificate when none are given.
    pub fn from_config(tls: &config::Tls) -> Result<Self, TlsError> {
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Self::from_pem_files(cert, key),
            _ => Self::self_signed(&tls.dev_cert_names),
        }
    }

    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let chain = rustls_pemfile::certs(&mut read(cert)?.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Read {
                path: cert.to_owned(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert.to_owned(),
            });
        }
        let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
            .map_err(|source| TlsError::Read {
                path: key.to_owned(),
                source,
            })?
            .ok_or_else(|| TlsError::NoKey {
                path: key.to_owned(),
            })?;
        Ok(Self {
            chain,
            key,
            self_signed: false,
        })
    }

    pub fn self_signed(names: &[String]) -> Result<Self, TlsError> {
        let cert = rcgen::generate_simple_self_signed(names.to_vec())?;
        Ok(Self {
            chain: vec![cert.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
            self_signed: true,
        })
    }
}

/// The rustls server side for QUIC: TLS 1.3 only, ring, our ALPNs, resumption and 0-RTT as
/// configured.
pub fn server_config(
    identity: Identity,
    alpns: Vec<Vec<u8>>,
    transport: &config::Transport,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = alpns;
    if transport.resumption {
        tls.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        tls.send_tls13_tickets = 2;
    } else {
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        tls.send_tls13_tickets = 0;
    }
    // quinn-proto accepts only 0 or u32::MAX here; QUIC bounds 0-RTT data by flow control.
    tls.max_early_data_size = if transport.zero_rtt { u32::MAX } else { 0 };
    Ok(tls)
}

/// A client's TLS settings that accept any server certificate while still checking the
/// handshake signatures: for clients of the development certificate only (the demo, the
/// tests, the benchmarks). Never use it to reach a server whose identity matters: it exists
/// only with the `dev-client` feature, which the tests and xtask turn on.
#[cfg(any(test, feature = "dev-client"))]
pub fn dev_client_config(alpns: &[&str]) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = alpns.iter().map(|a| a.as_bytes().to_vec()).collect();
    tls.enable_early_data = true;
    tls
}

#[cfg(any(test, feature = "dev-client"))]
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<rustls::crypto::CryptoProvider>);

#[cfg(any(test, feature = "dev-client"))]
impl rustls::client::danger::ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
