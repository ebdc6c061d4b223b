//! The stock quinn server of `userspace/examples/quinn_server.rs` on quixd's socket
//! (`quixd::quinn_socket`), per backend (socket and io_uring on loopback, xdp between two
//! network namespaces), against a real quinn client:
//!
//! - a multi-MB download and upload checked byte for byte, many concurrent connections, a
//!   client whose port changes under its connection;
//! - Retry: with `--retry` the server answers every connection attempt whose address is not
//!   validated with a Retry; clients on fresh endpoints connect and transfer data intact, and
//!   the example's counters show a Retry sent for each connection and every connection
//!   accepted with a validated address (`run_retry_client`);
//! - session resumption and 0-RTT: one client endpoint (one rustls session cache, early data
//!   on) connects three times; the first leaves session tickets, the next two each resume
//!   from one (a ticket taken, `Connecting::into_0rtt` succeeds), send their request as 0-RTT
//!   data before the handshake completes, the server accepts it (`ZeroRttAccepted` is true)
//!   and the echo comes back intact (`run_0rtt_client`); against the server with `--no-0rtt`
//!   the client still resumes but cannot send 0-RTT (socket backend only: it checks the
//!   check);
//!
//! then the backend's ledger balanced once the endpoint is dropped, and a clear error when a
//! backend cannot start. And the stock h3 + h3-quinn server of `userspace/examples/h3_server.rs`
//! on the same socket against the h3 client: concurrent GETs and a large response intact, a
//! 404.
//!
//!     cargo test -p quixd --test quinn_socket
//!     QUIXD_REQUIRE_PRIVILEGED=1 cargo test -p quixd --test quinn_socket xdp
//!
//! Server and client run in this process, each on a runtime of its own on its own thread (in
//! its network namespace for xdp: two namespaces joined by veth, removed even on failure).

// Namespaces and AF_XDP: Linux only (the example itself builds on every Unix).
#![cfg(target_os = "linux")]

#[path = "../support/netns.rs"]
mod netns;

// The h3 example includes the quinn one (`quinn_server.rs`): one copy of each.
#[allow(dead_code)]
#[path = "../../userspace/examples/h3_server.rs"]
mod h3_example;

use h3_example::quinn_server as example;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quixd::config::Backend;
use quixd::quinn_socket::{CloseReport, QuixdSocketBuilder};
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore};
use rustls::pki_types::{CertificateDer, ServerName};

use netns::TestNet;

/// Every test gives up after this long.
const LIMIT: Duration = Duration::from_secs(90);
const DOWNLOAD: u64 = 8 << 20;
const UPLOAD: usize = 2 << 20;
const CONNECTIONS: usize = 40;
/// Client port changes under one connection.
const REBINDS: usize = 4;
/// Connections retried at once, each from a client endpoint of its own.
const RETRIED: u64 = 4;
/// Connections resumed (with 0-RTT data) after the first, full one.
const RESUMED: usize = 2;
/// The request a resumed connection sends as 0-RTT data: small enough for the client's first
/// congestion window (about 12 KB), so quinn can send it all before the handshake completes.
const EARLY_UPLOAD: usize = 8 * 1024;

/// Which example server runs.
#[derive(Clone, Copy)]
enum App {
    /// `quinn_server.rs` with its options: stock quinn streams.
    Quinn(example::Options),
    /// `h3_server.rs`: stock h3 + h3-quinn.
    H3,
}

/// The quinn example as it runs by default (0-RTT accepted, no Retry).
const QUINN: App = App::Quinn(example::Options {
    retry: false,
    zero_rtt: true,
});
/// With `--retry`.
const QUINN_RETRY: App = App::Quinn(example::Options {
    retry: true,
    zero_rtt: true,
});
/// With `--no-0rtt`.
const QUINN_NO_0RTT: App = App::Quinn(example::Options {
    retry: false,
    zero_rtt: false,
});

/// What a client is given: the server's address and certificate, and the example's counters
/// (what the server did: Retries sent, connections accepted).
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    counters: Arc<example::Counters>,
}

/// A client: runs against the server, panics on anything wrong.
type Client = fn(Target);

/// A server running the example on `builder`'s socket, on its own thread (in `ns`).
struct Server {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    counters: Arc<example::Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<CloseReport>>>,
}

