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
        let datapath: Box<dyn Datapath> = match config.server.backend {
            Backend::Socket => Box::new(SocketDatapath::bind(&config.server.listen)?),
            Backend::Xdp => open_xdp(config)?,
        };
        let caps = datapath.capabilities();
        let driver = Driver::new(config, &caps)?;
        for addr in &caps.local_addrs {
            tracing::info!(addr = %addr, backend = datapath.name(), "listening");
        }
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
        let datapath: Vec<String> = self
            .datapath
            .counters()
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        tracing::info!(driver = ?self.driver.counters(), "stopped");
        tracing::info!(
            backend = self.datapath.name(),
            "datapath counters: {}",
            datapath.join(" ")
        );
        Ok(())
    }
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
