//! `cargo xtask reliability`: runs the load, fault and bad-input tests (issue 17) and writes
//! RELIABILITY.md from what they report.
//!
//! The tests are the ones `cargo test` runs in CI (e2e `capacity`, `flood`, `faults`, the XDP
//! malformed-frame test, the fuzz corpus replay); here they run once more with
//! `QUIXD_RELIABILITY_OUT` set, so each appends the figures it measured (one JSON line per
//! figure, `tests/e2e/harness.rs: record`). The fuzz smoke (`.ci/fuzz`) adds executions and
//! corpus sizes. The report says what passed, the figures, and what was lost: a failed test is
//! named there, and the command fails (each suite's output stays in target/reliability/).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;

use crate::bench::report::sh;

#[derive(Debug, Args)]
pub struct ReliabilityArgs {
    /// Seconds of fuzzing per target (0: skip fuzzing).
    #[arg(long, default_value_t = 60)]
    fuzz_seconds: u64,
    /// Where RELIABILITY.md goes (default: the workspace root).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A group of tests and how to run it.
struct Suite {
    /// The report's section.
    section: Section,
    what: &'static str,
    /// `cargo test` arguments before `--`, and the filters after it.
    cargo: &'static [&'static str],
    filters: &'static [&'static str],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Load,
    Faults,
    BadInput,
}

impl Section {
    fn title(self) -> &'static str {
        match self {
            Section::Load => "Load held",
            Section::Faults => "Faults survived",
            Section::BadInput => "Bad inputs tried",
        }
    }
}

const SUITES: &[Suite] = &[
    Suite {
        section: Section::Load,
        what: "10,000 concurrent connections; stalled readers (tests/e2e/capacity.rs)",
        cargo: &["-p", "quixd", "--test", "e2e"],
        filters: &["capacity::"],
    },
    Suite {
        section: Section::Load,
        what:
            "handshake floods from spoofed addresses, with and without Retry (tests/e2e/flood.rs)",
        cargo: &["-p", "quixd", "--test", "e2e"],
        filters: &["flood::"],
    },
    Suite {
        section: Section::Faults,
        what: "faults while transfers run (tests/e2e/faults.rs)",
        cargo: &["-p", "quixd", "--test", "e2e"],
        filters: &["faults::"],
    },
    Suite {
        section: Section::BadInput,
        what: "malformed frames injected during a download (tests/xdp/daemon_malformed.rs)",
        cargo: &["-p", "quixd", "--test", "xdp"],
        filters: &["daemon_malformed"],
    },
    Suite {
        section: Section::BadInput,
        what: "every committed fuzz corpus input replayed (userspace/src/fuzzing)",
        cargo: &["-p", "quixd", "--lib"],
        filters: &["fuzzing::"],
    },
];

/// One figure a test reported.
#[derive(Debug, Deserialize)]
struct Figure {
    test: String,
    figure: String,
    value: f64,
    unit: String,
}

/// One test's outcome, from `cargo test`'s output.
#[derive(Debug)]
struct Outcome {
    name: String,
    passed: bool,
}

struct SuiteRun<'a> {
    suite: &'a Suite,
    outcomes: Vec<Outcome>,
    /// The command itself failed to run or exited non-zero without a failed test named.
    error: Option<String>,
}

/// One fuzz target's smoke run.
struct FuzzRun {
    target: String,
    ok: bool,
    executions: String,
    new_inputs: String,
    corpus: usize,
}

