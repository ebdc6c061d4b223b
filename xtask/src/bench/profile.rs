//! "Where the time goes": `perf record -e cpu-clock` on CPU 0 while each server serves each
//! saturation scenario, in runs of their own (the profiler's cost stays out of the measured
//! runs), split by symbol into kernel, quinn-proto, crypto, the application, copies and
//! allocation, the datapath's userspace, and the rest. The *datapath share* is what is left
//! of the server's samples outside quinn-proto, crypto and the application: the part a
//! datapath can change.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::load::LoadSpec;
use super::{net, sys, Ctx, Level, Server};

pub const CATEGORIES: [&str; 9] = [
    "kernel",
    "quinn-proto",
    "crypto (ring, rustls)",
    "app",
    "copies/alloc",
    "datapath (userspace)",
    "other userspace",
    "other processes",
    "idle",
];

/// The categories that are QUIC's and the application's own work, the same under any
/// datapath; everything else the server spends is the datapath share.
const QUIC_AND_APP: [&str; 3] = ["quinn-proto", "crypto (ring, rustls)", "app"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub scenario: String,
    pub server: String,
    pub samples: u64,
    /// Samples in the server's own work (all but idle and other processes).
    pub server_samples: u64,
    /// Per category, percent: the server's categories as shares of the server's samples;
    /// "other processes" and "idle" as shares of all of CPU 0's samples.
    pub shares: Vec<(String, f64)>,
    /// The server's heaviest symbols: (share of the server's samples %, process, symbol).
    pub top: Vec<(f64, String, String)>,
}

impl Profile {
    /// Percent of the server's samples outside quinn-proto, crypto and the application.
    pub fn datapath_share(&self) -> f64 {
        let quic: f64 = self
            .shares
            .iter()
            .filter(|(c, _)| QUIC_AND_APP.contains(&c.as_str()))
            .map(|(_, v)| v)
            .sum();
        (100.0 - quic).max(0.0)
    }

    pub fn share(&self, category: &str) -> f64 {
        self.shares
            .iter()
            .find(|(c, _)| c == category)
            .map_or(0.0, |(_, v)| *v)
    }
}

pub fn profile_all(ctx: &Ctx) -> Result<Vec<Profile>> {
    super::ensure_tool("perf", "linux-perf")?;
    let mut out = Vec::new();
    let scenarios = ctx
        .plan
        .scenarios
        .iter()
        .filter(|s| s.level == Level::Saturation && s.generator == "client");
    for scenario in scenarios {
        for &server in ctx.plan.servers.iter().filter(|s| s.serves(scenario)) {
            sys::check_stop()?;
            eprint!("bench: profiling {} / {}: ", server.name(), scenario.name);
            let data = ctx.work.join(format!(
                "logs/perf-{}-{}.data",
                scenario.name,
                server.name()
            ));
            // For a closer look by hand: call graphs, and the data kept for `perf report -g`.
            let keep = std::env::var_os("QUIXD_BENCH_PERF_CALLGRAPH").is_some();
            let record = |spec: &LoadSpec, _pid: u32| -> Result<()> {
                sys::sleep(Duration::from_millis(spec.warmup_ms))?;
                let window = format!("{:.3}", spec.window_ms as f64 / 1000.0);
                let mut cmd = Command::new("perf");
                cmd.args(["record", "-q", "-e", "cpu-clock", "-C"])
                    .arg(net::SERVER_CPU.to_string())
                    .arg("-o")
                    .arg(&data);
                if keep {
                    cmd.arg("-g");
                }
                cmd.args(["--", "sleep", &window]);
                let log = data.with_extension("log");
                let mut p = sys::Proc::spawn("perf record", cmd, &log, Some(net::CLIENT_CPU))?;
                let status = p.wait_exit(Duration::from_millis(spec.window_ms + 20_000))?;
                if !status.success() {
                    anyhow::bail!("perf record failed: {}", sys::tail(&p.log_text(), 5));
                }
                Ok(())
            };
            match ctx
                .run_once(scenario, server, 0, 0.0, Some(&record))
                .and_then(|_| analyse(&data, &scenario.name, server, keep))
            {
                Ok(p) => {
                    eprintln!(
                        "{} samples, datapath share {:.0}%",
                        p.samples,
                        p.datapath_share()
                    );
                    out.push(p);
                }
                Err(e) => eprintln!("failed: {e:#}"),
            }
            if keep {
                eprintln!("bench: kept {}", data.display());
            } else {
                let _ = std::fs::remove_file(&data);
            }
        }
    }
    Ok(out)
}

