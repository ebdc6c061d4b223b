//! A UDP relay between a test client and the daemon that parses QUIC long headers as packets go
//! by, so tests can observe what quinn's client API does not expose: Retry packets,
//! 0-RTT packets, and the amount of Handshake-level data the server sends (much smaller on a
//! resumed handshake, which carries no Certificate/CertificateVerify).
//!
//! The relay lives where the client does ([`ClientSide`]): on loopback, or in the client
//! namespace of the netns targets, in which case it reaches the daemon over the veth.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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
            loop {
                let Ok((n, from)) = front.recv_from(&mut buf).await else {
                    continue;
                };
                let pkt = &buf[..n];
                tally(pkt, false, &mut st.lock().unwrap());
                let up = match upstreams.get(&from) {
                    Some(u) => u.clone(),
                    None => {
                        let u = Arc::new(client.bind_tokio_udp(server));
                        u.connect(server).await.expect("connect upstream");
                        let (u2, front2, st2) = (u.clone(), front.clone(), st.clone());
                        back_tasks.push(AbortOnDrop(tokio::spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            loop {
                                let Ok(n) = u2.recv(&mut buf).await else {
                                    continue;
                                };
                                tally(&buf[..n], true, &mut st2.lock().unwrap());
                                let _ = front2.send_to(&buf[..n], from).await;
                            }
                        })));
                        upstreams.insert(from, u.clone());
                        u
                    }
                };
                let _ = up.send(pkt).await;
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
