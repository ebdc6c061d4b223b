//! Fuzz harnesses (feature `fuzzing`, Linux): one function per target of the `fuzz/` cargo-fuzz crate,
//! each panicking when a property of the code under test breaks. They live here, not in the
//! fuzz crate, so that they can reach crate-internal decoders without making those public, and
//! so that `cargo test` replays the committed corpora (`fuzz/corpus/<target>/`) through them on
//! stable Rust ([`seeds`]'s tests); libFuzzer on nightly explores from there.
//!
//! Targets and the input each one takes:
//!
//! - [`wire`]: an Ethernet frame, for `wire::parse`;
//! - [`Differential`] (needs CAP_BPF): the same frames through the XDP program
//!   (`BPF_PROG_TEST_RUN`) and `wire::parse`;
//! - [`hq_request`]: an hq-interop request (`GET /path`);
//! - [`config`]: a TOML config file;
//! - [`cid`]: a QUIC-LB layout and a connection ID ([`cid_input`] describes the layout);
//! - [`cmsg`]: an io_uring recvmsg buffer and its control messages;
//! - [`h3`]: the h3 app's request and peer streams and its QPACK decoder.

use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path};

use etherparse::UdpHeaderSlice;

use crate::app::{parse_request, RequestError};
use crate::config::{Config, ConfigError};
use crate::driver::cid::{CidLayout, QuicLb, WorkerCids, MAX_PLAINTEXT_LEN, MIN_NONCE_LEN};
use crate::wire::{self, Checksums, ParseError};

mod differential;
#[cfg(test)]
pub mod seeds;

pub use differential::Differential;

// ---------------------------------------------------------------------------------------------
// wire::parse

/// `wire::parse` on any bytes: never panics; an accepted frame rebuilds (with
/// `wire::write_frame`) into a datagram that parses the same; its UDP checksum is the one an
/// independent implementation (etherparse's) computes; one flipped payload bit is caught as a
/// bad UDP checksum and one flipped TTL bit of IPv4 as a bad header checksum; trusting the
/// partial checksum form only ever accepts more.
///
/// Every frame runs twice: as given, and with its checksums repaired ([`repair_checksums`]).
pub fn wire(frame: &[u8]) {
    wire_once(frame);
    if let Some(repaired) = repair_checksums(frame) {
        wire_once(&repaired);
    }
}

fn wire_once(frame: &[u8]) {
    wire::fuzz_roundtrip(frame);
    let verified = wire::parse(frame);
    let trusting = wire::parse_with(frame, Checksums::TrustPartial);
    match (&verified, &trusting) {
        (Ok(v), Ok(t)) => assert_eq!(v, t, "TrustPartial changed an accepted datagram"),
        (Err(ParseError::BadUdpChecksum), Ok(t)) => assert!(t.checksum_offloaded),
        (Err(v), Err(t)) => assert_eq!(v, t, "TrustPartial changed the reason"),
        (v, t) => panic!("Verify gave {v:?} but TrustPartial {t:?}"),
    }
    let Ok(dgram) = verified else { return };
    assert!(!dgram.checksum_offloaded);

    // Where the UDP header sits: the payload borrows the frame, 8 bytes after it.
    let payload_at = dgram.payload.as_ptr() as usize - frame.as_ptr() as usize;
    let udp_at = payload_at - wire::UDP_HEADER_LEN;
    let udp = UdpHeaderSlice::from_slice(&frame[udp_at..]).expect("UDP header in the frame");
    assert_eq!(
        (udp.source_port(), udp.destination_port()),
        (dgram.src.port(), dgram.dst.port())
    );
    assert_eq!(usize::from(udp.length()), 8 + dgram.payload.len());
    let header = udp.to_header();
    let expected = match (dgram.src.ip(), dgram.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            header.calc_checksum_ipv4_raw(s.octets(), d.octets(), dgram.payload)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            header.calc_checksum_ipv6_raw(s.octets(), d.octets(), dgram.payload)
        }
        _ => panic!("mixed address families in {dgram:?}"),
    }
    .expect("a parsed datagram fits the length fields");
    // 0 is "no checksum" (IPv4 only; parse refuses it for IPv6).
    if header.checksum != 0 {
        assert_eq!(header.checksum, expected, "UDP checksum accepted by parse");
    } else {
        assert!(dgram.src.is_ipv4());
    }

    if !dgram.payload.is_empty() && header.checksum != 0 {
        let mut bent = frame.to_vec();
        bent[payload_at + dgram.payload.len() / 2] ^= 0x10;
        assert_eq!(wire::parse(&bent), Err(ParseError::BadUdpChecksum));
    }
    if dgram.src.is_ipv4() {
        // TTL: Ethernet header, the VLAN tag if any, 8 bytes into IPv4.
        let ttl_at = wire::ETHERNET_HEADER_LEN + dgram.vlan.map_or(0, |_| wire::VLAN_TAG_LEN) + 8;
        assert_eq!(frame[ttl_at], dgram.ttl);
        let mut bent = frame.to_vec();
        bent[ttl_at] ^= 0x01;
        assert_eq!(wire::parse(&bent), Err(ParseError::BadIpChecksum));
    }
}

