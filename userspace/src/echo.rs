//! A raw UDP echo over any datapath backend, with no QUIC at all (`quixd udp-echo`).
//!
//! It exists to measure and test a datapath alone: the benchmark's raw scenario runs it on each
//! backend beside a bare AF_XDP echo, and the end-to-end tests use it to check that datagrams of
//! every size go in and come back out unchanged. Every datagram received goes back to its
//! sender, from the address and port it was sent to; consecutive equal-sized datagrams from one
//! sender go back as one GSO batch where the backend can send one (as quinn-proto batches its
//! own transmits). It stands where the QUIC driver stands,
//! above the [`Datapath`] trait, and knows nothing about how packets move.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::datapath::{Datapath, RxMeta, TxBatch, TxMeta, MAX_GSO_BYTES};

/// Transmit slots: room for a few receive batches, so a burst is not dropped while the backend
/// drains the previous one.
const TX_SLOTS: usize = 256;
/// Initial capacity of a slot: one full-size datagram. A GRO batch grows its slot once; the slot
/// keeps that capacity, so the steady state allocates nothing.
const SLOT_CAPACITY: usize = 2048;
/// The longest the loop sleeps, so a stop request is noticed promptly.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// What the echo did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EchoCounters {
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    /// Transmits queued for the backend (one per received payload: a GRO batch goes back as
    /// one GSO batch when the backend can send it so).
    pub tx_queued: u64,
    /// Datagrams dropped because the transmit batch was full.
    pub dropped_full: u64,
}

impl EchoCounters {
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("rx_datagrams", self.rx_datagrams),
            ("rx_bytes", self.rx_bytes),
            ("tx_queued", self.tx_queued),
            ("dropped_full", self.dropped_full),
        ]
        .into_iter()
    }
}

/// Echoes until `stop` is set, then lets queued transmits go out. With `busy_poll` it never
/// sleeps.
pub fn run(
    datapath: &mut dyn Datapath,
    stop: &AtomicBool,
    busy_poll: bool,
) -> io::Result<EchoCounters> {
    let max_segments = datapath.capabilities().max_tx_segments.max(1);
    let mut tx = TxBatch::new(TX_SLOTS, SLOT_CAPACITY);
    let mut counters = EchoCounters::default();
    while !stop.load(Ordering::Relaxed) {
        // Hold back while the backend has not taken the last batch: the slots are the buffer.
        let received = if tx.is_full() {
            0
        } else {
            datapath.recv(&mut |meta, payload| {
                echo(meta, payload, max_segments, &mut tx, &mut counters);
            })?
        };
        if !tx.is_empty() {
            datapath.send(&mut tx)?;
        }
        let tx_blocked = !tx.is_empty();
        if (received > 0 && !tx_blocked) || busy_poll {
            continue;
        }
        datapath.wait(Some(MAX_SLEEP), tx_blocked)?;
    }
    // Bounded: what the backend cannot take within a second is given up on.
    for _ in 0..10 {
        if tx.is_empty() {
            break;
        }
        datapath.send(&mut tx)?;
        if !tx.is_empty() {
            datapath.wait(Some(MAX_SLEEP), true)?;
        }
    }
    Ok(counters)
}

/// Queues `payload` (one datagram, or a GRO batch of `meta.stride`-sized ones) back to its
/// sender.
fn echo(
    meta: &RxMeta,
    payload: &[u8],
    max_segments: usize,
    tx: &mut TxBatch,
    counters: &mut EchoCounters,
) {
    let stride = if meta.stride == 0 {
        payload.len()
    } else {
        meta.stride
    }
    .max(1);
    let datagrams = payload.len().div_ceil(stride).max(1);
    if payload.len() == stride && append_segment(meta, payload, max_segments, tx) {
        counters.rx_datagrams += 1;
        counters.rx_bytes += payload.len() as u64;
        return;
    }
    counters.rx_datagrams += datagrams as u64;
    counters.rx_bytes += payload.len() as u64;
    let reply = |segment_size| TxMeta {
        dst: meta.src,
        src_ip: meta.dst_ip,
        src_port: meta.dst_port,
        ecn: meta.ecn,
        segment_size,
    };
    // A batch goes back as one GSO transmit when the backend takes that many segments.
    let chunk = if datagrams > 1 && datagrams <= max_segments {
        payload.len()
    } else {
        stride
    };
    for part in payload.chunks(chunk.max(1)).take(datagrams) {
        let segment_size = (part.len() > stride).then_some(stride);
        let queued = tx.push_with(|buf| {
            buf.extend_from_slice(part);
            Some(reply(segment_size))
        });
        if queued {
            counters.tx_queued += 1;
        } else {
            counters.dropped_full += part.len().div_ceil(stride) as u64;
        }
    }
    if payload.is_empty() {
        // An empty datagram is a datagram too.
        if tx.push_with(|_| Some(reply(None))) {
            counters.tx_queued += 1;
        } else {
            counters.dropped_full += 1;
        }
    }
}

