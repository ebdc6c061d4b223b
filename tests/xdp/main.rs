//! Privileged tests of the XDP datapath in network namespaces over veth.
//!
//!     cargo test -p quixd --test xdp
//!
//! Without root they print why and pass, unless `QUIXD_REQUIRE_PRIVILEGED=1`.

// Namespaces, signals and XDP: Linux only (the Windows build is checked by tests/windows.rs).
#![cfg(target_os = "linux")]

#[path = "../support/netns.rs"]
mod netns;

#[path = "../support/daemon.rs"]
mod process;

mod attach;
mod daemon;
mod daemon_errors;
mod daemon_malformed;
mod daemon_traffic;
mod daemon_workers;
mod datapath;
mod kernel_path;
mod neighbor;
