//! Faults while a transfer runs: the link, its MTU, the neighbour tables and the peer's MAC
//! address change under a download; loss and reordering on a router between client and server;
//! SIGTERM under load; `kill -9` over and over (xdp). Each case ends with the transfer intact,
//! or with a clean connection error where the fault ends it, never a hang or a crash, and with
//! the daemon's buffer ledger balanced at shutdown (xdp's UMEM frames, io_uring's buffers).
//!
//! Every case first downloads the file once without the fault (the baseline), then again with
//! it, on the same connection, and reports both ([`record`]): the time, the longest pause, and
//! the client's datagram counts (more datagrams for the same file: the server's
//! retransmissions, or smaller datagrams). The client's idle timeout is 30 s, so a recoverable
//! fault recovers.
//!
//! On one backend of each kind over veth between namespaces, and xdp in SKB mode too where
//! the link itself is touched (the two attach modes take different kernel paths there).

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::netns::{skip_or_fail, RoutedNet, Site, TestNet};
use crate::quic_lb::{nft_counters, nft_problem};
use crate::relay::{Relay, Reorder};

e2e_tests!(
    [
        socket_netns = SocketNetns,
        io_uring_netns = IoUringNetns,
        xdp_driver = XdpDriver,
        xdp_skb = XdpSkb,
    ] {
        link_down_and_up_mid_download,
        mtu_change_mid_download,
        neighbour_flush_mid_download,
        peer_mac_change_mid_download,
    }
);

/// The cases on a path through a router, and SIGTERM: one backend of each kind.
mod path {
    use super::*;
    e2e_tests!(
        [socket_netns = SocketNetns, io_uring_netns = IoUringNetns, xdp_driver = XdpDriver] {
            loss_through_a_router,
            reordering_through_a_router,
            sigterm_under_load(4),
        }
    );
}

/// `kill -9` and restart, 50 times: XDP only (what must not outlive the process is there).
mod kill9 {
    use super::*;
    e2e_tests!([xdp_driver = XdpDriver] { sigkill_50_times_under_traffic });
}

/// The file downloaded in the link cases.
const SIZE: usize = 50_000_000;
const PATH: &str = "/big.bin";
/// The client's idle timeout: long enough for every recoverable fault here.
const CLIENT_IDLE: Duration = Duration::from_secs(30);
/// The longest a download may take, fault included.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(90);
/// The daemon's `drain_timeout_ms` where the case does not choose one.
const DRAIN_MS: u64 = 5_000;
/// Slack on top of the drain timeout for the exit.
const EXIT_MARGIN: Duration = Duration::from_secs(5);

/// The name figures are recorded under: the test's path (`group` is its module under
/// `faults`, if any).
fn test_name(group: &str, t: Backend, case: &str) -> String {
    match group {
        "" => format!("faults::{}::{case}", t.name()),
        _ => format!("faults::{group}::{}::{case}", t.name()),
    }
}

// ---------------------------------------------------------------------------------------------
// A download the fault watches
// ---------------------------------------------------------------------------------------------

/// How far a running download got, for the fault to act on.
#[derive(Clone)]
struct Progress {
    got: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    /// How it ended, once it did.
    end: Arc<std::sync::Mutex<String>>,
    size: u64,
}

impl Progress {
    fn got(&self) -> u64 {
        self.got.load(Ordering::Relaxed)
    }

