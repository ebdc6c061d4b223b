//! Files are opened and read off the datapath thread: the hq and h3 apps hand every open and
//! read to the daemon's file reader threads (`quixd-files-N`), so a worker never waits for
//! the disk. Checked with the kernel's per-thread I/O accounting (`/proc/PID/task/TID/io`,
//! `rchar`: bytes each thread read through read-family system calls).

use std::time::Duration;

use crate::harness::*;
use crate::http3::{get, h3_connect};

e2e_tests!(file_reads_leave_the_worker_threads);

const SIZE: usize = 8_000_000;

/// Bytes read (`rchar`) per thread of `pid`, by thread name.
fn rchar_by_thread(pid: i32) -> Vec<(String, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list threads");
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let io = std::fs::read_to_string(task.path().join("io")).unwrap_or_default();
        let rchar = io
            .lines()
            .find_map(|l| l.strip_prefix("rchar:"))
            .and_then(|v| v.trim().parse().ok());
        if let Some(rchar) = rchar {
            out.push((comm.trim().to_string(), rchar));
        }
    }
    out
}

/// An hq and an h3 download of the same file: the reader threads read it (twice), the workers
/// (the main thread and `quixd-worker-N`) read next to none of it.
async fn file_reads_leave_the_worker_threads(t: Backend) {
    let fx = Fixture::new(t);
    let data = random_bytes(SIZE, run_seed());
    fx.put("big.bin", &data);
    let mut d = fx.start(&fx.config().h3(&fx.root)).await;
    let addr = d.addr();
    // Start-up reads (config, certificate, the kernel's BTF for the XDP program) are not
    // the downloads': count from here.
    let before = rchar_by_thread(d.pid());

    bounded(Duration::from_secs(120), async {
        let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_HQ, addr).await;
        assert_same_bytes(&hq_get(&conn, "/big.bin").await, &data, "hq GET /big.bin");
        conn.close(0u32.into(), b"done");
        let mut c = h3_connect(&fx, addr).await;
        let got = get(&mut c.send, "/big.bin").await;
        assert_same_bytes(&got.body, &data, "h3 GET /big.bin");
    })
    .await;

    let threads = rchar_by_thread(d.pid());
    let sum = |pick: &dyn Fn(&str) -> bool| -> u64 {
        let total = |list: &[(String, u64)]| -> u64 {
            list.iter()
                .filter(|(name, _)| pick(name))
                .map(|(_, r)| r)
                .sum()
        };
        total(&threads) - total(&before)
    };
    let readers = sum(&|n| n.starts_with("quixd-files"));
    let workers = sum(&|n| n == "quixd" || n.starts_with("quixd-worker"));
    eprintln!("{}: rchar by thread {threads:?}", t.name());
    assert!(
        readers >= 2 * SIZE as u64,
        "the file reader threads read both downloads ({readers} bytes): {threads:?}"
    );
    assert!(
        workers < SIZE as u64 / 8,
        "the worker threads read {workers} bytes: the file went through them: {threads:?}"
    );
    d.assert_alive();
}
