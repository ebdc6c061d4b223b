//! The portable backend: kernel UDP sockets through quinn-udp (GSO, GRO, ECN, pktinfo).

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use quinn_udp::{EcnCodepoint, RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

use super::{Capabilities, Datapath, Ecn, RxMeta, TxBatch, TxSlot};

#[cfg(windows)]
mod event;

/// Datagram slots per socket per receive call (recvmmsg batch on Linux).
const RX_SLOTS: usize = 32;
/// Each slot holds one GRO batch, which the kernel caps at 64 KiB.
const RX_SLOT_SIZE: usize = 1 << 16;
/// Kernel socket buffers: large enough to ride out a burst while the driver is busy.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create a UDP socket for {addr}: {source}")]
    Create { addr: SocketAddr, source: io::Error },
    #[error("cannot bind UDP {addr}: {source} (is another process using the port?)")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot configure UDP socket {addr}: {source}")]
    Configure { addr: SocketAddr, source: io::Error },
}

struct Endpoint {
    socket: UdpSocket,
    /// quinn-udp's state (GSO, GRO, ECN, our address per datagram). `None` on Windows systems
    /// that refuse its socket options (Wine lacks IP_RECVECN): plain `send_to` / `recv_from`
    /// then, one datagram at a time, without ECN or our address.
    state: Option<UdpSocketState>,
    local: SocketAddr,
    /// Windows: the socket's readiness as an event, for [`Datapath::poll_events`]; `None` if
    /// Winsock refused one (then the backend cannot run under an async runtime). Declared after
    /// `socket`, so the socket closes before its event.
    #[cfg(windows)]
    event: Option<event::SocketEvent>,
}

/// Counters of the socket backend.
#[derive(Debug, Default, Clone)]
pub struct SocketCounters {
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_transmits: u64,
    pub tx_bytes: u64,
    /// Transmits for which no socket matches the source port and address family.
    pub tx_no_socket: u64,
    /// Transmits the kernel refused (other than "try again"); dropped like a lost packet.
    pub tx_errors: u64,
    pub tx_would_block: u64,
}

pub struct SocketDatapath {
    endpoints: Vec<Endpoint>,
    rx_bufs: Vec<Box<[u8]>>,
    rx_meta: Vec<RecvMeta>,
    /// Which socket to read first next time, so a busy socket cannot starve the others.
    rx_next: usize,
    counters: SocketCounters,
    /// Another thread's wake-up descriptor, watched by `wait` ([`Datapath::wake_on`]).
    #[cfg(unix)]
    wake: Option<std::os::fd::RawFd>,
    #[cfg(unix)]
    poll: super::wait::PollSet,
}

impl SocketDatapath {
    /// Binds one non-blocking UDP socket per address.
    pub fn bind(addrs: &[SocketAddr]) -> Result<Self, SocketError> {
        Self::bind_shared(addrs, false)
    }

    /// [`Self::bind`], with `SO_REUSEPORT` when `reuse_port`: each worker binds its own
    /// socket to the same addresses (reserved first with [`reserve`]).
    pub fn bind_shared(addrs: &[SocketAddr], reuse_port: bool) -> Result<Self, SocketError> {
        let endpoints = addrs
            .iter()
            .map(|&addr| open(addr, reuse_port))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            endpoints,
            rx_bufs: (0..RX_SLOTS)
                .map(|_| vec![0u8; RX_SLOT_SIZE].into_boxed_slice())
                .collect(),
            rx_meta: vec![RecvMeta::default(); RX_SLOTS],
            rx_next: 0,
            counters: SocketCounters::default(),
            #[cfg(unix)]
            wake: None,
            #[cfg(unix)]
            poll: Default::default(),
        })
    }

    /// The bound sockets, in the order of the addresses given to bind.
    pub fn sockets(&self) -> impl Iterator<Item = &UdpSocket> {
        self.endpoints.iter().map(|e| &e.socket)
    }

    /// Most datagrams one received payload may hold (GRO), over every socket.
    pub fn gro_segments(&self) -> usize {
        let segments = self
            .endpoints
            .iter()
            .map(|e| e.state.as_ref().map_or(1, |s| s.gro_segments()));
        segments.max().unwrap_or(1)
    }

    pub fn socket_counters(&self) -> &SocketCounters {
        &self.counters
    }

    /// The socket that sends from `port` to `dst` ([`crate::datapath::socket_for`]).
    fn endpoint_for(&self, port: u16, dst: &SocketAddr) -> Option<usize> {
        crate::datapath::socket_for(self.endpoints.iter().map(|e| e.local), port, dst)
    }
}