    /// Waits until `fraction` of the file arrived. Panics if the download ended first (the
    /// fault would not be mid-transfer: the case proves nothing) or took over a minute.
    async fn reached(&self, fraction: f64) {
        let want = (self.size as f64 * fraction) as u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.got() < want {
            assert!(
                !self.done.load(Ordering::Relaxed),
                "the download ended at {} bytes, before {want}",
                self.got()
            );
            assert!(
                Instant::now() < deadline,
                "the download stalled at {} bytes, short of {want}",
                self.got()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Asserts the download is still running (so the fault just applied hit it mid-way).
    fn assert_running(&self, fault: &str) {
        assert!(
            !self.done.load(Ordering::Relaxed),
            "the download was over before {fault} took effect ({}): too fast for this case",
            self.end.lock().unwrap()
        );
    }

    /// Waits until more than `since` bytes arrived; returns how long that took.
    async fn moved_past(&self, since: u64, limit: Duration) -> Duration {
        let started = Instant::now();
        while self.got() <= since && !self.done.load(Ordering::Relaxed) {
            assert!(
                started.elapsed() < limit,
                "nothing arrived for {limit:?} (stuck at {since} bytes)"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        started.elapsed()
    }
}

/// What a download ended with.
struct Fetched {
    /// The body, when the stream ended with FIN.
    result: Result<Vec<u8>, ReadEnd>,
    took: Duration,
    /// The longest time between two chunks.
    longest_pause: Duration,
}

/// How a response ended without FIN.
#[derive(Debug)]
enum ReadEnd {
    /// RESET_STREAM, or the connection closed by the server (application or transport close):
    /// a clean error.
    Clean(String),
    /// Anything else (idle timeout, a local error): not clean.
    Unclean(String),
}

impl ReadEnd {
    fn of(e: &quinn::ReadError, got: usize) -> Self {
        use quinn::{ConnectionError as C, ReadError as R};
        let what = format!("{e:?} after {got} bytes");
        match e {
            R::Reset(_)
            | R::ConnectionLost(C::ApplicationClosed(_))
            | R::ConnectionLost(C::ConnectionClosed(_)) => ReadEnd::Clean(what),
            _ => ReadEnd::Unclean(what),
        }
    }
}

struct Download {
    progress: Progress,
    task: tokio::task::JoinHandle<Fetched>,
}

impl Download {
    /// Sends `GET path` on a new stream of `conn` and reads the response (at most `rate`
    /// bytes/s if given) in a task of its own.
    fn start(conn: &quinn::Connection, path: &str, size: usize, rate: Option<f64>) -> Self {
        let progress = Progress {
            got: Arc::new(AtomicU64::new(0)),
            done: Arc::new(AtomicBool::new(false)),
            end: Arc::default(),
            size: size as u64,
        };
        let (conn, path, p) = (conn.clone(), path.to_owned(), progress.clone());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut longest_pause = Duration::ZERO;
            let result = async {
                let (mut send, mut recv) = conn
                    .open_bi()
                    .await
                    .map_err(|e| ReadEnd::Unclean(format!("open_bi: {e}")))?;
                let request = format!("GET {path}\r\n");
                send.write_all(request.as_bytes())
                    .await
                    .map_err(|e| ReadEnd::Unclean(format!("request: {e}")))?;
                let _ = send.finish();
                let mut body = Vec::with_capacity(size);
                let mut last = Instant::now();
                loop {
                    match recv.read_chunk(256 * 1024, true).await {
                        Ok(Some(chunk)) => {
                            longest_pause = longest_pause.max(last.elapsed());
                            last = Instant::now();
                            body.extend_from_slice(&chunk.bytes);
                            p.got.store(body.len() as u64, Ordering::Relaxed);
                        }
                        Ok(None) => return Ok(body),
                        Err(e) => return Err(ReadEnd::of(&e, body.len())),
                    }
                    if let Some(rate) = rate {
                        let due = Duration::from_secs_f64(body.len() as f64 / rate);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
            .await;
            *p.end.lock().unwrap() = match &result {
                Ok(body) => format!("FIN after {} bytes", body.len()),
                Err(e) => format!("{e:?}"),
            };
            p.done.store(true, Ordering::Relaxed);
            Fetched {
                result,
                took: started.elapsed(),
                longest_pause,
            }
        });
        Download { progress, task }
    }

    /// The download's outcome, waiting at most `limit` (then it panics: a hang).
    async fn finish(self, limit: Duration) -> Fetched {
        let got = self.progress.clone();
        match tokio::time::timeout(limit, self.task).await {
            Ok(fetched) => fetched.expect("download task"),
            Err(_) => panic!("the download hung: {} bytes after {limit:?}", got.got()),
        }
    }
}

/// The body of a download that must have arrived intact.
fn intact(fetched: &Fetched, want: &[u8], what: &str) {
    match &fetched.result {
        Ok(body) => assert_same_bytes(body, want, what),
        Err(e) => panic!("{what}: the download failed: {e:?}"),
    }
}

/// Downloads `PATH` on `conn` once without a fault (the baseline), then once more while
/// `fault` runs alongside it, given the download's progress; both must arrive intact. Reports
/// both times, the longest pauses and the datagrams the client received for each.
async fn baseline_then_fault<F, Fut>(
    test: &str,
    conn: &quinn::Connection,
    data: &[u8],
    seed: u64,
    fault: F,
) where
    F: FnOnce(Progress) -> Fut,
    Fut: Future<Output = ()>,
{
    let before = conn.stats();
    let base = Download::start(conn, PATH, data.len(), None)
        .finish(DOWNLOAD_LIMIT)
        .await;
    intact(&base, data, &format!("baseline download (seed {seed})"));
    let between = conn.stats();
    let faulted = Download::start(conn, PATH, data.len(), None);
    let progress = faulted.progress.clone();
    let ((), fetched) = tokio::join!(fault(progress), faulted.finish(DOWNLOAD_LIMIT));
    intact(
        &fetched,
        data,
        &format!("download under the fault (seed {seed})"),
    );
    let after = conn.stats();

    let mb = data.len() as f64 / 1e6;
    record(
        test,
        &format!("{mb} MB without the fault"),
        base.took.as_secs_f64(),
        "s",
    );
    record(
        test,
        &format!("{mb} MB with the fault"),
        fetched.took.as_secs_f64(),
        "s",
    );
    record(
        test,
        "longest pause without the fault",
        base.longest_pause.as_secs_f64() * 1e3,
        "ms",
    );
    record(
        test,
        "longest pause with the fault",
        fetched.longest_pause.as_secs_f64() * 1e3,
        "ms",
    );
    let base_rx = between.udp_rx.datagrams - before.udp_rx.datagrams;
    let fault_rx = after.udp_rx.datagrams - between.udp_rx.datagrams;
    record(
        test,
        "datagrams received without the fault",
        base_rx as f64,
        "datagrams",
    );
    record(
        test,
        "datagrams received with the fault",
        fault_rx as f64,
        "datagrams",
    );
    record(
        test,
        "client congestion events",
        (after.path.congestion_events - between.path.congestion_events) as f64,
        "events",
    );
    record(
        test,
        "black holes the client detected",
        (after.path.black_holes_detected - between.path.black_holes_detected) as f64,
        "events",
    );
}

// ---------------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------------

/// SIGTERM: the daemon exits 0 within `limit` and its log passes [`check_exit_log`]. Returns
/// the log.
async fn stop_balanced(t: Backend, d: &mut QuixdProcess, limit: Duration) -> String {
    d.assert_alive();
    d.signal(libc::SIGTERM);
    let status = wait_exit(d, limit)
        .await
        .unwrap_or_else(|| panic!("quixd still running {limit:?} after SIGTERM"));
    assert!(
        status.success(),
        "quixd exit status after SIGTERM: {status}"
    );
    let log = d.output();
    check_exit_log(t, &log);
    log
}

/// Waits up to `limit` for `d` to exit (then its log is complete), without blocking the
/// runtime.
async fn wait_exit(d: &mut QuixdProcess, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = d.exited() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The log of a daemon that stopped: on the backends that keep one, a balanced buffer ledger
/// (xdp: every UMEM frame; io_uring: every provided buffer and send slot), and no panic.
fn check_exit_log(t: Backend, log: &str) {
    let balanced = if t.is_xdp() {
        Some("frame ledger balanced: every UMEM frame accounted for")
    } else if t.is_io_uring() {
        Some("io_uring ledger balanced")
    } else {
        None
    };
    if let Some(line) = balanced {
        assert!(log.contains(line), "no `{line}` at shutdown");
    }
    assert!(!log.contains("NOT balanced"), "a ledger is not balanced");
    assert!(!log.contains("panicked"), "a thread of the daemon panicked");
}

/// Reports the backend's send-side counters from the daemon's last `datapath counters:` line.
fn record_send_counters(test: &str, log: &str) {
    let c = counters(log);
    for name in [
        "tx_errors",
        "tx_via_kernel",
        "tx_too_big",
        "tx_backpressure",
        "kernel_tx_errors",
    ] {
        if let Some(v) = c.get(name) {
            record(test, &format!("daemon {name}"), *v as f64, "count");
        }
    }
}

/// A fixture with `PATH` (`size` random bytes), its daemon, and a client connection.
struct Setup {
    fx: Fixture,
    d: Daemon,
    data: Vec<u8>,
    seed: u64,
    _ep: quinn::Endpoint,
    conn: quinn::Connection,
}

impl Setup {
    async fn new(t: Backend, size: usize) -> Self {
        Self::with_windows(t, size, None).await
    }

    /// [`Setup::new`], the client's stream and connection receive windows `windows` bytes
    /// if given.
    async fn with_windows(t: Backend, size: usize, windows: Option<u32>) -> Self {
        let fx = Fixture::new(t);
        let seed = run_seed();
        let data = random_bytes(size, seed);
        fx.put(PATH.trim_start_matches('/'), &data);
        let d = fx.start(&fx.config().drain_timeout_ms(DRAIN_MS)).await;
        let addr = d.addr();
        let ep = fx.client.endpoint(addr);
        let mut cfg = client_config_with_idle(&fx.trust(), &[ALPN_HQ], false, CLIENT_IDLE);
        if let Some(bytes) = windows {
            let mut transport = quinn::TransportConfig::default();
            transport.max_idle_timeout(Some(CLIENT_IDLE.try_into().unwrap()));
            transport.stream_receive_window(bytes.into());
            transport.receive_window(bytes.into());
            cfg.transport_config(Arc::new(transport));
        }
        let conn = connect(&ep, &cfg, addr).await;
        Setup {
            fx,
            d,
            data,
            seed,
            _ep: ep,
            conn,
        }
    }

    fn net(&self) -> &TestNet {
        self.fx.net.as_ref().expect("a netns target")
    }

    /// Closes the connection and stops the daemon ([`stop_balanced`]); reports its counters.
    async fn finish(mut self, test: &str) {
        self.conn.close(0u32.into(), b"done");
        let t = self.fx.target;
        let log = stop_balanced(
            t,
            &mut self.d,
            Duration::from_millis(DRAIN_MS) + EXIT_MARGIN,
        )
        .await;
        record_send_counters(test, &log);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The link goes down and up
// ---------------------------------------------------------------------------------------------

/// At a quarter of the download the server's veth goes down for a second, then up: QUIC
/// retransmits what was lost and the download completes intact. (The kernel flushes the
/// link's routes and neighbours meanwhile; IPv6 addresses go too, so this runs over IPv4.)
async fn link_down_and_up_mid_download(t: Backend) {
    let test = &test_name("", t, "link_down_and_up_mid_download");
    let s = Setup::new(t, SIZE).await;
    let net = s.net();
    bounded(Duration::from_secs(180), async {
        baseline_then_fault(test, &s.conn, &s.data, s.seed, |p| async move {
            p.reached(0.25).await;
            net.server(&["ip", "link", "set", "dev", &net.server_if, "down"]);
            p.assert_running("the link going down");
            let at_down = p.got();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let while_down = p.got() - at_down;
            net.server(&["ip", "link", "set", "dev", &net.server_if, "up"]);
            let at_up = p.got();
            let resumed = p.moved_past(at_up, Duration::from_secs(20)).await;
            record(
                test,
                "bytes received while the link was down",
                while_down as f64,
                "bytes",
            );
            record(
                test,
                "time until data flowed again after the link came up",
                resumed.as_secs_f64() * 1e3,
                "ms",
            );
        })
        .await;
    })
    .await;
    s.finish(test).await;
}

// ---------------------------------------------------------------------------------------------
// 2. The MTU changes
// ---------------------------------------------------------------------------------------------

/// At a fifth of the download the server's interface MTU drops from 1500 to 1280, and at 60%
/// it is 1500 again: the download completes intact. While it is 1280, nothing larger than
/// 1280 bytes may leave the server: the client's namespace counts the IPv4 packets from the
/// daemon's port longer than that (counting from 100 ms after the change, so packets already
/// on their way are not held against it). UDP segmentation offload is off on the server's
/// veth, so a GSO batch of the kernel path is cut into its datagrams before it leaves (veth
/// would carry it whole, and the client's hook would see one long packet), as on a NIC
/// without it.
async fn mtu_change_mid_download(t: Backend) {
    let test = &test_name("", t, "mtu_change_mid_download");
    let s = Setup::new(t, SIZE).await;
    let net = s.net();
    net.server(&[
        "ethtool",
        "-K",
        &net.server_if,
        "tx-udp-segmentation",
        "off",
    ]);
    let port = s.d.addr().port();
    let table = format!("qxmtu{}", std::process::id());
    let oversize = Arc::new(AtomicU64::new(0));
    let counted = oversize.clone();
    bounded(Duration::from_secs(180), async {
        baseline_then_fault(test, &s.conn, &s.data, s.seed, |p| async move {
            p.reached(0.2).await;
            net.server(&["ip", "link", "set", "dev", &net.server_if, "mtu", "1280"]);
            p.assert_running("the MTU change");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let rule = format!(
                "add table ip {table}\n\
                 add chain ip {table} pre {{ type filter hook prerouting priority -300; }}\n\
                 add rule ip {table} pre ip saddr {} udp sport {port} ip length > 1280 counter\n",
                net.server_v4
            );
            nft(&net.client_ns, &rule);
            let at_small = p.got();
            p.reached(0.6).await;
            let listing = net.client(&["nft", "list", "table", "ip", &table]);
            let n = nft_counters(&String::from_utf8_lossy(&listing.stdout));
            counted.store(n.first().copied().unwrap_or(0), Ordering::Relaxed);
            net.server(&["ip", "link", "set", "dev", &net.server_if, "mtu", "1500"]);
            net.client(&["nft", "delete", "table", "ip", &table]);
            record(
                test,
                "bytes received with the MTU at 1280",
                (p.got() - at_small) as f64,
                "bytes",
            );
        })
        .await;
    })
    .await;
    let oversize = oversize.load(Ordering::Relaxed);
    record(
        test,
        "packets over 1280 bytes sent while the MTU was 1280",
        oversize as f64,
        "packets",
    );
    // Stopped first: the ledger is checked whatever the count.
    s.finish(test).await;
    assert_eq!(
        oversize, 0,
        "{oversize} IPv4 packets longer than the 1280-byte MTU left the server's interface \
         while its MTU was 1280"
    );
}

/// Applies an nftables script in namespace `ns`.
fn nft(ns: &str, script: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft -f in {ns} failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// 3. The neighbour tables are flushed
// ---------------------------------------------------------------------------------------------

/// At 10%, 20%, 30%, 40% and 50% of the download both ends' neighbour tables are flushed
/// (`ip neigh flush dev IF`, both families): each side resolves the other again (the xdp
/// backend meanwhile sends through the kernel, which resolves the neighbour for it:
/// `tx_via_kernel`) and the download completes intact.
async fn neighbour_flush_mid_download(t: Backend) {
    let test = &test_name("", t, "neighbour_flush_mid_download");
    let s = Setup::new(t, SIZE).await;
    let net = s.net();
    bounded(Duration::from_secs(180), async {
        baseline_then_fault(test, &s.conn, &s.data, s.seed, |p| async move {
            for fraction in [0.1, 0.2, 0.3, 0.4, 0.5] {
                p.reached(fraction).await;
                net.server(&["ip", "neigh", "flush", "dev", &net.server_if]);
                net.client(&["ip", "neigh", "flush", "dev", &net.client_if]);
                p.assert_running("the neighbour flush");
            }
        })
        .await;
    })
    .await;
    s.finish(test).await;
}

// ---------------------------------------------------------------------------------------------
// 4. The client's MAC address changes
// ---------------------------------------------------------------------------------------------

/// The MAC address of `ifname` in namespace `ns`, as `ip` prints it.
fn mac_of(net: &TestNet, ns: &str, ifname: &str) -> String {
    let out = net.exec(ns, &["cat", &format!("/sys/class/net/{ifname}/address")]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Both ends' neighbour entries (`ip -s neigh`: state, MAC, when last used and confirmed).
fn neighbours(net: &TestNet) -> String {
    let server = net.server(&["ip", "-s", "neigh", "show", "dev", &net.server_if]);
    let client = net.client(&["ip", "-s", "neigh", "show", "dev", &net.client_if]);
    format!(
        "server: {}client ({}): {}",
        String::from_utf8_lossy(&server.stdout),
        mac_of(net, &net.client_ns, &net.client_if),
        String::from_utf8_lossy(&client.stdout)
    )
}

/// Neighbour timers for the server's interface (`net.ipv4.neigh.IF.*`): an entry is
/// REACHABLE for 0.5-1.5 s after a confirmation (instead of 15-45 s), waits 1 s in DELAY and
/// probes every 250 ms, so the kernel notices a neighbour that moved within seconds. The
/// timescale only: every state is what it would be with the defaults.
const FAST_NEIGH: [(&str, &str); 3] = [
    ("base_reachable_time_ms", "1000"),
    ("delay_first_probe_time", "1"),
    ("retrans_time_ms", "250"),
];

/// At 20% and again at 45% of the download, the client's interface takes a new MAC address
/// (locally administered, random); the client drops frames still sent to the old one. The
/// download completes intact, and the server's neighbour entry ends with the new address.
///
/// - At 20% the client moves and speaks: its kernel flushes its neighbours, and the client
///   sends a small request on the connection, so its kernel asks for the server's MAC from
///   the new address and the server's kernel learns it (the xdp backend mirrors the kernel's
///   table and must follow).
/// - At 45% the client moves silently: nftables drops its output for 200 ms around the
///   change (its pending ACKs, and with them its ARP request, go nowhere), and its receive
///   windows (1 GiB) need no updates for this file, so it has nothing ack-eliciting in flight
///   and says nothing until it hears from the server. The server must find the new MAC by
///   itself: the kernel does for its own sends (REACHABLE runs out, STALE, DELAY, unicast
///   probes to the old MAC fail, FAILED, and a broadcast request finds the new one); with
///   [`FAST_NEIGH`] that takes seconds. A datapath that bypasses the kernel's sends has to
///   get the kernel to do the same.
async fn peer_mac_change_mid_download(t: Backend) {
    let test = &test_name("", t, "peer_mac_change_mid_download");
    let s = Setup::with_windows(t, SIZE, Some(1 << 30)).await;
    let net = s.net();
    for (name, value) in FAST_NEIGH {
        let key = format!("net.ipv4.neigh.{}.{name}={value}", net.server_if);
        net.server(&["sysctl", "-qw", &key]);
    }
    let small = random_bytes(3000, s.seed ^ 0x5a);
    s.fx.put("small.txt", &small);
    let mut rng = s.seed | 1;
    let mut next_mac = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let b = rng.to_le_bytes();
        format!(
            "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4]
        )
    };
    let macs = [next_mac(), next_mac()];
    let old = mac_of(net, &net.client_ns, &net.client_if);
    let silence = format!(
        "add table inet qxsilent\n\
         add chain inet qxsilent out {{ type filter hook output priority 0; }}\n\
         add rule inet qxsilent out oifname \"{}\" drop\n",
        net.client_if
    );
    bounded(Duration::from_secs(180), async {
        let (macs, conn, silence, small) = (&macs, &s.conn, &silence, &small);
        baseline_then_fault(test, &s.conn, &s.data, s.seed, |p| async move {
            let mut request = None;
            for ((fraction, silent), mac) in [(0.2, false), (0.45, true)].into_iter().zip(macs) {
                p.reached(fraction).await;
                if silent {
                    nft(&net.client_ns, silence);
                }
                let set = ["ip", "link", "set", "dev", &net.client_if, "address", mac];
                net.client(&set);
                let changed = Instant::now();
                p.assert_running("the MAC address change");
                if silent {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    net.client(&["nft", "delete", "table", "inet", "qxsilent"]);
                } else {
                    let conn = conn.clone();
                    request = Some(tokio::spawn(
                        async move { hq_get(&conn, "/small.txt").await },
                    ));
                }
                let at = p.got();
                let mut seen = Vec::new();
                while p.got() <= at && !p.done.load(Ordering::Relaxed) {
                    // What both kernels believe meanwhile, for the message if it never resumes.
                    if seen.len() < 3
                        && changed.elapsed() > Duration::from_secs(2 + 8 * seen.len() as u64)
                    {
                        seen.push(format!(
                            "after {:?}:\n{}",
                            changed.elapsed(),
                            neighbours(net)
                        ));
                    }
                    assert!(
                        changed.elapsed() < Duration::from_secs(25),
                        "nothing arrived for 25 s after the client's MAC changed to {mac} \
                         (client silent: {silent}; at {at} bytes); the neighbour tables \
                         meanwhile:\n{}",
                        seen.join("\n")
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                record(
                    test,
                    &format!(
                        "time until data flowed after the MAC change at {fraction} (client \
                         silent: {silent})"
                    ),
                    changed.elapsed().as_secs_f64() * 1e3,
                    "ms",
                );
            }
            let body = request.expect("the request").await.expect("request task");
            assert_same_bytes(&body, small, "GET /small.txt after the MAC change");
        })
        .await;
    })
    .await;
    let neigh = net.server(&["ip", "neigh", "show", "dev", &net.server_if]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_lowercase();
    assert!(
        neigh.contains(&macs[1]) && !neigh.contains(&old),
        "the server's neighbour table after the client moved from {old} to {}:\n{neigh}",
        macs[1]
    );
    s.finish(test).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Loss and reordering on a router
// ---------------------------------------------------------------------------------------------

/// A client — router — server path for the daemon on backend `t`: the daemon on the server's
/// link (xdp attached there), listening on the server's address, port 0.
struct RoutedSetup {
    net: RoutedNet,
    fx: Fixture,
    d: Daemon,
    data: Vec<u8>,
    seed: u64,
}

impl RoutedSetup {
    fn client_site(&self) -> &Site {
        &self.net.sites[0]
    }

    fn server_site(&self) -> &Site {
        &self.net.sites[1]
    }

    async fn new(t: Backend, size: usize) -> Self {
        let net = RoutedNet::new("qxf", &[('c', 1), ('s', 2)]);
        // No namespaces of the fixture's own: the config is pointed at the routed ones.
        let fx = Fixture::new(Backend::Socket);
        let seed = run_seed();
        let data = random_bytes(size, seed);
        fx.put(PATH.trim_start_matches('/'), &data);
        let server = &net.sites[1];
        let mut cfg = fx.config().drain_timeout_ms(DRAIN_MS);
        cfg.backend = t.config_backend().to_owned();
        cfg.listen = vec![format!("{}:0", server.v4)];
        cfg.xdp = t.xdp_attach().map(|attach| XdpSection {
            interface: server.ifname.clone(),
            attach: attach.to_owned(),
            transmit: t.xdp_transmit().unwrap_or("auto").to_owned(),
        });
        let path = fx.write_config(&cfg);
        let d = Daemon::start(Some(&server.ns), &path, 1).await;
        RoutedSetup {
            net,
            fx,
            d,
            data,
            seed,
        }
    }

    /// Where the client's sockets live.
    fn client(&self) -> ClientSide {
        ClientSide {
            ns: Some(self.client_site().ns.clone()),
            v4: self.client_site().v4,
            v6: "fd00::2".parse().unwrap(),
        }
    }

    /// The router's side of the client's link, for a relay there.
    fn router_side(&self) -> ClientSide {
        ClientSide {
            ns: Some(self.net.router.clone()),
            v4: self.client_site().gateway,
            v6: "fd00::1".parse().unwrap(),
        }
    }

    async fn connect(&self, to: SocketAddr) -> (quinn::Endpoint, quinn::Connection) {
        let ep = self.client().endpoint(to);
        let cfg = client_config_with_idle(&self.fx.trust(), &[ALPN_HQ], false, CLIENT_IDLE);
        let conn = connect(&ep, &cfg, to).await;
        (ep, conn)
    }

    /// Drops `percent` of the daemon's UDP each way in the router's forward chain (0: none),
    /// with counters: dropped to the server, dropped to the client, passed to the server,
    /// passed to the client.
    fn set_loss(&self, percent: u32) {
        let port = self.d.addr().port();
        let (c, s) = (&self.client_site().router_if, &self.server_site().router_if);
        let script = format!(
            "table inet qxloss {{}}\n\
             delete table inet qxloss\n\
             table inet qxloss {{\n\
               chain forward {{\n\
                 type filter hook forward priority 0; policy accept;\n\
                 iifname \"{c}\" udp dport {port} numgen random mod 100 < {percent} counter drop\n\
                 iifname \"{s}\" udp sport {port} numgen random mod 100 < {percent} counter drop\n\
                 iifname \"{c}\" udp dport {port} counter\n\
                 iifname \"{s}\" udp sport {port} counter\n\
               }}\n\
             }}\n"
        );
        nft(&self.net.router, &script);
    }

    /// The loss table's counters (see [`RoutedSetup::set_loss`]).
    fn loss_counters(&self) -> Vec<u64> {
        let out = self.net.router(&["nft", "list", "table", "inet", "qxloss"]);
        nft_counters(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Whether `nft` is here (the loss case needs it): otherwise skip, or fail when privileged
/// tests are required.
fn have_nft(test: &str) -> bool {
    match nft_problem() {
        None => true,
        Some(reason) => skip_or_fail(test, reason),
    }
}

/// Loss sizes: the 20% phase is slow (the congestion window stays small), so it moves less.
const LOSS_SIZE: usize = 30_000_000;
const HEAVY_LOSS_SIZE: usize = 8_000_000;

/// Client — router — server; the router's nftables drop 5%, then 20% of the daemon's UDP in
/// each direction (`numgen random mod 100 < N drop`, measured by its counters). One
/// connection, made before any loss: a download without loss, one at 5% and one at 20% (of a
/// smaller file): each intact. The congestion events and extra datagrams are QUIC's recovery.
async fn loss_through_a_router(t: Backend) {
    let test = &test_name("path", t, "loss_through_a_router");
    if !have_nft(test) {
        return;
    }
    let r = RoutedSetup::new(t, LOSS_SIZE).await;
    let d_addr = r.d.addr();
    bounded(Duration::from_secs(200), async {
        r.set_loss(0);
        let (_ep, conn) = r.connect(d_addr).await;
        let base = Download::start(&conn, PATH, r.data.len(), None)
            .finish(DOWNLOAD_LIMIT)
            .await;
        intact(
            &base,
            &r.data,
            &format!("download without loss (seed {})", r.seed),
        );
        record(test, "30 MB without loss", base.took.as_secs_f64(), "s");
        let heavy = random_bytes(HEAVY_LOSS_SIZE, r.seed ^ 0x20);
        r.fx.put("heavy.bin", &heavy);
        for (percent, path, want) in [(5, PATH, &r.data), (20, "/heavy.bin", &heavy)] {
            r.set_loss(percent);
            let before = conn.stats();
            let fetched = Download::start(&conn, path, want.len(), None)
                .finish(DOWNLOAD_LIMIT)
                .await;
            let after = conn.stats();
            let what = format!("download at {percent}% loss (seed {})", r.seed);
            intact(&fetched, want, &what);
            let c = r.loss_counters();
            assert_eq!(c.len(), 4, "the loss table's counters: {c:?}");
            let mb = want.len() as f64 / 1e6;
            record(
                test,
                &format!("{mb} MB at {percent}% loss"),
                fetched.took.as_secs_f64(),
                "s",
            );
            for (dir, dropped, passed) in
                [("to the server", c[0], c[2]), ("to the client", c[1], c[3])]
            {
                let rate = 100.0 * dropped as f64 / (dropped + passed).max(1) as f64;
                record(
                    test,
                    &format!("dropped {dir} at {percent}% asked"),
                    rate,
                    "%",
                );
                assert!(dropped > 0, "the router dropped nothing {dir}: {c:?}");
            }
            record(
                test,
                &format!("datagrams received at {percent}% loss"),
                (after.udp_rx.datagrams - before.udp_rx.datagrams) as f64,
                "datagrams",
            );
            record(
                test,
                &format!("client congestion events at {percent}% loss"),
                (after.path.congestion_events - before.path.congestion_events) as f64,
                "events",
            );
            record(
                test,
                &format!("longest pause at {percent}% loss"),
                fetched.longest_pause.as_secs_f64() * 1e3,
                "ms",
            );
        }
        r.set_loss(0);
        conn.close(0u32.into(), b"done");
    })
    .await;
    let mut r = r;
    let log = stop_balanced(t, &mut r.d, Duration::from_millis(DRAIN_MS) + EXIT_MARGIN).await;
    record_send_counters(test, &log);
}

/// The reordering: every 10th datagram each way is held back until the 4 after it have
/// passed (or 2 ms went by without another).
const REORDER: Reorder = Reorder {
    every: 10,
    past: 4,
    idle: Duration::from_millis(2),
};

/// Client — router — server with a UDP relay in the router namespace (nftables cannot delay
/// packets): the client connects to the relay, which forwards each datagram to the daemon
/// and back, holding every 10th datagram in each direction back until the next 4 have
/// passed. That is past QUIC's packet reordering threshold (3), so the daemon and the client
/// take some of them for lost and retransmit; the late originals arrive as duplicates. A
/// download without the relay, then one through it: both intact.
async fn reordering_through_a_router(t: Backend) {
    let test = &test_name("path", t, "reordering_through_a_router");
    let r = RoutedSetup::new(t, SIZE).await;
    let server = r.d.addr();
    bounded(Duration::from_secs(180), async {
        let (_ep, direct) = r.connect(server).await;
        let base = Download::start(&direct, PATH, r.data.len(), None)
            .finish(DOWNLOAD_LIMIT)
            .await;
        intact(
            &base,
            &r.data,
            &format!("download without the relay (seed {})", r.seed),
        );
        direct.close(0u32.into(), b"done");

        let relay = Relay::start_with(&r.router_side(), server, Some(REORDER)).await;
        let (_ep2, conn) = r.connect(relay.addr).await;
        let before = conn.stats();
        let fetched = Download::start(&conn, PATH, r.data.len(), None)
            .finish(DOWNLOAD_LIMIT)
            .await;
        let after = conn.stats();
        intact(
            &fetched,
            &r.data,
            &format!("download through the reordering relay (seed {})", r.seed),
        );
        let stats = relay.stats();
        conn.close(0u32.into(), b"done");
        let mb = r.data.len() as f64 / 1e6;
        record(
            test,
            &format!("{mb} MB direct"),
            base.took.as_secs_f64(),
            "s",
        );
        record(
            test,
            &format!("{mb} MB reordered"),
            fetched.took.as_secs_f64(),
            "s",
        );
        record(
            test,
            "datagrams delivered out of order",
            stats.reordered as f64,
            "datagrams",
        );
        record(
            test,
            "datagrams received through the relay",
            (after.udp_rx.datagrams - before.udp_rx.datagrams) as f64,
            "datagrams",
        );
        record(
            test,
            "client congestion events",
            (after.path.congestion_events - before.path.congestion_events) as f64,
            "events",
        );
        assert!(
            stats.reordered >= 100,
            "the relay reordered only {} datagrams",
            stats.reordered
        );
    })
    .await;
    let mut r = r;
    let log = stop_balanced(t, &mut r.d, Duration::from_millis(DRAIN_MS) + EXIT_MARGIN).await;
    record_send_counters(test, &log);
}

// ---------------------------------------------------------------------------------------------
// 6. SIGTERM under load
// ---------------------------------------------------------------------------------------------

/// Connections, one download each; the even ones read fast enough to finish within the drain
/// timeout, the odd ones too slowly to.
const LOAD_CONNECTIONS: usize = 8;
const LOAD_SIZE: usize = 12_000_000;
const FAST_RATE: f64 = 6e6;
const SLOW_RATE: f64 = 0.5e6;
const LOAD_DRAIN_MS: u64 = 6_000;

/// Eight concurrent downloads of 12 MB (each its own file and connection), half read at
/// 6 MB/s, half at 0.5 MB/s; SIGTERM once each has at least 500 KB. Every response that ends
/// with FIN is complete and byte for byte right; the others end with a clean error (the
/// daemon's close after `drain_timeout_ms`, or a reset), never silently short and never a
/// timeout. The fast ones finish (they have time to), the slow ones are cut; the daemon exits
/// 0 within its drain timeout (plus a margin) with its ledger balanced.
async fn sigterm_under_load(t: Backend) {
    let test = &test_name("path", t, "sigterm_under_load");
    let fx = Fixture::new(t);
    let seed = run_seed();
    let files: Vec<Vec<u8>> = (0..LOAD_CONNECTIONS)
        .map(|i| random_bytes(LOAD_SIZE, seed.wrapping_add(i as u64)))
        .collect();
    for (i, f) in files.iter().enumerate() {
        fx.put(&format!("f{i}.bin"), f);
    }
    let mut d = fx.start(&fx.config().drain_timeout_ms(LOAD_DRAIN_MS)).await;
    let addr = d.addr();
    let ep = fx.client.endpoint(addr);
    let cfg = client_config_with_idle(&fx.trust(), &[ALPN_HQ], false, CLIENT_IDLE);
    let exit_limit = Duration::from_millis(LOAD_DRAIN_MS) + EXIT_MARGIN;
    let (outcomes, exit, at_signal) = bounded(Duration::from_secs(120), async {
        let mut conns = Vec::new();
        for _ in 0..LOAD_CONNECTIONS {
            conns.push(connect(&ep, &cfg, addr).await);
        }
        let downloads: Vec<Download> = conns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let rate = if i % 2 == 0 { FAST_RATE } else { SLOW_RATE };
                Download::start(c, &format!("/f{i}.bin"), LOAD_SIZE, Some(rate))
            })
            .collect();
        for dl in &downloads {
            dl.progress.reached(500_000.0 / LOAD_SIZE as f64).await;
        }
        let at_signal: Vec<u64> = downloads.iter().map(|dl| dl.progress.got()).collect();
        let signalled = Instant::now();
        d.signal(libc::SIGTERM);
        // The daemon's exit and the downloads' ends, watched together.
        let exit = async {
            let status = wait_exit(&mut d, exit_limit).await;
            (status, signalled.elapsed())
        };
        let ends = async {
            let mut outcomes = Vec::new();
            for dl in downloads {
                outcomes.push(dl.finish(exit_limit + Duration::from_secs(10)).await);
            }
            outcomes
        };
        let (exit, outcomes) = tokio::join!(exit, ends);
        (outcomes, exit, at_signal)
    })
    .await;
    eprintln!("bytes per download at SIGTERM: {at_signal:?}");
    let mut complete = 0;
    for (i, (fetched, want)) in outcomes.iter().zip(&files).enumerate() {
        let fast = i % 2 == 0;
        match &fetched.result {
            Ok(body) => {
                assert_same_bytes(
                    body,
                    want,
                    &format!("download {i} ended with FIN (seed {seed})"),
                );
                complete += 1;
                assert!(
                    fast,
                    "slow download {i} finished although it could not have"
                );
            }
            Err(ReadEnd::Clean(how)) => {
                assert!(!fast, "fast download {i} was cut: {how}");
                eprintln!("download {i}: {how}");
            }
            Err(ReadEnd::Unclean(how)) => panic!("download {i} ended without a clean error: {how}"),
        }
    }
    let (status, exited) = exit;
    let status =
        status.unwrap_or_else(|| panic!("quixd still running {exit_limit:?} after SIGTERM"));
    assert!(
        status.success(),
        "quixd exit status after SIGTERM: {status}"
    );
    let log = d.output();
    check_exit_log(t, &log);
    record(
        test,
        "downloads complete (FIN, intact)",
        complete as f64,
        "downloads",
    );
    record(
        test,
        "downloads cut by the drain timeout with a clean close",
        (LOAD_CONNECTIONS - complete) as f64,
        "downloads",
    );
    record(test, "exit after SIGTERM", exited.as_secs_f64(), "s");
    record_send_counters(test, &log);
}

// ---------------------------------------------------------------------------------------------
// 7. kill -9, fifty times
// ---------------------------------------------------------------------------------------------

const KILL_ROUNDS: usize = 50;
/// The loop stops after this long, however many rounds it did (at least [`MIN_KILL_ROUNDS`]).
const KILL_BUDGET: Duration = Duration::from_secs(120);
const MIN_KILL_ROUNDS: usize = 20;
/// The fixed port: each daemon must get it back from the one killed before it.
const KILL_PORT: u16 = 4433;

/// XDP on the server's veth: the programs the crate's own netlink view finds (id and
/// description: mode, bpf_link), and `ip -d link`'s mode keyword.
fn xdp_state(net: &TestNet) -> (Vec<(u32, String)>, Option<String>) {
    let (ns, iface) = (net.server_ns.clone(), net.server_if.clone());
    let programs = std::thread::spawn(move || {
        TestNet::enter(&ns);
        quixd::datapath::xdp::attach::inspect(&iface).map(|x| {
            x.programs
                .iter()
                .map(|p| (p.id, p.to_string()))
                .collect::<Vec<_>>()
        })
    })
    .join()
    .unwrap()
    .unwrap_or_else(|e| panic!("inspect {}: {e}", net.server_if));
    let out = net.server(&["ip", "-d", "link", "show", "dev", &net.server_if]);
    let text = String::from_utf8_lossy(&out.stdout);
    let keyword = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .find(|w| w.starts_with("xdp"))
        .map(str::to_owned);
    (programs, keyword)
}

/// A bpf_link pinned for the server's veth where quixd's operator commands pin theirs.
fn pinned_link(net: &TestNet) -> Option<std::path::PathBuf> {
    [
        format!("/sys/fs/bpf/quixd/{}@{}", net.server_if, net.server_ns),
        format!("/sys/fs/bpf/quixd/{}", net.server_if),
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

/// Starts `quixd run` in `ns` on `config` without panicking when it exits first: the process
/// once it listens, or its output if it exited before.
async fn try_start(ns: &str, config: &std::path::Path) -> Result<QuixdProcess, String> {
    let mut d = Spawn::new("run", config).ns(Some(ns)).spawn();
    let started = Instant::now();
    loop {
        let addrs = d.listening();
        if !addrs.is_empty() {
            d.addrs = addrs;
            return Ok(d);
        }
        if d.exited().is_some() {
            return Err(d.output());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "quixd neither listened nor exited within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// 50 rounds (bounded by two minutes): the daemon on a fixed port, a 50 MB download, and
/// `kill -9` after a random 0-400 ms. Even rounds then wait: within 5 s no XDP program may be
/// attached to the interface (the crate's netlink view and `ip link`), and no bpf_link may
/// be pinned for it; only then does the next daemon start. Odd rounds restart at once, as a
/// supervisor (`Restart=always`) would, as soon as the killed process is reaped: the new
/// daemon's program must be the only one on the interface, and a new one. Every start must
/// come up and attach, on the same port and queue; a start that fails is retried every
/// 20 ms so the rounds go on, counted, and fails the test at the end with how long restarts
/// were refused. After the last round the daemon serves the file intact and stops with its
/// ledger balanced, leaving nothing attached.
async fn sigkill_50_times_under_traffic(t: Backend) {
    let test = &test_name("kill9", t, "sigkill_50_times_under_traffic");
    let fx = Fixture::new(t);
    let net = fx.net.as_ref().expect("a netns target");
    let seed = run_seed();
    let data = random_bytes(SIZE, seed);
    fx.put(PATH.trim_start_matches('/'), &data);
    let listen = format!("{}:{KILL_PORT}", net.server_v4);
    let config = fx.write_config(&fx.config().listen(&[&listen]).drain_timeout_ms(DRAIN_MS));
    let ccfg = client_config_with_idle(&fx.trust(), &[ALPN_HQ], false, CLIENT_IDLE);
    let mut rng = seed | 1;
    let mut rounds = 0;
    let mut bytes_at_kill = Vec::new();
    let mut slowest_detach = Duration::ZERO;
    // Restarts refused: (round, restarted at once, how long until one started, the error).
    let mut refused: Vec<(usize, bool, Duration, String)> = Vec::new();
    let mut d = try_start(&net.server_ns, &config)
        .await
        .unwrap_or_else(|log| panic!("the first daemon did not start:\n{log}"));
    let mut program = {
        let (programs, _) = xdp_state(net);
        assert_eq!(programs.len(), 1, "attached after start: {programs:?}");
        programs[0].0
    };
    let started = Instant::now();
    while rounds < KILL_ROUNDS && started.elapsed() < KILL_BUDGET {
        let at_once = rounds % 2 == 1;
        let addr = d.addrs[0];
        let ep = fx.client.endpoint(addr);
        let conn = connect(&ep, &ccfg, addr).await;
        let dl = Download::start(&conn, PATH, SIZE, None);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(rng % 400)).await;
        bytes_at_kill.push(dl.progress.got());
        let status = d.kill9();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {rounds}: {status}"
        );
        let killed = Instant::now();
        if !at_once {
            loop {
                let (programs, keyword) = xdp_state(net);
                if programs.is_empty() && keyword.is_none() {
                    break;
                }
                assert!(
                    killed.elapsed() < Duration::from_secs(5),
                    "round {rounds}: still attached 5 s after SIGKILL: {programs:?} (ip link: \
                     {keyword:?})"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            slowest_detach = slowest_detach.max(killed.elapsed());
            if let Some(pin) = pinned_link(net) {
                panic!("round {rounds}: a bpf_link is pinned at {}", pin.display());
            }
        }
        // The next daemon.
        let restart = Instant::now();
        let mut first_error = None;
        d = loop {
            match try_start(&net.server_ns, &config).await {
                Ok(d) => break d,
                Err(log) => {
                    let line = log
                        .lines()
                        .find(|l| l.contains("cannot"))
                        .unwrap_or(log.as_str())
                        .to_owned();
                    first_error.get_or_insert(line);
                    assert!(
                        restart.elapsed() < Duration::from_secs(10),
                        "round {rounds}: no daemon could start for 10 s after the kill:\n{log}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        if let Some(error) = first_error {
            refused.push((rounds, at_once, restart.elapsed(), error));
        }
        let (programs, _) = xdp_state(net);
        assert_eq!(
            programs.len(),
            1,
            "round {rounds}: attached after the restart: {programs:?}"
        );
        assert_ne!(
            programs[0].0, program,
            "round {rounds}: the killed daemon's program is still attached: {programs:?}"
        );
        program = programs[0].0;
        if let Some(pin) = pinned_link(net) {
            panic!("round {rounds}: a bpf_link is pinned at {}", pin.display());
        }
        dl.task.abort();
        conn.close(0u32.into(), b"gone");
        drop(ep);
        rounds += 1;
    }
    let took = started.elapsed();
    record(test, "kill -9 rounds", rounds as f64, "rounds");
    record(test, "time for the rounds", took.as_secs_f64(), "s");
    record(
        test,
        "slowest detach after SIGKILL",
        slowest_detach.as_secs_f64() * 1e3,
        "ms",
    );
    let mid = bytes_at_kill
        .iter()
        .filter(|&&b| b > 0 && b < SIZE as u64)
        .count();
    record(test, "rounds killed mid-download", mid as f64, "rounds");
    record(
        test,
        "restarts refused right after kill -9",
        refused.len() as f64,
        "restarts",
    );
    let longest_refusal = refused.iter().map(|r| r.2).max().unwrap_or_default();
    record(
        test,
        "longest time until a restart succeeded",
        longest_refusal.as_secs_f64() * 1e3,
        "ms",
    );
    eprintln!("bytes downloaded at each kill (seed {seed}): {bytes_at_kill:?}");
    assert!(
        rounds >= MIN_KILL_ROUNDS,
        "only {rounds} rounds in {KILL_BUDGET:?}"
    );
    assert!(
        mid > 0,
        "no round was killed mid-download: {bytes_at_kill:?}"
    );

    // The daemon after all that: serves, and stops with its ledger balanced.
    let addr = d.addrs[0];
    bounded(Duration::from_secs(60), async {
        let ep = fx.client.endpoint(addr);
        let conn = connect(&ep, &ccfg, addr).await;
        assert_same_bytes(
            &hq_get(&conn, PATH).await,
            &data,
            "download after the kills",
        );
        conn.close(0u32.into(), b"done");
    })
    .await;
    stop_balanced(t, &mut d, Duration::from_millis(DRAIN_MS) + EXIT_MARGIN).await;
    let (programs, keyword) = xdp_state(net);
    assert!(
        programs.is_empty() && keyword.is_none(),
        "attached after a clean stop: {programs:?} {keyword:?}"
    );
    let at_once = refused.iter().filter(|r| r.1).count();
    assert!(
        refused.is_empty(),
        "{} of {rounds} starts right after a kill -9 failed ({at_once} of them restarted at \
         once, the others after every XDP program was seen detached); retried every 20 ms, a \
         start succeeded at most {longest_refusal:?} after the first attempt. (round, at once, \
         time until a start succeeded): {:?}; first error: {}",
        refused.len(),
        refused.iter().map(|r| (r.0, r.1, r.2)).collect::<Vec<_>>(),
        refused[0].3
    );
}
