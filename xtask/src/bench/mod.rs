//! `cargo xtask bench`: every quixd backend against stock quinn and against the QUIC floor,
//! at the same offered load, interleaved, in one run (issue 8).
//!
//! Set-up: two network namespaces joined by veth (198.18.0.0/15, fd00::/8); the server pinned
//! to CPU 0 and the load generator to CPU 1; threaded NAPI on both veth ends, each end's NAPI
//! kthread pinned to its side's CPU, the same for every server (restored after each run). The
//! cost of a server is CPU 0's busy time from /proc/stat (user + nice + system + irq +
//! softirq) over the measured window, divided by the units served in it.
//!
//! Internally the bench re-runs itself as a release build; the load generator and the stock
//! quinn server are that same binary (`xtask bench client`, `xtask bench quinn-server`).

mod bare;
mod chart;
mod floor;
mod load;
mod net;
mod profile;
mod quic;
mod quinn_server;
mod raw;
mod report;
mod sys;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use load::{LoadReport, LoadSpec, Pattern};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    internal: Option<Internal>,
    /// Smoke test: 1 run per scenario and server, short windows, no profile.
    #[arg(long)]
    quick: bool,
    /// Runs per scenario and server (default 5, or 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Only these scenarios (repeatable): download, upload, small, handshake,
    /// handshake-retry, latency, raw.
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Only these servers (repeatable): quinn, socket, io_uring, xdp-skb, xdp-driver,
    /// xdp-driver-afxdp-tx, floor, bare-afxdp.
    #[arg(long = "server")]
    servers: Vec<String>,
    /// Measured window per run, ms (default 8000, or 2000 with --quick).
    #[arg(long)]
    window_ms: Option<u64>,
    /// Warm-up before the window, ms (default 1500, or 700 with --quick).
    #[arg(long)]
    warmup_ms: Option<u64>,
    /// Profile the XDP (driver mode) server in each scenario with `perf record` (default on
    /// without --quick).
    #[arg(long)]
    profile: Option<bool>,
    /// Multiplies every scenario's offered load (0 = unlimited: closed loop, as fast as the
    /// load generator can go).
    #[arg(long, default_value_t = 1.0)]
    load_scale: f64,
    /// Where BENCHMARKS.md and benchmarks/ go (default: the workspace root).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// (internal) The load generator: runs one load spec (JSON) and prints its report.
    #[command(hide = true)]
    Client { spec: String },
    /// (internal) The stock-quinn perf server on a quixd config file.
    #[command(hide = true)]
    QuinnServer { config: PathBuf },
    /// (internal) The bare AF_XDP echo: the raw scenario's reference server.
    #[command(hide = true)]
    BareXdp(bare::BareArgs),
}

/// One scenario: the load offered to every server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub what: String,
    pub pattern: Pattern,
    /// Offered load: bytes/s (download, upload), requests/s, connections/s.
    pub rate: f64,
    pub connections: usize,
    pub streams: usize,
    pub response_size: u64,
    pub upload_size: u64,
    pub retry: bool,
    /// What a unit is: "byte", "request", "handshake", "packet".
    pub unit: String,
    /// The server whose cost is the limit ("x floor"): the QUIC floor, or for the raw
    /// scenario the bare AF_XDP echo.
    pub reference: String,
}

