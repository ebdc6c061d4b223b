//! The RIO state machine: receives kept posted, completions drained in batches, sends
//! batched with `RIO_MSG_DEFER` and committed once per turn, full queues counted and retried,
//! and every slot of the registered region tracked by a [`SlotLedger`].
//!
//! It is generic over [`RioQueues`], so the same code runs against the real function table on
//! Windows and against a fake kernel in the tests here (on Linux).
//!
//! One loop turn of the driver is `recv` (one `RIODequeueCompletion`: send completions free
//! their slots, each receive completion is lent to the driver and its slot posted again, then
//! one commit per socket), `send` (transmits copied into send slots and posted deferred, then
//! one commit per socket), and when idle `wait` (`RIONotify`, then sleep on the event).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::layout::{self, Layout, Pool, SendControl};
use super::queues::{self, Completion, Request, RioQueues, WsaError};
use crate::datapath::slots::{LedgerCounts, SlotLedger, SlotToken};
use crate::datapath::{Capabilities, Datapath, RxMeta, TxBatch, TxSlot};

/// [`SlotToken`] classes: which pool a completion's slot belongs to.
const CLASS_RX: u8 = 1;
const CLASS_TX: u8 = 2;

/// How long `close` waits for sends in flight, then for cancelled receives.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// The state machine's settings (from `[rio]` and what the OS supports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// Receives kept posted per socket.
    pub receive_queue: u32,
    /// Sends in flight per socket.
    pub send_queue: u32,
    /// Completions per dequeue.
    pub completion_batch: u32,
    /// Segment batches go out as one request with UDP_SEND_MSG_SIZE (else split).
    pub send_offload: bool,
    /// The sockets set DF (IP_DONTFRAGMENT / IPV6_DONTFRAG): path MTU discovery is safe.
    pub dont_fragment: bool,
}

/// Counters of the RIO backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RioCounters {
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    /// Receive completions that carried several datagrams (UDP_COALESCED_INFO).
    pub rx_coalesced: u64,
    /// Receive completions with an error status (other than truncation and cancellation).
    pub rx_errors: u64,
    /// Datagrams larger than a receive slot (WSAEMSGSIZE): dropped.
    pub rx_truncated: u64,
    /// Receives that came back without a readable remote address: dropped.
    pub rx_bad_address: u64,
    /// `RIOReceiveEx` calls (or their commits) that failed; the slot is retried next turn.
    pub rx_post_errors: u64,
    pub tx_transmits: u64,
    /// `RIOSendEx` requests posted (a split transmit makes several).
    pub tx_requests: u64,
    pub tx_datagrams: u64,
    pub tx_bytes: u64,
    /// Transmits split into one request per datagram for lack of send offload.
    pub tx_split: u64,
    /// Transmits for which no socket matches the source port and address family: dropped.
    pub tx_no_socket: u64,
    /// Transmits that can never fit the send slots or queue: dropped.
    pub tx_too_large: u64,
    /// Times a send stopped because the send queue or the send slots were full; the rest of
    /// the batch stays queued for the next turn.
    pub tx_queue_full: u64,
    /// `RIOSendEx` calls (or commits) that failed other than with a full queue.
    pub tx_post_errors: u64,
    /// Transmits given up (wholly or partly) because a request could not be posted.
    pub tx_failed: u64,
    /// Datagrams dropped because their request could not be posted.
    pub tx_dropped: u64,
    /// Send completions with an error status.
    pub tx_errors: u64,
    pub completions: u64,
    pub dequeues: u64,
    pub commits: u64,
    pub notifies: u64,
    /// Completions naming no slot of ours, or a slot the ledger says was not posted (a bug or
    /// a duplicate): ignored, so no slot is ever handed out twice.
    pub ledger_errors: u64,
}

struct SockState {
    local: SocketAddr,
    rx_posted: u32,
    tx_posted: u32,
    rx_deferred: bool,
    tx_deferred: bool,
}

/// What happened to one transmit.
enum TxOutcome {
    /// Posted (or dropped and counted): consume it.
    Done,
    /// No room now: keep it queued for the next turn.
    Full,
}

/// The RIO backend's logic over a set of request queues and one completion queue.
pub struct RioEngine<Q: RioQueues> {
    q: Q,
    layout: Layout,
    opts: EngineOptions,
    sockets: Vec<SockState>,
    rx: SlotLedger,
    tx: SlotLedger,
    results: Vec<Completion>,
    /// Receive completions dequeued by `send` while it looked for send slots (the queue is
    /// shared): handed on by the next `recv`, before anything newer.
    pending: Vec<Completion>,
    /// `RIONotify` was called and the notification has not fired yet.
    armed: bool,
    /// In `close`: receive completions are not handed on or posted again.
    closing: bool,
    counters: RioCounters,
}