impl Server {
    fn start_app(
        app: App,
        builder: QuixdSocketBuilder,
        ns: Option<String>,
    ) -> Result<Self, String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let counters = Arc::new(example::Counters::default());
        let serve_counters = counters.clone();
        let thread = std::thread::spawn(move || {
            if let Some(ns) = &ns {
                TestNet::enter(ns);
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let close = runtime.block_on(async {
                let socket = match builder.open() {
                    Ok(socket) => socket,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e}")));
                        return None;
                    }
                };
                let close = socket.close_watch();
                let (config, cert) = match app {
                    App::Quinn(options) => example::server_config(&options),
                    App::H3 => h3_example::server_config(),
                }
                .expect("server config");
                let endpoint = example::endpoint(socket, config).expect("endpoint");
                let addr = endpoint.local_addr().expect("local addr");
                let _ = ready_tx.send(Ok((addr, cert)));
                let serving = match app {
                    App::Quinn(options) => {
                        tokio::spawn(example::serve(endpoint.clone(), options, serve_counters))
                    }
                    App::H3 => tokio::spawn(h3_example::serve(endpoint.clone())),
                };
                let _ = stop_rx.await;
                endpoint.close(0u32.into(), b"done");
                let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle()).await;
                drop(endpoint);
                let _ = serving.await;
                Some(close)
            });
            // Dropping the runtime drops the tasks still holding the socket.
            drop(runtime);
            close.and_then(|c| c.wait(Duration::from_secs(10)))
        });
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok((addr, cert))) => Ok(Self {
                addr,
                cert,
                counters,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(e) => panic!("the server did not start: {e}"),
        }
    }

    /// What a client needs to reach it.
    fn target(&self) -> Target {
        Target {
            addr: self.addr,
            cert: self.cert.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Stops the server and returns the socket's close report.
    fn stop(mut self) -> CloseReport {
        let _ = self.stop.take().expect("running").send(());
        let thread = self.thread.take().expect("running");
        thread
            .join()
            .expect("server thread")
            .expect("the socket closed and reported")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn client_endpoint(cert: &CertificateDer<'static>, v6: bool) -> quinn::Endpoint {
    client_endpoint_alpn(cert, v6, example::ALPN)
}

fn client_endpoint_alpn(cert: &CertificateDer<'static>, v6: bool, alpn: &[u8]) -> quinn::Endpoint {
    client_endpoint_tls(client_tls(cert, alpn), v6)
}

/// A TLS 1.3 client config trusting `cert`, speaking `alpn`, with rustls' defaults otherwise
/// (an in-memory session cache; no early data).
fn client_tls(cert: &CertificateDer<'static>, alpn: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("trust the test cert");
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls
}

/// A client endpoint on the wildcard address of the family whose connections use `tls`.
fn client_endpoint_tls(tls: rustls::ClientConfig, v6: bool) -> quinn::Endpoint {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let bind: SocketAddr = if v6 {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    let mut endpoint = quinn::Endpoint::client(bind).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// One request on a new stream: uploads `upload`, asks for `download` bytes; checks both.
async fn exchange(conn: &quinn::Connection, upload: &[u8], download: u64) {
    let recv = request(conn, upload, download).await;
    check_response(recv, upload, download).await;
}

/// Sends a request on a new stream: `download` then `upload`, and finishes the stream.
/// Returns the stream's receiving half.
async fn request(conn: &quinn::Connection, upload: &[u8], download: u64) -> quinn::RecvStream {
    let (mut send, recv) = conn.open_bi().await.expect("open a stream");
    send.write_all(&download.to_be_bytes()).await.unwrap();
    send.write_all(upload).await.unwrap();
    send.finish().unwrap();
    recv
}

/// Reads the response to `request(_, upload, download)`: the echo of `upload`, then
/// `download` bytes of the pattern; checks both.
async fn check_response(mut recv: quinn::RecvStream, upload: &[u8], download: u64) {
    let got = recv
        .read_to_end(upload.len() + download as usize)
        .await
        .expect("read the response");
    assert_eq!(
        got.len(),
        upload.len() + download as usize,
        "response length"
    );
    assert!(got[..upload.len()] == *upload, "the echo differs");
    let bad = got[upload.len()..]
        .iter()
        .enumerate()
        .find(|(i, b)| **b != example::pattern(*i as u64));
    assert!(
        bad.is_none(),
        "download differs at byte {:?}",
        bad.map(|b| b.0)
    );
}

/// Runs a client's `work` on a runtime of its own, within `LIMIT`.
fn block_on_client(what: &str, work: impl Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(LIMIT, work)
            .await
            .unwrap_or_else(|_| panic!("{what} took too long"))
    });
}

/// The client's part: one multi-MB exchange, then many connections at once.
fn run_client(target: Target) {
    let (server, cert) = (target.addr, target.cert);
    block_on_client("the client", async move {
        let endpoint = client_endpoint(&cert, server.is_ipv6());
        let conn = endpoint
            .connect(server, "localhost")
            .unwrap()
            .await
            .expect("connect");
        let upload: Vec<u8> = (0..UPLOAD).map(|i| (i * 7 % 256) as u8).collect();
        exchange(&conn, &upload, DOWNLOAD).await;
        conn.close(0u32.into(), b"done");

        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..CONNECTIONS {
            let endpoint = endpoint.clone();
            tasks.spawn(async move {
                let conn = endpoint
                    .connect(server, "localhost")
                    .unwrap()
                    .await
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                let upload = vec![i as u8; 1000 + i];
                exchange(&conn, &upload, 20_000).await;
                exchange(&conn, b"again", 100).await;
                conn.close(0u32.into(), b"done");
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("a connection failed");
        }

        // NAT rebinding: the client's port changes under one connection, four times; the
        // server (quinn on quixd's socket) follows it (path validation both ways).
        let conn = endpoint
            .connect(server, "localhost")
            .unwrap()
            .await
            .expect("connect before rebinding");
        exchange(&conn, b"before", 10_000).await;
        for r in 0..REBINDS {
            let bind = SocketAddr::new(endpoint.local_addr().unwrap().ip(), 0);
            let socket = std::net::UdpSocket::bind(bind).expect("a new client port");
            endpoint.rebind(socket).expect("rebind");
            exchange(&conn, format!("rebind {r}").as_bytes(), 50_000).await;
        }
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
    });
}

/// Retry, against the server with `--retry`: `RETRIED` clients at once, each on an endpoint of
/// its own (so none holds a NEW_TOKEN from an earlier connection), connect and exchange data,
/// checked byte for byte. The example's counters must show a Retry sent for each connection
/// and each accepted with a validated address (the Retry's token): without Retries, both
/// fail. (A client's Initial retransmitted before the Retry reached it is retried again, so
/// the Retries are counted as at least one per connection.)
fn run_retry_client(target: Target) {
    block_on_client("the retry client", async move {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..RETRIED {
            let target = target.clone();
            tasks.spawn(async move {
                let endpoint = client_endpoint(&target.cert, target.addr.is_ipv6());
                let conn = endpoint
                    .connect(target.addr, "localhost")
                    .unwrap()
                    .await
                    .unwrap_or_else(|e| panic!("retried connection {i}: {e}"));
                let upload: Vec<u8> = (0..64 * 1024 + i as usize)
                    .map(|b| (b as u64 * 3 + i) as u8)
                    .collect();
                exchange(&conn, &upload, 1 << 20).await;
                exchange(&conn, b"again", 1000).await;
                conn.close(0u32.into(), b"done");
                endpoint.wait_idle().await;
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("a retried connection failed");
        }
        let (retries, accepted, validated) = target.counters.get();
        eprintln!("{retries} Retries sent, {accepted} connections accepted, {validated} validated");
        assert!(
            retries >= RETRIED,
            "{retries} Retries sent for {RETRIED} connections"
        );
        assert_eq!(
            (accepted, validated),
            (RETRIED, RETRIED),
            "(connections accepted, of which with a validated address)"
        );
    });
}

/// The client's rustls session cache, counting the TLS 1.3 session tickets stored (sent by
/// the server after a handshake) and taken (to resume a session).
#[derive(Debug)]
struct TicketStore {
    cache: ClientSessionMemoryCache,
    stored: tokio::sync::watch::Sender<usize>,
    taken: AtomicUsize,
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        self.cache.set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.cache.kx_hint(server_name)
    }

    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.cache.set_tls12_session(server_name, value)
    }

    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.cache.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.cache.remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.cache.insert_tls13_ticket(server_name, value);
        self.stored.send_modify(|n| *n += 1);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        let ticket = self.cache.take_tls13_ticket(server_name);
        if ticket.is_some() {
            self.taken.fetch_add(1, Ordering::Relaxed);
        }
        ticket
    }
}

/// Session resumption and 0-RTT, against the server as it runs by default.
fn run_0rtt_client(target: Target) {
    block_on_client("the 0-RTT client", resumption(target, true));
}

/// The same client against the server with `--no-0rtt`: it resumes, but 0-RTT is refused.
fn run_no_0rtt_client(target: Target) {
    block_on_client("the client without 0-RTT", resumption(target, false));
}

/// One client endpoint, its rustls session cache kept (`TicketStore`) and early data on,
/// connects `1 + RESUMED` times, one connection after the other. The first is a full
/// handshake (no ticket yet, so no 0-RTT) and leaves session tickets. Each later one waits for
/// a ticket it has not used, takes it to resume (counted), and, when the server accepts early
/// data (`zero_rtt`), gets its connection at once from `into_0rtt` (which succeeds only with a
/// resumable ticket that allows early data), sends its request on it before the handshake
/// completes, and requires the server to accept that 0-RTT data (`ZeroRttAccepted` resolves
/// true) and the echo and download to come back intact. Without `zero_rtt`, `into_0rtt` must
/// fail and the request goes once connected.
async fn resumption(target: Target, zero_rtt: bool) {
    let (stored_tx, mut stored) = tokio::sync::watch::channel(0usize);
    let store = Arc::new(TicketStore {
        cache: ClientSessionMemoryCache::new(32),
        stored: stored_tx,
        taken: AtomicUsize::new(0),
    });
    let mut tls = client_tls(&target.cert, example::ALPN);
    tls.enable_early_data = true;
    tls.resumption = rustls::client::Resumption::store(store.clone());
    let endpoint = client_endpoint_tls(tls, target.addr.is_ipv6());
    for round in 0..=RESUMED {
        if round > 0 {
            // Tickets come after the handshake, in their own CRYPTO frames: wait for one.
            let taken = store.taken.load(Ordering::Relaxed);
            tokio::time::timeout(Duration::from_secs(10), stored.wait_for(|n| *n > taken))
                .await
                .unwrap_or_else(|_| {
                    panic!("no session ticket from the server for connection {round}")
                })
                .expect("the ticket store is alive");
        }
        let connecting = endpoint.connect(target.addr, "localhost").expect("connect");
        // The ClientHello is built: it offered a ticket if the cache held one.
        assert_eq!(
            store.taken.load(Ordering::Relaxed),
            round,
            "connection {round}: tickets taken to resume"
        );
        let upload: Vec<u8> = (0..EARLY_UPLOAD).map(|i| (i * 13 + round) as u8).collect();
        let download = 256 * 1024;
        let conn = match connecting.into_0rtt() {
            Ok((conn, accepted)) => {
                assert!(round > 0, "a client without a ticket offered 0-RTT");
                assert!(
                    zero_rtt,
                    "0-RTT offered with a ticket that allows no early data"
                );
                let recv = request(&conn, &upload, download).await;
                assert!(
                    accepted.await,
                    "connection {round}: the server rejected the 0-RTT data"
                );
                check_response(recv, &upload, download).await;
                conn
            }
            Err(connecting) => {
                assert!(
                    round == 0 || !zero_rtt,
                    "connection {round} resumed but cannot send 0-RTT data"
                );
                let conn = connecting.await.expect("handshake");
                exchange(&conn, &upload, download).await;
                conn
            }
        };
        conn.close(0u32.into(), b"done");
    }
    endpoint.wait_idle().await;
    eprintln!(
        "{} session tickets stored, {} taken to resume",
        *stored.borrow(),
        store.taken.load(Ordering::Relaxed)
    );
}

fn check_report(report: &CloseReport, backend: &str) {
    assert_eq!(report.backend, backend);
    assert!(report.balanced, "ledger not balanced at close: {report:?}");
    assert!(
        report.counter("quinn_rx_delivered") > 0,
        "nothing received: {report:?}"
    );
    assert!(report.counter("quinn_tx_transmits") > 0, "{report:?}");
    if backend == "xdp" {
        // One frame per payload, and the backend takes no more per receive than quinn lends
        // buffers for: nothing waits in the stash for a second copy.
        assert_eq!(report.counter("quinn_rx_stashed"), 0, "{report:?}");
    }
    eprintln!("{backend} close report: {report:?}");
}

/// `app` on `backend` over loopback against `client`; checks the close report.
fn loopback_case(app: App, backend: Backend, name: &str, client: Client) {
    let builder = QuixdSocketBuilder::new(backend, ["127.0.0.1:0".parse().unwrap()]);
    let server = Server::start_app(app, builder, None).expect("the server starts");
    let target = server.target();
    let client = std::thread::spawn(move || client(target));
    let result = client.join();
    let report = server.stop();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    check_report(&report, name);
}

#[test]
fn socket_on_loopback() {
    loopback_case(QUINN, Backend::Socket, "socket", run_client);
}

#[test]
fn io_uring_on_loopback() {
    loopback_case(QUINN, Backend::IoUring, "io_uring", run_client);
}

#[test]
fn retry_on_socket() {
    loopback_case(QUINN_RETRY, Backend::Socket, "socket", run_retry_client);
}

#[test]
fn retry_on_io_uring() {
    loopback_case(QUINN_RETRY, Backend::IoUring, "io_uring", run_retry_client);
}

#[test]
fn resumption_and_0rtt_on_socket() {
    loopback_case(QUINN, Backend::Socket, "socket", run_0rtt_client);
}

#[test]
fn resumption_and_0rtt_on_io_uring() {
    loopback_case(QUINN, Backend::IoUring, "io_uring", run_0rtt_client);
}

/// The check of the 0-RTT tests fails when it should: against a server that allows no early
/// data, the same client resumes but cannot send 0-RTT (`run_0rtt_client` would panic).
#[test]
fn no_0rtt_when_the_server_allows_no_early_data() {
    loopback_case(QUINN_NO_0RTT, Backend::Socket, "socket", run_no_0rtt_client);
}

/// The xdp backend on the server's veth (driver mode, SKB as fallback), the client in its own
/// namespace, veth's checksum offload left on as a container has it. Transmits through AF_XDP
/// frames (one per segment), over IPv4 and IPv6, and through the guard socket (`auto` in copy
/// mode).
#[test]
fn xdp_in_netns() {
    if !netns::privileged("xdp_in_netns") {
        return;
    }
    for (v6, transmit) in [(false, "af_xdp"), (true, "af_xdp"), (false, "auto")] {
        let report = xdp_case(QUINN, v6, transmit, run_client);
        check_report(&report, "xdp");
        assert!(report.counter("rx_datagrams") > 0, "{report:?}");
        if transmit == "af_xdp" {
            assert!(
                report.counter("tx_frames") > 1000,
                "sent through AF_XDP frames: {report:?}"
            );
        } else {
            assert!(report.counter("kernel_tx_transmits") > 0, "{report:?}");
        }
    }
}

#[test]
fn xdp_on_a_missing_interface_is_a_clear_error() {
    let builder = QuixdSocketBuilder::new(Backend::Xdp, ["127.0.0.1:0".parse().unwrap()])
        .xdp_interface("qxnope0");
    let text = open_error(builder);
    assert!(
        text.contains("backend `xdp` cannot start") && text.contains("qxnope0"),
        "{text}"
    );
}

#[test]
fn xdp_without_an_interface_is_a_clear_error() {
    let builder = QuixdSocketBuilder::new(Backend::Xdp, ["127.0.0.1:0".parse().unwrap()]);
    let text = open_error(builder);
    assert!(text.contains("[xdp] table"), "{text}");
}

/// The error `builder.open()` gives (inside a runtime, as it must be); panics if it opens.
fn open_error(builder: QuixdSocketBuilder) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(async { builder.open() }) {
        Ok(socket) => panic!("opened {socket:?}, expected an error"),
        Err(e) => e.to_string(),
    }
}

/// RIO is Windows' (tests/windows.rs runs the example's Windows build under Wine).
#[test]
fn rio_off_windows_is_a_clear_error() {
    let builder = QuixdSocketBuilder::new(Backend::Rio, ["127.0.0.1:0".parse().unwrap()]);
    let text = open_error(builder);
    assert!(
        text.contains("backend `rio` cannot start") && text.contains("needs Windows"),
        "{text}"
    );
}

/// Retry on the xdp backend, over IPv4 and IPv6, transmitting through AF_XDP frames.
#[test]
fn retry_on_xdp_in_netns() {
    xdp_af_xdp_cases("retry_on_xdp_in_netns", QUINN_RETRY, run_retry_client);
}

/// Session resumption and 0-RTT on the xdp backend, over IPv4 and IPv6, transmitting through
/// AF_XDP frames.
#[test]
fn resumption_and_0rtt_on_xdp_in_netns() {
    xdp_af_xdp_cases(
        "resumption_and_0rtt_on_xdp_in_netns",
        QUINN,
        run_0rtt_client,
    );
}

/// `xdp_case` over IPv4 then IPv6 with `transmit = "af_xdp"`, for the privileged `test`;
/// checks each close report.
fn xdp_af_xdp_cases(test: &str, app: App, client: Client) {
    if !netns::privileged(test) {
        return;
    }
    for v6 in [false, true] {
        let report = xdp_case(app, v6, "af_xdp", client);
        check_report(&report, "xdp");
        assert!(report.counter("rx_datagrams") > 0, "{report:?}");
        assert!(
            report.counter("tx_frames") > 0,
            "sent through AF_XDP frames: {report:?}"
        );
    }
}

/// HTTP/3 GETs through the h3 client: `H3_REQUESTS` concurrent ones of various sizes and one
/// of `H3_LARGE` bytes, each body checked byte for byte, and a 404.
fn run_h3_client(target: Target) {
    let (server, cert) = (target.addr, target.cert);
    const H3_REQUESTS: u64 = 32;
    const H3_LARGE: u64 = 4 << 20;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let work = async {
            let endpoint = client_endpoint_alpn(&cert, server.is_ipv6(), b"h3");
            let conn = endpoint
                .connect(server, "localhost")
                .expect("connect")
                .await
                .expect("handshake");
            let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
                .await
                .expect("h3 client");
            let drive = tokio::spawn(async move {
                let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            });
            let get = |mut send: h3::client::SendRequest<h3_quinn::OpenStreams, bytes::Bytes>,
                       path: String| async move {
                let req = http::Request::get(format!("https://localhost{path}"))
                    .body(())
                    .unwrap();
                let mut stream = send.send_request(req).await.expect("send_request");
                stream.finish().await.expect("finish");
                let resp = stream.recv_response().await.expect("response");
                let mut body = Vec::new();
                while let Some(chunk) = stream.recv_data().await.expect("data") {
                    use bytes::Buf;
                    body.extend_from_slice(chunk.chunk());
                }
                (resp.status().as_u16(), body)
            };
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..H3_REQUESTS {
                let size = 1000 + i * 3001;
                let send = send.clone();
                tasks.spawn(async move { (size, get(send, format!("/{size}")).await) });
            }
            tasks.spawn({
                let send = send.clone();
                async move { (H3_LARGE, get(send, format!("/{H3_LARGE}")).await) }
            });
            while let Some(r) = tasks.join_next().await {
                let (size, (status, body)) = r.expect("a request failed");
                assert_eq!(status, 200, "GET /{size}");
                assert_eq!(body.len() as u64, size, "GET /{size}: length");
                assert!(
                    body.iter()
                        .enumerate()
                        .all(|(i, &b)| b == example::pattern(i as u64)),
                    "GET /{size}: content"
                );
            }
            let (status, _) = get(send.clone(), "/missing".into()).await;
            assert_eq!(status, 404);
            drop(send);
            drive.abort();
            endpoint.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
        };
        tokio::time::timeout(LIMIT, work)
            .await
            .expect("the h3 client took too long");
    });
}

#[test]
fn h3_on_socket() {
    loopback_case(App::H3, Backend::Socket, "socket", run_h3_client);
}

#[test]
fn h3_on_io_uring() {
    loopback_case(App::H3, Backend::IoUring, "io_uring", run_h3_client);
}

/// `app` on the xdp backend on the server's veth (driver mode, SKB as fallback) with
/// `xdp.transmit = transmit`, `client` in its own namespace, veth's checksum offload left on as
/// a container has it; returns the socket's close report.
fn xdp_case(app: App, v6: bool, transmit: &str, client: Client) -> CloseReport {
    let net = TestNet::new();
    let listen = SocketAddr::new(net.server_ip(v6), 0);
    let table = format!(
        "interface = \"{}\"\ntransmit = \"{transmit}\"",
        net.server_if
    );
    let xdp: quixd::config::Xdp = toml::from_str(&table).expect("[xdp] table");
    let builder = QuixdSocketBuilder::new(Backend::Xdp, [listen]).xdp(xdp);
    let server =
        Server::start_app(app, builder, Some(net.server_ns.clone())).expect("the server starts");
    let target = server.target();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        net.in_client(move || client(target))
    }));
    let report = server.stop();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    report
}

#[test]
fn h3_on_xdp_in_netns() {
    if !netns::privileged("h3_on_xdp_in_netns") {
        return;
    }
    let report = xdp_case(App::H3, false, "af_xdp", run_h3_client);
    check_report(&report, "xdp");
    assert!(report.counter("tx_frames") > 1000, "{report:?}");
}
