//! The bytes the kernel and the io_uring backend exchange around a datagram: control messages
//! (ECN, pktinfo, UDP GSO/GRO), socket addresses, and the layout of a multishot recvmsg buffer.
//!
//! All of it is plain byte encoding and decoding in safe code, in the kernel's ABI
//! (`struct cmsghdr`, `CMSG_ALIGN`, `struct sockaddr_in{,6}`, `struct io_uring_recvmsg_out`),
//! so it can be unit-tested without a kernel. Encoding writes only into caller-provided storage:
//! nothing here allocates.
//!
//! - Send: `IP_TOS` (IPv4 and IPv4-mapped destinations) or `IPV6_TCLASS` carry the ECN
//!   codepoint; `IP_PKTINFO` / `IPV6_PKTINFO` choose our source address; `UDP_SEGMENT` makes
//!   the kernel split a buffer into datagrams of one size (GSO).
//! - Receive: `IP_TOS` (one byte) or `IPV6_TCLASS` (an int) give the ECN bits, `IP_PKTINFO` /
//!   `IPV6_PKTINFO` the address the datagram was sent to, `UDP_GRO` the segment size of a
//!   coalesced batch.

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::datapath::Ecn;

/// `CMSG_ALIGN`: control messages are aligned to the size of `size_t`.
const fn align(len: usize) -> usize {
    let a = size_of::<usize>();
    (len + a - 1) & !(a - 1)
}

/// `sizeof(struct cmsghdr)`, rounded up: where a control message's data starts.
const HDR: usize = align(size_of::<libc::cmsghdr>());

/// `CMSG_SPACE(len)`: bytes one control message with `len` bytes of data takes.
pub const fn cmsg_space(len: usize) -> usize {
    HDR + align(len)
}

/// `CMSG_LEN(len)`: the `cmsg_len` of a control message with `len` bytes of data.
const fn cmsg_len(len: usize) -> usize {
    HDR + len
}

const IN_PKTINFO_LEN: usize = size_of::<libc::in_pktinfo>();
const IN6_PKTINFO_LEN: usize = size_of::<libc::in6_pktinfo>();

/// Room for the control messages of one send: a traffic class (int), the larger pktinfo, and
/// a GSO segment size (u16).
pub const SEND_CONTROL_LEN: usize =
    cmsg_space(size_of::<libc::c_int>()) + cmsg_space(IN6_PKTINFO_LEN) + cmsg_space(2);

/// Room reserved for received control messages: TOS/TCLASS, pktinfo, UDP_GRO and the socket's
/// drop count need at most 112 bytes; the rest is slack for options the kernel may add. Truncation is detected and
/// counted, never silent.
pub const RECV_CONTROL_LEN: usize = 128;

/// Room reserved for the peer's address in a received buffer: a `sockaddr_in6` (28 bytes),
/// rounded up so the control messages after it stay 8-byte aligned.
pub const RECV_NAME_LEN: usize = 32;

/// `sizeof(struct io_uring_recvmsg_out)`: the header the kernel puts in front of every
/// multishot recvmsg buffer.
pub const RECVMSG_OUT_LEN: usize = 16;

/// Bytes of a provided buffer in front of the payload.
pub const RECV_HEADROOM: usize = RECVMSG_OUT_LEN + RECV_NAME_LEN + RECV_CONTROL_LEN;

/// Storage for the control messages of one send, aligned like `struct cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct SendControl(pub [u8; SEND_CONTROL_LEN]);

impl Default for SendControl {
    fn default() -> Self {
        Self([0; SEND_CONTROL_LEN])
    }
}

/// What to say in the control messages of one send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// The destination is IPv4 (or IPv4-mapped IPv6 on a dual-stack socket): IPv4 options.
    pub ipv4: bool,
    pub ecn: Option<Ecn>,
    pub src_ip: Option<IpAddr>,
    /// GSO segment size; only set when the buffer holds more than one segment.
    pub segment_size: Option<u16>,
}

