//! Test hosts in network namespaces, joined by a veth pair.
//!
//! `TestNet::new()` makes two namespaces, "server" and "client", with a veth pair between them
//! and addresses from the benchmarking range (198.18.0.0/15) and fd00::/8. Names are unique per
//! process and call, so tests can run in parallel. Everything is removed on drop, also when a
//! test panics. [`RoutedNet`] puts a router namespace between several namespaces instead (for
//! a load balancer or a lossy path in the middle). Include it with
//! `#[path = "../support/netns.rs"] mod netns;` (adjust the path).
#![allow(dead_code)]

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_BPF: u32 = 39;
const CAP_IPC_LOCK: u32 = 14;

pub fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Why this process cannot run the privileged tests (netns, XDP, AF_XDP), if it cannot.
pub fn privilege_problem() -> Option<String> {
    let caps = effective_capabilities();
    let has = |cap: u32| caps & (1 << cap) != 0;
    let missing: Vec<&str> = [
        ("CAP_NET_ADMIN", has(CAP_NET_ADMIN)),
        ("CAP_BPF", has(CAP_BPF) || has(CAP_SYS_ADMIN)),
        ("CAP_SYS_ADMIN (setns)", has(CAP_SYS_ADMIN)),
        ("CAP_IPC_LOCK (UMEM)", has(CAP_IPC_LOCK)),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(name, _)| name)
    .collect();
    if !missing.is_empty() {
        return Some(format!("needs {} (run as root)", missing.join(", ")));
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("needs `ip` (Debian package iproute2)".into());
    }
    None
}

/// Returns true when the test may go on. Without privileges it prints why and returns false,
/// unless `QUIXD_REQUIRE_PRIVILEGED=1`, which turns the missing privilege into a failure.
pub fn privileged(test: &str) -> bool {
    match privilege_problem() {
        None => true,
        Some(reason) => skip_or_fail(test, &reason),
    }
}

