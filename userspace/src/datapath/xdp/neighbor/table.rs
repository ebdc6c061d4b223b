//! The owner's side: routes, neighbours, the interface, and a per-destination cache. Pure data,
//! no syscalls: it changes only through [`Update`]s, so it can be tested without privileges.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{NextHop, Unresolved};

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Most destinations the per-destination cache holds. When full it is cleared (keeping its
/// allocation), so a lookup never allocates and an attacker choosing many source addresses can
/// only make lookups take the uncached path.
pub(crate) const CACHE_CAPACITY: usize = 4096;

/// What a route does with matching packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// Forward out of `oif`, to `gateway` or (on-link) to the destination itself.
    Unicast { oif: u32, gateway: Option<IpAddr> },
    /// blackhole, unreachable, prohibit or throw: the kernel would not send it out.
    Reject,
}

/// One route of the main table, as the kernel reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// The destination network (host bits are cleared on insertion).
    pub dst: IpAddr,
    pub prefix_len: u8,
    /// `RTA_PRIORITY` (the metric): lower wins between routes of the same prefix.
    pub priority: u32,
    pub kind: RouteKind,
}

impl Route {
    /// Routes that replace each other (`NLM_F_REPLACE`) share this key.
    fn same_key(&self, other: &Route) -> bool {
        self.dst == other.dst
            && self.prefix_len == other.prefix_len
            && self.priority == other.priority
    }

    fn oif(&self) -> Option<u32> {
        match self.kind {
            RouteKind::Unicast { oif, .. } => Some(oif),
            RouteKind::Reject => None,
        }
    }
}

/// The interface the table serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    pub name: String,
    pub mac: Mac,
    pub mtu: u32,
    /// `IFF_UP` and `IFF_RUNNING` (administratively up, with carrier).
    pub up: bool,
}

/// Everything the kernel knows that matters here, from a dump.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub link: LinkInfo,
    pub routes: Vec<Route>,
    /// Usable neighbour entries of the interface.
    pub neighbors: Vec<(IpAddr, Mac)>,
}

/// One change, sent by the watcher thread to the owner.
#[derive(Clone, Debug)]
pub(crate) enum Update {
    /// A neighbour entry of our interface changed; `None` when it was deleted or is not usable
    /// (INCOMPLETE, FAILED, NONE).
    Neighbor {
        ip: IpAddr,
        mac: Option<Mac>,
    },
    /// A main-table route was added; `replace` when it replaced routes with the same key.
    RouteAdded {
        route: Route,
        replace: bool,
    },
    RouteDeleted(Route),
    /// Our interface changed (MTU, MAC, name, state).
    Link(LinkInfo),
    /// Our interface was deleted (or moved to another namespace).
    LinkGone,
    /// A fresh dump replacing everything (after lost events or a link state change).
    Snapshot(Box<Snapshot>),
}

/// Converts an address to a number whose top bits are the first bits of the address: IPv4 in
/// the low 32 bits.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask(len: u8, width: u8) -> u128 {
    let len = len.min(width);
    if len == 0 {
        0
    } else {
        (u128::MAX >> (128 - u32::from(len))) << (width - len)
    }
}

fn from_bits(bits: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(bits))
    } else {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    }
}

#[derive(Clone, Debug)]
struct RouteEntry {
    net: u128,
    mask: u128,
    route: Route,
}

/// The main table's routes of one family, most specific first, then lowest priority first,
/// then in the order the kernel reported them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Routes {
    v4: Vec<RouteEntry>,
    v6: Vec<RouteEntry>,
}

impl Routes {
    fn family(&self, v6: bool) -> &Vec<RouteEntry> {
        if v6 {
            &self.v6
        } else {
            &self.v4
        }
    }

