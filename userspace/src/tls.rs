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

    /// When the leaf certificate expires, as `YYYY-MM-DDTHH:MM:SSZ`, if it can be read.
    pub fn not_after(&self) -> Option<String> {
        not_after(self.chain.first()?)
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

/// Where resumable sessions are kept; shared by the configurations a reload replaces, so a
/// client resumes across a certificate reload.
pub type SessionStore = Arc<dyn rustls::server::StoresServerSessions>;

/// A session store for `transport` (none without resumption).
pub fn session_store(transport: &config::Transport) -> SessionStore {
    if transport.resumption {
        rustls::server::ServerSessionMemoryCache::new(4096)
    } else {
        Arc::new(rustls::server::NoServerSessionStorage {})
    }
}

/// The rustls server side for QUIC: TLS 1.3 only, ring, our ALPNs, resumption (in `sessions`)
/// and 0-RTT as configured.
pub fn server_config(
    identity: Identity,
    alpns: Vec<Vec<u8>>,
    transport: &config::Transport,
    sessions: SessionStore,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = alpns;
    tls.session_storage = sessions;
    tls.send_tls13_tickets = if transport.resumption { 2 } else { 0 };
    // quinn-proto accepts only 0 or u32::MAX here; QUIC bounds 0-RTT data by flow control.
    tls.max_early_data_size = if transport.zero_rtt { u32::MAX } else { 0 };
    Ok(tls)
}

/// The `notAfter` time of a DER certificate, as `YYYY-MM-DDTHH:MM:SSZ`: Certificate ->
/// tbsCertificate -> (optional [0] version, serialNumber, signature, issuer) -> validity.
/// Enough DER for that one field; `None` for anything it does not expect.
pub fn not_after(cert: &[u8]) -> Option<String> {
    /// One TLV at the start of `der`: (tag, contents, rest).
    fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, der) = der.split_first()?;
        let (&first, mut der) = der.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || der.len() < n {
                return None;
            }
            let len = der[..n]
                .iter()
                .fold(0usize, |l, &b| l << 8 | usize::from(b));
            der = &der[n..];
            len
        };
        (der.len() >= len).then(|| (tag, &der[..len], &der[len..]))
    }
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = tlv(certificate)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2; // version
    }
    for _ in 0..3 {
        tbs = tlv(tbs)?.2; // serialNumber, signature, issuer
    }
    let (SEQUENCE, validity, _) = tlv(tbs)? else {
        return None;
    };
    let (tag, time, _) = tlv(tlv(validity)?.2)?;
    let time = std::str::from_utf8(time).ok()?;
    let digits = time.strip_suffix('Z')?;
    let full = match (tag, digits.len()) {
        // UTCTime, YYMMDDHHMMSS: years 50-99 are 19xx (RFC 5280).
        (0x17, 12) => {
            let century = if digits[..2] >= *"50" { "19" } else { "20" };
            format!("{century}{digits}")
        }
        // GeneralizedTime, YYYYMMDDHHMMSS.
        (0x18, 14) => digits.to_owned(),
        _ => return None,
    };
    if !full.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_until(year: i32) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_expiry_in_both_time_forms() {
        // rcgen writes UTCTime before 2050 and GeneralizedTime from then on.
        assert_eq!(
            not_after(&cert_until(2031)).as_deref(),
            Some("2031-05-17T00:00:00Z")
        );
        assert_eq!(
            not_after(&cert_until(2061)).as_deref(),
            Some("2061-05-17T00:00:00Z")
        );
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        let der = cert_until(2031);
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(&der[..40]), None, "truncated");
        assert_eq!(not_after(b"not DER at all"), None);
        let mut bad = der.clone();
        bad[0] = 0x31;
        assert_eq!(not_after(&bad), None, "not a SEQUENCE");
    }
}
