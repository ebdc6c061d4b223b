//! The bench's outputs: benchmarks/results.json, BENCHMARKS.md and benchmarks/cost.svg.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::profile::Profile;
use super::{Record, Scenario, Server};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub quick: bool,
    /// Multiplier applied to every scenario's offered load.
    pub load_scale: f64,
    pub runs: usize,
    pub window_ms: u64,
    pub warmup_ms: u64,
    pub elapsed_s: f64,
}

/// Median, min and max over the successful runs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// One (scenario, server) cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub server: String,
    pub runs_ok: usize,
    pub runs_failed: usize,
    /// Units per server CPU-second.
    pub per_cpu_s: Option<Spread>,
    /// Units per second of the server's own CPU time (process + its NAPI kthread).
    pub per_own_cpu_s: Option<Spread>,
    /// Server CPU-seconds per unit.
    pub cost: Option<Spread>,
    /// Median per_cpu_s over stock quinn's median.
    pub vs_quinn: Option<f64>,
    /// Median cost as a multiple of the floor's median cost.
    pub x_floor: Option<f64>,
    /// The same two ratios on the server's own CPU time (process + NAPI kthread).
    pub vs_quinn_own: Option<f64>,
    pub x_floor_own: Option<f64>,
    /// Share of CPU 0's busy time outside the server's process and NAPI kthread: interrupt
    /// work charged elsewhere, and other jobs (noise).
    pub outside_share: Option<Spread>,
    pub achieved_rate: Option<Spread>,
    pub server_core_busy: Option<Spread>,
    pub client_core_busy: Option<Spread>,
    pub client_saturated_runs: usize,
    pub p50_us: Option<Spread>,
    pub p99_us: Option<Spread>,
    pub errors: u64,
    pub skipped: u64,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub date: String,
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub memory: String,
    pub rustc: String,
    pub git: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    pub scenarios: Vec<Scenario>,
    pub servers: Vec<(String, String)>,
    pub skipped_servers: Vec<(String, String)>,
    pub summaries: Vec<Summary>,
    pub profiles: Vec<Profile>,
    pub records: Vec<Record>,
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Machine {
    fn probe() -> Machine {
        Machine {
            date: sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
            kernel: sh("uname -sr"),
            cpu: sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
            // Not available_parallelism(): the bench pins itself to one CPU.
            cpus: sh("grep -c ^processor /proc/cpuinfo").parse().unwrap_or(0),
            memory: sh("grep MemTotal /proc/meminfo | awk '{printf \"%.0f GiB\", $2/1048576}'"),
            rustc: sh("rustc --version"),
            git: sh("git rev-parse --short HEAD 2>/dev/null; git status --porcelain 2>/dev/null | grep -q . && echo '(with uncommitted changes)'")
                .replace('\n', " "),
        }
    }
}

impl Results {
    pub fn new(
        scenarios: &[Scenario],
        servers: &[Server],
        skipped: &[(Server, String)],
        records: Vec<Record>,
        profiles: Vec<Profile>,
        settings: Settings,
    ) -> Results {
        let mut summaries = Vec::new();
        for sc in scenarios {
            let mut cells: Vec<Summary> = servers
                .iter()
                .filter(|sv| sv.serves(sc))
                .map(|sv| summarize(sc, sv.name(), &records))
                .collect();
            let median_of = |cells: &[Summary], name: &str| {
                cells
                    .iter()
                    .find(|c| c.server == name)
                    .and_then(|c| c.per_cpu_s)
                    .map(|s| s.median)
            };
            let quinn = median_of(&cells, "quinn");
            let floor = median_of(&cells, &sc.reference);
            let own_of = |cells: &[Summary], name: &str| {
                cells
                    .iter()
                    .find(|c| c.server == name)
                    .and_then(|c| c.per_own_cpu_s)
                    .map(|s| s.median)
            };
            let quinn_own = own_of(&cells, "quinn");
            let floor_own = own_of(&cells, &sc.reference);
            for c in &mut cells {
                if let Some(m) = c.per_cpu_s.map(|s| s.median) {
                    c.vs_quinn = quinn.filter(|q| *q > 0.0).map(|q| m / q);
                    c.x_floor = floor.filter(|_| m > 0.0).map(|f| f / m);
                }
                if let Some(m) = c.per_own_cpu_s.map(|s| s.median) {
                    c.vs_quinn_own = quinn_own.filter(|q| *q > 0.0).map(|q| m / q);
                    c.x_floor_own = floor_own.filter(|_| m > 0.0).map(|f| f / m);
                }
            }
            summaries.extend(cells);
        }
        Results {
            machine: Machine::probe(),
            settings,
            scenarios: scenarios.to_vec(),
            servers: servers
                .iter()
                .map(|s| (s.name().to_string(), s.describe().to_string()))
                .collect(),
            skipped_servers: skipped
                .iter()
                .map(|(s, why)| (s.name().to_string(), why.clone()))
                .collect(),
            summaries,
            profiles,
            records,
        }
    }

