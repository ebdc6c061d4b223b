//! The next-hop mirror's netlink side: dumps of links, main-table routes and neighbours, and
//! the watcher thread reading their multicast events on a socket of its own.

use std::collections::HashMap;
use std::io::{self, Cursor};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{RtAddrFamily, RtScope, RtTable, Rtm, Rtn, Rtprot};
use neli::consts::socket::NlFamily;
use neli::err::{DeError, SocketError};
use neli::nl::Nlmsghdr;
use neli::rtnl::{Ifinfomsg, IfinfomsgBuilder, Ndmsg, NdmsgBuilder, Rtmsg, RtmsgBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::Buffer;
use neli::utils::Groups;
use neli::{FromBytesWithInput, Size, ToBytes};

use super::{
    align4, parse_u32, push_rtattr, request_error, rtattrs, unbuildable, RequestError, Rtnl,
};
use crate::datapath::xdp::neighbor::table::{LinkInfo, Mac, Route, RouteKind, Snapshot, Update};
use crate::datapath::xdp::neighbor::NeighborError;
use crate::datapath::xdp::sys::poll::{self as sys, Ready};

// Numeric constants, so as not to depend on which of them a libc target or neli version names.
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RT_TABLE_MAIN: u32 = 254;
const RTM_F_CLONED: u32 = 0x200;
const RTNH_F_DEAD: u32 = 1;

const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT: the kernel's
/// NUD_VALID, entries it would send to without resolving first.
const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
const NTF_PROXY: u8 = 0x08;
/// "Mark the entry used, as a packet sent through it would": a STALE entry starts the
/// kernel's reachability check (DELAY, then probes).
const NTF_USE: u8 = 0x01;
const NUD_STALE: u16 = 0x04;
/// `struct ndmsg`: family, padding, ifindex, state, flags, type.
const NDMSG_LEN: usize = 12;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
pub(crate) const ARPHRD_ETHER: u16 = 1;
const IFF_UP: u32 = 0x1;
const IFF_RUNNING: u32 = 0x40;
const IFF_LOWER_UP: u32 = 0x10000;

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// Receive buffer asked for the event socket; a burst beyond it costs a re-dump (ENOBUFS).
const EVENT_RCVBUF: usize = 4 << 20;
/// Pause before retrying a failed re-dump.
const RESYNC_RETRY: Duration = Duration::from_millis(200);
/// How often the watcher asks the kernel to confirm stale neighbours.
const STALE_CHECK: Duration = Duration::from_secs(1);

/// Turns neli's socket error into ours, for operation `op`.
fn socket_error(op: &'static str, e: SocketError) -> NeighborError {
    request_failed(op, request_error(e))
}

fn request_failed(op: &'static str, e: RequestError) -> NeighborError {
    match e {
        RequestError::Os { source, .. } => os_error(op, source),
        RequestError::Malformed(detail) => NeighborError::Malformed { op, detail },
    }
}

fn os_error(op: &'static str, source: io::Error) -> NeighborError {
    match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => NeighborError::Permission { op, source },
        _ => NeighborError::Netlink { op, source },
    }
}

fn malformed(op: &'static str, e: impl std::fmt::Display) -> NeighborError {
    NeighborError::Malformed {
        op,
        detail: e.to_string(),
    }
}

/// Opens the event socket, subscribed to link, neighbour and IPv4/IPv6 route changes,
/// non-blocking. Open it before dumping so no change between dump and subscription is lost.
pub(crate) fn subscribe() -> Result<NlSocketHandle, NeighborError> {
    let groups = Groups::new_groups(&[
        RTNLGRP_LINK,
        RTNLGRP_NEIGH,
        RTNLGRP_IPV4_ROUTE,
        RTNLGRP_IPV6_ROUTE,
    ]);
    let sock = NlSocketHandle::connect(NlFamily::Route, None, groups)
        .map_err(|e| socket_error("subscribe (RTNLGRP_LINK, NEIGH, IPV4_ROUTE, IPV6_ROUTE)", e))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = sock.set_recv_buffer_size(EVENT_RCVBUF);
    sys::set_nonblocking(sock.as_raw_fd()).map_err(|e| os_error("set O_NONBLOCK", e))?;
    Ok(sock)
}

