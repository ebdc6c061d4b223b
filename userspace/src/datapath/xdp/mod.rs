//! XDP/AF_XDP datapath: the eBPF steering program's loader, the kernel's neighbour table, and
//! (being built) the AF_XDP backend.

pub mod attach;
pub mod backend;
pub mod neighbor;
pub mod program;
pub mod xsk;

pub use backend::{Transmit, XdpDatapath, XdpError, XdpSettings};
