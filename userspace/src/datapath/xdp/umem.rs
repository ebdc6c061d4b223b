//! The UMEM: the frames an AF_XDP socket shares with the kernel, and the [`Ledger`] that says
//! where each one is. Every frame is in exactly one place at any time:
//!
//! ```text
//!   free --refill--> fill ring --kernel RX--> rx ring --recv--> held by us --release--> free
//!                                                               held by us --forward--> building
//!   free --alloc_tx--> building --submit--> tx ring --kernel TX--> completion --reap--> free
//! ```

/// UMEM frame size (the `xdp` crate's `FrameSize::TwoK`).
pub const FRAME_SIZE: u32 = 2048;

/// The most a received frame can hold: the kernel keeps `XDP_PACKET_HEADROOM` (256 bytes)
/// in front of each one (the UMEM itself asks for no headroom).
pub const RX_FRAME_ROOM: u32 = FRAME_SIZE - 256;

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
