//! The seed corpora of `fuzz/corpus/<target>/` (`seed-*` files), and the replay of every
//! committed corpus file through its harness on stable Rust.
//!
//! Rewrite the seeds after changing them here:
//! `QUIXD_WRITE_SEEDS=1 cargo test -p quixd --lib fuzzing::seeds::seeds_are_committed`. Files libFuzzer found
//! (crash reproducers included) sit beside them under other names and are kept.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use etherparse::{IpHeaders, Ipv4Header, Ipv4Options, PacketBuilder};

use super::{cid_encode, internet_checksum as checksum, CidMode};
use crate::datapath::Ecn;
use crate::driver::cid::{CidLayout, QuicLb};
use crate::wire::{header_len, write_frame, FrameHeader};

/// The cargo-fuzz targets, as named in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 7] = [
    "wire",
    "xdp_differential",
    "hq_request",
    "config",
    "cid",
    "cmsg",
    "h3",
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Seeds for `target`: `(name, bytes)`.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "wire" | "xdp_differential" => frames(),
        "hq_request" => hq_requests(),
        "config" => configs(),
        "cid" => cids(),
        "cmsg" => cmsgs(),
        "h3" => crate::app::h3_fuzz_seeds(),
        _ => panic!("no target {target}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Frames

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);

fn frame(ipv6: bool, vlan: Option<u16>, dst_port: u16, served_addr: bool, len: usize) -> Vec<u8> {
    let (src, dst) = match (ipv6, served_addr) {
        (false, true) => (IpAddr::V4(CLIENT_V4), super::differential::ADDRESSES[0]),
        (false, false) => (
            IpAddr::V4(CLIENT_V4),
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 9)),
        ),
        (true, true) => (IpAddr::V6(CLIENT_V6), super::differential::ADDRESSES[1]),
        (true, false) => (IpAddr::V6(CLIENT_V6), "fd00::99".parse().unwrap()),
    };
    let hdr = FrameHeader {
        src_mac: CLIENT_MAC,
        dst_mac: SERVER_MAC,
        vlan,
        src: SocketAddr::new(src, 50000),
        dst: SocketAddr::new(dst, dst_port),
        ecn: Some(Ecn::Ect0),
        ttl: 64,
    };
    // A QUIC-looking payload: long header, version 1.
    let payload: Vec<u8> = [0xc0, 0, 0, 0, 1]
        .into_iter()
        .chain((0..len.saturating_sub(5)).map(|i| (i * 7) as u8))
        .take(len)
        .collect();
    let mut out = vec![0; header_len(&hdr) + payload.len()];
    write_frame(&mut out, &hdr, &payload).expect("seed frame");
    out
}

