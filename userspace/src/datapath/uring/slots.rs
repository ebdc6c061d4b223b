//! Send slots: the memory one send request points the kernel at (its `msghdr`, `iovec`,
//! control messages and destination address), kept per request until its completion says the
//! kernel is done with it; and the transmit buffers lent by the driver's batch, whose payload
//! the requests point into.
//!
//! A sendmsg the socket cannot take at once is retried by the kernel later, reading the
//! `msghdr`, control messages and payload again, and a zero-copy send reads the payload until
//! its notification: so none of it may live where the driver reuses it as soon as `send`
//! returns. The headers live here (each slot is allocated once at start-up and reused; its
//! index is the request's `user_data`); the payload stays in the transmit batch's buffer,
//! which the batch lends us ([`TxBuf`]) instead of us copying it. A lent buffer is held in a
//! loan until the last request reading it (one, or one per datagram when a GSO batch is split)
//! is done, then waits in `returned` until the backend gives it back to the batch.

use std::ops::Range;

use socket2::SockAddr;

use super::msg::{encode_send, SendControl, SendOptions};
use crate::datapath::TxBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Submitted; the kernel may read the slot until its completion.
    InFlight,
    /// A zero-copy send completed but its notification (the kernel letting go of the payload)
    /// has not arrived yet.
    AwaitingNotif,
}

struct SendSlot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    control: SendControl,
    addr: SockAddr,
    state: SlotState,
    /// The loan whose buffer the request reads.
    loan: u16,
    /// Payload bytes of the request.
    bytes: usize,
    /// The request carried a UDP_SEGMENT message.
    segmented: bool,
}

/// A buffer lent by the batch, held while requests read it.
#[derive(Default)]
struct Loan {
    buf: Option<TxBuf>,
    /// Requests not done with the buffer, plus one while requests are still being filled.
    refs: u16,
}

/// What a completed send was, for the caller's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentInfo {
    pub segmented: bool,
    pub bytes: usize,
}

/// The slot table. Slots live in one boxed slice and never move, so the pointers a `msghdr`
/// holds into its own slot stay valid; a lent buffer's heap storage does not move either
/// while its [`TxBuf`] sits in a loan.
pub struct SendSlots {
    slots: Box<[SendSlot]>,
    free: Vec<u16>,
    /// One loan per slot at most: each loan has at least one request, or is being filled.
    loans: Box<[Loan]>,
    free_loans: Vec<u16>,
    /// Buffers the kernel is done with, for the batch ([`SendSlots::take_returned`]).
    returned: Vec<TxBuf>,
}

fn empty_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct of pointers and integers (with private padding on
    // some libcs, hence no struct literal); all zeroes is a valid empty header.
    unsafe { std::mem::zeroed() }
}

