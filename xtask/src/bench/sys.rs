//! Operating-system helpers for the bench: process guards, CPU pinning, CPU time (per task in
//! nanoseconds from schedstat, per CPU from cpuidle or /proc/schedstat, /proc/stat as a
//! cross-check) and the stop flag set by SIGINT/SIGTERM.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// Installs SIGINT/SIGTERM/SIGHUP handlers that only set a flag; the bench checks it between
/// steps and unwinds through its guards (processes killed, namespaces removed).
pub fn install_stop_handlers() -> Result<()> {
    let flag = STOP.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handlers")?;
    }
    Ok(())
}

pub fn stop_requested() -> bool {
    STOP.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// Fails when a stop was requested, so `?` unwinds to the guards.
pub fn check_stop() -> Result<()> {
    if stop_requested() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, waking early (with an error) when a stop is requested.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_stop()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Pins thread or process `pid` (0: the calling thread) to one CPU.
pub fn pin(pid: libc::pid_t, cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes `cmd` pin itself to `cpu` in the child, before exec (inherited across `ip netns
/// exec`, which execs in turn, so the pid stays the one we hold).
pub fn pin_command(cmd: &mut Command, cpu: usize) {
    // SAFETY: sched_setaffinity is async-signal-safe; nothing is allocated after fork.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes the calling thread's timed sleeps wake on time (timer slack 1 us instead of 50 us).
pub fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes a value and touches only the calling thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
}

/// Clock ticks per second of /proc/stat and /proc/PID/stat.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// One CPU's counters, in seconds: /proc/stat (tick-sampled), cpuidle residency and
/// /proc/schedstat run time (both precise), where the kernel has them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CpuSample {
    /// /proc/stat: user + nice + system + irq + softirq.
    pub busy: f64,
    /// /proc/stat: busy + idle + iowait + steal.
    pub total: f64,
    pub softirq: f64,
    pub system: f64,
    pub user: f64,
    /// Idle residency from cpuidle (/sys/devices/system/cpu/cpuN/cpuidle/state*/time, in
    /// microseconds there), seconds; `cpuidle_ok` tells whether it could be read.
    #[serde(default)]
    pub cpuidle: f64,
    #[serde(default)]
    pub cpuidle_ok: bool,
    /// Run time of tasks on this CPU from /proc/schedstat, seconds.
    #[serde(default)]
    pub schedstat: f64,
    #[serde(default)]
    pub schedstat_ok: bool,
    /// CLOCK_MONOTONIC at the sample, seconds.
    #[serde(default)]
    pub wall: f64,
}

/// Where a CPU's busy time came from.
pub const CORE_CPUIDLE: &str = "cpuidle";
pub const CORE_SCHEDSTAT: &str = "/proc/schedstat";
pub const CORE_PROC_STAT: &str = "/proc/stat (tick-sampled)";

impl CpuSample {
    pub fn delta(&self, earlier: &CpuSample) -> CpuSample {
        CpuSample {
            busy: self.busy - earlier.busy,
            total: self.total - earlier.total,
            softirq: self.softirq - earlier.softirq,
            system: self.system - earlier.system,
            user: self.user - earlier.user,
            cpuidle: self.cpuidle - earlier.cpuidle,
            cpuidle_ok: self.cpuidle_ok && earlier.cpuidle_ok,
            schedstat: self.schedstat - earlier.schedstat,
            schedstat_ok: self.schedstat_ok && earlier.schedstat_ok,
            wall: self.wall - earlier.wall,
        }
    }

    /// Busy seconds of a delta and their source: wall time minus cpuidle residency where
    /// cpuidle exists, else /proc/schedstat's run time, else (printed as such) /proc/stat's
    /// tick-sampled busy time.
    pub fn busy_measured(&self) -> (f64, &'static str) {
        if self.cpuidle_ok && self.wall > 0.0 {
            (
                (self.wall - self.cpuidle).clamp(0.0, self.wall),
                CORE_CPUIDLE,
            )
        } else if self.schedstat_ok && self.wall > 0.0 {
            (self.schedstat.clamp(0.0, self.wall), CORE_SCHEDSTAT)
        } else {
            (self.busy, CORE_PROC_STAT)
        }
    }

    /// Busy share of a delta, 0..1.
    pub fn busy_share(&self) -> f64 {
        let (busy, source) = self.busy_measured();
        if source == CORE_PROC_STAT {
            busy / self.total.max(1e-9)
        } else {
            busy / self.wall.max(1e-9)
        }
    }
}

/// Sum of CPU `cpu`'s cpuidle state residencies, seconds.
fn cpuidle_seconds(cpu: usize) -> Option<f64> {
    let dir = std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle")).ok()?;
    let mut us = 0u64;
    let mut any = false;
    for e in dir.flatten() {
        if !e.file_name().to_string_lossy().starts_with("state") {
            continue;
        }
        let t = std::fs::read_to_string(e.path().join("time")).ok()?;
        us += t.trim().parse::<u64>().ok()?;
        any = true;
    }
    any.then_some(us as f64 * 1e-6)
}

/// Reads CPU `cpu`'s line of /proc/stat.
pub fn cpu_sample(cpu: usize) -> Result<CpuSample> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("/proc/stat has no {name}"))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse::<f64>().unwrap_or(0.0))
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0.0);
    let hz = clock_ticks();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let busy = get(0) + get(1) + get(2) + get(5) + get(6);
    // QUIXD_BENCH_NO_CPUIDLE=1 acts as if cpuidle were missing (some machines of this kind
    // have none), to exercise the fallback where it exists.
    let idle = if std::env::var_os("QUIXD_BENCH_NO_CPUIDLE").is_some() {
        None
    } else {
        cpuidle_seconds(cpu)
    };
    let sched = cpu_schedstat_ns(cpu);
    Ok(CpuSample {
        busy: busy / hz,
        total: (busy + get(3) + get(4) + get(7)) / hz,
        softirq: get(6) / hz,
        system: get(2) / hz,
        user: (get(0) + get(1)) / hz,
        cpuidle: idle.unwrap_or(0.0),
        cpuidle_ok: idle.is_some(),
        schedstat: sched.unwrap_or(0) as f64 * 1e-9,
        schedstat_ok: sched.is_some(),
        wall: clock_seconds(libc::CLOCK_MONOTONIC),
    })
}

