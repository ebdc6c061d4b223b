//! The raw scenario's reference ("floor"): a bare AF_XDP UDP echo server.
//!
//! quixd's own steering program redirects UDP datagrams to `--port` into one AF_XDP socket on
//! one RX queue (copy mode: veth has no zero-copy). Each received frame is turned around in
//! place — Ethernet MACs, IPv4/IPv6 addresses and UDP ports swapped — and put on the TX ring
//! as is: no copy, no checksum work (swapping keeps the IPv4 header checksum and the UDP
//! checksum valid, as both are sums over the swapped fields), no allocation per packet, no
//! frame ledger. It is the least any AF_XDP datapath can do per packet, so quixd's XDP
//! backend is measured against it.
//!
//! The socket is quixd's own (`datapath::xdp::socket::Xsk`: UMEM, rings, fill target and
//! copy-mode kick policy), so floor and backend differ only in what happens above the socket.
//! Frame cycle: fill ring -> kernel RX -> RX ring -> turned around -> TX ring -> kernel TX ->
//! completion ring -> free -> fill ring. Frames that are not IPv4/IPv6 UDP (the program should
//! never send us any) go straight back to free.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use quixd::datapath::xdp::program::{AttachMode, XdpProgram};
use quixd::datapath::xdp::socket::{CopyMode, Xsk, XskSizes};
use xdp::slab::{HeapSlab, Slab};

#[derive(Debug, Args)]
pub struct BareArgs {
    /// The interface to attach to (in the current network namespace).
    #[arg(long)]
    pub interface: String,
    /// The UDP port to steer and echo.
    #[arg(long)]
    pub port: u16,
    /// "driver" or "skb" (or "auto": driver, else skb).
    #[arg(long, default_value = "driver")]
    pub attach: String,
    /// The RX queue to serve (veth has one, 0, unless raised with `ethtool -L`).
    #[arg(long, default_value_t = 0)]
    pub queue: u32,
    /// UMEM frames (2 KiB each). The default matches quixd's `xdp` defaults.
    #[arg(long, default_value_t = 4096)]
    pub frames: u32,
    /// RX, TX and completion ring size (a power of two); the fill ring is twice it.
    #[arg(long, default_value_t = 2048)]
    pub ring: u32,
}

/// Frames taken from the RX ring per turn (quixd's backend takes as many).
const BATCH: usize = 64;
/// The wait when idle: short enough to notice a stop request promptly.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// The wait when frames are still on their way out (the poll kicks TX again).
const DRAIN_WAIT: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
struct Counters {
    rx: u64,
    tx: u64,
    dropped_not_udp: u64,
    /// Frames dropped because the TX queue was full.
    tx_queue_full: u64,
    waits: u64,
}

