//! Prometheus metrics (`[metrics] listen`): every worker publishes a snapshot of its counters
//! at most every [`PUBLISH_INTERVAL`], taking its slot's lock only if it is free (a scrape
//! in progress makes it skip a turn, never wait); a thread of its own serves the snapshots
//! on `GET /metrics` in the OpenMetrics text format (prometheus-client's encoder).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::driver::{Driver, DriverCounters, HandshakeHistogram, HANDSHAKE_BUCKETS};

/// How often a worker publishes.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// One worker's latest figures.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub backend: &'static str,
    pub driver: DriverCounters,
    pub connections: u64,
    pub handshakes: HandshakeHistogram,
    /// The backend's counters, as its `counters()` lists them.
    pub datapath: Vec<(&'static str, u64)>,
    /// The backend's levels, as its `gauges()` lists them.
    pub datapath_gauges: Vec<(&'static str, u64)>,
}

/// Where one worker publishes.
#[derive(Debug, Default)]
pub struct WorkerSlot {
    snapshot: Mutex<Snapshot>,
}

impl WorkerSlot {
    /// Publishes unless a scrape holds the slot right now (then the next turn does).
    pub fn publish(
        &self,
        driver: &Driver,
        backend: &'static str,
        datapath: Vec<(&'static str, u64)>,
        gauges: Vec<(&'static str, u64)>,
    ) {
        if let Ok(mut s) = self.snapshot.try_lock() {
            s.backend = backend;
            s.driver.clone_from(driver.counters());
            s.connections = driver.connections() as u64;
            s.handshakes.clone_from(driver.handshakes());
            s.datapath = datapath;
            s.datapath_gauges = gauges;
        }
    }

    fn read(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The driver's counters as metric names and help texts.
fn driver_fields(c: &DriverCounters) -> [(&'static str, &'static str, u64); 16] {
    [
        ("rx_datagrams", "Datagrams handed to QUIC", c.rx_datagrams),
        ("rx_bytes", "Bytes handed to QUIC", c.rx_bytes),
        (
            "tx_transmits",
            "Transmits (GSO batches) QUIC produced",
            c.tx_transmits,
        ),
        (
            "connections_accepted",
            "Connections accepted",
            c.connections_accepted,
        ),
        (
            "connections_refused",
            "Connections refused (limit reached or shutting down)",
            c.connections_refused,
        ),
        ("retries_sent", "Retry packets sent", c.retries_sent),
        (
            "accept_errors",
            "Incoming connections QUIC could not accept",
            c.accept_errors,
        ),
        (
            "handshakes_completed",
            "Handshakes completed",
            c.handshakes_completed,
        ),
        (
            "connections_closed",
            "Connections closed",
            c.connections_closed,
        ),
        (
            "no_application",
            "Connections closed for an ALPN no application serves",
            c.no_application,
        ),
        (
            "tx_dropped_full",
            "Stateless responses dropped on a full transmit batch",
            c.tx_dropped_full,
        ),
        (
            "handoff_sent",
            "Datagrams handed to the worker owning their connection",
            c.handoff_sent,
        ),
        (
            "handoff_received",
            "Datagrams another worker handed over",
            c.handoff_received,
        ),
        (
            "handoff_dropped",
            "Datagrams for another worker dropped on its full ring",
            c.handoff_dropped,
        ),
        (
            "app_connection_errors",
            "Connections an application closed for a protocol error",
            c.app_connection_errors,
        ),
        (
            "app_stream_errors",
            "Streams an application refused or reset for a protocol error",
            c.app_stream_errors,
        ),
    ]
}

#[derive(Debug)]
struct Workers(Vec<Arc<WorkerSlot>>);

impl Collector for Workers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshots: Vec<(String, Snapshot)> = self
            .0
            .iter()
            .enumerate()
            .map(|(i, slot)| (i.to_string(), slot.read()))
            .collect();
        // Driver counters, one family per counter, one series per worker.
        let Some((_, first)) = snapshots.first() else {
            return Ok(());
        };
        for (field, (name, help, _)) in driver_fields(&first.driver).iter().enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (worker, s) in &snapshots {
                let value = driver_fields(&s.driver)[field].2;
                let labels = labels(worker, s);
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "connections",
            "Open connections",
            None,
            MetricType::Gauge,
        )?;
        for (worker, s) in &snapshots {
            let labels = labels(worker, s);
            ConstGauge::new(s.connections as i64).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "handshake_duration_seconds",
            "From accepting a connection's first Initial to the handshake's completion",
            None,
            MetricType::Histogram,
        )?;
        for (worker, s) in &snapshots {
            let labels = labels(worker, s);
            let buckets: Vec<(f64, u64)> = HANDSHAKE_BUCKETS
                .iter()
                .copied()
                .chain([f64::MAX])
                .zip(s.handshakes.counts.iter().copied())
                .collect();
            family
                .encode_family(&labels)?
                .encode_histogram::<Vec<(String, String)>>(
                    s.handshakes.sum_seconds,
                    s.handshakes.count(),
                    &buckets,
                    None,
                )?;
        }
        // The backend's counters (drops by reason, XDP program and AF_XDP socket statistics,
        // kernel socket errors, ...), as each backend names them.
        encode_datapath(
            &mut encoder,
            &snapshots,
            MetricType::Counter,
            "A datapath counter (see the backend's counters at shutdown)",
            |s| &s.datapath,
        )?;
        // The backend's levels: UMEM frames and io_uring buffers by place, sends in flight,
        // the next-hop table's size.
        encode_datapath(
            &mut encoder,
            &snapshots,
            MetricType::Gauge,
            "A datapath level (buffers by place, occupancy, table sizes)",
            |s| &s.datapath_gauges,
        )?;
        Ok(())
    }
}

/// A worker's series labels.
fn labels(worker: &str, s: &Snapshot) -> Vec<(&'static str, String)> {
    vec![
        ("worker", worker.to_string()),
        ("backend", s.backend.to_string()),
    ]
}

/// Every backend value `values` picks from the snapshots, as `quixd_datapath_<name>` of type
/// `kind`, one sample per worker that has it.
fn encode_datapath(
    encoder: &mut DescriptorEncoder,
    snapshots: &[(String, Snapshot)],
    kind: MetricType,
    help: &str,
    values: impl Fn(&Snapshot) -> &Vec<(&'static str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut names: Vec<&'static str> = Vec::new();
    for (_, s) in snapshots {
        for (name, _) in values(s) {
            if !names.contains(name) {
                names.push(name);
            }
        }
    }
    for name in names {
        let metric = format!("datapath_{name}");
        let mut family = encoder.encode_descriptor(&metric, help, None, kind)?;
        for (worker, s) in snapshots {
            if let Some(&(_, value)) = values(s).iter().find(|(n, _)| *n == name) {
                let labels = labels(worker, s);
                let sample = family.encode_family(&labels)?;
                if kind == MetricType::Gauge {
                    ConstGauge::new(value as i64).encode(sample)?;
                } else {
                    ConstCounter::new(value).encode(sample)?;
                }
            }
        }
    }
    Ok(())
}

/// Counters read at scrape time from something no worker owns (the steering programs).
type Source = Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

struct Shared {
    /// Metric name prefix after `quixd_`.
    prefix: &'static str,
    help: &'static str,
    source: Source,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Collector for Shared {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, value) in (self.source)() {
            let metric = format!("{}_{name}", self.prefix);
            let family =
                encoder.encode_descriptor(&metric, self.help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(family)?;
        }
        Ok(())
    }
}

/// The metrics endpoint: a listening socket and the slots it reads.
pub struct Endpoint {
    listener: TcpListener,
    registry: Arc<Registry>,
}

impl Endpoint {
    /// Binds `listen` and builds the registry over `workers` slots.
    pub fn bind(listen: SocketAddr, workers: &[Arc<WorkerSlot>]) -> io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let mut registry = Registry::with_prefix("quixd");
        registry.register_collector(Box::new(Workers(workers.to_vec())));
        Ok(Self {
            listener,
            registry: Arc::new(registry),
        })
    }

    /// Adds counters read from `source` at each scrape, as `quixd_<prefix>_<name>`. Call
    /// before [`Endpoint::spawn`].
    pub fn add_counters(&mut self, prefix: &'static str, help: &'static str, source: Source) {
        if let Some(registry) = Arc::get_mut(&mut self.registry) {
            registry.register_collector(Box::new(Shared {
                prefix,
                help,
                source,
            }));
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves on a thread of its own for the life of the process.
    pub fn spawn(self) -> io::Result<()> {
        std::thread::Builder::new()
            .name("quixd-metrics".into())
            .spawn(move || {
                for stream in self.listener.incoming() {
                    match stream {
                        Ok(stream) => {
                            if let Err(e) = respond(stream, &self.registry) {
                                tracing::debug!(error = %e, "metrics request failed");
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "metrics accept failed"),
                    }
                }
            })
            .map(drop)
    }
}

/// One HTTP/1.x exchange: `GET /metrics` gets the text format, anything else a 404.
fn respond(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let (status, content_type, body) =
        if line.starts_with("GET /metrics ") || line.starts_with("GET /metrics?") {
            let mut body = String::new();
            prometheus_client::encoding::text::encode(&mut body, registry)
                .map_err(|_| io::Error::other("encoding the metrics"))?;
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            )
        } else {
            ("404 Not Found", "text/plain", "try /metrics\n".to_string())
        };
    let mut head = String::new();
    let _ = write!(
        head,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}