fn scenarios() -> Vec<Scenario> {
    let s = |name: &str,
             what: &str,
             pattern,
             rate,
             connections,
             streams,
             response_size,
             retry,
             unit: &str| Scenario {
        name: name.into(),
        what: what.into(),
        pattern,
        rate,
        connections,
        streams,
        response_size,
        upload_size: 0,
        retry,
        unit: unit.into(),
        reference: Server::Floor.name().into(),
    };
    vec![
        s(
            "download",
            "bulk download: 1 connection, 1 stream, offered 150 MB/s",
            Pattern::Download,
            150e6,
            1,
            1,
            0,
            false,
            "byte",
        ),
        s(
            "upload",
            "bulk upload: 1 connection, 1 stream, offered 150 MB/s",
            Pattern::Upload,
            150e6,
            1,
            1,
            0,
            false,
            "byte",
        ),
        s(
            "small",
            "small requests: 1 KiB responses, 4 connections x 16 streams in flight, offered 12k/s",
            Pattern::Requests,
            12_000.0,
            4,
            16,
            1024,
            false,
            "request",
        ),
        s(
            "handshake",
            "handshakes: a new connection per 1 KiB request, full handshake, offered 250/s",
            Pattern::Handshakes,
            250.0,
            1,
            32,
            1024,
            false,
            "handshake",
        ),
        s(
            "handshake-retry",
            "handshakes with Retry (address validation first), offered 250/s",
            Pattern::Handshakes,
            250.0,
            1,
            32,
            1024,
            true,
            "handshake",
        ),
        s(
            "latency",
            "latency: 1 KiB requests on 1 connection at a moderate 2k/s, p50/p99",
            Pattern::Requests,
            2_000.0,
            1,
            8,
            1024,
            false,
            "request",
        ),
        Scenario {
            reference: Server::BareXdp.name().into(),
            ..s(
                "raw",
                "raw datapath: 1200-byte UDP datagrams echoed without QUIC (`quixd udp-echo`), \
                 offered 80k/s; the reference is a bare AF_XDP echo (driver mode, copy mode)",
                Pattern::RawEcho,
                80_000.0,
                1,
                1,
                1200,
                false,
                "packet",
            )
        },
    ]
}

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Server {
    Quinn,
    Socket,
    IoUring,
    XdpSkb,
    XdpDriver,
    XdpDriverAfXdp,
    Floor,
    BareXdp,
}

impl Server {
    pub const ALL: [Server; 8] = [
        Server::Quinn,
        Server::Socket,
        Server::IoUring,
        Server::XdpSkb,
        Server::XdpDriver,
        Server::XdpDriverAfXdp,
        Server::Floor,
        Server::BareXdp,
    ];

    /// Whether this server takes part in `scenario`: QUIC servers in the QUIC scenarios,
    /// quixd's backends and the bare AF_XDP echo in the raw one.
    pub fn serves(self, scenario: &Scenario) -> bool {
        let raw = scenario.pattern == Pattern::RawEcho;
        match self {
            Server::Quinn | Server::Floor => !raw,
            Server::BareXdp => raw,
            _ => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Server::Quinn => "quinn",
            Server::Socket => "socket",
            Server::IoUring => "io_uring",
            Server::XdpSkb => "xdp-skb",
            Server::XdpDriver => "xdp-driver",
            Server::XdpDriverAfXdp => "xdp-driver-afxdp-tx",
            Server::Floor => "floor",
            Server::BareXdp => "bare-afxdp",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Server::Quinn => "stock quinn 0.11 (tokio, quinn-udp), same cert/cipher/transport",
            Server::Socket => "quixd, backend = \"socket\" (quinn-udp: GSO, GRO)",
            Server::IoUring => "quixd, backend = \"io_uring\"",
            Server::XdpSkb => "quixd, backend = \"xdp\", attach = \"skb\" (generic XDP), AF_XDP copy mode, transmit = \"auto\" (kernel GSO in copy mode)",
            Server::XdpDriver => "quixd, backend = \"xdp\", attach = \"driver\" (native XDP on veth), AF_XDP copy mode, transmit = \"auto\" (receive through AF_XDP, send through the kernel socket with GSO in copy mode)",
            Server::XdpDriverAfXdp => "quixd, backend = \"xdp\", attach = \"driver\", transmit = \"af_xdp\" (AF_XDP both ways, copy mode)",
            Server::Floor => "QUIC floor: quinn-proto server endpoint joined in memory to the client (no datapath)",
            Server::BareXdp => "raw scenario only: a bare AF_XDP echo (quixd's XDP program, driver mode, one copy-mode socket driven directly with the `xdp` crate; swaps addresses in place and sends the same frame back: no parsing beyond the headers, no checksum, no copy)",
        }
    }

