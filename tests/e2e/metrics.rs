//! (j) `[metrics]`: Prometheus text on `GET /metrics`, scraped with a plain HTTP/1.1 request
//! before and during a transfer: the counters move, the connection gauge and the handshake
//! histogram say what happened, the backend's counters and levels are there (the UMEM frame
//! ledger, io_uring buffers by place, the next-hop table), `quixd status` summarizes them, and
//! another path is a 404.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::netns::TestNet;

e2e_tests!(
    [socket = Socket, io_uring_netns = IoUringNetns, xdp_driver = XdpDriver] {
        metrics_move_with_traffic,
    }
);

/// `GET path` from inside namespace `ns` (the endpoint listens on the daemon's loopback);
/// returns the status line and the body.
pub(crate) fn http_get(ns: Option<&str>, addr: SocketAddr, path: &str) -> (String, String) {
    let ns = ns.map(str::to_owned);
    let path = path.to_owned();
    std::thread::spawn(move || {
        if let Some(ns) = &ns {
            TestNet::enter(ns);
        }
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: quixd\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read the response");
        let (head, body) = text.split_once("\r\n\r\n").expect("a header and a body");
        (
            head.lines().next().unwrap_or("").to_owned(),
            body.to_owned(),
        )
    })
    .join()
    .unwrap()
}

/// The sum over workers of metric `name` (a full sample name, e.g. `quixd_rx_bytes_total`).
pub(crate) fn sum(body: &str, name: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The backend's levels (gauges): every buffer is in one place, and the tables are filled.
fn check_levels(t: Backend, body: &str) {
    let gauge = |name: &str| sum(body, &format!("quixd_datapath_{name}"));
    let typed = |name: &str| body.contains(&format!("# TYPE quixd_datapath_{name} gauge"));
    match t {
        Backend::XdpDriver => {
            assert!(typed("umem_frames"), "{body}");
            let frames = gauge("umem_frames");
            assert!(frames > 0, "{body}");
            let placed: u64 = [
                "umem_free",
                "umem_in_fill_ring",
                "umem_rx_held",
                "umem_tx_building",
                "umem_tx_in_flight",
            ]
            .iter()
            .map(|n| gauge(n))
            .sum();
            assert_eq!(placed, frames, "every UMEM frame in one place:\n{body}");
            assert!(
                gauge("umem_in_fill_ring") > 0,
                "the fill ring is stocked:\n{body}"
            );
            assert!(gauge("neighbor_routes") > 0, "{body}");
            assert_eq!(gauge("neighbor_watcher_running"), 1, "{body}");
        }
        Backend::IoUringNetns => {
            assert!(typed("rx_buffers"), "{body}");
            let buffers = gauge("rx_buffers");
            assert!(buffers > 0, "{body}");
            assert_eq!(
                gauge("rx_buffers_in_kernel") + gauge("rx_buffers_held"),
                buffers,
                "every receive buffer in one place:\n{body}"
            );
            assert!(gauge("send_slots") > 0, "{body}");
        }
        _ => {}
    }
}

/// Where the daemon serves its metrics (its `metrics served on` line).
pub(crate) async fn metrics_addr(d: &Daemon) -> SocketAddr {
    let started = Instant::now();
    loop {
        let found = d
            .output()
            .lines()
            .find(|l| l.contains("metrics served on"))
            .and_then(|l| {
                l.split("addr=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
        if let Some(a) = found {
            return a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no `metrics served on` line"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics_move_with_traffic(t: Backend) {
    let fx = Fixture::new(t);
    let data = random_bytes(3_000_000, run_seed());
    fx.put("f.bin", &data);
    let mut d = fx.start(&fx.config().metrics("127.0.0.1:0")).await;
    let addr = d.addr();
    let metrics = metrics_addr(&d).await;
    let ns = fx.server_ns().map(str::to_owned);
    let (status, before) = http_get(ns.as_deref(), metrics, "/metrics");
    assert!(status.contains("200"), "{status}\n{before}");
    assert_eq!(sum(&before, "quixd_connections"), 0, "{before}");
    let trust = fx.trust();
    bounded(Duration::from_secs(60), async {
        let ep = fx.client.endpoint(addr);
        let conn = connect(&ep, &client_config(&trust, &[ALPN_HQ], false), addr).await;
        assert_same_bytes(&hq_get(&conn, "/f.bin").await, &data, "GET /f.bin");
        // Open, idle: the next publication (every 250 ms) shows it.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (_, during) = http_get(ns.as_deref(), metrics, "/metrics");
        assert_eq!(sum(&during, "quixd_connections"), 1, "{during}");
        assert_eq!(
            sum(&during, "quixd_handshakes_completed_total"),
            1,
            "{during}"
        );
        assert_eq!(
            sum(&during, "quixd_handshake_duration_seconds_count"),
            1,
            "{during}"
        );
        let moved = |name: &str| sum(&during, name) > sum(&before, name);
        assert!(moved("quixd_rx_datagrams_total"), "{during}");
        assert!(moved("quixd_tx_transmits_total"), "{during}");
        // The bytes of a 3 MB download left as transmits, not counted here; what came in is
        // the request and the ACKs.
        assert!(sum(&during, "quixd_rx_bytes_total") > 0, "{during}");
        assert!(
            during.contains("quixd_datapath_"),
            "the backend's counters are missing:\n{during}"
        );
        assert!(during.contains("backend=\""), "{during}");
        check_levels(t, &during);
        // `quixd status` reads the same endpoint and says it for people.
        let arg = metrics.to_string();
        let (status, err, out) = fx
            .run_quixd(
                &["status".as_ref(), "--metrics".as_ref(), arg.as_ref()],
                Duration::from_secs(10),
            )
            .await;
        assert!(status.success(), "quixd status: {err}");
        assert!(out.contains("1 worker(s)"), "{out}");
        assert!(
            out.contains("worker 0: 1 connection(s) open, 1 handshake(s)"),
            "{out}"
        );
        assert!(out.contains("  rx_datagrams "), "{out}");
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
    })
    .await;
    let (status, _) = http_get(ns.as_deref(), metrics, "/");
    assert!(status.contains("404"), "{status}");
    d.assert_alive();
}
