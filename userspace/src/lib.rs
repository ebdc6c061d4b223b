//! quixd: a QUIC server datapath. quinn-proto does QUIC; this crate moves its packets through
//! XDP/AF_XDP, io_uring or kernel sockets, and serves a few built-in applications.
//!
//! Data flows one way: backend -> RX batch -> [`driver`] -> [`app`] -> driver -> TX batch ->
//! backend. The driver and the apps never name a backend; a backend never names quinn-proto.

pub mod affinity;
pub mod app;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod diagnostics;
pub mod driver;
pub mod echo;
// Fuzz harnesses for `fuzz/` (and corpus replay in the unit tests); not part of the API.
#[cfg(all(target_os = "linux", any(test, feature = "fuzzing")))]
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod notify;
pub mod privilege;
#[cfg(all(feature = "quinn", any(unix, windows)))]
pub mod quinn_socket;
pub mod status;
pub mod tls;
pub mod wire;
