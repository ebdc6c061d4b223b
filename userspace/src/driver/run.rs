//! The event loop joining a [`Driver`] to a [`Datapath`]: receive a batch, process, send,
//! sleep until the next datagram or timer.

use std::io;
use std::time::{Duration, Instant};

use std::sync::Arc;

use super::handoff::Handoff;
use super::Driver;
use crate::datapath::wake::Doorbell;
use crate::datapath::{Datapath, TxBatch};

/// The longest the loop sleeps, so a stop request is noticed promptly.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// The longest it sleeps when other threads may hand it something (datagrams, file results)
/// and the backend cannot watch for them.
const UNWATCHED_POLL: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Never sleep: poll the datapath continuously.
    pub busy_poll: bool,
    /// How long a graceful shutdown lets open streams finish.
    pub drain_timeout: Duration,
    /// Transmits queued per send call.
    pub tx_batch: usize,
    /// How often the observer given to [`run`] is called.
    pub observe_every: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            busy_poll: false,
            drain_timeout: Duration::from_secs(5),
            tx_batch: 64,
            observe_every: Duration::from_millis(250),
        }
    }
}

/// Runs until `stop` says so and the graceful shutdown completes (or the drain time passes).
/// `stop` is asked once per turn: keep it to a few relaxed loads.
/// Sees the driver and the datapath now and then (see [`run`]): publishes metrics, applies a
/// reloaded certificate.
pub type Observer<'a> = &'a mut dyn FnMut(&mut Driver, &dyn Datapath);

/// `observe`, if given, sees the driver and the datapath at most every `opts.observe_every`
/// and once more at the end (metrics). With `handoff`, datagrams of another worker's
/// connections go to it, and what other workers hand over is served here.
pub fn run(
    driver: &mut Driver,
    datapath: &mut dyn Datapath,
    stop: &dyn Fn() -> bool,
    opts: &RunOptions,
    mut observe: Option<Observer<'_>>,
    mut handoff: Option<&mut Handoff>,
) -> io::Result<()> {
    // One doorbell for everything other threads hand this worker: other workers' datagrams
    // and file results. A backend that cannot watch it is waited on briefly instead.
    let doorbell = match handoff.as_deref() {
        Some(h) => Some(h.doorbell().clone()),
        None if driver.serves_files() => match Doorbell::new() {
            Ok(d) => Some(Arc::new(d)),
            Err(e) => {
                tracing::debug!(error = %e, "no doorbell: file results are polled");
                None
            }
        },
        None => None,
    };
    #[cfg(target_os = "linux")]
    let watched = doorbell.as_ref().is_some_and(|d| datapath.wake_on(d.fd()));
    #[cfg(not(target_os = "linux"))]
    let watched = false;
    if let Some(d) = &doorbell {
        driver.set_doorbell(d.clone());
    }
    let max_sleep = if handoff.is_some() && !watched {
        UNWATCHED_POLL
    } else {
        MAX_SLEEP
    };
    // Each transmit buffer holds a full GSO batch of the largest datagrams.
    let mut tx = TxBatch::new(opts.tx_batch, 64 * 1024);
    let mut full = FullBatchLog::default();
    let mut observed = Instant::now();
    loop {
        let now = Instant::now();
        if let Some(observe) = observe.as_mut() {
            if now.saturating_duration_since(observed) >= opts.observe_every {
                observe(driver, datapath);
                observed = now;
            }
        }
        if stop() {
            driver.begin_shutdown(now, opts.drain_timeout);
        }
        let mut received = match handoff.as_deref_mut() {
            None => datapath.recv(&mut |meta, payload| {
                driver.handle_datagrams(now, meta, payload, &mut tx);
            })?,
            Some(h) => {
                let n = datapath.recv(&mut |meta, payload| {
                    h.route(meta, payload, &mut |meta, payload| {
                        driver.handle_datagrams(now, meta, payload, &mut tx)
                    });
                })?;
                h.flush();
                n
            }
        };
        // Without a doorbell, file results are looked for on every turn (a channel poll).
        if doorbell.as_ref().is_none_or(|d| d.answer()) {
            if let Some(h) = handoff.as_deref_mut() {
                received += h.receive(&mut |meta, payload| {
                    driver.handle_datagrams(now, meta, payload, &mut tx)
                });
            }
            received += driver.collect_files();
        }
        if let Some(h) = handoff.as_deref() {
            driver.note_handoffs(h.counters());
        }
        driver.process(now, &mut tx);
        full.check(now, driver.counters().tx_dropped_full);
        datapath.send(&mut tx)?;
        if driver.is_shut_down() && tx.is_empty() {
            if let Some(observe) = observe.as_mut() {
                observe(driver, datapath);
            }
            return Ok(());
        }
        // A backend that could not take everything is waited on (for room), not spun on.
        let tx_blocked = !tx.is_empty();
        let busy = (received > 0 || driver.has_pending_work()) && !tx_blocked;
        if busy || opts.busy_poll {
            continue;
        }
        let max_sleep = if driver.files_in_flight() > 0 && !watched {
            UNWATCHED_POLL
        } else {
            max_sleep
        };
        let timeout = driver.next_timeout().map_or(max_sleep, |t| {
            t.saturating_duration_since(now).min(max_sleep)
        });
        if !timeout.is_zero() {
            datapath.wait(Some(timeout), tx_blocked)?;
        }
    }
}

/// Logs stateless responses dropped on a full transmit batch while it happens: at once, then
/// at most once per [`FullBatchLog::INTERVAL`] with the count since the last line.
#[derive(Default)]
struct FullBatchLog {
    reported: u64,
    last: Option<Instant>,
}

impl FullBatchLog {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn check(&mut self, now: Instant, dropped: u64) {
        if dropped == self.reported
            || self
                .last
                .is_some_and(|t| now.saturating_duration_since(t) < Self::INTERVAL)
        {
            return;
        }
        tracing::warn!(
            count = dropped - self.reported,
            total = dropped,
            "stateless responses (Retry, refusals, version negotiation, resets) dropped: the \
             transmit batch was full because the backend could not send fast enough (a flood, \
             or a backend stalled on its socket or ring); counted as tx_dropped_full"
        );
        self.reported = dropped;
        self.last = Some(now);
    }
}
