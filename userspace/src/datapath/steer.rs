//! Steering by connection ID across the workers' `SO_REUSEPORT` sockets (socket and io_uring
//! backends): the program in `ebpf/quixd_reuseport.c`, one copy per served address (one
//! reuseport group each), with every worker's socket registered at the worker's index.
//!
//! A short header packet goes to the worker its destination connection ID names
//! ([`crate::driver::cid`]), so a connection survives its peer's address changing; long
//! headers (handshakes) keep the kernel's hash of the addresses.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{Array, MapError, PerCpuArray, ReusePortSockArray};
use aya::programs::{ProgramError, SkReuseport};
use aya::{Ebpf, EbpfError};

use crate::driver::cid::CidLayout;

/// The compiled program (`cargo xtask build-ebpf`), 8-byte aligned as aya needs.
fn object() -> &'static [u8] {
    aya::include_bytes_aligned!("../../../ebpf/quixd_reuseport.o")
}

const PROGRAM_NAME: &str = "quixd_reuseport";
const WORKERS: &str = "workers";
const CONFIG: &str = "config";
/// `config` indices (mirrors `ebpf/quixd_reuseport.h`).
const CFG_FIRST_OCTET: u32 = 0;
const CFG_WORKER_OFFSET: u32 = 1;
const COUNTERS: &str = "counters";

/// Counter names by index (mirrors `ebpf/quixd_reuseport.h`).
const COUNTER_NAMES: [&str; 5] = [
    "steer_by_cid",
    "steer_long_header",
    "steer_short_packet",
    "steer_foreign_cid",
    "steer_no_worker",
];

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("loading the SO_REUSEPORT steering program: {0}")]
    Object(#[source] EbpfError),
    #[error("the SO_REUSEPORT steering program: {0}")]
    Program(#[source] ProgramError),
    #[error("the steering program's map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("the steering object has no `{0}`")]
    Missing(&'static str),
    #[error("connection IDs are encrypted (server.cid_key): the program cannot read their worker")]
    Encrypted,
}

/// The steering program of one reuseport group (one served address).
pub struct ReuseportSteering {
    ebpf: Ebpf,
    attached: bool,
}

impl ReuseportSteering {
    /// Loads a copy of the program with its own socket map, for connection IDs of `layout`.
    pub fn load(layout: &CidLayout) -> Result<Self, SteerError> {
        let worker_offset = layout.worker_offset().ok_or(SteerError::Encrypted)?;
        let mut ebpf = Ebpf::load(object()).map_err(SteerError::Object)?;
        program(&mut ebpf)?.load().map_err(SteerError::Program)?;
        let map = ebpf.map_mut(CONFIG).ok_or(SteerError::Missing(CONFIG))?;
        let mut config: Array<_, u32> = map.try_into().map_err(|source| SteerError::Map {
            name: CONFIG,
            source,
        })?;
        for (index, value) in [
            (CFG_FIRST_OCTET, u32::from(layout.first_octet())),
            (CFG_WORKER_OFFSET, worker_offset as u32),
        ] {
            config
                .set(index, value, 0)
                .map_err(|source| SteerError::Map {
                    name: CONFIG,
                    source,
                })?;
        }
        Ok(Self {
            ebpf,
            attached: false,
        })
    }

    /// Registers `socket` (bound with `SO_REUSEPORT`, in this group) as worker `worker`'s.
    pub fn register(&mut self, worker: u8, socket: &impl AsRawFd) -> Result<(), SteerError> {
        let map = self
            .ebpf
            .map_mut(WORKERS)
            .ok_or(SteerError::Missing(WORKERS))?;
        let mut workers: ReusePortSockArray<_> =
            map.try_into().map_err(|source| SteerError::Map {
                name: WORKERS,
                source,
            })?;
        workers
            .set(u32::from(worker), socket, 0)
            .map_err(|source| SteerError::Map {
                name: WORKERS,
                source,
            })
    }

    /// Attaches the program to the group `socket` belongs to (once; later calls do nothing).
    pub fn attach(&mut self, socket: impl AsFd) -> Result<(), SteerError> {
        if !self.attached {
            program(&mut self.ebpf)?
                .attach(socket)
                .map_err(SteerError::Program)?;
            self.attached = true;
        }
        Ok(())
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(&'static str, u64)>, SteerError> {
        let map = self
            .ebpf
            .map(COUNTERS)
            .ok_or(SteerError::Missing(COUNTERS))?;
        let counters: PerCpuArray<_, u64> = map.try_into().map_err(|source| SteerError::Map {
            name: COUNTERS,
            source,
        })?;
        COUNTER_NAMES
            .iter()
            .zip(0u32..)
            .map(|(&name, index)| {
                let values = counters.get(&index, 0).map_err(|source| SteerError::Map {
                    name: COUNTERS,
                    source,
                })?;
                Ok((name, values.iter().copied().fold(0u64, u64::wrapping_add)))
            })
            .collect()
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut SkReuseport, SteerError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(SteerError::Missing(PROGRAM_NAME))?
        .try_into()
        .map_err(SteerError::Program)
}