/// RFC 1071 over `parts` (byte by byte, nothing shared with `wire`'s vectorized sum),
/// complemented.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for &byte in parts.iter().flat_map(|p| p.iter()) {
        match odd.take() {
            Some(high) => sum += u64::from(u16::from_be_bytes([high, byte])),
            None => odd = Some(byte),
        }
    }
    if let Some(high) = odd {
        sum += u64::from(high) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `frame` with its IPv4 header checksum and UDP checksum recomputed where the headers say
/// where they are (`None` when there is nothing to repair). libFuzzer cannot solve checksums:
/// without this, almost every mutation of a seed stops at `BadIpChecksum` or `BadUdpChecksum`
/// and the checks behind them go unexplored.
pub fn repair_checksums(frame: &[u8]) -> Option<Vec<u8>> {
    let mut f = frame.to_vec();
    let mut l3 = wire::ETHERNET_HEADER_LEN;
    let mut ether_type = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    if matches!(ether_type, 0x8100 | 0x88a8) {
        ether_type = u16::from_be_bytes([*f.get(16)?, *f.get(17)?]);
        l3 += wire::VLAN_TAG_LEN;
    }
    let (l4, end, pseudo) = match ether_type {
        0x0800 => {
            let ihl = usize::from(f.get(l3)? & 0x0f) * 4;
            if ihl < 20 || l3 + ihl > f.len() {
                return None;
            }
            f[l3 + 10..l3 + 12].fill(0);
            let c = internet_checksum(&[&f[l3..l3 + ihl]]);
            f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            let total = usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]));
            let end = (l3 + total).min(f.len());
            (l3 + ihl, end, [&f[l3 + 12..l3 + 20], &[0, 17][..]].concat())
        }
        0x86dd => {
            if l3 + 40 > f.len() {
                return None;
            }
            let payload = usize::from(u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]));
            let end = (l3 + 40 + payload).min(f.len());
            (
                l3 + 40,
                end,
                [&f[l3 + 8..l3 + 40], &[0, 0, 0, 17][..]].concat(),
            )
        }
        _ => return None,
    };
    if l4 + wire::UDP_HEADER_LEN > end {
        return Some(f);
    }
    let udp_len = u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]);
    let udp_end = (l4 + usize::from(udp_len)).clamp(l4 + wire::UDP_HEADER_LEN, end);
    f[l4 + 6..l4 + 8].fill(0);
    let c = match internet_checksum(&[
        &pseudo,
        &u32::from(udp_len).to_be_bytes()[if ether_type == 0x0800 { 2 } else { 0 }..],
        &f[l4..udp_end],
    ]) {
        0 => 0xffff,
        c => c,
    };
    f[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
    Some(f)
}

// ---------------------------------------------------------------------------------------------
// HTTP/3

/// The h3 app on any bytes: request streams, peer unidirectional streams and QPACK field
/// sections (see `app::h3::fuzz` for the input's layout and the properties).
pub fn h3(data: &[u8]) {
    crate::app::h3_fuzz(data);
}

// ---------------------------------------------------------------------------------------------
// hq-interop requests

