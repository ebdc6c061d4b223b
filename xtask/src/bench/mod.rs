//! `cargo xtask bench`: every quixd backend against stock quinn and against the QUIC floor,
//! at saturation (closed loop), at a light fixed load and for latency at a share of each
//! server's own saturation rate, interleaved, in one run (issues 8 and 12); and quixd's own
//! file serving over HTTP/3 beside the same over hq-interop (issue 16).
//!
//! Set-up: two network namespaces joined by veth (198.18.0.0/15, fd00::/8); the server pinned
//! to CPU 0 and the load generator to CPU 1; threaded NAPI on both veth ends, each end's NAPI
//! kthread pinned to its side's CPU, the same for every server (restored after each run). The
//! cost of a server is the run time of its threads and its NAPI kthreads over the measured
//! window (schedstat, nanoseconds), divided by the units served in it; CPU 0's busy time
//! (cpuidle, else /proc/schedstat) and /proc/stat are cross-checks.
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
mod quinn_perf;
mod quinn_server;
mod raw;
pub(crate) mod report;
mod sys;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use load::{LoadReport, LoadSpec, Pattern, Protocol};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    internal: Option<Internal>,
    /// Smoke test: 1 run per scenario and server, short windows, no profile.
    #[arg(long)]
    quick: bool,
    /// Runs per scenario and server (default 3, or 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Only these scenarios (repeatable): download, upload, small, handshake,
    /// handshake-retry, raw, files-hq-1k, files-h3-1k, files-hq-1m, files-h3-1m (closed
    /// loop); download-qperf, upload-qperf, small-qperf (quinn's perf client);
    /// download-light, upload-light, small-light, handshake-light, raw-light; latency-50,
    /// latency-90 (need small).
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Only these servers (repeatable): quinn, quinn-over-io_uring, quinn-over-xdp, socket,
    /// io_uring, xdp-skb, xdp-driver, xdp-driver-afxdp-tx, floor, bare-afxdp.
    #[arg(long = "server")]
    servers: Vec<String>,
    /// Measured window per run, ms (default 5000, or 2000 with --quick).
    #[arg(long)]
    window_ms: Option<u64>,
    /// Warm-up before the window, ms (default 1000, or 700 with --quick).
    #[arg(long)]
    warmup_ms: Option<u64>,
    /// Profile every server in each saturation scenario with `perf record` (default on
    /// without --quick).
    #[arg(long)]
    profile: Option<bool>,
    /// Multiplies the light scenarios' offered load (0 = unlimited: closed loop, as fast as
    /// the load generator can go). Saturation scenarios are always closed loop.
    #[arg(long, default_value_t = 1.0)]
    load_scale: f64,
    /// The floor's in-memory link, client to server: one-way delay and delivery tick,
    /// microseconds (packets arrive in batches, as over veth).
    #[arg(long, default_value_t = 50)]
    floor_to_server_us: u64,
    /// The floor's in-memory link, server to client: one-way delay and delivery tick,
    /// microseconds.
    #[arg(long, default_value_t = 100)]
    floor_to_client_us: u64,
    /// Where BENCHMARKS.md and benchmarks/ go (default: the workspace root).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Runs nothing: writes BENCHMARKS.md and cost.svg again from this results.json (after
    /// a change to the report's text or layout).
    #[arg(long, value_name = "RESULTS_JSON")]
    render: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// (internal) The load generator: runs one load spec (JSON) and prints its report.
    #[command(hide = true)]
    Client { spec: String },
    /// (internal) quinn's perf client logic as a second load generator: same spec and report.
    #[command(hide = true)]
    QuinnPerfClient { spec: String },
    /// (internal) The stock-quinn perf server on a quixd config file.
    #[command(hide = true)]
    QuinnServer { config: PathBuf },
    /// (internal) The bare AF_XDP echo: the raw scenario's reference server.
    #[command(hide = true)]
    BareXdp(bare::BareArgs),
}

