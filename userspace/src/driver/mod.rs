//! The sans-IO core: one quinn-proto endpoint, its connections and their applications.
//!
//! The driver is a plain value, one per worker: feed it received datagrams and the time, and
//! it fills a [`TxBatch`] with what to send. It never touches a socket or a clock; the loop in
//! [`run`] does that with a [`Datapath`](crate::datapath::Datapath).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::crypto::rustls::HandshakeData;
use quinn_proto::{
    Connection, ConnectionHandle, DatagramEvent, EcnCodepoint, Endpoint, EndpointConfig, Event,
    ServerConfig, Transmit, ValidationTokenConfig, VarInt,
};

use crate::app::files::{FileClient, FilePool};
use crate::app::{Apps, Session};
use crate::config::{self, Config};
use crate::datapath::{Capabilities, Ecn, RxMeta, TxBatch, TxMeta, MAX_GSO_BYTES};

pub mod cid;
pub mod handoff;
pub mod quic;
mod run;

pub use quic::SetupError;
pub use run::{run, Observer, RunOptions};

/// Bytes of receive arena allocated at a time; datagrams are copied into it back to back so
/// handing quinn-proto an owned `BytesMut` costs no allocation per datagram.
const RX_ARENA: usize = 256 * 1024;

/// Application close code sent to every connection at shutdown.
pub const SHUTDOWN_CODE: VarInt = VarInt::from_u32(0);
/// Application close code for a connection whose ALPN no application serves.
const NO_APPLICATION: VarInt = VarInt::from_u32(0x0102);

/// Counters of the driver, readable at any time (metrics, logs, tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DriverCounters {
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    pub tx_transmits: u64,
    pub connections_accepted: u64,
    /// Refused because `max_connections` was reached or the server is shutting down.
    pub connections_refused: u64,
    pub retries_sent: u64,
    /// Incoming connections quinn-proto could not accept (bad token, bad packet, ...).
    pub accept_errors: u64,
    pub handshakes_completed: u64,
    pub connections_closed: u64,
    /// Connections closed because they negotiated no ALPN we serve.
    pub no_application: u64,
    /// Stateless responses (Retry, refusals, version negotiation, stateless resets) dropped
    /// because the transmit batch was full: the backend did not keep up.
    pub tx_dropped_full: u64,
    /// Datagrams of another worker's connections handed to it ([`handoff`]).
    pub handoff_sent: u64,
    /// Datagrams of this worker's connections that another worker handed over.
    pub handoff_received: u64,
    /// Datagrams for another worker dropped because its ring was full.
    pub handoff_dropped: u64,
    /// Connections an application closed for a protocol error (e.g. HTTP/3's H3_* codes).
    pub app_connection_errors: u64,
    /// Streams an application refused or reset for a protocol error.
    pub app_stream_errors: u64,
}

impl DriverCounters {
    /// Adds `other`'s counts to these (totals over workers).
    pub fn add(&mut self, other: &Self) {
        let Self {
            rx_datagrams,
            rx_bytes,
            tx_transmits,
            connections_accepted,
            connections_refused,
            retries_sent,
            accept_errors,
            handshakes_completed,
            connections_closed,
            no_application,
            tx_dropped_full,
            handoff_sent,
            handoff_received,
            handoff_dropped,
            app_connection_errors,
            app_stream_errors,
        } = other;
        self.rx_datagrams += rx_datagrams;
        self.rx_bytes += rx_bytes;
        self.tx_transmits += tx_transmits;
        self.connections_accepted += connections_accepted;
        self.connections_refused += connections_refused;
        self.retries_sent += retries_sent;
        self.accept_errors += accept_errors;
        self.handshakes_completed += handshakes_completed;
        self.connections_closed += connections_closed;
        self.no_application += no_application;
        self.tx_dropped_full += tx_dropped_full;
        self.handoff_sent += handoff_sent;
        self.handoff_received += handoff_received;
        self.handoff_dropped += handoff_dropped;
        self.app_connection_errors += app_connection_errors;
        self.app_stream_errors += app_stream_errors;
    }
}

