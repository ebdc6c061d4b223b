//! Send slots: the memory one send request points the kernel at (its `msghdr`, `iovec`,
//! control messages, destination address and a copy of the payload), kept per request until
//! its completion says the kernel is done with it.
//!
//! A sendmsg the socket cannot take at once is retried by the kernel later, reading the
//! `msghdr`, control messages and payload again, and a zero-copy send reads the payload until
//! its notification: so none of it may live in the driver's transmit batch, which is reused as
//! soon as `send` returns. Each slot is allocated once at start-up and reused; its index is the
//! request's `user_data`.

use socket2::SockAddr;

use super::msg::{encode_send, SendControl, SendOptions};

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
    payload: Vec<u8>,
    state: SlotState,
    /// The request carried a UDP_SEGMENT message.
    segmented: bool,
}

/// What a completed send was, for the caller's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentInfo {
    pub segmented: bool,
    pub bytes: usize,
}

/// The slot table. Slots live in one boxed slice and never move, so the pointers a `msghdr`
/// holds into its own slot stay valid.
pub struct SendSlots {
    slots: Box<[SendSlot]>,
    free: Vec<u16>,
    payload_capacity: usize,
}

fn empty_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct of pointers and integers (with private padding on
    // some libcs, hence no struct literal); all zeroes is a valid empty header.
    unsafe { std::mem::zeroed() }
}

impl SendSlots {
    /// `n` slots whose payload buffers hold `payload_capacity` bytes each. The buffers are
    /// reserved now and touched only as far as sends use them.
    pub fn new(n: u16, payload_capacity: usize) -> Self {
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
                payload: Vec::with_capacity(payload_capacity),
                state: SlotState::Free,
                segmented: false,
            })
            .collect();
        Self {
            slots,
            // Popped from the end: slot 0 first.
            free: (0..n).rev().collect(),
            payload_capacity,
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

    /// The largest payload one slot takes.
    pub fn payload_capacity(&self) -> usize {
        self.payload_capacity
    }

    /// Copies one send into a free slot and builds its `msghdr`. Returns the slot's id and the
    /// header to submit, or `None` when no slot is free or `payload` is too large.
    pub fn fill(
        &mut self,
        dst: &SockAddr,
        payload: &[u8],
        opts: &SendOptions,
    ) -> Option<(u16, *const libc::msghdr)> {
        if payload.len() > self.payload_capacity {
            return None;
        }
        let id = self.free.pop()?;
        let s = &mut self.slots[id as usize];
        debug_assert_eq!(s.state, SlotState::Free);
        s.payload.clear();
        s.payload.extend_from_slice(payload); // within capacity: no allocation
        s.addr = dst.clone();
        let control_len = encode_send(opts, &mut s.control);
        s.iov = libc::iovec {
            iov_base: s.payload.as_mut_ptr().cast(),
            iov_len: s.payload.len(),
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
        s.segmented = opts.segment_size.is_some();
        Some((id, &s.hdr))
    }

    /// A fill whose request could not be queued after all: the slot is free again.
    pub fn unfill(&mut self, id: u16) {
        if let Some(s) = self.slots.get_mut(id as usize) {
            if s.state == SlotState::InFlight {
                s.state = SlotState::Free;
                self.free.push(id);
            }
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
            bytes: s.payload.len(),
        };
        if notif_follows {
            s.state = SlotState::AwaitingNotif;
        } else {
            s.state = SlotState::Free;
            self.free.push(id);
        }
        Some(info)
    }

    /// A zero-copy notification: the kernel no longer reads the slot's payload. Returns false
    /// if none was expected.
    pub fn notified(&mut self, id: u16) -> bool {
        match self.slots.get_mut(id as usize) {
            Some(s) if s.state == SlotState::AwaitingNotif => {
                s.state = SlotState::Free;
                self.free.push(id);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::Ecn;

    #[test]
    fn fill_complete_and_reuse_without_allocating() {
        let mut slots = SendSlots::new(2, 64);
        let dst = SockAddr::from("127.0.0.1:9".parse::<std::net::SocketAddr>().unwrap());
        let opts = SendOptions {
            ipv4: true,
            ecn: Some(Ecn::Ect0),
            src_ip: None,
            segment_size: Some(10),
        };
        let (a, hdr) = slots.fill(&dst, &[1; 30], &opts).unwrap();
        let buf_ptr = slots.slots[a as usize].payload.as_ptr();
        {
            let h = &slots.slots[a as usize].hdr;
            assert_eq!(hdr, h as *const _);
            assert_eq!(h.msg_iovlen, 1);
            assert_eq!(h.msg_namelen, dst.len());
            assert!(h.msg_controllen > 0);
            let iov = &slots.slots[a as usize].iov;
            assert_eq!((iov.iov_base as *const u8, iov.iov_len), (buf_ptr, 30));
        }
        let (b, _) = slots.fill(&dst, &[2; 64], &SendOptions::default()).unwrap();
        assert_ne!(a, b);
        assert_eq!(slots.free(), 0);
        assert!(slots.fill(&dst, &[3], &opts).is_none(), "no slot left");
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
        // Zero-copy: the slot stays taken until the notification.
        assert!(slots.complete(b, true).is_some());
        assert_eq!(slots.free(), 1);
        assert!(!slots.notified(a));
        assert!(slots.notified(b));
        assert!(!slots.notified(b));
        assert_eq!(slots.free(), 2);

        let (c, _) = slots.fill(&dst, &[4; 20], &opts).unwrap();
        assert_eq!(
            slots.slots[c as usize].payload.capacity(),
            64,
            "buffers are reused, never grown"
        );
        assert!(slots.fill(&dst, &[0; 65], &opts).is_none(), "too large");
        slots.unfill(c);
        assert_eq!(slots.free(), 2);
    }
}
