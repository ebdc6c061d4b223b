//! The `[io_uring]` table: settings of the io_uring backend, with their defaults and limits.

use serde::Deserialize;

/// Settings of the io_uring backend (`[io_uring]`; used by `backend = "io_uring"` and by
/// `auto` when it picks io_uring). Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UringConfig {
    /// Provided receive buffers shared by all sockets (power of two, 8..=32768).
    pub buffers: u32,
    /// Payload bytes per receive buffer (2048..=65536). At 65536 a buffer holds a whole GRO
    /// batch and UDP_GRO is turned on; below, GRO stays off. `transport.max_udp_payload_size`
    /// is lowered to it when larger (we could not receive bigger datagrams).
    pub buffer_size: u32,
    /// Zero-copy sends (IORING_OP_SENDMSG_ZC, Linux 6.1+). Off by default: it only pays for
    /// large GSO batches on a real NIC; on loopback and veth the kernel copies anyway.
    pub send_zc: bool,
}

impl Default for UringConfig {
    fn default() -> Self {
        Self {
            buffers: 128,
            buffer_size: 65536,
            send_zc: false,
        }
    }
}

impl UringConfig {
    /// Checks the limits; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.buffers.is_power_of_two() || !(8..=32768).contains(&self.buffers) {
            return Err((
                "io_uring.buffers",
                format!("{} is not a power of two in 8..=32768", self.buffers),
            ));
        }
        if !(2048..=65536).contains(&self.buffer_size) {
            return Err((
                "io_uring.buffer_size",
                format!("{} is outside 2048..=65536", self.buffer_size),
            ));
        }
        Ok(())
    }
}
