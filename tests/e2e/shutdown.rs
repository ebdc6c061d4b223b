//! (f) graceful shutdown on SIGTERM / SIGINT.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Slack on top of `drain_timeout_ms` for the exit bound (a bound check, not a speed test).
const MARGIN: Duration = Duration::from_secs(5);

e2e_tests!(
    sigterm_lets_active_download_finish_then_exits_zero,
    sigterm_idle_connection_gets_application_close,
    sigint_idle_connection_gets_application_close,
    sigterm_stalled_stream_closed_after_drain_timeout,
);

/// Tries to open a new connection; returns Err(description) if it succeeded.
async fn expect_new_connection_refused(
    client: &ClientSide,
    trust: &Trust,
    addr: SocketAddr,
) -> Result<String, String> {
    let ep = client.endpoint(addr);
    let cfg = client_config_with_idle(trust, &[ALPN_HQ], false, Duration::from_secs(2));
    let connecting = ep
        .connect_with(cfg, addr, "localhost")
        .expect("connect_with");
    match tokio::time::timeout(Duration::from_secs(5), connecting).await {
        Err(_) => Ok("handshake did not complete (timeout)".into()),
        Ok(Err(e)) => Ok(format!("handshake failed: {e}")),
        Ok(Ok(conn)) => {
            // Accepted: that is the failure, unless it is closed right away without serving.
            let r = hq_request(&conn, "/small.txt").await;
            Err(format!(
                "new connection after SIGTERM was accepted; a request on it gave {}",
                r.describe()
            ))
        }
    }
}

fn assert_app_close_zero(e: &quinn::ConnectionError, what: &str) {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == 0 => {}
        other => panic!("{what}: expected an application close with code 0, got {other:?}"),
    }
}

/// Reads the rest of `recv` into `buf`, at no more than `rate` bytes/s.
async fn paced_read_to_end(
    recv: &mut quinn::RecvStream,
    buf: &mut Vec<u8>,
    rate: f64,
) -> Result<(), String> {
    let start = Instant::now();
    let start_len = buf.len();
    loop {
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("read failed after {} bytes: {e:?}", buf.len())),
        }
        let due = Duration::from_secs_f64((buf.len() - start_len) as f64 / rate);
        let spent = start.elapsed();
        if due > spent {
            tokio::time::sleep(due - spent).await;
        }
    }
}

async fn sigterm_lets_active_download_finish_then_exits_zero(t: Backend) {
    const SIZE: usize = 50_000_000;
    const DRAIN_MS: u64 = 20_000;
    let fx = Fixture::new(t);
    let seed = run_seed();
    let data = random_bytes(SIZE, seed);
    fx.put("big.bin", &data);
    fx.put("small.txt", b"small");
    let mut d = fx.start(&fx.config().drain_timeout_ms(DRAIN_MS)).await;
    let addr = d.addr();
    let trust = fx.trust();

    bounded(Duration::from_secs(120), async {
        let (_ep, conn) = connect_alpn(&fx.client, &trust, ALPN_HQ, addr).await;
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"GET /big.bin\r\n").await.unwrap();
        send.finish().unwrap();

        // Read the first 2 MB; flow control (client stream window ~1.25 MB) keeps the server
        // from having sent much more, so the transfer is genuinely in progress at SIGTERM.
        let mut got = Vec::with_capacity(SIZE);
        while got.len() < 2_000_000 {
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(c)) => got.extend_from_slice(&c.bytes),
                Ok(None) => panic!("download finished early at {} bytes", got.len()),
                Err(e) => panic!("read before SIGTERM: {e:?}"),
            }
        }
        let t0 = Instant::now();
        d.signal(libc::SIGTERM);

        // Continue at ~25 MB/s (about 2 s for the rest), concurrently try a new connection.
        let reader = tokio::spawn(async move {
            let r = paced_read_to_end(&mut recv, &mut got, 25e6).await;
            (r, got, t0.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let refused = expect_new_connection_refused(&fx.client, &trust, addr).await;

        let (r, got, took) = reader.await.unwrap();
        r.unwrap_or_else(|e| panic!("download after SIGTERM: {e}"));
        assert_same_bytes(
            &got,
            &data,
            &format!("50 MB download across SIGTERM (seed {seed})"),
        );
        eprintln!("download finished {took:?} after SIGTERM");
        match refused {
            Ok(how) => eprintln!("new connection after SIGTERM: {how}"),
            Err(e) => panic!("{e}"),
        }

        let limit = Duration::from_millis(DRAIN_MS) + MARGIN;
        let st = d
            .wait_exit(limit.saturating_sub(t0.elapsed()))
            .await
            .unwrap_or_else(|| panic!("quixd still running {limit:?} after SIGTERM"));
        assert!(st.success(), "quixd exit status after SIGTERM: {st}");
        eprintln!("quixd exited {:?} after SIGTERM", t0.elapsed());

        let e = tokio::time::timeout(Duration::from_secs(3), conn.closed())
            .await
            .expect("client connection not closed after the daemon exited");
        assert_app_close_zero(&e, "connection after drain");
    })
    .await;
}

