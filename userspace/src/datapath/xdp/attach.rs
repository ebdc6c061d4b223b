//! Attaching the steering program to an interface, and reading which XDP programs an
//! interface has.
//!
//! The program is attached through a **bpf_link** (`BPF_LINK_CREATE`, what aya's
//! [`Xdp::attach`] uses on Linux 5.9+), never through the legacy netlink call: a link lives as
//! long as its file descriptor (or a bpffs pin), so the program leaves the interface when the
//! owning process exits, crashes or is killed. [`XdpAttachment`] owns that link and detaches it
//! when dropped.
//!
//! Before attaching, the interface's current XDP programs are read over rtnetlink
//! (`IFLA_XDP`) and the kernel's program and link lists:
//!
//! - a program that is not ours (its name is not [`PROGRAM_NAME`]) is never replaced:
//!   [`AttachError::ForeignProgram`] names it and says how to remove it;
//! - our program held by a bpf_link (another quixd, or a pin made by `cargo xtask xdp load`)
//!   is not taken over either: [`AttachError::AlreadyAttached`];
//! - our program attached through netlink (e.g. by `ip link set dev IF xdp obj quixd_xdp.o`),
//!   which nothing would ever detach, is replaced: detached with a compare-and-swap on its
//!   program fd, then ours is attached ([`AttachInfo::replaced`]).
//!
//! Interface names are resolved in the calling thread's network namespace.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::str::FromStr;

use aya::programs::links::{FdLink, LinkType};
use aya::programs::{loaded_links, loaded_programs, ProgramError, Xdp, XdpMode};
use serde::{Deserialize, Serialize};

use super::program::PROGRAM_NAME;

/// How to attach: the operator's choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Driver (native) mode if the driver supports it, else SKB (generic) mode; the result
    /// says which one was used and why driver mode was not.
    #[default]
    Auto,
    /// Driver (native) mode only: the driver runs the program before any skb is built.
    Driver,
    /// SKB (generic) mode only: works on every interface, after the skb is built.
    Skb,
}

impl AttachMode {
    /// The names accepted by [`FromStr`] and serde.
    pub const NAMES: [&'static str; 3] = ["auto", "driver", "skb"];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Driver => "driver",
            Self::Skb => "skb",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "driver" | "drv" | "native" => Ok(Self::Driver),
            "skb" | "generic" => Ok(Self::Skb),
            other => Err(format!(
                "unknown XDP attach mode `{other}` (expected auto, driver or skb)"
            )),
        }
    }
}

/// The mode an XDP program actually runs in on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedMode {
    /// Driver (native) mode (`ip link` shows `xdp` / `prog/xdp`).
    Driver,
    /// SKB (generic) mode (`ip link` shows `xdpgeneric`).
    Skb,
    /// Offloaded to the NIC (`xdpoffload`); quixd never asks for it.
    Hardware,
}

impl AttachedMode {
    /// The name used in messages and in `cargo xtask xdp status`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Skb => "skb",
            Self::Hardware => "hardware",
        }
    }

    /// The `ip link set dev IF <keyword> off` keyword that removes a program in this mode.
    pub fn ip_link_keyword(self) -> &'static str {
        match self {
            Self::Driver => "xdpdrv",
            Self::Skb => "xdpgeneric",
            Self::Hardware => "xdpoffload",
        }
    }

    fn aya(self) -> XdpMode {
        match self {
            Self::Driver => XdpMode::Driver,
            Self::Skb => XdpMode::Skb,
            Self::Hardware => XdpMode::Hardware,
        }
    }

    fn netlink_flag(self) -> u32 {
        match self {
            Self::Driver => rtnl::XDP_FLAGS_DRV_MODE,
            Self::Skb => rtnl::XDP_FLAGS_SKB_MODE,
            Self::Hardware => rtnl::XDP_FLAGS_HW_MODE,
        }
    }
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What keeps an XDP program on its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A bpf_link with this id: it detaches when its last fd closes and its pins are gone.
    Link(u32),
    /// The legacy netlink attach: it stays until someone detaches it.
    Netlink,
    /// Unknown: listing the kernel's links needs CAP_SYS_ADMIN.
    Unknown,
}

/// An XDP program found on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedXdpProgram {
    /// The kernel's program id.
    pub id: u32,
    /// The program's name (the C function's, truncated to 15 bytes); `None` when it could not
    /// be read (listing the kernel's programs needs CAP_SYS_ADMIN).
    pub name: Option<String>,
    /// The mode it runs in.
    pub mode: AttachedMode,
    /// What holds it there.
    pub holder: Holder,
}

impl AttachedXdpProgram {
    /// Whether this is quixd's steering program (its name is [`PROGRAM_NAME`]).
    pub fn is_ours(&self) -> bool {
        self.name.as_deref() == Some(PROGRAM_NAME)
    }