/// How a scenario loads the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Closed loop: as fast as the load generator goes (the headline figures).
    Saturation,
    /// A fixed, moderate offered load: the cost when lightly loaded.
    Light,
    /// Open loop at a fraction of each server's own saturation rate (latency).
    Latency,
}

/// One scenario: the load offered to every server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub what: String,
    pub level: Level,
    pub pattern: Pattern,
    /// What a request is: perf, or a file over hq-interop or HTTP/3.
    #[serde(default)]
    pub protocol: Protocol,
    /// Offered load: bytes/s (download, upload), requests/s, connections/s, datagrams/s;
    /// 0 = closed loop.
    pub rate: f64,
    /// Latency scenarios: offered at this fraction of each server's own median rate in the
    /// named saturation scenario.
    #[serde(default)]
    pub fraction_of: Option<(String, f64)>,
    pub connections: usize,
    pub streams: usize,
    pub response_size: u64,
    pub upload_size: u64,
    pub retry: bool,
    /// What a unit is: "byte", "request", "handshake", "packet".
    pub unit: String,
    /// The server whose cost is the limit ("x floor"): the QUIC floor, or for the raw
    /// scenario the bare AF_XDP echo; empty where there is none (files).
    pub reference: String,
    /// Instead of a reference server: each server's own figure in this scenario (HTTP/3
    /// file requests against the same over hq-interop).
    #[serde(default)]
    pub reference_scenario: Option<String>,
    /// The load generator: "client" (ours, load.rs) or "quinn-perf-client" (quinn's perf
    /// client logic, quinn_perf.rs).
    #[serde(default = "default_generator")]
    pub generator: String,
}

fn default_generator() -> String {
    "client".into()
}

impl Scenario {
    /// Whether a server's cost is the limit here (the floor, the bare AF_XDP echo): the
    /// summary, the chart and issue 12's targets are about these scenarios.
    pub fn has_limit(&self) -> bool {
        !self.reference.is_empty()
    }
}

/// The offered light loads (moderate: every server mostly idle).
const LIGHT_BYTES: f64 = 150e6;
const LIGHT_REQUESTS: f64 = 12_000.0;
const LIGHT_HANDSHAKES: f64 = 250.0;
const LIGHT_PACKETS: f64 = 80_000.0;

