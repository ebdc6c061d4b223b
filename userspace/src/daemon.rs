//! The daemon: workers, each a datapath and a driver built from a config, run until told to
//! stop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{Backend, Config, Workers};
use crate::datapath::socket::{SocketDatapath, SocketError};
#[cfg(target_os = "linux")]
use crate::datapath::steer::{ReuseportSteering, SteerError};
use crate::datapath::Datapath;
use crate::driver::handoff::Handoff;
use crate::driver::{self, Driver, DriverCounters, QuicSetup, RunOptions, SetupError};
use crate::metrics::WorkerSlot;

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
    #[error("{0}")]
    Workers(String),
    #[error(transparent)]
    Privilege(#[from] crate::privilege::PrivilegeError),
    #[error("metrics.listen = {listen}: cannot serve metrics there: {source}")]
    Metrics {
        listen: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The daemon: its first worker's datapath and driver opened (so start-up errors surface
/// here), the others opened by their own threads in [`Daemon::run`].
pub struct Daemon {
    config: Config,
    first: Worker,
    /// The workers' places and what they share beyond the QUIC setup.
    group: Group,
    setup: QuicSetup,
    options: RunOptions,
    /// One metrics slot per worker (none when `[metrics]` is off).
    metrics: Vec<Arc<WorkerSlot>>,
    /// The uid and gid to switch to once every worker has started (`server.user`).
    run_as: Option<(u32, u32)>,
    /// Each later worker's end of the handoff mesh, in order (empty when the kernel steers
    /// every datagram to its worker).
    handoffs: Vec<Handoff>,
}

/// One worker: its own datapath and its own QUIC endpoint; nothing shared on the packet path
/// but its handoff rings.
struct Worker {
    index: usize,
    datapath: Box<dyn Datapath>,
    driver: Driver,
    handoff: Option<Handoff>,
}

/// A worker's place among its siblings, and what they share beyond the QUIC setup (held
/// for start-up, never touched on the packet path).
#[derive(Clone, Default)]
struct Group {
    index: usize,
    /// Workers in all; 0 while the first one opens with `workers = "auto"` (its backend
    /// decides: one per RX queue for xdp, one per CPU otherwise).
    count: usize,
    /// Bind with `SO_REUSEPORT`, on addresses reserved beforehand.
    reuse_port: bool,
    /// The XDP program the first worker loaded; the others register their queues in it.
    #[cfg(target_os = "linux")]
    xdp: Option<crate::datapath::xdp::SharedProgram>,
    /// Connection-ID steering over the workers' sockets, one program per served address
    /// (socket and io_uring backends).
    #[cfg(target_os = "linux")]
    steer: Option<Arc<Mutex<Vec<ReuseportSteering>>>>,
}

impl Daemon {
    /// Binds the first worker's datapath and builds the QUIC configuration every worker shares.
    pub fn new(config: &Config) -> Result<Self, DaemonError> {
        let run_as = match &config.server.user {
            Some(user) => Some(crate::privilege::lookup(
                user,
                config.server.group.as_deref(),
            )?),
            None => None,
        };
        let mut config = config.clone();
        let count = match config.server.workers {
            Workers::Count(n) => n,
            Workers::Auto => 0,
        };
        let cpus = if config.server.cpus.is_empty() {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.server.cpus.len()
        };
        let reuse_port = cfg!(unix) && (count > 1 || (count == 0 && cpus > 1));
        if reuse_port {
            // Every worker binds the same concrete addresses with SO_REUSEPORT.
            config.server.listen = crate::datapath::socket::reserve(&config.server.listen)?;
        }
        let mut group = Group {
            count,
            reuse_port,
            ..Group::default()
        };
        let datapath = open_backend(&config, &mut group)?;
        if group.count == 0 {
            group.count = if reuse_port { cpus } else { 1 };
        }
        if group.count > 1 && !reuse_port {
            return Err(DaemonError::Workers(format!(
                "server.workers = {}: several workers need SO_REUSEPORT, which exists only on \
                 Unix",
                group.count
            )));
        }
        let caps = datapath.capabilities();
        // The chosen backend, for the other workers (`auto` decides once).
        config.server.backend = match datapath.name() {
            "io_uring" => Backend::IoUring,
            "xdp" => Backend::Xdp,
            "rio" => Backend::Rio,
            _ => Backend::Socket,
        };
        config.server.listen = caps.local_addrs.clone();
        let setup = QuicSetup::new(&config, &caps)?;
        let driver = Driver::with_setup(&config, &setup, 0)?;
        let mut handoffs = if group.count > 1 && !kernel_steers(datapath.name(), &group) {
            tracing::info!(
                workers = group.count,
                "datagrams of another worker's connection are handed to it in user space \
                 (one copy, counted as handoff_sent)"
            );
            Handoff::mesh(group.count, setup.cid_layout()).map_err(DaemonError::Datapath)?
        } else {
            Vec::new()
        };
        let first_handoff = (!handoffs.is_empty()).then(|| handoffs.remove(0));
        let metrics: Vec<Arc<WorkerSlot>> = match &config.metrics {
            None => Vec::new(),
            Some(m) => {
                let slots: Vec<_> = (0..group.count).map(|_| Arc::default()).collect();
                let error = |source| DaemonError::Metrics {
                    listen: m.listen,
                    source,
                };
                #[allow(unused_mut)] // only Linux adds the steering counters
                let mut endpoint =
                    crate::metrics::Endpoint::bind(m.listen, &slots).map_err(error)?;
                #[cfg(target_os = "linux")]
                if let Some(steer) = group.steer.clone() {
                    endpoint.add_counters(
                        "reuseport",
                        "The SO_REUSEPORT steering programs' counters, summed over addresses",
                        Box::new(move || steering_totals(&steer)),
                    );
                }
                let addr = endpoint.local_addr().map_err(error)?;
                endpoint.spawn().map_err(error)?;
                tracing::info!(addr = %addr, "metrics served on GET /metrics");
                slots
            }
        };
        tracing::info!(
            backend = datapath.name(),
            workers = group.count,
            gso_segments = caps.max_tx_segments,
            pmtud = !caps.may_fragment,
            "datapath ready"
        );
        Ok(Self {
            options: RunOptions {
                busy_poll: config.server.busy_poll,
                drain_timeout: Duration::from_millis(config.server.drain_timeout_ms),
                ..RunOptions::default()
            },
            first: Worker {
                index: 0,
                datapath,
                driver,
                handoff: first_handoff,
            },
            handoffs,
            group,
            setup,
            config,
            metrics,
            run_as,
        })
    }

    /// Serves until `stop` is set, then shuts down gracefully. Workers after the first start
    /// here, each on its own thread; if one cannot start, or one fails, all stop. When
    /// `reload` is set (SIGHUP), the certificate and key are read again: new connections get
    /// them, open ones keep theirs; a failed reload keeps the current ones and says why.
    pub fn run(self, stop: &AtomicBool, reload: &AtomicBool) -> Result<(), DaemonError> {
        let Self {
            config,
            first,
            group,
            setup,
            options,
            metrics,
            run_as,
            handoffs,
        } = self;
        let metrics = &metrics;
        let mut handoffs = handoffs.into_iter();
        let workers = group.count;
        let quit = AtomicBool::new(false);
        let told_stopping = AtomicBool::new(false);
        let stopping = || {
            let stopping = stop.load(Ordering::Relaxed) || quit.load(Ordering::Relaxed);
            if stopping && !told_stopping.swap(true, Ordering::Relaxed) {
                crate::notify::notify("STOPPING=1");
            }
            stopping
        };
        let (config, setup, options) = (&config, &setup, &options);
        let tls = &TlsReloads::default();
        let reports = std::thread::scope(|scope| {
            // Reloads run on a thread of their own: reading and checking a certificate must not
            // stall a worker.
            let reloader = std::thread::Builder::new()
                .name("quixd-reload".into())
                .spawn_scoped(scope, || {
                    while !stopping() {
                        if reload.swap(false, Ordering::Relaxed) {
                            tls.reload(setup, &config.tls);
                        }
                        std::thread::sleep(RELOAD_POLL);
                    }
                })
                .map_err(DaemonError::Datapath)?;
            let (ready_tx, ready_rx) = mpsc::channel();
            let mut handles = Vec::with_capacity(workers);
            for index in 1..workers {
                let ready = ready_tx.clone();
                let stopping = &stopping;
                let quit = &quit;
                let group = Group {
                    index,
                    ..group.clone()
                };
                let handoff = handoffs.next();
                let handle = std::thread::Builder::new()
                    .name(format!("quixd-worker-{index}"))
                    .spawn_scoped(scope, move || {
                        pin(config, index);
                        let worker = match Worker::open(config, setup, group, handoff) {
                            Ok(worker) => {
                                let _ = ready.send(Ok(()));
                                worker
                            }
                            Err(e) => {
                                let _ = ready.send(Err(e));
                                return None;
                            }
                        };
                        let report = worker.run(stopping, options, metrics.get(index), tls);
                        if report.is_err() {
                            quit.store(true, Ordering::Relaxed);
                        }
                        Some(report)
                    })
                    .map_err(DaemonError::Datapath);
                match handle {
                    Ok(handle) => handles.push(handle),
                    Err(e) => {
                        quit.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            drop(ready_tx);
            // Every worker bound, or none serves.
            for _ in 1..workers {
                match ready_rx.recv() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        quit.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    Err(_) => break,
                }
            }
            if let Some((uid, gid)) = run_as {
                match crate::privilege::switch(uid, gid) {
                    Ok(()) => tracing::info!(
                        user = config.server.user.as_deref(),
                        uid,
                        gid,
                        "privileges dropped: no capabilities left"
                    ),
                    Err(e) => {
                        quit.store(true, Ordering::Relaxed);
                        return Err(e.into());
                    }
                }
            }
            announce(first.datapath.name(), &config.server.listen);
            crate::notify::notify("READY=1");
            pin(config, 0);
            let mut reports = vec![first.run(&stopping, options, metrics.first(), tls)];
            if reports[0].is_err() {
                quit.store(true, Ordering::Relaxed);
            }
            for handle in handles {
                if let Some(report) = handle.join().expect("a worker panicked") {
                    reports.push(report);
                }
            }
            let _ = reloader.join();
            Ok(reports)
        })?;
        let mut driver = DriverCounters::default();
        let mut datapath: Vec<(&'static str, u64)> = Vec::new();
        let mut backend = "";
        for report in reports {
            let report = report?;
            driver.add(&report.driver);
            backend = report.backend;
            for (name, value) in report.datapath {
                match datapath.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, total)) => *total += value,
                    None => datapath.push((name, value)),
                }
            }
        }
        #[cfg(target_os = "linux")]
        if let Some(steer) = &group.steer {
            datapath.extend(steering_totals(steer));
        }
        if workers > 1 {
            tracing::info!(driver = ?driver, workers, "stopped (totals over workers)");
            log_counters(backend, &datapath, None);
        }
        Ok(())
    }
}

/// How often the reload thread looks at the SIGHUP flag.
const RELOAD_POLL: Duration = Duration::from_millis(100);

/// The latest reloaded certificate, for the workers to pick up at their next tick.
#[derive(Default)]
struct TlsReloads {
    /// Bumped by each successful reload.
    generation: AtomicU64,
    latest: Mutex<Option<Arc<dyn quinn_proto::crypto::ServerConfig>>>,
}

impl TlsReloads {
    /// Reads the certificate and key again; on success publishes them, else logs why the
    /// current ones stay.
    fn reload(&self, setup: &QuicSetup, tls: &crate::config::Tls) {
        match setup.reload_tls(tls) {
            Ok(reloaded) => {
                *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(reloaded.crypto);
                self.generation.fetch_add(1, Ordering::Release);
                tracing::info!(
                    cert = ?tls.cert,
                    not_after = reloaded.not_after.as_deref().unwrap_or("unknown"),
                    "certificate reloaded: new connections use it, open ones keep theirs"
                );
            }
            Err(e) => tracing::error!(
                "certificate reload failed, keeping the current certificate: {}",
                chain(&e)
            ),
        }
    }

    /// The certificate reloaded since generation `seen`, if any (then `seen` moves on). One
    /// atomic load when there is none.
    fn newer(&self, seen: &mut u64) -> Option<Arc<dyn quinn_proto::crypto::ServerConfig>> {
        let now = self.generation.load(Ordering::Acquire);
        if now == *seen {
            return None;
        }
        *seen = now;
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What a worker leaves when it stops.
struct WorkerReport {
    backend: &'static str,
    driver: DriverCounters,
    datapath: Vec<(&'static str, u64)>,
}

impl Worker {
    /// A worker after the first: binds its own sockets to the reserved addresses (xdp: its
    /// queues' AF_XDP sockets, registered in the first worker's program).
    fn open(
        config: &Config,
        setup: &QuicSetup,
        mut group: Group,
        handoff: Option<Handoff>,
    ) -> Result<Self, DaemonError> {
        let datapath = open_backend(config, &mut group)?;
        let driver = Driver::with_setup(config, setup, worker_id(group.index)?)?;
        tracing::debug!(worker = group.index, "worker ready");
        Ok(Self {
            index: group.index,
            datapath,
            driver,
            handoff,
        })
    }

    fn run(
        mut self,
        stop: &dyn Fn() -> bool,
        options: &RunOptions,
        metrics: Option<&Arc<WorkerSlot>>,
        tls: &TlsReloads,
    ) -> Result<WorkerReport, DaemonError> {
        let mut seen = 0;
        let mut live = crate::diagnostics::LiveProblems::new(self.index);
        let mut tick = |driver: &mut Driver, datapath: &dyn Datapath| {
            let counters = datapath.counters();
            live.check(&counters, std::time::Instant::now());
            if let Some(slot) = metrics {
                slot.publish(driver, datapath.name(), counters, datapath.gauges());
            }
            if let Some(crypto) = tls.newer(&mut seen) {
                driver.set_tls(crypto);
                tracing::debug!(
                    worker = self.index,
                    "new connections get the reloaded certificate"
                );
            }
        };
        let observe: Option<driver::Observer<'_>> = Some(&mut tick);
        let served = driver::run(
            &mut self.driver,
            self.datapath.as_mut(),
            stop,
            options,
            observe,
            self.handoff.as_mut(),
        );
        self.datapath.close();
        let counters = self.datapath.counters();
        tracing::info!(worker = self.index, driver = ?self.driver.counters(), "stopped");
        log_counters(self.datapath.name(), &counters, Some(self.index));
        served?;
        Ok(WorkerReport {
            backend: self.datapath.name(),
            driver: self.driver.counters().clone(),
            datapath: counters,
        })
    }
}

/// The steering programs' counters, summed over the addresses they serve.
#[cfg(target_os = "linux")]
fn steering_totals(steer: &Mutex<Vec<ReuseportSteering>>) -> Vec<(&'static str, u64)> {
    let mut totals: Vec<(&'static str, u64)> = Vec::new();
    let all = steer.lock().unwrap_or_else(|e| e.into_inner());
    for steering in all.iter() {
        for (name, value) in steering.counters().unwrap_or_default() {
            match totals.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total += value,
                None => totals.push((name, value)),
            }
        }
    }
    totals
}

/// Whether the kernel delivers every datagram to the worker owning its connection: the
/// reuseport steering program does on socket and io_uring, unless connection IDs are
/// encrypted (then it is not loaded: `group.steer` stays empty); an AF_XDP socket takes only
/// its own queue's frames, which the NIC chose by address.
fn kernel_steers(backend: &str, group: &Group) -> bool {
    #[cfg(target_os = "linux")]
    return backend != "xdp" && group.steer.is_some();
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (backend, group);
        true
    }
}

/// Worker `index`'s id in the connection IDs it issues (one octet).
fn worker_id(index: usize) -> Result<u8, DaemonError> {
    u8::try_from(index).map_err(|_| {
        DaemonError::Workers(format!(
            "worker {index}: at most 256 workers (connection IDs carry the worker in one octet)"
        ))
    })
}

/// Pins the calling thread to its CPU from `server.cpus`, if any (best effort, logged).
fn pin(config: &Config, index: usize) {
    let cpus = &config.server.cpus;
    if cpus.is_empty() {
        return;
    }
    let cpu = cpus[index % cpus.len()];
    match crate::affinity::pin_current_thread(cpu) {
        Ok(()) => tracing::debug!(worker = index, cpu, "pinned"),
        Err(e) => {
            tracing::warn!(worker = index, cpu, error = %e, "cannot pin the worker (server.cpus)")
        }
    }
}

/// `quixd udp-echo`: the configured backend echoing raw UDP datagrams, no QUIC (see
/// [`crate::echo`]). Runs until `stop` is set.
pub fn run_udp_echo(config: &Config, stop: &AtomicBool) -> Result<(), DaemonError> {
    let mut datapath = open_backend(config, &mut Group::default())?;
    announce(datapath.name(), &datapath.capabilities().local_addrs);
    tracing::info!(backend = datapath.name(), "udp-echo ready (no QUIC)");
    let counters = crate::echo::run(datapath.as_mut(), stop, config.server.busy_poll)?;
    datapath.close();
    let echo: Vec<String> = counters.iter().map(|(n, v)| format!("{n}={v}")).collect();
    tracing::info!("echo counters: {}", echo.join(" "));
    log_counters(datapath.name(), &datapath.counters(), None);
    Ok(())
}

/// One `datapath counters:` line: a worker's, or (`worker` None) the totals.
fn log_counters(backend: &str, counters: &[(&'static str, u64)], worker: Option<usize>) {
    let line: Vec<String> = counters
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    match worker {
        Some(worker) => tracing::info!(backend, worker, "datapath counters: {}", line.join(" ")),
        None => tracing::info!(backend, "datapath counters: {}", line.join(" ")),
    }
}

/// Logs each address served (`listening`): once every worker is bound, so that no peer is
/// hashed over a reuseport group that is still growing.
fn announce(backend: &str, addrs: &[std::net::SocketAddr]) {
    for addr in addrs {
        tracing::info!(addr = %addr, backend, "listening");
    }
}

/// Opens the backend the config asks for. One named explicitly that cannot start is an error
/// saying why; `auto` tries XDP, io_uring and sockets in turn and logs one line per step.
/// Workers after the first open the backend the first one chose, quietly.
fn open_backend(config: &Config, group: &mut Group) -> Result<Box<dyn Datapath>, DaemonError> {
    let backend = config.server.backend;
    let open = match backend {
        Backend::Auto => return open_auto(config, group),
        Backend::Socket => open_socket,
        Backend::Xdp => open_xdp,
        Backend::IoUring => open_io_uring,
        Backend::Rio => open_rio,
    };
    if group.index == 0 {
        tracing::info!("backend {backend}: chosen in the config");
    }
    open(config, group).map_err(|e| DaemonError::Backend {
        backend,
        reason: Box::new(e),
    })
}

fn open_auto(config: &Config, group: &mut Group) -> Result<Box<dyn Datapath>, DaemonError> {
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
        None => match open_xdp(config, group) {
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
    match open_io_uring(config, group) {
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
    let dp = open_socket(config, group)?;
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

fn open_rio(config: &Config, _: &mut Group) -> Result<Box<dyn Datapath>, DaemonError> {
    Ok(crate::datapath::rio::open(
        &config.server.listen,
        &config.rio,
    )?)
}

fn open_socket(config: &Config, group: &mut Group) -> Result<Box<dyn Datapath>, DaemonError> {
    let datapath = SocketDatapath::bind_shared(&config.server.listen, group.reuse_port)?;
    #[cfg(target_os = "linux")]
    steer_sockets(config, group, datapath.sockets());
    Ok(Box::new(datapath))
}

/// Registers this worker's sockets for connection-ID steering (the first worker loads and
/// attaches a program per address). Without it (no CAP_BPF, or an old kernel) peers are
/// spread by address hash only, which a migrating client can fall foul of: logged once.
#[cfg(target_os = "linux")]
fn steer_sockets<'a>(
    config: &Config,
    group: &mut Group,
    sockets: impl Iterator<Item = &'a std::net::UdpSocket>,
) {
    if !group.reuse_port {
        return;
    }
    let Ok(worker) = u8::try_from(group.index) else {
        return;
    };
    if config.server.cid_key.is_some() {
        if group.index == 0 {
            tracing::info!(
                "connection-ID steering is not loaded: connection IDs are encrypted \
                 (server.cid_key), which the reuseport program cannot decrypt; workers hand \
                 datagrams of another's connection over in user space instead"
            );
        }
        return;
    }
    let result = if group.index == 0 {
        sockets
            .map(|socket| {
                let layout = crate::driver::cid::CidLayout::new(&config.server.server_id.0);
                let mut steering = ReuseportSteering::load(&layout)?;
                steering.register(worker, socket)?;
                steering.attach(socket)?;
                Ok(steering)
            })
            .collect::<Result<Vec<_>, SteerError>>()
            .map(|all| group.steer = Some(Arc::new(Mutex::new(all))))
    } else if let Some(steer) = &group.steer {
        let mut all = steer.lock().unwrap_or_else(|e| e.into_inner());
        all.iter_mut()
            .zip(sockets)
            .try_for_each(|(steering, socket)| steering.register(worker, socket))
    } else {
        Ok(())
    };
    if let Err(e) = result {
        group.steer = None;
        tracing::warn!(
            worker = group.index,
            "connection-ID steering is off ({}): packets reach workers by address hash only, \
             and a worker hands a datagram of another's connection over in user space (one \
             copy). It needs CAP_BPF (or root).",
            chain(&e)
        );
    }
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
fn open_io_uring(config: &Config, group: &mut Group) -> Result<Box<dyn Datapath>, DaemonError> {
    use crate::datapath::uring::{UringDatapath, UringSettings};

    let u = &config.io_uring;
    let settings = UringSettings {
        listen: config.server.listen.clone(),
        buffers: u.buffers as u16,
        buffer_size: u.buffer_size as usize,
        send_zc: u.send_zc,
        reuse_port: group.reuse_port,
    };
    let datapath = UringDatapath::open(&settings)?;
    steer_sockets(config, group, datapath.sockets());
    Ok(Box::new(datapath))
}

#[cfg(not(target_os = "linux"))]
fn open_io_uring(_: &Config, _: &mut Group) -> Result<Box<dyn Datapath>, DaemonError> {
    Err(DaemonError::Unsupported("io_uring"))
}

#[cfg(target_os = "linux")]
fn open_xdp(config: &Config, group: &mut Group) -> Result<Box<dyn Datapath>, DaemonError> {
    use crate::datapath::xdp::{served_queues, XdpDatapath, XdpSettings, XskSizes};

    let x = config
        .xdp
        .as_ref()
        .expect("validated: backend xdp has an [xdp] table");
    let settings = XdpSettings {
        interface: x.interface.clone(),
        queues: x.queues.clone(),
        attach: x.attach,
        copy_mode: x.zero_copy,
        sizes: XskSizes {
            frames: x.frames,
            ring: x.ring_size,
        },
        listen: config.server.listen.clone(),
        vlan: x.vlan,
        rx_checksum: x.rx_checksum,
        transmit: x.transmit,
        reuse_port: group.reuse_port,
    };
    // One worker per RX queue at most; each serves every count-th queue.
    let queues = served_queues(&settings)?;
    if group.count == 0 {
        group.count = queues.len();
    }
    if group.count > queues.len() {
        return Err(DaemonError::Workers(format!(
            "server.workers = {}, but xdp serves {} RX queue(s) of {} ({:?}): a worker needs a \
             queue of its own (add queues with `ethtool -L {} combined N`, or list them in \
             xdp.queues)",
            group.count,
            queues.len(),
            x.interface,
            queues,
            x.interface
        )));
    }
    let settings = XdpSettings {
        queues: queues
            .iter()
            .copied()
            .skip(group.index)
            .step_by(group.count)
            .collect(),
        ..settings
    };
    match &group.xdp {
        Some(shared) => Ok(Box::new(XdpDatapath::open_worker(&settings, Some(shared))?)),
        None => {
            let datapath = XdpDatapath::open(&settings)?;
            group.xdp = Some(datapath.shared_program());
            Ok(Box::new(datapath))
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn open_xdp(_: &Config, _: &mut Group) -> Result<Box<dyn Datapath>, DaemonError> {
    Err(DaemonError::Unsupported("xdp"))
}