    /// The bpf_link holding it, if a link does (and we could see it).
    pub fn link_id(&self) -> Option<u32> {
        match self.holder {
            Holder::Link(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for AttachedXdpProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "program id {}", self.id)?;
        match &self.name {
            Some(name) => write!(f, " `{name}`")?,
            None => f.write_str(" (name unreadable without CAP_SYS_ADMIN)")?,
        }
        write!(f, " in {} mode", self.mode)?;
        match self.holder {
            Holder::Link(link) => write!(f, ", attached through bpf_link {link}"),
            Holder::Netlink => f.write_str(", attached through netlink"),
            Holder::Unknown => Ok(()),
        }
    }
}

/// The XDP programs of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceXdp {
    /// The interface name.
    pub iface: String,
    /// Its index in its network namespace.
    pub ifindex: u32,
    /// Its programs: none, one, or one per mode (driver and offload can coexist).
    pub programs: Vec<AttachedXdpProgram>,
}

/// What [`attach`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachInfo {
    /// The interface.
    pub iface: String,
    /// Its index in the namespace it was attached in.
    pub ifindex: u32,
    /// The mode the program runs in.
    pub mode: AttachedMode,
    /// With [`AttachMode::Auto`] and SKB mode: why driver mode failed.
    pub driver_error: Option<String>,
    /// The attached program's id.
    pub program_id: u32,
    /// The bpf_link's id.
    pub link_id: u32,
    /// Ids of older copies of our program, attached through netlink, that were detached first.
    pub replaced: Vec<u32>,
}

impl fmt::Display for AttachInfo {
    /// `driver`, or `skb (driver mode failed: REASON)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.mode)?;
        if let Some(reason) = &self.driver_error {
            write!(f, " (driver mode failed: {reason})")?;
        }
        Ok(())
    }
}

/// Errors of attaching, detaching and inspecting.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No interface of that name in the caller's network namespace.
    #[error(
        "network interface `{iface}` does not exist in this network namespace (list the \
         interfaces with `ip link`; for one in another namespace, run there, e.g. \
         `ip netns exec NS ...`)"
    )]
    NoSuchInterface {
        /// The name asked for.
        iface: String,
    },
    /// The interface has an XDP program that is not ours; we do not replace it.
    #[error(
        "interface `{iface}` already has an XDP program {whose}: {existing}; refusing to \
         replace it. {hint}",
        whose = if existing.name.is_some() { "that is not quixd's" } else { "quixd cannot identify" },
        hint = foreign_hint(iface, existing)
    )]
    ForeignProgram {
        /// The interface.
        iface: String,
        /// The program found there.
        existing: AttachedXdpProgram,
    },
    /// Our program is already attached through a bpf_link someone else holds.
    #[error(
        "interface `{iface}` already has quixd's XDP program ({existing}), held by another \
         process or pinned in bpffs; stop the other quixd, or if `cargo xtask xdp load` pinned \
         it, run `cargo xtask xdp unload --iface {iface}`"
    )]
    AlreadyAttached {
        /// The interface.
        iface: String,
        /// The program found there.
        existing: AttachedXdpProgram,
    },
    /// This program object is attached already.
    #[error("this copy of the XDP program is already attached to `{iface}`; detach it first")]
    AttachedTwice {
        /// Where it is attached.
        iface: String,
    },
    /// The kernel said EPERM/EACCES.
    #[error(
        "{action} `{iface}` was refused ({source}): XDP needs CAP_BPF and CAP_NET_ADMIN (or \
         CAP_SYS_ADMIN); run as root or grant them (e.g. `setcap cap_bpf,cap_net_admin+ep BINARY`)"
    )]
    PermissionDenied {
        /// The interface.
        iface: String,
        /// What was refused, e.g. "attaching XDP to".
        action: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// Attaching in an explicitly asked mode failed.
    #[error("attaching XDP to `{iface}` in {mode} mode failed: {reason}")]
    Attach {
        /// The interface.
        iface: String,
        /// The mode asked for.
        mode: AttachedMode,
        /// The kernel's error, explained.
        reason: String,
    },
    /// [`AttachMode::Auto`]: both modes failed.
    #[error("attaching XDP to `{iface}` failed in driver mode ({driver}) and in SKB mode ({skb})")]
    AutoFailed {
        /// The interface.
        iface: String,
        /// Why driver mode failed.
        driver: String,
        /// Why SKB mode failed.
        skb: String,
    },
    /// The kernel has no XDP bpf_links and aya fell back to netlink (undone).
    #[error(
        "the kernel attached XDP to `{iface}` through netlink instead of a bpf_link (XDP links \
         need Linux 5.9 or newer); refused and undone, since such a program would stay \
         attached after quixd exits"
    )]
    NoLinkSupport {
        /// The interface.
        iface: String,
    },
    /// Reading the interface's XDP state over rtnetlink failed.
    #[error("reading the XDP state of `{iface}` over netlink failed: {source}")]
    Netlink {
        /// The interface.
        iface: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Listing the kernel's BPF programs or links failed.
    #[error("reading the kernel's BPF {what} failed: {source}")]
    Inspect {
        /// "programs", "links", "program info".
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Detaching an older, netlink-attached copy of our program failed.
    #[error(
        "detaching the older copy of quixd's program ({existing}) from `{iface}` failed: {reason}"
    )]
    Replace {
        /// The interface.
        iface: String,
        /// The program that could not be detached.
        existing: AttachedXdpProgram,
        /// The kernel's error, explained.
        reason: String,
    },
    /// Detaching our link failed.
    #[error("detaching XDP (bpf_link {link_id}) from `{iface}` failed: {source}")]
    Detach {
        /// The interface.
        iface: String,
        /// The link.
        link_id: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Pinning the link failed.
    #[error("pinning the bpf_link of `{iface}` at {path} failed: {source}")]
    Pin {
        /// The interface.
        iface: String,
        /// The pin path.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl AttachError {
    /// True when the kernel refused for lack of privileges.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::PermissionDenied { .. })
    }
}