fn scenarios() -> Vec<Scenario> {
    let base = |name: &str, pattern, connections, streams, response_size, unit: &str| Scenario {
        name: name.into(),
        what: String::new(),
        level: Level::Saturation,
        pattern,
        protocol: Protocol::Perf,
        rate: 0.0,
        fraction_of: None,
        connections,
        streams,
        response_size,
        upload_size: 0,
        retry: false,
        unit: unit.into(),
        reference: Server::Floor.name().into(),
        reference_scenario: None,
        generator: default_generator(),
    };
    let download = base("download", Pattern::Download, 1, 1, 0, "byte");
    let upload = base("upload", Pattern::Upload, 1, 1, 0, "byte");
    let small = base("small", Pattern::Requests, 4, 16, 1024, "request");
    let handshake = base("handshake", Pattern::Handshakes, 1, 32, 1024, "handshake");
    let raw = Scenario {
        reference: Server::BareXdp.name().into(),
        ..base("raw", Pattern::RawEcho, 1, 1, 1200, "packet")
    };
    let sat = |s: &Scenario, what: &str| Scenario {
        what: format!("{what}, closed loop"),
        ..s.clone()
    };
    let light = |s: &Scenario, what: &str, rate: f64| Scenario {
        name: format!("{}-light", s.name),
        what: format!("{what}, offered {}", fmt_rate(rate, &s.unit)),
        level: Level::Light,
        rate,
        ..s.clone()
    };
    let latency = |pct: u32| Scenario {
        name: format!("latency-{pct}"),
        what: format!(
            "small requests (as `small`) offered at {pct}% of each server's own saturation \
             rate in `small`: p50/p99"
        ),
        level: Level::Latency,
        fraction_of: Some(("small".into(), f64::from(pct) / 100.0)),
        ..small.clone()
    };
    let quinn_perf = |s: &Scenario, what: &str| Scenario {
        name: format!("{}-qperf", s.name),
        what: format!("{what}, closed loop, load from quinn's perf client logic"),
        generator: "quinn-perf-client".into(),
        ..s.clone()
    };
    const DOWNLOAD: &str = "bulk download: 1 connection, 1 stream";
    const UPLOAD: &str = "bulk upload: 1 connection, 1 stream";
    const SMALL: &str = "small requests: 1 KiB responses, 4 connections x 16 streams in flight";
    const HANDSHAKE: &str =
        "handshakes: a new connection per 1 KiB request, full handshake, 32 in flight";
    const RETRY: &str = "handshakes with Retry (address validation first), 32 in flight";
    const RAW: &str = "raw datapath: 1200-byte UDP datagrams echoed without QUIC \
                       (`quixd udp-echo`); the reference is a bare AF_XDP echo";
    let retry = Scenario {
        name: "handshake-retry".into(),
        retry: true,
        ..handshake.clone()
    };
    // The same files over hq-interop and HTTP/3, quixd's servers only. No floor serves
    // files: each server's h3 figure is compared with its own hq figure.
    let files = FILES.iter().flat_map(|&(size, connections, streams)| {
        let name = move |p: Protocol| format!("files-{}-{}", p.name(), size_name(size));
        [Protocol::Hq, Protocol::H3].map(|protocol| {
            let (what, reference_scenario) = match protocol {
                Protocol::H3 => ("HTTP/3", Some(name(Protocol::Hq))),
                _ => ("hq-interop (HTTP/0.9)", None),
            };
            Scenario {
                what: format!(
                    "{what} file requests: a {} file, {connections} connections x {streams} \
                     streams in flight, closed loop{}",
                    size_text(size),
                    reference_scenario
                        .as_ref()
                        .map(|r| format!("; the reference is the same server in `{r}`"))
                        .unwrap_or_default()
                ),
                protocol,
                reference: String::new(),
                reference_scenario,
                ..base(
                    &name(protocol),
                    Pattern::Requests,
                    connections,
                    streams,
                    size,
                    "request",
                )
            }
        })
    });
    vec![
        sat(&download, DOWNLOAD),
        sat(&upload, UPLOAD),
        sat(&small, SMALL),
        sat(&handshake, HANDSHAKE),
        sat(&retry, RETRY),
        Scenario {
            what: format!(
                "{RAW}, closed loop ({} datagrams in flight)",
                raw::IN_FLIGHT
            ),
            ..raw.clone()
        },
    ]
    .into_iter()
    .chain(files)
    .chain([
        quinn_perf(&download, DOWNLOAD),
        quinn_perf(&upload, UPLOAD),
        quinn_perf(&small, SMALL),
        light(&download, DOWNLOAD, LIGHT_BYTES),
        light(&upload, UPLOAD, LIGHT_BYTES),
        light(&small, SMALL, LIGHT_REQUESTS),
        light(&handshake, HANDSHAKE, LIGHT_HANDSHAKES),
        light(&raw, RAW, LIGHT_PACKETS),
        latency(50),
        latency(90),
    ])
    .collect()
}

/// The file scenarios: file size, connections, streams in flight per connection. 1 KiB
/// files are loaded as `small`; 1 MiB files with fewer in flight.
const FILES: [(u64, usize, usize); 2] = [(1024, 4, 16), (1 << 20, 2, 2)];

/// The file scenarios' document root, in the bench's work folder (which is emptied at every
/// start); the config's relative paths are resolved against that folder.
const FILE_ROOT: &str = "www";

/// Writes the document root: one file per size in [`FILES`], named by [`load::file_path`].
fn write_files(work: &Path) -> Result<()> {
    let root = work.join(FILE_ROOT);
    std::fs::create_dir_all(&root)?;
    for (size, ..) in FILES {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let name = load::file_path(size);
        std::fs::write(root.join(name.trim_start_matches('/')), data)?;
    }
    Ok(())
}

