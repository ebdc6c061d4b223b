//! The AF_XDP backend: our XDP program steers the served UDP ports into one AF_XDP socket
//! per queue; frames are parsed here and their payloads lent to the driver; transmits are
//! split into one frame per datagram, with headers built from the neighbour table.
//!
//! A kernel UDP socket (the "guard") stays bound to each served address: it keeps the kernel
//! from answering ICMP port-unreachable for the port, carries datagrams whose next hop the
//! kernel has not resolved yet (so it resolves it), and reports steering failures: nothing
//! should ever arrive on it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use xdp::slab::Slab;

use super::drops::DropLog;
use super::neighbor::NeighborTable;
pub use super::options::Transmit;
use super::program::{AttachMode, XdpProgram, XdpProgramError};
use super::socket::{CopyMode, Ledger, Xsk, XskError, XskSizes};
use super::sys::ring::FrameBatch;
use crate::datapath::socket::{SocketDatapath, SocketError};
use crate::datapath::{Capabilities, Datapath, RxMeta, TxBatch};
use crate::wire::{self, ChecksumPolicy, Checksums, FrameHeader, ParseCounters};

/// Frames taken from the RX ring per socket per call.
const RX_BATCH: usize = 64;
/// Datagrams per transmit quinn-proto may batch; we split them into frames.
const TX_SEGMENTS: usize = 16;
/// Our IP TTL / hop limit.
const TTL: u8 = 64;

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error(transparent)]
    Program(#[from] XdpProgramError),
    #[error(transparent)]
    Xsk(#[from] XskError),
    #[error(transparent)]
    Guard(#[from] SocketError),
    #[error("neighbour table for {interface}: {message}")]
    Neighbor { interface: String, message: String },
    #[error("interface {interface}: cannot read its RX queues: {source}")]
    Queues {
        interface: String,
        source: io::Error,
    },
}

/// What the XDP backend needs from the config.
#[derive(Debug, Clone)]
pub struct XdpSettings {
    pub interface: String,
    /// Empty: every RX queue of the interface.
    pub queues: Vec<u32>,
    pub attach: AttachMode,
    pub copy_mode: CopyMode,
    pub sizes: XskSizes,
    pub listen: Vec<SocketAddr>,
    pub transmit: Transmit,
    /// The 802.1Q VLAN our traffic carries on this interface, if any: received frames must
    /// carry exactly this tag (none when `None`), and sent frames get it.
    pub vlan: Option<u16>,
    /// Which received UDP checksums are accepted (see [`ChecksumPolicy`]).
    pub rx_checksum: ChecksumPolicy,
    /// Bind the guard sockets with `SO_REUSEPORT`: one worker of several.
    pub reuse_port: bool,
}

/// The XDP program of one daemon, shared by its workers: the first worker loads, fills and
/// attaches it; each later one registers its own queues' sockets in it. Locked at start-up and
/// for counter reads only, never on the packet path.
#[derive(Clone)]
pub struct SharedProgram(Arc<Mutex<XdpProgram>>);

impl SharedProgram {
    fn lock(&self) -> std::sync::MutexGuard<'_, XdpProgram> {
        // A worker that panicked while holding it left nothing half-done that matters here.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The RX queues `settings` serves: those listed, or every queue of the interface.
pub fn served_queues(settings: &XdpSettings) -> Result<Vec<u32>, XdpError> {
    if !settings.queues.is_empty() {
        return Ok(settings.queues.clone());
    }
    let name =
        std::ffi::CString::new(settings.interface.as_str()).map_err(|_| XdpError::Neighbor {
            interface: settings.interface.clone(),
            message: "the interface name contains a NUL byte".into(),
        })?;
    match xdp::nic::NicIndex::lookup_by_name(&name).ok().flatten() {
        Some(nic) => rx_queues(&settings.interface, nic.0),
        // The neighbour table names the interfaces that exist and how to list them.
        None => {
            let message = match NeighborTable::by_name(&settings.interface) {
                Err(e) => e.to_string(),
                Ok(_) => "the interface vanished while starting".into(),
            };
            Err(XdpError::Neighbor {
                interface: settings.interface.clone(),
                message,
            })
        }
    }
}

/// Counters of the XDP backend (the parse-drop reasons are in [`ParseCounters`]).
#[derive(Debug, Default, Clone)]
pub struct XdpCounters {
    pub rx_frames: u64,
    /// Well-formed frames on another VLAN than ours (or tagged when we expect none); dropped.
    pub rx_wrong_vlan: u64,
    /// Well-formed UDP for a port or address we do not serve (the program's maps and our
    /// listen list disagree); dropped.
    pub rx_not_ours: u64,
    pub rx_datagrams: u64,
    /// Datagrams accepted with the partial UDP checksum a veth peer's kernel leaves when it
    /// offloads the checksum (`xdp.rx_checksum`).
    pub rx_checksum_offloaded: u64,
    /// Datagrams that arrived on the guard sockets instead: IP fragments (reassembled by the
    /// kernel), or traffic the steering missed (queue without socket, other interface).
    pub guard_rx: u64,
    pub tx_frames: u64,
    /// Datagrams sent through the guard socket because the next hop was unresolved.
    pub tx_via_kernel: u64,
    /// Datagrams larger than the interface MTU or a frame; dropped.
    pub tx_too_big: u64,
    /// Transmits with no source address of the destination's family; dropped.
    pub tx_no_source: u64,
    /// Times a send stopped early because no frame or ring slot was free (retried later).
    pub tx_backpressure: u64,
    pub tx_errors: u64,
}

pub struct XdpDatapath {
    xsks: Vec<Xsk>,
    guard: SocketDatapath,
    neighbors: NeighborTable,
    // Dropped after the sockets: detaching first would pass their traffic to the kernel. The
    // last worker to drop it detaches it.
    program: SharedProgram,
    /// Whether this worker loaded the program (and reports its counters).
    primary: bool,
    interface: String,
    ports: Vec<u16>,
    local_addrs: Vec<SocketAddr>,
    rx_slab: FrameBatch,
    next_tx: usize,
    /// Send through the guard socket (GSO) instead of AF_XDP.
    tx_via_kernel: bool,
    vlan: Option<u16>,
    /// Whether the guard sockets may hold datagrams: set when a wait saw them readable, or
    /// by the periodic check. Looking only then saves a failing receive syscall per turn.
    guard_ready: bool,
    /// Receive turns since the guard sockets were last looked at.
    guard_turns: u32,
    /// How received UDP checksums are checked on this interface.
    checksums: Checksums,
    parse: ParseCounters,
    drops: DropLog,
    counters: XdpCounters,
    /// The result of `close`'s frame ledger check.
    closed_balanced: Option<bool>,
}

// The quinn adapter moves a datapath behind a mutex; keep it possible.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<XdpDatapath>();
};

/// Without a wait in between (a busy loop), the guard sockets are still looked at every this
/// many receive turns.
const GUARD_CHECK_TURNS: u32 = 64;

impl XdpDatapath {
    /// Opens the only worker (or the first of several): loads and attaches the program.
    pub fn open(settings: &XdpSettings) -> Result<Self, XdpError> {
        Self::open_worker(settings, None)
    }

    /// Opens a worker for `settings.queues`; with `shared`, joins the program a first worker
    /// loaded instead of loading one.
    pub fn open_worker(
        settings: &XdpSettings,
        shared: Option<&SharedProgram>,
    ) -> Result<Self, XdpError> {
        let interface = settings.interface.clone();
        // The guard sockets first: they claim the ports, so a second daemon fails here, before
        // touching the interface.
        let guard = SocketDatapath::bind_shared(&settings.listen, settings.reuse_port)?;
        let local_addrs = guard.capabilities().local_addrs;
        let mut ports: Vec<u16> = local_addrs.iter().map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();

        let neighbors = NeighborTable::by_name(&interface).map_err(|e| XdpError::Neighbor {
            interface: interface.clone(),
            message: e.to_string(),
        })?;
        let queues = if settings.queues.is_empty() {
            rx_queues(&interface, neighbors.ifindex())?
        } else {
            settings.queues.clone()
        };
        let mut xsks = Vec::with_capacity(queues.len());
        for &queue in &queues {
            xsks.push(Xsk::open(
                &interface,
                queue,
                settings.sizes,
                settings.copy_mode,
            )?);
        }
        let (program, primary) = match shared {
            Some(shared) => {
                let mut program = shared.lock();
                for xsk in &xsks {
                    program.register_xsk(xsk.queue, xsk.as_fd())?;
                }
                drop(program);
                tracing::info!(interface, queues = ?queues, "AF_XDP sockets of a further worker registered");
                (shared.clone(), false)
            }
            None => {
                let mut program = XdpProgram::load()?;
                program.set_ports(&ports)?;
                let specific: Vec<IpAddr> = local_addrs
                    .iter()
                    .map(|a| a.ip())
                    .filter(|ip| !ip.is_unspecified())
                    .collect();
                if specific.len() == local_addrs.len() {
                    for ip in &specific {
                        program.add_address(*ip)?;
                    }
                    program.set_address_filter(true)?;
                }
                program.set_max_frame(super::socket::RX_FRAME_ROOM)?;
                for xsk in &xsks {
                    program.register_xsk(xsk.queue, xsk.as_fd())?;
                }
                let attached = program.attach(&interface, settings.attach)?;
                let zero_copy = xsks.iter().all(|x| x.zero_copy);
                tracing::info!(
                    interface,
                    mode = %attached,
                    queues = ?queues,
                    zero_copy,
                    ports = ?ports,
                    "XDP program attached; AF_XDP sockets bound ({})",
                    if zero_copy { "zero-copy" } else { "copy mode: the driver offers no zero-copy" }
                );
                (SharedProgram(Arc::new(Mutex::new(program))), true)
            }
        };
        let checksums = resolve_checksums(&interface, settings.rx_checksum);
        let zero_copy = xsks.iter().all(|x| x.zero_copy);
        // In copy mode every AF_XDP frame sent becomes an skb of its own, while the kernel's
        // UDP path sends a GSO batch of up to 64 KiB as one: measured on veth, the kernel
        // path costs less per byte. With zero-copy, frames go to the NIC directly.
        let tx_via_kernel = match settings.transmit {
            Transmit::AfXdp => false,
            Transmit::Kernel => true,
            Transmit::Auto => !zero_copy,
        };
        tracing::info!(
            path = if tx_via_kernel { "kernel socket (GSO)" } else { "AF_XDP" },
            "transmit path: {}",
            match (settings.transmit, tx_via_kernel) {
                (Transmit::Auto, true) => "auto: copy-mode AF_XDP sends one skb per frame; the kernel's GSO path is cheaper",
                (Transmit::Auto, false) => "auto: zero-copy AF_XDP",
                _ => "as configured",
            }
        );
        Ok(Self {
            xsks,
            guard,
            guard_ready: true,
            guard_turns: 0,
            neighbors,
            program,
            primary,
            ports,
            local_addrs,
            rx_slab: FrameBatch::with_capacity(RX_BATCH),
            next_tx: 0,
            tx_via_kernel,
            vlan: settings.vlan,
            checksums,
            parse: ParseCounters::default(),
            drops: DropLog::new(&interface),
            counters: XdpCounters::default(),
            closed_balanced: None,
            interface,
        })
    }

    /// The program, for further workers to join ([`Self::open_worker`]).
    pub fn shared_program(&self) -> SharedProgram {
        self.program.clone()
    }

    pub fn xdp_counters(&self) -> &XdpCounters {
        &self.counters
    }

    pub fn parse_counters(&self) -> &ParseCounters {
        &self.parse
    }

    /// Frames received per RX queue.
    pub fn rx_frames_per_queue(&self) -> Vec<(u32, u64)> {
        self.xsks.iter().map(|x| (x.queue, x.rx_frames)).collect()
    }

    /// Where every UMEM frame of every socket is.
    pub fn ledgers(&self) -> Vec<Ledger> {
        self.xsks.iter().map(Xsk::ledger).collect()
    }

    /// Our address of `dst`'s family to send from, when quinn-proto did not name one.
    fn source_for(&self, dst: &SocketAddr) -> Option<IpAddr> {
        self.local_addrs
            .iter()
            .map(|a| a.ip())
            .find(|ip| ip.is_ipv4() == dst.is_ipv4() && !ip.is_unspecified())
    }
}

impl Datapath for XdpDatapath {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn capabilities(&self) -> Capabilities {
        // The largest UDP payload that fits the MTU with an IPv6 header, and a 2 KiB frame.
        let frame_room = super::socket::RX_FRAME_ROOM as usize - 14 - 4;
        let max_payload = (self.neighbors.mtu() as usize).min(frame_room) - 48;
        let max_tx_segments = if self.tx_via_kernel {
            self.guard.capabilities().max_tx_segments
        } else {
            TX_SEGMENTS
        };
        Capabilities {
            max_tx_segments,
            // We set DF on every datagram we build.
            may_fragment: false,
            local_addrs: self.local_addrs.clone(),
            max_udp_payload: Some(max_payload.min(u16::MAX as usize) as u16),
        }
    }

    fn rx_batch_hint(&mut self, max: usize) {
        // Each socket gives at most this many frames per call.
        self.rx_slab = FrameBatch::with_capacity(max.clamp(1, RX_BATCH));
    }

    fn recv(&mut self, rx: &mut dyn FnMut(&RxMeta, &[u8])) -> io::Result<usize> {
        self.neighbors.refresh();
        let mut handed = 0;
        for xsk in &mut self.xsks {
            xsk.reap();
            xsk.recv(&mut self.rx_slab);
            while let Some(frame) = self.rx_slab.pop_back() {
                self.counters.rx_frames += 1;
                match wire::parse_with(&frame, self.checksums) {
                    Ok(d) if d.vlan != self.vlan => self.counters.rx_wrong_vlan += 1,
                    Ok(d) if self.ports.contains(&d.dst.port()) => {
                        if d.checksum_offloaded {
                            self.counters.rx_checksum_offloaded += 1;
                        }
                        let meta = RxMeta {
                            src: d.src,
                            dst_ip: Some(d.dst.ip()),
                            dst_port: d.dst.port(),
                            ecn: d.ecn,
                            stride: d.payload.len(),
                        };
                        self.counters.rx_datagrams += 1;
                        rx(&meta, d.payload);
                        handed += 1;
                    }
                    Ok(_) => self.counters.rx_not_ours += 1,
                    Err(e) => {
                        self.parse.record(e);
                        self.drops.note(e);
                    }
                }
                xsk.release(frame);
            }
            xsk.refill();
        }
        self.guard_turns += 1;
        if !self.guard_ready && self.guard_turns < GUARD_CHECK_TURNS {
            return Ok(handed);
        }
        self.guard_turns = 0;
        let counters = &mut self.counters;
        let interface = &self.interface;
        let from_guard = self.guard.recv(&mut |meta, payload| {
            counters.guard_rx += 1;
            if counters.guard_rx.is_power_of_two() {
                // Fragmented datagrams always come this way (the program leaves reassembly
                // to the kernel), and so do GSO super-packets in SKB mode (too big for a
                // frame); anything else means the steering missed.
                tracing::warn!(
                    interface,
                    from = %meta.src,
                    count = counters.guard_rx,
                    "a datagram for a served port reached the kernel socket instead of AF_XDP: \
                     an IP fragment, a GSO batch in SKB mode (see the program's oversize \
                     counter), or a queue without an AF_XDP socket / another interface"
                );
            }
            rx(meta, payload);
        })?;
        // Empty now; more may follow a full batch.
        self.guard_ready = from_guard > 0;
        Ok(handed + from_guard)
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<()> {
        if self.tx_via_kernel {
            return self.guard.send(batch);
        }
        for xsk in &mut self.xsks {
            xsk.reap();
        }
        // The interface as it is now (the neighbour watcher follows MTU and address changes):
        // a frame over the current MTU is dropped (tx_too_big) like a lost packet, and
        // quinn-proto's black-hole detection lowers its datagram size.
        let (mtu, src_mac) = (self.neighbors.mtu() as usize, self.neighbors.mac());
        let mut done = 0;
        for slot in batch.queued() {
            let meta = slot.meta;
            let Some(hop) = self.neighbors.lookup(meta.dst.ip()) else {
                // The kernel resolves the neighbour for us; later datagrams take AF_XDP.
                if !self.guard.send_one(slot) {
                    break;
                }
                self.counters.tx_via_kernel += 1;
                done += 1;
                continue;
            };
            let Some(src_ip) = meta.src_ip.or_else(|| self.source_for(&meta.dst)) else {
                self.counters.tx_no_source += 1;
                done += 1;
                continue;
            };
            let segment = meta.segment_size.unwrap_or(slot.buf.len()).max(1);
            let frames = slot.buf.len().div_ceil(segment).max(1);
            let n = self.xsks.len();
            let Some(xsk) = (0..n)
                .map(|i| (self.next_tx + i) % n)
                .find(|&i| self.xsks[i].tx_frames_available() >= frames)
            else {
                self.counters.tx_backpressure += 1;
                break;
            };
            self.next_tx = (xsk + 1) % n;
            let xsk = &mut self.xsks[xsk];
            let header = FrameHeader {
                src_mac,
                dst_mac: hop.mac,
                vlan: self.vlan,
                src: SocketAddr::new(src_ip, meta.src_port),
                dst: meta.dst,
                ecn: meta.ecn,
                ttl: TTL,
            };
            let header_len = wire::header_len(&header);
            // The MTU counts from the IP header: Ethernet and any VLAN tag come on top.
            let vlan_tag = if self.vlan.is_some() {
                wire::VLAN_TAG_LEN
            } else {
                0
            };
            let max_frame = mtu + wire::ETHERNET_HEADER_LEN + vlan_tag;
            for datagram in slot.buf.chunks(segment) {
                let len = header_len + datagram.len();
                if len > max_frame {
                    self.counters.tx_too_big += 1;
                    continue;
                }
                let Some(mut frame) = xsk.alloc_tx(len) else {
                    self.counters.tx_too_big += 1;
                    continue;
                };
                match wire::write_frame(&mut frame, &header, datagram) {
                    Ok(_) => {
                        xsk.queue_tx(frame);
                        self.counters.tx_frames += 1;
                    }
                    Err(e) => {
                        // The rest of this transmit is dropped (counted) like a lost packet;
                        // it still counts as done, since the batch is consumed from the front.
                        xsk.discard(frame);
                        self.counters.tx_errors += 1;
                        tracing::debug!(error = %e, "cannot build frame");
                        break;
                    }
                }
            }
            done += 1;
        }
        batch.consume(done);
        for xsk in &mut self.xsks {
            if let Err(e) = xsk.flush_tx() {
                self.counters.tx_errors += 1;
                tracing::debug!(queue = xsk.queue, error = %e, "AF_XDP TX kick failed");
            }
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>, tx_pending: bool) -> io::Result<()> {
        let backlog = self.xsks.iter().any(|x| x.tx_backlog() > 0);
        let fds = self.xsks.iter().map(|x| x.as_fd().as_raw_fd());
        let readable = self.guard.wait_on(fds, timeout, tx_pending || backlog)?;
        // The guard sockets come after the AF_XDP sockets.
        if readable.any_from(self.xsks.len()) {
            self.guard_ready = true;
        }
        Ok(())
    }

    fn poll_fds(&self) -> Vec<crate::datapath::PollFd> {
        // The AF_XDP sockets first, then the guard sockets (as in `wait`).
        let xsks = self.xsks.iter().map(|x| crate::datapath::PollFd {
            fd: x.as_fd().as_raw_fd(),
            rx: true,
            tx: Some(crate::datapath::TxReady::Writable),
        });
        xsks.chain(self.guard.poll_fds()).collect()
    }

    fn poll_turn(&mut self, readable: u64) -> io::Result<bool> {
        // Past 64 descriptors the mask cannot say: look at the guard sockets every turn.
        if self.xsks.len() >= 63 || readable >> self.xsks.len() != 0 {
            self.guard_ready = true;
        }
        // Frames queued but not yet on the TX ring (it was full): a caller that never waits
        // would leave them there.
        for xsk in &mut self.xsks {
            if xsk.tx_backlog() > 0 {
                if let Err(e) = xsk.flush_tx() {
                    self.counters.tx_errors += 1;
                    tracing::debug!(queue = xsk.queue, error = %e, "AF_XDP TX kick failed");
                }
            }
        }
        Ok(false)
    }

    fn ledger_balanced(&self) -> Option<bool> {
        self.closed_balanced
    }

    fn gauges(&self) -> Vec<(&'static str, u64)> {
        // The frame ledger summed over this worker's sockets: where the UMEM frames are.
        let mut l = Ledger::default();
        for x in self.ledgers() {
            l.capacity += x.capacity;
            l.free += x.free;
            l.in_fill += x.in_fill;
            l.rx_held += x.rx_held;
            l.tx_building += x.tx_building;
            l.tx_in_flight += x.tx_in_flight;
        }
        let n = self.neighbors.stats();
        vec![
            ("umem_frames", l.capacity as u64),
            ("umem_free", l.free as u64),
            ("umem_in_fill_ring", l.in_fill as u64),
            ("umem_rx_held", l.rx_held as u64),
            ("umem_tx_building", l.tx_building as u64),
            ("umem_tx_in_flight", l.tx_in_flight as u64),
            ("neighbor_routes", n.routes as u64),
            ("neighbor_entries", n.neighbors as u64),
            ("neighbor_watcher_running", u64::from(n.watcher_running)),
        ]
    }

    fn wake_on(&mut self, fd: std::os::fd::RawFd) -> bool {
        // The guard sockets' wait covers the AF_XDP sockets too (see `wait`).
        self.guard.wake_on(fd)
    }

    fn close(&mut self) {
        // Completions of the last frames arrive shortly after the last kick.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            for xsk in &mut self.xsks {
                xsk.reap();
                let _ = xsk.flush_tx();
            }
            let ledgers = self.ledgers();
            let settled = ledgers
                .iter()
                .all(|l| l.tx_in_flight == 0 && l.tx_building == 0 && l.rx_held == 0);
            if settled || std::time::Instant::now() >= deadline {
                let frames: usize = ledgers.iter().map(|l| l.capacity).sum();
                let balanced = settled && ledgers.iter().all(Ledger::balanced);
                self.closed_balanced = Some(balanced);
                if balanced {
                    tracing::info!(
                        frames,
                        sockets = ledgers.len(),
                        "frame ledger balanced: every UMEM frame accounted for"
                    );
                } else {
                    tracing::error!(
                        ?ledgers,
                        "frame ledger NOT balanced: UMEM frames unaccounted for"
                    );
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        let mut out = vec![
            ("rx_frames", c.rx_frames),
            ("rx_wrong_vlan", c.rx_wrong_vlan),
            ("rx_not_ours", c.rx_not_ours),
            ("rx_datagrams", c.rx_datagrams),
            ("rx_checksum_offloaded", c.rx_checksum_offloaded),
            ("guard_rx", c.guard_rx),
            ("tx_frames", c.tx_frames),
            ("tx_via_kernel", c.tx_via_kernel),
            ("tx_too_big", c.tx_too_big),
            ("tx_no_source", c.tx_no_source),
            ("tx_backpressure", c.tx_backpressure),
            ("tx_errors", c.tx_errors),
        ];
        out.extend(self.parse.iter());
        // The kernel path: transmits with `transmit = "kernel"`, unresolved next hops.
        let k = self.guard.socket_counters();
        out.extend([
            ("kernel_tx_transmits", k.tx_transmits),
            ("kernel_tx_bytes", k.tx_bytes),
            ("kernel_tx_errors", k.tx_errors),
            ("kernel_tx_would_block", k.tx_would_block),
            ("kernel_rx_errors", k.rx_errors),
        ]);
        let mut stats = [0u64; 6];
        for xsk in &self.xsks {
            if let Some(s) = xsk.statistics() {
                stats[0] += s.rx_dropped;
                stats[1] += s.rx_invalid_descs;
                stats[2] += s.tx_invalid_descs;
                stats[3] += s.rx_ring_full;
                stats[4] += s.rx_fill_ring_empty_descs;
                stats[5] += s.tx_ring_empty_descs;
            }
        }
        out.extend([
            ("xsk_rx_dropped", stats[0]),
            ("xsk_rx_invalid_descs", stats[1]),
            ("xsk_tx_invalid_descs", stats[2]),
            ("xsk_rx_ring_full", stats[3]),
            ("xsk_rx_fill_ring_empty", stats[4]),
            ("xsk_tx_ring_empty", stats[5]),
        ]);
        let kicks = self.xsks.iter().map(|x| (x.kicks, x.kicks_busy));
        let (kicks, busy) = kicks.fold((0, 0), |(a, b), (k, y)| (a + k, b + y));
        let n = self.neighbors.stats();
        out.extend([
            ("xsk_tx_kicks", kicks),
            ("xsk_tx_kicks_busy", busy),
            ("neighbor_lookups", n.lookups),
            ("neighbor_misses", n.misses),
            ("neighbor_resyncs", n.resyncs),
            ("neighbor_netlink_errors", n.netlink_errors),
        ]);
        // One worker reports the program's counters: they are the interface's, not its own.
        let program = self.primary.then(|| self.program.lock().counters());
        if let Some(Ok(p)) = program {
            out.extend([
                ("prog_redirected", p.redirected),
                ("prog_passed", p.passed),
                ("prog_not_ours", p.not_ours),
                ("prog_malformed", p.malformed),
                ("prog_no_socket", p.no_socket),
                ("prog_fragment", p.fragment),
                ("prog_ipv6_ext", p.ipv6_ext),
                ("prog_oversize", p.oversize),
            ]);
        }
        out
    }
}

/// Resolves `xdp.rx_checksum` for `interface`: `auto` trusts the partial form on veth only.
fn resolve_checksums(interface: &str, policy: ChecksumPolicy) -> Checksums {
    let driver = super::sys::ethtool::driver_name(interface);
    let checksums = match policy {
        ChecksumPolicy::Verify => Checksums::Verify,
        ChecksumPolicy::TrustOffload => Checksums::TrustPartial,
        ChecksumPolicy::Auto => match &driver {
            Ok(d) if d == "veth" => Checksums::TrustPartial,
            _ => Checksums::Verify,
        },
    };
    let driver = driver.unwrap_or_else(|e| format!("unknown ({e})"));
    match checksums {
        Checksums::TrustPartial => tracing::info!(
            interface,
            driver,
            ?policy,
            "UDP checksums: verified, except the partial form a veth peer's kernel leaves with \
             TX checksum offload on, which is trusted as the kernel trusts it (counted as \
             rx_checksum_offloaded)"
        ),
        Checksums::Verify => tracing::info!(
            interface,
            driver,
            ?policy,
            "UDP checksums: every one verified"
        ),
    }
    checksums
}

/// The interface's active RX queues: the `queues/rx-N` entries in sysfs. A thread that
/// entered another network namespace still sees its old sysfs, so the entry is trusted only
/// when its ifindex matches; otherwise the ethtool channel count (an ioctl, which follows the
/// namespace) decides.
fn rx_queues(interface: &str, ifindex: u32) -> Result<Vec<u32>, XdpError> {
    let dir = format!("/sys/class/net/{interface}");
    let same_device = std::fs::read_to_string(format!("{dir}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        == Some(ifindex);
    if same_device {
        if let Ok(entries) = std::fs::read_dir(format!("{dir}/queues")) {
            let mut queues: Vec<u32> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("rx-")?.parse().ok())
                .collect();
            queues.sort_unstable();
            if !queues.is_empty() {
                return Ok(queues);
            }
        }
    }
    let count = xdp::nic::NicIndex::new(ifindex)
        .queue_counts()
        .map_err(|source| XdpError::Queues {
            interface: interface.into(),
            source,
        })?
        .rx_count()
        .max(1);
    Ok((0..count).collect())
}