pub fn run(args: &BareArgs) -> Result<()> {
    let mode: AttachMode = args.attach.parse().map_err(|e: String| anyhow!(e))?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }

    // Declaration order is drop order reversed: the batch (frames of the socket's UMEM) goes
    // first, then the program (detached), then the socket.
    let sizes = XskSizes {
        frames: args.frames,
        ring: args.ring,
    };
    let mut xsk =
        Xsk::open(&args.interface, args.queue, sizes, CopyMode::Copy).with_context(|| {
            format!(
                "opening an AF_XDP socket on {} queue {}",
                args.interface, args.queue
            )
        })?;

    let mut program = XdpProgram::load().context("loading quixd's XDP program")?;
    program.set_ports(&[args.port])?;
    program.set_address_filter(false)?;
    program.register_xsk(args.queue, xsk.as_fd())?;
    let attached = program
        .attach(&args.interface, mode)
        .with_context(|| format!("attaching to {}", args.interface))?;

    let mut batch = HeapSlab::with_capacity(BATCH);
    let mut c = Counters::default();

    eprintln!(
        "bare-xdp: listening on {} queue {} port {} (attach {attached}, copy mode, {} frames, \
         ring {})",
        args.interface, args.queue, args.port, args.frames, args.ring
    );

    while !stop.load(Ordering::Relaxed) {
        // Completed transmissions back to free, free frames to the fill ring.
        let reaped = xsk.reap();
        xsk.refill();

        let received = xsk.recv(&mut batch);
        c.rx += received as u64;
        while let Some(mut frame) = batch.pop_back() {
            if !turn_around(&mut frame) {
                c.dropped_not_udp += 1;
                xsk.release(frame);
            } else if !xsk.forward(frame) {
                c.tx_queue_full += 1;
            }
        }
        let sent = xsk.flush_tx().context("AF_XDP transmit")?;
        c.tx += sent as u64;

        // Nothing received, sent or completed: wait, for RX or briefly while TX drains (the
        // poll transmits in copy mode too).
        if received == 0 && sent == 0 && reaped == 0 {
            c.waits += 1;
            let wait = if xsk.tx_in_flight() > 0 || xsk.tx_backlog() > 0 {
                DRAIN_WAIT
            } else {
                IDLE_WAIT
            };
            // EINTR (a stop signal) returns Ok(false); the loop condition sees the flag.
            xsk.poll(wait).context("polling the AF_XDP socket")?;
        }
    }

    let prog = program.counters().ok();
    program.detach().context("detaching the XDP program")?;
    drop(program);
    let mut line = format!(
        "bare-xdp: rx={} tx={} dropped_not_udp={} tx_queue_full={} kicks={} kicks_busy={} \
         waits={} tx_unreaped={}",
        c.rx,
        c.tx,
        c.dropped_not_udp,
        c.tx_queue_full,
        xsk.kicks,
        xsk.kicks_busy,
        c.waits,
        xsk.tx_in_flight(),
    );
    if let Some(p) = prog {
        line += &format!(" prog_redirected={} prog_passed={}", p.redirected, p.passed);
    }
    if let Some(s) = xsk.statistics() {
        line += &format!(
            " xsk_rx_dropped={} xsk_rx_invalid_descs={} xsk_tx_invalid_descs={} \
             xsk_rx_ring_full={} xsk_rx_fill_ring_empty_descs={} xsk_tx_ring_empty_descs={}",
            s.rx_dropped,
            s.rx_invalid_descs,
            s.tx_invalid_descs,
            s.rx_ring_full,
            s.rx_fill_ring_empty_descs,
            s.tx_ring_empty_descs
        );
    }
    eprintln!("{line}");
    Ok(())
}

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_UDP: u8 = 17;
const UDP_HLEN: usize = 8;

/// Turns an Ethernet / [802.1Q] / IPv4-or-IPv6 / UDP frame around in place: swaps the MACs,
/// the IP addresses and the UDP ports. Both checksums stay valid (each is a sum over fields
/// that are only swapped). Returns false, leaving the frame as it was, for anything else.
fn turn_around(frame: &mut [u8]) -> bool {
    if frame.len() < ETH_HLEN {
        return false;
    }
    let mut l3 = ETH_HLEN;
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype == ETHERTYPE_VLAN {
        if frame.len() < ETH_HLEN + 4 {
            return false;
        }
        ethertype = u16::from_be_bytes([frame[16], frame[17]]);
        l3 += 4;
    }
    let (addrs, addr_len, l4) = match ethertype {
        ETHERTYPE_IPV4 => {
            let Some(ip) = frame.get(l3..l3 + 20) else {
                return false;
            };
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != IPPROTO_UDP {
                return false;
            }
            (l3 + 12, 4, l3 + ihl)
        }
        ETHERTYPE_IPV6 => {
            let Some(ip) = frame.get(l3..l3 + 40) else {
                return false;
            };
            if ip[0] >> 4 != 6 || ip[6] != IPPROTO_UDP {
                return false;
            }
            (l3 + 8, 16, l3 + 40)
        }
        _ => return false,
    };
    if frame.len() < l4 + UDP_HLEN {
        return false;
    }
    swap_halves(&mut frame[..12]);
    swap_halves(&mut frame[addrs..addrs + 2 * addr_len]);
    swap_halves(&mut frame[l4..l4 + 4]);
    true
}

