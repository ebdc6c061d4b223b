//! `cargo xtask demo`: quixd's main job on a working default, end to end.
//!
//! Two network namespaces joined by a veth pair (198.18.42.0/24, fd00:42::/64). quixd runs in
//! the server namespace with the XDP backend on its veth end; a quinn client in the client
//! namespace downloads a file over hq-interop (IPv4 and IPv6, checked byte for byte) and runs
//! a perf download. quixd then stops gracefully and prints its counters. Everything it made is
//! removed at the end, also on error or Ctrl-C.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

const SERVER_NS: &str = "quixd-demo-srv";
const CLIENT_NS: &str = "quixd-demo-cli";
const SERVER_IF: &str = "qxdemo-s";
const CLIENT_IF: &str = "qxdemo-c";
const SERVER_V4: &str = "198.18.42.1";
const CLIENT_V4: &str = "198.18.42.2";
const SERVER_V6: &str = "fd00:42::1";
const CLIENT_V6: &str = "fd00:42::2";
const PORT: u16 = 4433;
const FILE_SIZE: usize = 32 << 20;
const PERF_SIZE: u64 = 256 << 20;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// XDP attach mode: auto, driver or skb.
    #[arg(long, default_value = "auto")]
    attach: String,
    /// Run quixd with this backend instead of xdp (e.g. socket), for comparison.
    #[arg(long, default_value = "xdp")]
    backend: String,
    /// Build and run a debug quixd instead of a release one.
    #[arg(long)]
    debug: bool,
    /// XDP transmit path: auto, af_xdp or kernel.
    #[arg(long, default_value = "auto")]
    transmit: String,
    /// quixd's --log-level.
    #[arg(long, default_value = "info")]
    log_level: String,
}

pub fn run(args: DemoArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the demo creates network namespaces and attaches XDP: run it as root \
         (e.g. `sudo -E cargo xtask demo`)"
    );
    let root = crate::workspace_root();
    // The client runs in this process: unoptimised, it would set the pace, not quixd.
    if cfg!(debug_assertions) && !args.debug && std::env::var_os("QUIXD_DEMO_NO_REEXEC").is_none() {
        return crate::release::reexec(&root, "demo", "QUIXD_DEMO_NO_REEXEC");
    }
    let quixd = build_quixd(&root, args.debug)?;
    let net = DemoNet::create()?;
    let dir = std::env::temp_dir().join(format!("quixd-demo-{}", std::process::id()));
    let _dir_guard = RemoveDir(dir.clone());
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    let content = pseudo_random(FILE_SIZE);
    std::fs::write(www.join("demo.bin"), &content)?;
    let config = dir.join("quixd.toml");
    std::fs::write(&config, config_text(&args, &www))?;

    println!(
        "== quixd demo: backend {} in namespace {SERVER_NS} on {SERVER_IF}",
        args.backend
    );
    let mut daemon = Daemon::start(&quixd, &config, &args.log_level)?;
    let addrs = daemon.wait_listening(2, Duration::from_secs(20))?;
    println!("   listening on {addrs:?}");

    let cpu_before = daemon.cpu_ns();
    let result = net.in_client(move || client(addrs, content));
    if let (Some(before), Some(after)) = (cpu_before, daemon.cpu_ns()) {
        let secs = after.saturating_sub(before) as f64 / 1e9;
        let bytes = (2 * FILE_SIZE) as f64 + PERF_SIZE as f64;
        println!(
            "   quixd's own threads used {:.0} ms of CPU for the {} MiB served ({:.0} MB per \
             CPU-second; kernel softirq work on other threads not counted)",
            secs * 1e3,
            bytes as u64 >> 20,
            bytes / secs.max(1e-9) / 1e6
        );
    }
    daemon.stop()?;
    net.check_clean_detach(&args)?;
    result
}

