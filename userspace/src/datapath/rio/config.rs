//! The `[rio]` table: queue sizes and offloads of the RIO backend.

use serde::Deserialize;

/// Settings of the RIO backend (`[rio]` in the config file; every field has a default).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RioConfig {
    /// Receives kept posted per socket (the request queue's receive depth).
    pub receive_queue: u32,
    /// Sends in flight per socket (the request queue's send depth), and send slots in all.
    pub send_queue: u32,
    /// Completions taken per `RIODequeueCompletion` call (one call per loop turn).
    pub completion_batch: u32,
    /// Send quinn-proto's segment batches as one request with `UDP_SEND_MSG_SIZE` where the OS
    /// supports it (otherwise they are split into datagrams).
    pub send_offload: bool,
    /// Ask for coalesced receives (`UDP_RECV_MAX_COALESCED_SIZE`) where the OS supports it:
    /// one completion then carries several datagrams of one flow (64 KiB receive slots).
    pub receive_coalescing: bool,
}

impl Default for RioConfig {
    fn default() -> Self {
        Self {
            receive_queue: 256,
            send_queue: 256,
            completion_batch: 256,
            send_offload: true,
            receive_coalescing: true,
        }
    }
}

/// Bounds of the queue sizes (RIO caps a completion queue at 128 Mi entries; the registered
/// region's offsets are 32-bit, which `validate` checks against the worst case).
pub const MAX_QUEUE: u32 = 1 << 16;

impl RioConfig {
    /// Checks ranges; on error returns the field (`rio.NAME`) and a message, in the form the
    /// config module reports (`FILE:LINE:COL: field `rio.NAME`: message`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, v) in [
            ("rio.receive_queue", self.receive_queue),
            ("rio.send_queue", self.send_queue),
            ("rio.completion_batch", self.completion_batch),
        ] {
            if v == 0 || v > MAX_QUEUE {
                return Err((field, format!("{v} is outside 1..={MAX_QUEUE}")));
            }
        }
        // One socket's receive slots plus the send slots must fit the region's 32-bit offsets
        // even with 64 KiB slots; more sockets are checked when the region is laid out.
        let worst = (u64::from(self.receive_queue) + u64::from(self.send_queue))
            * super::layout::COALESCED_SLOT as u64;
        if worst > u64::from(u32::MAX) {
            return Err((
                "rio.receive_queue",
                format!(
                    "receive_queue + send_queue = {} slots of 64 KiB exceed the 4 GiB a \
                     registered buffer can address",
                    u64::from(self.receive_queue) + u64::from(self.send_queue)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_partial_tables() {
        let c: RioConfig = toml::from_str("").unwrap();
        assert_eq!(c, RioConfig::default());
        let c: RioConfig = toml::from_str("send_queue = 64\nsend_offload = false").unwrap();
        assert_eq!(c.send_queue, 64);
        assert!(!c.send_offload);
        assert_eq!(c.receive_queue, 256);
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<RioConfig>("sendqueue = 1").is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let c = RioConfig {
            receive_queue: 0,
            ..RioConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "rio.receive_queue");
        let c = RioConfig {
            completion_batch: MAX_QUEUE + 1,
            ..RioConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "rio.completion_batch");
        let c = RioConfig {
            receive_queue: MAX_QUEUE,
            send_queue: MAX_QUEUE,
            ..RioConfig::default()
        };
        assert!(c.validate().unwrap_err().1.contains("4 GiB"));
    }
}
