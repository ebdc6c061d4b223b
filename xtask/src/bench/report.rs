//! The bench's outputs: benchmarks/results.json, BENCHMARKS.md and benchmarks/cost.svg.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::profile::Profile;
use super::{Level, Record, Scenario, Server};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub quick: bool,
    /// Multiplier applied to every scenario's offered load.
    pub load_scale: f64,
    pub runs: usize,
    pub window_ms: u64,
    pub warmup_ms: u64,
    pub elapsed_s: f64,
    /// The floor link's one-way delay and tick to the server and to the client, microseconds.
    #[serde(default)]
    pub floor_us: (u64, u64),
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
    /// Units per server CPU-second (the server's threads + NAPI kthreads, schedstat).
    pub per_cpu_s: Option<Spread>,
    /// Server CPU-seconds per unit.
    pub cost: Option<Spread>,
    /// Median per_cpu_s over stock quinn's median.
    pub vs_quinn: Option<f64>,
    /// Median cost as a multiple of the reference's median cost: the floor's, the bare echo's,
    /// or (HTTP/3 files) the same server's in the reference scenario (hq-interop).
    pub x_floor: Option<f64>,
    /// Units per second of CPU 0's busy time (cross-check).
    pub per_core_s: Option<Spread>,
    /// Share of CPU 0's busy time outside the server's threads and NAPI kthreads: interrupt
    /// work that landed on the idle task, and other jobs (noise).
    pub outside_share: Option<Spread>,
    /// Runs whose own CPU time and CPU 0 busy time differ by more than 10%.
    pub disagree_runs: usize,
    pub offered: Option<Spread>,
    pub achieved_rate: Option<Spread>,
    pub server_core_busy: Option<Spread>,
    pub client_core_busy: Option<Spread>,
    pub client_saturated_runs: usize,
    pub p50_us: Option<Spread>,
    pub p99_us: Option<Spread>,
    /// Per unit (per MB for bytes): datagrams and ACK frames the server received and sent,
    /// as the client counted them.
    pub link: Option<LinkPerUnit>,
    pub errors: u64,
    pub skipped: u64,
    pub first_error: Option<String>,
}

/// Medians of the link counts per unit (per MB when the unit is a byte).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LinkPerUnit {
    pub datagrams_in: f64,
    pub datagrams_out: f64,
    pub acks_in: f64,
    pub acks_out: f64,
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

