//! One AF_XDP socket as the `xdp` crate maps it: the UMEM, the socket and its four rings,
//! behind safe calls. The crate's ring calls are `unsafe` because a frame (`Packet`) is a raw
//! pointer into the UMEM: these wrappers keep every frame of a [`Rings`] inside that same
//! value, so a frame can never outlive the mapping it points into.
//!
//! Frames leave only by reference to the caller, who must hand each one back to the [`Rings`]
//! it came from ([`Rings::free`], [`Rings::send`]); the socket layer above counts them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use xdp::slab::{HeapSlab, Slab};
use xdp::socket::{PollTimeout, XdpSocket, XdpSocketBuilder};
use xdp::umem::{FrameSize, UmemCfgBuilder};
use xdp::{Packet, RingConfigBuilder, Umem, WakableRings};

/// Why [`Rings::bind`] failed.
#[derive(Debug)]
pub enum BindError {
    /// The sizes are not ones the crate accepts.
    Config(String),
    /// Creating the socket failed (privileges).
    Socket(io::Error),
    /// Mapping or registering the UMEM and rings, or binding, failed.
    Setup(io::Error),
}

pub struct Rings {
    // Field order is drop order: the rings and socket go before the UMEM they point into.
    rings: WakableRings,
    socket: XdpSocket,
    umem: Umem,
}

impl Rings {
    /// Maps a UMEM of `frames` 2 KiB frames, creates the socket with RX/TX/completion rings of
    /// `ring` entries (fill: twice that) and binds it to `queue` of interface `nic`.
    pub fn bind(
        nic: xdp::nic::NicIndex,
        queue: u32,
        frames: u32,
        ring: u32,
        zero_copy: bool,
    ) -> Result<Self, BindError> {
        let umem_cfg = UmemCfgBuilder {
            frame_size: FrameSize::TwoK,
            frame_count: frames,
            ..Default::default()
        }
        .build()
        .map_err(|e| BindError::Config(e.to_string()))?;
        let umem = Umem::map(umem_cfg).map_err(BindError::Setup)?;
        let mut builder =
            XdpSocketBuilder::new().map_err(|e| BindError::Socket(socket_io_error(e)))?;
        let ring_cfg = RingConfigBuilder {
            rx_count: ring,
            tx_count: ring,
            // Twice the RX ring: copy mode consumes fill entries in batches (platform facts).
            fill_count: ring * 2,
            completion_count: ring,
        }
        .build()
        .map_err(|e| BindError::Config(e.to_string()))?;
        let (rings, mut flags) = builder
            .build_wakable_rings(&umem, ring_cfg)
            .map_err(|e| BindError::Setup(socket_io_error(e)))?;
        if zero_copy {
            flags.force_zerocopy();
        } else {
            flags.force_copy();
        }
        let socket = builder
            .bind(nic, queue, flags)
            .map_err(|e| BindError::Setup(socket_io_error(e)))?;
        Ok(Self {
            rings,
            socket,
            umem,
        })
    }

    /// Frames in the UMEM.
    pub fn capacity(&self) -> usize {
        self.umem.capacity()
    }

    /// Frames on the UMEM's free list.
    pub fn allocatable(&self) -> usize {
        self.umem.allocatable()
    }

    /// Moves up to `n` free frames to the fill ring; returns how many went.
    pub fn fill(&mut self, n: usize) -> usize {
        // SAFETY: the frames handed to the kernel belong to `self.umem`, which outlives the
        // rings (field order). No wakeup syscall here: the owner polls the socket instead.
        unsafe { self.rings.fill_ring.enqueue(&mut self.umem, n, false) }.unwrap_or(0)
    }