/// Swaps the first half of `bytes` with the second.
fn swap_halves(bytes: &mut [u8]) {
    let (a, b) = bytes.split_at_mut(bytes.len() / 2);
    a.swap_with_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Internet checksum's ones'-complement sum of `data` (folded, not inverted).
    fn sum(data: &[u8], mut acc: u32) -> u32 {
        for chunk in data.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            acc += u32::from(word);
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc
    }

    fn udp_checksum_ok(src: &[u8], dst: &[u8], udp: &[u8]) -> bool {
        let mut acc = sum(src, 0);
        acc = sum(dst, acc);
        acc += u32::from(IPPROTO_UDP) + udp.len() as u32;
        sum(udp, acc) == 0xffff
    }

    fn udp(payload: &[u8], src: &[u8], dst: &[u8]) -> Vec<u8> {
        let len = (UDP_HLEN + payload.len()) as u16;
        let mut u = vec![0x30, 0x39, 0x11, 0x51];
        u.extend_from_slice(&len.to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        let mut acc = sum(src, 0);
        acc = sum(dst, acc);
        acc += u32::from(IPPROTO_UDP) + u32::from(len);
        let csum = !(sum(&u, acc) as u16);
        u[6..8].copy_from_slice(&csum.to_be_bytes());
        u
    }

    fn eth(ethertype: u16, vlan: bool) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if vlan {
            f.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            f.extend_from_slice(&[0, 7]);
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn ipv4_frame(vlan: bool) -> Vec<u8> {
        let (src, dst) = ([198, 18, 77, 2], [198, 18, 77, 1]);
        let udp = udp(b"hello, bare", &src, &dst);
        let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, IPPROTO_UDP, 0, 0];
        ip[2..4].copy_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let csum = !(sum(&ip, 0) as u16);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        let mut f = eth(ETHERTYPE_IPV4, vlan);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&udp);
        f
    }

    fn ipv6_frame() -> Vec<u8> {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src[0] = 0xfd;
        src[15] = 2;
        dst[0] = 0xfd;
        dst[15] = 1;
        let udp = udp(b"hello over v6", &src, &dst);
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[IPPROTO_UDP, 64]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let mut f = eth(ETHERTYPE_IPV6, false);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&udp);
        f
    }

    #[test]
    fn ipv4_is_turned_around_with_valid_checksums() {
        for vlan in [false, true] {
            let original = ipv4_frame(vlan);
            let mut f = original.clone();
            assert!(turn_around(&mut f));
            let l3 = if vlan { 18 } else { 14 };
            assert_eq!(f[..6], original[6..12]);
            assert_eq!(f[6..12], original[..6]);
            assert_eq!(f[l3 + 12..l3 + 16], original[l3 + 16..l3 + 20]);
            assert_eq!(f[l3 + 16..l3 + 20], original[l3 + 12..l3 + 16]);
            assert_eq!(f[l3 + 20..l3 + 22], original[l3 + 22..l3 + 24]);
            assert_eq!(f[l3 + 22..l3 + 24], original[l3 + 20..l3 + 22]);
            assert_eq!(f[l3 + 24..], original[l3 + 24..]);
            assert_eq!(sum(&f[l3..l3 + 20], 0), 0xffff, "IPv4 header checksum");
            let (src, dst) = (&f[l3 + 12..l3 + 16], &f[l3 + 16..l3 + 20]);
            assert!(udp_checksum_ok(src, dst, &f[l3 + 20..]));
            assert!(turn_around(&mut f));
            assert_eq!(f, original);
        }
    }

    #[test]
    fn ipv6_is_turned_around_with_a_valid_checksum() {
        let original = ipv6_frame();
        let mut f = original.clone();
        assert!(turn_around(&mut f));
        assert_eq!(f[22..38], original[38..54]);
        assert_eq!(f[38..54], original[22..38]);
        assert_eq!(f[54..56], original[56..58]);
        assert!(udp_checksum_ok(&f[22..38], &f[38..54], &f[54..]));
        assert!(turn_around(&mut f));
        assert_eq!(f, original);
    }

    #[test]
    fn other_frames_are_left_alone() {
        let mut tcp = ipv4_frame(false);
        tcp[14 + 9] = 6;
        let mut arp = eth(0x0806, false);
        arp.extend_from_slice(&[0; 28]);
        let truncated = ipv4_frame(false)[..14 + 20 + 4].to_vec();
        let mut v6_ext = ipv6_frame();
        v6_ext[14 + 6] = 0; // hop-by-hop options
        for frame in [tcp, arp, truncated, v6_ext, vec![0; 10]] {
            let mut f = frame.clone();
            assert!(!turn_around(&mut f));
            assert_eq!(f, frame);
        }
    }
}