    pub fn write(&self, out: &Path) -> Result<()> {
        let dir = out.join("benchmarks");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        super::chart::draw(self, &dir.join("cost.svg"))?;
        std::fs::write(out.join("BENCHMARKS.md"), self.markdown())?;
        Ok(())
    }

    /// Fails unless every server served every scenario (what --quick asserts; never speed).
    pub fn check_complete(&self) -> Result<()> {
        let missing: Vec<String> = self
            .summaries
            .iter()
            .filter(|s| s.runs_ok == 0)
            .map(|s| {
                format!(
                    "{} / {}: {}",
                    s.scenario,
                    s.server,
                    s.first_error.as_deref().unwrap_or("no successful run")
                )
            })
            .collect();
        if !missing.is_empty() {
            bail!(
                "not every server served every scenario:\n  {}",
                missing.join("\n  ")
            );
        }
        Ok(())
    }

    fn summary(&self, scenario: &str, server: &str) -> Option<&Summary> {
        self.summaries
            .iter()
            .find(|s| s.scenario == scenario && s.server == server)
    }

    fn markdown(&self) -> String {
        let m = &self.machine;
        let st = &self.settings;
        let mut s = String::new();
        let _ = writeln!(s, "# Benchmarks\n");
        let _ = writeln!(
            s,
            "Written by `cargo xtask bench{}` on {}. **Absolute figures from these shared, noisy \
             2-core VMs mean little; compare ratios measured in the same run.**{}\n",
            if st.quick { " --quick" } else { "" },
            m.date,
            if st.quick {
                " This is a `--quick` smoke run (1 short run per cell): its figures are not \
                 results, only a check that every server serves every scenario."
            } else {
                ""
            }
        );
        let outside: Vec<f64> = self
            .summaries
            .iter()
            .filter_map(|c| c.outside_share.map(|o| o.median))
            .collect();
        if let Some(o) = Spread::of(outside).map(|o| o.median).filter(|o| *o > 0.5) {
            let _ = writeln!(
                s,
                "**Warning: CPU 0 was shared with other jobs during this run**: a median {:.0}% \
                 of its busy time was outside the server's process and NAPI kthread, so the \
                 *per server CPU-s* figures below are dominated by other work. Compare the *per \
                 own CPU-s* columns instead, or rerun on a quiet machine.\n",
                o * 100.0
            );
        }
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| date (UTC) | {} |", m.date);
        let _ = writeln!(s, "| kernel | {} |", m.kernel);
        let _ = writeln!(s, "| CPU | {} x {} |", m.cpus, m.cpu);
        let _ = writeln!(s, "| memory | {} |", m.memory);
        let _ = writeln!(s, "| rustc | {} |", m.rustc);
        let _ = writeln!(s, "| commit | {} |", m.git);
        let _ = writeln!(
            s,
            "| runs | {} per cell, interleaved (A B C ... A B C ...); window {} ms after {} ms warm-up; whole bench {:.0} s |",
            st.runs, st.window_ms, st.warmup_ms, st.elapsed_s
        );
        if st.load_scale != 1.0 {
            let _ = writeln!(
                s,
                "| offered load | every scenario's rate below multiplied by {} (0 = unlimited) |",
                st.load_scale
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "## Method\n");
        s += METHOD;
        let _ = writeln!(s, "\nServers:\n");
        for (name, what) in &self.servers {
            let _ = writeln!(s, "- `{name}`: {what}");
        }
        for (name, why) in &self.skipped_servers {
            let _ = writeln!(s, "- `{name}`: not run: {why}");
        }
        let _ = writeln!(s, "\nScenarios (the same offered load for every server):\n");
        for sc in &self.scenarios {
            let _ = writeln!(s, "- `{}`: {}", sc.name, sc.what);
        }
        let _ = writeln!(s, "\n## Results\n");
        let _ = writeln!(
            s,
            "Per cell: median (min-max) over the runs. *per server CPU-s*: units served per \
             second of CPU 0 busy time (the floor: its server thread's CPU time). *x quinn*: that \
             median over stock quinn's (higher is better). *x floor*: the server's cost per unit \
             as a multiple of the floor's (1.0 is the limit; lower is better). *CPU 0*: the \
             server core's busy share. *CPU 1*: the load generator's core; `SAT` marks runs \
             where it was >= 95% busy (then the offered load may not have been delivered; the \
             floor's client polls, so its core is always busy). *per own CPU-s*: units per \
             second of the server's own CPU time (its process plus its veth NAPI kthread; the \
             floor: its thread): less exposed to other jobs on CPU 0, but it misses interrupt \
             work charged to whatever else was running; when it differs a lot from *per server \
             CPU-s*, something else ran on CPU 0. *x floor (own)*: the same multiple on own CPU \
             time. *outside*: the share of CPU 0's busy time outside the server's process and \
             its NAPI kthread (interrupt work, wake-ups charged to idle, and other jobs).\n"
        );
        let _ = writeln!(
            s,
            "![cost per unit as a multiple of the floor](benchmarks/cost.svg)\n"
        );
        for sc in &self.scenarios {
            let _ = writeln!(s, "### {}\n\n{}\n", sc.name, sc.what);
            let latency = sc.name == "latency";
            let x_ref = if sc.reference == "floor" {
                "x floor"
            } else {
                "x bare"
            };
            let _ = write!(
                s,
                "| server | {} per server CPU-s | cost per {} | x quinn | {x_ref} | per own CPU-s | {x_ref} (own) | outside | achieved/s | CPU 0 | CPU 1 |",
                unit_plural(&sc.unit),
                sc.unit
            );
            if latency || sc.unit != "byte" {
                s += " p50 | p99 |";
            }
            s += " runs |\n|---|---|---|---|---|---|---|---|---|---|---|";
            if latency || sc.unit != "byte" {
                s += "---|---|";
            }
            s += "---|\n";
            for (name, _) in &self.servers {
                let Some(c) = self.summary(&sc.name, name) else {
                    continue;
                };
                let _ = write!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
                    name,
                    c.per_cpu_s
                        .map(|p| fmt_spread(p, |x| fmt_units(x, &sc.unit)))
                        .unwrap_or("-".into()),
                    c.cost
                        .map(|p| fmt_cost(p.median, &sc.unit))
                        .unwrap_or("-".into()),
                    c.vs_quinn.map(|x| format!("{x:.2}")).unwrap_or("-".into()),
                    c.x_floor.map(|x| format!("{x:.2}")).unwrap_or("-".into()),
                    c.per_own_cpu_s
                        .map(|p| fmt_units(p.median, &sc.unit))
                        .unwrap_or("-".into()),
                    c.x_floor_own
                        .map(|x| format!("{x:.2}"))
                        .unwrap_or("-".into()),
                    c.outside_share
                        .map(|p| format!("{:.0}%", p.median * 100.0))
                        .unwrap_or("-".into()),
                    c.achieved_rate
                        .map(|p| fmt_units(p.median, &sc.unit))
                        .unwrap_or("-".into()),
                    c.server_core_busy
                        .map(|p| format!("{:.0}%", p.median * 100.0))
                        .unwrap_or("-".into()),
                    c.client_core_busy
                        .map(|p| format!("{:.0}%", p.max * 100.0))
                        .unwrap_or("-".into()),
                    if c.client_saturated_runs > 0 {
                        format!(" SAT x{}", c.client_saturated_runs)
                    } else {
                        String::new()
                    }
                );
                if latency || sc.unit != "byte" {
                    let _ = write!(
                        s,
                        " {} | {} |",
                        c.p50_us.map(|p| fmt_us(p.median)).unwrap_or("-".into()),
                        c.p99_us.map(|p| fmt_us(p.median)).unwrap_or("-".into())
                    );
                }
                let _ = writeln!(
                    s,
                    " {}{} |",
                    c.runs_ok,
                    if c.runs_failed > 0 {
                        format!(" ({} failed)", c.runs_failed)
                    } else {
                        String::new()
                    }
                );
            }
            let notes: Vec<String> = self
                .summaries
                .iter()
                .filter(|c| c.scenario == sc.name)
                .filter(|c| c.errors > 0 || c.skipped > 0 || c.runs_failed > 0)
                .map(|c| {
                    format!(
                        "- `{}`: {} request errors, {} requests skipped (too many waiting){}",
                        c.server,
                        c.errors,
                        c.skipped,
                        c.first_error
                            .as_deref()
                            .map(|e| format!("; first error: {}", e.lines().next().unwrap_or("")))
                            .unwrap_or_default()
                    )
                })
                .collect();
            if !notes.is_empty() {
                let _ = writeln!(s, "\n{}", notes.join("\n"));
            }
            let _ = writeln!(s);
        }
        s += &self.glue_section();
        s += &self.targets_section();
        s += &self.split_section();
        s += &super::profile::markdown(&self.profiles);
        s += NOTES;
        s
    }

