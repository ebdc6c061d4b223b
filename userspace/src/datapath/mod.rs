//! The boundary between the QUIC driver and the ways packets move.
//!
//! A backend receives datagrams in batches and lends each one to the driver as a borrowed slice,
//! so the buffer can stay where the backend keeps it (a UMEM frame, a provided io_uring buffer,
//! a socket receive buffer) and go back to its owner as soon as the batch is done. The driver
//! makes the one copy quinn-proto's API forces (`Endpoint::handle` takes an owned `BytesMut`).
//!
//! Transmits go the other way in a [`TxBatch`]: a ring of reusable buffers that quinn-proto
//! writes into directly (`poll_transmit` fills a `Vec<u8>`), each with its [`TxMeta`]. A backend
//! sends from the front of the batch and consumes what it took; what it could not take yet stays
//! queued for the next turn. A backend whose kernel reads the payload after `send` returns
//! (io_uring) borrows the buffer instead of copying it: it reserves spares for its in-flight
//! capacity ([`TxBatch::reserve_lendable`]), takes the front transmit's buffer
//! ([`TxBatch::lend_front`], a spare takes its place) and gives it back when the kernel is done
//! ([`TxBatch::give_back`]). Backends that copy anyway (into UMEM frames, RIO's registered
//! memory, a socket) just read [`TxBatch::queued`].
//!
//! Backends know nothing about QUIC; the driver knows nothing about sockets or frames.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

// The XDP backend is Linux-only; its options module is portable (the config uses it).
pub mod xdp;

// The RIO state machine, its slot layout and its test double are portable (tested on Linux);
// only `rio/sys.rs`, the real function table, is Windows-only.
pub mod rio;
pub mod slots;
pub mod socket;
#[cfg(target_os = "linux")]
pub mod steer;
// Linux-only but for its config table, which the config parses on every platform.
pub mod uring;
#[cfg(unix)]
pub mod wait;
pub mod wake;

mod batch;

pub use batch::{TxBatch, TxBuf, TxLedger, TxLoan, TxSlot};

/// Explicit Congestion Notification codepoint, as carried in the IP header's low two TOS bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ecn {
    Ect0,
    Ect1,
    Ce,
}

impl Ecn {
    /// Decodes the two ECN bits of a TOS / traffic-class byte.
    pub fn from_bits(tos: u8) -> Option<Self> {
        match tos & 0b11 {
            0b10 => Some(Self::Ect0),
            0b01 => Some(Self::Ect1),
            0b11 => Some(Self::Ce),
            _ => None,
        }
    }

    /// The two ECN bits for a TOS / traffic-class byte.
    pub fn bits(self) -> u8 {
        match self {
            Self::Ect0 => 0b10,
            Self::Ect1 => 0b01,
            Self::Ce => 0b11,
        }
    }
}

/// What a backend knows about one received datagram (or GRO batch of datagrams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxMeta {
    /// The peer's address.
    pub src: SocketAddr,
    /// Our address the datagram was sent to, when the backend knows it (pktinfo, IP header).
    pub dst_ip: Option<IpAddr>,
    /// Our UDP port the datagram was sent to.
    pub dst_port: u16,
    pub ecn: Option<Ecn>,
    /// Size of each datagram in the payload; the last one may be shorter. Equal to the payload
    /// length when the payload is one datagram.
    pub stride: usize,
}

/// Where and how to send one transmit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxMeta {
    pub dst: SocketAddr,
    /// Our address to send from; `None` lets the backend choose (route lookup).
    pub src_ip: Option<IpAddr>,
    /// Our UDP port to send from: the port the peer has been talking to.
    pub src_port: u16,
    pub ecn: Option<Ecn>,
    /// When set, the buffer holds several datagrams of this size (the last may be shorter), to
    /// be sent as separate datagrams (GSO on sockets, one frame each on AF_XDP).
    pub segment_size: Option<usize>,
}

