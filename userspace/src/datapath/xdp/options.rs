//! The operator's choices for the XDP backend, with their defaults: the types the config file
//! deserialises into directly. Portable (the config is parsed on every platform); the backend
//! that acts on them is Linux-only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How to attach: the operator's choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Driver (native) mode if the driver supports it, else SKB (generic) mode; the result
    /// says which one was used and why driver mode was not.
    #[default]
    Auto,
    /// Driver (native) mode only: the driver runs the program before any skb is built.
    Driver,
    /// SKB (generic) mode only: works on every interface, after the skb is built.
    Skb,
}

impl AttachMode {
    /// The names accepted by [`FromStr`] and serde.
    pub const NAMES: [&'static str; 3] = ["auto", "driver", "skb"];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Driver => "driver",
            Self::Skb => "skb",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "driver" | "drv" | "native" => Ok(Self::Driver),
            "skb" | "generic" => Ok(Self::Skb),
            other => Err(format!(
                "unknown XDP attach mode `{other}` (expected auto, driver or skb)"
            )),
        }
    }
}

/// Whether to insist on zero-copy (`xdp.zero_copy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum CopyMode {
    /// Zero-copy when the driver supports it, copy mode otherwise.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "on")]
    ZeroCopy,
    #[serde(rename = "off")]
    Copy,
}

/// Which path transmits take (`xdp.transmit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transmit {
    /// AF_XDP on zero-copy sockets; the kernel socket (GSO) in copy mode, where copy-mode
    /// AF_XDP sends one skb per frame and the kernel's GSO path is cheaper.
    #[default]
    Auto,
    /// Frames we build, through the AF_XDP TX ring.
    AfXdp,
    /// The guard socket, with GSO: receive through AF_XDP, send through the kernel.
    Kernel,
}

/// Sizes of one socket's UMEM and rings (`xdp.frames`, `xdp.ring_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskSizes {
    /// UMEM frames (2 KiB each) per queue.
    pub frames: u32,
    /// Entries in each ring (a power of two; the fill ring gets twice this).
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