pub fn run(args: ReliabilityArgs) -> Result<()> {
    let root = crate::workspace_root();
    let out_dir = args.out.clone().unwrap_or_else(|| root.clone());
    // Each suite's whole output stays here, for the failures' details.
    let logs = root.join("target/reliability");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let figures_path = logs.join("figures.jsonl");
    let started = std::time::Instant::now();

    let mut runs = Vec::new();
    for suite in SUITES {
        eprintln!("== {}", suite.what);
        runs.push(run_suite(&root, suite, &figures_path, &logs));
    }
    let fuzz = if args.fuzz_seconds > 0 {
        eprintln!("== fuzzing, {} s per target", args.fuzz_seconds);
        run_fuzz(&root, args.fuzz_seconds)?
    } else {
        Vec::new()
    };
    let figures = read_figures(&figures_path)?;

    let report = render(&runs, &figures, &fuzz, args.fuzz_seconds, started.elapsed());
    let path = out_dir.join("RELIABILITY.md");
    std::fs::write(&path, report).with_context(|| format!("write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    let lost = lost(&runs, &fuzz);
    if !lost.is_empty() {
        bail!("{} failed: {}", lost.len(), lost.join("; "));
    }
    Ok(())
}

fn run_suite<'a>(root: &Path, suite: &'a Suite, figures: &Path, logs: &Path) -> SuiteRun<'a> {
    let output = Command::new("cargo")
        .arg("test")
        .args(suite.cargo)
        .arg("--")
        .args(suite.filters)
        .current_dir(root)
        .env("QUIXD_RELIABILITY_OUT", figures)
        .env("QUIXD_REQUIRE_PRIVILEGED", "1")
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            return SuiteRun {
                suite,
                outcomes: Vec::new(),
                error: Some(format!("cannot run cargo test: {e}")),
            }
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = logs.join(format!("{}.log", suite.filters.join("+").replace("::", "")));
    let _ = std::fs::write(
        &log,
        format!(
            "{stdout}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
    );
    let outcomes = parse_outcomes(&stdout);
    let failed_named = outcomes.iter().any(|o| !o.passed);
    let error = if !output.status.success() && !failed_named {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        Some(format!(
            "cargo test exited with {}: {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ))
    } else if outcomes.is_empty() {
        Some("no test matched".into())
    } else {
        None
    };
    for o in &outcomes {
        eprintln!(
            "  {} {}",
            if o.passed { "ok    " } else { "FAILED" },
            o.name
        );
    }
    if !output.status.success() {
        eprintln!("  (output in {})", log.display());
    }
    SuiteRun {
        suite,
        outcomes,
        error,
    }
}

/// `test NAME ... ok` / `... FAILED` lines.
fn parse_outcomes(stdout: &str) -> Vec<Outcome> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("test ")?;
            let (name, result) = rest.rsplit_once(" ... ")?;
            match result.trim() {
                "ok" => Some(true),
                "FAILED" => Some(false),
                _ => None,
            }
            .map(|passed| Outcome {
                name: name.to_string(),
                passed,
            })
        })
        .collect()
}

fn run_fuzz(root: &Path, seconds: u64) -> Result<Vec<FuzzRun>> {
    let output = Command::new(root.join(".ci/fuzz"))
        .args(["--seconds", &seconds.to_string()])
        .current_dir(root)
        .output()
        .context("run .ci/fuzz")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Its summary: "TARGET: ok, N executions, M new inputs".
    let mut runs = Vec::new();
    for line in stdout.lines() {
        let Some((target, rest)) = line.split_once(": ") else {
            continue;
        };
        let parts: Vec<&str> = rest.split(", ").collect();
        if parts.len() != 3 || !parts[1].ends_with(" executions") {
            continue;
        }
        let corpus = std::fs::read_dir(root.join("fuzz/corpus").join(target))
            .map(|d| d.count())
            .unwrap_or(0);
        runs.push(FuzzRun {
            target: target.to_string(),
            ok: parts[0] == "ok",
            executions: parts[1].trim_end_matches(" executions").to_string(),
            new_inputs: parts[2].trim_end_matches(" new inputs").to_string(),
            corpus,
        });
    }
    if runs.is_empty() {
        bail!(
            ".ci/fuzz printed no summary (exit {}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(runs)
}

fn read_figures(path: &Path) -> Result<Vec<Figure>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("figure line {l}")))
        .collect()
}

/// What failed, by name.
fn lost(runs: &[SuiteRun], fuzz: &[FuzzRun]) -> Vec<String> {
    let mut lost = Vec::new();
    for r in runs {
        if let Some(e) = &r.error {
            lost.push(format!("{}: {e}", r.suite.what));
        }
        lost.extend(
            r.outcomes
                .iter()
                .filter(|o| !o.passed)
                .map(|o| o.name.clone()),
        );
    }
    lost.extend(
        fuzz.iter()
            .filter(|f| !f.ok)
            .map(|f| format!("fuzz target {} crashed", f.target)),
    );
    lost
}

/// "1234567" -> "1,234,567"; figures keep up to three significant decimals.
fn fmt_value(v: f64) -> String {
    // Large figures read as whole numbers; the fraction is noise there.
    let v = if v.abs() >= 100.0 { v.round() } else { v };
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let digits = format!("{}", v as i64);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 && c != '-' {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{v:.2}")
    }
}