/// The local socket (by index into `locals`, the bound addresses in order) that sends from
/// `port` to `dst`: one of `dst`'s family first; for an IPv4 peer (or an IPv4-mapped one)
/// otherwise a dual-stack `[::]` socket on the port, which reaches it as `::ffff:a.b.c.d`.
/// The one rule every backend with several sockets uses.
pub fn socket_for(
    locals: impl Iterator<Item = SocketAddr> + Clone,
    port: u16,
    dst: &SocketAddr,
) -> Option<usize> {
    let on_port = move |l: &SocketAddr| l.port() == port;
    locals
        .clone()
        .position(|l| on_port(&l) && l.is_ipv4() == dst.is_ipv4())
        .or_else(|| {
            dst.ip().to_canonical().is_ipv4().then(|| {
                locals
                    .clone()
                    .position(|l| on_port(&l) && l.is_ipv6() && l.ip().is_unspecified())
            })?
        })
}

/// Largest total payload of one GSO transmit: one UDP datagram's 64 KiB minus headers, with
/// room to spare. The kernel refuses larger batches (EMSGSIZE).
pub const MAX_GSO_BYTES: usize = 65_000;

/// Static facts about a backend that the driver's QUIC configuration depends on.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// Most datagrams one transmit may hold (1 without GSO).
    pub max_tx_segments: usize,
    /// Whether sent datagrams may be fragmented by the IP layer. Path MTU discovery is only
    /// safe when they cannot (DF set).
    pub may_fragment: bool,
    /// The local addresses this backend serves.
    pub local_addrs: Vec<SocketAddr>,
    /// The largest UDP payload the backend can carry (interface MTU, frame size), if it has
    /// a limit of its own; the QUIC configuration is clamped to it.
    pub max_udp_payload: Option<u16>,
}

