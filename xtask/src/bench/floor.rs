//! The QUIC floor: a quinn-proto server endpoint serving the perf protocol on its own thread
//! (pinned to the server CPU), joined in memory to the load generator's quinn client (pinned
//! to the client CPU). No datapath at all: the server's cost here is the least any datapath
//! under quinn-proto can reach with the same settings.
//!
//! Both ends poll: the client's socket and the server thread never sleep, so no packet costs a
//! wake-up. The floor is charged only the CPU time of its work sections (the thread's CPU clock
//! read around each batch of packets handled, timers run and connections driven: quinn-proto,
//! the perf server and the copy quinn-proto's API forces), not its polling. The glue's own cost
//! is measured too: wall time spent in the channel operations.
//!
//! The link has a path's dynamics, not a function call's: every packet is delivered a one-way
//! delay after it was sent, rounded up to the next tick of a delivery clock of the same period
//! (one per direction), so packets arrive in batches as NAPI hands them over on a real link, and
//! the round trip is of the veth path's order. With a microsecond round trip, quinn-proto acknowledges far more
//! often per byte than it does over veth, and the floor would not be a bound for the same work.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::{Bytes, BytesMut};
use quinn::udp::{RecvMeta, Transmit};
use quinn_proto::{
    ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, Endpoint, Event, StreamEvent, StreamId,
};
use serde::{Deserialize, Serialize};

use super::load::{self, LoadReport, LoadSpec, Meter};
use super::{net, quic, sys};

/// Datagrams per transmit, as quinn asks of quinn-udp with GSO.
const SEGMENTS: usize = 10;
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// A datagram (or a GSO batch of `segment_size` datagrams) on the memory link.
struct Packet {
    data: Vec<u8>,
    segment_size: Option<usize>,
    ecn: Option<EcnCodepoint>,
    /// When the link delivers it.
    due: Instant,
}

/// The link's delay: `one_way` after sending, rounded up to a tick of the same period.
#[derive(Debug, Clone, Copy)]
struct Delay {
    origin: Instant,
    one_way: Duration,
}

impl Delay {
    fn due(&self, now: Instant) -> Instant {
        if self.one_way.is_zero() {
            return now;
        }
        let t = (now + self.one_way - self.origin).as_nanos();
        let tick = self.one_way.as_nanos();
        let ticks = t.div_ceil(tick);
        self.origin + Duration::from_nanos((ticks * tick) as u64)
    }
}

/// Packets the link holds until they are due, in order.
#[derive(Debug, Default)]
struct Line {
    held: std::collections::VecDeque<Packet>,
}

impl Line {
    /// Moves everything the channel has into the line.
    fn fill(&mut self, rx: &Receiver<Packet>) -> bool {
        let mut connected = true;
        loop {
            match rx.try_recv() {
                Ok(p) => self.held.push_back(p),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    connected = false;
                    break;
                }
            }
        }
        connected
    }

    /// The next packet due by `now`.
    fn pop_due(&mut self, now: Instant) -> Option<Packet> {
        if self.held.front().is_some_and(|p| p.due <= now) {
            self.held.pop_front()
        } else {
            None
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.held.front().map(|p| p.due)
    }
}

/// The server thread's work and glue, measured on it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Glue {
    /// CPU seconds of the server thread's work sections (what the floor is charged).
    #[serde(default)]
    pub work_s: f64,
    /// Wall seconds the server thread spent in channel sends and non-blocking receives.
    pub channel_s: f64,
    pub packets_in: u64,
    pub packets_out: u64,
}

#[derive(Default)]
struct GlueCounters {
    work_ns: AtomicU64,
    channel_ns: AtomicU64,
    packets_in: AtomicU64,
    packets_out: AtomicU64,
}

impl GlueCounters {
    fn snapshot(&self) -> Glue {
        Glue {
            work_s: self.work_ns.load(Ordering::Relaxed) as f64 * 1e-9,
            channel_s: self.channel_ns.load(Ordering::Relaxed) as f64 * 1e-9,
            packets_in: self.packets_in.load(Ordering::Relaxed),
            packets_out: self.packets_out.load(Ordering::Relaxed),
        }
    }
}

const SERVER_ADDR: &str = "198.18.255.1:4433";
const CLIENT_ADDR: &str = "198.18.255.2:40000";

