//! Problems logged while they happen. Each worker looks at its backend's counters at every
//! tick (every 250 ms, off the packet path) and, for the counters that only move when
//! something is wrong, logs a line naming the likely cause and the fix: at once the first
//! time, then at most once per [`INTERVAL`] per counter with the count since the last line.
//! The XDP backend's parse drops have their own live log (`datapath::xdp::drops`).

use std::time::{Duration, Instant};

/// The shortest time between two lines about one counter.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// A counter that moves only when something is wrong, with what to tell the operator.
struct Problem {
    counter: &'static str,
    what: &'static str,
    advice: &'static str,
}

const PROBLEMS: &[Problem] = &[
    // Any backend.
    Problem {
        counter: "tx_no_socket",
        what: "transmits dropped: no socket of the destination's address family on the port",
        advice: "listen on an address of that family too (or on [::] for both)",
    },
    Problem {
        counter: "tx_errors",
        what: "sends the kernel refused",
        advice: "check routes, firewall rules and that the interface is up (errno at debug \
                 level)",
    },
    Problem {
        counter: "rx_errors",
        what: "receive errors from the kernel",
        advice: "errno at debug level; ICMP errors from unreachable peers show up here too",
    },
    Problem {
        counter: "tx_too_big",
        what: "datagrams dropped as larger than the interface or frame allows",
        advice: "lower transport.max_udp_payload_size below the interface MTU (minus the VLAN \
                 tag with xdp.vlan)",
    },
    // io_uring and sockets.
    Problem {
        counter: "rx_socket_drops",
        what: "datagrams the kernel dropped on a full socket receive buffer",
        advice: "the worker cannot keep up: add workers (server.workers), or raise \
                 net.core.rmem_max",
    },
    Problem {
        counter: "rx_no_buffers",
        what: "receives stalled on an empty provided-buffer ring",
        advice: "raise io_uring.buffers",
    },
    Problem {
        counter: "tx_emsgsize",
        what: "sends refused as too large (EMSGSIZE)",
        advice: "lower transport.max_udp_payload_size below the path MTU",
    },
    // XDP.
    Problem {
        counter: "prog_no_socket",
        what: "datagrams for us arrived on an RX queue no AF_XDP socket serves and went to the \
               kernel",
        advice: "serve every RX queue (leave xdp.queues empty), or steer the traffic to the \
                 served queues with `ethtool -N`",
    },
    Problem {
        counter: "prog_oversize",
        what: "frames larger than a UMEM frame went to the kernel (GRO/GSO super-packets in SKB \
               mode)",
        advice: "use xdp.attach = \"driver\", or turn GRO off on the interface (`ethtool -K IF \
                 gro off`)",
    },
    Problem {
        counter: "xsk_rx_dropped",
        what: "frames the kernel dropped before an AF_XDP socket (XDP_STATISTICS rx_dropped)",
        advice: "the worker cannot keep up: add workers or queues, or raise xdp.frames",
    },
    Problem {
        counter: "xsk_rx_ring_full",
        what: "frames dropped on a full AF_XDP RX ring",
        advice: "the worker cannot keep up: raise xdp.ring_size, or add workers and queues",
    },
    Problem {
        counter: "xsk_rx_fill_ring_empty",
        what: "frames dropped on an empty fill ring (no free UMEM frame)",
        advice: "raise xdp.frames",
    },
    Problem {
        counter: "kernel_tx_errors",
        what: "sends through the kernel socket (unresolved next hops, transmit = kernel) refused",
        advice: "check routes and firewall rules (errno at debug level)",
    },
    Problem {
        counter: "neighbor_netlink_errors",
        what: "errors on the netlink socket that mirrors routes and neighbours (it re-reads \
               them)",
        advice: "persistent errors mean the next hops may be stale: check the log for the errno",
    },
];

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// The counter's value at the last look.
    value: u64,
    /// Its value at the last line logged (or at start).
    reported: u64,
    last: Option<Instant>,
}

/// One worker's view of its backend's problem counters.
#[derive(Debug)]
pub struct LiveProblems {
    worker: usize,
    seen: Vec<Seen>,
}

impl LiveProblems {
    pub fn new(worker: usize) -> Self {
        Self {
            worker,
            seen: vec![Seen::default(); PROBLEMS.len()],
        }
    }

    /// Looks at `counters` (the backend's, by name) at `now`; logs what moved and is due.
    /// Returns the names logged.
    pub fn check(&mut self, counters: &[(&'static str, u64)], now: Instant) -> Vec<&'static str> {
        let mut logged = Vec::new();
        for (problem, seen) in PROBLEMS.iter().zip(&mut self.seen) {
            let Some(&(_, value)) = counters.iter().find(|(n, _)| *n == problem.counter) else {
                continue;
            };
            seen.value = value;
            let new = value.saturating_sub(seen.reported);
            if new == 0 || seen.last.is_some_and(|t| now.duration_since(t) < INTERVAL) {
                continue;
            }
            let first = seen.last.is_none();
            tracing::warn!(
                worker = self.worker,
                counter = problem.counter,
                count = new,
                total = value,
                "{} ({}): {}",
                problem.what,
                if first {
                    "first seen"
                } else {
                    "since the last report"
                },
                problem.advice
            );
            seen.reported = value;
            seen.last = Some(now);
            logged.push(problem.counter);
        }
        logged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_at_once_then_at_most_every_interval_with_the_count_since() {
        let mut live = LiveProblems::new(0);
        let t0 = Instant::now();
        let quiet = [("rx_datagrams", 10), ("tx_too_big", 0)];
        assert!(live.check(&quiet, t0).is_empty(), "nothing wrong yet");
        let one = [("rx_datagrams", 20), ("tx_too_big", 1)];
        assert_eq!(
            live.check(&one, t0),
            ["tx_too_big"],
            "the first one at once"
        );
        let more = [("tx_too_big", 5)];
        assert!(
            live.check(&more, t0 + Duration::from_secs(1)).is_empty(),
            "rate-limited"
        );
        assert_eq!(
            live.check(&more, t0 + INTERVAL + Duration::from_millis(1)),
            ["tx_too_big"],
            "due again, with the 4 since"
        );
        assert!(
            live.check(&more, t0 + 3 * INTERVAL).is_empty(),
            "no new drops, no line"
        );
    }

    #[test]
    fn only_problem_counters_are_watched() {
        let mut live = LiveProblems::new(1);
        let busy = [
            ("rx_datagrams", 1_000),
            ("tx_frames", 900),
            ("prog_redirected", 5),
        ];
        assert!(live.check(&busy, Instant::now()).is_empty());
        let names: Vec<_> = PROBLEMS.iter().map(|p| p.counter).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "each counter once");
    }
}