fn foreign_hint(iface: &str, existing: &AttachedXdpProgram) -> String {
    let keyword = existing.mode.ip_link_keyword();
    match existing.holder {
        Holder::Netlink => format!(
            "If it is not needed, remove it with `ip link set dev {iface} {keyword} off` and try \
             again"
        ),
        Holder::Link(link) => format!(
            "It is held by bpf_link {link}, which detaches only when the process holding it \
             exits or its bpffs pin is removed (`bpftool link show id {link}` shows it)"
        ),
        Holder::Unknown => format!(
            "If it is not needed, remove it with `ip link set dev {iface} {keyword} off` (or, if \
             a bpf_link holds it, stop the process holding it) and try again"
        ),
    }
}

/// Our program, attached to an interface through a bpf_link. Dropping it detaches the program
/// (even if the link's fd was duplicated into another process); [`Self::pin`] hands it over to
/// bpffs instead.
#[derive(Debug)]
pub struct XdpAttachment {
    link: Option<FdLink>,
    info: AttachInfo,
}

impl XdpAttachment {
    /// What was attached, where and how.
    pub fn info(&self) -> &AttachInfo {
        &self.info
    }

    /// Detaches now, reporting errors (dropping detaches too, silently).
    pub fn detach(mut self) -> Result<(), AttachError> {
        let link = self.link.take();
        // Without CAP_SYS_ADMIN the link cannot be looked up by id: closing our fd (the only
        // one, unless it was shared with a forked child) detaches it.
        let result = force_detach(self.info.link_id)
            .filter_eperm()
            .map_err(|source| AttachError::Detach {
                iface: self.info.iface.clone(),
                link_id: self.info.link_id,
                source,
            });
        drop(link);
        result
    }

    /// Pins the link at `path` (on a bpffs) and gives up ownership: the program then stays
    /// attached after this process exits, until the pin is removed. On failure the program is
    /// detached.
    pub fn pin(mut self, path: &std::path::Path) -> Result<(), AttachError> {
        let link = self
            .link
            .take()
            .expect("an attachment owns its link until consumed");
        let pin_error = |source| AttachError::Pin {
            iface: self.info.iface.clone(),
            path: path.display().to_string(),
            source,
        };
        match link.pin(path) {
            // Dropping the PinnedLink closes our fd; the pin keeps the link.
            Ok(_pinned) => Ok(()),
            Err(error) => Err(pin_error(pin_error_io(error))),
        }
    }
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            // Best effort (see `detach`); closing the fd detaches anyway.
            if let Err(error) = force_detach(self.info.link_id).filter_eperm() {
                tracing::warn!(
                    iface = %self.info.iface,
                    link_id = self.info.link_id,
                    "detaching XDP failed: {error}; closing the link fd"
                );
            }
            drop(link);
        }
    }
}

fn pin_error_io(error: aya::pin::PinError) -> io::Error {
    match error {
        aya::pin::PinError::SyscallError(sys) => sys.io_error,
        other => io::Error::other(other.to_string()),
    }
}

/// The ids behind a bpf_link pinned in bpffs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedLinkIds {
    /// The link's id.
    pub link_id: u32,
    /// The program it holds.
    pub program_id: u32,
}

/// Reads the link pinned at `path` (e.g. by [`XdpAttachment::pin`]).
pub fn pinned_link(path: &std::path::Path) -> io::Result<PinnedLinkIds> {
    let link = aya::programs::links::PinnedLink::from_pin(path).map_err(link_io_error)?;
    let info = FdLink::from(link).info().map_err(link_io_error)?;
    Ok(PinnedLinkIds {
        link_id: info.id(),
        program_id: info.program_id(),
    })
}

fn link_io_error(error: aya::programs::links::LinkError) -> io::Error {
    match error {
        aya::programs::links::LinkError::SyscallError(sys) => sys.io_error,
        other => io::Error::other(other.to_string()),
    }
}

/// The index of `iface` in the calling thread's network namespace.
pub fn ifindex(iface: &str) -> Result<u32, AttachError> {
    let no_such = || AttachError::NoSuchInterface {
        iface: iface.to_owned(),
    };
    let name = CString::new(iface).map_err(|_| no_such())?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(no_such());
    }
    Ok(index)
}

/// The XDP programs attached to `iface` (calling thread's network namespace).
pub fn inspect(iface: &str) -> Result<InterfaceXdp, AttachError> {
    let index = ifindex(iface)?;
    let link = rtnl::get_link(index)
        .map_err(|source| netlink_error(iface, "reading the XDP state of", source))?
        .ok_or_else(|| AttachError::NoSuchInterface {
            iface: iface.to_owned(),
        })?;
    let mut all = describe(&[link])?;
    Ok(all.pop().expect("one link described"))
}