/// Checks that every address is free (a plain bind, without `SO_REUSEPORT`) and returns
/// them with the port the kernel chose for port 0. Workers then bind these with
/// `SO_REUSEPORT`: a socket holding a port without it (another program, or another quixd that
/// reserved it the same way) fails here, so two daemons never share a port by accident.
pub fn reserve(addrs: &[SocketAddr]) -> Result<Vec<SocketAddr>, SocketError> {
    addrs
        .iter()
        .map(|&addr| {
            let socket = plain_socket(addr)?;
            socket
                .bind(&addr.into())
                .map_err(|source| SocketError::Bind { addr, source })?;
            let local = socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| SocketError::Bind {
                    addr,
                    source: io::Error::other("the kernel did not say which port it bound"),
                })?;
            Ok(local)
        })
        .collect()
}

/// A UDP socket for `addr`'s family; `[::]` is dual-stack.
fn plain_socket(addr: SocketAddr) -> Result<Socket, SocketError> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|source| SocketError::Create { addr, source })?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // "[::]:port" serves IPv4 too, like most servers expect.
        socket
            .set_only_v6(false)
            .map_err(|source| SocketError::Configure { addr, source })?;
    }
    Ok(socket)
}

fn open(addr: SocketAddr, reuse_port: bool) -> Result<Endpoint, SocketError> {
    let socket = plain_socket(addr)?;
    let configure = |source| SocketError::Configure { addr, source };
    if reuse_port {
        set_reuse_port(&socket).map_err(configure)?;
    }
    socket
        .bind(&addr.into())
        .map_err(|source| SocketError::Bind { addr, source })?;
    socket.set_nonblocking(true).map_err(configure)?;
    // Best effort: without privileges the kernel caps these at net.core.*mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let socket: UdpSocket = socket.into();
    let state = match UdpSocketState::new((&socket).into()) {
        Ok(state) => Some(state),
        Err(e) if cfg!(windows) => {
            tracing::warn!(
                %addr,
                error = %e,
                "quinn-udp cannot set this socket up (no ECN, packet info or offloads here): \
                 plain send_to/recv_from"
            );
            None
        }
        Err(e) => return Err(configure(e)),
    };
    let local = socket.local_addr().map_err(configure)?;
    #[cfg(windows)]
    let event = event::SocketEvent::new(&socket)
        .inspect_err(|e| tracing::warn!(%addr, error = %e, "no readiness event for this socket"))
        .ok();
    Ok(Endpoint {
        socket,
        state,
        local,
        #[cfg(windows)]
        event,
    })
}

impl SocketDatapath {
    /// Sends one transmit. Returns false when the socket is full (try again later); a
    /// transmit that cannot be sent at all is dropped, counted, and reported as done.
    pub fn send_one(&mut self, slot: &TxSlot) -> bool {
        let Some(idx) = self.endpoint_for(slot.meta.src_port, &slot.meta.dst) else {
            self.counters.tx_no_socket += 1;
            return true;
        };
        let ep = &self.endpoints[idx];
        let Some(state) = &ep.state else {
            return self.send_plain(idx, slot);
        };
        let transmit = Transmit {
            destination: slot.meta.dst,
            ecn: slot.meta.ecn.map(ecn_to_udp),
            contents: &slot.buf,
            segment_size: slot.meta.segment_size,
            src_ip: slot.meta.src_ip,
        };
        match state.try_send((&ep.socket).into(), &transmit) {
            Ok(()) => {
                self.counters.tx_transmits += 1;
                self.counters.tx_bytes += slot.buf.len() as u64;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.counters.tx_would_block += 1;
                false
            }
            Err(e) => {
                // quinn-udp already retries without GSO where the kernel refuses it; what is
                // left is a loss, which QUIC recovers from.
                self.counters.tx_errors += 1;
                tracing::debug!(dst = %slot.meta.dst, error = %e, "socket send error");
                true
            }
        }
    }

    /// [`SocketDatapath::send_one`] without quinn-udp: one `send_to` per datagram.
    fn send_plain(&mut self, idx: usize, slot: &TxSlot) -> bool {
        let ep = &self.endpoints[idx];
        let seg = slot.meta.segment_size.unwrap_or(slot.buf.len()).max(1);
        // A dual-stack socket reaches IPv4 peers at IPv4-mapped addresses.
        let dst = match slot.meta.dst {
            SocketAddr::V4(v4) if ep.local.is_ipv6() => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            dst => dst,
        };
        for (i, datagram) in slot.buf.chunks(seg).enumerate() {
            match ep.socket.send_to(datagram, dst) {
                Ok(_) => self.counters.tx_bytes += datagram.len() as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && i == 0 => {
                    self.counters.tx_would_block += 1;
                    return false;
                }
                Err(e) => {
                    // Lost like a dropped packet (the rest of a batch too); QUIC recovers.
                    self.counters.tx_errors += 1;
                    tracing::debug!(dst = %slot.meta.dst, error = %e, "socket send error");
                    return true;
                }
            }
        }
        self.counters.tx_transmits += 1;
        true
    }