/// "1k", "1m": a file size in scenario names.
fn size_name(size: u64) -> String {
    match size {
        s if s >= 1 << 20 => format!("{}m", s >> 20),
        s => format!("{}k", s >> 10),
    }
}

/// "1 KiB", "1 MiB".
fn size_text(size: u64) -> String {
    size_name(size).replace('k', " KiB").replace('m', " MiB")
}

/// "150 MB/s", "12k/s".
fn fmt_rate(rate: f64, unit: &str) -> String {
    match unit {
        "byte" => format!("{:.0} MB/s", rate / 1e6),
        _ if rate >= 1000.0 => format!("{}k/s", rate / 1e3),
        _ => format!("{rate}/s"),
    }
}

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Server {
    Quinn,
    /// Stock quinn with quixd's AF_XDP datapath as its socket (`quixd::quinn_socket`).
    QuinnXdp,
    /// Stock quinn with quixd's io_uring datapath as its socket.
    QuinnIoUring,
    Socket,
    IoUring,
    XdpSkb,
    XdpDriver,
    XdpDriverAfXdp,
    Floor,
    BareXdp,
}

impl Server {
    pub const ALL: [Server; 10] = [
        Server::Quinn,
        Server::QuinnIoUring,
        Server::QuinnXdp,
        Server::Socket,
        Server::IoUring,
        Server::XdpSkb,
        Server::XdpDriver,
        Server::XdpDriverAfXdp,
        Server::Floor,
        Server::BareXdp,
    ];

    /// Whether this server takes part in `scenario`: QUIC servers in the QUIC scenarios,
    /// quixd's backends and the bare AF_XDP echo in the raw one, quixd's backends alone in
    /// the file scenarios (stock quinn and the floor serve only perf).
    pub fn serves(self, scenario: &Scenario) -> bool {
        let raw = scenario.pattern == Pattern::RawEcho;
        let perf = !raw && !scenario.protocol.files();
        match self {
            Server::Quinn | Server::QuinnXdp | Server::QuinnIoUring => perf,
            // The floor's client runs in its process: only our generator.
            Server::Floor => perf && scenario.generator == default_generator(),
            Server::BareXdp => raw,
            _ => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Server::Quinn => "quinn",
            Server::QuinnXdp => "quinn-over-xdp",
            Server::QuinnIoUring => "quinn-over-io_uring",
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
            Server::QuinnXdp => "the same stock quinn server with quixd's XDP datapath as its socket (quixd::quinn_socket: attach = \"driver\", transmit = \"auto\", as xdp-driver)",
            Server::QuinnIoUring => "the same stock quinn server with quixd's io_uring datapath as its socket (quixd::quinn_socket)",
            Server::Socket => "quixd, backend = \"socket\" (quinn-udp: GSO, GRO)",
            Server::IoUring => "quixd, backend = \"io_uring\"",
            Server::XdpSkb => "quixd, backend = \"xdp\", attach = \"skb\" (generic XDP), AF_XDP copy mode, transmit = \"auto\" (kernel GSO in copy mode)",
            Server::XdpDriver => "quixd, backend = \"xdp\", attach = \"driver\" (native XDP on veth), AF_XDP copy mode, transmit = \"auto\" (receive through AF_XDP, send through the kernel socket with GSO in copy mode)",
            Server::XdpDriverAfXdp => "quixd, backend = \"xdp\", attach = \"driver\", transmit = \"af_xdp\" (AF_XDP both ways, copy mode)",
            Server::Floor => "QUIC floor: quinn-proto server endpoint joined in memory to the client (no datapath)",
            Server::BareXdp => "raw scenario only: a bare AF_XDP echo (quixd's XDP program, driver mode, one copy-mode socket, quixd's own socket module (UMEM, rings, kick policy); swaps addresses in place and sends the same frame back: no parsing beyond the headers, no checksum, no copy)",
        }
    }

