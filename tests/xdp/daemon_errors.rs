//! The daemon's start-up errors on the XDP backend: each exits non-zero at once with a message
//! that names the problem and its fix, and leaves nothing attached.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use quixd::datapath::xdp::attach;

use crate::daemon::{in_ns, ip_xdp, listen_both, Quixd, Site, PORT};
use crate::netns::{privileged, TestNet};

/// How quickly a refused start must exit.
const QUICK: Duration = Duration::from_secs(10);

/// Runs the daemon (behind `wrapper`) to its exit; returns its output. It must fail within
/// [`QUICK`].
fn failed_start(net: &TestNet, wrapper: &[&str], config: &std::path::Path) -> String {
    let started = Instant::now();
    let mut daemon = Quixd::spawn(&net.server_ns, wrapper, config);
    let status = daemon
        .wait_exit(QUICK)
        .unwrap_or_else(|| panic!("quixd still running {QUICK:?} after a refused start"));
    let log = daemon.log();
    eprintln!(
        "quixd exited with {status} after {:?}:\n{log}",
        started.elapsed()
    );
    assert!(!status.success(), "quixd exited with {status}");
    assert!(
        !log.contains("listening"),
        "it reported listening before failing"
    );
    log
}

#[test]
fn daemon_missing_interface_is_named() {
    if !privileged("daemon_missing_interface_is_named") {
        return;
    }
    let net = TestNet::new();
    let site = Site::new();
    let config = site.config("qxnosuch0", "auto", &listen_both(&net), "");
    let log = failed_start(&net, &[], &config);
    assert!(log.contains("qxnosuch0"), "the interface is not named");
    assert!(log.contains("ip link"), "no hint at `ip link`");
    assert_eq!(ip_xdp(&net), None);
}

/// A foreign XDP program (`return XDP_PASS`, named `foreign_pass`) loaded with raw bpf(2) and
/// attached with the legacy netlink call, as `ip link set dev IF xdpdrv ...` would (the same
/// approach as `attach.rs`).
mod foreign {
    use super::*;

    pub const NAME: &str = "foreign_pass";
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u32 = 37;
    pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

    fn put(attr: &mut [u8], at: usize, bytes: &[u8]) {
        attr[at..at + bytes.len()].copy_from_slice(bytes);
    }

    pub fn load() -> OwnedFd {
        // r0 = XDP_PASS (2); exit
        let insns: [u8; 16] = [0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &BPF_PROG_TYPE_XDP.to_ne_bytes());
        put(&mut attr, 4, &2u32.to_ne_bytes());
        put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
        put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
        put(&mut attr, 48, NAME.as_bytes());
        put(&mut attr, 68, &BPF_XDP.to_ne_bytes());
        // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix whose pointers outlive the call.
        let fd =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_mut_ptr(), attr.len()) };
        assert!(
            fd >= 0,
            "load the foreign XDP program: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new fd from the kernel.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    }

    /// `RTM_SETLINK` with `IFLA_XDP { FD, FLAGS }` in the calling thread's namespace.
    pub fn attach_netlink(prog: i32, ifindex: u32, flags: u32) {
        fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
            buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.extend_from_slice(data);
            while buf.len() % 4 != 0 {
                buf.push(0);
            }
        }
        let mut xdp = Vec::new();
        attr(&mut xdp, 1, &prog.to_ne_bytes()); // IFLA_XDP_FD
        attr(&mut xdp, 3, &flags.to_ne_bytes()); // IFLA_XDP_FLAGS
        let mut body = vec![0u8; 16]; // struct ifinfomsg
        body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        attr(&mut body, 43 | (1 << 15), &xdp); // IFLA_XDP, nested
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&19u16.to_ne_bytes()); // RTM_SETLINK
        msg.extend_from_slice(&(1u16 | 4).to_ne_bytes()); // NLM_F_REQUEST | NLM_F_ACK
        msg.extend_from_slice(&1u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        // SAFETY: plain socket calls on buffers that outlive them; results checked.
        unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
            assert!(
                fd >= 0,
                "netlink socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = OwnedFd::from_raw_fd(fd);
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as u16;
            let sent = libc::sendto(
                fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            );
            assert_eq!(sent as usize, msg.len());
            let mut answer = [0u8; 4096];
            let n = libc::recv(fd.as_raw_fd(), answer.as_mut_ptr().cast(), answer.len(), 0);
            assert!(
                n >= 20,
                "netlink answer: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(u16::from_ne_bytes([answer[4], answer[5]]), 2, "NLMSG_ERROR");
            let code = i32::from_ne_bytes(answer[16..20].try_into().unwrap());
            assert_eq!(
                code,
                0,
                "netlink XDP attach: {}",
                std::io::Error::from_raw_os_error(-code)
            );
        }
    }
}

