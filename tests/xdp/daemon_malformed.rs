//! Malformed frames injected with an AF_PACKET socket on the client's veth while the daemon
//! serves a 10 MB download: the download completes intact, the daemon survives, and the
//! counters say which layer dropped what.
//!
//! Who drops which frame (all are addressed to the daemon's address and port):
//!
//! | frame                               | XDP program                   | then                     |
//! |-------------------------------------|-------------------------------|--------------------------|
//! | UDP header truncated                | `malformed`, passed           | kernel drops it          |
//! | IPv4 total length beyond the frame  | `malformed`, passed           | kernel drops it          |
//! | UDP length beyond the IP payload    | `malformed`, passed           | kernel drops it          |
//! | IPv4 first fragment (MF set)        | `fragment`, passed            | kernel reassembly queue  |
//! | bad IPv4 header checksum            | redirected (not checked)      | parser `bad_ip_checksum` |
//! | bad UDP checksum (IPv4)             | redirected                    | parser `bad_udp_checksum`|
//! | bad UDP checksum (IPv6)             | redirected                    | parser `bad_udp_checksum`|
//! | one 802.1Q tag, valid UDP, non-QUIC | redirected (one tag allowed)  | `rx_wrong_vlan` (no `xdp.vlan`) |
//!
//! The program's `fragment` counter is not in the daemon's counter line; it is
//! `prog_passed - prog_not_ours - prog_malformed - prog_no_socket` (the program's invariant),
//! since no IPv6 extension headers are sent.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemon::{
    bounded, client, connect, get, ip_xdp, listen_both, mac, random_bytes, runtime, Quixd, Site,
    MODES, PORT,
};
use crate::netns::{privileged, TestNet};

/// Frames of each kind.
const EACH: u64 = 200;
/// The injected frames' UDP source port (nothing listens there).
const SOURCE_PORT: u16 = 40_000;

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for pair in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// A UDP header and payload with a correct checksum.
fn udp(src: IpAddr, dst: IpAddr, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut seg = Vec::with_capacity(len);
    seg.extend_from_slice(&SOURCE_PORT.to_be_bytes());
    seg.extend_from_slice(&dst_port.to_be_bytes());
    seg.extend_from_slice(&(len as u16).to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    seg.extend_from_slice(payload);
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum16(&d.octets(), sum16(&s.octets(), 0)),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum16(&d.octets(), sum16(&s.octets(), 0)),
        _ => unreachable!(),
    };
    let mut sum = fold(sum16(&seg, pseudo + 17 + len as u32));
    if sum == 0 {
        sum = 0xffff;
    }
    seg[6..8].copy_from_slice(&sum.to_be_bytes());
    seg
}

/// Breaks a correct UDP checksum (never into 0, "no checksum").
fn break_udp_checksum(seg: &mut [u8]) {
    let bad = u16::from_be_bytes([seg[6], seg[7]]) ^ 0x00ff;
    seg[6..8].copy_from_slice(&(if bad == 0 { 0x0101 } else { bad }).to_be_bytes());
}

fn ipv4_checksum(packet: &mut [u8]) {
    packet[10..12].copy_from_slice(&[0, 0]);
    let sum = fold(sum16(&packet[..20], 0));
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// An IPv4 packet around `l4` (protocol UDP, no options), `frag` = flags and offset field.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, frag: u16, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    p.extend_from_slice(&0x5151u16.to_be_bytes()); // identification
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    ipv4_checksum(&mut p);
    p.extend_from_slice(l4);
    p
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(l4);
    p
}

struct Wire {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
}

impl Wire {
    fn ethernet(&self, ether_type: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + l3.len());
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&ether_type.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }
}

