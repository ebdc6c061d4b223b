//! The XDP steering program (`ebpf/quixd_xdp.c`): the embedded object, its map and counter
//! contract (mirrors `ebpf/quixd_xdp.h`), and a typed loader on top of aya.
//!
//! The program redirects IPv4/IPv6 UDP datagrams to one of our ports (and, with the address
//! filter on, one of our addresses) into the AF_XDP socket registered in `xsks` for the
//! receiving queue, and passes everything else to the kernel. It never drops.
//!
//! [`XdpProgram::attach`] attaches it to an interface through a bpf_link (see
//! [`super::attach`]); the program object then owns the link and detaches it when dropped.
//! [`ProgramMaps`] ([`maps`]) reads the maps of a copy already in the kernel.

use std::error::Error as _;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapError, XskMap};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfError, EbpfLoader};

use super::attach::XdpAttachment;
pub use super::attach::{AttachError, AttachInfo, AttachMode, AttachedMode};

pub mod maps;

use maps::{
    address_key, config, is_not_found, map_error, pin_error_io, read_address_filter,
    read_addresses, read_counters, read_ports, remove_key,
};
pub use maps::{MapSummary, ProgramMaps, MAP_NAMES};

/// The compiled program (`cargo xtask build-ebpf`), 8-byte aligned as aya needs.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!("../../../../../ebpf/quixd_xdp.o")
}

/// The XDP function's name in the object.
pub const PROGRAM_NAME: &str = "quixd_xdp";

/// Default `max_entries` of `xsks` (the highest usable queue index is one less).
pub const DEFAULT_MAX_QUEUES: u32 = 64;

