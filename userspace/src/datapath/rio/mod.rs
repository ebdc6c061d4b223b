//! The Windows Registered I/O (RIO) backend.
//!
//! RIO is Winsock's completion-based datapath: the application registers one buffer region,
//! posts receives and sends that name slices of it on per-socket request queues, and collects
//! their completions from a completion queue, with no system call per datagram and no page
//! pinning per operation. quixd uses it like this:
//!
//! - one UDP socket per listen address, made with `WSA_FLAG_REGISTERED_IO`, with IP_PKTINFO /
//!   IPV6_PKTINFO and IP_ECN / IPV6_ECN, DF set, and receive coalescing
//!   (`UDP_RECV_MAX_COALESCED_SIZE`) where the OS has it;
//! - the function table from `WSAIoctl(SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER,
//!   WSAID_MULTIPLE_RIO)`; when that fails (older Windows, Wine) [`open`] returns
//!   [`RioError::Unavailable`] and `backend = "auto"` falls back to the socket backend;
//! - one registered region split into fixed slots (payload, `SOCKADDR_INET`, control data),
//!   owned according to a [`SlotLedger`](crate::datapath::slots::SlotLedger);
//! - `receive_queue` receives kept posted per socket with `RIOReceiveEx`, sends with
//!   `RIOSendEx` (ECN, source address and `UDP_SEND_MSG_SIZE` as control data) deferred and
//!   committed once per loop turn, one `RIODequeueCompletion` per turn, and an event armed with
//!   `RIONotify` to sleep on when idle.
//!
//! Layers: [`layout`] (the region and the bytes in it) and [`engine`] (the state machine) are
//! plain Rust, tested on Linux; the engine talks to [`queues::RioQueues`], which `sys.rs`
//! implements with the real function table on Windows (the only `unsafe` code of the backend)
//! and the tests implement with a fake kernel.
//!
//! RIO itself has only been type-checked and cross-built: nothing here has run on real Windows
//! (Wine does not implement RIO). See the README.

use std::io;
use std::net::SocketAddr;

use crate::datapath::Datapath;

mod config;
pub mod engine;
pub mod layout;
pub mod queues;
#[cfg(windows)]
mod sys;

pub use config::RioConfig;
pub use engine::{EngineOptions, RioCounters, RioEngine};

/// Why the RIO backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum RioError {
    #[error("backend `rio` needs Windows: Registered I/O (RIO) is a Winsock extension")]
    NotWindows,
    #[error(
        "Registered I/O is not available: loading the RIO function table (WSAIoctl \
         SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER with WSAID_MULTIPLE_RIO on a \
         WSA_FLAG_REGISTERED_IO socket) failed with WSA error {code}{}",
        explain(*code)
    )]
    Unavailable { code: i32 },
    #[error("cannot create a RIO UDP socket for {addr}: {source}")]
    Create { addr: SocketAddr, source: io::Error },
    #[error("cannot bind UDP {addr}: {source} (is another process using the port?)")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot configure RIO socket {addr}: {what}: {source}")]
    Configure {
        addr: SocketAddr,
        what: &'static str,
        source: io::Error,
    },
    #[error("RIO setup failed: {what}: {source}")]
    Setup {
        what: &'static str,
        source: io::Error,
    },
    #[error("RIO buffer region: {0}")]
    Layout(String),
}

impl RioError {
    /// The OS has no RIO at all (as opposed to a RIO setup that failed): what `auto` treats
    /// as "use the socket backend" without alarm.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RioError::NotWindows | RioError::Unavailable { .. })
    }
}

fn explain(code: i32) -> &'static str {
    match code {
        queues::WSAEOPNOTSUPP => {
            " (WSAEOPNOTSUPP: this system does not implement RIO; Wine, for one, does not)"
        }
        10022 => " (WSAEINVAL)",
        10093 => " (WSANOTINITIALISED)",
        _ => "",
    }
}

/// Opens the RIO backend on `listen` (one socket per address, in order).
#[cfg(windows)]
pub fn open(
    listen: &[SocketAddr],
    config: &RioConfig,
) -> Result<Box<dyn Datapath + Send>, RioError> {
    Ok(Box::new(sys::open(listen, config)?))
}

/// Opens the RIO backend: on this platform, always [`RioError::NotWindows`].
#[cfg(not(windows))]
pub fn open(
    _listen: &[SocketAddr],
    _config: &RioConfig,
) -> Result<Box<dyn Datapath + Send>, RioError> {
    Err(RioError::NotWindows)
}

#[cfg(test)]
mod fake;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_cause() {
        let e = RioError::Unavailable { code: 10045 };
        let msg = e.to_string();
        assert!(msg.contains("WSAID_MULTIPLE_RIO"), "{msg}");
        assert!(msg.contains("10045"), "{msg}");
        assert!(msg.contains("does not implement RIO"), "{msg}");
        assert!(e.is_unavailable());
        #[cfg(not(windows))]
        {
            let e = open(&["127.0.0.1:0".parse().unwrap()], &RioConfig::default())
                .err()
                .expect("no RIO off Windows");
            assert!(matches!(e, RioError::NotWindows));
            assert!(e.is_unavailable());
        }
    }
}
