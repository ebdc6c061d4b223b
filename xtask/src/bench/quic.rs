//! QUIC settings shared by every server and the load generator: one certificate, one cipher
//! (TLS_AES_128_GCM_SHA256, ring), the transport settings of quixd's config.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{TransportConfig, VarInt};
use quixd::config::{Config, Transport};
use rustls::pki_types::CertificateDer;

use super::load::Protocol;

pub const ALPN: &[u8] = b"perf";
pub const SERVER_NAME: &str = "localhost";

/// Writes a self-signed ECDSA P-256 certificate for "localhost" to `dir` (cert.pem, key.pem).
pub fn write_cert(dir: &Path) -> Result<()> {
    let cert = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
    std::fs::write(dir.join("cert.pem"), cert.cert.pem())?;
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())?;
    Ok(())
}

pub fn read_cert_der(dir: &Path) -> Result<CertificateDer<'static>> {
    let pem = std::fs::read(dir.join("cert.pem"))?;
    rustls_pemfile_certs(&pem)
}

fn rustls_pemfile_certs(pem: &[u8]) -> Result<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem).context("cert.pem holds no certificate")
}

/// quixd's own transport settings, so the stock-quinn server and the floor run with exactly
/// the same ones.
pub fn server_transport(t: &Transport, gso: bool) -> TransportConfig {
    quixd::driver::quic::transport_config(t, if gso { 2 } else { 1 })
}

/// The quinn-proto server config quixd would build from `config` (same TLS code: quixd's).
pub fn server_config(config: &Config, gso: bool) -> Result<quinn_proto::ServerConfig> {
    let identity = quixd::tls::Identity::from_config(&config.tls)?;
    let sessions = quixd::tls::session_store(&config.transport);
    let tls =
        quixd::tls::server_config(identity, vec![ALPN.to_vec()], &config.transport, sessions)?;
    let crypto = QuicServerConfig::try_from(tls).context("TLS config not usable for QUIC")?;
    let mut server = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(server_transport(&config.transport, gso)));
    Ok(server)
}

pub fn endpoint_config(config: &Config) -> Result<quinn_proto::EndpointConfig> {
    let mut endpoint = quinn_proto::EndpointConfig::default();
    endpoint
        .max_udp_payload_size(config.transport.max_udp_payload_size)
        .context("max_udp_payload_size")?;
    Ok(endpoint)
}

/// The load generator's client config: trusts our certificate, offers only
/// TLS_AES_128_GCM_SHA256 and `protocol`'s ALPN, never resumes (every handshake is a full one),
/// windows and MTU as the server's.
pub fn client_config(
    cert: CertificateDer<'static>,
    t: &Transport,
    protocol: Protocol,
) -> Result<quinn_proto::ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![protocol.alpn().to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    let crypto =
        QuicClientConfig::try_from(tls).context("client TLS config not usable for QUIC")?;
    let mut client = quinn_proto::ClientConfig::new(Arc::new(crypto));
    let mut transport = server_transport(t, true);
    transport.max_concurrent_bidi_streams(VarInt::from_u32(0));
    transport.max_concurrent_uni_streams(VarInt::from_u32(protocol.peer_uni_streams()));
    client.transport_config(Arc::new(transport));
    Ok(client)
}