/// Writes the control messages for `opts` into `out`; returns how many bytes they take
/// (`msg_controllen`; 0 means no control data).
pub fn encode_send(opts: &SendOptions, out: &mut SendControl) -> usize {
    let mut w = Writer {
        buf: &mut out.0,
        len: 0,
    };
    if let Some(ecn) = opts.ecn {
        let tos = libc::c_int::from(ecn.bits()).to_ne_bytes();
        if opts.ipv4 {
            w.push(libc::IPPROTO_IP, libc::IP_TOS, &tos);
        } else {
            w.push(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &tos);
        }
    }
    if let Some(seg) = opts.segment_size {
        w.push(libc::SOL_UDP, libc::UDP_SEGMENT, &seg.to_ne_bytes());
    }
    match (opts.src_ip, opts.ipv4) {
        (None, _) => {}
        // IPv4 destination: `struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr }`
        // with the source in `ipi_spec_dst`. A mapped source is unmapped: a dual-stack socket
        // sends to IPv4 peers through the IPv4 stack, which reads IPv4 options.
        (Some(ip), true) => {
            let v4 = match ip {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(v6) => v6.to_ipv4_mapped(),
            };
            if let Some(v4) = v4 {
                let mut info = [0u8; IN_PKTINFO_LEN];
                info[4..8].copy_from_slice(&v4.octets());
                w.push(libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
            }
        }
        // IPv6: `struct in6_pktinfo { in6_addr addr; unsigned ifindex }`.
        (Some(ip), false) => {
            let v6 = match ip {
                IpAddr::V6(v6) => v6,
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            };
            let mut info = [0u8; IN6_PKTINFO_LEN];
            info[..16].copy_from_slice(&v6.octets());
            w.push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info);
        }
    }
    w.len
}

struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn push(&mut self, level: libc::c_int, ty: libc::c_int, data: &[u8]) {
        let space = cmsg_space(data.len());
        let b = &mut self.buf[self.len..self.len + space];
        b.fill(0);
        b[..size_of::<usize>()].copy_from_slice(&cmsg_len(data.len()).to_ne_bytes());
        let o = size_of::<usize>();
        b[o..o + 4].copy_from_slice(&level.to_ne_bytes());
        b[o + 4..o + 8].copy_from_slice(&ty.to_ne_bytes());
        b[HDR..HDR + data.len()].copy_from_slice(data);
        self.len += space;
    }
}

/// What the control messages of one received datagram said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvInfo {
    pub ecn: Option<Ecn>,
    /// Our address the datagram was sent to (IPv4-mapped on a dual-stack socket for IPv4).
    pub dst_ip: Option<IpAddr>,
    /// Segment size of a GRO batch.
    pub gro_segment: Option<u16>,
    /// `SO_RXQ_OVFL`: datagrams the socket dropped (receive queue full) since it was made.
    /// The kernel only reports it once it is non-zero.
    pub socket_drops: Option<u32>,
    /// A control message was cut short or its length was impossible.
    pub malformed: bool,
}

