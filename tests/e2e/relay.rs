//! A UDP relay between a test client and the daemon that parses QUIC long headers as packets go
//! by, so tests can observe what quinn's client API does not expose: Retry packets,
//! 0-RTT packets, and the amount of Handshake-level data the server sends (much smaller on a
//! resumed handshake, which carries no Certificate/CertificateVerify).
//!
//! The relay lives where the client does ([`ClientSide`]): on loopback, or in the client
//! namespace of the netns targets, in which case it reaches the daemon over the veth; or in a
//! router namespace between them. It can also reorder datagrams ([`Reorder`]).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::harness::ClientSide;

#[derive(Clone, Debug, Default)]
pub struct PacketStats {
    pub client_datagrams: usize,
    pub server_datagrams: usize,
    pub client_initial: usize,
    pub client_0rtt: usize,
    pub client_0rtt_bytes: usize,
    pub server_initial: usize,
    pub server_retry: usize,
    pub server_handshake: usize,
    /// Sum of the Length fields of the server's Handshake packets.
    pub server_handshake_bytes: usize,
    pub version_negotiation: usize,
    /// Datagrams delivered after later ones ([`Reorder`]), both directions.
    pub reordered: usize,
}

/// Deterministic reordering, the same in each direction: every `every`-th datagram is held
/// back and sent right after the `past` datagrams that follow it (or once nothing else came
/// for `idle`, so a held datagram at the end of a burst is late, not lost).
#[derive(Clone, Copy, Debug)]
pub struct Reorder {
    pub every: u64,
    pub past: u64,
    pub idle: Duration,
}

/// One direction's reordering state; `T` says where a datagram goes.
struct Shuffle<T> {
    rule: Option<Reorder>,
    seen: u64,
    /// The datagram held back, where it goes, and how many have overtaken it.
    held: Option<(Vec<u8>, T, u64)>,
}

impl<T: Clone> Shuffle<T> {
    fn new(rule: Option<Reorder>) -> Self {
        Shuffle {
            rule,
            seen: 0,
            held: None,
        }
    }

    /// The datagrams to send now, in order, for `pkt` (to `to`) just received.
    fn pass(&mut self, pkt: &[u8], to: &T, stats: &Mutex<PacketStats>) -> Vec<(Vec<u8>, T)> {
        let Some(rule) = self.rule else {
            return vec![(pkt.to_vec(), to.clone())];
        };
        self.seen += 1;
        if self.held.is_none() && self.seen % rule.every == 0 {
            self.held = Some((pkt.to_vec(), to.clone(), 0));
            return Vec::new();
        }
        let mut out = vec![(pkt.to_vec(), to.clone())];
        if let Some((_, _, overtaken)) = &mut self.held {
            *overtaken += 1;
            if *overtaken >= rule.past {
                out.extend(self.release(stats));
            }
        }
        out
    }

    /// The held datagram, if any, now.
    fn release(&mut self, stats: &Mutex<PacketStats>) -> Option<(Vec<u8>, T)> {
        let (pkt, to, overtaken) = self.held.take()?;
        if overtaken > 0 {
            stats.lock().unwrap().reordered += 1;
        }
        Some((pkt, to))
    }

    /// How long to wait for the next datagram before releasing the held one.
    fn idle(&self) -> Duration {
        match (&self.held, self.rule) {
            (Some(_), Some(rule)) => rule.idle,
            _ => Duration::from_secs(3600),
        }
    }
}

pub struct Relay {
    pub addr: SocketAddr,
    stats: Arc<Mutex<PacketStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    if b.len() < len {
        return None;
    }
    let mut v = (first & 0x3f) as u64;
    for x in &b[1..len] {
        v = (v << 8) | *x as u64;
    }
    Some((v, len))
}

