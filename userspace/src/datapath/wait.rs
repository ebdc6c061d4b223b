//! Sleeping until one of a backend's file descriptors is ready: poll(2), over as many
//! descriptors as the backend has.

use std::io;
use std::time::Duration;

/// Which of the descriptors passed to [`PollSet::wait`] were readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readable {
    /// The index of the last readable descriptor.
    last: Option<usize>,
    /// poll was interrupted: the caller should look everywhere.
    interrupted: bool,
}

impl Readable {
    /// Whether a descriptor at index `i` or later may be readable.
    pub fn any_from(&self, i: usize) -> bool {
        self.interrupted || self.last.is_some_and(|last| last >= i)
    }
}

/// The pollfd array of one backend's waits, kept between them (no allocation once it has
/// grown to the backend's descriptor count).
#[derive(Debug, Default)]
pub struct PollSet {
    fds: Vec<libc::pollfd>,
}

impl PollSet {
    /// Blocks until a descriptor is readable (or, with `tx_pending`, writable), `wake` is
    /// readable, or `timeout` passes. `None` waits without limit. `wake` (a
    /// [`super::wake::Wake`]) is watched for reading only and is not counted in the result.
    pub fn wait(
        &mut self,
        fds: impl Iterator<Item = std::os::fd::RawFd>,
        wake: Option<std::os::fd::RawFd>,
        timeout: Option<Duration>,
        tx_pending: bool,
    ) -> io::Result<Readable> {
        let events = libc::POLLIN | if tx_pending { libc::POLLOUT } else { 0 };
        self.fds.clear();
        self.fds.extend(fds.map(|fd| libc::pollfd {
            fd,
            events,
            revents: 0,
        }));
        let watched = self.fds.len();
        if let Some(fd) = wake {
            // Readable only: an eventfd is always writable.
            self.fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout_ms = match timeout {
            None => -1,
            // Round up so a timer due in 0.3 ms does not become a busy loop of 0 ms polls.
            Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        };
        // SAFETY: `self.fds` holds initialised pollfd structs for descriptors the caller
        // keeps open for this call; poll only writes their `revents` fields, and we pass the
        // vector's exact length.
        let rc = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
            return Ok(Readable {
                last: None,
                interrupted: true,
            });
        }
        // Errors and hang-ups count as readable: the receive call reports them.
        let ready = libc::POLLIN | libc::POLLERR | libc::POLLHUP;
        Ok(Readable {
            last: self.fds[..watched]
                .iter()
                .rposition(|p| p.revents & ready != 0),
            interrupted: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn watches_more_than_64_descriptors() {
        let sockets: Vec<_> = (0..100)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(b"x", sockets[90].local_addr().unwrap())
            .unwrap();
        let mut set = PollSet::default();
        let fds = sockets.iter().map(|s| s.as_raw_fd());
        let r = set
            .wait(fds, None, Some(Duration::from_secs(5)), false)
            .unwrap();
        assert!(r.any_from(90), "{r:?}");
        assert!(!r.any_from(91), "{r:?}");
    }
}
