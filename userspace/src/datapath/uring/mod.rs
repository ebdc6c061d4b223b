//! The io_uring backend: kernel UDP sockets driven through one io_uring (Linux 6.0+).
//!
//! - Receive: one multishot `IORING_OP_RECVMSG` per socket draws buffers from a provided
//!   buffer ring ([`bufring`]). Each completion names a buffer holding the peer's address,
//!   control messages (ECN, our address, GRO segment size) and the payload ([`msg`]); the
//!   payload is lent to the driver, and the buffer goes back to the ring when the driver's
//!   callback returns. No receive syscall per datagram, no copy besides the driver's own.
//! - Send: each transmit's buffer is lent by the driver's batch ([`TxBatch::lend_front`]) to a
//!   send slot ([`slots`]) whose `msghdr` and control messages (ECN, source address,
//!   `UDP_SEGMENT` for a GSO batch) point the kernel at it, no copy; all of it stays put until
//!   the completion (zero-copy: the notification), then the buffer goes back to the batch.
//!   `IORING_OP_SENDMSG`, or `IORING_OP_SENDMSG_ZC` with `[io_uring] send_zc`.
//! - One `io_uring_enter` per loop turn for everything queued: in [`Datapath::wait`] when the
//!   loop sleeps (submit and wait), otherwise at the start of the next [`Datapath::recv`].
//! - Recovery: a multishot request that ends (buffers ran out: ENOBUFS, or anything else) is
//!   re-armed after the turn's buffers are back in the ring; the socket and its queued
//!   datagrams stay. Completion queue overflow is flagged by the kernel and flushed by the next
//!   enter; the CQ is sized so it cannot overflow in the first place.
//!
//! Every datagram dropped here is counted under a name ([`UringCounters`]).
//!
//! Modules: [`config`] (the `[io_uring]` table, portable: the config parses it everywhere),
//! `backend` (the datapath), `ring` (submission and completion, one enter per turn), `bufring`
//! (provided receive buffers and their ledger), `slots` (send requests holding lent transmit
//! buffers), `msg` (msghdr and control messages), `sock` (the UDP sockets), `error`.

pub mod config;

#[cfg(target_os = "linux")]
mod backend;
#[cfg(target_os = "linux")]
mod bufring;
#[cfg(target_os = "linux")]
mod error;
#[cfg(target_os = "linux")]
pub(crate) mod msg;
#[cfg(target_os = "linux")]
mod ring;
#[cfg(target_os = "linux")]
mod slots;
#[cfg(target_os = "linux")]
mod sock;

#[cfg(target_os = "linux")]
pub use backend::*;
#[cfg(target_os = "linux")]
pub use bufring::LedgerSummary;
pub use config::UringConfig;
#[cfg(target_os = "linux")]
pub use error::UringError;
#[cfg(target_os = "linux")]
pub use ring::RingCounters;
