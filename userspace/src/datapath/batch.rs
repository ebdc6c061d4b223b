//! The transmit batch: reusable buffers that quinn-proto writes into, queued for a backend.

use super::TxMeta;

/// One queued transmit: its buffer (kept allocated across uses) and where it goes.
#[derive(Debug)]
pub struct TxSlot {
    pub meta: TxMeta,
    pub buf: Vec<u8>,
}

/// A fixed number of transmit slots. Slots `0..len` are queued, oldest first; slots beyond
/// `len` are free and keep their buffers' capacity, so steady-state use allocates nothing.
#[derive(Debug)]
pub struct TxBatch {
    slots: Vec<TxSlot>,
    len: usize,
    /// Where a transmit goes when the batch is full and the producer cannot hold back
    /// (stateless responses): it is written, then dropped and counted.
    overflow: Vec<u8>,
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
            len: 0,
            overflow: Vec::with_capacity(buf_capacity),
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
        let slot = &mut self.slots[self.len];
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
        self.len.checked_sub(1).map(|i| &mut self.slots[i])
    }

    /// The queued transmits, oldest first.
    pub fn queued(&self) -> &[TxSlot] {
        &self.slots[..self.len]
    }

    /// Removes the first `n` queued transmits (sent, or dropped by the backend).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        if n == 0 {
            return;
        }
        // Rotating moves only the slot headers; buffers keep their allocations.
        self.slots[..self.len].rotate_left(n);
        self.len -= n;
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn queues_consumes_and_reuses_buffers() {
        let mut b = TxBatch::new(2, 64);
        assert!(b.push_with(|buf| {
            buf.extend_from_slice(b"one");
            Some(meta(1))
        }));
        assert!(
            !b.push_with(|_| None),
            "a producer with nothing to send queues nothing"
        );
        assert!(b.push_with(|buf| {
            buf.extend_from_slice(b"two");
            Some(meta(2))
        }));
        assert!(b.is_full());
        assert!(!b.push_with(|buf| {
            buf.extend_from_slice(b"three");
            Some(meta(3))
        }));
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
        b.consume(5);
        assert!(b.is_empty());
    }
}
