//! (h) The io_uring backend beyond the common suite: ECN marks arrive both ways, a dual-stack
//! `[::]` listener serves IPv4 and IPv6, and backend selection when the kernel refuses
//! io_uring (`auto` falls back to sockets and says so; `io_uring` named explicitly fails with
//! the reason and what to do).
//!
//! The refusal is injected with the daemon's test-only `QUIXD_TEST_FAIL_IO_URING=enosys|eperm`,
//! which makes its io_uring setup fail exactly as the kernel would.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::harness::*;

e2e_tests!(
    [io_uring = IoUring, io_uring_netns = IoUringNetns]
    {
        ecn_marks_arrive_both_ways,
        dual_stack_any_address_serves_both_families,
    }
);

/// quinn's client marks its datagrams ECT(0) for as long as its ECN validation succeeds, and
/// that needs our ACKs to count the marks: so the marks must reach quinn-proto through our
/// receive path. Likewise quinn-proto on our side keeps asking for ECT(0) only while the
/// client's ACKs count *our* marks, which must survive our send path. Both show in the
/// backend's counters at exit: nearly every datagram marked, each way.
async fn ecn_marks_arrive_both_ways(t: Backend) {
    let fx = Fixture::new(t);
    let data = random_bytes(2_000_000, run_seed());
    fx.put("f.bin", &data);
    let mut d = fx.start(&fx.config()).await;
    let addr = d.addr();
    bounded(Duration::from_secs(60), async {
        // Many datagrams from the client (echo upload), many from us (download).
        let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_ECHO, addr).await;
        let up = random_bytes(1_000_000, run_seed());
        let back = echo_request(&conn, &up).await.expect("echo");
        assert_same_bytes(&back, &up, "echo 1 MB");
        conn.close(0u32.into(), b"done");
        let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_HQ, addr).await;
        assert_same_bytes(&hq_get(&conn, "/f.bin").await, &data, "GET /f.bin");
        let s = conn.stats();
        eprintln!(
            "client: sent {} datagrams, received {}, congestion events {}",
            s.udp_tx.datagrams, s.udp_rx.datagrams, s.path.congestion_events
        );
        conn.close(0u32.into(), b"done");
    })
    .await;
    d.signal(libc::SIGTERM);
    let st = d
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("quixd exits after SIGTERM");
    assert!(st.success(), "exit status {st}");
    let log = d.output();
    assert!(
        log.contains("io_uring ledger balanced"),
        "every buffer accounted for at exit:\n{log}"
    );
    let c = counters(&log);
    assert!(
        !c.is_empty(),
        "no `datapath counters:` line in the log:\n{log}"
    );
    eprintln!("datapath counters: {c:?}");
    let (rx, ect0) = (c["rx_datagrams"], c["rx_ecn_ect0"]);
    let (tx, marked) = (c["tx_datagrams"], c["tx_ecn_marked"]);
    assert!(rx >= 500, "the upload took at least 500 datagrams: {c:?}");
    assert!(
        ect0 * 10 >= rx * 9,
        "only {ect0} of {rx} received datagrams carried ECT(0): the client gave up on ECN, so \
         the marks did not reach quinn-proto; {c:?}"
    );
    assert!(
        tx >= 1000,
        "the download took at least 1000 datagrams: {c:?}"
    );
    assert!(
        marked * 10 >= tx * 9,
        "only {marked} of {tx} sent datagrams were ECN-marked: quinn-proto gave up on ECN, so \
         the client did not see our marks; {c:?}"
    );
    // Fewer system calls than datagrams: at most one io_uring_enter per loop turn for the
    // turn's submissions (a turn that waits may also flush the previous turn's).
    let (turns, enters) = (c["turns"], c["ring_enters"]);
    assert!(
        enters <= 2 * turns,
        "{enters} enters in {turns} turns: {c:?}"
    );
    assert!(
        enters < rx + tx,
        "{enters} enters for {} datagrams: {c:?}",
        rx + tx
    );
    for k in [
        "rx_truncated",
        "rx_malformed",
        "rx_ledger_errors",
        "tx_errors",
        "tx_no_socket",
    ] {
        assert_eq!(c[k], 0, "{k}: {c:?}");
    }
}

