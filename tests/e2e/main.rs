//! End-to-end tests: each test runs the real `quixd` binary with its own config in a temporary
//! directory (port 0 on loopback) and talks to it with a quinn client.
//!
//!     cargo test -p quixd --test e2e
//!     QUIXD_E2E_BACKEND=socket QUIXD_E2E_LOG_LEVEL=debug cargo test -p quixd --test e2e
//!
//! See `harness.rs` for the daemon guard, config writer and client helpers.

mod harness;
mod relay;

mod concurrency;
mod config;
mod download;
mod errors;
mod handshake;
mod perf;
mod shutdown;
