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
use std::time::Duration;

use crate::harness::*;
use crate::netns::{privileged, skip_or_fail, RoutedNet};
use crate::process::driver_counter;

/// The ruleset's addresses (its defines, used unchanged).
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
const PORT: u16 = 4433;
/// New client endpoints: all of them hashed to one host has a chance of 2^-15.
const CLIENTS: usize = 16;
/// Port changes of one connection: all of them hashed to its host has a chance of 2^-12.
const REBINDS: usize = 12;

/// The four namespaces and their links (client, router, two hosts), with the ruleset loaded
/// in the router; dropping it deletes them (and so the links).
struct LbNet {
    /// Held for its drop, which deletes the namespaces.
    _net: RoutedNet,
    client: String,
    router: String,
    hosts: [String; 2],
}

impl LbNet {
    fn new() -> Self {
        // The client on 198.18.1.0/24, the hosts on .2 and .3: the ruleset's defines.
        let net = RoutedNet::new("qxl", &[('c', 1), ('a', 2), ('b', 3)]);
        let ruleset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/quic-lb.nft");
        net.router(&["nft", "-f", ruleset.to_str().unwrap()]);
        LbNet {
            client: net.sites[0].ns.clone(),
            router: net.router.clone(),
            hosts: [net.sites[1].ns.clone(), net.sites[2].ns.clone()],
            _net: net,
        }
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
        nft_counters(&String::from_utf8_lossy(&out.stdout))
    }
}

/// The packet counts of the `counter` statements in `nft list` output, in order.
pub(crate) fn nft_counters(listing: &str) -> Vec<u64> {
    listing
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("counter packets ")? + "counter packets ".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// Why this test cannot run here, if it cannot.
pub(crate) fn nft_problem() -> Option<&'static str> {
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