/// Errors of [`XdpProgram`].
#[derive(Debug, thiserror::Error)]
pub enum XdpProgramError {
    /// Parsing the object or creating its maps failed.
    #[error("loading the eBPF object failed: {0}{hint}", hint = permission_hint(.0))]
    Object(#[source] EbpfError),
    /// The object lacks the program (stale object?).
    #[error("the eBPF object has no program `{0}`")]
    MissingProgram(&'static str),
    /// The object lacks a map (stale object?).
    #[error("the eBPF object has no map `{0}`")]
    MissingMap(&'static str),
    /// Loading the program into the kernel failed (verifier or privileges).
    #[error(
        "loading program `{PROGRAM_NAME}` into the kernel failed: {0}{hint}",
        hint = permission_hint(.0)
    )]
    Program(#[source] aya::programs::ProgramError),
    /// A map operation failed.
    #[error("map `{name}`: {source}")]
    Map {
        /// The map's name.
        name: &'static str,
        /// The cause.
        #[source]
        source: MapError,
    },
    /// `BPF_PROG_TEST_RUN` failed.
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(#[source] aya::programs::ProgramError),
    /// Attaching, detaching or pinning the attachment failed.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// [`XdpProgram::pin`] on a program that is not attached.
    #[error("the XDP program is not attached to an interface")]
    NotAttached,
    /// Pinning a map failed.
    #[error("pinning map `{name}` at {path} failed: {source}")]
    Pin {
        /// The map's name.
        name: &'static str,
        /// The pin path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No loaded program has this id (it was unloaded).
    #[error("no BPF program with id {0} is loaded")]
    NoSuchProgram(u32),
    /// Reading a loaded program's or map's kernel info failed.
    #[error("reading the kernel's info of BPF program {id} failed: {source}")]
    Info {
        /// The program id.
        id: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl XdpProgramError {
    /// The OS error behind this one, if any (e.g. `EPERM` when not privileged).
    pub fn os_error(&self) -> Option<&io::Error> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = self.source();
        while let Some(err) = current {
            if let Some(io_error) = err.downcast_ref::<io::Error>() {
                return Some(io_error);
            }
            if let Some(sys) = err.downcast_ref::<aya::sys::SyscallError>() {
                return Some(&sys.io_error);
            }
            // `#[error(transparent)]` variants skip the wrapped error in the source chain.
            match err.downcast_ref::<MapError>() {
                Some(MapError::SyscallError(sys)) => return Some(&sys.io_error),
                Some(MapError::IoError(io_error)) => return Some(io_error),
                _ => {}
            }
            if let Some(aya::programs::ProgramError::SyscallError(sys)) =
                err.downcast_ref::<aya::programs::ProgramError>()
            {
                return Some(&sys.io_error);
            }
            current = err.source();
        }
        None
    }

    /// True when the kernel refused for lack of privileges (`EPERM`/`EACCES`): loading needs
    /// `CAP_BPF` and `CAP_NET_ADMIN` (or `CAP_SYS_ADMIN`).
    pub fn is_permission_denied(&self) -> bool {
        self.os_error()
            .is_some_and(|e| matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)))
    }
}

/// " (permission denied: ...)" when `error`'s chain holds EPERM/EACCES, else "".
fn permission_hint<E: std::error::Error + 'static>(error: &E) -> &'static str {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = current {
        let errno = err
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            .or_else(|| {
                err.downcast_ref::<aya::sys::SyscallError>()
                    .and_then(|sys| sys.io_error.raw_os_error())
            });
        if matches!(errno, Some(libc::EPERM | libc::EACCES)) {
            return " (permission denied: loading an XDP program needs CAP_BPF and CAP_NET_ADMIN, \
                    or CAP_SYS_ADMIN; run as root)";
        }
        current = err.source();
    }
    ""
}

type Result<T, E = XdpProgramError> = std::result::Result<T, E>;

/// An XDP verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAction {
    /// `XDP_ABORTED` (0).
    Aborted,
    /// `XDP_DROP` (1).
    Drop,
    /// `XDP_PASS` (2).
    Pass,
    /// `XDP_TX` (3).
    Tx,
    /// `XDP_REDIRECT` (4).
    Redirect,
    /// Any other return value.
    Other(u32),
}

impl From<u32> for XdpAction {
    fn from(value: u32) -> Self {
        match value {
            0 => Self::Aborted,
            1 => Self::Drop,
            2 => Self::Pass,
            3 => Self::Tx,
            4 => Self::Redirect,
            other => Self::Other(other),
        }
    }
}

/// The program's counters summed over all CPUs. See [`counter`] for their meaning.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProgramCounters {
    /// Redirected into an AF_XDP socket.
    pub redirected: u64,
    /// Passed to the kernel, any reason.
    pub passed: u64,
    /// Not UDP to one of our ports (and addresses, when filtered).
    pub not_ours: u64,
    /// Truncated or inconsistent headers.
    pub malformed: u64,
    /// Ours, but no socket registered for the receiving queue.
    pub no_socket: u64,
    /// IPv4 fragments.
    pub fragment: u64,
    /// IPv6 with an extension header.
    pub ipv6_ext: u64,
    /// Ours, but too long for an AF_XDP frame.
    pub oversize: u64,
}

impl ProgramCounters {
    /// `self - earlier`, field by field (wrapping, as counters may be reset by a reload).
    pub fn delta_since(&self, earlier: &Self) -> Self {
        Self {
            redirected: self.redirected.wrapping_sub(earlier.redirected),
            passed: self.passed.wrapping_sub(earlier.passed),
            not_ours: self.not_ours.wrapping_sub(earlier.not_ours),
            malformed: self.malformed.wrapping_sub(earlier.malformed),
            no_socket: self.no_socket.wrapping_sub(earlier.no_socket),
            fragment: self.fragment.wrapping_sub(earlier.fragment),
            ipv6_ext: self.ipv6_ext.wrapping_sub(earlier.ipv6_ext),
            oversize: self.oversize.wrapping_sub(earlier.oversize),
        }
    }
}

/// Options for [`XdpProgram::load_with`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `max_entries` of `xsks`: one more than the highest rx queue index served.
    pub max_queues: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_queues: DEFAULT_MAX_QUEUES,
        }
    }
}

/// The loaded steering program and its maps, and its attachment to an interface once
/// [`Self::attach`]ed. Dropping it detaches the program and unloads everything that is not
/// pinned.
#[derive(Debug)]
pub struct XdpProgram {
    // Dropped first: detach before the program and its maps go.
    attachment: Option<XdpAttachment>,
    ebpf: Ebpf,
}

impl XdpProgram {
    /// Loads the embedded object with default options.
    pub fn load() -> Result<Self> {
        Self::load_with(&LoadOptions::default())
    }

    /// Loads the embedded object: creates the maps and verifies the program.
    pub fn load_with(options: &LoadOptions) -> Result<Self> {
        let ebpf = EbpfLoader::new()
            .map_max_entries(maps::XSKS, options.max_queues)
            .load(object())
            .map_err(XdpProgramError::Object)?;
        let mut this = Self {
            attachment: None,
            ebpf,
        };
        this.program_mut()?
            .load()
            .map_err(XdpProgramError::Program)?;
        Ok(this)
    }

    /// The XDP program (e.g. to attach it).
    pub fn program(&self) -> Result<&Xdp> {
        let program = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(XdpProgramError::MissingProgram(PROGRAM_NAME))?;
        program.try_into().map_err(XdpProgramError::Program)
    }

    /// The XDP program, mutably (attach/detach).
    pub fn program_mut(&mut self) -> Result<&mut Xdp> {
        let program = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(XdpProgramError::MissingProgram(PROGRAM_NAME))?;
        program.try_into().map_err(XdpProgramError::Program)
    }

