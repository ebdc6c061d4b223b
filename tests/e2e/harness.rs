//! Shared helpers for the end-to-end tests: the backends under test, a guard around a real
//! `quixd` process, a config writer, test certificates, quinn client builders and small protocol
//! clients (hq, perf, echo).
//!
//! Every test is an `async fn name(t: Backend)` and is instantiated once per backend by
//! [`e2e_tests!`], which generates one module per backend (`socket::`, `socket_netns::`,
//! `xdp_skb::`, `xdp_driver::`, `xdp_kernel_tx::`, `io_uring::`, `io_uring_netns::`) with a
//! `#[test]` each. [`run_e2e`] decides whether a variant can
//! run here (privileges, XDP backend present) and runs it on its own tokio runtime.
//!
//! Every test runs its own daemon, with its own temporary directory and port 0 listeners; the
//! actual ports are parsed from the daemon's `listening addr=...` log lines. For the netns
//! backends the [`Fixture`] owns a [`TestNet`] (two namespaces joined by veth, removed when the
//! fixture drops, also on panic): the daemon runs in the server namespace through
//! `ip netns exec`, and every client socket is created in the client namespace.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;

use crate::netns::{privileged, TestNet};
pub use crate::process::{counters, random_bytes, QuixdProcess, Spawn};
use crate::process::{quixd_command, strip_ansi};

// ---------------------------------------------------------------------------------------------
// Backends under test
// ---------------------------------------------------------------------------------------------

/// Where and how a test runs the daemon: which datapath backend, and on which network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Kernel sockets on loopback (127.0.0.1, ::1), no privileges needed.
    Socket,
    /// Kernel sockets, but the daemon in a server namespace and the clients in a client
    /// namespace, over veth: the network plumbing of the XDP targets without XDP.
    SocketNetns,
    /// AF_XDP, XDP program attached in SKB (generic) mode on the server's veth.
    XdpSkb,
    /// AF_XDP, XDP program attached in driver (native) mode on the server's veth. Like every
    /// netns target, the client's veth keeps TX checksum offload on, as a container's does.
    XdpDriver,
    /// [`Backend::XdpDriver`] with the client's TX checksum offload off: complete UDP
    /// checksums, as from a wire.
    XdpDriverWire,
    /// Receive through AF_XDP (driver mode), transmit through the kernel socket with GSO
    /// (`xdp.transmit = "kernel"`, what `auto` picks in copy mode).
    XdpKernelTx,
    /// The io_uring backend on loopback (127.0.0.1, ::1), no privileges needed.
    IoUring,
    /// The io_uring backend, daemon in a server namespace, clients over veth (IPv4 and IPv6).
    IoUringNetns,
}

impl Backend {
    /// The name of the generated test module (`cargo test -p quixd --test e2e NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Socket => "socket",
            Backend::SocketNetns => "socket_netns",
            Backend::XdpSkb => "xdp_skb",
            Backend::XdpDriver => "xdp_driver",
            Backend::XdpDriverWire => "xdp_driver_wire",
            Backend::XdpKernelTx => "xdp_kernel_tx",
            Backend::IoUring => "io_uring",
            Backend::IoUringNetns => "io_uring_netns",
        }
    }

    /// `server.backend` in the daemon's config.
    pub fn config_backend(self) -> &'static str {
        match self {
            Backend::Socket | Backend::SocketNetns => "socket",
            Backend::XdpSkb
            | Backend::XdpDriver
            | Backend::XdpDriverWire
            | Backend::XdpKernelTx => "xdp",
            Backend::IoUring | Backend::IoUringNetns => "io_uring",
        }
    }

    /// `xdp.attach` in the daemon's config, for the XDP targets.
    pub fn xdp_attach(self) -> Option<&'static str> {
        match self {
            Backend::Socket | Backend::SocketNetns => None,
            Backend::IoUring | Backend::IoUringNetns => None,
            Backend::XdpSkb => Some("skb"),
            Backend::XdpDriver | Backend::XdpDriverWire | Backend::XdpKernelTx => Some("driver"),
        }
    }

    /// `xdp.transmit`: the XDP targets pin it, so AF_XDP transmit stays tested although
    /// `auto` picks the kernel path on veth (copy mode).
    pub fn xdp_transmit(self) -> Option<&'static str> {
        match self {
            Backend::XdpSkb | Backend::XdpDriver | Backend::XdpDriverWire => Some("af_xdp"),
            Backend::XdpKernelTx => Some("kernel"),
            _ => None,
        }
    }

    pub fn is_xdp(self) -> bool {
        self.xdp_attach().is_some()
    }

    pub fn is_io_uring(self) -> bool {
        matches!(self, Backend::IoUring | Backend::IoUringNetns)
    }

    /// Runs in network namespaces over veth (needs root).
    pub fn uses_netns(self) -> bool {
        !matches!(self, Backend::Socket | Backend::IoUring)
    }
}

