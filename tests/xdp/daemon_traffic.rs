//! The daemon on the XDP backend, as a process in the server namespace, next to the kernel's
//! own traffic: a clean run ends with a balanced frame ledger; TCP and UDP to other ports keep
//! working while it runs, and datagrams to its port that reach the kernel find the guard socket
//! (no ICMP port unreachable); after `kill -9` mid-download nothing stays attached and the
//! kernel path serves the port at once; UDP checksums from a peer with veth's default TX
//! offload are trusted by default and refused (with a live warning) when told to verify, while
//! complete ones are always served. Each test runs in both attach modes.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::daemon::{
    bounded, client, connect, driver_counter, get, hq_get, in_ns, ip_xdp, listen_both, odd_lines,
    random_bytes, runtime, Quixd, Site, MODES, PORT,
};
use crate::netns::{privileged, TestNet};

// ---------------------------------------------------------------------------------------------
// (e) A clean run
// ---------------------------------------------------------------------------------------------

/// Downloads over IPv4 and IPv6, then SIGTERM; `transmit` is `xdp.transmit`.
/// `GET /f.bin` once from every address the daemon serves, each on a new connection, and
/// checks the content.
fn get_from_each(net: &TestNet, site: &Site, addrs: &[SocketAddr], data: &[u8]) {
    runtime().block_on(async {
        for &addr in addrs {
            let endpoint = client(net, addr.is_ipv6(), &site.cert, "hq-interop");
            let conn = connect(&endpoint, addr).await;
            let body = bounded(Duration::from_secs(60), "GET /f.bin", async {
                hq_get(&conn, "/f.bin", None).await
            })
            .await;
            assert!(body == data, "GET /f.bin via {addr}: wrong content");
            conn.close(0u32.into(), b"done");
            bounded(Duration::from_secs(5), "client close", endpoint.wait_idle()).await;
        }
    });
}

fn clean_run(attach: &str, keyword: &str, transmit: &str) {
    let net = TestNet::new();
    let site = Site::new();
    let data = random_bytes(2_000_000, 0x5eed);
    site.put("f.bin", &data);
    let extra = format!("transmit = \"{transmit}\"");
    let config = site.config(&net.server_if, attach, &listen_both(&net), &extra);
    let mut daemon = Quixd::start(&net.server_ns, &config, 2);
    assert_eq!(ip_xdp(&net).as_deref(), Some(keyword), "attach mode");
    get_from_each(&net, &site, &daemon.addrs, &data);
    let stopped = daemon.terminate();
    let c = &stopped.counters;
    assert!(get(c, "rx_datagrams") > 0, "{c:?}");
    // The client's veth keeps TX checksum offload on (as a container's does): its datagrams
    // arrive with partial checksums, which `rx_checksum = "auto"` trusts on veth.
    assert!(get(c, "rx_checksum_offloaded") > 0, "{c:?}");
    assert!(driver_counter(&stopped.log, "tx_transmits") > 0);
    match transmit {
        // Copy mode on veth: `auto` sends through the kernel socket (GSO).
        "auto" => {
            assert!(stopped.log.contains("path=\"kernel socket (GSO)\""));
            assert_eq!(get(c, "tx_frames"), 0, "{c:?}");
            assert!(get(c, "kernel_tx_transmits") > 0, "{c:?}");
        }
        _ => assert!(get(c, "tx_frames") > 0, "{c:?}"),
    }
    for name in [
        "guard_rx",
        "bad_udp_checksum",
        "bad_ip_checksum",
        "truncated",
        "tx_errors",
    ] {
        assert_eq!(get(c, name), 0, "{name} in a clean run: {c:?}");
    }
    let odd = odd_lines(&stopped.log);
    assert!(
        odd.is_empty(),
        "warnings or errors in a clean run: {odd:#?}"
    );
    assert_eq!(ip_xdp(&net), None, "still attached after a graceful stop");
}

#[test]
fn daemon_clean_run_balances_the_ledger_skb() {
    if privileged("daemon_clean_run_balances_the_ledger_skb") {
        for transmit in ["auto", "af_xdp"] {
            clean_run(MODES[0].0, MODES[0].1, transmit);
        }
    }
}