    fn glue_section(&self) -> String {
        let mut s = String::new();
        let glue: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| r.server == "floor" && r.glue.is_some() && r.error.is_none())
            .collect();
        if glue.is_empty() {
            return s;
        }
        let _ = writeln!(s, "## What the floor's glue costs\n");
        let _ = writeln!(
            s,
            "The floor's server thread gets packets from a channel and hands its transmits to \
             another; the client side polls, so the server never wakes it. Measured on the \
             server thread over the window: wall time inside the channel operations (as a \
             share of the thread's CPU time) and the wake-ups it took when it had gone idle \
             waiting for a packet (each costs a futex wait/wake and a context switch, roughly \
             2-5 us on these VMs, not included in the channel share).\n"
        );
        let _ = writeln!(s, "| scenario | channel share (median) | wake-ups/s | packets in/s | packets out/s |\n|---|---|---|---|---|");
        for sc in &self.scenarios {
            let rs: Vec<&&Record> = glue.iter().filter(|r| r.scenario == sc.name).collect();
            if rs.is_empty() {
                continue;
            }
            let med = |f: &dyn Fn(&Record) -> f64| {
                Spread::of(rs.iter().map(|r| f(r)).collect())
                    .map(|s| s.median)
                    .unwrap_or(0.0)
            };
            let win = |r: &Record| r.report.as_ref().map(|x| x.window_s).unwrap_or(1.0);
            let _ = writeln!(
                s,
                "| {} | {:.1}% | {:.0} | {:.0} | {:.0} |",
                sc.name,
                med(&|r| {
                    let g = r.glue.as_ref().unwrap();
                    100.0 * g.channel_s / r.server_cpu_s.max(1e-9)
                }),
                med(&|r| r.glue.as_ref().unwrap().wakeups as f64 / win(r)),
                med(&|r| r.glue.as_ref().unwrap().packets_in as f64 / win(r)),
                med(&|r| r.glue.as_ref().unwrap().packets_out as f64 / win(r)),
            );
        }
        s += "\n";
        s
    }

    fn targets_section(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Issue 8's targets (reported, never asserted)\n");
        let _ = writeln!(
            s,
            "Judged on CPU 0's busy time (the issue's measure); the same ratio on the server's \
             own CPU time is in parentheses.\n"
        );
        let _ = writeln!(s, "| target | measured | met? |\n|---|---|---|");
        let mut row = |what: &str,
                       sc: &str,
                       server: &str,
                       check: &dyn Fn(&Summary) -> Option<(String, bool)>| {
            let (m, ok) = self
                .summary(sc, server)
                .and_then(check)
                .map(|(m, ok)| (m, if ok { "yes" } else { "**no**" }))
                .unwrap_or(("not measured".into(), "-"));
            let _ = writeln!(s, "| {what} | {m} | {ok} |");
        };
        let own = |x: Option<f64>| {
            x.map(|x| format!(" (own CPU: {x:.2}x)"))
                .unwrap_or_default()
        };
        let floor_max = |limit: f64| {
            move |c: &Summary| {
                c.x_floor.map(|x| {
                    (
                        format!("{x:.2}x the floor{}", own(c.x_floor_own)),
                        x <= limit,
                    )
                })
            }
        };
        let quinn_min = |limit: f64| {
            move |c: &Summary| {
                c.vs_quinn.map(|x| {
                    (
                        format!("{x:.2}x stock quinn{}", own(c.vs_quinn_own)),
                        x >= limit,
                    )
                })
            }
        };
        row(
            "XDP driver, small requests: <= 1.3x the floor's cost",
            "small",
            "xdp-driver",
            &floor_max(1.3),
        );
        row(
            "XDP driver, small requests: >= 2.5x stock quinn",
            "small",
            "xdp-driver",
            &quinn_min(2.5),
        );
        row(
            "XDP driver, bulk upload: <= 1.3x the floor's cost per byte",
            "upload",
            "xdp-driver",
            &floor_max(1.3),
        );
        row(
            "XDP driver, bulk upload: >= 1.6x stock quinn",
            "upload",
            "xdp-driver",
            &quinn_min(1.6),
        );
        row(
            "XDP driver, bulk download: never below stock quinn",
            "download",
            "xdp-driver",
            &quinn_min(1.0),
        );
        row(
            "XDP driver, bulk download: <= 1.5x the floor's cost per byte",
            "download",
            "xdp-driver",
            &floor_max(1.5),
        );
        row(
            "XDP driver, handshakes: <= 1.1x the floor's cost",
            "handshake",
            "xdp-driver",
            &floor_max(1.1),
        );
        row(
            "io_uring, small requests: >= 1.3x stock quinn",
            "small",
            "io_uring",
            &quinn_min(1.3),
        );
        row(
            "io_uring, bulk upload: >= 1.3x stock quinn",
            "upload",
            "io_uring",
            &quinn_min(1.3),
        );
        let bare_min = |limit: f64| {
            move |c: &Summary| {
                c.x_floor.filter(|x| *x > 0.0).map(|x| {
                    let own = c
                        .x_floor_own
                        .filter(|x| *x > 0.0)
                        .map(|o| format!(" (own CPU: {:.0}%)", 100.0 / o))
                        .unwrap_or_default();
                    (
                        format!(
                            "{:.0}% of the bare AF_XDP echo's packets per CPU-s{own}",
                            100.0 / x
                        ),
                        1.0 / x >= limit,
                    )
                })
            }
        };
        row(
            "raw datapath, XDP driver (transmit auto): >= 80% of a bare AF_XDP echo's packets per CPU-s",
            "raw",
            "xdp-driver",
            &bare_min(0.8),
        );
        row(
            "raw datapath, XDP driver (transmit af_xdp): >= 80% of a bare AF_XDP echo's packets per CPU-s",
            "raw",
            "xdp-driver-afxdp-tx",
            &bare_min(0.8),
        );
        s += "\n";
        s
    }
}

