//! quinn-proto configuration from our config file.

use std::sync::Arc;
use std::time::Duration;

use quinn_proto::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
use quinn_proto::crypto::rustls::QuicServerConfig;
use quinn_proto::{
    EndpointConfig, IdleTimeout, MtuDiscoveryConfig, ServerConfig, TransportConfig, VarInt,
};

use crate::config::{self, Congestion};
use crate::tls::{self, Identity, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("TLS configuration is not usable for QUIC: {0}")]
    QuicTls(String),
    #[error("invalid QUIC setting: {0}")]
    Quic(String),
    #[error("cannot open the document root: {0}")]
    Root(std::io::Error),
    #[error("cannot start the file reader threads: {0}")]
    Files(std::io::Error),
}

pub fn endpoint_config(t: &config::Transport) -> Result<EndpointConfig, SetupError> {
    let mut endpoint = match &t.stateless_reset_key {
        Some(key) => EndpointConfig::new(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &key.0,
        ))),
        // Random at each start.
        None => EndpointConfig::default(),
    };
    endpoint
        .max_udp_payload_size(t.max_udp_payload_size)
        .map_err(|e| SetupError::Quic(format!("max_udp_payload_size: {e}")))?;
    Ok(endpoint)
}

pub fn transport_config(t: &config::Transport, max_tx_segments: usize) -> TransportConfig {
    let mut transport = TransportConfig::default();
    let idle = IdleTimeout::try_from(Duration::from_millis(t.idle_timeout_ms))
        .expect("validated in config");
    transport
        .max_idle_timeout(Some(idle))
        .initial_mtu(t.initial_mtu)
        .max_concurrent_bidi_streams(VarInt::from_u32(t.max_concurrent_bidi_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(t.max_concurrent_uni_streams))
        .stream_receive_window(VarInt::from_u32(t.stream_receive_window))
        .receive_window(VarInt::from_u32(t.receive_window))
        .send_window(t.send_window)
        // Our applications don't use unreliable datagrams.
        .datagram_receive_buffer_size(None)
        .enable_segmentation_offload(max_tx_segments > 1);
    let mut mtud = MtuDiscoveryConfig::default();
    mtud.upper_bound(t.max_udp_payload_size);
    transport.mtu_discovery_config(Some(mtud));
    match t.congestion {
        Congestion::Cubic => {
            transport.congestion_controller_factory(Arc::new(CubicConfig::default()))
        }
        Congestion::NewReno => {
            transport.congestion_controller_factory(Arc::new(NewRenoConfig::default()))
        }
        Congestion::Bbr => transport.congestion_controller_factory(Arc::new(BbrConfig::default())),
    };
    transport
}

/// The TLS side for QUIC from `identity`: what a certificate reload replaces. Sessions live in
/// `sessions`, which outlives reloads.
pub fn crypto(
    identity: Identity,
    transport: &config::Transport,
    alpns: Vec<Vec<u8>>,
    sessions: tls::SessionStore,
) -> Result<Arc<QuicServerConfig>, SetupError> {
    let tls = tls::server_config(identity, alpns, transport, sessions)?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| SetupError::QuicTls(e.to_string()))?;
    Ok(Arc::new(crypto))
}

/// The server side: certificate, ALPNs, transport parameters.
pub fn server_config(
    config: &config::Config,
    transport: &config::Transport,
    alpns: Vec<Vec<u8>>,
    max_tx_segments: usize,
    sessions: tls::SessionStore,
) -> Result<ServerConfig, SetupError> {
    let identity = Identity::from_config(&config.tls)?;
    if identity.self_signed {
        tracing::warn!(
            names = ?config.tls.dev_cert_names,
            "NO CERTIFICATE CONFIGURED: serving a generated self-signed development certificate; \
             clients must skip verification. Set [tls] cert and key for real use."
        );
    } else if let Some(not_after) = identity.not_after() {
        tracing::info!(not_after, "certificate loaded");
    }
    let mut server = ServerConfig::with_crypto(crypto(identity, transport, alpns, sessions)?);
    if let Some(key) = &transport.token_key {
        // Tokens are sealed with a key derived from the configured secret, as quinn-proto
        // derives its random one.
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&key.0);
        server.token_key(Arc::new(prk));
    }
    server.transport_config(Arc::new(transport_config(transport, max_tx_segments)));
    Ok(server)
}
