//! Next-hop MAC addresses from the kernel routes and neighbour table, over netlink.
//!
//! The AF_XDP transmit path writes whole Ethernet frames, so for every destination it needs the
//! MAC of the next hop: the destination itself when it is on-link, else the gateway of the best
//! route. [`NeighborTable`] answers that for one interface from a private copy of the kernel's
//! main routing table and that interface's neighbour (ARP/NDP) entries.
//!
//! # Design
//!
//! - **Lookups** ([`NeighborTable::lookup`], [`NeighborTable::resolve`]) read only data the table
//!   owns: a per-destination cache, then a longest-prefix match over the main table's routes
//!   and a hash lookup of the neighbour. No syscall, no lock, no allocation (the cache's capacity
//!   is reserved up front and it is cleared, never grown).
//! - **Updates** come from a background thread holding a netlink socket subscribed to
//!   `RTNLGRP_LINK`, `RTNLGRP_NEIGH`, `RTNLGRP_IPV4_ROUTE` and `RTNLGRP_IPV6_ROUTE`. It parses each
//!   event into a small typed update and sends it over a bounded `std::sync::mpsc` channel. The
//!   owner calls [`NeighborTable::refresh`] once per loop turn: a non-blocking `try_recv` drain
//!   (no syscall when nothing is queued) that applies the updates and clears the cache when an
//!   answer may have changed.
//! - **Consistency.** The subscription is opened before the initial dump, so events racing the
//!   dump are queued and applied after it (every event carries the object's full state, so
//!   replaying them converges). When the kernel drops events (ENOBUFS), or an interface changes
//!   state (the kernel then flushes routes without notifications), the thread re-dumps and
//!   sends one snapshot that replaces everything.
//! - **Misses.** An unknown neighbour is a miss ([`NeighborTable::misses`]): the caller sends
//!   that datagram through a kernel socket instead, the kernel resolves the neighbour, and the
//!   resulting `RTM_NEWNEIGH` reaches the table through the subscription.
//! - **Shutdown.** Dropping the table disconnects the channel, signals an eventfd the thread
//!   polls alongside its socket, and joins the thread.
//!
//! Scope: the main table only (policy rules and other tables are not consulted), routes without
//! source prefix or TOS, and one next hop of a multipath route (the first live one through this
//! interface). Usable neighbour states are the kernel's `NUD_VALID`: REACHABLE, STALE, DELAY,
//! PROBE, PERMANENT and NOARP; INCOMPLETE, FAILED and NONE are not.

pub(super) mod table;

use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::netlink::neighbor::{
    self as netlink, Dumper, LinkMsg, Watcher, WatcherShared, ARPHRD_ETHER,
};
use table::State;

pub use table::Mac;

/// Updates the watcher may queue before it waits for the owner to [`NeighborTable::refresh`].
const CHANNEL_CAPACITY: usize = 1024;

/// Where to send a frame for one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// The Ethernet destination address.
    pub mac: Mac,
    /// The neighbour the MAC belongs to: the destination itself when on-link, else the gateway.
    pub neighbor: IpAddr,
    /// Whether the destination is reached through a gateway.
    pub via_gateway: bool,
}

/// Why a destination has no next hop (yet). Every one means: send this datagram through the
/// kernel instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Unresolved {
    /// No route of the main table covers the destination.
    #[error("no route to the destination in the main table")]
    NoRoute,
    /// The best route leaves through another interface.
    #[error("the best route leaves through interface index {ifindex}")]
    OtherInterface { ifindex: u32 },
    /// The best route is a blackhole, unreachable, prohibit or throw route.
    #[error("the best route rejects the destination")]
    Rejected,
    /// The route is usable but its neighbour has no usable entry yet (unknown, INCOMPLETE,
    /// FAILED): the kernel resolves it when it sends to it.
    #[error("neighbour {neighbor} is not resolved")]
    Neighbor { neighbor: IpAddr },
    /// The interface is down or has no carrier.
    #[error("the interface is down")]
    LinkDown,
    /// The interface was deleted or left the namespace.
    #[error("the interface is gone")]
    InterfaceGone,
}

