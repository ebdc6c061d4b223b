//! `cargo xtask xdp load | status | unload | hold`: the steering program for operators.
//!
//! `load` attaches the program through a bpf_link and pins the link and the maps in bpffs,
//! so that it stays attached after xtask exits:
//!
//! ```text
//! /sys/fs/bpf/quixd/<IF>[@<NETNS>]/link      the bpf_link (removing it detaches)
//!                                 /xsks /ports /addrs /config /counters   the maps
//! ```
//!
//! `@<NETNS>` is there when the interface lives in a named network namespace (`--netns`).
//! `unload` removes the pins, which detaches the program. `status` shows what is attached
//! (pinned or held by a running quixd), with its ports and summed counters. `hold` attaches
//! without pinning and keeps the link until it is killed: the program leaves the interface
//! when the process exits, however it exits (used by the tests, handy for experiments).
//!
//! Namespaces: use `--netns NAME`, which enters only the network namespace. Do not use
//! `ip netns exec NAME cargo xtask xdp load`: `ip netns exec` also gives the command a private
//! mount namespace with a fresh /sys and no bpffs, so pins made there would vanish (and detach
//! the program) when the command exits. `load` detects that case and refuses. `hold` and
//! `status` of interfaces (not of pins) work either way.

use std::ffi::CString;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use quixd::datapath::xdp::attach::{self, AttachedXdpProgram, InterfaceXdp};
use quixd::datapath::xdp::program::{AttachMode, ProgramMaps, XdpProgram, MAP_NAMES};

/// Where bpffs is (or gets) mounted.
const BPFFS: &str = "/sys/fs/bpf";
/// Our directory in it.
const PIN_ROOT: &str = "/sys/fs/bpf/quixd";
/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, Args)]
pub struct XdpArgs {
    /// Work in this network namespace (a name from `ip netns list`). Only the network
    /// namespace is entered; prefer it to `ip netns exec`, whose private mount namespace
    /// would lose the bpffs pins.
    #[arg(long, global = true, value_name = "NAME")]
    netns: Option<String>,
    #[command(subcommand)]
    command: XdpCommand,
}

#[derive(Debug, Subcommand)]
enum XdpCommand {
    /// Attach the steering program to an interface and pin it in bpffs so it stays attached.
    Load(LoadArgs),
    /// Show the XDP programs attached (pinned by `load` or held by a running quixd): id,
    /// name, mode, maps, ports and the per-CPU counters summed.
    Status(StatusArgs),
    /// Remove the pins made by `load`, which detaches the program.
    Unload(UnloadArgs),
    /// Attach without pinning and wait until killed; the program leaves the interface when
    /// this process exits (SIGKILL included).
    Hold(LoadArgs),
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// The interface to attach to.
    #[arg(long, value_name = "IF")]
    iface: String,
    /// A UDP destination port to steer (repeat for more).
    #[arg(long = "port", value_name = "P")]
    ports: Vec<u16>,
    /// A destination address to steer; with any, only these addresses are steered (repeat
    /// for more). Without, every address is.
    #[arg(long = "addr", value_name = "IP")]
    addrs: Vec<IpAddr>,
    /// auto (driver, else SKB), driver or skb.
    #[arg(long, default_value_t = AttachMode::Auto)]
    mode: AttachMode,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Only this interface (default: every interface with an XDP program, and every pin).
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
}

#[derive(Debug, Args)]
struct UnloadArgs {
    /// The interface `load` attached to.
    #[arg(long, value_name = "IF")]
    iface: String,
}

