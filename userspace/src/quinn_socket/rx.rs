//! Received payloads into quinn's buffers: the one copy from the backend's buffer, GRO
//! batches split at datagram boundaries when one of quinn's buffers cannot hold them whole,
//! and a stash for what a backend hands over beyond the buffers quinn lent (a backend's batch
//! is not sized to quinn's).

use std::collections::VecDeque;
use std::io::IoSliceMut;

use quinn::udp::{EcnCodepoint, RecvMeta};

use crate::datapath::{Ecn, RxMeta};

/// Counters of the receive side of the adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct RxCounters {
    /// Payloads (datagrams or GRO batches) handed to quinn.
    pub delivered: u64,
    /// Payloads kept for the next `poll_recv` because quinn's buffers were full.
    pub stashed: u64,
    /// Dropped: a datagram larger than the buffer quinn lent for it (quinn sizes them by
    /// `EndpointConfig::max_udp_payload_size`).
    pub too_big: u64,
}

/// quinn's buffers for one `poll_recv`, filled front to back.
pub struct Out<'a, 'b> {
    bufs: &'a mut [IoSliceMut<'b>],
    meta: &'a mut [RecvMeta],
    pub n: usize,
}

impl<'a, 'b> Out<'a, 'b> {
    pub fn new(bufs: &'a mut [IoSliceMut<'b>], meta: &'a mut [RecvMeta]) -> Self {
        Self { bufs, meta, n: 0 }
    }

    /// How many datagrams fit: quinn's buffer count.
    pub fn capacity(&self) -> usize {
        self.bufs.len().min(self.meta.len())
    }

    pub fn is_full(&self) -> bool {
        self.n >= self.bufs.len().min(self.meta.len())
    }

    /// Copies as much of `payload` (datagrams of `m.stride` bytes, the last may be shorter)
    /// as fits, whole datagrams only, and returns how many bytes it took; datagrams larger
    /// than a buffer are skipped and counted.
    fn take(&mut self, m: &RxMeta, payload: &[u8], counters: &mut RxCounters) -> usize {
        let stride = m.stride.clamp(1, payload.len().max(1));
        let mut done = 0;
        while done < payload.len() && !self.is_full() {
            let rest = &payload[done..];
            let room = self.bufs[self.n].len();
            let len = if rest.len() <= room {
                rest.len()
            } else {
                room / stride * stride
            };
            if len == 0 {
                // Not even one datagram fits: lost, as on a socket with a short buffer.
                counters.too_big += 1;
                done += stride.min(rest.len());
                continue;
            }
            self.bufs[self.n][..len].copy_from_slice(&rest[..len]);
            let meta = &mut self.meta[self.n];
            *meta = RecvMeta::default();
            meta.addr = m.src;
            meta.len = len;
            meta.stride = stride.min(len);
            meta.ecn = m.ecn.map(ecn_to_quinn);
            meta.dst_ip = m.dst_ip;
            self.n += 1;
            counters.delivered += 1;
            done += len;
        }
        done
    }
}

/// Payloads received beyond quinn's buffers, in order, in buffers reused from a pool: after
/// the first bursts it allocates nothing.
#[derive(Default)]
pub struct Stash {
    queue: VecDeque<(RxMeta, Vec<u8>, usize)>,
    pool: Vec<Vec<u8>>,
}

impl Stash {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Hands stashed payloads to `out` while it has room.
    pub fn drain_into(&mut self, out: &mut Out<'_, '_>, counters: &mut RxCounters) {
        while !out.is_full() {
            let Some((meta, buf, offset)) = self.queue.front_mut() else {
                return;
            };
            *offset += out.take(meta, &buf[*offset..], counters);
            if *offset < buf.len() {
                return;
            }
            let (_, buf, _) = self.queue.pop_front().expect("front exists");
            self.pool.push(buf);
        }
    }

    fn push(&mut self, meta: &RxMeta, payload: &[u8]) {
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        self.queue.push_back((*meta, buf, 0));
    }
}

