//! The RIO state machine against the fake kernel (`../fake.rs`).

use std::net::SocketAddr;

use super::*;
use crate::datapath::rio::fake::{FakeRio, RecvInfo};
use crate::datapath::rio::layout::{COALESCED_SLOT, DATAGRAM_SLOT};
use crate::datapath::{Ecn, TxMeta};

const PEER4: &str = "198.51.100.7:50000";
const PEER6: &str = "[2001:db8::7]:50000";

struct Setup {
    locals: Vec<SocketAddr>,
    receive_queue: u32,
    send_queue: u32,
    batch: u32,
    offload: bool,
    coalescing: bool,
    /// The fake's per-socket limits, when they differ from the engine's queue sizes.
    kernel_send_limit: Option<usize>,
}

impl Setup {
    fn new(locals: &[&str]) -> Self {
        Self {
            locals: locals.iter().map(|a| a.parse().unwrap()).collect(),
            receive_queue: 4,
            send_queue: 4,
            batch: 16,
            offload: true,
            coalescing: true,
            kernel_send_limit: None,
        }
    }

    fn build(&self) -> RioEngine<FakeRio> {
        let n = self.locals.len() as u32;
        let layout = Layout::new(
            self.receive_queue * n,
            if self.coalescing {
                COALESCED_SLOT
            } else {
                DATAGRAM_SLOT
            },
            self.send_queue,
            if self.offload {
                COALESCED_SLOT
            } else {
                DATAGRAM_SLOT
            },
        )
        .unwrap();
        let fake = FakeRio::new(
            layout.total_len(),
            &self.locals,
            self.receive_queue as usize,
            self.kernel_send_limit.unwrap_or(self.send_queue as usize),
        );
        let opts = EngineOptions {
            receive_queue: self.receive_queue,
            send_queue: self.send_queue,
            completion_batch: self.batch,
            send_offload: self.offload,
            dont_fragment: true,
        };
        RioEngine::new(fake, &self.locals, layout, opts).unwrap()
    }
}

fn meta(dst: &str, src_port: u16) -> TxMeta {
    TxMeta {
        dst: dst.parse().unwrap(),
        src_ip: None,
        src_port,
        ecn: None,
        segment_size: None,
    }
}

fn push(batch: &mut TxBatch, m: TxMeta, payload: &[u8]) {
    assert!(batch.push_with(|buf| {
        buf.extend_from_slice(payload);
        Some(m)
    }));
}

/// Receives one turn, collecting what was handed over.
fn recv_all(e: &mut RioEngine<FakeRio>) -> Vec<(RxMeta, Vec<u8>)> {
    let mut got = Vec::new();
    let n = e
        .recv(&mut |m: &RxMeta, d: &[u8]| got.push((*m, d.to_vec())))
        .unwrap();
    assert_eq!(n, got.len());
    got
}

fn assert_balanced_after_close(e: &mut RioEngine<FakeRio>) {
    e.close();
    let (rx, tx) = e.ledgers();
    assert_eq!((rx.held, rx.posted, tx.held, tx.posted), (0, 0, 0, 0));
    assert_eq!(e.queues().outstanding_count(), 0);
    assert_eq!(e.rio_counters().ledger_errors, 0);
}

#[test]
fn start_posts_every_receive_deferred_with_one_commit_per_socket() {
    let mut e = Setup::new(&["127.0.0.1:4433", "[::]:4433"]).build();
    let (rx, tx) = e.ledgers();
    assert_eq!((rx.posted, rx.free, tx.free), (8, 0, 4));
    let f = e.queues();
    for s in &f.sockets {
        assert_eq!(s.recv_active.len(), 4, "committed, so started");
        assert_eq!(s.receive_calls, 4);
        assert_eq!(s.receive_commits, 1);
        assert_eq!(
            s.undeferred, 0,
            "every receive is posted with RIO_MSG_DEFER"
        );
    }
}