    /// `server.backend`, `xdp.attach` and `xdp.transmit` in quixd's config.
    fn backend(self) -> Option<(&'static str, Option<(&'static str, &'static str)>)> {
        match self {
            Server::Socket => Some(("socket", None)),
            Server::IoUring => Some(("io_uring", None)),
            Server::XdpSkb => Some(("xdp", Some(("skb", "auto")))),
            Server::XdpDriver => Some(("xdp", Some(("driver", "auto")))),
            Server::XdpDriverAfXdp => Some(("xdp", Some(("driver", "af_xdp")))),
            Server::Quinn | Server::Floor | Server::BareXdp => None,
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub scenario: String,
    pub server: String,
    pub run: usize,
    pub error: Option<String>,
    pub report: Option<LoadReport>,
    /// The floor's glue cost (floor only).
    pub glue: Option<floor::Glue>,
    /// Units served in the window (bytes, requests, handshakes).
    pub units: f64,
    /// Server CPU seconds charged: CPU 0 busy, wall time minus cpuidle residency (the floor:
    /// its server thread's CPU time).
    pub server_cpu_s: f64,
    /// Units per server CPU-second.
    pub per_cpu_s: f64,
    /// The server's own CPU seconds: its process plus its side's NAPI kthread (the floor:
    /// its thread). Less exposed to other jobs on CPU 0 than `server_cpu_s`, but it misses
    /// interrupt work charged to other tasks.
    pub own_cpu_s: f64,
    /// Units per own CPU-second.
    pub per_own_cpu_s: f64,
    /// Achieved units per wall second.
    pub achieved_rate: f64,
    /// CPU 1 (the load generator's core) busy share over the window.
    pub client_busy: f64,
    /// Whether the load generator's core was saturated (>= 95% busy).
    pub client_saturated: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.internal {
        Some(Internal::Client { spec }) => return load::client_main(&spec),
        Some(Internal::QuinnServer { config }) => return quinn_server::run(&config),
        Some(Internal::BareXdp(args)) => return bare::run(&args),
        None => {}
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench needs root (network namespaces, XDP, CAP_IPC_LOCK for the UMEM)");
    }
    let root = crate::workspace_root();
    if cfg!(debug_assertions) && std::env::var_os("QUIXD_BENCH_NO_REEXEC").is_none() {
        return reexec_release(&root);
    }
    bench(args, &root)
}

/// Builds quixd and xtask in release mode, then replaces this process with the release
/// xtask running the same command.
fn reexec_release(root: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    eprintln!("bench: cargo build --release -p quixd -p xtask");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "quixd", "-p", "xtask"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    let exe = root.join("target/release/xtask");
    let err = Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env("QUIXD_BENCH_NO_REEXEC", "1")
        .exec();
    Err(err).with_context(|| format!("exec {}", exe.display()))
}

struct Plan {
    runs: usize,
    load_scale: f64,
    window_ms: u64,
    warmup_ms: u64,
    profile: bool,
    scenarios: Vec<Scenario>,
    servers: Vec<Server>,
    skipped_servers: Vec<(Server, String)>,
}

fn bench(args: BenchArgs, root: &Path) -> Result<()> {
    sys::install_stop_handlers()?;
    // The orchestrator lives on the client CPU; it sleeps while runs are measured.
    sys::pin(0, net::CLIENT_CPU).context("pinning the bench to CPU 1")?;
    let started = Instant::now();
    let quixd = root.join("target/release/quixd");
    if std::env::var_os("QUIXD_BENCH_NO_REEXEC").is_none() {
        // Release xtask started directly: still make sure quixd is built.
        let status = Command::new("cargo")
            .args(["build", "--release", "-p", "quixd"])
            .current_dir(root)
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release -p quixd failed");
        }
    }
    if !quixd.exists() {
        bail!("{} is missing", quixd.display());
    }
    let xtask = std::env::current_exe()?;
    ensure_tool("ethtool", "ethtool")?;

    let work = root.join("target/bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("logs"))?;
    quic::write_cert(&work)?;

    let all = scenarios();
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        all
    } else {
        for s in &args.scenarios {
            if !all.iter().any(|x| &x.name == s) {
                bail!("unknown scenario {s:?}");
            }
        }
        all.into_iter()
            .filter(|s| args.scenarios.contains(&s.name))
            .collect()
    };
    let mut servers: Vec<Server> = Server::ALL.to_vec();
    if !args.servers.is_empty() {
        for s in &args.servers {
            if !Server::ALL.iter().any(|x| x.name() == s) {
                bail!("unknown server {s:?}");
            }
        }
        servers.retain(|s| args.servers.iter().any(|x| x == s.name()));
    }
    let mut skipped_servers = Vec::new();
    if servers.contains(&Server::IoUring) {
        if let Err(why) = backend_exists(&quixd, &work, "io_uring") {
            eprintln!("bench: skipping io_uring: {why}");
            skipped_servers.push((Server::IoUring, why));
            servers.retain(|s| *s != Server::IoUring);
        }
    }
    let plan = Plan {
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 5 }),
        load_scale: args.load_scale,
        window_ms: args
            .window_ms
            .unwrap_or(if args.quick { 2000 } else { 8000 }),
        warmup_ms: args
            .warmup_ms
            .unwrap_or(if args.quick { 700 } else { 1500 }),
        profile: args.profile.unwrap_or(!args.quick),
        scenarios,
        servers,
        skipped_servers,
    };

    let net = net::Net::new().context("creating the namespaces")?;
    let ctx = Ctx {
        net: &net,
        work: &work,
        quixd: &quixd,
        xtask: &xtask,
        plan: &plan,
    };
    let total: usize = plan
        .scenarios
        .iter()
        .map(|sc| plan.runs * plan.servers.iter().filter(|s| s.serves(sc)).count())
        .sum();
    let mut records = Vec::new();
    let mut i = 0;
    for scenario in &plan.scenarios {
        for r in 0..plan.runs {
            // Interleaved: A B C ... A B C ...
            for &server in plan.servers.iter().filter(|s| s.serves(scenario)) {
                sys::check_stop()?;
                i += 1;
                eprint!(
                    "bench [{i}/{total}] {} / {} run {}: ",
                    scenario.name,
                    server.name(),
                    r + 1
                );
                let record = ctx.measure(scenario, server, r);
                match &record.error {
                    Some(e) if e == "interrupted" => bail!("interrupted"),
                    Some(e) => eprintln!("FAILED: {}", e.lines().next().unwrap_or("")),
                    None => eprintln!("{}", report::one_line(scenario, &record)),
                }
                records.push(record);
            }
        }
    }
    let profiles = if plan.profile && plan.servers.contains(&Server::XdpDriver) {
        profile::profile_all(&ctx).unwrap_or_else(|e| {
            eprintln!("bench: profiling failed: {e:#}");
            Vec::new()
        })
    } else {
        Vec::new()
    };
    drop(net);
    let out = args.out.unwrap_or_else(|| root.to_path_buf());
    let results = report::Results::new(
        &plan.scenarios,
        &plan.servers,
        &plan.skipped_servers,
        records,
        profiles,
        report::Settings {
            quick: args.quick,
            load_scale: plan.load_scale,
            runs: plan.runs,
            window_ms: plan.window_ms,
            warmup_ms: plan.warmup_ms,
            elapsed_s: started.elapsed().as_secs_f64(),
        },
    );
    results.write(&out)?;
    eprintln!(
        "bench: wrote {} and {} in {:.0} s",
        out.join("BENCHMARKS.md").display(),
        out.join("benchmarks/").display(),
        started.elapsed().as_secs_f64()
    );
    results.check_complete()
}

