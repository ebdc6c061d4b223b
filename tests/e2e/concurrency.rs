//! (c) many concurrent connections, each with several concurrent streams.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::harness::*;

const CONNECTIONS: usize = 50;
const STREAMS: usize = 5;

e2e_tests!(fifty_connections_five_streams_each(4));

async fn fifty_connections_five_streams_each(t: Backend) {
    let fx = Fixture::new(t);
    let seed = run_seed();
    let files: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..STREAMS)
            .map(|i| random_bytes(20_000 + i * 100_000, seed + i as u64))
            .collect(),
    );
    for (i, f) in files.iter().enumerate() {
        fx.put(&format!("file{i}.bin"), f);
    }
    let mut d = fx.start(&fx.config()).await;
    let addr = d.addr();
    let trust = fx.trust();

    bounded(Duration::from_secs(240), async {
        // All connections are established before any stream starts, so that all 50 are open
        // at the same time.
        let barrier = Arc::new(Barrier::new(CONNECTIONS));
        let mut set = JoinSet::new();
        for c in 0..CONNECTIONS {
            let (trust, files, barrier) = (trust.clone(), files.clone(), barrier.clone());
            let client = fx.client.clone();
            set.spawn(async move {
                let app = [ALPN_HQ, ALPN_ECHO, ALPN_PERF][c % 3];
                let ep = client.endpoint(addr);
                let cfg = client_config(&trust, &[app], false);
                let conn = connect(&ep, &cfg, addr).await;
                if tokio::time::timeout(Duration::from_secs(60), barrier.wait())
                    .await
                    .is_err()
                {
                    return Err(format!("conn {c}: other connections did not come up"));
                }
                let mut streams = JoinSet::new();
                for s in 0..STREAMS {
                    let (conn, files) = (conn.clone(), files.clone());
                    streams.spawn(async move {
                        let what = format!("conn {c} ({app}) stream {s}");
                        match app {
                            ALPN_HQ => {
                                // Each stream a different file, rotated per connection.
                                let i = (c + s) % STREAMS;
                                match hq_request(&conn, &format!("/file{i}.bin")).await {
                                    Outcome::Data(got) if got == files[i] => Ok(()),
                                    Outcome::Data(got) => Err(format!(
                                        "{what}: GET /file{i}.bin: {} bytes, expected {} \
                                         (or content differs)",
                                        got.len(),
                                        files[i].len()
                                    )),
                                    o => Err(format!("{what}: GET /file{i}.bin: {}", o.describe())),
                                }
                            }
                            ALPN_ECHO => {
                                let data = random_bytes(
                                    10_000 + s * 40_000,
                                    seed ^ ((c * STREAMS + s) as u64) << 20,
                                );
                                match echo_request(&conn, &data).await {
                                    Ok(got) if got == data => Ok(()),
                                    Ok(got) => Err(format!(
                                        "{what}: echo: {} bytes back for {} sent (or content \
                                         differs)",
                                        got.len(),
                                        data.len()
                                    )),
                                    Err(e) => Err(format!("{what}: echo: {e}")),
                                }
                            }
                            _ => {
                                let down = (s as u64) * 97_000 + c as u64;
                                let up = s * 5_000;
                                match perf_request(&conn, down, up).await {
                                    Ok(n) if n == down => Ok(()),
                                    Ok(n) => {
                                        Err(format!("{what}: perf: got {n} bytes, want {down}"))
                                    }
                                    Err(e) => Err(format!("{what}: perf: {e}")),
                                }
                            }
                        }
                    });
                }
                while let Some(r) = streams.join_next().await {
                    r.map_err(|e| format!("conn {c}: stream task panicked: {e}"))??;
                }
                conn.close(0u32.into(), b"done");
                ep.wait_idle().await;
                Ok::<_, String>(())
            });
        }
        let mut ok = 0;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(())) => ok += 1,
                Ok(Err(e)) => panic!("{e}"),
                Err(e) => panic!("connection task panicked: {e}"),
            }
        }
        assert_eq!(ok, CONNECTIONS);
    })
    .await;
    d.assert_alive();
}