impl<Q: RioQueues> RioEngine<Q> {
    /// Takes over the queues of the sockets bound to `locals` (in order) and posts the
    /// receives. Fails when some socket cannot get a single receive posted.
    pub fn new(
        q: Q,
        locals: &[SocketAddr],
        layout: Layout,
        opts: EngineOptions,
    ) -> io::Result<Self> {
        let mut engine = Self {
            q,
            layout,
            sockets: locals
                .iter()
                .map(|&local| SockState {
                    local,
                    rx_posted: 0,
                    tx_posted: 0,
                    rx_deferred: false,
                    tx_deferred: false,
                })
                .collect(),
            rx: SlotLedger::new(layout.rx_slots),
            tx: SlotLedger::new(layout.tx_slots),
            results: vec![Completion::default(); opts.completion_batch.max(1) as usize],
            pending: Vec::with_capacity(opts.completion_batch.max(1) as usize),
            armed: false,
            closing: false,
            counters: RioCounters::default(),
            opts,
        };
        if let Some(e) = engine.replenish() {
            if let Some(s) = engine.sockets.iter().find(|s| s.rx_posted == 0) {
                return Err(io::Error::other(format!(
                    "cannot post receives on {}: RIOReceiveEx failed with WSA error {e}",
                    s.local
                )));
            }
        }
        Ok(engine)
    }

    pub fn rio_counters(&self) -> &RioCounters {
        &self.counters
    }

    /// The receive and send slot ledgers' counts.
    pub fn ledgers(&self) -> (LedgerCounts, LedgerCounts) {
        (self.rx.counts(), self.tx.counts())
    }

    /// The queues (the fake kernel, in tests).
    pub fn queues(&mut self) -> &mut Q {
        &mut self.q
    }

    /// The memory of a slot the backend holds. Panics if the ledger says the kernel owns it:
    /// that would be a bug in this module, and touching the memory could corrupt a datagram.
    fn slot_mem(&mut self, pool: Pool, slot: u32, range: layout::BufRange) -> &mut [u8] {
        let held = match pool {
            Pool::Rx => self.rx.is_held(slot),
            Pool::Tx => self.tx.is_held(slot),
        };
        assert!(held, "{pool:?} slot {slot} touched while not held");
        self.q.region(range)
    }

    fn rx_request(&self, slot: u32) -> Request {
        Request {
            data: self.layout.data(Pool::Rx, slot),
            remote: self.layout.addr(Pool::Rx, slot),
            control: Some(self.layout.control(Pool::Rx, slot)),
        }
    }

    /// Posts a held receive slot on `sock`, deferred (committed at the end of the turn).
    fn post_receive(&mut self, sock: usize, slot: u32) -> Result<(), WsaError> {
        let req = self.rx_request(slot);
        // A completion without control data then reads as empty.
        self.slot_mem(Pool::Rx, slot, req.control.expect("receives have control"))
            [..layout::RIO_CMSG_BASE]
            .fill(0);
        let token = SlotToken::new(CLASS_RX, sock as u16, slot).to_u64();
        self.q.receive(sock, &req, true, token)?;
        self.rx.post(slot).expect("posting a held slot");
        let s = &mut self.sockets[sock];
        s.rx_posted += 1;
        s.rx_deferred = true;
        Ok(())
    }

    /// Posts receives until every socket has `receive_queue` outstanding (or the slots run
    /// out), then commits. Returns the last posting error, if any.
    fn replenish(&mut self) -> Option<WsaError> {
        let mut last_error = None;
        for sock in 0..self.sockets.len() {
            while self.sockets[sock].rx_posted < self.opts.receive_queue {
                let Some(slot) = self.rx.take() else { break };
                if let Err(e) = self.post_receive(sock, slot) {
                    self.rx.release(slot).expect("a held slot");
                    self.counters.rx_post_errors += 1;
                    tracing::debug!(local = %self.sockets[sock].local, error = e, "RIOReceiveEx failed");
                    last_error = Some(e);
                    break;
                }
            }
        }
        self.commit_receives();
        last_error
    }