    /// `server.backend`, `xdp.attach` and `xdp.transmit` in quixd's config.
    fn backend(self) -> Option<(&'static str, Option<(&'static str, &'static str)>)> {
        match self {
            Server::Socket => Some(("socket", None)),
            Server::IoUring | Server::QuinnIoUring => Some(("io_uring", None)),
            Server::XdpSkb => Some(("xdp", Some(("skb", "auto")))),
            Server::XdpDriver | Server::QuinnXdp => Some(("xdp", Some(("driver", "auto")))),
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
    /// The load offered in this run (0 = closed loop).
    #[serde(default)]
    pub offered: f64,
    /// Units served in the window (bytes, requests, handshakes, datagrams).
    pub units: f64,
    /// Server CPU seconds charged: the run time of the server's own threads plus its side's
    /// NAPI kthreads (schedstat, nanoseconds); the floor: its server thread's CPU clock over
    /// its work sections (it polls between them).
    pub server_cpu_s: f64,
    /// Where `server_cpu_s` came from.
    #[serde(default)]
    pub cpu_source: String,
    /// Units per server CPU-second.
    pub per_cpu_s: f64,
    /// CPU 0's busy seconds over the window (cross-check: includes whatever else ran there
    /// and interrupt work that landed on the idle task).
    #[serde(default)]
    pub core_busy_s: f64,
    #[serde(default)]
    pub core_source: String,
    /// CPU 0's busy seconds by /proc/stat (tick-sampled; printed as a cross-check only).
    #[serde(default)]
    pub procstat_busy_s: f64,
    /// Whether `server_cpu_s` and `core_busy_s` differ by more than 10%.
    #[serde(default)]
    pub sources_disagree: bool,
    /// Achieved units per wall second.
    pub achieved_rate: f64,
    /// CPU 1 (the load generator's core) busy share over the window.
    pub client_busy: f64,
    /// Whether the load generator's core was saturated (>= 95% busy).
    pub client_saturated: bool,
}

/// Sources differing by more than this share are flagged.
pub const DISAGREE: f64 = 0.10;

pub fn run(args: BenchArgs) -> Result<()> {
    match args.internal {
        Some(Internal::Client { spec }) => return load::client_main(&spec),
        Some(Internal::QuinnPerfClient { spec }) => return quinn_perf::client_main(&spec),
        Some(Internal::QuinnServer { config }) => return quinn_server::run(&config),
        Some(Internal::BareXdp(args)) => return bare::run(&args),
        None => {}
    }
    let root = crate::workspace_root();
    if let Some(path) = &args.render {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let results: report::Results =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let out = args.out.clone().unwrap_or(root);
        results.write(&out)?;
        println!(
            "wrote {} from {}",
            out.join("BENCHMARKS.md").display(),
            path.display()
        );
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench needs root (network namespaces, XDP, CAP_IPC_LOCK for the UMEM)");
    }
    if cfg!(debug_assertions) && std::env::var_os("QUIXD_BENCH_NO_REEXEC").is_none() {
        return crate::release::reexec(&root, "bench", "QUIXD_BENCH_NO_REEXEC");
    }
    bench(args, &root)
}

struct Plan {
    runs: usize,
    load_scale: f64,
    floor_us: (u64, u64),
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
    write_files(&work)?;

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
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }),
        load_scale: args.load_scale,
        floor_us: (args.floor_to_server_us, args.floor_to_client_us),
        window_ms: args
            .window_ms
            .unwrap_or(if args.quick { 2000 } else { 5000 }),
        warmup_ms: args
            .warmup_ms
            .unwrap_or(if args.quick { 700 } else { 1000 }),
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
                let rate = match plan.offered(scenario, server, &records) {
                    Ok(rate) => rate,
                    Err(why) => {
                        eprintln!("not run: {why}");
                        records.push(Record::failed(scenario, server, r, why));
                        continue;
                    }
                };
                let record = ctx.measure(scenario, server, r, rate);
                match &record.error {
                    Some(e) if e == "interrupted" => bail!("interrupted"),
                    Some(e) => eprintln!("FAILED: {}", e.lines().next().unwrap_or("")),
                    None => eprintln!("{}", report::one_line(scenario, &record)),
                }
                records.push(record);
            }
        }
    }
    let profiles = if plan.profile {
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
            floor_us: plan.floor_us,
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

impl Plan {
    /// The load offered to `server` in `scenario`: closed loop at saturation, the fixed rate
    /// (scaled) when light, a fraction of the server's own saturation median for latency.
    fn offered(
        &self,
        scenario: &Scenario,
        server: Server,
        records: &[Record],
    ) -> std::result::Result<f64, String> {
        match scenario.level {
            Level::Saturation => Ok(0.0),
            Level::Light => Ok(scenario.rate * self.load_scale),
            Level::Latency => {
                let (of, fraction) = scenario
                    .fraction_of
                    .clone()
                    .ok_or("a latency scenario without its saturation scenario")?;
                let mut rates: Vec<f64> = records
                    .iter()
                    .filter(|r| r.scenario == of && r.server == server.name())
                    .filter(|r| r.error.is_none() && r.achieved_rate > 0.0)
                    .map(|r| r.achieved_rate)
                    .collect();
                if rates.is_empty() {
                    return Err(format!("no saturation rate of {} in `{of}`", server.name()));
                }
                rates.sort_by(f64::total_cmp);
                Ok(rates[rates.len() / 2] * fraction)
            }
        }
    }
}

impl Record {
    fn failed(scenario: &Scenario, server: Server, run: usize, why: String) -> Record {
        Record {
            error: Some(why),
            ..Record::new(scenario, server, run)
        }
    }

    fn new(scenario: &Scenario, server: Server, run: usize) -> Record {
        Record {
            scenario: scenario.name.clone(),
            server: server.name().into(),
            run,
            error: None,
            report: None,
            glue: None,
            offered: 0.0,
            units: 0.0,
            server_cpu_s: 0.0,
            cpu_source: String::new(),
            per_cpu_s: 0.0,
            core_busy_s: 0.0,
            core_source: String::new(),
            procstat_busy_s: 0.0,
            sources_disagree: false,
            achieved_rate: 0.0,
            client_busy: 0.0,
            client_saturated: false,
        }
    }
}

/// Runs beside a load (given its spec and the server's pid), e.g. the profiler.
type During<'a> = dyn Fn(&LoadSpec, u32) -> Result<()> + Sync + 'a;

struct Ctx<'a> {
    net: &'a net::Net,
    work: &'a Path,
    quixd: &'a Path,
    xtask: &'a Path,
    plan: &'a Plan,
}

