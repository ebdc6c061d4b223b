//! Ethernet/VLAN/IPv4/IPv6/UDP headers: parsing, building and checksums, once for every backend.
//!
//! Raw backends (AF_XDP, and any later one that sees whole frames) receive Ethernet frames and
//! must send them. This module is the one place that turns a received frame into a
//! [`Datagram`] (addresses, ECN, TTL and the borrowed UDP payload) and writes a
//! [`FrameHeader`] plus a payload into a caller's frame buffer.
//!
//! - [`parse`] accepts Ethernet II with at most one 802.1Q or 802.1ad tag, then IPv4 (options
//!   allowed, no fragments) or IPv6 (no extension headers), then UDP. It verifies the IPv4 header
//!   checksum, the UDP checksum and every length field, and says why it refused a frame with a
//!   [`ParseError`]; [`ParseCounters`] keeps one named counter per reason.
//! - [`write_frame`] writes a complete frame (IPv4 with DF set, ECN in TOS / traffic class, both
//!   checksums) into a `&mut [u8]` without allocating. [`header_len`] tells a caller how much
//!   room the headers take before it copies a payload.
//!
//! Headers are read and written with `etherparse`. The UDP checksum, the one pass over every
//! payload byte, uses this module's own RFC 1071 sum (`checksum`): it vectorizes (AVX2 where
//! the CPU has it), and is about 3x faster than etherparse's carry-chained `Sum16BitWords`
//! even without AVX2; it checks the IPv4 header too. Nothing allocates.
//!
//! Checksums are always verified, with one exception a caller asks for ([`parse_with`] and
//! [`Checksums::TrustPartial`]): on veth, frames sent by the peer kernel with TX checksum
//! offload on (the default of every container interface) carry only the pseudo-header sum in
//! the UDP checksum field. The kernel's own stack trusts them (CHECKSUM_PARTIAL); the XDP
//! backend does so too on veth (`xdp.rx_checksum`), and counts them.

mod build;
mod checksum;
mod parse;

#[cfg(test)]
mod tests;

pub use build::{header_len, header_len_for, write_frame, BuildError, FrameHeader, DEFAULT_TTL};
pub use parse::{
    parse, parse_with, ChecksumPolicy, Checksums, Datagram, ParseCounters, ParseError,
};

/// Ethernet II header: destination MAC, source MAC, EtherType.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// One 802.1Q / 802.1ad tag: TCI and the encapsulated EtherType.
pub const VLAN_TAG_LEN: usize = 4;
/// IPv4 header without options (the only kind [`write_frame`] writes).
pub const IPV4_HEADER_LEN: usize = 20;
/// IPv6 fixed header.
pub const IPV6_HEADER_LEN: usize = 40;
/// UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// The longest header [`write_frame`] writes: Ethernet, one VLAN tag, IPv6, UDP.
pub const MAX_HEADER_LEN: usize =
    ETHERNET_HEADER_LEN + VLAN_TAG_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN;

/// A fuzz target: parses `data` and, when that succeeds, writes the datagram back out with
/// [`write_frame`] and parses the result again, panicking if anything differs.
///
/// `parse` must never panic, whatever the bytes; a frame it accepts must survive a rebuild.
/// Ready for a `cargo fuzz` harness (`fuzz_target!(|data: &[u8]| quixd::wire::fuzz_roundtrip(data))`);
/// the unit tests feed it random and mutated frames. Allocates one buffer per accepted frame.
pub fn fuzz_roundtrip(data: &[u8]) {
    let Ok(dgram) = parse(data) else {
        return;
    };
    let hdr = FrameHeader {
        src_mac: dgram.src_mac,
        dst_mac: dgram.dst_mac,
        vlan: dgram.vlan,
        src: dgram.src,
        dst: dgram.dst,
        ecn: dgram.ecn,
        ttl: dgram.ttl,
    };
    // The rebuilt frame is never longer than the parsed one: no IPv4 options, no padding.
    let mut out = vec![0u8; header_len(&hdr) + dgram.payload.len()];
    assert!(
        out.len() <= data.len(),
        "rebuilt frame longer than the original"
    );
    let len = write_frame(&mut out, &hdr, dgram.payload).expect("rebuilding a parsed datagram");
    assert_eq!(len, out.len());
    let again = parse(&out[..len]).expect("parsing a rebuilt datagram");
    assert_eq!(again, dgram, "round trip changed the datagram");
}