/// One interface, from RTM_NEWLINK.
#[derive(Clone, Debug)]
pub(crate) struct LinkMsg {
    pub index: u32,
    pub name: String,
    pub link_type: u16,
    pub flags: u32,
    pub mac: Option<Mac>,
    pub mtu: u32,
}

impl LinkMsg {
    /// The flags whose change makes the kernel flush routes or neighbours.
    pub fn state_flags(&self) -> u32 {
        self.flags & (IFF_UP | IFF_RUNNING | IFF_LOWER_UP)
    }

    /// As the table keeps it; `None` when it is not an Ethernet interface.
    pub fn info(&self) -> Option<LinkInfo> {
        if self.link_type != ARPHRD_ETHER {
            return None;
        }
        Some(LinkInfo {
            name: self.name.clone(),
            mac: self.mac?,
            mtu: self.mtu,
            up: self.flags & IFF_UP != 0 && self.flags & IFF_RUNNING != 0,
        })
    }
}

/// The dump socket.
pub(crate) struct Dumper {
    rtnl: Rtnl,
}

impl Dumper {
    pub fn open() -> Result<Self, NeighborError> {
        let rtnl = Rtnl::open().map_err(|e| request_failed("open a NETLINK_ROUTE socket", e))?;
        Ok(Dumper { rtnl })
    }

    /// Sends a dump request and returns each answer's type and payload.
    fn dump<P>(
        &mut self,
        op: &'static str,
        ty: Rtm,
        payload: impl Fn() -> Result<P, RequestError>,
    ) -> Result<Vec<(u16, Buffer)>, NeighborError>
    where
        P: Size + ToBytes + std::fmt::Debug,
    {
        self.rtnl
            .request(ty, NlmF::DUMP, payload)
            .map_err(|e| request_failed(op, e))
    }

    pub fn links(&mut self) -> Result<Vec<LinkMsg>, NeighborError> {
        const OP: &str = "dump links (RTM_GETLINK)";
        let req = || {
            IfinfomsgBuilder::default()
                .ifi_family(RtAddrFamily::Unspecified)
                .build()
                .map_err(unbuildable)
        };
        let mut links = Vec::new();
        for (ty, payload) in self.dump(OP, Rtm::Getlink, req)? {
            if ty == RTM_NEWLINK {
                links.push(parse_link(payload.as_ref()).map_err(|e| malformed(OP, e))?);
            }
        }
        Ok(links)
    }

    pub fn routes(&mut self, ifindex: u32) -> Result<Vec<Route>, NeighborError> {
        const OP: &str = "dump routes (RTM_GETROUTE)";
        let mut routes = Vec::new();
        for family in [RtAddrFamily::Inet, RtAddrFamily::Inet6] {
            let req = || {
                RtmsgBuilder::default()
                    .rtm_family(family)
                    .rtm_dst_len(0)
                    .rtm_src_len(0)
                    .rtm_tos(0)
                    .rtm_table(RtTable::Unspec)
                    .rtm_protocol(Rtprot::Unspec)
                    .rtm_scope(RtScope::Universe)
                    .rtm_type(Rtn::Unspec)
                    .build()
                    .map_err(unbuildable)
            };
            for (ty, payload) in self.dump(OP, Rtm::Getroute, req)? {
                if ty == RTM_NEWROUTE {
                    if let Some(route) =
                        parse_route(payload.as_ref(), ifindex).map_err(|e| malformed(OP, e))?
                    {
                        routes.push(route);
                    }
                }
            }
        }
        Ok(routes)
    }

