//! Stock quinn: a perf-protocol server on the `quinn` crate (tokio, quinn-udp), with quixd's
//! certificate, TLS code and transport settings, read from the same config file. With
//! `server.backend` other than `socket`, the same server runs on quixd's datapath for that
//! backend (`quixd::quinn_socket`) instead of quinn-udp: what switching the socket alone buys.
//!
//! One current-thread tokio runtime: the process is pinned to one CPU anyway. It serves until
//! killed (SIGTERM's default action).

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use quixd::config::Config;

use super::quic;

/// Same as quixd's socket backend.
const SOCKET_BUFFER_BYTES: libc::c_int = 4 << 20;

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

pub fn run(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    let addr = *config.server.listen.first().context("no listen address")?;
    let server = quic::server_config(&config, true)?;
    let endpoint_config = quic::endpoint_config(&config)?;
    let retry = config.transport.retry;
    if config.server.backend != quixd::config::Backend::Socket {
        return run_on_quixd(&config, server, endpoint_config, retry);
    }
    let socket = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a valid socket fd and a c_int option value.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &SOCKET_BUFFER_BYTES as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        eprintln!("listening addr={addr} (stock quinn)");
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let _ = connection(incoming, retry).await;
            });
        }
        Ok(())
    })
}

/// The same server on `quixd::quinn_socket` over the configured backend.
fn run_on_quixd(
    config: &Config,
    server: quinn::ServerConfig,
    mut endpoint_config: quinn::EndpointConfig,
    retry: bool,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let socket = quixd::quinn_socket::QuixdSocketBuilder::from_config(config)
            .open()
            .context("opening quixd's datapath as quinn's socket")?;
        endpoint_config.max_udp_payload_size(socket.max_udp_payload_size())?;
        let backend = socket.backend();
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server),
            Arc::new(socket),
            Arc::new(quinn::TokioRuntime),
        )?;
        eprintln!(
            "listening addr={} (stock quinn over quixd's {backend} datapath)",
            config.server.listen[0]
        );
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let _ = connection(incoming, retry).await;
            });
        }
        Ok(())
    })
}

async fn connection(incoming: quinn::Incoming, retry: bool) -> Result<()> {
    if retry && !incoming.remote_address_validated() {
        incoming.retry()?;
        return Ok(());
    }
    let conn = incoming.await?;
    loop {
        let (send, recv) = conn.accept_bi().await?;
        tokio::spawn(async move {
            let _ = stream(send, recv).await;
        });
    }
}

/// quinn perf: a big-endian u64 download size, upload bytes to FIN, then that many bytes.
async fn stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<()> {
    let mut header = [0u8; 8];
    let mut have = 0;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        let take = (8 - have).min(chunk.bytes.len());
        header[have..have + take].copy_from_slice(&chunk.bytes[..take]);
        have += take;
    }
    let mut remaining = if have == 8 {
        u64::from_be_bytes(header)
    } else {
        0
    };
    while remaining > 0 {
        let len = remaining.min(ZEROS.len() as u64) as usize;
        send.write_chunk(Bytes::from_static(&ZEROS[..len])).await?;
        remaining -= len as u64;
    }
    send.finish()?;
    Ok(())
}
