//! Readiness on Windows: the backend's event handles ([`Datapath::poll_events`]: RIO's
//! completion-queue notification, a socket's `WSAEventSelect` event), each watched by a wait
//! registered with the system thread pool (`RegisterWaitForSingleObject`). Its callback notes
//! which event fired and wakes the tasks waiting on it; tokio has no way to wait on an event
//! handle itself, and this costs no thread of ours.

use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Threading::{
    RegisterWaitForSingleObject, ResetEvent, UnregisterWaitEx, INFINITE, WT_EXECUTEINWAITTHREAD,
};

use super::MAX_SOURCES;
use crate::datapath::Datapath;

/// What the callbacks and the tasks share.
#[derive(Default)]
struct Shared {
    /// Bit `i`: event `i` (a receive source) fired since the receive side last looked.
    rx_fired: AtomicU64,
    /// Bumped each time an event that announces room to send fires.
    tx_epoch: AtomicU64,
    rx_waker: Mutex<Option<Waker>>,
    tx_wakers: Mutex<Vec<Waker>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here can leave the data half-written; a panic elsewhere must not stop wake-ups.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One registered wait's context, handed to the callback as a raw pointer.
struct WaitContext {
    shared: Arc<Shared>,
    bit: u64,
    rx: bool,
    tx: bool,
    /// The event, to reset when it is a manual-reset one (stored as an address: it is only
    /// passed back to the system).
    reset: Option<usize>,
}

/// A registered wait: the handle `UnregisterWaitEx` takes and the context its callback reads.
struct Registration {
    wait: usize,
    context: *mut WaitContext,
}

// SAFETY: the wait handle is an opaque system handle usable from any thread, and `context` is
// only read by the callbacks (through `&`) and freed by `Readiness::stop` after the wait is
// gone; `WaitContext` itself is `Send + Sync`.
unsafe impl Send for Registration {}
// SAFETY: as above; `&Registration` gives no access to the context.
unsafe impl Sync for Registration {}

pub(super) struct Readiness {
    registrations: Vec<Registration>,
    shared: Arc<Shared>,
    /// Whether any event announces room to send.
    has_tx: bool,
}

/// The receive sources that fired (nothing to clear: the callback reset them).
pub(super) struct RxReady {
    mask: u64,
}

impl RxReady {
    pub(super) fn mask(&self) -> u64 {
        self.mask
    }

    pub(super) fn clear(self) {}
}

/// The callback of every registered wait (`WAITORTIMERCALLBACK`).
unsafe extern "system" fn fired(context: *mut c_void, _timed_out: bool) {
    // SAFETY: `context` is the `WaitContext` registered with this wait; `Readiness::stop`
    // frees it only after `UnregisterWaitEx(.., INVALID_HANDLE_VALUE)` returned, which waits
    // for running callbacks and prevents new ones.
    let c = unsafe { &*(context as *const WaitContext) };
    if let Some(event) = c.reset {
        // Before anyone looks at the socket, so what arrives later sets it again.
        // SAFETY: the backend keeps the event open until after the wait is unregistered.
        unsafe { ResetEvent(event as HANDLE) };
    }
    if c.rx {
        c.shared.rx_fired.fetch_or(c.bit, Ordering::AcqRel);
        if let Some(w) = lock(&c.shared.rx_waker).take() {
            w.wake();
        }
    }
    if c.tx {
        c.shared.tx_epoch.fetch_add(1, Ordering::AcqRel);
        let wakers = std::mem::take(&mut *lock(&c.shared.tx_wakers));
        for w in wakers {
            w.wake();
        }
    }
}

impl Readiness {
    /// Registers a wait on each of the backend's events.
    pub(super) fn new(datapath: &dyn Datapath) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let mut this = Self {
            registrations: Vec::new(),
            shared: shared.clone(),
            has_tx: false,
        };
        for (i, e) in datapath
            .poll_events()
            .into_iter()
            .take(MAX_SOURCES)
            .enumerate()
        {
            let context = Box::into_raw(Box::new(WaitContext {
                shared: shared.clone(),
                bit: 1 << i,
                rx: e.rx,
                tx: e.tx.is_some(),
                reset: e.manual_reset.then_some(e.handle as usize),
            }));
            let mut wait: HANDLE = std::ptr::null_mut();
            // SAFETY: `e.handle` is an event the backend keeps open until after `stop`;
            // `context` stays valid until `stop` unregistered the wait (see `fired`). The
            // callback runs in the wait thread and only sets atomics and wakes wakers.
            let ok = unsafe {
                RegisterWaitForSingleObject(
                    &mut wait,
                    e.handle,
                    Some(fired),
                    context as *const c_void,
                    INFINITE,
                    WT_EXECUTEINWAITTHREAD,
                )
            };
            if ok == 0 {
                let err = io::Error::last_os_error();
                // SAFETY: not registered, so no callback can hold it.
                drop(unsafe { Box::from_raw(context) });
                this.stop();
                return Err(err);
            }
            this.has_tx |= e.tx.is_some();
            this.registrations.push(Registration {
                wait: wait as usize,
                context,
            });
        }
        Ok(this)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.registrations.is_empty()
    }

    /// Takes note of the events that fired. The task's waker is stored first, so an event
    /// that fires after the look wakes it.
    pub(super) fn poll_rx(&self, cx: &mut Context<'_>) -> io::Result<RxReady> {
        {
            let mut w = lock(&self.shared.rx_waker);
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        let mask = self.shared.rx_fired.swap(0, Ordering::AcqRel);
        Ok(RxReady { mask })
    }

    /// A mark for [`Readiness::tx_ready`], taken when a transmit is refused: an event that
    /// fires after it counts, even if it fires before the wait starts.
    pub(super) fn tx_mark(&self) -> u64 {
        self.shared.tx_epoch.load(Ordering::Acquire)
    }

    /// Waits until an event announcing room to send fired after `mark`.
    pub(super) async fn tx_ready(&self, mark: u64) -> io::Result<()> {
        if !self.has_tx {
            return Ok(());
        }
        std::future::poll_fn(|cx| {
            let moved = || self.shared.tx_epoch.load(Ordering::Acquire) != mark;
            if moved() {
                return Poll::Ready(Ok(()));
            }
            {
                let mut wakers = lock(&self.shared.tx_wakers);
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
            }
            // It may have fired while the waker was being stored.
            if moved() {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Unregisters every wait, waiting for callbacks that are running, then frees their
    /// contexts. Called before the backend closes its events; idempotent.
    pub(super) fn stop(&mut self) {
        for r in self.registrations.drain(..) {
            // SAFETY: `r.wait` came from RegisterWaitForSingleObject and is unregistered once
            // (drained); INVALID_HANDLE_VALUE makes the call wait for running callbacks.
            let ok = unsafe { UnregisterWaitEx(r.wait as HANDLE, INVALID_HANDLE_VALUE) };
            if ok == 0 {
                // The wait may still call back: leak its context rather than free it under it.
                tracing::error!(
                    error = %io::Error::last_os_error(),
                    "quinn socket: UnregisterWaitEx failed; its context is leaked"
                );
                continue;
            }
            // SAFETY: the wait is gone and no callback runs: nothing else refers to it.
            drop(unsafe { Box::from_raw(r.context) });
        }
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        self.stop();
    }
}
