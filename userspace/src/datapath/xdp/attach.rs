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
use std::os::fd::AsFd;

use aya::programs::links::{FdLink, LinkType};
use aya::programs::{loaded_links, loaded_programs, ProgramError, Xdp, XdpMode};
use serde::{Deserialize, Serialize};

use super::netlink::xdp as rtnl;
pub use super::options::AttachMode;
use super::program::PROGRAM_NAME;
use super::sys::bpf;

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

impl rtnl::LinkXdp {
    /// The (mode, program id) pairs attached.
    fn programs(&self) -> Vec<(AttachedMode, u32)> {
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

/// The index of `iface` in the calling thread's network namespace.
pub fn ifindex(iface: &str) -> Result<u32, AttachError> {
    let no_such = || AttachError::NoSuchInterface {
        iface: iface.to_owned(),
    };
    let name = CString::new(iface).map_err(|_| no_such())?;
    bpf::if_nametoindex(&name).ok_or_else(no_such)
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
    .map_err(|error| replace_error(error.to_string()))
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