/// Hands one payload from the backend to `out`, stashing what does not fit.
pub fn deliver(
    out: &mut Out<'_, '_>,
    stash: &mut Stash,
    counters: &mut RxCounters,
    meta: &RxMeta,
    payload: &[u8],
) {
    // Order: nothing overtakes what is already stashed.
    let taken = if stash.is_empty() {
        out.take(meta, payload, counters)
    } else {
        0
    };
    if taken < payload.len() {
        counters.stashed += 1;
        stash.push(meta, &payload[taken..]);
    }
}

pub fn ecn_to_quinn(e: Ecn) -> EcnCodepoint {
    match e {
        Ecn::Ect0 => EcnCodepoint::Ect0,
        Ecn::Ect1 => EcnCodepoint::Ect1,
        Ecn::Ce => EcnCodepoint::Ce,
    }
}

pub fn ecn_from_quinn(e: EcnCodepoint) -> Ecn {
    match e {
        EcnCodepoint::Ect0 => Ecn::Ect0,
        EcnCodepoint::Ect1 => Ecn::Ect1,
        EcnCodepoint::Ce => Ecn::Ce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(stride: usize) -> RxMeta {
        RxMeta {
            src: "198.18.0.2:5000".parse().unwrap(),
            dst_ip: Some("198.18.0.1".parse().unwrap()),
            dst_port: 4433,
            ecn: Some(Ecn::Ect0),
            stride,
        }
    }

    #[test]
    fn splits_gro_batches_at_datagram_boundaries_and_stashes_the_rest() {
        let mut storage = [[0u8; 2500]; 2];
        let mut bufs: Vec<IoSliceMut<'_>> =
            storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let mut metas = [RecvMeta::default(); 2];
        let mut out = Out::new(&mut bufs, &mut metas);
        let mut stash = Stash::default();
        let mut c = RxCounters::default();
        // Five 1000-byte datagrams and a 300-byte one: two per buffer, the rest stashed.
        let payload: Vec<u8> = (0..5300u32).map(|i| (i / 1000) as u8).collect();
        deliver(&mut out, &mut stash, &mut c, &meta(1000), &payload);
        assert_eq!(out.n, 2);
        assert_eq!((c.delivered, c.stashed, c.too_big), (2, 1, 0));
        assert_eq!((metas[0].len, metas[0].stride), (2000, 1000));
        assert_eq!(metas[0].ecn, Some(EcnCodepoint::Ect0));
        assert_eq!(metas[1].len, 2000);
        assert_eq!(storage[1][1999], 3);

        // The next poll gets the stashed 1300 bytes, in order.
        let mut storage = [[0u8; 2500]; 2];
        let mut bufs: Vec<IoSliceMut<'_>> =
            storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let mut metas = [RecvMeta::default(); 2];
        let mut out = Out::new(&mut bufs, &mut metas);
        stash.drain_into(&mut out, &mut c);
        assert!(stash.is_empty());
        assert_eq!(out.n, 1);
        assert_eq!((metas[0].len, metas[0].stride), (1300, 1000));
        assert_eq!((storage[0][0], storage[0][1299]), (4, 5));
    }

    #[test]
    fn a_datagram_larger_than_the_buffer_is_dropped_and_counted() {
        let mut storage = [0u8; 1000];
        let mut bufs = [IoSliceMut::new(&mut storage)];
        let mut metas = [RecvMeta::default(); 1];
        let mut out = Out::new(&mut bufs, &mut metas);
        let mut stash = Stash::default();
        let mut c = RxCounters::default();
        deliver(&mut out, &mut stash, &mut c, &meta(1200), &[7; 1200]);
        assert_eq!((out.n, c.too_big, c.stashed), (0, 1, 0));
        deliver(&mut out, &mut stash, &mut c, &meta(900), &[8; 900]);
        assert_eq!((out.n, metas[0].len), (1, 900));
    }
}
