//! The load generator: a quinn client speaking quinn's perf protocol (a bidirectional stream:
//! big-endian u64 download size, upload bytes, FIN; the server answers with that many bytes).
//!
//! It offers a fixed load (bytes/s, requests/s or connections/s; 0 = as fast as it can),
//! warms up, then measures a window: units completed inside the window, latencies of requests
//! completed inside it, and CPU counters sampled at its edges. Every loop stops by itself at
//! the end of the window; the caller bounds the process as a whole too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::sys::{self, CpuSample};
use super::{net, quic};

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
/// Latencies kept at most (memory bound).
pub const MAX_LATENCIES: usize = 4_000_000;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// One connection, one stream, the server sends; `rate` in bytes/s.
    Download,
    /// One connection, one stream, the client sends; `rate` in bytes/s.
    Upload,
    /// `connections` connections with up to `streams` requests in flight each; `rate` in
    /// requests/s.
    Requests,
    /// A new connection per request, up to `streams` in flight; `rate` in connections/s.
    Handshakes,
    /// No QUIC: UDP datagrams of `response_size` bytes to an echo server; `rate` in
    /// datagrams/s (see `raw.rs`).
    RawEcho,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSpec {
    pub pattern: Pattern,
    pub server: SocketAddr,
    pub bind: SocketAddr,
    /// Directory with cert.pem (trusted by the client).
    pub cert_dir: PathBuf,
    /// The quixd config: the client mirrors its transport settings.
    pub config: PathBuf,
    pub warmup_ms: u64,
    pub window_ms: u64,
    /// Offered load (see [`Pattern`]); 0 = unlimited (closed loop).
    pub rate: f64,
    pub connections: usize,
    pub streams: usize,
    /// Bytes the server sends per request.
    pub response_size: u64,
    /// Bytes the client uploads per request (after the 8-byte header).
    pub upload_size: u64,
    /// The server process, whose own CPU time is sampled too (not for the floor).
    pub server_pid: Option<u32>,
    /// The server side's NAPI kthreads, whose CPU time is sampled too.
    #[serde(default)]
    pub server_napi_pids: Vec<i32>,
    /// The floor's link: one-way delay (and delivery tick) to the server and to the client,
    /// microseconds.
    #[serde(default)]
    pub floor_to_server_us: u64,
    #[serde(default)]
    pub floor_to_client_us: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub window_s: f64,
    /// Payload bytes moved in the measured direction(s) inside the window.
    pub bytes: u64,
    pub requests: u64,
    pub handshakes: u64,
    /// Raw scenario: datagrams echoed back inside the window, and datagrams sent in it.
    #[serde(default)]
    pub packets: u64,
    #[serde(default)]
    pub packets_sent: u64,
    pub errors: u64,
    /// Requests the schedule wanted to start but could not (too many waiting).
    pub skipped: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    /// CPU 0 (server) and CPU 1 (client) over the window, from /proc/stat.
    pub server_cpu: CpuSample,
    pub client_cpu: CpuSample,
    /// The load generator's own CPU time over the window.
    pub client_process_cpu_s: f64,
    /// The floor's server thread CPU time over the window (floor only).
    pub server_thread_cpu_s: Option<f64>,
    /// The server process's own CPU time over the window (user + system, all threads).
    pub server_process_cpu_s: Option<f64>,
    /// The server side's NAPI kthreads' CPU time over the window (schedstat, nanoseconds;
    /// /proc/PID/stat ticks where schedstat is missing).
    #[serde(default)]
    pub server_napi_cpu_s: f64,
    /// Run time of the server process's threads over the window, from schedstat
    /// (nanoseconds); `None` where schedstat is missing.
    #[serde(default)]
    pub server_tasks_cpu_s: Option<f64>,
    /// What the client's quinn connections counted over the window (not for handshakes).
    #[serde(default)]
    pub link: Option<LinkStats>,
    /// Which load generator produced this report.
    #[serde(default)]
    pub generator: String,
    pub first_error: Option<String>,
}

/// Packets and ACK frames over the window, as the client's quinn connections counted them:
/// the server received what the client sent and sent what the client received. Every server
/// faces the same client, so these compare like for like (the floor's in-memory path too).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LinkStats {
    /// UDP datagrams the client sent (the server received).
    pub datagrams_to_server: u64,
    /// UDP datagrams the client received (the server sent).
    pub datagrams_from_server: u64,
    /// ACK frames the client sent (the server received).
    pub acks_to_server: u64,
    /// ACK frames the client received (the server sent).
    pub acks_from_server: u64,
}