    fn commit_receives(&mut self) {
        for sock in 0..self.sockets.len() {
            if !self.sockets[sock].rx_deferred {
                continue;
            }
            match self.q.commit_receives(sock) {
                Ok(()) => {
                    self.counters.commits += 1;
                    self.sockets[sock].rx_deferred = false;
                }
                Err(e) => {
                    // The receives stay in the queue; the commit is tried again next turn.
                    self.counters.rx_post_errors += 1;
                    tracing::debug!(local = %self.sockets[sock].local, error = e, "RIO receive commit failed");
                }
            }
        }
    }

    fn commit_sends(&mut self) {
        for sock in 0..self.sockets.len() {
            if !self.sockets[sock].tx_deferred {
                continue;
            }
            match self.q.commit_sends(sock) {
                Ok(()) => {
                    self.counters.commits += 1;
                    self.sockets[sock].tx_deferred = false;
                }
                Err(e) => {
                    self.counters.tx_post_errors += 1;
                    tracing::debug!(local = %self.sockets[sock].local, error = e, "RIO send commit failed");
                }
            }
        }
    }

    /// One `RIODequeueCompletion` and the handling of what it returned. Receives are lent to
    /// `rx` (unless closing); returns how many were.
    fn drain(&mut self, rx: &mut dyn FnMut(&RxMeta, &[u8])) -> io::Result<usize> {
        let mut handed = 0;
        // What `reap` set aside comes first: it arrived before anything dequeued now.
        for i in 0..self.pending.len() {
            let c = self.pending[i];
            if let Some(t) = SlotToken::from_u64(c.context) {
                handed += usize::from(self.complete_receive(t, c, rx));
            }
        }
        self.pending.clear();
        for i in 0..self.dequeue()? {
            let c = self.results[i];
            match SlotToken::from_u64(c.context) {
                Some(t) if t.class == CLASS_TX => self.complete_send(t, c),
                Some(t) if t.class == CLASS_RX => {
                    handed += usize::from(self.complete_receive(t, c, rx))
                }
                _ => self.not_ours(c),
            }
        }
        if !self.closing {
            self.commit_receives();
            if self
                .sockets
                .iter()
                .any(|s| s.rx_posted < self.opts.receive_queue)
            {
                self.replenish();
            }
        }
        Ok(handed)
    }

    /// One `RIODequeueCompletion` from `send` when it ran out of send slots: send completions
    /// free theirs now, receive completions wait in `pending` for the next `recv`. Does
    /// nothing while receives are still pending, so at most one batch is ever set aside.
    /// Returns whether a send slot came free.
    fn reap(&mut self) -> io::Result<bool> {
        if !self.pending.is_empty() {
            return Ok(false);
        }
        let mut freed = false;
        for i in 0..self.dequeue()? {
            let c = self.results[i];
            match SlotToken::from_u64(c.context) {
                Some(t) if t.class == CLASS_TX => {
                    self.complete_send(t, c);
                    freed = true;
                }
                Some(t) if t.class == CLASS_RX => self.pending.push(c),
                _ => self.not_ours(c),
            }
        }
        Ok(freed)
    }

    /// One `RIODequeueCompletion` into `results`; returns how many it wrote.
    fn dequeue(&mut self) -> io::Result<usize> {
        let n = self
            .q
            .dequeue(&mut self.results)
            .map_err(io::Error::other)?
            .min(self.results.len());
        self.counters.dequeues += 1;
        self.counters.completions += n as u64;
        Ok(n)
    }

    /// A completion whose context is no slot token of ours: counted, never acted on.
    fn not_ours(&mut self, c: Completion) {
        self.counters.ledger_errors += 1;
        tracing::error!(context = c.context, "RIO completion for no slot of ours");
    }

    /// Takes a completed slot back from the kernel, or counts the completion as bogus.
    fn take_back(&mut self, pool: Pool, t: SlotToken) -> Option<(usize, u32)> {
        let sock = usize::from(t.group);
        let ledger = match pool {
            Pool::Rx => &mut self.rx,
            Pool::Tx => &mut self.tx,
        };
        if sock >= self.sockets.len() {
            self.counters.ledger_errors += 1;
            tracing::error!(?pool, ?t, "RIO completion names no socket of ours");
            return None;
        }
        if let Err(e) = ledger.complete(t.slot) {
            self.counters.ledger_errors += 1;
            tracing::error!(?pool, error = %e, "RIO completion refused by the slot ledger");
            return None;
        }
        let s = &mut self.sockets[sock];
        match pool {
            Pool::Rx => s.rx_posted -= 1,
            Pool::Tx => s.tx_posted -= 1,
        }
        Some((sock, t.slot))
    }

