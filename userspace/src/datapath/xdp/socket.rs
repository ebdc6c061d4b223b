//! One AF_XDP socket bound to one RX queue: opening it (zero-copy when possible), keeping its
//! fill ring topped up, receiving, building and sending frames, and the kick policy copy-mode
//! transmission needs. Frames are counted in the UMEM's [`Ledger`]; the raw ring calls are in
//! [`super::sys::ring`].

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use xdp::slab::{HeapSlab, Slab};
use xdp::Packet;

pub use super::options::{CopyMode, XskSizes};
pub use super::sys::ring::kick_tx;
use super::sys::ring::{BindError, FrameBatch, Rings};
pub use super::umem::{Ledger, RX_FRAME_ROOM};

pub use xdp::Packet as Frame;

#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("interface `{0}` does not exist here (see `ip link`)")]
    NoInterface(String),
    #[error(
        "cannot register the AF_XDP UMEM ({frames} frames): the kernel refused to lock the memory \
         (ENOBUFS). Give quixd CAP_IPC_LOCK (root has it) or raise RLIMIT_MEMLOCK, or lower \
         xdp.frames"
    )]
    UmemLocked { frames: u32 },
    #[error("cannot create an AF_XDP socket: {0} (needs CAP_NET_RAW and CAP_NET_ADMIN: run as root or grant them)")]
    Socket(io::Error),
    #[error("cannot set up AF_XDP socket on {interface} queue {queue}: {source}")]
    Setup {
        interface: String,
        queue: u32,
        source: io::Error,
    },
    #[error("invalid AF_XDP sizes: {0}")]
    Config(String),
}

/// Kicks per flush while copy-mode TX drains the ring (one kernel batch of 32 each).
const MAX_KICKS: usize = 64;

pub struct Xsk {
    /// Frames built and waiting for room in the TX ring (they point into `rings`' UMEM).
    tx_pending: FrameBatch,
    rings: Rings,
    ledger: Ledger,
    fill_target: usize,
    pub queue: u32,
    pub zero_copy: bool,
    /// Frames received on this socket.
    pub rx_frames: u64,
    /// TX kicks (`sendto`) made, and those the device refused as busy.
    pub kicks: u64,
    pub kicks_busy: u64,
}

