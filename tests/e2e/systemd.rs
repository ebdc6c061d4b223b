//! (l) systemd: `config/quixd.service` passes `systemd-analyze verify`, the daemon speaks
//! `Type=notify` (`READY=1` once it listens, `STOPPING=1` when SIGTERM starts the drain), and
//! the unit as shipped runs it under a real systemd (booted with `systemd-nspawn` in the test's
//! server namespace) as `nobody`, on XDP and on kernel sockets.

use std::os::unix::fs::PermissionsExt;
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

// ---------------------------------------------------------------------------------------------
// Under a real systemd
// ---------------------------------------------------------------------------------------------

e2e_tests!([xdp_driver = XdpDriver, socket_netns = SocketNetns] { serves_under_systemd_as_nobody });

/// A systemd booted by `systemd-nspawn` in the server namespace: the host's /usr, an empty
/// /etc (tmpfs), the unit file as shipped plus a drop-in naming the binary under test and the
/// test's config. Killed on drop, also when the test fails.
struct Booted {
    nspawn: std::process::Child,
    log: std::path::PathBuf,
}

impl Booted {
    /// The container's init (systemd), a child of nspawn.
    fn init_pid(&self) -> Option<u32> {
        let nspawn = self.nspawn.id();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The fields after the command's closing parenthesis: state, ppid, ...
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == nspawn).then_some(pid)
        })
    }

    /// `systemctl ARGS` inside the container; `None` before its systemd runs.
    fn systemctl(&self, args: &[&str]) -> Option<std::process::Output> {
        let pid = self.init_pid()?;
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "-p", "--", "systemctl"])
            .args(args)
            .output()
            .ok()
    }

    /// A property of quixd.service ("" while systemd is not up).
    fn show(&self, property: &str) -> String {
        self.systemctl(&["show", "quixd.service", "-p", property, "--value"])
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// The last `lines` lines of quixd.service's journal.
    fn journal(&self, lines: u32) -> String {
        self.init_pid()
            .and_then(|pid| {
                Command::new("nsenter")
                    .args(["-t", &pid.to_string(), "-m", "-p", "--"])
                    .args(["journalctl", "-u", "quixd.service", "--no-pager", "-n"])
                    .arg(lines.to_string())
                    .output()
                    .ok()
            })
            .map_or(String::new(), |o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
            })
    }

    /// nspawn's output and errors, and quixd's journal.
    fn log(&self) -> String {
        let err = self.log.with_extension("err");
        format!(
            "{}\n{}\njournal:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default(),
            self.journal(40)
        )
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // SIGTERM asks nspawn for an orderly shutdown of the container; then make sure.
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.nspawn.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

fn nspawn_problem() -> Option<&'static str> {
    let found = Command::new("systemd-nspawn").arg("--version").output();
    (!found.is_ok_and(|o| o.status.success()))
        .then_some("needs systemd-nspawn (apt-get install systemd-container)")
}

/// The pid of the quixd that systemd started (its cgroup names the unit) in network namespace
/// `ns` (tests run in parallel, each with its own container).
fn unit_pid(ns: &str) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let netns = std::fs::metadata(format!("/run/netns/{ns}")).ok()?.ino();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let net = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?.ino();
        (comm.trim() == "quixd" && cgroup.contains("/quixd.service") && net == netns).then_some(pid)
    })
}