    fn complete_send(&mut self, t: SlotToken, c: Completion) {
        let Some((sock, slot)) = self.take_back(Pool::Tx, t) else {
            return;
        };
        if c.status != 0 && c.status != queues::WSA_OPERATION_ABORTED {
            // A send the stack refused after accepting it: lost like a dropped packet.
            self.counters.tx_errors += 1;
            tracing::debug!(local = %self.sockets[sock].local, status = c.status, "RIO send failed");
        }
        self.tx.release(slot).expect("a completed slot is held");
    }

    /// Handles a receive completion; returns whether a payload was lent to `rx`.
    fn complete_receive(
        &mut self,
        t: SlotToken,
        c: Completion,
        rx: &mut dyn FnMut(&RxMeta, &[u8]),
    ) -> bool {
        let Some((sock, slot)) = self.take_back(Pool::Rx, t) else {
            return false;
        };
        let mut handed = false;
        match c.status {
            _ if self.closing => {}
            0 => handed = self.hand_over(sock, slot, c.bytes, rx),
            queues::WSAEMSGSIZE => self.counters.rx_truncated += 1,
            queues::WSA_OPERATION_ABORTED => {}
            status => {
                self.counters.rx_errors += 1;
                tracing::debug!(local = %self.sockets[sock].local, status, "RIO receive failed");
            }
        }
        // The slot goes straight back to the same socket, or to the free list.
        if self.closing || self.sockets[sock].rx_posted >= self.opts.receive_queue {
            self.rx.release(slot).expect("a completed slot is held");
        } else if let Err(e) = self.post_receive(sock, slot) {
            self.rx.release(slot).expect("a completed slot is held");
            self.counters.rx_post_errors += 1;
            tracing::debug!(local = %self.sockets[sock].local, error = e, "RIOReceiveEx failed");
        }
        handed
    }

    fn hand_over(
        &mut self,
        sock: usize,
        slot: u32,
        bytes: u32,
        rx: &mut dyn FnMut(&RxMeta, &[u8]),
    ) -> bool {
        let len = bytes.min(self.layout.rx_payload);
        if len == 0 {
            return false;
        }
        let addr = self.layout.addr(Pool::Rx, slot);
        let Some(src) = layout::decode_sockaddr(self.slot_mem(Pool::Rx, slot, addr)) else {
            self.counters.rx_bad_address += 1;
            return false;
        };
        let control = self.layout.control(Pool::Rx, slot);
        let ctl = layout::parse_recv_control(self.slot_mem(Pool::Rx, slot, control));
        let len = len as usize;
        let stride = ctl
            .coalesced
            .map(|s| s as usize)
            .filter(|s| *s < len)
            .unwrap_or(len);
        if stride < len {
            self.counters.rx_coalesced += 1;
        }
        self.counters.rx_datagrams += len.div_ceil(stride) as u64;
        self.counters.rx_bytes += len as u64;
        let meta = RxMeta {
            src,
            dst_ip: ctl.dst_ip,
            dst_port: self.sockets[sock].local.port(),
            ecn: ctl.ecn,
            stride,
        };
        let data = self.layout.data(Pool::Rx, slot).with_len(len as u32);
        rx(&meta, self.slot_mem(Pool::Rx, slot, data));
        true
    }

    /// The socket that sends from `port` to `dst` ([`crate::datapath::socket_for`]).
    fn socket_for(&self, port: u16, dst: &SocketAddr) -> Option<usize> {
        crate::datapath::socket_for(self.sockets.iter().map(|s| s.local), port, dst)
    }