/// Tallies the (possibly coalesced) long-header packets of one datagram. QUIC v1 only.
pub fn tally(mut d: &[u8], from_server: bool, s: &mut PacketStats) {
    if from_server {
        s.server_datagrams += 1;
    } else {
        s.client_datagrams += 1;
    }
    while d.len() > 6 && d[0] & 0x80 != 0 {
        let version = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
        if version == 0 {
            s.version_negotiation += 1;
            return;
        }
        if version != 1 {
            return;
        }
        let ty = (d[0] >> 4) & 0x3;
        let mut pos = 5;
        let dcid_len = d[pos] as usize;
        pos += 1 + dcid_len;
        let Some(&scid_len) = d.get(pos) else { return };
        pos += 1 + scid_len as usize;
        if ty == 3 {
            if from_server {
                s.server_retry += 1;
            }
            return;
        }
        if ty == 0 {
            let Some((tlen, n)) = d.get(pos..).and_then(varint) else {
                return;
            };
            pos += n + tlen as usize;
        }
        let Some((len, n)) = d.get(pos..).and_then(varint) else {
            return;
        };
        pos += n;
        let len = len as usize;
        match (ty, from_server) {
            (0, false) => s.client_initial += 1,
            (0, true) => s.server_initial += 1,
            (1, false) => {
                s.client_0rtt += 1;
                s.client_0rtt_bytes += len;
            }
            (2, true) => {
                s.server_handshake += 1;
                s.server_handshake_bytes += len;
            }
            _ => {}
        }
        if pos + len > d.len() {
            return;
        }
        d = &d[pos + len..];
    }
}

impl Relay {
    /// Starts a relay on `client`'s side in front of `server`; clients (on the same side)
    /// connect to `relay.addr`.
    pub async fn start(client: &ClientSide, server: SocketAddr) -> Relay {
        Self::start_with(client, server, None).await
    }

    /// [`Relay::start`], reordering datagrams as `reorder` says, if given.
    pub async fn start_with(
        client: &ClientSide,
        server: SocketAddr,
        reorder: Option<Reorder>,
    ) -> Relay {
        let client = client.clone();
        let front = Arc::new(client.bind_tokio_udp(server));
        let addr = front.local_addr().unwrap();
        let stats = Arc::new(Mutex::new(PacketStats::default()));
        let st = stats.clone();
        let task = tokio::spawn(async move {
            // One upstream socket per client address, so the daemon sees distinct peers.
            let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut back_tasks = Vec::new();
            let mut buf = vec![0u8; 65536];
            let mut shuffle = Shuffle::new(reorder);
            loop {
                let received = tokio::time::timeout(shuffle.idle(), front.recv_from(&mut buf));
                let out = match received.await {
                    // Nothing came for a while: the held datagram goes now.
                    Err(_) => shuffle.release(&st).into_iter().collect(),
                    Ok(Err(_)) => continue,
                    Ok(Ok((n, from))) => {
                        let up = match upstreams.get(&from) {
                            Some(u) => u.clone(),
                            None => {
                                let u = Arc::new(client.bind_tokio_udp(server));
                                u.connect(server).await.expect("connect upstream");
                                let (u2, front2, st2) = (u.clone(), front.clone(), st.clone());
                                back_tasks.push(AbortOnDrop(tokio::spawn(async move {
                                    back(u2, front2, from, st2, reorder).await
                                })));
                                upstreams.insert(from, u.clone());
                                u
                            }
                        };
                        shuffle.pass(&buf[..n], &up, &st)
                    }
                };
                for (pkt, up) in out {
                    tally(&pkt, false, &mut st.lock().unwrap());
                    let _ = up.send(&pkt).await;
                }
            }
        });
        Relay { addr, stats, task }
    }

    pub fn stats(&self) -> PacketStats {
        self.stats.lock().unwrap().clone()
    }

    /// Returns the stats so far and resets them.
    pub fn take_stats(&self) -> PacketStats {
        std::mem::take(&mut *self.stats.lock().unwrap())
    }
}

/// The server-to-client half for one client (`to`): from its upstream socket `up` back out of
/// the front socket.
async fn back(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    to: SocketAddr,
    stats: Arc<Mutex<PacketStats>>,
    reorder: Option<Reorder>,
) {
    let mut buf = vec![0u8; 65536];
    let mut shuffle = Shuffle::new(reorder);
    loop {
        let out = match tokio::time::timeout(shuffle.idle(), up.recv(&mut buf)).await {
            Err(_) => shuffle.release(&stats).into_iter().collect(),
            Ok(Err(_)) => continue,
            Ok(Ok(n)) => shuffle.pass(&buf[..n], &(), &stats),
        };
        for (pkt, ()) in out {
            tally(&pkt, true, &mut stats.lock().unwrap());
            let _ = front.send_to(&pkt, to).await;
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
