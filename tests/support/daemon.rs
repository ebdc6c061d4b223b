//! A guard around a real `quixd` process, shared by the `e2e` and `xdp` test crates (each
//! includes this file with `#[path = "../support/daemon.rs"] mod process;`).
//!
//! [`QuixdProcess::spawn`] runs `[ip netns exec NS] [WRAPPER...] quixd SUBCOMMAND --config FILE
//! --log-level LEVEL`, collects its stderr and stdout lines (stdout prefixed with `[stdout] `,
//! ANSI colours removed) into a shared log on two reader threads, and parses the
//! `listening addr=...` lines. Dropping the guard kills and reaps the process; if the thread is
//! panicking, the daemon's output and its config are printed (the test harness shows them with
//! the failure). Also here: the helpers around its log (`datapath counters:`) and the test data
//! generator both crates use ([`random_bytes`]).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Time allowed for the daemon to start and report its listening addresses.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the reader threads may take to drain the pipes once the process is gone (a
/// grandchild still holding a pipe open must not hang the test).
const READER_DRAIN: Duration = Duration::from_secs(5);

/// The daemon binary: the one cargo built for this test target, unless `QUIXD_E2E_BIN` names
/// another one.
pub fn quixd_bin() -> OsString {
    std::env::var_os("QUIXD_E2E_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_quixd").into())
}

/// A command running the daemon binary behind `wrapper` (e.g. `["setpriv", ...]`), inside
/// network namespace `ns` through `ip netns exec` (which execs: the child's pid is the
/// wrapper's, or quixd's without one) if given. Arguments still to be added.
pub fn quixd_command(ns: Option<&str>, wrapper: &[&str]) -> Command {
    let mut argv: Vec<OsString> = Vec::new();
    if let Some(ns) = ns {
        argv.extend(["ip", "netns", "exec", ns].map(OsString::from));
    }
    argv.extend(wrapper.iter().map(OsString::from));
    argv.push(quixd_bin());
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// How to start the daemon: see [`QuixdProcess::spawn`].
#[derive(Clone, Debug)]
pub struct Spawn<'a> {
    /// `run`, `udp-echo`, ...: a subcommand taking `--config` and `--log-level`.
    pub subcommand: &'a str,
    pub config: &'a Path,
    /// The network namespace to run in (`ip netns exec`), if any.
    pub ns: Option<&'a str>,
    /// A command (and its arguments) that runs quixd, e.g. `setpriv ...`.
    pub wrapper: &'a [&'a str],
    pub log_level: String,
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
}

impl<'a> Spawn<'a> {
    /// `quixd SUBCOMMAND --config CONFIG --log-level info`, in this namespace, no wrapper.
    pub fn new(subcommand: &'a str, config: &'a Path) -> Self {
        Spawn {
            subcommand,
            config,
            ns: None,
            wrapper: &[],
            log_level: "info".to_owned(),
            env: &[],
        }
    }

    pub fn ns(mut self, ns: Option<&'a str>) -> Self {
        self.ns = ns;
        self
    }

    pub fn wrapper(mut self, wrapper: &'a [&'a str]) -> Self {
        self.wrapper = wrapper;
        self
    }

    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    pub fn env(mut self, env: &'a [(&'a str, &'a str)]) -> Self {
        self.env = env;
        self
    }

    /// Spawns the process: [`QuixdProcess::spawn`].
    pub fn spawn(&self) -> QuixdProcess {
        QuixdProcess::spawn(self)
    }
}

/// A running `quixd` process. Dropping it kills (if still running) and reaps it; if the thread
/// is panicking, the daemon's output and config are printed.
pub struct QuixdProcess {
    child: Option<Child>,
    exit: Option<ExitStatus>,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    /// What was run, for messages.
    command: String,
    /// The listening addresses it reported (filled by [`QuixdProcess::wait_listening`] and
    /// [`QuixdProcess::poll_listening`]).
    pub addrs: Vec<SocketAddr>,
    pub config_path: PathBuf,
}

