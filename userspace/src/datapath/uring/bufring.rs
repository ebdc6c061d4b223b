//! The provided buffer ring: the receive buffers multishot recvmsg picks from, and the ledger
//! that says who holds each one.
//!
//! The kernel takes a buffer from the ring for each datagram (or GRO batch) and names it in
//! the completion. The backend then reads it, lends the payload to the driver, and puts the
//! buffer back at the ring's tail once the driver has copied it. The [`Ledger`] checks every
//! step: a buffer the kernel names must be the kernel's, a buffer we put back must be ours. That
//! also guarantees the ring never holds more entries than it has room for, and that we never
//! read a buffer the kernel may be writing.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// Who holds a provided buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// In the ring: the kernel may fill it at any time.
    Kernel,
    /// Named by a completion and not yet put back: only the backend touches it.
    Backend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("buffer id {0} is outside the ring")]
    Unknown(u16),
    #[error("buffer {0} was named by a completion but is not the kernel's")]
    NotInKernel(u16),
    #[error("buffer {0} was put back but the backend does not hold it")]
    NotHeld(u16),
}

/// Where every provided buffer is.
#[derive(Debug, Clone)]
pub struct Ledger {
    owner: Vec<Owner>,
    held: usize,
}

/// A summary of the ledger, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerSummary {
    pub capacity: usize,
    pub in_kernel: usize,
    pub held: usize,
}

impl LedgerSummary {
    /// Every buffer is back in the ring.
    pub fn balanced(&self) -> bool {
        self.held == 0 && self.in_kernel == self.capacity
    }
}

impl Ledger {
    /// `n` buffers, all in the ring.
    pub fn new(n: usize) -> Self {
        Self {
            owner: vec![Owner::Kernel; n],
            held: 0,
        }
    }

    /// A completion named buffer `bid`: it moves from the kernel to us.
    pub fn take(&mut self, bid: u16) -> Result<(), LedgerError> {
        match self.owner.get_mut(bid as usize) {
            None => Err(LedgerError::Unknown(bid)),
            Some(o @ Owner::Kernel) => {
                *o = Owner::Backend;
                self.held += 1;
                Ok(())
            }
            Some(Owner::Backend) => Err(LedgerError::NotInKernel(bid)),
        }
    }

    /// We put buffer `bid` back into the ring.
    pub fn give_back(&mut self, bid: u16) -> Result<(), LedgerError> {
        match self.owner.get_mut(bid as usize) {
            None => Err(LedgerError::Unknown(bid)),
            Some(o @ Owner::Backend) => {
                *o = Owner::Kernel;
                self.held -= 1;
                Ok(())
            }
            Some(Owner::Kernel) => Err(LedgerError::NotHeld(bid)),
        }
    }

    pub fn owner(&self, bid: u16) -> Option<Owner> {
        self.owner.get(bid as usize).copied()
    }

    pub fn summary(&self) -> LedgerSummary {
        LedgerSummary {
            capacity: self.owner.len(),
            in_kernel: self.owner.len() - self.held,
            held: self.held,
        }
    }
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping of `len` bytes at an address the kernel picks;
        // no existing memory is affected. The result is checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing borrows the mapping any
        // more (borrows of it are tied to the owner's lifetime).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// `struct io_uring_buf`: one ring entry. The `resv` field of entry 0 is the ring's tail.
#[repr(C)]
struct RingEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const ENTRY_SIZE: usize = std::mem::size_of::<RingEntry>();
const _: () = assert!(ENTRY_SIZE == 16);
/// Offset of the tail (`resv` of entry 0) in the ring.
const TAIL_OFFSET: usize = 14;

/// The ring shared with the kernel, and the buffers it hands out.
pub struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    entries: u16,
    buf_size: usize,
    /// Our tail: entries written so far (wrapping). The kernel sees it once published.
    tail: u16,
    published: u16,
    ledger: Ledger,
}