/// Every interface of the calling thread's network namespace that has an XDP program.
pub fn inspect_all() -> Result<Vec<InterfaceXdp>, AttachError> {
    let links: Vec<rtnl::LinkXdp> = rtnl::dump_links()
        .map_err(|source| netlink_error("*", "reading the XDP state of", source))?
        .into_iter()
        .filter(|link| !link.programs().is_empty())
        .collect();
    describe(&links)
}

fn netlink_error(iface: &str, action: &'static str, source: io::Error) -> AttachError {
    if is_eperm(&source) {
        AttachError::PermissionDenied {
            iface: iface.to_owned(),
            action,
            source,
        }
    } else {
        AttachError::Netlink {
            iface: iface.to_owned(),
            source,
        }
    }
}

fn is_eperm(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

/// Names and link ids of the programs on `links`.
fn describe(links: &[rtnl::LinkXdp]) -> Result<Vec<InterfaceXdp>, AttachError> {
    let wanted: Vec<u32> = links
        .iter()
        .flat_map(|l| l.programs().into_iter().map(|(_, id)| id))
        .collect();
    // Listing programs and links needs CAP_SYS_ADMIN; without it names and holders stay
    // unknown (and such programs are not taken for ours). Other errors are programs or links
    // that went away while we iterated.
    let mut names: Vec<(u32, String)> = Vec::new();
    let mut xdp_links: Vec<(u32, u32)> = Vec::new(); // (program id, link id)
    let mut links_readable = true;
    if !wanted.is_empty() {
        for info in loaded_programs() {
            match info {
                Ok(info) if wanted.contains(&info.id()) => {
                    let name = String::from_utf8_lossy(info.name()).into_owned();
                    names.push((info.id(), name));
                }
                Ok(_) => {}
                Err(error) => {
                    if program_io_error(&error).as_ref().is_some_and(is_eperm) {
                        break;
                    }
                }
            }
        }
        for info in loaded_links() {
            match info {
                Ok(info) => {
                    if matches!(info.link_type(), Ok(LinkType::Xdp))
                        && wanted.contains(&info.program_id())
                    {
                        xdp_links.push((info.program_id(), info.id()));
                    }
                }
                Err(aya::programs::links::LinkError::SyscallError(sys))
                    if is_eperm(&sys.io_error) =>
                {
                    links_readable = false;
                    break;
                }
                Err(_) => {}
            }
        }
    }
    Ok(links
        .iter()
        .map(|link| InterfaceXdp {
            iface: link.name.clone(),
            ifindex: link.ifindex,
            programs: link
                .programs()
                .into_iter()
                .map(|(mode, id)| AttachedXdpProgram {
                    id,
                    name: names
                        .iter()
                        .find(|(pid, _)| *pid == id)
                        .map(|(_, n)| n.clone()),
                    mode,
                    holder: match xdp_links.iter().find(|(pid, _)| *pid == id) {
                        Some((_, link)) => Holder::Link(*link),
                        None if links_readable => Holder::Netlink,
                        None => Holder::Unknown,
                    },
                })
                .collect(),
        })
        .collect())
}

fn inspect_error(what: &'static str, source: io::Error) -> AttachError {
    AttachError::Inspect { what, source }
}

/// The OS error behind an aya program error, if any.
fn program_io_error(error: &ProgramError) -> Option<io::Error> {
    match error {
        ProgramError::SyscallError(sys) => Some(clone_io(&sys.io_error)),
        ProgramError::XdpError(aya::programs::XdpError::NetlinkError(nl)) => {
            nl.raw_os_error().map(io::Error::from_raw_os_error)
        }
        ProgramError::UnknownInterface { .. } => Some(io::Error::from_raw_os_error(libc::ENODEV)),
        _ => None,
    }
}

fn clone_io(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

/// `errno` text plus what it usually means when attaching XDP.
fn explain(error: &ProgramError, mode: AttachedMode) -> String {
    let Some(io) = program_io_error(error) else {
        return error.to_string();
    };
    let hint = match io.raw_os_error() {
        Some(libc::EOPNOTSUPP) if mode == AttachedMode::Driver => {
            "the driver has no native XDP support"
        }
        Some(libc::EOPNOTSUPP) => "not supported on this interface",
        Some(libc::ERANGE) => "the MTU is too large for XDP on this driver",
        Some(libc::EBUSY) => "another XDP program or bpf_link is attached",
        Some(libc::EEXIST) => {
            "a program is attached in the other mode (native and generic XDP cannot be active at \
             the same time) or to an upper device"
        }
        Some(libc::EINVAL) => "the driver rejected it (MTU, LRO or channel settings?)",
        Some(libc::ENODEV) => "the interface disappeared",
        Some(libc::ENOMEM) | Some(libc::ENOSPC) => "the driver could not allocate XDP resources",
        _ => "",
    };
    if hint.is_empty() {
        io.to_string()
    } else {
        format!("{io}: {hint}")
    }
}

/// Attaches `xdp` (loaded, named [`PROGRAM_NAME`]) to `iface` in the calling thread's network
/// namespace. See the module docs for what happens to programs already there.
pub fn attach(xdp: &mut Xdp, iface: &str, mode: AttachMode) -> Result<XdpAttachment, AttachError> {
    let index = ifindex(iface)?;
    let program_id = xdp
        .info()
        .map_err(|error| {
            inspect_error(
                "program info",
                program_io_error(&error).unwrap_or_else(|| io::Error::other(error.to_string())),
            )
        })?
        .id();

    // What is there now.
    let current = inspect(iface)?;
    let mut replaced = Vec::new();
    for existing in &current.programs {
        if !existing.is_ours() {
            return Err(AttachError::ForeignProgram {
                iface: iface.to_owned(),
                existing: existing.clone(),
            });
        }
        if existing.holder != Holder::Netlink {
            return Err(AttachError::AlreadyAttached {
                iface: iface.to_owned(),
                existing: existing.clone(),
            });
        }
    }
    for existing in current.programs {
        detach_netlink_copy(iface, index, &existing)?;
        tracing::warn!(
            iface,
            program_id = existing.id,
            mode = %existing.mode,
            "replaced an older copy of quixd's XDP program that was attached through netlink"
        );
        replaced.push(existing.id);
    }

    // Attach.
    let fatal = |error: &ProgramError| {
        program_io_error(error).is_some_and(|io| {
            matches!(
                io.raw_os_error(),
                Some(libc::EPERM | libc::EACCES | libc::EBUSY | libc::EEXIST | libc::ENODEV)
            )
        })
    };
    let failure = |error: ProgramError, mode: AttachedMode| match program_io_error(&error) {
        Some(io) if is_eperm(&io) => AttachError::PermissionDenied {
            iface: iface.to_owned(),
            action: "attaching XDP to",
            source: io,
        },
        Some(io) if io.raw_os_error() == Some(libc::ENODEV) => AttachError::NoSuchInterface {
            iface: iface.to_owned(),
        },
        _ => AttachError::Attach {
            iface: iface.to_owned(),
            mode,
            reason: explain(&error, mode),
        },
    };
    let (got, driver_error, link_id) = match mode {
        AttachMode::Driver | AttachMode::Skb => {
            let wanted = if mode == AttachMode::Driver {
                AttachedMode::Driver
            } else {
                AttachedMode::Skb
            };
            let link = xdp
                .attach_to_if_index(index, wanted.aya())
                .map_err(|error| failure(error, wanted))?;
            (wanted, None, link)
        }
        AttachMode::Auto => match xdp.attach_to_if_index(index, XdpMode::Driver) {
            Ok(link) => (AttachedMode::Driver, None, link),
            Err(error) if fatal(&error) => return Err(failure(error, AttachedMode::Driver)),
            Err(driver) => {
                let reason = explain(&driver, AttachedMode::Driver);
                match xdp.attach_to_if_index(index, XdpMode::Skb) {
                    Ok(link) => (AttachedMode::Skb, Some(reason), link),
                    Err(skb) if fatal(&skb) => return Err(failure(skb, AttachedMode::Skb)),
                    Err(skb) => {
                        return Err(AttachError::AutoFailed {
                            iface: iface.to_owned(),
                            driver: reason,
                            skb: explain(&skb, AttachedMode::Skb),
                        })
                    }
                }
            }
        },
    };

    // aya falls back to netlink when BPF_LINK_CREATE says EINVAL; such an attachment would
    // outlive us. Converting a netlink "link" into an FdLink fails (and forgets it without
    // detaching), so undo it ourselves then.
    let link = xdp
        .take_link(link_id)
        .map_err(|error| AttachError::Attach {
            iface: iface.to_owned(),
            mode: got,
            reason: error.to_string(),
        })?;
    let link: FdLink = match link.try_into() {
        Ok(link) => link,
        Err(_) => {
            if let Ok(prog) = xdp.fd() {
                let _ = rtnl::set_xdp(
                    index,
                    None,
                    got.netlink_flag() | rtnl::XDP_FLAGS_REPLACE,
                    Some(prog.as_fd()),
                );
            }
            return Err(AttachError::NoLinkSupport {
                iface: iface.to_owned(),
            });
        }
    };
    let link_id = link
        .info()
        .map_err(|error| inspect_error("link info", link_io_error(error)))?
        .id();
    if let Some(reason) = &driver_error {
        tracing::info!(
            iface,
            "XDP attached in SKB mode; driver mode failed: {reason}"
        );
    }
    Ok(XdpAttachment {
        link: Some(link),
        info: AttachInfo {
            iface: iface.to_owned(),
            ifindex: index,
            mode: got,
            driver_error,
            program_id,
            link_id,
            replaced,
        },
    })
}

/// Detaches a netlink-attached copy of our program, only if it is still the one there.
fn detach_netlink_copy(
    iface: &str,
    index: u32,
    existing: &AttachedXdpProgram,
) -> Result<(), AttachError> {
    let replace_error = |reason: String| AttachError::Replace {
        iface: iface.to_owned(),
        existing: existing.clone(),
        reason,
    };
    let fd = bpf::prog_fd_by_id(existing.id).map_err(|e| replace_error(e.to_string()))?;
    rtnl::set_xdp(
        index,
        None,
        existing.mode.netlink_flag() | rtnl::XDP_FLAGS_REPLACE,
        Some(fd.as_fd()),
    )
    .map_err(|error| match error.message {
        Some(message) => replace_error(format!("{}: {message}", error.error)),
        None => replace_error(error.error.to_string()),
    })
}

trait FilterEperm {
    fn filter_eperm(self) -> Self;
}

impl FilterEperm for io::Result<()> {
    /// EPERM/EACCES count as success.
    fn filter_eperm(self) -> Self {
        match self {
            Err(error) if is_eperm(&error) => Ok(()),
            other => other,
        }
    }
}

/// `BPF_LINK_DETACH` on the link with id `link_id` (which needs CAP_SYS_ADMIN: looking a link
/// up by id does), so that it detaches even if its fd was shared with another process.
fn force_detach(link_id: u32) -> io::Result<()> {
    let fd = bpf::link_fd_by_id(link_id)?;
    bpf::link_detach(fd.as_fd())
}

/// The few raw bpf(2) commands aya does not expose.
mod bpf {
    use super::*;

    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    const BPF_LINK_DETACH: libc::c_long = 34;

    fn sys_bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> io::Result<libc::c_long> {
        // SAFETY: `attr` is a zeroed, 64-byte `union bpf_attr` prefix that outlives the call;
        // the kernel reads at most `size` bytes of it.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr.as_mut_ptr(),
                std::mem::size_of_val(attr),
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    fn fd_from(ret: libc::c_long) -> OwnedFd {
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(ret as i32) }
    }

    /// `BPF_PROG_GET_FD_BY_ID`: attr { prog_id: u32, next_id: u32, open_flags: u32 }.
    pub(super) fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
        let mut attr = [0u64; 8];
        attr[0] = first_u32(id);
        sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(fd_from)
    }

    /// `BPF_LINK_GET_FD_BY_ID`: attr { link_id: u32, next_id: u32, open_flags: u32 }.
    pub(super) fn link_fd_by_id(id: u32) -> io::Result<OwnedFd> {
        let mut attr = [0u64; 8];
        attr[0] = first_u32(id);
        sys_bpf(BPF_LINK_GET_FD_BY_ID, &mut attr).map(fd_from)
    }

    /// `BPF_LINK_DETACH`: attr { link_fd: u32 }.
    pub(super) fn link_detach(fd: BorrowedFd<'_>) -> io::Result<()> {
        let mut attr = [0u64; 8];
        attr[0] = first_u32(fd.as_raw_fd() as u32);
        sys_bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
    }

    /// A u64 whose first four bytes in memory are `value` (native endian).
    fn first_u32(value: u32) -> u64 {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&value.to_ne_bytes());
        u64::from_ne_bytes(bytes)
    }
}