/// Counters of a [`NeighborTable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighborStats {
    /// Calls to `lookup` and `resolve`.
    pub lookups: u64,
    /// Of those, the ones without a next hop.
    pub misses: u64,
    /// Updates applied by `refresh`.
    pub updates: u64,
    /// Full re-dumps by the watcher (after lost events or interface state changes).
    pub resyncs: u64,
    /// Netlink errors the watcher saw (it recovers by re-dumping).
    pub netlink_errors: u64,
    /// Routes (IPv4 and IPv6, main table, all interfaces) and usable neighbours held now.
    pub routes: usize,
    pub neighbors: usize,
    /// Whether the watcher thread is still running (false: the table no longer updates).
    pub watcher_running: bool,
}

/// Errors creating a [`NeighborTable`].
#[derive(Debug, thiserror::Error)]
pub enum NeighborError {
    #[error(
        "network interface `{name}` not found in this network namespace (present: {present}); \
         list interfaces with `ip link`"
    )]
    InterfaceNotFound { name: String, present: String },
    #[error(
        "no network interface with index {ifindex} in this network namespace (present: \
         {present}); list interfaces with `ip link`"
    )]
    InterfaceIndexNotFound { ifindex: u32, present: String },
    #[error(
        "network interface `{name}` is not an Ethernet interface (link type {link_type}, or no \
         MAC address): AF_XDP transmit needs Ethernet next hops"
    )]
    NotEthernet { name: String, link_type: u16 },
    #[error(
        "netlink {op} was refused: {source}. Reading routes and neighbours needs no capability, \
         so a seccomp filter, LSM policy or container setting is blocking NETLINK_ROUTE sockets"
    )]
    Permission {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink {op} failed: {source}")]
    Netlink {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink {op}: cannot parse the kernel's answer: {detail}")]
    Malformed { op: &'static str, detail: String },
    #[error("cannot start the neighbour watcher: {0}")]
    Watcher(#[source] io::Error),
}

/// Next-hop resolution for one interface, kept current by a background netlink thread.
///
/// Create it in the network namespace of the interface (the netlink sockets stay bound to the
/// namespace they were opened in, whichever thread uses the table later). Call
/// [`refresh`](Self::refresh) once per loop turn; lookups between refreshes see the table as of
/// the last one.
pub struct NeighborTable {
    state: State,
    rx: Receiver<table::Update>,
    lookups: u64,
    misses: u64,
    updates: u64,
    watcher_lost: bool,
    shared: Arc<WatcherShared>,
    stop: Arc<crate::datapath::wake::Wake>,
    thread: Option<JoinHandle<()>>,
}

enum Select<'a> {
    Index(u32),
    Name(&'a str),
}

impl NeighborTable {
    /// The table for the interface with index `ifindex`.
    pub fn new(ifindex: u32) -> Result<Self, NeighborError> {
        Self::open(Select::Index(ifindex))
    }

    /// The table for the interface named `name`.
    pub fn by_name(name: &str) -> Result<Self, NeighborError> {
        Self::open(Select::Name(name))
    }

    fn open(select: Select<'_>) -> Result<Self, NeighborError> {
        // Subscribe first: events during the dump queue up and are applied after it.
        let events = netlink::subscribe()?;
        let mut dumper = Dumper::open()?;
        let links = dumper.links()?;
        let present = || {
            let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
            names.join(", ")
        };
        let link: &LinkMsg = match select {
            Select::Index(ifindex) => {
                links.iter().find(|l| l.index == ifindex).ok_or_else(|| {
                    NeighborError::InterfaceIndexNotFound {
                        ifindex,
                        present: present(),
                    }
                })?
            }
            Select::Name(name) => links.iter().find(|l| l.name == name).ok_or_else(|| {
                NeighborError::InterfaceNotFound {
                    name: name.to_owned(),
                    present: present(),
                }
            })?,
        };
        if link.link_type != ARPHRD_ETHER || link.mac.is_none() {
            return Err(NeighborError::NotEthernet {
                name: link.name.clone(),
                link_type: link.link_type,
            });
        }
        let ifindex = link.index;
        let snapshot = dumper.snapshot(ifindex, &links)?.ok_or_else(|| {
            // Only if it vanished between the two lines above.
            NeighborError::InterfaceIndexNotFound {
                ifindex,
                present: present(),
            }
        })?;
        let name = snapshot.link.name.clone();
        let state = State::new(ifindex, snapshot);

        let stop = Arc::new(crate::datapath::wake::Wake::new().map_err(NeighborError::Watcher)?);
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let shared = Arc::new(WatcherShared::default());
        shared.running.store(true, Ordering::Release);
        let watcher = Watcher {
            events,
            dumper,
            ifindex,
            link_flags: links.iter().map(|l| (l.index, l.state_flags())).collect(),
            tx,
            stop: Arc::clone(&stop),
            shared: Arc::clone(&shared),
        };
        let thread = std::thread::Builder::new()
            .name(format!("neigh-{name}"))
            .spawn(move || watcher.run())
            .map_err(NeighborError::Watcher)?;
        tracing::debug!(
            interface = %name,
            ifindex,
            routes = state.route_count(),
            neighbors = state.neighbor_count(),
            "neighbour table loaded"
        );
        Ok(NeighborTable {
            state,
            rx,
            lookups: 0,
            misses: 0,
            updates: 0,
            watcher_lost: false,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The interface's index.
    pub fn ifindex(&self) -> u32 {
        self.state.ifindex()
    }

    /// The interface's name (as of the last refresh).
    pub fn name(&self) -> &str {
        &self.state.link().name
    }

    /// The interface's own MAC: the source address of the frames we send.
    pub fn mac(&self) -> Mac {
        self.state.link().mac
    }

    /// The interface's MTU (the largest IP packet, without the Ethernet header).
    pub fn mtu(&self) -> u32 {
        self.state.link().mtu
    }

    /// Whether the interface is up with carrier (`IFF_UP` and `IFF_RUNNING`) and still exists.
    pub fn is_up(&self) -> bool {
        self.state.link().up && !self.state.gone()
    }

    /// Applies the updates the watcher queued since the last call and returns how many. Cheap
    /// and non-blocking: call it once per loop turn.
    pub fn refresh(&mut self) -> usize {
        let mut applied = 0;
        loop {
            match self.rx.try_recv() {
                Ok(update) => {
                    self.state.apply(update);
                    applied += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if !self.watcher_lost {
                        self.watcher_lost = true;
                        tracing::error!(
                            interface = %self.name(),
                            "neighbour watcher thread ended; next hops no longer update"
                        );
                    }
                    break;
                }
            }
        }
        self.updates += applied as u64;
        applied
    }

    /// The next hop for `dst`, or why there is none. Counts a lookup, and a miss on `Err`.
    #[inline]
    pub fn resolve(&mut self, dst: IpAddr) -> Result<NextHop, Unresolved> {
        self.lookups += 1;
        let answer = self.state.resolve(dst);
        if answer.is_err() {
            self.misses += 1;
        }
        answer
    }

    /// The next hop for `dst`; `None` means: send it through the kernel. Counts like
    /// [`resolve`](Self::resolve).
    #[inline]
    pub fn lookup(&mut self, dst: IpAddr) -> Option<NextHop> {
        self.resolve(dst).ok()
    }

    /// Whether `dst` has a next hop now, without counting a lookup or miss.
    pub fn is_resolved(&mut self, dst: IpAddr) -> bool {
        self.state.resolve(dst).is_ok()
    }

    /// Lookups that found no next hop so far.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    pub fn stats(&self) -> NeighborStats {
        NeighborStats {
            lookups: self.lookups,
            misses: self.misses,
            updates: self.updates,
            resyncs: self.shared.resyncs.load(Ordering::Relaxed),
            netlink_errors: self.shared.errors.load(Ordering::Relaxed),
            routes: self.state.route_count(),
            neighbors: self.state.neighbor_count(),
            watcher_running: self.shared.running.load(Ordering::Acquire),
        }
    }

    /// The Linux thread id of the watcher thread once it runs (for pinning it off datapath
    /// cores, or checking it is gone).
    pub fn watcher_thread_id(&self) -> Option<i32> {
        match self.shared.tid.load(Ordering::Relaxed) {
            0 => None,
            tid => Some(tid),
        }
    }
}

// Built on one thread (in the interface's namespace), owned by a datapath thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<NeighborTable>();
};

impl std::fmt::Debug for NeighborTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeighborTable")
            .field("ifindex", &self.ifindex())
            .field("name", &self.name())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for NeighborTable {
    fn drop(&mut self) {
        // Disconnect first, so a watcher blocked on a full channel returns at once...
        let (_, disconnected) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.rx, disconnected));
        // ...and wake one waiting in poll.
        if let Err(e) = self.stop.signal() {
            tracing::warn!(error = %e, "cannot signal the neighbour watcher to stop");
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("neighbour watcher thread panicked");
            }
        }
    }
}
