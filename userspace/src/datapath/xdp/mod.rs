//! XDP/AF_XDP datapath: the eBPF steering program's loader and attachment, the kernel's
//! neighbour table, one AF_XDP socket with its UMEM (`xsk`), the drop log (`drops`), the raw
//! calls beyond the crates (`sys`), and the backend built on them.

pub mod attach;
pub mod backend;
pub mod drops;
pub mod neighbor;
pub mod program;
mod sys;
pub mod xsk;

pub use backend::{served_queues, SharedProgram, Transmit, XdpDatapath, XdpError, XdpSettings};