async fn idle_connection_signal(t: Backend, sig: libc::c_int) {
    const DRAIN_MS: u64 = 3_000;
    let fx = Fixture::new(t);
    fx.put("small.txt", b"small");
    let mut d = fx.start(&fx.config().drain_timeout_ms(DRAIN_MS)).await;
    let addr = d.addr();

    bounded(Duration::from_secs(60), async {
        let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_HQ, addr).await;
        assert_eq!(hq_get(&conn, "/small.txt").await, b"small");
        let t0 = Instant::now();
        d.signal(sig);
        let limit = Duration::from_millis(DRAIN_MS) + MARGIN;

        let e = tokio::time::timeout(limit, conn.closed())
            .await
            .unwrap_or_else(|_| {
                panic!("idle connection not closed within {limit:?} of signal {sig}")
            });
        assert_app_close_zero(&e, "idle connection");

        let st = d
            .wait_exit(limit.saturating_sub(t0.elapsed()))
            .await
            .unwrap_or_else(|| panic!("quixd still running {limit:?} after signal {sig}"));
        assert!(st.success(), "quixd exit status after signal {sig}: {st}");
        eprintln!("signal {sig}: exited {:?} after the signal", t0.elapsed());
    })
    .await;
}

async fn sigterm_idle_connection_gets_application_close(t: Backend) {
    idle_connection_signal(t, libc::SIGTERM).await;
}

async fn sigint_idle_connection_gets_application_close(t: Backend) {
    idle_connection_signal(t, libc::SIGINT).await;
}

/// A stream that never finishes (the client stops reading) is given drain_timeout_ms, then the
/// connection is closed with an application close and the daemon exits 0.
async fn sigterm_stalled_stream_closed_after_drain_timeout(t: Backend) {
    const DRAIN_MS: u64 = 2_000;
    let fx = Fixture::new(t);
    let mut d = fx.start(&fx.config().drain_timeout_ms(DRAIN_MS)).await;
    let addr = d.addr();

    bounded(Duration::from_secs(60), async {
        let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_PERF, addr).await;
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&(100u64 << 20).to_be_bytes()).await.unwrap();
        send.finish().unwrap();
        let mut n = 0;
        while n < 100_000 {
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(c)) => n += c.bytes.len(),
                other => panic!("perf read: {other:?}"),
            }
        }
        // Stop reading (but keep `recv` alive so the stream stays open).
        let t0 = Instant::now();
        d.signal(libc::SIGTERM);
        let limit = Duration::from_millis(DRAIN_MS) + MARGIN;

        let e = tokio::time::timeout(limit, conn.closed())
            .await
            .unwrap_or_else(|_| panic!("connection not closed within {limit:?} of SIGTERM"));
        let closed_after = t0.elapsed();
        assert_app_close_zero(&e, "connection with a stalled stream");
        assert!(
            closed_after + Duration::from_millis(250) >= Duration::from_millis(DRAIN_MS),
            "connection with an open stream was closed {closed_after:?} after SIGTERM, before \
             drain_timeout_ms = {DRAIN_MS}"
        );
        let st = d
            .wait_exit(limit.saturating_sub(t0.elapsed()))
            .await
            .unwrap_or_else(|| panic!("quixd still running {limit:?} after SIGTERM"));
        assert!(st.success(), "quixd exit status: {st}");
        drop(recv);
    })
    .await;
}
