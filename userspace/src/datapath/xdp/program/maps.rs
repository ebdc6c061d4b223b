//! The maps of the steering program: their names and layout (mirroring `ebpf/quixd_xdp.h`),
//! and [`ProgramMaps`], which reads the maps of a copy already in the kernel (another
//! process's, or one pinned by `cargo xtask xdp load`).

use std::io;
use std::net::{IpAddr, Ipv6Addr};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use aya::programs::loaded_programs;

use super::{ProgramCounters, Result, XdpProgramError};

/// `BPF_MAP_TYPE_XSKMAP`: rx queue index (u32) -> AF_XDP socket.
pub const XSKS: &str = "xsks";
/// `BPF_MAP_TYPE_HASH`: UDP destination port (u16, host byte order) -> u8 (reserved, 1).
pub const PORTS: &str = "ports";
/// `BPF_MAP_TYPE_HASH`: destination address (16 bytes, network order, IPv4 as
/// `::ffff:a.b.c.d`) -> u8 (reserved, 1).
pub const ADDRS: &str = "addrs";
/// `BPF_MAP_TYPE_ARRAY`: u32 index -> u32 value, see [`config`].
pub const CONFIG: &str = "config";
/// `BPF_MAP_TYPE_PERCPU_ARRAY`: u32 index -> u64 per CPU, see [`counter`].
pub const COUNTERS: &str = "counters";

/// Indices of the `config` array.
pub mod config {
    /// Nonzero: only destinations in `addrs` are ours.
    pub const ADDR_FILTER: u32 = 0;
    /// Nonzero: the largest frame an AF_XDP socket takes; longer ones pass to the kernel.
    pub const MAX_FRAME: u32 = 1;
}

/// Indices of the `counters` per-CPU array. Every packet counts once in `REDIRECTED` or
/// `PASSED`; every passed packet counts once in exactly one of the reasons
/// `NOT_OURS`, `MALFORMED`, `NO_SOCKET`, `FRAGMENT`, `IPV6_EXT`, `OVERSIZE`.
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
    /// Ours, but longer than `config::MAX_FRAME` (a GSO/GRO super-packet in SKB mode).
    pub const OVERSIZE: u32 = 7;
    /// Number of counters the program defines.
    pub const COUNT: u32 = 7;
}

/// The map names, in the order [`XdpProgram::pin`] pins them.
pub const MAP_NAMES: [&str; 5] = [XSKS, PORTS, ADDRS, CONFIG, COUNTERS];

/// One map of a loaded program, as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSummary {
    /// The map's name.
    pub name: String,
    /// The kernel's map id.
    pub id: u32,
    /// Its type, as aya names it (`HashMap`, `XskMap`, ...).
    pub map_type: String,
    /// Its `max_entries`.
    pub max_entries: u32,
}

/// The maps of a steering program already in the kernel, found through its program id (e.g.
/// the one attached to an interface, by another process or through a bpffs pin): to inspect
/// it without loading a copy.
#[derive(Debug)]
pub struct ProgramMaps {
    program_id: u32,
    maps: Vec<(MapSummary, Map)>,
}

impl ProgramMaps {
    /// Opens the maps of the loaded program `program_id`.
    pub fn of_program(program_id: u32) -> Result<Self> {
        let info_error = |source: io::Error| XdpProgramError::Info {
            id: program_id,
            source,
        };
        let info = loaded_programs()
            .filter_map(std::result::Result::ok)
            .find(|info| info.id() == program_id)
            .ok_or(XdpProgramError::NoSuchProgram(program_id))?;
        let map_ids = info
            .map_ids()
            .map_err(|error| info_error(io::Error::other(error.to_string())))?
            .unwrap_or_default();
        let mut maps = Vec::with_capacity(map_ids.len());
        for id in map_ids {
            let data = MapData::from_id(id).map_err(|error| info_error(map_io_error(error)))?;
            let info = data
                .info()
                .map_err(|error| info_error(map_io_error(error)))?;
            let summary = MapSummary {
                name: info.name_as_str().unwrap_or("?").to_owned(),
                id: info.id(),
                map_type: info
                    .map_type()
                    .map(|t| format!("{t:?}"))
                    .unwrap_or_else(|_| "unknown".into()),
                max_entries: info.max_entries(),
            };
            let map = Map::from_map_data(data).map_err(|error| info_error(map_io_error(error)))?;
            maps.push((summary, map));
        }
        maps.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(Self { program_id, maps })
    }

