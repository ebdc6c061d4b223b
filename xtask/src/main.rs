//! Project automation: `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! Each group of subcommands lives in its own module; add new groups (e.g. `xdp`, `demo`,
//! `bench`) as a module plus a variant of [`Command`].

#[cfg(target_os = "linux")]
mod bench;
#[cfg(target_os = "linux")]
mod demo;
mod ebpf;
#[cfg(target_os = "linux")]
mod release;
#[cfg(target_os = "linux")]
mod reliability;
#[cfg(target_os = "linux")]
mod xdp;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "quixd project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compile ebpf/quixd_xdp.c with clang and write the committed object ebpf/quixd_xdp.o.
    BuildEbpf(ebpf::BuildArgs),
    /// Rebuild the eBPF object into a temporary directory and fail if it differs from the
    /// committed ebpf/quixd_xdp.o.
    CheckEbpf(ebpf::BuildArgs),
    /// Operate the XDP steering program: load (attach and pin in bpffs), status, unload,
    /// hold (attach until killed).
    #[cfg(target_os = "linux")]
    Xdp(xdp::XdpArgs),
    /// The main job on a working default: quixd on XDP in a network namespace serving a quinn
    /// client in another (needs root).
    #[cfg(target_os = "linux")]
    Demo(demo::DemoArgs),
    /// Benchmarks (issue 8): every quixd backend against stock quinn and the QUIC floor in
    /// network namespaces; writes BENCHMARKS.md and benchmarks/ (needs root).
    #[cfg(target_os = "linux")]
    Bench(bench::BenchArgs),
    /// Reliability evidence (issue 17): the load, fault and bad-input tests plus the fuzz
    /// smoke; writes RELIABILITY.md (needs root, about 20 minutes).
    #[cfg(target_os = "linux")]
    Reliability(reliability::ReliabilityArgs),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the whole cause chain on one line, no backtrace noise.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::BuildEbpf(args) => ebpf::build(&args),
        Command::CheckEbpf(args) => ebpf::check(&args),
        #[cfg(target_os = "linux")]
        Command::Xdp(args) => xdp::run(args),
        #[cfg(target_os = "linux")]
        Command::Demo(args) => demo::run(args),
        #[cfg(target_os = "linux")]
        Command::Bench(args) => bench::run(args),
        #[cfg(target_os = "linux")]
        Command::Reliability(args) => reliability::run(args),
    }
}

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}