/// Why this machine cannot run the io_uring backend, if it cannot (the kernel or a seccomp
/// filter refuses `io_uring_setup`).
pub fn io_uring_problem() -> Option<String> {
    match ::io_uring::IoUring::new(8) {
        Ok(_) => None,
        Err(e) => Some(format!("needs io_uring, which this kernel refuses: {e}")),
    }
}

/// Runs one backend's variant of a test (called by the functions [`e2e_tests!`] generates):
/// skips it when the machine cannot run it, otherwise runs `test(target)` on a fresh
/// multi-threaded tokio runtime with `workers` worker threads.
pub fn run_e2e<F, Fut>(target: Backend, test_name: &str, workers: usize, test: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    if target.uses_netns() && !privileged(test_name) {
        return;
    }
    if target.is_io_uring() {
        if let Some(reason) = io_uring_problem() {
            if std::env::var("QUIXD_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
                panic!("{test_name}: QUIXD_REQUIRE_PRIVILEGED=1 but the test {reason}");
            }
            eprintln!("skipping {test_name}: it {reason}");
            return;
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("build tokio runtime");
    rt.block_on(test(target));
}

/// Instantiates the listed tests of the calling module, each an `async fn NAME(t: Backend)`,
/// once per backend: it generates one module per backend (`socket`, `socket_netns`, `xdp_skb`,
/// `xdp_driver`, `xdp_kernel_tx`, `io_uring`, `io_uring_netns`), each holding a `#[test] fn NAME` that calls [`run_e2e`]. `NAME(4)` gives the
/// test 4 tokio worker threads instead of 2. A leading `[module = Backend, ...]` list restricts
/// the backends.
///
/// ```ignore
/// e2e_tests!(hq_download_10mb_file_intact, fifty_connections_five_streams_each(4));
/// e2e_tests!([socket = Socket, xdp_skb = XdpSkb] { bad_configs_rejected_with_location });
/// ```
macro_rules! e2e_tests {
    (@module $m:ident $b:ident { $($name:ident $(($workers:literal))?),* $(,)? }) => {
        mod $m {
            $(
                #[test]
                fn $name() {
                    $crate::harness::run_e2e(
                        $crate::harness::Backend::$b,
                        concat!(module_path!(), "::", stringify!($name)),
                        $crate::harness::e2e_tests!(@workers $($workers)?),
                        super::$name,
                    );
                }
            )*
        }
    };
    (@workers) => { 2 };
    (@workers $w:literal) => { $w };
    ([$($m:ident = $b:ident),* $(,)?] $tests:tt) => {
        $( $crate::harness::e2e_tests!(@module $m $b $tests); )*
    };
    ($($tests:tt)*) => {
        $crate::harness::e2e_tests!(
            [
                socket = Socket,
                socket_netns = SocketNetns,
                xdp_skb = XdpSkb,
                xdp_driver = XdpDriver,
                xdp_driver_wire = XdpDriverWire,
                xdp_kernel_tx = XdpKernelTx,
                io_uring = IoUring,
                io_uring_netns = IoUringNetns,
            ]
            { $($tests)* }
        );
    };
}
pub(crate) use e2e_tests;

/// Log level passed to the daemon (`QUIXD_E2E_LOG_LEVEL`, default "info").
fn log_level() -> String {
    std::env::var("QUIXD_E2E_LOG_LEVEL").unwrap_or_else(|_| "info".to_string())
}

/// Runs `fut`, panicking if it takes longer than `limit`. Start daemons *outside* this call so
/// that, on timeout, the guard is still alive while the test panics and shows the daemon log.
pub async fn bounded<F: Future>(limit: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("test body did not finish within {limit:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------------

/// A seed that differs between runs (content is "random" as the brief asks), and is printed on
/// failure through the assertion messages that include it.
pub fn run_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Asserts equality of two byte buffers without dumping megabytes on failure.
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first_diff = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: content mismatch: got {} bytes, expected {}; first differing offset: {:?}",
        got.len(),
        want.len(),
        first_diff
    );
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

pub struct TestCert {
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCert {
    pub fn localhost() -> Self {
        Self::localhost_padded(0)
    }

    /// A certificate for "localhost" plus `extra` filler names (~45 bytes each), to make the
    /// server's certificate, hence a full (non-resumed) handshake, big enough to tell apart on
    /// the wire from a resumed one.
    pub fn localhost_padded(extra: usize) -> Self {
        let mut names = vec!["localhost".to_string()];
        let filler = random_bytes(extra * 16, 0xC0FFEE);
        for (i, chunk) in filler.chunks(16).enumerate() {
            let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
            names.push(format!("f{i}-{hex}.invalid"));
        }
        let ck = rcgen::generate_simple_self_signed(names).expect("rcgen: generate certificate");
        TestCert {
            der: ck.cert.der().clone(),
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Config writer
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub enum TlsSetup {
    /// `[tls] cert = .. key = ..` with these files.
    Files { cert: PathBuf, key: PathBuf },
    /// No cert/key: the daemon generates a development certificate (clients skip verification).
    DevCert,
}

/// The `[xdp]` table.
#[derive(Clone, Debug)]
pub struct XdpSection {
    pub interface: String,
    pub attach: String,
    pub transmit: String,
}

/// A daemon configuration, rendered to TOML by [`ServerConfig::render`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub backend: String,
    pub xdp: Option<XdpSection>,
    pub listen: Vec<String>,
    pub drain_timeout_ms: Option<u64>,
    /// `server.workers`, as a raw TOML value (`2`, `"auto"`); `None` leaves the default.
    pub workers: Option<String>,
    /// `server.server_id` (hex); `None` leaves the default (none).
    pub server_id: Option<String>,
    /// `server.cid_key` (32 hex digits): encrypted connection IDs; `None`: plaintext.
    pub cid_key: Option<String>,
    /// `[metrics] listen`, e.g. `127.0.0.1:0`; `None`: no metrics endpoint.
    pub metrics: Option<String>,
    /// `server.user` and `server.group`.
    pub run_as: Option<(String, String)>,
    pub tls: TlsSetup,
    /// `[transport]` entries, as raw TOML values (e.g. `("retry", "true")`).
    pub transport: BTreeMap<String, String>,
    /// `[apps.hq] root`; `None` disables the hq app.
    pub hq_root: Option<PathBuf>,
    pub hq_alpn: Vec<String>,
    /// `[apps.h3] root` (ALPN `h3`); `None` disables the h3 app.
    pub h3_root: Option<PathBuf>,
    pub perf: bool,
    pub echo: bool,
}

pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04X}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_str_array(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", v.join(", "))
}

impl ServerConfig {
    pub fn transport(mut self, key: &str, raw_toml_value: &str) -> Self {
        self.transport
            .insert(key.to_string(), raw_toml_value.to_string());
        self
    }

    /// Serves `root` over HTTP/3 as well (`[apps.h3]`).
    pub fn h3(mut self, root: &Path) -> Self {
        self.h3_root = Some(root.to_path_buf());
        self
    }

    pub fn drain_timeout_ms(mut self, ms: u64) -> Self {
        self.drain_timeout_ms = Some(ms);
        self
    }

    pub fn workers(mut self, raw_toml_value: &str) -> Self {
        self.workers = Some(raw_toml_value.to_string());
        self
    }

    pub fn run_as(mut self, user: &str, group: &str) -> Self {
        self.run_as = Some((user.to_string(), group.to_string()));
        self
    }

    pub fn metrics(mut self, listen: &str) -> Self {
        self.metrics = Some(listen.to_string());
        self
    }

    pub fn server_id(mut self, hex: &str) -> Self {
        self.server_id = Some(hex.to_string());
        self
    }

    pub fn cid_key(mut self, hex: &str) -> Self {
        self.cid_key = Some(hex.to_string());
        self
    }

    pub fn listen(mut self, addrs: &[&str]) -> Self {
        self.listen = addrs.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        writeln!(s, "# written by the quixd e2e tests").unwrap();
        writeln!(s, "[server]").unwrap();
        writeln!(s, "listen = {}", toml_str_array(&self.listen)).unwrap();
        writeln!(s, "backend = {}", toml_str(&self.backend)).unwrap();
        if let Some(ms) = self.drain_timeout_ms {
            writeln!(s, "drain_timeout_ms = {ms}").unwrap();
        }
        if let Some(workers) = &self.workers {
            writeln!(s, "workers = {workers}").unwrap();
        }
        if let Some(id) = &self.server_id {
            writeln!(s, "server_id = {}", toml_str(id)).unwrap();
        }
        if let Some(key) = &self.cid_key {
            writeln!(s, "cid_key = {}", toml_str(key)).unwrap();
        }
        if let Some((user, group)) = &self.run_as {
            writeln!(s, "user = {}\ngroup = {}", toml_str(user), toml_str(group)).unwrap();
        }
        writeln!(s).unwrap();
        writeln!(s, "[tls]").unwrap();
        match &self.tls {
            TlsSetup::Files { cert, key } => {
                writeln!(s, "cert = {}", toml_str(&cert.display().to_string())).unwrap();
                writeln!(s, "key = {}", toml_str(&key.display().to_string())).unwrap();
            }
            TlsSetup::DevCert => {
                writeln!(s, "dev_cert_names = [\"localhost\"]").unwrap();
            }
        }
        writeln!(s).unwrap();
        writeln!(s, "[transport]").unwrap();
        for (k, v) in &self.transport {
            writeln!(s, "{k} = {v}").unwrap();
        }
        if let Some(root) = &self.hq_root {
            writeln!(s).unwrap();
            writeln!(s, "[apps.hq]").unwrap();
            writeln!(s, "alpn = {}", toml_str_array(&self.hq_alpn)).unwrap();
            writeln!(s, "root = {}", toml_str(&root.display().to_string())).unwrap();
        }
        if let Some(root) = &self.h3_root {
            writeln!(s).unwrap();
            writeln!(s, "[apps.h3]").unwrap();
            writeln!(s, "root = {}", toml_str(&root.display().to_string())).unwrap();
        }
        if self.perf {
            writeln!(s).unwrap();
            writeln!(s, "[apps.perf]").unwrap();
            writeln!(s, "alpn = [\"perf\"]").unwrap();
        }
        if self.echo {
            writeln!(s).unwrap();
            writeln!(s, "[apps.echo]").unwrap();
            writeln!(s, "alpn = [\"echo\"]").unwrap();
        }
        if let Some(listen) = &self.metrics {
            writeln!(s).unwrap();
            writeln!(s, "[metrics]").unwrap();
            writeln!(s, "listen = {}", toml_str(listen)).unwrap();
        }
        if let Some(x) = &self.xdp {
            writeln!(s).unwrap();
            writeln!(s, "[xdp]").unwrap();
            writeln!(s, "interface = {}", toml_str(&x.interface)).unwrap();
            writeln!(s, "attach = {}", toml_str(&x.attach)).unwrap();
            writeln!(s, "transmit = {}", toml_str(&x.transmit)).unwrap();
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture: temp dir with a document root, a certificate and config files
// ---------------------------------------------------------------------------------------------

pub struct Fixture {
    /// The backend and network this test runs on.
    pub target: Backend,
    pub dir: tempfile::TempDir,
    /// hq document root (`<dir>/www`).
    pub root: PathBuf,
    pub cert: TestCert,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    configs: AtomicUsize,
    /// Where this test's clients create their sockets.
    pub client: ClientSide,
    /// The namespaces of the netns targets; dropped (deleted) with the fixture. Declared last:
    /// the tempdir goes first, the namespaces last.
    pub net: Option<TestNet>,
}

impl Fixture {
    pub fn new(target: Backend) -> Self {
        Self::with_cert(target, TestCert::localhost())
    }

    pub fn with_cert(target: Backend, cert: TestCert) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("quixd-e2e-")
            .tempdir()
            .expect("create tempdir");
        let root = dir.path().join("www");
        std::fs::create_dir(&root).unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, &cert.cert_pem).unwrap();
        std::fs::write(&key_path, &cert.key_pem).unwrap();
        let net = match target {
            Backend::XdpDriverWire => Some(TestNet::wire()),
            _ => target.uses_netns().then(TestNet::new),
        };
        let client = match &net {
            None => ClientSide::loopback(),
            Some(n) => ClientSide {
                ns: Some(n.client_ns.clone()),
                v4: n.client_v4,
                v6: n.client_v6,
            },
        };
        Fixture {
            target,
            dir,
            root,
            cert,
            cert_path,
            key_path,
            configs: AtomicUsize::new(0),
            client,
            net,
        }
    }

    /// The server namespace, for the netns targets.
    pub fn server_ns(&self) -> Option<&str> {
        self.net.as_ref().map(|n| n.server_ns.as_str())
    }

    /// The default listen addresses: 127.0.0.1 on loopback; the server's veth addresses, v4
    /// and v6, on the netns targets (so every netns test can also reach the daemon over IPv6).
    /// All with port 0: the daemon logs the ports it got.
    pub fn listen_addrs(&self) -> Vec<String> {
        match &self.net {
            None => vec!["127.0.0.1:0".to_string()],
            Some(n) => vec![format!("{}:0", n.server_v4), format!("[{}]:0", n.server_v6)],
        }
    }

    /// One IPv4 and one IPv6 listen address: `127.0.0.1` and `[::1]` on loopback.
    pub fn dual_stack_listen(&self) -> Vec<String> {
        match &self.net {
            None => vec!["127.0.0.1:0".to_string(), "[::1]:0".to_string()],
            Some(_) => self.listen_addrs(),
        }
    }

    /// The `[xdp]` table for the XDP targets.
    pub fn xdp_section(&self) -> Option<XdpSection> {
        let attach = self.target.xdp_attach()?;
        let net = self.net.as_ref().expect("XDP targets run in namespaces");
        Some(XdpSection {
            interface: net.server_if.clone(),
            attach: attach.to_string(),
            transmit: self.target.xdp_transmit().unwrap_or("auto").to_string(),
        })
    }

    /// Writes `bytes` to `rel` under the document root, creating directories.
    pub fn put(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Default config: this fixture's backend and cert, hq on `root`, perf and echo enabled,
    /// listening on [`Fixture::listen_addrs`].
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            backend: self.target.config_backend().to_string(),
            xdp: self.xdp_section(),
            listen: self.listen_addrs(),
            drain_timeout_ms: None,
            workers: None,
            server_id: None,
            cid_key: None,
            metrics: None,
            run_as: None,
            tls: TlsSetup::Files {
                cert: self.cert_path.clone(),
                key: self.key_path.clone(),
            },
            transport: BTreeMap::new(),
            hq_root: Some(self.root.clone()),
            hq_alpn: vec!["hq-interop".to_string(), "hq-29".to_string()],
            h3_root: None,
            perf: true,
            echo: true,
        }
    }

    /// Writes a config file into the fixture dir and returns its path.
    pub fn write_config_text(&self, text: &str) -> PathBuf {
        let n = self.configs.fetch_add(1, Ordering::Relaxed);
        let p = self.dir.path().join(format!("quixd-{n}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn write_config(&self, cfg: &ServerConfig) -> PathBuf {
        self.write_config_text(&cfg.render())
    }

    /// Trust settings matching this fixture's certificate.
    pub fn trust(&self) -> Trust {
        Trust::Cert(self.cert.der.clone())
    }

    /// Writes `cfg` and starts the daemon on it (in the server namespace on netns targets).
    pub async fn start(&self, cfg: &ServerConfig) -> Daemon {
        let path = self.write_config(cfg);
        Daemon::start(self.server_ns(), &path, cfg.listen.len()).await
    }

    /// [`Fixture::start`] with quixd run by `wrapper` (e.g. `setpriv ... --`).
    pub async fn start_wrapped(&self, cfg: &ServerConfig, wrapper: &[&str]) -> Daemon {
        let path = self.write_config(cfg);
        Daemon::start_wrapped(self.server_ns(), "run", &path, cfg.listen.len(), wrapper).await
    }

    /// Writes `cfg` and starts `quixd udp-echo` on it: the backend alone, no QUIC.
    pub async fn start_udp_echo(&self, cfg: &ServerConfig) -> Daemon {
        let path = self.write_config(cfg);
        Daemon::start_subcommand(self.server_ns(), "udp-echo", &path, cfg.listen.len()).await
    }

    /// Runs `quixd ARGS` to completion (in the server namespace on netns targets); see
    /// [`run_quixd`].
    pub async fn run_quixd(
        &self,
        args: &[&std::ffi::OsStr],
        limit: Duration,
    ) -> (ExitStatus, String, String) {
        run_quixd(self.server_ns(), args, limit).await
    }
}

// ---------------------------------------------------------------------------------------------
// Daemon process guard
// ---------------------------------------------------------------------------------------------

/// A running `quixd run` process: the shared [`QuixdProcess`] guard (which it derefs to, for
/// `addrs`, `pid`, `signal`, `output`, `try_wait`, `assert_alive`, ...) with an async start and
/// an async [`Daemon::wait_exit`]. Dropping it kills and reaps the process; if the test is
/// panicking, the daemon's output and config are printed.
pub struct Daemon(QuixdProcess);

impl std::ops::Deref for Daemon {
    type Target = QuixdProcess;
    fn deref(&self) -> &QuixdProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut QuixdProcess {
        &mut self.0
    }
}

impl Daemon {
    /// Starts `quixd run --config PATH` (inside network namespace `ns` if given, through
    /// `ip netns exec`, which execs: the child's pid is quixd's) and waits until it logged
    /// `expect_listeners` listening addresses.
    pub async fn start(ns: Option<&str>, config: &Path, expect_listeners: usize) -> Daemon {
        Self::start_subcommand(ns, "run", config, expect_listeners).await
    }

    /// [`Daemon::start`] for another subcommand taking `--config` (`udp-echo`).
    pub async fn start_subcommand(
        ns: Option<&str>,
        subcommand: &str,
        config: &Path,
        expect_listeners: usize,
    ) -> Daemon {
        Self::start_wrapped(ns, subcommand, config, expect_listeners, &[]).await
    }

    /// [`Daemon::start_subcommand`] run by `wrapper` (e.g. `setpriv ... --`).
    pub async fn start_wrapped(
        ns: Option<&str>,
        subcommand: &str,
        config: &Path,
        expect_listeners: usize,
        wrapper: &[&str],
    ) -> Daemon {
        let mut d = Daemon(
            Spawn::new(subcommand, config)
                .ns(ns)
                .wrapper(wrapper)
                .log_level(log_level())
                .spawn(),
        );
        let started = Instant::now();
        while !d.poll_listening(expect_listeners, started) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        d
    }

    /// The first IPv4 listening address (the first address if there is none).
    pub fn addr(&self) -> SocketAddr {
        *self
            .addrs
            .iter()
            .find(|a| a.is_ipv4())
            .unwrap_or(&self.addrs[0])
    }

    /// SIGTERM, then a successful exit within 15 s (panicking otherwise); returns the log.
    pub async fn terminate(&mut self) -> String {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(15)).await;
        let log = self.output();
        assert!(
            status.is_some_and(|s| s.success()),
            "exit after SIGTERM: {status:?}\n{log}"
        );
        log
    }

    /// Waits up to `limit` for the process to exit, without blocking the runtime.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Moves `ep` to a new local port `rebinds` times, as a NAT rebinding would, with an hq
/// `GET path` on `conn` after each that must return `want`.
pub async fn get_across_rebinds(
    ep: &quinn::Endpoint,
    client: &ClientSide,
    conn: &quinn::Connection,
    rebinds: usize,
    path: &str,
    want: &[u8],
) {
    let peer = conn.remote_address();
    for r in 0..rebinds {
        ep.rebind(client.bind_udp(peer))
            .unwrap_or_else(|e| panic!("rebind {r}: {e}"));
        let what = format!("GET {path} after rebind {r}");
        assert_same_bytes(&hq_get(conn, path).await, want, &what);
    }
}

/// Runs the daemon binary to completion with `args` (e.g. `check-config FILE`), inside network
/// namespace `ns` if given, bounded by `limit`. Returns (exit status, stderr, stdout); panics on
/// timeout (the process is killed).
pub async fn run_quixd(
    ns: Option<&str>,
    args: &[&std::ffi::OsStr],
    limit: Duration,
) -> (ExitStatus, String, String) {
    let child = tokio::process::Command::from(quixd_command(ns, &[]))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn quixd");
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`quixd {args:?}` did not exit within {limit:?}"))
        .expect("wait for quixd");
    (
        out.status,
        strip_ansi(&String::from_utf8_lossy(&out.stderr)),
        strip_ansi(&String::from_utf8_lossy(&out.stdout)),
    )
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub enum Trust {
    /// Verify the server against this certificate as the only root.
    Cert(CertificateDer<'static>),
    /// Skip verification (for the daemon's self-signed development certificate).
    Insecure,
}

pub const ALPN_HQ: &str = "hq-interop";
pub const ALPN_HQ29: &str = "hq-29";
pub const ALPN_PERF: &str = "perf";
pub const ALPN_ECHO: &str = "echo";

/// Client idle timeout; generous, tests have their own bounds.
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds a quinn client config. `early_data` sets rustls' `enable_early_data` (needed for
/// 0-RTT). Keep and reuse the returned config to resume sessions: the rustls session cache
/// and quinn's token store live inside it.
pub fn client_config(trust: &Trust, alpns: &[&str], early_data: bool) -> quinn::ClientConfig {
    client_config_with_idle(trust, alpns, early_data, CLIENT_IDLE_TIMEOUT)
}

pub fn client_config_with_idle(
    trust: &Trust,
    alpns: &[&str],
    early_data: bool,
    idle: Duration,
) -> quinn::ClientConfig {
    let mut tls = match trust {
        Trust::Cert(der) => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            roots.add(der.clone()).expect("add root");
            rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("TLS 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
        // The daemon's generated development certificate: quixd's own dev client settings.
        Trust::Insecure => quixd::tls::dev_client_config(&[]),
    };
    tls.alpn_protocols = alpns.iter().map(|a| a.as_bytes().to_vec()).collect();
    tls.enable_early_data = early_data;
    let quic = QuicClientConfig::try_from(tls).expect("quic client config");
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(idle.try_into().unwrap()));
    cfg.transport_config(Arc::new(transport));
    cfg
}

/// Where a test's client sockets live: loopback in the test's own namespace, or the client
/// namespace of a [`TestNet`]. Cheap to clone into tasks.
#[derive(Clone, Debug)]
pub struct ClientSide {
    /// The client namespace; `None` for the test process's own.
    pub ns: Option<String>,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl ClientSide {
    pub fn loopback() -> Self {
        ClientSide {
            ns: None,
            v4: Ipv4Addr::LOCALHOST,
            v6: Ipv6Addr::LOCALHOST,
        }
    }

    /// The client's own address of the family of `peer`.
    pub fn ip_for(&self, peer: SocketAddr) -> IpAddr {
        if peer.is_ipv4() {
            self.v4.into()
        } else {
            self.v6.into()
        }
    }

    /// A non-blocking UDP socket on the client's address of `peer`'s family, port 0, created in
    /// the client namespace (on a short-lived thread that entered it: a socket stays in the
    /// namespace it was made in, whatever thread uses it later).
    pub fn bind_udp(&self, peer: SocketAddr) -> std::net::UdpSocket {
        let addr = SocketAddr::new(self.ip_for(peer), 0);
        let sock = match &self.ns {
            None => std::net::UdpSocket::bind(addr),
            Some(ns) => {
                let ns = ns.clone();
                std::thread::spawn(move || {
                    TestNet::enter(&ns);
                    std::net::UdpSocket::bind(addr)
                })
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
            }
        }
        .unwrap_or_else(|e| panic!("bind client socket {addr} (namespace {:?}): {e}", self.ns));
        sock.set_nonblocking(true).expect("set_nonblocking");
        sock
    }

    /// A tokio UDP socket made by [`ClientSide::bind_udp`]. Needs a tokio runtime.
    pub fn bind_tokio_udp(&self, peer: SocketAddr) -> tokio::net::UdpSocket {
        tokio::net::UdpSocket::from_std(self.bind_udp(peer)).expect("tokio UdpSocket::from_std")
    }

    /// A quinn client endpoint able to reach `server`. Needs a tokio runtime.
    pub fn endpoint(&self, server: SocketAddr) -> quinn::Endpoint {
        quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            self.bind_udp(server),
            Arc::new(quinn::TokioRuntime),
        )
        .expect("client endpoint")
    }
}

/// Connects (full handshake), bounded by 10 s.
pub async fn connect(
    ep: &quinn::Endpoint,
    cfg: &quinn::ClientConfig,
    server: SocketAddr,
) -> quinn::Connection {
    connect_within(ep, cfg, server, Duration::from_secs(10)).await
}

/// Connects (full handshake), bounded by `limit`.
pub async fn connect_within(
    ep: &quinn::Endpoint,
    cfg: &quinn::ClientConfig,
    server: SocketAddr,
    limit: Duration,
) -> quinn::Connection {
    let connecting = ep
        .connect_with(cfg.clone(), server, "localhost")
        .expect("connect_with");
    match tokio::time::timeout(limit, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("connection to {server} failed: {e:?}"),
        Err(_) => panic!("handshake with {server} did not complete within {limit:?}"),
    }
}

/// Fresh endpoint (on `client`) + config + connection for one ALPN.
pub async fn connect_alpn(
    client: &ClientSide,
    trust: &Trust,
    alpn: &str,
    server: SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    let ep = client.endpoint(server);
    let cfg = client_config(trust, &[alpn], false);
    let conn = connect(&ep, &cfg, server).await;
    assert_eq!(
        negotiated_alpn(&conn).as_deref(),
        Some(alpn),
        "negotiated ALPN"
    );
    (ep, conn)
}

pub fn negotiated_alpn(conn: &quinn::Connection) -> Option<String> {
    let hd = conn.handshake_data()?;
    let hd = hd.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?;
    hd.protocol
        .map(|p| String::from_utf8_lossy(&p).into_owned())
}

/// How a request stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Data then FIN.
    Data(Vec<u8>),
    /// RESET_STREAM with this application error code.
    Reset(u64),
    /// Anything else (connection lost, ...), described.
    Other(String),
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self {
            Outcome::Data(d) => format!("Data({} bytes)", d.len()),
            Outcome::Reset(c) => format!("Reset({c:#x})"),
            Outcome::Other(s) => format!("Other({s})"),
        }
    }
}

fn read_outcome(r: Result<Vec<u8>, quinn::ReadToEndError>) -> Outcome {
    match r {
        Ok(d) => Outcome::Data(d),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            Outcome::Reset(code.into_inner())
        }
        Err(e) => Outcome::Other(format!("{e:?}")),
    }
}

/// Sends raw `request` bytes on a new bidi stream, finishes it, and reads the response.
pub async fn raw_request(conn: &quinn::Connection, request: &[u8]) -> Outcome {
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return Outcome::Other(format!("open_bi: {e:?}")),
    };
    // A write error (e.g. the server stopped our side) is not the result we look at; the
    // response side tells how the server handled the request.
    let _ = send.write_all(request).await;
    let _ = send.finish();
    read_outcome(recv.read_to_end(usize::MAX).await)
}

/// hq: `GET path\r\n`.
pub async fn hq_request(conn: &quinn::Connection, path: &str) -> Outcome {
    raw_request(conn, format!("GET {path}\r\n").as_bytes()).await
}

/// hq: `GET path`, which must succeed; returns the body.
pub async fn hq_get(conn: &quinn::Connection, path: &str) -> Vec<u8> {
    match hq_request(conn, path).await {
        Outcome::Data(d) => d,
        o => panic!("GET {path}: expected data, got {}", o.describe()),
    }
}

/// perf: requests `download` bytes after uploading `upload` bytes; returns the number of bytes
/// received before FIN.
pub async fn perf_request(
    conn: &quinn::Connection,
    download: u64,
    upload: usize,
) -> Result<u64, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("open_bi: {e}"))?;
    let writer = async move {
        send.write_all(&download.to_be_bytes())
            .await
            .map_err(|e| format!("write size: {e}"))?;
        let chunk = vec![0x5au8; 64 * 1024];
        let mut left = upload;
        while left > 0 {
            let n = left.min(chunk.len());
            send.write_all(&chunk[..n])
                .await
                .map_err(|e| format!("upload: {e}"))?;
            left -= n;
        }
        send.finish().map_err(|e| format!("finish: {e}"))?;
        Ok::<_, String>(())
    };
    let reader = async move {
        let mut total = 0u64;
        loop {
            match recv.read_chunk(usize::MAX, true).await {
                Ok(Some(c)) => total += c.bytes.len() as u64,
                Ok(None) => return Ok(total),
                Err(e) => return Err(format!("read after {total} bytes: {e:?}")),
            }
        }
    };
    let (w, r) = tokio::join!(writer, reader);
    w?;
    r
}

/// echo: sends `data` (writing and reading concurrently), returns what came back before FIN.
pub async fn echo_request(conn: &quinn::Connection, data: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("open_bi: {e}"))?;
    let writer = async move {
        for chunk in data.chunks(16 * 1024) {
            send.write_all(chunk)
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
        send.finish().map_err(|e| format!("finish: {e}"))?;
        Ok::<_, String>(())
    };
    let reader = async move {
        recv.read_to_end(usize::MAX)
            .await
            .map_err(|e| format!("read: {e:?}"))
    };
    let (w, r) = tokio::join!(writer, reader);
    w?;
    r
}

// ---------------------------------------------------------------------------------------------
// Figures for RELIABILITY.md
// ---------------------------------------------------------------------------------------------

/// Reports a figure a reliability test measured: printed, and with `QUIXD_RELIABILITY_OUT`
/// set (as `cargo xtask reliability` does), appended to that file as one JSON line.
pub fn record(test: &str, figure: &str, value: f64, unit: &str) {
    eprintln!("figure: {test}: {figure} = {value} {unit}");
    let Some(path) = std::env::var_os("QUIXD_RELIABILITY_OUT") else {
        return;
    };
    let line = format!(
        "{{\"test\":{},\"figure\":{},\"value\":{value},\"unit\":{}}}\n",
        toml_str(test),
        toml_str(figure),
        toml_str(unit)
    );
    use std::io::Write as _;
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!("cannot append to {}: {e}", path.to_string_lossy());
    }
}

/// The resident set size of process `pid`, bytes.
pub fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS in /proc/PID/status")
}
