//! (i) Several hosts behind an nftables load balancer (`config/quic-lb.nft`, loaded as shipped):
//! a client namespace, a router namespace running the ruleset, two host namespaces each running
//! quixd with its own `server.server_id` and two workers. Handshakes are spread by address
//! hash; a client that keeps changing its port stays on the host (and the worker) that holds
//! its connection, because the balancer routes short headers by the connection ID's server id.
//! With Retry on and one `transport.token_key` on both hosts, a returning client's NEW_TOKEN is
//! accepted by whichever host the balancer picks, so only its first connection pays a Retry.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::harness::*;
use crate::netns::{privileged, sh, skip_or_fail};
use crate::process::driver_counter;

/// The ruleset's addresses (its defines, used unchanged).
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
const PORT: u16 = 4433;
/// New client endpoints: all of them hashed to one host has a chance of 2^-15.
const CLIENTS: usize = 16;
/// Port changes of one connection: all of them hashed to its host has a chance of 2^-12.
const REBINDS: usize = 12;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The four namespaces and their links; dropping it deletes them (and so the links).
struct LbNet {
    client: String,
    router: String,
    hosts: [String; 2],
}

impl LbNet {
    fn new() -> Self {
        let id = format!(
            "{:x}{:x}",
            std::process::id() & 0xfffff,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let net = LbNet {
            client: format!("qxlc{id}"),
            router: format!("qxlr{id}"),
            hosts: [format!("qxla{id}"), format!("qxlb{id}")],
        };
        for ns in [&net.client, &net.router, &net.hosts[0], &net.hosts[1]] {
            sh(&["ip", "netns", "add", ns]);
            net.exec(ns, &["ip", "link", "set", "lo", "up"]);
        }
        // (namespace, its end, router's end, subnet's third octet)
        let links = [
            (&net.client, format!("qxlc{id}"), format!("qxrc{id}"), 1),
            (&net.hosts[0], format!("qxla{id}"), format!("qxra{id}"), 2),
            (&net.hosts[1], format!("qxlb{id}"), format!("qxrb{id}"), 3),
        ];
        for (ns, end, router_end, third) in &links {
            sh(&[
                "ip",
                "link",
                "add",
                end,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                router_end,
                "netns",
                &net.router,
            ]);
            let (mine, gateway) = (format!("198.18.{third}.2/24"), format!("198.18.{third}.1"));
            net.exec(ns, &["ip", "addr", "add", &mine, "dev", end]);
            net.exec(ns, &["ip", "link", "set", end, "up"]);
            net.exec(
                &net.router,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{gateway}/24"),
                    "dev",
                    router_end,
                ],
            );
            net.exec(&net.router, &["ip", "link", "set", router_end, "up"]);
            net.exec(ns, &["ip", "route", "add", "default", "via", &gateway]);
        }
        net.exec(&net.router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let ruleset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/quic-lb.nft");
        net.exec(&net.router, &["nft", "-f", ruleset.to_str().unwrap()]);
        net
    }

    fn exec(&self, ns: &str, args: &[&str]) {
        let mut argv = vec!["ip", "netns", "exec", ns];
        argv.extend_from_slice(args);
        sh(&argv);
    }

    /// The packet counts of the ruleset's rules, in order.
    fn rule_counters(&self) -> Vec<u64> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.router,
                "nft",
                "list",
                "table",
                "ip",
                "quic_lb",
            ])
            .output()
            .expect("nft list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find("counter packets ")? + "counter packets ".len()..];
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect()
    }
}

