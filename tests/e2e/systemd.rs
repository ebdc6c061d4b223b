//! (l) systemd: `config/quixd.service` passes `systemd-analyze verify`, and the daemon speaks
//! `Type=notify`: `READY=1` once it listens, `STOPPING=1` when SIGTERM starts the drain.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;
use crate::netns::skip_or_fail;

#[test]
fn unit_file_verifies() {
    const NAME: &str = "systemd::unit_file_verifies";
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_or_fail(NAME, "needs systemd-analyze (apt-get install systemd)");
        return;
    }
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/quixd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("Type=notify"), "{text}");
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("quixd.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/quixd", env!("CARGO_BIN_EXE_quixd")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("quixd.service"),
        "verify has remarks on the unit: {stderr}"
    );
}

#[test]
fn notify_ready_then_stopping() {
    let fx = Fixture::new(Backend::Socket);
    let notify_path = fx.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config = fx.write_config(&fx.config());
    let path_text = notify_path.to_str().unwrap().to_owned();
    let env = [("NOTIFY_SOCKET", path_text.as_str())];
    let mut d = Spawn::new("run", &config).env(&env).spawn();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 10 s");
    assert_eq!(&buf[..n], b"READY=1");
    // quixd sends READY=1 right after logging its addresses.
    let addrs = d.wait_listening(1);
    assert!(!addrs.is_empty());
    d.signal(libc::SIGTERM);
    let n = notify.recv(&mut buf).expect("STOPPING=1 after SIGTERM");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = d
        .wait_exit(Duration::from_secs(15))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status}\n{}", d.output());
}