impl Results {
    /// The XDP server's cost per unit split into kernel and userspace with its profile's
    /// shares, beside the reference's whole cost: how far userspace alone is from the limit,
    /// and how much of the gap is the kernel's.
    fn split_section(&self) -> String {
        let mut s = String::new();
        let mut rows = Vec::new();
        for sc in &self.scenarios {
            let Some(p) = self.profiles.iter().find(|p| p.scenario == sc.name) else {
                continue;
            };
            let (Some(x), Some(r)) = (
                self.summary(&sc.name, &p.server).and_then(|c| c.cost),
                self.summary(&sc.name, &sc.reference).and_then(|c| c.cost),
            ) else {
                continue;
            };
            let kernel = p
                .shares
                .iter()
                .find(|(k, _)| k == "kernel")
                .map_or(0.0, |(_, v)| *v / 100.0);
            let (x, r) = (x.median, r.median);
            rows.push(format!(
                "| {} | {} | {:.0}% | {} | {} ({:.2}x) | {} |",
                sc.name,
                fmt_cost(x, &sc.unit),
                kernel * 100.0,
                fmt_cost(x * kernel, &sc.unit),
                fmt_cost(x * (1.0 - kernel), &sc.unit),
                x * (1.0 - kernel) / r.max(1e-15),
                fmt_cost(r, &sc.unit),
            ));
        }
        if rows.is_empty() {
            return s;
        }
        let _ = writeln!(s, "## Kernel and userspace, per unit (XDP driver mode)\n");
        let _ = writeln!(
            s,
            "The XDP server's median cost per unit split with the kernel share of its profile \
             (below), beside the reference's whole cost (the QUIC floor; raw: the bare AF_XDP \
             echo). The profile is of a separate run and its shares are of the server's own \
             samples, so the split is approximate. Where *userspace* is near the reference, \
             what is left above the limit is kernel work: on veth in copy mode, that is mostly \
             outside quixd's reach (see the notes at the end).\n"
        );
        let _ = writeln!(
            s,
            "| scenario | cost | kernel (profile) | kernel per unit | userspace per unit (x reference) | reference's cost |\n|---|---|---|---|---|---|"
        );
        for r in rows {
            let _ = writeln!(s, "{r}");
        }
        s += "\n";
        s
    }
}

