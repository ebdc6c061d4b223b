//! The registered buffer region and the bytes RIO reads and writes in it: socket addresses
//! (`SOCKADDR_INET`) and control data (`RIO_CMSG_BUFFER` followed by `WSACMSGHDR` entries).
//!
//! Plain Rust over byte slices, with the 64-bit Windows layouts spelled out (and checked
//! against windows-sys in `sys.rs` on Windows), so all of it is unit-tested on Linux.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::datapath::Ecn;

/// A receive slot that holds one datagram: any UDP payload quixd accepts (the QUIC max UDP
/// payload is clamped to this when offloads are off).
pub const DATAGRAM_SLOT: u32 = 2048;
/// A slot that holds a coalesced receive or a segmented send: a whole UDP message.
pub const COALESCED_SLOT: u32 = 65536;
/// The largest coalesced receive asked for (`UDP_RECV_MAX_COALESCED_SIZE`): 64 KiB less the
/// UDP header, as MsQuic does.
pub const MAX_COALESCED_RECEIVE: u32 = 65535 - 8;

/// `sizeof(SOCKADDR_INET)`.
pub const SOCKADDR_INET_LEN: u32 = 28;
/// Address slots are rounded up so each starts 8-byte aligned.
pub const ADDR_SLOT: u32 = 32;
/// Control slots: RIO_CMSG_BUFFER + IPV6_PKTINFO + ECN + UDP_COALESCED_INFO fit in 96 bytes.
pub const CONTROL_SLOT: u32 = 128;

// Winsock values (ws2def.h, ws2ipdef.h). Checked against windows-sys in sys.rs.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 23;
pub const IPPROTO_IP: i32 = 0;
pub const IPPROTO_IPV6: i32 = 41;
pub const IPPROTO_UDP: i32 = 17;
pub const IP_PKTINFO: i32 = 19;
pub const IPV6_PKTINFO: i32 = 19;
pub const IP_ECN: i32 = 50;
pub const IPV6_ECN: i32 = 50;
pub const UDP_SEND_MSG_SIZE: i32 = 2;
pub const UDP_COALESCED_INFO: i32 = 3;

/// `sizeof(WSACMSGHDR)` on 64-bit Windows: `SIZE_T cmsg_len; INT cmsg_level; INT cmsg_type`.
pub const CMSG_HDR_LEN: usize = 16;
/// `RIO_CMSG_BASE_SIZE`: the `RIO_CMSG_BUFFER { ULONG TotalLength }` header, aligned.
pub const RIO_CMSG_BASE: usize = 8;
const IN_PKTINFO_LEN: usize = 8;
const IN6_PKTINFO_LEN: usize = 20;

/// `WSA_CMSGHDR_ALIGN` / `WSA_CMSGDATA_ALIGN` on 64-bit Windows.
const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// `WSA_CMSG_SPACE(len)`.
pub const fn cmsg_space(len: usize) -> usize {
    CMSG_HDR_LEN + align8(len)
}

/// A part of the registered region: what a `RIO_BUF` names besides the buffer id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufRange {
    pub offset: u32,
    pub len: u32,
}

impl BufRange {
    pub fn end(&self) -> u64 {
        u64::from(self.offset) + u64::from(self.len)
    }

    pub fn overlaps(&self, other: &BufRange) -> bool {
        u64::from(self.offset) < other.end() && u64::from(other.offset) < self.end()
    }

    pub fn with_len(self, len: u32) -> BufRange {
        debug_assert!(len <= self.len);
        BufRange {
            offset: self.offset,
            len: len.min(self.len),
        }
    }
}

/// Receive or send slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pool {
    Rx,
    Tx,
}

/// Where every slot's payload, address and control data lie in the one registered region:
/// all payloads first (so each keeps its size alignment), then the addresses, then the
/// control buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub rx_slots: u32,
    pub rx_payload: u32,
    pub tx_slots: u32,
    pub tx_payload: u32,
}

impl Layout {
    /// Checks that the region fits RIO's 32-bit offsets.
    pub fn new(
        rx_slots: u32,
        rx_payload: u32,
        tx_slots: u32,
        tx_payload: u32,
    ) -> Result<Self, String> {
        let l = Layout {
            rx_slots,
            rx_payload,
            tx_slots,
            tx_payload,
        };
        if l.total_len_u64() > u64::from(u32::MAX) {
            return Err(format!(
                "{rx_slots} receive slots of {rx_payload} bytes and {tx_slots} send slots of \
                 {tx_payload} bytes need {} bytes; a registered buffer addresses at most 4 GiB",
                l.total_len_u64()
            ));
        }
        Ok(l)
    }

