//! [`QuixdSocket`]: `quinn::AsyncUdpSocket` over a [`Datapath`].

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use super::rx::{self, Out, RxCounters, Stash};
use super::Readiness;
use crate::datapath::{Capabilities, Datapath, TxBatch, TxMeta};

/// Queued transmits: quinn hands one at a time, so a few slots suffice.
const TX_SLOTS: usize = 4;
/// Receive turns in one `poll_recv` whose backend said "more may be there" but returned
/// nothing, before yielding to the runtime (so a confused backend cannot spin us).
const MAX_EMPTY_TURNS: usize = 4;

/// What the backend and the adapter counted, and whether the backend's ledger balanced, when
/// the socket closed.
#[derive(Debug, Clone)]
pub struct CloseReport {
    pub backend: &'static str,
    /// The backend's ledger check in `close` passed (every UMEM frame, provided buffer and send
    /// slot accounted for; `true` for backends without a ledger), and every transmit buffer
    /// the adapter lent the backend came back.
    pub balanced: bool,
    /// The backend's counters, then the adapter's (`quinn_*`).
    pub counters: Vec<(&'static str, u64)>,
    /// The backend's levels after close.
    pub gauges: Vec<(&'static str, u64)>,
}

impl CloseReport {
    /// A counter by name (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }
}

/// Where a [`CloseReport`] appears once the socket is dropped (see
/// [`QuixdSocket::close_watch`]).
#[derive(Clone, Default)]
pub struct CloseWatch(Arc<(Mutex<Option<CloseReport>>, Condvar)>);

impl CloseWatch {
    /// The report, if the socket has closed.
    pub fn get(&self) -> Option<CloseReport> {
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Blocks until the socket has closed or `timeout` passes. quinn drops the socket when
    /// the endpoint and every connection are gone (`Endpoint::wait_idle`, then drop them).
    pub fn wait(&self, timeout: Duration) -> Option<CloseReport> {
        let (lock, cond) = &*self.0;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cond
            .wait_timeout_while(guard, timeout, |r| r.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.clone()
    }

    fn set(&self, report: CloseReport) {
        let (lock, cond) = &*self.0;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
        cond.notify_all();
    }
}

/// The adapter's transmit counters.
#[derive(Debug, Default, Clone, Copy)]
struct TxCounters {
    transmits: u64,
    /// `try_send` said WouldBlock: the backend could not take the transmit now.
    would_block: u64,
}

/// What the mutex guards: the backend and the adapter's buffers.
struct State {
    datapath: Box<dyn Datapath + Send>,
    tx: TxBatch,
    stash: Stash,
    rx: RxCounters,
    tx_counters: TxCounters,
    /// The endpoint driver's waker, for a receive that `try_send` found (see `poll_turn`).
    recv_waker: Option<Waker>,
    /// The receive batch size last asked of the backend (quinn's buffer count).
    rx_hint: usize,
}

/// The shared part: everything behind the `Arc` that quinn and the pollers hold.
struct Inner {
    // Declared (so dropped) before `state`: the reactor forgets the descriptors (and the
    // system's waits, the events) before the backend closes them.
    ready: Readiness,
    /// `quinn::AsyncUdpSocket` takes `&self` and quinn calls `try_send` from every
    /// connection's task and `poll_recv` from the endpoint's, on any runtime thread; a backend
    /// needs `&mut`. A std mutex (never held across an await; the sections are short and
    /// never sleep) serializes them.
    state: Mutex<State>,
    caps: Capabilities,
    gro_segments: usize,
    name: &'static str,
    /// Set when a transmit could not be taken: pollers wait for the backend's TX readiness
    /// until one is taken again. Clear on the fast path, where `poll_writable` costs nothing.
    tx_blocked: AtomicBool,
    /// [`Readiness::tx_mark`] when the last transmit was refused.
    tx_mark: AtomicU64,
    close: CloseWatch,
    /// Payloads the backend handed over, for `fmt::Debug`.
    received: AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it (a bug) leaves buffers that are still consistent enough to
        // close; keep serving rather than poisoning quinn's tasks.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A `quinn::AsyncUdpSocket` over one of quixd's datapaths (AF_XDP, io_uring or kernel
/// sockets), made by [`super::QuixdSocketBuilder`]. Hand it to
/// `quinn::Endpoint::new_with_abstract_socket`.
///
/// Dropping it (quinn does, once the endpoint and its connections are gone) lets the last
/// transmissions complete, closes the backend, checks its buffer ledger and publishes a
/// [`CloseReport`] to every [`CloseWatch`]; this blocks the dropping thread for up to about a
/// second while sends drain.
#[derive(Clone)]
pub struct QuixdSocket(Arc<Inner>);

impl fmt::Debug for QuixdSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuixdSocket")
            .field("backend", &self.0.name)
            .field("local_addrs", &self.0.caps.local_addrs)
            .field("received", &self.0.received.load(Ordering::Relaxed))
            .finish()
    }
}

impl QuixdSocket {
    /// Registers the backend's descriptors (events, on Windows) with the current tokio
    /// runtime (the system's thread pool).
    pub(super) fn new(datapath: Box<dyn Datapath + Send>, gro_segments: usize) -> io::Result<Self> {
        let caps = datapath.capabilities();
        let ready = Readiness::new(&*datapath)?;
        if ready.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "backend {} has no descriptor to watch: it cannot run under an async runtime",
                    datapath.name()
                ),
            ));
        }
        let buf_capacity = crate::datapath::MAX_GSO_BYTES.next_power_of_two();
        Ok(Self(Arc::new(Inner {
            ready,
            name: datapath.name(),
            state: Mutex::new(State {
                datapath,
                tx: TxBatch::new(TX_SLOTS, buf_capacity),
                stash: Stash::default(),
                rx: RxCounters::default(),
                tx_counters: TxCounters::default(),
                recv_waker: None,
                rx_hint: 0,
            }),
            caps,
            gro_segments: gro_segments.max(1),
            tx_blocked: AtomicBool::new(false),
            tx_mark: AtomicU64::new(0),
            close: CloseWatch::default(),
            received: AtomicU64::new(0),
        })))
    }

    /// The backend's name: "xdp", "io_uring", "rio" or "socket".
    pub fn backend(&self) -> &'static str {
        self.0.name
    }

    /// What the backend can do (GSO segments, fragmentation, the addresses it serves and the
    /// largest UDP payload it carries).
    pub fn capabilities(&self) -> &Capabilities {
        &self.0.caps
    }

    /// The largest UDP payload the backend carries, for
    /// `quinn::EndpointConfig::max_udp_payload_size` (quinn's own default where the backend
    /// has no limit of its own).
    pub fn max_udp_payload_size(&self) -> u16 {
        self.0.caps.max_udp_payload.unwrap_or(1472).max(1200)
    }

    /// The backend's counters, then the adapter's (`quinn_*`).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        counters(&self.0.lock())
    }

    /// Where the [`CloseReport`] appears when the socket is dropped.
    pub fn close_watch(&self) -> CloseWatch {
        self.0.close.clone()
    }

    /// The local address with `ip` (or of its family), else the first: the port quinn's
    /// transmit leaves from (quinn names the source address, never the port).
    fn src_port(&self, transmit: &Transmit<'_>) -> u16 {
        let locals = &self.0.caps.local_addrs;
        let by_ip = transmit
            .src_ip
            .and_then(|ip| locals.iter().find(|l| l.ip() == ip));
        let v4 = transmit.destination.ip().to_canonical().is_ipv4();
        let by_family = || {
            locals.iter().find(|l| l.is_ipv4() == v4).or_else(|| {
                locals
                    .iter()
                    .find(|l| l.is_ipv6() && l.ip().is_unspecified())
            })
        };
        by_ip
            .or_else(by_family)
            .or(locals.first())
            .map_or(0, |l| l.port())
    }
}