/// The trimmed output of shell command `cmd` (empty if it cannot run): machine facts for the
/// report's header.
pub(crate) fn sh(cmd: &str) -> String {
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
            let median_of = |cells: &[Summary], scenario: &str, server: &str| {
                cells
                    .iter()
                    .find(|c| c.scenario == scenario && c.server == server)
                    .and_then(|c| c.per_cpu_s)
                    .map(|s| s.median)
            };
            let quinn = median_of(&cells, &sc.name, "quinn");
            let floor = median_of(&cells, &sc.name, &sc.reference);
            for c in &mut cells {
                // The reference server's figure, or this server's own in the reference
                // scenario (summarized before this one).
                let reference = match &sc.reference_scenario {
                    Some(of) => median_of(&summaries, of, &c.server),
                    None => floor,
                };
                if let Some(m) = c.per_cpu_s.map(|s| s.median) {
                    c.vs_quinn = quinn.filter(|q| *q > 0.0).map(|q| m / q);
                    c.x_floor = reference.filter(|_| m > 0.0).map(|f| f / m);
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
        let _ = writeln!(
            s,
            "| CPU accounting on this run | {} |",
            self.sources_line()
        );
        let _ = writeln!(s);
        s += &self.headline();
        let _ = writeln!(s, "## Method\n");
        s += &self.method();
        let _ = writeln!(s, "\nServers:\n");
        for (name, what) in &self.servers {
            let _ = writeln!(s, "- `{name}`: {what}");
        }
        for (name, why) in &self.skipped_servers {
            let _ = writeln!(s, "- `{name}`: not run: {why}");
        }
        let _ = writeln!(s, "\nScenarios:\n");
        for sc in &self.scenarios {
            let _ = writeln!(s, "- `{}`: {}", sc.name, sc.what);
        }
        let _ = writeln!(s, "\n## How to read the tables\n");
        let _ = writeln!(
            s,
            "Per cell: median (min-max) over the runs. *per server CPU-s*: units served per \
             second of the server's own CPU time: the run time of its threads and of its veth \
             NAPI kthread, from schedstat in nanoseconds (the floor: its server thread's CPU \
             clock over its work sections). *x quinn*: that median over stock quinn's (higher is better). *x floor*: \
             the server's cost per unit as a multiple of the floor's (1.0 is the limit; lower is \
             better; raw: *x bare*, of the bare AF_XDP echo; HTTP/3 files: *x hq*, of the same \
             server's cost for the same file over hq-interop). *datapath share*: from the \
             profile at saturation (see \"Where the time goes\"). *CPU 0*: the server core's busy \
             share. *CPU 1*: the load generator's core (max over runs); `SAT` marks runs where \
             it was >= 95% busy: at saturation that is expected (the load generator is the \
             limit; compare cost per server CPU-second, not throughput).\n"
        );
        let _ = writeln!(
            s,
            "![cost per unit as a multiple of the floor, at saturation](benchmarks/cost.svg)\n"
        );
        let _ = writeln!(s, "## At saturation (closed loop)\n");
        for sc in self.of_level(Level::Saturation) {
            s += &self.table(sc);
        }
        s += &self.against_section();
        s += &self.latency_section();
        let _ = writeln!(
            s,
            "## Cost when lightly loaded\n\nThe same servers at a fixed, moderate offered load \
             (every server mostly idle): here wake-ups, not packet handling, dominate the cost.\n"
        );
        for sc in self.of_level(Level::Light) {
            s += &self.table(sc);
        }
        s += &self.link_section();
        s += &self.accounting_section();
        s += &self.glue_section();
        s += &self.targets_section();
        s += &self.split_section();
        s += &super::profile::markdown(&self.profiles);
        s += NOTES;
        s
    }

    fn of_level(&self, level: Level) -> impl Iterator<Item = &Scenario> {
        self.scenarios.iter().filter(move |s| s.level == level)
    }

    /// Which CPU sources the records used, with the count of runs flagged.
    fn sources_line(&self) -> String {
        let mut own: Vec<&str> = Vec::new();
        let mut core: Vec<&str> = Vec::new();
        for r in self.records.iter().filter(|r| r.error.is_none()) {
            if !own.contains(&r.cpu_source.as_str()) {
                own.push(&r.cpu_source);
            }
            if !core.contains(&r.core_source.as_str()) {
                core.push(&r.core_source);
            }
        }
        let ok = self.records.iter().filter(|r| r.error.is_none()).count();
        let flagged = self
            .records
            .iter()
            .filter(|r| r.error.is_none() && r.sources_disagree)
            .count();
        format!(
            "charged: {}; CPU 0 busy (cross-check): {}; /proc/stat printed as a second \
             cross-check only; {flagged} of {ok} runs flagged (own time and CPU 0 busy differ \
             by more than {:.0}%)",
            own.join(", "),
            core.join(", "),
            super::DISAGREE * 100.0
        )
    }

    /// The figures users care about first: saturation, XDP driver vs stock quinn and floor.
    fn headline(&self) -> String {
        let mut rows = Vec::new();
        for sc in self.of_level(Level::Saturation) {
            if sc.generator != "client" || !sc.has_limit() {
                continue;
            }
            let mut row = format!("| {} |", sc.name);
            for server in ["quinn", "io_uring", "xdp-driver", &sc.reference] {
                let c = self.summary(&sc.name, server);
                let v = c
                    .and_then(|c| c.per_cpu_s)
                    .map(|p| fmt_units(p.median, &sc.unit))
                    .unwrap_or("-".into());
                let _ = write!(row, " {v} |");
            }
            let x = self.summary(&sc.name, "xdp-driver");
            let _ = write!(
                row,
                " {} | {} | {} |",
                x.and_then(|c| c.vs_quinn)
                    .map(|v| format!("{v:.2}x"))
                    .unwrap_or("-".into()),
                x.and_then(|c| c.x_floor)
                    .map(|v| format!("{v:.2}x"))
                    .unwrap_or("-".into()),
                self.profile(&sc.name, "xdp-driver")
                    .map(|p| format!("{:.0}%", p.datapath_share()))
                    .unwrap_or("-".into()),
            );
            rows.push(row);
        }
        if rows.is_empty() {
            return String::new();
        }
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## Summary: at saturation, units per server CPU-second\n\nClosed loop (as fast as \
             the load generator goes), medians; the reference is the QUIC floor (raw: the bare \
             AF_XDP echo). Per byte for download and upload (MB), per request, handshake or \
             datagram otherwise.\n"
        );
        let _ = writeln!(
            s,
            "| scenario | stock quinn | io_uring | xdp-driver | reference | xdp-driver x quinn | xdp-driver x reference cost | xdp-driver datapath share |\n|---|---|---|---|---|---|---|---|"
        );
        for r in rows {
            let _ = writeln!(s, "{r}");
        }
        s += "\n";
        if self.scenarios.iter().any(|sc| sc.protocol.files()) {
            s += "File requests have no floor and no stock quinn: see \"HTTP/3 vs \
                  hq-interop\" below.\n\n";
        }
        s
    }

    fn profile(&self, scenario: &str, server: &str) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.scenario == scenario && p.server == server)
    }

    /// The Method text, from what this run did.
    fn method(&self) -> String {
        let st = &self.settings;
        let mut s = String::new();
        s += METHOD_NET;
        let sat: Vec<&str> = self
            .of_level(Level::Saturation)
            .map(|s| s.name.as_str())
            .collect();
        let light: Vec<String> = self
            .of_level(Level::Light)
            .map(|sc| {
                if st.load_scale == 0.0 {
                    format!("{} (closed loop: --load-scale 0)", sc.name)
                } else {
                    format!(
                        "{} at {}",
                        sc.name,
                        super::fmt_rate(sc.rate * st.load_scale, &sc.unit)
                    )
                }
            })
            .collect();
        let lat: Vec<&str> = self
            .of_level(Level::Latency)
            .map(|s| s.name.as_str())
            .collect();
        let _ = writeln!(
            s,
            "- Loads in this run: **closed loop** (saturation: every stream slot issues its next \
             request as soon as the last completes; bulk transfers as fast as flow control \
             allows) in {}; a fixed offered load in {}; latency (open loop at a fraction of \
             each server's own median saturation rate in `small`) in {}.",
            list_or_none(&sat),
            if light.is_empty() {
                "none".into()
            } else {
                light.join(", ")
            },
            list_or_none(&lat)
        );
        let _ = writeln!(
            s,
            "- Cost = the server's own CPU time over the measured window divided by the units \
             completed in it. Charged to the server on this run: {}. The kernel charges \
             interrupt and softirq work to whatever task is current (no IRQ time accounting \
             here), and with threaded NAPI the server's receive processing runs in its own \
             NAPI kthread, so this covers the server's network work. Cross-checks, never \
             charged: CPU 0's busy time ({}), and /proc/stat's tick-sampled busy time (which \
             misses work in phase with the tick on this HZ=250 kernel); a run is flagged when \
             the server's own time and CPU 0's busy time differ by more than {:.0}% (other \
             jobs on CPU 0, or interrupt work landing on the idle task).",
            self.cpu_sources().0.join(", "),
            self.cpu_sources().1.join(", "),
            super::DISAGREE * 100.0
        );
        let gens: Vec<String> = {
            let mut g: Vec<String> = Vec::new();
            for r in self.records.iter().filter_map(|r| r.report.as_ref()) {
                if !r.generator.is_empty() && !g.contains(&r.generator) {
                    g.push(r.generator.clone());
                }
            }
            g
        };
        let _ = writeln!(
            s,
            "- Load generators that ran: {}. Ours (`xtask bench client`) is quinn 0.11 on a \
             current-thread tokio runtime speaking quinn's perf protocol (in the file \
             scenarios hq-interop or HTTP/3, below); open-loop schedules \
             use tokio timers (1 ms granularity; latency counts from when the schedule issued a \
             request, so waiting for a free stream slot is included); requests that find too \
             many waiting (4x the stream slots; for handshakes, 32 connections in flight) are \
             skipped and counted. It offers only TLS_AES_128_GCM_SHA256 (ring) and never \
             resumes a session, so every handshake is a full one (X25519, ECDSA P-256). Every \
             server gets the same certificate, the same rustls settings (quixd's own code) and \
             quixd's default transport settings. The `-qperf` scenarios repeat download, upload \
             and small requests with a second, independent generator: quinn's own perf client \
             logic (quinn 0.11.11's `perf/src/client.rs`: one connection per client with its \
             own socket, quinn's default transport settings and perf's three cipher suites, a \
             semaphore of in-flight requests, chunked uploads, `read_chunks` drains), \
             **reproduced** on the quinn crate in `xtask/src/bench/quinn_perf.rs`, not built \
             from quinn's source: the harness has no quinn source snapshot to build from. It is \
             closed loop only, and the floor (whose client lives in its process) does not run \
             it.",
            if gens.is_empty() {
                "none".into()
            } else {
                gens.join("; ")
            }
        );
        let _ = writeln!(
            s,
            "- The QUIC floor: a quinn-proto 0.11 server endpoint with a minimal perf server on \
             its own thread pinned to CPU 0, joined in memory (channels) to the same load \
             generator on CPU 1. Both ends poll, and the floor is charged only the CPU time of \
             its work sections, so it pays no wake-ups: no datapath at all, with the copy \
             quinn-proto's API forces (an owned `BytesMut` per datagram). Its \
             link is a path, not a function call: every packet is delivered a one-way delay after \
             it was sent, rounded up to the next tick of the same period ({} us to the server, \
             {} us to the client; `--floor-to-server-us`, `--floor-to-client-us`), so packets \
             arrive in batches and the round trip is of the veth path's order. The delays were \
             chosen so that the floor's ACKs per MB come close to the XDP server's on veth in \
             both directions; the table \"Packets and ACKs per unit\" shows how close on this \
             run.",
            st.floor_us.0, st.floor_us.1
        );
        s += METHOD_RAW;
        if self.scenarios.iter().any(|sc| sc.protocol.files()) {
            s += METHOD_FILES;
        }
        s
    }

    /// The distinct (own, core) CPU sources of the successful runs.
    fn cpu_sources(&self) -> (Vec<String>, Vec<String>) {
        let (mut own, mut core) = (Vec::<String>::new(), Vec::<String>::new());
        for r in self.records.iter().filter(|r| r.error.is_none()) {
            let who = if r.server == "floor" {
                "floor"
            } else {
                "servers"
            };
            let o = format!("{} ({who})", r.cpu_source);
            if !own.contains(&o) {
                own.push(o);
            }
            if !core.contains(&r.core_source) {
                core.push(r.core_source.clone());
            }
        }
        (own, core)
    }

    /// The name of a scenario's reference column: "x floor", "x bare", "x hq" (its reference
    /// scenario's protocol); none where it has no reference.
    fn reference_column(&self, sc: &Scenario) -> Option<String> {
        match (&sc.reference_scenario, sc.reference.as_str()) {
            (Some(of), _) => Some(format!(
                "x {}",
                self.scenarios
                    .iter()
                    .find(|s| s.name == *of)
                    .map_or(of.as_str(), |s| s.protocol.name())
            )),
            (None, "") => None,
            (None, "floor") => Some("x floor".into()),
            (None, _) => Some("x bare".into()),
        }
    }

    /// One scenario's table; *x quinn* only where stock quinn ran, the reference column only
    /// where there is a reference.
    fn table(&self, sc: &Scenario) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### {}\n\n{}\n", sc.name, sc.what);
        let quinn = self.summary(&sc.name, "quinn").is_some();
        let x_ref = self.reference_column(sc);
        let lat = sc.unit != "byte";
        let sat = sc.level == Level::Saturation;
        let mut head = vec![
            "server".to_string(),
            format!("{} per server CPU-s", unit_plural(&sc.unit)),
            format!("cost per {}", sc.unit),
        ];
        head.extend(quinn.then(|| "x quinn".to_string()));
        head.extend(x_ref.clone());
        head.extend(sat.then(|| "datapath share".to_string()));
        head.extend(["achieved/s", "CPU 0", "CPU 1"].map(String::from));
        if lat {
            head.extend(["p50", "p99"].map(String::from));
        }
        head.push("runs".into());
        let _ = writeln!(
            s,
            "| {} |\n|{}",
            head.join(" | "),
            "---|".repeat(head.len())
        );
        for (name, _) in &self.servers {
            let Some(c) = self.summary(&sc.name, name) else {
                continue;
            };
            let ratio = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or("-".into());
            let mut row = vec![
                name.clone(),
                c.per_cpu_s
                    .map(|p| fmt_spread(p, |x| fmt_units(x, &sc.unit)))
                    .unwrap_or("-".into()),
                c.cost
                    .map(|p| fmt_cost(p.median, &sc.unit))
                    .unwrap_or("-".into()),
            ];
            row.extend(quinn.then(|| ratio(c.vs_quinn)));
            row.extend(x_ref.as_ref().map(|_| ratio(c.x_floor)));
            row.extend(sat.then(|| {
                self.profile(&sc.name, name)
                    .map(|p| format!("{:.0}%", p.datapath_share()))
                    .unwrap_or("-".into())
            }));
            row.push(
                c.achieved_rate
                    .map(|p| fmt_units(p.median, &sc.unit))
                    .unwrap_or("-".into()),
            );
            row.push(
                c.server_core_busy
                    .map(|p| format!("{:.0}%", p.median * 100.0))
                    .unwrap_or("-".into()),
            );
            row.push(format!(
                "{}{}",
                c.client_core_busy
                    .map(|p| format!("{:.0}%", p.max * 100.0))
                    .unwrap_or("-".into()),
                if c.client_saturated_runs > 0 {
                    format!(" SAT x{}", c.client_saturated_runs)
                } else {
                    String::new()
                }
            ));
            if lat {
                row.push(c.p50_us.map(|p| fmt_us(p.median)).unwrap_or("-".into()));
                row.push(c.p99_us.map(|p| fmt_us(p.median)).unwrap_or("-".into()));
            }
            row.push(format!(
                "{}{}",
                c.runs_ok,
                if c.runs_failed > 0 {
                    format!(" ({} failed)", c.runs_failed)
                } else {
                    String::new()
                }
            ));
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
        s += &self.notes(sc);
        s += "\n";
        s
    }

    /// Errors and skips of one scenario, one line per server that had any.
    fn notes(&self, sc: &Scenario) -> String {
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
        if notes.is_empty() {
            String::new()
        } else {
            format!("\n{}\n", notes.join("\n"))
        }
    }

    /// Each server's figure in the scenarios compared with another scenario (HTTP/3 files)
    /// beside its figure in that one (hq-interop), and the ratio.
    fn against_section(&self) -> String {
        let pairs: Vec<(&Scenario, &Scenario)> = self
            .scenarios
            .iter()
            .filter_map(|sc| {
                let of = sc.reference_scenario.as_ref()?;
                Some((self.scenarios.iter().find(|s| s.name == *of)?, sc))
            })
            .collect();
        if pairs.is_empty() {
            return String::new();
        }
        let mut s = String::new();
        let _ = writeln!(
            s,
            "### HTTP/3 vs hq-interop\n\nThe same files from the same document root, loaded \
             the same way (connections and streams in flight as in each scenario above), over \
             HTTP/0.9 (`hq-interop`) and over HTTP/3 (`h3`), on quixd's own servers (stock \
             quinn and the floor serve no files, so there is no limit to compare with: the \
             reference of each h3 scenario is the same server's hq figure). Requests per server \
             CPU-second, medians; *h3 / hq*: the h3 figure over the hq one (1.00: an HTTP/3 \
             request costs the server as much as an HTTP/0.9 one; below 1.00, HTTP/3's framing, \
             QPACK headers and control stream cost extra).\n"
        );
        let mut head = vec!["server".to_string()];
        for (hq, h3) in &pairs {
            head.push(format!("`{}`", hq.name));
            head.push(format!("`{}`", h3.name));
            head.push(format!("{} / {}", h3.protocol.name(), hq.protocol.name()));
        }
        let _ = writeln!(
            s,
            "| {} |\n|{}",
            head.join(" | "),
            "---|".repeat(head.len())
        );
        let median = |sc: &Scenario, server: &str| {
            self.summary(&sc.name, server)
                .and_then(|c| c.per_cpu_s)
                .map(|p| p.median)
        };
        for (name, _) in &self.servers {
            if pairs.iter().all(|(hq, h3)| {
                self.summary(&hq.name, name).is_none() && self.summary(&h3.name, name).is_none()
            }) {
                continue;
            }
            let mut row = vec![name.clone()];
            for (hq, h3) in &pairs {
                let (a, b) = (median(hq, name), median(h3, name));
                let units = |x: Option<f64>| x.map_or("-".into(), |x| fmt_units(x, &h3.unit));
                row.push(units(a));
                row.push(units(b));
                row.push(match (a, b) {
                    (Some(a), Some(b)) if a > 0.0 => format!("{:.2}", b / a),
                    _ => "-".into(),
                });
            }
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
        s += "\n";
        s
    }

    /// Latency at 50% and 90% of each server's own saturation rate.
    fn latency_section(&self) -> String {
        let points: Vec<&Scenario> = self.of_level(Level::Latency).collect();
        if points.is_empty() {
            return String::new();
        }
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## Latency at a share of each server's own saturation rate\n\nSmall requests \
             shaped as in `small` (4 connections x 16 streams, 1 KiB responses), open loop at a \
             fraction of the server's own median closed-loop rate in `small`. Latency counts \
             from when the schedule issued the request. Medians over the runs.\n"
        );
        let _ = write!(s, "| server |");
        for p in &points {
            let pct = p.fraction_of.as_ref().map_or(0.0, |f| f.1 * 100.0);
            let _ = write!(
                s,
                " offered ({pct:.0}%) | p50 | p99 | requests per server CPU-s |"
            );
        }
        s += "\n|---|";
        for _ in &points {
            s += "---|---|---|---|";
        }
        s += "\n";
        for (name, _) in &self.servers {
            if points.iter().all(|p| self.summary(&p.name, name).is_none()) {
                continue;
            }
            let _ = write!(s, "| {name} |");
            for p in &points {
                let c = self.summary(&p.name, name);
                let _ = write!(
                    s,
                    " {} | {} | {} | {} |",
                    c.and_then(|c| c.offered)
                        .map(|o| format!("{}/s", fmt_units(o.median, &p.unit)))
                        .unwrap_or("-".into()),
                    c.and_then(|c| c.p50_us)
                        .map(|x| fmt_us(x.median))
                        .unwrap_or("-".into()),
                    c.and_then(|c| c.p99_us)
                        .map(|x| fmt_us(x.median))
                        .unwrap_or("-".into()),
                    c.and_then(|c| c.per_cpu_s)
                        .map(|x| fmt_units(x.median, &p.unit))
                        .unwrap_or("-".into()),
                );
            }
            s += "\n";
        }
        for p in &points {
            s += &self.notes(p);
        }
        s += "\n";
        s
    }

    /// Datagrams and ACK frames per unit, so the reader can see the comparison is like for
    /// like (the floor's in-memory link included).
    fn link_section(&self) -> String {
        let mut s = String::new();
        let mut rows = Vec::new();
        for sc in &self.scenarios {
            for (name, _) in &self.servers {
                let Some(l) = self.summary(&sc.name, name).and_then(|c| c.link) else {
                    continue;
                };
                rows.push(format!(
                    "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    sc.name,
                    name,
                    if sc.unit == "byte" {
                        "MB"
                    } else {
                        sc.unit.as_str()
                    },
                    l.datagrams_in,
                    l.datagrams_out,
                    l.acks_in,
                    l.acks_out
                ));
            }
        }
        if rows.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "## Packets and ACKs per unit (like for like)\n\nCounted by the client's quinn \
             connections over the window (the same client for every server, the floor \
             included): UDP datagrams and ACK frames the server received (*in*) and sent \
             (*out*), per MB moved (bulk) or per request. A server whose peer sends far more \
             ACKs per MB does more work per byte for reasons that are the path's, not the \
             datapath's; the floor's link delay is there to keep its figures close to the \
             veth servers'.\n"
        );
        let _ = writeln!(
            s,
            "| scenario | server | per | datagrams in | datagrams out | ACKs in | ACKs out |\n|---|---|---|---|---|---|---|"
        );
        for r in rows {
            let _ = writeln!(s, "{r}");
        }
        s += "\n";
        s
    }

    /// Every source of CPU time side by side, per cell.
    fn accounting_section(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## Accounting cross-check\n\nPer cell, medians: units per second of the server's \
             own CPU time (charged), per second of CPU 0's busy time, and the share of CPU 0's \
             busy time outside the server's threads and NAPI kthreads; *flagged*: runs where \
             the two differ by more than {:.0}%. Sources on this run: {}. /proc/stat's \
             tick-sampled figures are in results.json (`procstat_busy_s`).\n",
            super::DISAGREE * 100.0,
            self.sources_line()
        );
        let _ = writeln!(
            s,
            "| scenario | server | per server CPU-s (charged) | per CPU 0 busy second | outside | flagged |\n|---|---|---|---|---|---|"
        );
        for sc in &self.scenarios {
            for (name, _) in &self.servers {
                let Some(c) = self.summary(&sc.name, name) else {
                    continue;
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    sc.name,
                    name,
                    c.per_cpu_s
                        .map(|p| fmt_units(p.median, &sc.unit))
                        .unwrap_or("-".into()),
                    c.per_core_s
                        .map(|p| fmt_units(p.median, &sc.unit))
                        .unwrap_or("-".into()),
                    c.outside_share
                        .map(|p| format!("{:.0}%", p.median * 100.0))
                        .unwrap_or("-".into()),
                    if c.disagree_runs > 0 {
                        format!("**{} of {}**", c.disagree_runs, c.runs_ok)
                    } else {
                        "0".into()
                    }
                );
            }
        }
        s += "\n";
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
        let _ = writeln!(s, "## What the floor's thread did\n");
        let _ = writeln!(
            s,
            "The floor's server thread polls its link and is charged only its work sections \
             (quinn-proto, the perf server, the forced copy). Over the window: the work's share \
             of the thread's whole CPU time (the rest is polling), the share of the work spent \
             in channel operations (glue), and the packets (datagrams or GSO batches) it took \
             and gave per second.\n"
        );
        let _ = writeln!(s, "| scenario | work share of the thread | channel share of the work | packets in/s | packets out/s |\n|---|---|---|---|---|");
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
            let thread = |r: &Record| {
                r.report
                    .as_ref()
                    .and_then(|x| x.server_thread_cpu_s)
                    .unwrap_or(0.0)
            };
            let _ = writeln!(
                s,
                "| {} | {:.0}% | {:.1}% | {:.0} | {:.0} |",
                sc.name,
                med(&|r| 100.0 * r.server_cpu_s / thread(r).max(1e-9)),
                med(&|r| {
                    let g = r.glue.as_ref().unwrap();
                    100.0 * g.channel_s / r.server_cpu_s.max(1e-9)
                }),
                med(&|r| r.glue.as_ref().unwrap().packets_in as f64 / win(r)),
                med(&|r| r.glue.as_ref().unwrap().packets_out as f64 / win(r)),
            );
        }
        s += "\n";
        s
    }

    fn targets_section(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## Issue 12's targets, at saturation (reported, never asserted)\n"
        );
        let _ = writeln!(s, "| target | measured | met? |\n|---|---|---|");
        let mut row = |what: String, measured: Option<(String, bool)>| {
            let (m, ok) = measured
                .map(|(m, ok)| (m, if ok { "yes" } else { "**no**" }))
                .unwrap_or(("not measured".into(), "-"));
            let _ = writeln!(s, "| {what} | {m} | {ok} |");
        };
        for sc in self.of_level(Level::Saturation) {
            // raw has no QUIC: all of it is datapath by definition.
            if sc.generator != "client" || !sc.has_limit() || sc.name.starts_with("raw") {
                continue;
            }
            row(
                format!("XDP driver, `{}`: datapath share <= 25%", sc.name),
                self.profile(&sc.name, "xdp-driver").map(|p| {
                    let v = p.datapath_share();
                    (format!("{v:.0}%"), v <= 25.0)
                }),
            );
        }
        let quinn_min = |sc: &str, limit: f64| {
            self.summary(sc, "xdp-driver")
                .and_then(|c| c.vs_quinn)
                .map(|x| (format!("{x:.3}x stock quinn"), x >= limit))
        };
        row(
            "XDP driver, `upload`: >= 1.3x stock quinn".into(),
            quinn_min("upload", 1.3),
        );
        row(
            "XDP driver, `small`: >= 1.5x stock quinn".into(),
            quinn_min("small", 1.5),
        );
        row(
            "XDP driver, `handshake`: <= 1.1x the floor's cost".into(),
            self.summary("handshake", "xdp-driver")
                .and_then(|c| c.x_floor)
                .map(|x| (format!("{x:.3}x the floor"), x <= 1.1)),
        );
        s += "\n";
        s += TARGETS_WHY;
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
            let Some(p) = self.profile(&sc.name, "xdp-driver") else {
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
        let _ = writeln!(
            s,
            "## Kernel and userspace, per unit (XDP driver mode, at saturation)\n"
        );
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
    // Per MB for bytes, per unit otherwise.
    let per = if sc.unit == "byte" { 1e-6 } else { 1.0 };
    let link = |f: &dyn Fn(&super::load::LinkStats) -> u64| {
        spread(&|r| {
            let l = r.report.as_ref()?.link?;
            (r.units > 0.0).then(|| f(&l) as f64 / (r.units * per))
        })
        .map(|s| s.median)
    };
    let link = match (
        link(&|l| l.datagrams_to_server),
        link(&|l| l.datagrams_from_server),
        link(&|l| l.acks_to_server),
        link(&|l| l.acks_from_server),
    ) {
        (Some(datagrams_in), Some(datagrams_out), Some(acks_in), Some(acks_out)) => {
            Some(LinkPerUnit {
                datagrams_in,
                datagrams_out,
                acks_in,
                acks_out,
            })
        }
        _ => None,
    };
    Summary {
        scenario: sc.name.clone(),
        server: server.into(),
        runs_ok: ok.len(),
        runs_failed: rs.len() - ok.len(),
        per_cpu_s: spread(&|r| Some(r.per_cpu_s)),
        cost: spread(&|r| (r.units > 0.0).then(|| r.server_cpu_s / r.units)),
        vs_quinn: None,
        x_floor: None,
        per_core_s: spread(&|r| (r.core_busy_s > 0.0).then(|| r.units / r.core_busy_s)),
        outside_share: spread(&|r| {
            (r.core_busy_s > 0.0).then(|| (1.0 - r.server_cpu_s / r.core_busy_s).max(0.0))
        }),
        disagree_runs: ok.iter().filter(|r| r.sources_disagree).count(),
        offered: spread(&|r| (r.offered > 0.0).then_some(r.offered)),
        achieved_rate: spread(&|r| Some(r.achieved_rate)),
        server_core_busy: spread(&|r| r.report.as_ref().map(|x| x.server_cpu.busy_share())),
        client_core_busy: spread(&|r| Some(r.client_busy)),
        client_saturated_runs: ok.iter().filter(|r| r.client_saturated).count(),
        p50_us: spread(&|r| r.report.as_ref().and_then(|x| x.p50_us)),
        p99_us: spread(&|r| r.report.as_ref().and_then(|x| x.p99_us)),
        link,
        errors: reps().map(|x| x.errors).sum(),
        skipped: reps().map(|x| x.skipped).sum(),
        first_error: rs
            .iter()
            .find_map(|r| r.error.clone())
            .or_else(|| reps().find_map(|x| x.first_error.clone())),
    }
}