/// Upper bounds (seconds) of the handshake-duration histogram's buckets; one more counts
/// the rest.
pub const HANDSHAKE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Handshake durations, from accepting the first Initial to the handshake's completion.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HandshakeHistogram {
    /// Per bucket of [`HANDSHAKE_BUCKETS`] (not cumulative), then the rest.
    pub counts: [u64; HANDSHAKE_BUCKETS.len() + 1],
    pub sum_seconds: f64,
}

impl HandshakeHistogram {
    fn record(&mut self, seconds: f64) {
        let bucket = HANDSHAKE_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(HANDSHAKE_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum_seconds += seconds;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

struct Conn {
    quic: Connection,
    /// Tells this connection apart from a later one in the same slot (file results).
    serial: u64,
    session: Option<Session>,
    /// When its first Initial was accepted (for the handshake histogram).
    accepted_at: Instant,
    /// Our UDP port the peer talks to; every transmit leaves from it.
    local_port: u16,
    timer: Option<Instant>,
    dirty: bool,
    closing: bool,
    /// Whether the application was told of a graceful shutdown.
    shutdown_notified: bool,
}

/// State of a graceful shutdown.
struct Drain {
    deadline: Instant,
    /// Whether the deadline passed and every connection was told to close.
    expired: bool,
}

pub struct Driver {
    endpoint: Endpoint,
    server_config: Arc<ServerConfig>,
    apps: Apps,
    /// Indexed by `ConnectionHandle.0`, which quinn-proto keeps dense.
    conns: Vec<Option<Conn>>,
    live: usize,
    timers: BTreeSet<(Instant, usize)>,
    /// Connections with work to do (events, writes, transmits), each listed once.
    dirty: Vec<usize>,
    dirty_scratch: Vec<usize>,
    rx_arena: BytesMut,
    max_tx_segments: usize,
    retry: bool,
    max_connections: usize,
    drain: Option<Drain>,
    counters: DriverCounters,
    handshakes: HandshakeHistogram,
    /// File operations of this worker's streams, run by the shared reader threads.
    files: FileClient<FileTag>,
    next_serial: u64,
}

/// Which stream a file operation's result goes back to.
struct FileTag {
    conn: usize,
    serial: u64,
    stream: quinn_proto::StreamId,
}

/// What every worker's endpoint shares, built once: the TLS configuration (certificate and
/// session-ticket keys, so a ticket from one worker resumes at another), the Retry-token key
/// (inside quinn-proto's `ServerConfig`) and the stateless-reset key.
#[derive(Clone)]
pub struct QuicSetup {
    server_config: Arc<ServerConfig>,
    /// Everything but the connection ID generator, which is each worker's own.
    endpoint_config: EndpointConfig,
    max_tx_segments: usize,
    allow_mtud: bool,
    /// Where this host and the worker sit in our connection IDs.
    cids: cid::CidLayout,
    /// What a certificate reload needs to build the TLS side again.
    transport: config::Transport,
    alpns: Vec<Vec<u8>>,
    sessions: crate::tls::SessionStore,
    /// The file reader threads, when an app serves files.
    files: Option<FilePool>,
}

impl QuicSetup {
    /// The connection ID layout every worker issues.
    pub fn cid_layout(&self) -> &cid::CidLayout {
        &self.cids
    }

    /// The QUIC configuration for datapaths with `caps` (all workers run the same backend).
    pub fn new(config: &Config, caps: &Capabilities) -> Result<Self, SetupError> {
        let apps = Apps::from_config(&config.apps).map_err(SetupError::Root)?;
        let mut transport = config.transport.clone();
        if let Some(limit) = caps.max_udp_payload {
            if transport.max_udp_payload_size > limit {
                tracing::info!(
                    configured = transport.max_udp_payload_size,
                    limit,
                    "max_udp_payload_size lowered to what the datapath carries"
                );
            }
            transport.max_udp_payload_size = transport.max_udp_payload_size.min(limit).max(1200);
            transport.initial_mtu = transport.initial_mtu.min(transport.max_udp_payload_size);
        }
        // A GSO batch must fit one UDP datagram's 64 KiB, or the kernel refuses it (EMSGSIZE).
        let max_tx_segments = caps
            .max_tx_segments
            .min(MAX_GSO_BYTES / usize::from(transport.max_udp_payload_size))
            .max(1);
        let sessions = crate::tls::session_store(&transport);
        let server_config = Arc::new(quic::server_config(
            config,
            &transport,
            apps.alpns(),
            max_tx_segments,
            sessions.clone(),
        )?);
        let endpoint_config = quic::endpoint_config(&transport)?;
        let files = if apps.serves_files() {
            let readers = config
                .apps
                .file_readers
                .unwrap_or(crate::app::files::DEFAULT_READERS);
            Some(FilePool::new(readers).map_err(SetupError::Files)?)
        } else {
            None
        };
        Ok(Self {
            server_config,
            endpoint_config,
            max_tx_segments,
            // Path MTU discovery only where datagrams are never fragmented (DF set).
            allow_mtud: !caps.may_fragment,
            cids: cid::CidLayout::from_config(&config.server)
                .map_err(|e| SetupError::Quic(format!("server.cid_key: {e}")))?,
            alpns: apps.alpns(),
            transport,
            sessions,
            files,
        })
    }

    /// The TLS side again, from the certificate and key files `tls` names (SIGHUP): the
    /// new identity for every worker's new connections, and when it expires. Sessions carry
    /// over, so clients still resume.
    pub fn reload_tls(&self, tls: &config::Tls) -> Result<Reloaded, SetupError> {
        let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
            return Err(SetupError::Quic(
                "no [tls] cert and key are configured: the development certificate is not \
                 reloaded"
                    .into(),
            ));
        };
        let identity = crate::tls::Identity::from_pem_files(cert, key)?;
        let not_after = identity.not_after();
        let crypto = quic::crypto(
            identity,
            &self.transport,
            self.alpns.clone(),
            self.sessions.clone(),
        )?;
        Ok(Reloaded { crypto, not_after })
    }
}

/// A reloaded TLS side ([`QuicSetup::reload_tls`]).
#[derive(Clone)]
pub struct Reloaded {
    pub crypto: Arc<dyn quinn_proto::crypto::ServerConfig>,
    /// The new leaf certificate's expiry, when it can be read.
    pub not_after: Option<String>,
}

impl Driver {
    /// Builds the QUIC endpoint for a datapath with `caps`.
    pub fn new(config: &Config, caps: &Capabilities) -> Result<Self, SetupError> {
        Self::with_setup(config, &QuicSetup::new(config, caps)?, 0)
    }

    /// Builds worker `worker`'s endpoint on the configuration every worker shares; the
    /// connection IDs it issues name it ([`cid`]).
    pub fn with_setup(config: &Config, setup: &QuicSetup, worker: u8) -> Result<Self, SetupError> {
        let apps = Apps::from_config(&config.apps).map_err(SetupError::Root)?;
        // Each worker its own log of used NEW_TOKEN tokens (quinn-proto's Bloom filter sits
        // behind a mutex): no lock shared between workers. A token replayed to another worker
        // or host is accepted once there too; it still proves the address it was issued to.
        let mut server_config = (*setup.server_config).clone();
        server_config.validation_token_config(ValidationTokenConfig::default());
        let server_config = Arc::new(server_config);
        let max_tx_segments = setup.max_tx_segments;
        let mut endpoint_config = setup.endpoint_config.clone();
        let layout = setup.cids.clone();
        endpoint_config.cid_generator(move || Box::new(cid::WorkerCids::new(&layout, worker)));
        let endpoint = Endpoint::new(
            Arc::new(endpoint_config),
            Some(server_config.clone()),
            setup.allow_mtud,
            None,
        );
        Ok(Self {
            endpoint,
            server_config,
            apps,
            conns: Vec::new(),
            live: 0,
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            dirty_scratch: Vec::new(),
            rx_arena: BytesMut::with_capacity(RX_ARENA),
            max_tx_segments,
            retry: config.transport.retry,
            max_connections: config.transport.max_connections,
            drain: None,
            counters: DriverCounters::default(),
            handshakes: HandshakeHistogram::default(),
            files: setup
                .files
                .as_ref()
                .map_or_else(FileClient::inline, FilePool::client),
            next_serial: 0,
        })
    }

    pub fn counters(&self) -> &DriverCounters {
        &self.counters
    }

    /// Serves new connections with `crypto` (a reloaded certificate); open ones keep theirs.
    pub fn set_tls(&mut self, crypto: Arc<dyn quinn_proto::crypto::ServerConfig>) {
        let mut server_config = (*self.server_config).clone();
        server_config.crypto = crypto;
        self.server_config = Arc::new(server_config);
        self.endpoint
            .set_server_config(Some(self.server_config.clone()));
    }

    /// Takes the worker's handoff totals into the counters.
    pub fn note_handoffs(&mut self, c: handoff::HandoffCounters) {
        self.counters.handoff_sent = c.sent;
        self.counters.handoff_received = c.received;
        self.counters.handoff_dropped = c.dropped;
    }

    /// How long handshakes took.
    pub fn handshakes(&self) -> &HandshakeHistogram {
        &self.handshakes
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.live
    }

    /// Feeds one received payload (one datagram, or several of `meta.stride` bytes each).
    /// Stateless responses (Retry, version negotiation, refusals, resets) go into `tx`.
    pub fn handle_datagrams(
        &mut self,
        now: Instant,
        meta: &RxMeta,
        payload: &[u8],
        tx: &mut TxBatch,
    ) {
        let stride = if meta.stride == 0 {
            payload.len()
        } else {
            meta.stride
        };
        let dropped = tx.dropped_full;
        for datagram in payload.chunks(stride.max(1)) {
            self.handle_datagram(now, meta, datagram, tx);
        }
        self.counters.tx_dropped_full += tx.dropped_full - dropped;
    }

    fn handle_datagram(&mut self, now: Instant, meta: &RxMeta, datagram: &[u8], tx: &mut TxBatch) {
        self.counters.rx_datagrams += 1;
        self.counters.rx_bytes += datagram.len() as u64;
        let data = self.copy_to_arena(datagram);
        let ecn = meta.ecn.map(ecn_to_proto);
        let local_port = meta.dst_port;
        let endpoint = &mut self.endpoint;
        let mut event = None;
        tx.push_with(
            |buf| match endpoint.handle(now, meta.src, meta.dst_ip, ecn, data, buf)? {
                DatagramEvent::Response(t) => Some(tx_meta(&t, local_port)),
                other => {
                    event = Some(other);
                    None
                }
            },
        );
        match event {
            Some(DatagramEvent::ConnectionEvent(handle, ev)) => {
                if let Some(conn) = self.conns.get_mut(handle.0).and_then(Option::as_mut) {
                    conn.quic.handle_event(ev);
                    mark_dirty(&mut self.dirty, handle.0, conn);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.on_incoming(now, incoming, local_port, tx)
            }
            Some(DatagramEvent::Response(_)) | None => {}
        }
    }

    fn on_incoming(
        &mut self,
        now: Instant,
        incoming: quinn_proto::Incoming,
        local_port: u16,
        tx: &mut TxBatch,
    ) {
        let endpoint = &mut self.endpoint;
        if self.drain.is_some() || self.live >= self.max_connections {
            self.counters.connections_refused += 1;
            tx.push_with(|buf| Some(tx_meta(&endpoint.refuse(incoming, buf), local_port)));
            return;
        }
        if self.retry && !incoming.remote_address_validated() {
            let counters = &mut self.counters;
            let queued = tx.push_with(|buf| match endpoint.retry(incoming, buf) {
                Ok(t) => Some(tx_meta(&t, local_port)),
                Err(e) => {
                    // Only when the client already bears a Retry token: drop it silently.
                    counters.accept_errors += 1;
                    endpoint.ignore(e.into_incoming());
                    None
                }
            });
            // A Retry dropped on a full batch counts as tx_dropped_full, not as sent.
            counters.retries_sent += u64::from(queued);
            return;
        }
        let server_config = self.server_config.clone();
        let mut accepted = None;
        tx.push_with(
            |buf| match endpoint.accept(incoming, now, buf, Some(server_config)) {
                Ok(pair) => {
                    accepted = Some(pair);
                    None
                }
                Err(e) => {
                    tracing::debug!(error = %e.cause, "incoming connection not accepted");
                    e.response.map(|t| tx_meta(&t, local_port))
                }
            },
        );
        let Some((handle, quic)) = accepted else {
            self.counters.accept_errors += 1;
            return;
        };
        self.counters.connections_accepted += 1;
        tracing::debug!(remote = %quic.remote_address(), id = handle.0, "connection accepted");
        if self.conns.len() <= handle.0 {
            self.conns.resize_with(handle.0 + 1, || None);
        }
        self.next_serial += 1;
        let conn = self.conns[handle.0].insert(Conn {
            quic,
            serial: self.next_serial,
            session: None,
            accepted_at: now,
            local_port,
            timer: None,
            dirty: false,
            closing: false,
            shutdown_notified: false,
        });
        self.live += 1;
        mark_dirty(&mut self.dirty, handle.0, conn);
    }

    fn copy_to_arena(&mut self, datagram: &[u8]) -> BytesMut {
        if self.rx_arena.capacity() < datagram.len() {
            // Reclaims the old arena in place when quinn-proto has let go of all of it.
            self.rx_arena.reserve(RX_ARENA.max(datagram.len()));
        }
        self.rx_arena.extend_from_slice(datagram);
        self.rx_arena.split()
    }

    /// Runs expired timers and every connection with pending work, writing transmits to `tx`
    /// until it is full. Connections cut short by a full batch stay pending
    /// ([`Driver::has_pending_work`]).
    pub fn process(&mut self, now: Instant, tx: &mut TxBatch) {
        while let Some(&(at, idx)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) {
                conn.timer = None;
                conn.quic.handle_timeout(now);
                mark_dirty(&mut self.dirty, idx, conn);
            }
        }
        if let Some(drain) = &mut self.drain {
            if !drain.expired && now >= drain.deadline {
                drain.expired = true;
                tracing::info!(
                    open = self.live,
                    "drain time is up: closing remaining connections"
                );
                self.mark_all_dirty();
            }
        }
        let mut work = std::mem::take(&mut self.dirty_scratch);
        std::mem::swap(&mut work, &mut self.dirty);
        for &idx in &work {
            self.drive(now, idx, tx);
        }
        work.clear();
        self.dirty_scratch = work;
    }

    /// One connection: endpoint events, application events, transmits, timer.
    fn drive(&mut self, now: Instant, idx: usize, tx: &mut TxBatch) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        conn.dirty = false;
        let handle = ConnectionHandle(idx);
        while let Some(ev) = conn.quic.poll_endpoint_events() {
            if let Some(ev) = self.endpoint.handle_event(handle, ev) {
                conn.quic.handle_event(ev);
            }
        }
        while let Some(ev) = conn.quic.poll() {
            match ev {
                Event::HandshakeDataReady => {
                    let alpn = conn
                        .quic
                        .crypto_session()
                        .handshake_data()
                        .and_then(|d| d.downcast::<HandshakeData>().ok())
                        .and_then(|d| d.protocol);
                    match alpn.as_deref().and_then(|a| self.apps.session(a)) {
                        Some(mut session) => {
                            session.accept_streams(&mut conn.quic);
                            conn.session = Some(session);
                        }
                        None => {
                            self.counters.no_application += 1;
                            conn.quic.close(
                                now,
                                NO_APPLICATION,
                                "no application for this ALPN".into(),
                            );
                            conn.closing = true;
                        }
                    }
                }
                Event::Connected => {
                    self.counters.handshakes_completed += 1;
                    self.handshakes.record(
                        now.saturating_duration_since(conn.accepted_at)
                            .as_secs_f64(),
                    );
                }
                Event::ConnectionLost { reason } => {
                    tracing::debug!(id = idx, %reason, "connection lost");
                }
                Event::Stream(ev) => {
                    if let Some(session) = &mut conn.session {
                        session.on_stream_event(&mut conn.quic, ev);
                    }
                }
                Event::DatagramReceived | Event::DatagramsUnblocked => {}
            }
        }
        // File operations the streams asked for go to the readers.
        if let Some(session) = &mut conn.session {
            for (stream, op) in session.take_file_ops() {
                let tag = FileTag {
                    conn: idx,
                    serial: conn.serial,
                    stream,
                };
                self.files.submit(tag, op);
            }
        }
        // A protocol error the application found closes the connection with its code.
        if let Some(session) = &mut conn.session {
            self.counters.app_stream_errors += session.take_stream_errors();
            if let Some((code, reason)) = session.take_close() {
                if !conn.closing {
                    self.counters.app_connection_errors += 1;
                    conn.quic.close(now, code, reason.into_bytes().into());
                    conn.closing = true;
                }
            }
        }
        if let Some(drain) = &self.drain {
            // The application's notice (HTTP/3 GOAWAY) goes out before the close: this pass
            // sends it, and the connection closes on a later one (the peer's ACK, a timer).
            let mut notice_now = false;
            if !conn.shutdown_notified {
                conn.shutdown_notified = true;
                if let Some(session) = &mut conn.session {
                    notice_now = !conn.closing && session.begin_shutdown(&mut conn.quic);
                }
            }
            let idle = conn
                .session
                .as_ref()
                .is_none_or(|s| !s.has_active_streams());
            if !conn.closing && ((idle && !notice_now) || drain.expired) {
                // The application's "no error" code (HTTP/3 wants H3_NO_ERROR); 0 otherwise.
                let code = conn
                    .session
                    .as_ref()
                    .map_or(SHUTDOWN_CODE, Session::no_error);
                conn.quic.close(now, code, "server shutting down".into());
                conn.closing = true;
            }
        }
        let mut blocked = false;
        loop {
            if tx.is_full() {
                blocked = true;
                break;
            }
            let quic = &mut conn.quic;
            let (local_port, segments) = (conn.local_port, self.max_tx_segments);
            let queued = tx.push_with(|buf| {
                quic.poll_transmit(now, segments, buf)
                    .map(|t| tx_meta(&t, local_port))
            });
            if !queued {
                break;
            }
            self.counters.tx_transmits += 1;
        }
        // Sending can retire connection IDs; let the endpoint know now.
        while let Some(ev) = conn.quic.poll_endpoint_events() {
            blocked = true;
            if let Some(ev) = self.endpoint.handle_event(handle, ev) {
                conn.quic.handle_event(ev);
            }
        }
        let timer = conn.quic.poll_timeout();
        if timer != conn.timer {
            if let Some(old) = conn.timer {
                self.timers.remove(&(old, idx));
            }
            if let Some(new) = timer {
                self.timers.insert((new, idx));
            }
            conn.timer = timer;
        }
        if conn.quic.is_drained() {
            if let Some(t) = conn.timer {
                self.timers.remove(&(t, idx));
            }
            self.conns[idx] = None;
            self.live -= 1;
            self.counters.connections_closed += 1;
        } else if blocked {
            mark_dirty(&mut self.dirty, idx, conn);
        }
    }

    /// Whether an application serves files (then file results come back to this worker).
    pub fn serves_files(&self) -> bool {
        self.apps.serves_files()
    }

    /// Rung by the file readers when a result is ready.
    pub fn set_doorbell(&mut self, doorbell: Arc<crate::datapath::wake::Doorbell>) {
        self.files.set_doorbell(doorbell);
    }

    /// File operations handed to the readers whose results have not come back.
    pub fn files_in_flight(&self) -> usize {
        self.files.in_flight()
    }

    /// Hands the file results that are ready to their streams; returns how many.
    pub fn collect_files(&mut self) -> usize {
        let (conns, dirty) = (&mut self.conns, &mut self.dirty);
        self.files.collect(|tag, done| {
            let Some(conn) = conns.get_mut(tag.conn).and_then(Option::as_mut) else {
                return;
            };
            if conn.serial != tag.serial {
                return;
            }
            if let Some(session) = &mut conn.session {
                session.on_file(&mut conn.quic, tag.stream, done);
                mark_dirty(dirty, tag.conn, conn);
            }
        })
    }

    fn mark_all_dirty(&mut self) {
        for (idx, conn) in self.conns.iter_mut().enumerate() {
            if let Some(conn) = conn {
                mark_dirty(&mut self.dirty, idx, conn);
            }
        }
    }

    /// Whether a connection still has work that a full transmit batch cut short.
    pub fn has_pending_work(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// When [`Driver::process`] must next run even if nothing arrives.
    pub fn next_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|&(t, _)| t);
        match &self.drain {
            Some(d) if !d.expired => Some(timer.map_or(d.deadline, |t| t.min(d.deadline))),
            _ => timer,
        }
    }

