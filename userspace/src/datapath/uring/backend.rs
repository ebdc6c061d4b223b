//! The io_uring backend: [`UringDatapath`] over the ring, its buffers and its sockets.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::bufring::LedgerSummary;
use super::error::UringError;
use super::msg::{self, SendOptions};
use super::ring::{Event, Ring, RingConfig, RingCounters};
use super::sock;
use crate::datapath::{Capabilities, Datapath, Ecn, RxMeta, TxBatch, TxMeta};

/// Completions handed to the driver per `recv` call, so sends are not held up by a flood.
const RX_BATCH: usize = 64;
/// Sends in flight at once.
const SEND_SLOTS: u16 = 64;
/// The largest transmit: the driver's transmit buffers hold 64 KiB, a UDP GSO batch too.
const SEND_PAYLOAD: usize = 64 * 1024;
/// Segments per GSO send we announce (the kernel's UDP_MAX_SEGMENTS is 64 or more).
const MAX_GSO_SEGMENTS: usize = 64;
/// A GRO batch is at most 64 KiB: buffers that hold one get UDP_GRO.
const GRO_PAYLOAD: usize = 65535;
/// Multishot requests on one socket that may end in an error, back to back, with no datagram
/// in between, before `recv` gives up with an error instead of re-arming forever.
const MAX_REARM_FAILURES: u32 = 32;

/// What the io_uring backend needs from the config.
#[derive(Debug, Clone)]
pub struct UringSettings {
    pub listen: Vec<SocketAddr>,
    /// Provided receive buffers (a power of two, shared by all sockets).
    pub buffers: u16,
    /// Payload bytes per receive buffer; below 65535 GRO stays off.
    pub buffer_size: usize,
    /// Zero-copy sends (`IORING_OP_SENDMSG_ZC`).
    pub send_zc: bool,
    /// `SO_REUSEPORT` on every socket: one worker's share of a group (see
    /// [`crate::datapath::socket::reserve`]).
    pub reuse_port: bool,
}

/// Counters of the io_uring backend. Every datagram we drop has its own counter.
#[derive(Debug, Default, Clone)]
pub struct UringCounters {
    /// `recv` calls: the driver's loop turns (compare with `ring_enters`).
    pub turns: u64,
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    /// Completions carrying more than one datagram (GRO).
    pub rx_gro_batches: u64,
    /// Received datagrams by ECN codepoint.
    pub rx_ecn_ect0: u64,
    pub rx_ecn_ect1: u64,
    pub rx_ecn_ce: u64,
    /// Dropped: the datagram was larger than a receive buffer.
    pub rx_truncated: u64,
    /// Dropped: unreadable buffer layout or peer address.
    pub rx_malformed: u64,
    /// Dropped: zero-length datagrams.
    pub rx_empty: u64,
    /// Dropped: a completion named a buffer the ledger says the kernel does not hold.
    pub rx_ledger_errors: u64,
    /// Dropped: received by the kernel but still unread when the backend closed.
    pub rx_dropped_at_close: u64,
    /// Dropped by the kernel before we saw them: a socket's receive queue was full
    /// (`SO_RXQ_OVFL`, summed over the sockets).
    pub rx_socket_drops: u64,
    /// Delivered without some metadata: control messages cut short or malformed.
    pub rx_control_truncated: u64,
    pub rx_control_malformed: u64,
    /// Multishot receives that ran out of provided buffers (ENOBUFS) and were re-armed; the
    /// datagrams waited in the socket meanwhile.
    pub rx_no_buffers: u64,
    /// Multishot receives that ended for another reason and were re-armed.
    pub rx_rearmed: u64,
    /// Receive completions with an error.
    pub rx_errors: u64,
    /// Send requests queued, datagrams and bytes in them.
    pub tx_transmits: u64,
    pub tx_datagrams: u64,
    pub tx_bytes: u64,
    /// Datagrams sent with an ECN codepoint (quinn-proto asks for ECT(0) while ECN validates).
    pub tx_ecn_marked: u64,
    /// GSO batches sent as one request per datagram because the kernel refused GSO.
    pub tx_split: u64,
    /// Dropped: no socket serves the source port and destination family.
    pub tx_no_socket: u64,
    /// Dropped: larger than a send slot.
    pub tx_too_big: u64,
    /// Dropped: empty transmits.
    pub tx_empty: u64,
    /// Dropped: EMSGSIZE (a path MTU probe larger than the interface MTU).
    pub tx_emsgsize: u64,
    /// Dropped: the send completed with another error.
    pub tx_errors: u64,
    /// Times a send call stopped early because every send slot was in flight.
    pub tx_slots_full: u64,
    /// Zero-copy sends for which the kernel copied after all (e.g. loopback).
    pub tx_zc_copied: u64,
}

