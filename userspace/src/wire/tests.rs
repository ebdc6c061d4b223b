use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv6Header, PacketBuilder, VlanId};

use super::*;
use crate::datapath::Ecn;

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const ECNS: [Option<Ecn>; 4] = [None, Some(Ecn::Ect0), Some(Ecn::Ect1), Some(Ecn::Ce)];
const PAYLOAD_LENS: [usize; 7] = [0, 1, 2, 1199, 1200, 1472, 8952];

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
}

fn v6(s: &str, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(s.parse::<Ipv6Addr>().unwrap()), port)
}

fn hdr_v4(vlan: Option<u16>, ecn: Option<Ecn>) -> FrameHeader {
    FrameHeader {
        src_mac: SRC_MAC,
        dst_mac: DST_MAC,
        vlan,
        src: v4([192, 0, 2, 1], 4433),
        dst: v4([198, 51, 100, 200], 50123),
        ecn,
        ttl: DEFAULT_TTL,
    }
}

fn hdr_v6(vlan: Option<u16>, ecn: Option<Ecn>) -> FrameHeader {
    FrameHeader {
        src_mac: SRC_MAC,
        dst_mac: DST_MAC,
        vlan,
        src: v6("2001:db8::1", 4433),
        dst: v6("2001:db8:ffff::abcd", 61000),
        ecn,
        ttl: 255,
    }
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn build(hdr: &FrameHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0; header_len(hdr) + payload.len()];
    let len = write_frame(&mut out, hdr, payload).unwrap();
    assert_eq!(len, out.len());
    out
}

/// RFC 1071 the slow, obvious way (big-endian 16-bit words, byte by byte): a reference that
/// shares nothing with etherparse's native-endian 64-bit sum.
fn rfc1071(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        let hi = u64::from(pair[0]) << 8;
        let lo = pair.get(1).copied().map_or(0, u64::from);
        sum += hi | lo;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Where the IP header starts (after Ethernet and any VLAN tags), and whether it is IPv6 by
/// EtherType. `None` if the frame ends first.
fn l3_offset(frame: &[u8]) -> Option<(usize, bool)> {
    let mut off = 12;
    loop {
        let ether_type = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
        if !matches!(ether_type, 0x8100 | 0x88a8) {
            return Some((off + 2, ether_type == 0x86dd));
        }
        off += 4;
    }
}

/// Recomputes the IPv4 header checksum with the reference implementation (if IPv4 and the
/// header is all there). Returns where the UDP header starts.
fn fix_ip_checksum(frame: &mut [u8]) -> Option<usize> {
    let (l3, ipv6) = l3_offset(frame)?;
    if ipv6 {
        return Some(l3 + IPV6_HEADER_LEN);
    }
    let ihl = usize::from(*frame.get(l3)? & 0xf) * 4;
    if ihl < 20 || l3 + ihl > frame.len() {
        return None;
    }
    frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let c = rfc1071(&[&frame[l3..l3 + ihl]]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    Some(l3 + ihl)
}

/// Recomputes both checksums with the reference implementation, the UDP one over the UDP
/// length the header claims (clamped to the frame), so that a crafted frame's only fault is the
/// one a test put in. Leaves alone what is not there.
fn fix_checksums(frame: &mut [u8]) {
    let Some(l4) = fix_ip_checksum(frame) else {
        return;
    };
    let Some((l3, ipv6)) = l3_offset(frame) else {
        return;
    };
    if l4 + UDP_HEADER_LEN > frame.len() {
        return;
    }
    let pseudo = if ipv6 {
        frame[l3 + 8..l3 + 40].to_vec()
    } else {
        frame[l3 + 12..l3 + 20].to_vec()
    };
    let udp_len = u16::from_be_bytes([frame[l4 + 4], frame[l4 + 5]]);
    let end = (l4 + usize::from(udp_len)).clamp(l4 + UDP_HEADER_LEN, frame.len());
    frame[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
    let c = rfc1071(&[&pseudo, &[0, 17], &udp_len.to_be_bytes(), &frame[l4..end]]);
    let c = if c == 0 { 0xffff } else { c };
    frame[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
}

fn check_datagram(d: &Datagram<'_>, hdr: &FrameHeader, payload: &[u8]) {
    assert_eq!(d.src_mac, hdr.src_mac);
    assert_eq!(d.dst_mac, hdr.dst_mac);
    assert_eq!(d.vlan, hdr.vlan);
    assert_eq!(d.src, hdr.src);
    assert_eq!(d.dst, hdr.dst);
    assert_eq!(d.ecn, hdr.ecn);
    assert_eq!(d.ttl, hdr.ttl);
    assert_eq!(d.payload, payload);
}

// ---------------------------------------------------------------------------------------------
// Round trips and agreement with other implementations

#[test]
fn round_trip_every_family_vlan_ecn_and_length() {
    let mut frames = 0;
    for hdr_of in [hdr_v4 as fn(_, _) -> _, hdr_v6] {
        for vlan in [None, Some(0), Some(100), Some(4095)] {
            for ecn in ECNS {
                for len in PAYLOAD_LENS {
                    let hdr = hdr_of(vlan, ecn);
                    let data = payload(len);
                    let frame = build(&hdr, &data);
                    assert_eq!(frame.len(), header_len(&hdr) + len);
                    let d = parse(&frame).unwrap_or_else(|e| panic!("{hdr:?} len {len}: {e}"));
                    check_datagram(&d, &hdr, &data);
                    fuzz_roundtrip(&frame);
                    frames += 1;
                }
            }
        }
    }
    assert_eq!(frames, 2 * 4 * 4 * PAYLOAD_LENS.len());
}

#[test]
fn built_frames_have_the_promised_fields_and_reference_checksums() {
    for len in PAYLOAD_LENS {
        for ecn in ECNS {
            let bits = ecn.map_or(0, Ecn::bits);
            // IPv4 with a VLAN tag.
            let hdr = hdr_v4(Some(42), ecn);
            let frame = build(&hdr, &payload(len));
            assert_eq!(&frame[0..6], &DST_MAC);
            assert_eq!(&frame[6..12], &SRC_MAC);
            assert_eq!(&frame[12..18], &[0x81, 0x00, 0x00, 42, 0x08, 0x00]);
            let ip = &frame[18..38];
            assert_eq!(ip[0], 0x45, "version 4, IHL 5");
            assert_eq!(ip[1], bits, "DSCP 0, ECN bits");
            assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), 28 + len);
            assert_eq!(&ip[4..8], &[0, 0, 0x40, 0], "id 0, DF, no fragment");
            assert_eq!(ip[8], DEFAULT_TTL);
            assert_eq!(ip[9], 17);
            assert_eq!(rfc1071(&[ip]), 0, "IPv4 header checksum verifies");
            let udp = &frame[38..];
            assert_eq!(&udp[0..4], &[0x11, 0x51, 0xc3, 0xcb]);
            assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), 8 + len);
            assert_ne!(&udp[6..8], &[0, 0], "IPv4 UDP checksum is always filled in");
            let udp_len = ((8 + len) as u16).to_be_bytes();
            assert_eq!(rfc1071(&[&ip[12..20], &[0, 17], &udp_len, udp]), 0);

            // IPv6 without a tag.
            let hdr = hdr_v6(None, ecn);
            let frame = build(&hdr, &payload(len));
            assert_eq!(&frame[12..14], &[0x86, 0xdd]);
            let ip = &frame[14..54];
            assert_eq!(&ip[0..4], &[0x60 | (bits >> 4), bits << 4, 0, 0]);
            assert_eq!(usize::from(u16::from_be_bytes([ip[4], ip[5]])), 8 + len);
            assert_eq!(ip[6], 17);
            assert_eq!(ip[7], 255);
            let udp = &frame[54..];
            assert_ne!(&udp[6..8], &[0, 0]);
            assert_eq!(rfc1071(&[&ip[8..40], &[0, 17], &udp_len, udp]), 0);
        }
    }
}