    /// Starts a graceful shutdown: new connections are refused; connections are closed as
    /// soon as they have no open streams, and all of them once `drain` has passed.
    pub fn begin_shutdown(&mut self, now: Instant, drain: Duration) {
        if self.drain.is_some() {
            return;
        }
        tracing::info!(
            open = self.live,
            drain_ms = drain.as_millis() as u64,
            "shutting down: refusing new connections, draining open streams"
        );
        self.drain = Some(Drain {
            deadline: now + drain,
            expired: false,
        });
        self.mark_all_dirty();
    }

    /// Whether a shutdown has finished: every connection closed and its close sent.
    pub fn is_shut_down(&self) -> bool {
        self.drain.is_some()
            && self.dirty.is_empty()
            && self
                .conns
                .iter()
                .flatten()
                .all(|c| c.closing || c.quic.is_closed())
    }
}

fn mark_dirty(dirty: &mut Vec<usize>, idx: usize, conn: &mut Conn) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(idx);
    }
}

fn tx_meta(t: &Transmit, local_port: u16) -> TxMeta {
    TxMeta {
        dst: t.destination,
        src_ip: t.src_ip,
        src_port: local_port,
        ecn: t.ecn.map(ecn_from_proto),
        segment_size: t.segment_size,
    }
}

fn ecn_to_proto(e: Ecn) -> EcnCodepoint {
    match e {
        Ecn::Ect0 => EcnCodepoint::Ect0,
        Ecn::Ect1 => EcnCodepoint::Ect1,
        Ecn::Ce => EcnCodepoint::Ce,
    }
}

fn ecn_from_proto(e: EcnCodepoint) -> Ecn {
    match e {
        EcnCodepoint::Ect0 => Ecn::Ect0,
        EcnCodepoint::Ect1 => Ecn::Ect1,
        EcnCodepoint::Ce => Ecn::Ce,
    }
}

#[cfg(test)]
mod tests;