fn build_quixd(root: &Path, debug: bool) -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .args(["build", "-p", "quixd", "--bin", "quixd"]);
    if !debug {
        cmd.arg("--release");
    }
    println!(
        "== building quixd ({})",
        if debug { "debug" } else { "release" }
    );
    ensure!(cmd.status()?.success(), "building quixd failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target
        .join(if debug { "debug" } else { "release" })
        .join("quixd"))
}

fn config_text(args: &DemoArgs, www: &Path) -> String {
    format!(
        r#"# written by `cargo xtask demo`
[server]
listen = ["{SERVER_V4}:{PORT}", "[{SERVER_V6}]:{PORT}"]
backend = "{backend}"

[xdp]
interface = "{SERVER_IF}"
attach = "{attach}"
transmit = "{transmit}"

[apps.hq]
alpn = ["hq-interop"]
root = "{www}"

[apps.perf]
alpn = ["perf"]
"#,
        backend = args.backend,
        attach = args.attach,
        transmit = args.transmit,
        www = www.display()
    )
}

/// The quinn client, on a thread inside the client namespace.
fn client(addrs: Vec<SocketAddr>, content: Vec<u8>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        for addr in &addrs {
            let endpoint = endpoint_for(addr)?;
            let conn = endpoint
                .connect_with(client_config(&["hq-interop"])?, *addr, "localhost")?
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            let start = Instant::now();
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(b"GET /demo.bin\r\n").await?;
            send.finish()?;
            let got = recv.read_to_end(FILE_SIZE * 2).await?;
            let secs = start.elapsed().as_secs_f64();
            ensure!(got == content, "the file downloaded from {addr} differs from the original");
            println!(
                "   hq-interop  {addr:<28} {} MiB intact in {secs:.2} s ({:.0} MB/s)",
                FILE_SIZE >> 20,
                FILE_SIZE as f64 / secs / 1e6
            );
            conn.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
        }
        let addr = addrs[0];
        let endpoint = endpoint_for(&addr)?;
        let conn = endpoint
            .connect_with(client_config(&["perf"])?, addr, "localhost")?
            .await?;
        let start = Instant::now();
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&PERF_SIZE.to_be_bytes()).await?;
        send.finish()?;
        let mut received = 0u64;
        let mut reported = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        while let Some(n) = recv.read(&mut buf).await? {
            received += n as u64;
            // Progress every 64 MiB, so a long transfer visibly moves.
            if received - reported >= 64 << 20 && received < PERF_SIZE {
                reported = received;
                println!(
                    "   perf        {addr:<28} {} of {} MiB ({:.0} MB/s so far)",
                    received >> 20,
                    PERF_SIZE >> 20,
                    received as f64 / start.elapsed().as_secs_f64() / 1e6
                );
            }
        }
        let secs = start.elapsed().as_secs_f64();
        ensure!(received == PERF_SIZE, "perf: got {received} of {PERF_SIZE} bytes");
        println!(
            "   perf        {addr:<28} {} MiB in {secs:.2} s ({:.0} MB/s, one connection, one stream)",
            PERF_SIZE >> 20,
            PERF_SIZE as f64 / secs / 1e6
        );
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        Ok(())
    })
}

fn endpoint_for(server: &SocketAddr) -> Result<quinn::Endpoint> {
    let bind: SocketAddr = if server.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()?;
    let socket = UdpSocket::bind(bind)?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

fn client_config(alpns: &[&str]) -> Result<quinn::ClientConfig> {
    // The demo's daemon serves a generated development certificate.
    let tls = quixd::tls::dev_client_config(alpns);
    Ok(quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
    )))
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The two namespaces; removed on drop.
struct DemoNet;