/// A privileged test that cannot run: prints why and returns false, or panics when
/// `QUIXD_REQUIRE_PRIVILEGED=1` (as in CI).
pub fn skip_or_fail(test: &str, reason: &str) -> bool {
    if std::env::var("QUIXD_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("{test}: QUIXD_REQUIRE_PRIVILEGED=1 but the test {reason}");
    }
    eprintln!("skipping {test}: it {reason}");
    false
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// Two namespaces joined by a veth pair.
pub struct TestNet {
    pub server_ns: String,
    pub client_ns: String,
    /// The veth end in the server namespace, and its peer in the client namespace.
    pub server_if: String,
    pub client_if: String,
    pub server_v4: Ipv4Addr,
    pub client_v4: Ipv4Addr,
    pub server_v6: Ipv6Addr,
    pub client_v6: Ipv6Addr,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestNet {
    /// Creates the namespaces and the link, up, addressed, IPv6 DAD off, with veth's defaults
    /// otherwise: TX checksum offload stays on, so the client's UDP checksums arrive in the
    /// partial form, as from a container's interface.
    pub fn new() -> Self {
        Self::with_queues(1)
    }

    /// Like [`TestNet::new`], but TX checksum offload off on the client's end, so its UDP
    /// checksums arrive complete, as from a wire.
    pub fn wire() -> Self {
        let net = Self::with_queues(1);
        net.exec(
            &net.client_ns,
            &["ethtool", "-K", &net.client_if, "tx", "off"],
        );
        net
    }

    /// Like [`TestNet::new`], with `queues` RX and TX queues on each veth end.
    pub fn with_queues(queues: u32) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{:x}", std::process::id() & 0xfffff, n);
        // Address octets from the process id and counter, inside 198.18.0.0/15.
        let third = ((std::process::id() as u16)
            .wrapping_mul(7)
            .wrapping_add(n as u16))
            % 250;
        let net = TestNet {
            server_ns: format!("qxs{id}"),
            client_ns: format!("qxc{id}"),
            server_if: format!("qxs{id}"),
            client_if: format!("qxc{id}"),
            server_v4: Ipv4Addr::new(198, 18, third as u8, 1),
            client_v4: Ipv4Addr::new(198, 18, third as u8, 2),
            server_v6: format!("fd00:{third:x}::1").parse().unwrap(),
            client_v6: format!("fd00:{third:x}::2").parse().unwrap(),
        };
        // From here on, Drop cleans up whatever was made.
        sh(&["ip", "netns", "add", &net.server_ns]);
        sh(&["ip", "netns", "add", &net.client_ns]);
        let q = queues.max(1).to_string();
        sh(&[
            "ip",
            "link",
            "add",
            &net.server_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &net.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &net.client_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &net.client_ns,
        ]);
        for (ns, ifname, v4, v6) in [
            (&net.server_ns, &net.server_if, net.server_v4, net.server_v6),
            (&net.client_ns, &net.client_if, net.client_v4, net.client_v6),
        ] {
            net.exec(
                ns,
                &[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{ifname}.accept_dad=0"),
                ],
            );
            net.exec(
                ns,
                &["ip", "addr", "add", &format!("{v4}/24"), "dev", ifname],
            );
            net.exec(
                ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    ifname,
                    "nodad",
                ],
            );
            net.exec(ns, &["ip", "link", "set", ifname, "up"]);
            net.exec(ns, &["ip", "link", "set", "lo", "up"]);
        }
        net.wait_link_up();
        net
    }

    /// Runs a command inside namespace `ns`, panicking when it fails.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    pub fn server(&self, args: &[&str]) -> Output {
        self.exec(&self.server_ns, args)
    }

    pub fn client(&self, args: &[&str]) -> Output {
        self.exec(&self.client_ns, args)
    }

    pub fn server_ip(&self, v6: bool) -> IpAddr {
        if v6 {
            self.server_v6.into()
        } else {
            self.server_v4.into()
        }
    }

    pub fn client_ip(&self, v6: bool) -> IpAddr {
        if v6 {
            self.client_v6.into()
        } else {
            self.client_v4.into()
        }
    }

    /// Moves the calling thread into namespace `ns`. Sockets it creates afterwards live there.
    /// Use it on a thread of its own (e.g. one that runs a client's runtime).
    pub fn enter(ns: &str) {
        let file = File::open(format!("/var/run/netns/{ns}"))
            .unwrap_or_else(|e| panic!("cannot open namespace {ns}: {e}"));
        // SAFETY: setns on a valid namespace fd changes only this thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
    }

    /// An AF_PACKET raw socket on the client's veth end (made in the client namespace), for
    /// frames the client's stack would never send; see [`send_frame`].
    pub fn client_packet_socket(&self) -> PacketSocket {
        let ifname = std::ffi::CString::new(self.client_if.as_str()).unwrap();
        self.in_client(move || {
            // SAFETY: socket(2) takes no pointers; the fd is owned right below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a new fd from the kernel, owned by nothing else.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
            // SAFETY: a NUL-terminated name that outlives the call.
            let index = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
            assert_ne!(
                index,
                0,
                "if_nametoindex: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: all-zero is a valid sockaddr_ll (plain integers and arrays).
            let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            to.sll_family = libc::AF_PACKET as u16;
            to.sll_ifindex = index as i32;
            to.sll_halen = 6;
            PacketSocket { fd, to }
        })
    }

    /// Runs `f` on a new thread inside the client namespace and returns its result.
    pub fn in_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = self.client_ns.clone();
        std::thread::spawn(move || {
            Self::enter(&ns);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    fn wait_link_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let out = self.server(&["ip", "-o", "link", "show", &self.server_if]);
            if !String::from_utf8_lossy(&out.stdout).contains("NO-CARRIER") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("veth {} did not come up", self.server_if);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, which deletes the peer and any XDP
        // program attached to either.
        sh_quiet(&["ip", "netns", "del", &self.server_ns]);
        sh_quiet(&["ip", "netns", "del", &self.client_ns]);
    }
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

/// An AF_PACKET raw socket bound to no protocol, and the interface its frames leave by
/// ([`TestNet::client_packet_socket`]). Closed on drop.
pub struct PacketSocket {
    fd: std::os::fd::OwnedFd,
    to: libc::sockaddr_ll,
}

impl PacketSocket {
    /// Sends one whole Ethernet frame (its checksums as given).
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: `frame` and `self.to` are valid for the lengths given and outlive the call.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&self.to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        match rc {
            n if n == frame.len() as isize => Ok(()),
            n if n >= 0 => Err(std::io::Error::other(format!(
                "sent {n} of {} bytes",
                frame.len()
            ))),
            _ => Err(std::io::Error::last_os_error()),
        }
    }
}

/// One namespace of a [`RoutedNet`], linked to the router by a veth pair of its own.
#[derive(Clone, Debug)]
pub struct Site {
    pub ns: String,
    /// Its end of the link, and the router's end.
    pub ifname: String,
    pub router_if: String,
    /// Its address, 198.18.N.2/24, and the router's on the same link, 198.18.N.1: its default
    /// gateway.
    pub v4: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

/// Namespaces joined through a router namespace (IPv4 forwarding on): each site has a veth
/// pair to the router and the subnet 198.18.N.0/24 (N given per site), with a default route
/// through the router. veth's defaults otherwise (TX checksum offload on). Names are unique
/// per process and call; everything is removed on drop, also when a test panics.
pub struct RoutedNet {
    pub router: String,
    pub sites: Vec<Site>,
}

impl RoutedNet {
    /// `prefix` (3 letters) names this kind of network; `sites` are (a letter naming the site,
    /// the third octet of its subnet). Names are `{prefix}{letter}{id}` (namespace and the
    /// site's end), `{prefix}r{id}` (router) and `{prefix}{letter}r{id}` (the router's end).
    pub fn new(prefix: &str, sites: &[(char, u8)]) -> Self {
        let id = format!(
            "{:x}{:x}",
            std::process::id() & 0xfffff,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = RoutedNet {
            router: format!("{prefix}r{id}"),
            sites: Vec::new(),
        };
        // From here on, Drop cleans up whatever was made.
        sh(&["ip", "netns", "add", &net.router]);
        net.exec(&net.router, &["ip", "link", "set", "lo", "up"]);
        net.exec(&net.router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for &(letter, third) in sites {
            let site = Site {
                ns: format!("{prefix}{letter}{id}"),
                ifname: format!("{prefix}{letter}{id}"),
                router_if: format!("{prefix}{letter}r{id}"),
                v4: Ipv4Addr::new(198, 18, third, 2),
                gateway: Ipv4Addr::new(198, 18, third, 1),
            };
            sh(&["ip", "netns", "add", &site.ns]);
            net.sites.push(site.clone());
            net.exec(&site.ns, &["ip", "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "link",
                "add",
                &site.ifname,
                "netns",
                &site.ns,
                "type",
                "veth",
                "peer",
                "name",
                &site.router_if,
                "netns",
                &net.router,
            ]);
            let mine = format!("{}/24", site.v4);
            net.exec(&site.ns, &["ip", "addr", "add", &mine, "dev", &site.ifname]);
            net.exec(&site.ns, &["ip", "link", "set", &site.ifname, "up"]);
            let gateway = format!("{}/24", site.gateway);
            net.exec(
                &net.router,
                &["ip", "addr", "add", &gateway, "dev", &site.router_if],
            );
            net.exec(&net.router, &["ip", "link", "set", &site.router_if, "up"]);
            let via = site.gateway.to_string();
            net.exec(&site.ns, &["ip", "route", "add", "default", "via", &via]);
        }
        net
    }

    /// Runs a command inside namespace `ns`, panicking when it fails.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs a command inside the router namespace, panicking when it fails.
    pub fn router(&self, args: &[&str]) -> Output {
        self.exec(&self.router, args)
    }
}

impl Drop for RoutedNet {
    fn drop(&mut self) {
        for site in &self.sites {
            sh_quiet(&["ip", "netns", "del", &site.ns]);
        }
        sh_quiet(&["ip", "netns", "del", &self.router]);
    }
}