    fn family_mut(&mut self, v6: bool) -> &mut Vec<RouteEntry> {
        if v6 {
            &mut self.v6
        } else {
            &mut self.v4
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Adds a route. With `replace`, routes with the same destination, prefix and priority go
    /// first (the kernel's `NLM_F_REPLACE`). Returns whether anything changed.
    pub fn insert(&mut self, route: Route, replace: bool) -> bool {
        let route = normalize(route);
        let v6 = route.dst.is_ipv6();
        let table = self.family_mut(v6);
        let before = table.len();
        let mut changed = false;
        if replace {
            table.retain(|e| !e.route.same_key(&route));
            changed = table.len() != before;
        }
        if table.iter().any(|e| e.route == route) {
            return changed;
        }
        let m = mask(route.prefix_len, width(route.dst));
        let pos = table
            .iter()
            .position(|e| {
                e.route.prefix_len < route.prefix_len
                    || (e.route.prefix_len == route.prefix_len && e.route.priority > route.priority)
            })
            .unwrap_or(table.len());
        table.insert(
            pos,
            RouteEntry {
                net: bits(route.dst) & m,
                mask: m,
                route,
            },
        );
        true
    }

    /// Removes the route equal to `route`, or else the first one with the same destination,
    /// prefix and priority. Returns whether one was removed.
    pub fn remove(&mut self, route: &Route) -> bool {
        let route = normalize(*route);
        let table = self.family_mut(route.dst.is_ipv6());
        let pos = table
            .iter()
            .position(|e| e.route == route)
            .or_else(|| table.iter().position(|e| e.route.same_key(&route)));
        match pos {
            Some(i) => {
                table.remove(i);
                true
            }
            None => false,
        }
    }

    /// Longest prefix match; between equally specific routes the lowest priority wins, and
    /// between routes equal in both, one through `prefer_oif` (e.g. each interface's
    /// `fe80::/64`), else the first reported.
    pub fn lookup(&self, dst: IpAddr, prefer_oif: u32) -> Option<&Route> {
        let a = bits(dst);
        let mut best: Option<&Route> = None;
        for e in self.family(dst.is_ipv6()) {
            if let Some(b) = best {
                if e.route.prefix_len != b.prefix_len || e.route.priority != b.priority {
                    break;
                }
            }
            if a & e.mask != e.net {
                continue;
            }
            if e.route.oif() == Some(prefer_oif) {
                return Some(&e.route);
            }
            best.get_or_insert(&e.route);
        }
        best
    }
}

fn normalize(mut route: Route) -> Route {
    let v6 = route.dst.is_ipv6();
    route.prefix_len = route.prefix_len.min(width(route.dst));
    route.dst = from_bits(
        bits(route.dst) & mask(route.prefix_len, width(route.dst)),
        v6,
    );
    route
}

/// The state a [`super::NeighborTable`] owns and answers from.
pub(crate) struct State {
    ifindex: u32,
    link: LinkInfo,
    gone: bool,
    routes: Routes,
    /// Usable neighbour entries of our interface only.
    neighbors: HashMap<IpAddr, Mac>,
    cache: HashMap<IpAddr, Result<NextHop, Unresolved>>,
}

impl State {
    pub fn new(ifindex: u32, snapshot: Snapshot) -> Self {
        let mut state = State {
            ifindex,
            link: snapshot.link.clone(),
            gone: false,
            routes: Routes::default(),
            neighbors: HashMap::new(),
            cache: HashMap::with_capacity_and_hasher(CACHE_CAPACITY, RandomState::new()),
        };
        state.load(snapshot);
        state
    }

    fn load(&mut self, snapshot: Snapshot) {
        self.link = snapshot.link;
        self.gone = false;
        self.routes = Routes::default();
        for route in snapshot.routes {
            self.routes.insert(route, false);
        }
        self.neighbors = snapshot
            .neighbors
            .into_iter()
            .map(|(ip, mac)| (ip.to_canonical(), mac))
            .collect();
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn link(&self) -> &LinkInfo {
        &self.link
    }

    pub fn gone(&self) -> bool {
        self.gone
    }

    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    pub fn neighbor_count(&self) -> usize {
        self.neighbors.len()
    }

    /// Applies one update; the cache is cleared when the answer to any lookup may change.
    /// Returns whether it changed anything.
    pub fn apply(&mut self, update: Update) -> bool {
        let changed = match update {
            Update::Neighbor { ip, mac } => {
                let ip = ip.to_canonical();
                match mac {
                    Some(mac) => self.neighbors.insert(ip, mac) != Some(mac),
                    None => self.neighbors.remove(&ip).is_some(),
                }
            }
            Update::RouteAdded { route, replace } => self.routes.insert(route, replace),
            Update::RouteDeleted(route) => self.routes.remove(&route),
            Update::Link(link) => {
                let changed = link != self.link || self.gone;
                self.link = link;
                self.gone = false;
                changed
            }
            Update::LinkGone => !std::mem::replace(&mut self.gone, true),
            Update::Snapshot(snapshot) => {
                self.load(*snapshot);
                true
            }
        };
        if changed {
            self.cache.clear();
        }
        changed
    }

    /// The answer for `dst`, from the cache when it is there. Never allocates: the cache's
    /// capacity was reserved up front and it is cleared rather than grown.
    pub fn resolve(&mut self, dst: IpAddr) -> Result<NextHop, Unresolved> {
        let dst = dst.to_canonical();
        if let Some(answer) = self.cache.get(&dst) {
            return *answer;
        }
        let answer = self.resolve_uncached(dst);
        if self.cache.len() >= CACHE_CAPACITY {
            self.cache.clear();
        }
        self.cache.insert(dst, answer);
        answer
    }

    fn resolve_uncached(&self, dst: IpAddr) -> Result<NextHop, Unresolved> {
        if self.gone {
            return Err(Unresolved::InterfaceGone);
        }
        if !self.link.up {
            return Err(Unresolved::LinkDown);
        }
        let route = self
            .routes
            .lookup(dst, self.ifindex)
            .ok_or(Unresolved::NoRoute)?;
        let (oif, gateway) = match route.kind {
            RouteKind::Unicast { oif, gateway } => (oif, gateway),
            RouteKind::Reject => return Err(Unresolved::Rejected),
        };
        if oif != self.ifindex {
            return Err(Unresolved::OtherInterface { ifindex: oif });
        }
        let neighbor = gateway.map_or(dst, |g| g.to_canonical());
        match self.neighbors.get(&neighbor) {
            Some(&mac) => Ok(NextHop {
                mac,
                neighbor,
                via_gateway: gateway.is_some(),
            }),
            None => Err(Unresolved::Neighbor { neighbor }),
        }
    }

    #[cfg(test)]
    pub(crate) fn cache_len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u32 = 7;
    const OTHER: u32 = 9;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn route(net: &str, gateway: Option<&str>, oif: u32, priority: u32) -> Route {
        let (dst, len) = net.split_once('/').unwrap();
        Route {
            dst: ip(dst),
            prefix_len: len.parse().unwrap(),
            priority,
            kind: RouteKind::Unicast {
                oif,
                gateway: gateway.map(ip),
            },
        }
    }

    fn reject(net: &str) -> Route {
        Route {
            kind: RouteKind::Reject,
            ..route(net, None, 0, 0)
        }
    }

    fn gw_of(r: Option<&Route>) -> Option<IpAddr> {
        match r?.kind {
            RouteKind::Unicast { gateway, .. } => gateway,
            RouteKind::Reject => None,
        }
    }

    fn state(routes: Vec<Route>, neighbors: Vec<(&str, u8)>) -> State {
        State::new(
            US,
            Snapshot {
                link: LinkInfo {
                    name: "test0".into(),
                    mac: [2, 0, 0, 0, 0, 1],
                    mtu: 1500,
                    up: true,
                },
                routes,
                neighbors: neighbors
                    .into_iter()
                    .map(|(a, m)| (ip(a), [2, 0, 0, 0, 0, m]))
                    .collect(),
            },
        )
    }

    #[test]
    fn masks() {
        assert_eq!(mask(0, 32), 0);
        assert_eq!(mask(24, 32), 0xffff_ff00);
        assert_eq!(mask(32, 32), 0xffff_ffff);
        assert_eq!(mask(33, 32), 0xffff_ffff);
        assert_eq!(mask(64, 128), (u64::MAX as u128) << 64);
        assert_eq!(mask(128, 128), u128::MAX);
        assert_eq!(mask(1, 128), 1u128 << 127);
    }

    #[test]
    fn longest_prefix_wins_regardless_of_insertion_order() {
        let all = [
            route("0.0.0.0/0", Some("198.18.0.1"), US, 0),
            route("198.19.0.0/16", Some("198.18.0.2"), US, 0),
            route("198.19.99.0/24", Some("198.18.0.3"), US, 0),
            route("198.19.99.128/25", Some("198.18.0.4"), US, 0),
            route("198.19.99.200/32", Some("198.18.0.5"), US, 0),
        ];
        // Every rotation of the insertion order gives the same answers.
        for start in 0..all.len() {
            let mut routes = Routes::default();
            for i in 0..all.len() {
                assert!(routes.insert(all[(start + i) % all.len()], false));
            }
            let gw = |d: &str| gw_of(routes.lookup(ip(d), US));
            assert_eq!(gw("8.8.8.8"), Some(ip("198.18.0.1")));
            assert_eq!(gw("198.19.1.1"), Some(ip("198.18.0.2")));
            assert_eq!(gw("198.19.99.1"), Some(ip("198.18.0.3")));
            assert_eq!(gw("198.19.99.127"), Some(ip("198.18.0.3")));
            assert_eq!(gw("198.19.99.128"), Some(ip("198.18.0.4")));
            assert_eq!(gw("198.19.99.200"), Some(ip("198.18.0.5")));
            assert_eq!(gw("198.19.99.201"), Some(ip("198.18.0.4")));
        }
    }

    #[test]
    fn no_route_without_a_match_and_families_stay_apart() {
        let mut routes = Routes::default();
        routes.insert(route("198.18.5.0/24", None, US, 0), false);
        assert!(routes.lookup(ip("198.18.6.1"), US).is_none());
        // An IPv4 default route does not cover IPv6, and the other way round.
        routes.insert(route("0.0.0.0/0", Some("198.18.5.1"), US, 0), false);
        assert!(routes.lookup(ip("fd00::1"), US).is_none());
        routes.insert(route("::/0", Some("fd00::1"), US, 0), false);
        assert_eq!(
            gw_of(routes.lookup(ip("fd00:1::5"), US)),
            Some(ip("fd00::1"))
        );
        assert_eq!(
            gw_of(routes.lookup(ip("9.9.9.9"), US)),
            Some(ip("198.18.5.1"))
        );
    }

    #[test]
    fn ipv6_longest_prefix() {
        let mut routes = Routes::default();
        routes.insert(route("::/0", Some("fe80::1"), US, 1024), false);
        routes.insert(route("fd00::/8", Some("fe80::2"), US, 1024), false);
        routes.insert(route("fd00:99::/64", Some("fe80::3"), US, 1024), false);
        routes.insert(route("fd00:99::8/127", Some("fe80::4"), US, 1024), false);
        routes.insert(route("fd00:99::9/128", Some("fe80::5"), US, 1024), false);
        let gw = |d: &str| gw_of(routes.lookup(ip(d), US));
        assert_eq!(gw("2001:db8::1"), Some(ip("fe80::1")));
        assert_eq!(gw("fd12::1"), Some(ip("fe80::2")));
        assert_eq!(gw("fd00:99::1"), Some(ip("fe80::3")));
        assert_eq!(gw("fd00:99::8"), Some(ip("fe80::4")));
        assert_eq!(gw("fd00:99::9"), Some(ip("fe80::5")));
        assert_eq!(gw("fd00:99:0:1::9"), Some(ip("fe80::2")));
    }

    #[test]
    fn lower_priority_wins_between_equal_prefixes() {
        let mut routes = Routes::default();
        routes.insert(route("0.0.0.0/0", Some("198.18.0.1"), US, 200), false);
        routes.insert(route("0.0.0.0/0", Some("198.18.0.2"), US, 100), false);
        routes.insert(route("0.0.0.0/0", Some("198.18.0.3"), US, 300), false);
        assert_eq!(
            gw_of(routes.lookup(ip("1.2.3.4"), US)),
            Some(ip("198.18.0.2"))
        );
        // A longer prefix beats any priority.
        routes.insert(route("1.2.3.0/24", Some("198.18.0.9"), US, 9999), false);
        assert_eq!(
            gw_of(routes.lookup(ip("1.2.3.4"), US)),
            Some(ip("198.18.0.9"))
        );
    }

    #[test]
    fn ties_prefer_our_interface() {
        let mut routes = Routes::default();
        routes.insert(route("fe80::/64", None, OTHER, 256), false);
        routes.insert(route("fe80::/64", None, US, 256), false);
        assert_eq!(routes.lookup(ip("fe80::2"), US).unwrap().oif(), Some(US));
        assert_eq!(
            routes.lookup(ip("fe80::2"), OTHER).unwrap().oif(),
            Some(OTHER)
        );
        // Without a route through us among the best, the first reported wins.
        routes.insert(route("fd00:1::/64", None, OTHER, 256), false);
        routes.insert(route("fd00:1::/64", None, 11, 256), false);
        routes.insert(route("fd00:1::/64", None, US, 512), false);
        assert_eq!(
            routes.lookup(ip("fd00:1::2"), US).unwrap().oif(),
            Some(OTHER)
        );
    }

    #[test]
    fn host_bits_are_ignored_and_duplicates_not_added() {
        let mut routes = Routes::default();
        assert!(routes.insert(route("198.18.7.99/24", None, US, 0), false));
        assert!(!routes.insert(route("198.18.7.0/24", None, US, 0), false));
        assert_eq!(routes.len(), 1);
        assert!(routes.lookup(ip("198.18.7.1"), US).is_some());
        assert!(routes.remove(&route("198.18.7.5/24", None, US, 0)));
        assert_eq!(routes.len(), 0);
    }

    #[test]
    fn replace_and_remove() {
        let mut routes = Routes::default();
        routes.insert(route("198.19.0.0/16", Some("198.18.0.1"), US, 0), false);
        // Append (no replace) keeps both; the first stays in front.
        routes.insert(route("198.19.0.0/16", Some("198.18.0.2"), US, 0), false);
        assert_eq!(routes.len(), 2);
        assert_eq!(
            gw_of(routes.lookup(ip("198.19.1.1"), US)),
            Some(ip("198.18.0.1"))
        );
        // Replace drops every route with the key.
        routes.insert(route("198.19.0.0/16", Some("198.18.0.3"), US, 0), true);
        assert_eq!(routes.len(), 1);
        assert_eq!(
            gw_of(routes.lookup(ip("198.19.1.1"), US)),
            Some(ip("198.18.0.3"))
        );
        // A different priority is a different route.
        routes.insert(route("198.19.0.0/16", Some("198.18.0.4"), US, 5), true);
        assert_eq!(routes.len(), 2);
        // Removal prefers the exact route, else the first with the same key.
        assert!(routes.remove(&route("198.19.0.0/16", Some("198.18.0.9"), US, 5)));
        assert_eq!(routes.len(), 1);
        assert!(!routes.remove(&route("198.19.0.0/16", None, US, 5)));
        assert!(routes.remove(&route("198.19.0.0/16", Some("198.18.0.3"), US, 0)));
        assert!(routes.lookup(ip("198.19.1.1"), US).is_none());
    }

    #[test]
    fn resolve_on_link_via_gateway_and_failures() {
        let mut s = state(
            vec![
                route("198.18.1.0/24", None, US, 0),
                route("198.19.99.0/24", Some("198.18.1.2"), US, 0),
                route("198.19.98.0/24", Some("198.18.2.2"), OTHER, 0),
                route("fd00:1::/64", None, US, 256),
                route("fd00:99::/64", Some("fd00:1::2"), US, 1024),
                reject("198.19.97.0/24"),
            ],
            vec![("198.18.1.2", 2), ("198.18.1.3", 3), ("fd00:1::2", 4)],
        );
        let on_link = s.resolve(ip("198.18.1.3")).unwrap();
        assert_eq!(on_link.mac, [2, 0, 0, 0, 0, 3]);
        assert_eq!(on_link.neighbor, ip("198.18.1.3"));
        assert!(!on_link.via_gateway);
        let via = s.resolve(ip("198.19.99.7")).unwrap();
        assert_eq!(via.mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(via.neighbor, ip("198.18.1.2"));
        assert!(via.via_gateway);
        let via6 = s.resolve(ip("fd00:99::1234")).unwrap();
        assert_eq!((via6.mac, via6.via_gateway), ([2, 0, 0, 0, 0, 4], true));
        assert_eq!(
            s.resolve(ip("198.18.1.4")),
            Err(Unresolved::Neighbor {
                neighbor: ip("198.18.1.4")
            })
        );
        assert_eq!(s.resolve(ip("198.19.1.1")), Err(Unresolved::NoRoute));
        assert_eq!(
            s.resolve(ip("198.19.98.1")),
            Err(Unresolved::OtherInterface { ifindex: OTHER })
        );
        assert_eq!(s.resolve(ip("198.19.97.1")), Err(Unresolved::Rejected));
        assert_eq!(s.resolve(ip("fd00:2::1")), Err(Unresolved::NoRoute));
    }

    #[test]
    fn ipv4_mapped_destinations_are_ipv4() {
        let mut s = state(
            vec![route("198.18.1.0/24", None, US, 0)],
            vec![("198.18.1.3", 3)],
        );
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 18, 1, 3).to_ipv6_mapped());
        assert_eq!(s.resolve(mapped).unwrap().neighbor, ip("198.18.1.3"));
    }

    #[test]
    fn updates_invalidate_cached_answers() {
        let mut s = state(vec![route("198.18.1.0/24", None, US, 0)], vec![]);
        let d = ip("198.18.1.3");
        assert!(s.resolve(d).is_err());
        assert_eq!(s.cache_len(), 1);
        assert!(s.apply(Update::Neighbor {
            ip: d,
            mac: Some([2, 0, 0, 0, 0, 3])
        }));
        assert_eq!(s.cache_len(), 0);
        assert_eq!(s.resolve(d).unwrap().mac, [2, 0, 0, 0, 0, 3]);
        // The same entry again (e.g. REACHABLE -> STALE) changes nothing and keeps the cache.
        assert!(!s.apply(Update::Neighbor {
            ip: d,
            mac: Some([2, 0, 0, 0, 0, 3])
        }));
        assert_eq!(s.cache_len(), 1);
        // A new MAC is seen at once.
        s.apply(Update::Neighbor {
            ip: d,
            mac: Some([2, 0, 0, 0, 0, 0x33]),
        });
        assert_eq!(s.resolve(d).unwrap().mac, [2, 0, 0, 0, 0, 0x33]);
        s.apply(Update::Neighbor { ip: d, mac: None });
        assert!(s.resolve(d).is_err());
        // Route changes too.
        s.apply(Update::Neighbor {
            ip: d,
            mac: Some([2, 0, 0, 0, 0, 3]),
        });
        assert!(s.resolve(d).is_ok());
        s.apply(Update::RouteDeleted(route("198.18.1.0/24", None, US, 0)));
        assert_eq!(s.resolve(d), Err(Unresolved::NoRoute));
        s.apply(Update::RouteAdded {
            route: route("198.18.0.0/16", None, US, 0),
            replace: false,
        });
        assert!(s.resolve(d).is_ok());
        // Link state.
        let mut link = s.link().clone();
        link.up = false;
        s.apply(Update::Link(link.clone()));
        assert_eq!(s.resolve(d), Err(Unresolved::LinkDown));
        link.up = true;
        s.apply(Update::Link(link));
        assert!(s.resolve(d).is_ok());
        s.apply(Update::LinkGone);
        assert_eq!(s.resolve(d), Err(Unresolved::InterfaceGone));
    }

    #[test]
    fn cache_is_bounded_and_keeps_its_allocation() {
        let mut s = state(vec![route("0.0.0.0/0", Some("198.18.0.1"), US, 0)], vec![]);
        let capacity = s.cache.capacity();
        assert!(capacity >= CACHE_CAPACITY);
        for i in 0..(CACHE_CAPACITY as u32 * 3) {
            let _ = s.resolve(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
            assert!(s.cache_len() <= CACHE_CAPACITY);
        }
        assert_eq!(s.cache.capacity(), capacity);
        let _ = s.resolve(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
}