/// The eight malformed (or unusual) frames, by name.
fn frames(net: &TestNet, wire: &Wire) -> Vec<(&'static str, Vec<u8>)> {
    let (s4, d4) = (net.client_v4, net.server_v4);
    let (s6, d6) = (net.client_v6, net.server_v6);
    let payload = random_bytes(64, 3);
    let good = udp(s4.into(), d4.into(), PORT, &payload);

    let truncated = ipv4(s4, d4, 0, &good[..4]);

    let mut bad_sum = good.clone();
    break_udp_checksum(&mut bad_sum);
    let bad_udp_checksum = ipv4(s4, d4, 0, &bad_sum);

    let mut bad_ip_checksum = ipv4(s4, d4, 0, &good);
    bad_ip_checksum[10] ^= 0x5a;

    let mut ip_len_lies = ipv4(s4, d4, 0, &good);
    let lie = (ip_len_lies.len() + 100) as u16;
    ip_len_lies[2..4].copy_from_slice(&lie.to_be_bytes());
    ipv4_checksum(&mut ip_len_lies);

    let mut udp_len_lies = good.clone();
    let lie = (udp_len_lies.len() + 100) as u16;
    udp_len_lies[4..6].copy_from_slice(&lie.to_be_bytes());
    let udp_len_lies = ipv4(s4, d4, 0, &udp_len_lies);

    // A valid datagram that is not QUIC (first byte 0: fixed bit clear), behind one tag.
    let not_quic = udp(s4.into(), d4.into(), PORT, &[0u8; 8]);
    let mut tagged = vec![0x00, 100, 0x08, 0x00]; // VLAN 100, then IPv4
    tagged.extend_from_slice(&ipv4(s4, d4, 0, &not_quic));

    // The first fragment of a bigger datagram: MF set, offset 0.
    let fragment = ipv4(s4, d4, 0x2000, &good);

    let mut bad_sum6 = udp(s6.into(), d6.into(), PORT, &payload);
    break_udp_checksum(&mut bad_sum6);
    let bad_udp_checksum_v6 = ipv6(s6, d6, &bad_sum6);

    vec![
        ("truncated_udp_header", wire.ethernet(0x0800, &truncated)),
        (
            "bad_udp_checksum_v4",
            wire.ethernet(0x0800, &bad_udp_checksum),
        ),
        ("bad_ip_checksum", wire.ethernet(0x0800, &bad_ip_checksum)),
        ("ip_total_length_lies", wire.ethernet(0x0800, &ip_len_lies)),
        ("udp_length_lies", wire.ethernet(0x0800, &udp_len_lies)),
        ("vlan_tagged", wire.ethernet(0x8100, &tagged)),
        ("ipv4_fragment", wire.ethernet(0x0800, &fragment)),
        (
            "bad_udp_checksum_v6",
            wire.ethernet(0x86dd, &bad_udp_checksum_v6),
        ),
    ]
}

/// The server namespace's kernel counters from /proc/net/snmp and /proc/net/netstat, named
/// like `Ip.ReasmReqds` and `IpExt.InTruncatedPkts`.
fn kernel_counters(net: &TestNet) -> BTreeMap<String, i64> {
    let mut map = BTreeMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let out = net.server(&["cat", file]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        // Pairs of lines: `Proto: Name Name ...` and `Proto: value value ...`.
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let mut names = names.split_whitespace();
            let mut values = values.split_whitespace();
            let proto = names.next().unwrap_or_default().trim_end_matches(':');
            values.next();
            for (name, value) in names.zip(values) {
                if let Ok(value) = value.parse() {
                    map.insert(format!("{proto}.{name}"), value);
                }
            }
        }
    }
    map
}

