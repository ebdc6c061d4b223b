//! The XDP steering program (`ebpf/quixd_xdp.c`): the embedded object, its map and counter
//! contract (mirrors `ebpf/quixd_xdp.h`), and a typed loader on top of aya.
//!
//! The program redirects IPv4/IPv6 UDP datagrams to one of our ports (and, with the address
//! filter on, one of our addresses) into the AF_XDP socket registered in `xsks` for the
//! receiving queue, and passes everything else to the kernel. It never drops.
//!
//! Nothing here attaches the program to an interface; [`XdpProgram::program_mut`] gives the
//! [`Xdp`] program for that.

use std::error::Error as _;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::AsFd;

use aya::maps::{Array, HashMap, Map, MapError, PerCpuArray, XskMap};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfError, EbpfLoader};

/// The compiled program (`cargo xtask build-ebpf`), 8-byte aligned as aya needs.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!("../../../../ebpf/quixd_xdp.o")
}

/// The XDP function's name in the object.
pub const PROGRAM_NAME: &str = "quixd_xdp";

/// Map names in the object.
pub mod maps {
    /// `BPF_MAP_TYPE_XSKMAP`: rx queue index (u32) -> AF_XDP socket.
    pub const XSKS: &str = "xsks";
    /// `BPF_MAP_TYPE_HASH`: UDP destination port (u16, host byte order) -> u8 (reserved, 1).
    pub const PORTS: &str = "ports";
    /// `BPF_MAP_TYPE_HASH`: destination address (16 bytes, network order, IPv4 as
    /// `::ffff:a.b.c.d`) -> u8 (reserved, 1).
    pub const ADDRS: &str = "addrs";
    /// `BPF_MAP_TYPE_ARRAY`: u32 index -> u32 value, see [`super::config`].
    pub const CONFIG: &str = "config";
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`: u32 index -> u64 per CPU, see [`super::counter`].
    pub const COUNTERS: &str = "counters";
}

/// Indices of the `config` array.
pub mod config {
    /// Nonzero: only destinations in `addrs` are ours.
    pub const ADDR_FILTER: u32 = 0;
}

/// Indices of the `counters` per-CPU array. Every packet counts once in `REDIRECTED` or
/// `PASSED`; every passed packet counts once in exactly one of the reasons
/// `NOT_OURS`, `MALFORMED`, `NO_SOCKET`, `FRAGMENT`, `IPV6_EXT`.
pub mod counter {
    /// Redirected into an AF_XDP socket.
    pub const REDIRECTED: u32 = 0;
    /// Passed to the kernel, any reason.
    pub const PASSED: u32 = 1;
    /// Not UDP to one of our ports (and addresses, when filtered).
    pub const NOT_OURS: u32 = 2;
    /// Truncated or inconsistent headers.
    pub const MALFORMED: u32 = 3;
    /// Ours, but no socket registered for the receiving queue.
    pub const NO_SOCKET: u32 = 4;
    /// IPv4 fragment (any port).
    pub const FRAGMENT: u32 = 5;
    /// IPv6 with an extension header after the fixed header (any port).
    pub const IPV6_EXT: u32 = 6;
    /// Number of counters the program defines.
    pub const COUNT: u32 = 7;
}

/// Default `max_entries` of `xsks` (the highest usable queue index is one less).
pub const DEFAULT_MAX_QUEUES: u32 = 64;

/// Errors of [`XdpProgram`].
#[derive(Debug, thiserror::Error)]
pub enum XdpProgramError {
    /// Parsing the object or creating its maps failed.
    #[error("loading the eBPF object failed: {0}")]
    Object(#[source] EbpfError),
    /// The object lacks the program (stale object?).
    #[error("the eBPF object has no program `{0}`")]
    MissingProgram(&'static str),
    /// The object lacks a map (stale object?).
    #[error("the eBPF object has no map `{0}`")]
    MissingMap(&'static str),
    /// Loading the program into the kernel failed (verifier or privileges).
    #[error("loading program `{PROGRAM_NAME}` into the kernel failed: {0}")]
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

/// The loaded (not attached) steering program and its maps. Dropping it unloads everything
/// that is not attached or pinned.
#[derive(Debug)]
pub struct XdpProgram {
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
        let mut this = Self { ebpf };
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
        let map = self.ports_map()?;
        let mut ports = map
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| map_error(maps::PORTS, source))?;
        ports.sort_unstable();
        Ok(ports)
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
        let map = self.addrs_map()?;
        let mut addrs = map
            .keys()
            .map(|key| key.map(address_from_key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| map_error(maps::ADDRS, source))?;
        addrs.sort_unstable();
        Ok(addrs)
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

    /// Whether the destination address filter is on.
    pub fn address_filter(&self) -> Result<bool> {
        let map = self.map(maps::CONFIG)?;
        let config: Array<_, u32> =
            Array::try_from(map).map_err(|source| map_error(maps::CONFIG, source))?;
        let value = config
            .get(&config::ADDR_FILTER, 0)
            .map_err(|source| map_error(maps::CONFIG, source))?;
        Ok(value != 0)
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
        let map = self.map(maps::COUNTERS)?;
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|source| map_error(maps::COUNTERS, source))?;
        let read = |index: u32| -> Result<u64> {
            let values = counters
                .get(&index, 0)
                .map_err(|source| map_error(maps::COUNTERS, source))?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(ProgramCounters {
            redirected: read(counter::REDIRECTED)?,
            passed: read(counter::PASSED)?,
            not_ours: read(counter::NOT_OURS)?,
            malformed: read(counter::MALFORMED)?,
            no_socket: read(counter::NO_SOCKET)?,
            fragment: read(counter::FRAGMENT)?,
            ipv6_ext: read(counter::IPV6_EXT)?,
        })
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

/// The `addrs` key of `addr`: 16 bytes, IPv4 as IPv4-mapped IPv6.
pub fn address_key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn address_from_key(key: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn map_error(name: &'static str, source: MapError) -> XdpProgramError {
    XdpProgramError::Map { name, source }
}

fn is_not_found(error: &MapError) -> bool {
    match error {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(sys) => sys.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn remove_key<K: aya::Pod>(
    map: &mut HashMap<&mut aya::maps::MapData, K, u8>,
    key: &K,
) -> Result<bool, MapError> {
    match map.remove(key) {
        Ok(()) => Ok(true),
        Err(error) if is_not_found(&error) => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn address_keys_round_trip() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let key = address_key(v4);
        assert_eq!(key[..12], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(key[12..], [192, 0, 2, 7]);
        assert_eq!(address_from_key(key), v4);
        let v6 = IpAddr::V6("2001:db8::1".parse().unwrap());
        assert_eq!(address_from_key(address_key(v6)), v6);
    }

    #[test]
    fn object_is_embedded_and_aligned() {
        let object = object();
        assert_eq!(&object[..4], b"\x7fELF");
        assert_eq!(object.as_ptr() as usize % 8, 0);
    }
}
