//! The RIO function table as the state machine sees it: a trait over the request queues (one
//! per socket), the one completion queue, its notification, and the registered region.
//!
//! `sys.rs` implements it with the real function table on Windows; the tests implement it with
//! a fake that plays the kernel (`engine.rs`'s tests), so posting, completion handling, full
//! queues and the slot ledger are exercised on Linux.

use std::io;
use std::time::Duration;

use super::layout::BufRange;

/// A Winsock error code (`WSAGetLastError`), as a failed RIO call reports it.
pub type WsaError = i32;

/// The request or completion queue is full (`RIOSendEx`/`RIOReceiveEx` fail with it).
pub const WSAENOBUFS: WsaError = 10055;
/// `RIONotify` while a notification is already armed.
pub const WSAEALREADY: WsaError = 10037;
/// A request cancelled because its socket closed.
pub const WSA_OPERATION_ABORTED: WsaError = 995;
/// A datagram larger than the receive buffer (truncated).
pub const WSAEMSGSIZE: WsaError = 10040;
/// An ICMP port unreachable reported on a later receive (disabled with SIO_UDP_CONNRESET).
pub const WSAECONNRESET: WsaError = 10054;
/// The operation is not supported (what Wine answers for the RIO function table).
pub const WSAEOPNOTSUPP: WsaError = 10045;

/// The buffers of one request, all in the registered region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The payload (`pData`).
    pub data: BufRange,
    /// The remote address, a `SOCKADDR_INET` (`pRemoteAddress`).
    pub remote: BufRange,
    /// Control data (`pControlContext`): ancillary data in for sends, out for receives.
    pub control: Option<BufRange>,
}

/// One `RIORESULT`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// 0 on success, else a Winsock error code.
    pub status: i32,
    pub bytes: u32,
    /// The request context given when posting.
    pub context: u64,
}

/// `RIODequeueCompletion` returned `RIO_CORRUPT_CQ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the RIO completion queue is corrupt (RIO_CORRUPT_CQ)")]
pub struct CorruptQueue;

/// The RIO calls the state machine makes. Sockets are numbered `0..n` in listen order.
pub trait RioQueues {
    /// `RIOReceiveEx` on socket `sock`'s request queue; `defer` sets `RIO_MSG_DEFER`.
    fn receive(
        &mut self,
        sock: usize,
        req: &Request,
        defer: bool,
        context: u64,
    ) -> Result<(), WsaError>;

    /// `RIOSendEx` on socket `sock`'s request queue; `defer` sets `RIO_MSG_DEFER`.
    fn send(
        &mut self,
        sock: usize,
        req: &Request,
        defer: bool,
        context: u64,
    ) -> Result<(), WsaError>;

    /// `RIOReceiveEx(.., RIO_MSG_COMMIT_ONLY)`: starts the deferred receives.
    fn commit_receives(&mut self, sock: usize) -> Result<(), WsaError>;

    /// `RIOSendEx(.., RIO_MSG_COMMIT_ONLY)`: starts the deferred sends.
    fn commit_sends(&mut self, sock: usize) -> Result<(), WsaError>;

    /// `RIODequeueCompletion` into `out`; returns how many were written.
    fn dequeue(&mut self, out: &mut [Completion]) -> Result<usize, CorruptQueue>;

    /// `RIONotify`: arms the completion queue's notification (the event is set at the next
    /// completion, at once if some are queued).
    fn notify(&mut self) -> Result<(), WsaError>;

    /// Waits up to `timeout` (`None`: without limit) for the armed notification. Returns true
    /// when it fired (and is disarmed), false on timeout (still armed).
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<bool>;

    /// The event the notification sets, for callers that wait on it themselves (an async
    /// runtime, see `Datapath::poll_events`).
    #[cfg(windows)]
    fn event(&self) -> Option<std::os::windows::io::RawHandle> {
        None
    }

    /// The bytes of `range` in the registered region.
    ///
    /// Contract: the caller holds every slot `range` touches (the slot ledger says `Held`), so
    /// no request the kernel may be writing or reading covers it.
    fn region(&mut self, range: BufRange) -> &mut [u8];

    /// Closes the sockets: outstanding requests are cancelled and complete with an error.
    fn close_sockets(&mut self);
}