impl QuixdProcess {
    /// Spawns the daemon as `how` says, without waiting for it.
    pub fn spawn(how: &Spawn<'_>) -> Self {
        let mut command = quixd_command(how.ns, how.wrapper);
        command
            .arg(how.subcommand)
            .arg("--config")
            .arg(how.config)
            .arg("--log-level")
            .arg(&how.log_level)
            .envs(how.env.iter().copied())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let described = describe(&command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{described}`: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            spawn_reader(child.stderr.take().unwrap(), "", log.clone()),
            spawn_reader(child.stdout.take().unwrap(), "[stdout] ", log.clone()),
        ];
        QuixdProcess {
            child: Some(child),
            exit: None,
            log,
            readers,
            command: described,
            addrs: Vec::new(),
            config_path: how.config.to_path_buf(),
        }
    }

    /// The `listening addr=` addresses it logged so far (stderr only).
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !l.starts_with("[stdout] "))
            .filter_map(|l| parse_listening(l))
            .collect()
    }

    /// One step of waiting for startup: once it reported `expect` listening addresses, stores
    /// them in [`QuixdProcess::addrs`] and returns true. Panics if it exited, or if `started`
    /// is more than [`STARTUP_TIMEOUT`] ago.
    pub fn poll_listening(&mut self, expect: usize, started: Instant) -> bool {
        let addrs = self.listening();
        if addrs.len() >= expect {
            self.addrs = addrs;
            return true;
        }
        if let Some(status) = self.try_wait() {
            self.join_readers();
            panic!(
                "`{}` exited ({status}) before reporting {expect} `listening addr=` line(s) \
                 (found {addrs:?}); config:\n{}\n--- output ---\n{}",
                self.command,
                std::fs::read_to_string(&self.config_path).unwrap_or_default(),
                self.output()
            );
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            panic!(
                "`{}` did not report {expect} `listening addr=` line(s) within \
                 {STARTUP_TIMEOUT:?}; found {addrs:?} (its output follows)",
                self.command
            );
        }
        false
    }

    /// Blocks until it reported `expect` listening addresses (see
    /// [`QuixdProcess::poll_listening`]) and returns them.
    pub fn wait_listening(&mut self, expect: usize) -> Vec<SocketAddr> {
        let started = Instant::now();
        while !self.poll_listening(expect, started) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.addrs.clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("quixd already reaped").id() as i32
    }

    /// Sends `signal` to the process (the one `ip netns exec` exec'd into).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child, which is not reaped yet (so the pid is still ours).
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}): {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
    }

    /// Everything it wrote so far (stderr; stdout lines prefixed with `[stdout] `).
    pub fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Non-blocking: the exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.exit = child.try_wait().expect("try_wait quixd");
            }
        }
        self.exit
    }

    /// Lets the reader threads collect the last lines (bounded by [`READER_DRAIN`]).
    pub fn join_readers(&mut self) {
        let deadline = Instant::now() + READER_DRAIN;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for reader in self.readers.drain(..) {
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }

    /// Blocks up to `limit` for it to exit; after the exit, the whole log is collected.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`QuixdProcess::try_wait`], and once it exited, the readers are joined (so the log is
    /// complete): for async waits that poll.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.try_wait()?;
        self.join_readers();
        Some(status)
    }

    /// Panics if it is not running any more, e.g. it crashed mid-test (the log is printed).
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.try_wait() {
            self.join_readers();
            panic!("quixd exited unexpectedly ({status})");
        }
    }

    /// SIGKILL (it must be running); returns once it is reaped.
    pub fn kill9(&mut self) -> ExitStatus {
        self.assert_alive();
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10))
            .expect("quixd reaped within 10 s of SIGKILL")
    }
}

impl Drop for QuixdProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.exit.is_none() && child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.join_readers();
        if std::thread::panicking() {
            eprintln!(
                "===== quixd output (`{}`) =====\n{}\n===== end of quixd output =====",
                self.command,
                self.output()
            );
            if let Ok(config) = std::fs::read_to_string(&self.config_path) {
                eprintln!(
                    "===== config {} =====\n{config}\n===== end of config =====",
                    self.config_path.display()
                );
            }
        }
    }
}

/// The command line, for messages.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn spawn_reader<R: Read + Send + 'static>(
    stream: R,
    prefix: &'static str,
    log: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut stream = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stream.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = strip_ansi(String::from_utf8_lossy(&buf).trim_end());
                    log.lock().unwrap().push(format!("{prefix}{line}"));
                }
            }
        }
    })
}

/// Removes ANSI escape sequences (tracing colours its output unless told otherwise).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Parses `listening addr=<socket address>` out of a log line.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let i = line.find("listening")?;
    let rest = &line[i..];
    let j = rest.find("addr=")?;
    let v = &rest[j + "addr=".len()..];
    let v = v.trim_start_matches(['"', '\'']);
    let end = v
        .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',' || c == '}')
        .unwrap_or(v.len());
    v[..end].parse().ok()
}

/// The `name=value` pairs of the last `datapath counters:` line (empty without one).
pub fn counters(log: &str) -> BTreeMap<String, u64> {
    const TAG: &str = "datapath counters:";
    let Some(line) = log.lines().rev().find(|l| l.contains(TAG)) else {
        return BTreeMap::new();
    };
    let rest = &line[line.find(TAG).unwrap() + TAG.len()..];
    rest.split_whitespace()
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A counter, which must be there.
pub fn get(counters: &BTreeMap<String, u64>, name: &str) -> u64 {
    *counters
        .get(name)
        .unwrap_or_else(|| panic!("no counter `{name}` in {counters:?}"))
}

/// Pseudo-random bytes (xorshift64*), good enough to catch reordering / corruption.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    if s == 0 {
        s = 1;
    }
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A field of the driver's counters in the last `driver=DriverCounters { name: N, .. }` line:
/// the only worker's, or the totals over several.
pub fn driver_counter(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("driver=DriverCounters"))
        .expect("a `stopped driver=DriverCounters` line");
    let key = format!(" {name}: ");
    let rest = &line[line
        .find(&key)
        .unwrap_or_else(|| panic!("no `{name}` in {line}"))
        + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no value for `{name}` in {line}"))
}

/// `worker=N` and the value of `name` on each per-worker `datapath counters:` line.
pub fn per_worker(log: &str, name: &str) -> Vec<(u64, u64)> {
    log.lines()
        .filter(|l| l.contains("datapath counters:") && l.contains("worker="))
        .filter_map(|l| {
            let field = |key: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
            };
            Some((field("worker=")?, field(&format!("{name}="))?))
        })
        .collect()
}