fn delta(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>, name: &str) -> i64 {
    after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// `transmit` is `xdp.transmit`: `auto` (the kernel socket on veth) or `af_xdp`.
fn malformed_frames_during_download(attach: &str, keyword: &str, transmit: &str) {
    const SIZE: usize = 10_000_000;
    let net = TestNet::new();
    let site = Site::new();
    let data = random_bytes(SIZE, 0xd0d0);
    site.put("big.bin", &data);
    let extra = format!("transmit = \"{transmit}\"");
    let config = site.config(&net.server_if, attach, &listen_both(&net), &extra);
    let mut daemon = Quixd::start(&net.server_ns, &config, 2);
    assert_eq!(ip_xdp(&net).as_deref(), Some(keyword), "attach mode");
    let server = daemon
        .addrs
        .iter()
        .copied()
        .find(SocketAddr::is_ipv4)
        .unwrap();

    let wire = Wire {
        dst_mac: mac(&net, &net.server_ns, &net.server_if),
        src_mac: mac(&net, &net.client_ns, &net.client_if),
    };
    let frames = frames(&net, &wire);
    let socket = net.client_packet_socket();
    let kernel_before = kernel_counters(&net);

    let downloaded = Arc::new(AtomicU64::new(0));
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let progress = downloaded.clone();
    let injector = std::thread::spawn(move || {
        // Once the download is under way; the burst is paced so no queue overflows.
        started_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the download started");
        let at_start = progress.load(Ordering::Relaxed);
        for _ in 0..EACH {
            for (_, frame) in &frames {
                socket
                    .send(frame)
                    .unwrap_or_else(|e| panic!("AF_PACKET sendto: {e}"));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        (at_start, progress.load(Ordering::Relaxed))
    });

    let rt = runtime();
    let client_datagrams = rt.block_on(async {
        let endpoint = client(&net, false, &site.cert, "hq-interop");
        let conn = connect(&endpoint, server).await;
        let body = bounded(Duration::from_secs(120), "the 10 MB download", async {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(b"GET /big.bin\r\n").await.unwrap();
            send.finish().unwrap();
            let started = Instant::now();
            let mut body = Vec::with_capacity(SIZE);
            let mut signalled = false;
            while let Some(chunk) = recv
                .read_chunk(usize::MAX, true)
                .await
                .unwrap_or_else(|e| panic!("download after {} bytes: {e}", body.len()))
            {
                body.extend_from_slice(&chunk.bytes);
                downloaded.store(body.len() as u64, Ordering::Relaxed);
                if !signalled {
                    let _ = started_tx.send(());
                    signalled = true;
                }
                // At most 5 MB/s, so the burst falls inside the download.
                let due = Duration::from_secs_f64(body.len() as f64 / 5e6);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            body
        })
        .await;
        assert_eq!(body.len(), SIZE, "download length");
        assert!(body == data, "the download is corrupt");
        conn.close(0u32.into(), b"done");
        bounded(Duration::from_secs(5), "client close", endpoint.wait_idle()).await;
        conn.stats().udp_tx.datagrams
    });
    let (at_start, at_end) = injector.join().unwrap();
    eprintln!(
        "{attach}: burst of {} frames sent between byte {at_start} and byte {at_end} of {SIZE}",
        8 * EACH
    );
    assert!(at_end < SIZE as u64, "the burst ended after the download");

    daemon.assert_alive();
    // Let the last frames be counted.
    std::thread::sleep(Duration::from_millis(200));
    let kernel_after = kernel_counters(&net);
    let stopped = daemon.terminate();
    let c = &stopped.counters;
    eprintln!("{attach}: datapath counters: {c:?}");
    let kernel = |name: &str| delta(&kernel_before, &kernel_after, name);
    let shown: Vec<String> = [
        "Ip.InHdrErrors",
        "IpExt.InTruncatedPkts",
        "IpExt.InCsumErrors",
        "Ip.ReasmReqds",
        "Udp.InErrors",
        "Udp.InCsumErrors",
        "Udp.NoPorts",
    ]
    .iter()
    .map(|name| format!("{name}={}", kernel(name)))
    .collect();
    eprintln!(
        "{attach}: server kernel counter deltas: {}",
        shown.join(" ")
    );
    eprintln!("{attach}: client sent {client_datagrams} QUIC datagrams");

    // Frames the program passes to the kernel.
    let malformed = get(c, "prog_malformed");
    assert!(malformed >= 3 * EACH, "prog_malformed={malformed}: {c:?}");
    let fragments = get(c, "prog_passed")
        - get(c, "prog_not_ours")
        - get(c, "prog_malformed")
        - get(c, "prog_no_socket");
    assert!(fragments >= EACH, "program fragments={fragments}: {c:?}");
    // ... which the kernel drops: the IP length that lies, the UDP header cut short and the
    // UDP length that lies, and the fragment that waits for its reassembly.
    assert!(kernel("IpExt.InTruncatedPkts") >= EACH as i64, "{shown:?}");
    assert!(kernel("Udp.InErrors") >= 2 * EACH as i64, "{shown:?}");
    assert!(kernel("Ip.ReasmReqds") >= EACH as i64, "{shown:?}");
    // ... never reach our parser.
    for name in ["truncated", "bad_length", "fragment"] {
        assert_eq!(
            get(c, name),
            0,
            "{name}: such frames must not reach AF_XDP: {c:?}"
        );
    }
    // Frames redirected into AF_XDP and refused by our parser, by name.
    assert!(get(c, "bad_ip_checksum") >= EACH, "{c:?}");
    assert!(get(c, "bad_udp_checksum") >= 2 * EACH, "{c:?}");
    // The tagged datagrams are well-formed but on a VLAN we don't serve: dropped by name,
    // never handed to QUIC.
    assert_eq!(get(c, "rx_wrong_vlan"), EACH, "{c:?}");
    let lost = get(c, "xsk_rx_dropped") + get(c, "xsk_rx_ring_full");
    assert!(
        get(c, "rx_datagrams") + lost >= client_datagrams,
        "rx_datagrams={} lost={lost}, client sent {client_datagrams}: {c:?}",
        get(c, "rx_datagrams")
    );
    assert!(get(c, "prog_redirected") >= get(c, "rx_frames"), "{c:?}");
}

#[test]
fn malformed_frames_during_download_skb() {
    if privileged("malformed_frames_during_download_skb") {
        malformed_frames_during_download(MODES[0].0, MODES[0].1, "auto");
    }
}

#[test]
fn malformed_frames_during_download_driver() {
    if privileged("malformed_frames_during_download_driver") {
        malformed_frames_during_download(MODES[1].0, MODES[1].1, "af_xdp");
    }
}
