//! Why the io_uring backend cannot start, and what to do about it.

use std::io;

use crate::datapath::socket::SocketError;

#[derive(Debug, thiserror::Error)]
pub enum UringError {
    // The io::Errors below are part of the message, not a `source`: error chains printed
    // with `{:#}` would show them twice.
    #[error("io_uring is not available: io_uring_setup failed: {error}. {hint}")]
    Setup { error: io::Error, hint: String },
    #[error(
        "io_uring on this kernel lacks {what} (needs Linux {version} or newer). Use \
         backend = \"socket\", or \"auto\" to pick what works"
    )]
    KernelTooOld {
        what: &'static str,
        version: &'static str,
    },
    #[error("io_uring: cannot register {what}: {error}. {hint}")]
    Register {
        what: &'static str,
        error: io::Error,
        hint: String,
    },
    #[error("io_uring: cannot allocate {what}: {error}")]
    Memory {
        what: &'static str,
        error: io::Error,
    },
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("io_uring: {what} failed: {error}")]
    Io {
        what: &'static str,
        error: io::Error,
    },
}

impl UringError {
    /// The kernel refused `io_uring_setup` (or registration) with `error`: explain it.
    pub fn setup(error: io::Error) -> Self {
        let hint = hint(&error);
        Self::Setup { error, hint }
    }

    pub fn register(what: &'static str, error: io::Error) -> Self {
        let hint = hint(&error);
        Self::Register { what, error, hint }
    }
}

/// What an errno from io_uring setup means on Linux, and what the operator can do.
fn hint(e: &io::Error) -> String {
    const FALLBACK: &str = "use backend = \"socket\", or \"auto\" to fall back by itself";
    match e.raw_os_error() {
        Some(libc::ENOSYS) => format!(
            "The kernel has no io_uring (built without CONFIG_IO_URING), or a seccomp filter \
             (a container runtime's default profile, systemd's SystemCallFilter) blocks its \
             system calls: allow io_uring_setup/io_uring_enter/io_uring_register, or {FALLBACK}"
        ),
        Some(libc::EPERM) | Some(libc::EACCES) => {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|v| format!("kernel.io_uring_disabled = {}", v.trim()))
                .unwrap_or_else(|_| "kernel.io_uring_disabled".into());
            format!(
                "io_uring is denied to this process: by sysctl ({sysctl}; 2 disables it for \
                 everyone, 1 for processes outside kernel.io_uring_group) or by a seccomp/LSM \
                 policy. Set kernel.io_uring_disabled = 0 (or add the daemon's group to \
                 kernel.io_uring_group), or {FALLBACK}"
            )
        }
        Some(libc::ENOMEM) | Some(libc::ENOBUFS) => format!(
            "Not enough locked memory for the rings (RLIMIT_MEMLOCK; see `ulimit -l`): raise \
             the limit, grant CAP_IPC_LOCK, lower [io_uring] buffers, or {FALLBACK}"
        ),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => format!(
            "The kernel rejected the request: quixd's io_uring backend needs Linux 6.0 or \
             newer; {FALLBACK}"
        ),
        _ => FALLBACK.to_string(),
    }
}