fn summarize(sc: &Scenario, server: &str, records: &[Record]) -> Summary {
    let rs: Vec<&Record> = records
        .iter()
        .filter(|r| r.scenario == sc.name && r.server == server)
        .collect();
    let ok: Vec<&&Record> = rs.iter().filter(|r| r.error.is_none()).collect();
    let spread =
        |f: &dyn Fn(&Record) -> Option<f64>| Spread::of(ok.iter().filter_map(|r| f(r)).collect());
    let reps = || ok.iter().filter_map(|r| r.report.as_ref());
    Summary {
        scenario: sc.name.clone(),
        server: server.into(),
        runs_ok: ok.len(),
        runs_failed: rs.len() - ok.len(),
        per_cpu_s: spread(&|r| Some(r.per_cpu_s)),
        per_own_cpu_s: spread(&|r| (r.per_own_cpu_s > 0.0).then_some(r.per_own_cpu_s)),
        cost: spread(&|r| (r.units > 0.0).then(|| r.server_cpu_s / r.units)),
        vs_quinn: None,
        x_floor: None,
        vs_quinn_own: None,
        x_floor_own: None,
        outside_share: if server == "floor" {
            None
        } else {
            spread(&|r| {
                (r.server_cpu_s > 0.0).then(|| (1.0 - r.own_cpu_s / r.server_cpu_s).max(0.0))
            })
        },
        achieved_rate: spread(&|r| Some(r.achieved_rate)),
        server_core_busy: spread(&|r| {
            r.report.as_ref().map(|x| {
                if server == "floor" {
                    r.server_cpu_s / x.window_s.max(1e-9)
                } else {
                    x.server_cpu.busy_share()
                }
            })
        }),
        client_core_busy: spread(&|r| Some(r.client_busy)),
        client_saturated_runs: ok.iter().filter(|r| r.client_saturated).count(),
        p50_us: spread(&|r| r.report.as_ref().and_then(|x| x.p50_us)),
        p99_us: spread(&|r| r.report.as_ref().and_then(|x| x.p99_us)),
        errors: reps().map(|x| x.errors).sum(),
        skipped: reps().map(|x| x.skipped).sum(),
        first_error: rs
            .iter()
            .find_map(|r| r.error.clone())
            .or_else(|| reps().find_map(|x| x.first_error.clone())),
    }
}