pub fn run(args: XdpArgs) -> Result<()> {
    let netns = match &args.netns {
        Some(name) => {
            enter_netns(name)?;
            Some(name.clone())
        }
        None => current_netns_name(),
    };
    match args.command {
        XdpCommand::Load(load_args) => load(&load_args, netns.as_deref(), args.netns.is_some()),
        XdpCommand::Status(status_args) => status(&status_args, netns.as_deref()),
        XdpCommand::Unload(unload_args) => unload(&unload_args, netns.as_deref()),
        XdpCommand::Hold(hold_args) => hold(&hold_args),
    }
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

fn load_program(args: &LoadArgs) -> Result<XdpProgram> {
    let mut program = XdpProgram::load().context("loading the XDP program")?;
    program.set_ports(&args.ports)?;
    for addr in &args.addrs {
        program.add_address(*addr)?;
    }
    program.set_address_filter(!args.addrs.is_empty())?;
    Ok(program)
}

fn load(args: &LoadArgs, netns: Option<&str>, netns_flag: bool) -> Result<()> {
    if args.ports.is_empty() {
        bail!("give at least one `--port`");
    }
    ensure_bpffs(netns, netns_flag)?;
    let dir = pin_dir(&args.iface, netns);
    if dir.join("link").exists() {
        bail!(
            "the program is already loaded on `{}` (pinned at {}); run `cargo xtask xdp{} unload \
             --iface {}` first",
            args.iface,
            dir.display(),
            netns_arg(netns),
            args.iface
        );
    }
    if dir.exists() {
        // Left over from an interrupted load: maps without a link.
        remove_pins(&dir)?;
    }
    let mut program = load_program(args)?;
    let info = program.attach(&args.iface, args.mode)?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pinned = match program.pin(&dir) {
        Ok(pinned) => pinned,
        Err(error) => {
            let _ = remove_pins(&dir);
            return Err(error).context(format!("pinning in {}", dir.display()));
        }
    };
    println!(
        "attached `{}` (program {}) to {} in {} mode through bpf_link {}",
        quixd::datapath::xdp::program::PROGRAM_NAME,
        info.program_id,
        args.iface,
        info.mode,
        info.link_id
    );
    if let Some(reason) = &info.driver_error {
        println!("driver mode failed: {reason}");
    }
    for id in &info.replaced {
        println!("replaced an older copy of quixd's program (id {id}) attached through netlink");
    }
    println!("ports: {}", join(&args.ports));
    let names: Vec<String> = pinned
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    println!("pinned in {}: {}", dir.display(), names.join(", "));
    println!(
        "no AF_XDP socket is registered: steered packets are passed to the kernel and counted as \
         no_socket"
    );
    println!(
        "remove with: cargo xtask xdp{} unload --iface {}",
        netns_arg(netns),
        args.iface
    );
    Ok(())
}

fn hold(args: &LoadArgs) -> Result<()> {
    let mut program = load_program(args)?;
    let info = program.attach(&args.iface, args.mode)?;
    println!(
        "attached iface={} mode={} program={} link={}",
        args.iface, info.mode, info.program_id, info.link_id
    );
    if let Some(reason) = &info.driver_error {
        println!("driver mode failed: {reason}");
    }
    std::io::stdout().flush()?;
    // The link lives as long as this process: kill it to detach.
    loop {
        std::thread::park();
    }
}

fn unload(args: &UnloadArgs, netns: Option<&str>) -> Result<()> {
    let dir = pin_dir(&args.iface, netns);
    let link_path = dir.join("link");
    if !dir.exists() {
        // Nothing pinned: say what is there instead.
        let what = match attach::inspect(&args.iface) {
            Ok(state) if state.programs.is_empty() => {
                format!("`{}` has no XDP program", args.iface)
            }
            Ok(state) => format!(
                "`{}` has {}, which `load` did not pin",
                args.iface,
                state
                    .programs
                    .iter()
                    .map(describe_program)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Err(error) => error.to_string(),
        };
        bail!("nothing to unload: no pin at {} ({what})", dir.display());
    }
    let ids = attach::pinned_link(&link_path).ok();
    remove_pins(&dir)?;
    let Some(ids) = ids else {
        println!("removed the leftover pins in {}", dir.display());
        return Ok(());
    };
    // Removing the last reference detaches the program, from a kernel work item: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let still = match attach::inspect(&args.iface) {
            Ok(state) => state.programs.into_iter().find(|p| p.id == ids.program_id),
            // The interface is gone: so is the program.
            Err(_) => None,
        };
        match still {
            None => break,
            Some(program) if Instant::now() >= deadline => bail!(
                "removed the pins in {}, but {} is still attached to `{}`: another process \
                 holds the link",
                dir.display(),
                describe_program(&program),
                args.iface
            ),
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    println!(
        "detached program {} (bpf_link {}) from {} and removed {}",
        ids.program_id,
        ids.link_id,
        args.iface,
        dir.display()
    );
    Ok(())
}

/// One interface (or pin) to report on.
struct Entry {
    iface: String,
    netns: Option<String>,
    pin: Option<PathBuf>,
}

fn status(args: &StatusArgs, netns: Option<&str>) -> Result<()> {
    let mut entries: Vec<Entry> = Vec::new();
    // Pins first (any namespace, unless one was chosen).
    for (iface, pin_ns, dir) in list_pins() {
        if args.iface.as_ref().is_some_and(|want| *want != iface) {
            continue;
        }
        if netns.is_some() && pin_ns.as_deref() != netns {
            continue;
        }
        entries.push(Entry {
            iface,
            netns: pin_ns,
            pin: Some(dir),
        });
    }
    // Then the interfaces of this namespace with a program that no pin covers.
    let interfaces: Vec<String> = match &args.iface {
        Some(iface) => vec![iface.clone()],
        None => attach::inspect_all()?
            .into_iter()
            .map(|state| state.iface)
            .collect(),
    };
    for iface in interfaces {
        if !entries
            .iter()
            .any(|e| e.iface == iface && e.netns.as_deref() == netns)
        {
            entries.push(Entry {
                iface,
                netns: netns.map(str::to_owned),
                pin: None,
            });
        }
    }
    if entries.is_empty() {
        println!(
            "no XDP program attached in {} and nothing pinned under {PIN_ROOT}",
            netns.map_or("this network namespace".to_owned(), |ns| format!(
                "network namespace `{ns}`"
            ))
        );
        return Ok(());
    }
    let home = netns.map(str::to_owned);
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            println!();
        }
        if entry.netns != home {
            match &entry.netns {
                Some(ns) => enter_netns(ns)?,
                None => bail!(
                    "cannot show {} from network namespace `{}`: run without --netns",
                    entry.iface,
                    home.as_deref().unwrap_or("")
                ),
            }
        }
        print_entry(entry)?;
        if entry.netns != home {
            if let Some(ns) = &home {
                enter_netns(ns)?;
            } else {
                // Back to the namespace we started in: the one of PID 1 is not always ours, so
                // keep a handle instead.
                restore_netns()?;
            }
        }
    }
    Ok(())
}

