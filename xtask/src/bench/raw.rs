//! The raw scenario's load generator: UDP datagrams, no QUIC, to an echo server (`quixd
//! udp-echo` on each backend, or the bare AF_XDP echo in `bare.rs`).
//!
//! Open loop: datagram i is due at start + i/rate; they leave in batches (sendmmsg) on one
//! connected socket and the echoes are read in batches (recvmmsg). Closed loop (rate 0): up to
//! `IN_FLIGHT` datagrams are outstanding at any time; one is sent per echo received. Each datagram carries its
//! sequence number and send time, so an echo gives a round-trip latency. The unit is a datagram
//! echoed back inside the window. Bounded by the window; stops by itself.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::load::{self, LoadReport, LoadSpec, Meter, MAX_LATENCIES};

/// Datagrams per sendmmsg/recvmmsg call.
const BATCH: usize = 64;
/// How long echoes are awaited after the window (not counted; lets the server drain).
const DRAIN: Duration = Duration::from_millis(200);
/// Closed loop: datagrams outstanding at once.
pub const IN_FLIGHT: u64 = 256;
/// Closed loop: with no echo for this long, the outstanding datagrams are taken as lost.
const LOST_AFTER: Duration = Duration::from_millis(20);

/// Runs the raw load in the calling process and reports it.
pub fn client(spec: &LoadSpec, meter: &Meter) -> Result<LoadReport> {
    let size = spec.response_size.clamp(16, 1472) as usize;
    let closed = spec.rate <= 0.0;
    let socket = UdpSocket::bind(spec.bind).with_context(|| format!("binding {}", spec.bind))?;
    load::force_buffers(&socket);
    socket.connect(spec.server)?;
    socket.set_nonblocking(true)?;
    let mut io = Batch::new(size);

    let start = Instant::now();
    let window_start = start + Duration::from_millis(spec.warmup_ms);
    let window_end = window_start + Duration::from_millis(spec.window_ms);
    let mut sample_a = None;
    let mut sample_b = None;
    let mut seq = 0u64;
    // Closed loop: echoes received (any time), and datagrams given up as lost.
    let mut echoed = 0u64;
    let mut lost = 0u64;
    let mut last_echo = Instant::now();
    let mut report = LoadReport::default();
    let mut latencies: Vec<u32> = Vec::new();
    let mut first_error: Option<String> = None;
    loop {
        let now = Instant::now();
        if sample_a.is_none() && now >= window_start {
            sample_a = Some((meter.sample(), now));
        }
        if now >= window_end {
            if sample_b.is_none() {
                sample_b = Some((meter.sample(), now));
            }
            if now >= window_end + DRAIN {
                break;
            }
        }
        let in_window = now >= window_start && now < window_end;
        // Send what is due (never after the window).
        if now < window_end {
            if closed && seq > echoed + lost && now - last_echo > LOST_AFTER {
                lost = seq - echoed;
                last_echo = now;
            }
            let due = if closed {
                echoed + lost + IN_FLIGHT
            } else {
                ((now - start).as_secs_f64() * spec.rate) as u64
            };
            while seq < due {
                let n = ((due - seq) as usize).min(BATCH);
                let stamp = (Instant::now() - start).as_nanos() as u64;
                match io.send(&socket, seq, n, stamp) {
                    Ok(sent) => {
                        if in_window {
                            report.packets_sent += sent as u64;
                        }
                        seq += sent as u64;
                        if sent < n {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // The socket is full: the offered load is not delivered; skip
                        // (open loop) and count.
                        if in_window {
                            report.skipped += n as u64;
                        }
                        seq += n as u64;
                    }
                    Err(e) => {
                        report.errors += 1;
                        first_error.get_or_insert_with(|| format!("sendmmsg: {e}"));
                        seq += n as u64;
                    }
                }
            }
        }
        // Read every echo waiting.
        loop {
            let got = match io.recv(&socket) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    report.errors += 1;
                    first_error.get_or_insert_with(|| format!("recvmmsg: {e}"));
                    break;
                }
            };
            let now = Instant::now();
            let counted = now >= window_start && now < window_end;
            let now_ns = (now - start).as_nanos() as u64;
            if got > 0 {
                echoed += got as u64;
                last_echo = now;
            }
            for i in 0..got {
                let Some((_, stamp)) = io.echo(i, size) else {
                    if counted {
                        report.errors += 1;
                        first_error.get_or_insert_with(|| "an echo differed".into());
                    }
                    continue;
                };
                if counted {
                    report.packets += 1;
                    report.bytes += size as u64;
                    if latencies.len() < MAX_LATENCIES {
                        let us = now_ns.saturating_sub(stamp) / 1000;
                        latencies.push(us.min(u32::MAX as u64) as u32);
                    }
                }
            }
            if got < BATCH {
                break;
            }
        }
        // Sleep until the next datagram is due or an echo arrives.
        let next_due = if closed {
            now + LOST_AFTER
        } else {
            start + Duration::from_secs_f64((seq + 1) as f64 / spec.rate)
        };
        let wake = next_due.min(window_end + DRAIN);
        let now = Instant::now();
        if wake > now {
            wait_readable(&socket, wake - now);
        }
    }
    let ((a, a_t), (b, b_t)) = (
        sample_a.context("the window never started")?,
        sample_b.context("the window never ended")?,
    );
    latencies.sort_unstable();
    Ok(LoadReport {
        packets: report.packets,
        packets_sent: report.packets_sent,
        bytes: report.bytes,
        errors: report.errors,
        skipped: report.skipped,
        p50_us: load::percentile(&latencies, 0.50),
        p99_us: load::percentile(&latencies, 0.99),
        p999_us: load::percentile(&latencies, 0.999),
        first_error,
        generator: "quixd's raw load generator (xtask bench client, raw.rs)".into(),
        ..LoadReport::with_cpu(&a, &b, b_t - a_t)
    })
}