/// One receive completion waiting to be processed.
#[derive(Debug, Clone, Copy)]
struct RecvCqe {
    sock: usize,
    res: i32,
    more: bool,
    bid: Option<u16>,
}

pub struct UringDatapath {
    // First: dropped (requests cancelled) before the sockets close.
    ring: Ring,
    sockets: Vec<sock::Bound>,
    /// Receive completions reaped but not yet handed over (reaping for send completions also
    /// collects these). Capacity for every buffer plus one ending per socket: never grows.
    rx_queue: VecDeque<RecvCqe>,
    rearm: Vec<bool>,
    failures: Vec<u32>,
    /// Each socket's last `SO_RXQ_OVFL` drop count.
    socket_drops: Vec<u32>,
    gso: bool,
    /// The kernel refused a GSO send (EIO/EINVAL): split batches from now on.
    gso_broken: bool,
    may_fragment: bool,
    buffer_payload: usize,
    counters: UringCounters,
    /// Another thread's wake-up eventfd, polled by the ring ([`Datapath::wake_on`]).
    wake: Option<std::os::fd::RawFd>,
    /// Its multishot poll ended: re-arm it.
    wake_ended: bool,
    /// The result of `close`'s ledger check.
    closed_balanced: Option<bool>,
}

// The quinn adapter moves a datapath behind a mutex; keep it possible.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<UringDatapath>();
};

impl UringDatapath {
    /// The bound sockets, in the order of `settings.listen`.
    pub fn sockets(&self) -> impl Iterator<Item = &std::net::UdpSocket> {
        self.sockets.iter().map(|b| &b.socket)
    }

    /// Sets up the ring (failing before any port is bound if the kernel refuses io_uring),
    /// binds the sockets, registers them and arms the receives.
    pub fn open(settings: &UringSettings) -> Result<Self, UringError> {
        Self::open_sized(settings, None)
    }

    /// [`UringDatapath::open`] with a completion queue of `cq_entries` (tests).
    fn open_sized(settings: &UringSettings, cq_entries: Option<u32>) -> Result<Self, UringError> {
        let buffer_payload = settings.buffer_size.clamp(1200, 65536);
        let want_gro = buffer_payload >= GRO_PAYLOAD;
        let cfg = RingConfig {
            sockets: settings.listen.len(),
            buffers: settings.buffers,
            buffer_size: (msg::RECV_HEADROOM + buffer_payload).next_multiple_of(64),
            send_slots: SEND_SLOTS,
            send_payload: SEND_PAYLOAD,
            zero_copy: settings.send_zc,
            cq_entries,
        };
        let mut ring = Ring::new(&cfg)?;
        let sockets = settings
            .listen
            .iter()
            .map(|&addr| sock::bind(addr, want_gro, settings.reuse_port))
            .collect::<Result<Vec<_>, _>>()?;
        let fds: Vec<_> = sockets.iter().map(sock::Bound::fd).collect();
        ring.register_sockets(&fds)?;
        let n = sockets.len();
        let mut dp = Self {
            ring,
            rx_queue: VecDeque::with_capacity(settings.buffers as usize + 2 * n),
            rearm: vec![false; n],
            failures: vec![0; n],
            socket_drops: vec![0; n],
            gso: sock::gso_supported(),
            gso_broken: false,
            wake: None,
            wake_ended: false,
            may_fragment: sockets.iter().any(|s| s.may_fragment),
            buffer_payload,
            sockets,
            counters: UringCounters::default(),
            closed_balanced: None,
        };
        for i in 0..n {
            dp.ring.arm_recv(i).map_err(|error| UringError::Io {
                what: "arming receives",
                error,
            })?;
        }
        dp.ring.submit().map_err(|error| UringError::Io {
            what: "the first submission",
            error,
        })?;
        // A kernel without multishot recvmsg (before 6.0) rejects the request at once.
        dp.reap();
        if dp.rx_queue.iter().any(|c| c.res == -libc::EINVAL) {
            return Err(UringError::KernelTooOld {
                what: "multishot recvmsg (IORING_RECV_MULTISHOT)",
                version: "6.0",
            });
        }
        tracing::info!(
            sockets = n,
            buffers = settings.buffers,
            buffer_payload,
            gro = dp.sockets.iter().all(|s| s.gro),
            gso = dp.gso,
            send_zc = settings.send_zc,
            "io_uring ready: multishot recvmsg into a provided buffer ring, registered sockets"
        );
        Ok(dp)
    }