/// Just enough rtnetlink for XDP: read a link's (or every link's) `IFLA_XDP`, and set/clear
/// a program with `IFLA_XDP_EXPECTED_FD`.
mod rtnl {
    use super::*;

    const RTM_NEWLINK: u16 = 16;
    const RTM_GETLINK: u16 = 18;
    const RTM_SETLINK: u16 = 19;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_ACK: u16 = 0x4;
    const NLM_F_DUMP: u16 = 0x300;
    const NLM_F_CAPPED: u16 = 0x100;
    const NLM_F_ACK_TLVS: u16 = 0x200;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_EXT_MASK: u16 = 29;
    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_FD: u16 = 1;
    const IFLA_XDP_ATTACHED: u16 = 2;
    const IFLA_XDP_FLAGS: u16 = 3;
    const IFLA_XDP_PROG_ID: u16 = 4;
    const IFLA_XDP_DRV_PROG_ID: u16 = 5;
    const IFLA_XDP_SKB_PROG_ID: u16 = 6;
    const IFLA_XDP_HW_PROG_ID: u16 = 7;
    const IFLA_XDP_EXPECTED_FD: u16 = 8;
    const XDP_ATTACHED_DRV: u8 = 1;
    const XDP_ATTACHED_SKB: u8 = 2;
    const XDP_ATTACHED_HW: u8 = 3;
    const NLA_F_NESTED: u16 = 1 << 15;
    const NLA_TYPE_MASK: u16 = 0x3fff;
    const SOL_NETLINK: libc::c_int = 270;
    const NETLINK_CAP_ACK: libc::c_int = 10;
    const NETLINK_EXT_ACK: libc::c_int = 11;
    const NLMSGERR_ATTR_MSG: u16 = 1;
    const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
    const NLMSG_HDRLEN: usize = 16;
    const IFINFOMSG_LEN: usize = 16;