fn unit_plural(unit: &str) -> &'static str {
    match unit {
        "byte" => "MB",
        "handshake" => "handshakes",
        "packet" => "packets",
        _ => "requests",
    }
}

fn fmt_units(x: f64, unit: &str) -> String {
    match unit {
        "byte" => format!("{:.0} MB", x / 1e6),
        _ if x >= 10_000.0 => format!("{:.1}k", x / 1e3),
        _ => format!("{x:.0}"),
    }
}

fn fmt_spread(p: Spread, f: impl Fn(f64) -> String) -> String {
    format!("{} ({}-{})", f(p.median), f(p.min), f(p.max)).replace(" MB", "")
}

fn fmt_cost(cpu_s: f64, unit: &str) -> String {
    match unit {
        "byte" => format!("{:.2} ns", cpu_s * 1e9),
        _ => format!("{:.1} us", cpu_s * 1e6),
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.0} us")
    }
}

/// One line per run for the console.
pub fn one_line(sc: &Scenario, r: &Record) -> String {
    let Some(rep) = &r.report else {
        return "no report".into();
    };
    let mut s = format!(
        "{} per server CPU-s ({} per own CPU-s), {}/s achieved, CPU0 {:.0}%, CPU1 {:.0}%{}",
        fmt_units(r.per_cpu_s, &sc.unit),
        fmt_units(r.per_own_cpu_s, &sc.unit),
        fmt_units(r.achieved_rate, &sc.unit),
        100.0 * rep.server_cpu.busy_share(),
        100.0 * r.client_busy,
        if r.client_saturated { " SATURATED" } else { "" }
    );
    if let (Some(p50), Some(p99)) = (rep.p50_us, rep.p99_us) {
        let _ = write!(s, ", p50 {} p99 {}", fmt_us(p50), fmt_us(p99));
    }
    if rep.errors > 0 || rep.skipped > 0 {
        let _ = write!(s, ", {} errors, {} skipped", rep.errors, rep.skipped);
    }
    s
}