    pub fn uring_counters(&self) -> &UringCounters {
        &self.counters
    }

    pub fn ring_counters(&self) -> &RingCounters {
        self.ring.counters()
    }

    /// Where every provided buffer is.
    pub fn ledger(&self) -> LedgerSummary {
        self.ring.ledger()
    }

    /// The socket that sends from `port` to `dst` ([`crate::datapath::socket_for`]).
    fn endpoint_for(&self, port: u16, dst: &SocketAddr) -> Option<usize> {
        crate::datapath::socket_for(self.sockets.iter().map(|s| s.local), port, dst)
    }

    /// Moves completions out of the CQ: sends are settled, receives queued for `recv`.
    fn reap(&mut self) {
        let Self {
            ring,
            rx_queue,
            counters,
            gso_broken,
            wake_ended,
            ..
        } = self;
        ring.reap(|ev| match ev {
            Event::Recv {
                sock,
                res,
                more,
                bid,
            } => rx_queue.push_back(RecvCqe {
                sock,
                res,
                more,
                bid,
            }),
            Event::Sent { res, info } if res < 0 => {
                let errno = -res;
                match errno {
                    libc::EMSGSIZE => counters.tx_emsgsize += 1,
                    _ => {
                        counters.tx_errors += 1;
                        tracing::debug!(errno, bytes = info.bytes, "io_uring send failed");
                    }
                }
                // Some devices refuse GSO only when a batch is actually sent.
                if info.segmented && matches!(errno, libc::EIO | libc::EINVAL) && !*gso_broken {
                    *gso_broken = true;
                    tracing::warn!(
                        errno,
                        "io_uring: the kernel refused a UDP_SEGMENT send; sending batches as \
                         single datagrams from now on"
                    );
                }
            }
            Event::Sent { .. } => {}
            Event::ZcNotified { copied } => {
                if copied {
                    counters.tx_zc_copied += 1;
                }
            }
            Event::Wake { more } => *wake_ended |= !more,
        });
        if std::mem::take(&mut self.wake_ended) {
            if let Some(fd) = self.wake {
                if let Err(e) = self.ring.arm_wake(fd) {
                    tracing::warn!(error = %e, "io_uring: re-arming the wake-up poll");
                }
            }
        }
    }

    /// Processes one receive completion; returns whether a payload was handed to `rx`.
    fn process(&mut self, c: RecvCqe, rx: &mut dyn FnMut(&RxMeta, &[u8])) -> bool {
        let mut handed = false;
        if c.res < 0 {
            match -c.res {
                libc::ENOBUFS => self.counters.rx_no_buffers += 1,
                libc::ECANCELED => {}
                errno => {
                    self.counters.rx_errors += 1;
                    self.failures[c.sock] += 1;
                    tracing::debug!(
                        local = %self.sockets[c.sock].local,
                        errno,
                        "io_uring receive error"
                    );
                }
            }
        } else if let Some(bid) = c.bid {
            self.failures[c.sock] = 0;
            let local_port = self.sockets[c.sock].local.port();
            match self.ring.take_buffer(bid, c.res as usize) {
                Ok(buf) => {
                    handed = deliver(
                        buf,
                        local_port,
                        &mut self.socket_drops[c.sock],
                        &mut self.counters,
                        rx,
                    );
                    if let Err(e) = self.ring.give_back(bid) {
                        self.counters.rx_ledger_errors += 1;
                        tracing::error!(error = %e, "io_uring buffer ledger");
                    }
                }
                Err(e) => {
                    self.counters.rx_ledger_errors += 1;
                    tracing::error!(error = %e, "io_uring buffer ledger");
                }
            }
        } else if c.res > 0 {
            // Data without a buffer cannot happen with buffer selection.
            self.counters.rx_malformed += 1;
        }
        if !c.more {
            self.rearm[c.sock] = true;
            if c.res != -libc::ENOBUFS {
                self.counters.rx_rearmed += 1;
            }
        }
        handed
    }

