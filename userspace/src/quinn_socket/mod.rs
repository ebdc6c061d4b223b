//! quixd's datapaths under any quinn application: a [`quinn::AsyncUdpSocket`] over AF_XDP,
//! io_uring, Registered I/O (RIO, Windows) or kernel sockets (feature `quinn`).
//!
//! [`QuixdSocketBuilder`] opens a backend from the same settings the daemon reads (the backend,
//! the listen addresses, the `[xdp]`, `[io_uring]` and `[rio]` tables, or a whole
//! [`Config`]); the [`QuixdSocket`] it returns goes to
//! `quinn::Endpoint::new_with_abstract_socket` in place of the UDP socket quinn would bind. The
//! rest of the application does not change.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use quixd::config::Backend;
//! use quixd::quinn_socket::QuixdSocketBuilder;
//!
//! # async fn serve(server_config: quinn::ServerConfig) -> Result<(), Box<dyn std::error::Error>> {
//! // Inside a tokio runtime (the socket registers its descriptors with tokio's reactor).
//! let socket = QuixdSocketBuilder::new(Backend::IoUring, ["127.0.0.1:4433".parse()?]).open()?;
//! let mut endpoint_config = quinn::EndpointConfig::default();
//! endpoint_config.max_udp_payload_size(socket.max_udp_payload_size())?;
//! // The one line that differs from `quinn::Endpoint::server(server_config, addr)`:
//! let endpoint = quinn::Endpoint::new_with_abstract_socket(
//!     endpoint_config,
//!     Some(server_config),
//!     Arc::new(socket),
//!     Arc::new(quinn::TokioRuntime),
//! )?;
//! while let Some(incoming) = endpoint.accept().await {
//!     // ... as with any quinn endpoint
//! #   drop(incoming);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! How it maps quinn's socket API onto a [`Datapath`]:
//!
//! - receive: the backend's batch is copied once, from its buffer (UMEM frame, provided
//!   io_uring buffer, socket buffer) into quinn's, with the peer's address, our destination
//!   address, ECN and the GRO stride; a GRO batch larger than one of quinn's buffers is split
//!   at datagram boundaries, and what quinn has no buffer for yet waits in a stash (counted);
//! - transmit: quinn's `Transmit` (segment size, ECN, source address) becomes one
//!   [`crate::datapath::TxMeta`] in the backend's [`crate::datapath::TxBatch`]: GSO on sockets
//!   and io_uring, one frame per segment on AF_XDP. A transmit the backend cannot take now is
//!   refused with `WouldBlock` and retried by quinn when the backend's descriptors say so;
//! - readiness: the backend's descriptors ([`Datapath::poll_fds`]: the AF_XDP sockets and the
//!   guard sockets, the io_uring ring, the plain sockets) are registered with tokio
//!   (`AsyncFd`), so quinn's endpoint driver sleeps until one is ready and never blocks. On
//!   Windows, where tokio cannot wait on an event handle, the backend's events (RIO's
//!   completion-queue notification, armed with `RIONotify` before each sleep; a socket's
//!   `WSAEventSelect` event) are watched by waits registered with the system thread pool
//!   (`RegisterWaitForSingleObject`), whose callbacks wake the tasks;
//! - `max_transmit_segments`, `max_receive_segments` and `may_fragment` come from the backend
//!   ([`Datapath::capabilities`], its GRO setting).
//!
//! The backend's buffer ledger is checked when the socket closes (quinn drops it once the
//! endpoint and its connections are gone): see [`QuixdSocket::close_watch`].
//!
//! Limits: one backend instance (one worker; xdp serves every queue of the interface from it);
//! quinn names a transmit's source address but not its port, so with several listen addresses
//! on different ports a transmit leaves from the port of the address it names (or the first of
//! its family). RIO has been cross-built and its state machine tested against a fake kernel,
//! but has not run on real Windows (Wine, where the Windows tests run, has no RIO; the event
//! readiness runs there with the socket backend).

use std::net::SocketAddr;

use crate::config::{Backend, Config, Xdp};
use crate::datapath::rio::RioConfig;
use crate::datapath::socket::{SocketDatapath, SocketError};
use crate::datapath::uring::UringConfig;
use crate::datapath::Datapath;

#[cfg(windows)]
mod event;
#[cfg(unix)]
mod fd;
mod rx;
mod socket;

#[cfg(windows)]
use event::Readiness;
#[cfg(unix)]
use fd::Readiness;

/// Readiness sources watched per socket at most (bit `i` of a readiness mask is the `i`-th).
const MAX_SOURCES: usize = 64;

