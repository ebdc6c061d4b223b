//! Frames to send: Ethernet [+ one 802.1Q tag] + IPv4/IPv6 + UDP, written in place.

use std::net::SocketAddr;

use etherparse::{
    EtherType, Ethernet2Header, IpDscp, IpEcn, IpFragOffset, IpNumber, Ipv4Header, Ipv4Options,
    Ipv6FlowLabel, Ipv6Header, SingleVlanHeader, UdpHeader, VlanId, VlanPcp,
};

use super::checksum;
use super::{ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN, UDP_HEADER_LEN, VLAN_TAG_LEN};
use crate::datapath::Ecn;

/// A TTL / hop limit for callers without a better one (Linux's default).
pub const DEFAULT_TTL: u8 = 64;

/// Everything in a frame except the payload. `src` and `dst` must be of one address family.
///
/// IPv4-mapped IPv6 addresses are not converted: a `SocketAddr::V6` always gives an IPv6
/// header. The IPv6 flow label and the DSCP are always 0; `flowinfo` and `scope_id` are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// An 802.1Q tag with this VLAN id (0..=4095) and priority 0, or no tag.
    pub vlan: Option<u16>,
    /// Our address and UDP port.
    pub src: SocketAddr,
    /// The peer's address and UDP port.
    pub dst: SocketAddr,
    pub ecn: Option<Ecn>,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
}

/// Why [`write_frame`] wrote nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("frame buffer too small: {needed} bytes needed, {available} available")]
    BufferTooSmall { needed: usize, available: usize },
    #[error("source and destination addresses are of different families")]
    AddressFamilyMismatch,
    #[error("a {len}-byte payload does not fit in one UDP datagram")]
    PayloadTooLarge { len: usize },
    #[error("VLAN id {0} is out of range (0..=4095)")]
    BadVlanId(u16),
}

/// The bytes [`write_frame`] puts before the payload for an IPv6 (else IPv4) datagram, with or
/// without a VLAN tag.
pub const fn header_len_for(ipv6: bool, vlan: bool) -> usize {
    let ip = if ipv6 {
        IPV6_HEADER_LEN
    } else {
        IPV4_HEADER_LEN
    };
    let tag = if vlan { VLAN_TAG_LEN } else { 0 };
    ETHERNET_HEADER_LEN + tag + ip + UDP_HEADER_LEN
}

/// The bytes [`write_frame`] puts before the payload for `hdr` (its family is `hdr.dst`'s).
pub fn header_len(hdr: &FrameHeader) -> usize {
    header_len_for(hdr.dst.is_ipv6(), hdr.vlan.is_some())
}

