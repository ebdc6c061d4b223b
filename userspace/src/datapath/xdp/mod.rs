//! XDP/AF_XDP datapath: the eBPF steering program's loader and (later) the AF_XDP backend.

pub mod program;