#[test]
fn receives_are_handed_over_with_their_metadata_and_reposted() {
    let mut e = Setup::new(&["127.0.0.1:4433", "[::]:4434"]).build();
    let f = e.queues();
    let info = RecvInfo {
        dst_ip: Some("127.0.0.1".parse().unwrap()),
        ecn: Some(Ecn::Ect0),
        ..RecvInfo::default()
    };
    assert!(f.deliver(0, PEER4.parse().unwrap(), b"hello", info));
    // Through the dual-stack socket: an IPv4 peer arrives IPv4-mapped, with IPV6_PKTINFO.
    let info6 = RecvInfo {
        dst_ip: Some("::ffff:192.0.2.1".parse().unwrap()),
        ecn: Some(Ecn::Ce),
        coalesced: Some(1000),
        ..RecvInfo::default()
    };
    let big = vec![7u8; 2500];
    assert!(f.deliver(1, PEER4.parse().unwrap(), &big, info6));
    assert!(f.deliver(1, PEER6.parse().unwrap(), b"six", RecvInfo::default()));

    let got = recv_all(&mut e);
    assert_eq!(got.len(), 3);
    let (m, d) = &got[0];
    assert_eq!(d, b"hello");
    assert_eq!(m.src, PEER4.parse().unwrap());
    assert_eq!(m.dst_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!((m.dst_port, m.ecn, m.stride), (4433, Some(Ecn::Ect0), 5));
    let (m, d) = &got[1];
    assert_eq!(d.len(), 2500);
    assert_eq!(m.src, PEER4.parse().unwrap(), "unmapped for the driver");
    assert_eq!(m.dst_ip, Some("192.0.2.1".parse().unwrap()));
    assert_eq!((m.dst_port, m.ecn, m.stride), (4434, Some(Ecn::Ce), 1000));
    let (m, _) = &got[2];
    assert_eq!(m.src, PEER6.parse().unwrap());
    assert_eq!((m.dst_ip, m.ecn), (None, None));

    let c = e.rio_counters().clone();
    assert_eq!((c.rx_datagrams, c.rx_bytes, c.rx_coalesced), (5, 2508, 1));
    // Every slot went straight back: the kernel has all receives again, one commit each.
    let (rx, _) = e.ledgers();
    assert_eq!(rx.posted, 8);
    let f = e.queues();
    assert_eq!(f.dequeue_calls, 1, "one RIODequeueCompletion per turn");
    assert_eq!(f.sockets[0].receive_commits, 2);
    assert_eq!(f.sockets[1].receive_commits, 2);
    assert_eq!(f.sockets[1].recv_active.len(), 4);
    assert_balanced_after_close(&mut e);
}

#[test]
fn completions_are_drained_in_batches_one_dequeue_per_turn() {
    let mut s = Setup::new(&["127.0.0.1:4433"]);
    s.receive_queue = 8;
    s.batch = 3;
    let mut e = s.build();
    for i in 0..7u8 {
        assert!(e
            .queues()
            .deliver(0, PEER4.parse().unwrap(), &[i], RecvInfo::default()));
    }
    let mut order = Vec::new();
    let mut turns = Vec::new();
    loop {
        let got = recv_all(&mut e);
        if got.is_empty() {
            break;
        }
        turns.push(got.len());
        order.extend(got.into_iter().map(|(_, d)| d[0]));
    }
    assert_eq!(turns, [3, 3, 1]);
    assert_eq!(order, [0, 1, 2, 3, 4, 5, 6], "in completion order");
    assert_eq!(e.queues().dequeue_calls, 4);
    assert_balanced_after_close(&mut e);
}

#[test]
fn receive_errors_are_counted_and_the_slot_reposted() {
    let mut e = Setup::new(&["127.0.0.1:4433"]).build();
    let f = e.queues();
    let err = |status| RecvInfo {
        status,
        ..RecvInfo::default()
    };
    f.deliver(0, PEER4.parse().unwrap(), b"x", err(queues::WSAECONNRESET));
    f.deliver(0, PEER4.parse().unwrap(), b"y", err(queues::WSAEMSGSIZE));
    f.deliver(0, PEER4.parse().unwrap(), b"ok", RecvInfo::default());
    let got = recv_all(&mut e);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, b"ok");
    let c = e.rio_counters();
    assert_eq!((c.rx_errors, c.rx_truncated), (1, 1));
    assert_eq!(e.ledgers().0.posted, 4, "no receive slot lost");
    assert_balanced_after_close(&mut e);
}

