//! Load the daemon must hold: 10,000 concurrent connections with a stream each, and slow
//! clients that open streams and never read. Each case reports its figures with
//! [`record`] (for RELIABILITY.md, `cargo xtask reliability`) and bounds them.
//!
//! On one backend of each kind, over veth between namespaces (the xdp kinds share the same
//! packet path; their variants are covered for correctness elsewhere).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::harness::*;
use crate::metrics::{http_get, metrics_addr, sum};

e2e_tests!(
    [socket_netns = SocketNetns, io_uring_netns = IoUringNetns, xdp_driver = XdpDriver] {
        ten_thousand_concurrent_connections(4),
        slow_readers_are_bounded_and_others_unaffected(4),
    }
);

const CONNECTIONS: usize = 10_000;
/// Handshakes the client keeps in flight (the rest wait their turn).
const HANDSHAKES_IN_FLIGHT: usize = 64;
/// The largest daemon memory per open connection accepted, bytes.
const MAX_BYTES_PER_CONNECTION: u64 = 64 * 1024;

/// The daemon's open connections, from its metrics endpoint.
fn open_connections(fx: &Fixture, metrics: std::net::SocketAddr) -> u64 {
    let (status, body) = http_get(fx.server_ns(), metrics, "/metrics");
    assert!(status.contains("200"), "{status}");
    sum(&body, "quixd_connections")
}

