//! Sleeping until one of a backend's file descriptors is ready: poll(2).

use std::io;
use std::time::Duration;

/// The most descriptors one wait covers (sockets of one backend).
pub const MAX_FDS: usize = 64;

/// Which of the descriptors passed to [`wait_fds`] were readable: bit `i` for the `i`-th.
/// All ones when poll was interrupted (the caller should look everywhere).
pub type Readable = u64;

/// Blocks until a descriptor is readable (or, with `tx_pending`, writable), `wake` is
/// readable, or `timeout` passes. `None` waits without limit. Descriptors beyond [`MAX_FDS`]
/// are not watched. `wake` (a [`super::wake::Wake`]) is watched for reading only and has no bit in the
/// result.
#[cfg(unix)]
pub fn wait_fds(
    fds: impl Iterator<Item = std::os::fd::RawFd>,
    wake: Option<std::os::fd::RawFd>,
    timeout: Option<Duration>,
    tx_pending: bool,
) -> io::Result<Readable> {
    let events = libc::POLLIN | if tx_pending { libc::POLLOUT } else { 0 };
    let mut pollfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX_FDS + 1];
    let mut n = 0;
    for fd in fds.take(MAX_FDS) {
        pollfds[n] = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        n += 1;
    }
    let watched = n;
    if let Some(fd) = wake {
        // Readable only: an eventfd is always writable.
        pollfds[n] = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        n += 1;
    }
    let timeout_ms = match timeout {
        None => -1,
        // Round up so a timer due in 0.3 ms does not become a busy loop of 0 ms polls.
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
    };
    // SAFETY: `pollfds[..n]` are initialised pollfd structs for descriptors the caller keeps
    // open for this call; poll only writes their `revents` fields.
    let rc = unsafe { libc::poll(pollfds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
        return Ok(Readable::MAX);
    }
    // Errors and hang-ups count as readable: the receive call reports them.
    let ready = libc::POLLIN | libc::POLLERR | libc::POLLHUP;
    Ok(pollfds[..watched]
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents & ready != 0)
        .fold(0, |mask, (i, _)| mask | 1 << i))
}
