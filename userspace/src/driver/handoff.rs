//! Handing a datagram to the worker that owns its connection.
//!
//! Each worker has its own quinn-proto endpoint, so a datagram must reach the worker whose
//! connection ID it carries. Usually the kernel already delivers it there (the reuseport
//! steering program, or a NIC queue that keeps a flow on one worker). Where it cannot, a
//! client whose address changes (NAT rebinding, migration) lands on another worker: on XDP,
//! an AF_XDP socket takes only its own queue's frames and the NIC hashes the new 4-tuple to
//! any queue. That worker then hands the datagram over here: one copy into a lock-free
//! single-producer ring towards the owner, whose loop feeds it to its endpoint as if its own
//! backend had received it. Nothing is shared between workers but these rings and one
//! [`Doorbell`] per worker, which the receiving side answers once per loop turn.
//!
//! Only datagrams whose destination connection ID names another worker move: short headers
//! and v1 Handshake packets (their DCID is one we issued). Initials and 0-RTT carry the
//! client's own DCID and stay where they arrived, with the handshake they start.
//!
//! A full ring drops the datagram (counted as `handoff_dropped`): QUIC recovers it like any
//! loss, and answering it locally would make the wrong endpoint send a stateless reset.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use super::cid::CidLayout;
use crate::datapath::wake::Doorbell;
use crate::datapath::{Ecn, RxMeta};

/// Bytes of each ring between two workers: room for about 200 full-size datagrams.
pub const RING_BYTES: usize = 256 * 1024;
/// Bytes of the header before each parcel's payload (see [`encode_header`]).
const HEADER: usize = 42;
/// QUIC v1's version field; other versions' long-header types are not read.
const QUIC_V1: [u8; 4] = [0, 0, 0, 1];
/// QUIC v1's long-header packet type for Handshake packets.
const LONG_HANDSHAKE: u8 = 2;

/// Counters of one worker's handoffs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HandoffCounters {
    /// Datagrams this worker handed to their owner.
    pub sent: u64,
    /// Datagrams other workers handed to this one.
    pub received: u64,
    /// Datagrams dropped because the owner's ring was full.
    pub dropped: u64,
}

/// The way to one other worker.
struct Outbox {
    ring: rtrb::Producer<u8>,
    doorbell: Arc<Doorbell>,
    /// Something was queued this turn and the owner is not told yet.
    unsent: bool,
}

/// One worker's end of the handoff mesh: its outboxes to every other worker, its inboxes from
/// them, and its doorbell (which its backend's wait watches).
pub struct Handoff {
    me: u8,
    layout: CidLayout,
    /// Indexed by worker; `None` for this worker.
    outboxes: Vec<Option<Outbox>>,
    inboxes: Vec<rtrb::Consumer<u8>>,
    doorbell: Arc<Doorbell>,
    /// A parcel that wrapped around the ring's end, made contiguous.
    scratch: Vec<u8>,
    counters: HandoffCounters,
}

