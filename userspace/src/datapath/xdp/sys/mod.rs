//! The lowest layer of the XDP backend: every raw system call it makes beyond the `xdp`, `aya`
//! and `neli` crates, and every call into the `xdp` crate's unsafe ring API. Each `unsafe`
//! block of the backend is here, with its `// SAFETY:` note; the modules above are safe code.

pub mod bpf;
pub mod ethtool;
pub mod poll;
pub mod ring;
