//! XDP/AF_XDP datapath: the eBPF steering program's loader and attachment, the kernel's
//! neighbour table, one AF_XDP socket with its UMEM (`xsk`), and the backend built on them.

pub mod attach;
pub mod backend;
pub mod neighbor;
pub mod program;
pub mod xsk;

pub use backend::{Transmit, XdpDatapath, XdpError, XdpSettings};