#[test]
fn daemon_clean_run_balances_the_ledger_driver() {
    if privileged("daemon_clean_run_balances_the_ledger_driver") {
        for transmit in ["auto", "af_xdp"] {
            clean_run(MODES[1].0, MODES[1].1, transmit);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (f) UDP checksums: a container's default veth, and a wire
// ---------------------------------------------------------------------------------------------

/// `rx_checksum = "verify"` against a peer with veth's default TX checksum offload: every
/// client frame carries a partial checksum and is dropped; the drop is logged while the daemon
/// runs (not only at shutdown), naming the setting that fixes it.
fn verify_refuses_offloaded_checksums(attach: &str) {
    let net = TestNet::new();
    let site = Site::new();
    let config = site.config(
        &net.server_if,
        attach,
        &listen_both(&net),
        "rx_checksum = \"verify\"",
    );
    let mut daemon = Quixd::start(&net.server_ns, &config, 2);
    let addr = daemon.addrs[0];
    let rt = runtime();
    rt.block_on(async {
        let endpoint = client(&net, addr.is_ipv6(), &site.cert, "hq-interop");
        let connecting = endpoint.connect(addr, "localhost").expect("connect");
        let outcome = tokio::time::timeout(Duration::from_secs(3), connecting).await;
        assert!(
            !matches!(outcome, Ok(Ok(_))),
            "connected although every client frame carries a partial checksum"
        );
        endpoint.close(0u32.into(), b"");
    });
    let log = daemon.log();
    assert!(
        log.contains("dropping received frames")
            && log.contains("bad_udp_checksum")
            && log.contains("xdp.rx_checksum"),
        "no live warning naming the fix while running:\n{log}"
    );
    let stopped = daemon.terminate();
    let c = &stopped.counters;
    assert!(get(c, "bad_udp_checksum") > 0, "{c:?}");
    assert_eq!(get(c, "rx_checksum_offloaded"), 0, "{c:?}");
    assert_eq!(get(c, "rx_datagrams"), 0, "{c:?}");
}

/// `rx_checksum = "verify"` with complete checksums (the client's offload off, as on a wire):
/// served, nothing taken as offloaded.
fn verify_serves_a_wire(attach: &str) {
    let net = TestNet::wire();
    let site = Site::new();
    let data = random_bytes(300_000, 0xc5);
    site.put("f.bin", &data);
    let config = site.config(
        &net.server_if,
        attach,
        &listen_both(&net),
        "rx_checksum = \"verify\"",
    );
    let mut daemon = Quixd::start(&net.server_ns, &config, 2);
    get_from_each(&net, &site, &daemon.addrs, &data);
    let stopped = daemon.terminate();
    let c = &stopped.counters;
    assert!(get(c, "rx_datagrams") > 0, "{c:?}");
    assert_eq!(get(c, "rx_checksum_offloaded"), 0, "{c:?}");
    assert_eq!(get(c, "bad_udp_checksum"), 0, "{c:?}");
}

#[test]
fn daemon_checksum_verify_refuses_offloaded_veth_peer() {
    if privileged("daemon_checksum_verify_refuses_offloaded_veth_peer") {
        for (attach, _) in MODES {
            verify_refuses_offloaded_checksums(attach);
        }
    }
}

#[test]
fn daemon_checksum_verify_serves_a_wire() {
    if privileged("daemon_checksum_verify_serves_a_wire") {
        for (attach, _) in MODES {
            verify_serves_a_wire(attach);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) The kernel's own traffic while the daemon runs
// ---------------------------------------------------------------------------------------------

/// A TCP echo server in the server namespace and a client in the client namespace: 1 MB there
/// and back.
fn tcp_echo(net: &TestNet, v6: bool) {
    let bind = SocketAddr::new(net.server_ip(v6), 0);
    let listener = in_ns(&net.server_ns, move || TcpListener::bind(bind)).expect("TCP listen");
    let to = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut stream, _) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("TCP accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = stream.read(&mut buf).expect("TCP echo server read");
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n]).expect("TCP echo server write");
        }
    });
    let data = random_bytes(1 << 20, 7 + v6 as u64);
    let mut stream = in_ns(&net.client_ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5))
    })
    .unwrap_or_else(|e| panic!("TCP connect to {to}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = data.clone();
    let write = std::thread::spawn(move || {
        writer.write_all(&sent).expect("TCP client write");
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    stream
        .read_to_end(&mut back)
        .unwrap_or_else(|e| panic!("TCP echo from {to} after {} bytes: {e}", back.len()));
    write.join().unwrap();
    server.join().unwrap();
    assert!(
        back == data,
        "TCP echo via {to}: {} bytes back, wrong",
        back.len()
    );
}

/// A kernel UDP socket on another port of the server answers.
fn udp_other_port(net: &TestNet, v6: bool) {
    let bind = SocketAddr::new(net.server_ip(v6), 0);
    let server = in_ns(&net.server_ns, move || UdpSocket::bind(bind)).expect("UDP bind");
    let to = server.local_addr().unwrap();
    assert_ne!(to.port(), PORT);
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            let (n, from) = server.recv_from(&mut buf).expect("UDP to another port");
            server.send_to(&buf[..n], from).unwrap();
        }
    });
    let client_ip = net.client_ip(v6);
    let sock = in_ns(&net.client_ns, move || UdpSocket::bind((client_ip, 0))).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..3u8 {
        let payload = vec![i; 100 + 500 * i as usize];
        sock.send_to(&payload, to).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = sock
            .recv_from(&mut buf)
            .expect("UDP echo from another port");
        assert_eq!((from, &buf[..n]), (to, &payload[..]));
    }
    echo.join().unwrap();
}