impl SendSlots {
    /// `n` slots, allocated now.
    pub fn new(n: u16) -> Self {
        let unspecified = SockAddr::from(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let slots = (0..n)
            .map(|_| SendSlot {
                hdr: empty_msghdr(),
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                control: SendControl::default(),
                addr: unspecified.clone(),
                state: SlotState::Free,
                loan: 0,
                bytes: 0,
                segmented: false,
            })
            .collect();
        Self {
            slots,
            // Popped from the end: slot 0 first.
            free: (0..n).rev().collect(),
            loans: (0..n).map(|_| Loan::default()).collect(),
            free_loans: (0..n).rev().collect(),
            returned: Vec::with_capacity(n.into()),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }

    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Lent buffers the kernel may still read.
    pub fn loans_out(&self) -> usize {
        self.loans.len() - self.free_loans.len()
    }

    /// Takes a lent buffer for the requests [`SendSlots::fill`] makes next, until
    /// [`SendSlots::end_loan`]. `None` (the buffer straight to `returned`) only when no loan
    /// is free, which a free slot rules out.
    pub fn begin_loan(&mut self, buf: TxBuf) -> Option<u16> {
        let Some(id) = self.free_loans.pop() else {
            self.returned.push(buf);
            return None;
        };
        let loan = &mut self.loans[id as usize];
        debug_assert!(loan.buf.is_none() && loan.refs == 0);
        loan.buf = Some(buf);
        loan.refs = 1;
        Some(id)
    }

    /// No more requests for loan `id`: its buffer returns when they are done (now, if none
    /// was made).
    pub fn end_loan(&mut self, id: u16) {
        self.unref(id);
    }

    fn unref(&mut self, id: u16) {
        let Some(loan) = self.loans.get_mut(id as usize) else {
            return;
        };
        loan.refs = loan.refs.saturating_sub(1);
        if loan.refs == 0 {
            if let Some(buf) = loan.buf.take() {
                self.returned.push(buf);
                self.free_loans.push(id);
            }
        }
    }

    /// Buffers the kernel is done with, to give back to the batch.
    pub fn take_returned(&mut self) -> std::vec::Drain<'_, TxBuf> {
        self.returned.drain(..)
    }

    /// Buffers back from the kernel, not yet taken.
    pub fn returned(&self) -> usize {
        self.returned.len()
    }

    /// Builds the `msghdr` of one send of `range` of loan `loan`'s buffer in a free slot.
    /// Returns the slot's id and the header to submit, or `None` when no slot is free or the
    /// loan or range is not valid.
    pub fn fill(
        &mut self,
        loan: u16,
        range: Range<usize>,
        dst: &SockAddr,
        opts: &SendOptions,
    ) -> Option<(u16, *const libc::msghdr)> {
        let payload = self.loans.get(loan as usize)?.buf.as_ref()?.get(range)?;
        let (ptr, len) = (payload.as_ptr(), payload.len());
        let id = self.free.pop()?;
        self.loans[loan as usize].refs += 1;
        let s = &mut self.slots[id as usize];
        debug_assert_eq!(s.state, SlotState::Free);
        s.addr = dst.clone();
        let control_len = encode_send(opts, &mut s.control);
        // The kernel only reads through the iovec of a send (the type wants `*mut`).
        s.iov = libc::iovec {
            iov_base: ptr.cast_mut().cast(),
            iov_len: len,
        };
        s.hdr = empty_msghdr();
        s.hdr.msg_name = s.addr.as_ptr() as *mut libc::c_void;
        s.hdr.msg_namelen = s.addr.len();
        s.hdr.msg_iov = &mut s.iov;
        s.hdr.msg_iovlen = 1;
        if control_len > 0 {
            s.hdr.msg_control = s.control.0.as_mut_ptr().cast();
            s.hdr.msg_controllen = control_len as _;
        }
        s.state = SlotState::InFlight;
        s.loan = loan;
        s.bytes = len;
        s.segmented = opts.segment_size.is_some();
        Some((id, &s.hdr))
    }

    /// The slot is done: free again, and its loan one request lighter.
    fn release(&mut self, id: u16) {
        let s = &mut self.slots[id as usize];
        s.state = SlotState::Free;
        let loan = s.loan;
        self.free.push(id);
        self.unref(loan);
    }

    /// A fill whose request could not be queued after all: the slot is free again.
    pub fn unfill(&mut self, id: u16) {
        if self
            .slots
            .get(id as usize)
            .is_some_and(|s| s.state == SlotState::InFlight)
        {
            self.release(id);
        }
    }

    /// The send's completion arrived. With `notif_follows` (zero-copy) the slot stays taken
    /// until [`SendSlots::notified`]. `None` if the slot had no send in flight.
    pub fn complete(&mut self, id: u16, notif_follows: bool) -> Option<SentInfo> {
        let s = self.slots.get_mut(id as usize)?;
        if s.state != SlotState::InFlight {
            return None;
        }
        let info = SentInfo {
            segmented: s.segmented,
            bytes: s.bytes,
        };
        if notif_follows {
            s.state = SlotState::AwaitingNotif;
        } else {
            self.release(id);
        }
        Some(info)
    }

    /// A zero-copy notification: the kernel no longer reads the slot's payload. Returns false
    /// if none was expected.
    pub fn notified(&mut self, id: u16) -> bool {
        match self.slots.get(id as usize) {
            Some(s) if s.state == SlotState::AwaitingNotif => {
                self.release(id);
                true
            }
            _ => false,
        }
    }

    /// The payload pointers of the requests in flight (tests: no copy was made).
    #[cfg(test)]
    pub fn payloads_in_flight(&self) -> Vec<(*const u8, usize)> {
        self.slots
            .iter()
            .filter(|s| s.state != SlotState::Free)
            .map(|s| (s.iov.iov_base as *const u8, s.iov.iov_len))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::{Ecn, TxBatch, TxLoan, TxMeta};

    /// A transmit lent by a batch, as the driver would queue it.
    fn lend(batch: &mut TxBatch, payload: &[u8]) -> TxLoan {
        batch.reserve_lendable(4);
        assert!(batch.push_with(|buf| {
            buf.extend_from_slice(payload);
            Some(TxMeta {
                dst: ([127, 0, 0, 1], 9).into(),
                src_ip: None,
                src_port: 1,
                ecn: None,
                segment_size: None,
            })
        }));
        batch.lend_front().unwrap()
    }

    #[test]
    fn fill_complete_and_return_the_lent_buffers() {
        let mut batch = TxBatch::new(4, 64);
        let mut slots = SendSlots::new(2);
        let dst = SockAddr::from("127.0.0.1:9".parse::<std::net::SocketAddr>().unwrap());
        let opts = SendOptions {
            ipv4: true,
            ecn: Some(Ecn::Ect0),
            src_ip: None,
            segment_size: Some(10),
        };
        let first = lend(&mut batch, &[1; 30]);
        let buf_ptr = first.buf.as_ptr();
        let la = slots.begin_loan(first.buf).unwrap();
        let (a, hdr) = slots.fill(la, 0..30, &dst, &opts).unwrap();
        slots.end_loan(la);
        {
            let h = &slots.slots[a as usize].hdr;
            assert_eq!(hdr, h as *const _);
            assert_eq!(h.msg_iovlen, 1);
            assert_eq!(h.msg_namelen, dst.len());
            assert!(h.msg_controllen > 0);
            let iov = &slots.slots[a as usize].iov;
            assert_eq!(
                (iov.iov_base as *const u8, iov.iov_len),
                (buf_ptr, 30),
                "the request reads the batch's own buffer: no copy"
            );
        }
        let second = lend(&mut batch, &[2; 64]);
        let lb = slots.begin_loan(second.buf).unwrap();
        assert!(
            slots.fill(lb, 0..65, &dst, &opts).is_none(),
            "beyond the buffer"
        );
        let (b, _) = slots
            .fill(lb, 0..64, &dst, &SendOptions::default())
            .unwrap();
        assert!(slots.fill(lb, 0..1, &dst, &opts).is_none(), "no slot left");
        slots.end_loan(lb);
        assert_ne!(a, b);
        assert_eq!((slots.free(), slots.loans_out()), (0, 2));
        assert_eq!(
            slots.slots[b as usize].hdr.msg_controllen, 0,
            "no control data"
        );
        assert!(slots.slots[b as usize].hdr.msg_control.is_null());

        assert_eq!(
            slots.complete(a, false),
            Some(SentInfo {
                segmented: true,
                bytes: 30
            })
        );
        assert_eq!(slots.complete(a, false), None, "completed twice");
        assert_eq!(slots.returned(), 1);
        // Zero-copy: the slot and its buffer stay taken until the notification.
        assert!(slots.complete(b, true).is_some());
        assert_eq!((slots.free(), slots.returned()), (1, 1));
        assert!(!slots.notified(a));
        assert!(slots.notified(b));
        assert!(!slots.notified(b));
        assert_eq!(
            (slots.free(), slots.loans_out(), slots.returned()),
            (2, 0, 2)
        );
        let back: Vec<TxBuf> = slots.take_returned().collect();
        assert_eq!(back[0].as_ptr(), buf_ptr);
        for buf in back {
            batch.give_back(buf);
        }
        assert!(batch.ledger().all_home(), "{:?}", batch.ledger());

        // A failed queueing frees the slot; the buffer returns when the loan ends.
        let third = lend(&mut batch, &[4; 20]);
        let lc = slots.begin_loan(third.buf).unwrap();
        let (c, _) = slots.fill(lc, 0..20, &dst, &opts).unwrap();
        slots.unfill(c);
        assert_eq!((slots.free(), slots.returned()), (2, 0));
        slots.end_loan(lc);
        assert_eq!((slots.loans_out(), slots.returned()), (0, 1));
    }

    #[test]
    fn a_split_transmit_returns_its_buffer_after_its_last_request() {
        let mut batch = TxBatch::new(2, 64);
        let mut slots = SendSlots::new(4);
        let dst = SockAddr::from("127.0.0.1:9".parse::<std::net::SocketAddr>().unwrap());
        let loan = lend(&mut batch, &[7; 25]);
        let ptr = loan.buf.as_ptr();
        let l = slots.begin_loan(loan.buf).unwrap();
        let ids: Vec<u16> = [0..10, 10..20, 20..25]
            .into_iter()
            .map(|r| slots.fill(l, r, &dst, &SendOptions::default()).unwrap().0)
            .collect();
        slots.end_loan(l);
        let mut payloads = slots.payloads_in_flight();
        payloads.sort();
        let want = [
            (ptr, 10),
            (ptr.wrapping_add(10), 10),
            (ptr.wrapping_add(20), 5),
        ];
        assert_eq!(payloads, want, "each datagram read in place");
        // Out of order, one zero-copy.
        assert!(slots.complete(ids[2], false).is_some());
        assert!(slots.complete(ids[0], true).is_some());
        assert!(slots.complete(ids[1], false).is_some());
        assert_eq!(slots.returned(), 0, "still read by a zero-copy send");
        assert!(slots.notified(ids[0]));
        assert_eq!(
            (slots.returned(), slots.loans_out(), slots.free()),
            (1, 0, 4)
        );
    }
}