#[test]
fn oversized_datagrams_are_truncated_and_dropped() {
    let mut s = Setup::new(&["127.0.0.1:4433"]);
    s.coalescing = false;
    let mut e = s.build();
    let big = vec![1u8; DATAGRAM_SLOT as usize + 1];
    assert!(e
        .queues()
        .deliver(0, PEER4.parse().unwrap(), &big, RecvInfo::default()));
    assert!(recv_all(&mut e).is_empty());
    assert_eq!(e.rio_counters().rx_truncated, 1);
    assert_eq!(
        e.capabilities().max_udp_payload,
        Some(DATAGRAM_SLOT as u16),
        "the QUIC payload limit follows the slot size"
    );
    assert_balanced_after_close(&mut e);
}

#[test]
fn sends_are_deferred_and_committed_once_per_turn_with_their_control_data() {
    let mut e = Setup::new(&["127.0.0.1:4433", "[::]:4434"]).build();
    let mut batch = TxBatch::new(8, 65536);
    let mut m = meta(PEER4, 4433);
    m.ecn = Some(Ecn::Ect0);
    m.src_ip = Some("127.0.0.1".parse().unwrap());
    push(&mut batch, m, b"first");
    // Through the dual-stack socket to an IPv4 peer: IPv4-mapped on the wire, IP_* options.
    let mut m = meta(PEER4, 4434);
    m.ecn = Some(Ecn::Ect1);
    m.segment_size = Some(1200);
    let gso: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    push(&mut batch, m, &gso);
    let mut m = meta(PEER6, 4434);
    m.src_ip = Some("2001:db8::1".parse().unwrap());
    push(&mut batch, m, b"six");
    e.send(&mut batch).unwrap();
    assert!(batch.is_empty());

    let f = e.queues();
    assert_eq!(f.sockets[0].send_commits, 1);
    assert_eq!(f.sockets[1].send_commits, 1);
    assert_eq!(f.sockets[1].send_calls, 2);
    assert_eq!(f.sockets.iter().map(|s| s.undeferred).sum::<usize>(), 0);
    assert_eq!(f.transmit(usize::MAX), 3);
    let w = &f.wire;
    assert_eq!(w[0].data, b"first");
    assert_eq!(w[0].to, PEER4.parse().unwrap());
    assert_eq!((w[0].family, w[0].ecn), (2, Some(Ecn::Ect0)));
    assert_eq!(w[0].src_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(w[1].data, gso, "one request with UDP_SEND_MSG_SIZE");
    assert_eq!((w[1].family, w[1].segment), (23, Some(1200)));
    assert_eq!(w[1].to, PEER4.parse().unwrap());
    assert_eq!(w[1].ecn, Some(Ecn::Ect1));
    assert_eq!(w[2].src_ip, Some("2001:db8::1".parse().unwrap()));
    assert_eq!((w[2].ecn, w[2].segment), (None, None));

    // The completions free the slots in the next receive turn.
    assert_eq!(e.ledgers().1.posted, 3);
    assert!(recv_all(&mut e).is_empty());
    assert_eq!(e.ledgers().1.free, 4);
    let c = e.rio_counters();
    assert_eq!((c.tx_transmits, c.tx_requests, c.tx_datagrams), (3, 3, 5));
    assert_eq!(c.tx_bytes, 5 + 3000 + 3);
    assert_balanced_after_close(&mut e);
}

#[test]
fn without_send_offload_segment_batches_are_split() {
    let mut s = Setup::new(&["127.0.0.1:4433"]);
    s.offload = false;
    let mut e = s.build();
    assert_eq!(e.capabilities().max_tx_segments, 1);
    let mut batch = TxBatch::new(4, 65536);
    let mut m = meta(PEER4, 4433);
    m.segment_size = Some(1200);
    let gso: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    push(&mut batch, m, &gso);
    e.send(&mut batch).unwrap();
    assert!(batch.is_empty());
    let f = e.queues();
    f.transmit(usize::MAX);
    let lens: Vec<usize> = f.wire.iter().map(|s| s.data.len()).collect();
    assert_eq!(lens, [1200, 1200, 100]);
    assert!(f.wire.iter().all(|s| s.segment.is_none()));
    let joined: Vec<u8> = f.wire.iter().flat_map(|s| s.data.clone()).collect();
    assert_eq!(joined, gso);
    assert_eq!(
        f.sockets[0].send_commits, 1,
        "still one commit for the turn"
    );
    let c = e.rio_counters();
    assert_eq!((c.tx_split, c.tx_requests, c.tx_datagrams), (1, 3, 3));
    assert_balanced_after_close(&mut e);
}

#[test]
fn a_full_send_queue_keeps_the_rest_queued_and_counts_it() {
    let mut e = Setup::new(&["127.0.0.1:4433"]).build();
    let mut batch = TxBatch::new(8, 2048);
    for i in 0..6u8 {
        push(&mut batch, meta(PEER4, 4433), &[i; 10]);
    }
    e.send(&mut batch).unwrap();
    assert_eq!(batch.len(), 2, "four slots, four sends in flight");
    assert_eq!(e.rio_counters().tx_queue_full, 1);
    // Still full: nothing completed yet.
    e.send(&mut batch).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(e.rio_counters().tx_queue_full, 2);
    // Two go out and complete; the next turn frees them and sends the rest, in order.
    e.queues().transmit(2);
    recv_all(&mut e);
    e.send(&mut batch).unwrap();
    assert!(batch.is_empty());
    e.queues().transmit(usize::MAX);
    let order: Vec<u8> = e.queues().wire.iter().map(|s| s.data[0]).collect();
    assert_eq!(order, [0, 1, 2, 3, 4, 5]);
    assert_balanced_after_close(&mut e);
}

#[test]
fn a_kernel_that_refuses_with_enobufs_loses_nothing() {
    let mut s = Setup::new(&["127.0.0.1:4433"]);
    s.kernel_send_limit = Some(2);
    let mut e = s.build();
    let mut batch = TxBatch::new(8, 2048);
    for i in 0..3u8 {
        push(&mut batch, meta(PEER4, 4433), &[i; 10]);
    }
    e.send(&mut batch).unwrap();
    assert_eq!(batch.len(), 1, "the third stays queued");
    assert_eq!(e.rio_counters().tx_queue_full, 1);
    assert_eq!(e.ledgers().1.held, 0, "the refused slot went back");
    e.queues().transmit(usize::MAX);
    recv_all(&mut e);
    e.send(&mut batch).unwrap();
    assert!(batch.is_empty());
    e.queues().transmit(usize::MAX);
    assert_eq!(e.queues().wire.len(), 3);
    assert_eq!(e.rio_counters().tx_dropped, 0);
    assert_balanced_after_close(&mut e);
}

#[test]
fn failed_posts_are_counted_and_lose_no_slot() {
    let mut s = Setup::new(&["127.0.0.1:4433"]);
    s.offload = false;
    let mut e = s.build();
    let mut batch = TxBatch::new(8, 65536);
    // A split transmit whose second request is refused (WSAEINVAL): its first datagram is out,
    // the other two are dropped and counted.
    let mut m = meta(PEER4, 4433);
    m.segment_size = Some(1000);
    push(&mut batch, m, &[9u8; 3000]);
    // Refused outright: dropped and counted.
    push(&mut batch, meta(PEER4, 4433), b"refused");
    push(&mut batch, meta(PEER4, 4433), b"fine");
    e.queues().fail_sends.extend([0, 10022, 10022]);
    e.send(&mut batch).unwrap();
    assert!(batch.is_empty());
    let c = e.rio_counters();
    assert_eq!((c.tx_post_errors, c.tx_dropped, c.tx_failed), (2, 3, 2));
    assert_eq!((c.tx_transmits, c.tx_requests), (1, 2));
    assert_eq!(e.ledgers().1.held, 0);
    e.queues().transmit(usize::MAX);
    let lens: Vec<usize> = e.queues().wire.iter().map(|s| s.data.len()).collect();
    assert_eq!(lens, [1000, 4]);

    // A receive that cannot be posted again: counted, and the slot posted by the same turn's
    // replenish.
    e.queues()
        .deliver(0, PEER4.parse().unwrap(), b"x", RecvInfo::default());
    e.queues().fail_receives.push_back(10022);
    assert_eq!(recv_all(&mut e).len(), 1);
    assert_eq!(e.rio_counters().rx_post_errors, 1);
    assert_eq!(e.ledgers().0.posted, 4);
    assert_balanced_after_close(&mut e);
}

#[test]
fn a_socket_without_any_receive_fails_the_start() {
    let s = Setup::new(&["127.0.0.1:4433"]);
    let layout = Layout::new(4, DATAGRAM_SLOT, 4, DATAGRAM_SLOT).unwrap();
    let mut fake = FakeRio::new(layout.total_len(), &s.locals, 4, 4);
    fake.fail_receives.push_back(10055);
    let opts = EngineOptions {
        receive_queue: 4,
        send_queue: 4,
        completion_batch: 4,
        send_offload: false,
        dont_fragment: true,
    };
    let err = RioEngine::new(fake, &s.locals, layout, opts)
        .err()
        .expect("no receive could be posted");
    assert!(err.to_string().contains("127.0.0.1:4433"), "{err}");
}

#[test]
fn transmits_that_cannot_be_sent_are_dropped_and_counted() {
    let mut s = Setup::new(&["127.0.0.1:4433", "[::1]:4433"]);
    s.offload = false;
    let mut e = s.build();
    let mut batch = TxBatch::new(8, 65536);
    push(&mut batch, meta(PEER4, 9999), b"no socket on this port");
    push(
        &mut batch,
        meta(PEER4, 4433),
        &[0u8; DATAGRAM_SLOT as usize + 1],
    );
    let mut m = meta(PEER4, 4433);
    m.segment_size = Some(100);
    push(&mut batch, m, &[0u8; 500]); // five requests, but only four send slots
    push(&mut batch, meta(PEER4, 4433), b"ok");
    e.send(&mut batch).unwrap();
    assert!(batch.is_empty(), "nothing waits forever");
    let c = e.rio_counters();
    assert_eq!((c.tx_no_socket, c.tx_too_large, c.tx_transmits), (1, 2, 1));
    // An IPv6-only socket does not serve IPv4 peers; [::1] serves IPv6 ones.
    assert_eq!(e.socket_for(4433, &PEER6.parse().unwrap()), Some(1));
    assert_balanced_after_close(&mut e);
}

#[test]
fn bogus_and_duplicate_completions_never_hand_out_a_slot_twice() {
    let mut e = Setup::new(&["127.0.0.1:4433"]).build();
    let mut batch = TxBatch::new(2, 64);
    push(&mut batch, meta(PEER4, 4433), b"a");
    e.send(&mut batch).unwrap();
    e.queues().transmit(1);
    let real = *e.queues().cq.back().unwrap();
    e.queues().inject(real); // a duplicate
    e.queues().inject(Completion {
        status: 0,
        bytes: 1,
        context: 12345, // not a token
    });
    e.queues().inject(Completion {
        status: 0,
        bytes: 1,
        context: SlotToken::new(CLASS_RX, 9, 0).to_u64(), // no such socket
    });
    recv_all(&mut e);
    assert_eq!(e.rio_counters().ledger_errors, 3);
    let (rx, tx) = e.ledgers();
    assert_eq!((rx.posted, tx.free), (4, 4));
    e.close();
    let (rx, tx) = e.ledgers();
    assert_eq!(
        (rx.free, tx.free),
        (4, 4),
        "balanced despite the bogus completions"
    );
}

#[test]
fn wait_arms_the_notification_once_and_sleeps_on_it() {
    let mut e = Setup::new(&["127.0.0.1:4433"]).build();
    e.queues().wait_transmits = false;
    e.wait(Some(Duration::from_millis(5)), false).unwrap();
    e.wait(Some(Duration::from_millis(5)), false).unwrap();
    assert_eq!(
        e.queues().notify_calls,
        1,
        "still armed after a timeout: RIONotify is not called again"
    );
    e.queues()
        .deliver(0, PEER4.parse().unwrap(), b"x", RecvInfo::default());
    e.wait(None, false).unwrap();
    assert!(!e.queues().armed, "fired");
    assert_eq!(recv_all(&mut e).len(), 1);
    e.wait(Some(Duration::from_millis(5)), true).unwrap();
    assert_eq!(e.queues().notify_calls, 2, "re-armed after it fired");
    assert_eq!(e.rio_counters().notifies, 2);
}

#[test]
fn close_lets_sends_finish_and_brings_every_slot_home() {
    let mut e = Setup::new(&["127.0.0.1:4433", "[::]:4433"]).build();
    let mut batch = TxBatch::new(8, 64);
    for i in 0..3u8 {
        push(&mut batch, meta(PEER4, 4433), &[i]);
    }
    e.send(&mut batch).unwrap();
    assert_eq!(e.ledgers().1.posted, 3);
    e.close();
    assert_eq!(
        e.queues().wire.len(),
        3,
        "in-flight sends went out before the close"
    );
    let (rx, tx) = e.ledgers();
    assert_eq!((rx.free, tx.free), (8, 4));
    assert!(e.queues().closed);
}

/// Random traffic, errors and full queues against the fake: after every turn the ledger and
/// the fake kernel agree on what is outstanding, nothing is lost without a counter, and the
/// close balances the books.
#[test]
fn random_turns_keep_ledger_and_kernel_in_agreement() {
    let mut s = Setup::new(&["127.0.0.1:4433", "[::]:4434"]);
    s.receive_queue = 6;
    s.send_queue = 5;
    s.batch = 4;
    s.offload = false;
    s.kernel_send_limit = Some(4);
    let mut e = s.build();
    let mut batch = TxBatch::new(16, 8192);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut delivered, mut received, mut pushed) = (0u64, 0u64, 0u64);
    for _ in 0..3000 {
        match next() % 6 {
            0 | 1 => {
                let sock = (next() % 2) as usize;
                let peer = if next() % 2 == 0 { PEER4 } else { PEER6 };
                let sock = if peer == PEER6 { 1 } else { sock };
                let status = if next() % 10 == 0 {
                    queues::WSAECONNRESET
                } else {
                    0
                };
                let info = RecvInfo {
                    status,
                    ..RecvInfo::default()
                };
                if e.queues()
                    .deliver(sock, peer.parse().unwrap(), &[1, 2, 3], info)
                    && status == 0
                {
                    delivered += 1;
                }
            }
            2 => received += recv_all(&mut e).len() as u64,
            3 => {
                while !batch.is_full() && next() % 3 != 0 {
                    let mut m = meta(PEER4, if next() % 2 == 0 { 4433 } else { 4434 });
                    let len = 1 + (next() % 3000) as usize;
                    m.segment_size = (len > 1200).then_some(1200);
                    push(&mut batch, m, &vec![5u8; len]);
                    pushed += 1;
                }
                if next() % 7 == 0 {
                    e.queues().fail_sends.push_back(10022);
                }
                e.send(&mut batch).unwrap();
            }
            4 => {
                let status = if next() % 8 == 0 { 10065 } else { 0 };
                let n = (next() % 4) as usize;
                e.queues().transmit_with(n, status);
            }
            _ => e.wait(Some(Duration::ZERO), !batch.is_empty()).unwrap(),
        }
        let (rx, tx) = e.ledgers();
        assert_eq!(rx.held + tx.held, 0, "nothing held between turns");
        // Posted = still with the kernel, or completed and waiting in the completion queue,
        // or dequeued by a send that looked for slots and kept for the next receive.
        let kernel = e.queues().outstanding_count() + e.queues().cq.len() + e.pending.len();
        assert_eq!(rx.posted + tx.posted, kernel, "ledger and kernel disagree");
    }
    // Drain what is left, then close.
    loop {
        e.queues().transmit(usize::MAX);
        let n = recv_all(&mut e).len() as u64;
        received += n;
        e.send(&mut batch).unwrap();
        if n == 0 && batch.is_empty() && e.queues().cq.is_empty() && e.pending.is_empty() {
            break;
        }
    }
    assert_eq!(
        received, delivered,
        "every delivered datagram was handed over"
    );
    let c = e.rio_counters().clone();
    assert_eq!(
        pushed,
        c.tx_transmits + c.tx_too_large + c.tx_no_socket + c.tx_failed,
        "every transmit is sent or counted"
    );
    // The run reached what it is meant to exercise.
    assert!(delivered > 300 && c.tx_transmits > 300, "{delivered} {c:?}");
    assert!(
        c.tx_queue_full > 0 && c.tx_failed > 0 && c.tx_errors > 0,
        "{c:?}"
    );
    assert!(c.rx_errors > 0 && c.tx_split > 0, "{c:?}");
    assert_eq!(c.ledger_errors, 0);
    assert_balanced_after_close(&mut e);
}

