//! Received frames: Ethernet [+ one VLAN tag] + IPv4/IPv6 + UDP, checked and borrowed.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use etherparse::err::{ipv4, ipv6};
use etherparse::{
    EtherType, Ethernet2HeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice,
    SingleVlanHeaderSlice, UdpHeaderSlice,
};

use super::checksum;
use super::{ETHERNET_HEADER_LEN, IPV6_HEADER_LEN, UDP_HEADER_LEN, VLAN_TAG_LEN};
use crate::datapath::{Ecn, RxMeta};

/// One UDP datagram found in a frame. Everything is copied out except the payload, which
/// borrows the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// The VLAN id (12 bits) of the frame's one 802.1Q / 802.1ad tag; `Some(0)` for a
    /// priority-only tag. The tag's priority and DEI bits are not kept.
    pub vlan: Option<u16>,
    /// The peer: IP source address and UDP source port.
    pub src: SocketAddr,
    /// Us: IP destination address and UDP destination port.
    pub dst: SocketAddr,
    pub ecn: Option<Ecn>,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// The UDP payload, exactly as long as the UDP length field says (padding excluded).
    pub payload: &'a [u8],
    /// The UDP checksum field held the partial form a sender's kernel leaves for offload
    /// (accepted only with [`Checksums::TrustPartial`]).
    pub checksum_offloaded: bool,
}

/// Which received UDP checksums a backend accepts (`xdp.rx_checksum`): the policy, which a
/// backend resolves to [`Checksums`] for the interface it serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumPolicy {
    /// Trust the partial form on veth, whose peer's kernel offloads UDP checksums by default
    /// (every container interface); verify fully everywhere else.
    #[default]
    Auto,
    /// Verify every checksum fully, as from a wire.
    Verify,
    /// Trust the partial form on any interface.
    #[serde(alias = "trust_offload")]
    TrustOffload,
}

/// How [`parse_with`] treats the UDP checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksums {
    /// Every UDP checksum must be complete and correct, as from a wire.
    Verify,
    /// Also accept the partial form: the pseudo-header sum alone, which a veth peer's kernel
    /// leaves in the field when it offloads the checksum (CHECKSUM_PARTIAL). The receiving
    /// kernel trusts such frames, as they never left the host; AEAD protects QUIC's payload.
    TrustPartial,
}

impl Datagram<'_> {
    /// What the driver needs to know about this datagram (one datagram: `stride` is its length).
    pub fn rx_meta(&self) -> RxMeta {
        RxMeta {
            src: self.src,
            dst_ip: Some(self.dst.ip()),
            dst_port: self.dst.port(),
            ecn: self.ecn,
            stride: self.payload.len(),
        }
    }
}

/// Why [`parse`] refused a frame: one variant per drop counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum ParseError {
    /// The frame (or the IP payload its length field declares) ends inside a header.
    #[error("frame truncated inside a header")]
    Truncated,
    /// The EtherType is neither IPv4 nor IPv6 (ARP, LLDP, ...).
    #[error("not an IP packet")]
    NotIp,
    /// The IP version nibble disagrees with the EtherType.
    #[error("IP version does not match the EtherType")]
    BadIpVersion,
    /// A second VLAN tag follows the first (QinQ).
    #[error("more than one VLAN tag")]
    TooManyVlanTags,
    /// A length field is impossible: IPv4 IHL < 5, total length shorter than the header or
    /// longer than the frame, IPv6 payload length longer than the frame, UDP length < 8 or longer
    /// than the IP payload.
    #[error("inconsistent length field")]
    BadLength,
    /// An IPv4 fragment (MF set or offset non-zero).
    #[error("IPv4 fragment")]
    Fragment,
    /// IPv6 with an extension header (hop-by-hop, routing, fragment, ESP, AH, ...) after the
    /// fixed header.
    #[error("IPv6 extension header")]
    Ipv6ExtensionHeader,
    /// IP, but the transport is not UDP (TCP, ICMP, ...).
    #[error("not a UDP packet")]
    NotUdp,
    /// The IPv4 header checksum does not verify.
    #[error("bad IPv4 header checksum")]
    BadIpChecksum,
    /// The UDP checksum does not verify.
    #[error("bad UDP checksum")]
    BadUdpChecksum,
    /// An IPv6 UDP datagram with checksum 0, which IPv6 forbids (RFC 8200 8.1).
    #[error("IPv6 UDP datagram without checksum")]
    MissingUdpChecksum,
    /// IPv6 with an IPv4-mapped source or destination (`::ffff:a.b.c.d`), which never appears
    /// on the wire (RFC 4291 2.5.5.2): it would pass for the IPv4 address it embeds.
    #[error("IPv6 packet with an IPv4-mapped address")]
    Ipv4MappedAddress,
}

