//! "Where the time goes": `perf record -e cpu-clock` on CPU 0 while the XDP (driver mode)
//! server serves each scenario, in runs of their own (the profiler's cost stays out of the
//! measured runs), split by symbol into kernel, quinn-proto, crypto, copies/allocation, our
//! driver and datapath, and the rest.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::load::LoadSpec;
use super::{net, sys, Ctx, Server};

pub const CATEGORIES: [&str; 8] = [
    "kernel",
    "quinn-proto",
    "crypto (ring, rustls)",
    "copies/alloc",
    "quixd driver+datapath",
    "other userspace",
    "other processes",
    "idle",
];

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

pub fn profile_all(ctx: &Ctx) -> Result<Vec<Profile>> {
    super::ensure_tool("perf", "linux-perf")?;
    let mut out = Vec::new();
    for scenario in &ctx.plan.scenarios {
        sys::check_stop()?;
        eprint!("bench: profiling xdp-driver / {}: ", scenario.name);
        let data = ctx.work.join(format!("logs/perf-{}.data", scenario.name));
        let record = |spec: &LoadSpec, _pid: u32| -> Result<()> {
            sys::sleep(Duration::from_millis(spec.warmup_ms))?;
            let window = format!("{:.3}", spec.window_ms as f64 / 1000.0);
            let mut cmd = Command::new("perf");
            cmd.args(["record", "-q", "-e", "cpu-clock", "-C"])
                .arg(net::SERVER_CPU.to_string())
                .arg("-o")
                .arg(&data)
                .args(["--", "sleep", &window]);
            let log = data.with_extension("log");
            let mut p = sys::Proc::spawn("perf record", cmd, &log, Some(net::CLIENT_CPU))?;
            let status = p.wait_exit(Duration::from_millis(spec.window_ms + 20_000))?;
            if !status.success() {
                anyhow::bail!("perf record failed: {}", sys::tail(&p.log_text(), 5));
            }
            Ok(())
        };
        match ctx
            .run_once(scenario, Server::XdpDriver, 0, Some(&record))
            .and_then(|_| analyse(&data, &scenario.name))
        {
            Ok(p) => {
                eprintln!("{} samples", p.samples);
                out.push(p);
            }
            Err(e) => eprintln!("failed: {e:#}"),
        }
    }
    Ok(out)
}

fn analyse(data: &Path, scenario: &str) -> Result<Profile> {
    let out = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "-q",
            "--sort",
            "comm,dso,sym",
        ])
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
        let cat = categorize(&comm, &dso, kernel, &sym);
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
        server: Server::XdpDriver.name().into(),
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
                categorize(comm, "", false, sym) != n - 1
                    && categorize(comm, "", false, sym) != n - 2
            })
            .take(12)
            .map(|(v, comm, sym)| (server_pct(v), comm, sym))
            .collect(),
    })
}

fn categorize(comm: &str, dso: &str, kernel: bool, sym: &str) -> usize {
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
    let ours = comm.starts_with("quixd")
        || comm.starts_with("napi/")
        || comm.starts_with("swapper")
        || comm.starts_with("ksoftirqd");
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
    if crypto.iter().any(|s| sym.contains(s)) {
        idx("crypto (ring, rustls)")
    } else if copy.iter().any(|s| sym.contains(s)) {
        idx("copies/alloc")
    } else if sym.contains("quinn_proto") {
        idx("quinn-proto")
    } else if sym.contains("quixd") || dso.contains("quixd") && sym.contains("xdp") {
        idx("quixd driver+datapath")
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
        "## Where the time goes (XDP driver mode)\n\n`perf record -e cpu-clock -C 0` over the \
         window of an extra run per scenario (not one of the measured runs), split by the symbol \
         each sample landed in (self time, no call graphs). The first six columns are shares of \
         the server's own samples (quixd's threads, its veth NAPI kthread, interrupts); `other \
         processes` (whatever else ran on CPU 0: noise) and `idle` are shares of all CPU 0 \
         samples. `kernel` includes the NAPI kthread (XDP, the AF_XDP copy, the TX path). \
         Rust symbols are matched by crate name; inlined code counts where it was inlined.\n"
    );
    let _ = write!(s, "| scenario | server samples |");
    for c in CATEGORIES {
        let _ = write!(s, " {c} |");
    }
    let _ = write!(s, "\n|---|---|");
    for _ in CATEGORIES {
        s += "---|";
    }
    s += "\n";
    for p in profiles {
        let _ = write!(s, "| {} | {} |", p.scenario, p.server_samples);
        for (_, v) in &p.shares {
            let _ = write!(s, " {v:.1}% |");
        }
        s += "\n";
    }
    s += "\nTop symbols per scenario:\n\n";
    for p in profiles {
        let _ = writeln!(
            s,
            "- `{}`: {}",
            p.scenario,
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