const METHOD: &str = "\
- Two network namespaces joined by a veth pair (198.18.0.0/15 and fd00::/8 test addresses only); \
TX checksum offload off on the client's end (so UDP checksums arrive valid, as from a wire), GRO \
on at both ends.
- The server process is pinned to CPU 0, the load generator to CPU 1 (sched_setaffinity before \
exec). Receive work is steered with **threaded NAPI**: `threaded` is set on both veth ends after \
the server has started (XDP attached), and each end's `napi/<dev>-N` kthread is pinned, the \
server's to CPU 0 and the client's to CPU 1, the same for every server; `threaded` is reset after \
each run. So the server's receive processing (veth NAPI, XDP, the UDP stack or the AF_XDP copy) \
is charged to the server's core, and the client's to its own.
- Cost = CPU 0's busy time over the measured window, divided by the units completed in it \
(bytes, requests or handshakes). Busy time is wall time minus CPU 0's idle residency from \
cpuidle (`/sys/devices/system/cpu/cpu0/cpuidle/state*/time`, microseconds), not /proc/stat's \
user + nice + system + irq + softirq: on this kernel (HZ=250, no IRQ time accounting) /proc/stat's \
per-CPU counters are sampled at the tick and miss work that runs in phase with it; a trial run \
served 250 handshakes/s with CPU 0 at 0% busy by /proc/stat. /proc/stat's figures are kept in \
results.json (`server_cpu.busy`). Anything else that ran on CPU 0 during the window is charged \
too, which is why runs are interleaved and repeated, and why the server's own CPU time (its \
process plus its NAPI kthread, from /proc/PID/stat) is reported beside it. The floor is charged \
its server thread's own CPU time (CLOCK_THREAD_CPUTIME).
- The load generator is ours (`xtask bench client`, quinn 0.11 on a current-thread tokio \
runtime): quinn's perf protocol, an open-loop schedule at a fixed offered load (tokio timers, 1 ms \
granularity; latency counted from when the schedule issued a request, so waiting for a free \
stream slot is included), bounded in time; requests that find too many \
waiting (4x the stream slots; for handshakes, 32 connections in flight) are skipped and \
counted. It offers only \
TLS_AES_128_GCM_SHA256 (ring) and never resumes a session, so every handshake is a full one \
(X25519, ECDSA P-256). Every server gets the same certificate, the same rustls settings \
(quixd's own code) and quixd's default transport settings.
- The QUIC floor: a quinn-proto 0.11.19 server endpoint with a minimal perf server on its own \
thread pinned to CPU 0, joined in memory (channels) to the same load generator on CPU 1, whose \
socket polls instead of sleeping. No datapath at all: it is the limit for any datapath under \
quinn-proto, with the copy quinn-proto's API forces (an owned `BytesMut` per datagram) included.
- The raw scenario has no QUIC: quixd runs `quixd udp-echo` on each backend (every datagram goes \
back to its sender through the same backend), and the reference is a bare AF_XDP echo \
(`xtask bench bare-xdp`: quixd's XDP program in driver mode and one copy-mode AF_XDP socket \
driven directly with the `xdp` crate; it swaps the addresses in place and sends the same frame \
back, with no checksum check and no copy). Its load generator (`raw.rs`) sends 1200-byte \
datagrams from one connected socket in sendmmsg batches on an open-loop schedule and reads the \
echoes with recvmmsg; a unit is a datagram echoed back inside the window, and each carries its \
send time, so p50/p99 are round-trip times. *x bare* is the cost per datagram as a multiple of \
the bare echo's.
";

const NOTES: &str = "\
## Running it

As root: `cargo xtask bench` (the full run: 5 interleaved runs of 8 s windows per server and \
scenario plus a profile per scenario, about 40 minutes; run it on a quiet machine), or \
`cargo xtask bench --quick` (1 run of 2 s each, about 2-3 minutes after the release build: a \
smoke test that asserts only that every server served every scenario). `--scenario NAME` and \
`--server NAME` (repeatable) select cells; `--runs`, `--window-ms`, `--warmup-ms`, \
`--load-scale` and `--profile true|false` adjust the rest. It builds `quixd` and `xtask` in \
release mode and re-runs itself from the release build. Logs of every run (server and client) \
are in `target/bench/logs/`. Every process it starts is stopped and the namespaces are removed \
on exit, on error and on Ctrl-C.

## Notes

- The machine is a shared 2-core VM; other jobs may run on CPU 0 during a window and are charged \
to the server. Medians over interleaved runs damp this, min-max shows it.
- On veth, a kernel socket's send path is cheap (quinn-udp's GSO batches stay intact to the \
peer), while AF_XDP copy mode makes one skb per frame on transmit: download favours the kernel \
path; receive (upload, small requests) is where the kernel stack is expensive.
- Cross-CPU wake-ups (NAPI kthread wake-ups) trap to the hypervisor on these VMs and are a \
large share of kernel time; every server pays them the same way here.
- Stock quinn's client saturates its core before the server does; when CPU 1 shows `SAT`, the \
offered load was not fully delivered and that cell's cost is at a lower load than the others'.

