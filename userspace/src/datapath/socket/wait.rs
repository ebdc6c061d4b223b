//! Sleeping until a socket is ready: poll(2) on Unix.

use std::io;
use std::net::UdpSocket;
use std::time::Duration;

/// The most sockets one backend serves (one per listen address).
const MAX_SOCKETS: usize = 16;

#[cfg(unix)]
pub fn readable<'a>(
    sockets: impl Iterator<Item = &'a UdpSocket>,
    timeout: Option<Duration>,
    tx_pending: bool,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    let events = libc::POLLIN | if tx_pending { libc::POLLOUT } else { 0 };
    let mut fds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX_SOCKETS];
    let mut n = 0;
    for s in sockets.take(MAX_SOCKETS) {
        fds[n] = libc::pollfd {
            fd: s.as_raw_fd(),
            events,
            revents: 0,
        };
        n += 1;
    }
    let timeout_ms = match timeout {
        None => -1,
        // Round up so a timer due in 0.3 ms does not become a busy loop of 0 ms polls.
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
    };
    // SAFETY: `fds[..n]` are initialised pollfd structs for sockets borrowed for this call;
    // poll only writes their `revents` fields.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn readable<'a>(
    _sockets: impl Iterator<Item = &'a UdpSocket>,
    timeout: Option<Duration>,
    _tx_pending: bool,
) -> io::Result<()> {
    // The Windows backends bring their own notification; this portable fallback naps briefly.
    std::thread::sleep(
        timeout
            .unwrap_or(Duration::from_millis(1))
            .min(Duration::from_millis(1)),
    );
    Ok(())
}