    fn send_transmit(&mut self, t: &TxSlot) -> TxOutcome {
        let Some(sock) = self.socket_for(t.meta.src_port, &t.meta.dst) else {
            self.counters.tx_no_socket += 1;
            return TxOutcome::Done;
        };
        let offload = self.opts.send_offload;
        let seg = t.meta.segment_size.filter(|s| *s > 0 && *s < t.buf.len());
        let Some(pieces) =
            layout::split_transmit(t.buf.len(), seg, offload, self.layout.tx_payload as usize)
        else {
            self.counters.tx_too_large += 1;
            return TxOutcome::Done;
        };
        let need = pieces.len() as u32;
        if need > self.opts.send_queue || need > self.layout.tx_slots {
            // It would wait forever for room that never comes.
            self.counters.tx_too_large += 1;
            return TxOutcome::Done;
        }
        if self.tx.free_count() < need as usize
            || self.sockets[sock].tx_posted + need > self.opts.send_queue
        {
            self.counters.tx_queue_full += 1;
            return TxOutcome::Full;
        }
        if seg.is_some() && !offload {
            self.counters.tx_split += 1;
        }
        let datagrams = |p: &layout::Piece| match p.segment {
            Some(s) => p.len.div_ceil(s as usize) as u64,
            None => 1,
        };
        let remote = layout::wire_remote(t.meta.dst, self.sockets[sock].local.is_ipv6());
        let dst_v4 = t.meta.dst.ip().to_canonical().is_ipv4();
        for (i, piece) in pieces.enumerate() {
            let slot = self.tx.take().expect("free slots were counted");
            let data = self.layout.data(Pool::Tx, slot).with_len(piece.len as u32);
            // RIO sends only from registered memory, so this copy is inherent (the batch's
            // buffers are not registered): unlike io_uring, RIO does not borrow them
            // (`TxBatch::lend_front`). Nothing is allocated per transmit.
            self.slot_mem(Pool::Tx, slot, data)
                .copy_from_slice(&t.buf[piece.offset..piece.offset + piece.len]);
            let addr = self.layout.addr(Pool::Tx, slot);
            layout::encode_sockaddr(remote, self.slot_mem(Pool::Tx, slot, addr));
            let control = self.layout.control(Pool::Tx, slot);
            let ctl = SendControl {
                dst_v4,
                src_ip: t.meta.src_ip,
                ecn: t.meta.ecn,
                segment: piece.segment,
            };
            let ctl_len = layout::build_send_control(&ctl, self.slot_mem(Pool::Tx, slot, control));
            let req = Request {
                data,
                remote: addr,
                control: (ctl_len > 0).then(|| control.with_len(ctl_len as u32)),
            };
            let token = SlotToken::new(CLASS_TX, sock as u16, slot).to_u64();
            match self.q.send(sock, &req, true, token) {
                Ok(()) => {
                    self.tx.post(slot).expect("posting a held slot");
                    let s = &mut self.sockets[sock];
                    s.tx_posted += 1;
                    s.tx_deferred = true;
                    self.counters.tx_requests += 1;
                    self.counters.tx_datagrams += datagrams(&piece);
                    self.counters.tx_bytes += piece.len as u64;
                }
                Err(e) => {
                    self.tx.release(slot).expect("a held slot");
                    if e == queues::WSAENOBUFS {
                        self.counters.tx_queue_full += 1;
                        if i == 0 {
                            // Nothing of this transmit left: try it again next turn.
                            return TxOutcome::Full;
                        }
                    } else {
                        self.counters.tx_post_errors += 1;
                        tracing::debug!(dst = %t.meta.dst, error = e, "RIOSendEx failed");
                    }
                    self.counters.tx_failed += 1;
                    self.counters.tx_dropped += pieces.skip(i).map(|p| datagrams(&p)).sum::<u64>();
                    return TxOutcome::Done;
                }
            }
        }
        self.counters.tx_transmits += 1;
        TxOutcome::Done
    }

    /// Arms the notification, unless it is armed already.
    fn arm_notify(&mut self) -> io::Result<()> {
        if !self.armed {
            match self.q.notify() {
                Ok(()) | Err(queues::WSAEALREADY) => {
                    self.armed = true;
                    self.counters.notifies += 1;
                }
                Err(e) => return Err(io::Error::from_raw_os_error(e)),
            }
        }
        Ok(())
    }

    /// Arms the notification (once) and sleeps until it fires or `timeout` passes; not at
    /// all while receives set aside by `reap` wait for `recv`.
    fn sleep(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if !self.pending.is_empty() {
            return Ok(());
        }
        self.arm_notify()?;
        if self.q.wait(timeout)? {
            self.armed = false;
        }
        Ok(())
    }

    /// Drains completions without handing receives on until `done` or `limit` passes.
    fn drain_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) && Instant::now() < deadline {
            match self.drain(&mut |_, _| {}) {
                Ok(0) if !done(self) => {
                    if let Err(e) = self.sleep(Some(Duration::from_millis(10))) {
                        tracing::warn!(error = %e, "waiting for RIO completions at close");
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "draining RIO completions at close");
                    return;
                }
            }
        }
    }
}