    /// Moves up to `slab.available()` received frames into `slab`. Each must come back
    /// through [`Rings::free`] or [`Rings::send`] of this same value.
    pub fn recv(&mut self, slab: &mut HeapSlab) -> usize {
        let Some(rx) = self.rings.rx_ring.as_mut() else {
            return 0;
        };
        // SAFETY: the packets point into `self.umem`; they can only go back to it (free or
        // send, both `&mut self`), and the UMEM is unmapped only when `self` is dropped.
        unsafe { rx.recv(&self.umem, slab) }
    }

    /// Takes a free frame, for a transmission.
    pub fn alloc(&mut self) -> Option<Packet> {
        // SAFETY: the frame belongs to `self.umem`; it goes back through `send` (then the
        // completion ring) or `free`, both of which need `&mut self`.
        unsafe { self.umem.alloc() }
    }

    /// Returns a frame of this UMEM to the free list.
    pub fn free(&mut self, frame: Packet) {
        self.umem.free_packet(frame);
    }

    /// Moves frames from the front of `slab` to the TX ring, as many as it has room for;
    /// returns how many went. No kick: see [`Rings::kick`].
    pub fn send(&mut self, slab: &mut HeapSlab) -> io::Result<usize> {
        let Some(tx) = self.rings.tx_ring.as_mut() else {
            return Ok(0);
        };
        let before = slab.len();
        // SAFETY: the frames belong to `self.umem`, which outlives the rings; they come back
        // through the completion ring ([`Rings::complete`]).
        unsafe { tx.send(slab, false) }?;
        Ok(before - slab.len())
    }

    /// Returns up to `max` transmitted frames from the completion ring to the free list.
    pub fn complete(&mut self, max: usize) -> usize {
        self.rings.completion_ring.dequeue(&mut self.umem, max)
    }

    /// Asks the kernel to transmit what is in the TX ring.
    pub fn kick(&self) -> io::Result<()> {
        kick_tx(self.as_fd())
    }

    /// Waits up to `timeout` for the socket to be readable (EINTR: returns false).
    pub fn poll_read(&self, timeout: std::time::Duration) -> io::Result<bool> {
        self.socket.poll_read(PollTimeout::new(Some(timeout)))
    }

    /// The kernel's XDP_STATISTICS for the socket.
    pub fn statistics(&self) -> Option<xdp::libc::xdp::XdpStatistics> {
        self.socket.statistics().ok()
    }
}

// SAFETY: the frames (raw pointers into the UMEM) a `Rings` hands out point into the mapping
// the same `Rings` owns, and callers give them back to it; moving the whole value to another
// thread moves the mapping with them. Nothing is shared with other values.
unsafe impl Send for Rings {}

impl AsFd for Rings {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is owned by `self.socket` and lives as long as the borrow of `self`.
        unsafe { BorrowedFd::borrow_raw(self.socket.as_raw_fd()) }
    }
}

/// Frames of one [`Rings`] held outside it by the same owner: received ones until their
/// release, built ones until the TX ring takes them.
pub struct FrameBatch(HeapSlab);

impl FrameBatch {
    pub fn with_capacity(n: usize) -> Self {
        Self(HeapSlab::with_capacity(n))
    }
}

impl std::ops::Deref for FrameBatch {
    type Target = HeapSlab;

    fn deref(&self) -> &HeapSlab {
        &self.0
    }
}

impl std::ops::DerefMut for FrameBatch {
    fn deref_mut(&mut self) -> &mut HeapSlab {
        &mut self.0
    }
}

// SAFETY: the frames are raw pointers into the UMEM of a `Rings` that the batch's owner also
// owns (and which is `Send`): moving the owner to another thread moves the mapping with them.
// A frame's memory is not tied to a thread, and nothing else refers to these frames.
unsafe impl Send for FrameBatch {}

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
fn socket_io_error(e: xdp::socket::SocketError) -> io::Error {
    use xdp::socket::SocketError as E;
    match e {
        E::SocketCreation(e) | E::Bind(e) => e,
        E::SetSockOpt { inner, .. } | E::GetSockOpt { inner, .. } | E::RingMap { inner, .. } => {
            inner
        }
    }
}
