//! A stock quinn server on one of quixd's datapaths.
//!
//! Everything here is ordinary quinn (0.11, tokio) code but the line that makes the endpoint
//! (`endpoint` below), which hands quinn a `quixd::quinn_socket::QuixdSocket` instead of
//! letting it bind a UDP socket.
//!
//! The protocol, per bidirectional stream: the client sends an 8-byte big-endian length N
//! followed by any payload and finishes the stream; the server answers with the payload
//! (echo) followed by N bytes of `pattern` (download), and finishes.
//!
//! Like quinn's own `ServerConfig::with_single_cert`, it issues TLS session tickets and
//! accepts 0-RTT data from a client that resumes with one (`max_early_data_size = u32::MAX`;
//! `--no-0rtt` turns 0-RTT off, resumption stays). With `--retry` it answers every incoming
//! connection whose address is not validated yet with a Retry (`Incoming::retry`), as quinn's
//! example server does with `--stateless-retry`, and accepts the client when it comes back with
//! the Retry's token. `Counters` counts the Retries it sent and the connections it accepted;
//! it prints them when it stops.
//!
//!     cargo run --example quinn_server -- --backend io_uring --listen 127.0.0.1:4433 --retry
//!     # as root, on an interface (AF_XDP):
//!     cargo run --example quinn_server -- --backend xdp --xdp-interface eth0 --listen 10.0.0.1:4433
//!     # Windows, Registered I/O:
//!     quinn_server.exe --backend rio --listen 0.0.0.0:4433
//!
//! The tests (`tests/quinn_socket`) run it against a quinn client on every Linux backend: bulk
//! and concurrent transfers, a rebinding client, Retry (read from `Counters`), session
//! resumption and 0-RTT data accepted, and 0-RTT refused with `--no-0rtt`; `tests/windows.rs`
//! runs its Windows build under Wine (sockets; Wine has no RIO).

pub use server::*;

/// The ALPN the example speaks.
pub const ALPN: &[u8] = b"quixd-example";

/// Byte `i` of a download.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

mod server {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use quinn::crypto::rustls::QuicServerConfig;
    use quixd::config::Backend;
    use quixd::quinn_socket::{QuixdSocket, QuixdSocketBuilder};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::{pattern, ALPN};

