//! The raw calls of the next-hop watcher thread: `poll` on its netlink socket and its stop
//! eventfd (a `datapath::wake::Wake`), `O_NONBLOCK`, and the thread id.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Sets `O_NONBLOCK` on a descriptor.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer; an invalid fd gives EBADF, not undefined behaviour.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; F_SETFL takes an integer argument.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What [`wait`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    /// The stop eventfd was signalled (it takes precedence).
    Stop,
    /// The socket has data or an error (such as ENOBUFS) to read.
    Socket,
    Timeout,
}

/// Waits until `socket` is readable or `stop` is signalled, up to `timeout_ms` (-1: forever).
pub fn wait(socket: RawFd, stop: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<Ready> {
    let mut fds = [
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: socket,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a live array of two pollfd and we pass its exact length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Ok(Ready::Timeout);
        }
        if fds[0].revents != 0 {
            return Ok(Ready::Stop);
        }
        return Ok(Ready::Socket);
    }
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}
