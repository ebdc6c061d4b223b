//! `build-ebpf` and `check-ebpf`: compile the eBPF programs in `ebpf/` with clang.
//!
//! The object is committed so that building the daemon needs no BPF toolchain. It must be
//! reproducible: `-g` (needed for BTF) makes clang record the build directory, so the ebpf
//! directory is mapped to `.` with `-ffile-prefix-map` and the source is passed by a relative
//! name from inside that directory. Two clones in different folders then give identical bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::workspace_root;

/// Each program's source and committed object, relative to the ebpf directory: the XDP
/// steering program and the SO_REUSEPORT one.
const PROGRAMS: [(&str, &str); 2] = [
    ("quixd_xdp.c", "quixd_xdp.o"),
    ("quixd_reuseport.c", "quixd_reuseport.o"),
];
/// The clang release the committed object is built with (Debian 12's `clang` package).
/// Another release compiles fine but gives different bytes, so `check-ebpf` would fail.
const PINNED_CLANG: &str = "14.0.6";

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The clang binary to use.
    #[arg(long, env = "CLANG", default_value = "clang")]
    clang: String,
}

/// `cargo xtask build-ebpf`: (re)writes the objects in `ebpf/`.
pub fn build(args: &BuildArgs) -> Result<()> {
    let ebpf_dir = ebpf_dir()?;
    let version = clang_version(&args.clang)?;
    if !version.contains(PINNED_CLANG) {
        eprintln!(
            "warning: the committed object is built with clang {PINNED_CLANG}, this is `{version}`: \
             the object will differ and `cargo xtask check-ebpf` will fail where clang \
             {PINNED_CLANG} is used"
        );
    }
    for (source, object) in PROGRAMS {
        let out = ebpf_dir.join(object);
        compile(&args.clang, &ebpf_dir, source, &out)?;
        let len = fs::metadata(&out)
            .with_context(|| format!("reading {}", out.display()))?
            .len();
        println!("built {} ({len} bytes) with {version}", out.display());
    }
    Ok(())
}

/// `cargo xtask check-ebpf`: rebuilds into a temporary directory and compares with the
/// committed object.
pub fn check(args: &BuildArgs) -> Result<()> {
    let version = clang_version(&args.clang)?;
    for (source, object) in PROGRAMS {
        check_one(args, &version, source, object)?;
    }
    Ok(())
}

fn check_one(args: &BuildArgs, version: &str, source: &str, object: &str) -> Result<()> {
    let ebpf_dir = ebpf_dir()?;
    let committed_path = ebpf_dir.join(object);
    let committed = fs::read(&committed_path).with_context(|| {
        format!(
            "reading the committed object {} (run `cargo xtask build-ebpf`)",
            committed_path.display()
        )
    })?;
    let tmp = TempDir::new("quixd-check-ebpf")?;
    let rebuilt_path = tmp.path().join(object);
    compile(&args.clang, &ebpf_dir, source, &rebuilt_path)?;
    let rebuilt =
        fs::read(&rebuilt_path).with_context(|| format!("reading {}", rebuilt_path.display()))?;
    if rebuilt != committed {
        let first_difference = committed
            .iter()
            .zip(&rebuilt)
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.len().min(rebuilt.len()));
        let hint = if version.contains(PINNED_CLANG) {
            format!("run `cargo xtask build-ebpf` and commit ebpf/{object}")
        } else {
            format!(
                "this is `{version}` but the committed object is built with clang \
                 {PINNED_CLANG}: use that clang (CLANG=... or --clang), or rebuild and commit"
            )
        };
        bail!(
            "ebpf/{object} is stale: rebuilding ebpf/{source} gives a different object \
             (committed {} bytes, rebuilt {} bytes, first difference at byte {first_difference}); \
             {hint}",
            committed.len(),
            rebuilt.len(),
        );
    }
    println!(
        "ebpf/{object} is up to date ({} bytes, {version})",
        committed.len()
    );
    Ok(())
}

fn ebpf_dir() -> Result<PathBuf> {
    let dir = workspace_root().join("ebpf");
    // Canonical, so that it matches the directory clang records (getcwd is physical).
    dir.canonicalize()
        .with_context(|| format!("finding the eBPF source directory {}", dir.display()))
}

/// Runs clang on `source` from inside `ebpf_dir` and writes the object to `out`.
fn compile(clang: &str, ebpf_dir: &Path, source: &str, out: &Path) -> Result<()> {
    let mut cmd = Command::new(clang);
    cmd.current_dir(ebpf_dir)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Wextra", "-Werror"]);
    // Debian keeps asm/types.h in the multiarch directory.
    let multiarch = PathBuf::from(format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH));
    if multiarch.is_dir() {
        cmd.arg(format!("-I{}", multiarch.display()));
    }
    cmd.arg(format!("-ffile-prefix-map={}=.", ebpf_dir.display()))
        .args(["-c", source, "-o"])
        .arg(out);
    let status = cmd
        .status()
        .with_context(|| format!("running `{clang}` (install clang and libbpf-dev)"))?;
    if !status.success() {
        bail!("`{cmd:?}` failed: {status}");
    }
    Ok(())
}

/// The first line of `clang --version`.
fn clang_version(clang: &str) -> Result<String> {
    let output = Command::new(clang)
        .arg("--version")
        .output()
        .with_context(|| format!("running `{clang} --version` (install clang and libbpf-dev)"))?;
    if !output.status.success() {
        bail!("`{clang} --version` failed: {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