    fn slots(&self) -> u64 {
        u64::from(self.rx_slots) + u64::from(self.tx_slots)
    }

    fn payload_bytes(&self) -> u64 {
        u64::from(self.rx_slots) * u64::from(self.rx_payload)
            + u64::from(self.tx_slots) * u64::from(self.tx_payload)
    }

    fn total_len_u64(&self) -> u64 {
        self.payload_bytes() + self.slots() * u64::from(ADDR_SLOT + CONTROL_SLOT)
    }

    /// Bytes to allocate and register.
    pub fn total_len(&self) -> usize {
        self.total_len_u64() as usize
    }

    /// The slot's index among all slots (receive slots first).
    fn index(&self, pool: Pool, slot: u32) -> u64 {
        match pool {
            Pool::Rx => {
                debug_assert!(slot < self.rx_slots);
                u64::from(slot)
            }
            Pool::Tx => {
                debug_assert!(slot < self.tx_slots);
                u64::from(self.rx_slots) + u64::from(slot)
            }
        }
    }

    pub fn payload_capacity(&self, pool: Pool) -> u32 {
        match pool {
            Pool::Rx => self.rx_payload,
            Pool::Tx => self.tx_payload,
        }
    }

    pub fn data(&self, pool: Pool, slot: u32) -> BufRange {
        let offset = match pool {
            Pool::Rx => u64::from(slot) * u64::from(self.rx_payload),
            Pool::Tx => {
                u64::from(self.rx_slots) * u64::from(self.rx_payload)
                    + u64::from(slot) * u64::from(self.tx_payload)
            }
        };
        BufRange {
            offset: offset as u32,
            len: self.payload_capacity(pool),
        }
    }

    pub fn addr(&self, pool: Pool, slot: u32) -> BufRange {
        BufRange {
            offset: (self.payload_bytes() + self.index(pool, slot) * u64::from(ADDR_SLOT)) as u32,
            len: SOCKADDR_INET_LEN,
        }
    }

    pub fn control(&self, pool: Pool, slot: u32) -> BufRange {
        let base = self.payload_bytes() + self.slots() * u64::from(ADDR_SLOT);
        BufRange {
            offset: (base + self.index(pool, slot) * u64::from(CONTROL_SLOT)) as u32,
            len: CONTROL_SLOT,
        }
    }

    /// Every range of one slot (payload, address, control).
    pub fn slot_ranges(&self, pool: Pool, slot: u32) -> [BufRange; 3] {
        [
            self.data(pool, slot),
            self.addr(pool, slot),
            self.control(pool, slot),
        ]
    }
}

/// Writes `addr` as a `SOCKADDR_INET` (zeroing the rest of the 28 bytes).
pub fn encode_sockaddr(addr: SocketAddr, out: &mut [u8]) {
    let out = &mut out[..SOCKADDR_INET_LEN as usize];
    out.fill(0);
    match addr {
        SocketAddr::V4(a) => {
            out[0..2].copy_from_slice(&AF_INET.to_le_bytes());
            out[2..4].copy_from_slice(&a.port().to_be_bytes());
            out[4..8].copy_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out[0..2].copy_from_slice(&AF_INET6.to_le_bytes());
            out[2..4].copy_from_slice(&a.port().to_be_bytes());
            out[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            out[8..24].copy_from_slice(&a.ip().octets());
            out[24..28].copy_from_slice(&a.scope_id().to_le_bytes());
        }
    }
}

/// Reads a `SOCKADDR_INET`. An IPv4-mapped IPv6 address (a dual-stack socket's IPv4 peer)
/// comes back as IPv4, which is how the driver and quinn-proto see that peer.
pub fn decode_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    if b.len() < SOCKADDR_INET_LEN as usize {
        return None;
    }
    let family = u16::from_le_bytes([b[0], b[1]]);
    let port = u16::from_be_bytes([b[2], b[3]]);
    match family {
        AF_INET => {
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(SocketAddrV4::new(ip, port).into())
        }
        AF_INET6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[8..24]);
            let ip = Ipv6Addr::from(octets);
            if let Some(v4) = ip.to_ipv4_mapped() {
                return Some(SocketAddrV4::new(v4, port).into());
            }
            let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let scope = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
            Some(SocketAddrV6::new(ip, port, flow, scope).into())
        }
        _ => None,
    }
}