    /// End of a receive turn: buffers back to the kernel (one store), then re-arm the
    /// multishot requests that ended, so they find buffers.
    fn finish_rx(&mut self) -> io::Result<()> {
        self.ring.publish_buffers();
        for i in 0..self.sockets.len() {
            if !self.rearm[i] {
                continue;
            }
            if self.failures[i] > MAX_REARM_FAILURES {
                return Err(io::Error::other(format!(
                    "io_uring receive on {} failed {} times in a row (see debug log); giving up",
                    self.sockets[i].local, self.failures[i]
                )));
            }
            self.ring.arm_recv(i)?;
            self.rearm[i] = false;
        }
        Ok(())
    }

    /// Sends the front transmit of `batch` from its own buffer, lent to the send slots, or
    /// drops it (counted). Returns false, leaving it queued, when the send slots are all in
    /// flight (try again later).
    fn send_front(&mut self, batch: &mut TxBatch) -> io::Result<bool> {
        let Some(t) = batch.queued().first() else {
            return Ok(true);
        };
        let meta = t.meta;
        let len = t.buf.len();
        let Some(plan) = self.plan(&meta, len) else {
            batch.consume(1);
            return Ok(true);
        };
        if self.ring.free_send_slots() < plan.requests {
            return Ok(false);
        }
        // The batch holds a spare for every send slot (see `send`), so with a slot free a
        // spare is left too: this only fails if the batch was not reserved for us. Waiting
        // for buffers to come back is then all we can do (no copy).
        let Some(loan) = batch.lend_front() else {
            return Ok(false);
        };
        let opts = SendOptions {
            ipv4: plan.ipv4,
            ecn: meta.ecn,
            src_ip: meta.src_ip,
            segment_size: plan.gso.map(|s| s as u16),
        };
        let queued = self
            .ring
            .send(plan.sock, &plan.dst, loan.buf, plan.split, &opts)?;
        debug_assert_eq!(queued, plan.requests, "free slots were counted");
        if plan.split.is_some() {
            self.counters.tx_split += 1;
        }
        self.counters.tx_transmits += plan.requests as u64;
        self.counters.tx_datagrams += plan.datagrams as u64;
        self.counters.tx_bytes += len as u64;
        if meta.ecn.is_some() {
            self.counters.tx_ecn_marked += plan.datagrams as u64;
        }
        Ok(true)
    }

    /// How to send a transmit of `len` bytes, or `None` when it must be dropped (counted).
    fn plan(&mut self, meta: &TxMeta, len: usize) -> Option<SendPlan> {
        let Some(sock) = self.endpoint_for(meta.src_port, &meta.dst) else {
            self.counters.tx_no_socket += 1;
            return None;
        };
        if len == 0 {
            self.counters.tx_empty += 1;
            return None;
        }
        if len > self.ring.send_payload_capacity() {
            self.counters.tx_too_big += 1;
            return None;
        }
        let Some((dst, ipv4)) = self.sockets[sock].destination(meta.dst) else {
            self.counters.tx_no_socket += 1;
            return None;
        };
        let seg = meta.segment_size.filter(|&s| s > 0 && s < len);
        let split = seg.filter(|_| self.gso_broken || !self.gso);
        let datagrams = seg.map_or(1, |s| len.div_ceil(s));
        let requests = if split.is_some() { datagrams } else { 1 };
        if requests > self.ring.send_slots() {
            // More datagrams than slots (only when split): it would never fit.
            self.counters.tx_too_big += 1;
            return None;
        }
        Some(SendPlan {
            sock,
            dst,
            ipv4,
            gso: seg.filter(|_| split.is_none()),
            split,
            datagrams,
            requests,
        })
    }
}

/// How one transmit goes out.
struct SendPlan {
    sock: usize,
    dst: socket2::SockAddr,
    ipv4: bool,
    /// UDP_SEGMENT size: one request for the whole GSO batch.
    gso: Option<usize>,
    /// One request per this many bytes (GSO refused).
    split: Option<usize>,
    datagrams: usize,
    requests: usize,
}