#[test]
fn a_full_send_queue_reaps_completed_sends_and_keeps_receives_in_order() {
    let mut s = Setup::new(&["127.0.0.1:4433"]);
    s.offload = false;
    let mut e = s.build();
    let mut batch = TxBatch::new(8, 2048);
    for i in 0..4u8 {
        push(&mut batch, meta(PEER4, 4433), &[i; 100]);
    }
    e.send(&mut batch).unwrap();
    assert_eq!(e.ledgers().1.free, 0, "every send slot in flight");
    // A datagram arrives, then the kernel completes the four sends: all in the one queue.
    let peer = PEER4.parse().unwrap();
    assert!(e.queues().deliver(0, peer, b"first", RecvInfo::default()));
    e.queues().transmit(4);
    push(&mut batch, meta(PEER4, 4433), b"fifth");
    e.send(&mut batch).unwrap();
    assert!(
        batch.is_empty(),
        "the send completions were reaped and their slots reused at once"
    );
    assert_eq!(e.rio_counters().tx_transmits, 5);
    assert!(
        e.poll_turn(0).unwrap(),
        "a receive set aside by the reap: recv has something no notification announces"
    );
    e.queues().wait_transmits = false;
    let notifies = e.queues().notify_calls;
    e.wait(Some(Duration::from_secs(5)), false).unwrap();
    assert_eq!(
        e.queues().notify_calls,
        notifies,
        "no sleep while a receive waits for recv"
    );
    assert!(e.queues().deliver(0, peer, b"second", RecvInfo::default()));
    let got: Vec<Vec<u8>> = recv_all(&mut e).into_iter().map(|(_, d)| d).collect();
    assert_eq!(
        got,
        [b"first".to_vec(), b"second".to_vec()],
        "in arrival order"
    );
    assert!(!e.poll_turn(0).unwrap());
    assert_eq!(e.ledgers().0.posted, 4, "both receive slots posted again");
    assert_balanced_after_close(&mut e);
}

#[test]
fn arm_notifies_once_until_someone_saw_the_notification_fire() {
    let mut e = Setup::new(&["127.0.0.1:4433"]).build();
    e.arm().unwrap();
    e.arm().unwrap();
    assert_eq!(e.queues().notify_calls, 1, "still armed: RIONotify once");
    assert!(!e.poll_turn(0).unwrap());
    e.arm().unwrap();
    assert_eq!(
        e.queues().notify_calls,
        1,
        "a turn without the event changes nothing"
    );
    // An async runtime's wait saw the event fire (the kernel disarmed it), and says so.
    e.queues().armed = false;
    e.poll_turn(1).unwrap();
    e.arm().unwrap();
    assert_eq!(e.queues().notify_calls, 2, "armed again after it fired");
    assert!(e.queues().armed);
    assert_eq!(e.rio_counters().notifies, 2);
}