/// Writes `hdr` and `payload` as one frame at the start of `out` and returns the frame's length.
/// Nothing after that length is touched; on error nothing is written at all. The payload is
/// copied once and summed once for the UDP checksum.
///
/// IPv4 headers have no options, DF set and identification 0; the ECN bits go in the TOS /
/// traffic class; the IPv4 header checksum and the UDP checksum (both families) are computed.
///
/// # Errors
///
/// [`BuildError::AddressFamilyMismatch`] when `hdr.src` and `hdr.dst` differ in family,
/// [`BuildError::BadVlanId`] for an id above 4095, [`BuildError::PayloadTooLarge`] when the
/// datagram would not fit the 16-bit IP / UDP length fields, [`BuildError::BufferTooSmall`]
/// when `out` is shorter than [`header_len`] + `payload.len()`.
pub fn write_frame(out: &mut [u8], hdr: &FrameHeader, payload: &[u8]) -> Result<usize, BuildError> {
    let addrs = match (hdr.src, hdr.dst) {
        (SocketAddr::V4(src), SocketAddr::V4(dst)) => {
            Addrs::V4(src.ip().octets(), dst.ip().octets())
        }
        (SocketAddr::V6(src), SocketAddr::V6(dst)) => {
            Addrs::V6(src.ip().octets(), dst.ip().octets())
        }
        _ => return Err(BuildError::AddressFamilyMismatch),
    };
    let ipv6 = matches!(addrs, Addrs::V6(..));
    let vlan = match hdr.vlan {
        Some(id) => Some(VlanId::try_new(id).map_err(|_| BuildError::BadVlanId(id))?),
        None => None,
    };
    // The UDP length and the IPv6 payload length are 16 bits; so is the IPv4 total length.
    let max_udp_len = usize::from(u16::MAX) - if ipv6 { 0 } else { IPV4_HEADER_LEN };
    if UDP_HEADER_LEN + payload.len() > max_udp_len {
        return Err(BuildError::PayloadTooLarge { len: payload.len() });
    }
    let udp_len = (UDP_HEADER_LEN + payload.len()) as u16;
    let header_len = header_len_for(ipv6, vlan.is_some());
    let frame_len = header_len + payload.len();
    if out.len() < frame_len {
        return Err(BuildError::BufferTooSmall {
            needed: frame_len,
            available: out.len(),
        });
    }
    let (headers, rest) = out.split_at_mut(header_len);
    rest[..payload.len()].copy_from_slice(payload);

    let ether_type = if ipv6 {
        EtherType::IPV6
    } else {
        EtherType::IPV4
    };
    let (eth_bytes, headers) = headers.split_at_mut(ETHERNET_HEADER_LEN);
    let eth = Ethernet2Header {
        source: hdr.src_mac,
        destination: hdr.dst_mac,
        ether_type: if vlan.is_some() {
            EtherType::VLAN_TAGGED_FRAME
        } else {
            ether_type
        },
    };
    eth_bytes.copy_from_slice(&eth.to_bytes());
    let headers = match vlan {
        Some(vlan_id) => {
            let (tag_bytes, headers) = headers.split_at_mut(VLAN_TAG_LEN);
            let tag = SingleVlanHeader {
                pcp: VlanPcp::ZERO,
                drop_eligible_indicator: false,
                vlan_id,
                ether_type,
            };
            tag_bytes.copy_from_slice(&tag.to_bytes());
            headers
        }
        None => headers,
    };
    let (ip_bytes, udp_bytes) = headers.split_at_mut(headers.len() - UDP_HEADER_LEN);

    let ecn = match hdr.ecn {
        None => IpEcn::NotEct,
        Some(Ecn::Ect0) => IpEcn::Ect0,
        Some(Ecn::Ect1) => IpEcn::Ect1,
        Some(Ecn::Ce) => IpEcn::CongestionExperienced,
    };
    let pseudo = match addrs {
        Addrs::V4(source, destination) => {
            let mut ip = Ipv4Header {
                dscp: IpDscp::ZERO,
                ecn,
                total_len: IPV4_HEADER_LEN as u16 + udp_len,
                identification: 0,
                dont_fragment: true,
                more_fragments: false,
                fragment_offset: IpFragOffset::ZERO,
                time_to_live: hdr.ttl,
                protocol: IpNumber::UDP,
                header_checksum: 0,
                source,
                destination,
                options: Ipv4Options::default(),
            };
            ip.header_checksum = ip.calc_header_checksum();
            ip_bytes.copy_from_slice(&ip.to_bytes());
            checksum::udp_pseudo_header_v4(source, destination, udp_len)
        }
        Addrs::V6(source, destination) => {
            let ip = Ipv6Header {
                traffic_class: ecn.value(),
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: udp_len,
                next_header: IpNumber::UDP,
                hop_limit: hdr.ttl,
                source,
                destination,
            };
            ip_bytes.copy_from_slice(&ip.to_bytes());
            checksum::udp_pseudo_header_v6(source, destination, u32::from(udp_len))
        }
    };
    let mut udp = UdpHeader {
        source_port: hdr.src.port(),
        destination_port: hdr.dst.port(),
        length: udp_len,
        checksum: 0,
    };
    // Header (checksum 0) then payload: the header is 8 bytes, so the two sums chain.
    let sum = checksum::sum(&udp.to_bytes(), pseudo);
    let sum = checksum::sum(payload, sum);
    // 0 means "no checksum" on the wire; the same sum in one's complement is 0xffff (RFC 768).
    udp.checksum = match !checksum::fold(sum) {
        0 => 0xffff,
        c => c,
    };
    udp_bytes.copy_from_slice(&udp.to_bytes());
    Ok(frame_len)
}

enum Addrs {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}