/// The address to put on the wire for `dst` from a socket of `socket_v6`'s family: a
/// dual-stack IPv6 socket reaches IPv4 peers through IPv4-mapped addresses.
pub fn wire_remote(dst: SocketAddr, socket_v6: bool) -> SocketAddr {
    match dst {
        SocketAddr::V4(a) if socket_v6 => {
            SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0).into()
        }
        other => other,
    }
}

/// What a receive's control data said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvControl {
    /// Our address the datagram was sent to (IP_PKTINFO / IPV6_PKTINFO).
    pub dst_ip: Option<IpAddr>,
    /// The ECN bits (IP_ECN / IPV6_ECN); `None` for Not-ECT or when absent.
    pub ecn: Option<Ecn>,
    /// The size of each coalesced datagram (UDP_COALESCED_INFO).
    pub coalesced: Option<u32>,
}

/// The control messages (`level`, `type`, data) of a RIO control buffer (`RIO_CMSG_BUFFER`
/// then `WSACMSGHDR`s), walked like `WSA_CMSG_FIRSTHDR` / `WSA_CMSG_NXTHDR`, tolerating
/// truncation: whatever does not fit is not returned.
pub fn cmsgs(buf: &[u8]) -> impl Iterator<Item = (i32, i32, &[u8])> {
    let total = match buf.get(..4) {
        Some(b) if buf.len() >= RIO_CMSG_BASE => {
            (u32::from_le_bytes(b.try_into().unwrap()) as usize).min(buf.len())
        }
        _ => 0,
    };
    let mut at = RIO_CMSG_BASE;
    std::iter::from_fn(move || {
        // A header must fit entirely, and its data within TotalLength.
        if at + CMSG_HDR_LEN > total {
            return None;
        }
        let h = &buf[at..];
        let len = u64::from_le_bytes(h[0..8].try_into().unwrap());
        let level = i32::from_le_bytes(h[8..12].try_into().unwrap());
        let kind = i32::from_le_bytes(h[12..16].try_into().unwrap());
        if len < CMSG_HDR_LEN as u64 || len > (total - at) as u64 {
            return None;
        }
        let len = len as usize;
        let data = &buf[at + CMSG_HDR_LEN..at + len];
        at += align8(len);
        Some((level, kind, data))
    })
}

/// Writes control messages as a RIO control buffer into `buf` and returns its
/// `TotalLength`, or 0 when there are none. Panics if they do not fit `buf`.
pub fn write_cmsgs(buf: &mut [u8], msgs: &[(i32, i32, &[u8])]) -> usize {
    if msgs.is_empty() {
        return 0;
    }
    let mut at = RIO_CMSG_BASE;
    for (level, kind, data) in msgs {
        let len = CMSG_HDR_LEN + data.len();
        let h = &mut buf[at..at + cmsg_space(data.len())];
        h.fill(0);
        h[0..8].copy_from_slice(&(len as u64).to_le_bytes());
        h[8..12].copy_from_slice(&level.to_le_bytes());
        h[12..16].copy_from_slice(&kind.to_le_bytes());
        h[CMSG_HDR_LEN..len].copy_from_slice(data);
        at += cmsg_space(data.len());
    }
    buf[..RIO_CMSG_BASE].fill(0);
    buf[..4].copy_from_slice(&(at as u32).to_le_bytes());
    at
}

/// Reads a receive's control buffer.
pub fn parse_recv_control(buf: &[u8]) -> RecvControl {
    let mut out = RecvControl::default();
    for (level, kind, data) in cmsgs(buf) {
        let int = || {
            data.get(..4)
                .map(|d| u32::from_le_bytes(d.try_into().unwrap()))
        };
        match (level, kind) {
            (IPPROTO_IP, IP_PKTINFO) if data.len() >= IN_PKTINFO_LEN => {
                out.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(
                    data[0], data[1], data[2], data[3],
                )));
            }
            (IPPROTO_IPV6, IPV6_PKTINFO) if data.len() >= IN6_PKTINFO_LEN => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&data[..16]);
                out.dst_ip = Some(Ipv6Addr::from(o).to_canonical());
            }
            (IPPROTO_IP, IP_ECN) | (IPPROTO_IPV6, IPV6_ECN) => {
                out.ecn = int().and_then(|v| Ecn::from_bits(v as u8));
            }
            (IPPROTO_UDP, UDP_COALESCED_INFO) => {
                out.coalesced = int().filter(|v| *v > 0);
            }
            _ => {}
        }
    }
    out
}