/// Blocks until `socket` is readable or `limit` passes (nanosecond timeout: ppoll).
fn wait_readable(socket: &UdpSocket, limit: Duration) {
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: limit.as_secs() as libc::time_t,
        tv_nsec: limit.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

/// Reusable buffers and message headers for sendmmsg/recvmmsg on a connected socket.
struct Batch {
    size: usize,
    tx: Vec<u8>,
    rx: Vec<u8>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new(size: usize) -> Batch {
        Batch {
            size,
            tx: vec![0; size * BATCH],
            // Room for any datagram, so an oversized echo shows as a length mismatch.
            rx: vec![0; 2048 * BATCH],
            iov: Vec::with_capacity(BATCH),
            msgs: Vec::with_capacity(BATCH),
        }
    }

    /// Points the headers at `n` buffers of `stride` bytes each in `buf`.
    fn headers(&mut self, n: usize, rx: bool) {
        let (base, stride, len) = if rx {
            (self.rx.as_mut_ptr(), 2048, 2048)
        } else {
            (self.tx.as_mut_ptr(), self.size, self.size)
        };
        self.iov.clear();
        self.msgs.clear();
        for i in 0..n {
            self.iov.push(libc::iovec {
                // SAFETY: i < BATCH, and both buffers hold BATCH strides.
                iov_base: unsafe { base.add(i * stride) }.cast(),
                iov_len: len,
            });
        }
        for i in 0..n {
            // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut self.iov[i];
            m.msg_hdr.msg_iovlen = 1;
            self.msgs.push(m);
        }
    }

    /// Sends `n` datagrams numbered from `seq`, stamped `stamp_ns`; returns how many left.
    fn send(
        &mut self,
        socket: &UdpSocket,
        seq: u64,
        n: usize,
        stamp_ns: u64,
    ) -> std::io::Result<usize> {
        for i in 0..n {
            let d = &mut self.tx[i * self.size..(i + 1) * self.size];
            d[..8].copy_from_slice(&(seq + i as u64).to_be_bytes());
            d[8..16].copy_from_slice(&stamp_ns.to_be_bytes());
        }
        self.headers(n, false);
        // SAFETY: `msgs` holds n headers pointing into `tx`, alive for the call.
        let rc = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                n as libc::c_uint,
                0,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    /// Receives up to [`BATCH`] datagrams without blocking; returns how many.
    fn recv(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        self.headers(BATCH, true);
        // SAFETY: `msgs` holds BATCH headers pointing into `rx`, alive for the call.
        let rc = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    /// The i-th received echo's (sequence, stamp), if it has the length sent and zero padding.
    fn echo(&self, i: usize, size: usize) -> Option<(u64, u64)> {
        let len = self.msgs[i].msg_len as usize;
        let d = &self.rx[i * 2048..i * 2048 + len];
        if len != size || d[16..].iter().any(|&b| b != 0) {
            return None;
        }
        Some((
            u64::from_be_bytes(d[..8].try_into().ok()?),
            u64::from_be_bytes(d[8..16].try_into().ok()?),
        ))
    }
}
