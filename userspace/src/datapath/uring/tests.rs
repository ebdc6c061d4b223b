//! The backend against the real kernel on loopback, with a quinn-udp peer that sets and reads
//! ECN marks. Skipped (with a note) where io_uring itself is unavailable.

use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use quinn_udp::{EcnCodepoint, RecvMeta, Transmit, UdpSocketState};

use super::*;
use crate::datapath::{TxBatch, TxMeta};

fn settings(listen: &str) -> UringSettings {
    UringSettings {
        listen: vec![listen.parse().unwrap()],
        buffers: 64,
        buffer_size: 65536,
        send_zc: false,
        reuse_port: false,
    }
}

/// Opens the backend, or `None` (test skipped) if this machine refuses io_uring.
fn open(s: &UringSettings) -> Option<UringDatapath> {
    match UringDatapath::open(s) {
        Ok(dp) => Some(dp),
        Err(e @ UringError::Setup { .. }) => {
            eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("io_uring backend: {e}"),
    }
}

struct Peer {
    sock: UdpSocket,
    state: UdpSocketState,
}

impl Peer {
    fn bind(addr: &str) -> Self {
        let sock = UdpSocket::bind(addr).unwrap();
        let state = UdpSocketState::new((&sock).into()).unwrap();
        // Bursts of a few hundred datagrams must fit (the kernel caps this at rmem_max).
        let _ = state.set_recv_buffer_size((&sock).into(), 4 << 20);
        sock.set_nonblocking(true).unwrap();
        Self { sock, state }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn send(&self, to: SocketAddr, payload: &[u8], ecn: Option<EcnCodepoint>, seg: Option<usize>) {
        let t = Transmit {
            destination: to,
            ecn,
            contents: payload,
            segment_size: seg,
            src_ip: None,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = self.state.try_send((&self.sock).into(), &t) {
            assert!(Instant::now() < deadline, "peer send: {e}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Receives until `bytes` payload bytes arrived; returns (datagrams, each with its ECN).
    fn recv(&self, bytes: usize) -> Vec<(Vec<u8>, Option<EcnCodepoint>, SocketAddr)> {
        let mut out = Vec::new();
        let mut got = 0;
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(5);
        while got < bytes {
            assert!(Instant::now() < deadline, "peer got {got} of {bytes} bytes");
            let mut meta = [RecvMeta::default()];
            let mut slices = [IoSliceMut::new(&mut buf)];
            match self.state.recv((&self.sock).into(), &mut slices, &mut meta) {
                Ok(_) => {
                    let m = meta[0];
                    let stride = if m.stride == 0 { m.len } else { m.stride };
                    for d in buf[..m.len].chunks(stride) {
                        out.push((d.to_vec(), m.ecn, m.addr));
                    }
                    got += m.len;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        out
    }
}

/// Runs receive turns until `want` payloads arrived (or 5 s pass).
fn recv_n(dp: &mut UringDatapath, want: usize) -> Vec<(RxMeta, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want {
        assert!(
            Instant::now() < deadline,
            "received {} of {want}; counters {:?}",
            got.len(),
            dp.counters()
        );
        dp.recv(&mut |meta, payload| got.push((*meta, payload.to_vec())))
            .unwrap();
        if got.len() < want {
            dp.wait(Some(Duration::from_millis(20)), false).unwrap();
        }
    }
    got
}

fn transmit(
    batch: &mut TxBatch,
    dst: SocketAddr,
    src_port: u16,
    payload: &[u8],
    seg: Option<usize>,
) {
    assert!(batch.push_with(|buf| {
        buf.extend_from_slice(payload);
        Some(TxMeta {
            dst,
            src_ip: None,
            src_port,
            ecn: Some(Ecn::Ect0),
            segment_size: seg,
        })
    }));
}

/// Sends the whole batch, turning the loop until the kernel took it.
fn flush(dp: &mut UringDatapath, batch: &mut TxBatch) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !batch.is_empty() {
        assert!(Instant::now() < deadline, "send did not drain");
        dp.send(batch).unwrap();
        dp.wait(Some(Duration::from_millis(1)), !batch.is_empty())
            .unwrap();
    }
    dp.wait(Some(Duration::from_millis(1)), false).unwrap();
}

fn roundtrip(listen: &str, peer_addr: &str, want_dst: &str) {
    let Some(mut dp) = open(&settings(listen)) else {
        return;
    };
    let local = dp.capabilities().local_addrs[0];
    let port = local.port();
    let server: SocketAddr = SocketAddr::new(want_dst.parse().unwrap(), port);
    let peer = Peer::bind(peer_addr);

    peer.send(server, b"hello", Some(EcnCodepoint::Ect0), None);
    let got = recv_n(&mut dp, 1);
    let (meta, payload) = &got[0];
    assert_eq!(payload, b"hello");
    assert_eq!(meta.ecn, Some(Ecn::Ect0), "ECN mark arrives");
    assert_eq!(meta.stride, 5);
    assert_eq!(meta.dst_port, port);
    let dst_ip = meta.dst_ip.expect("pktinfo gives our address");
    let want: IpAddr = want_dst.parse().unwrap();
    assert!(
        dst_ip == want
            || dst_ip
                == IpAddr::V6(match want {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                }),
        "dst_ip {dst_ip} for {want}"
    );
    // The peer as the backend saw it: IPv4-mapped on a dual-stack socket.
    let seen_peer = meta.src;
    assert_eq!(seen_peer.port(), peer.addr().port());

    // Reply: a GSO batch of three datagrams (300 + 300 + 100 bytes), ECT(0), from our address.
    let mut batch = TxBatch::new(4, 65536);
    let reply: Vec<u8> = (0..700u32).map(|i| i as u8).collect();
    assert!(batch.push_with(|buf| {
        buf.extend_from_slice(&reply);
        Some(TxMeta {
            dst: seen_peer,
            src_ip: Some(dst_ip),
            src_port: port,
            ecn: Some(Ecn::Ect0),
            segment_size: Some(300),
        })
    }));
    flush(&mut dp, &mut batch);
    let datagrams = peer.recv(700);
    let sizes: Vec<usize> = datagrams.iter().map(|d| d.0.len()).collect();
    assert_eq!(sizes, [300, 300, 100], "GSO split into datagrams");
    assert_eq!(datagrams.concat_payload(), reply);
    for (_, ecn, from) in &datagrams {
        assert_eq!(*ecn, Some(EcnCodepoint::Ect0), "our ECN mark arrives");
        assert_eq!(from.port(), port, "sent from the served port");
    }
    let c = dp.uring_counters().clone();
    assert_eq!((c.tx_transmits, c.tx_datagrams, c.tx_ecn_marked), (1, 3, 3));
    assert_eq!(c.rx_ecn_ect0, 1);
    dp.close();
    assert!(dp.ledger().balanced(), "{:?}", dp.ledger());
}

trait Concat {
    fn concat_payload(&self) -> Vec<u8>;
}

impl Concat for Vec<(Vec<u8>, Option<EcnCodepoint>, SocketAddr)> {
    fn concat_payload(&self) -> Vec<u8> {
        self.iter().flat_map(|d| d.0.iter().copied()).collect()
    }
}

#[test]
fn ipv4_roundtrip_with_ecn_pktinfo_and_gso() {
    roundtrip("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1");
}

#[test]
fn ipv6_roundtrip_with_ecn_pktinfo_and_gso() {
    roundtrip("[::1]:0", "[::1]:0", "::1");
}

#[test]
fn dual_stack_serves_ipv4_and_ipv6_peers() {
    roundtrip("[::]:0", "127.0.0.1:0", "127.0.0.1");
    roundtrip("[::]:0", "[::1]:0", "::1");
}

#[test]
fn gro_batch_arrives_as_one_buffer_with_its_stride() {
    let Some(mut dp) = open(&settings("127.0.0.1:0")) else {
        return;
    };
    let server = dp.capabilities().local_addrs[0];
    let peer = Peer::bind("127.0.0.1:0");
    // On loopback a GSO send reaches a UDP_GRO socket as one batch.
    let data: Vec<u8> = (0..2500u32).map(|i| (i * 7) as u8).collect();
    peer.send(server, &data, Some(EcnCodepoint::Ect0), Some(1000));
    let mut got = Vec::new();
    let mut strides = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < data.len() {
        assert!(Instant::now() < deadline, "got {} bytes", got.len());
        dp.recv(&mut |meta, payload| {
            strides.push(meta.stride);
            got.extend_from_slice(payload);
        })
        .unwrap();
        dp.wait(Some(Duration::from_millis(20)), false).unwrap();
    }
    assert_eq!(got, data);
    let c = dp.uring_counters();
    assert_eq!(c.rx_datagrams, 3);
    assert_eq!(c.rx_ecn_ect0, 3, "each datagram of the batch counted");
    if c.rx_gro_batches > 0 {
        assert_eq!(strides, [1000]);
    } else {
        eprintln!("note: the kernel delivered the batch segmented: {strides:?}");
    }
}

#[test]
fn small_buffers_turn_gro_off_and_clamp_the_payload() {
    let mut s = settings("127.0.0.1:0");
    s.buffer_size = 2048;
    let Some(dp) = open(&s) else {
        return;
    };
    assert!(dp.sockets.iter().all(|s| !s.gro));
    assert_eq!(dp.capabilities().max_udp_payload, Some(2048));
}

#[test]
fn running_out_of_buffers_rearms_and_loses_nothing() {
    let mut s = settings("127.0.0.1:0");
    s.buffers = 8;
    let Some(mut dp) = open(&s) else {
        return;
    };
    let server = dp.capabilities().local_addrs[0];
    let peer = Peer::bind("127.0.0.1:0");
    const N: usize = 100;
    for i in 0..N {
        peer.send(server, &[i as u8; 100], None, None);
    }
    // Nobody reads while they arrive: the 8 buffers fill, the multishot ends with ENOBUFS and
    // the rest waits in the socket.
    std::thread::sleep(Duration::from_millis(50));
    let got = recv_n(&mut dp, N);
    let mut firsts: Vec<u8> = got.iter().map(|(_, p)| p[0]).collect();
    firsts.sort_unstable();
    assert_eq!(firsts, (0..N as u8).collect::<Vec<_>>());
    let c = dp.uring_counters();
    assert!(c.rx_no_buffers > 0, "ENOBUFS seen and counted: {c:?}");
    assert_eq!(c.rx_datagrams, N as u64);
    assert_eq!(c.rx_errors, 0);
    dp.close();
    assert!(dp.ledger().balanced());
}

/// A completion queue far too small: the kernel keeps the overflow aside and flags it, the
/// multishot receive it could not post to ends, and the backend flushes, re-arms and loses
/// nothing.
#[test]
fn completion_queue_overflow_is_flushed_and_receives_rearmed() {
    let mut s = settings("127.0.0.1:0");
    s.buffers = 512;
    let dp = match UringDatapath::open_sized(&s, Some(128)) {
        Ok(dp) => dp,
        Err(e @ UringError::Setup { .. }) => return eprintln!("skipping: {e}"),
        Err(e) => panic!("{e}"),
    };
    let mut dp = dp;
    let server = dp.capabilities().local_addrs[0];
    let port = server.port();
    let peer = Peer::bind("127.0.0.1:0");
    const N: usize = 300;
    for i in 0..N {
        peer.send(server, &(i as u16).to_be_bytes(), None, None);
    }
    // Completions are posted as the kernel runs our task work: a sleep is a syscall.
    std::thread::sleep(Duration::from_millis(50));
    // And 64 sends whose completions also find the queue full.
    let mut batch = TxBatch::new(64, 2048);
    for _ in 0..64 {
        transmit(&mut batch, peer.addr(), port, b"pong", None);
    }
    dp.send(&mut batch).unwrap();
    assert!(batch.is_empty());
    let got = recv_n(&mut dp, N);
    let mut ids: Vec<u16> = got
        .iter()
        .map(|(_, p)| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..N as u16).collect::<Vec<_>>(),
        "every datagram once"
    );
    assert_eq!(peer.recv(64 * 4).len(), 64);
    let (c, r) = (dp.uring_counters().clone(), dp.ring_counters().clone());
    assert!(r.cq_overflow > 0, "overflow flagged: {r:?}");
    assert_eq!(r.cq_dropped, 0, "NODROP kept every completion: {r:?}");
    assert!(
        c.rx_rearmed > 0,
        "the multishot ended and was re-armed: {c:?}"
    );
    dp.close();
    assert!(dp.ledger().balanced());
    assert_eq!(dp.ring.sends_in_flight(), 0);
}

#[test]
fn zero_copy_sends_complete_and_free_their_slots() {
    let mut s = settings("127.0.0.1:0");
    s.send_zc = true;
    let Some(mut dp) = open(&s) else {
        return;
    };
    let port = dp.capabilities().local_addrs[0].port();
    let peer = Peer::bind("127.0.0.1:0");
    let mut batch = TxBatch::new(8, 65536);
    for i in 0..8u8 {
        transmit(&mut batch, peer.addr(), port, &[i; 1200], None);
    }
    flush(&mut dp, &mut batch);
    let got = peer.recv(8 * 1200);
    assert_eq!(got.len(), 8);
    dp.close();
    assert_eq!(
        dp.ring.sends_in_flight(),
        0,
        "notifications freed every slot"
    );
    assert_eq!(dp.uring_counters().tx_datagrams, 8);
}

#[test]
fn more_transmits_than_slots_wait_for_completions() {
    let Some(mut dp) = open(&settings("127.0.0.1:0")) else {
        return;
    };
    let port = dp.capabilities().local_addrs[0].port();
    let peer = Peer::bind("127.0.0.1:0");
    let total = 3 * SEND_SLOTS as usize;
    let mut sent = 0;
    let mut batch = TxBatch::new(total, 2048);
    let to = peer.addr();
    while sent < total {
        transmit(&mut batch, to, port, &[7; 500], None);
        sent += 1;
    }
    // The peer reads while we send, so its socket buffer never overflows.
    let reader = std::thread::spawn(move || peer.recv(total * 500).len());
    // One send call takes at most SEND_SLOTS; the rest waits in the batch.
    dp.send(&mut batch).unwrap();
    assert!(batch.len() >= total - SEND_SLOTS as usize);
    flush(&mut dp, &mut batch);
    assert_eq!(reader.join().unwrap(), total);
    assert!(dp.uring_counters().tx_slots_full > 0);
}

#[test]
fn transmits_nobody_can_send_are_dropped_and_counted() {
    let Some(mut dp) = open(&settings("127.0.0.1:0")) else {
        return;
    };
    let port = dp.capabilities().local_addrs[0].port();
    let mut batch = TxBatch::new(4, 2048);
    // Wrong source port; IPv6 destination on an IPv4 socket.
    transmit(
        &mut batch,
        "127.0.0.1:9".parse().unwrap(),
        port.wrapping_add(1),
        b"x",
        None,
    );
    transmit(&mut batch, "[::1]:9".parse().unwrap(), port, b"x", None);
    dp.send(&mut batch).unwrap();
    assert!(batch.is_empty());
    assert_eq!(dp.uring_counters().tx_no_socket, 2);
}

#[test]
fn refusal_messages_say_why_and_what_to_do() {
    let e = UringError::setup(io::Error::from_raw_os_error(libc::ENOSYS)).to_string();
    assert!(e.contains("io_uring_setup failed"), "{e}");
    assert!(
        e.contains("seccomp") && e.contains("backend = \"socket\""),
        "{e}"
    );
    let e = UringError::setup(io::Error::from_raw_os_error(libc::EPERM)).to_string();
    assert!(e.contains("kernel.io_uring_disabled"), "{e}");
    assert!(e.contains("backend = \"socket\""), "{e}");
}

/// The kernel is pointed at the batch's own buffers (no copy into the send slots), and every
/// lent buffer comes back to the batch once its send is done: zero-copy sends and GSO batches
/// split for lack of GSO (several requests reading one buffer) included.
#[test]
fn sends_read_the_batch_buffers_in_place_and_give_them_back() {
    for (zero_copy, split) in [(false, false), (true, false), (false, true)] {
        let mut s = settings("127.0.0.1:0");
        s.send_zc = zero_copy;
        let Some(mut dp) = open(&s) else {
            return;
        };
        dp.gso_broken = split;
        let port = dp.capabilities().local_addrs[0].port();
        let peer = Peer::bind("127.0.0.1:0");
        let mut batch = TxBatch::new(8, 4096);
        for i in 0..4u8 {
            transmit(&mut batch, peer.addr(), port, &[i; 3000], Some(1000));
        }
        let queued: Vec<(*const u8, usize)> = batch
            .queued()
            .iter()
            .map(|t| (t.buf.as_ptr(), t.buf.len()))
            .collect();
        dp.send(&mut batch).unwrap();
        assert!(batch.is_empty());
        // Queued, not yet submitted (that is the next enter): every request still in flight.
        let mut submitted = dp.ring.payloads_in_flight();
        submitted.sort();
        let mut want: Vec<(*const u8, usize)> = if split {
            queued
                .iter()
                .flat_map(|&(p, _)| (0..3).map(move |k| (p.wrapping_add(k * 1000), 1000)))
                .collect()
        } else {
            queued
        };
        want.sort();
        assert_eq!(submitted, want, "zc {zero_copy} split {split}");
        let lent = batch.ledger();
        assert_eq!((lent.lent, lent.queued), (4, 0), "{lent:?}");
        assert!(lent.balanced());

        dp.wait(Some(Duration::from_millis(1)), false).unwrap(); // submits
        let got = peer.recv(4 * 3000);
        assert_eq!(got.len(), 12);
        // Turns until every buffer came back to the batch.
        let deadline = Instant::now() + Duration::from_secs(5);
        while batch.ledger().lent > 0 {
            assert!(Instant::now() < deadline, "{:?}", batch.ledger());
            dp.wait(Some(Duration::from_millis(5)), false).unwrap();
            dp.send(&mut batch).unwrap();
        }
        let ledger = batch.ledger();
        assert!(ledger.all_home(), "{ledger:?}");
        assert_eq!(ledger.pool, SEND_SLOTS as usize);
        assert_eq!(dp.ring.loans_out(), 0);
        dp.close();
        assert_eq!(dp.ring.sends_in_flight(), 0);
    }
}

/// A wait with nothing to receive ends when another thread signals the wake-up descriptor
/// (the handoff between workers), and again after the multishot poll saw a first signal.
#[test]
fn wait_ends_when_the_wake_descriptor_is_signalled() {
    use crate::datapath::wake::Wake;
    use std::os::fd::{AsFd, AsRawFd};
    use std::sync::Arc;

    let Some(mut dp) = open(&settings("127.0.0.1:0")) else {
        return;
    };
    let wake = Arc::new(Wake::new().unwrap());
    assert!(dp.wake_on(wake.as_fd().as_raw_fd()));
    for round in 0..2 {
        let signaller = {
            let wake = wake.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                wake.signal().unwrap();
            })
        };
        let started = Instant::now();
        // Far longer than the signal takes: a wait that ignored the descriptor sleeps it out.
        dp.wait(Some(Duration::from_secs(30)), false).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "round {round}: the wait did not end on the signal"
        );
        signaller.join().unwrap();
        wake.clear();
        // Take the poll's completion, as the next turn's receive would.
        dp.recv(&mut |_, _| {}).unwrap();
    }
}