/// Frames written by hand (checksums computed with Python, not with Rust) that `write_frame`
/// must reproduce byte for byte.
#[test]
fn write_frame_matches_independently_built_bytes() {
    #[rustfmt::skip]
    let v4_frame: [u8; 55] = [
        0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x08, 0x00,
        0x45, 0x01, 0x00, 0x29, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x1c, 0xb0,
        0x0a, 0x01, 0x02, 0x03, 0x0a, 0x09, 0x08, 0x07,
        0x11, 0x51, 0xc3, 0x50, 0x00, 0x15, 0xcf, 0x14,
        0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x2c, 0x20, 0x71, 0x75, 0x69, 0x63, 0x21, 0x01,
    ];
    #[rustfmt::skip]
    let v6_frame: [u8; 79] = [
        0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
        0x81, 0x00, 0x00, 0x07, 0x86, 0xdd,
        0x60, 0x20, 0x00, 0x00, 0x00, 0x15, 0x11, 0xff,
        0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x99,
        0x11, 0x51, 0xc3, 0x50, 0x00, 0x15, 0xc0, 0x54,
        0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x2c, 0x20, 0x71, 0x75, 0x69, 0x63, 0x21, 0x01,
    ];
    let data = b"hello, quic!\x01";
    let mut hdr = FrameHeader {
        src_mac: [1, 2, 3, 4, 5, 6],
        dst_mac: [0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f],
        vlan: None,
        src: v4([10, 1, 2, 3], 4433),
        dst: v4([10, 9, 8, 7], 50000),
        ecn: Some(Ecn::Ect1),
        ttl: 64,
    };
    assert_eq!(build(&hdr, data), v4_frame);
    check_datagram(&parse(&v4_frame).unwrap(), &hdr, data);

    hdr.vlan = Some(7);
    hdr.src = v6("fe80::1", 4433);
    hdr.dst = v6("2001:db8::99", 50000);
    hdr.ecn = Some(Ecn::Ect0);
    hdr.ttl = 255;
    assert_eq!(build(&hdr, data), v6_frame);
    check_datagram(&parse(&v6_frame).unwrap(), &hdr, data);
}

/// Frames from elsewhere with fields `write_frame` never sets: DSCP, IP id, VLAN priority,
/// flow label. Checksums computed with Python.
#[test]
fn parses_independently_built_frames() {
    // 802.1Q tag with PCP 5 and id 42; IPv4 TOS 0x8a (AF41, ECT(0)), id 0x1234, TTL 57.
    #[rustfmt::skip]
    let v4_frame: [u8; 59] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x81, 0x00, 0xa0, 0x2a, 0x08, 0x00,
        0x45, 0x8a, 0x00, 0x29, 0x12, 0x34, 0x40, 0x00, 0x39, 0x11, 0x42, 0xc1,
        0xc0, 0x00, 0x02, 0x0a, 0xc6, 0x33, 0x64, 0x07,
        0xd4, 0x31, 0x11, 0x51, 0x00, 0x15, 0xf0, 0x01,
        0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x2c, 0x20, 0x71, 0x75, 0x69, 0x63, 0x21, 0x01,
    ];
    let d = parse(&v4_frame).unwrap();
    assert_eq!(d.dst_mac, DST_MAC);
    assert_eq!(d.src_mac, SRC_MAC);
    assert_eq!(d.vlan, Some(42));
    assert_eq!(d.src, v4([192, 0, 2, 10], 54321));
    assert_eq!(d.dst, v4([198, 51, 100, 7], 4433));
    assert_eq!(d.ecn, Some(Ecn::Ect0));
    assert_eq!(d.ttl, 57);
    assert_eq!(d.payload, b"hello, quic!\x01");

    // IPv6 traffic class 0xbb (EF, CE), flow label 0x12345, hop limit 3.
    #[rustfmt::skip]
    let v6_frame: [u8; 75] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd,
        0x6b, 0xb1, 0x23, 0x45, 0x00, 0x15, 0x11, 0x03,
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        0x01, 0xbb, 0xea, 0x60, 0x00, 0x15, 0x7a, 0x38,
        0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x2c, 0x20, 0x71, 0x75, 0x69, 0x63, 0x21, 0x01,
    ];
    let d = parse(&v6_frame).unwrap();
    assert_eq!(d.vlan, None);
    assert_eq!(d.src, v6("2001:db8::1", 443));
    assert_eq!(d.dst, v6("2001:db8:1::2", 60000));
    assert_eq!(d.ecn, Some(Ecn::Ce));
    assert_eq!(d.ttl, 3);
    assert_eq!(d.payload, b"hello, quic!\x01");
}