// A variant added after the last one must grow COUNT and ALL (ParseCounters indexes by it).
const _: () = assert!(ParseError::Ipv4MappedAddress as usize + 1 == ParseError::COUNT);

impl ParseError {
    /// How many reasons there are.
    pub const COUNT: usize = 12;

    /// Every reason, in declaration order (`ALL[e as usize] == e`).
    pub const ALL: [ParseError; Self::COUNT] = [
        Self::Truncated,
        Self::NotIp,
        Self::BadIpVersion,
        Self::TooManyVlanTags,
        Self::BadLength,
        Self::Fragment,
        Self::Ipv6ExtensionHeader,
        Self::NotUdp,
        Self::BadIpChecksum,
        Self::BadUdpChecksum,
        Self::MissingUdpChecksum,
        Self::Ipv4MappedAddress,
    ];

    /// A stable snake_case name for metrics and logs.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::NotIp => "not_ip",
            Self::BadIpVersion => "bad_ip_version",
            Self::TooManyVlanTags => "too_many_vlan_tags",
            Self::BadLength => "bad_length",
            Self::Fragment => "fragment",
            Self::Ipv6ExtensionHeader => "ipv6_extension_header",
            Self::NotUdp => "not_udp",
            Self::BadIpChecksum => "bad_ip_checksum",
            Self::BadUdpChecksum => "bad_udp_checksum",
            Self::MissingUdpChecksum => "missing_udp_checksum",
            Self::Ipv4MappedAddress => "ipv4_mapped_address",
        }
    }

    /// This reason's index in [`ParseError::ALL`] and in [`ParseCounters`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One drop counter per [`ParseError`] reason (keep one per queue / thread and merge).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ParseCounters {
    counts: [u64; ParseError::COUNT],
}

impl ParseCounters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one frame dropped for `reason`.
    #[inline]
    pub fn record(&mut self, reason: ParseError) {
        self.counts[reason.index()] += 1;
    }

    /// Frames dropped for `reason` so far.
    pub fn get(&self, reason: ParseError) -> u64 {
        self.counts[reason.index()]
    }

    /// Frames dropped for any reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &ParseCounters) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
    }

    /// `(name, count)` for every reason, in [`ParseError::ALL`] order, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ParseError::ALL
            .iter()
            .zip(self.counts)
            .map(|(reason, count)| (reason.name(), count))
    }
}

impl fmt::Debug for ParseCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

const VLAN_TPIDS: [EtherType; 2] = [EtherType::VLAN_TAGGED_FRAME, EtherType::PROVIDER_BRIDGING];

/// Parses an Ethernet frame (without FCS) carrying one UDP datagram, verifying checksums and
/// lengths. Bytes after the IP packet (Ethernet padding) are ignored. Does not allocate.
///
/// # Errors
///
/// The first fault found, checking in this order: Ethernet header and VLAN tag
/// ([`ParseError::Truncated`], [`ParseError::TooManyVlanTags`], [`ParseError::NotIp`]); IP
/// header present, version, IHL; the IPv4 header checksum, before any other field is trusted;
/// IP length against the frame; fragment; IPv6 extension header; transport protocol; UDP header
/// present; UDP length; UDP checksum.
pub fn parse(frame: &[u8]) -> Result<Datagram<'_>, ParseError> {
    parse_with(frame, Checksums::Verify)
}