    /// The one line that differs from a stock quinn server (`quinn::Endpoint::server(config,
    /// addr)`): the endpoint runs on quixd's socket. Setting the endpoint's largest UDP payload
    /// to the backend's keeps peers within what an AF_XDP frame holds.
    pub fn endpoint(
        socket: QuixdSocket,
        server_config: quinn::ServerConfig,
    ) -> std::io::Result<quinn::Endpoint> {
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(socket.max_udp_payload_size())
            .map_err(std::io::Error::other)?;
        quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server_config),
            Arc::new(socket),
            Arc::new(quinn::TokioRuntime),
        )
    }

    /// What the server does beyond the defaults (command line: `--retry`, `--no-0rtt`).
    #[derive(Clone, Copy, Debug)]
    pub struct Options {
        /// Answer every incoming connection whose address is not validated yet
        /// (`Incoming::remote_address_validated`) with a Retry; the client comes back with the
        /// Retry's token and is accepted.
        pub retry: bool,
        /// Accept 0-RTT data from a client resuming a session (the default). When false the
        /// server still issues tickets, so clients resume, but they cannot send early data.
        pub zero_rtt: bool,
    }

    impl Default for Options {
        fn default() -> Self {
            Self {
                retry: false,
                zero_rtt: true,
            }
        }
    }

    /// What `serve` did, as it did it.
    #[derive(Debug, Default)]
    pub struct Counters {
        /// Retry packets sent (`Incoming::retry`).
        pub retries: AtomicU64,
        /// Incoming connections accepted.
        pub accepted: AtomicU64,
        /// Of those, the ones whose address was validated when accepted (they brought a token
        /// from a Retry or from an earlier connection's NEW_TOKEN).
        pub accepted_validated: AtomicU64,
    }

    impl Counters {
        /// (retries, accepted, accepted_validated).
        pub fn get(&self) -> (u64, u64, u64) {
            (
                self.retries.load(Ordering::Relaxed),
                self.accepted.load(Ordering::Relaxed),
                self.accepted_validated.load(Ordering::Relaxed),
            )
        }
    }

    /// A self-signed certificate for "localhost" and a server configuration with it.
    pub fn server_config(
        options: &Options,
    ) -> anyhow::Result<(quinn::ServerConfig, CertificateDer<'static>)> {
        let (mut config, cert) = server_config_for(ALPN, options.zero_rtt)?;
        Arc::get_mut(&mut config.transport)
            .expect("not shared yet")
            .max_concurrent_bidi_streams(64u32.into());
        Ok((config, cert))
    }

    /// A self-signed certificate for "localhost" and a server configuration speaking `alpn`,
    /// accepting 0-RTT data if `zero_rtt`. Session tickets are rustls' default: two per
    /// connection, resumed from its in-memory session cache.
    pub fn server_config_for(
        alpn: &[u8],
        zero_rtt: bool,
    ) -> anyhow::Result<(quinn::ServerConfig, CertificateDer<'static>)> {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
        let cert_der = CertificateDer::from(cert.cert);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)?;
        tls.alpn_protocols = vec![alpn.to_vec()];
        // QUIC allows only 0 (no early data) or u32::MAX (as much as flow control permits).
        tls.max_early_data_size = if zero_rtt { u32::MAX } else { 0 };
        let config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
        Ok((config, cert_der))
    }

    /// Accepts connections until the endpoint closes; with `options.retry`, only those whose
    /// address is validated, answering the others with a Retry. Counts both in `counters`.
    pub async fn serve(endpoint: quinn::Endpoint, options: Options, counters: Arc<Counters>) {
        while let Some(incoming) = endpoint.accept().await {
            let validated = incoming.remote_address_validated();
            if options.retry && !validated {
                // Counted before the Retry can leave, so a client never sees it uncounted.
                counters.retries.fetch_add(1, Ordering::Relaxed);
                // Cannot fail here: an address not validated yet may always be retried.
                if let Err(e) = incoming.retry() {
                    counters.retries.fetch_sub(1, Ordering::Relaxed);
                    eprintln!("retry: {e}");
                    e.into_incoming().refuse();
                }
                continue;
            }
            // Counted before the connection is accepted (in the task), as Retries are.
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            if validated {
                counters.accepted_validated.fetch_add(1, Ordering::Relaxed);
            }
            tokio::spawn(async move {
                if let Err(e) = connection(incoming).await {
                    eprintln!("connection: {e}");
                }
            });
        }
    }

    async fn connection(incoming: quinn::Incoming) -> anyhow::Result<()> {
        let conn = incoming.await?;
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(stream) => stream,
                Err(quinn::ConnectionError::ApplicationClosed(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            tokio::spawn(async move {
                if let Err(e) = stream(send, recv).await {
                    eprintln!("stream: {e}");
                }
            });
        }
    }

    async fn stream(
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> anyhow::Result<()> {
        let request = recv.read_to_end(64 << 20).await?;
        anyhow::ensure!(request.len() >= 8, "a request starts with an 8-byte length");
        let (len, payload) = request.split_at(8);
        let len = u64::from_be_bytes(len.try_into()?);
        send.write_all(payload).await?;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < len {
            let n = chunk.len().min((len - sent) as usize);
            for (i, b) in chunk[..n].iter_mut().enumerate() {
                *b = pattern(sent + i as u64);
            }
            send.write_all(&chunk[..n]).await?;
            sent += n as u64;
        }
        send.finish()?;
        // Let the peer read everything before the stream goes.
        let _ = send.stopped().await;
        Ok(())
    }

    /// `--backend B --listen ADDR [--listen ADDR...] [--xdp-interface IF] [--retry]
    /// [--no-0rtt]`.
    pub fn parse_args(args: &[String]) -> anyhow::Result<(QuixdSocketBuilder, Options)> {
        let mut options = Options::default();
        let mut backend = Backend::Socket;
        let mut listen: Vec<SocketAddr> = Vec::new();
        let mut interface = None;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
            };
            match arg.as_str() {
                "--backend" => {
                    backend = match value()?.as_str() {
                        "socket" => Backend::Socket,
                        "io_uring" => Backend::IoUring,
                        "xdp" => Backend::Xdp,
                        "rio" => Backend::Rio,
                        "auto" => Backend::Auto,
                        other => anyhow::bail!("unknown backend {other}"),
                    }
                }
                "--listen" => listen.push(value()?.parse()?),
                "--xdp-interface" => interface = Some(value()?.clone()),
                "--retry" => options.retry = true,
                "--no-0rtt" => options.zero_rtt = false,
                other => anyhow::bail!("unknown argument {other}"),
            }
        }
        if listen.is_empty() {
            listen.push("127.0.0.1:4433".parse()?);
        }
        let builder = QuixdSocketBuilder::new(backend, listen);
        let builder = match interface {
            Some(interface) => builder.xdp_interface(&interface),
            None => builder,
        };
        Ok((builder, options))
    }

    pub fn run_from_args() -> anyhow::Result<()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let (builder, options) = parse_args(&args)?;
        let counters = Arc::new(Counters::default());
        let runtime = tokio::runtime::Runtime::new()?;
        runtime
            .block_on(async {
                let socket = builder.open()?;
                let close = socket.close_watch();
                let (config, _cert) = server_config(&options)?;
                let endpoint = endpoint(socket, config)?;
                println!("serving on {} ({})", endpoint.local_addr()?, args.join(" "));
                tokio::select! {
                    _ = serve(endpoint.clone(), options, counters.clone()) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                endpoint.close(0u32.into(), b"bye");
                endpoint.wait_idle().await;
                drop(endpoint);
                anyhow::Ok(close)
            })
            .map(|close| {
                drop(runtime);
                let (retries, accepted, validated) = counters.get();
                println!(
                    "{retries} retries sent, {accepted} connections accepted \
                     ({validated} with a validated address)"
                );
                if let Some(report) = close.wait(std::time::Duration::from_secs(5)) {
                    println!("closed: ledger balanced = {}", report.balanced);
                }
            })
    }
}

#[allow(dead_code)]
fn main() -> anyhow::Result<()> {
    server::run_from_args()
}