/// The IPv4 header of Wikipedia's checksum example (checksum 0xb861), with a UDP datagram
/// without checksum (allowed on IPv4) filling its 115 bytes.
#[test]
fn published_ipv4_checksum_example_verifies() {
    let mut frame = vec![0u8; 14];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&[
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ]);
    frame.extend_from_slice(&[0x30, 0x39, 0x11, 0x51, 0x00, 95, 0x00, 0x00]);
    frame.extend_from_slice(&[0xab; 87]);
    let d = parse(&frame).unwrap();
    assert_eq!(d.src, v4([192, 168, 0, 1], 12345));
    assert_eq!(d.dst, v4([192, 168, 0, 199], 4433));
    assert_eq!(d.payload, &[0xab; 87][..]);
    frame[24] ^= 1; // TTL 64 -> 65 without fixing the checksum.
    assert_eq!(parse(&frame), Err(ParseError::BadIpChecksum));
}

/// etherparse's own PacketBuilder, the other implementation at hand: same bytes both ways.
#[test]
fn agrees_with_etherparse_packet_builder() {
    for len in [0, 1, 1199, 1472] {
        let data = payload(len);
        for vlan in [None, Some(9)] {
            for ecn in ECNS {
                let bits = ecn.map_or(0, Ecn::bits);
                // IPv4
                let hdr = hdr_v4(vlan, ecn);
                let mut ip = Ipv4Header::new(
                    0,
                    hdr.ttl,
                    IpNumber::UDP,
                    [192, 0, 2, 1],
                    [198, 51, 100, 200],
                )
                .unwrap();
                ip.ecn = etherparse::IpEcn::try_new(bits).unwrap();
                let base = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
                let mut theirs = Vec::new();
                let ip_headers = IpHeaders::Ipv4(ip, Default::default());
                match vlan {
                    Some(id) => base
                        .single_vlan(VlanId::try_new(id).unwrap())
                        .ip(ip_headers)
                        .udp(4433, 50123)
                        .write(&mut theirs, &data)
                        .unwrap(),
                    None => base
                        .ip(ip_headers)
                        .udp(4433, 50123)
                        .write(&mut theirs, &data)
                        .unwrap(),
                }
                assert_eq!(build(&hdr, &data), theirs, "IPv4 {vlan:?} {ecn:?} {len}");
                check_datagram(&parse(&theirs).unwrap(), &hdr, &data);

                // IPv6
                let hdr = hdr_v6(vlan, ecn);
                let SocketAddr::V6(src) = hdr.src else {
                    unreachable!()
                };
                let SocketAddr::V6(dst) = hdr.dst else {
                    unreachable!()
                };
                let ip = Ipv6Header {
                    traffic_class: bits,
                    flow_label: Default::default(),
                    payload_length: 0,
                    next_header: IpNumber::UDP,
                    hop_limit: hdr.ttl,
                    source: src.ip().octets(),
                    destination: dst.ip().octets(),
                };
                let base = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
                let mut theirs = Vec::new();
                let ip_headers = IpHeaders::Ipv6(ip, Default::default());
                match vlan {
                    Some(id) => base
                        .single_vlan(VlanId::try_new(id).unwrap())
                        .ip(ip_headers)
                        .udp(4433, 61000)
                        .write(&mut theirs, &data)
                        .unwrap(),
                    None => base
                        .ip(ip_headers)
                        .udp(4433, 61000)
                        .write(&mut theirs, &data)
                        .unwrap(),
                }
                assert_eq!(build(&hdr, &data), theirs, "IPv6 {vlan:?} {ecn:?} {len}");
                check_datagram(&parse(&theirs).unwrap(), &hdr, &data);
            }
        }
    }
}

#[test]
fn ipv4_options_are_skipped() {
    let hdr = hdr_v4(Some(3), Some(Ecn::Ce));
    let data = payload(100);
    let plain = build(&hdr, &data);
    let l3 = 18;
    // Insert 8 bytes of options (router alert + NOPs + EOL) and fix IHL and total length.
    let mut frame = plain[..l3 + 20].to_vec();
    frame.extend_from_slice(&[0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00]);
    frame.extend_from_slice(&plain[l3 + 20..]);
    frame[l3] = 0x47;
    let total = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) + 8;
    frame[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    fix_checksums(&mut frame);
    check_datagram(&parse(&frame).unwrap(), &hdr, &data);
    fuzz_roundtrip(&frame);
}

#[test]
fn ethernet_padding_is_ignored() {
    for hdr in [hdr_v4(None, None), hdr_v6(Some(5), None)] {
        for len in [0, 1, 5] {
            let data = payload(len);
            let mut frame = build(&hdr, &data);
            frame.resize(60.max(frame.len() + 3), 0);
            check_datagram(&parse(&frame).unwrap(), &hdr, &data);
        }
    }
}