/// A connected UDP socket in the client namespace that sends `payload` to `to`; returns what
/// the next receive said within 1 s: `Err(ConnectionRefused)` if the server's kernel answered
/// ICMP port unreachable.
fn probe(net: &TestNet, to: SocketAddr, payload: Vec<u8>) -> std::io::Result<usize> {
    let client_ip = net.client_ip(to.is_ipv6());
    let sock = in_ns(&net.client_ns, move || {
        let sock = UdpSocket::bind((client_ip, 0))?;
        sock.connect(to)?;
        Ok::<_, std::io::Error>(sock)
    })
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    sock.send(&payload).unwrap();
    let mut buf = [0u8; 4096];
    // A signal to this test process (another test's child exiting) interrupts the wait.
    let received = loop {
        match sock.recv(&mut buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    match received {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            // A pending error would also show on the next send.
            sock.send(&payload).map(|_| 0)
        }
        other => other,
    }
}

fn no_port_unreachable(net: &TestNet, v6: bool) {
    let ip = net.server_ip(v6);
    // The method works: a port nobody holds gets ICMP port unreachable.
    let refused = probe(net, SocketAddr::new(ip, 9), b"anyone?".to_vec());
    assert_eq!(
        refused.as_ref().map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused),
        "control: UDP to a closed port should be refused: {refused:?}"
    );
    let ours = SocketAddr::new(ip, PORT);
    // A small non-QUIC datagram: steered into AF_XDP, dropped by QUIC, never seen by the kernel.
    let small = probe(net, ours, b"not quic".to_vec());
    assert!(small.is_ok(), "non-QUIC datagram to {ours}: {small:?}");
    // Bigger than the MTU: the client's kernel fragments it, XDP passes fragments to the
    // kernel, which reassembles it and finds the guard socket holding the port.
    let fragmented = probe(net, ours, vec![0u8; 3000]);
    assert!(
        fragmented.is_ok(),
        "fragmented datagram to {ours}: {fragmented:?}"
    );
}

fn kernel_traffic_coexists(attach: &str, keyword: &str) {
    let net = TestNet::new();
    let site = Site::new();
    site.put("hello.txt", b"hello over QUIC\n");
    let config = site.config(&net.server_if, attach, &listen_both(&net), "");
    let mut daemon = Quixd::start(&net.server_ns, &config, 2);
    assert_eq!(ip_xdp(&net).as_deref(), Some(keyword), "attach mode");
    for v6 in [false, true] {
        tcp_echo(&net, v6);
        udp_other_port(&net, v6);
        no_port_unreachable(&net, v6);
        daemon.assert_alive();
    }
    // QUIC is served all along.
    let addrs = daemon.addrs.clone();
    runtime().block_on(async {
        for addr in addrs {
            let endpoint = client(&net, addr.is_ipv6(), &site.cert, "hq-interop");
            let conn = connect(&endpoint, addr).await;
            let body = bounded(Duration::from_secs(20), "GET /hello.txt", async {
                hq_get(&conn, "/hello.txt", None).await
            })
            .await;
            assert_eq!(body, b"hello over QUIC\n");
            conn.close(0u32.into(), b"done");
            bounded(Duration::from_secs(5), "client close", endpoint.wait_idle()).await;
        }
    });
    let stopped = daemon.terminate();
    let c = &stopped.counters;
    // The fragmented datagrams (one per family) went through the kernel to the guard socket.
    assert!(get(c, "guard_rx") >= 2, "{c:?}");
    assert_eq!(get(c, "bad_udp_checksum"), 0, "{c:?}");
}

#[test]
fn kernel_traffic_coexists_with_the_daemon_skb() {
    if privileged("kernel_traffic_coexists_with_the_daemon_skb") {
        kernel_traffic_coexists(MODES[0].0, MODES[0].1);
    }
}