/// `app::parse_request` on any bytes: never panics; a path it accepts is relative, made only of
/// normal components (nothing that could leave the document root), and the request written
/// back out from it parses to the same path.
pub fn hq_request(request: &[u8]) {
    let Ok(path) = parse_request(request) else {
        return;
    };
    assert!(!path.as_os_str().is_empty());
    assert!(path.is_relative(), "{path:?}");
    for component in path.components() {
        let Component::Normal(part) = component else {
            panic!("{path:?} has component {component:?}");
        };
        let part = part.to_str().expect("paths come from UTF-8");
        assert!(
            !part.contains(['\0', '\\', '?', '#'])
                && !part.contains(|c: char| c.is_ascii_whitespace()),
            "{path:?}"
        );
    }
    assert!(Path::new("/srv/www").join(&path).starts_with("/srv/www"));
    let again = format!("GET /{}\r\n", path.display());
    assert_eq!(
        parse_request(again.as_bytes()),
        Ok(path.clone()),
        "{again:?}"
    );
    // CR/LF ends the line: whatever follows it does not matter.
    let mut longer = request.to_vec();
    if let Some(end) = longer.iter().position(|&b| b == b'\r' || b == b'\n') {
        longer.truncate(end + 1);
        longer.extend_from_slice(b"GET /../etc/passwd");
        assert_eq!(parse_request(&longer), Ok(path));
    }
}

/// `RequestError` is matched here so that a new variant gets a property above.
const _: fn(RequestError) = |e| match e {
    RequestError::Malformed | RequestError::OutsideRoot => {}
};

// ---------------------------------------------------------------------------------------------
// The config loader

/// Where [`config`] pretends its file lives: the example config's folder, so that the relative
/// paths of the seeds (`root = "www"`) resolve to files that exist.
pub fn config_path() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/fuzz.toml"))
}

/// `Config::parse` on any text: never panics; every error points into the file (line and
/// column in range), and one that names a field says so in its message after the location.
pub fn config(src: &[u8]) {
    let Ok(src) = std::str::from_utf8(src) else {
        return;
    };
    let path = config_path();
    match Config::parse(path, src) {
        Ok(config) => {
            assert!(!config.server.listen.is_empty());
            assert!(
                config.apps.hq.is_some()
                    || config.apps.h3.is_some()
                    || config.apps.perf.is_some()
                    || config.apps.echo.is_some()
            );
        }
        Err(error @ ConfigError::Invalid { .. }) => {
            let location = error.location().expect("Invalid has a location");
            assert_eq!(location.file, path);
            let lines = src.split('\n').count();
            assert!(
                (1..=lines).contains(&location.line),
                "line {} of {lines}: {error}",
                location.line
            );
            let line = src.split('\n').nth(location.line - 1).unwrap_or_default();
            assert!(
                (1..=line.chars().count() + 1).contains(&location.column),
                "column {} of {line:?}: {error}",
                location.column
            );
            let shown = error.to_string();
            let prefix = format!("{location}: ");
            assert!(shown.starts_with(&prefix), "{shown:?}");
            if let Some(field) = error.field() {
                assert!(!field.is_empty(), "{shown:?}");
                assert!(
                    shown[prefix.len()..].starts_with(&format!("field `{field}`: ")),
                    "{shown:?}"
                );
            }
        }
        Err(ConfigError::Read { .. }) => panic!("parse never reads the file"),
    }
}

// ---------------------------------------------------------------------------------------------
// QUIC-LB connection IDs

/// A [`cid`] input, decoded: which layout, and the bytes to test against it.
///
/// Byte 0 picks the mode: bit 7 set is an encrypted [`CidLayout`], bit 6 set (7 clear) is
/// [`QuicLb`] alone, else a plaintext layout; the low 4 bits are the host id's length (the
/// plaintext length 5 + n % 15 for `QuicLb`). Then the host id, the 16-byte key (encrypted and
/// `QuicLb` modes), one worker octet, and the rest is the connection ID (or `QuicLb`'s data).
#[derive(Debug)]
pub struct CidInput<'a> {
    pub mode: CidMode,
    pub host: &'a [u8],
    pub key: [u8; 16],
    pub worker: u8,
    pub cid: &'a [u8],
}

/// See [`CidInput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidMode {
    Plaintext,
    Encrypted,
    /// `QuicLb` alone, data of this length.
    Cipher(usize),
}

/// Splits a [`cid`] input; `None` when it is too short to say everything.
pub fn cid_input(data: &[u8]) -> Option<CidInput<'_>> {
    let (&mode, rest) = data.split_first()?;
    let n = usize::from(mode & 0x0f);
    let (mode, host_len) = match mode >> 6 {
        0b10 | 0b11 => (CidMode::Encrypted, n),
        0b01 => (CidMode::Cipher(1 + MIN_NONCE_LEN + n % 15), 0),
        _ => (CidMode::Plaintext, n),
    };
    let host = rest.get(..host_len)?;
    let rest = &rest[host_len..];
    let (key, rest) = match mode {
        CidMode::Plaintext => ([0; 16], rest),
        _ => (rest.get(..16)?.try_into().ok()?, &rest[16..]),
    };
    let (&worker, cid) = rest.split_first()?;
    Some(CidInput {
        mode,
        host,
        key,
        worker,
        cid,
    })
}