fn render(
    runs: &[SuiteRun],
    figures: &[Figure],
    fuzz: &[FuzzRun],
    fuzz_seconds: u64,
    took: std::time::Duration,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Reliability\n");
    let _ = writeln!(
        s,
        "Written by `cargo xtask reliability` ({} min), which runs the tests below (the same \
         ones CI runs in `cargo test`) and the fuzz smoke, and reports what they measured. \
         Commit {}, {}, Linux {}, {} CPUs.\n",
        took.as_secs() / 60,
        sh("git rev-parse --short HEAD; git status --porcelain | grep -q . && echo '(with uncommitted changes)'")
            .replace('\n', " "),
        sh("date -u +%Y-%m-%d"),
        sh("uname -r"),
        sh("grep -c ^processor /proc/cpuinfo"),
    );

    let lost = lost(runs, fuzz);
    let _ = writeln!(s, "## What was lost\n");
    if lost.is_empty() {
        let tests: usize = runs.iter().map(|r| r.outcomes.len()).sum();
        let _ = writeln!(
            s,
            "Nothing. All {tests} tests passed: every transfer they check arrived intact or \
             ended with a clean connection error where the case allows one, no daemon \
             crashed or hung, and every fuzz target ran without a crash.\n"
        );
    } else {
        for l in &lost {
            let _ = writeln!(s, "- **{l}**");
        }
        s.push('\n');
    }

    // Figures by test.
    let mut by_test: BTreeMap<&str, Vec<&Figure>> = BTreeMap::new();
    for f in figures {
        by_test.entry(f.test.as_str()).or_default().push(f);
    }
    let mut section = None;
    for r in runs {
        if section != Some(r.suite.section) {
            section = Some(r.suite.section);
            let _ = writeln!(s, "## {}\n", r.suite.section.title());
        }
        let _ = writeln!(s, "### {}\n", r.suite.what);
        if let Some(e) = &r.error {
            let _ = writeln!(s, "Did not run to the end: {e}\n");
        }
        let _ = writeln!(s, "| test | result | figures |");
        let _ = writeln!(s, "|---|---|---|");
        for o in &r.outcomes {
            let figs: Vec<String> = by_test
                .iter()
                .filter(|(t, _)| o.name.ends_with(*t) || t.ends_with(o.name.as_str()))
                .flat_map(|(_, fs)| fs.iter())
                .map(|f| format!("{}: {} {}", f.figure, fmt_value(f.value), f.unit))
                .collect();
            let _ = writeln!(
                s,
                "| `{}` | {} | {} |",
                o.name,
                if o.passed { "passed" } else { "**FAILED**" },
                figs.join("; ")
            );
        }
        s.push('\n');
        if r.suite.section == Section::BadInput && r.suite.filters == ["fuzzing::"] {
            render_fuzz(&mut s, fuzz, fuzz_seconds);
        }
    }
    s
}

fn render_fuzz(s: &mut String, fuzz: &[FuzzRun], seconds: u64) {
    let _ = writeln!(
        s,
        "### Fuzzing (cargo-fuzz, libFuzzer, {seconds} s per target)\n"
    );
    if fuzz.is_empty() {
        let _ = writeln!(s, "Not run (`--fuzz-seconds 0`).\n");
        return;
    }
    let _ = writeln!(
        s,
        "| target | result | executions | new inputs found | committed corpus |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for f in fuzz {
        let execs = f
            .executions
            .parse::<f64>()
            .map(fmt_value)
            .unwrap_or_else(|_| f.executions.clone());
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} files |",
            f.target,
            if f.ok { "no crash" } else { "**CRASH**" },
            execs,
            f.new_inputs,
            f.corpus
        );
    }
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_read_from_cargo_test_output() {
        let out = "running 2 tests\ntest capacity::socket_netns::ten ... ok\n\
                   test faults::xdp_driver::flap ... FAILED\ntest x ... ignored\n";
        let o = parse_outcomes(out);
        assert_eq!(o.len(), 2);
        assert!(o[0].passed && o[0].name == "capacity::socket_netns::ten");
        assert!(!o[1].passed);
    }

    #[test]
    fn values_are_grouped_by_thousands() {
        assert_eq!(fmt_value(10000.0), "10,000");
        assert_eq!(fmt_value(1234567.0), "1,234,567");
        assert_eq!(fmt_value(0.675), "0.68");
        assert_eq!(fmt_value(300.6), "301");
        assert_eq!(fmt_value(10002.4), "10,002");
    }
}
