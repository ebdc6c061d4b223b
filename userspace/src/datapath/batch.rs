//! The transmit batch: a ring of reusable buffers that quinn-proto writes into, queued for a
//! backend, plus a pool of spare buffers so that a backend can take a queued transmit's buffer
//! for the kernel to read (lend it) instead of copying it.
//!
//! Every buffer is always in exactly one place: a queued slot, a free slot, the spare pool, or
//! lent to a backend. Lending the front transmit swaps a spare into its slot; the backend gives
//! the buffer back once the kernel is done with it, and it becomes a spare. All of them are
//! allocated up front (slots at [`TxBatch::new`], spares at [`TxBatch::reserve_lendable`]) and
//! keep their capacity, so steady-state use allocates nothing.

use std::ops::Deref;

use super::TxMeta;

/// One queued transmit: its buffer (kept allocated across uses) and where it goes.
#[derive(Debug)]
pub struct TxSlot {
    pub meta: TxMeta,
    pub buf: Vec<u8>,
}

/// A transmit buffer lent to a backend by [`TxBatch::lend_front`]. Read-only: its heap
/// storage neither moves nor changes while the kernel may read it (moving a `TxBuf` moves only
/// the `Vec` header). Give it back with [`TxBatch::give_back`]; dropping it instead only
/// frees the memory (the batch's ledger then shows it as lent).
#[derive(Debug)]
pub struct TxBuf(Vec<u8>);

impl Deref for TxBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// A lent transmit: its buffer and where it goes.
#[derive(Debug)]
pub struct TxLoan {
    pub meta: TxMeta,
    pub buf: TxBuf,
}

/// Where the batch's buffers are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxLedger {
    /// In queued slots.
    pub queued: usize,
    /// In free slots.
    pub free: usize,
    /// Spares waiting to be swapped into a slot whose buffer is lent.
    pub pool: usize,
    /// With a backend (and the kernel).
    pub lent: usize,
    /// Every buffer the batch created: one per slot plus the lendable ones.
    pub total: usize,
}

impl TxLedger {
    /// Every buffer is in exactly one place.
    pub fn balanced(&self) -> bool {
        self.queued + self.free + self.pool + self.lent == self.total
    }

    /// Balanced, and no buffer is out with a backend.
    pub fn all_home(&self) -> bool {
        self.balanced() && self.lent == 0
    }
}

/// A fixed number of transmit slots used as a ring: slots `head..head + len` are queued,
/// oldest first; the others are free and keep their buffers' capacity.
#[derive(Debug)]
pub struct TxBatch {
    slots: Vec<TxSlot>,
    head: usize,
    len: usize,
    /// Where a transmit goes when the batch is full and the producer cannot hold back
    /// (stateless responses): it is written, then dropped and counted.
    overflow: Vec<u8>,
    /// Spare buffers (empty), swapped into the slot of a lent transmit.
    pool: Vec<Vec<u8>>,
    /// Spares created: `pool.len() + lent` while every lent buffer comes back.
    lendable: usize,
    /// Buffers out with a backend.
    lent: usize,
    buf_capacity: usize,
    /// Transmits dropped because the batch was full.
    pub dropped_full: u64,
}