## Why the missed targets are missed

What the profiles and traces of this harness have shown (they are the basis of the table above; \
the figures in this section come from the runs made while building it, 2026-11-25):

- **Upload (receive-heavy) on XDP costs about what stock quinn costs.** On veth every received \
datagram is copied twice by the kernel before quixd sees it: veth's native XDP first copies the \
peer's skb into a page-pool page (`skb_pp_cow_data`, `veth_xdp_rcv_skb`), then AF_XDP copy mode \
copies it into the UMEM (`__pi_memcpy`, `xp_alloc` in the NAPI kthread: about 14% of the \
server's samples together), one frame and one XDP run per datagram; quixd then makes the copy \
quinn-proto's API forces. The kernel socket path instead hands over GRO batches of ten or more \
datagrams per skb and per recvmsg, which is why the socket backend beats XDP here. Zero-copy \
AF_XDP on a NIC would remove both kernel copies; veth cannot do zero-copy. quixd's own per-datagram \
work is small: the UDP checksum fell from 4.9% to 2.6% of the samples with the \
vectorised checksum.
- **Small requests and latency: the excess over the floor is wake-ups, not packet handling.** \
Userspace (quinn-proto, crypto, quixd, copies) costs about the floor's whole cost per request \
(see the split above); the rest is the kernel scheduling work of each packet: the client's \
packet wakes CPU 0's NAPI kthread (a cross-CPU interrupt that traps to the hypervisor on these \
VMs), which wakes quixd; quixd's replies wake CPU 1's NAPI kthread the same way \
(`_raw_spin_unlock_irqrestore`, `finish_task_switch`, `irqentry_exit_to_user_mode` lead the \
profile). `perf trace` on the XDP server at 12k requests/s counted about 860 poll wake-ups/s \
(about 14 requests per wake-up) and one sendmsg per 3 requests, so system calls are not the \
cost. Every server here pays the same wake-ups, which is why no backend reaches 2.5x stock quinn.
- **Handshakes** are mostly public-key crypto in userspace, but each one is several round trips, \
and each flight pays the wake-ups above; the floor has none.
- **Raw datapath.** The hybrid (AF_XDP receive, kernel GSO send) can beat the bare AF_XDP echo: \
the echo sends a burst from one sender back as GSO batches, and on veth one GSO skb is cheaper \
than one AF_XDP copy-mode frame (one skb) per datagram.
";