#[test]
fn udp_length_shorter_than_ip_payload_trims_the_payload() {
    for hdr in [hdr_v4(None, None), hdr_v6(None, None)] {
        let mut frame = build(&hdr, &payload(64));
        let l4 = frame.len() - 64 - 8;
        frame[l4 + 4..l4 + 6].copy_from_slice(&(8u16 + 10).to_be_bytes());
        fix_checksums(&mut frame);
        assert_eq!(parse(&frame).unwrap().payload, &payload(64)[..10]);
    }
}

#[test]
fn udp_checksum_that_computes_to_zero_is_sent_as_ffff() {
    for hdr in [hdr_v4(None, None), hdr_v6(None, None)] {
        // With a zero payload word the checksum is c; a payload word of c makes the sum all
        // ones, so the computed checksum is 0 and must go out as 0xffff (0 means "none").
        let frame = build(&hdr, &[0, 0]);
        let c = &frame[frame.len() - 4..frame.len() - 2];
        let data = [c[0], c[1]];
        let frame = build(&hdr, &data);
        let l4 = frame.len() - 2 - 8;
        assert_eq!(&frame[l4 + 6..l4 + 8], &[0xff, 0xff]);
        check_datagram(&parse(&frame).unwrap(), &hdr, &data);
    }
}

#[test]
fn ipv4_udp_checksum_zero_is_accepted() {
    let hdr = hdr_v4(None, Some(Ecn::Ect0));
    let data = payload(33);
    let mut frame = build(&hdr, &data);
    frame[40..42].copy_from_slice(&[0, 0]);
    check_datagram(&parse(&frame).unwrap(), &hdr, &data);
}

#[test]
fn rx_meta_describes_the_datagram() {
    let hdr = hdr_v6(None, Some(Ecn::Ect1));
    let frame = build(&hdr, &payload(1200));
    let meta = parse(&frame).unwrap().rx_meta();
    assert_eq!(meta.src, hdr.src);
    assert_eq!(meta.dst_ip, Some(hdr.dst.ip()));
    assert_eq!(meta.dst_port, hdr.dst.port());
    assert_eq!(meta.ecn, Some(Ecn::Ect1));
    assert_eq!(meta.stride, 1200);
}

// ---------------------------------------------------------------------------------------------
// Every reason to refuse a frame