fn status_line(pid: i32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

/// `config/quixd.service` run by a real systemd (booted in a container in the server
/// namespace): `Type=notify` makes the unit active only once quixd listens, the daemon runs
/// as `nobody` with no capabilities, serves a client in the client namespace, reloads on
/// `systemctl reload`, and `systemctl stop` drains it to a clean exit (inactive, not failed)
/// that leaves no XDP program on the interface.
async fn serves_under_systemd_as_nobody(t: Backend) {
    let name = format!("systemd::{}::serves_under_systemd_as_nobody", t.name());
    if let Some(problem) = nspawn_problem() {
        skip_or_fail(&name, problem);
        return;
    }
    let fx = Fixture::new(t);
    let data = random_bytes(2_000_000, run_seed());
    fx.put("f.bin", &data);
    for dir in [fx.dir.path(), fx.root.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let net = fx.net.as_ref().expect("a netns backend");
    let (server_ns, server_if) = (net.server_ns.clone(), net.server_if.clone());
    // A fixed port: systemd's journal is not the test's to read, and the namespace is ours.
    let listen = format!("{}:4433", net.server_v4);
    // The unit's PrivateTmp hides the fixture's /tmp directory from the service: the
    // container sees it at /srv/quixd-test, and the config names its files there.
    const INSIDE: &str = "/srv/quixd-test";
    let fixture_dir = fx.dir.path().to_str().unwrap().to_owned();
    let text = (fx.config().run_as("nobody", "nogroup").listen(&[&listen]))
        .render()
        .replace(&fixture_dir, INSIDE);
    let config = fx.write_config_text(&text);
    let config = Path::new(INSIDE).join(config.file_name().unwrap());

    let etc = fx.dir.path().join("systemd");
    let (dropin, wants) = (etc.join("quixd.service.d"), etc.join("wants"));
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::create_dir_all(&wants).unwrap();
    std::fs::write(
        dropin.join("test.conf"),
        format!(
            "[Service]\nExecStart=\nExecStart=/opt/quixd/quixd run --config {}\n",
            config.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/quixd.service",
        wants.join("quixd.service"),
    )
    .unwrap();
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/quixd.service");
    let log = fx.dir.path().join("nspawn.log");
    let bind = |from: &Path, to: &str| format!("--bind-ro={}:{to}", from.display());
    let nspawn = Command::new("systemd-nspawn")
        .args([
            "--register=no",
            "--keep-unit",
            "--quiet",
            "-D",
            "/",
            "--volatile=yes",
        ])
        .arg("--console=pipe")
        .arg(format!("--network-namespace-path=/run/netns/{server_ns}"))
        // nspawn's default set lacks these; the unit's bounding set asks for them.
        .arg("--capability=CAP_BPF,CAP_PERFMON,CAP_IPC_LOCK,CAP_NET_ADMIN,CAP_NET_RAW")
        // nspawn's seccomp filter refuses bpf(2) unless asked.
        .arg("--system-call-filter=bpf")
        .arg(bind(
            Path::new(env!("CARGO_BIN_EXE_quixd")),
            "/opt/quixd/quixd",
        ))
        .arg(bind(&unit, "/etc/systemd/system/quixd.service"))
        .arg(bind(&dropin, "/etc/systemd/system/quixd.service.d"))
        .arg(bind(&wants, "/etc/systemd/system/multi-user.target.wants"))
        // No network manager runs in there: network-online.target must not wait for one.
        .arg(bind(
            Path::new("/dev/null"),
            "/etc/systemd/system/systemd-networkd-wait-online.service",
        ))
        .arg(bind(fx.dir.path(), INSIDE))
        .args(["-b", "--", "systemd.firstboot=off"])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .expect("start systemd-nspawn");
    let mut booted = Booted { nspawn, log };

    let server: std::net::SocketAddr = listen.parse().unwrap();
    bounded(Duration::from_secs(120), async {
        // Active means READY=1 came (Type=notify): quixd listens from then on.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let state = (booted.show("ActiveState"), booted.show("SubState"));
            if state.0 == "active" && state.1 == "running" {
                break;
            }
            let exited = booted.nspawn.try_wait().ok().flatten();
            assert!(
                exited.is_none() && state.0 != "failed" && std::time::Instant::now() < deadline,
                "quixd.service is {state:?}, nspawn {exited:?}; container log:\n{}",
                booted.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pid = unit_pid(&server_ns).expect("the unit's quixd process");
        assert_eq!(status_line(pid, "Uid:"), "65534", "runs as nobody");
        assert_eq!(status_line(pid, "CapEff:"), "0000000000000000");
        assert_eq!(status_line(pid, "CapPrm:"), "0000000000000000");

        let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_HQ, server).await;
        assert_same_bytes(
            &hq_get(&conn, "/f.bin").await,
            &data,
            "GET /f.bin under systemd",
        );

        let reload = booted.systemctl(&["reload", "quixd.service"]);
        assert!(
            reload.as_ref().is_some_and(|o| o.status.success()),
            "systemctl reload: {reload:?}"
        );
        assert_same_bytes(
            &hq_get(&conn, "/f.bin").await,
            &data,
            "the connection outlives the reload",
        );
        assert_eq!(
            unit_pid(&server_ns),
            Some(pid),
            "a reload keeps the process"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !booted.journal(1000).contains("certificate reloaded") {
            assert!(
                std::time::Instant::now() < deadline,
                "no `certificate reloaded` in the journal:\n{}",
                booted.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        conn.close(0u32.into(), b"done");

        let stop = booted.systemctl(&["stop", "quixd.service"]);
        assert!(
            stop.as_ref().is_some_and(|o| o.status.success()),
            "systemctl stop: {stop:?}"
        );
        assert_eq!(
            booted.show("ActiveState"),
            "inactive",
            "a clean stop, not failed"
        );
        assert_eq!(booted.show("Result"), "success");
    })
    .await;
    if t.is_xdp() {
        let link = fx
            .net
            .as_ref()
            .unwrap()
            .server(&["ip", "link", "show", "dev", &server_if]);
        let text = String::from_utf8_lossy(&link.stdout);
        assert!(
            !text.contains("xdp"),
            "XDP left attached after the stop: {text}"
        );
    }
}
