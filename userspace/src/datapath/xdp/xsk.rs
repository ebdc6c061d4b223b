//! One AF_XDP socket: its UMEM, its four rings, and the frame ledger.
//!
//! This is the only module that touches the `xdp` crate's unsafe ring API, so it can be
//! replaced without the rest of the backend noticing. Every UMEM frame is in exactly one place
//! at any time, and the [`Ledger`] counts them:
//!
//! ```text
//!   free --refill--> fill ring --kernel RX--> rx ring --recv--> held by us --release--> free
//!   free --alloc_tx--> building --submit--> tx ring --kernel TX--> completion --reap--> free
//! ```

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use xdp::slab::{HeapSlab, Slab};
use xdp::socket::{XdpSocket, XdpSocketBuilder};
use xdp::umem::{FrameSize, UmemCfgBuilder};
use xdp::{Packet, RingConfigBuilder, Umem, WakableRings};

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

/// Where a socket's frames are. `free` is derived from the UMEM's own free list.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ledger {
    pub capacity: usize,
    pub free: usize,
    pub in_fill: usize,
    pub rx_held: usize,
    pub tx_building: usize,
    pub tx_in_flight: usize,
}

impl Ledger {
    /// Every frame accounted for exactly once.
    pub fn balanced(&self) -> bool {
        self.free + self.in_fill + self.rx_held + self.tx_building + self.tx_in_flight
            == self.capacity
    }
}

/// Kicks per flush while copy-mode TX drains the ring (one kernel batch of 32 each).
const MAX_KICKS: usize = 64;

/// UMEM frame size (`FrameSize::TwoK`).
const FRAME_SIZE: u32 = 2048;
/// The most a received frame can hold: the kernel keeps `XDP_PACKET_HEADROOM` (256 bytes)
/// in front of each one (the UMEM itself asks for no headroom).
pub const RX_FRAME_ROOM: u32 = FRAME_SIZE - 256;

/// Sizes of one socket's UMEM and rings. Ring sizes are powers of two.
#[derive(Debug, Clone, Copy)]
pub struct XskSizes {
    pub frames: u32,
    pub ring: u32,
}

impl Default for XskSizes {
    fn default() -> Self {
        Self {
            frames: 4096,
            ring: 2048,
        }
    }
}

/// Whether to insist on zero-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// Zero-copy when the driver supports it, copy mode otherwise.
    Auto,
    ZeroCopy,
    Copy,
}