    /// Waits on `extra` descriptors of a backend built on top and on these sockets, in that
    /// order, and on the wake descriptor given to [`Datapath::wake_on`]; returns which were
    /// readable (see [`super::wait::Readable`]).
    #[cfg(unix)]
    pub fn wait_on(
        &mut self,
        extra: impl Iterator<Item = std::os::fd::RawFd>,
        timeout: Option<Duration>,
        tx_pending: bool,
    ) -> io::Result<super::wait::Readable> {
        use std::os::fd::AsRawFd;
        let own = self.endpoints.iter().map(|e| e.socket.as_raw_fd());
        self.poll
            .wait(extra.chain(own), self.wake, timeout, tx_pending)
    }

    #[cfg(not(unix))]
    pub fn wait_on(
        &mut self,
        _extra: impl Iterator<Item = ()>,
        timeout: Option<Duration>,
        _tx_pending: bool,
    ) -> io::Result<u64> {
        // The Windows backends bring their own notification; this portable fallback naps.
        std::thread::sleep(
            timeout
                .unwrap_or(Duration::from_millis(1))
                .min(Duration::from_millis(1)),
        );
        Ok(u64::MAX)
    }
}

impl Datapath for SocketDatapath {
    fn name(&self) -> &'static str {
        "socket"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_tx_segments: self
                .endpoints
                .iter()
                .map(|e| e.state.as_ref().map_or(1, |s| s.max_gso_segments()))
                .min()
                .unwrap_or(1),
            may_fragment: self
                .endpoints
                .iter()
                .any(|e| e.state.as_ref().is_none_or(|s| s.may_fragment())),
            local_addrs: self.endpoints.iter().map(|e| e.local).collect(),
            // The kernel fragments or refuses (EMSGSIZE) by itself.
            max_udp_payload: None,
        }
    }

    fn recv(&mut self, rx: &mut dyn FnMut(&RxMeta, &[u8])) -> io::Result<usize> {
        let mut handed = 0;
        let n_endpoints = self.endpoints.len();
        for i in 0..n_endpoints {
            let idx = (self.rx_next + i) % n_endpoints;
            let ep = &self.endpoints[idx];
            let mut slices: [IoSliceMut<'_>; RX_SLOTS] = {
                let mut it = self.rx_bufs.iter_mut();
                std::array::from_fn(|_| IoSliceMut::new(it.next().expect("RX_SLOTS buffers")))
            };
            let n = match match &ep.state {
                Some(state) => state.recv((&ep.socket).into(), &mut slices, &mut self.rx_meta),
                None => recv_plain(&ep.socket, &mut slices, &mut self.rx_meta),
            } {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here (e.g. ECONNREFUSED); they don't stop the socket.
                    self.counters.rx_errors += 1;
                    tracing::debug!(local = %ep.local, error = %e, "socket receive error");
                    continue;
                }
            };
            for (meta, buf) in self.rx_meta[..n].iter().zip(slices.iter()) {
                let len = meta.len;
                let stride = if meta.stride == 0 { len } else { meta.stride };
                self.counters.rx_datagrams += len.div_ceil(stride.max(1)) as u64;
                self.counters.rx_bytes += len as u64;
                let rx_meta = RxMeta {
                    src: meta.addr,
                    dst_ip: meta.dst_ip,
                    dst_port: ep.local.port(),
                    ecn: meta.ecn.map(ecn_from_udp),
                    stride,
                };
                rx(&rx_meta, &buf[..len]);
                handed += 1;
            }
        }
        self.rx_next = (self.rx_next + 1) % n_endpoints.max(1);
        Ok(handed)
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<()> {
        let mut done = 0;
        for slot in batch.queued() {
            if !self.send_one(slot) {
                break;
            }
            done += 1;
        }
        batch.consume(done);
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>, tx_pending: bool) -> io::Result<()> {
        self.wait_on(std::iter::empty(), timeout, tx_pending)
            .map(|_| ())
    }

    #[cfg(unix)]
    fn wake_on(&mut self, fd: std::os::fd::RawFd) -> bool {
        self.wake = Some(fd);
        true
    }

    #[cfg(unix)]
    fn poll_fds(&self) -> Vec<super::PollFd> {
        use std::os::fd::AsRawFd;
        let fds = self.endpoints.iter().map(|e| super::PollFd {
            fd: e.socket.as_raw_fd(),
            rx: true,
            tx: Some(super::TxReady::Writable),
        });
        fds.collect()
    }

    #[cfg(windows)]
    fn poll_events(&self) -> Vec<super::PollEvent> {
        let events = self.endpoints.iter().map(|e| {
            e.event.as_ref().map(|ev| super::PollEvent {
                handle: ev.handle(),
                rx: true,
                tx: Some(super::TxReady::Writable),
                manual_reset: true,
            })
        });
        // All or nothing: a socket nobody watches would never be read.
        events.collect::<Option<Vec<_>>>().unwrap_or_default()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        vec![
            ("rx_datagrams", c.rx_datagrams),
            ("rx_bytes", c.rx_bytes),
            ("rx_errors", c.rx_errors),
            (
                "rx_socket_drops",
                self.endpoints.iter().map(|e| socket_drops(&e.socket)).sum(),
            ),
            ("tx_transmits", c.tx_transmits),
            ("tx_bytes", c.tx_bytes),
            ("tx_no_socket", c.tx_no_socket),
            ("tx_errors", c.tx_errors),
            ("tx_would_block", c.tx_would_block),
        ]
    }
}