    /// The neighbours of interface `ifindex` the kernel holds as STALE: their address is
    /// probably right, but the kernel will not check it unless it sends through them itself,
    /// which it does not for frames that leave through AF_XDP.
    pub fn stale_neighbors(&mut self, ifindex: u32) -> Result<Vec<IpAddr>, NeighborError> {
        const OP: &str = "dump neighbours (RTM_GETNEIGH)";
        let mut stale = Vec::new();
        for family in [RtAddrFamily::Inet, RtAddrFamily::Inet6] {
            for (ty, payload) in self.dump(OP, Rtm::Getneigh, || neighbor_request(family))? {
                if ty == RTM_NEWNEIGH {
                    if let Some((ip, _, state)) = parse_neighbor_state(payload.as_ref(), ifindex)
                        .map_err(|e| malformed(OP, e))?
                    {
                        if state & NUD_STALE != 0 {
                            stale.push(ip);
                        }
                    }
                }
            }
        }
        Ok(stale)
    }

    /// Marks neighbour `ip` of interface `ifindex` used (`NTF_USE`), so the kernel confirms
    /// its address: after its delay it probes, and an answer from a new MAC address updates
    /// the entry (and, through its event, our mirror).
    pub fn use_neighbor(&mut self, ifindex: u32, ip: IpAddr) -> Result<(), NeighborError> {
        const OP: &str = "mark a neighbour used (RTM_NEWNEIGH, NTF_USE)";
        let mut bytes = vec![0u8; NDMSG_LEN];
        bytes[0] = if ip.is_ipv4() {
            libc::AF_INET as u8
        } else {
            libc::AF_INET6 as u8
        };
        bytes[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        bytes[10] = NTF_USE;
        match ip {
            IpAddr::V4(v4) => push_rtattr(&mut bytes, NDA_DST, &v4.octets()),
            IpAddr::V6(v6) => push_rtattr(&mut bytes, NDA_DST, &v6.octets()),
        }
        self.rtnl
            .request(Rtm::Newneigh, NlmF::ACK, || Ok(Buffer::from(bytes.clone())))
            .map(|_| ())
            .map_err(|e| request_failed(OP, e))
    }

    pub fn neighbors(&mut self, ifindex: u32) -> Result<Vec<(IpAddr, Mac)>, NeighborError> {
        const OP: &str = "dump neighbours (RTM_GETNEIGH)";
        let mut neighbors = Vec::new();
        for family in [RtAddrFamily::Inet, RtAddrFamily::Inet6] {
            for (ty, payload) in self.dump(OP, Rtm::Getneigh, || neighbor_request(family))? {
                if ty == RTM_NEWNEIGH {
                    if let Some((ip, Some(mac))) =
                        parse_neighbor(payload.as_ref(), ifindex).map_err(|e| malformed(OP, e))?
                    {
                        neighbors.push((ip, mac));
                    }
                }
            }
        }
        Ok(neighbors)
    }

    /// A full snapshot for interface `ifindex`, given a fresh link dump; `None` when the
    /// interface is gone or no longer Ethernet.
    pub fn snapshot(
        &mut self,
        ifindex: u32,
        links: &[LinkMsg],
    ) -> Result<Option<Snapshot>, NeighborError> {
        let Some(link) = links
            .iter()
            .find(|l| l.index == ifindex)
            .and_then(LinkMsg::info)
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            link,
            routes: self.routes(ifindex)?,
            neighbors: self.neighbors(ifindex)?,
        }))
    }
}

fn parse_addr(data: &[u8]) -> Option<IpAddr> {
    match data.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?))),
        _ => None,
    }
}

/// `struct rtvia { __kernel_sa_family_t rtvia_family; __u8 rtvia_addr[]; }`
fn parse_via(data: &[u8]) -> Option<IpAddr> {
    parse_addr(data.get(2..)?)
}