/// Runs one load against the floor and reports it, with the glue measured over the window.
pub fn run(spec: &LoadSpec) -> Result<(LoadReport, Glue)> {
    let config = quixd::config::Config::load(&spec.config)?;
    let server_config = Arc::new(quic::server_config(&config, true)?);
    let endpoint_config = Arc::new(quic::endpoint_config(&config)?);
    let retry = config.transport.retry;
    let server_addr: SocketAddr = SERVER_ADDR.parse()?;
    let client_addr: SocketAddr = CLIENT_ADDR.parse()?;

    let origin = Instant::now();
    let to_server_delay = Delay {
        origin,
        one_way: Duration::from_micros(spec.floor_to_server_us),
    };
    let to_client_delay = Delay {
        origin,
        one_way: Duration::from_micros(spec.floor_to_client_us),
    };
    let (to_server, server_rx) = mpsc::channel::<Packet>();
    let (server_tx, from_server) = mpsc::channel::<Packet>();
    let stop = Arc::new(AtomicBool::new(false));
    let glue = Arc::new(GlueCounters::default());
    let (clock_tx, clock_rx) = mpsc::channel();

    let server = {
        let (stop, glue) = (stop.clone(), glue.clone());
        std::thread::Builder::new()
            .name("floor-server".into())
            .spawn(move || -> Result<()> {
                sys::pin(0, net::SERVER_CPU)?;
                sys::precise_timers();
                let _ = clock_tx.send(sys::current_thread_clock());
                let mut server = FloorServer {
                    endpoint: Endpoint::new(endpoint_config, Some(server_config), true, None),
                    conns: HashMap::new(),
                    retry,
                    client_addr,
                    out: server_tx,
                    buf: Vec::new(),
                    glue,
                    delay: to_client_delay,
                };
                server.serve(&server_rx, &stop);
                Ok(())
            })?
    };
    let clock = clock_rx
        .recv_timeout(Duration::from_secs(5))
        .context("floor server thread did not start")?;

    let socket = Arc::new(MemSocket {
        local: client_addr,
        server: server_addr,
        to_server,
        from_server: Mutex::new((from_server, Line::default())),
        delay: to_server_delay,
    });
    let spec = LoadSpec {
        server: server_addr,
        ..spec.clone()
    };
    let glue_at_window = glue.clone();
    let window = (
        Duration::from_millis(spec.warmup_ms),
        Duration::from_millis(spec.window_ms),
    );
    let client = std::thread::Builder::new()
        .name("floor-client".into())
        .spawn(move || -> Result<(LoadReport, Glue)> {
            sys::pin(0, net::CLIENT_CPU)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let endpoint = quinn::Endpoint::new_with_abstract_socket(
                    quinn::EndpointConfig::default(),
                    None,
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )?;
                // The glue counters over the window, sampled beside the load's own meter.
                let glue_task = tokio::spawn(async move {
                    tokio::time::sleep(window.0).await;
                    let a = glue_at_window.snapshot();
                    tokio::time::sleep(window.1).await;
                    let b = glue_at_window.snapshot();
                    Glue {
                        work_s: b.work_s - a.work_s,
                        channel_s: b.channel_s - a.channel_s,
                        packets_in: b.packets_in - a.packets_in,
                        packets_out: b.packets_out - a.packets_out,
                    }
                });
                let report = load::run(
                    &spec,
                    endpoint,
                    Meter {
                        server_thread_clock: Some(clock),
                        server_pid: None,
                        napi_pids: Vec::new(),
                    },
                )
                .await?;
                let glue = glue_task.await?;
                Ok((report, glue))
            })
        })?;
    let result = client
        .join()
        .map_err(|_| anyhow::anyhow!("floor client panicked"))?;
    stop.store(true, Ordering::Relaxed);
    server
        .join()
        .map_err(|_| anyhow::anyhow!("floor server panicked"))??;
    result
}

/// The client's end of the memory link, as a quinn socket that polls.
#[derive(Debug)]
struct MemSocket {
    local: SocketAddr,
    server: SocketAddr,
    to_server: Sender<Packet>,
    from_server: Mutex<(Receiver<Packet>, Line)>,
    delay: Delay,
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packet({} bytes)", self.data.len())
    }
}

#[derive(Debug)]
struct AlwaysWritable;

