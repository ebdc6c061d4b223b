//! The next-hop table (`datapath::xdp::neighbor`) against the kernel of a test namespace: the
//! table runs on a thread inside the server namespace; `ip` changes routes and neighbours there.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use quixd::datapath::xdp::neighbor::{NeighborError, NeighborTable, NextHop, Unresolved};

use crate::netns::{privileged, TestNet};

/// How long an update may take to reach the table through the subscription.
const WAIT: Duration = Duration::from_secs(20);

/// Runs `f` on a thread inside the server namespace.
fn in_server<T: Send>(net: &TestNet, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            TestNet::enter(&net.server_ns);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Refreshes until `done` holds, failing after [`WAIT`].
fn refresh_until(
    table: &mut NeighborTable,
    what: &str,
    mut done: impl FnMut(&mut NeighborTable) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        table.refresh();
        if done(table) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; {table:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn parse_mac(s: &str) -> [u8; 6] {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

fn mac_str(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// What `ip -o link show dev IF` says about an interface: index, MAC, MTU.
fn ip_link(net: &TestNet, ns: &str, ifname: &str) -> (u32, [u8; 6], u32) {
    let out = net.exec(ns, &["ip", "-o", "link", "show", "dev", ifname]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |key: &str| {
        let i = words.iter().position(|w| *w == key).unwrap_or_else(|| {
            panic!("no `{key}` in `ip link` output: {text}");
        });
        words[i + 1]
    };
    let index = words[0].trim_end_matches(':').parse().unwrap();
    (
        index,
        parse_mac(after("link/ether")),
        after("mtu").parse().unwrap(),
    )
}

/// The neighbour the kernel sends to for `dst` (`ip route get`): the gateway or `dst` itself.
fn kernel_next_hop(net: &TestNet, dst: IpAddr) -> IpAddr {
    let out = net.server(&["ip", "route", "get", &dst.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.iter().position(|w| *w == "via") {
        Some(i) => words[i + 1].parse().unwrap(),
        None => dst,
    }
}

/// An address in the server's IPv4 /24 or IPv6 /64 with host part `host`.
fn on_link(net: &TestNet, v6: bool, host: u8) -> IpAddr {
    if v6 {
        let mut o = net.server_v6.octets();
        o[15] = host;
        IpAddr::from(o)
    } else {
        let mut o = net.server_v4.octets();
        o[3] = host;
        IpAddr::from(o)
    }
}

fn neigh(net: &TestNet, op: &str, ip: IpAddr, mac: Option<[u8; 6]>) {
    let ip = ip.to_string();
    let mut args = vec!["ip", "neigh", op, ip.as_str()];
    let mac = mac.map(mac_str);
    if let Some(mac) = &mac {
        args.extend(["lladdr", mac.as_str(), "nud", "permanent"]);
    }
    args.extend(["dev", net.server_if.as_str()]);
    net.server(&args);
}

fn client_ip(net: &TestNet, v6: bool) -> IpAddr {
    if v6 {
        net.client_v6.into()
    } else {
        net.client_v4.into()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn neighbor_unknown_interface_is_a_typed_error() {
    // Needs no privilege: reading links over netlink is open to everyone.
    let err = NeighborTable::by_name("qx-no-such-if").unwrap_err();
    assert!(
        matches!(&err, NeighborError::InterfaceNotFound { name, .. } if name == "qx-no-such-if"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("`qx-no-such-if`") && msg.contains("`ip link`"),
        "{msg}"
    );
    let err = NeighborTable::new(u32::MAX).unwrap_err();
    assert!(
        matches!(
            err,
            NeighborError::InterfaceIndexNotFound {
                ifindex: u32::MAX,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn neighbor_interface_mac_mtu_and_state_match_ip_link() {
    if !privileged("neighbor_interface_mac_mtu_and_state_match_ip_link") {
        return;
    }
    let net = TestNet::new();
    let (index, mac, mtu) = ip_link(&net, &net.server_ns, &net.server_if);
    in_server(&net, || {
        let mut table = NeighborTable::by_name(&net.server_if).unwrap();
        assert_eq!(table.ifindex(), index);
        assert_eq!(table.name(), net.server_if);
        assert_eq!(
            table.mac(),
            mac,
            "{} vs ip link {}",
            mac_str(table.mac()),
            mac_str(mac)
        );
        assert_eq!(table.mtu(), mtu);
        assert!(table.is_up());
        let by_index = NeighborTable::new(index).unwrap();
        assert_eq!(
            (by_index.name(), by_index.mac()),
            (net.server_if.as_str(), mac)
        );
        drop(by_index);

        // Link changes arrive through the subscription.
        net.server(&["ip", "link", "set", "dev", &net.server_if, "mtu", "1400"]);
        refresh_until(&mut table, "MTU 1400", |t| t.mtu() == 1400);
        assert_eq!(ip_link(&net, &net.server_ns, &net.server_if).2, 1400);
        net.server(&[
            "ip",
            "link",
            "set",
            "dev",
            &net.server_if,
            "address",
            "02:00:5e:10:20:30",
        ]);
        refresh_until(&mut table, "new MAC", |t| {
            t.mac() == [2, 0, 0x5e, 0x10, 0x20, 0x30]
        });

        // In this namespace, loopback is not Ethernet and the host's interfaces do not exist.
        let err = NeighborTable::by_name("lo").unwrap_err();
        assert!(matches!(err, NeighborError::NotEthernet { .. }), "{err:?}");
        let err = NeighborTable::by_name(&net.client_if).unwrap_err();
        assert!(
            matches!(err, NeighborError::InterfaceNotFound { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&net.server_if),
            "lists what is there: {err}"
        );
    });
}

#[test]
fn neighbor_permanent_entries_resolve_then_go_away_v4_and_v6() {
    if !privileged("neighbor_permanent_entries_resolve_then_go_away_v4_and_v6") {
        return;
    }
    let net = TestNet::new();
    // Entries present before the table exists come from the initial dump.
    let early_v4 = on_link(&net, false, 10);
    let early_v6 = on_link(&net, true, 10);
    neigh(&net, "add", early_v4, Some([2, 0, 0, 0, 4, 10]));
    neigh(&net, "add", early_v6, Some([2, 0, 0, 0, 6, 10]));
    in_server(&net, || {
        let mut table = NeighborTable::by_name(&net.server_if).unwrap();
        for (dst, mac) in [
            (early_v4, [2, 0, 0, 0, 4, 10]),
            (early_v6, [2, 0, 0, 0, 6, 10]),
        ] {
            let hop = table
                .lookup(dst)
                .expect("from the initial dump, before any refresh");
            assert_eq!(
                hop,
                NextHop {
                    mac,
                    neighbor: dst,
                    via_gateway: false
                }
            );
        }
        assert_eq!(table.misses(), 0);

        for v6 in [false, true] {
            let dst = on_link(&net, v6, 11);
            let mac = [2, 0, 0, 0, if v6 { 6 } else { 4 }, 11];
            // Unknown: a miss, counted; asking `is_resolved` counts nothing.
            let misses = table.misses();
            assert_eq!(
                table.resolve(dst),
                Err(Unresolved::Neighbor { neighbor: dst })
            );
            assert_eq!(table.lookup(dst), None);
            assert_eq!(table.misses(), misses + 2);
            assert!(!table.is_resolved(dst));
            assert_eq!(table.misses(), misses + 2);

            neigh(&net, "add", dst, Some(mac));
            refresh_until(&mut table, &format!("{dst} added"), |t| t.is_resolved(dst));
            assert_eq!(table.lookup(dst).unwrap().mac, mac);

            // A changed MAC is seen too.
            let new_mac = [2, 0, 0, 0, 0x22, 11];
            neigh(&net, "replace", dst, Some(new_mac));
            refresh_until(&mut table, &format!("{dst} replaced"), |t| {
                t.lookup(dst).map(|h| h.mac) == Some(new_mac)
            });

            neigh(&net, "del", dst, None);
            refresh_until(&mut table, &format!("{dst} deleted"), |t| {
                !t.is_resolved(dst)
            });
            assert_eq!(table.lookup(dst), None);
            assert_eq!(
                table.resolve(dst),
                Err(Unresolved::Neighbor { neighbor: dst })
            );
        }
        // The early entries were untouched.
        assert!(table.is_resolved(early_v4) && table.is_resolved(early_v6));
        let stats = table.stats();
        assert!(stats.watcher_running && stats.updates > 0, "{stats:?}");
        assert_eq!(stats.netlink_errors, 0, "{stats:?}");
    });
}

#[test]
fn neighbor_learned_after_the_kernel_resolves_it_v4_and_v6() {
    if !privileged("neighbor_learned_after_the_kernel_resolves_it_v4_and_v6") {
        return;
    }
    let net = TestNet::new();
    let (_, client_mac, _) = ip_link(&net, &net.client_ns, &net.client_if);
    in_server(&net, || {
        let mut table = NeighborTable::by_name(&net.server_if).unwrap();
        for v6 in [false, true] {
            let client = client_ip(&net, v6);
            // Not known yet: the datapath would count a miss and hand the datagram to a kernel
            // socket, which resolves the neighbour while sending it.
            assert_eq!(
                table.lookup(client),
                None,
                "{client} known before any traffic"
            );
            let misses = table.misses();
            let bind = SocketAddr::new(net.server_ip(v6), 0);
            let socket = UdpSocket::bind(bind).unwrap();
            socket
                .send_to(b"resolve me", SocketAddr::new(client, 9))
                .unwrap();
            refresh_until(&mut table, &format!("{client} learned"), |t| {
                t.is_resolved(client)
            });
            let hop = table.lookup(client).unwrap();
            assert_eq!(
                hop,
                NextHop {
                    mac: client_mac,
                    neighbor: client,
                    via_gateway: false
                },
                "client MAC {}",
                mac_str(client_mac)
            );
            assert_eq!(table.misses(), misses, "is_resolved and hits count no miss");
        }
    });
}

#[test]
fn neighbor_routes_via_gateways_resolve_to_the_gateway_mac() {
    if !privileged("neighbor_routes_via_gateways_resolve_to_the_gateway_mac") {
        return;
    }
    let net = TestNet::new();
    let (_, client_mac, _) = ip_link(&net, &net.client_ns, &net.client_if);
    let dev = net.server_if.clone();
    in_server(&net, || {
        let mut table = NeighborTable::by_name(&net.server_if).unwrap();
        let far_v4 = ip("198.19.99.5");
        let far_v6 = ip("fd00:99::5");
        assert_eq!(table.resolve(far_v4), Err(Unresolved::NoRoute));
        assert_eq!(table.resolve(far_v6), Err(Unresolved::NoRoute));

        let client_v4 = net.client_v4.to_string();
        let client_v6 = net.client_v6.to_string();
        net.server(&[
            "ip",
            "route",
            "add",
            "198.19.99.0/24",
            "via",
            &client_v4,
            "dev",
            &dev,
            "metric",
            "100",
        ]);
        net.server(&[
            "ip",
            "-6",
            "route",
            "add",
            "fd00:99::/64",
            "via",
            &client_v6,
            "dev",
            &dev,
        ]);
        for (far, gw) in [
            (far_v4, client_ip(&net, false)),
            (far_v6, client_ip(&net, true)),
        ] {
            // The route arrives first; the gateway itself is not resolved yet.
            refresh_until(&mut table, &format!("route to {far}"), |t| {
                t.resolve(far) == Err(Unresolved::Neighbor { neighbor: gw })
            });
            neigh(&net, "add", gw, Some(client_mac));
            refresh_until(&mut table, &format!("{far} via {gw}"), |t| {
                t.is_resolved(far)
            });
            assert_eq!(
                table.lookup(far).unwrap(),
                NextHop {
                    mac: client_mac,
                    neighbor: gw,
                    via_gateway: true
                }
            );
            assert_eq!(kernel_next_hop(&net, far), gw);
        }

        // Longest prefix match: a wider route through another gateway covers the rest.
        let other_gw_v4 = on_link(&net, false, 20);
        let other_gw_v6 = on_link(&net, true, 20);
        let other_mac = [2, 0, 0, 0, 0, 20];
        neigh(&net, "add", other_gw_v4, Some(other_mac));
        neigh(&net, "add", other_gw_v6, Some(other_mac));
        let (gw4, gw6) = (other_gw_v4.to_string(), other_gw_v6.to_string());
        net.server(&[
            "ip",
            "route",
            "add",
            "198.19.0.0/16",
            "via",
            &gw4,
            "dev",
            &dev,
        ]);
        net.server(&[
            "ip",
            "-6",
            "route",
            "add",
            "fd00:98::/32",
            "via",
            &gw6,
            "dev",
            &dev,
        ]);
        net.server(&["ip", "route", "add", "198.19.99.128/25", "dev", &dev]);
        let cases = [
            (far_v4, client_ip(&net, false)),
            (ip("198.19.5.5"), other_gw_v4),
            (ip("198.19.99.200"), ip("198.19.99.200")),
            (far_v6, client_ip(&net, true)),
            (ip("fd00:98:1::5"), other_gw_v6),
        ];
        refresh_until(&mut table, "the wider routes", |t| {
            t.resolve(ip("198.19.5.5")).is_ok()
                && t.resolve(ip("fd00:98:1::5")).is_ok()
                && t.resolve(ip("198.19.99.200")).is_err()
        });
        for (dst, hop) in cases {
            assert_eq!(
                kernel_next_hop(&net, dst),
                hop,
                "the kernel's choice for {dst}"
            );
            let expected = if hop == dst {
                Err(Unresolved::Neighbor { neighbor: dst })
            } else {
                Ok(hop)
            };
            assert_eq!(table.resolve(dst).map(|h| h.neighbor), expected, "{dst}");
        }
        assert_eq!(table.lookup(ip("198.19.5.5")).unwrap().mac, other_mac);

        // A lower metric for the same prefix wins; deleting it falls back.
        net.server(&[
            "ip",
            "route",
            "add",
            "198.19.99.0/24",
            "via",
            &gw4,
            "dev",
            &dev,
            "metric",
            "50",
        ]);
        refresh_until(&mut table, "the lower-metric route", |t| {
            t.lookup(far_v4).map(|h| h.neighbor) == Some(other_gw_v4)
        });
        assert_eq!(kernel_next_hop(&net, far_v4), other_gw_v4);
        net.server(&[
            "ip",
            "route",
            "del",
            "198.19.99.0/24",
            "dev",
            &dev,
            "metric",
            "50",
        ]);
        refresh_until(&mut table, "the higher-metric route again", |t| {
            t.lookup(far_v4).map(|h| h.neighbor) == Some(client_ip(&net, false))
        });

        // Deleting routes: nothing left for these destinations.
        net.server(&["ip", "route", "del", "198.19.99.0/24", "dev", &dev]);
        net.server(&["ip", "route", "del", "198.19.0.0/16", "dev", &dev]);
        net.server(&["ip", "-6", "route", "del", "fd00:99::/64", "dev", &dev]);
        refresh_until(&mut table, "routes deleted", |t| {
            t.resolve(far_v4) == Err(Unresolved::NoRoute)
                && t.resolve(far_v6) == Err(Unresolved::NoRoute)
        });
        // A default route catches everything left.
        net.server(&[
            "ip", "route", "add", "default", "via", &client_v4, "dev", &dev,
        ]);
        refresh_until(&mut table, "default route", |t| t.is_resolved(far_v4));
        assert_eq!(
            table.lookup(ip("198.19.5.5")).unwrap().neighbor,
            client_ip(&net, false)
        );
    });
}

#[test]
fn neighbor_link_down_and_up_resynchronises() {
    if !privileged("neighbor_link_down_and_up_resynchronises") {
        return;
    }
    let net = TestNet::new();
    let dev = net.server_if.clone();
    let dst = on_link(&net, false, 30);
    neigh(&net, "add", dst, Some([2, 0, 0, 0, 0, 30]));
    in_server(&net, || {
        let mut table = NeighborTable::by_name(&dev).unwrap();
        assert!(table.is_resolved(dst));
        let resyncs = table.stats().resyncs;
        net.server(&["ip", "link", "set", "dev", &dev, "down"]);
        refresh_until(&mut table, "link down", |t| !t.is_up());
        assert_eq!(table.resolve(dst), Err(Unresolved::LinkDown));
        refresh_until(&mut table, "a re-dump after the state change", |t| {
            t.stats().resyncs > resyncs
        });
        net.server(&["ip", "link", "set", "dev", &dev, "up"]);
        // Taking the link down flushed its neighbours; its IPv4 prefix route comes back.
        refresh_until(&mut table, "link up with its on-link route", |t| {
            t.is_up() && t.resolve(dst) == Err(Unresolved::Neighbor { neighbor: dst })
        });
        neigh(&net, "add", dst, Some([2, 0, 0, 0, 0, 31]));
        refresh_until(&mut table, "neighbour after link up", |t| {
            t.is_resolved(dst)
        });
        assert_eq!(table.stats().netlink_errors, 0);
    });
}

#[test]
fn neighbor_bursts_of_changes_converge() {
    if !privileged("neighbor_bursts_of_changes_converge") {
        return;
    }
    let net = TestNet::new();
    let dev = net.server_if.clone();
    net.server(&["ip", "route", "add", "198.19.0.0/16", "dev", &dev]);
    // Far more changes than the table's queue holds, without refreshing meanwhile: the watcher
    // waits, the kernel drops events once the socket buffer is full (ENOBUFS; with
    // net.core.rmem_max = 4 MiB that happens well before 20k), and re-dumps must make up for
    // them. The stats printed at the end show the re-dumps.
    const N: usize = 20_000;
    let addrs: Vec<IpAddr> = (0..N)
        .map(|i| IpAddr::from([198, 19, (i / 250) as u8, (i % 250 + 1) as u8]))
        .collect();
    let mac = |i: usize| [2, 0, 0, 1, (i >> 8) as u8, i as u8];
    let batch: String = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "neigh add {a} lladdr {} nud permanent dev {dev}\n",
                mac_str(mac(i))
            )
        })
        .collect();
    let file = std::env::temp_dir().join(format!("quixd-neigh-{}.batch", net.server_ns));
    std::fs::write(&file, batch).unwrap();
    in_server(&net, || {
        let mut table = NeighborTable::by_name(&dev).unwrap();
        net.server(&["ip", "-batch", file.to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(200));
        refresh_until(&mut table, "all neighbours", |t| {
            addrs.iter().all(|&a| t.is_resolved(a))
        });
        for (i, &a) in addrs.iter().enumerate() {
            assert_eq!(table.lookup(a).unwrap().mac, mac(i), "{a}");
        }
        net.server(&["ip", "neigh", "flush", "dev", &dev, "nud", "all"]);
        refresh_until(&mut table, "all neighbours flushed", |t| {
            addrs.iter().all(|&a| !t.is_resolved(a))
        });
        eprintln!("burst of {N}: {:?}", table.stats());
    });
    let _ = std::fs::remove_file(&file);
}

#[test]
fn neighbor_watcher_thread_stops_on_drop() {
    if !privileged("neighbor_watcher_thread_stops_on_drop") {
        return;
    }
    let net = TestNet::new();
    in_server(&net, || {
        let table = NeighborTable::by_name(&net.server_if).unwrap();
        let deadline = Instant::now() + WAIT;
        let tid = loop {
            if let Some(tid) = table.watcher_thread_id() {
                break tid;
            }
            assert!(Instant::now() < deadline, "the watcher never started");
            std::thread::sleep(Duration::from_millis(5));
        };
        let task = format!("/proc/self/task/{tid}");
        let comm = std::fs::read_to_string(format!("{task}/comm")).unwrap();
        assert!(comm.starts_with("neigh-"), "thread {tid} is {comm:?}");
        assert!(table.stats().watcher_running);

        let started = Instant::now();
        drop(table);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "drop took {took:?}");
        // Joined; the kernel releases the task right after.
        let deadline = Instant::now() + Duration::from_secs(1);
        while std::path::Path::new(&task).exists() {
            assert!(
                Instant::now() < deadline,
                "thread {tid} still exists after drop"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}