/// Hands one received buffer's payload to `rx`; returns whether it did.
/// `drops_seen` is the socket's last `SO_RXQ_OVFL` count.
fn deliver(
    buf: &[u8],
    local_port: u16,
    drops_seen: &mut u32,
    counters: &mut UringCounters,
    rx: &mut dyn FnMut(&RxMeta, &[u8]),
) -> bool {
    let Some(r) = msg::split_received(buf) else {
        counters.rx_malformed += 1;
        return false;
    };
    if r.control_truncated {
        counters.rx_control_truncated += 1;
    }
    let info = msg::decode_recv(r.control);
    if info.malformed {
        counters.rx_control_malformed += 1;
    }
    if let Some(drops) = info.socket_drops {
        counters.rx_socket_drops += u64::from(drops.wrapping_sub(*drops_seen));
        *drops_seen = drops;
    }
    if r.truncated {
        counters.rx_truncated += 1;
        return false;
    }
    let Some(src) = msg::decode_sockaddr(r.name) else {
        counters.rx_malformed += 1;
        return false;
    };
    if r.payload.is_empty() {
        counters.rx_empty += 1;
        return false;
    }
    let len = r.payload.len();
    let stride = info
        .gro_segment
        .map(usize::from)
        .filter(|&s| s < len)
        .unwrap_or(len);
    let datagrams = len.div_ceil(stride) as u64;
    counters.rx_datagrams += datagrams;
    counters.rx_bytes += len as u64;
    if datagrams > 1 {
        counters.rx_gro_batches += 1;
    }
    match info.ecn {
        Some(Ecn::Ect0) => counters.rx_ecn_ect0 += datagrams,
        Some(Ecn::Ect1) => counters.rx_ecn_ect1 += datagrams,
        Some(Ecn::Ce) => counters.rx_ecn_ce += datagrams,
        None => {}
    }
    let meta = RxMeta {
        src,
        dst_ip: info.dst_ip,
        dst_port: local_port,
        ecn: info.ecn,
        stride,
    };
    rx(&meta, r.payload);
    true
}

