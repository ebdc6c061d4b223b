//! The io_uring instance: setup (with the kernel's refusals explained), submissions, the one
//! `io_uring_enter` per loop turn, completions; and ownership of every piece of memory the
//! kernel reads or writes on our behalf (the provided buffer ring, the send slots and the
//! transmit buffers lent to them, the recvmsg headers), so that none of it can be freed or
//! reused while a request still points at it.
//!
//! Requests are identified by `user_data`: a kind in the top byte, an index (socket or send
//! slot) in the low 32 bits.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::types::{CancelBuilder, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};
use socket2::SockAddr;

use super::bufring::{BufRing, LedgerError, LedgerSummary};
use super::error::UringError;
use super::msg::{SendOptions, RECV_CONTROL_LEN, RECV_NAME_LEN};
use super::slots::{SendSlots, SentInfo};
use crate::datapath::TxBuf;

/// The buffer group id of our provided buffer ring.
const BGID: u16 = 0;

const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
/// The multishot poll on another thread's wake-up eventfd.
const KIND_WAKE: u64 = 3;

/// `IORING_SEND_ZC_REPORT_USAGE`: the notification says whether the kernel had to copy.
const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`, in a zero-copy notification's result.
const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

fn user_data(kind: u64, index: usize) -> u64 {
    kind << 56 | index as u64
}

/// TEST-ONLY switch: `QUIXD_TEST_FAIL_IO_URING=enosys` or `=eperm` makes [`Ring::new`] fail
/// exactly as the kernel refuses `io_uring_setup` when io_uring is compiled out or blocked by
/// seccomp (ENOSYS), or disabled by `kernel.io_uring_disabled` (EPERM). The end-to-end tests
/// use it to check that `backend = "auto"` falls back and that `backend = "io_uring"` fails
/// with a clear message on a machine where io_uring works. It is read here and nowhere else;
/// never set it in production.
const TEST_FAIL_ENV: &str = "QUIXD_TEST_FAIL_IO_URING";

fn injected_failure() -> Option<io::Error> {
    let v = std::env::var(TEST_FAIL_ENV).ok()?;
    let errno = injected_errno(&v)?;
    tracing::warn!(
        "{TEST_FAIL_ENV}={v}: simulating a kernel that refuses io_uring (test-only switch)"
    );
    Some(io::Error::from_raw_os_error(errno))
}

/// The errno `QUIXD_TEST_FAIL_IO_URING=value` simulates.
fn injected_errno(value: &str) -> Option<i32> {
    match value.to_ascii_lowercase().as_str() {
        "enosys" => Some(libc::ENOSYS),
        "eperm" => Some(libc::EPERM),
        _ => None,
    }
}

/// Sizes of the ring and of the memory it owns.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    pub sockets: usize,
    /// Provided buffers (a power of two).
    pub buffers: u16,
    /// Bytes per provided buffer, headroom for the recvmsg header, name and control included.
    pub buffer_size: usize,
    pub send_slots: u16,
    /// Largest payload of one send.
    pub send_payload: usize,
    /// Send with `IORING_OP_SENDMSG_ZC` instead of `IORING_OP_SENDMSG`.
    pub zero_copy: bool,
    /// Completion queue entries; `None` sizes it so it cannot overflow. Tests make it small to
    /// exercise overflow.
    pub cq_entries: Option<u32>,
}

/// What one completion was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A multishot recvmsg on socket `sock` produced a result: `bid` holds `res` bytes, or
    /// `res` is a negative errno. Without `more` the request has ended and must be re-armed.
    Recv {
        sock: usize,
        res: i32,
        more: bool,
        bid: Option<u16>,
    },
    /// A send finished with `res` (bytes, or a negative errno).
    Sent { res: i32, info: SentInfo },
    /// A zero-copy send's payload is released; `copied` when the kernel copied after all.
    ZcNotified { copied: bool },
    /// The wake-up descriptor became readable; without `more` the poll has ended and must be
    /// re-armed.
    Wake { more: bool },
}

/// Counters of the ring itself.
#[derive(Debug, Default, Clone)]
pub struct RingCounters {
    /// `io_uring_enter` calls (submissions and waits).
    pub enters: u64,
    /// Extra enters because the submission queue was full mid-turn.
    pub sq_full: u64,
    /// Times the kernel flagged a completion queue overflow (completions kept aside, flushed
    /// by the next enter).
    pub cq_overflow: u64,
    /// Completions the kernel dropped outright (`IORING_FEAT_NODROP` could not buffer them).
    pub cq_dropped: u64,
    /// Completions whose `user_data` names no request of ours.
    pub cqe_unexpected: u64,
}

pub struct Ring {
    // Declared first, so dropped first: closing the ring ends every request before the
    // memory below, which requests point into, is freed (see also `Drop`).
    uring: IoUring,
    bufs: BufRing,
    slots: SendSlots,
    /// Largest payload of one send.
    send_payload: usize,
    /// One recvmsg header per socket, read by the kernel for the multishot requests (only
    /// `msg_namelen` and `msg_controllen` matter). Never changed after setup.
    recv_hdrs: Box<[libc::msghdr]>,
    zero_copy: bool,
    cq_dropped_seen: u32,
    counters: RingCounters,
}

impl Ring {
    /// Creates the ring and its memory. Sockets are registered later, once bound, so that a
    /// host without io_uring fails here before any port is taken.
    pub fn new(cfg: &RingConfig) -> Result<Self, UringError> {
        if let Some(e) = injected_failure() {
            return Err(UringError::setup(e));
        }
        // Each loop turn submits at most one request per send slot and one re-arm per socket.
        let sq = (cfg.send_slots as u32 + cfg.sockets as u32 + 8)
            .next_power_of_two()
            .max(64);
        // Completions outstanding at once: one per provided buffer, two per send slot
        // (zero-copy notifications), one ending per socket. A CQ this large cannot overflow.
        let cq = cfg.cq_entries.unwrap_or(
            (cfg.buffers as u32 + 2 * cfg.send_slots as u32 + 2 * cfg.sockets as u32 + 16)
                .next_power_of_two()
                .max(2 * sq),
        );
        // Cooperative task running: no interrupts to post completions while we are busy; the
        // kernel flags pending work and our next enter runs it.
        let uring = IoUring::builder()
            .setup_cqsize(cq)
            .setup_submit_all()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(sq)
            .or_else(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => IoUring::builder().setup_cqsize(cq).build(sq),
                _ => Err(e),
            })
            .map_err(UringError::setup)?;
        let params = uring.params();
        if !params.is_feature_nodrop() || !params.is_feature_ext_arg() {
            return Err(UringError::KernelTooOld {
                what: "IORING_FEAT_NODROP / IORING_FEAT_EXT_ARG",
                version: "5.11",
            });
        }
        let mut probe = Probe::new();
        uring
            .submitter()
            .register_probe(&mut probe)
            .map_err(|e| UringError::register("an opcode probe", e))?;
        let mut needed = vec![
            (opcode::RecvMsg::CODE, "IORING_OP_RECVMSG", "5.3"),
            (opcode::SendMsg::CODE, "IORING_OP_SENDMSG", "5.3"),
        ];
        if cfg.zero_copy {
            needed.push((opcode::SendMsgZc::CODE, "IORING_OP_SENDMSG_ZC", "6.1"));
        }
        for (code, what, version) in needed {
            if !probe.is_supported(code) {
                return Err(UringError::KernelTooOld { what, version });
            }
        }
        let bufs =
            BufRing::new(cfg.buffers, cfg.buffer_size).map_err(|error| UringError::Memory {
                what: "the provided receive buffers",
                error,
            })?;
        // SAFETY: the ring memory (page-aligned, `entries` entries) and the buffers it names
        // are owned by `bufs`, which lives in the same `Ring` as `uring` and is dropped after
        // it, so they stay valid for as long as the kernel may use them.
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                bufs.ring_addr(),
                bufs.entries(),
                BGID,
                0,
            )
        }
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => UringError::KernelTooOld {
                what: "provided buffer rings (IORING_REGISTER_PBUF_RING)",
                version: "5.19",
            },
            _ => UringError::register("the provided buffer ring", e),
        })?;
        let recv_hdrs = (0..cfg.sockets)
            .map(|_| {
                // SAFETY: msghdr is plain data; all zeroes is a valid empty header.
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                h.msg_namelen = RECV_NAME_LEN as _;
                h.msg_controllen = RECV_CONTROL_LEN as _;
                h
            })
            .collect();
        Ok(Self {
            uring,
            bufs,
            slots: SendSlots::new(cfg.send_slots),
            send_payload: cfg.send_payload,
            recv_hdrs,
            zero_copy: cfg.zero_copy,
            cq_dropped_seen: 0,
            counters: RingCounters::default(),
        })
    }

    /// Registers the sockets: request `i` names socket `fds[i]` by its index (`Fixed(i)`).
    pub fn register_sockets(&mut self, fds: &[RawFd]) -> Result<(), UringError> {
        assert_eq!(
            fds.len(),
            self.recv_hdrs.len(),
            "one recvmsg header per socket"
        );
        self.uring
            .submitter()
            .register_files(fds)
            .map_err(|e| UringError::register("the sockets (IORING_REGISTER_FILES)", e))
    }

    /// Queues `e`, entering the kernel first if the submission queue is full.
    ///
    /// # Safety
    ///
    /// Every buffer `e` points to must stay valid, and unchanged where the kernel reads it,
    /// until the request's last completion.
    unsafe fn push(&mut self, e: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from the caller.
            if unsafe { self.uring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            self.counters.sq_full += 1;
            self.enter()?;
        }
    }

    /// Queues a multishot recvmsg on socket `sock` drawing from the provided buffer ring.
    pub fn arm_recv(&mut self, sock: usize) -> io::Result<()> {
        let hdr: *const libc::msghdr = &self.recv_hdrs[sock];
        let e = opcode::RecvMsgMulti::new(Fixed(sock as u32), hdr, BGID)
            .build()
            .user_data(user_data(KIND_RECV, sock));
        // SAFETY: the header lives in `recv_hdrs`, a boxed slice owned by `self` and never
        // modified after setup; the buffers come from `bufs`, also owned by `self`. Both are
        // dropped only after `uring` (field order and `Drop`).
        unsafe { self.push(&e) }
    }

    /// Queues a multishot poll on `fd` (an eventfd another thread signals), so that a wait for
    /// completions also ends when it is signalled.
    pub fn arm_wake(&mut self, fd: RawFd) -> io::Result<()> {
        let e = opcode::PollAdd::new(io_uring::types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data(KIND_WAKE, 0));
        // SAFETY: a poll request points at no memory of ours.
        unsafe { self.push(&e) }
    }

    /// Free send slots: how many sends can be queued now.
    pub fn free_send_slots(&self) -> usize {
        self.slots.free()
    }

    pub fn sends_in_flight(&self) -> usize {
        self.slots.in_use()
    }

    pub fn send_slots(&self) -> usize {
        self.slots.capacity()
    }

    pub fn send_payload_capacity(&self) -> usize {
        self.send_payload
    }

    /// Lent transmit buffers the kernel may still read.
    pub fn loans_out(&self) -> usize {
        self.slots.loans_out()
    }

    /// Transmit buffers the kernel is done with, to give back to the batch that lent them.
    pub fn take_returned(&mut self) -> impl Iterator<Item = TxBuf> + '_ {
        self.slots.take_returned()
    }

    /// The payload of every send in flight (tests: read in place, not copied).
    #[cfg(test)]
    pub fn payloads_in_flight(&self) -> Vec<(*const u8, usize)> {
        self.slots.payloads_in_flight()
    }

    /// Lent buffers back from the kernel and not taken yet.
    pub fn returned(&self) -> usize {
        self.slots.returned()
    }

    /// Queues a transmit on socket `sock`, sending straight from its lent buffer: all of it
    /// in one request, or with `split` one request per `split` bytes. The buffer is held until
    /// the last of those requests is done, then comes out of [`Ring::take_returned`]. Returns
    /// how many requests were queued: fewer only when the send slots ran out (check
    /// [`Ring::free_send_slots`] first). On an error the requests queued so far still go out.
    pub fn send(
        &mut self,
        sock: usize,
        dst: &SockAddr,
        buf: TxBuf,
        split: Option<usize>,
        opts: &SendOptions,
    ) -> io::Result<usize> {
        let len = buf.len();
        let step = split.unwrap_or(len).max(1);
        let Some(loan) = self.slots.begin_loan(buf) else {
            return Ok(0);
        };
        let mut queued = 0;
        let mut result = Ok(());
        for start in (0..len).step_by(step) {
            let range = start..len.min(start + step);
            let Some((id, hdr)) = self.slots.fill(loan, range, dst, opts) else {
                break;
            };
            let e = if self.zero_copy {
                opcode::SendMsgZc::new(Fixed(sock as u32), hdr)
                    .ioprio(SEND_ZC_REPORT_USAGE)
                    .build()
            } else {
                opcode::SendMsg::new(Fixed(sock as u32), hdr).build()
            }
            .user_data(user_data(KIND_SEND, id as usize));
            // SAFETY: the header, its iovec, control messages and address live in slot `id`
            // of `slots`, owned by `self`; the payload is in the lent buffer that `slots`
            // holds in loan `loan` (its heap storage never moves or changes: `TxBuf` is
            // read-only). The slot stays taken (never refilled) and the buffer held until the
            // completion, and for zero-copy until the notification (`reap`).
            if let Err(err) = unsafe { self.push(&e) } {
                self.slots.unfill(id);
                result = Err(err);
                break;
            }
            queued += 1;
        }
        self.slots.end_loan(loan);
        result.map(|()| queued)
    }

    /// Enters the kernel if anything is queued or the kernel asked for it (pending task work,
    /// overflowed completions). The loop turn's one `io_uring_enter` when it does not sleep.
    pub fn submit(&mut self) -> io::Result<()> {
        let needed = {
            let sq = self.uring.submission();
            !sq.is_empty() || sq.taskrun() || sq.cq_overflow()
        };
        if needed {
            self.enter()?;
        }
        Ok(())
    }

    fn enter(&mut self) -> io::Result<()> {
        self.note_overflow();
        self.counters.enters += 1;
        match self.uring.submit() {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits what is queued and sleeps until a completion arrives or `timeout` passes:
    /// the loop turn's one `io_uring_enter` when it sleeps.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.note_overflow();
        self.counters.enters += 1;
        let r = match timeout {
            Some(t) => {
                let ts = Timespec::from(t);
                let args = SubmitArgs::new().timespec(&ts);
                self.uring.submitter().submit_with_args(1, &args)
            }
            None => self.uring.submit_and_wait(1),
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) || e.raw_os_error() == Some(libc::ETIME) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The ring's descriptor: readable while completions wait (for `poll_fds`).
    pub fn fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.uring.as_raw_fd()
    }

    /// Whether completions are waiting to be reaped.
    pub fn completions_ready(&mut self) -> bool {
        !self.uring.completion().is_empty()
    }

    fn note_overflow(&mut self) {
        if self.uring.submission().cq_overflow() {
            self.counters.cq_overflow += 1;
        }
    }

    /// Hands every available completion to `f`. Send slots and lent buffers are released
    /// here, so a send's memory is reused only after the kernel is done with it.
    pub fn reap(&mut self, mut f: impl FnMut(Event)) {
        let mut cq = self.uring.completion();
        let dropped = cq.overflow();
        if dropped != self.cq_dropped_seen {
            self.counters.cq_dropped += u64::from(dropped.wrapping_sub(self.cq_dropped_seen));
            self.cq_dropped_seen = dropped;
            tracing::error!(
                dropped,
                "io_uring dropped completions (CQ overflow without NODROP buffering): \
                 requests may be lost"
            );
        }
        for cqe in &mut cq {
            let ud = cqe.user_data();
            let index = (ud & 0xffff_ffff) as usize;
            let (res, flags) = (cqe.result(), cqe.flags());
            match ud >> 56 {
                KIND_RECV if index < self.recv_hdrs.len() => f(Event::Recv {
                    sock: index,
                    res,
                    more: cqueue::more(flags),
                    bid: cqueue::buffer_select(flags),
                }),
                KIND_SEND if cqueue::notif(flags) => {
                    if self.slots.notified(index as u16) {
                        f(Event::ZcNotified {
                            copied: res as u32 & NOTIF_USAGE_ZC_COPIED != 0,
                        });
                    } else {
                        self.counters.cqe_unexpected += 1;
                    }
                }
                KIND_SEND => {
                    let notif_follows = self.zero_copy && cqueue::more(flags);
                    match self.slots.complete(index as u16, notif_follows) {
                        Some(info) => f(Event::Sent { res, info }),
                        None => self.counters.cqe_unexpected += 1,
                    }
                }
                KIND_WAKE => f(Event::Wake {
                    more: cqueue::more(flags),
                }),
                _ => self.counters.cqe_unexpected += 1,
            }
        }
    }

    /// A completion named buffer `bid` with `len` bytes: take it from the ring.
    pub fn take_buffer(&mut self, bid: u16, len: usize) -> Result<&[u8], LedgerError> {
        self.bufs.take(bid, len)
    }

    /// Puts a taken buffer back (visible to the kernel at [`Ring::publish_buffers`]).
    pub fn give_back(&mut self, bid: u16) -> Result<(), LedgerError> {
        self.bufs.give_back(bid)
    }

    pub fn publish_buffers(&mut self) {
        self.bufs.publish();
    }

    pub fn ledger(&self) -> LedgerSummary {
        self.bufs.ledger()
    }

    pub fn counters(&self) -> &RingCounters {
        &self.counters
    }

    /// Cancels every submitted request and waits (up to `timeout`) until they have ended.
    pub fn cancel_all(&mut self, timeout: Duration) -> io::Result<()> {
        match self
            .uring
            .submitter()
            .register_sync_cancel(Some(Timespec::from(timeout)), CancelBuilder::any())
        {
            Ok(()) => Ok(()),
            // Nothing left to cancel.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

// SAFETY: the raw pointers inside (the provided-buffer mapping, the recvmsg headers, the send
// slots' headers, the ring's own mappings) point into memory this value owns and frees on
// drop; none is tied to the creating thread. io_uring lets any thread submit to and reap from
// a ring (no IORING_SETUP_SINGLE_ISSUER), so the whole value may move to another thread; it
// is never used from two at once (every use takes `&mut self` or reads only).
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // Closing the ring cancels its requests, but the kernel finishes that in a worker,
        // possibly after our buffers are unmapped. End them synchronously first.
        if let Err(e) = self.cancel_all(Duration::from_millis(500)) {
            tracing::debug!(error = %e, "io_uring: cancelling requests at drop");
        }
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_switch_values() {
        assert_eq!(injected_errno("enosys"), Some(libc::ENOSYS));
        assert_eq!(injected_errno("EPERM"), Some(libc::EPERM));
        assert_eq!(injected_errno(""), None);
        assert_eq!(injected_errno("yes"), None);
    }

    #[test]
    fn user_data_layout() {
        let ud = user_data(KIND_SEND, 63);
        assert_eq!((ud >> 56, ud & 0xffff_ffff), (KIND_SEND, 63));
    }
}