fn print_entry(entry: &Entry) -> Result<()> {
    let ns_note = entry
        .netns
        .as_deref()
        .map(|ns| format!(" (netns {ns})"))
        .unwrap_or_default();
    let state = attach::inspect(&entry.iface);
    match &state {
        Ok(state) => println!("{}{ns_note}: ifindex {}", entry.iface, state.ifindex),
        Err(error) => println!("{}{ns_note}: {error}", entry.iface),
    }
    let mut shown_program: Option<u32> = None;
    if let Some(dir) = &entry.pin {
        match attach::pinned_link(&dir.join("link")) {
            Ok(ids) => {
                println!(
                    "  pinned:    {} (bpf_link {}, program {})",
                    dir.display(),
                    ids.link_id,
                    ids.program_id
                );
                let attached = state
                    .as_ref()
                    .ok()
                    .is_some_and(|s| s.programs.iter().any(|p| p.id == ids.program_id));
                if !attached {
                    println!(
                        "  warning:   the pinned link no longer holds a program on the interface \
                         (interface deleted or re-created?); `unload` removes the pins"
                    );
                    print_program_maps(ids.program_id);
                    shown_program = Some(ids.program_id);
                }
            }
            Err(error) => println!(
                "  pinned:    {} (no readable link: {error}; `unload` removes the pins)",
                dir.display()
            ),
        }
    }
    if let Ok(InterfaceXdp { programs, .. }) = &state {
        if programs.is_empty() {
            println!("  program:   none");
        }
        for program in programs {
            println!("  program:   {}", describe_program(program));
            if program.is_ours() && shown_program != Some(program.id) {
                print_program_maps(program.id);
            }
        }
    }
    Ok(())
}

fn print_program_maps(program_id: u32) {
    let maps = match ProgramMaps::of_program(program_id) {
        Ok(maps) => maps,
        Err(error) => {
            println!("  maps:      unreadable: {error}");
            return;
        }
    };
    for summary in maps.summaries() {
        println!(
            "  map:       {} (id {}, {}, max_entries {})",
            summary.name, summary.id, summary.map_type, summary.max_entries
        );
    }
    match maps.ports() {
        Ok(ports) if ports.is_empty() => println!("  ports:     none"),
        Ok(ports) => println!("  ports:     {}", join(&ports)),
        Err(error) => println!("  ports:     unreadable: {error}"),
    }
    match (maps.address_filter(), maps.addresses()) {
        (Ok(false), _) => println!("  addresses: any (filter off)"),
        (Ok(true), Ok(addrs)) => println!("  addresses: {} (filter on)", join(&addrs)),
        (Err(error), _) | (_, Err(error)) => println!("  addresses: unreadable: {error}"),
    }
    match maps.counters() {
        Ok(c) => println!(
            "  counters:  redirected {} passed {} (not_ours {} malformed {} no_socket {} \
             fragment {} ipv6_ext {} oversize {})",
            c.redirected,
            c.passed,
            c.not_ours,
            c.malformed,
            c.no_socket,
            c.fragment,
            c.ipv6_ext,
            c.oversize
        ),
        Err(error) => println!("  counters:  unreadable: {error}"),
    }
}

