//! (h) Several workers (`server.workers`): each its own endpoint and its own SO_REUSEPORT
//! sockets. Clients on many ports are spread over the workers by the kernel; every worker
//! serves; session tickets from one worker give 0-RTT at another (shared keys); a second
//! daemon cannot join the port group; a client whose port keeps changing (NAT rebinding) stays
//! on the worker that owns its connection (steering by connection ID, which needs CAP_BPF; and
//! without CAP_BPF, the worker that gets its datagrams hands them over in user space); with
//! encrypted connection IDs (`server.cid_key`), which the steering program cannot read, the
//! handoff keeps such a client's connection too.

use std::time::Duration;

use crate::harness::*;
use crate::netns::privileged;
use crate::process::{driver_counter, per_worker};

e2e_tests!(
    [
        socket = Socket,
        socket_netns = SocketNetns,
        io_uring = IoUring,
        io_uring_netns = IoUringNetns,
    ] {
        two_workers_serve_and_share_session_keys(4),
        a_second_daemon_cannot_join_the_workers_port,
        a_rebinding_client_stays_on_its_worker,
        a_rebinding_client_is_handed_over_without_steering,
        encrypted_ids_keep_a_rebinding_client_through_the_handoff,
        reuseport_steering_counters_are_scraped,
    }
);

/// Client endpoints (one port each) after the first connection; with two workers the chance
/// that the kernel's hash puts all of them on one worker is 2^-15.
const CLIENTS: usize = 16;

async fn two_workers_serve_and_share_session_keys(t: Backend) {
    let fx = Fixture::new(t);
    let data = random_bytes(50_000, run_seed());
    fx.put("f.bin", &data);
    let cfg = fx
        .config()
        .workers("2")
        .transport("resumption", "true")
        .transport("zero_rtt", "true");
    let mut d = fx.start(&cfg).await;
    let addr = d.addr();
    let trust = fx.trust();
    let accepted = bounded(Duration::from_secs(120), async {
        // One client config for all: its session cache carries the ticket of the first
        // connection to every later one.
        let ccfg = client_config(&trust, &[ALPN_HQ], true);
        let ep = fx.client.endpoint(addr);
        let conn = connect(&ep, &ccfg, addr).await;
        assert_same_bytes(&hq_get(&conn, "/f.bin").await, &data, "first GET");
        // Session tickets arrive right after the handshake; leave them time to be processed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
        let mut accepted = Vec::new();
        for c in 0..CLIENTS {
            // A new endpoint: a new port, hashed to either worker.
            let ep = fx.client.endpoint(addr);
            let connecting = ep.connect_with(ccfg.clone(), addr, "localhost").unwrap();
            let (conn, zero_rtt) = match connecting.into_0rtt() {
                Ok((conn, zero_rtt)) => {
                    let ok = tokio::time::timeout(Duration::from_secs(10), zero_rtt)
                        .await
                        .unwrap_or_else(|_| panic!("client {c}: ZeroRttAccepted hung"));
                    (conn, Some(ok))
                }
                Err(_) => panic!("client {c}: no session ticket for 0-RTT"),
            };
            let what = format!("client {c}: GET /f.bin");
            assert_same_bytes(&hq_get(&conn, "/f.bin").await, &data, &what);
            accepted.push(zero_rtt);
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
        }
        accepted
    })
    .await;
    d.assert_alive();
    let log = d.terminate().await;
    assert!(
        accepted.iter().all(|a| *a == Some(true)),
        "0-RTT refused on some connections (a worker with other ticket keys?): {accepted:?}"
    );
    let workers = per_worker(&log, "rx_datagrams");
    let mut ids: Vec<u64> = workers.iter().map(|(w, _)| *w).collect();
    ids.sort_unstable();
    assert_eq!(ids, [0, 1], "one counters line per worker:\n{log}");
    assert!(
        workers.iter().all(|(_, rx)| *rx > 0),
        "a worker received nothing from {CLIENTS} client ports: {workers:?}\n{log}"
    );
    assert!(
        log.contains("totals over workers"),
        "no totals line at shutdown:\n{log}"
    );
}

async fn a_second_daemon_cannot_join_the_workers_port(t: Backend) {
    let fx = Fixture::new(t);
    let cfg = fx.config().workers("2");
    let mut first = fx.start(&cfg).await;
    // The same addresses as bound (port 0 resolved), with workers too.
    let taken: Vec<String> = first.addrs.iter().map(|a| a.to_string()).collect();
    let taken: Vec<&str> = taken.iter().map(String::as_str).collect();
    let second_cfg = fx.write_config(&cfg.clone().listen(&taken));
    let (status, stderr, _) = fx
        .run_quixd(
            &["run".as_ref(), "--config".as_ref(), second_cfg.as_os_str()],
            Duration::from_secs(20),
        )
        .await;
    assert!(
        !status.success() && stderr.contains("in use"),
        "a second daemon on the same port must fail naming the cause: {status:?}\n{stderr}"
    );
    first.assert_alive();
}

/// Rebinds per connection: by address hash alone, all of them reaching the owning worker has
/// a chance of 2^-12.
const REBINDS: usize = 12;

/// One connection to `d` that GETs `/f.bin` (`data`), then again after each of [`REBINDS`]
/// port changes: after each, only the connection ID says which worker owns the connection.
async fn rebinding_client(fx: &Fixture, d: &Daemon, data: &[u8]) {
    let addr = d.addr();
    let trust = fx.trust();
    bounded(Duration::from_secs(120), async {
        let ep = fx.client.endpoint(addr);
        let ccfg = client_config(&trust, &[ALPN_HQ], false);
        let conn = connect(&ep, &ccfg, addr).await;
        assert_same_bytes(&hq_get(&conn, "/f.bin").await, data, "GET before rebinding");
        get_across_rebinds(&ep, &fx.client, &conn, REBINDS, "/f.bin", data).await;
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
    })
    .await;
}

