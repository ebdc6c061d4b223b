//! (k) `server.user` / `server.group`: started as root, the daemon binds, attaches and locks
//! what it needs, then runs as `nobody` with no capabilities at all, and still serves and
//! stops cleanly, on every Linux backend.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::harness::*;

e2e_tests!(
    [
        socket_netns = SocketNetns,
        io_uring_netns = IoUringNetns,
        xdp_skb = XdpSkb,
        xdp_driver = XdpDriver,
    ] {
        serves_as_nobody_without_capabilities,
        an_unknown_user_stops_the_start,
    }
);

/// `Name:` line of /proc/PID/status, its first field.
fn status_field(pid: i32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
        .to_owned()
}

async fn serves_as_nobody_without_capabilities(t: Backend) {
    let fx = Fixture::new(t);
    let data = random_bytes(1_000_000, run_seed());
    fx.put("f.bin", &data);
    // The document root must be readable by the user the daemon becomes.
    for dir in [fx.dir.path(), fx.root.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut d = fx.start(&fx.config().run_as("nobody", "nogroup")).await;
    let pid = d.pid();
    assert!(
        d.output().contains("privileges dropped"),
        "no `privileges dropped` line:\n{}",
        d.output()
    );
    assert_eq!(status_field(pid, "Uid:"), "65534", "real uid");
    assert_eq!(status_field(pid, "Gid:"), "65534", "real gid");
    for caps in ["CapEff:", "CapPrm:"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    // Every thread switched, not only the one that called setuid.
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: i32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"));
        if let Ok(status) = status {
            assert!(
                status
                    .lines()
                    .any(|l| l.starts_with("Uid:") && l.contains("65534")),
                "thread {tid} still runs as another user:\n{status}"
            );
        }
    }
    let addr = d.addr();
    let trust = fx.trust();
    bounded(Duration::from_secs(60), async {
        let ep = fx.client.endpoint(addr);
        let conn = connect(&ep, &client_config(&trust, &[ALPN_HQ], false), addr).await;
        assert_same_bytes(&hq_get(&conn, "/f.bin").await, &data, "GET as nobody");
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
    })
    .await;
    let log = d.terminate().await;
    assert!(!log.contains("NOT balanced"), "{log}");
    // The XDP program left with the process, privileges or not.
    if let Some(net) = &fx.net {
        let out = std::process::Command::new("ip")
            .args([
                "-n",
                &net.server_ns,
                "-o",
                "link",
                "show",
                "dev",
                &net.server_if,
            ])
            .output()
            .expect("ip link");
        let link = String::from_utf8_lossy(&out.stdout);
        assert!(!link.contains(" xdp"), "still attached after exit: {link}");
    }
}

async fn an_unknown_user_stops_the_start(t: Backend) {
    let fx = Fixture::new(t);
    let cfg = fx.write_config(&fx.config().run_as("qx-no-such-user", "nogroup"));
    let (status, stderr, _) = fx
        .run_quixd(
            &["run".as_ref(), "--config".as_ref(), cfg.as_os_str()],
            Duration::from_secs(20),
        )
        .await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("server.user") && stderr.contains("qx-no-such-user"),
        "the setting and the name: {stderr}"
    );
    assert!(
        !stderr.contains("listening"),
        "it served before failing: {stderr}"
    );
}