    /// The underlying aya object, for anything not covered here.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Attaches the program to `iface` (in the calling thread's network namespace) through a
    /// bpf_link that this object owns: dropping it, [`Self::detach`], or the process exiting
    /// detaches the program. A program on `iface` that is not ours is never replaced; see
    /// [`super::attach`] for the rules. The result's `Display` is the mode got (`driver`, or
    /// `skb (driver mode failed: ...)`).
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<AttachInfo> {
        if let Some(current) = &self.attachment {
            return Err(AttachError::AttachedTwice {
                iface: current.info().iface.clone(),
            }
            .into());
        }
        let attachment = super::attach::attach(self.program_mut()?, iface, mode)?;
        let info = attachment.info().clone();
        self.attachment = Some(attachment);
        Ok(info)
    }

    /// Where and how the program is attached, if it is.
    pub fn attachment(&self) -> Option<&AttachInfo> {
        self.attachment.as_ref().map(XdpAttachment::info)
    }

    /// Detaches the program from its interface (no-op when not attached).
    pub fn detach(&mut self) -> Result<()> {
        match self.attachment.take() {
            Some(attachment) => Ok(attachment.detach()?),
            None => Ok(()),
        }
    }

    /// Hands the attachment over to bpffs so that it outlives this process: pins every map at
    /// `dir/<map name>` (see [`MAP_NAMES`]) and the bpf_link at `dir/link`. `dir` must exist on
    /// a mounted bpffs. Removing the `link` pin later detaches the program; removing the map
    /// pins frees the maps once it is gone. Returns the pinned paths, link last. If a map
    /// cannot be pinned, nothing stays pinned and the program stays attached (still owned by
    /// this object); if the link cannot be pinned, the map pins are removed and the program is
    /// detached.
    pub fn pin(&mut self, dir: &Path) -> Result<Vec<PathBuf>> {
        if self.attachment.is_none() {
            return Err(XdpProgramError::NotAttached);
        }
        let mut pinned = Vec::new();
        for name in MAP_NAMES {
            let path = dir.join(name);
            let result = self.map(name)?.pin(&path);
            if let Err(error) = result {
                for path in &pinned {
                    let _ = std::fs::remove_file(path);
                }
                return Err(XdpProgramError::Pin {
                    name,
                    path,
                    source: pin_error_io(error),
                });
            }
            pinned.push(path);
        }
        let link_path = dir.join("link");
        let attachment = self.attachment.take().expect("checked above");
        if let Err(error) = attachment.pin(&link_path) {
            for path in &pinned {
                let _ = std::fs::remove_file(path);
            }
            return Err(error.into());
        }
        pinned.push(link_path);
        Ok(pinned)
    }

