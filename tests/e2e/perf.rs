//! (b) perf requests of several sizes; plus basic echo.

use std::time::Duration;

use crate::harness::*;

const MIB: u64 = 1024 * 1024;

/// (download size, upload bytes)
const CASES: &[(u64, usize)] = &[
    (0, 0),
    (1, 0),
    (1000, 0),
    (MIB, 0),
    (10 * MIB, 0),
    (0, 1),
    (1, 100_000),
    (1000, 3 * 1024 * 1024),
    (MIB, 12_345),
];

e2e_tests!(perf_sizes_sequential_and_concurrent, echo_sizes);

/// Over every listening address: 127.0.0.1 on loopback, the server's veth v4 and v6 addresses
/// on the netns targets.
async fn perf_sizes_sequential_and_concurrent(t: Backend) {
    let fx = Fixture::new(t);
    let mut d = fx.start(&fx.config()).await;
    let addrs = d.addrs.clone();

    bounded(Duration::from_secs(180), async {
        for addr in addrs {
            let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_PERF, addr).await;
            for &(down, up) in CASES {
                let got = perf_request(&conn, down, up)
                    .await
                    .unwrap_or_else(|e| panic!("perf via {addr} download={down} upload={up}: {e}"));
                assert_eq!(
                    got, down,
                    "perf via {addr} download={down} upload={up}: received length"
                );
            }

            // The same requests all at once on one connection.
            let mut tasks = Vec::new();
            for &(down, up) in CASES {
                let conn = conn.clone();
                tasks.push(tokio::spawn(async move {
                    (down, up, perf_request(&conn, down, up).await)
                }));
            }
            for t in tasks {
                let (down, up, r) = t.await.unwrap();
                let got = r.unwrap_or_else(|e| {
                    panic!("concurrent perf via {addr} download={down} upload={up}: {e}")
                });
                assert_eq!(
                    got, down,
                    "concurrent perf via {addr} download={down} upload={up}"
                );
            }
            conn.close(0u32.into(), b"done");
        }
    })
    .await;
    d.assert_alive();
}

async fn echo_sizes(t: Backend) {
    let fx = Fixture::new(t);
    let mut d = fx.start(&fx.config()).await;
    let addr = d.addr();
    let seed = run_seed();

    bounded(Duration::from_secs(120), async {
        let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_ECHO, addr).await;
        for (i, len) in [0usize, 1, 1000, 100_000, 4_000_000]
            .into_iter()
            .enumerate()
        {
            let data = random_bytes(len, seed + i as u64);
            let got = echo_request(&conn, &data)
                .await
                .unwrap_or_else(|e| panic!("echo of {len} bytes: {e}"));
            assert_same_bytes(&got, &data, &format!("echo of {len} bytes"));
        }
    })
    .await;
    d.assert_alive();
}