    pub(super) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
    pub(super) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    pub(super) const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
    pub(super) const XDP_FLAGS_REPLACE: u32 = 1 << 4;

    /// One link's XDP state.
    #[derive(Debug, Clone, Default)]
    pub(super) struct LinkXdp {
        pub ifindex: u32,
        pub name: String,
        pub drv_prog: u32,
        pub skb_prog: u32,
        pub hw_prog: u32,
    }

    impl LinkXdp {
        pub fn programs(&self) -> Vec<(AttachedMode, u32)> {
            [
                (AttachedMode::Driver, self.drv_prog),
                (AttachedMode::Skb, self.skb_prog),
                (AttachedMode::Hardware, self.hw_prog),
            ]
            .into_iter()
            .filter(|(_, id)| *id != 0)
            .collect()
        }
    }

    /// A netlink error with the kernel's extended-ack message, if it sent one.
    #[derive(Debug)]
    pub(super) struct NlError {
        pub error: io::Error,
        pub message: Option<String>,
    }

    impl From<io::Error> for NlError {
        fn from(error: io::Error) -> Self {
            Self {
                error,
                message: None,
            }
        }
    }

    struct Socket {
        fd: OwnedFd,
    }

    impl Socket {
        fn open() -> io::Result<Self> {
            // SAFETY: plain socket(2); the result is checked.
            let fd = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_ROUTE,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a new fd we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
                let one: libc::c_int = 1;
                // SAFETY: valid fd and option buffer; failure only loses error messages.
                unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        SOL_NETLINK,
                        opt,
                        (&one as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    );
                }
            }
            Ok(Self { fd })
        }

        /// Sends `payload` as one message and collects the payloads of the `RTM_NEWLINK`
        /// answers until the request is complete.
        fn request(&self, kind: u16, flags: u16, payload: &[u8]) -> Result<Vec<Vec<u8>>, NlError> {
            const SEQ: u32 = 1;
            let mut message = Vec::with_capacity(NLMSG_HDRLEN + payload.len());
            message.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
            message.extend_from_slice(&kind.to_ne_bytes());
            message.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
            message.extend_from_slice(&SEQ.to_ne_bytes());
            message.extend_from_slice(&0u32.to_ne_bytes());
            message.extend_from_slice(payload);
            // SAFETY: an all-zero sockaddr_nl is valid; we then set the family.
            let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            // SAFETY: valid fd, buffer and address for the duration of the call.
            let sent = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    message.as_ptr().cast(),
                    message.len(),
                    0,
                    (&kernel as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if sent < 0 {
                return Err(io::Error::last_os_error().into());
            }
            let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
            let ack = flags & NLM_F_ACK != 0;
            let mut answers = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                // SAFETY: valid fd and buffer.
                let n = unsafe {
                    libc::recv(
                        self.fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_TRUNC,
                    )
                };
                if n < 0 {
                    let error = io::Error::last_os_error();
                    if error.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(error.into());
                }
                let n = n as usize;
                if n > buf.len() {
                    return Err(io::Error::other("netlink answer larger than 64 KiB").into());
                }
                let mut rest = &buf[..n];
                while rest.len() >= NLMSG_HDRLEN {
                    let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                    let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                    let flags = u16::from_ne_bytes(rest[6..8].try_into().unwrap());
                    let seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
                    if len < NLMSG_HDRLEN || len > rest.len() {
                        return Err(io::Error::other("malformed netlink answer").into());
                    }
                    let body = &rest[NLMSG_HDRLEN..len];
                    rest = &rest[align4(len).min(rest.len())..];
                    if seq != SEQ {
                        continue;
                    }
                    match kind {
                        NLMSG_DONE => return Ok(answers),
                        NLMSG_ERROR => {
                            if body.len() < 4 {
                                return Err(io::Error::other("short netlink error").into());
                            }
                            let code = i32::from_ne_bytes(body[0..4].try_into().unwrap());
                            if code == 0 {
                                return Ok(answers);
                            }
                            return Err(NlError {
                                error: io::Error::from_raw_os_error(-code),
                                message: extack_message(body, flags),
                            });
                        }
                        RTM_NEWLINK => {
                            answers.push(body.to_vec());
                            if !dump && !ack {
                                return Ok(answers);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn align4(len: usize) -> usize {
        (len + 3) & !3
    }

    /// `NLMSGERR_ATTR_MSG` from an error message's TLVs, if present.
    fn extack_message(body: &[u8], flags: u16) -> Option<String> {
        if flags & NLM_F_ACK_TLVS == 0 || body.len() < 4 + NLMSG_HDRLEN {
            return None;
        }
        let original_len = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            u32::from_ne_bytes(body[4..8].try_into().unwrap()) as usize
        };
        let tlvs = body.get(4 + align4(original_len)..)?;
        attributes(tlvs)
            .find(|(kind, _)| *kind == NLMSGERR_ATTR_MSG)
            .map(|(_, data)| c_string(data))
    }

    /// (type, data) of each attribute in `buf`.
    fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
        std::iter::from_fn(move || {
            if buf.len() < 4 {
                return None;
            }
            let len = u16::from_ne_bytes(buf[0..2].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(buf[2..4].try_into().unwrap()) & NLA_TYPE_MASK;
            if len < 4 || len > buf.len() {
                return None;
            }
            let data = &buf[4..len];
            buf = &buf[align4(len).min(buf.len())..];
            Some((kind, data))
        })
    }

    fn c_string(data: &[u8]) -> String {
        let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        String::from_utf8_lossy(&data[..end]).into_owned()
    }

    fn u32_of(data: &[u8]) -> u32 {
        data.get(..4)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
            .unwrap_or(0)
    }

    fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
        buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(data);
        buf.resize(align4(buf.len()), 0);
    }

    fn ifinfomsg(index: u32) -> Vec<u8> {
        let mut msg = vec![0u8; IFINFOMSG_LEN];
        msg[0] = libc::AF_UNSPEC as u8;
        msg[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
        msg
    }

    fn parse_link(body: &[u8]) -> Option<LinkXdp> {
        if body.len() < IFINFOMSG_LEN {
            return None;
        }
        let mut link = LinkXdp {
            ifindex: i32::from_ne_bytes(body[4..8].try_into().unwrap()) as u32,
            ..LinkXdp::default()
        };
        for (kind, data) in attributes(&body[IFINFOMSG_LEN..]) {
            match kind {
                IFLA_IFNAME => link.name = c_string(data),
                IFLA_XDP => {
                    let mut attached = 0u8;
                    let mut prog_id = 0u32;
                    for (kind, data) in attributes(data) {
                        match kind {
                            IFLA_XDP_ATTACHED => attached = data.first().copied().unwrap_or(0),
                            IFLA_XDP_PROG_ID => prog_id = u32_of(data),
                            IFLA_XDP_DRV_PROG_ID => link.drv_prog = u32_of(data),
                            IFLA_XDP_SKB_PROG_ID => link.skb_prog = u32_of(data),
                            IFLA_XDP_HW_PROG_ID => link.hw_prog = u32_of(data),
                            _ => {}
                        }
                    }
                    // Kernels before the per-mode ids (4.19) only say the mode and the id.
                    if link.drv_prog == 0 && link.skb_prog == 0 && link.hw_prog == 0 {
                        match attached {
                            XDP_ATTACHED_DRV => link.drv_prog = prog_id,
                            XDP_ATTACHED_SKB => link.skb_prog = prog_id,
                            XDP_ATTACHED_HW => link.hw_prog = prog_id,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Some(link)
    }

    fn get_request(index: u32) -> Vec<u8> {
        let mut payload = ifinfomsg(index);
        push_attr(
            &mut payload,
            IFLA_EXT_MASK,
            &RTEXT_FILTER_SKIP_STATS.to_ne_bytes(),
        );
        payload
    }

    /// The XDP state of link `index`, `None` if there is no such link.
    pub(super) fn get_link(index: u32) -> io::Result<Option<LinkXdp>> {
        let socket = Socket::open()?;
        match socket.request(RTM_GETLINK, 0, &get_request(index)) {
            Ok(answers) => Ok(answers.first().and_then(|body| parse_link(body))),
            Err(error) if error.error.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(error) => Err(error.error),
        }
    }

    /// The XDP state of every link.
    pub(super) fn dump_links() -> io::Result<Vec<LinkXdp>> {
        let socket = Socket::open()?;
        let answers = socket
            .request(RTM_GETLINK, NLM_F_DUMP, &get_request(0))
            .map_err(|e| e.error)?;
        Ok(answers.iter().filter_map(|body| parse_link(body)).collect())
    }

    /// `RTM_SETLINK` with `IFLA_XDP { FD = prog or -1, FLAGS = flags, EXPECTED_FD }`.
    pub(super) fn set_xdp(
        index: u32,
        prog: Option<BorrowedFd<'_>>,
        flags: u32,
        expected: Option<BorrowedFd<'_>>,
    ) -> Result<(), NlError> {
        let mut nested = Vec::new();
        let fd = prog.map_or(-1, |fd| fd.as_raw_fd());
        push_attr(&mut nested, IFLA_XDP_FD, &fd.to_ne_bytes());
        push_attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
        if let Some(expected) = expected {
            push_attr(
                &mut nested,
                IFLA_XDP_EXPECTED_FD,
                &expected.as_raw_fd().to_ne_bytes(),
            );
        }
        let mut payload = ifinfomsg(index);
        push_attr(&mut payload, IFLA_XDP | NLA_F_NESTED, &nested);
        let socket = Socket::open()?;
        socket.request(RTM_SETLINK, NLM_F_ACK, &payload).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_mode_names_round_trip() {
        for name in AttachMode::NAMES {
            let mode: AttachMode = name.parse().unwrap();
            assert_eq!(mode.to_string(), name);
        }
        assert!("sideways"
            .parse::<AttachMode>()
            .unwrap_err()
            .contains("sideways"));
        #[derive(Deserialize)]
        struct Config {
            mode: AttachMode,
        }
        let config: Config = toml::from_str("mode = \"skb\"").unwrap();
        assert_eq!(config.mode, AttachMode::Skb);
        assert_eq!(AttachMode::default(), AttachMode::Auto);
    }

    #[test]
    fn foreign_program_message_names_everything() {
        let error = AttachError::ForeignProgram {
            iface: "eth7".into(),
            existing: AttachedXdpProgram {
                id: 42,
                name: Some("xdp_fw".into()),
                mode: AttachedMode::Skb,
                holder: Holder::Netlink,
            },
        };
        let text = error.to_string();
        assert!(text.contains("`eth7`"), "{text}");
        assert!(
            text.contains("program id 42 `xdp_fw` in skb mode"),
            "{text}"
        );
        assert!(
            text.contains("ip link set dev eth7 xdpgeneric off"),
            "{text}"
        );
    }

    #[test]
    fn missing_interface_message() {
        let error = ifindex("quixd-no-such0").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("`quixd-no-such0` does not exist"), "{text}");
        assert!(text.contains("ip link"), "{text}");
        assert!(ifindex("bad\0name").is_err());
    }
}