fn counters(state: &State) -> Vec<(&'static str, u64)> {
    let mut out = state.datapath.counters();
    out.extend([
        ("quinn_rx_delivered", state.rx.delivered),
        ("quinn_rx_stashed", state.rx.stashed),
        ("quinn_rx_too_big", state.rx.too_big),
        ("quinn_tx_transmits", state.tx_counters.transmits),
        ("quinn_tx_would_block", state.tx_counters.would_block),
        ("quinn_tx_dropped_full", state.tx.dropped_full),
    ]);
    out
}

impl AsyncUdpSocket for QuixdSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller {
            inner: self.0.clone(),
            wait: Mutex::new(None),
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let meta = TxMeta {
            dst: transmit.destination,
            src_ip: transmit.src_ip,
            src_port: self.src_port(transmit),
            ecn: transmit.ecn.map(rx::ecn_from_quinn),
            segment_size: transmit.segment_size,
        };
        // Taken before the send: an event that announces room after the refusal below (even
        // before quinn starts waiting) lets quinn retry.
        let mark = self.0.ready.tx_mark();
        let mut guard = self.0.lock();
        let state = &mut *guard;
        // The batch is empty between calls: what the backend does not take is handed back
        // to quinn (WouldBlock), which retries once the backend's TX readiness says so.
        // Copying is the one copy quinn's API leaves (it owns the buffer it lends us).
        state.tx.push_with(|buf| {
            buf.extend_from_slice(transmit.contents);
            Some(meta)
        });
        let sent = state.datapath.send(&mut state.tx);
        let taken = state.tx.is_empty();
        if !taken {
            state.tx.consume(state.tx.len());
        }
        // io_uring submits here; a receive found while reaping send completions wakes the
        // endpoint driver (no descriptor will).
        let rx_pending = state.datapath.poll_turn(0);
        if matches!(rx_pending, Ok(true)) {
            if let Some(waker) = state.recv_waker.take() {
                waker.wake();
            }
        }
        sent?;
        rx_pending?;
        if taken {
            state.tx_counters.transmits += 1;
            self.0.tx_blocked.store(false, Ordering::Relaxed);
            Ok(())
        } else {
            state.tx_counters.would_block += 1;
            self.0.tx_mark.store(mark, Ordering::Release);
            self.0.tx_blocked.store(true, Ordering::Relaxed);
            // A backend whose notification fires once per arming (RIO) must be armed for the
            // completions that will free room.
            state.datapath.arm()?;
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let inner = &*self.0;
        let mut out = Out::new(bufs, meta);
        let mut guard = inner.lock();
        let state = &mut *guard;
        if state.rx_hint != out.capacity() {
            // As many payloads per receive as quinn lends buffers: none waits in the stash.
            state.rx_hint = out.capacity();
            state.datapath.rx_batch_hint(state.rx_hint);
        }
        state.stash.drain_into(&mut out, &mut state.rx);
        if out.n > 0 {
            return Poll::Ready(Ok(out.n));
        }
        // Always try the backend once per call, whatever the readiness says: another task
        // (a poller, or `try_send` reaping completions) may have consumed the edge that woke
        // us.
        let mut try_anyway = true;
        let mut empty_turns = 0;
        loop {
            // Readiness first, then receive, then clear: an event that arrives in between
            // bumps tokio's tick and survives the clear (on Windows, sets the fired bit again).
            let ready = match inner.ready.poll_rx(cx) {
                Ok(ready) => ready,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let mask = ready.mask();
            if mask == 0 && !try_anyway {
                // Every source has our waker; a notification that fires once per arming
                // (RIO's) is armed now, and fires at once if completions came meanwhile.
                if let Err(e) = state.datapath.arm() {
                    return Poll::Ready(Err(e));
                }
                state.recv_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            try_anyway = false;
            let more = match state.datapath.poll_turn(mask) {
                Ok(more) => more,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let (stash, counters) = (&mut state.stash, &mut state.rx);
            let handed = state.datapath.recv(&mut |m, payload| {
                rx::deliver(&mut out, stash, counters, m, payload);
            });
            let handed = match handed {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Poll::Ready(Err(e)),
            };
            inner.received.fetch_add(handed as u64, Ordering::Relaxed);
            if out.n > 0 {
                return Poll::Ready(Ok(out.n));
            }
            if more || handed > 0 {
                // Something was there (all of it dropped and counted, or announced by no
                // descriptor): look again, a bounded number of times.
                empty_turns += 1;
                if empty_turns >= MAX_EMPTY_TURNS {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                try_anyway = true;
                continue;
            }
            ready.clear();
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0
            .caps
            .local_addrs
            .first()
            .copied()
            .ok_or_else(|| io::Error::other("the backend serves no address"))
    }

    fn max_transmit_segments(&self) -> usize {
        self.0.caps.max_tx_segments.max(1)
    }

    fn max_receive_segments(&self) -> usize {
        self.0.gro_segments
    }

    fn may_fragment(&self) -> bool {
        self.0.caps.may_fragment
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Nobody is left to wake, and the backend's close may wait on its events itself.
        self.ready.stop();
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        // Transmit buffers lent to the backend (io_uring) come back as their sends complete.
        let deadline = Instant::now() + Duration::from_secs(1);
        while state.tx.ledger().lent > 0 && Instant::now() < deadline {
            let _ = state.datapath.send(&mut state.tx);
            let _ = state.datapath.poll_turn(0);
            std::thread::sleep(Duration::from_millis(2));
        }
        state.datapath.close();
        let _ = state.datapath.send(&mut state.tx);
        let tx = state.tx.ledger();
        let balanced = state.datapath.ledger_balanced().unwrap_or(true) && tx.all_home();
        if !tx.all_home() {
            tracing::error!(ledger = ?tx, "quinn socket: transmit buffers not back from the backend");
        }
        self.close.set(CloseReport {
            backend: self.name,
            balanced,
            counters: counters(state),
            gauges: state.datapath.gauges(),
        });
    }
}

type TxWait = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// One task's wait for the backend to take transmits again.
struct Poller {
    inner: Arc<Inner>,
    /// Only touched through `&mut` (`get_mut`, no locking): the mutex just makes the poller
    /// `Sync`, as quinn requires, around tokio's readiness futures.
    wait: Mutex<Option<TxWait>>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller").finish_non_exhaustive()
    }
}

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let wait = this.wait.get_mut().unwrap_or_else(|e| e.into_inner());
        // quinn asks before every transmit: free unless the last one was refused.
        if wait.is_none() && !this.inner.tx_blocked.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        let inner = &this.inner;
        // Allocated once per refusal, not per transmit.
        let fut = wait.get_or_insert_with(|| {
            let inner = inner.clone();
            let mark = inner.tx_mark.load(Ordering::Acquire);
            Box::pin(async move { inner.ready.tx_ready(mark).await })
        });
        let result = fut.as_mut().poll(cx);
        if result.is_ready() {
            *wait = None;
        }
        result
    }
}
