//! (a) hq file downloads.

use std::time::Duration;

use crate::harness::*;

const MB: usize = 1_000_000;

e2e_tests!(
    hq_download_10mb_file_intact,
    hq29_alpn_and_empty_file,
    dual_stack_listeners_with_dev_cert,
);

/// Over every listening address: 127.0.0.1 on loopback, the server's veth v4 and v6 addresses
/// on the netns targets.
async fn hq_download_10mb_file_intact(t: Backend) {
    let fx = Fixture::new(t);
    let seed = run_seed();
    let data = random_bytes(10 * MB, seed);
    fx.put("big.bin", &data);
    let small = random_bytes(1234, seed + 1);
    fx.put("sub/dir/small.bin", &small);
    let mut d = fx.start(&fx.config()).await;
    let addrs = d.addrs.clone();
    eprintln!("{}: quixd listens on {addrs:?}", t.name());

    bounded(Duration::from_secs(120), async {
        for addr in addrs {
            let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_HQ, addr).await;
            let got = hq_get(&conn, "/big.bin").await;
            assert_same_bytes(
                &got,
                &data,
                &format!("GET /big.bin via {addr} (seed {seed})"),
            );
            // Same connection, a file in a subdirectory.
            let got = hq_get(&conn, "/sub/dir/small.bin").await;
            assert_same_bytes(&got, &small, &format!("GET /sub/dir/small.bin via {addr}"));
            conn.close(0u32.into(), b"done");
        }
    })
    .await;
    d.assert_alive();
}

async fn hq29_alpn_and_empty_file(t: Backend) {
    let fx = Fixture::new(t);
    let data = random_bytes(100_000, run_seed());
    fx.put("f.bin", &data);
    fx.put("empty.txt", b"");
    let mut d = fx.start(&fx.config()).await;
    let addr = d.addr();

    bounded(Duration::from_secs(60), async {
        let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_HQ29, addr).await;
        assert_same_bytes(
            &hq_get(&conn, "/f.bin").await,
            &data,
            "GET /f.bin over hq-29",
        );
        assert_eq!(hq_get(&conn, "/empty.txt").await, Vec::<u8>::new());
    })
    .await;
    d.assert_alive();
}

/// Two listen addresses (v4 and v6) both serve: 127.0.0.1 and [::1] on loopback, the server's
/// veth addresses on the netns targets; also the development certificate path (no
/// `[tls] cert/key`) with a client that skips verification.
async fn dual_stack_listeners_with_dev_cert(t: Backend) {
    let fx = Fixture::new(t);
    let data = random_bytes(300_000, run_seed());
    fx.put("f.bin", &data);
    let mut cfg = fx.config();
    cfg.listen = fx.dual_stack_listen();
    cfg.tls = TlsSetup::DevCert;
    let mut d = fx.start(&cfg).await;
    let addrs = d.addrs.clone();
    assert!(
        addrs.iter().any(|a| a.is_ipv4()),
        "no v4 listener in {addrs:?}"
    );
    assert!(
        addrs.iter().any(|a| a.is_ipv6()),
        "no v6 listener in {addrs:?}"
    );

    bounded(Duration::from_secs(60), async {
        for addr in addrs {
            let (_ep, conn) = connect_alpn(&fx.client, &Trust::Insecure, ALPN_HQ, addr).await;
            assert_same_bytes(
                &hq_get(&conn, "/f.bin").await,
                &data,
                &format!("GET /f.bin via {addr}"),
            );
        }
    })
    .await;
    d.assert_alive();
}