/// Picks one next hop of an `RTA_MULTIPATH` route: the first live one through `ifindex`, else
/// the first live one. (The kernel hashes flows over them; a frame only needs a valid one.)
fn pick_nexthop(mut data: &[u8], ifindex: u32) -> Option<(u32, Option<IpAddr>)> {
    let mut first = None;
    // struct rtnexthop { u16 rtnh_len; u8 rtnh_flags; u8 rtnh_hops; i32 rtnh_ifindex; }
    while data.len() >= 8 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        if len < 8 || len > data.len() {
            break;
        }
        let flags = u32::from(data[2]);
        let oif = u32::from_ne_bytes([data[4], data[5], data[6], data[7]]);
        let mut gateway = None;
        for (ty, payload) in rtattrs(&data[8..len]) {
            match ty {
                RTA_GATEWAY => gateway = parse_addr(payload),
                RTA_VIA => gateway = parse_via(payload),
                _ => {}
            }
        }
        if flags & RTNH_F_DEAD == 0 {
            if oif == ifindex {
                return Some((oif, gateway));
            }
            first.get_or_insert((oif, gateway));
        }
        data = &data[align4(len).min(data.len())..];
    }
    first
}

/// A main-table IPv4/IPv6 route the lookup can use, or `None` for routes it ignores: other
/// tables, cached clones, source-specific or TOS routes, local/broadcast/multicast types.
fn parse_route(payload: &[u8], ifindex: u32) -> Result<Option<Route>, DeError> {
    let msg = Rtmsg::from_bytes_with_input(&mut Cursor::new(payload), payload.len())?;
    let v6 = match *msg.rtm_family() {
        RtAddrFamily::Inet => false,
        RtAddrFamily::Inet6 => true,
        _ => return Ok(None),
    };
    if msg.rtm_flags().bits() & (RTM_F_CLONED | RTNH_F_DEAD) != 0
        || *msg.rtm_src_len() != 0
        || *msg.rtm_tos() != 0
    {
        return Ok(None);
    }
    let mut table = u32::from(u8::from(*msg.rtm_table()));
    let (mut dst, mut gateway, mut oif, mut priority, mut multipath) = (None, None, 0, 0, None);
    for attr in msg.rtattrs().iter() {
        let data: &[u8] = attr.rta_payload().as_ref();
        match u16::from(*attr.rta_type()) {
            RTA_DST => dst = parse_addr(data),
            RTA_GATEWAY => gateway = parse_addr(data),
            RTA_VIA => gateway = parse_via(data),
            RTA_OIF => oif = parse_u32(data).unwrap_or(0),
            RTA_PRIORITY => priority = parse_u32(data).unwrap_or(0),
            RTA_TABLE => table = parse_u32(data).unwrap_or(table),
            RTA_MULTIPATH => multipath = Some(data),
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN {
        return Ok(None);
    }
    let dst = match dst {
        Some(dst) if dst.is_ipv6() == v6 => dst,
        Some(_) => return Ok(None),
        None if v6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let rtn = u8::from(*msg.rtm_type());
    let kind = if rtn == libc::RTN_UNICAST {
        if let Some(mp) = multipath {
            match pick_nexthop(mp, ifindex) {
                Some((o, g)) => (oif, gateway) = (o, g),
                None => return Ok(None),
            }
        }
        RouteKind::Unicast { oif, gateway }
    } else if [
        libc::RTN_BLACKHOLE,
        libc::RTN_UNREACHABLE,
        libc::RTN_PROHIBIT,
        libc::RTN_THROW,
    ]
    .contains(&rtn)
    {
        RouteKind::Reject
    } else {
        return Ok(None);
    };
    Ok(Some(Route {
        dst,
        prefix_len: *msg.rtm_dst_len(),
        priority,
        kind,
    }))
}

/// A neighbour dump request for one address family.
fn neighbor_request(family: RtAddrFamily) -> Result<Ndmsg, RequestError> {
    NdmsgBuilder::default()
        .ndm_family(family)
        .ndm_index(0)
        .ndm_state(0.into())
        .ndm_type(Rtn::Unspec)
        .build()
        .map_err(unbuildable)
}

/// A neighbour entry of interface `ifindex`: its address and, when usable (NUD_VALID, with a
/// 6-byte link-layer address), its MAC. `None` for other interfaces, families and proxies.
fn parse_neighbor(payload: &[u8], ifindex: u32) -> Result<Option<(IpAddr, Option<Mac>)>, DeError> {
    Ok(parse_neighbor_state(payload, ifindex)?.map(|(ip, mac, _)| (ip, mac)))
}

/// [`parse_neighbor`] with the entry's NUD state.
fn parse_neighbor_state(
    payload: &[u8],
    ifindex: u32,
) -> Result<Option<(IpAddr, Option<Mac>, u16)>, DeError> {
    let msg = Ndmsg::from_bytes_with_input(&mut Cursor::new(payload), payload.len())?;
    let v6 = match *msg.ndm_family() {
        RtAddrFamily::Inet => false,
        RtAddrFamily::Inet6 => true,
        _ => return Ok(None),
    };
    if *msg.ndm_index() as u32 != ifindex || msg.ndm_flags().bits() & NTF_PROXY != 0 {
        return Ok(None);
    }
    let (mut dst, mut lladdr) = (None, None);
    for attr in msg.rtattrs().iter() {
        let data: &[u8] = attr.rta_payload().as_ref();
        match u16::from(*attr.rta_type()) {
            NDA_DST => dst = parse_addr(data),
            NDA_LLADDR => lladdr = <[u8; 6]>::try_from(data).ok(),
            _ => {}
        }
    }
    let Some(dst) = dst.filter(|d| d.is_ipv6() == v6) else {
        return Ok(None);
    };
    let state = msg.ndm_state().bits();
    let usable = state & NUD_VALID != 0;
    Ok(Some((dst, lladdr.filter(|_| usable), state)))
}

fn parse_link(payload: &[u8]) -> Result<LinkMsg, DeError> {
    let msg = Ifinfomsg::from_bytes_with_input(&mut Cursor::new(payload), payload.len())?;
    let mut link = LinkMsg {
        index: *msg.ifi_index() as u32,
        name: String::new(),
        link_type: u16::from(*msg.ifi_type()),
        flags: msg.ifi_flags().bits(),
        mac: None,
        mtu: 0,
    };
    for attr in msg.rtattrs().iter() {
        let data: &[u8] = attr.rta_payload().as_ref();
        match u16::from(*attr.rta_type()) {
            IFLA_IFNAME => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                link.name = String::from_utf8_lossy(&data[..end]).into_owned();
            }
            IFLA_ADDRESS => link.mac = <[u8; 6]>::try_from(data).ok(),
            IFLA_MTU => link.mtu = parse_u32(data).unwrap_or(0),
            _ => {}
        }
    }
    Ok(link)
}

/// Counters the watcher shares with the owner (read only by `stats()`, off the hot path).
#[derive(Debug, Default)]
pub(crate) struct WatcherShared {
    pub resyncs: AtomicU64,
    pub errors: AtomicU64,
    pub tid: AtomicI32,
    pub running: AtomicBool,
}

/// The owner dropped its table.
struct Closed;

/// The background thread: reads events, turns them into [`Update`]s, re-dumps when events
/// were lost or a link's state changed (the kernel flushes routes then without telling).
pub(crate) struct Watcher {
    pub events: NlSocketHandle,
    pub dumper: Dumper,
    pub ifindex: u32,
    /// `state_flags` of every interface, to notice state changes.
    pub link_flags: HashMap<u32, u32>,
    pub tx: SyncSender<Update>,
    pub stop: Arc<crate::datapath::wake::Wake>,
    pub shared: Arc<WatcherShared>,
}

impl Watcher {
    pub fn run(mut self) {
        self.shared.tid.store(sys::gettid(), Ordering::Relaxed);
        let _ = self.serve();
        self.shared.running.store(false, Ordering::Release);
        tracing::debug!(ifindex = self.ifindex, "neighbour watcher stopped");
    }

    fn serve(&mut self) -> Result<(), Closed> {
        let mut resync = false;
        let mut refreshed = std::time::Instant::now();
        loop {
            let timeout = if resync { RESYNC_RETRY } else { STALE_CHECK };
            let timeout = timeout.as_millis() as i32;
            match sys::wait(self.events.as_raw_fd(), self.stop.as_fd(), timeout) {
                Ok(Ready::Stop) => return Ok(()),
                Ok(Ready::Socket) => resync |= self.drain()?,
                Ok(Ready::Timeout) => {}
                Err(e) => {
                    self.shared.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "neighbour watcher: poll failed; the table stops updating");
                    return Ok(());
                }
            }
            if resync {
                resync = !self.resync()?;
            }
            if refreshed.elapsed() >= STALE_CHECK {
                refreshed = std::time::Instant::now();
                self.confirm_stale();
            }
        }
    }

    /// Asks the kernel to confirm every STALE neighbour of the interface. Frames that leave
    /// through AF_XDP never make the kernel check an entry, so a peer that changed its MAC
    /// address without announcing it would be sent to at the old one forever. The cost: a
    /// probe per stale neighbour about every reachable time (~30 s), also for peers we no
    /// longer talk to, until the kernel drops them.
    fn confirm_stale(&mut self) {
        let stale = match self.dumper.stale_neighbors(self.ifindex) {
            Ok(stale) => stale,
            Err(e) => {
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "neighbour watcher: stale check failed");
                return;
            }
        };
        for ip in stale {
            if let Err(e) = self.dumper.use_neighbor(self.ifindex, ip) {
                // The entry may have gone meanwhile (ENOENT): nothing to confirm.
                tracing::debug!(%ip, error = %e, "neighbour watcher: NTF_USE failed");
            }
        }
    }

    /// Re-dumps everything and sends it as one snapshot. Returns false to retry later.
    fn resync(&mut self) -> Result<bool, Closed> {
        let result = self.dumper.links().and_then(|links| {
            let snapshot = self.dumper.snapshot(self.ifindex, &links)?;
            Ok((links, snapshot))
        });
        match result {
            Ok((links, snapshot)) => {
                self.link_flags = links.iter().map(|l| (l.index, l.state_flags())).collect();
                self.shared.resyncs.fetch_add(1, Ordering::Relaxed);
                match snapshot {
                    Some(snapshot) => self.send(Update::Snapshot(Box::new(snapshot)))?,
                    None => self.send(Update::LinkGone)?,
                }
                Ok(true)
            }
            Err(e) => {
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "neighbour watcher: re-dump failed; retrying");
                Ok(false)
            }
        }
    }

    fn send(&self, update: Update) -> Result<(), Closed> {
        // Blocks while the owner's queue is full; events then pile up in the socket and an
        // overflow (ENOBUFS) turns into one re-dump, so memory stays bounded.
        self.tx.send(update).map_err(|_| Closed)
    }

    /// Reads every queued event datagram. Returns whether a re-dump is needed.
    fn drain(&mut self) -> Result<bool, Closed> {
        let mut resync = false;
        loop {
            let mut updates = Vec::new();
            let received = self
                .events
                .recv::<u16, Buffer>()
                .map(|(iter, _groups)| iter.collect::<Vec<_>>());
            match received {
                Ok(msgs) => {
                    for msg in msgs {
                        match msg {
                            Ok(msg) => {
                                if let Some(update) = self.event(&msg, &mut resync) {
                                    updates.push(update);
                                }
                            }
                            Err(e) => {
                                // The rest of this datagram is unreadable: start over.
                                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(error = %e, "neighbour watcher: bad netlink message");
                                resync = true;
                            }
                        }
                    }
                }
                Err(SocketError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(resync)
                }
                Err(SocketError::Io(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::debug!("neighbour watcher: events lost (ENOBUFS); re-dumping");
                    resync = true;
                }
                Err(e) => {
                    self.shared.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "neighbour watcher: netlink receive failed");
                    return Ok(true);
                }
            }
            for update in updates {
                self.send(update)?;
            }
        }
    }

    /// One event message as an update for the owner, if it concerns the table.
    fn event(&mut self, msg: &Nlmsghdr<u16, Buffer>, resync: &mut bool) -> Option<Update> {
        let payload: &[u8] = msg.get_payload()?.as_ref();
        let ty = *msg.nl_type();
        let parsed = match ty {
            RTM_NEWNEIGH | RTM_DELNEIGH => parse_neighbor(payload, self.ifindex).map(|n| {
                n.map(|(ip, mac)| Update::Neighbor {
                    ip,
                    mac: if ty == RTM_DELNEIGH { None } else { mac },
                })
            }),
            RTM_NEWROUTE => parse_route(payload, self.ifindex).map(|r| {
                r.map(|route| Update::RouteAdded {
                    route,
                    replace: msg.nl_flags().contains(NlmF::REPLACE),
                })
            }),
            RTM_DELROUTE => parse_route(payload, self.ifindex).map(|r| r.map(Update::RouteDeleted)),
            RTM_NEWLINK | RTM_DELLINK => parse_link(payload).map(|link| {
                let known = if ty == RTM_DELLINK {
                    self.link_flags.remove(&link.index)
                } else {
                    self.link_flags.insert(link.index, link.state_flags())
                };
                if known.is_some_and(|old| ty == RTM_DELLINK || old != link.state_flags()) {
                    *resync = true;
                }
                if link.index != self.ifindex {
                    None
                } else if ty == RTM_DELLINK {
                    Some(Update::LinkGone)
                } else {
                    // Not Ethernet any more (cannot happen to a live index): treat as gone.
                    Some(link.info().map_or(Update::LinkGone, Update::Link))
                }
            }),
            _ => Ok(None),
        };
        parsed.unwrap_or_else(|e| {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, ty, "neighbour watcher: cannot parse an event; re-dumping");
            *resync = true;
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn nexthop(flags: u8, ifindex: u32, attrs: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((8 + attrs.len()) as u16).to_ne_bytes());
        v.push(flags);
        v.push(0);
        v.extend_from_slice(&ifindex.to_ne_bytes());
        v.extend_from_slice(attrs);
        v
    }

    #[test]
    fn multipath_prefers_a_live_hop_through_us() {
        let mut mp = nexthop(0, 3, &attr(RTA_GATEWAY, &[198, 18, 0, 3]));
        mp.extend(nexthop(
            RTNH_F_DEAD as u8,
            7,
            &attr(RTA_GATEWAY, &[198, 18, 0, 7]),
        ));
        mp.extend(nexthop(0, 7, &attr(RTA_GATEWAY, &[198, 18, 0, 8])));
        assert_eq!(
            pick_nexthop(&mp, 7),
            Some((7, Some("198.18.0.8".parse().unwrap())))
        );
        assert_eq!(
            pick_nexthop(&mp, 9),
            Some((3, Some("198.18.0.3".parse().unwrap())))
        );
        // RTA_VIA: an IPv6 gateway for an IPv4 route.
        let mut via = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        via.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        let mp = nexthop(0, 7, &attr(RTA_VIA, &via));
        assert_eq!(
            pick_nexthop(&mp, 7),
            Some((7, Some("fe80::1".parse().unwrap())))
        );
        // Truncated input ends the walk instead of panicking.
        assert_eq!(pick_nexthop(&mp[..mp.len() - 3], 7), None);
        assert_eq!(pick_nexthop(&[], 7), None);
    }
}
