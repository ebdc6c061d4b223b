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
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("datapath failed: {0}")]
    Datapath(#[from] std::io::Error),
}

/// A datapath and driver ready to run.
pub struct Daemon {
    pub datapath: Box<dyn Datapath + Send>,
    pub driver: Driver,
    pub options: RunOptions,
}

impl Daemon {
    /// Binds the datapath and builds the QUIC endpoint.
    pub fn new(config: &Config) -> Result<Self, DaemonError> {
        let datapath: Box<dyn Datapath + Send> = match config.server.backend {
            Backend::Socket => Box::new(SocketDatapath::bind(&config.server.listen)?),
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
        tracing::info!(
            counters = ?self.driver.counters(),
            datapath = ?self.datapath.counters(),
            "stopped"
        );
        Ok(())
    }
}
