//! Re-running an xtask command from a release build: the demo's and the bench's quinn clients
//! run in this process, and unoptimised they, not quixd, would set the pace.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Builds quixd and xtask in release mode, then replaces this process with the release xtask
/// running the same command, with `marker` set so that it does not do this again.
pub fn reexec(root: &Path, tool: &str, marker: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    eprintln!("{tool}: cargo build --release -p quixd -p xtask");
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
        .env(marker, "1")
        .exec();
    Err(err).with_context(|| format!("exec {}", exe.display()))
}