/// A crafted frame per fault, with the reason it must be refused for.
fn bad_frames() -> Vec<(&'static str, Vec<u8>, ParseError)> {
    use ParseError::*;
    let v4 = build(&hdr_v4(None, None), &payload(20));
    let v6 = build(&hdr_v6(None, None), &payload(20));
    let v4_vlan = build(&hdr_v4(Some(1), None), &payload(20));
    let mut cases: Vec<(&'static str, Vec<u8>, ParseError)> = Vec::new();
    let mut case = |name, frame: Vec<u8>, reason| cases.push((name, frame, reason));
    let with = |base: &[u8], edit: &dyn Fn(&mut Vec<u8>)| {
        let mut f = base.to_vec();
        edit(&mut f);
        f
    };
    let fixed = |base: &[u8], edit: &dyn Fn(&mut Vec<u8>)| {
        let mut f = base.to_vec();
        edit(&mut f);
        fix_checksums(&mut f);
        f
    };

    // Truncated, at every layer.
    case("empty frame", Vec::new(), Truncated);
    case("inside Ethernet", v4[..13].to_vec(), Truncated);
    case("inside the VLAN tag", v4_vlan[..17].to_vec(), Truncated);
    case("inside the IPv4 header", v4[..33].to_vec(), Truncated);
    case(
        "inside IPv4 options",
        fixed(&v4, &|f| {
            f.truncate(38);
            f[14] = 0x47; // IHL 7: 28 bytes of header, 24 present
            f[16..18].copy_from_slice(&[0, 24]);
        }),
        Truncated,
    );
    case("inside the IPv6 header", v6[..53].to_vec(), Truncated);
    case(
        "IPv4 payload too short for UDP",
        fixed(&v4, &|f| {
            f.truncate(38);
            f[16..18].copy_from_slice(&[0, 24]);
        }),
        Truncated,
    );
    case(
        "IPv6 payload too short for UDP",
        with(&v6, &|f| {
            f.truncate(58);
            f[18..20].copy_from_slice(&[0, 4]);
        }),
        Truncated,
    );

    // Not IP; a second VLAN tag.
    case(
        "ARP",
        with(&v4[..42], &|f| f[12..14].copy_from_slice(&[0x08, 0x06])),
        NotIp,
    );
    case(
        "ARP behind a VLAN tag",
        with(&v4_vlan, &|f| f[16..18].copy_from_slice(&[0x08, 0x06])),
        NotIp,
    );
    case(
        "802.1Q in 802.1Q",
        with(&v4_vlan, &|f| {
            f.splice(16..16, [0x81, 0x00, 0x00, 0x02]);
        }),
        TooManyVlanTags,
    );
    case(
        "802.1Q in 802.1ad",
        with(&v4_vlan, &|f| {
            f[12..14].copy_from_slice(&[0x88, 0xa8]);
            f.splice(16..16, [0x81, 0x00, 0x00, 0x02]);
        }),
        TooManyVlanTags,
    );
    case(
        "0x9100 in 802.1Q",
        with(&v4_vlan, &|f| {
            f.splice(16..16, [0x91, 0x00, 0x00, 0x02]);
        }),
        TooManyVlanTags,
    );

    // Versions.
    case(
        "IPv4 EtherType, version 6",
        with(&v4, &|f| f[14] = 0x65),
        BadIpVersion,
    );
    case(
        "IPv6 EtherType, version 4",
        with(&v6, &|f| f[14] = 0x40),
        BadIpVersion,
    );

    // Lengths.
    case("IHL 4", fixed(&v4, &|f| f[14] = 0x44), BadLength);
    case("IHL 0", with(&v4, &|f| f[14] = 0x40), BadLength);
    case(
        "IPv4 total length beyond the frame",
        fixed(&v4, &|f| f[16..18].copy_from_slice(&[0, 49 + 20])),
        BadLength,
    );
    case(
        "IPv4 total length shorter than its header",
        fixed(&v4, &|f| f[16..18].copy_from_slice(&[0, 19])),
        BadLength,
    );
    case(
        "IPv6 payload length beyond the frame",
        with(&v6, &|f| f[18..20].copy_from_slice(&[0, 29])),
        BadLength,
    );
    case(
        "IPv4 UDP length beyond the IP payload",
        fixed(&v4, &|f| f[38..40].copy_from_slice(&[0, 29])),
        BadLength,
    );
    case(
        "IPv4 UDP length beyond the IP payload, into padding",
        fixed(&v4, &|f| {
            f.resize(f.len() + 10, 0);
            f[38..40].copy_from_slice(&[0, 30]);
        }),
        BadLength,
    );
    case(
        "IPv4 UDP length 7",
        fixed(&v4, &|f| f[38..40].copy_from_slice(&[0, 7])),
        BadLength,
    );
    case(
        "IPv6 UDP length beyond the IP payload",
        fixed(&v6, &|f| f[58..60].copy_from_slice(&[0, 29])),
        BadLength,
    );
    case(
        "IPv6 UDP length 0",
        fixed(&v6, &|f| f[58..60].copy_from_slice(&[0, 0])),
        BadLength,
    );

    // Fragments.
    case(
        "IPv4 first fragment (MF)",
        fixed(&v4, &|f| f[20] = 0x20),
        Fragment,
    );
    case(
        "IPv4 last fragment (offset)",
        fixed(&v4, &|f| f[20..22].copy_from_slice(&[0x00, 0xb9])),
        Fragment,
    );
    case(
        "IPv4 fragment with DF and offset",
        fixed(&v4, &|f| f[20..22].copy_from_slice(&[0x40, 0x01])),
        Fragment,
    );

    // IPv6 extension headers; other transports.
    for next in [0u8, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254] {
        case(
            "IPv6 extension header",
            with(&v6, &|f| f[20] = next),
            Ipv6ExtensionHeader,
        );
    }
    case("IPv4 TCP", fixed(&v4, &|f| f[23] = 6), NotUdp);
    case("IPv4 ICMP", fixed(&v4, &|f| f[23] = 1), NotUdp);
    case("IPv6 TCP", with(&v6, &|f| f[20] = 6), NotUdp);
    case("IPv6 ICMPv6", with(&v6, &|f| f[20] = 58), NotUdp);
    case("IPv6 no next header", with(&v6, &|f| f[20] = 59), NotUdp);

    // Checksums.
    case(
        "IPv4 TTL changed",
        with(&v4, &|f| f[22] -= 1),
        BadIpChecksum,
    );
    case(
        "IPv4 checksum zeroed",
        with(&v4, &|f| f[24..26].copy_from_slice(&[0, 0])),
        BadIpChecksum,
    );
    case(
        "IPv4 payload byte flipped",
        with(&v4, &|f| *f.last_mut().unwrap() ^= 0x10),
        BadUdpChecksum,
    );
    case(
        "IPv4 source port changed",
        with(&v4, &|f| f[35] ^= 1),
        BadUdpChecksum,
    );
    case(
        "IPv4 source address changed (pseudo-header)",
        with(&v4, &|f| {
            f[29] ^= 1;
            fix_ip_checksum(f);
        }),
        BadUdpChecksum,
    );
    case(
        "IPv6 payload byte flipped",
        with(&v6, &|f| f[70] ^= 0x80),
        BadUdpChecksum,
    );
    case(
        "IPv6 destination address changed (pseudo-header)",
        with(&v6, &|f| f[53] ^= 1),
        BadUdpChecksum,
    );
    case(
        "IPv6 with the kernel's partial checksum (veth TX offload)",
        with(&v6, &|f| {
            let partial = !rfc1071(&[&f[22..54], &[0, 17], &[0, 28]]);
            f[60..62].copy_from_slice(&partial.to_be_bytes());
        }),
        BadUdpChecksum,
    );
    case(
        "IPv6 UDP checksum 0",
        with(&v6, &|f| f[60..62].copy_from_slice(&[0, 0])),
        MissingUdpChecksum,
    );
    case(
        "IPv6 to an IPv4-mapped address",
        with(&v6, &|f| {
            f[38..48].fill(0);
            f[48..54].copy_from_slice(&[0xff, 0xff, 198, 18, 0, 1]);
        }),
        Ipv4MappedAddress,
    );
    case(
        "IPv6 from an IPv4-mapped address",
        with(&v6, &|f| {
            f[22..32].fill(0);
            f[32..38].copy_from_slice(&[0xff, 0xff, 198, 19, 0, 2]);
        }),
        Ipv4MappedAddress,
    );
    cases
}

#[test]
fn every_fault_is_refused_for_its_reason() {
    let mut seen = HashSet::new();
    for (name, frame, reason) in bad_frames() {
        assert_eq!(parse(&frame), Err(reason), "{name}");
        fuzz_roundtrip(&frame);
        seen.insert(reason);
    }
    for reason in ParseError::ALL {
        assert!(seen.contains(&reason), "no test frame for {reason:?}");
    }
}

/// Where a frame's source and destination addresses and its UDP header are.
fn udp_layout(frame: &[u8]) -> (std::ops::Range<usize>, std::ops::Range<usize>, usize) {
    let (l3, v6) = l3_offset(frame).unwrap();
    if v6 {
        (l3 + 8..l3 + 24, l3 + 24..l3 + 40, l3 + 40)
    } else {
        let ihl = usize::from(frame[l3] & 0x0f) * 4;
        (l3 + 12..l3 + 16, l3 + 16..l3 + 20, l3 + ihl)
    }
}

/// A frame as a veth peer's kernel sends it with TX checksum offload on: the UDP checksum
/// field holds the pseudo-header sum (uncomplemented), computed independently here.
fn with_partial_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let (src, dst, udp) = udp_layout(&frame);
    let udp_len = [frame[udp + 4], frame[udp + 5]];
    let pseudo = rfc1071(&[&frame[src], &frame[dst], &[0, 17], &udp_len]);
    frame[udp + 6..udp + 8].copy_from_slice(&(!pseudo).to_be_bytes());
    frame
}