/// What a send's control data says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendControl {
    /// The destination is IPv4 (also when sent IPv4-mapped through a dual-stack socket):
    /// selects IPPROTO_IP over IPPROTO_IPV6 for the options below.
    pub dst_v4: bool,
    /// Our address to send from (IP_PKTINFO / IPV6_PKTINFO).
    pub src_ip: Option<IpAddr>,
    pub ecn: Option<Ecn>,
    /// UDP_SEND_MSG_SIZE: the payload holds datagrams of this size (the last may be shorter).
    pub segment: Option<u32>,
}

/// Writes `c` as a RIO control buffer into `buf` and returns its `TotalLength`, or 0 when
/// there is nothing to say (the send then goes without a control buffer).
pub fn build_send_control(c: &SendControl, buf: &mut [u8]) -> usize {
    let mut pktinfo4 = [0u8; IN_PKTINFO_LEN]; // ipi_addr, ipi_ifindex = 0: the route decides
    let mut pktinfo6 = [0u8; IN6_PKTINFO_LEN];
    let ecn = c.ecn.map(|e| i32::from(e.bits()).to_le_bytes());
    let seg = c.segment.map(u32::to_le_bytes);
    let mut msgs: [(i32, i32, &[u8]); 3] = [(0, 0, &[]); 3];
    let mut n = 0;
    match c.src_ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(ip)) if c.dst_v4 => {
            pktinfo4[..4].copy_from_slice(&ip.octets());
            msgs[n] = (IPPROTO_IP, IP_PKTINFO, &pktinfo4);
            n += 1;
        }
        Some(IpAddr::V6(ip)) if !c.dst_v4 => {
            pktinfo6[..16].copy_from_slice(&ip.octets());
            msgs[n] = (IPPROTO_IPV6, IPV6_PKTINFO, &pktinfo6);
            n += 1;
        }
        // A source of the other family than the destination cannot be used: let the route
        // choose.
        _ => {}
    }
    if let Some(ecn) = &ecn {
        msgs[n] = if c.dst_v4 {
            (IPPROTO_IP, IP_ECN, ecn)
        } else {
            (IPPROTO_IPV6, IPV6_ECN, ecn)
        };
        n += 1;
    }
    if let Some(seg) = &seg {
        msgs[n] = (IPPROTO_UDP, UDP_SEND_MSG_SIZE, seg);
        n += 1;
    }
    write_cmsgs(buf, &msgs[..n])
}

/// One request's share of a transmit: `len` bytes at `offset`, sent with UDP_SEND_MSG_SIZE =
/// `segment` when it holds more than one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub offset: usize,
    pub len: usize,
    pub segment: Option<u32>,
}

/// Splits a transmit of `len` bytes with datagrams of `segment` bytes (`None`: one datagram)
/// into requests: with send offload, as few as fit a slot of `slot` bytes, each a whole number
/// of datagrams; without, one per datagram. Returns `None` when a single datagram does not fit
/// a slot (the transmit cannot be sent). The pieces are computed as they are iterated: no
/// allocation per transmit.
pub fn split_transmit(
    len: usize,
    segment: Option<usize>,
    offload: bool,
    slot: usize,
) -> Option<Pieces> {
    let seg = segment.filter(|s| *s > 0 && *s < len).unwrap_or(len);
    if seg > slot {
        return None;
    }
    let per_piece = if seg == len {
        len
    } else if offload {
        (slot / seg).max(1) * seg
    } else {
        seg
    };
    Some(Pieces {
        offset: 0,
        len,
        seg,
        per_piece: per_piece.max(1),
        // An empty transmit is still one (empty) request, as it always was.
        empty: len == 0,
    })
}

/// The requests of one transmit, in order (see [`split_transmit`]).
#[derive(Clone, Copy, Debug)]
pub struct Pieces {
    offset: usize,
    len: usize,
    seg: usize,
    per_piece: usize,
    empty: bool,
}