/// Writes a [`cid`] input (the inverse of [`cid_input`]; `host_len` is `n` of the mode byte).
pub fn cid_encode(mode: CidMode, host: &[u8], key: &[u8; 16], worker: u8, cid: &[u8]) -> Vec<u8> {
    let mut out = vec![match mode {
        CidMode::Plaintext => host.len() as u8 & 0x0f,
        CidMode::Encrypted => 0x80 | (host.len() as u8 & 0x0f),
        CidMode::Cipher(len) => 0x40 | ((len - 1 - MIN_NONCE_LEN) as u8),
    }];
    out.extend_from_slice(host);
    if mode != CidMode::Plaintext {
        out.extend_from_slice(key);
    }
    out.push(worker);
    out.extend_from_slice(cid);
    out
}

/// `CidLayout::worker_of` on any connection ID: never panics, and names a worker only for an
/// ID of our length and first octet that carries our host id (after decryption, in encrypted
/// mode); IDs our generator issues name their worker; `QuicLb` decrypts what it encrypts, at
/// every length.
pub fn cid(data: &[u8]) {
    use quinn_proto::ConnectionIdGenerator;

    let Some(input) = cid_input(data) else { return };
    let layout = match input.mode {
        CidMode::Cipher(len) => {
            let cipher = QuicLb::new(&input.key, len).expect("5..=19 is QuicLb's range");
            let mut block = [0u8; MAX_PLAINTEXT_LEN];
            let n = input.cid.len().min(len);
            block[..n].copy_from_slice(&input.cid[..n]);
            let plain = block;
            cipher.encrypt(&mut block[..len]);
            cipher.decrypt(&mut block[..len]);
            assert_eq!(block, plain, "decrypt(encrypt(x)) at length {len}");
            cipher.decrypt(&mut block[..len]);
            cipher.encrypt(&mut block[..len]);
            assert_eq!(block, plain, "encrypt(decrypt(x)) at length {len}");
            // Other lengths are left alone.
            cipher.encrypt(&mut block[..len - 1]);
            assert_eq!(block, plain);
            return;
        }
        CidMode::Plaintext => CidLayout::new(input.host),
        CidMode::Encrypted => match CidLayout::encrypted(input.host, &input.key) {
            Ok(layout) => layout,
            Err(too_long) => {
                assert!(too_long.server_id + MIN_NONCE_LEN > MAX_PLAINTEXT_LEN);
                return;
            }
        },
    };
    assert!(
        layout.len() <= 20,
        "QUIC v1 connection IDs are at most 20 bytes"
    );
    let host = layout.host().len();

    if let Some(worker) = layout.worker_of(input.cid) {
        let cid = input.cid;
        assert_eq!(cid.len(), layout.len());
        assert_eq!(cid[0], layout.first_octet());
        if layout.is_encrypted() {
            let cipher = QuicLb::new(&input.key, cid.len() - 1).expect("the layout's length");
            let mut plain = cid[1..].to_vec();
            cipher.decrypt(&mut plain);
            assert_eq!((&plain[..host], plain[host]), (layout.host(), worker));
        } else {
            assert_eq!(&cid[1..1 + host], layout.host());
            assert_eq!(Some(1 + host), layout.worker_offset());
            assert_eq!(cid[1 + host], worker);
        }
    }

    let issued = WorkerCids::new(&layout, input.worker).generate_cid();
    assert_eq!(issued.len(), layout.len());
    assert_eq!(layout.worker_of(&issued), Some(input.worker), "{layout:?}");
    // A different host id (one bit off) never claims it; in encrypted mode nor does another key.
    if host > 0 {
        let mut other = layout.host().to_vec();
        other[0] ^= 1;
        let other = match layout.is_encrypted() {
            true => CidLayout::encrypted(&other, &input.key).expect("same length"),
            false => CidLayout::new(&other),
        };
        assert_eq!(other.worker_of(&issued), None);
    }
}

// ---------------------------------------------------------------------------------------------
// io_uring control messages