impl DemoNet {
    fn create() -> Result<Self> {
        // Leftovers of an interrupted run would make `ip netns add` fail.
        let _ = sh(&["ip", "netns", "del", SERVER_NS]);
        let _ = sh(&["ip", "netns", "del", CLIENT_NS]);
        sh(&["ip", "netns", "add", SERVER_NS])?;
        let net = DemoNet;
        sh(&["ip", "netns", "add", CLIENT_NS])?;
        sh(&[
            "ip", "link", "add", SERVER_IF, "netns", SERVER_NS, "type", "veth", "peer", "name",
            CLIENT_IF, "netns", CLIENT_NS,
        ])?;
        for (ns, ifname, v4, v6) in [
            (SERVER_NS, SERVER_IF, SERVER_V4, SERVER_V6),
            (CLIENT_NS, CLIENT_IF, CLIENT_V4, CLIENT_V6),
        ] {
            let exec = |cmd: &[&str]| {
                let mut full = vec!["ip", "netns", "exec", ns];
                full.extend_from_slice(cmd);
                sh(&full)
            };
            exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{ifname}.accept_dad=0"),
            ])?;
            exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", ifname])?;
            exec(&[
                "ip",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ])?;
            exec(&["ip", "link", "set", ifname, "up"])?;
            exec(&["ip", "link", "set", "lo", "up"])?;
        }
        // The client's veth keeps its default TX checksum offload, as a container's does:
        // quixd trusts the partial checksums it leaves (`xdp.rx_checksum = "auto"` on veth).
        Ok(net)
    }

    fn in_client<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        std::thread::spawn(move || {
            let ns = File::open(format!("/var/run/netns/{CLIENT_NS}"))?;
            // SAFETY: setns on a valid namespace fd changes only this thread's network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            ensure!(rc == 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
    }

    /// After quixd stopped, nothing of it may stay on the interface.
    fn check_clean_detach(&self, args: &DemoArgs) -> Result<()> {
        let link = sh(&["ip", "-n", SERVER_NS, "-d", "link", "show", SERVER_IF])?;
        ensure!(
            !link.contains("prog/xdp"),
            "an XDP program is still attached:\n{link}"
        );
        if args.backend == "xdp" {
            println!("   XDP program detached from {SERVER_IF}");
        }
        Ok(())
    }
}

impl Drop for DemoNet {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", SERVER_NS]);
        let _ = sh(&["ip", "netns", "del", CLIENT_NS]);
    }
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// quixd in the server namespace; killed on drop if still running.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    printing: Arc<AtomicBool>,
}

impl Daemon {
    fn start(quixd: &Path, config: &Path, log_level: &str) -> Result<Self> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", SERVER_NS])
            .arg(quixd)
            .args(["run", "--config"])
            .arg(config)
            .args(["--log-level", log_level])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting quixd")?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        let printing = Arc::new(AtomicBool::new(true));
        let show = printing.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if show.load(Ordering::Relaxed) {
                    println!("   quixd | {line}");
                }
                let _ = tx.send(line);
            }
        });
        Ok(Self {
            child,
            lines,
            printing,
        })
    }

    /// CPU time of quixd's threads so far, in ns (schedstat), if readable.
    fn cpu_ns(&self) -> Option<u64> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).ok()?;
        Some(
            tasks
                .filter_map(|t| {
                    let path = t.ok()?.path().join("schedstat");
                    std::fs::read_to_string(path)
                        .ok()?
                        .split_whitespace()
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum(),
        )
    }

    fn wait_listening(&mut self, n: usize, limit: Duration) -> Result<Vec<SocketAddr>> {
        let deadline = Instant::now() + limit;
        let mut addrs = Vec::new();
        while addrs.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening addr=").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        addrs.push(addr.parse()?);
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait()?;
                    bail!(
                        "quixd did not start listening (exit status {status:?}); its log is above"
                    );
                }
            }
        }
        addrs.sort_by_key(|a: &SocketAddr| matches!(a.ip(), IpAddr::V6(_)));
        Ok(addrs)
    }

    fn stop(&mut self) -> Result<()> {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                self.printing.store(false, Ordering::Relaxed);
                ensure!(status.success(), "quixd exited with {status}");
                println!("== quixd stopped cleanly");
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("quixd did not stop within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
