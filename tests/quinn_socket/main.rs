//! The stock quinn server of `userspace/examples/quinn_server.rs` on quixd's socket
//! (`quixd::quinn_socket`), per backend, against a real quinn client: a multi-MB download and
//! upload checked byte for byte, many concurrent connections, a client whose port changes
//! under its connection, the backend's ledger balanced
//! once the endpoint is dropped, and a clear error when a backend cannot start. And the stock
//! h3 + h3-quinn server of `userspace/examples/h3_server.rs` on the same socket against the h3
//! client: concurrent GETs and a large response intact, a 404.
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quixd::config::Backend;
use quixd::quinn_socket::{CloseReport, QuixdSocketBuilder};
use rustls::pki_types::CertificateDer;

use netns::TestNet;

/// Every test gives up after this long.
const LIMIT: Duration = Duration::from_secs(90);
const DOWNLOAD: u64 = 8 << 20;
const UPLOAD: usize = 2 << 20;
const CONNECTIONS: usize = 40;
/// Client port changes under one connection.
const REBINDS: usize = 4;

/// Which example server runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum App {
    /// `quinn_server.rs`: stock quinn streams.
    Quinn,
    /// `h3_server.rs`: stock h3 + h3-quinn.
    H3,
}

/// A server running the example on `builder`'s socket, on its own thread (in `ns`).
struct Server {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
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
                    App::Quinn => example::server_config(),
                    App::H3 => h3_example::server_config(),
                }
                .expect("server config");
                let endpoint = example::endpoint(socket, config).expect("endpoint");
                let addr = endpoint.local_addr().expect("local addr");
                let _ = ready_tx.send(Ok((addr, cert)));
                let serving = match app {
                    App::Quinn => tokio::spawn(example::serve(endpoint.clone())),
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
    let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
    send.write_all(&download.to_be_bytes()).await.unwrap();
    send.write_all(upload).await.unwrap();
    send.finish().unwrap();
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

/// The client's part: one multi-MB exchange, then many connections at once.
fn run_client(server: SocketAddr, cert: CertificateDer<'static>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let work = async {
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
        };
        tokio::time::timeout(LIMIT, work)
            .await
            .expect("the client took too long");
    });
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
fn loopback_case(
    app: App,
    backend: Backend,
    name: &str,
    client: fn(SocketAddr, CertificateDer<'static>),
) {
    let builder = QuixdSocketBuilder::new(backend, ["127.0.0.1:0".parse().unwrap()]);
    let server = Server::start_app(app, builder, None).expect("the server starts");
    let (addr, cert) = (server.addr, server.cert.clone());
    let client = std::thread::spawn(move || client(addr, cert));
    let result = client.join();
    let report = server.stop();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    check_report(&report, name);
}

#[test]
fn socket_on_loopback() {
    loopback_case(App::Quinn, Backend::Socket, "socket", run_client);
}

#[test]
fn io_uring_on_loopback() {
    loopback_case(App::Quinn, Backend::IoUring, "io_uring", run_client);
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
        let report = xdp_case(App::Quinn, v6, transmit, run_client);
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime
        .block_on(async { builder.open() })
        .expect_err("no such interface");
    let text = err.to_string();
    assert!(
        text.contains("backend `xdp` cannot start") && text.contains("qxnope0"),
        "{text}"
    );
}

#[test]
fn xdp_without_an_interface_is_a_clear_error() {
    let builder = QuixdSocketBuilder::new(Backend::Xdp, ["127.0.0.1:0".parse().unwrap()]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime.block_on(async { builder.open() }).unwrap_err();
    assert!(err.to_string().contains("[xdp] table"), "{err}");
}

/// HTTP/3 GETs through the h3 client: `H3_REQUESTS` concurrent ones of various sizes and one
/// of `H3_LARGE` bytes, each body checked byte for byte, and a 404.
fn run_h3_client(server: SocketAddr, cert: CertificateDer<'static>) {
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
fn xdp_case(
    app: App,
    v6: bool,
    transmit: &str,
    client: fn(SocketAddr, CertificateDer<'static>),
) -> CloseReport {
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
    let (addr, cert) = (server.addr, server.cert.clone());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        net.in_client(move || client(addr, cert))
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