#[test]
fn partial_checksums_are_trusted_only_when_asked() {
    for (name, hdr) in [
        ("IPv4", hdr_v4(None, None)),
        ("IPv6", hdr_v6(None, Some(Ecn::Ect0))),
        ("IPv4 VLAN", hdr_v4(Some(7), None)),
        ("IPv6 VLAN", hdr_v6(Some(4094), None)),
    ] {
        for len in [0, 1, 27, 1200] {
            let body = payload(len);
            let whole = build(&hdr, &body);
            let partial = with_partial_checksum(whole.clone());
            assert_ne!(partial, whole, "{name} {len}: the forms differ");
            // As from a wire: refused.
            assert_eq!(
                parse(&partial),
                Err(ParseError::BadUdpChecksum),
                "{name} {len}"
            );
            assert_eq!(
                parse_with(&partial, Checksums::Verify),
                Err(ParseError::BadUdpChecksum),
                "{name} {len}"
            );
            // Trusted: the same datagram, marked.
            let d = parse_with(&partial, Checksums::TrustPartial).unwrap();
            assert!(d.checksum_offloaded, "{name} {len}");
            check_datagram(&d, &hdr, &body);
            // A complete checksum is verified and not marked in either mode.
            let d = parse_with(&whole, Checksums::TrustPartial).unwrap();
            assert!(!d.checksum_offloaded, "{name} {len}");
            check_datagram(&d, &hdr, &body);
            // Neither form: still refused when trusting partial sums.
            let mut bad = partial.clone();
            let udp = udp_layout(&bad).2;
            bad[udp + 7] ^= 0x01;
            assert_eq!(
                parse_with(&bad, Checksums::TrustPartial),
                Err(ParseError::BadUdpChecksum),
                "{name} {len}"
            );
            // A payload corrupted after a complete checksum is refused too.
            if len > 0 {
                let mut bad = whole.clone();
                *bad.last_mut().unwrap() ^= 0x40;
                assert_eq!(
                    parse_with(&bad, Checksums::TrustPartial),
                    Err(ParseError::BadUdpChecksum),
                    "{name} {len}"
                );
            }
        }
    }
}

#[test]
fn error_names_and_counters() {
    let mut names = HashSet::new();
    for (i, reason) in ParseError::ALL.into_iter().enumerate() {
        assert_eq!(reason.index(), i);
        let name = reason.name();
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name} is not snake_case"
        );
        assert!(names.insert(name), "{name} twice");
        assert!(!reason.to_string().is_empty());
    }

    let mut counters = ParseCounters::new();
    assert_eq!(counters.total(), 0);
    assert_eq!(counters.iter().count(), ParseError::COUNT);
    counters.record(ParseError::BadUdpChecksum);
    counters.record(ParseError::BadUdpChecksum);
    counters.record(ParseError::NotIp);
    assert_eq!(counters.get(ParseError::BadUdpChecksum), 2);
    assert_eq!(counters.get(ParseError::NotIp), 1);
    assert_eq!(counters.get(ParseError::Truncated), 0);
    assert_eq!(counters.total(), 3);
    let listed: Vec<_> = counters.iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(listed, [("not_ip", 1), ("bad_udp_checksum", 2)]);

    let mut sum = ParseCounters::new();
    sum.record(ParseError::NotIp);
    sum.merge(&counters);
    assert_eq!(sum.get(ParseError::NotIp), 2);
    assert_eq!(sum.total(), 4);

    // The whole list, as a backend would count it.
    let mut all = ParseCounters::new();
    for (_, frame, _) in bad_frames() {
        if let Err(e) = parse(&frame) {
            all.record(e);
        }
    }
    assert_eq!(all.total() as usize, bad_frames().len());
}

// ---------------------------------------------------------------------------------------------
// Building: sizes and errors

#[test]
fn header_lengths() {
    assert_eq!(header_len_for(false, false), 42);
    assert_eq!(header_len_for(false, true), 46);
    assert_eq!(header_len_for(true, false), 62);
    assert_eq!(header_len_for(true, true), 66);
    assert_eq!(MAX_HEADER_LEN, 66);
    assert_eq!(header_len(&hdr_v4(None, None)), 42);
    assert_eq!(header_len(&hdr_v6(Some(1), None)), 66);
}

#[test]
fn write_frame_uses_exactly_its_length() {
    for hdr in [hdr_v4(Some(2), Some(Ecn::Ce)), hdr_v6(None, None)] {
        let data = payload(1199);
        let needed = header_len(&hdr) + data.len();
        let mut out = vec![0xa5; needed + 100];
        assert_eq!(write_frame(&mut out, &hdr, &data), Ok(needed));
        assert!(out[needed..].iter().all(|&b| b == 0xa5));
        check_datagram(&parse(&out[..needed]).unwrap(), &hdr, &data);

        let mut exact = vec![0; needed];
        assert_eq!(write_frame(&mut exact, &hdr, &data), Ok(needed));
        assert_eq!(exact, out[..needed]);

        let mut short = vec![0x5a; needed - 1];
        assert_eq!(
            write_frame(&mut short, &hdr, &data),
            Err(BuildError::BufferTooSmall {
                needed,
                available: needed - 1
            })
        );
        assert!(short.iter().all(|&b| b == 0x5a), "nothing written on error");
    }
}