impl BufRing {
    /// `entries` buffers (a power of two, at most 32768) of `buf_size` bytes each, all put in
    /// the ring. Register [`BufRing::ring_addr`] with the kernel before use.
    pub fn new(entries: u16, buf_size: usize) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("buffer ring entries {entries}: not a power of two <= 32768"),
            ));
        }
        let n = entries as usize;
        // mmap gives page alignment, which the kernel requires of the ring.
        let ring = Mapping::new(n * ENTRY_SIZE)?;
        let bufs = Mapping::new(n * buf_size)?;
        let mut r = Self {
            ring,
            bufs,
            entries,
            buf_size,
            tail: 0,
            published: 0,
            ledger: Ledger::new(n),
        };
        for bid in 0..entries {
            r.write_entry(bid);
        }
        r.publish();
        Ok(r)
    }

    /// The ring's address, for `register_buf_ring_with_flags`.
    pub fn ring_addr(&self) -> u64 {
        self.ring.ptr.as_ptr() as u64
    }

    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Writes buffer `bid` at our tail (not yet visible to the kernel).
    fn write_entry(&mut self, bid: u16) {
        let slot = (self.tail & (self.entries - 1)) as usize;
        let addr = self.bufs.ptr.as_ptr() as u64 + (bid as usize * self.buf_size) as u64;
        // SAFETY: `slot < entries`, so the entry lies inside the ring mapping. The kernel only
        // reads entries between its head and the published tail; this slot is at or past the
        // published tail (the ledger keeps at most `entries` buffers in the ring, so it was
        // consumed), hence not read concurrently. `resv` is not written: in entry 0 it is the
        // tail, written only through the atomic in `publish`.
        unsafe {
            let e = self
                .ring
                .ptr
                .as_ptr()
                .add(slot * ENTRY_SIZE)
                .cast::<RingEntry>();
            std::ptr::addr_of_mut!((*e).addr).write(addr);
            std::ptr::addr_of_mut!((*e).len).write(self.buf_size as u32);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries written since the last call visible to the kernel (one store).
    pub fn publish(&mut self) {
        if self.tail == self.published {
            return;
        }
        // SAFETY: the tail lives at a 2-aligned offset inside the ring mapping, which outlives
        // this borrow. The kernel reads it with acquire semantics; the release store orders
        // the entries written before it.
        let tail = unsafe { &*self.ring.ptr.as_ptr().add(TAIL_OFFSET).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
    }

    /// A completion named buffer `bid` holding `len` bytes: the backend now owns it; returns
    /// its contents.
    pub fn take(&mut self, bid: u16, len: usize) -> Result<&[u8], LedgerError> {
        self.ledger.take(bid)?;
        Ok(self.contents(bid, len))
    }

    /// The first `len` bytes of a buffer the backend holds.
    fn contents(&self, bid: u16, len: usize) -> &[u8] {
        debug_assert_eq!(self.ledger.owner(bid), Some(Owner::Backend));
        let len = len.min(self.buf_size);
        // SAFETY: `bid` is in range (the ledger checked it) and the ledger says the backend
        // holds it: it is not in the ring, so the kernel does not write to it until it is
        // given back, which needs `&mut self` and so ends this borrow first.
        unsafe {
            std::slice::from_raw_parts(
                self.bufs.ptr.as_ptr().add(bid as usize * self.buf_size),
                len,
            )
        }
    }

    /// Puts buffer `bid` back at the tail; visible to the kernel at the next [`publish`].
    ///
    /// [`publish`]: BufRing::publish
    pub fn give_back(&mut self, bid: u16) -> Result<(), LedgerError> {
        self.ledger.give_back(bid)?;
        self.write_entry(bid);
        Ok(())
    }

    pub fn ledger(&self) -> LedgerSummary {
        self.ledger.summary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_tracks_every_buffer() {
        let mut l = Ledger::new(4);
        assert!(l.summary().balanced());
        l.take(2).unwrap();
        l.take(0).unwrap();
        assert_eq!(
            l.summary(),
            LedgerSummary {
                capacity: 4,
                in_kernel: 2,
                held: 2
            }
        );
        assert!(!l.summary().balanced());
        assert_eq!(l.take(2), Err(LedgerError::NotInKernel(2)));
        assert_eq!(l.give_back(1), Err(LedgerError::NotHeld(1)));
        assert_eq!(l.take(4), Err(LedgerError::Unknown(4)));
        assert_eq!(l.give_back(9), Err(LedgerError::Unknown(9)));
        l.give_back(2).unwrap();
        assert_eq!(l.give_back(2), Err(LedgerError::NotHeld(2)));
        l.give_back(0).unwrap();
        assert!(l.summary().balanced());
        // Errors changed nothing.
        assert_eq!(l.summary().held, 0);
    }

    #[test]
    fn ring_entries_and_tail_as_the_kernel_reads_them() {
        let mut r = BufRing::new(8, 256).unwrap();
        let entry = |r: &BufRing, slot: usize| -> (u64, u32, u16) {
            // SAFETY: test-only read of an entry inside the mapping; no kernel is attached.
            unsafe {
                let e = r
                    .ring
                    .ptr
                    .as_ptr()
                    .add(slot * ENTRY_SIZE)
                    .cast::<RingEntry>();
                ((*e).addr, (*e).len, (*e).bid)
            }
        };
        let tail = |r: &BufRing| -> u16 {
            // SAFETY: as above.
            unsafe {
                (*r.ring.ptr.as_ptr().add(TAIL_OFFSET).cast::<AtomicU16>()).load(Ordering::Acquire)
            }
        };
        let base = r.bufs.ptr.as_ptr() as u64;
        assert_eq!(tail(&r), 8, "all buffers published at start");
        for slot in 0..8 {
            assert_eq!(
                entry(&r, slot),
                (base + slot as u64 * 256, 256, slot as u16)
            );
        }
        // The kernel hands out buffer 5 and 1; we give them back in another order.
        assert_eq!(r.take(5, 10).unwrap().len(), 10);
        assert_eq!(r.take(1, 999).unwrap().len(), 256, "clamped to the buffer");
        assert_eq!(r.take(5, 1), Err(LedgerError::NotInKernel(5)));
        r.give_back(1).unwrap();
        r.give_back(5).unwrap();
        assert_eq!(r.give_back(5), Err(LedgerError::NotHeld(5)));
        assert_eq!(tail(&r), 8, "not visible before publish");
        r.publish();
        assert_eq!(tail(&r), 10);
        // Tail positions 8 and 9 are ring slots 0 and 1: the ring wraps.
        assert_eq!(entry(&r, 0), (base + 256, 256, 1));
        assert_eq!(entry(&r, 1), (base + 5 * 256, 256, 5));
        assert!(r.ledger().balanced());
        assert!(BufRing::new(6, 64).is_err());
    }
}