/// `[::]:port` is one dual-stack socket: IPv4 peers arrive as IPv4-mapped addresses and must be
/// answered from the right address, IPv6 peers as they are.
async fn dual_stack_any_address_serves_both_families(t: Backend) {
    let fx = Fixture::new(t);
    let data = random_bytes(300_000, run_seed());
    fx.put("f.bin", &data);
    let d = fx.start(&fx.config().listen(&["[::]:0"])).await;
    let port = d.addrs[0].port();
    let ips: [IpAddr; 2] = match &fx.net {
        None => ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        Some(n) => [n.server_v4.into(), n.server_v6.into()],
    };
    bounded(Duration::from_secs(60), async {
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_HQ, addr).await;
            assert_same_bytes(
                &hq_get(&conn, "/f.bin").await,
                &data,
                &format!("via {addr}"),
            );
            conn.close(0u32.into(), b"done");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Kernel refuses io_uring
// ---------------------------------------------------------------------------------------------

/// `quixd run` on `config` with `QUIXD_TEST_FAIL_IO_URING=value`, not waiting for it.
fn spawn_refusing_io_uring(config: &std::path::Path, value: &str) -> QuixdProcess {
    Spawn::new("run", config)
        .env(&[("QUIXD_TEST_FAIL_IO_URING", value)])
        .spawn()
}

const REFUSALS: [(&str, &str, &str); 2] = [
    ("enosys", "Function not implemented", "seccomp"),
    (
        "eperm",
        "Operation not permitted",
        "kernel.io_uring_disabled",
    ),
];

/// `backend = "auto"` without `[xdp]`: XDP is skipped (no interface), io_uring is skipped with
/// the kernel's reason, the socket backend runs and serves.
#[test]
fn io_uring_refused_auto_falls_back_to_socket() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (value, errno_text, hint) in REFUSALS {
        let fx = Fixture::new(Backend::Socket);
        fx.put("small.txt", b"small");
        let mut cfg = fx.config();
        cfg.backend = "auto".into();
        let path = fx.write_config(&cfg);
        let mut d = spawn_refusing_io_uring(&path, value);
        let addr = d.wait_listening(1)[0];
        rt.block_on(bounded(Duration::from_secs(30), async {
            let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_HQ, addr).await;
            assert_eq!(hq_get(&conn, "/small.txt").await, b"small");
            conn.close(0u32.into(), b"done");
        }));
        let log = d.output();
        let step = |needle: &str| -> String {
            log.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{value}: no `{needle}` line in:\n{log}"))
                .to_string()
        };
        assert!(step("backend auto: xdp skipped").contains("no [xdp] table"));
        let uring = step("backend auto: io_uring skipped");
        for want in ["io_uring_setup failed", errno_text, hint] {
            assert!(uring.contains(want), "{value}: `{want}` in: {uring}");
        }
        step("backend auto: running socket");
        assert!(
            !log.contains("backend auto: running io_uring"),
            "{value}: io_uring claimed to run:\n{log}"
        );
        assert!(
            step("datapath ready").contains("backend=\"socket\"")
                || step("datapath ready").contains("backend=socket"),
            "{value}: the socket backend serves"
        );
        // One line per step, in order.
        let pos = |needle: &str| log.find(needle).unwrap();
        assert!(pos("xdp skipped") < pos("io_uring skipped"));
        assert!(pos("io_uring skipped") < pos("running socket"));
        d.kill9();
    }
}

/// `backend = "io_uring"` named explicitly is never replaced: the daemon exits non-zero,
/// before listening, naming the backend, the kernel's reason and what to do.
#[test]
fn io_uring_refused_explicit_backend_fails_clearly() {
    for (value, errno_text, hint) in REFUSALS {
        let fx = Fixture::new(Backend::IoUring);
        let path = fx.write_config(&fx.config());
        let mut d = spawn_refusing_io_uring(&path, value);
        let st = d
            .wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{value}: quixd still running after 20 s"));
        let log = d.output();
        assert!(
            !st.success(),
            "{value}: quixd must fail, exited {st}:\n{log}"
        );
        let err = log
            .lines()
            .find(|l| l.starts_with("quixd: "))
            .unwrap_or_else(|| panic!("{value}: no error line in:\n{log}"));
        for want in [
            "server.backend = \"io_uring\" cannot start",
            "io_uring_setup failed",
            errno_text,
            hint,
            "backend = \"socket\"",
        ] {
            assert!(err.contains(want), "{value}: `{want}` in: {err}");
        }
        assert!(
            !log.contains("listening"),
            "{value}: another backend was started instead:\n{log}"
        );
    }
}