fn analyse(data: &Path, scenario: &str, server: Server, callgraph: bool) -> Result<Profile> {
    let mut cmd = Command::new("perf");
    if callgraph {
        // Self time per symbol, as without call graphs.
        cmd.args(["report", "-g", "none"]);
    } else {
        cmd.arg("report");
    }
    let out = cmd
        .args(["--stdio", "--no-children", "-q", "--sort", "comm,dso,sym"])
        .args(["-F", "sample,comm,dso,sym", "-i"])
        .arg(data)
        .output()
        .context("running perf report")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut totals = vec![0u64; CATEGORIES.len()];
    let mut rows: Vec<(u64, String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut it = line.split_whitespace();
        let Some(samples) = it.next().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let comm = it.next().unwrap_or("").to_string();
        let dso = it.next().unwrap_or("").to_string();
        let rest: Vec<&str> = it.collect();
        // "[k] symbol" or "[.] symbol"
        let (kernel, sym) = match rest.split_first() {
            Some((&"[k]", s)) => (true, s.join(" ")),
            Some((&"[.]", s)) => (false, s.join(" ")),
            _ => (dso.contains("kernel"), rest.join(" ")),
        };
        let cat = categorize(server, &comm, &dso, kernel, &sym);
        totals[cat] += samples;
        rows.push((samples, comm, sym));
    }
    let all: u64 = totals.iter().sum();
    // The server's categories are shares of the server's own samples; idle and other
    // processes are shares of all of CPU 0's.
    let server_total: u64 = totals[..CATEGORIES.len() - 2].iter().sum();
    if all == 0 {
        anyhow::bail!(
            "perf report gave no samples: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    let pct = |n: u64| 100.0 * n as f64 / all as f64;
    let server_pct = |n: u64| 100.0 * n as f64 / server_total.max(1) as f64;
    let n = CATEGORIES.len();
    Ok(Profile {
        scenario: scenario.into(),
        server: server.name().into(),
        samples: all,
        server_samples: server_total,
        shares: CATEGORIES
            .iter()
            .zip(&totals)
            .enumerate()
            .map(|(i, (c, v))| {
                let share = if i < n - 2 { server_pct(*v) } else { pct(*v) };
                (c.to_string(), share)
            })
            .collect(),
        top: rows
            .into_iter()
            .filter(|(_, comm, sym)| {
                let c = categorize(server, comm, "", false, sym);
                c != n - 1 && c != n - 2
            })
            .take(12)
            .map(|(v, comm, sym)| (server_pct(v), comm, sym))
            .collect(),
    })
}

fn categorize(server: Server, comm: &str, dso: &str, kernel: bool, sym: &str) -> usize {
    let idx = |name: &str| CATEGORIES.iter().position(|c| *c == name).unwrap();
    let idle_sym = [
        "idle",
        "safe_halt",
        "cpu_startup",
        "do_idle",
        "mwait",
        "poll_idle",
    ];
    if comm.starts_with("swapper") && idle_sym.iter().any(|s| sym.contains(s)) {
        return idx("idle");
    }
    // Everything on CPU 0 but the idle loop is the server's: the load generator, the bench
    // and perf itself run on CPU 1. The stock quinn server, the floor and the bare echo are
    // threads of the xtask binary (tokio's workers are "tokio-runtime-w").
    let ours = [
        "quixd",
        "xtask",
        "floor-server",
        "tokio-runtime",
        "napi/",
        "swapper",
        "ksoftirqd",
    ]
    .iter()
    .any(|p| comm.starts_with(p));
    if !ours {
        return idx("other processes");
    }
    if kernel {
        return idx("kernel");
    }
    let copy = [
        "memcpy", "memmove", "memset", "malloc", "free", "realloc", "calloc", "_int_", "tcache",
        "cfree",
    ];
    let crypto = [
        "ring_core",
        "ring::",
        "aes_",
        "aesni",
        "gcm_",
        "GFp_",
        "chacha",
        "x25519",
        "p256",
        "ecp_nistz",
        "sha256_block",
        "sha512_block",
        "bn_mul",
        "rustls",
    ];
    // The perf protocol's server side in each server (quixd's: every app, hq and h3 too).
    let app = match server {
        Server::Quinn | Server::QuinnXdp | Server::QuinnIoUring => {
            ["bench::quinn_server"].as_slice()
        }
        Server::Floor => ["floor::read_stream", "floor::write_stream"].as_slice(),
        Server::BareXdp => [].as_slice(),
        _ => ["quixd::app::"].as_slice(),
    };
    // The datapath's userspace: quixd's driver loop and backends, stock quinn's endpoint
    // driver, tokio and quinn-udp, the floor's channels, the bare echo.
    let datapath = [
        "quixd::",
        "quinn::",
        "quinn_udp",
        "tokio::",
        "mio::",
        "std::sync::mpmc",
        "bench::floor",
        "bench::bare",
        "xdp::",
    ];
    if crypto.iter().any(|s| sym.contains(s)) {
        idx("crypto (ring, rustls)")
    } else if app.iter().any(|s| sym.contains(s)) {
        idx("app")
    } else if copy.iter().any(|s| sym.contains(s)) {
        idx("copies/alloc")
    } else if sym.contains("quinn_proto") {
        idx("quinn-proto")
    } else if datapath.iter().any(|s| sym.contains(s)) || dso.contains("quixd") {
        idx("datapath (userspace)")
    } else {
        idx("other userspace")
    }
}

pub fn markdown(profiles: &[Profile]) -> String {
    let mut s = String::new();
    if profiles.is_empty() {
        let _ = writeln!(
            s,
            "## Where the time goes\n\nNo profile in this run (`--quick` skips it; \
             `--profile true` turns it on).\n"
        );
        return s;
    }
    let _ = writeln!(
        s,
        "## Where the time goes, at saturation\n\n`perf record -e cpu-clock -C 0` over the \
         window of an extra closed-loop run per server and scenario (not one of the measured \
         runs), split by the symbol each sample landed in (self time, no call graphs). Shares \
         are of the server's own samples (its threads, its veth NAPI kthread, interrupts; idle \
         and other processes left out). **Datapath share** = everything outside quinn-proto, \
         crypto and the application (the perf protocol's server side; in the file scenarios \
         quixd's hq and h3 apps): kernel networking, \
         wake-ups and scheduling, the datapath's userspace (quixd's driver loop and backend; \
         stock quinn's endpoint driver, tokio and quinn-udp; the floor's channels), copies and \
         allocation (which include quinn-proto's own: without call graphs they cannot be told \
         apart). It is the part a datapath can change. Rust symbols are matched by crate \
         name; inlined code counts where it was inlined.\n"
    );
    let mut scenarios: Vec<&str> = Vec::new();
    for p in profiles {
        if !scenarios.contains(&p.scenario.as_str()) {
            scenarios.push(&p.scenario);
        }
    }
    let cols = [
        "kernel",
        "datapath (userspace)",
        "copies/alloc",
        "other userspace",
        "quinn-proto",
        "crypto (ring, rustls)",
        "app",
    ];
    for sc in &scenarios {
        let _ = write!(s, "### {sc}\n\n| server | **datapath share** |");
        for c in cols {
            let _ = write!(s, " {c} |");
        }
        let _ = write!(s, " server samples | idle + other |\n|---|---|");
        for _ in cols {
            s += "---|";
        }
        s += "---|---|\n";
        for p in profiles.iter().filter(|p| p.scenario == *sc) {
            let _ = write!(s, "| {} | **{:.0}%** |", p.server, p.datapath_share());
            for c in cols {
                let _ = write!(s, " {:.1}% |", p.share(c));
            }
            let _ = writeln!(
                s,
                " {} | {:.0}% |",
                p.server_samples,
                p.share("idle") + p.share("other processes")
            );
        }
        s += "\n";
    }
    s += "Top symbols (share of the server's samples):\n\n";
    for p in profiles {
        let _ = writeln!(
            s,
            "- `{}` / `{}`: {}",
            p.scenario,
            p.server,
            p.top
                .iter()
                .take(6)
                .map(|(v, comm, sym)| format!(
                    "{v:.1}% {comm} `{}`",
                    sym.chars().take(60).collect::<String>()
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    s += "\n";
    s
}