impl TxBatch {
    pub fn new(capacity: usize, buf_capacity: usize) -> Self {
        let empty = TxMeta {
            dst: ([0, 0, 0, 0], 0).into(),
            src_ip: None,
            src_port: 0,
            ecn: None,
            segment_size: None,
        };
        let slots = (0..capacity.max(1))
            .map(|_| TxSlot {
                meta: empty,
                buf: Vec::with_capacity(buf_capacity),
            })
            .collect();
        Self {
            slots,
            head: 0,
            len: 0,
            overflow: Vec::with_capacity(buf_capacity),
            pool: Vec::new(),
            lendable: 0,
            lent: 0,
            buf_capacity,
            dropped_full: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Lends the next free slot's (cleared) buffer to `write`, which returns the transmit's
    /// metadata when it wrote one. Returns whether a transmit was queued. When the batch is
    /// full, the transmit is written to a scratch buffer and dropped (counted): use
    /// [`TxBatch::is_full`] first where holding back is possible.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>) -> Option<TxMeta>) -> bool {
        if self.is_full() {
            self.overflow.clear();
            if write(&mut self.overflow).is_some() {
                self.dropped_full += 1;
            }
            return false;
        }
        if self.head + self.len == self.slots.len() {
            // The free slots are all before the queue: move it to the front. Only slot headers
            // move (buffers keep their allocations), and only when the end is reached.
            self.slots.rotate_left(self.head);
            self.head = 0;
        }
        let slot = &mut self.slots[self.head + self.len];
        slot.buf.clear();
        match write(&mut slot.buf) {
            Some(meta) => {
                slot.meta = meta;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The newest queued transmit, e.g. to append one more GSO segment to it.
    pub fn last_mut(&mut self) -> Option<&mut TxSlot> {
        self.len
            .checked_sub(1)
            .map(|i| &mut self.slots[self.head + i])
    }

    /// The queued transmits, oldest first.
    pub fn queued(&self) -> &[TxSlot] {
        &self.slots[self.head..self.head + self.len]
    }

    /// Removes the first `n` queued transmits (sent, or dropped by the backend).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.head += n;
        self.len -= n;
        if self.len == 0 {
            self.head = 0;
        }
    }

    /// Makes sure at least `n` buffers can be out with a backend at once, allocating the
    /// missing spares now. A backend calls it with its in-flight capacity (e.g. its send slot
    /// count) before lending; after the first call it only compares.
    pub fn reserve_lendable(&mut self, n: usize) {
        if n <= self.lendable {
            return;
        }
        let more = n - self.lendable;
        self.pool.reserve_exact(n - self.pool.len());
        self.pool
            .extend((0..more).map(|_| Vec::with_capacity(self.buf_capacity)));
        self.lendable = n;
    }

    /// Spares left: how many more transmits can be lent before some come back.
    pub fn spares(&self) -> usize {
        self.pool.len()
    }

    /// Lends the oldest queued transmit to a backend and removes it from the queue: the
    /// backend owns its buffer until it gives it back, and the slot gets a spare buffer in
    /// exchange. `None` when nothing is queued or no spare is left (the transmit stays
    /// queued; the backend tries again once buffers came back).
    pub fn lend_front(&mut self) -> Option<TxLoan> {
        if self.len == 0 {
            return None;
        }
        let spare = self.pool.pop()?;
        let slot = &mut self.slots[self.head];
        let buf = std::mem::replace(&mut slot.buf, spare);
        let meta = slot.meta;
        self.lent += 1;
        self.consume(1);
        Some(TxLoan {
            meta,
            buf: TxBuf(buf),
        })
    }

    /// A lent buffer the kernel is done with: back to the spares, emptied, its capacity kept.
    pub fn give_back(&mut self, buf: TxBuf) {
        let mut buf = buf.0;
        buf.clear();
        debug_assert!(
            self.lent > 0,
            "a buffer given back that this batch did not lend"
        );
        self.lent = self.lent.saturating_sub(1);
        self.pool.push(buf); // within the capacity reserved: no allocation
    }

    /// Where the buffers are.
    pub fn ledger(&self) -> TxLedger {
        TxLedger {
            queued: self.len,
            free: self.slots.len() - self.len,
            pool: self.pool.len(),
            lent: self.lent,
            total: self.slots.len() + self.lendable,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn meta(port: u16) -> TxMeta {
        TxMeta {
            dst: ([198, 18, 0, 2], port).into(),
            src_ip: None,
            src_port: 4433,
            ecn: None,
            segment_size: None,
        }
    }

    fn push(b: &mut TxBatch, payload: &[u8], port: u16) -> bool {
        b.push_with(|buf| {
            buf.extend_from_slice(payload);
            Some(meta(port))
        })
    }

    /// Every buffer's heap storage, from the batch and the loans outside it: each must be in
    /// exactly one place, and as many as the ledger's total.
    fn assert_every_buffer_once(b: &TxBatch, loans: &[TxLoan]) {
        let ledger = b.ledger();
        assert!(ledger.balanced(), "{ledger:?}");
        assert_eq!(ledger.lent, loans.len(), "{ledger:?}");
        let ptrs: Vec<*const u8> = b
            .slots
            .iter()
            .map(|s| s.buf.as_ptr())
            .chain(b.pool.iter().map(|v| v.as_ptr()))
            .chain(loans.iter().map(|l| l.buf.as_ptr()))
            .collect();
        let unique: HashSet<_> = ptrs.iter().collect();
        assert_eq!(unique.len(), ptrs.len(), "a buffer in two places");
        assert_eq!(ptrs.len(), ledger.total);
    }

    #[test]
    fn queues_consumes_and_reuses_buffers() {
        let mut b = TxBatch::new(2, 64);
        assert!(push(&mut b, b"one", 1));
        assert!(
            !b.push_with(|_| None),
            "a producer with nothing to send queues nothing"
        );
        assert!(push(&mut b, b"two", 2));
        assert!(b.is_full());
        assert!(!push(&mut b, b"three", 3));
        assert_eq!(b.dropped_full, 1);
        b.consume(1);
        assert_eq!(b.queued().len(), 1);
        assert_eq!(b.queued()[0].buf, b"two");
        assert_eq!(b.queued()[0].meta.dst.port(), 2);
        assert!(b.push_with(|buf| {
            assert!(buf.is_empty(), "a reused slot starts empty");
            assert!(buf.capacity() >= 3, "a reused slot keeps its allocation");
            buf.extend_from_slice(b"four");
            Some(meta(4))
        }));
        assert_eq!(b.queued()[1].buf, b"four");
        assert_eq!(b.last_mut().unwrap().buf, b"four");
        b.consume(5);
        assert!(b.is_empty());
        assert_every_buffer_once(&b, &[]);
    }

    #[test]
    fn the_ring_wraps_keeping_order() {
        let mut b = TxBatch::new(3, 16);
        for round in 0..10u8 {
            assert!(push(&mut b, &[round], 1));
            assert!(push(&mut b, &[round, 1], 2));
            b.consume(1);
            let q: Vec<&[u8]> = b.queued().iter().map(|s| s.buf.as_slice()).collect();
            assert_eq!(q, [&[round, 1][..]]);
            b.consume(1);
            assert!(b.is_empty());
        }
        // Queue at the end, with free slots only before it: the next push moves it.
        assert!(push(&mut b, b"a", 1));
        assert!(push(&mut b, b"b", 1));
        assert!(push(&mut b, b"c", 1));
        b.consume(2);
        assert!(push(&mut b, b"d", 1));
        assert!(push(&mut b, b"e", 1));
        assert!(b.is_full());
        let q: Vec<&[u8]> = b.queued().iter().map(|s| s.buf.as_slice()).collect();
        assert_eq!(q, [b"c", b"d", b"e"]);
        assert_every_buffer_once(&b, &[]);
    }

    #[test]
    fn lending_swaps_in_a_spare_and_giving_back_returns_it() {
        let mut b = TxBatch::new(4, 64);
        assert!(push(&mut b, b"one", 1));
        assert!(
            b.lend_front().is_none(),
            "nothing lendable before reserving"
        );
        assert_eq!(b.len(), 1, "the transmit stays queued");
        b.reserve_lendable(2);
        b.reserve_lendable(1);
        assert_eq!(
            (b.spares(), b.ledger().total),
            (2, 6),
            "reserving is idempotent"
        );
        assert!(push(&mut b, b"two", 2));
        assert!(push(&mut b, b"three", 3));
        assert_every_buffer_once(&b, &[]);

        let queued_ptr = b.queued()[0].buf.as_ptr();
        let one = b.lend_front().unwrap();
        assert_eq!((&*one.buf, one.meta.dst.port()), (&b"one"[..], 1));
        assert_eq!(one.buf.as_ptr(), queued_ptr, "the very buffer, not a copy");
        let two = b.lend_front().unwrap();
        assert_eq!(&*two.buf, b"two");
        assert!(b.lend_front().is_none(), "no spare left");
        assert_eq!(b.queued().len(), 1, "\"three\" waits");
        assert_eq!(b.queued()[0].buf, b"three");
        let mut loans = vec![one, two];
        assert_every_buffer_once(&b, &loans);
        assert_eq!(
            b.ledger(),
            TxLedger {
                queued: 1,
                free: 3,
                pool: 0,
                lent: 2,
                total: 6
            }
        );

        // The slots of lent transmits got spares: the batch fills up again.
        for i in 0..3 {
            assert!(push(&mut b, b"more", 10 + i));
        }
        assert!(b.is_full());
        assert_every_buffer_once(&b, &loans);

        b.give_back(loans.pop().unwrap().buf);
        assert_every_buffer_once(&b, &loans);
        let three = b.lend_front().unwrap();
        assert_eq!(&*three.buf, b"three");
        loans.push(three);
        assert_every_buffer_once(&b, &loans);
        for l in loans.drain(..) {
            b.give_back(l.buf);
        }
        b.consume(b.len());
        let ledger = b.ledger();
        assert!(ledger.all_home(), "{ledger:?}");
        assert_eq!(ledger.pool, 2);
        assert_every_buffer_once(&b, &[]);
        assert!(b.pool.iter().all(|v| v.is_empty() && v.capacity() >= 64));
    }

    #[test]
    fn steady_lending_keeps_every_buffer_and_its_capacity() {
        let mut b = TxBatch::new(8, 32);
        b.reserve_lendable(4);
        let mut loans: Vec<TxLoan> = Vec::new();
        let mut seen = HashSet::new();
        for round in 0..50u16 {
            while !b.is_full() {
                assert!(push(&mut b, &round.to_be_bytes(), round));
            }
            while let Some(l) = b.lend_front() {
                let from = u16::from_be_bytes([l.buf[0], l.buf[1]]);
                assert!(
                    from <= round && l.meta.dst.port() == from,
                    "{from} in {round}"
                );
                loans.push(l);
            }
            assert_every_buffer_once(&b, &loans);
            // The "kernel" finishes some, out of order.
            for _ in 0..3 {
                let l = loans.remove(loans.len() / 2);
                b.give_back(l.buf);
            }
            b.consume(b.len() / 2);
            let slots = b.slots.iter().map(|s| s.buf.as_ptr());
            let spares = b.pool.iter().map(|v| v.as_ptr());
            seen.extend(
                slots
                    .chain(spares)
                    .chain(loans.iter().map(|l| l.buf.as_ptr())),
            );
        }
        for l in loans.drain(..) {
            b.give_back(l.buf);
        }
        assert!(b.ledger().all_home());
        assert_every_buffer_once(&b, &[]);
        assert_eq!(
            seen.len(),
            b.ledger().total,
            "no buffer allocated after start-up"
        );
        assert!(b.slots.iter().all(|s| s.buf.capacity() >= 32));
    }
}