impl Iterator for Pieces {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.empty {
            self.empty = false;
            return Some(Piece {
                offset: 0,
                len: 0,
                segment: None,
            });
        }
        if self.offset >= self.len {
            return None;
        }
        let n = self.per_piece.min(self.len - self.offset);
        let piece = Piece {
            offset: self.offset,
            len: n,
            segment: (n > self.seg).then_some(self.seg as u32),
        };
        self.offset += n;
        Some(piece)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.empty) + (self.len - self.offset).div_ceil(self.per_piece);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Pieces {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_slots_are_disjoint_and_inside_the_region() {
        let l = Layout::new(3, DATAGRAM_SLOT, 2, COALESCED_SLOT).unwrap();
        let mut all = Vec::new();
        for (pool, n) in [(Pool::Rx, 3), (Pool::Tx, 2)] {
            for s in 0..n {
                for r in l.slot_ranges(pool, s) {
                    assert!(r.end() <= l.total_len() as u64, "{r:?} outside the region");
                    all.push(r);
                }
                assert_eq!(l.addr(pool, s).offset % 8, 0);
                assert_eq!(l.control(pool, s).offset % 8, 0);
            }
        }
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
        }
        assert_eq!(l.data(Pool::Tx, 1).len, COALESCED_SLOT);
        assert!(Layout::new(70_000, COALESCED_SLOT, 1, COALESCED_SLOT).is_err());
    }

    #[test]
    fn sockaddr_round_trips_and_unmaps() {
        let mut b = [0xaau8; 28];
        for a in [
            "192.0.2.7:4433",
            "[2001:db8::1]:443",
            "[fe80::1%7]:9",
            "0.0.0.0:0",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            encode_sockaddr(a, &mut b);
            assert_eq!(decode_sockaddr(&b), Some(a));
        }
        let v4: SocketAddr = "198.51.100.2:5000".parse().unwrap();
        encode_sockaddr(wire_remote(v4, true), &mut b);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), AF_INET6);
        assert_eq!(
            decode_sockaddr(&b),
            Some(v4),
            "IPv4-mapped comes back as IPv4"
        );
        assert_eq!(wire_remote(v4, false), v4);
        // The bytes as Windows lays them out: family LE, port BE, address.
        encode_sockaddr("1.2.3.4:258".parse().unwrap(), &mut b);
        assert_eq!(&b[..8], &[2, 0, 1, 2, 1, 2, 3, 4]);
        assert!(b[8..].iter().all(|x| *x == 0));
        b[0] = 99;
        assert_eq!(decode_sockaddr(&b), None);
    }

    /// A control buffer as Windows fills it for an IPv6 receive with pktinfo, ECN and
    /// coalescing: RIO_CMSG_BUFFER, then WSACMSGHDRs at 8-byte aligned offsets.
    fn windows_recv_control(v6: bool) -> Vec<u8> {
        let mut b = vec![0u8; CONTROL_SLOT as usize];
        let mut at = RIO_CMSG_BASE;
        let mut put = |b: &mut Vec<u8>, level: i32, kind: i32, data: &[u8]| {
            b[at..at + 8].copy_from_slice(&((16 + data.len()) as u64).to_le_bytes());
            b[at + 8..at + 12].copy_from_slice(&level.to_le_bytes());
            b[at + 12..at + 16].copy_from_slice(&kind.to_le_bytes());
            b[at + 16..at + 16 + data.len()].copy_from_slice(data);
            at += 16 + ((data.len() + 7) & !7);
        };
        if v6 {
            let mut pi = [0u8; 20];
            pi[..16].copy_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
            pi[16..].copy_from_slice(&3u32.to_le_bytes());
            put(&mut b, IPPROTO_IPV6, IPV6_PKTINFO, &pi);
            put(&mut b, IPPROTO_IPV6, IPV6_ECN, &3i32.to_le_bytes());
        } else {
            put(&mut b, IPPROTO_IP, IP_PKTINFO, &[10, 0, 0, 1, 3, 0, 0, 0]);
            put(&mut b, IPPROTO_IP, IP_ECN, &2i32.to_le_bytes());
        }
        put(
            &mut b,
            IPPROTO_UDP,
            UDP_COALESCED_INFO,
            &1200u32.to_le_bytes(),
        );
        let total = at as u32;
        b[..4].copy_from_slice(&total.to_le_bytes());
        b
    }

    #[test]
    fn parses_receive_control_data() {
        let c = parse_recv_control(&windows_recv_control(true));
        assert_eq!(c.dst_ip, Some("2001:db8::2".parse().unwrap()));
        assert_eq!(c.ecn, Some(Ecn::Ce));
        assert_eq!(c.coalesced, Some(1200));
        let c = parse_recv_control(&windows_recv_control(false));
        assert_eq!(c.dst_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(c.ecn, Some(Ecn::Ect0));
        // Truncated or empty buffers give what fits, never panic.
        let full = windows_recv_control(true);
        for cut in 0..full.len() {
            let mut b = full[..cut].to_vec();
            let _ = parse_recv_control(&b);
            if b.len() >= 4 {
                b[..4].copy_from_slice(&u32::MAX.to_le_bytes());
                let _ = parse_recv_control(&b);
            }
        }
        assert_eq!(parse_recv_control(&[0; 8]), RecvControl::default());
        // A v4-mapped IPV6_PKTINFO (dual-stack socket) reads as IPv4.
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(&(8u32 + 40).to_le_bytes());
        b[8..16].copy_from_slice(&36u64.to_le_bytes());
        b[16..20].copy_from_slice(&IPPROTO_IPV6.to_le_bytes());
        b[20..24].copy_from_slice(&IPV6_PKTINFO.to_le_bytes());
        b[24..40].copy_from_slice(&Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped().octets());
        assert_eq!(
            parse_recv_control(&b).dst_ip,
            Some("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn builds_send_control_data_that_parses_back() {
        let mut buf = [0xffu8; CONTROL_SLOT as usize];
        assert_eq!(build_send_control(&SendControl::default(), &mut buf), 0);
        let c = SendControl {
            dst_v4: false,
            src_ip: Some("2001:db8::5".parse().unwrap()),
            ecn: Some(Ecn::Ect0),
            segment: Some(1452),
        };
        let n = build_send_control(&c, &mut buf);
        assert_eq!(n, 8 + cmsg_space(20) + cmsg_space(4) + cmsg_space(4));
        assert!(n <= CONTROL_SLOT as usize);
        assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize, n);
        // The first header: cmsg_len = WSA_CMSG_LEN(sizeof(IN6_PKTINFO)) = 36, level, type.
        assert_eq!(u64::from_le_bytes(buf[8..16].try_into().unwrap()), 36);
        assert_eq!(i32::from_le_bytes(buf[16..20].try_into().unwrap()), 41);
        let back = parse_recv_control(&buf);
        assert_eq!(back.dst_ip, c.src_ip);
        assert_eq!(back.ecn, c.ecn);
        // IPv4 destination: IPPROTO_IP options; a v6 source for a v4 destination is dropped.
        let c4 = SendControl {
            dst_v4: true,
            src_ip: Some("::ffff:192.0.2.1".parse().unwrap()),
            ecn: Some(Ecn::Ect1),
            segment: None,
        };
        let n = build_send_control(&c4, &mut buf);
        assert_eq!(n, 8 + cmsg_space(8) + cmsg_space(4));
        let back = parse_recv_control(&buf[..n]);
        assert_eq!(back.dst_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(back.ecn, Some(Ecn::Ect1));
        let mismatched = SendControl {
            dst_v4: true,
            src_ip: Some("2001:db8::1".parse().unwrap()),
            ..SendControl::default()
        };
        assert_eq!(build_send_control(&mismatched, &mut buf), 0);
    }

    #[test]
    fn splits_transmits() {
        let split_transmit = |len, segment, offload, slot| {
            split_transmit(len, segment, offload, slot).map(|pieces| {
                let n = pieces.len();
                let all: Vec<Piece> = pieces.collect();
                assert_eq!(n, all.len(), "the exact size is right");
                all
            })
        };
        let p = |offset, len, segment| Piece {
            offset,
            len,
            segment,
        };
        // One datagram.
        assert_eq!(
            split_transmit(1200, None, true, 2048),
            Some(vec![p(0, 1200, None)])
        );
        // A segment size covering the whole buffer is one datagram.
        assert_eq!(
            split_transmit(1000, Some(1200), false, 2048),
            Some(vec![p(0, 1000, None)])
        );
        // Offload: one request while it fits a slot.
        assert_eq!(
            split_transmit(3500, Some(1200), true, 65536),
            Some(vec![p(0, 3500, Some(1200))])
        );
        // Offload, slot smaller than the batch: whole datagrams per request.
        assert_eq!(
            split_transmit(6000, Some(1200), true, 2500),
            Some(vec![
                p(0, 2400, Some(1200)),
                p(2400, 2400, Some(1200)),
                p(4800, 1200, None)
            ])
        );
        // No offload: one request per datagram, the last shorter.
        assert_eq!(
            split_transmit(2500, Some(1200), false, 2048),
            Some(vec![
                p(0, 1200, None),
                p(1200, 1200, None),
                p(2400, 100, None)
            ])
        );
        // A datagram larger than a slot cannot be sent.
        assert_eq!(
            split_transmit(0, None, true, 2048),
            Some(vec![p(0, 0, None)])
        );
        assert_eq!(split_transmit(3000, None, true, 2048), None);
        assert_eq!(split_transmit(6000, Some(3000), false, 2048), None);
    }
}