/// One datapath backend. Batch-oriented and non-blocking except for [`Datapath::wait`].
pub trait Datapath {
    /// A short name for logs ("socket", "xdp", ...).
    fn name(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// Receives at most one batch of datagrams without blocking and hands each to `rx` with its
    /// payload borrowed from the backend's buffers. Returns how many payloads were handed over.
    fn recv(&mut self, rx: &mut dyn FnMut(&RxMeta, &[u8])) -> io::Result<usize>;

    /// Sends as much of `batch` as the backend can take now, consuming it from the front.
    /// Datagrams the backend must drop (unroutable, too large) are consumed and counted there.
    /// A backend that lends buffers gives the ones the kernel is done with back here, so the
    /// driver keeps one batch per backend.
    fn send(&mut self, batch: &mut TxBatch) -> io::Result<()>;

    /// Blocks until a datagram may be ready to receive (or, with `tx_pending`, room to send),
    /// or until `timeout` passes. `None` waits without limit.
    fn wait(&mut self, timeout: Option<Duration>, tx_pending: bool) -> io::Result<()>;

    /// Makes [`Datapath::wait`] return also when `fd` becomes readable (another worker
    /// handing datagrams over, see `driver::handoff`), from now on. Returns false when the
    /// backend cannot watch it; the caller then bounds its waits instead.
    #[cfg(unix)]
    fn wake_on(&mut self, fd: std::os::fd::RawFd) -> bool {
        let _ = fd;
        false
    }

    /// Asks `recv` to hand over at most about `max` payloads per call, for a caller with that
    /// many buffers (quinn's socket API); what it took beyond would have to wait in a copy.
    /// Backends without a batch of their own ignore it.
    fn rx_batch_hint(&mut self, max: usize) {
        let _ = max;
    }

    /// The backend's counters, for logs and metrics.
    fn counters(&self) -> Vec<(&'static str, u64)>;

    /// The backend's current levels (buffers by place, ring occupancy, table sizes), for
    /// metrics: values that go up and down, unlike [`Datapath::counters`].
    fn gauges(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Called once after the last send: lets in-flight transmissions complete and checks
    /// that the backend's buffers are all accounted for (logging what is not).
    fn close(&mut self) {}

    // For callers with an event loop of their own (an async runtime's reactor) that watch the
    // backend's descriptors instead of calling `wait`: see `crate::quinn_socket`.

    /// The descriptors to watch instead of calling [`Datapath::wait`]. Empty when the backend
    /// has none (then only `wait` can sleep on it).
    #[cfg(unix)]
    fn poll_fds(&self) -> Vec<PollFd> {
        Vec::new()
    }

    /// Windows' counterpart of [`Datapath::poll_fds`]: event handles to watch instead of
    /// calling [`Datapath::wait`] (a socket's `WSAEventSelect` event, RIO's completion-queue
    /// notification). Empty when the backend has none.
    #[cfg(windows)]
    fn poll_events(&self) -> Vec<PollEvent> {
        Vec::new()
    }

    /// The part of [`Datapath::wait`] that does not sleep: hands the kernel what `send`
    /// queued, takes note of which [`Datapath::poll_fds`] (or [`Datapath::poll_events`]) were
    /// readable or fired (bit `i` for the `i`-th), and returns whether `recv` may have
    /// something that no descriptor will announce (the backend already took it from the
    /// kernel, e.g. while reaping send completions).
    fn poll_turn(&mut self, _readable: u64) -> io::Result<bool> {
        Ok(false)
    }

    /// Before sleeping on [`Datapath::poll_fds`] or [`Datapath::poll_events`]: makes them
    /// signal the next completion, for a backend whose notification fires once per arming
    /// (RIO's `RIONotify`); a no-op elsewhere.
    fn arm(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// After [`Datapath::close`]: whether its check found every buffer accounted for. `None`
    /// before `close`, or for a backend that keeps no ledger.
    fn ledger_balanced(&self) -> Option<bool> {
        None
    }
}

/// A descriptor to watch instead of calling [`Datapath::wait`] (see [`Datapath::poll_fds`]).
#[cfg(unix)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollFd {
    pub fd: std::os::fd::RawFd,
    /// Becomes readable when `recv` may return data.
    pub rx: bool,
    /// How it tells that `send`, having stopped short, may take more; `None` if it does not.
    pub tx: Option<TxReady>,
}

/// An event handle to watch instead of calling [`Datapath::wait`] (see
/// [`Datapath::poll_events`]).
#[cfg(windows)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollEvent {
    pub handle: std::os::windows::io::RawHandle,
    /// It fires when `recv` may return data.
    pub rx: bool,
    /// It fires when `send`, having stopped short, may take more (see [`TxReady`]).
    pub tx: Option<TxReady>,
    /// A manual-reset event (a socket's): whoever sees it fire resets it before looking, so
    /// it fires again for what comes later. Auto-reset events reset themselves.
    pub manual_reset: bool,
}

/// What a [`PollFd`] does when a backend that stopped sending may take more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxReady {
    /// It becomes writable (a socket's buffer has room).
    Writable,
    /// It becomes readable (completions free send slots: io_uring).
    Readable,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_for_prefers_the_family_then_dual_stack() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let locals = [a("198.18.0.1:443"), a("[fd00::1]:443"), a("[::]:8443")];
        let pick = |port, dst: &str| socket_for(locals.iter().copied(), port, &a(dst));
        assert_eq!(pick(443, "198.18.0.2:5000"), Some(0));
        assert_eq!(pick(443, "[fd00::2]:5000"), Some(1));
        assert_eq!(
            pick(443, "[::ffff:198.18.0.2]:5000"),
            Some(1),
            "a v6 socket for a v6 address"
        );
        assert_eq!(
            pick(8443, "198.18.0.2:5000"),
            Some(2),
            "dual stack serves IPv4"
        );
        assert_eq!(pick(8443, "[fd00::2]:5000"), Some(2));
        assert_eq!(pick(80, "198.18.0.2:5000"), None, "no socket on the port");
        let v6_only = [a("[fd00::1]:443")];
        assert_eq!(
            socket_for(v6_only.iter().copied(), 443, &a("198.18.0.2:5000")),
            None,
            "a v6 socket bound to one address cannot reach IPv4"
        );
    }
}
