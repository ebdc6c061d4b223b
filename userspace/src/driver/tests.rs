//! The driver without any datapath: a quinn-proto client endpoint and our driver exchange
//! datagrams in memory, with time as a parameter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::crypto::rustls::QuicClientConfig;
use quinn_proto::{
    ClientConfig, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig, Event,
};

use super::Driver;
use crate::config::Config;
use crate::datapath::{Capabilities, RxMeta, TxBatch};

const SERVER: &str = "198.18.0.1:4433";
const CLIENT: &str = "198.18.0.2:50000";

fn config(extra: &str) -> Config {
    let src = format!(
        "[server]\nlisten = [\"{SERVER}\"]\n[apps.echo]\nalpn = [\"echo\"]\n[apps.perf]\nalpn = [\"perf\"]\n{extra}"
    );
    Config::parse(std::path::Path::new("test.toml"), &src).unwrap()
}

fn driver(extra: &str) -> Driver {
    let caps = Capabilities {
        max_tx_segments: 1,
        may_fragment: false,
        local_addrs: vec![SERVER.parse().unwrap()],
        max_udp_payload: None,
    };
    Driver::new(&config(extra), &caps).unwrap()
}

fn client_config(alpn: &str) -> ClientConfig {
    let tls = crate::tls::dev_client_config(&[alpn]);
    ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()))
}

/// A client endpoint with one connection, and the driver, joined by two in-memory queues.
struct Pair {
    driver: Driver,
    tx: TxBatch,
    client: Endpoint,
    conn: quinn_proto::Connection,
    handle: ConnectionHandle,
    now: Instant,
    /// Datagrams from the client to the server.
    to_server: Vec<Vec<u8>>,
    server_datagrams: usize,
}

impl Pair {
    fn new(extra: &str, alpn: &str) -> Self {
        let mut client = Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None);
        let now = Instant::now();
        let (handle, conn) = client
            .connect(
                now,
                client_config(alpn),
                SERVER.parse().unwrap(),
                "localhost",
            )
            .unwrap();
        Self {
            driver: driver(extra),
            tx: TxBatch::new(64, 2048),
            client,
            conn,
            handle,
            now,
            to_server: Vec::new(),
            server_datagrams: 0,
        }
    }

    /// One round: client transmits go to the driver, the driver's to the client. Returns
    /// whether anything moved.
    fn step(&mut self) -> bool {
        let mut moved = false;
        let mut buf = Vec::new();
        while let Some(t) = self.conn.poll_transmit(self.now, 1, &mut buf) {
            self.to_server.push(buf[..t.size].to_vec());
            buf.clear();
        }
        while let Some(ev) = self.conn.poll_endpoint_events() {
            if let Some(ev) = self.client.handle_event(self.handle, ev) {
                self.conn.handle_event(ev);
            }
        }
        let meta = RxMeta {
            src: CLIENT.parse().unwrap(),
            dst_ip: Some(SERVER.parse::<SocketAddr>().unwrap().ip()),
            dst_port: 4433,
            ecn: None,
            stride: 0,
        };
        for d in std::mem::take(&mut self.to_server) {
            moved = true;
            let meta = RxMeta {
                stride: d.len(),
                ..meta
            };
            self.driver
                .handle_datagrams(self.now, &meta, &d, &mut self.tx);
        }
        self.driver.process(self.now, &mut self.tx);
        for slot in self.tx.queued() {
            moved = true;
            self.server_datagrams += 1;
            assert_eq!(slot.meta.dst, CLIENT.parse().unwrap());
            assert_eq!(
                slot.meta.src_port, 4433,
                "transmits leave from the port the peer used"
            );
            let mut out = Vec::new();
            if let Some(DatagramEvent::ConnectionEvent(_, ev)) = self.client.handle(
                self.now,
                SERVER.parse().unwrap(),
                None,
                None,
                BytesMut::from(&slot.buf[..]),
                &mut out,
            ) {
                self.conn.handle_event(ev);
            }
        }
        let n = self.tx.len();
        self.tx.consume(n);
        moved
    }

    /// Runs rounds until nothing moves, advancing time to the next timer when idle.
    fn settle(&mut self, max_rounds: usize) {
        for _ in 0..max_rounds {
            if !self.step() {
                return;
            }
        }
    }

    fn connected(&mut self) -> bool {
        let mut up = false;
        while let Some(ev) = self.conn.poll() {
            if matches!(ev, Event::Connected) {
                up = true;
            }
        }
        up
    }
}

