//! `quixd udp-echo`: each backend alone, with no QUIC. Datagrams of every size up to the path's
//! limit go out from a real client socket and must come back byte for byte, from the address
//! they were sent to, over IPv4 and IPv6; then a paced burst. This is also the daemon the
//! benchmark's raw scenario runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::*;

e2e_tests!(every_datagram_comes_back_unchanged);

/// Largest UDP payload over a 1500-byte MTU (veth) for each family.
fn max_payload(addr: SocketAddr) -> usize {
    if addr.is_ipv4() {
        1500 - 20 - 8
    } else {
        1500 - 40 - 8
    }
}

/// A datagram that names itself: 8 bytes of sequence number, then seeded random bytes.
fn datagram(seq: u64, len: usize) -> Vec<u8> {
    let mut d = random_bytes(len.max(8), run_seed() ^ seq.wrapping_mul(0x9E37_79B9));
    d[..8].copy_from_slice(&seq.to_be_bytes());
    d.truncate(len.max(8));
    d
}

/// Sends `batch` from `sock` to `server` and collects the replies (bounded by 5 s), keyed by
/// their sequence number; panics on a reply from anywhere else.
async fn round_trip(
    sock: &tokio::net::UdpSocket,
    server: SocketAddr,
    batch: &[Vec<u8>],
) -> BTreeMap<u64, Vec<u8>> {
    for d in batch {
        sock.send_to(d, server)
            .await
            .unwrap_or_else(|e| panic!("send {} bytes to {server}: {e}", d.len()));
    }
    let mut got = BTreeMap::new();
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.len() < batch.len() {
        let Ok(r) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await else {
            break;
        };
        let (n, from) = r.expect("recv_from");
        assert_eq!(from, server, "an echo came from {from}, not {server}");
        assert!(n >= 8, "an echo of {n} bytes cannot be one of ours");
        let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
        got.insert(seq, buf[..n].to_vec());
    }
    got
}

async fn every_datagram_comes_back_unchanged(t: Backend) {
    let fx = Fixture::new(t);
    let mut cfg = fx.config();
    cfg.listen = fx.dual_stack_listen();
    let mut d = fx.start_udp_echo(&cfg).await;
    let addrs = d.addrs.clone();
    assert_eq!(addrs.len(), 2, "one IPv4 and one IPv6 address: {addrs:?}");

    let mut sent = 0u64;
    bounded(Duration::from_secs(120), async {
        for &server in &addrs {
            let sock = fx.client.bind_tokio_udp(server);
            // Every size class: tiny, QUIC's minimum, the path's maximum, and odd lengths
            // (checksums over an odd byte count).
            let max = max_payload(server);
            let sizes = [8, 9, 100, 1199, 1200, 1201, max - 1, max];
            let batch: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &len)| datagram(sent + i as u64, len))
                .collect();
            let got = round_trip(&sock, server, &batch).await;
            for (i, want) in batch.iter().enumerate() {
                let seq = sent + i as u64;
                let echo = got.get(&seq).unwrap_or_else(|| {
                    panic!("no echo of the {}-byte datagram via {server}", want.len())
                });
                assert_same_bytes(
                    echo,
                    want,
                    &format!("{}-byte echo via {server}", want.len()),
                );
            }
            sent += batch.len() as u64;

            // A paced burst: 2000 datagrams, 32 in flight at a time, all back and intact.
            for round in 0..(2000 / 32) {
                let batch: Vec<Vec<u8>> = (0..32)
                    .map(|i| datagram(sent + i, 1200 + (round % 7)))
                    .collect();
                let got = round_trip(&sock, server, &batch).await;
                assert_eq!(
                    got.len(),
                    batch.len(),
                    "round {round} via {server}: {} of {} echoes came back",
                    got.len(),
                    batch.len()
                );
                for (i, want) in batch.iter().enumerate() {
                    assert_eq!(got.get(&(sent + i as u64)), Some(want), "round {round}");
                }
                sent += batch.len() as u64;
            }
        }
    })
    .await;

    d.assert_alive();
    d.signal(libc::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("udp-echo exits after SIGTERM");
    let log = d.output();
    assert!(status.success(), "udp-echo exit status {status}:\n{log}");
    let counters = log
        .lines()
        .rev()
        .find_map(|l| l.split("echo counters: ").nth(1))
        .unwrap_or_else(|| panic!("no `echo counters:` line:\n{log}"));
    let value = |name: &str| -> u64 {
        counters
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in `{counters}`"))
    };
    assert_eq!(value("rx_datagrams"), sent, "{counters}");
    assert_eq!(value("dropped_full"), 0, "{counters}");
    if t.is_xdp() {
        // They came through AF_XDP, not the kernel's UDP socket.
        let datapath = crate::process::counters(&log);
        assert!(!datapath.is_empty(), "no `datapath counters:` line:\n{log}");
        let rx = datapath.get("rx_datagrams").copied();
        assert_eq!(rx, Some(sent), "AF_XDP received them all: {datapath:?}");
    }
}