#[test]
fn write_frame_refuses_what_it_cannot_build() {
    let mut out = vec![0; 70_000];
    let mut mixed = hdr_v4(None, None);
    mixed.dst = hdr_v6(None, None).dst;
    assert_eq!(
        write_frame(&mut out, &mixed, b"x"),
        Err(BuildError::AddressFamilyMismatch)
    );
    let mut mixed = hdr_v6(None, None);
    mixed.dst = hdr_v4(None, None).dst;
    assert_eq!(
        write_frame(&mut out, &mixed, b"x"),
        Err(BuildError::AddressFamilyMismatch)
    );

    assert_eq!(
        write_frame(&mut out, &hdr_v4(Some(4096), None), b"x"),
        Err(BuildError::BadVlanId(4096))
    );

    // The largest datagrams each family can carry, and one byte more.
    let big = payload(65_535 - 8);
    let v4_max = 65_535 - 20 - 8;
    assert!(write_frame(&mut out, &hdr_v4(None, None), &big[..v4_max]).is_ok());
    assert_eq!(
        write_frame(&mut out, &hdr_v4(None, None), &big[..v4_max + 1]),
        Err(BuildError::PayloadTooLarge { len: v4_max + 1 })
    );
    let len = write_frame(&mut out, &hdr_v6(None, None), &big).unwrap();
    check_datagram(&parse(&out[..len]).unwrap(), &hdr_v6(None, None), &big);
    let bigger = payload(65_535 - 8 + 1);
    assert_eq!(
        write_frame(&mut out, &hdr_v6(None, None), &bigger),
        Err(BuildError::PayloadTooLarge { len: bigger.len() })
    );
}

// ---------------------------------------------------------------------------------------------
// The checksum routine against the reference, and write_frame against etherparse's checksum

/// The checksum `checksum::sum` gives for `bytes`, complemented like `rfc1071`'s.
fn fast_rfc1071(bytes: &[u8]) -> u16 {
    !checksum::fold(checksum::sum(bytes, 0))
}

/// Every length 0..=2048 at every offset 0..8 from an 8-aligned address (odd lengths, odd
/// offsets, every tail the unrolled loop can leave), with random and with all-0xff
/// (carry-heavy: every 16-bit add wraps) data.
#[test]
fn checksum_sum_matches_the_reference_at_every_length_and_offset() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let random: Vec<u8> = (0..2048 + 16).map(|_| rng.next() as u8).collect();
    let ones = vec![0xff; 2048 + 16];
    for (name, data) in [("random", &random), ("0xff", &ones)] {
        // Where the buffer is 8-aligned, so `offset` is the real misalignment.
        let aligned = (8 - data.as_ptr() as usize % 8) % 8;
        for offset in 0..8 {
            for len in 0..=2048 {
                let bytes = &data[aligned + offset..][..len];
                assert_eq!(
                    fast_rfc1071(bytes),
                    rfc1071(&[bytes]),
                    "{name} data, offset {offset}, length {len}"
                );
            }
        }
    }
    // All zeros sums to 0 (checksum 0xffff); all ones of even length to 0xffff (checksum 0).
    assert_eq!(fast_rfc1071(&[0; 1452]), 0xffff);
    assert_eq!(fast_rfc1071(&ones[..1452]), 0);
}

/// The portable loop (what runs without AVX2) agrees with the reference too: on a machine with
/// AVX2 the test above checks only the AVX2 build of it for inputs of 64 bytes and more.
#[test]
fn checksum_portable_loop_matches_the_reference() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let random: Vec<u8> = (0..2048 + 8).map(|_| rng.next() as u8).collect();
    let ones = vec![0xff; 2048 + 8];
    for data in [&random, &ones] {
        for offset in 0..4 {
            for len in 0..=2048 {
                let bytes = &data[offset..][..len];
                assert_eq!(
                    !checksum::fold(checksum::sum_block_portable(bytes)),
                    rfc1071(&[bytes]),
                    "offset {offset}, length {len}"
                );
            }
        }
    }
}

/// Chained sums, a start that overflows the accumulator, and block boundaries all agree with
/// one pass of the reference.
#[test]
fn checksum_sum_chains_and_blocks() {
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    for len in [
        0, 1, 2, 31, 32, 33, 63, 64, 65, 1200, 1452, 9001, 65_535, 200_001,
    ] {
        let random: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let ones = vec![0xff; len];
        for bytes in [&random, &ones] {
            let want = rfc1071(&[bytes]);
            // Split at every even point of short inputs, and at a few of long ones.
            let splits: Vec<usize> = if len <= 70 {
                (0..=len).step_by(2).collect()
            } else {
                vec![0, 2, 8, 32, (len / 2) & !1, len & !1]
            };
            for at in splits {
                let acc = checksum::sum(&bytes[..at], 0);
                let acc = checksum::sum(&bytes[at..], acc);
                assert_eq!(!checksum::fold(acc), want, "length {len}, split at {at}");
            }
            for block in [2, 4, 6, 32, 34, 64, 1 << 12] {
                let acc = checksum::sum_in_blocks(bytes, 0, block);
                assert_eq!(!checksum::fold(acc), want, "length {len}, block {block}");
            }
            // This start's 16-bit lanes sum to 0xfffe (native order), and adding anything
            // non-zero to it overflows the u64: the end-around carry must not lose a bit.
            let start = u64::MAX - 1;
            let prefixed = [&0xfffe_u16.to_ne_bytes()[..], bytes].concat();
            assert_eq!(
                !checksum::fold(checksum::sum(bytes, start)),
                rfc1071(&[&prefixed]),
                "length {len}, start {start:#x}"
            );
        }
    }
}

