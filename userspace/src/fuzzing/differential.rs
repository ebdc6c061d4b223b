//! The XDP program against `wire::parse`: the kernel decides which frames reach us, userspace
//! decides which of those it serves; the two must agree on every frame.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::datapath::xdp::program::{ProgramCounters, XdpAction, XdpProgram, XdpProgramError};
use crate::wire::{self, Checksums, ParseError};

/// The ports both programs steer.
pub const PORTS: [u16; 2] = [443, 4433];
/// The addresses of the filtering program (the seeds' server addresses).
pub const ADDRESSES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
];
/// The programs' frame limit: longer frames of ours pass to the kernel as `oversize`.
pub const MAX_FRAME: u32 = 1514;

/// The longest frame `BPF_PROG_TEST_RUN` hands an XDP program whole: a page less the XDP
/// headroom (256) and `skb_shared_info` (320); longer data goes into fragments that a program
/// without `xdp.frags` never sees. Real frames that long need a frags program anyway.
pub const MAX_TEST_FRAME: usize = 4096 - 256 - 320;

/// Two copies of the XDP program, loaded once per process: one steering [`PORTS`] on any
/// address, one with the address filter on for [`ADDRESSES`]. No socket is registered, so a
/// frame the program would redirect comes back as `XDP_PASS` counted `no_socket` (or
/// `oversize`): the counters, not the verdict, say what the program decided.
pub struct Differential {
    any_address: XdpProgram,
    filtered: XdpProgram,
}

/// What the program decided about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Steered to us (`no_socket` or `oversize` here, `redirected` with a socket).
    Ours,
    NotOurs,
    Malformed,
    Fragment,
    Ipv6Extension,
}

impl Differential {
    /// Loads both programs (needs CAP_BPF and CAP_NET_ADMIN, or root).
    pub fn new() -> Result<Self, XdpProgramError> {
        let load = |filter: bool| -> Result<XdpProgram, XdpProgramError> {
            let mut program = XdpProgram::load()?;
            program.set_ports(&PORTS)?;
            program.set_max_frame(MAX_FRAME)?;
            if filter {
                for addr in ADDRESSES {
                    program.add_address(addr)?;
                }
            }
            program.set_address_filter(filter)?;
            Ok(program)
        };
        Ok(Self {
            any_address: load(false)?,
            filtered: load(true)?,
        })
    }

    /// Runs `frame` through both programs and `wire::parse` (both checksum modes) and panics
    /// when they disagree:
    ///
    /// - what a program steers to us, userspace accepts (to a served port and, filtered, a
    ///   served address), or refuses for a reason only userspace checks (IP or UDP checksum);
    /// - what a program passes to the kernel, userspace never accepts as ours; when the program
    ///   says fragment or IPv6 extension header, userspace names the same reason (or the IPv4
    ///   header checksum, which it checks first).
    ///
    /// Frames shorter than an Ethernet header never reach XDP (the kernel refuses to test-run
    /// them); userspace must refuse them too. Frames over [`MAX_TEST_FRAME`] are skipped.
    ///
    /// Every frame runs twice: as given, and with its checksums repaired (see
    /// [`super::repair_checksums`]), which takes mutations past userspace's checksum checks.
    pub fn check(&self, frame: &[u8]) {
        self.check_once(frame);
        if let Some(repaired) = super::repair_checksums(frame) {
            self.check_once(&repaired);
        }
    }

    fn check_once(&self, frame: &[u8]) {
        if frame.len() < wire::ETHERNET_HEADER_LEN {
            assert_eq!(wire::parse(frame), Err(ParseError::Truncated));
            return;
        }
        if frame.len() > MAX_TEST_FRAME {
            return;
        }
        for (program, filter) in [(&self.any_address, false), (&self.filtered, true)] {
            let verdict = run(program, frame);
            for checksums in [Checksums::Verify, Checksums::TrustPartial] {
                let parsed = wire::parse_with(frame, checksums);
                let served = parsed.as_ref().is_ok_and(|d| {
                    PORTS.contains(&d.dst.port()) && (!filter || ADDRESSES.contains(&d.dst.ip()))
                });
                let why = || {
                    format!("filter {filter}, {checksums:?}: XDP {verdict:?}, parse {parsed:?}, frame {frame:02x?}")
                };
                match verdict {
                    Verdict::Ours => assert!(
                        served
                            || matches!(
                                parsed,
                                Err(ParseError::BadIpChecksum
                                    | ParseError::BadUdpChecksum
                                    | ParseError::MissingUdpChecksum)
                            ),
                        "{}",
                        why()
                    ),
                    Verdict::NotOurs | Verdict::Malformed => assert!(!served, "{}", why()),
                    Verdict::Fragment => assert!(
                        matches!(
                            parsed,
                            Err(ParseError::Fragment | ParseError::BadIpChecksum)
                        ),
                        "{}",
                        why()
                    ),
                    Verdict::Ipv6Extension => {
                        assert_eq!(parsed, Err(ParseError::Ipv6ExtensionHeader), "{}", why())
                    }
                }
            }
        }
    }
}

/// The program's decision, from its counters (exactly one reason moves per frame).
fn run(program: &XdpProgram, frame: &[u8]) -> Verdict {
    let before = program.counters().expect("reading the counters");
    let action = program.test_run(frame).expect("BPF_PROG_TEST_RUN");
    let c = program
        .counters()
        .expect("reading the counters")
        .delta_since(&before);
    assert_eq!(
        action,
        XdpAction::Pass,
        "the program never drops, and has no socket here"
    );
    let one = |reason: u64| c.passed == 1 && reason == 1;
    let verdict = if one(c.no_socket) || one(c.oversize) {
        Verdict::Ours
    } else if one(c.not_ours) {
        Verdict::NotOurs
    } else if one(c.malformed) {
        Verdict::Malformed
    } else if one(c.fragment) {
        Verdict::Fragment
    } else if one(c.ipv6_ext) {
        Verdict::Ipv6Extension
    } else {
        panic!("counters moved by {c:?} for one frame");
    };
    let reasons = c.not_ours + c.malformed + c.no_socket + c.fragment + c.ipv6_ext + c.oversize;
    assert_eq!(
        (c.passed, reasons, c.redirected),
        (1, 1, 0),
        "exactly one reason per frame: {c:?}"
    );
    let _: ProgramCounters = c;
    verdict
}