impl Handoff {
    /// The ends of a mesh between `workers` workers, indexed by worker, issuing connection IDs
    /// of `layout`.
    pub fn mesh(workers: usize, layout: &CidLayout) -> std::io::Result<Vec<Handoff>> {
        let doorbells = (0..workers)
            .map(|_| Doorbell::new().map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut ends: Vec<Handoff> = (0..workers)
            .map(|w| Handoff {
                me: w as u8,
                layout: layout.clone(),
                outboxes: (0..workers).map(|_| None).collect(),
                inboxes: Vec::with_capacity(workers.saturating_sub(1)),
                doorbell: doorbells[w].clone(),
                scratch: Vec::with_capacity(crate::datapath::MAX_GSO_BYTES),
                counters: HandoffCounters::default(),
            })
            .collect();
        for from in 0..workers {
            for to in 0..workers {
                if from == to {
                    continue;
                }
                let (producer, consumer) = rtrb::RingBuffer::new(RING_BYTES);
                ends[from].outboxes[to] = Some(Outbox {
                    ring: producer,
                    doorbell: doorbells[to].clone(),
                    unsent: false,
                });
                ends[to].inboxes.push(consumer);
            }
        }
        Ok(ends)
    }

    /// This worker's doorbell, which other workers ring when they handed it something; the
    /// worker's other producers (file readers) ring it too.
    pub fn doorbell(&self) -> &Arc<Doorbell> {
        &self.doorbell
    }

    pub fn counters(&self) -> HandoffCounters {
        self.counters
    }

    /// The worker other than this one that owns `datagram`'s connection, if any.
    pub fn owner(&self, datagram: &[u8]) -> Option<usize> {
        let worker = self
            .layout
            .worker_of(destination_cid(datagram, self.layout.len())?)?;
        (worker != self.me && self.outboxes.get(usize::from(worker))?.is_some())
            .then_some(usize::from(worker))
    }

    /// Passes what this worker owns in `payload` (one datagram, or several of `meta.stride`
    /// bytes) to `local`, and queues the rest for their owners. A payload that is all local
    /// goes to `local` whole, as it came.
    pub fn route(&mut self, meta: &RxMeta, payload: &[u8], local: &mut dyn FnMut(&RxMeta, &[u8])) {
        let stride = if meta.stride == 0 {
            payload.len()
        } else {
            meta.stride
        }
        .max(1);
        if payload.chunks(stride).all(|d| self.owner(d).is_none()) {
            local(meta, payload);
            return;
        }
        for datagram in payload.chunks(stride) {
            let single = RxMeta {
                stride: datagram.len(),
                ..*meta
            };
            match self.owner(datagram) {
                Some(owner) => self.send(owner, &single, datagram),
                None => local(&single, datagram),
            }
        }
    }

    fn send(&mut self, owner: usize, meta: &RxMeta, datagram: &[u8]) {
        let Some(outbox) = self.outboxes[owner].as_mut() else {
            return;
        };
        let len = HEADER + datagram.len();
        let Ok(mut chunk) = outbox.ring.write_chunk(len) else {
            self.counters.dropped += 1;
            return;
        };
        let mut header = [0u8; HEADER];
        encode_header(meta, datagram.len(), &mut header);
        let (a, b) = chunk.as_mut_slices();
        scatter(&[&header, datagram], a, b);
        chunk.commit_all();
        outbox.unsent = true;
        self.counters.sent += 1;
    }

    /// Tells the owners that got something this turn (one eventfd write each, at most).
    pub fn flush(&mut self) {
        for outbox in self.outboxes.iter_mut().flatten() {
            if std::mem::take(&mut outbox.unsent) {
                if let Err(e) = outbox.doorbell.ring() {
                    tracing::warn!(error = %e, "waking a worker for handed-over datagrams");
                }
            }
        }
    }

    /// Feeds what other workers handed to this one to `handle`; returns how many datagrams.
    /// Call when the doorbell was answered ([`Doorbell::answer`]).
    pub fn receive(&mut self, handle: &mut dyn FnMut(&RxMeta, &[u8])) -> usize {
        let mut n = 0;
        for inbox in &mut self.inboxes {
            while let Ok(head) = inbox.read_chunk(HEADER) {
                // Peek at the header: a chunk not committed leaves its items in the ring.
                let mut header = [0u8; HEADER];
                let (a, b) = head.as_slices();
                for (dst, src) in header.iter_mut().zip(a.iter().chain(b)) {
                    *dst = *src;
                }
                let (meta, len) = decode_header(&header);
                // The sender commits header and payload together.
                let Ok(parcel) = inbox.read_chunk(HEADER + len) else {
                    break;
                };
                let (a, b) = parcel.as_slices();
                if a.len() >= HEADER + len {
                    handle(&meta, &a[HEADER..]);
                } else {
                    self.scratch.clear();
                    self.scratch.extend(a.iter().chain(b).skip(HEADER));
                    handle(&meta, &self.scratch);
                }
                parcel.commit_all();
                n += 1;
            }
        }
        self.counters.received += n as u64;
        n
    }
}

/// The destination connection ID of a short-header or v1 Handshake packet; `None` for any
/// other packet (they stay where they arrived) and for truncated ones. A short header does not
/// say its DCID's length: ours are all `ours` bytes long.
fn destination_cid(datagram: &[u8], ours: usize) -> Option<&[u8]> {
    let first = *datagram.first()?;
    if first & 0x80 == 0 {
        return datagram.get(1..1 + ours);
    }
    if datagram.get(1..5)? != QUIC_V1 || (first >> 4) & 0x03 != LONG_HANDSHAKE {
        return None;
    }
    let len = usize::from(*datagram.get(5)?);
    datagram.get(6..6 + len)
}

/// Copies the concatenation of `parts` into `a` then `b` (a ring chunk's two halves, whose
/// lengths add up to the parts').
fn scatter(parts: &[&[u8]], a: &mut [u8], b: &mut [u8]) {
    let (mut dst, mut rest) = (a, b);
    for part in parts {
        let mut part = *part;
        while !part.is_empty() {
            if dst.is_empty() {
                dst = std::mem::take(&mut rest);
            }
            let n = part.len().min(dst.len());
            let (head, tail) = std::mem::take(&mut dst).split_at_mut(n);
            head.copy_from_slice(&part[..n]);
            dst = tail;
            part = &part[n..];
        }
    }
}

/// `meta` and the payload's length as [`HEADER`] bytes.
fn encode_header(meta: &RxMeta, len: usize, out: &mut [u8; HEADER]) {
    out[0..2].copy_from_slice(&(len as u16).to_le_bytes());
    let (family, ip) = ip_bytes(Some(meta.src.ip()));
    out[2] = family;
    out[3..19].copy_from_slice(&ip);
    out[19..21].copy_from_slice(&meta.src.port().to_le_bytes());
    let (family, ip) = ip_bytes(meta.dst_ip);
    out[21] = family;
    out[22..38].copy_from_slice(&ip);
    out[38..40].copy_from_slice(&meta.dst_port.to_le_bytes());
    out[40] = match meta.ecn {
        None => 0,
        Some(Ecn::Ect0) => 1,
        Some(Ecn::Ect1) => 2,
        Some(Ecn::Ce) => 3,
    };
}

fn decode_header(h: &[u8; HEADER]) -> (RxMeta, usize) {
    let len = usize::from(u16::from_le_bytes([h[0], h[1]]));
    let src_ip = ip_from(h[2], &h[3..19]).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let meta = RxMeta {
        src: SocketAddr::new(src_ip, u16::from_le_bytes([h[19], h[20]])),
        dst_ip: ip_from(h[21], &h[22..38]),
        dst_port: u16::from_le_bytes([h[38], h[39]]),
        ecn: match h[40] {
            1 => Some(Ecn::Ect0),
            2 => Some(Ecn::Ect1),
            3 => Some(Ecn::Ce),
            _ => None,
        },
        stride: len,
    };
    (meta, len)
}

fn ip_bytes(ip: Option<IpAddr>) -> (u8, [u8; 16]) {
    let mut out = [0u8; 16];
    match ip {
        None => (0, out),
        Some(IpAddr::V4(v4)) => {
            out[..4].copy_from_slice(&v4.octets());
            (4, out)
        }
        Some(IpAddr::V6(v6)) => (6, v6.octets()),
    }
}

fn ip_from(family: u8, bytes: &[u8]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

// The mesh needs an eventfd (Linux).
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::driver::cid::WorkerCids;
    use quinn_proto::ConnectionIdGenerator;

    fn meta(stride: usize) -> RxMeta {
        RxMeta {
            src: "[fd00::2]:5000".parse().unwrap(),
            dst_ip: Some("198.18.0.1".parse().unwrap()),
            dst_port: 4433,
            ecn: Some(Ecn::Ce),
            stride,
        }
    }

    /// A short-header datagram to connection `cid`, `len` bytes long.
    fn short(cid: &[u8], len: usize) -> Vec<u8> {
        let mut d = vec![0x40];
        d.extend_from_slice(cid);
        d.resize(len, 0xab);
        d
    }

    #[test]
    fn hands_short_headers_to_their_owner_and_keeps_the_rest() {
        // Plaintext and encrypted connection IDs alike.
        for layout in [
            CidLayout::new(&[0x07]),
            CidLayout::encrypted(&[0x07], &[3; 16]).unwrap(),
        ] {
            let mut mesh = Handoff::mesh(3, &layout).unwrap();
            let cid_of = |w| WorkerCids::new(&layout, w).generate_cid().to_vec();
            let (mine, theirs) = (cid_of(0), cid_of(2));
            let mut local = Vec::new();
            {
                let h = &mut mesh[0];
                // Two datagrams of one GRO batch: one ours, one worker 2's.
                let mut batch = short(&mine, 100);
                batch.extend(short(&theirs, 80));
                h.route(&meta(100), &batch, &mut |m, d| local.push((*m, d.to_vec())));
                // An Initial to a DCID that happens to look like worker 2's stays here.
                let mut initial = vec![0xc0, 0, 0, 0, 1, theirs.len() as u8];
                initial.extend_from_slice(&theirs);
                initial.resize(1200, 0);
                h.route(&meta(1200), &initial, &mut |m, d| {
                    local.push((*m, d.to_vec()))
                });
                // A Handshake packet to worker 2's CID moves.
                let mut handshake = vec![0xe0, 0, 0, 0, 1, theirs.len() as u8];
                handshake.extend_from_slice(&theirs);
                handshake.resize(300, 0);
                h.route(&meta(300), &handshake, &mut |m, d| {
                    local.push((*m, d.to_vec()))
                });
                h.flush();
                assert_eq!(h.counters().sent, 2);
            }
            assert_eq!(local.len(), 2, "the local datagram and the Initial");
            assert_eq!(local[0].0.stride, 100);
            assert_eq!(local[0].1, short(&mine, 100));
            assert_eq!(local[1].1.len(), 1200);
            assert!(!mesh[1].doorbell().answer(), "nothing for worker 1");
            assert_eq!(
                mesh[1].receive(&mut |_, _| panic!("nothing for worker 1")),
                0
            );
            assert!(mesh[2].doorbell().answer(), "worker 2 was told");
            assert!(!mesh[2].doorbell().answer(), "once");
            let mut got = Vec::new();
            assert_eq!(mesh[2].receive(&mut |m, d| got.push((*m, d.to_vec()))), 2);
            assert_eq!(got[0].0, meta(80), "the metadata travels with the datagram");
            assert_eq!(got[0].1, short(&theirs, 80));
            assert_eq!(got[1].1.len(), 300);
            assert_eq!(mesh[2].counters().received, 2);
            assert_eq!(mesh[2].receive(&mut |_, _| panic!("read twice")), 0);
        }
    }

    #[test]
    fn wraps_around_and_counts_what_a_full_ring_drops() {
        let layout = CidLayout::new(&[]);
        let mut mesh = Handoff::mesh(2, &layout).unwrap();
        let theirs = WorkerCids::new(&layout, 1).generate_cid().to_vec();
        let datagram = short(&theirs, 1400);
        let mut delivered = 0u64;
        // Fill, drain, and again, so parcels straddle the ring's end.
        for round in 0..5u64 {
            let (sender, receiver) = mesh.split_at_mut(1);
            for _ in 0..300 {
                sender[0].route(&meta(1400), &datagram, &mut |_, _| panic!("not ours"));
            }
            sender[0].flush();
            let sent = sender[0].counters().sent;
            receiver[0].receive(&mut |m, d| {
                assert_eq!((m.src, d), (meta(0).src, &datagram[..]), "round {round}");
                delivered += 1;
            });
            assert_eq!(delivered, sent, "everything queued arrived");
        }
        let c = mesh[0].counters();
        assert!(
            c.dropped > 0,
            "300 datagrams of 1.4 kB overflow 256 KiB: {c:?}"
        );
        assert_eq!(c.sent + c.dropped, 1500);
    }

    #[test]
    fn truncated_and_foreign_packets_stay() {
        let layout = CidLayout::new(&[]);
        let mesh = Handoff::mesh(2, &layout).unwrap();
        assert_eq!(mesh[0].owner(&[]), None);
        assert_eq!(mesh[0].owner(&[0x40, 0x07]), None, "truncated short header");
        assert_eq!(
            mesh[0].owner(&[0xe0, 0, 0, 0, 1, 9, 1]),
            None,
            "truncated DCID"
        );
        let theirs = WorkerCids::new(&layout, 1).generate_cid().to_vec();
        let mut v2 = vec![0xf0, 0x6b, 0x33, 0x43, 0xcf, theirs.len() as u8];
        v2.extend_from_slice(&theirs);
        assert_eq!(mesh[0].owner(&v2), None, "another version's long header");
        assert_eq!(mesh[0].owner(&short(&theirs, 50)), Some(1));
        let past = WorkerCids::new(&layout, 5).generate_cid().to_vec();
        assert_eq!(mesh[0].owner(&short(&past, 50)), None, "no such worker");
    }
}