impl Xsk {
    /// Creates a socket bound to `interface` queue `queue`, zero-copy when possible (or as
    /// `mode` demands).
    pub fn open(
        interface: &str,
        queue: u32,
        sizes: XskSizes,
        mode: CopyMode,
    ) -> Result<Self, XskError> {
        if !sizes.ring.is_power_of_two() || sizes.frames < 2 * sizes.ring {
            return Err(XskError::Config(format!(
                "ring size {} must be a power of two and frames ({}) at least twice it",
                sizes.ring, sizes.frames
            )));
        }
        let name = CString::new(interface).map_err(|_| XskError::NoInterface(interface.into()))?;
        let nic = xdp::nic::NicIndex::lookup_by_name(&name)
            .ok()
            .flatten()
            .ok_or_else(|| XskError::NoInterface(interface.into()))?;
        let attempt =
            |zero_copy: bool| Self::bind_retrying(interface, nic, queue, sizes, zero_copy);
        match mode {
            CopyMode::ZeroCopy => attempt(true),
            CopyMode::Copy => attempt(false),
            CopyMode::Auto => match attempt(true) {
                Ok(xsk) => Ok(xsk),
                Err(XskError::Setup { source, .. })
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
                    ) =>
                {
                    tracing::debug!(interface, queue, error = %source, "no zero-copy AF_XDP here");
                    attempt(false)
                }
                Err(e) => Err(e),
            },
        }
    }

    /// [`Xsk::bind`], again for a while on EBUSY: the kernel releases the queue of a socket
    /// whose process died (a supervisor restarting quixd after `kill -9`) a little after the
    /// process is gone.
    fn bind_retrying(
        interface: &str,
        nic: xdp::nic::NicIndex,
        queue: u32,
        sizes: XskSizes,
        zero_copy: bool,
    ) -> Result<Self, XskError> {
        const PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);
        let started = std::time::Instant::now();
        let mut logged = false;
        loop {
            match Self::bind(interface, nic, queue, sizes, zero_copy) {
                Err(XskError::Setup { source, .. })
                    if source.raw_os_error() == Some(libc::EBUSY)
                        && started.elapsed() < PATIENCE =>
                {
                    if !logged {
                        tracing::info!(
                            interface,
                            queue,
                            "the queue is still held by an AF_XDP socket (a process that just \
                             died?): retrying for up to 3 s"
                        );
                        logged = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn bind(
        interface: &str,
        nic: xdp::nic::NicIndex,
        queue: u32,
        sizes: XskSizes,
        zero_copy: bool,
    ) -> Result<Self, XskError> {
        let setup = |source: io::Error| XskError::Setup {
            interface: interface.into(),
            queue,
            source,
        };
        let rings =
            Rings::bind(nic, queue, sizes.frames, sizes.ring, zero_copy).map_err(|e| match e {
                BindError::Config(detail) => XskError::Config(detail),
                BindError::Socket(io) => XskError::Socket(io),
                BindError::Setup(io) if io.raw_os_error() == Some(libc::ENOBUFS) => {
                    XskError::UmemLocked {
                        frames: sizes.frames,
                    }
                }
                BindError::Setup(io) => setup(io),
            })?;
        let capacity = rings.capacity();
        let mut xsk = Self {
            tx_pending: FrameBatch::with_capacity(sizes.ring as usize),
            rings,
            ledger: Ledger {
                capacity,
                free: capacity,
                ..Ledger::default()
            },
            // Half the frames wait in the fill ring for RX; the rest serve TX.
            fill_target: capacity / 2,
            queue,
            zero_copy,
            rx_frames: 0,
            kicks: 0,
            kicks_busy: 0,
        };
        xsk.refill();
        Ok(xsk)
    }

    pub fn ledger(&self) -> Ledger {
        Ledger {
            free: self.rings.allocatable(),
            ..self.ledger
        }
    }

    /// Tops the fill ring up to its target from free frames.
    pub fn refill(&mut self) {
        let want = self.fill_target.saturating_sub(self.ledger.in_fill);
        if want == 0 {
            return;
        }
        self.ledger.in_fill += self.rings.fill(want);
    }

    /// Moves up to `slab.available()` received frames into `slab`. Each must come back
    /// through [`Xsk::release`].
    pub fn recv(&mut self, slab: &mut HeapSlab) -> usize {
        let n = self.rings.recv(slab);
        self.ledger.in_fill -= n;
        self.ledger.rx_held += n;
        self.rx_frames += n as u64;
        n
    }

    /// Returns a received frame to the free list.
    pub fn release(&mut self, frame: Packet) {
        self.ledger.rx_held -= 1;
        self.rings.free(frame);
    }

    /// Reaps completed transmissions back to the free list.
    pub fn reap(&mut self) -> usize {
        let n = self.rings.complete(self.ledger.tx_in_flight);
        self.ledger.tx_in_flight -= n;
        n
    }

    /// Free frames that TX may take without starving the fill ring.
    pub fn tx_frames_available(&self) -> usize {
        let ring_room = self.tx_pending.available();
        self.rings.allocatable().min(ring_room)
    }

    /// Takes a free frame for a transmission, sized `len` bytes, or `None` if the frame
    /// cannot hold `len` or no frame is free. Hand it to [`Xsk::queue_tx`] or
    /// [`Xsk::discard`].
    pub fn alloc_tx(&mut self, len: usize) -> Option<Packet> {
        if self.tx_pending.available() == 0 {
            return None;
        }
        let mut frame = self.rings.alloc()?;
        self.ledger.tx_building += 1;
        if frame.capacity() < len || frame.adjust_tail(len as i32).is_err() {
            self.discard(frame);
            return None;
        }
        Some(frame)
    }

    /// Queues a received frame for transmission as it is (after the caller rewrote it in
    /// place). Returns false, freeing the frame, when the TX queue is full.
    pub fn forward(&mut self, frame: Packet) -> bool {
        self.ledger.rx_held -= 1;
        self.ledger.tx_building += 1;
        if let Some(frame) = self.tx_pending.push_front(frame) {
            self.discard(frame);
            return false;
        }
        true
    }

    /// Waits up to `timeout` for a frame to receive. In copy mode the poll also transmits
    /// what the TX ring holds. Returns whether the socket is readable.
    pub fn poll(&self, timeout: std::time::Duration) -> io::Result<bool> {
        self.rings.poll_read(timeout)
    }

    /// Gives back a frame taken with [`Xsk::alloc_tx`] without sending it.
    pub fn discard(&mut self, frame: Packet) {
        self.ledger.tx_building -= 1;
        self.rings.free(frame);
    }

    /// Queues a built frame; it is handed to the kernel by [`Xsk::flush_tx`].
    pub fn queue_tx(&mut self, frame: Packet) {
        if let Some(frame) = self.tx_pending.push_front(frame) {
            // alloc_tx checked for room, so this cannot happen; don't leak if it does.
            self.discard(frame);
        }
    }

    /// Hands queued frames to the TX ring and kicks the kernel. Returns how many went.
    pub fn flush_tx(&mut self) -> io::Result<usize> {
        let mut sent = 0;
        if !self.tx_pending.is_empty() {
            // No kick here: see below.
            sent = self.rings.send(&mut self.tx_pending)?;
            self.ledger.tx_building -= sent;
            self.ledger.tx_in_flight += sent;
        }
        // In copy mode each kick transmits at most one kernel batch (32 frames) from the TX
        // ring and says EAGAIN when more remain; frames beyond it wait for the next kick, which
        // may not come soon if the daemon goes idle. So kick while the ring is draining.
        for _ in 0..MAX_KICKS {
            self.reap();
            let before = self.ledger.tx_in_flight;
            if before == 0 {
                break;
            }
            self.kicks += 1;
            match self.kick() {
                Ok(()) => {}
                // One batch went and more remain: kick again at once.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                // The device is busy; the next turn (or the wait's poll) kicks again.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOBUFS)) => {
                    self.kicks_busy += 1;
                    break;
                }
                Err(e) => return Err(e),
            }
            self.reap();
            if self.ledger.tx_in_flight == before {
                // Nothing completed at once: zero-copy completes asynchronously; don't spin.
                break;
            }
        }
        Ok(sent)
    }

    /// Asks the kernel to transmit what is in the TX ring.
    fn kick(&self) -> io::Result<()> {
        self.rings.kick()
    }

    /// Frames in the TX ring or on their way out, not yet reaped.
    pub fn tx_in_flight(&self) -> usize {
        self.ledger.tx_in_flight
    }

    /// Frames built but not yet in the TX ring.
    pub fn tx_backlog(&self) -> usize {
        self.tx_pending.len()
    }

    pub fn statistics(&self) -> Option<xdp::libc::xdp::XdpStatistics> {
        self.rings.statistics()
    }
}

impl AsFd for Xsk {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.rings.as_fd()
    }
}