/// Walks the control messages in `control` (as the kernel wrote them).
pub fn decode_recv(control: &[u8]) -> RecvInfo {
    let mut info = RecvInfo::default();
    let mut rest = control;
    let o = size_of::<usize>();
    while rest.len() >= HDR {
        let mut len_bytes = [0u8; size_of::<usize>()];
        len_bytes.copy_from_slice(&rest[..o]);
        let len = usize::from_ne_bytes(len_bytes);
        let level = i32::from_ne_bytes(rest[o..o + 4].try_into().expect("4 bytes"));
        let ty = i32::from_ne_bytes(rest[o + 4..o + 8].try_into().expect("4 bytes"));
        if len < HDR || len > rest.len() {
            info.malformed = true;
            break;
        }
        let data = &rest[HDR..len];
        match (level, ty) {
            // The kernel reports the received TOS byte as one byte.
            (libc::IPPROTO_IP, libc::IP_TOS) if !data.is_empty() => {
                info.ecn = Ecn::from_bits(data[0]);
            }
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) if data.len() >= 4 => {
                let tclass = i32::from_ne_bytes(data[..4].try_into().expect("4 bytes"));
                info.ecn = Ecn::from_bits(tclass as u8);
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= IN_PKTINFO_LEN => {
                // `ipi_addr`: the header's destination address.
                let a: [u8; 4] = data[8..12].try_into().expect("4 bytes");
                info.dst_ip = Some(IpAddr::V4(Ipv4Addr::from(a)));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= IN6_PKTINFO_LEN => {
                let a: [u8; 16] = data[..16].try_into().expect("16 bytes");
                info.dst_ip = Some(IpAddr::V6(Ipv6Addr::from(a)));
            }
            (libc::SOL_UDP, libc::UDP_GRO) if data.len() >= 4 => {
                let seg = i32::from_ne_bytes(data[..4].try_into().expect("4 bytes"));
                info.gro_segment = u16::try_from(seg).ok().filter(|&s| s > 0);
            }
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) if data.len() >= 4 => {
                info.socket_drops = Some(u32::from_ne_bytes(data[..4].try_into().expect("4")));
            }
            (libc::IPPROTO_IP, libc::IP_TOS)
            | (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
            | (libc::IPPROTO_IP, libc::IP_PKTINFO)
            | (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
            | (libc::SOL_UDP, libc::UDP_GRO)
            | (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => info.malformed = true,
            _ => {}
        }
        rest = &rest[align(len).min(rest.len())..];
    }
    info
}

/// Decodes a `struct sockaddr_in` or `sockaddr_in6` as the kernel wrote it.
pub fn decode_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(name.get(..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match libc::c_int::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(ip.into(), port)))
        }
        libc::AF_INET6 => {
            // Flow info and scope id as the kernel stores them, the way std and socket2
            // convert them, so an address round-trips to the identical `SocketAddr`.
            let flowinfo = u32::from_ne_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip.into(),
                port,
                flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}

/// The parts of one multishot recvmsg buffer: `struct io_uring_recvmsg_out`, then the name,
/// control and payload areas (name and control areas of the sizes the request asked for).
#[derive(Debug, PartialEq, Eq)]
pub struct Received<'a> {
    pub name: &'a [u8],
    pub control: &'a [u8],
    pub payload: &'a [u8],
    /// The datagram did not fit the buffer (MSG_TRUNC): the payload is incomplete.
    pub truncated: bool,
    /// Control messages did not fit (MSG_CTRUNC).
    pub control_truncated: bool,
}

/// Splits `buf`, the `len` bytes the kernel reported in the completion, into its parts.
/// `None` if the buffer is shorter than its header says.
pub fn split_received(buf: &[u8]) -> Option<Received<'_>> {
    let word = |i: usize| -> Option<usize> {
        Some(u32::from_ne_bytes(buf.get(i * 4..i * 4 + 4)?.try_into().ok()?) as usize)
    };
    let (namelen, controllen, payloadlen, flags) = (word(0)?, word(1)?, word(2)?, word(3)?);
    let name_start = RECVMSG_OUT_LEN;
    let control_start = name_start + RECV_NAME_LEN;
    let payload_start = control_start + RECV_CONTROL_LEN;
    if buf.len() < payload_start {
        return None;
    }
    let payload_end = payload_start + payloadlen.min(buf.len() - payload_start);
    Some(Received {
        name: &buf[name_start..name_start + namelen.min(RECV_NAME_LEN)],
        control: &buf[control_start..control_start + controllen.min(RECV_CONTROL_LEN)],
        payload: &buf[payload_start..payload_end],
        truncated: flags & libc::MSG_TRUNC as usize != 0
            || payloadlen > payload_end - payload_start,
        control_truncated: flags & libc::MSG_CTRUNC as usize != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, ty: i32, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; cmsg_space(data.len())];
        v[..size_of::<usize>()].copy_from_slice(&cmsg_len(data.len()).to_ne_bytes());
        let o = size_of::<usize>();
        v[o..o + 4].copy_from_slice(&level.to_ne_bytes());
        v[o + 4..o + 8].copy_from_slice(&ty.to_ne_bytes());
        v[HDR..HDR + data.len()].copy_from_slice(data);
        v
    }

    /// Our constants against the C library's macros.
    #[test]
    fn sizes_match_libc() {
        // SAFETY: CMSG_SPACE and CMSG_LEN are pure arithmetic.
        let (space4, len4, space20) = unsafe {
            (
                libc::CMSG_SPACE(4) as usize,
                libc::CMSG_LEN(4) as usize,
                libc::CMSG_SPACE(20) as usize,
            )
        };
        assert_eq!(cmsg_space(4), space4);
        assert_eq!(cmsg_len(4), len4);
        assert_eq!(cmsg_space(20), space20);
        assert_eq!(IN6_PKTINFO_LEN, 20);
        assert_eq!(IN_PKTINFO_LEN, 12);
        assert!(RECV_NAME_LEN >= size_of::<libc::sockaddr_in6>());
        assert_eq!(RECV_HEADROOM % 8, 0);
    }

    #[test]
    fn encodes_ipv4_ecn_pktinfo_and_segment() {
        let mut out = SendControl::default();
        let opts = SendOptions {
            ipv4: true,
            ecn: Some(Ecn::Ect0),
            src_ip: Some("192.0.2.7".parse().unwrap()),
            segment_size: Some(1200),
        };
        let n = encode_send(&opts, &mut out);
        let mut want = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &2i32.to_ne_bytes());
        want.extend(cmsg(
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            &1200u16.to_ne_bytes(),
        ));
        let mut info = [0u8; 12];
        info[4..8].copy_from_slice(&[192, 0, 2, 7]);
        want.extend(cmsg(libc::IPPROTO_IP, libc::IP_PKTINFO, &info));
        assert_eq!(&out.0[..n], &want[..]);
        assert!(n <= SEND_CONTROL_LEN);
    }

    #[test]
    fn encodes_ipv6_tclass_and_pktinfo() {
        let mut out = SendControl::default();
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let opts = SendOptions {
            ipv4: false,
            ecn: Some(Ecn::Ce),
            src_ip: Some(IpAddr::V6(src)),
            segment_size: None,
        };
        let n = encode_send(&opts, &mut out);
        let mut want = cmsg(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &3i32.to_ne_bytes());
        let mut info = [0u8; 20];
        info[..16].copy_from_slice(&src.octets());
        want.extend(cmsg(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info));
        assert_eq!(&out.0[..n], &want[..]);
    }

    #[test]
    fn mapped_source_to_ipv4_destination_is_unmapped() {
        let mut out = SendControl::default();
        let opts = SendOptions {
            ipv4: true,
            ecn: None,
            src_ip: Some("::ffff:10.1.2.3".parse().unwrap()),
            segment_size: None,
        };
        let n = encode_send(&opts, &mut out);
        let info = decode_recv_pktinfo_v4_spec_dst(&out.0[..n]);
        assert_eq!(info, Some(Ipv4Addr::new(10, 1, 2, 3)));
    }

    fn decode_recv_pktinfo_v4_spec_dst(b: &[u8]) -> Option<Ipv4Addr> {
        let o = size_of::<usize>();
        let ty = i32::from_ne_bytes(b[o + 4..o + 8].try_into().unwrap());
        (ty == libc::IP_PKTINFO).then(|| {
            let a: [u8; 4] = b[HDR + 4..HDR + 8].try_into().unwrap();
            Ipv4Addr::from(a)
        })
    }

    #[test]
    fn nothing_to_say_is_no_control_data() {
        let mut out = SendControl::default();
        assert_eq!(encode_send(&SendOptions::default(), &mut out), 0);
    }

    #[test]
    fn decodes_ipv4_tos_pktinfo_and_gro() {
        let mut c = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0x02]);
        let mut info = [0u8; 12];
        info[4..8].copy_from_slice(&[9, 9, 9, 9]); // spec_dst: ignored
        info[8..12].copy_from_slice(&[127, 0, 0, 1]);
        c.extend(cmsg(libc::IPPROTO_IP, libc::IP_PKTINFO, &info));
        c.extend(cmsg(libc::SOL_UDP, libc::UDP_GRO, &1350i32.to_ne_bytes()));
        c.extend(cmsg(
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            &7u32.to_ne_bytes(),
        ));
        let got = decode_recv(&c);
        assert_eq!(
            got,
            RecvInfo {
                ecn: Some(Ecn::Ect0),
                dst_ip: Some("127.0.0.1".parse().unwrap()),
                gro_segment: Some(1350),
                socket_drops: Some(7),
                malformed: false,
            }
        );
        assert!(c.len() <= RECV_CONTROL_LEN, "room for what we ask for");
    }

    #[test]
    fn decodes_ipv6_tclass_and_pktinfo() {
        let mut c = cmsg(
            libc::IPPROTO_IPV6,
            libc::IPV6_TCLASS,
            &0x01i32.to_ne_bytes(),
        );
        let mut info = [0u8; 20];
        info[15] = 1;
        c.extend(cmsg(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info));
        let got = decode_recv(&c);
        assert_eq!(got.ecn, Some(Ecn::Ect1));
        assert_eq!(got.dst_ip, Some("::1".parse().unwrap()));
        assert_eq!(got.gro_segment, None);
        // DSCP bits do not disturb the ECN field; not-ECT is no mark.
        let c = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0xb8]);
        assert_eq!(decode_recv(&c).ecn, None);
        let c = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0xbb]);
        assert_eq!(decode_recv(&c).ecn, Some(Ecn::Ce));
    }

    #[test]
    fn round_trips_through_our_encoder() {
        // The send encoder's TOS/TCLASS messages decode as the same codepoints (the kernel
        // answers IP_TOS with one byte, but accepts an int, as encoded here).
        for ecn in [Ecn::Ect0, Ecn::Ect1, Ecn::Ce] {
            let mut out = SendControl::default();
            let n = encode_send(
                &SendOptions {
                    ipv4: false,
                    ecn: Some(ecn),
                    ..SendOptions::default()
                },
                &mut out,
            );
            assert_eq!(decode_recv(&out.0[..n]).ecn, Some(ecn));
        }
    }

    #[test]
    fn unknown_skipped_and_bad_lengths_flagged() {
        let mut c = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMP, &[0; 16]);
        c.extend(cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0x03]));
        let got = decode_recv(&c);
        assert_eq!(got.ecn, Some(Ecn::Ce));
        assert!(!got.malformed);

        // cmsg_len beyond the buffer.
        let mut c = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0x02]);
        c[..size_of::<usize>()].copy_from_slice(&999usize.to_ne_bytes());
        assert!(decode_recv(&c).malformed);
        // A UDP_GRO message too short for its int.
        let c = cmsg(libc::SOL_UDP, libc::UDP_GRO, &[1]);
        let got = decode_recv(&c);
        assert!(got.malformed && got.gro_segment.is_none());
        // Trailing bytes shorter than a header are ignored.
        assert_eq!(decode_recv(&[0u8; 5]), RecvInfo::default());
    }

    #[test]
    fn decodes_sockaddrs() {
        let v4: SocketAddr = "198.51.100.9:4433".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::9]:443".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        for addr in [v4, v6, mapped] {
            let sa = socket2::SockAddr::from(addr);
            let len = sa.len() as usize;
            let storage = sa.as_storage();
            // SAFETY: sockaddr_storage is plain bytes; we view `len()` of them.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&storage as *const libc::sockaddr_storage).cast::<u8>(),
                    len,
                )
            };
            assert_eq!(decode_sockaddr(bytes), Some(addr));
        }
        assert_eq!(decode_sockaddr(&[0u8; 3]), None);
        let mut unix = [0u8; 16];
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(decode_sockaddr(&unix), None);
    }

    fn recv_buffer(name: &[u8], control: &[u8], payload: &[u8], flags: u32) -> Vec<u8> {
        let mut b = vec![0u8; RECV_HEADROOM + payload.len()];
        b[0..4].copy_from_slice(&(name.len() as u32).to_ne_bytes());
        b[4..8].copy_from_slice(&(control.len() as u32).to_ne_bytes());
        b[8..12].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
        b[12..16].copy_from_slice(&flags.to_ne_bytes());
        b[16..16 + name.len()].copy_from_slice(name);
        b[48..48 + control.len()].copy_from_slice(control);
        b[RECV_HEADROOM..].copy_from_slice(payload);
        b
    }

    #[test]
    fn splits_a_multishot_buffer() {
        let ctl = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[2]);
        let b = recv_buffer(&[7; 16], &ctl, b"hello", 0);
        let r = split_received(&b).unwrap();
        assert_eq!(r.name, &[7; 16]);
        assert_eq!(r.control, &ctl[..]);
        assert_eq!(r.payload, b"hello");
        assert!(!r.truncated && !r.control_truncated);

        let b = recv_buffer(&[], &[], b"abc", libc::MSG_TRUNC as u32);
        assert!(split_received(&b).unwrap().truncated);
        // The header claims more payload than the buffer holds: truncated, not out of bounds.
        let mut b = recv_buffer(&[], &[], b"abc", 0);
        b[8..12].copy_from_slice(&100u32.to_ne_bytes());
        let r = split_received(&b).unwrap();
        assert_eq!(r.payload, b"abc");
        assert!(r.truncated);
        assert_eq!(split_received(&b[..RECV_HEADROOM - 1]), None);
    }
}
