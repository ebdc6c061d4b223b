//! Per-queue workers on the XDP backend: `server.workers = "auto"` on a two-queue veth runs
//! two workers, each with the AF_XDP socket of its own queue and its own endpoint, under one
//! XDP program; flows spread over the queues reach both, and the program leaves the interface
//! when the last worker stops. A client that keeps changing its port lands on either queue;
//! the worker that gets a datagram of the other's connection hands it over, and the
//! connection carries on.

use std::net::SocketAddr;
use std::time::Duration;

use crate::daemon::{
    bounded, client, connect, driver_counter, get, hq_get, in_ns, ip_xdp, runtime, Quixd, Site,
    PORT,
};
use crate::netns::{privileged, TestNet};
use crate::process::per_worker;

/// Client endpoints, one UDP port each: with two queues, the chance that the client veth's
/// flow hash puts all of them on one queue is 2^-15.
const CLIENTS: usize = 16;
/// Port changes of one connection: the chance that all of them stay on its queue is 2^-16.
const REBINDS: usize = 16;

/// A two-queue veth, `workers = "auto"` (two workers), serving `site`.
fn start_two_workers(net: &TestNet, site: &Site) -> Quixd {
    let listen = [SocketAddr::new(net.server_v4.into(), PORT)];
    let config = site.config(&net.server_if, "driver", &listen, "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[server]\n", "[server]\nworkers = \"auto\"\n"),
    )
    .unwrap();
    Quixd::start(&net.server_ns, &config, 1)
}

#[test]
fn daemon_workers_one_per_queue() {
    if !privileged("daemon_workers_one_per_queue") {
        return;
    }
    let net = TestNet::with_queues(2);
    let site = Site::new();
    site.put("hello.txt", b"hello from a worker\n");
    let mut daemon = start_two_workers(&net, &site);
    assert!(
        daemon.log().contains("workers=2"),
        "`auto` on a two-queue veth should run two workers:\n{}",
        daemon.log()
    );
    let addr = daemon.addrs[0];
    runtime().block_on(async {
        for c in 0..CLIENTS {
            let endpoint = client(&net, false, &site.cert, "hq-interop");
            let conn = connect(&endpoint, addr).await;
            let body = bounded(Duration::from_secs(20), "GET /hello.txt", async {
                hq_get(&conn, "/hello.txt", None).await
            })
            .await;
            assert_eq!(body, b"hello from a worker\n", "client {c}");
            conn.close(0u32.into(), b"done");
            bounded(Duration::from_secs(5), "client close", endpoint.wait_idle()).await;
        }
    });
    let stopped = daemon.terminate();
    let workers = per_worker(&stopped.log, "rx_datagrams");
    let mut ids: Vec<u64> = workers.iter().map(|(w, _)| *w).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [0, 1],
        "one counters line per worker:\n{}",
        stopped.log
    );
    assert!(
        workers.iter().all(|(_, rx)| *rx > 0),
        "a worker received nothing from {CLIENTS} flows: {workers:?}"
    );
    // The totals: every datagram through AF_XDP, none through the guard sockets.
    let c = &stopped.counters;
    let total: u64 = workers.iter().map(|(_, rx)| rx).sum();
    assert_eq!(get(c, "rx_datagrams"), total, "{c:?}");
    assert_eq!(get(c, "guard_rx"), 0, "{c:?}");
    assert_eq!(
        driver_counter(&stopped.log, "handshakes_completed"),
        CLIENTS as u64
    );
    assert_eq!(
        ip_xdp(&net),
        None,
        "still attached after the last worker stopped"
    );
}

#[test]
fn daemon_workers_hand_a_rebinding_client_to_its_worker() {
    if !privileged("daemon_workers_hand_a_rebinding_client_to_its_worker") {
        return;
    }
    let net = TestNet::with_queues(2);
    let site = Site::new();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    site.put("f.bin", &data);
    let mut daemon = start_two_workers(&net, &site);
    let addr = daemon.addrs[0];
    runtime().block_on(async {
        let endpoint = client(&net, false, &site.cert, "hq-interop");
        let conn = connect(&endpoint, addr).await;
        for r in 0..=REBINDS {
            if r > 0 {
                let bind = SocketAddr::new(net.client_ip(false), 0);
                let socket = in_ns(&net.client_ns, move || std::net::UdpSocket::bind(bind))
                    .expect("bind a new client port");
                endpoint.rebind(socket).expect("rebind");
            }
            let body = bounded(Duration::from_secs(20), "GET after a rebind", async {
                hq_get(&conn, "/f.bin", None).await
            })
            .await;
            assert!(body == data, "GET {r}: {} bytes, not the file", body.len());
        }
        conn.close(0u32.into(), b"done");
        bounded(Duration::from_secs(5), "client close", endpoint.wait_idle()).await;
    });
    let stopped = daemon.terminate();
    let log = &stopped.log;
    assert_eq!(
        driver_counter(log, "handshakes_completed"),
        1,
        "one connection, kept"
    );
    assert!(
        driver_counter(log, "handoff_sent") > 0,
        "{REBINDS} port changes and no datagram handed over:\n{log}"
    );
    assert_eq!(
        driver_counter(log, "handoff_sent"),
        driver_counter(log, "handoff_received"),
        "every datagram handed over arrived"
    );
    assert_eq!(driver_counter(log, "handoff_dropped"), 0);
    assert_eq!(
        ip_xdp(&net),
        None,
        "still attached after the last worker stopped"
    );
}

/// A misconfiguration named in the log while the daemon runs: with `xdp.queues = [0]` on a
/// two-queue veth, flows hashed to queue 1 reach the kernel (and quixd's guard sockets, so
/// they are still served), and the live diagnostics say which queue setting to fix.
#[test]
fn daemon_names_an_unserved_queue_while_running() {
    if !privileged("daemon_names_an_unserved_queue_while_running") {
        return;
    }
    let net = TestNet::with_queues(2);
    let site = Site::new();
    site.put("hello.txt", b"hello\n");
    let listen = [SocketAddr::new(net.server_v4.into(), PORT)];
    let config = site.config(&net.server_if, "driver", &listen, "queues = [0]");
    let mut daemon = Quixd::start(&net.server_ns, &config, 1);
    let addr = daemon.addrs[0];
    runtime().block_on(async {
        for c in 0..CLIENTS {
            let endpoint = client(&net, false, &site.cert, "hq-interop");
            let conn = connect(&endpoint, addr).await;
            let body = bounded(Duration::from_secs(20), "GET /hello.txt", async {
                hq_get(&conn, "/hello.txt", None).await
            })
            .await;
            assert_eq!(body, b"hello\n", "client {c}");
            conn.close(0u32.into(), b"done");
            bounded(Duration::from_secs(5), "client close", endpoint.wait_idle()).await;
        }
    });
    // The workers look at their counters every 250 ms.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = daemon.output();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("counter=\"prog_no_socket\""))
        {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no live line about the unserved queue while running:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    daemon.assert_alive();
    assert!(line.contains("xdp.queues"), "the fix is named: {line}");
    let stopped = daemon.terminate();
    assert!(
        get(&stopped.counters, "guard_rx") > 0,
        "{:?}",
        stopped.counters
    );
}
