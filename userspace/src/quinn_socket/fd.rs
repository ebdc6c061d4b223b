//! Readiness on Unix: the backend's descriptors ([`Datapath::poll_fds`]) registered with
//! tokio's reactor (`AsyncFd`).

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;

use super::MAX_SOURCES;
use crate::datapath::{Datapath, PollFd, TxReady};

/// A descriptor of the backend, registered with tokio's reactor; it does not own the fd (the
/// backend does, and outlives it: see the field order of the socket's `Inner`).
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

pub(super) struct Readiness {
    fds: Vec<(AsyncFd<Fd>, PollFd)>,
}

/// Which receive descriptors were ready, and their readiness to clear once the backend has
/// been read dry.
pub(super) struct RxReady<'a> {
    mask: u64,
    guards: [Option<AsyncFdReadyGuard<'a, Fd>>; MAX_SOURCES],
}

impl RxReady<'_> {
    /// Bit `i`: the `i`-th descriptor was ready.
    pub(super) fn mask(&self) -> u64 {
        self.mask
    }

    /// The backend had nothing more: the next readiness event wakes the task again.
    pub(super) fn clear(self) {
        for mut g in self.guards.into_iter().flatten() {
            g.clear_ready();
        }
    }
}

impl Readiness {
    /// Registers the backend's descriptors with the current tokio runtime.
    pub(super) fn new(datapath: &dyn Datapath) -> io::Result<Self> {
        let fds = datapath
            .poll_fds()
            .into_iter()
            .take(MAX_SOURCES)
            .map(|p| {
                let interest = match p.tx {
                    Some(TxReady::Writable) => Interest::READABLE | Interest::WRITABLE,
                    _ => Interest::READABLE,
                };
                // SAFETY: the backend owns `p.fd` and keeps it open, unchanged, until it is
                // dropped; the socket's `Inner` drops this (field `ready`) before the backend
                // (field `state`), and nothing else closes or replaces the descriptor.
                let fd = unsafe { AsyncFd::register_with_interest(Fd(p.fd), interest) };
                fd.map(|fd| (fd, p)).map_err(io::Error::from)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { fds })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Polls every receive descriptor: the ready ones are in the mask, the others have the
    /// task's waker.
    pub(super) fn poll_rx(&self, cx: &mut Context<'_>) -> io::Result<RxReady<'_>> {
        let mut ready = RxReady {
            mask: 0,
            guards: std::array::from_fn(|_| None),
        };
        for (i, (fd, p)) in self.fds.iter().enumerate() {
            if !p.rx {
                continue;
            }
            match fd.poll_read_ready(cx) {
                Poll::Ready(Ok(g)) => {
                    ready.mask |= 1 << i;
                    ready.guards[i] = Some(g);
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(ready)
    }

    /// A mark for [`Readiness::tx_ready`], taken when a transmit is refused. tokio's readiness
    /// stays set until cleared, so nothing needs marking here.
    pub(super) fn tx_mark(&self) -> u64 {
        0
    }

    /// Before the backend closes: nothing to do here (the registrations go with `self`).
    pub(super) fn stop(&mut self) {}

    /// Waits until one of the backend's descriptors says it may take transmits again, and
    /// clears that readiness before quinn retries: if the retry is refused too, a later event
    /// comes. tokio's readiness futures (unlike `poll_*_ready`) keep one waiter per task, so
    /// any number of connections can wait at once.
    pub(super) async fn tx_ready(&self, _mark: u64) -> io::Result<()> {
        type Wait<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>>;
        let mut waits: Vec<Wait<'_>> = self
            .fds
            .iter()
            .filter_map(|(fd, p)| {
                let wait: Wait<'_> = match p.tx? {
                    TxReady::Writable => Box::pin(async move {
                        fd.writable().await?.clear_ready();
                        Ok(())
                    }),
                    TxReady::Readable => Box::pin(async move {
                        // The endpoint driver also watches this one, and tries to receive on
                        // every wake-up whatever the readiness says: clearing cannot starve it.
                        fd.readable().await?.clear_ready();
                        Ok(())
                    }),
                };
                Some(wait)
            })
            .collect();
        if waits.is_empty() {
            return Ok(());
        }
        std::future::poll_fn(|cx| {
            for w in waits.iter_mut() {
                if let Poll::Ready(r) = w.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
            }
            Poll::Pending
        })
        .await
    }
}