impl<Q: RioQueues> Datapath for RioEngine<Q> {
    fn name(&self) -> &'static str {
        "rio"
    }

    fn capabilities(&self) -> Capabilities {
        let max_tx_segments = if self.opts.send_offload {
            (self.layout.tx_payload / 1200).max(1) as usize
        } else {
            1
        };
        Capabilities {
            max_tx_segments,
            may_fragment: !self.opts.dont_fragment,
            local_addrs: self.sockets.iter().map(|s| s.local).collect(),
            max_udp_payload: Some(
                self.layout
                    .rx_payload
                    .min(self.layout.tx_payload)
                    .min(65527) as u16,
            ),
        }
    }

    fn recv(&mut self, rx: &mut dyn FnMut(&RxMeta, &[u8])) -> io::Result<usize> {
        self.drain(rx)
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<()> {
        let mut done = 0;
        let mut reaped = false;
        for t in batch.queued() {
            match self.send_transmit(t) {
                TxOutcome::Done => done += 1,
                // Completed sends may be waiting in the queue: free their slots and try once
                // more, so a caller that sleeps on the notification next (quinn's tasks do)
                // is not left waiting for completions that came already.
                TxOutcome::Full if !reaped && !self.closing => {
                    reaped = true;
                    if !self.reap()? {
                        break;
                    }
                    match self.send_transmit(t) {
                        TxOutcome::Done => done += 1,
                        TxOutcome::Full => break,
                    }
                }
                TxOutcome::Full => break,
            }
        }
        batch.consume(done);
        self.commit_sends();
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>, _tx_pending: bool) -> io::Result<()> {
        // Send completions arrive on the same queue, so one notification covers "room to send".
        self.sleep(timeout)
    }

    #[cfg(windows)]
    fn poll_events(&self) -> Vec<crate::datapath::PollEvent> {
        let event = self.q.event().map(|handle| crate::datapath::PollEvent {
            handle,
            rx: true,
            // Send completions come through the same queue; `send` reaps them.
            tx: Some(crate::datapath::TxReady::Readable),
            manual_reset: false,
        });
        event.into_iter().collect()
    }

    fn poll_turn(&mut self, readable: u64) -> io::Result<bool> {
        if readable & 1 != 0 {
            // Someone else waited on the event and saw it fire: the notification is spent.
            self.armed = false;
        }
        Ok(!self.pending.is_empty())
    }

    fn arm(&mut self) -> io::Result<()> {
        self.arm_notify()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        vec![
            ("rx_datagrams", c.rx_datagrams),
            ("rx_bytes", c.rx_bytes),
            ("rx_coalesced", c.rx_coalesced),
            ("rx_errors", c.rx_errors),
            ("rx_truncated", c.rx_truncated),
            ("rx_bad_address", c.rx_bad_address),
            ("rx_post_errors", c.rx_post_errors),
            ("tx_transmits", c.tx_transmits),
            ("tx_requests", c.tx_requests),
            ("tx_datagrams", c.tx_datagrams),
            ("tx_bytes", c.tx_bytes),
            ("tx_split", c.tx_split),
            ("tx_no_socket", c.tx_no_socket),
            ("tx_too_large", c.tx_too_large),
            ("tx_queue_full", c.tx_queue_full),
            ("tx_post_errors", c.tx_post_errors),
            ("tx_failed", c.tx_failed),
            ("tx_dropped", c.tx_dropped),
            ("tx_errors", c.tx_errors),
            ("completions", c.completions),
            ("dequeues", c.dequeues),
            ("commits", c.commits),
            ("notifies", c.notifies),
            ("ledger_errors", c.ledger_errors),
        ]
    }

    fn close(&mut self) {
        // Sends in flight finish first; receives completing meanwhile are not posted again.
        self.closing = true;
        self.commit_sends();
        self.drain_until(CLOSE_DRAIN, |e| e.tx.counts().posted == 0);
        // Closing the sockets cancels the posted receives; their completions bring the slots
        // home.
        self.q.close_sockets();
        self.drain_until(CLOSE_DRAIN, |e| {
            e.rx.counts().posted == 0 && e.tx.counts().posted == 0
        });
        let (rx, tx) = self.ledgers();
        if self.rx.balanced() && self.tx.balanced() {
            tracing::info!(
                rx_slots = rx.free,
                tx_slots = tx.free,
                "slot ledger balanced: every RIO slot accounted for"
            );
        } else {
            tracing::error!(
                ?rx,
                ?tx,
                "slot ledger NOT balanced: RIO slots unaccounted for"
            );
        }
    }
}

#[cfg(test)]
mod tests;
