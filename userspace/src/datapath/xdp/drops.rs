//! Drops logged while they happen: the first of each reason at once, then at most one line
//! per reason every [`INTERVAL`] with the count since the last line, each naming the likely
//! cause and the fix. Counters count every drop; this only makes them visible in time.

use std::time::{Duration, Instant};

use crate::wire::ParseError;

/// The shortest time between two lines for one reason.
pub const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Clone, Copy)]
struct Reason {
    last: Option<Instant>,
    /// Drops since the last line.
    pending: u64,
}

/// One slot per [`ParseError`] reason.
#[derive(Debug)]
pub struct DropLog {
    interface: String,
    reasons: [Reason; ParseError::COUNT],
}

impl DropLog {
    pub fn new(interface: &str) -> Self {
        Self {
            interface: interface.into(),
            reasons: [Reason::default(); ParseError::COUNT],
        }
    }

    /// Notes one drop; logs when the reason's line is due. Reads the clock only here, on the
    /// drop path.
    pub fn note(&mut self, reason: ParseError) {
        self.note_at(reason, Instant::now());
    }

    /// [`DropLog::note`] at `now`; returns whether a line was logged.
    pub fn note_at(&mut self, reason: ParseError, now: Instant) -> bool {
        let r = &mut self.reasons[reason.index()];
        r.pending += 1;
        if r.last.is_some_and(|t| now.duration_since(t) < INTERVAL) {
            return false;
        }
        let count = std::mem::take(&mut r.pending);
        let first = r.last.is_none();
        r.last = Some(now);
        tracing::warn!(
            interface = %self.interface,
            reason = reason.name(),
            count,
            "dropping received frames ({}): {}",
            if first { "first seen" } else { "since the last report" },
            advice(reason)
        );
        true
    }
}

/// The likely cause of a drop, and what to do about it.
pub fn advice(reason: ParseError) -> &'static str {
    match reason {
        ParseError::BadUdpChecksum => {
            "UDP checksums are wrong. If the sender is a veth peer (a container's interface) \
             with TX checksum offload on, its kernel leaves only a partial checksum: set \
             `xdp.rx_checksum = \"trust-offload\"` (`auto` does so when the interface is a \
             veth) or turn offload off on the sender (`ethtool -K IF tx off`); otherwise the \
             frames are corrupted on the way"
        }
        ParseError::MissingUdpChecksum => {
            "IPv6 UDP datagrams without a checksum (not allowed by RFC 8200): a broken sender"
        }
        ParseError::BadIpChecksum => "IPv4 header checksums are wrong: frames corrupted on the way",
        ParseError::Fragment | ParseError::Ipv6ExtensionHeader => {
            "IP fragments or IPv6 extension headers reached AF_XDP although the XDP program \
             passes them to the kernel: the program and quixd disagree (reload quixd)"
        }
        _ => {
            "malformed frames for a served port (a broken or hostile sender); they are \
             counted and otherwise ignored"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_drop_logs_then_one_line_per_interval_with_the_count() {
        let mut log = DropLog::new("eth0");
        let t0 = Instant::now();
        assert!(log.note_at(ParseError::BadUdpChecksum, t0));
        for i in 1..100 {
            assert!(!log.note_at(ParseError::BadUdpChecksum, t0 + Duration::from_millis(i)));
        }
        // Another reason has its own slot.
        assert!(log.note_at(ParseError::Truncated, t0));
        let r = log.reasons[ParseError::BadUdpChecksum.index()];
        assert_eq!(r.pending, 99);
        assert!(log.note_at(ParseError::BadUdpChecksum, t0 + INTERVAL));
        let r = log.reasons[ParseError::BadUdpChecksum.index()];
        assert_eq!(r.pending, 0);
        assert_eq!(r.last, Some(t0 + INTERVAL));
    }

    #[test]
    fn every_reason_has_advice() {
        for reason in ParseError::ALL {
            assert!(!advice(reason).is_empty());
        }
        assert!(advice(ParseError::BadUdpChecksum).contains("rx_checksum"));
    }
}