/// Recomputes the IPv4 header checksum of an untagged frame.
fn fix_ipv4(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame[24..26].fill(0);
    let c = checksum(&[&frame[14..14 + ihl]]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

fn frames() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| out.push((name.to_owned(), bytes));
    for (ipv6, family) in [(false, "v4"), (true, "v6")] {
        for (vlan, tag) in [(None, ""), (Some(100), "-vlan")] {
            add(
                &format!("{family}{tag}-ours"),
                frame(ipv6, vlan, 4433, true, 48),
            );
            add(
                &format!("{family}{tag}-empty"),
                frame(ipv6, vlan, 443, true, 0),
            );
        }
        add(
            &format!("{family}-other-port"),
            frame(ipv6, None, 53, true, 20),
        );
        add(
            &format!("{family}-other-addr"),
            frame(ipv6, None, 4433, false, 20),
        );
        add(
            &format!("{family}-oversize"),
            frame(ipv6, None, 4433, true, 1500),
        );
        let whole = frame(ipv6, None, 4433, true, 24);
        for cut in [13, 20, 33, 41, 55, 61] {
            add(
                &format!("{family}-cut-{cut}"),
                whole[..cut.min(whole.len() - 1)].to_vec(),
            );
        }
        let mut padded = whole.clone();
        padded.extend_from_slice(&[0; 6]);
        add(&format!("{family}-padded"), padded);
        let mut bad_udp = whole.clone();
        let last = bad_udp.len() - 1;
        bad_udp[last] ^= 0xff;
        add(&format!("{family}-bad-udp-checksum"), bad_udp);
        let udp_at = if ipv6 { 54 } else { 34 };
        let mut no_checksum = whole.clone();
        no_checksum[udp_at + 6..udp_at + 8].fill(0);
        add(&format!("{family}-zero-udp-checksum"), no_checksum);
        // The partial form a veth peer with TX offload leaves: the pseudo-header sum alone.
        let mut partial = whole.clone();
        let udp_len = [partial[udp_at + 4], partial[udp_at + 5]];
        let pseudo = if ipv6 {
            [&partial[22..54], &[0, 0, 0, 17][..], &[0, 0], &udp_len[..]].concat()
        } else {
            [&partial[26..34], &[0, 17][..], &udp_len[..]].concat()
        };
        partial[udp_at + 6..udp_at + 8].copy_from_slice(&(!checksum(&[&pseudo])).to_be_bytes());
        add(&format!("{family}-partial-checksum"), partial);
    }

    let v4 = frame(false, None, 4433, true, 24);
    let mut bad_ip = v4.clone();
    bad_ip[24] ^= 0xff;
    add("v4-bad-ip-checksum", bad_ip);
    let mut fragment = v4.clone();
    fragment[20] = 0x20; // MF
    fix_ipv4(&mut fragment);
    add("v4-fragment", fragment);
    let mut tcp = v4.clone();
    tcp[23] = 6;
    fix_ipv4(&mut tcp);
    add("v4-tcp", tcp);
    let mut long_total = v4.clone();
    long_total[16..18].copy_from_slice(&0x0400u16.to_be_bytes());
    fix_ipv4(&mut long_total);
    add("v4-total-length-too-long", long_total);
    let mut v6_in_v4 = v4.clone();
    v6_in_v4[14] = 0x65;
    add("v4-ethertype-version-6", v6_in_v4);

    // IPv4 with options, built by etherparse.
    let mut ip = Ipv4Header::new(0, 64, 17.into(), CLIENT_V4.octets(), [198, 18, 0, 1]).unwrap();
    ip.options = Ipv4Options::try_from(&[1u8, 1, 1, 0][..]).unwrap(); // NOP NOP NOP EOL
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .udp(50000, 4433);
    let payload = [0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut options = Vec::new();
    builder.write(&mut options, &payload).unwrap();
    add("v4-options", options);
    // QinQ and a double 802.1ad tag, ARP.
    let v4_vlan = frame(false, Some(100), 4433, true, 24);
    let mut qinq = v4_vlan[..16].to_vec();
    qinq.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    qinq.extend_from_slice(&v4_vlan[16..]);
    qinq[12..14].copy_from_slice(&[0x88, 0xa8]);
    add("v4-qinq", qinq);
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&CLIENT_V4.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[198, 18, 0, 1]);
    add("arp", arp);

    let v6 = frame(true, None, 4433, true, 24);
    let mut hop_by_hop = v6[..54].to_vec();
    hop_by_hop[20] = 0; // next header: hop-by-hop options
    hop_by_hop.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // then UDP; PadN
    hop_by_hop.extend_from_slice(&v6[54..]);
    let payload_len = u16::from_be_bytes([hop_by_hop[18], hop_by_hop[19]]) + 8;
    hop_by_hop[18..20].copy_from_slice(&payload_len.to_be_bytes());
    add("v6-hop-by-hop", hop_by_hop);
    let mut mapped = v6.clone();
    mapped[38..54].copy_from_slice(&Ipv4Addr::new(198, 18, 0, 1).to_ipv6_mapped().octets());
    add("v6-to-v4-mapped", mapped);
    let mut jumbo = v6.clone();
    jumbo[18..20].fill(0);
    add("v6-payload-length-0", jumbo);
    out
}

// ---------------------------------------------------------------------------------------------
// hq requests, configs

fn hq_requests() -> Vec<(String, Vec<u8>)> {
    [
        ("root", &b"GET /\r\n"[..]),
        ("index", b"GET /index.html\r\n"),
        ("nested", b"GET /a/b/c.txt"),
        ("query-fragment", b"GET /file.bin?x=1#top\r\n"),
        ("dot-segments", b"GET /a/./b/../c\r\n"),
        ("parent", b"GET /../etc/passwd\r\n"),
        ("double-slash", b"GET //etc/passwd\r\n"),
        ("backslash", b"GET /a\\..\\b\r\n"),
        ("nul", b"GET /a\0b\r\n"),
        ("http10", b"GET /index.html HTTP/1.0\r\n"),
        ("post", b"POST /upload\r\n"),
        ("tabs", b"GET\t/x\t\n"),
        ("utf8", "GET /d\u{e9}j\u{e0}-vu\u{a0}x\r\n".as_bytes()),
        ("latin1", b"GET /caf\xe9\r\n"),
        ("two-lines", b"GET /a\r\nGET /b\r\n"),
        ("empty", b""),
        ("perf-size", b"GET /1048576\r\n"),
    ]
    .into_iter()
    .map(|(name, bytes)| (name.to_owned(), bytes.to_vec()))
    .collect()
}

fn configs() -> Vec<(String, Vec<u8>)> {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/quixd.toml"))
            .expect("config/quixd.toml");
    // The example without its comments: shorter, so mutations land on values.
    let bare: String = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let minimal = "[server]\nlisten = [\"127.0.0.1:4433\"]\n[apps.hq]\nroot = \"www\"\n";
    let mut out = vec![
        ("example".to_owned(), example.clone()),
        ("example-bare".to_owned(), bare),
        ("minimal".to_owned(), minimal.to_owned()),
    ];
    let variants = [
        ("xdp", "[server]\nlisten = [\"10.0.0.1:443\", \"[fd00::1]:443\"]\nbackend = \"xdp\"\nworkers = \"auto\"\n[xdp]\ninterface = \"eth0\"\nqueues = [0, 1]\nattach = \"skb\"\nzero_copy = \"off\"\ntransmit = \"kernel\"\nrx_checksum = \"trust-offload\"\nvlan = 100\nframes = 8192\nring_size = 2048\n[apps.perf]\nalpn = [\"perf\"]\n"),
        ("quic-lb", "[server]\nlisten = [\"127.0.0.1:4433\"]\nserver_id = \"0a0b\"\ncid_key = \"8f95f09245765f80256934e50c66207f\"\nworkers = 4\ncpus = [0, 1]\n[apps.echo]\nalpn = [\"echo\"]\n"),
        ("io-uring", "[server]\nlisten = [\"[::1]:4433\"]\nbackend = \"io_uring\"\n[io_uring]\nbuffers = 64\nbuffer_size = 2048\nsend_zc = true\n[transport]\nretry = true\ncongestion = \"bbr\"\nzero_rtt = false\n[apps.hq]\nroot = \"www\"\nalpn = [\"hq-interop\"]\n"),
        ("metrics-tls", "[metrics]\nlisten = \"127.0.0.1:9464\"\n[server]\nlisten = [\"127.0.0.1:4433\"]\nuser = \"nobody\"\n[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n[apps.hq]\nroot = \"www\"\n"),
        ("unknown-field", "[server]\nlisten = [\"127.0.0.1:4433\"]\nlisten_backlog = 5\n[apps.hq]\nroot = \"www\"\n"),
        ("bad-type", "[server]\nlisten = \"127.0.0.1:4433\"\n[apps.hq]\nroot = \"www\"\n"),
        ("missing-listen", "[server]\nbackend = \"socket\"\n[apps.hq]\nroot = \"www\"\n"),
        ("bad-mtu", "[server]\nlisten = [\"127.0.0.1:4433\"]\n[transport]\ninitial_mtu = 9000\n[apps.hq]\nroot = \"www\"\n"),
        ("duplicate-alpn", "[server]\nlisten = [\"127.0.0.1:4433\"]\n[apps.perf]\nalpn = [\"x\"]\n[apps.echo]\nalpn = [\"x\"]\n"),
        ("inline-tables", "server = { listen = [\"127.0.0.1:4433\"], workers = 0 }\napps = { hq = { root = \"www\" } }\n"),
        ("syntax-error", "[server\nlisten = [\"127.0.0.1:4433\"\n"),
    ];
    out.extend(variants.map(|(name, src)| (name.to_owned(), src.to_owned())));
    out.into_iter()
        .map(|(name, src)| (name, src.into_bytes()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Connection IDs

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn cids() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let key: [u8; 16] = hex("8f95f09245765f80256934e50c66207f").try_into().unwrap();
    // Plaintext IDs as our generator lays them out (fixed nonces for a stable corpus).
    for host in [&[][..], &[0x0a, 0x0b], &[1, 2, 3, 4, 5, 6, 7, 8]] {
        let layout = CidLayout::new(host);
        let mut cid = vec![layout.first_octet()];
        cid.extend_from_slice(host);
        cid.push(3);
        cid.extend_from_slice(&[0x5a; 6]);
        assert_eq!(layout.worker_of(&cid), Some(3));
        let name = format!("plain-host{}", host.len());
        out.push((name, cid_encode(CidMode::Plaintext, host, &key, 3, &cid)));
    }
    // The draft's single-pass vector is our encrypted layout (host ed793a51d49b8f, worker 0x5f).
    let host = hex("ed793a51d49b8f");
    let layout = CidLayout::encrypted(&host, &key).unwrap();
    let mut block = [hex("ed793a51d49b8f5f"), hex("ee080dbf48c0d1e5")].concat();
    QuicLb::new(&key, 16).unwrap().encrypt(&mut block);
    let cid = [&[layout.first_octet()][..], &block].concat();
    assert_eq!(layout.worker_of(&cid), Some(0x5f));
    out.push((
        "draft-single-pass".to_owned(),
        cid_encode(CidMode::Encrypted, &host, &key, 0x5f, &cid),
    ));
    out.push((
        "encrypted-long-host".to_owned(),
        cid_encode(CidMode::Encrypted, &[7; 12], &key, 1, &[0x12; 20]),
    ));
    // The draft's vectors and four-pass example as QuicLb inputs (plaintext of each length).
    let vectors = [
        ("ed793a", "ee080dbf"),
        ("ed793a51d49b8f5fab65", "ee080dbf48"),
        ("ed793a51d49b8f5f", "ee080dbf48c0d1e5"),
        ("ed793a51d49b8f5fab", "ee080dbf48c0d1e55d"),
    ];
    for (i, (sid, nonce)) in vectors.into_iter().enumerate() {
        let plain = [hex(sid), hex(nonce)].concat();
        out.push((
            format!("draft-vector-{i}"),
            cid_encode(CidMode::Cipher(plain.len()), &[], &key, 0, &plain),
        ));
    }
    let example_key: [u8; 16] = hex("fdf726a9893ec05c0632d3956680baf0").try_into().unwrap();
    out.push((
        "draft-four-pass-example".to_owned(),
        cid_encode(
            CidMode::Cipher(7),
            &[],
            &example_key,
            0,
            &hex("31441a9c69c275"),
        ),
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// io_uring buffers

fn cmsg_bytes(level: i32, ty: i32, data: &[u8]) -> Vec<u8> {
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let space = hdr + data.len().div_ceil(8) * 8;
    let mut v = vec![0u8; space];
    v[..8].copy_from_slice(&(hdr + data.len()).to_ne_bytes());
    v[8..12].copy_from_slice(&level.to_ne_bytes());
    v[12..16].copy_from_slice(&ty.to_ne_bytes());
    v[hdr..hdr + data.len()].copy_from_slice(data);
    v
}

fn recv_buffer(name: &[u8], control: &[u8], payload: &[u8], flags: u32) -> Vec<u8> {
    use crate::datapath::uring::msg::{RECVMSG_OUT_LEN, RECV_HEADROOM, RECV_NAME_LEN};
    let mut b = vec![0u8; RECV_HEADROOM + payload.len()];
    b[0..4].copy_from_slice(&(name.len() as u32).to_ne_bytes());
    b[4..8].copy_from_slice(&(control.len() as u32).to_ne_bytes());
    b[8..12].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
    b[12..16].copy_from_slice(&flags.to_ne_bytes());
    b[RECVMSG_OUT_LEN..RECVMSG_OUT_LEN + name.len()].copy_from_slice(name);
    let control_at = RECVMSG_OUT_LEN + RECV_NAME_LEN;
    b[control_at..control_at + control.len()].copy_from_slice(control);
    b[RECV_HEADROOM..].copy_from_slice(payload);
    b
}

fn sockaddr(addr: SocketAddr) -> Vec<u8> {
    let sa = socket2::SockAddr::from(addr);
    let len = sa.len() as usize;
    let storage = sa.as_storage();
    // SAFETY: sockaddr_storage is plain bytes; `len()` of them are the address.
    unsafe {
        std::slice::from_raw_parts(
            (&storage as *const libc::sockaddr_storage).cast::<u8>(),
            len,
        )
    }
    .to_vec()
}

fn cmsgs() -> Vec<(String, Vec<u8>)> {
    let mut pktinfo = [0u8; 12];
    pktinfo[8..12].copy_from_slice(&[127, 0, 0, 1]);
    let v4_control = [
        cmsg_bytes(libc::IPPROTO_IP, libc::IP_TOS, &[0x02]),
        cmsg_bytes(libc::IPPROTO_IP, libc::IP_PKTINFO, &pktinfo),
        cmsg_bytes(libc::SOL_UDP, libc::UDP_GRO, &1200i32.to_ne_bytes()),
        cmsg_bytes(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &3u32.to_ne_bytes()),
    ]
    .concat();
    let mut pktinfo6 = [0u8; 20];
    pktinfo6[15] = 1;
    let v6_control = [
        cmsg_bytes(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &3i32.to_ne_bytes()),
        cmsg_bytes(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &pktinfo6),
    ]
    .concat();
    let v4 = sockaddr("198.51.100.9:4433".parse().unwrap());
    let v6 = sockaddr("[2001:db8::9%3]:443".parse().unwrap());
    let mut too_long = cmsg_bytes(libc::IPPROTO_IP, libc::IP_TOS, &[0x03]);
    too_long[..8].copy_from_slice(&999usize.to_ne_bytes());
    let short_gro = cmsg_bytes(libc::SOL_UDP, libc::UDP_GRO, &[1]);
    let payload = [0x40, 1, 2, 3, 4, 5, 6, 7];
    vec![
        (
            "recv-v4".to_owned(),
            recv_buffer(&v4, &v4_control, &payload, 0),
        ),
        (
            "recv-v6".to_owned(),
            recv_buffer(&v6, &v6_control, &payload, 0),
        ),
        (
            "recv-truncated".to_owned(),
            recv_buffer(
                &v4,
                &[],
                &payload,
                (libc::MSG_TRUNC | libc::MSG_CTRUNC) as u32,
            ),
        ),
        ("control-v4".to_owned(), v4_control),
        ("control-v6".to_owned(), v6_control),
        ("control-length-too-long".to_owned(), too_long),
        ("control-short-gro".to_owned(), short_gro),
        ("sockaddr-v6".to_owned(), v6),
    ]
}

// ---------------------------------------------------------------------------------------------

/// Runs `data` through `target`'s harness; the differential target's frames through
/// [`super::wire`] (the kernel half needs privileges and runs in the fuzz crate).
fn replay(target: &str, data: &[u8]) {
    match target {
        "wire" | "xdp_differential" => super::wire(data),
        "hq_request" => super::hq_request(data),
        "config" => super::config(data),
        "cid" => super::cid(data),
        "cmsg" => super::cmsg(data),
        "h3" => super::h3(data),
        _ => panic!("no target {target}"),
    }
}

/// Every committed corpus file, seeds and libFuzzer's finds alike, passes its harness.
#[test]
fn committed_corpora_pass_their_harnesses() {
    for target in TARGETS {
        let dir = corpus_dir(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut count = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| replay(target, &data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails its harness",
                path.display()
            );
            count += 1;
        }
        assert!(count >= 5, "{target}: only {count} corpus files");
    }
}

/// The committed frames through the XDP program too (needs CAP_BPF; skipped without it
/// unless `QUIXD_REQUIRE_PRIVILEGED=1`).
#[test]
fn committed_frames_agree_with_the_xdp_program() {
    let programs = match super::Differential::new() {
        Ok(programs) => programs,
        Err(e)
            if e.is_permission_denied()
                && std::env::var_os("QUIXD_REQUIRE_PRIVILEGED").is_none() =>
        {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("loading the XDP program: {e}"),
    };
    for entry in std::fs::read_dir(corpus_dir("xdp_differential")).unwrap() {
        let path = entry.unwrap().path();
        let frame = std::fs::read(&path).unwrap();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| programs.check(&frame)));
        assert!(outcome.is_ok(), "{} fails the differential", path.display());
    }
}

/// The seeds here pass their harness and are the committed ones. With
/// `QUIXD_WRITE_SEEDS=1` it first writes them into `fuzz/corpus/<target>/seed-<name>` (after
/// changing a seed here, or the example config a seed copies).
#[test]
fn seeds_are_committed() {
    let write = std::env::var_os("QUIXD_WRITE_SEEDS").is_some_and(|v| v == "1");
    for target in TARGETS {
        let dir = corpus_dir(target);
        for (name, bytes) in seeds(target) {
            replay(target, &bytes);
            let path = dir.join(format!("seed-{name}"));
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == bytes,
                "{} differs from its seed: rerun this test with QUIXD_WRITE_SEEDS=1",
                path.display()
            );
        }
    }
}