/// Run time of every thread of process `pid`, in nanoseconds: the sum of the first field of
/// `/proc/PID/task/*/schedstat` (the scheduler's `sum_exec_runtime`, which includes the
/// interrupt and softirq work that ran while the thread was current: this kernel has no IRQ
/// time accounting). A thread that exits inside the window is missed; the servers here keep
/// theirs. `None` when schedstat is not there (no CONFIG_SCHED_INFO) or `pid` is gone.
pub fn task_runtime_ns(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    let mut any = false;
    for e in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("schedstat")) else {
            continue;
        };
        sum += text.split_whitespace().next()?.parse::<u64>().ok()?;
        any = true;
    }
    any.then_some(sum)
}

/// CPU `cpu`'s run time of tasks in nanoseconds from /proc/schedstat (`rq_cpu_time`, the 7th
/// number of the `cpuN` line; the kernel adds a task's slice when it is switched out, so a
/// slice running at the edge of a window lands in the next sample). `None` without
/// CONFIG_SCHEDSTATS.
pub fn cpu_schedstat_ns(cpu: usize) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/schedstat").ok()?;
    let name = format!("cpu{cpu}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    line.split_whitespace().nth(7)?.parse().ok()
}

/// User + system CPU seconds of process `pid` (all its threads), from /proc/PID/stat.
pub fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// CPU time of the calling process, in seconds.
pub fn self_cpu() -> f64 {
    clock_seconds(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Reads a clock, in seconds.
pub fn clock_seconds(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Reads a clock, in nanoseconds.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The CPU-time clock of the calling thread, readable from any thread of the process.
pub fn current_thread_clock() -> libc::clockid_t {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: pthread_self is valid; clock is a valid out-pointer.
    unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    clock
}

/// A child process that is stopped (SIGTERM, then SIGKILL) and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr to `log`, pinned to `cpu`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path, cpu: Option<usize>) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if let Some(cpu) = cpu {
            pin_command(&mut cmd, cpu);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("{} already reaped", self.name),
        }
    }

    /// Waits until the log contains `needle`; fails if the process exits or `limit` passes.
    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) -> Result<()> {
        let end = Instant::now() + limit;
        loop {
            check_stop()?;
            if self.log_text().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                bail!(
                    "{} exited ({status}) before logging {needle:?}:\n{}",
                    self.name,
                    tail(&self.log_text(), 30)
                );
            }
            if Instant::now() > end {
                bail!(
                    "{} did not log {needle:?} within {limit:?}:\n{}",
                    self.name,
                    tail(&self.log_text(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself within `limit`, else kills it and fails.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if stop_requested() {
                self.kill();
                bail!("interrupted");
            }
            if let Some(status) = self.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > end {
                self.kill();
                bail!("{} did not finish within {limit:?}; killed", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; always reaps.
    pub fn terminate(&mut self, grace: Duration) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            // SAFETY: kill on our own child's pid, which is not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let end = Instant::now() + grace;
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(2));
    }
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Runs a command to completion and returns its stdout; fails with its output otherwise.
pub fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command, ignoring its result (clean-up paths).
pub fn run_quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