/// [`parse`], with the UDP checksum treated as `checksums` says.
///
/// # Errors
///
/// As [`parse`].
pub fn parse_with(frame: &[u8], checksums: Checksums) -> Result<Datagram<'_>, ParseError> {
    let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| ParseError::Truncated)?;
    let mut ether_type = eth.ether_type();
    let mut l3 = &frame[ETHERNET_HEADER_LEN..];
    let mut vlan = None;
    if VLAN_TPIDS.contains(&ether_type) {
        let tag = SingleVlanHeaderSlice::from_slice(l3).map_err(|_| ParseError::Truncated)?;
        vlan = Some(tag.vlan_identifier().value());
        ether_type = tag.ether_type();
        l3 = &l3[VLAN_TAG_LEN..];
        if VLAN_TPIDS.contains(&ether_type) || ether_type == EtherType::VLAN_DOUBLE_TAGGED_FRAME {
            return Err(ParseError::TooManyVlanTags);
        }
    }

    let ip = match ether_type {
        EtherType::IPV4 => parse_ipv4(l3)?,
        EtherType::IPV6 => parse_ipv6(l3)?,
        _ => return Err(ParseError::NotIp),
    };

    let udp = UdpHeaderSlice::from_slice(ip.payload).map_err(|_| ParseError::Truncated)?;
    let udp_len = usize::from(udp.length());
    // Shorter than the IP payload is accepted: the datagram ends where UDP says.
    if udp_len < UDP_HEADER_LEN || udp_len > ip.payload.len() {
        return Err(ParseError::BadLength);
    }
    let segment = &ip.payload[..udp_len];
    let mut checksum_offloaded = false;
    if udp.checksum() == 0 {
        if matches!(ip.src, IpAddr::V6(_)) {
            return Err(ParseError::MissingUdpChecksum);
        }
    } else {
        // The UDP length field is 16 bits and `segment` is exactly that long.
        let pseudo =
            pseudo_header_sum(&ip, segment.len() as u16).ok_or(ParseError::BadIpVersion)?;
        if checksum::fold(checksum::sum(segment, pseudo)) != 0xffff {
            // The partial form: the field holds the folded pseudo-header sum, uncomplemented.
            checksum_offloaded =
                checksums == Checksums::TrustPartial && udp.checksum() == checksum::fold(pseudo);
            if !checksum_offloaded {
                return Err(ParseError::BadUdpChecksum);
            }
        }
    }

    Ok(Datagram {
        src_mac: eth.source(),
        dst_mac: eth.destination(),
        vlan,
        src: SocketAddr::new(ip.src, udp.source_port()),
        dst: SocketAddr::new(ip.dst, udp.destination_port()),
        ecn: Ecn::from_bits(ip.tos),
        ttl: ip.ttl,
        payload: &segment[UDP_HEADER_LEN..],
        checksum_offloaded,
    })
}

/// The IP layer's findings: addresses, TOS / traffic class, TTL and the UDP segment's bytes
/// (the IP payload as its length field declares it).
struct IpPart<'a> {
    src: IpAddr,
    dst: IpAddr,
    tos: u8,
    ttl: u8,
    payload: &'a [u8],
}