pub struct Xsk {
    // Field order is drop order: everything holding frames goes before the UMEM.
    tx_pending: HeapSlab,
    rings: WakableRings,
    socket: XdpSocket,
    umem: Umem,
    ledger: Ledger,
    fill_target: usize,
    pub queue: u32,
    pub zero_copy: bool,
    /// Frames received on this socket.
    pub rx_frames: u64,
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
        let attempt = |zero_copy: bool| Self::bind(interface, nic, queue, sizes, zero_copy);
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
        let umem_cfg = UmemCfgBuilder {
            frame_size: FrameSize::TwoK,
            frame_count: sizes.frames,
            ..Default::default()
        }
        .build()
        .map_err(|e| XskError::Config(e.to_string()))?;
        let umem = Umem::map(umem_cfg).map_err(setup)?;
        let mut builder = XdpSocketBuilder::new().map_err(|e| XskError::Socket(to_io(e)))?;
        let ring_cfg = RingConfigBuilder {
            rx_count: sizes.ring,
            tx_count: sizes.ring,
            // Twice the RX ring: copy mode consumes fill entries in batches (platform facts).
            fill_count: sizes.ring * 2,
            completion_count: sizes.ring,
        }
        .build()
        .map_err(|e| XskError::Config(e.to_string()))?;
        let (rings, mut flags) = builder.build_wakable_rings(&umem, ring_cfg).map_err(|e| {
            let io = to_io(e);
            if io.raw_os_error() == Some(libc::ENOBUFS) {
                XskError::UmemLocked {
                    frames: sizes.frames,
                }
            } else {
                setup(io)
            }
        })?;
        if zero_copy {
            flags.force_zerocopy();
        } else {
            flags.force_copy();
        }
        let socket = builder
            .bind(nic, queue, flags)
            .map_err(|e| setup(to_io(e)))?;
        let capacity = umem.capacity();
        let mut xsk = Self {
            tx_pending: HeapSlab::with_capacity(sizes.ring as usize),
            rings,
            socket,
            ledger: Ledger {
                capacity,
                free: capacity,
                ..Ledger::default()
            },
            umem,
            // Half the frames wait in the fill ring for RX; the rest serve TX.
            fill_target: capacity / 2,
            queue,
            zero_copy,
            rx_frames: 0,
        };
        xsk.refill();
        Ok(xsk)
    }

    pub fn ledger(&self) -> Ledger {
        Ledger {
            free: self.umem.allocatable(),
            ..self.ledger
        }
    }

    /// Tops the fill ring up to its target from free frames.
    pub fn refill(&mut self) {
        let want = self.fill_target.saturating_sub(self.ledger.in_fill);
        if want == 0 {
            return;
        }
        // SAFETY: the frames handed to the kernel belong to `self.umem`, which outlives the
        // rings (field order); no wakeup syscall here, `wait` polls the socket instead.
        let queued =
            unsafe { self.rings.fill_ring.enqueue(&mut self.umem, want, false) }.unwrap_or(0);
        self.ledger.in_fill += queued;
    }

    /// Moves up to `slab.available()` received frames into `slab`. Each must come back
    /// through [`Xsk::release`].
    pub fn recv(&mut self, slab: &mut HeapSlab) -> usize {
        let Some(rx) = self.rings.rx_ring.as_mut() else {
            return 0;
        };
        // SAFETY: the packets point into `self.umem`; the caller releases them to this socket
        // before the socket (and its UMEM) can be dropped, since it needs `&mut self` to do so.
        let n = unsafe { rx.recv(&self.umem, slab) };
        self.ledger.in_fill -= n;
        self.ledger.rx_held += n;
        self.rx_frames += n as u64;
        n
    }

    /// Returns a received frame to the free list.
    pub fn release(&mut self, frame: Packet) {
        self.ledger.rx_held -= 1;
        self.umem.free_packet(frame);
    }

    /// Reaps completed transmissions back to the free list.
    pub fn reap(&mut self) -> usize {
        let n = self
            .rings
            .completion_ring
            .dequeue(&mut self.umem, self.ledger.tx_in_flight);
        self.ledger.tx_in_flight -= n;
        n
    }

    /// Free frames that TX may take without starving the fill ring.
    pub fn tx_frames_available(&self) -> usize {
        let ring_room = self.tx_pending.available();
        self.umem.allocatable().min(ring_room)
    }

    /// Takes a free frame for a transmission, sized `len` bytes, or `None` if the frame
    /// cannot hold `len` or no frame is free. Hand it to [`Xsk::queue_tx`] or
    /// [`Xsk::discard`].
    pub fn alloc_tx(&mut self, len: usize) -> Option<Packet> {
        if self.tx_pending.available() == 0 {
            return None;
        }
        // SAFETY: the frame belongs to `self.umem`; it goes back through `queue_tx` (to the
        // TX ring, then completion) or `discard`, both of which need `&mut self`.
        let mut frame = unsafe { self.umem.alloc() }?;
        self.ledger.tx_building += 1;
        if frame.capacity() < len || frame.adjust_tail(len as i32).is_err() {
            self.discard(frame);
            return None;
        }
        Some(frame)
    }

    /// Gives back a frame taken with [`Xsk::alloc_tx`] without sending it.
    pub fn discard(&mut self, frame: Packet) {
        self.ledger.tx_building -= 1;
        self.umem.free_packet(frame);
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
            if let Some(tx) = self.rings.tx_ring.as_mut() {
                let before = self.tx_pending.len();
                // SAFETY: the frames belong to `self.umem`, which outlives the rings; they
                // come back through the completion ring (`reap`). No kick here: see below.
                unsafe { tx.send(&mut self.tx_pending, false) }?;
                sent = before - self.tx_pending.len();
                self.ledger.tx_building -= sent;
                self.ledger.tx_in_flight += sent;
            }
        }
        // In copy mode each kick transmits at most one kernel batch (32 frames) from the TX
        // ring; frames beyond it wait for the next kick, which may not come soon if the
        // daemon goes idle. So kick while the ring is draining.
        for _ in 0..MAX_KICKS {
            self.reap();
            let before = self.ledger.tx_in_flight;
            if before == 0 {
                break;
            }
            match self.kick() {
                Ok(()) => {}
                // "Try again": the device is busy; the next turn kicks again.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)
                    ) =>
                {
                    break
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
        kick_tx(self.as_fd())
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
        self.socket.statistics().ok()
    }
}

// SAFETY: the frames (raw pointers into the UMEM) an `Xsk` holds point into the mapping the
// same `Xsk` owns, so moving the whole socket to another thread moves them together; nothing
// is shared with other values.
unsafe impl Send for Xsk {}

impl AsFd for Xsk {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is owned by `self.socket` and lives as long as the borrow of `self`.
        unsafe { BorrowedFd::borrow_raw(self.socket.as_raw_fd()) }
    }
}

/// Asks the kernel to transmit what is in the TX ring of the AF_XDP socket `socket` (a
/// zero-length `sendto`). In copy mode each call sends at most one kernel batch (32 frames) and
/// EAGAIN says more remain.
pub fn kick_tx(socket: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zero-length sendto with no buffer and no address on a descriptor we borrow:
    // nothing of ours is read or written; on an AF_XDP socket the kernel only reads the TX
    // ring it shares with us.
    let rc = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The io error inside the xdp crate's socket error, errno intact.
fn to_io(e: xdp::socket::SocketError) -> io::Error {
    use xdp::socket::SocketError as E;
    match e {
        E::SocketCreation(e) | E::Bind(e) => e,
        E::SetSockOpt { inner, .. } | E::GetSockOpt { inner, .. } | E::RingMap { inner, .. } => {
            inner
        }
    }
}
