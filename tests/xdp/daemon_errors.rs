//! The daemon's start-up errors on the XDP backend: each exits non-zero at once with a message
//! that names the problem and its fix, and leaves nothing attached.

use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::daemon::{ip_xdp, listen_both, Quixd, Site, PORT};
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

use crate::attach::foreign;

#[test]
fn daemon_refuses_a_foreign_xdp_program() {
    if !privileged("daemon_refuses_a_foreign_xdp_program") {
        return;
    }
    let net = TestNet::new();
    let program = foreign::load();
    foreign::attach_netlink_to_server(&net, program.as_fd(), foreign::XDP_FLAGS_DRV_MODE);
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