/// Datagrams the kernel dropped at `socket` before we could read them (its receive buffer was
/// full, or a checksum was bad), since the socket was made: `SO_MEMINFO`'s `SK_MEMINFO_DROPS`.
/// Read when counters are asked for, never per datagram.
#[cfg(target_os = "linux")]
fn socket_drops(socket: &UdpSocket) -> u64 {
    use std::os::fd::AsRawFd;
    const SK_MEMINFO_VARS: usize = 9;
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes, and the kernel writes at most `len` bytes
    // and says how many it wrote; the socket is open for the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let drops = libc::SK_MEMINFO_DROPS as usize;
    if rc != 0 || (len as usize) < (drops + 1) * std::mem::size_of::<u32>() {
        return 0;
    }
    u64::from(info[drops])
}

/// Elsewhere the kernel does not say.
#[cfg(not(target_os = "linux"))]
fn socket_drops(_: &UdpSocket) -> u64 {
    0
}

/// `recvfrom` until the socket is empty or the slots are full (the path without quinn-udp).
fn recv_plain(
    socket: &UdpSocket,
    bufs: &mut [IoSliceMut<'_>],
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    let mut n = 0;
    for (buf, meta) in bufs.iter_mut().zip(meta.iter_mut()) {
        match socket.recv_from(buf) {
            Ok((len, addr)) => {
                *meta = RecvMeta::default();
                meta.addr = addr;
                meta.len = len;
                meta.stride = len;
                n += 1;
            }
            // Hand over what came; an error that persists shows on the next call.
            Err(_) if n > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn ecn_from_udp(e: EcnCodepoint) -> Ecn {
    match e {
        EcnCodepoint::Ect0 => Ecn::Ect0,
        EcnCodepoint::Ect1 => Ecn::Ect1,
        EcnCodepoint::Ce => Ecn::Ce,
    }
}

fn ecn_to_udp(e: Ecn) -> EcnCodepoint {
    match e {
        Ecn::Ect0 => EcnCodepoint::Ect0,
        Ecn::Ect1 => EcnCodepoint::Ect1,
        Ecn::Ce => EcnCodepoint::Ce,
    }
}

#[cfg(unix)]
pub(crate) fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(not(unix))]
pub(crate) fn set_reuse_port(_: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_REUSEPORT exists only on Unix: run one worker",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A burst larger than the socket's receive buffer, not read until it is over: what the
    /// kernel dropped is counted, and with what was received it adds up to what was sent.
    #[test]
    fn datagrams_the_kernel_dropped_are_counted() {
        // 24 MB: more than a receive buffer can be (twice net.core.rmem_max, 4 MiB here).
        const SENT: u64 = 20_000;
        let mut dp = SocketDatapath::bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
        let dst = dp.capabilities().local_addrs[0];
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload = [0x5au8; 1200];
        for _ in 0..SENT {
            sender.send_to(&payload, dst).unwrap();
        }
        let counter = |dp: &SocketDatapath, name: &str| {
            dp.counters()
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v)
                .unwrap()
        };
        let drops = counter(&dp, "rx_socket_drops");
        assert!(
            drops > 0,
            "{SENT} datagrams of 1200 bytes overflow the buffer"
        );
        while dp
            .recv(&mut |_, p| assert_eq!(p.len() % 1200, 0, "whole datagrams"))
            .unwrap()
            > 0
        {}
        let received = counter(&dp, "rx_datagrams");
        assert!(received > 0);
        assert_eq!(
            received + counter(&dp, "rx_socket_drops"),
            SENT,
            "every datagram either received or counted as dropped"
        );
    }
}