#[test]
fn kernel_traffic_coexists_with_the_daemon_driver() {
    if privileged("kernel_traffic_coexists_with_the_daemon_driver") {
        kernel_traffic_coexists(MODES[1].0, MODES[1].1);
    }
}

// ---------------------------------------------------------------------------------------------
// (c) kill -9 in the middle of a download
// ---------------------------------------------------------------------------------------------

/// Received at most `rate` bytes per second until `stop_after` bytes came.
async fn slow_perf_download(
    conn: &quinn::Connection,
    size: u64,
    stop_after: u64,
    rate: u64,
) -> (quinn::RecvStream, u64) {
    let (mut send, mut recv) = conn.open_bi().await.expect("open a perf stream");
    send.write_all(&size.to_be_bytes()).await.unwrap();
    send.finish().unwrap();
    let started = Instant::now();
    let mut got = 0u64;
    while got < stop_after {
        let chunk = recv
            .read_chunk(64 * 1024, true)
            .await
            .unwrap_or_else(|e| panic!("perf download after {got} bytes: {e}"))
            .unwrap_or_else(|| panic!("perf download ended after {got} bytes"));
        got += chunk.bytes.len() as u64;
        let due = Duration::from_secs_f64(got as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    (recv, got)
}

fn sigkill_mid_download(attach: &str, keyword: &str) {
    const SIZE: u64 = 200_000_000;
    let net = TestNet::new();
    let site = Site::new();
    let listen = [SocketAddr::new(net.server_v4.into(), PORT)];
    let config = site.config(&net.server_if, attach, &listen, "");
    let mut daemon = Quixd::start(&net.server_ns, &config, 1);
    assert_eq!(ip_xdp(&net).as_deref(), Some(keyword), "attach mode");
    let server = daemon.addrs[0];

    let rt = runtime();
    let (endpoint, conn, recv, got) = rt.block_on(async {
        let endpoint = client(&net, false, &site.cert, "perf");
        let conn = connect(&endpoint, server).await;
        let (recv, got) = bounded(
            Duration::from_secs(30),
            "first 3 MB of the perf download",
            slow_perf_download(&conn, SIZE, 3_000_000, 2_000_000),
        )
        .await;
        (endpoint, conn, recv, got)
    });
    assert!(got < SIZE, "the download is still going");

    let status = daemon.kill9();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    let killed = Instant::now();
    while let Some(mode) = ip_xdp(&net) {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "`{mode}` still attached 5 s after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let detached_after = killed.elapsed();
    eprintln!("{attach}: no XDP program attached {detached_after:?} after SIGKILL ({got} bytes downloaded)");

    // The kernel path, at once: a new kernel socket on the daemon's address and port.
    let bound = in_ns(&net.server_ns, move || UdpSocket::bind(server))
        .unwrap_or_else(|e| panic!("bind {server} after SIGKILL: {e}"));
    bound
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let client_ip = net.client_ip(false);
    let sock = in_ns(&net.client_ns, move || UdpSocket::bind((client_ip, 0))).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let started = Instant::now();
    sock.send_to(b"ping", server).unwrap();
    // Skip anything else (a QUIC packet from the dying connection).
    let mut buf = [0u8; 2048];
    let peer = loop {
        let (n, from) = bound
            .recv_from(&mut buf)
            .expect("the kernel socket on the daemon's port receives");
        if &buf[..n] == b"ping" {
            break from;
        }
    };
    bound.send_to(b"pong", peer).unwrap();
    loop {
        let (n, from) = sock
            .recv_from(&mut buf)
            .expect("the answer from the kernel socket");
        if from == server && &buf[..n] == b"pong" {
            break;
        }
    }
    eprintln!(
        "{attach}: kernel UDP exchange on {server} took {:?}",
        started.elapsed()
    );
    drop(recv);
    conn.close(0u32.into(), b"bye");
    drop(conn);
    drop(endpoint);
    drop(rt);
}

#[test]
fn sigkill_mid_download_detaches_and_frees_the_port_skb() {
    if privileged("sigkill_mid_download_detaches_and_frees_the_port_skb") {
        sigkill_mid_download(MODES[0].0, MODES[0].1);
    }
}

#[test]
fn sigkill_mid_download_detaches_and_frees_the_port_driver() {
    if privileged("sigkill_mid_download_detaches_and_frees_the_port_driver") {
        sigkill_mid_download(MODES[1].0, MODES[1].1);
    }
}
