//! The daemon: a datapath and a driver built from a config, run until told to stop.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::config::{Backend, Config};
use crate::datapath::socket::{SocketDatapath, SocketError};
use crate::datapath::Datapath;
use crate::driver::{self, Driver, RunOptions, SetupError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Xdp(#[from] crate::datapath::xdp::XdpError),
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    IoUring(#[from] crate::datapath::uring::UringError),
    /// A backend named in the config could not start; it is never silently replaced.
    /// The reason follows in the error chain (`{:#}`), with its own causes.
    #[error("server.backend = \"{backend}\" cannot start")]
    Backend {
        backend: Backend,
        #[source]
        reason: Box<DaemonError>,
    },
    #[error(transparent)]
    Rio(#[from] crate::datapath::rio::RioError),
    #[error("backend `{0}` is not available on this platform")]
    Unsupported(&'static str),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("datapath failed: {0}")]
    Datapath(#[from] std::io::Error),
}

/// A datapath and driver ready to run.
pub struct Daemon {
    pub datapath: Box<dyn Datapath>,
    pub driver: Driver,
    pub options: RunOptions,
}

impl Daemon {
    /// Binds the datapath and builds the QUIC endpoint.
    pub fn new(config: &Config) -> Result<Self, DaemonError> {
        let datapath = open_datapath(config)?;
        let caps = datapath.capabilities();
        let driver = Driver::new(config, &caps)?;
        tracing::info!(
            backend = datapath.name(),
            gso_segments = caps.max_tx_segments,
            pmtud = !caps.may_fragment,
            "datapath ready"
        );
        Ok(Self {
            datapath,
            driver,
            options: RunOptions {
                busy_poll: config.server.busy_poll,
                drain_timeout: Duration::from_millis(config.server.drain_timeout_ms),
                ..RunOptions::default()
            },
        })
    }

    /// Serves until `stop` is set, then shuts down gracefully.
    pub fn run(mut self, stop: &AtomicBool) -> Result<(), DaemonError> {
        driver::run(
            &mut self.driver,
            self.datapath.as_mut(),
            stop,
            &self.options,
        )?;
        self.datapath.close();
        tracing::info!(driver = ?self.driver.counters(), "stopped");
        log_datapath_counters(self.datapath.as_ref());
        Ok(())
    }
}

/// `quixd udp-echo`: the configured backend echoing raw UDP datagrams, no QUIC (see
/// [`crate::echo`]). Runs until `stop` is set.
pub fn run_udp_echo(config: &Config, stop: &AtomicBool) -> Result<(), DaemonError> {
    let mut datapath = open_datapath(config)?;
    tracing::info!(backend = datapath.name(), "udp-echo ready (no QUIC)");
    let counters = crate::echo::run(datapath.as_mut(), stop, config.server.busy_poll)?;
    datapath.close();
    let echo: Vec<String> = counters.iter().map(|(n, v)| format!("{n}={v}")).collect();
    tracing::info!("echo counters: {}", echo.join(" "));
    log_datapath_counters(datapath.as_ref());
    Ok(())
}

fn log_datapath_counters(datapath: &dyn Datapath) {
    let counters: Vec<String> = datapath
        .counters()
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    tracing::info!(
        backend = datapath.name(),
        "datapath counters: {}",
        counters.join(" ")
    );
}

/// Opens the backend the config asks for and logs each address it serves (`listening`).
pub fn open_datapath(config: &Config) -> Result<Box<dyn Datapath>, DaemonError> {
    let datapath = open_backend(config)?;
    for addr in &datapath.capabilities().local_addrs {
        tracing::info!(addr = %addr, backend = datapath.name(), "listening");
    }
    Ok(datapath)
}

/// Opens the backend the config asks for. One named explicitly that cannot start is an error
/// saying why; `auto` tries XDP, io_uring and sockets in turn and logs one line per step.
fn open_backend(config: &Config) -> Result<Box<dyn Datapath>, DaemonError> {
    let backend = config.server.backend;
    let open = match backend {
        Backend::Auto => return open_auto(config),
        Backend::Socket => open_socket,
        Backend::Xdp => open_xdp,
        Backend::IoUring => open_io_uring,
        Backend::Rio => open_rio,
    };
    tracing::info!("backend {backend}: chosen in the config");
    open(config).map_err(|e| DaemonError::Backend {
        backend,
        reason: Box::new(e),
    })
}

fn open_auto(config: &Config) -> Result<Box<dyn Datapath>, DaemonError> {
    // Windows: RIO, else kernel sockets (XDP and io_uring skip themselves there).
    if cfg!(windows) {
        use crate::datapath::rio::{self, RioError};
        match rio::open(&config.server.listen, &config.rio) {
            Ok(dp) => {
                tracing::info!("backend auto: running rio");
                return Ok(dp);
            }
            // A port that cannot be bound is no reason to try another backend.
            Err(e @ RioError::Bind { .. }) => return Err(e.into()),
            Err(e) => tracing::info!("backend auto: rio skipped: {e}"),
        }
    } else {
        tracing::info!("backend auto: rio skipped: RIO exists only on Windows");
    }
    match xdp_unusable(config) {
        Some(why) => tracing::info!("backend auto: xdp skipped: {why}"),
        None => match open_xdp(config) {
            Ok(dp) => {
                tracing::info!("backend auto: running xdp");
                return Ok(dp);
            }
            Err(e) => tracing::info!(
                "backend auto: xdp skipped: it failed to start: {}",
                chain(&e)
            ),
        },
    }
    match open_io_uring(config) {
        Ok(dp) => {
            tracing::info!("backend auto: running io_uring");
            return Ok(dp);
        }
        // A port that cannot be bound is no reason to try another backend: it would fail too.
        #[cfg(target_os = "linux")]
        Err(DaemonError::IoUring(crate::datapath::uring::UringError::Socket(e))) => {
            return Err(e.into())
        }
        Err(e) => tracing::info!("backend auto: io_uring skipped: {}", chain(&e)),
    }
    let dp = open_socket(config)?;
    tracing::info!("backend auto: running socket");
    Ok(dp)
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

fn open_rio(config: &Config) -> Result<Box<dyn Datapath>, DaemonError> {
    Ok(crate::datapath::rio::open(
        &config.server.listen,
        &config.rio,
    )?)
}

fn open_socket(config: &Config) -> Result<Box<dyn Datapath>, DaemonError> {
    Ok(Box::new(SocketDatapath::bind(&config.server.listen)?))
}

/// Why `auto` does not try XDP, if it does not.
fn xdp_unusable(config: &Config) -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some("AF_XDP exists only on Linux".into());
    }
    match &config.xdp {
        None => return Some("no [xdp] table names an interface".into()),
        Some(x) if x.interface.is_empty() => return Some("[xdp] names no interface".into()),
        Some(_) => {}
    }
    // Effective capabilities: CAP_NET_ADMIN (12) to attach, CAP_BPF (39) or CAP_SYS_ADMIN (21)
    // to load the program.
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |cap: u32| caps & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(12) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(39) && !has(21) {
        missing.push("CAP_BPF");
    }
    (!missing.is_empty()).then(|| {
        format!(
            "needs {} (run as root or grant them)",
            missing.join(" and ")
        )
    })
}

#[cfg(target_os = "linux")]
fn open_io_uring(config: &Config) -> Result<Box<dyn Datapath>, DaemonError> {
    use crate::datapath::uring::{UringDatapath, UringSettings};

    let u = &config.io_uring;
    let settings = UringSettings {
        listen: config.server.listen.clone(),
        buffers: u.buffers as u16,
        buffer_size: u.buffer_size as usize,
        send_zc: u.send_zc,
    };
    Ok(Box::new(UringDatapath::open(&settings)?))
}

#[cfg(not(target_os = "linux"))]
fn open_io_uring(_: &Config) -> Result<Box<dyn Datapath>, DaemonError> {
    Err(DaemonError::Unsupported("io_uring"))
}

#[cfg(target_os = "linux")]
fn open_xdp(config: &Config) -> Result<Box<dyn Datapath>, DaemonError> {
    use crate::config::{XdpAttach, XdpTransmit, ZeroCopy};
    use crate::datapath::xdp::program::AttachMode;
    use crate::datapath::xdp::xsk::{CopyMode, XskSizes};
    use crate::datapath::xdp::{Transmit, XdpDatapath, XdpSettings};

    let x = config
        .xdp
        .as_ref()
        .expect("validated: backend xdp has an [xdp] table");
    let settings = XdpSettings {
        interface: x.interface.clone(),
        queues: x.queues.clone(),
        attach: match x.attach {
            XdpAttach::Auto => AttachMode::Auto,
            XdpAttach::Driver => AttachMode::Driver,
            XdpAttach::Skb => AttachMode::Skb,
        },
        copy_mode: match x.zero_copy {
            ZeroCopy::Auto => CopyMode::Auto,
            ZeroCopy::On => CopyMode::ZeroCopy,
            ZeroCopy::Off => CopyMode::Copy,
        },
        sizes: XskSizes {
            frames: x.frames,
            ring: x.ring_size,
        },
        listen: config.server.listen.clone(),
        vlan: x.vlan,
        rx_checksum: x.rx_checksum,
        transmit: match x.transmit {
            XdpTransmit::Auto => Transmit::Auto,
            XdpTransmit::AfXdp => Transmit::AfXdp,
            XdpTransmit::Kernel => Transmit::Kernel,
        },
    };
    Ok(Box::new(XdpDatapath::open(&settings)?))
}

#[cfg(not(target_os = "linux"))]
fn open_xdp(_: &Config) -> Result<Box<dyn Datapath>, DaemonError> {
    Err(DaemonError::Unsupported("xdp"))
}
