//! [`Wake`]: what one thread signals to end another's sleep in [`super::Datapath::wait`] (an
//! eventfd on Linux; elsewhere there is nothing to wake, as one worker serves), and
//! [`Doorbell`]: a wake shared by everyone who hands a worker something.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(target_os = "linux")]
mod imp {
    use super::io;

    /// An eventfd that one thread signals to wake another from its poll.
    /// [`Wake::signal`] is a syscall: callers batch, signalling once per turn at most.
    #[derive(Debug)]
    pub struct Wake {
        fd: std::os::fd::OwnedFd,
    }

    impl Wake {
        /// A non-blocking, close-on-exec eventfd.
        pub fn new() -> io::Result<Self> {
            use std::os::fd::FromRawFd;
            // SAFETY: eventfd takes no pointers; a non-negative return is a new descriptor we own.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
            Ok(Self {
                fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
            })
        }

        /// Makes the eventfd readable, waking whoever polls it.
        pub fn signal(&self) -> io::Result<()> {
            use std::os::fd::AsRawFd;
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live local u64 to the descriptor `self` owns.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
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

        /// Clears the signal (EAGAIN, nothing signalled, is fine).
        pub fn clear(&self) {
            use std::os::fd::AsRawFd;
            let mut value: u64 = 0;
            // SAFETY: reads at most 8 bytes into a live local u64 from the descriptor `self` owns.
            let _ = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut value as *mut u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }

    impl std::os::fd::AsFd for Wake {
        fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
            self.fd.as_fd()
        }
    }
}

#[cfg(target_os = "linux")]
pub use imp::Wake;

/// No eventfd here: creating one fails, and callers run a single worker.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub struct Wake;

#[cfg(not(target_os = "linux"))]
impl Wake {
    pub fn new() -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "waking another worker needs Linux (eventfd)",
        ))
    }

    pub fn signal(&self) -> io::Result<()> {
        Ok(())
    }

    pub fn clear(&self) {}
}

/// One worker's wake-up for everything handed to it from other threads (other workers' handoff
/// rings, file reader threads): a producer queues its item, then [`Doorbell::ring`]s; the
/// worker calls [`Doorbell::answer`] once per turn and, when it says so, reads every source.
/// The flag spares the worker a read syscall on turns when nothing came, and producers a
/// write while the worker has not answered yet.
#[derive(Debug)]
pub struct Doorbell {
    wake: Wake,
    rung: AtomicBool,
}

impl Doorbell {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            wake: Wake::new()?,
            rung: AtomicBool::new(false),
        })
    }

    /// Tells the worker something was queued for it (call after queueing).
    pub fn ring(&self) -> io::Result<()> {
        if self.rung.swap(true, Ordering::SeqCst) {
            // Rung and not answered yet: the worker will read what was just queued too.
            return Ok(());
        }
        self.wake.signal()
    }

    /// Whether anything was queued since the last answer; then the worker must read every
    /// source. Costs one atomic load when nothing was.
    pub fn answer(&self) -> bool {
        if !self.rung.load(Ordering::SeqCst) {
            return false;
        }
        // Reset first, then clear, then (the caller) read: an item queued after the read
        // rings again, and one queued before it is read now.
        self.rung.store(false, Ordering::SeqCst);
        self.wake.clear();
        true
    }

    /// The descriptor that becomes readable when the bell rings, for
    /// [`super::Datapath::wake_on`].
    #[cfg(target_os = "linux")]
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::{AsFd, AsRawFd};
        self.wake.as_fd().as_raw_fd()
    }
}
