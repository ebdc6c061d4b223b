//! Two network namespaces joined by a veth pair, and the steering of each side's receive work
//! to its own CPU (threaded NAPI, the NAPI kthreads pinned).
//!
//! Addresses come from the benchmarking range 198.18.0.0/15 and fd00::/8 only. Everything is
//! removed on drop (deleting a namespace deletes its veth end, the peer, and any XDP program).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::sys;

pub const SERVER_CPU: usize = 0;
pub const CLIENT_CPU: usize = 1;

pub struct Net {
    pub server_ns: String,
    pub client_ns: String,
    pub server_if: String,
    pub client_if: String,
    pub server_v4: Ipv4Addr,
    pub client_v4: Ipv4Addr,
    pub server_v6: Ipv6Addr,
    pub client_v6: Ipv6Addr,
}

impl Net {
    /// Creates both namespaces and the link: addressed, up, IPv6 DAD off, GRO on at both ends
    /// (so veth receives through NAPI, which threaded NAPI can then steer), and TX checksum
    /// offload off on the client's end so its UDP checksums arrive valid, as from a wire.
    pub fn new() -> Result<Net> {
        let id = format!("{:04x}", std::process::id() & 0xffff);
        let third = (std::process::id() % 250) as u8;
        let net = Net {
            server_ns: format!("qbench-s{id}"),
            client_ns: format!("qbench-c{id}"),
            // Short names: the NAPI kthreads are called "napi/<dev>-<id>", 15 bytes at most.
            server_if: format!("qbs{id}"),
            client_if: format!("qbc{id}"),
            server_v4: Ipv4Addr::new(198, 19, third, 1),
            client_v4: Ipv4Addr::new(198, 19, third, 2),
            server_v6: format!("fd00:b:{third:x}::1").parse()?,
            client_v6: format!("fd00:b:{third:x}::2").parse()?,
        };
        sys::run(&["ip", "netns", "add", &net.server_ns])?;
        // From here on, Drop removes whatever was made.
        sys::run(&["ip", "netns", "add", &net.client_ns])?;
        sys::run(&[
            "ip",
            "link",
            "add",
            &net.server_if,
            "netns",
            &net.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &net.client_if,
            "netns",
            &net.client_ns,
        ])?;
        for (ns, ifname, v4, v6) in [
            (&net.server_ns, &net.server_if, net.server_v4, net.server_v6),
            (&net.client_ns, &net.client_if, net.client_v4, net.client_v6),
        ] {
            let dad = format!("net.ipv6.conf.{ifname}.accept_dad=0");
            net.exec(ns, &["sysctl", "-qw", &dad])?;
            net.exec(
                ns,
                &["ip", "addr", "add", &format!("{v4}/24"), "dev", ifname],
            )?;
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
            )?;
            net.exec(ns, &["ip", "link", "set", ifname, "up"])?;
            net.exec(ns, &["ip", "link", "set", "lo", "up"])?;
            net.exec(ns, &["ethtool", "-K", ifname, "gro", "on"])?;
        }
        net.exec(
            &net.client_ns,
            &["ethtool", "-K", &net.client_if, "tx", "off"],
        )?;
        net.wait_link_up()?;
        Ok(net)
    }

    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        sys::run(&full)
    }

    /// A command that runs `program args` in namespace `ns` (`ip netns exec` execs it, so the
    /// child's pid is the program's).
    pub fn command(ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }

    fn wait_link_up(&self) -> Result<()> {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let out = self.exec(
                &self.server_ns,
                &["ip", "-o", "link", "show", &self.server_if],
            )?;
            if !out.contains("NO-CARRIER") && out.contains("UP") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("veth {} did not come up", self.server_if)
    }

    /// Turns threaded NAPI on at both ends and pins each end's NAPI kthread: the server's
    /// to the server CPU, the client's to the client CPU. Call it after the server has
    /// started (attaching XDP can re-create the NAPI instances); dropping the guard turns
    /// threaded NAPI off again.
    pub fn steer(&self) -> Result<Steering<'_>> {
        let mut guard = Steering {
            net: self,
            threads: Vec::new(),
        };
        for (ns, ifname, cpu) in [
            (&self.server_ns, &self.server_if, SERVER_CPU),
            (&self.client_ns, &self.client_if, CLIENT_CPU),
        ] {
            let path = format!("/sys/class/net/{ifname}/threaded");
            // Off then on: fresh kthreads we can tell apart from other devices'.
            let _ = self.exec(ns, &["sh", "-c", &format!("echo 0 > {path}")]);
            let before = napi_threads();
            self.exec(ns, &["sh", "-c", &format!("echo 1 > {path}")])
                .with_context(|| format!("enabling threaded NAPI on {ifname}"))?;
            let prefix = format!("napi/{ifname}");
            let mut found = Vec::new();
            let end = Instant::now() + Duration::from_secs(2);
            while found.is_empty() && Instant::now() < end {
                found = napi_threads()
                    .into_iter()
                    .filter(|(pid, comm)| {
                        comm.starts_with(&prefix) && !before.iter().any(|(p, _)| p == pid)
                    })
                    .collect();
                if found.is_empty() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            if found.is_empty() {
                bail!("no NAPI kthread appeared for {ifname} after `echo 1 > {path}`");
            }
            for (pid, comm) in found {
                sys::pin(pid, cpu).with_context(|| format!("pinning {comm} (pid {pid})"))?;
                guard.threads.push((comm, pid, cpu));
            }
        }
        Ok(guard)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        sys::run_quiet(&["ip", "netns", "del", &self.server_ns]);
        sys::run_quiet(&["ip", "netns", "del", &self.client_ns]);
    }
}

/// Threaded NAPI on both ends of the link while alive.
pub struct Steering<'a> {
    net: &'a Net,
    /// (kthread name, pid, cpu)
    pub threads: Vec<(String, i32, usize)>,
}

impl Drop for Steering<'_> {
    fn drop(&mut self) {
        for (ns, ifname) in [
            (&self.net.server_ns, &self.net.server_if),
            (&self.net.client_ns, &self.net.client_if),
        ] {
            let cmd = format!("echo 0 > /sys/class/net/{ifname}/threaded");
            sys::run_quiet(&["ip", "netns", "exec", ns, "sh", "-c", &cmd]);
        }
    }
}

/// Every kernel thread whose name starts with "napi/": (pid, name).
fn napi_threads() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            if comm.starts_with("napi/") {
                out.push((pid, comm.trim().to_string()));
            }
        }
    }
    out
}