impl quinn::UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl quinn::AsyncUdpSocket for MemSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, t: &Transmit) -> std::io::Result<()> {
        let _ = self.to_server.send(Packet {
            due: self.delay.due(Instant::now()),
            data: t.contents.to_vec(),
            segment_size: t.segment_size,
            ecn: t
                .ecn
                .map(|e| EcnCodepoint::from_bits(e as u8).expect("valid ECN")),
        });
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        let mut guard = self.from_server.lock().unwrap();
        let (rx, line) = &mut *guard;
        line.fill(rx);
        let now = Instant::now();
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some(p) = line.pop_due(now) else { break };
            debug_assert!(p.data.len() <= bufs[n].len(), "receive slot too small");
            let len = p.data.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&p.data[..len]);
            meta[n] = RecvMeta {
                addr: self.server,
                len,
                stride: p.segment_size.unwrap_or(len),
                ecn: p
                    .ecn
                    .and_then(|e| quinn::udp::EcnCodepoint::from_bits(e as u8)),
                dst_ip: Some(self.local.ip()),
            };
            n += 1;
        }
        if n > 0 {
            Poll::Ready(Ok(n))
        } else {
            // Poll again at once: the client side never sleeps.
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn max_transmit_segments(&self) -> usize {
        SEGMENTS
    }

    /// quinn sizes each receive slot as max_udp_payload_size (1472 by default) times this:
    /// room for a whole GSO batch from the server.
    fn max_receive_segments(&self) -> usize {
        SEGMENTS
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// One perf stream on the server.
#[derive(Default)]
struct PerfStream {
    header: [u8; 8],
    have: usize,
    /// Bytes still to send, once the request is complete.
    remaining: Option<u64>,
}

struct Conn {
    quic: quinn_proto::Connection,
    streams: HashMap<StreamId, PerfStream>,
    timer: Option<Instant>,
}

struct FloorServer {
    endpoint: Endpoint,
    conns: HashMap<ConnectionHandle, Conn>,
    retry: bool,
    client_addr: SocketAddr,
    out: Sender<Packet>,
    buf: Vec<u8>,
    glue: Arc<GlueCounters>,
    delay: Delay,
}

impl FloorServer {
    fn serve(&mut self, rx: &Receiver<Packet>, stop: &AtomicBool) {
        let mut dirty: Vec<ConnectionHandle> = Vec::new();
        let mut line = Line::default();
        let clock = sys::current_thread_clock();
        let mut next_timer: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            // Polling the channel is not charged (nor counted as glue): a datapath's
            // equivalent is the wait for packets.
            if !line.fill(rx) {
                return;
            }
            let now = Instant::now();
            let packet_due = line.next_due().is_some_and(|t| t <= now);
            let timer_due = next_timer.is_some_and(|t| t <= now);
            if !packet_due && !timer_due {
                // Poll: nothing is charged while waiting.
                std::hint::spin_loop();
                continue;
            }
            let work_start = sys::clock_ns(clock);
            while let Some(p) = line.pop_due(now) {
                self.handle(now, p, &mut dirty);
            }
            for (h, c) in self.conns.iter_mut() {
                if c.timer.is_some_and(|t| t <= now) {
                    c.timer = None;
                    c.quic.handle_timeout(now);
                    dirty.push(*h);
                }
            }
            dirty.sort_unstable_by_key(|h| h.0);
            dirty.dedup();
            for h in dirty.drain(..) {
                self.drive(now, h);
            }
            next_timer = self.conns.values().filter_map(|c| c.timer).min();
            let work = sys::clock_ns(clock).saturating_sub(work_start);
            self.glue.work_ns.fetch_add(work, Ordering::Relaxed);
        }
    }

    fn add_channel_time(&self, t0: Instant) {
        let ns = t0.elapsed().as_nanos() as u64;
        self.glue.channel_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn send(&mut self, size: usize, segment_size: Option<usize>, ecn: Option<EcnCodepoint>) {
        let mut data = std::mem::replace(&mut self.buf, Vec::with_capacity(SEGMENTS * 1500));
        data.truncate(size);
        let t0 = Instant::now();
        let _ = self.out.send(Packet {
            due: self.delay.due(t0),
            data,
            segment_size,
            ecn,
        });
        self.add_channel_time(t0);
        self.glue.packets_out.fetch_add(1, Ordering::Relaxed);
    }

    fn handle(&mut self, now: Instant, p: Packet, dirty: &mut Vec<ConnectionHandle>) {
        self.glue.packets_in.fetch_add(1, Ordering::Relaxed);
        let stride = p.segment_size.unwrap_or(p.data.len()).max(1);
        for datagram in p.data.chunks(stride) {
            // The copy quinn-proto's API forces (it takes an owned BytesMut).
            let data = BytesMut::from(datagram);
            self.buf.clear();
            let event =
                self.endpoint
                    .handle(now, self.client_addr, None, p.ecn, data, &mut self.buf);
            match event {
                Some(DatagramEvent::ConnectionEvent(h, ev)) => {
                    if let Some(c) = self.conns.get_mut(&h) {
                        c.quic.handle_event(ev);
                        dirty.push(h);
                    }
                }
                Some(DatagramEvent::NewConnection(incoming)) => {
                    self.buf.clear();
                    if self.retry && !incoming.remote_address_validated() {
                        match self.endpoint.retry(incoming, &mut self.buf) {
                            Ok(t) => self.send(t.size, t.segment_size, t.ecn),
                            Err(e) => self.endpoint.ignore(e.into_incoming()),
                        }
                        continue;
                    }
                    match self.endpoint.accept(incoming, now, &mut self.buf, None) {
                        Ok((h, quic)) => {
                            self.conns.insert(
                                h,
                                Conn {
                                    quic,
                                    streams: HashMap::new(),
                                    timer: None,
                                },
                            );
                            dirty.push(h);
                        }
                        Err(e) => {
                            if let Some(t) = e.response {
                                self.send(t.size, t.segment_size, t.ecn);
                            }
                        }
                    }
                }
                Some(DatagramEvent::Response(t)) => self.send(t.size, t.segment_size, t.ecn),
                None => {}
            }
        }
    }

    fn drive(&mut self, now: Instant, h: ConnectionHandle) {
        let Some(mut c) = self.conns.remove(&h) else {
            return;
        };
        while let Some(ev) = c.quic.poll_endpoint_events() {
            if let Some(ev) = self.endpoint.handle_event(h, ev) {
                c.quic.handle_event(ev);
            }
        }
        while let Some(ev) = c.quic.poll() {
            match ev {
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    while let Some(id) = c.quic.streams().accept(Dir::Bi) {
                        c.streams.insert(id, PerfStream::default());
                        read_stream(&mut c, id);
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => read_stream(&mut c, id),
                Event::Stream(StreamEvent::Writable { id }) => write_stream(&mut c, id),
                Event::Stream(StreamEvent::Stopped { id, .. }) => {
                    c.streams.remove(&id);
                }
                _ => {}
            }
        }
        loop {
            self.buf.clear();
            match c.quic.poll_transmit(now, SEGMENTS, &mut self.buf) {
                Some(t) => self.send(t.size, t.segment_size, t.ecn),
                None => break,
            }
        }
        while let Some(ev) = c.quic.poll_endpoint_events() {
            if let Some(ev) = self.endpoint.handle_event(h, ev) {
                c.quic.handle_event(ev);
            }
        }
        c.timer = c.quic.poll_timeout();
        if !c.quic.is_drained() {
            self.conns.insert(h, c);
        }
    }
}

fn read_stream(c: &mut Conn, id: StreamId) {
    let Some(s) = c.streams.get_mut(&id) else {
        return;
    };
    let mut fin = false;
    if let Ok(mut chunks) = c.quic.recv_stream(id).read(true) {
        loop {
            match chunks.next(usize::MAX) {
                Ok(Some(chunk)) => {
                    let take = (8 - s.have).min(chunk.bytes.len());
                    s.header[s.have..s.have + take].copy_from_slice(&chunk.bytes[..take]);
                    s.have += take;
                }
                Ok(None) => {
                    fin = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let _ = chunks.finalize();
    }
    if fin && s.remaining.is_none() {
        s.remaining = Some(if s.have == 8 {
            u64::from_be_bytes(s.header)
        } else {
            0
        });
        write_stream(c, id);
    }
}

fn write_stream(c: &mut Conn, id: StreamId) {
    let Some(s) = c.streams.get_mut(&id) else {
        return;
    };
    let Some(mut remaining) = s.remaining else {
        return;
    };
    let mut send = c.quic.send_stream(id);
    while remaining > 0 {
        let len = remaining.min(ZEROS.len() as u64) as usize;
        match send.write_chunks(&mut [Bytes::from_static(&ZEROS[..len])]) {
            Ok(w) if w.bytes > 0 => remaining -= w.bytes as u64,
            _ => break,
        }
    }
    s.remaining = Some(remaining);
    if remaining == 0 {
        let _ = send.finish();
        c.streams.remove(&id);
    }
}
