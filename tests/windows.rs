//! The Windows build of the daemon, run under Wine on this Linux machine, against our Linux
//! quinn client over 127.0.0.1 (Wine's sockets are the host's).
//!
//!     QUIXD_WINDOWS_EXE=target/x86_64-pc-windows-gnu/debug/quixd.exe \
//!         cargo test -p quixd --test windows
//!
//! `.ci/windows` builds the exe, prepares a Wine prefix (`WINEPREFIX`, with the ProcessPrng
//! shim Wine 8.0 needs) and runs this. Without `QUIXD_WINDOWS_EXE` every test prints why it is
//! skipped and passes. `QUIXD_WINDOWS_WINE` names the Wine launcher (default `wine`).
//!
//! Wine implements no RIO, so these check the portable path (`backend = "socket"`), that
//! `backend = "rio"` fails saying why, and that `auto` falls back to sockets saying so.
//!
//! And the stock quinn example server on quixd's socket (`quixd::quinn_socket`), built for
//! Windows (`QUIXD_WINDOWS_QUINN_EXE` names `quinn_server.exe`): on the socket backend, whose
//! readiness on Windows is an event per socket watched by a wait registered with the system
//! thread pool (RIO's notification takes the same path), it serves a quinn client; with `--backend
//! rio` it fails naming the cause.

// Spawns Wine; the harness it shares with tests/e2e is Linux-only too.
#![cfg(target_os = "linux")]

#[path = "support/netns.rs"]
mod netns;

#[path = "support/daemon.rs"]
mod process;

#[path = "e2e/harness.rs"]
#[allow(unused_macros, unused_imports)]
mod harness;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{
    assert_same_bytes, connect_alpn, hq_get, perf_request, run_seed, ClientSide, TestCert, Trust,
    ALPN_HQ, ALPN_PERF,
};
use process::{parse_listening, random_bytes, strip_ansi};

/// Wine starts a prefix's first process slowly (seconds); later ones in well under one.
const STARTUP: Duration = Duration::from_secs(90);

/// The Windows exe, or `None` after printing why the test is skipped.
fn windows_exe(test: &str) -> Option<OsString> {
    exe_from("QUIXD_WINDOWS_EXE", "a Windows quixd.exe", test)
}

/// The Windows build of `userspace/examples/quinn_server.rs`, or `None` (skipped, saying why).
fn quinn_example_exe(test: &str) -> Option<OsString> {
    exe_from(
        "QUIXD_WINDOWS_QUINN_EXE",
        "the Windows quinn_server.exe example",
        test,
    )
}

fn exe_from(var: &str, what: &str, test: &str) -> Option<OsString> {
    match std::env::var_os(var) {
        Some(exe) if !exe.is_empty() => {
            assert!(Path::new(&exe).is_file(), "{var}={exe:?} is not a file");
            Some(exe)
        }
        _ => {
            eprintln!(
                "{test}: skipped: {var} is not set (it names {what} to run under Wine; \
                 .ci/windows sets it)"
            );
            None
        }
    }
}

fn wine() -> OsString {
    std::env::var_os("QUIXD_WINDOWS_WINE").unwrap_or_else(|| "wine".into())
}

/// A directory with a document root, a certificate, and a config using `backend`; paths in
/// the config are relative to it, as Windows sees them.
struct Site {
    dir: tempfile::TempDir,
    cert: TestCert,
}

impl Site {
    fn new(backend: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("quixd-windows-")
            .tempdir()
            .expect("tempdir");
        let cert = TestCert::localhost();
        std::fs::write(dir.path().join("cert.pem"), &cert.cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &cert.key_pem).unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        let config = format!(
            "# written by tests/windows.rs\n\
             [server]\n\
             listen = [\"127.0.0.1:0\"]\n\
             backend = \"{backend}\"\n\
             drain_timeout_ms = 2000\n\
             \n\
             [tls]\n\
             cert = \"cert.pem\"\n\
             key = \"key.pem\"\n\
             \n\
             [apps.hq]\n\
             root = \"www\"\n\
             \n\
             [apps.perf]\n\
             alpn = [\"perf\"]\n"
        );
        std::fs::write(dir.path().join("quixd.toml"), config).unwrap();
        Site { dir, cert }
    }

    fn put(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.path().join("www").join(name), bytes).unwrap();
    }

    fn trust(&self) -> Trust {
        Trust::Cert(self.cert.der.clone())
    }
}

/// `wine quixd.exe run --config quixd.toml` in the site's directory; killed on drop, its
/// output printed if the test fails.
struct WineDaemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl WineDaemon {
    fn spawn(exe: &OsString, site: &Site) -> Self {
        Self::spawn_args(
            exe,
            site.dir.path(),
            &["run", "--config", "quixd.toml", "--log-level", "info"],
        )
    }