/// Appends a single datagram to the newest queued transmit when it can travel as one more GSO
/// segment of it: same peer, same local address and port, same ECN, and the same size as the
/// segments already there (the last segment may not be shorter than this one). This is the
/// echo's GRO: a burst from one sender goes back as a few GSO batches, as quinn-proto would
/// send it, instead of one transmit per datagram.
fn append_segment(meta: &RxMeta, payload: &[u8], max_segments: usize, tx: &mut TxBatch) -> bool {
    if max_segments < 2 || payload.is_empty() {
        return false;
    }
    let Some(last) = tx.last_mut() else {
        return false;
    };
    let m = &last.meta;
    let segment = m.segment_size.unwrap_or(last.buf.len());
    let fits = m.dst == meta.src
        && m.src_port == meta.dst_port
        && m.src_ip == meta.dst_ip
        && m.ecn == meta.ecn
        && segment == payload.len()
        && last.buf.len() % segment == 0
        && last.buf.len() / segment < max_segments
        && last.buf.len() + payload.len() <= MAX_GSO_BYTES;
    if !fits {
        return false;
    }
    last.buf.extend_from_slice(payload);
    last.meta.segment_size = Some(segment);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn meta(stride: usize) -> RxMeta {
        RxMeta {
            src: "198.18.0.2:5000".parse().unwrap(),
            dst_ip: Some("198.18.0.1".parse().unwrap()),
            dst_port: 4433,
            ecn: None,
            stride,
        }
    }

    #[test]
    fn one_datagram_goes_back_to_its_sender_from_where_it_arrived() {
        let mut tx = TxBatch::new(4, 16);
        let mut c = EchoCounters::default();
        echo(&meta(5), b"hello", 1, &mut tx, &mut c);
        let q = tx.queued();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].buf, b"hello");
        assert_eq!(
            q[0].meta.dst,
            "198.18.0.2:5000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(q[0].meta.src_ip, Some("198.18.0.1".parse().unwrap()));
        assert_eq!(q[0].meta.src_port, 4433);
        assert_eq!(q[0].meta.segment_size, None);
        assert_eq!((c.rx_datagrams, c.rx_bytes, c.tx_queued), (1, 5, 1));
    }

    #[test]
    fn a_gro_batch_goes_back_as_gso_or_split() {
        let payload: Vec<u8> = (0..25u8).collect();
        // Backend with GSO: one transmit of 3 segments of 10 (the last 5).
        let mut tx = TxBatch::new(4, 16);
        let mut c = EchoCounters::default();
        echo(&meta(10), &payload, 64, &mut tx, &mut c);
        assert_eq!(tx.queued().len(), 1);
        assert_eq!(tx.queued()[0].buf, payload);
        assert_eq!(tx.queued()[0].meta.segment_size, Some(10));
        assert_eq!(c.rx_datagrams, 3);
        // Backend without GSO: three transmits.
        let mut tx = TxBatch::new(4, 16);
        echo(&meta(10), &payload, 1, &mut tx, &mut c);
        let parts: Vec<&[u8]> = tx.queued().iter().map(|s| s.buf.as_slice()).collect();
        assert_eq!(parts, [&payload[..10], &payload[10..20], &payload[20..]]);
        assert!(tx.queued().iter().all(|s| s.meta.segment_size.is_none()));
    }

    #[test]
    fn a_burst_from_one_peer_goes_back_as_gso_batches() {
        let mut tx = TxBatch::new(8, 16);
        let mut c = EchoCounters::default();
        for i in 0..5u8 {
            echo(&meta(4), &[i; 4], 3, &mut tx, &mut c);
        }
        // A shorter one, then one from elsewhere: each starts a transmit of its own.
        echo(&meta(2), &[9; 2], 3, &mut tx, &mut c);
        let mut other = meta(4);
        other.src = "198.18.0.3:5000".parse().unwrap();
        echo(&other, &[7; 4], 3, &mut tx, &mut c);
        let q = tx.queued();
        let shape: Vec<(usize, Option<usize>)> = q
            .iter()
            .map(|s| (s.buf.len(), s.meta.segment_size))
            .collect();
        assert_eq!(
            shape,
            [(12, Some(4)), (8, Some(4)), (2, None), (4, None)],
            "3 segments at most per transmit"
        );
        assert_eq!(q[0].buf, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(q[3].meta.dst, other.src);
        assert_eq!(c.rx_datagrams, 7);
        assert_eq!(c.tx_queued, 4);
        // Without GSO, one transmit per datagram.
        let mut tx = TxBatch::new(8, 16);
        for i in 0..3u8 {
            echo(&meta(4), &[i; 4], 1, &mut tx, &mut c);
        }
        assert_eq!(tx.queued().len(), 3);
    }

    #[test]
    fn a_full_batch_drops_and_counts() {
        let mut tx = TxBatch::new(1, 16);
        let mut c = EchoCounters::default();
        echo(&meta(3), b"one", 1, &mut tx, &mut c);
        echo(&meta(3), b"two", 1, &mut tx, &mut c);
        echo(&meta(0), b"", 1, &mut tx, &mut c);
        assert_eq!(c.tx_queued, 1);
        assert_eq!(c.dropped_full, 2);
        assert_eq!(tx.queued()[0].buf, b"one");
    }
}