#[test]
fn echo_over_an_in_memory_connection() {
    let mut p = Pair::new("", "echo");
    p.settle(50);
    assert!(p.connected(), "handshake completes");
    assert_eq!(p.driver.connections(), 1);
    let id = p.conn.streams().open(Dir::Bi).unwrap();
    let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut written = 0;
    let mut echoed = Vec::new();
    let mut finished = false;
    for _ in 0..2000 {
        if written < message.len() {
            written += p
                .conn
                .send_stream(id)
                .write(&message[written..])
                .unwrap_or(0);
            if written == message.len() {
                p.conn.send_stream(id).finish().unwrap();
            }
        }
        p.step();
        // Events only say what to poll; the stream is read below either way.
        while p.conn.poll().is_some() {}
        let mut recv = p.conn.recv_stream(id);
        if let Ok(mut chunks) = recv.read(true) {
            loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(c)) => echoed.extend_from_slice(&c.bytes),
                    Ok(None) => {
                        finished = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let _ = chunks.finalize();
        }
        if finished {
            break;
        }
    }
    assert!(finished, "the echo stream finished");
    assert_eq!(echoed, message, "every byte came back in order");
    let c = p.driver.counters();
    assert_eq!(c.connections_accepted, 1);
    assert_eq!(c.handshakes_completed, 1);
    assert!(c.rx_datagrams > 0 && c.tx_transmits as usize == p.server_datagrams);
}

#[test]
fn shutdown_closes_idle_connections_and_finishes() {
    let mut p = Pair::new("", "perf");
    p.settle(50);
    assert!(p.connected());
    assert!(
        !p.driver.is_shut_down(),
        "no shutdown before it is asked for"
    );
    p.driver.begin_shutdown(p.now, Duration::from_secs(5));
    p.settle(20);
    assert!(
        p.driver.is_shut_down(),
        "an idle connection is closed at once"
    );
    let mut closed = false;
    while let Some(ev) = p.conn.poll() {
        if let Event::ConnectionLost { reason } = ev {
            closed = matches!(reason, quinn_proto::ConnectionError::ApplicationClosed(ref c) if c.error_code == super::SHUTDOWN_CODE);
        }
    }
    assert!(
        closed,
        "the client saw an application close with the shutdown code"
    );
}

#[test]
fn connections_beyond_the_limit_are_refused() {
    let mut p = Pair::new("[transport]\nmax_connections = 1\n", "echo");
    p.settle(50);
    assert!(p.connected());
    // A second client connection from another port.
    let (h2, mut c2) = p
        .client
        .connect(
            p.now,
            client_config("echo"),
            SERVER.parse().unwrap(),
            "localhost",
        )
        .unwrap();
    let mut buf = Vec::new();
    let t = c2.poll_transmit(p.now, 1, &mut buf).unwrap();
    let meta = RxMeta {
        src: "198.18.0.3:50001".parse().unwrap(),
        dst_ip: None,
        dst_port: 4433,
        ecn: None,
        stride: t.size,
    };
    p.driver
        .handle_datagrams(p.now, &meta, &buf[..t.size], &mut p.tx);
    assert_eq!(p.driver.counters().connections_refused, 1);
    assert_eq!(p.tx.len(), 1, "the refusal is answered statelessly");
    drop((h2, c2));
}

/// Stateless responses that find the transmit batch full are dropped and counted by the
/// driver (`tx_dropped_full`), not lost silently.
#[test]
fn stateless_responses_on_a_full_batch_are_counted() {
    // Every Initial without a token gets a Retry, a stateless response.
    let mut driver = driver("[transport]\nretry = true\n");
    let mut tx = TxBatch::new(1, 2048);
    let now = Instant::now();
    let mut initials = Vec::new();
    for _ in 0..3 {
        let mut client = Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None);
        let (_, mut conn) = client
            .connect(
                now,
                client_config("echo"),
                SERVER.parse().unwrap(),
                "localhost",
            )
            .unwrap();
        let mut buf = Vec::new();
        let t = conn.poll_transmit(now, 1, &mut buf).expect("an Initial");
        buf.truncate(t.size);
        initials.push(buf);
    }
    let meta = |len| RxMeta {
        src: CLIENT.parse().unwrap(),
        dst_ip: None,
        dst_port: 4433,
        ecn: None,
        stride: len,
    };
    for initial in &initials {
        driver.handle_datagrams(now, &meta(initial.len()), initial, &mut tx);
    }
    // One slot: the first Retry is queued (and counted as sent), the other two dropped and
    // counted as such.
    assert_eq!(tx.len(), 1);
    assert_eq!(driver.counters().retries_sent, 1);
    assert_eq!(driver.counters().tx_dropped_full, 2);
}