async fn a_rebinding_client_stays_on_its_worker(t: Backend) {
    // Loading the steering program needs CAP_BPF; without it the daemon runs unsteered.
    if !privileged("a_rebinding_client_stays_on_its_worker") {
        return;
    }
    let fx = Fixture::new(t);
    let data = random_bytes(30_000, run_seed());
    fx.put("f.bin", &data);
    // A host id before the worker's octet, as behind a load balancer.
    let mut d = fx
        .start(&fx.config().workers("2").server_id("0a0b0c"))
        .await;
    rebinding_client(&fx, &d, &data).await;
    d.assert_alive();
    let log = d.terminate().await;
    assert!(
        !log.contains("steering is off"),
        "connection-ID steering did not start:\n{log}"
    );
    let totals = counters(&log);
    assert!(
        totals.get("steer_by_cid").copied().unwrap_or(0) > 0,
        "no packet steered by connection ID: {totals:?}"
    );
    assert_eq!(
        driver_counter(&log, "connections_accepted"),
        1,
        "one connection, kept across {REBINDS} rebinds"
    );
}

async fn a_rebinding_client_is_handed_over_without_steering(t: Backend) {
    if !privileged("a_rebinding_client_is_handed_over_without_steering") {
        return;
    }
    let fx = Fixture::new(t);
    let data = random_bytes(30_000, run_seed());
    fx.put("f.bin", &data);
    // Without CAP_BPF (and CAP_SYS_ADMIN, which would stand in for it) the steering program
    // cannot load: datagrams reach workers by address hash alone.
    let no_bpf = [
        "setpriv",
        "--inh-caps=-bpf,-sys_admin",
        "--bounding-set=-bpf,-sys_admin",
        "--",
    ];
    let mut d = fx.start_wrapped(&fx.config().workers("2"), &no_bpf).await;
    rebinding_client(&fx, &d, &data).await;
    d.assert_alive();
    let log = d.terminate().await;
    assert!(
        log.contains("steering is off"),
        "the steering program loaded without CAP_BPF:\n{log}"
    );
    assert_eq!(
        driver_counter(&log, "connections_accepted"),
        1,
        "one connection, kept across {REBINDS} rebinds"
    );
    let sent = driver_counter(&log, "handoff_sent");
    assert!(
        sent > 0,
        "{REBINDS} rebinds and nothing handed over:\n{log}"
    );
    assert_eq!(sent, driver_counter(&log, "handoff_received"));
}

async fn encrypted_ids_keep_a_rebinding_client_through_the_handoff(t: Backend) {
    let fx = Fixture::new(t);
    let data = random_bytes(30_000, run_seed());
    fx.put("f.bin", &data);
    // QUIC-LB's encrypted mode: the kernel cannot read the worker, so steering stays unloaded
    // even where it could load (as root), and the handoff moves datagrams between workers.
    let cfg = fx
        .config()
        .workers("2")
        .server_id("0a0b0c")
        .cid_key("000102030405060708090a0b0c0d0e0f");
    let mut d = fx.start(&cfg).await;
    rebinding_client(&fx, &d, &data).await;
    d.assert_alive();
    let log = d.terminate().await;
    assert!(
        log.contains("steering is not loaded: connection IDs are encrypted"),
        "no word of steering left out for encryption:\n{log}"
    );
    assert!(
        !log.contains("steering is off"),
        "steering was tried despite encryption:\n{log}"
    );
    assert_eq!(
        driver_counter(&log, "connections_accepted"),
        1,
        "one connection, kept across {REBINDS} rebinds"
    );
    let sent = driver_counter(&log, "handoff_sent");
    assert!(
        sent > 0,
        "{REBINDS} rebinds and nothing handed over:\n{log}"
    );
    assert_eq!(sent, driver_counter(&log, "handoff_received"));
}

/// The steering programs' counters on `/metrics` while the daemon runs (they are the
/// addresses', not a worker's: no worker label).
async fn reuseport_steering_counters_are_scraped(t: Backend) {
    if !privileged("reuseport_steering_counters_are_scraped") {
        return;
    }
    let fx = Fixture::new(t);
    fx.put("f.bin", b"steered\n");
    let mut d = fx
        .start(&fx.config().workers("2").metrics("127.0.0.1:0"))
        .await;
    let addr = d.addr();
    let metrics = crate::metrics::metrics_addr(&d).await;
    let trust = fx.trust();
    bounded(Duration::from_secs(60), async {
        let ccfg = client_config(&trust, &[ALPN_HQ], false);
        for c in 0..4 {
            let ep = fx.client.endpoint(addr);
            let conn = connect(&ep, &ccfg, addr).await;
            assert_eq!(hq_get(&conn, "/f.bin").await, b"steered\n", "client {c}");
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
        }
    })
    .await;
    let ns = fx.server_ns().map(str::to_owned);
    let (status, body) = crate::metrics::http_get(ns.as_deref(), metrics, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains("# TYPE quixd_reuseport_steer_by_cid counter"),
        "no steering counters:\n{body}"
    );
    let value = |name: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
    };
    assert!(
        value("quixd_reuseport_steer_long_header_total") > 0,
        "handshakes are long headers, steered by hash:\n{body}"
    );
    assert!(
        value("quixd_reuseport_steer_by_cid_total") > 0,
        "1-RTT packets steered by connection ID:\n{body}"
    );
    d.assert_alive();
    d.terminate().await;
}