/// `fold` agrees with folding the accumulator's four 16-bit lanes until they fit, for every
/// combination of edge-value lanes (where each carry of the fold happens or just does not) and
/// for random accumulators.
#[test]
fn checksum_fold_handles_every_carry() {
    fn reference(acc: u64) -> u16 {
        let mut s: u64 = (0..4).map(|i| (acc >> (16 * i)) & 0xffff).sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        // Lanes hold native-order words; `fold` answers in host order.
        u16::from_be(s as u16)
    }
    let edges = [0u64, 1, 2, 0x7fff, 0x8000, 0xfffd, 0xfffe, 0xffff];
    let mut rng = XorShift(0x5851_f42d_4c95_7f2d);
    let structured = (0..edges.len().pow(4)).map(|mut i| {
        let mut acc = 0;
        for _ in 0..4 {
            acc = (acc << 16) | edges[i % edges.len()];
            i /= edges.len();
        }
        acc
    });
    let random = (0..100_000).map(|_| rng.next());
    for acc in structured.chain(random).chain([0x8000_0000_8000_ffff]) {
        assert_eq!(checksum::fold(acc), reference(acc), "{acc:#018x}");
    }
}

/// The pseudo-header helpers give the sum of the pseudo-header bytes RFC 768 / RFC 8200 define.
#[test]
fn checksum_pseudo_headers_match_their_bytes() {
    let v4s = [192, 0, 2, 1];
    let v4d = [198, 51, 100, 200];
    let pseudo = [&v4s[..], &v4d, &[0, 17], &[0x05, 0xb4]].concat();
    assert_eq!(
        !checksum::fold(checksum::udp_pseudo_header_v4(v4s, v4d, 1460)),
        rfc1071(&[&pseudo])
    );
    let v6s: [u8; 16] = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
    let v6d: [u8; 16] = "fe80::ffff:abcd".parse::<Ipv6Addr>().unwrap().octets();
    for len in [8u32, 1460, 65_535, 0x0001_0000, u32::MAX] {
        let pseudo = [&v6s[..], &v6d, &len.to_be_bytes(), &[0, 0, 0, 17]].concat();
        assert_eq!(
            !checksum::fold(checksum::udp_pseudo_header_v6(v6s, v6d, len)),
            rfc1071(&[&pseudo]),
            "length {len}"
        );
    }
}

/// etherparse's own UDP checksum over what `write_frame` wrote (its headers as it parses them)
/// equals the checksum field, for both families, every length up to 1500 and then some, random
/// and all-0xff payloads; `parse` accepts each frame and refuses it with one bit flipped.
#[test]
fn write_frame_checksums_verify_with_etherparse() {
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    let lens = (0..=1500).chain([1452 + 20, 8952, 65_535 - 28]);
    for len in lens {
        let random: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let ones = vec![0xff; len];
        for data in [&random, &ones] {
            for hdr in [hdr_v4(None, Some(Ecn::Ect0)), hdr_v6(Some(7), None)] {
                let mut frame = build(&hdr, data);
                let headers = PacketHeaders::from_ethernet_slice(&frame).unwrap();
                let Some(TransportHeader::Udp(udp)) = headers.transport else {
                    panic!("no UDP header")
                };
                let theirs = match headers.net {
                    Some(NetHeaders::Ipv4(ip, _)) => udp.calc_checksum_ipv4(&ip, data),
                    Some(NetHeaders::Ipv6(ip, _)) => udp.calc_checksum_ipv6(&ip, data),
                    other => panic!("{other:?}"),
                }
                .unwrap();
                assert_eq!(udp.checksum, theirs, "{hdr:?} length {len}");
                check_datagram(&parse(&frame).unwrap(), &hdr, data);

                // One flipped bit in the ports or the payload always changes the sum (the
                // length and checksum fields have other ways to fail, tested elsewhere).
                let l4 = header_len(&hdr) - UDP_HEADER_LEN;
                let mut at = l4 + rng.below(frame.len() - l4 - 4);
                if at >= l4 + 4 {
                    at += 4;
                }
                frame[at] ^= 1 << rng.below(8);
                assert_eq!(
                    parse(&frame),
                    Err(ParseError::BadUdpChecksum),
                    "{hdr:?} length {len}, byte {at}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Robustness: random and mutated input never panics, and what parses survives a rebuild

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_and_mutated_frames_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    let mut refused = ParseCounters::new();
    let mut feed = |frame: &[u8]| {
        match parse(frame) {
            Ok(_) => accepted += 1,
            Err(e) => refused.record(e),
        }
        fuzz_roundtrip(frame);
    };

    // Pure noise, with the EtherType sometimes forced to something interesting.
    let ether_types: [[u8; 2]; 5] = [[8, 0], [0x86, 0xdd], [0x81, 0], [0x88, 0xa8], [8, 6]];
    for _ in 0..50_000 {
        let len = rng.below(200);
        let mut frame: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 14 && rng.below(2) == 0 {
            frame[12..14].copy_from_slice(&ether_types[rng.below(ether_types.len())]);
        }
        feed(&frame);
    }

    // Valid frames with a few bytes changed, cut short or extended; half with checksums
    // repaired so the mutation reaches the later checks.
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for vlan in [None, Some(7)] {
        for len in [0, 1, 13, 100] {
            seeds.push(build(&hdr_v4(vlan, Some(Ecn::Ect0)), &payload(len)));
            seeds.push(build(&hdr_v6(vlan, Some(Ecn::Ce)), &payload(len)));
        }
    }
    seeds.extend(bad_frames().into_iter().map(|(_, f, _)| f));
    for _ in 0..150_000 {
        let mut frame = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(4) {
                0 | 1 if !frame.is_empty() => {
                    let i = rng.below(frame.len());
                    frame[i] = rng.next() as u8;
                }
                2 => frame.truncate(rng.below(frame.len() + 1)),
                _ => frame.extend((0..rng.below(8)).map(|_| rng.next() as u8)),
            }
        }
        if rng.below(2) == 0 {
            fix_checksums(&mut frame);
        }
        feed(&frame);
    }
    // The mutations must have exercised both outcomes and most reasons.
    assert!(accepted > 1_000, "only {accepted} frames accepted");
    let reasons_hit = refused.iter().filter(|(_, n)| *n > 0).count();
    println!("accepted {accepted}, refused {refused:?}");
    assert!(reasons_hit >= ParseError::COUNT - 1, "{refused:?}");
}