fn parse_ipv4(l3: &[u8]) -> Result<IpPart<'_>, ParseError> {
    let ip = Ipv4HeaderSlice::from_slice(l3).map_err(|e| match e {
        ipv4::HeaderSliceError::Len(_) => ParseError::Truncated,
        ipv4::HeaderSliceError::Content(ipv4::HeaderError::UnexpectedVersion { .. }) => {
            ParseError::BadIpVersion
        }
        ipv4::HeaderSliceError::Content(ipv4::HeaderError::HeaderLengthSmallerThanHeader {
            ..
        }) => ParseError::BadLength,
    })?;
    let header = ip.slice();
    // Before trusting any other field: a header that sums to 0xffff (all ones) is intact.
    // Our sum, not etherparse's carry-chained one: this runs once per received frame.
    if checksum::fold(checksum::sum(header, 0)) != 0xffff {
        return Err(ParseError::BadIpChecksum);
    }
    let total_len = usize::from(ip.total_len());
    if total_len < header.len() || total_len > l3.len() {
        return Err(ParseError::BadLength);
    }
    if ip.is_fragmenting_payload() {
        return Err(ParseError::Fragment);
    }
    if ip.protocol() != IpNumber::UDP {
        return Err(ParseError::NotUdp);
    }
    Ok(IpPart {
        src: IpAddr::V4(ip.source_addr()),
        dst: IpAddr::V4(ip.destination_addr()),
        tos: header[1],
        ttl: ip.ttl(),
        payload: &l3[header.len()..total_len],
    })
}

fn parse_ipv6(l3: &[u8]) -> Result<IpPart<'_>, ParseError> {
    let ip = Ipv6HeaderSlice::from_slice(l3).map_err(|e| match e {
        ipv6::HeaderSliceError::Len(_) => ParseError::Truncated,
        ipv6::HeaderSliceError::Content(ipv6::HeaderError::UnexpectedVersion { .. }) => {
            ParseError::BadIpVersion
        }
    })?;
    let end = IPV6_HEADER_LEN + usize::from(ip.payload_length());
    if end > l3.len() {
        return Err(ParseError::BadLength);
    }
    match ip.next_header() {
        IpNumber::UDP => {}
        next if is_ipv6_extension_header(next) => return Err(ParseError::Ipv6ExtensionHeader),
        _ => return Err(ParseError::NotUdp),
    }
    let (src, dst) = (ip.source_addr(), ip.destination_addr());
    if src.to_ipv4_mapped().is_some() || dst.to_ipv4_mapped().is_some() {
        return Err(ParseError::Ipv4MappedAddress);
    }
    Ok(IpPart {
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        tos: ip.traffic_class(),
        ttl: ip.hop_limit(),
        payload: &l3[IPV6_HEADER_LEN..end],
    })
}

/// The IPv6 extension headers of the IANA registry (the same list as the XDP program's).
fn is_ipv6_extension_header(next: IpNumber) -> bool {
    matches!(
        next,
        IpNumber::IPV6_HEADER_HOP_BY_HOP
            | IpNumber::IPV6_ROUTE_HEADER
            | IpNumber::IPV6_FRAGMENTATION_HEADER
            | IpNumber::ENCAPSULATING_SECURITY_PAYLOAD
            | IpNumber::AUTHENTICATION_HEADER
            | IpNumber::IPV6_DESTINATION_OPTIONS
            | IpNumber::MOBILITY_HEADER
            | IpNumber::HIP
            | IpNumber::SHIM6
            | IpNumber::EXPERIMENTAL_AND_TESTING_0
            | IpNumber::EXPERIMENTAL_AND_TESTING_1
    )
}

/// The UDP pseudo-header's sum (addresses, protocol, UDP length `len`), unfolded. A segment is
/// intact when the one's-complement sum of it (checksum field included) and this is all ones.
fn pseudo_header_sum(ip: &IpPart<'_>, len: u16) -> Option<u64> {
    match (ip.src, ip.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => Some(checksum::udp_pseudo_header_v4(
            src.octets(),
            dst.octets(),
            len,
        )),
        (IpAddr::V6(src), IpAddr::V6(dst)) => Some(checksum::udp_pseudo_header_v6(
            src.octets(),
            dst.octets(),
            u32::from(len),
        )),
        // One IP header never holds two families (parse_ipv4/6 build both from one header).
        _ => None,
    }
}
