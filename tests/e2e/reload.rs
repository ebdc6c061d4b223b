//! (k) SIGHUP reloads the certificate and key: new connections get the new certificate (on
//! every worker), an open connection keeps going on the old one, and a reload that fails (a
//! broken key file) keeps the current certificate and says why in the log.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;

e2e_tests!(
    [socket = Socket, io_uring = IoUring, xdp_driver = XdpDriver] {
        sighup_reloads_the_certificate,
    }
);

/// New client endpoints (one port each) per check: with two workers, the chance that none
/// reaches one of them is 2^-7.
const CLIENTS: usize = 8;

/// Waits until the log has had `needle` `count` times.
async fn wait_log(d: &Daemon, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = d.output();
        if log.matches(needle).count() >= count {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` (x{count}) in:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects from a new endpoint with `trust`: whether the handshake succeeded.
async fn handshake_ok(fx: &Fixture, addr: SocketAddr, trust: &Trust) -> bool {
    let ep = fx.client.endpoint(addr);
    let ccfg = client_config(trust, &[ALPN_HQ], false);
    let connecting = ep
        .connect_with(ccfg, addr, "localhost")
        .expect("connect_with");
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(10), connecting).await,
        Ok(Ok(_))
    );
    ep.close(0u32.into(), b"done");
    ok
}

async fn sighup_reloads_the_certificate(t: Backend) {
    let fx = Fixture::new(t);
    let data = random_bytes(20_000, run_seed());
    fx.put("f.bin", &data);
    let workers = if matches!(t, Backend::XdpDriver) {
        "1"
    } else {
        "2"
    };
    let mut d = fx.start(&fx.config().workers(workers)).await;
    let addr = d.addr();
    let old = fx.trust();
    let new_cert = TestCert::localhost();
    let new = Trust::Cert(new_cert.der.clone());
    bounded(Duration::from_secs(120), async {
        let ep = fx.client.endpoint(addr);
        let open = connect(&ep, &client_config(&old, &[ALPN_HQ], false), addr).await;
        assert_same_bytes(
            &hq_get(&open, "/f.bin").await,
            &data,
            "GET before the reload",
        );
        assert!(
            !handshake_ok(&fx, addr, &new).await,
            "the new certificate before SIGHUP"
        );

        std::fs::write(&fx.cert_path, &new_cert.cert_pem).unwrap();
        std::fs::write(&fx.key_path, &new_cert.key_pem).unwrap();
        d.signal(libc::SIGHUP);
        let log = wait_log(&d, "certificate reloaded", 1).await;
        assert!(
            log.contains("not_after="),
            "the new expiry is logged:\n{log}"
        );
        // The workers pick it up at their next tick (250 ms).
        tokio::time::sleep(Duration::from_millis(600)).await;
        for c in 0..CLIENTS {
            assert!(
                handshake_ok(&fx, addr, &new).await,
                "client {c}: new certificate"
            );
        }
        assert!(
            !handshake_ok(&fx, addr, &old).await,
            "the old certificate after SIGHUP"
        );
        assert_same_bytes(
            &hq_get(&open, "/f.bin").await,
            &data,
            "GET on the connection opened before the reload",
        );

        // A broken key: the reload fails, the current certificate stays.
        std::fs::write(&fx.key_path, "-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
        d.signal(libc::SIGHUP);
        let log = wait_log(&d, "certificate reload failed", 1).await;
        assert!(log.contains("keeping the current certificate"), "{log}");
        tokio::time::sleep(Duration::from_millis(600)).await;
        for c in 0..CLIENTS {
            assert!(
                handshake_ok(&fx, addr, &new).await,
                "client {c}: kept certificate"
            );
        }
        open.close(0u32.into(), b"done");
        ep.wait_idle().await;
    })
    .await;
    d.assert_alive();
    d.terminate().await;
}
