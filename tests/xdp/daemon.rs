//! A compact harness for the daemon-level XDP tests: a `quixd run` process on the XDP backend in
//! a [`TestNet`]'s server namespace (a guard that kills and reaps it on drop, and prints its log
//! when the test fails), its config and certificate, its log and counters, and a quinn client
//! whose sockets live in the client namespace.
//!
//! The tests using it are in `daemon_traffic.rs`, `daemon_malformed.rs` and `daemon_errors.rs`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;

use crate::netns::TestNet;
pub use crate::process::{counters, driver_counter, get, random_bytes};
use crate::process::{QuixdProcess, Spawn};

/// The UDP port the daemon serves in these tests (each test has its own namespaces).
pub const PORT: u16 = 4433;
/// How long a graceful stop (SIGTERM) may take; the configs set a 1 s drain timeout.
const STOP: Duration = Duration::from_secs(20);

/// Both XDP attach modes, as `xdp.attach` spells them, with `ip link`'s keyword for each.
pub const MODES: [(&str, &str); 2] = [("skb", "xdpgeneric"), ("driver", "xdp")];

/// A temporary directory with a certificate for "localhost", its key, a document root and the
/// daemon's config.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub cert: CertificateDer<'static>,
}

impl Site {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("quixd-xdp-")
            .tempdir()
            .expect("create a temporary directory");
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("generate a certificate");
        std::fs::write(dir.path().join("cert.pem"), key.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.signing_key.serialize_pem()).unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        Site {
            cert: key.cert.der().clone(),
            dir,
        }
    }

    /// Writes `bytes` as `www/NAME`.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.path().join("www").join(name), bytes).unwrap();
    }

    /// Writes a config: XDP backend on `interface` in `attach` mode, listening on `listen`,
    /// hq and perf served, a 1 s drain; `xdp_extra` is appended to the `[xdp]` table.
    pub fn config(
        &self,
        interface: &str,
        attach: &str,
        listen: &[SocketAddr],
        xdp_extra: &str,
    ) -> PathBuf {
        let listen: Vec<String> = listen.iter().map(|a| format!("\"{a}\"")).collect();
        let text = format!(
            "[server]\nlisten = [{}]\nbackend = \"xdp\"\ndrain_timeout_ms = 1000\n\n\
             [tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n\
             [apps.hq]\nroot = \"www\"\n\n[apps.perf]\nalpn = [\"perf\"]\n\n\
             [xdp]\ninterface = \"{interface}\"\nattach = \"{attach}\"\n{xdp_extra}\n",
            listen.join(", ")
        );
        let path = self.dir.path().join("quixd.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Both of the test net's server addresses on [`PORT`].
pub fn listen_both(net: &TestNet) -> Vec<SocketAddr> {
    vec![
        SocketAddr::new(net.server_v4.into(), PORT),
        SocketAddr::new(net.server_v6.into(), PORT),
    ]
}

/// A `quixd run` process: the shared [`QuixdProcess`] guard (which it derefs to, for `addrs`,
/// `pid`, `signal`, `try_wait`, `wait_exit`, `assert_alive`, `kill9`, ...). Dropping it SIGKILLs
/// (if still running) and reaps it; when the test is panicking its output and config are printed.
pub struct Quixd(QuixdProcess);

impl std::ops::Deref for Quixd {
    type Target = QuixdProcess;
    fn deref(&self) -> &QuixdProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Quixd {
    fn deref_mut(&mut self) -> &mut QuixdProcess {
        &mut self.0
    }
}

/// What a graceful stop left behind.
pub struct Stopped {
    pub log: String,
    pub counters: BTreeMap<String, u64>,
}

impl Quixd {
    /// Spawns `[wrapper...] quixd run --config CONFIG` in namespace `ns` without waiting for it.
    pub fn spawn(ns: &str, wrapper: &[&str], config: &Path) -> Self {
        Quixd(
            Spawn::new("run", config)
                .ns(Some(ns))
                .wrapper(wrapper)
                .spawn(),
        )
    }

    /// Starts the daemon in namespace `ns` and waits until it reported `listeners` addresses.
    pub fn start(ns: &str, config: &Path, listeners: usize) -> Self {
        let mut daemon = Self::spawn(ns, &[], config);
        daemon.wait_listening(listeners);
        daemon
    }

    /// Everything it wrote so far (stdout lines prefixed with `[stdout] `).
    pub fn log(&self) -> String {
        self.output()
    }

    /// SIGTERM, then: it exits 0 within [`STOP`], logs `frame ledger balanced` and no
    /// `NOT balanced`, and prints its datapath counters, which are returned.
    pub fn terminate(&mut self) -> Stopped {
        self.assert_alive();
        self.signal(libc::SIGTERM);
        let status = self
            .wait_exit(STOP)
            .unwrap_or_else(|| panic!("quixd did not stop within {STOP:?} of SIGTERM"));
        let log = self.log();
        assert!(status.success(), "quixd exited with {status} after SIGTERM");
        assert!(
            log.contains("frame ledger balanced: every UMEM frame accounted for"),
            "no `frame ledger balanced` after SIGTERM"
        );
        assert!(
            !log.contains("NOT balanced"),
            "the frame ledger is not balanced"
        );
        let counters = counters(&log);
        assert!(
            counters.contains_key("rx_frames") && counters.contains_key("prog_redirected"),
            "no `datapath counters:` line with the XDP counters"
        );
        for line in odd_lines(&log) {
            eprintln!("quixd logged: {line}");
        }
        Stopped { log, counters }
    }
}

/// Log lines at WARN or ERROR level.
pub fn odd_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| matches!(l.split_whitespace().nth(1), Some("WARN" | "ERROR")))
        .collect()
}

/// What `ip -d link show` says about XDP on the server's veth: the mode keyword (`xdp`,
/// `xdpgeneric`), if a program is attached.
pub fn ip_xdp(net: &TestNet) -> Option<String> {
    let out = net.server(&["ip", "-d", "link", "show", "dev", &net.server_if]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = text.lines().next().unwrap_or_default().to_owned();
    first
        .split_whitespace()
        .find(|word| word.starts_with("xdp"))
        .map(str::to_owned)
}

/// Runs `f` on a new thread inside namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        TestNet::enter(&ns);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The MAC address of `ifname` in namespace `ns`.
pub fn mac(net: &TestNet, ns: &str, ifname: &str) -> [u8; 6] {
    let out = net.exec(ns, &["cat", &format!("/sys/class/net/{ifname}/address")]);
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().expect("a 6-byte MAC address")
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// A tokio runtime for the quinn client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `fut`, or a panic after `limit`.
pub async fn bounded<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {limit:?}"))
}

/// A quinn client endpoint whose socket lives in the client namespace, trusting `cert`, for
/// `alpn`. Call inside the runtime.
pub fn client(
    net: &TestNet,
    v6: bool,
    cert: &CertificateDer<'static>,
    alpn: &str,
) -> quinn::Endpoint {
    let bind = SocketAddr::new(net.client_ip(v6), 0);
    let socket = in_ns(&net.client_ns, move || std::net::UdpSocket::bind(bind))
        .expect("bind the client's UDP socket");
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .expect("client endpoint");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(20).try_into().unwrap()));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    endpoint
}

/// Connects to `server`, bounded by 10 s.
pub async fn connect(endpoint: &quinn::Endpoint, server: SocketAddr) -> quinn::Connection {
    let connecting = endpoint.connect(server, "localhost").expect("connect");
    bounded(Duration::from_secs(10), "QUIC handshake", connecting)
        .await
        .unwrap_or_else(|e| panic!("connecting to {server}: {e}"))
}

/// hq: `GET /path`, read to the end, at most `rate` bytes per second if given.
pub async fn hq_get(conn: &quinn::Connection, path: &str, rate: Option<u64>) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
    send.write_all(format!("GET {path}\r\n").as_bytes())
        .await
        .unwrap();
    send.finish().unwrap();
    let started = Instant::now();
    let mut body = Vec::new();
    while let Some(chunk) = recv
        .read_chunk(usize::MAX, true)
        .await
        .unwrap_or_else(|e| panic!("GET {path} after {} bytes: {e}", body.len()))
    {
        body.extend_from_slice(&chunk.bytes);
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(body.len() as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    body
}