    fn map(&self, name: &'static str) -> Result<&Map> {
        self.ebpf.map(name).ok_or(XdpProgramError::MissingMap(name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map> {
        self.ebpf
            .map_mut(name)
            .ok_or(XdpProgramError::MissingMap(name))
    }

    fn ports_map(&mut self) -> Result<HashMap<&mut aya::maps::MapData, u16, u8>> {
        let map = self.map_mut(maps::PORTS)?;
        HashMap::try_from(map).map_err(|source| map_error(maps::PORTS, source))
    }

    fn addrs_map(&mut self) -> Result<HashMap<&mut aya::maps::MapData, [u8; 16], u8>> {
        let map = self.map_mut(maps::ADDRS)?;
        HashMap::try_from(map).map_err(|source| map_error(maps::ADDRS, source))
    }

    /// Makes UDP destination `port` ours.
    pub fn add_port(&mut self, port: u16) -> Result<()> {
        self.ports_map()?
            .insert(port, 1, 0)
            .map_err(|source| map_error(maps::PORTS, source))
    }

    /// Stops steering `port`; returns whether it was in the map.
    pub fn remove_port(&mut self, port: u16) -> Result<bool> {
        remove_key(&mut self.ports_map()?, &port).map_err(|source| map_error(maps::PORTS, source))
    }

    /// The ports currently steered, sorted.
    pub fn ports(&mut self) -> Result<Vec<u16>> {
        read_ports(self.map(maps::PORTS)?)
    }

    /// Replaces the steered ports with `ports`.
    pub fn set_ports(&mut self, ports: &[u16]) -> Result<()> {
        for old in self.ports()? {
            if !ports.contains(&old) {
                self.remove_port(old)?;
            }
        }
        for &port in ports {
            self.add_port(port)?;
        }
        Ok(())
    }

    /// Adds a destination address (used when the address filter is on).
    pub fn add_address(&mut self, addr: IpAddr) -> Result<()> {
        self.addrs_map()?
            .insert(address_key(addr), 1, 0)
            .map_err(|source| map_error(maps::ADDRS, source))
    }

    /// Removes a destination address; returns whether it was in the map.
    pub fn remove_address(&mut self, addr: IpAddr) -> Result<bool> {
        remove_key(&mut self.addrs_map()?, &address_key(addr))
            .map_err(|source| map_error(maps::ADDRS, source))
    }

    /// The addresses in the address map (IPv4-mapped keys as [`IpAddr::V4`]).
    pub fn addresses(&mut self) -> Result<Vec<IpAddr>> {
        read_addresses(self.map(maps::ADDRS)?)
    }

    /// Turns the destination address filter on or off.
    pub fn set_address_filter(&mut self, enabled: bool) -> Result<()> {
        let map = self.map_mut(maps::CONFIG)?;
        let mut config: Array<_, u32> =
            Array::try_from(map).map_err(|source| map_error(maps::CONFIG, source))?;
        config
            .set(config::ADDR_FILTER, u32::from(enabled), 0)
            .map_err(|source| map_error(maps::CONFIG, source))
    }

    /// Frames longer than `bytes` (from the Ethernet header) pass to the kernel instead of
    /// being redirected, where the socket would drop them; 0 lifts the limit.
    pub fn set_max_frame(&mut self, bytes: u32) -> Result<()> {
        let map = self.map_mut(maps::CONFIG)?;
        let mut config: Array<_, u32> =
            Array::try_from(map).map_err(|source| map_error(maps::CONFIG, source))?;
        config
            .set(config::MAX_FRAME, bytes, 0)
            .map_err(|source| map_error(maps::CONFIG, source))
    }

    /// Whether the destination address filter is on.
    pub fn address_filter(&self) -> Result<bool> {
        read_address_filter(self.map(maps::CONFIG)?)
    }

    /// Registers the AF_XDP socket `socket` (bound to the queue) for rx queue `queue`.
    pub fn register_xsk(&mut self, queue: u32, socket: impl AsFd) -> Result<()> {
        let map = self.map_mut(maps::XSKS)?;
        let mut xsks = XskMap::try_from(map).map_err(|source| map_error(maps::XSKS, source))?;
        xsks.set(queue, socket.as_fd(), 0)
            .map_err(|source| map_error(maps::XSKS, source))
    }

    /// Removes the socket of rx queue `queue`; its packets go to the kernel again.
    pub fn unregister_xsk(&mut self, queue: u32) -> Result<()> {
        let map = self.map_mut(maps::XSKS)?;
        let mut xsks = XskMap::try_from(map).map_err(|source| map_error(maps::XSKS, source))?;
        match xsks.unset(queue) {
            Err(source) if !is_not_found(&source) => Err(map_error(maps::XSKS, source)),
            _ => Ok(()),
        }
    }

    /// Reads the per-CPU counters, summed.
    pub fn counters(&self) -> Result<ProgramCounters> {
        read_counters(self.map(maps::COUNTERS)?)
    }

    /// Runs the program once on `packet` with `BPF_PROG_TEST_RUN` (no device, rx queue 0) and
    /// returns its verdict. Counters are updated as for a received packet; a redirect is not
    /// carried out.
    pub fn test_run(&self, packet: &[u8]) -> Result<XdpAction> {
        self.run(packet, None)
    }

    /// Like [`Self::test_run`], as if received on rx queue `rx_queue_index` of the interface
    /// `ifindex` (in the caller's network namespace; the queue must exist).
    pub fn test_run_on_queue(
        &self,
        packet: &[u8],
        ifindex: u32,
        rx_queue_index: u32,
    ) -> Result<XdpAction> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex; the kernel wants data = 0, data_end = packet length.
        let data_end = u32::try_from(packet.len()).unwrap_or(u32::MAX);
        let fields = [0, data_end, 0, ifindex, rx_queue_index, 0];
        let mut ctx = [0u8; 24];
        for (chunk, field) in ctx.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&field.to_ne_bytes());
        }
        self.run(packet, Some(&ctx))
    }

    fn run(&self, packet: &[u8], ctx: Option<&[u8]>) -> Result<XdpAction> {
        let options = TestRunOptions {
            data_in: Some(packet),
            ctx_in: ctx,
            ..TestRunOptions::new()
        };
        let result = self
            .program()?
            .test_run(options)
            .map_err(XdpProgramError::TestRun)?;
        Ok(XdpAction::from(result.return_value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_is_embedded_and_aligned() {
        let object = object();
        assert_eq!(&object[..4], b"\x7fELF");
        assert_eq!(object.as_ptr() as usize % 8, 0);
    }
}