/// Runs beside a load (given its spec and the server's pid), e.g. the profiler.
type During<'a> = dyn Fn(&LoadSpec, u32) -> Result<()> + 'a;

struct Ctx<'a> {
    net: &'a net::Net,
    work: &'a Path,
    quixd: &'a Path,
    xtask: &'a Path,
    plan: &'a Plan,
}

impl Ctx<'_> {
    fn measure(&self, scenario: &Scenario, server: Server, run: usize) -> Record {
        let result = self.run_once(scenario, server, run, None);
        let mut record = Record {
            scenario: scenario.name.clone(),
            server: server.name().into(),
            run,
            error: None,
            report: None,
            glue: None,
            units: 0.0,
            server_cpu_s: 0.0,
            per_cpu_s: 0.0,
            own_cpu_s: 0.0,
            per_own_cpu_s: 0.0,
            achieved_rate: 0.0,
            client_busy: 0.0,
            client_saturated: false,
        };
        match result {
            Err(e) => record.error = Some(format!("{e:#}")),
            Ok((rep, glue)) => {
                let units = match scenario.unit.as_str() {
                    "byte" => rep.bytes as f64,
                    "handshake" => rep.handshakes as f64,
                    "packet" => rep.packets as f64,
                    _ => rep.requests as f64,
                };
                let cpu = match server {
                    Server::Floor => rep.server_thread_cpu_s.unwrap_or(0.0),
                    _ => rep.server_cpu.busy_precise(),
                };
                record.units = units;
                record.server_cpu_s = cpu;
                record.per_cpu_s = if cpu > 0.0 { units / cpu } else { 0.0 };
                let own = match server {
                    Server::Floor => cpu,
                    _ => rep.server_process_cpu_s.unwrap_or(0.0) + rep.server_napi_cpu_s,
                };
                record.own_cpu_s = own;
                record.per_own_cpu_s = if own > 0.0 { units / own } else { 0.0 };
                record.achieved_rate = units / rep.window_s.max(1e-9);
                record.client_busy = rep.client_cpu.busy_share();
                // The floor's client polls: its core is always busy by design.
                record.client_saturated = server != Server::Floor && record.client_busy >= 0.95;
                if units == 0.0 {
                    record.error = Some(format!(
                        "served nothing in the window ({} errors; first: {})",
                        rep.errors,
                        rep.first_error.as_deref().unwrap_or("none")
                    ));
                }
                record.glue = glue;
                record.report = Some(rep);
            }
        }
        record
    }

    fn spec(&self, scenario: &Scenario, config: &Path) -> LoadSpec {
        LoadSpec {
            pattern: scenario.pattern,
            server: (self.net.server_v4, 4433).into(),
            bind: (self.net.client_v4, 0).into(),
            cert_dir: self.work.to_path_buf(),
            config: config.to_path_buf(),
            warmup_ms: self.plan.warmup_ms,
            window_ms: self.plan.window_ms,
            rate: scenario.rate * self.plan.load_scale,
            connections: scenario.connections,
            streams: scenario.streams,
            response_size: scenario.response_size,
            upload_size: scenario.upload_size,
            server_pid: None,
            server_napi_pids: Vec::new(),
        }
    }

    /// Writes the quixd config for `server` (also read by stock quinn and the floor).
    fn config(&self, server: Server, scenario: &Scenario) -> Result<PathBuf> {
        let retry = scenario.retry;
        let path = self.work.join(format!(
            "{}{}.toml",
            server.name(),
            if retry { "-retry" } else { "" }
        ));
        let (backend, attach) = server.backend().unwrap_or(("socket", None));
        let mut s = String::new();
        s += "# written by cargo xtask bench\n[server]\n";
        s += &format!("listen = [\"{}:4433\"]\n", self.net.server_v4);
        s += &format!("backend = \"{backend}\"\ndrain_timeout_ms = 200\n\n");
        s += "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n";
        s += &format!("[transport]\nretry = {retry}\n\n");
        s += "[apps.perf]\nalpn = [\"perf\"]\n";
        if let Some((attach, transmit)) = attach {
            s += &format!(
                "\n[xdp]\ninterface = \"{}\"\nattach = \"{attach}\"\ntransmit = \"{transmit}\"\n",
                self.net.server_if
            );
        }
        std::fs::write(&path, s)?;
        Ok(path)
    }

    /// Starts `server` in the server namespace on CPU 0 and waits until it listens.
    /// With `raw`, quixd runs `udp-echo` (no QUIC).
    fn start_server(
        &self,
        server: Server,
        config: &Path,
        tag: &str,
        raw: bool,
    ) -> Result<sys::Proc> {
        let log = self.work.join(format!("logs/{tag}-server.log"));
        let cmd = match server {
            Server::BareXdp => {
                let mut c = net::Net::command(&self.net.server_ns, &self.xtask.to_string_lossy());
                c.args(["bench", "bare-xdp", "--interface", &self.net.server_if])
                    .args(["--port", "4433"]);
                c
            }
            Server::Quinn => {
                let mut c = net::Net::command(&self.net.server_ns, &self.xtask.to_string_lossy());
                c.args(["bench", "quinn-server"]).arg(config);
                c
            }
            _ => {
                let subcommand = if raw { "udp-echo" } else { "run" };
                let mut c = net::Net::command(&self.net.server_ns, &self.quixd.to_string_lossy());
                c.args(["--log-level", "info", subcommand, "--config"])
                    .arg(config);
                c.env("NO_COLOR", "1");
                c
            }
        };
        let mut proc = sys::Proc::spawn(server.name(), cmd, &log, Some(net::SERVER_CPU))?;
        proc.wait_for_log("listening", Duration::from_secs(15))?;
        Ok(proc)
    }

    /// [`Self::start_server`], retried while the previous server's socket is still bound (an
    /// io_uring instance releases its files, and the kernel an AF_XDP socket's queue,
    /// asynchronously after the process exits).
    fn start_server_retrying(
        &self,
        server: Server,
        config: &Path,
        tag: &str,
        raw: bool,
    ) -> Result<sys::Proc> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            match self.start_server(server, config, tag, raw) {
                // The previous server's socket or AF_XDP queue is still being released.
                Err(e)
                    if Instant::now() < end
                        && ["Address already in use", "Device or resource busy"]
                            .iter()
                            .any(|m| format!("{e:#}").contains(m)) =>
                {
                    sys::sleep(Duration::from_millis(250))?;
                }
                other => return other,
            }
        }
    }

    /// One run: server up, steering on, the load generator in the client namespace, report.
    /// With `during`, that closure runs while the load runs (the profiler).
    fn run_once(
        &self,
        scenario: &Scenario,
        server: Server,
        run: usize,
        during: Option<&During<'_>>,
    ) -> Result<(LoadReport, Option<floor::Glue>)> {
        let config = self.config(server, scenario)?;
        let mut spec = self.spec(scenario, &config);
        if server == Server::Floor {
            let (rep, glue) = floor::run(&spec)?;
            return Ok((rep, Some(glue)));
        }
        let tag = format!("{}-{}-{run}", scenario.name, server.name());
        let raw = scenario.pattern == Pattern::RawEcho;
        let mut srv = self.start_server_retrying(server, &config, &tag, raw)?;
        let steering = self.net.steer()?;
        spec.server_pid = Some(srv.pid());
        spec.server_napi_pids = steering
            .threads
            .iter()
            .filter(|t| t.2 == net::SERVER_CPU)
            .map(|t| t.1)
            .collect();
        let mut cmd = net::Net::command(&self.net.client_ns, &self.xtask.to_string_lossy());
        cmd.args(["bench", "client", &serde_json::to_string(&spec)?]);
        let client_log = self.work.join(format!("logs/{tag}-client.log"));
        let mut client = sys::Proc::spawn("client", cmd, &client_log, Some(net::CLIENT_CPU))?;
        if let Some(f) = during {
            f(&spec, srv.pid())?;
        }
        let limit =
            Duration::from_millis(spec.warmup_ms + spec.window_ms) + Duration::from_secs(30);
        let status = client.wait_exit(limit)?;
        if let Some(status) = srv.try_wait()? {
            bail!(
                "server exited during the run ({status}):\n{}",
                sys::tail(&srv.log_text(), 20)
            );
        }
        drop(steering);
        srv.terminate(Duration::from_secs(3));
        let out = client.log_text();
        if !status.success() {
            bail!("load generator failed ({status}):\n{}", sys::tail(&out, 20));
        }
        let line = out
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .context("load generator printed no report")?;
        let rep: LoadReport = serde_json::from_str(line).context("parsing the client's report")?;
        Ok((rep, None))
    }
}

/// Whether quixd accepts `backend = NAME` (`quixd check-config` on a config using it).
fn backend_exists(quixd: &Path, work: &Path, name: &str) -> std::result::Result<(), String> {
    let path = work.join(format!("probe-{name}.toml"));
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:4433\"]\nbackend = \"{name}\"\n\n[apps.perf]\nalpn = [\"perf\"]\n"
    );
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let out = Command::new(quixd)
        .arg("check-config")
        .arg(&path)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "quixd check-config rejects backend = \"{name}\": {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Installs a Debian package when its command is missing.
pub fn ensure_tool(command: &str, package: &str) -> Result<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        return Ok(());
    }
    eprintln!("bench: installing {package} (apt-get)");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let _ = Command::new("apt-get").arg("update").status();
        let status = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .status()?;
        if !status.success() {
            bail!("apt-get install {package} failed");
        }
    }
    Ok(())
}