impl Drop for LbNet {
    fn drop(&mut self) {
        for ns in [&self.client, &self.router, &self.hosts[0], &self.hosts[1]] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Why this test cannot run here, if it cannot.
fn nft_problem() -> Option<&'static str> {
    let found = Command::new("nft").arg("--version").output();
    (!found.is_ok_and(|o| o.status.success())).then_some("needs `nft` (apt-get install nftables)")
}

#[test]
fn quic_lb_routes_by_server_id_across_hosts() {
    const NAME: &str = "quic_lb::quic_lb_routes_by_server_id_across_hosts";
    if !privileged(NAME) {
        return;
    }
    if let Some(reason) = nft_problem() {
        skip_or_fail(NAME, reason);
        return;
    }
    run_e2e(Backend::Socket, NAME, 4, |_| lb_case());
}

/// Starts quixd on both hosts (two workers each, server ids 01 and 02), with `transport`
/// as their `[transport]` table.
async fn start_hosts(net: &LbNet, fx: &Fixture, transport: &str) -> Vec<Daemon> {
    let mut daemons = Vec::new();
    for (i, ns) in net.hosts.iter().enumerate() {
        let text = format!(
            "[server]\nlisten = [\"198.18.{}.2:{PORT}\"]\nbackend = \"socket\"\nworkers = 2\n\
             server_id = \"0{}\"\ndrain_timeout_ms = 1000\n\n\
             [tls]\ncert = {}\nkey = {}\n\n[transport]\n{transport}\n\n[apps.hq]\nroot = {}\n",
            i + 2,
            i + 1,
            toml_str(&fx.cert_path.display().to_string()),
            toml_str(&fx.key_path.display().to_string()),
            toml_str(&fx.root.display().to_string()),
        );
        let path = fx.write_config_text(&text);
        daemons.push(Daemon::start(Some(ns), &path, 1).await);
    }
    daemons
}

fn lb_client(net: &LbNet) -> ClientSide {
    ClientSide {
        ns: Some(net.client.clone()),
        v4: Ipv4Addr::new(198, 18, 1, 2),
        v6: "fd00::2".parse().unwrap(),
    }
}

async fn lb_case() {
    let net = LbNet::new();
    let fx = Fixture::new(Backend::Socket);
    let data = random_bytes(40_000, run_seed());
    fx.put("f.bin", &data);
    let mut daemons = start_hosts(&net, &fx, "").await;
    let client = lb_client(&net);
    let vip = SocketAddr::new(VIP.into(), PORT);
    let trust = fx.trust();
    bounded(Duration::from_secs(120), async {
        let ccfg = client_config(&trust, &[ALPN_HQ], false);
        for c in 0..CLIENTS {
            let ep = client.endpoint(vip);
            let conn = connect(&ep, &ccfg, vip).await;
            let what = format!("client {c}: GET via the balancer");
            assert_same_bytes(&hq_get(&conn, "/f.bin").await, &data, &what);
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
        }
        let ep = client.endpoint(vip);
        let conn = connect(&ep, &ccfg, vip).await;
        get_across_rebinds(&ep, &client, &conn, REBINDS, "/f.bin", &data).await;
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
    })
    .await;
    let rules = net.rule_counters();
    let mut accepted = Vec::new();
    for d in &mut daemons {
        d.assert_alive();
        let log = d.terminate().await;
        assert!(
            !log.contains("steering is off"),
            "no worker steering:\n{log}"
        );
        accepted.push(driver_counter(&log, "connections_accepted"));
    }
    assert!(
        accepted.iter().all(|&n| n > 0),
        "a host served no connection of {CLIENTS}: {accepted:?}"
    );
    assert_eq!(
        accepted.iter().sum::<u64>(),
        CLIENTS as u64 + 1,
        "the rebinding client's connection was accepted once and kept"
    );
    assert_eq!(rules.len(), 3, "the ruleset's rules: {rules:?}");
    assert!(
        rules[0] + rules[1] >= REBINDS as u64,
        "the short-header rules routed fewer flows than the rebinds: {rules:?}"
    );
}

#[test]
fn quic_lb_hosts_accept_each_others_tokens() {
    const NAME: &str = "quic_lb::quic_lb_hosts_accept_each_others_tokens";
    if !privileged(NAME) {
        return;
    }
    if let Some(reason) = nft_problem() {
        skip_or_fail(NAME, reason);
        return;
    }
    run_e2e(Backend::Socket, NAME, 4, |_| token_case());
}

async fn token_case() {
    let net = LbNet::new();
    let fx = Fixture::new(Backend::Socket);
    let data = random_bytes(10_000, run_seed());
    fx.put("f.bin", &data);
    let key = "5a".repeat(32);
    let mut daemons = start_hosts(&net, &fx, &format!("retry = true\ntoken_key = \"{key}\"")).await;
    let client = lb_client(&net);
    let vip = SocketAddr::new(VIP.into(), PORT);
    let trust = fx.trust();
    bounded(Duration::from_secs(120), async {
        // One client config, so one token store: each connection leaves a NEW_TOKEN that the
        // next one (from a new port, so possibly another host) presents.
        let ccfg = client_config(&trust, &[ALPN_HQ], false);
        for c in 0..=CLIENTS {
            let ep = client.endpoint(vip);
            let conn = connect(&ep, &ccfg, vip).await;
            let what = format!("connection {c}: GET via the balancer");
            assert_same_bytes(&hq_get(&conn, "/f.bin").await, &data, &what);
            // The server sends NEW_TOKEN once the handshake is confirmed; the GET's round trip
            // is past that, so the token is stored before this connection closes.
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
        }
    })
    .await;
    let mut accepted = Vec::new();
    let mut retries = Vec::new();
    for d in &mut daemons {
        d.assert_alive();
        let log = d.terminate().await;
        accepted.push(driver_counter(&log, "connections_accepted"));
        retries.push(driver_counter(&log, "retries_sent"));
    }
    assert!(
        accepted.iter().all(|&n| n > 0),
        "a host served no connection of {}: {accepted:?}",
        CLIENTS + 1
    );
    assert_eq!(
        retries.iter().sum::<u64>(),
        1,
        "only the first connection needs a Retry; later ones present a NEW_TOKEN that either \
         host accepts (retries per host {retries:?}, accepted {accepted:?})"
    );
}