fn describe_program(program: &AttachedXdpProgram) -> String {
    let owner = if program.is_ours() {
        "quixd's"
    } else {
        "not quixd's"
    };
    format!("{program} ({owner})")
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn netns_arg(netns: Option<&str>) -> String {
    netns.map(|ns| format!(" --netns {ns}")).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Pins
// ---------------------------------------------------------------------------------------------

/// `/sys/fs/bpf/quixd/<iface>[@<netns>]`.
fn pin_dir(iface: &str, netns: Option<&str>) -> PathBuf {
    let name = match netns {
        Some(ns) => format!("{iface}@{ns}"),
        None => iface.to_owned(),
    };
    Path::new(PIN_ROOT).join(name)
}

/// (interface, namespace, directory) of every pin directory.
fn list_pins() -> Vec<(String, Option<String>, PathBuf)> {
    let Ok(dir) = fs::read_dir(PIN_ROOT) else {
        return Vec::new();
    };
    let mut pins: Vec<_> = dir
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let (iface, netns) = match name.split_once('@') {
                Some((iface, ns)) => (iface.to_owned(), Some(ns.to_owned())),
                None => (name, None),
            };
            (iface, netns, entry.path())
        })
        .collect();
    pins.sort();
    pins
}

/// Removes the link and map pins in `dir`, then `dir` (and the root, if empty).
fn remove_pins(dir: &Path) -> Result<()> {
    // The link first: that detaches the program while its maps are still pinned.
    for name in std::iter::once("link").chain(MAP_NAMES) {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    fs::remove_dir(dir).with_context(|| {
        format!(
            "removing {} (does it hold files other than ours?)",
            dir.display()
        )
    })?;
    let _ = fs::remove_dir(PIN_ROOT);
    Ok(())
}

fn is_bpffs(path: &str) -> bool {
    let Ok(c_path) = CString::new(path) else {
        return false;
    };
    // SAFETY: an all-zero statfs is a valid out-buffer; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers for the duration of the call.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    rc == 0 && stat.f_type as i64 == BPF_FS_MAGIC
}

/// Makes sure a bpffs is mounted at /sys/fs/bpf, mounting one if needed, unless this looks
/// like `ip netns exec` (a named network namespace entered without `--netns`, and no bpffs):
/// a bpffs mounted there would be private to this process and its pins would die with it.
fn ensure_bpffs(netns: Option<&str>, netns_flag: bool) -> Result<()> {
    if is_bpffs(BPFFS) {
        return Ok(());
    }
    if let (Some(ns), false) = (netns, netns_flag) {
        bail!(
            "no bpffs at {BPFFS} here, and this process runs in network namespace `{ns}` \
             without --netns: this looks like `ip netns exec`, whose private mount namespace \
             would lose the pins (and detach the program) as soon as xtask exits. Run \
             `cargo xtask xdp --netns {ns} load ...` instead"
        );
    }
    fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
    let source = CString::new("bpf").expect("no NUL");
    let target = CString::new(BPFFS).expect("no NUL");
    let options = CString::new("mode=0700").expect("no NUL");
    // SAFETY: NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        bail!(
            "mounting bpffs at {BPFFS} failed ({error}); mount it yourself with \
             `mount -t bpf bpf {BPFFS}` (needs CAP_SYS_ADMIN)"
        );
    }
    println!("mounted bpffs at {BPFFS}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------

fn netns_path(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        bail!("invalid network namespace name `{name}`");
    }
    ["/run/netns", "/var/run/netns"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
        .ok_or_else(|| anyhow!("network namespace `{name}` does not exist (see `ip netns list`)"))
}

thread_local! {
    /// The network namespace this thread started in, kept open once we leave it.
    static HOME_NETNS: std::cell::RefCell<Option<fs::File>> = const { std::cell::RefCell::new(None) };
}

fn setns(file: &fs::File, what: &str) -> Result<()> {
    // SAFETY: setns on a namespace fd only changes this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        bail!("entering network namespace {what} failed: {error} (needs CAP_SYS_ADMIN)");
    }
    Ok(())
}

/// Moves this thread into network namespace `name` (only the network namespace).
fn enter_netns(name: &str) -> Result<()> {
    HOME_NETNS.with(|home| -> Result<()> {
        let mut home = home.borrow_mut();
        if home.is_none() {
            *home = Some(
                fs::File::open("/proc/thread-self/ns/net")
                    .context("opening our network namespace")?,
            );
        }
        Ok(())
    })?;
    let path = netns_path(name)?;
    let file = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    setns(&file, &format!("`{name}`"))
}

/// Back to the network namespace this thread started in.
fn restore_netns() -> Result<()> {
    HOME_NETNS.with(|home| match &*home.borrow() {
        Some(file) => setns(file, "(the original one)"),
        None => Ok(()),
    })
}

/// The name under /run/netns of the network namespace we are in, if it has one (what
/// `ip netns identify` prints).
fn current_netns_name() -> Option<String> {
    let ours = fs::metadata("/proc/thread-self/ns/net").ok()?;
    ["/run/netns", "/var/run/netns"]
        .iter()
        .filter_map(|dir| fs::read_dir(dir).ok())
        .flat_map(|entries| entries.filter_map(|e| e.ok()))
        .find(|entry| {
            fs::metadata(entry.path()).is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino())
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
}