/// 10,000 clients connect (64 handshakes at a time), each fetches a file on a stream of its
/// own, and all stay open together: every request is served, the daemon counts 10,000 open
/// connections, and its memory grows by at most 64 KiB per connection.
async fn ten_thousand_concurrent_connections(t: Backend) {
    let test = format!(
        "capacity::{}::ten_thousand_concurrent_connections",
        t.name()
    );
    let fx = Fixture::new(t);
    let body = random_bytes(1000, run_seed());
    fx.put("one.bin", &body);
    let cfg = fx
        .config()
        .metrics("127.0.0.1:0")
        .transport("max_connections", "10500")
        // The clients are idle while the others connect: longer than the test may take on a
        // busy machine.
        .transport("idle_timeout_ms", "600000");
    let mut d = fx.start(&cfg).await;
    let addr = d.addr();
    let metrics = metrics_addr(&d).await;
    let rss_before = rss_bytes(d.pid());

    let started = Instant::now();
    let conns = bounded(Duration::from_secs(600), async {
        let ep = fx.client.endpoint(addr);
        let cfg = client_config_with_idle(&fx.trust(), &[ALPN_HQ], false, Duration::from_secs(600));
        let gate = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CONNECTIONS {
            let (ep, cfg, gate, body) = (ep.clone(), cfg.clone(), gate.clone(), body.clone());
            tasks.spawn(async move {
                let permit = gate.acquire_owned().await.expect("semaphore");
                // Generous: a handshake may queue behind many others on a busy machine.
                let conn = connect_within(&ep, &cfg, addr, Duration::from_secs(60)).await;
                drop(permit);
                assert_same_bytes(&hq_get(&conn, "/one.bin").await, &body, "GET /one.bin");
                conn
            });
        }
        let mut conns = Vec::with_capacity(CONNECTIONS);
        while let Some(done) = tasks.join_next().await {
            conns.push(done.expect("a client task failed"));
        }
        (ep, conns)
    })
    .await;
    let elapsed = started.elapsed();
    assert_eq!(conns.1.len(), CONNECTIONS);
    assert!(
        conns.1.iter().all(|c| c.close_reason().is_none()),
        "every connection is still open"
    );
    // The gauge is published a few times a second: the last handshakes may not be in it yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut open = open_connections(&fx, metrics);
    while open < CONNECTIONS as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        open = open_connections(&fx, metrics);
    }
    let rss_peak = rss_bytes(d.pid());
    let per_conn = rss_peak.saturating_sub(rss_before) / CONNECTIONS as u64;
    record(
        &test,
        "connections served concurrently",
        open as f64,
        "connections",
    );
    record(
        &test,
        "time to connect and serve all",
        elapsed.as_secs_f64(),
        "s",
    );
    record(
        &test,
        "daemon RSS with all open",
        rss_peak as f64 / 1e6,
        "MB",
    );
    record(
        &test,
        "daemon memory per connection",
        per_conn as f64,
        "bytes",
    );
    assert_eq!(
        open, CONNECTIONS as u64,
        "the daemon holds every connection"
    );
    assert!(
        per_conn <= MAX_BYTES_PER_CONNECTION,
        "{per_conn} bytes per connection (RSS {rss_before} -> {rss_peak})"
    );
    // Closed in batches: a burst of 10,000 closes would overflow socket buffers, and a lost
    // close leaves its connection to the idle timeout.
    for batch in conns.1.chunks(100) {
        for c in batch {
            c.close(0u32.into(), b"done");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every close reaches the daemon and frees its connection.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = open_connections(&fx, metrics);
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connections left open 30 s after the clients closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.assert_alive();
}

const SLOW_CLIENTS: usize = 100;
const BIG: usize = 20_000_000;
/// The largest daemon memory per stalled reader accepted, bytes: flow control (the client's
/// 1.25 MB stream window) bounds what waits for acknowledgement; one read ahead waits besides.
const MAX_BYTES_PER_SLOW_CLIENT: u64 = 3_000_000;

/// 100 clients ask for a 20 MB file and never read it; one normal client downloads it
/// meanwhile, intact. The daemon's memory per stalled reader stays within what flow control
/// allows, and once nothing moves on them the stalled connections time out (idle timeout
/// 60 s, longer than setting them up takes on a busy machine) and the daemon holds none of them.
async fn slow_readers_are_bounded_and_others_unaffected(t: Backend) {
    let test = format!(
        "capacity::{}::slow_readers_are_bounded_and_others_unaffected",
        t.name()
    );
    let fx = Fixture::new(t);
    let data = random_bytes(BIG, run_seed());
    fx.put("big.bin", &data);
    let cfg = fx
        .config()
        .metrics("127.0.0.1:0")
        .transport("idle_timeout_ms", "60000");
    let mut d = fx.start(&cfg).await;
    let addr = d.addr();
    let metrics = metrics_addr(&d).await;
    let rss_before = rss_bytes(d.pid());

    bounded(Duration::from_secs(300), async {
        // The slow clients: one endpoint, each connection one request whose response is never
        // read (the stream stays open, so quinn keeps acknowledging but grants no credit).
        let slow_ep = fx.client.endpoint(addr);
        let cfg = client_config(&fx.trust(), &[ALPN_HQ], false);
        let mut stalled = Vec::new();
        for _ in 0..SLOW_CLIENTS {
            let conn = connect(&slow_ep, &cfg, addr).await;
            let (mut send, recv) = conn.open_bi().await.expect("open a stream");
            send.write_all(b"GET /big.bin\r\n").await.expect("request");
            send.finish().expect("finish");
            stalled.push((conn, send, recv));
        }
        // Let the daemon fill every window it can.
        tokio::time::sleep(Duration::from_secs(1)).await;

        let started = Instant::now();
        let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_HQ, addr).await;
        assert_same_bytes(
            &hq_get(&conn, "/big.bin").await,
            &data,
            "GET /big.bin beside 100 stalled readers",
        );
        conn.close(0u32.into(), b"done");
        let took = started.elapsed();

        let rss_peak = rss_bytes(d.pid());
        let per_slow = rss_peak.saturating_sub(rss_before) / SLOW_CLIENTS as u64;
        record(&test, "stalled readers", SLOW_CLIENTS as f64, "connections");
        record(
            &test,
            "normal 20 MB download beside them",
            took.as_secs_f64(),
            "s",
        );
        record(
            &test,
            "daemon memory per stalled reader",
            per_slow as f64,
            "bytes",
        );
        assert!(
            per_slow <= MAX_BYTES_PER_SLOW_CLIENT,
            "{per_slow} bytes per stalled reader (RSS {rss_before} -> {rss_peak})"
        );
        // (The normal client's close may still be on its way.)
        let open = open_connections(&fx, metrics);
        assert!(
            open >= SLOW_CLIENTS as u64,
            "{open} connections open: the stalled readers are all still held"
        );

        // Nothing moves on the stalled connections (no credit, nothing unacknowledged): they
        // go idle, and the idle timeout ends them, though the clients still hold them.
        let silenced = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(120);
        while open_connections(&fx, metrics) > 0 {
            assert!(
                Instant::now() < deadline,
                "stalled connections outlived the idle timeout"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        record(
            &test,
            "time until the idle timeout dropped them all",
            silenced.elapsed().as_secs_f64(),
            "s",
        );
        drop(stalled);
    })
    .await;
    d.assert_alive();
}