fn list_or_none(v: &[&str]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.iter()
            .map(|x| format!("`{x}`"))
            .collect::<Vec<_>>()
            .join(", ")
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
        "{} per server CPU-s ({} per CPU 0 busy s{}), {}/s achieved, CPU0 {:.0}%, CPU1 {:.0}%{}",
        fmt_units(r.per_cpu_s, &sc.unit),
        fmt_units(
            if r.core_busy_s > 0.0 {
                r.units / r.core_busy_s
            } else {
                0.0
            },
            &sc.unit
        ),
        if r.sources_disagree { ", DISAGREE" } else { "" },
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

const METHOD_NET: &str = "\
- Two network namespaces joined by a veth pair (198.18.0.0/15 and fd00::/8 test addresses only); \
TX checksum offload off on the client's end (so UDP checksums arrive valid, as from a wire), GRO \
on at both ends.
- The server process is pinned to CPU 0, the load generator to CPU 1 (sched_setaffinity before \
exec). Receive work is steered with **threaded NAPI**: `threaded` is set on both veth ends after \
the server has started (XDP attached), and each end's `napi/<dev>-N` kthread is pinned, the \
server's to CPU 0 and the client's to CPU 1, the same for every server; `threaded` is reset after \
each run. So the server's receive processing (veth NAPI, XDP, the UDP stack or the AF_XDP copy) \
runs in the server side's NAPI kthread on the server's core, and the client's on its own.
";

const METHOD_FILES: &str = "\
- The file scenarios (`files-*`) run on quixd's own servers only: stock quinn, its variants and \
the floor serve perf, not files. The bench writes a document root (`target/bench/www`: a 1 KiB \
and a 1 MiB file) and quixd serves it with `[apps.hq]` and `[apps.h3]` (beside perf), through \
its file reader threads (`apps.file_readers`, 4: threads of the server process, pinned to CPU 0 \
with it and charged to it). Our load generator requests the file in every stream slot, closed \
loop. hq-interop (ALPN `hq-interop`): a bidirectional stream, `GET /path\\r\\n`, FIN, the \
response read to its end. HTTP/3 (ALPN `h3`): the `h3` and `h3-quinn` crates' client (0.0.8, \
0.0.10), one h3 connection per QUIC connection and every request on a clone of its \
`SendRequest` (the client lets the server open 3 unidirectional streams: control and QPACK). \
A response of the wrong length, or over HTTP/3 a status other than 200, counts as an error. \
There is no floor for files: the reference of each h3 scenario is the same server's figure in \
the hq scenario of the same file (*x hq*), and \"HTTP/3 vs hq-interop\" sets them side by side.
";

const METHOD_RAW: &str = "\
- The raw scenarios have no QUIC: quixd runs `quixd udp-echo` on each backend (every datagram \
goes back to its sender through the same backend), and the reference is a bare AF_XDP echo \
(`xtask bench bare-xdp`: quixd's XDP program in driver mode and one copy-mode AF_XDP socket, \
quixd's own socket module with its UMEM, rings and kick policy; it swaps the addresses in place \
and sends the same frame back, with no parsing beyond the headers, no checksum check and no \
copy). Their load generator (`raw.rs`) sends 1200-byte \
datagrams from one connected socket in sendmmsg batches (closed loop: a fixed number \
outstanding; light: on an open-loop schedule) and reads the echoes with recvmmsg; a unit is a \
datagram echoed back inside the window, and each carries its send time, so p50/p99 are \
round-trip times.
";

/// Why the targets above can be missed on this setup: what the profiles and the link figures
/// of every run so far show (veth, AF_XDP copy mode). The table says by how much.
const TARGETS_WHY: &str = "\
Where a target is missed, the profiles below say why; on veth in AF_XDP copy mode it comes \
down to kernel work quixd cannot remove there:

- **Datapath share.** The kernel's part of receiving through AF_XDP on veth is about as large \
as the socket path's. With an XDP program attached, veth turns GSO off towards its peer, so \
every client datagram crosses as a packet of its own and runs the XDP program once (the socket \
path receives GRO batches of up to 64 KiB); veth copies each packet into a page-pool page and \
copy-mode AF_XDP copies it again into the UMEM (`__pi_memcpy`, `xp_alloc`); and the client's \
skb is freed on the server's core (`sock_wfree`, waking the client's socket, which shows as \
`_raw_spin_unlock_irqrestore`). quixd's own datapath code (parse, checksum, rings, frame \
ledger) is about a tenth of the server core where receive dominates (upload), less elsewhere. \
Zero-copy AF_XDP on a NIC removes the copies and the skbs; veth cannot do zero-copy, and no NIC \
was available to measure it. The 25% target is also below what the floor itself reaches by \
this measure (see its rows in the profiles): with no kernel at all, its copies, allocations \
and in-memory link put its own share at a third to a half of its core, three quarters on \
small requests.
- **Upload vs stock quinn.** Upload is nearly all receive: the per-packet kernel work above \
applies to every datagram, where stock quinn's socket takes a GRO batch per system call. The \
AVX2 checksum (31 ns instead of 82 ns per 1200-byte datagram) and one IPv4 header sum per \
frame did not move the figure measurably; the remaining userspace cost is AES-GCM and the one \
copy quinn-proto's API forces.
- **Small requests vs stock quinn.** Each request is a round trip of small datagrams, so the \
per-packet costs dominate for every server; quixd saves stock quinn's tokio wake-ups and task \
switches, but pays the same veth receive path per packet as in upload.
- **Handshakes vs the floor.** A handshake is about a dozen datagrams over two to three round \
trips; the floor's in-memory path has no kernel at all, while the XDP server pays the kernel \
receive and send work per datagram. The cryptography (ECDSA signature, X25519) is the same in \
both.
- **Preferred busy polling** (`SO_PREFER_BUSY_POLL` with `napi_defer_hard_irqs` and \
`gro_flush_timeout`) was tried on the AF_XDP sockets: on veth the socket reports NAPI ID 0, so \
busy polling has no NAPI context to run; in a trial 2 of 2,665 busy-poll calls found a packet \
and the cost did not change. It is not offered as a setting; it needs a NIC with NAPI IDs.

";

const NOTES: &str = "\
## Running it

As root: `cargo xtask bench` (the full run: 3 interleaved runs of 5 s windows per server and \
scenario, saturation, light and latency, plus a profile per server and saturation scenario; \
about 40 minutes here; run it on a quiet machine), or `cargo xtask bench --quick` (1 run of 2 s each, \
no profiles: a smoke test that asserts only that every server served every scenario). \
`--scenario NAME` and `--server NAME` (repeatable) select cells (a latency scenario needs \
`small` in the same run); `--runs`, `--window-ms`, `--warmup-ms`, `--load-scale` (light \
scenarios), `--floor-to-server-us`, `--floor-to-client-us` and `--profile true|false` adjust \
the rest; \
`QUIXD_BENCH_NO_CPUIDLE=1` makes the cross-check act as on a machine without cpuidle; \
`QUIXD_BENCH_PERF_CALLGRAPH=1` records the profiles with call graphs and keeps them in \
`target/bench/logs/`. It builds \
`quixd` and `xtask` in release mode and re-runs itself from the release build. Logs of every \
run (server and client) are in `target/bench/logs/`. Every process it starts is stopped and the \
namespaces are removed on exit, on error and on Ctrl-C.

## Notes

- The machine is a shared 2-core VM; medians over interleaved runs damp noise, min-max shows it.
- At saturation the load generator's core (CPU 1) is usually the limit, not the server's: \
compare cost per server CPU-second, not achieved throughput.
- On veth, a kernel socket's send path is cheap (quinn-udp's GSO batches stay intact to the \
peer), while AF_XDP copy mode makes one skb per frame on transmit; receive is where the kernel \
stack is expensive, but veth's native XDP copies every received packet twice before AF_XDP sees \
it (`skb_pp_cow_data` into a page-pool page, then the copy-mode memcpy into the UMEM), and \
veth cannot do zero-copy. Zero-copy AF_XDP on a NIC has not been measured.
- Cross-CPU wake-ups (NAPI kthread wake-ups) trap to the hypervisor on these VMs and are a \
large share of kernel time at light load; every server pays them the same way here.
";
