//! The AF_XDP backend by itself, in process: real frames through the XDP program and AF_XDP
//! sockets on a veth, in both attach modes, without QUIC.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use quixd::datapath::xdp::program::AttachMode;
use quixd::datapath::xdp::socket::{CopyMode, XskSizes};
use quixd::datapath::xdp::{Transmit, XdpDatapath, XdpSettings};
use quixd::datapath::{Datapath, Ecn, TxBatch, TxMeta};
use quixd::wire::ChecksumPolicy;

use crate::netns::{privileged, TestNet};

/// Receives through `dp` until `want` datagrams arrived or 5 s passed.
fn receive(dp: &mut XdpDatapath, want: usize) -> Vec<(SocketAddr, Vec<u8>, Option<Ecn>)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        dp.recv(&mut |meta, payload| got.push((meta.src, payload.to_vec(), meta.ecn)))
            .unwrap();
        dp.wait(Some(Duration::from_millis(20)), false).unwrap();
    }
    got
}

/// Answers each of `want` received datagrams from the same port, reversed, with ECT(0).
fn answer(
    dp: &mut XdpDatapath,
    want: usize,
    server_ip: std::net::IpAddr,
    port: u16,
) -> Vec<Vec<u8>> {
    let got = receive(dp, want);
    let mut batch = TxBatch::new(64, 2048);
    for (src, payload, _) in &got {
        batch.push_with(|buf| {
            buf.extend(payload.iter().rev());
            Some(TxMeta {
                dst: *src,
                src_ip: Some(server_ip),
                src_port: port,
                ecn: Some(Ecn::Ect0),
                segment_size: None,
            })
        });
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !batch.is_empty() && Instant::now() < deadline {
        dp.send(&mut batch).unwrap();
        dp.wait(Some(Duration::from_millis(5)), true).unwrap();
    }
    assert!(batch.is_empty(), "the backend took every transmit");
    got.into_iter().map(|(_, p, _)| p).collect()
}

fn payload(round: u8, i: u8) -> Vec<u8> {
    (0..(100 + i as usize * 60))
        .map(|b| (b as u8) ^ i ^ (round << 4))
        .collect()
}

/// A small AF_XDP datapath (AF_XDP transmit) on the server end of `net`, on `server_ip` and
/// a port of its choosing.
fn settings(net: &TestNet, attach: AttachMode, server_ip: IpAddr) -> XdpSettings {
    XdpSettings {
        interface: net.server_if.clone(),
        queues: Vec::new(),
        attach,
        copy_mode: CopyMode::Auto,
        sizes: XskSizes {
            frames: 1024,
            ring: 256,
        },
        listen: vec![SocketAddr::new(server_ip, 0)],
        transmit: Transmit::AfXdp,
        vlan: None,
        rx_checksum: ChecksumPolicy::Auto,
        reuse_port: false,
    }
}

/// Two rounds of 10 datagrams echoed back reversed. Replies to a peer whose MAC the server's
/// kernel has not resolved go out through the guard socket (and the kernel resolves it); by
/// round 2 they all go out as AF_XDP frames we built.
fn echo_both_ways(mode: AttachMode, v6: bool) {
    const N: usize = 10;
    let net = TestNet::new();
    let server_ip = net.server_ip(v6);
    let settings = settings(&net, mode, server_ip);
    let server_ns = net.server_ns.clone();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        TestNet::enter(&server_ns);
        let mut dp = XdpDatapath::open(&settings).expect("open the XDP datapath");
        let port = dp.capabilities().local_addrs[0].port();
        port_tx.send(port).unwrap();
        let mut got = answer(&mut dp, N, server_ip, port);
        got.extend(answer(&mut dp, N, server_ip, port));
        // Completions come back; then every frame must be free or in the fill ring.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            dp.recv(&mut |_, _| {}).unwrap();
            let ledgers = dp.ledgers();
            let settled = ledgers.iter().all(|l| {
                l.balanced() && l.tx_in_flight == 0 && l.tx_building == 0 && l.rx_held == 0
            });
            if settled || Instant::now() > deadline {
                assert!(settled, "frames unaccounted for: {ledgers:?}");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (got, dp.counters())
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("datapath started");
    let to = SocketAddr::new(server_ip, port);
    let client_ns = net.client_ns.clone();
    let replies = std::thread::spawn(move || {
        TestNet::enter(&client_ns);
        let bind: SocketAddr = if v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().unwrap();
        let sock = UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut replies = Vec::new();
        for round in 0..2u8 {
            for i in 0..N as u8 {
                sock.send_to(&payload(round, i), to).unwrap();
            }
            let mut buf = [0u8; 2048];
            for _ in 0..N {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => replies.push((from, buf[..n].to_vec())),
                    Err(_) => break,
                }
            }
        }
        replies
    })
    .join()
    .unwrap();
    let (got, counters) = server.join().unwrap();
    let get = |name: &str| {
        counters
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    };
    assert_eq!(
        got.len(),
        2 * N,
        "datagrams received through AF_XDP; counters {counters:?}"
    );
    for round in 0..2u8 {
        for i in 0..N as u8 {
            assert!(
                got.contains(&payload(round, i)),
                "datagram {round}/{i} arrived intact"
            );
        }
    }
    assert_eq!(
        replies.len(),
        2 * N,
        "replies the client's kernel accepted (valid checksums); counters {counters:?}"
    );
    for (from, reply) in &replies {
        assert_eq!(*from, to, "reply comes from the served address and port");
        let original: Vec<u8> = reply.iter().rev().copied().collect();
        assert!(got.contains(&original), "reply is a reversed request");
    }
    assert_eq!(get("prog_redirected"), 2 * N as u64, "{counters:?}");
    assert_eq!(
        get("guard_rx"),
        0,
        "nothing reached the kernel socket: {counters:?}"
    );
    // The server's kernel usually learns the client's MAC from its ARP request / neighbour
    // solicitation; what it had not resolved went out through the kernel.
    assert!(
        get("tx_frames") >= N as u64,
        "round 2 went out as AF_XDP frames: {counters:?}"
    );
    assert_eq!(
        get("tx_frames") + get("tx_via_kernel"),
        2 * N as u64,
        "{counters:?}"
    );
}

#[test]
fn af_xdp_echo_ipv4_skb_mode() {
    if privileged("af_xdp_echo_ipv4_skb_mode") {
        echo_both_ways(AttachMode::Skb, false);
    }
}

#[test]
fn af_xdp_echo_ipv6_driver_mode() {
    if privileged("af_xdp_echo_ipv6_driver_mode") {
        echo_both_ways(AttachMode::Driver, true);
    }
}

#[test]
fn af_xdp_echo_ipv4_driver_mode() {
    if privileged("af_xdp_echo_ipv4_driver_mode") {
        echo_both_ways(AttachMode::Driver, false);
    }
}

/// Two RX queues: one AF_XDP socket each; flows from many client ports spread over both
/// (veth delivers on the RX queue matching the sender's TX queue) and all are answered.
#[test]
fn af_xdp_two_queues() {
    if !privileged("af_xdp_two_queues") {
        return;
    }
    const FLOWS: usize = 32;
    let net = TestNet::with_queues(2);
    let server_ip = net.server_ip(false);
    let settings = settings(&net, AttachMode::Driver, server_ip);
    let server_ns = net.server_ns.clone();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        TestNet::enter(&server_ns);
        let mut dp = XdpDatapath::open(&settings).expect("open the XDP datapath");
        port_tx
            .send(dp.capabilities().local_addrs[0].port())
            .unwrap();
        let port = dp.capabilities().local_addrs[0].port();
        let got = answer(&mut dp, FLOWS, server_ip, port);
        dp.close();
        (got.len(), dp.rx_frames_per_queue(), dp.counters())
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("datapath started");
    let to = SocketAddr::new(server_ip, port);
    let client_ns = net.client_ns.clone();
    let replies = std::thread::spawn(move || {
        TestNet::enter(&client_ns);
        let socks: Vec<UdpSocket> = (0..FLOWS)
            .map(|_| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s
            })
            .collect();
        // Sizes below the MTU: larger ones would be fragmented, and fragments go to the kernel.
        for (i, s) in socks.iter().enumerate() {
            s.send_to(&payload(0, (i % 16) as u8), to).unwrap();
        }
        let mut buf = [0u8; 2048];
        socks
            .iter()
            .filter(|s| s.recv_from(&mut buf).is_ok())
            .count()
    })
    .join()
    .unwrap();
    let (received, per_queue, counters) = server.join().unwrap();
    assert_eq!(per_queue.len(), 2, "one socket per queue: {per_queue:?}");
    assert_eq!(
        received, FLOWS,
        "every flow reached AF_XDP: {per_queue:?} {counters:?}"
    );
    assert_eq!(
        replies, FLOWS,
        "every flow was answered: {per_queue:?} {counters:?}"
    );
    assert!(
        per_queue.iter().all(|&(_, n)| n > 0),
        "both queues carried traffic: {per_queue:?}"
    );
}
