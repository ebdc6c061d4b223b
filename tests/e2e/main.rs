//! End-to-end tests: each test runs the real `quixd` binary with its own config in a temporary
//! directory (port 0 listeners) and talks to it with a quinn client, once per backend:
//!
//! - `socket`: kernel sockets on loopback;
//! - `socket_netns`: kernel sockets, daemon in a server namespace, clients in a client
//!   namespace, over veth (IPv4 and IPv6);
//! - `xdp_skb`, `xdp_driver`: the AF_XDP backend on the server's veth, XDP attached in SKB or
//!   driver mode, same network as `socket_netns`;
//! - `io_uring`, `io_uring_netns`: the io_uring backend on loopback, and over veth like
//!   `socket_netns`.
//!
//! Each test file instantiates its tests per backend with `e2e_tests!`, so a test's name is
//! `FILE::BACKEND::TEST` and a backend is selected with a filter:
//!
//!     cargo test -p quixd --test e2e                      # every backend
//!     cargo test -p quixd --test e2e socket::             # loopback only
//!     cargo test -p quixd --test e2e xdp_skb              # one backend
//!     cargo test -p quixd --test e2e -- --skip xdp        # all but XDP
//!     QUIXD_E2E_LOG_LEVEL=debug cargo test -p quixd --test e2e download::socket_netns
//!
//! The netns and XDP variants need root; without it they print why and pass, unless
//! `QUIXD_REQUIRE_PRIVILEGED=1`. See `harness.rs` for the backends, the daemon guard, the
//! config writer and the client helpers, `../support/daemon.rs` for the process guard shared with
//! the xdp tests, `../support/netns.rs` for the namespaces, and `../support/slowfs.rs` for the
//! slow disk (a FUSE filesystem whose reads wait on demand; its own tests are `slowfs::`).

// Namespaces, signals and XDP: Linux only (the Windows build is checked by tests/windows.rs).
#![cfg(target_os = "linux")]

#[path = "../support/netns.rs"]
mod netns;
#[path = "../support/daemon.rs"]
mod process;
#[path = "../support/slowfs.rs"]
mod slowfs_fixture;

mod harness;
mod relay;

mod capacity;
mod concurrency;
mod config;
mod download;
mod errors;
mod faults;
mod files;
mod flood;
mod handshake;
mod http3;
mod metrics;
mod perf;
mod privilege;
mod quic_lb;
mod reload;
mod shutdown;
mod slowfs;
mod systemd;
mod udp_echo;
mod uring;
mod workers;