#[test]
fn daemon_refuses_a_foreign_xdp_program() {
    if !privileged("daemon_refuses_a_foreign_xdp_program") {
        return;
    }
    let net = TestNet::new();
    let program = foreign::load();
    let raw = program.as_raw_fd();
    let iface = net.server_if.clone();
    in_ns(&net.server_ns, move || {
        let index = attach::ifindex(&iface).unwrap();
        foreign::attach_netlink(raw, index, foreign::XDP_FLAGS_DRV_MODE);
    });
    drop(program); // netlink attachments stay until detached
    assert_eq!(
        ip_xdp(&net).as_deref(),
        Some("xdp"),
        "foreign program attached"
    );

    let site = Site::new();
    let config = site.config(&net.server_if, "auto", &listen_both(&net), "");
    let log = failed_start(&net, &[], &config);
    let iface = &net.server_if;
    assert!(log.contains(iface), "the interface is not named");
    assert!(
        log.contains(foreign::NAME),
        "the foreign program is not named"
    );
    assert!(
        log.contains(&format!("ip link set dev {iface} xdpdrv off")),
        "no fix given"
    );
    // Left alone.
    assert_eq!(ip_xdp(&net).as_deref(), Some("xdp"), "foreign program kept");
    // After the fix the daemon starts.
    net.server(&["ip", "link", "set", "dev", iface, "xdpdrv", "off"]);
    let mut daemon = Quixd::start(&net.server_ns, &config, 2);
    daemon.terminate();
}

#[test]
fn daemon_without_cap_ipc_lock_names_it() {
    if !privileged("daemon_without_cap_ipc_lock_names_it") {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipping daemon_without_cap_ipc_lock_names_it: no setpriv (util-linux)");
        return;
    }
    let net = TestNet::new();
    let site = Site::new();
    // 8192 frames of 2 KiB: a 16 MiB UMEM, beyond the 8 MiB RLIMIT_MEMLOCK.
    let config = site.config(
        &net.server_if,
        "auto",
        &[std::net::SocketAddr::new(net.server_v4.into(), PORT)],
        "frames = 8192\nring_size = 2048",
    );
    let limit = memlock_limit();
    assert!(
        limit.is_some_and(|l| l < 16 << 20),
        "RLIMIT_MEMLOCK is {limit:?}: this test needs it below 16 MiB"
    );
    let log = failed_start(
        &net,
        &[
            "setpriv",
            "--inh-caps=-ipc_lock",
            "--bounding-set=-ipc_lock",
            "--",
        ],
        &config,
    );
    assert!(log.contains("CAP_IPC_LOCK"), "CAP_IPC_LOCK is not named");
    assert!(
        log.contains("RLIMIT_MEMLOCK"),
        "RLIMIT_MEMLOCK is not named"
    );
    assert_eq!(ip_xdp(&net), None);
}

/// This process's soft RLIMIT_MEMLOCK, unless unlimited.
fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `limit`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    assert_eq!(rc, 0);
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}