/// The io_uring receive decoders on any buffer: `split_received` never panics or reads past
/// the buffer; `decode_sockaddr` and `decode_recv` never panic on what it yields (nor on the
/// whole input); and for control data it calls well-formed, `decode_recv` finds what the C
/// library's `CMSG_FIRSTHDR`/`CMSG_NXTHDR` walk finds. Control data the send encoder writes
/// decodes to the ECN codepoint and IPv6 source it was given.
pub fn cmsg(data: &[u8]) {
    use crate::datapath::uring::msg;

    if let Some(received) = msg::split_received(data) {
        assert!(received.name.len() <= msg::RECV_NAME_LEN);
        assert!(received.control.len() <= msg::RECV_CONTROL_LEN);
        if let Some(addr) = msg::decode_sockaddr(received.name) {
            if let SocketAddr::V4(_) = addr {
                assert!(received.name.len() >= 8);
            } else {
                assert!(received.name.len() >= 28);
            }
        }
        check_control(received.control);
    }
    check_control(data);
    let _ = msg::decode_sockaddr(data);

    // The encoder: options from the first bytes.
    if let [flags, seg0, seg1, rest @ ..] = data {
        let ecn = crate::datapath::Ecn::from_bits(*flags);
        let src_ip = match (flags >> 2) & 0b11 {
            0 => None,
            1 => rest
                .get(..4)
                .map(|a| IpAddr::from(<[u8; 4]>::try_from(a).unwrap())),
            _ => rest
                .get(..16)
                .map(|a| IpAddr::from(<[u8; 16]>::try_from(a).unwrap())),
        };
        let opts = msg::SendOptions {
            ipv4: flags & 0x10 != 0,
            ecn,
            src_ip,
            segment_size: (flags & 0x20 != 0).then(|| u16::from_ne_bytes([*seg0, *seg1])),
        };
        let mut out = msg::SendControl::default();
        let len = msg::encode_send(&opts, &mut out);
        assert!(len <= msg::SEND_CONTROL_LEN);
        let info = check_control(&out.0[..len]);
        assert!(!info.malformed);
        assert_eq!(info.ecn, ecn);
        if let (false, Some(ip)) = (opts.ipv4, src_ip) {
            let v6 = match ip {
                IpAddr::V6(v6) => v6,
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            };
            assert_eq!(info.dst_ip, Some(IpAddr::V6(v6)));
        }
    }
}

/// `decode_recv` on `control`, checked against the C library's walk when it found nothing
/// malformed.
fn check_control(control: &[u8]) -> crate::datapath::uring::msg::RecvInfo {
    use crate::datapath::uring::msg;

    let info = msg::decode_recv(control);
    if info.malformed {
        return info;
    }
    // An aligned copy: the macros read `struct cmsghdr` fields in place.
    let mut aligned = vec![0u64; control.len().div_ceil(8)];
    // SAFETY: `aligned` holds at least `control.len()` bytes.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), control.len()) };
    bytes.copy_from_slice(control);
    // SAFETY: a zeroed msghdr is valid; only the control fields are read.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_control = bytes.as_mut_ptr().cast();
    header.msg_controllen = control.len();
    let mut expected = msg::RecvInfo::default();
    // SAFETY: the macros stay within msg_control..+msg_controllen, which `bytes` backs, and
    // decode_recv found every cmsg_len within the buffer (not malformed).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&header);
        while !c.is_null() {
            let len = (*c).cmsg_len - (libc::CMSG_DATA(c) as usize - c as usize);
            let data = std::slice::from_raw_parts(libc::CMSG_DATA(c), len);
            let int = data
                .get(..4)
                .map(|d| i32::from_ne_bytes(d.try_into().unwrap()));
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_TOS) => {
                    expected.ecn = crate::datapath::Ecn::from_bits(data[0]);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                    expected.ecn = crate::datapath::Ecn::from_bits(int.unwrap() as u8);
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let a: [u8; 4] = data[8..12].try_into().unwrap();
                    expected.dst_ip = Some(IpAddr::from(a));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let a: [u8; 16] = data[..16].try_into().unwrap();
                    expected.dst_ip = Some(IpAddr::from(a));
                }
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    expected.gro_segment = u16::try_from(int.unwrap()).ok().filter(|&s| s > 0);
                }
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                    expected.socket_drops = Some(int.unwrap() as u32);
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&header, c);
        }
    }
    assert_eq!(info, expected, "control {control:02x?}");
    info
}