impl Ctx<'_> {
    fn measure(&self, scenario: &Scenario, server: Server, run: usize, rate: f64) -> Record {
        let result = self.run_once(scenario, server, run, rate, None);
        let mut record = Record::new(scenario, server, run);
        record.offered = rate;
        match result {
            Err(e) => record.error = Some(format!("{e:#}")),
            Ok((rep, glue)) => {
                let units = match scenario.unit.as_str() {
                    "byte" => rep.bytes as f64,
                    "handshake" => rep.handshakes as f64,
                    "packet" => rep.packets as f64,
                    _ => rep.requests as f64,
                };
                let (cpu, source) = match server {
                    // The floor's thread polls; it is charged its work sections only.
                    Server::Floor => (
                        glue.as_ref().map_or(0.0, |g| g.work_s),
                        "the floor thread's CPU clock over its work sections (ns)",
                    ),
                    _ => match rep.server_tasks_cpu_s {
                        Some(t) => (
                            t + rep.server_napi_cpu_s,
                            "schedstat of the server's threads + its NAPI kthreads (ns)",
                        ),
                        None => (
                            rep.server_process_cpu_s.unwrap_or(0.0) + rep.server_napi_cpu_s,
                            "/proc/PID/stat (tick-sampled): schedstat missing",
                        ),
                    },
                };
                let (core, core_source) = rep.server_cpu.busy_measured();
                record.units = units;
                record.server_cpu_s = cpu;
                record.cpu_source = source.into();
                record.per_cpu_s = if cpu > 0.0 { units / cpu } else { 0.0 };
                record.core_busy_s = core;
                record.core_source = core_source.into();
                record.procstat_busy_s = rep.server_cpu.busy;
                // The floor polls on CPU 0 by design: its core is always busy.
                record.sources_disagree =
                    server != Server::Floor && (cpu - core).abs() > DISAGREE * cpu.max(core);
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

    fn spec(&self, scenario: &Scenario, config: &Path, rate: f64) -> LoadSpec {
        LoadSpec {
            pattern: scenario.pattern,
            protocol: scenario.protocol,
            server: (self.net.server_v4, 4433).into(),
            bind: (self.net.client_v4, 0).into(),
            cert_dir: self.work.to_path_buf(),
            config: config.to_path_buf(),
            warmup_ms: self.plan.warmup_ms,
            window_ms: self.plan.window_ms,
            rate,
            connections: scenario.connections,
            streams: scenario.streams,
            response_size: scenario.response_size,
            upload_size: scenario.upload_size,
            server_pid: None,
            server_napi_pids: Vec::new(),
            floor_to_server_us: self.plan.floor_us.0,
            floor_to_client_us: self.plan.floor_us.1,
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
        s += "[apps.perf]\nalpn = [\"perf\"]\n\n";
        s += &format!("[apps.hq]\nroot = \"{FILE_ROOT}\"\n\n[apps.h3]\nroot = \"{FILE_ROOT}\"\n");
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
            Server::Quinn | Server::QuinnXdp | Server::QuinnIoUring => {
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
        rate: f64,
        during: Option<&During<'_>>,
    ) -> Result<(LoadReport, Option<floor::Glue>)> {
        let config = self.config(server, scenario)?;
        let mut spec = self.spec(scenario, &config, rate);
        if server == Server::Floor {
            if scenario.generator != default_generator() {
                bail!("the floor runs only with quixd's load generator");
            }
            return std::thread::scope(|scope| {
                let during = during.map(|f| {
                    let spec = spec.clone();
                    scope.spawn(move || f(&spec, 0))
                });
                let (rep, glue) = floor::run(&spec)?;
                if let Some(d) = during {
                    d.join()
                        .map_err(|_| anyhow::anyhow!("profiler thread panicked"))??;
                }
                Ok((rep, Some(glue)))
            });
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
        cmd.args(["bench", &scenario.generator, &serde_json::to_string(&spec)?]);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The file scenarios: hq beside h3 for each size, served by quixd's own servers only,
    /// and each reference scenario listed before the scenario it serves (the report
    /// summarizes in order).
    #[test]
    fn file_scenarios() {
        let all = scenarios();
        for (i, sc) in all.iter().enumerate() {
            if let Some(of) = &sc.reference_scenario {
                assert!(all[..i].iter().any(|s| s.name == *of), "{}: {of}", sc.name);
            }
        }
        let files: Vec<&Scenario> = all.iter().filter(|s| s.protocol.files()).collect();
        let names: Vec<&str> = files.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["files-hq-1k", "files-h3-1k", "files-hq-1m", "files-h3-1m"]
        );
        for sc in files {
            let servers: Vec<&str> = Server::ALL
                .iter()
                .filter(|s| s.serves(sc))
                .map(|s| s.name())
                .collect();
            assert_eq!(
                servers,
                [
                    "socket",
                    "io_uring",
                    "xdp-skb",
                    "xdp-driver",
                    "xdp-driver-afxdp-tx"
                ],
                "{}",
                sc.name
            );
            assert!(!sc.has_limit(), "{}", sc.name);
        }
    }
}