    /// The program these maps belong to.
    pub fn program_id(&self) -> u32 {
        self.program_id
    }

    /// The program's maps.
    pub fn summaries(&self) -> Vec<MapSummary> {
        self.maps
            .iter()
            .map(|(summary, _)| summary.clone())
            .collect()
    }

    fn map(&self, name: &'static str) -> Result<&Map> {
        self.maps
            .iter()
            .find(|(summary, _)| summary.name == name)
            .map(|(_, map)| map)
            .ok_or(XdpProgramError::MissingMap(name))
    }

    /// The ports steered, sorted.
    pub fn ports(&self) -> Result<Vec<u16>> {
        read_ports(self.map(PORTS)?)
    }

    /// The addresses in the address map.
    pub fn addresses(&self) -> Result<Vec<IpAddr>> {
        read_addresses(self.map(ADDRS)?)
    }

    /// Whether the destination address filter is on.
    pub fn address_filter(&self) -> Result<bool> {
        read_address_filter(self.map(CONFIG)?)
    }

    /// The per-CPU counters, summed.
    pub fn counters(&self) -> Result<ProgramCounters> {
        read_counters(self.map(COUNTERS)?)
    }
}

pub(super) fn read_ports(map: &Map) -> Result<Vec<u16>> {
    let ports: HashMap<_, u16, u8> =
        HashMap::try_from(map).map_err(|source| map_error(PORTS, source))?;
    let mut ports = ports
        .keys()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| map_error(PORTS, source))?;
    ports.sort_unstable();
    Ok(ports)
}

pub(super) fn read_addresses(map: &Map) -> Result<Vec<IpAddr>> {
    let addrs: HashMap<_, [u8; 16], u8> =
        HashMap::try_from(map).map_err(|source| map_error(ADDRS, source))?;
    let mut addrs = addrs
        .keys()
        .map(|key| key.map(address_from_key))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| map_error(ADDRS, source))?;
    addrs.sort_unstable();
    Ok(addrs)
}

pub(super) fn read_address_filter(map: &Map) -> Result<bool> {
    let config: Array<_, u32> = Array::try_from(map).map_err(|source| map_error(CONFIG, source))?;
    let value = config
        .get(&config::ADDR_FILTER, 0)
        .map_err(|source| map_error(CONFIG, source))?;
    Ok(value != 0)
}

pub(super) fn read_counters(map: &Map) -> Result<ProgramCounters> {
    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(map).map_err(|source| map_error(COUNTERS, source))?;
    let read = |index: u32| -> Result<u64> {
        let values = counters
            .get(&index, 0)
            .map_err(|source| map_error(COUNTERS, source))?;
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
        oversize: read(counter::OVERSIZE)?,
    })
}

pub(super) fn map_io_error(error: MapError) -> io::Error {
    match error {
        MapError::SyscallError(sys) => sys.io_error,
        MapError::IoError(io_error) => io_error,
        other => io::Error::other(other.to_string()),
    }
}

pub(super) fn pin_error_io(error: aya::pin::PinError) -> io::Error {
    match error {
        aya::pin::PinError::SyscallError(sys) => sys.io_error,
        other => io::Error::other(other.to_string()),
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

pub(super) fn map_error(name: &'static str, source: MapError) -> XdpProgramError {
    XdpProgramError::Map { name, source }
}

pub(super) fn is_not_found(error: &MapError) -> bool {
    match error {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(sys) => sys.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

pub(super) fn remove_key<K: aya::Pod>(
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
}