    /// `wine exe args...` in `dir`.
    fn spawn_args(exe: &OsString, dir: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(wine())
            .arg(exe)
            .args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env(
                "WINEDEBUG",
                std::env::var_os("WINEDEBUG").unwrap_or_else(|| "-all".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?} {exe:?}: {e} (is Wine installed?)", wine()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            reader(child.stderr.take().unwrap(), log.clone()),
            reader(child.stdout.take().unwrap(), log.clone()),
        ];
        WineDaemon {
            child,
            log,
            readers,
            exit: None,
        }
    }

    fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    /// Waits for the `listening addr=` line.
    fn listening(&mut self) -> SocketAddr {
        self.wait_for_line(parse_listening)
    }

    /// Waits for a line `parse` accepts.
    fn wait_for_line<T>(&mut self, parse: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(a) = self.log.lock().unwrap().iter().find_map(|l| parse(l)) {
                return a;
            }
            if let Some(st) = self.try_wait() {
                panic!("the exe exited ({st}) before listening");
            }
            assert!(
                Instant::now() < deadline,
                "quixd.exe did not listen within {STARTUP:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `limit` for the exit, then for the last output lines.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_wait() {
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "quixd.exe did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ctrl-C: Wine turns SIGINT into CTRL_C_EVENT for the Windows process.
    fn ctrl_c(&self) {
        // SAFETY: kill(2) on our own child's pid; no memory involved.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        assert_eq!(rc, 0, "kill(SIGINT)");
    }
}

fn reader<R: Read + Send + 'static>(
    r: R,
    log: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(r).split(b'\n') {
            let Ok(line) = line else { break };
            let line = strip_ansi(String::from_utf8_lossy(&line).trim_end());
            log.lock().unwrap().push(line);
        }
    })
}

impl Drop for WineDaemon {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
            eprintln!(
                "===== quixd.exe output =====\n{}\n===== end =====",
                self.output()
            );
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The portable path: kernel sockets (plain send_to/recv_from under Wine, which lacks the
/// socket options quinn-udp wants), a file, perf requests, then Ctrl-C drains and exits 0.
#[test]
fn socket_backend_serves_a_file_and_perf_then_stops_on_ctrl_c() {
    let Some(exe) = windows_exe("socket_backend_serves_a_file_and_perf_then_stops_on_ctrl_c")
    else {
        return;
    };
    let site = Site::new("socket");
    let seed = run_seed();
    let data = random_bytes(4_000_000, seed);
    site.put("big.bin", &data);
    let mut d = WineDaemon::spawn(&exe, &site);
    let addr = d.listening();
    runtime().block_on(async {
        let client = ClientSide::loopback();
        let (_ep, conn) = connect_alpn(&client, &site.trust(), ALPN_HQ, addr).await;
        let got = tokio::time::timeout(Duration::from_secs(120), hq_get(&conn, "/big.bin"))
            .await
            .expect("download within 120 s");
        assert_same_bytes(&got, &data, &format!("GET /big.bin (seed {seed})"));
        conn.close(0u32.into(), b"done");

        let (_ep, conn) = connect_alpn(&client, &site.trust(), ALPN_PERF, addr).await;
        for (down, up) in [(0u64, 0usize), (1000, 0), (1 << 20, 0), (1000, 200_000)] {
            let got = tokio::time::timeout(Duration::from_secs(60), perf_request(&conn, down, up))
                .await
                .expect("perf request within 60 s")
                .unwrap_or_else(|e| panic!("perf download={down} upload={up}: {e}"));
            assert_eq!(got, down, "perf download={down} upload={up}");
        }
        conn.close(0u32.into(), b"done");
    });
    d.ctrl_c();
    let st = d.wait_exit(Duration::from_secs(30));
    let out = d.output();
    assert!(st.success(), "exit after Ctrl-C: {st}");
    assert!(out.contains("shutting down"), "no drain logged");
    assert!(out.contains("datapath counters"), "no counters logged");
}

/// Explicit RIO where there is none: a clear error naming the cause, and no fallback.
#[test]
fn rio_backend_fails_naming_the_cause() {
    let Some(exe) = windows_exe("rio_backend_fails_naming_the_cause") else {
        return;
    };
    let site = Site::new("rio");
    let mut d = WineDaemon::spawn(&exe, &site);
    let st = d.wait_exit(STARTUP);
    let out = d.output();
    assert!(!st.success(), "backend = \"rio\" must fail under Wine");
    for needle in [
        "server.backend = \"rio\" cannot start",
        "Registered I/O is not available",
        "WSAID_MULTIPLE_RIO",
        "10045",
    ] {
        assert!(out.contains(needle), "`{needle}` missing from:\n{out}");
    }
    assert!(!out.contains("listening"), "it must not serve:\n{out}");
}

/// `auto` on Windows tries RIO first, says why it cannot use it, and serves on sockets.
#[test]
fn auto_falls_back_from_rio_to_sockets_saying_so() {
    let Some(exe) = windows_exe("auto_falls_back_from_rio_to_sockets_saying_so") else {
        return;
    };
    let site = Site::new("auto");
    let small = random_bytes(100_000, run_seed());
    site.put("small.bin", &small);
    let mut d = WineDaemon::spawn(&exe, &site);
    let addr = d.listening();
    let out = d.output();
    assert!(
        out.contains("rio skipped") && out.contains("Registered I/O is not available"),
        "the fallback from RIO is not explained:\n{out}"
    );
    assert!(
        out.contains("backend auto: running socket"),
        "no socket backend:\n{out}"
    );
    runtime().block_on(async {
        let (_ep, conn) = connect_alpn(&ClientSide::loopback(), &site.trust(), ALPN_HQ, addr).await;
        let got = tokio::time::timeout(Duration::from_secs(60), hq_get(&conn, "/small.bin"))
            .await
            .expect("download within 60 s");
        assert_same_bytes(&got, &small, "GET /small.bin");
    });
    d.ctrl_c();
    assert!(d.wait_exit(Duration::from_secs(30)).success());
}

/// The example's request: an 8-byte big-endian download length, then the upload; the answer
/// is the upload echoed, then `down` bytes of the example's pattern (`i % 251`).
async fn example_request(conn: &quinn::Connection, down: u64, up: &[u8]) -> Result<(), String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&down.to_be_bytes())
        .await
        .map_err(|e| e.to_string())?;
    send.write_all(up).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let got = recv
        .read_to_end(up.len() + down as usize)
        .await
        .map_err(|e| e.to_string())?;
    if got.len() != up.len() + down as usize {
        return Err(format!(
            "{} bytes back, expected {}",
            got.len(),
            up.len() + down as usize
        ));
    }
    if got[..up.len()] != *up {
        return Err("the echo differs from the upload".into());
    }
    if let Some(i) = got[up.len()..]
        .iter()
        .enumerate()
        .position(|(i, b)| *b != (i % 251) as u8)
    {
        return Err(format!("download byte {i} differs from the pattern"));
    }
    Ok(())
}

