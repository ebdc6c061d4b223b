//! The raw calls of the next-hop watcher thread: an eventfd to stop it, `poll` on its netlink
//! socket and that eventfd, `O_NONBLOCK`, and the thread id.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Creates a non-blocking, close-on-exec eventfd.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative return is a new descriptor we own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter, waking whoever polls it.
pub fn signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local u64 to a descriptor the borrow keeps open.
    let n = unsafe {
        libc::write(
            fd.as_raw_fd(),
            (&one as *const u64).cast(),
            std::mem::size_of::<u64>(),
        )
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        // EAGAIN: the counter is saturated, so it is signalled already.
        if err.kind() != io::ErrorKind::WouldBlock {
            return Err(err);
        }
    }
    Ok(())
}

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