impl LinkStats {
    fn of(conns: &[quinn::Connection]) -> LinkStats {
        let mut l = LinkStats::default();
        for c in conns {
            let s = c.stats();
            l.datagrams_to_server += s.udp_tx.datagrams;
            l.datagrams_from_server += s.udp_rx.datagrams;
            l.acks_to_server += s.frame_tx.acks;
            l.acks_from_server += s.frame_rx.acks;
        }
        l
    }

    fn delta(&self, earlier: &LinkStats) -> LinkStats {
        LinkStats {
            datagrams_to_server: self.datagrams_to_server - earlier.datagrams_to_server,
            datagrams_from_server: self.datagrams_from_server - earlier.datagrams_from_server,
            acks_to_server: self.acks_to_server - earlier.acks_to_server,
            acks_from_server: self.acks_from_server - earlier.acks_from_server,
        }
    }
}

/// What is sampled at the edges of the window.
#[derive(Clone)]
pub struct Meter {
    pub server_thread_clock: Option<libc::clockid_t>,
    pub server_pid: Option<u32>,
    pub napi_pids: Vec<i32>,
}

#[derive(Clone, Copy)]
pub struct Sample {
    cpu0: CpuSample,
    cpu1: CpuSample,
    process: f64,
    thread: Option<f64>,
    server_process: Option<f64>,
    server_tasks: Option<f64>,
    napi: f64,
}

impl Meter {
    pub fn sample(&self) -> Sample {
        Sample {
            cpu0: sys::cpu_sample(net::SERVER_CPU).unwrap_or_default(),
            cpu1: sys::cpu_sample(net::CLIENT_CPU).unwrap_or_default(),
            process: sys::self_cpu(),
            thread: self.server_thread_clock.map(sys::clock_seconds),
            server_process: self.server_pid.and_then(sys::process_cpu),
            server_tasks: self
                .server_pid
                .and_then(sys::task_runtime_ns)
                .map(|ns| ns as f64 * 1e-9),
            napi: self
                .napi_pids
                .iter()
                .filter_map(|p| {
                    sys::task_runtime_ns(*p as u32)
                        .map(|ns| ns as f64 * 1e-9)
                        .or_else(|| sys::process_cpu(*p as u32))
                })
                .sum(),
        }
    }
}

struct Stats {
    window_start: Instant,
    window_end: Instant,
    bytes: AtomicU64,
    requests: AtomicU64,
    handshakes: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    latencies: Mutex<Vec<u32>>,
    first_error: Mutex<Option<String>>,
    /// Long-lived connections whose packet and ACK counts are sampled at the window edges.
    conns: Mutex<Vec<quinn::Connection>>,
}