impl Datapath for UringDatapath {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_tx_segments: if self.gso { MAX_GSO_SEGMENTS } else { 1 },
            may_fragment: self.may_fragment,
            local_addrs: self.sockets.iter().map(|s| s.local).collect(),
            // A datagram larger than a receive buffer would be truncated: tell peers less.
            max_udp_payload: Some(self.buffer_payload.min(65527) as u16),
        }
    }

    fn recv(&mut self, rx: &mut dyn FnMut(&RxMeta, &[u8])) -> io::Result<usize> {
        self.counters.turns += 1;
        // Submits what the last turn queued (sends, re-arms) unless `wait` already did.
        self.ring.submit()?;
        self.reap();
        let mut handed = 0;
        for _ in 0..RX_BATCH {
            let Some(c) = self.rx_queue.pop_front() else {
                break;
            };
            if self.process(c, rx) {
                handed += 1;
            }
        }
        self.finish_rx()?;
        Ok(handed)
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<()> {
        // A spare buffer for every send slot, so that every transmit a slot can take can be
        // lent: allocated on the first call, only compared after.
        batch.reserve_lendable(self.ring.send_slots());
        self.reap();
        for buf in self.ring.take_returned() {
            batch.give_back(buf);
        }
        while !batch.is_empty() {
            if !self.send_front(batch)? {
                self.counters.tx_slots_full += 1;
                break;
            }
        }
        // Submitted by the next `wait` or `recv`: one enter per loop turn.
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>, _tx_pending: bool) -> io::Result<()> {
        // Any completion wakes us: a datagram, or a send slot coming free.
        if !self.rx_queue.is_empty() || self.ring.completions_ready() {
            return self.ring.submit();
        }
        self.ring.wait(timeout)
    }

    fn close(&mut self) {
        // Let the last sends (connection closes) complete.
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let _ = self.ring.submit();
            self.reap();
            if self.ring.sends_in_flight() == 0 || Instant::now() >= deadline {
                break;
            }
            let _ = self.ring.wait(Some(Duration::from_millis(5)));
        }
        // Stop receiving, and give back what was received but not read.
        if let Err(e) = self.ring.cancel_all(Duration::from_millis(500)) {
            tracing::warn!(error = %e, "io_uring: cancelling the receives");
        }
        let _ = self.ring.wait(Some(Duration::from_millis(1)));
        self.reap();
        while let Some(c) = self.rx_queue.pop_front() {
            let Some(bid) = c.bid.filter(|_| c.res >= 0) else {
                continue;
            };
            self.counters.rx_dropped_at_close += 1;
            let ok = self.ring.take_buffer(bid, 0).is_ok() && self.ring.give_back(bid).is_ok();
            if !ok {
                self.counters.rx_ledger_errors += 1;
            }
        }
        self.ring.publish_buffers();
        let ledger = self.ring.ledger();
        let in_flight = self.ring.sends_in_flight();
        // Lent transmit buffers the kernel is done with wait to go back to the batch (which
        // the driver has dropped by now): none may still be held for a request.
        let loans_out = self.ring.loans_out();
        let balanced = ledger.balanced() && in_flight == 0 && loans_out == 0;
        self.closed_balanced = Some(balanced);
        if balanced {
            tracing::info!(
                buffers = ledger.capacity,
                send_slots = self.ring.send_slots(),
                tx_buffers_returned = self.ring.returned(),
                "io_uring ledger balanced: every provided buffer back in the ring, every send \
                 slot free, every lent transmit buffer back from the kernel"
            );
        } else {
            tracing::error!(
                ?ledger,
                sends_in_flight = in_flight,
                tx_buffers_lent = loans_out,
                "io_uring ledger NOT balanced: buffers or send slots unaccounted for"
            );
        }
    }

    fn wake_on(&mut self, fd: std::os::fd::RawFd) -> bool {
        match self.ring.arm_wake(fd) {
            Ok(()) => {
                self.wake = Some(fd);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "io_uring: cannot poll the wake-up descriptor");
                false
            }
        }
    }

    fn poll_fds(&self) -> Vec<crate::datapath::PollFd> {
        // Every datagram and every send completion is a completion on the ring.
        vec![crate::datapath::PollFd {
            fd: self.ring.fd(),
            rx: true,
            tx: Some(crate::datapath::TxReady::Readable),
        }]
    }

    fn poll_turn(&mut self, _readable: u64) -> io::Result<bool> {
        // Sends are submitted by the next `wait` or `recv`; a caller without either submits
        // here. Receive completions reaped by `send` wait in `rx_queue`, announced by nothing.
        self.ring.submit()?;
        Ok(!self.rx_queue.is_empty() || self.ring.completions_ready())
    }

    fn ledger_balanced(&self) -> Option<bool> {
        self.closed_balanced
    }

    fn gauges(&self) -> Vec<(&'static str, u64)> {
        let l = self.ring.ledger();
        vec![
            ("rx_buffers", l.capacity as u64),
            ("rx_buffers_in_kernel", l.in_kernel as u64),
            ("rx_buffers_held", l.held as u64),
            ("send_slots", self.ring.send_slots() as u64),
            ("sends_in_flight", self.ring.sends_in_flight() as u64),
            ("tx_buffers_lent", self.ring.loans_out() as u64),
        ]
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        let r = self.ring.counters();
        vec![
            ("turns", c.turns),
            ("rx_datagrams", c.rx_datagrams),
            ("rx_bytes", c.rx_bytes),
            ("rx_gro_batches", c.rx_gro_batches),
            ("rx_ecn_ect0", c.rx_ecn_ect0),
            ("rx_ecn_ect1", c.rx_ecn_ect1),
            ("rx_ecn_ce", c.rx_ecn_ce),
            ("rx_truncated", c.rx_truncated),
            ("rx_malformed", c.rx_malformed),
            ("rx_empty", c.rx_empty),
            ("rx_ledger_errors", c.rx_ledger_errors),
            ("rx_dropped_at_close", c.rx_dropped_at_close),
            ("rx_socket_drops", c.rx_socket_drops),
            ("rx_control_truncated", c.rx_control_truncated),
            ("rx_control_malformed", c.rx_control_malformed),
            ("rx_no_buffers", c.rx_no_buffers),
            ("rx_rearmed", c.rx_rearmed),
            ("rx_errors", c.rx_errors),
            ("tx_transmits", c.tx_transmits),
            ("tx_datagrams", c.tx_datagrams),
            ("tx_bytes", c.tx_bytes),
            ("tx_ecn_marked", c.tx_ecn_marked),
            ("tx_split", c.tx_split),
            ("tx_no_socket", c.tx_no_socket),
            ("tx_too_big", c.tx_too_big),
            ("tx_empty", c.tx_empty),
            ("tx_emsgsize", c.tx_emsgsize),
            ("tx_errors", c.tx_errors),
            ("tx_slots_full", c.tx_slots_full),
            ("tx_zc_copied", c.tx_zc_copied),
            ("ring_enters", r.enters),
            ("ring_sq_full", r.sq_full),
            ("ring_cq_overflow", r.cq_overflow),
            ("ring_cq_dropped", r.cq_dropped),
            ("ring_cqe_unexpected", r.cqe_unexpected),
        ]
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