/// The stock quinn example on quixd's socket backend, as a Windows exe: concurrent streams
/// (multi-MB downloads and uploads, intact) from a Linux quinn client, then Ctrl-C, the
/// endpoint drained and the socket's close report balanced. Wine's sockets signal readiness
/// through the `WSAEventSelect` events the adapter waits on; a lost wake-up would stall a
/// transfer past its bound.
#[test]
fn quinn_example_on_the_quixd_socket_serves_a_quinn_client() {
    let test = "quinn_example_on_the_quixd_socket_serves_a_quinn_client";
    let Some(exe) = quinn_example_exe(test) else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("quixd-windows-quinn-")
        .tempdir()
        .expect("tempdir");
    let mut d = WineDaemon::spawn_args(
        &exe,
        dir.path(),
        &["--backend", "socket", "--listen", "127.0.0.1:0"],
    );
    let addr: SocketAddr = d.wait_for_line(|l| {
        l.strip_prefix("serving on ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    });
    let upload = random_bytes(300_000, run_seed());
    runtime().block_on(async {
        let (_ep, conn) = connect_alpn(
            &ClientSide::loopback(),
            &Trust::Insecure,
            "quixd-example",
            addr,
        )
        .await;
        let requests: Vec<_> = (0..6u64)
            .map(|i| {
                let conn = conn.clone();
                let up = if i % 2 == 0 {
                    upload.clone()
                } else {
                    Vec::new()
                };
                tokio::spawn(async move { example_request(&conn, (i + 1) * 700_000, &up).await })
            })
            .collect();
        let all = async {
            for (i, r) in requests.into_iter().enumerate() {
                let r = r.await.expect("request task");
                r.unwrap_or_else(|e| panic!("request {i}: {e}"));
            }
        };
        tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .expect("six transfers within 120 s");
        conn.close(0u32.into(), b"done");
    });
    d.ctrl_c();
    let st = d.wait_exit(Duration::from_secs(30));
    let out = d.output();
    assert!(st.success(), "exit after Ctrl-C: {st}\n{out}");
    assert!(
        out.contains("closed: ledger balanced = true"),
        "no balanced close report:\n{out}"
    );
}

/// `--backend rio` on the quinn example where there is no RIO: a clear error naming the cause,
/// and no fallback to sockets.
#[test]
fn quinn_example_on_rio_fails_naming_the_cause() {
    let Some(exe) = quinn_example_exe("quinn_example_on_rio_fails_naming_the_cause") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = WineDaemon::spawn_args(
        &exe,
        dir.path(),
        &["--backend", "rio", "--listen", "127.0.0.1:0"],
    );
    let st = d.wait_exit(STARTUP);
    let out = d.output();
    assert!(!st.success(), "--backend rio must fail under Wine:\n{out}");
    for needle in [
        "backend `rio` cannot start",
        "Registered I/O is not available",
        "10045",
    ] {
        assert!(out.contains(needle), "`{needle}` missing from:\n{out}");
    }
    assert!(!out.contains("serving on"), "it must not serve:\n{out}");
}