pub use rx::RxCounters;
pub use socket::{CloseReport, CloseWatch, QuixdSocket};

/// Why a [`QuixdSocket`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum QuixdSocketError {
    #[error("no listen address given")]
    NoListen,
    #[error("backend `{0}` is not available here: {1}")]
    Unsupported(Backend, &'static str),
    #[error(
        "backend xdp needs an [xdp] table naming the interface (QuixdSocketBuilder::xdp or \
         xdp_interface)"
    )]
    NoXdpInterface,
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The backend named could not start; it is never silently replaced by another.
    #[error("backend `{backend}` cannot start: {reason}")]
    Backend {
        backend: Backend,
        reason: BackendError,
    },
    #[error(
        "cannot register the datapath's descriptors with tokio (open the socket inside a tokio \
         runtime with IO enabled): {0}"
    )]
    Runtime(#[source] std::io::Error),
}

/// The backend's own error.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Xdp(#[from] crate::datapath::xdp::XdpError),
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    IoUring(#[from] crate::datapath::uring::UringError),
    #[error(transparent)]
    Rio(#[from] crate::datapath::rio::RioError),
}

/// Opens a datapath for a quinn endpoint, from the daemon's settings.
#[derive(Debug, Clone)]
pub struct QuixdSocketBuilder {
    backend: Backend,
    listen: Vec<SocketAddr>,
    xdp: Option<Xdp>,
    io_uring: UringConfig,
    rio: RioConfig,
}

impl QuixdSocketBuilder {
    /// `backend` serving `listen` (port 0 picks a free port per address). `Backend::Auto`
    /// tries xdp (when an `[xdp]` table is given), then io_uring, then sockets on Linux; RIO,
    /// then sockets on Windows.
    pub fn new(backend: Backend, listen: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            backend,
            listen: listen.into_iter().collect(),
            xdp: None,
            io_uring: UringConfig::default(),
            rio: RioConfig::default(),
        }
    }

    /// The backend, listen addresses, `[xdp]`, `[io_uring]` and `[rio]` tables of a daemon
    /// config (the rest of it, QUIC and TLS, is the application's business here).
    pub fn from_config(config: &Config) -> Self {
        Self {
            backend: config.server.backend,
            listen: config.server.listen.clone(),
            xdp: config.xdp.clone(),
            io_uring: config.io_uring.clone(),
            rio: config.rio.clone(),
        }
    }

    /// The `[xdp]` table (interface, queues, attach mode, ...).
    pub fn xdp(mut self, xdp: Xdp) -> Self {
        self.xdp = Some(xdp);
        self
    }

    /// An `[xdp]` table with only the interface set, every other field at its default.
    pub fn xdp_interface(self, interface: &str) -> Self {
        let table = format!("interface = {}", toml::Value::String(interface.into()));
        let xdp: Xdp = toml::from_str(&table).expect("an [xdp] table with defaults parses");
        self.xdp(xdp)
    }

    /// The `[io_uring]` table.
    pub fn io_uring(mut self, config: UringConfig) -> Self {
        self.io_uring = config;
        self
    }

    /// The `[rio]` table (queue sizes, offloads).
    pub fn rio(mut self, config: RioConfig) -> Self {
        self.rio = config;
        self
    }

    /// Opens the backend and registers it with the current tokio runtime. Must be called
    /// within one. On io_uring, call it from a thread that lives as long as the socket (a
    /// runtime worker or the thread that runs the runtime): the kernel cancels a thread's
    /// pending requests when it exits, and the backend then has to re-arm its receives.
    pub fn open(self) -> Result<QuixdSocket, QuixdSocketError> {
        if self.listen.is_empty() {
            return Err(QuixdSocketError::NoListen);
        }
        let (datapath, gro_segments) = self.open_backend()?;
        QuixdSocket::new(datapath, gro_segments).map_err(QuixdSocketError::Runtime)
    }

    fn open_backend(&self) -> Result<(Box<dyn Datapath + Send>, usize), QuixdSocketError> {
        let fail = |backend| move |reason| QuixdSocketError::Backend { backend, reason };
        match self.backend {
            Backend::Socket => self.open_socket().map_err(fail(Backend::Socket)),
            Backend::IoUring => self.open_io_uring(),
            Backend::Xdp => self.open_xdp(),
            Backend::Rio => self.open_rio().map_err(fail(Backend::Rio)),
            Backend::Auto if cfg!(windows) => {
                match self.open_rio() {
                    Ok(dp) => return Ok(dp),
                    // A port that cannot be bound is no reason to try sockets: they would fail.
                    Err(e @ BackendError::Rio(crate::datapath::rio::RioError::Bind { .. })) => {
                        return Err(fail(Backend::Rio)(e))
                    }
                    Err(e) => tracing::info!("backend auto: rio skipped: {e}"),
                }
                self.open_socket().map_err(fail(Backend::Socket))
            }
            Backend::Auto => {
                if self.xdp.is_some() {
                    match self.open_xdp() {
                        Ok(dp) => return Ok(dp),
                        Err(e) => tracing::info!("backend auto: xdp skipped: {e}"),
                    }
                }
                match self.open_io_uring() {
                    Ok(dp) => return Ok(dp),
                    Err(e) => tracing::info!("backend auto: io_uring skipped: {e}"),
                }
                self.open_socket().map_err(fail(Backend::Socket))
            }
        }
    }

    fn open_rio(&self) -> Result<(Box<dyn Datapath + Send>, usize), BackendError> {
        let dp = crate::datapath::rio::open(&self.listen, &self.rio)?;
        // With receive coalescing a completion may hold a batch of datagrams (UDP's 64 KiB).
        let gro = if self.rio.receive_coalescing { 64 } else { 1 };
        Ok((dp, gro))
    }

    fn open_socket(&self) -> Result<(Box<dyn Datapath + Send>, usize), BackendError> {
        let dp = SocketDatapath::bind(&self.listen)?;
        let gro = dp.gro_segments();
        Ok((Box::new(dp), gro))
    }

    #[cfg(target_os = "linux")]
    fn open_io_uring(&self) -> Result<(Box<dyn Datapath + Send>, usize), QuixdSocketError> {
        use crate::datapath::uring::{UringDatapath, UringSettings};

        let u = &self.io_uring;
        u.validate()
            .map_err(|(field, message)| QuixdSocketError::Invalid { field, message })?;
        let settings = UringSettings {
            listen: self.listen.clone(),
            buffers: u.buffers as u16,
            buffer_size: u.buffer_size as usize,
            send_zc: u.send_zc,
            reuse_port: false,
        };
        let dp = UringDatapath::open(&settings).map_err(|e| QuixdSocketError::Backend {
            backend: Backend::IoUring,
            reason: e.into(),
        })?;
        // Buffers of 64 KiB hold a whole GRO batch, and get UDP_GRO (the kernel's limit is 64
        // segments); smaller ones hold one datagram.
        let gro = if u.buffer_size >= 65535 { 64 } else { 1 };
        Ok((Box::new(dp), gro))
    }

    #[cfg(not(target_os = "linux"))]
    fn open_io_uring(&self) -> Result<(Box<dyn Datapath + Send>, usize), QuixdSocketError> {
        Err(QuixdSocketError::Unsupported(
            Backend::IoUring,
            "io_uring exists only on Linux",
        ))
    }

    #[cfg(target_os = "linux")]
    fn open_xdp(&self) -> Result<(Box<dyn Datapath + Send>, usize), QuixdSocketError> {
        use crate::datapath::xdp::{served_queues, XdpDatapath, XdpSettings, XskSizes};

        let x = match &self.xdp {
            Some(x) if !x.interface.is_empty() => x,
            _ => return Err(QuixdSocketError::NoXdpInterface),
        };
        let fail = |e: crate::datapath::xdp::XdpError| QuixdSocketError::Backend {
            backend: Backend::Xdp,
            reason: e.into(),
        };
        let settings = XdpSettings {
            interface: x.interface.clone(),
            queues: x.queues.clone(),
            attach: x.attach,
            copy_mode: x.zero_copy,
            sizes: XskSizes {
                frames: x.frames,
                ring: x.ring_size,
            },
            listen: self.listen.clone(),
            vlan: x.vlan,
            rx_checksum: x.rx_checksum,
            transmit: x.transmit,
            reuse_port: false,
        };
        // One socket per served queue, all in this one datapath.
        let settings = XdpSettings {
            queues: served_queues(&settings).map_err(fail)?,
            ..settings
        };
        let dp = XdpDatapath::open(&settings).map_err(fail)?;
        // One datagram per frame (the guard socket's rare GRO batches are split by the
        // adapter).
        Ok((Box::new(dp), 1))
    }

    #[cfg(not(target_os = "linux"))]
    fn open_xdp(&self) -> Result<(Box<dyn Datapath + Send>, usize), QuixdSocketError> {
        Err(QuixdSocketError::Unsupported(
            Backend::Xdp,
            "AF_XDP exists only on Linux",
        ))
    }
}