impl Stats {
    fn watch(&self, conn: &quinn::Connection) {
        self.conns.lock().unwrap().push(conn.clone());
    }
    fn link(&self) -> Option<LinkStats> {
        let conns = self.conns.lock().unwrap();
        (!conns.is_empty()).then(|| LinkStats::of(&conns))
    }
    fn in_window(&self, t: Instant) -> bool {
        t >= self.window_start && t < self.window_end
    }
    fn add_bytes(&self, n: u64) {
        if self.in_window(Instant::now()) {
            self.bytes.fetch_add(n, Ordering::Relaxed);
        }
    }
    fn error(&self, e: impl std::fmt::Display) {
        if Instant::now() < self.window_end {
            self.errors.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap();
            if first.is_none() {
                *first = Some(e.to_string());
            }
        }
    }
    /// A request that started at (or was scheduled for) `start` completed now.
    fn request_done(&self, start: Instant, bytes: u64, handshake: bool) {
        let now = Instant::now();
        if !self.in_window(now) {
            return;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if handshake {
            self.handshakes.fetch_add(1, Ordering::Relaxed);
        }
        let us = (now - start).as_micros().min(u32::MAX as u128) as u32;
        let mut l = self.latencies.lock().unwrap();
        if l.len() < MAX_LATENCIES {
            l.push(us);
        }
    }
}

/// The client process (`xtask bench client SPEC`): a UDP socket in this namespace, the run,
/// the report as one JSON line on stdout.
pub fn client_main(spec_json: &str) -> Result<()> {
    let spec: LoadSpec = serde_json::from_str(spec_json).context("bad load spec")?;
    let meter = Meter {
        server_thread_clock: None,
        server_pid: spec.server_pid,
        napi_pids: spec.server_napi_pids.clone(),
    };
    if spec.pattern == Pattern::RawEcho {
        let report = super::raw::client(&spec, &meter)?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let socket = std::net::UdpSocket::bind(spec.bind)
            .with_context(|| format!("binding {}", spec.bind))?;
        force_buffers(&socket);
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        run(&spec, endpoint, meter).await
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Large socket buffers on the client (root may exceed rmem_max), so the load generator
/// drops nothing itself.
pub fn force_buffers(socket: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 8 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: a valid socket fd and a c_int option value.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Runs one load on `endpoint` (a client endpoint on a real socket or on the floor's memory
/// link) and reports it.
pub async fn run(spec: &LoadSpec, endpoint: quinn::Endpoint, meter: Meter) -> Result<LoadReport> {
    let config = quixd::config::Config::load(&spec.config)?;
    let cert = quic::read_cert_der(&spec.cert_dir)?;
    let client = quic::client_config(cert, &config.transport)?;
    let mut endpoint = endpoint;
    endpoint.set_default_client_config(client);

    let start = Instant::now();
    let window_start = start + Duration::from_millis(spec.warmup_ms);
    let window_end = window_start + Duration::from_millis(spec.window_ms);
    let stats = Arc::new(Stats {
        window_start,
        window_end,
        bytes: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        handshakes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        latencies: Mutex::new(Vec::new()),
        first_error: Mutex::new(None),
        conns: Mutex::new(Vec::new()),
    });

    let meter_stats = stats.clone();
    let meter_task = tokio::spawn(async move {
        tokio::time::sleep_until(window_start.into()).await;
        let a = meter.sample();
        let link_a = meter_stats.link();
        let a_time = Instant::now();
        tokio::time::sleep_until(window_end.into()).await;
        let b = meter.sample();
        let link_b = meter_stats.link();
        let link = match (link_a, link_b) {
            (Some(x), Some(y)) => Some(y.delta(&x)),
            _ => None,
        };
        (a, b, Instant::now() - a_time, link)
    });

    let load = {
        let endpoint = endpoint.clone();
        let spec = spec.clone();
        let stats = stats.clone();
        async move {
            match spec.pattern {
                Pattern::Download => download(&endpoint, &spec, &stats).await,
                Pattern::Upload => upload(&endpoint, &spec, &stats).await,
                Pattern::Requests => requests(&endpoint, &spec, &stats).await,
                Pattern::Handshakes => handshakes(&endpoint, &spec, &stats).await,
                Pattern::RawEcho => Err(anyhow::anyhow!("the raw scenario has no QUIC client")),
            }
        }
    };
    // A task of its own, not the runtime's main future: a current-thread runtime polls its
    // main future only between batches of tasks, which starves it when the floor's socket
    // polls (re-schedules itself) all the time.
    let load = tokio::spawn(load);
    // Bounded: the load loops end at window_end; allow set-up and a little drain time.
    let limit = window_end + Duration::from_secs(10);
    match tokio::time::timeout_at(limit.into(), load).await {
        Ok(Ok(Err(e))) => stats.error(format!("{e:#}")),
        Ok(Err(e)) => stats.error(format!("load task failed: {e}")),
        Err(_) => stats.error("load did not stop in time"),
        Ok(Ok(Ok(()))) => {}
    }
    let (a, b, elapsed, link) = meter_task.await?;
    endpoint.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;

    let mut lat = std::mem::take(&mut *stats.latencies.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| percentile(&lat, p);
    let first_error = stats.first_error.lock().unwrap().clone();
    Ok(LoadReport {
        bytes: stats.bytes.load(Ordering::Relaxed),
        requests: stats.requests.load(Ordering::Relaxed),
        handshakes: stats.handshakes.load(Ordering::Relaxed),
        errors: stats.errors.load(Ordering::Relaxed),
        skipped: stats.skipped.load(Ordering::Relaxed),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        first_error,
        link,
        generator: GENERATOR.into(),
        ..LoadReport::with_cpu(&a, &b, elapsed)
    })
}

/// This module's name for itself in reports.
pub const GENERATOR: &str = "quixd's load generator (xtask bench client)";

impl LoadReport {
    /// A report holding only the CPU figures between two samples taken `elapsed` apart.
    pub fn with_cpu(a: &Sample, b: &Sample, elapsed: Duration) -> LoadReport {
        LoadReport {
            window_s: elapsed.as_secs_f64(),
            server_cpu: b.cpu0.delta(&a.cpu0),
            client_cpu: b.cpu1.delta(&a.cpu1),
            client_process_cpu_s: b.process - a.process,
            server_thread_cpu_s: match (a.thread, b.thread) {
                (Some(x), Some(y)) => Some(y - x),
                _ => None,
            },
            server_napi_cpu_s: b.napi - a.napi,
            server_process_cpu_s: match (a.server_process, b.server_process) {
                (Some(x), Some(y)) => Some(y - x),
                _ => None,
            },
            server_tasks_cpu_s: match (a.server_tasks, b.server_tasks) {
                (Some(x), Some(y)) => Some(y - x),
                _ => None,
            },
            ..LoadReport::default()
        }
    }
}

/// The `p`-quantile of sorted `lat`, if any.
pub fn percentile(lat: &[u32], p: f64) -> Option<f64> {
    if lat.is_empty() {
        return None;
    }
    let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
    Some(lat[i] as f64)
}

async fn connect(endpoint: &quinn::Endpoint, spec: &LoadSpec) -> Result<quinn::Connection> {
    let conn = endpoint
        .connect(spec.server, quic::SERVER_NAME)?
        .await
        .context("handshake")?;
    Ok(conn)
}

/// Sleeps until `done` units are due at `rate` units/s since `start`.
async fn pace(start: Instant, done: f64, rate: f64) {
    if rate > 0.0 {
        let due = start + Duration::from_secs_f64(done / rate);
        if due > Instant::now() + Duration::from_micros(500) {
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

async fn download(endpoint: &quinn::Endpoint, spec: &LoadSpec, stats: &Stats) -> Result<()> {
    let conn = connect(endpoint, spec).await?;
    stats.watch(&conn);
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&(u64::MAX >> 2).to_be_bytes()).await?;
    send.finish()?;
    let start = Instant::now();
    let mut total = 0u64;
    while Instant::now() < stats.window_end {
        let chunk =
            match tokio::time::timeout_at(stats.window_end.into(), recv.read_chunk(1 << 20, true))
                .await
            {
                Err(_) => break,
                Ok(r) => r?,
            };
        let Some(chunk) = chunk else { break };
        let n = chunk.bytes.len() as u64;
        total += n;
        stats.add_bytes(n);
        pace(start, total as f64, spec.rate).await;
    }
    conn.close(0u32.into(), b"done");
    Ok(())
}

async fn upload(endpoint: &quinn::Endpoint, spec: &LoadSpec, stats: &Stats) -> Result<()> {
    let conn = connect(endpoint, spec).await?;
    stats.watch(&conn);
    let (mut send, _recv) = conn.open_bi().await?;
    send.write_all(&0u64.to_be_bytes()).await?;
    let start = Instant::now();
    let mut total = 0u64;
    let chunk = 16 * 1024;
    while Instant::now() < stats.window_end {
        match tokio::time::timeout_at(
            stats.window_end.into(),
            send.write_chunk(Bytes::from_static(&ZEROS[..chunk])),
        )
        .await
        {
            Err(_) => break,
            Ok(r) => r?,
        }
        total += chunk as u64;
        stats.add_bytes(chunk as u64);
        pace(start, total as f64, spec.rate).await;
    }
    let _ = send.finish();
    conn.close(0u32.into(), b"done");
    Ok(())
}

/// One perf request on `conn`; returns the response bytes.
async fn request(conn: &quinn::Connection, spec: &LoadSpec) -> Result<u64> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&spec.response_size.to_be_bytes()).await?;
    let mut left = spec.upload_size;
    while left > 0 {
        let n = left.min(ZEROS.len() as u64) as usize;
        send.write_chunk(Bytes::from_static(&ZEROS[..n])).await?;
        left -= n as u64;
    }
    send.finish()?;
    let mut got = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        got += chunk.bytes.len() as u64;
    }
    Ok(got)
}

async fn requests(endpoint: &quinn::Endpoint, spec: &LoadSpec, stats: &Arc<Stats>) -> Result<()> {
    let mut conns = Vec::new();
    for _ in 0..spec.connections.max(1) {
        let conn = connect(endpoint, spec).await?;
        stats.watch(&conn);
        conns.push(conn);
    }
    let spec = Arc::new(spec.clone());
    let slots: Vec<Arc<Semaphore>> = conns
        .iter()
        .map(|_| Arc::new(Semaphore::new(spec.streams.max(1))))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    if spec.rate > 0.0 {
        // Open loop: request i is due at start + i/rate. Its latency counts from when the
        // schedule issued it (waiting for a free stream slot included; the timer's own
        // millisecond granularity excluded).
        let waiting_limit = (conns.len() * spec.streams.max(1) * 4) as u64;
        let waiting = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut i = 0u64;
        loop {
            let due = start + Duration::from_secs_f64(i as f64 / spec.rate);
            if due >= stats.window_end {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            let issued = Instant::now();
            let c = (i as usize) % conns.len();
            i += 1;
            if waiting.load(Ordering::Relaxed) >= waiting_limit {
                if stats.in_window(due) {
                    stats.skipped.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            waiting.fetch_add(1, Ordering::Relaxed);
            let (conn, slot, spec, stats, waiting) = (
                conns[c].clone(),
                slots[c].clone(),
                spec.clone(),
                stats.clone(),
                waiting.clone(),
            );
            tasks.spawn(async move {
                let _permit = slot.acquire_owned().await;
                match request(&conn, &spec).await {
                    Ok(n) => stats.request_done(issued, n, false),
                    Err(e) => stats.error(format!("{e:#}")),
                }
                waiting.fetch_sub(1, Ordering::Relaxed);
            });
            // Reap finished tasks so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
    } else {
        // Closed loop: every slot issues requests back to back.
        for (c, conn) in conns.iter().enumerate() {
            for _ in 0..spec.streams.max(1) {
                let (conn, spec, stats) = (conn.clone(), spec.clone(), stats.clone());
                let _ = c;
                tasks.spawn(async move {
                    while Instant::now() < stats.window_end {
                        let t = Instant::now();
                        match request(&conn, &spec).await {
                            Ok(n) => stats.request_done(t, n, false),
                            Err(e) => {
                                stats.error(format!("{e:#}"));
                                break;
                            }
                        }
                    }
                });
            }
        }
    }
    let _ = tokio::time::timeout_at((stats.window_end + Duration::from_secs(2)).into(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    for conn in conns {
        conn.close(0u32.into(), b"done");
    }
    Ok(())
}

/// A new connection per request: handshake, one request, close.
async fn one_connection(endpoint: &quinn::Endpoint, spec: &LoadSpec) -> Result<u64> {
    let conn = connect(endpoint, spec).await?;
    let n = request(&conn, spec).await?;
    conn.close(0u32.into(), b"done");
    Ok(n)
}

async fn handshakes(endpoint: &quinn::Endpoint, spec: &LoadSpec, stats: &Arc<Stats>) -> Result<()> {
    let spec = Arc::new(spec.clone());
    let in_flight = Arc::new(Semaphore::new(spec.streams.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    let mut i = 0u64;
    loop {
        let due = if spec.rate > 0.0 {
            start + Duration::from_secs_f64(i as f64 / spec.rate)
        } else {
            Instant::now()
        };
        if due >= stats.window_end {
            break;
        }
        i += 1;
        let permit = if spec.rate > 0.0 {
            tokio::time::sleep_until(due.into()).await;
            match in_flight.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if stats.in_window(due) {
                        stats.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
            }
        } else {
            match tokio::time::timeout_at(
                stats.window_end.into(),
                in_flight.clone().acquire_owned(),
            )
            .await
            {
                Ok(Ok(p)) => p,
                _ => break,
            }
        };
        let issued = Instant::now();
        let (endpoint, spec, stats) = (endpoint.clone(), spec.clone(), stats.clone());
        tasks.spawn(async move {
            let _permit = permit;
            match one_connection(&endpoint, &spec).await {
                Ok(n) => stats.request_done(issued, n, true),
                Err(e) => stats.error(format!("{e:#}")),
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout_at((stats.window_end + Duration::from_secs(2)).into(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    Ok(())
}
