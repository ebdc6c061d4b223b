//! Files are opened and read off the datapath thread: the hq and h3 apps hand every open and
//! read to the daemon's file reader threads (`quixd-files-N`), so a worker never waits for
//! the disk. Checked with the kernel's per-thread I/O accounting (`/proc/PID/task/TID/io`,
//! `rchar`: bytes each thread read through read-family system calls), and with a disk that
//! stops answering (a FUSE filesystem of the test's own, `../support/slowfs.rs`): requests
//! for other files, on the same connections and on new ones, are served meanwhile.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::harness::*;
use crate::http3::{get, h3_connect};

e2e_tests!(
    file_reads_leave_the_worker_threads,
    a_stalled_disk_holds_back_only_its_requests,
);

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

/// Reads of one file stop (the FUSE server holds them): an h3 and an hq request for it wait,
/// while requests for another file of the same root go through on the same two connections
/// and on a new one. Once the disk answers, the held responses arrive intact.
async fn a_stalled_disk_holds_back_only_its_requests(t: Backend) {
    let name = format!(
        "files::{}::a_stalled_disk_holds_back_only_its_requests",
        t.name()
    );
    let seed = run_seed();
    let (slow, fast) = (
        random_bytes(1_000_000, seed),
        random_bytes(2_000_000, seed + 1),
    );
    let Some(disk) = crate::slowfs::mount(&name, &[("slow.bin", &slow), ("fast.bin", &fast)])
    else {
        return;
    };
    let fx = Fixture::new(t);
    let mut cfg = fx.config().h3(disk.path());
    cfg.hq_root = Some(disk.path().to_path_buf());
    let mut d = fx.start(&cfg).await;
    let addr = d.addr();

    bounded(Duration::from_secs(60), async {
        disk.hold_reads("slow.bin");
        let h3 = h3_connect(&fx, addr).await;
        let (_ep, hq) = connect_alpn(&fx.client, &fx.trust(), ALPN_HQ, addr).await;
        let mut send = h3.send.clone();
        let held_h3 = tokio::spawn(async move { get(&mut send, "/slow.bin").await });
        let conn = hq.clone();
        let held_hq = tokio::spawn(async move { hq_get(&conn, "/slow.bin").await });
        let deadline = Instant::now() + Duration::from_secs(10);
        while disk.reads_held() < 2 {
            assert!(
                Instant::now() < deadline,
                "the two reads never reached the disk"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // The disk holds both: everything else moves.
        let mut send = h3.send.clone();
        let got = get(&mut send, "/fast.bin").await;
        assert_eq!(got.status, StatusCode::OK);
        assert_same_bytes(&got.body, &fast, "h3 GET /fast.bin beside a held read");
        assert_same_bytes(
            &hq_get(&hq, "/fast.bin").await,
            &fast,
            "hq GET /fast.bin beside a held read",
        );
        let (_ep2, other) = connect_alpn(&fx.client, &fx.trust(), ALPN_HQ, addr).await;
        assert_same_bytes(
            &hq_get(&other, "/fast.bin").await,
            &fast,
            "hq GET /fast.bin on a new connection",
        );
        assert!(
            !held_h3.is_finished() && !held_hq.is_finished() && disk.reads_held() >= 2,
            "the held requests are still waiting for the disk"
        );

        disk.release();
        let got = held_h3.await.expect("h3 task");
        assert_eq!(got.status, StatusCode::OK);
        assert_same_bytes(&got.body, &slow, "h3 GET /slow.bin once the disk answers");
        let got = held_hq.await.expect("hq task");
        assert_same_bytes(&got, &slow, "hq GET /slow.bin once the disk answers");
    })
    .await;
    d.assert_alive();
}
