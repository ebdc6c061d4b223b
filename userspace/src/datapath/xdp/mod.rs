//! XDP/AF_XDP datapath, one module per kernel concept:
//!
//! - [`options`]: the operator's choices and their defaults (portable: the config uses them);
//! - [`program`]: the eBPF steering program (embedded object, loader, map contract) and
//!   [`attach`]ing it to an interface through a bpf_link;
//! - [`umem`] and [`socket`]: the frames shared with the kernel and one AF_XDP socket on one
//!   RX queue (its rings, fill policy, transmit kicks);
//! - [`neighbor`]: the next hop of each destination, a mirror of the kernel's routes and
//!   neighbours kept current over [`netlink`] (which also reads and sets links' XDP state);
//! - [`drops`]: rate-limited live logs of dropped frames;
//! - [`backend`]: the [`crate::datapath::Datapath`] built on them, one per worker;
//! - `sys`: every raw system call and `unsafe` block of the backend, and nothing else.

pub mod options;

#[cfg(target_os = "linux")]
pub mod attach;
#[cfg(target_os = "linux")]
pub mod backend;
#[cfg(target_os = "linux")]
pub mod drops;
#[cfg(target_os = "linux")]
pub mod neighbor;
#[cfg(target_os = "linux")]
mod netlink;
#[cfg(target_os = "linux")]
pub mod program;
#[cfg(target_os = "linux")]
pub mod socket;
#[cfg(target_os = "linux")]
mod sys;
#[cfg(target_os = "linux")]
pub mod umem;

#[cfg(target_os = "linux")]
pub use backend::{served_queues, SharedProgram, XdpDatapath, XdpError, XdpSettings};
pub use options::{AttachMode, CopyMode, Transmit, XskSizes};
