//! Privileged tests of the XDP datapath in network namespaces over veth.
//!
//!     cargo test -p quixd --test xdp
//!
//! Without root they print why and pass, unless `QUIXD_REQUIRE_PRIVILEGED=1`.

#[path = "../support/netns.rs"]
mod netns;

mod attach;
mod datapath;
mod kernel_path;
mod neighbor;
