//! A fake RIO kernel for the tests: request queues with limits, deferral and commits, a
//! bounded completion queue, notification, and a region that refuses to be touched where a
//! request is outstanding. Tests deliver datagrams into posted receives and "transmit" posted
//! sends onto a wire they can inspect.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::layout::{self, BufRange};
use super::queues::{self, Completion, CorruptQueue, Request, RioQueues, WsaError};
use crate::datapath::Ecn;

#[derive(Default)]
pub struct FakeSocket {
    /// Whether the socket is IPv6 (remote addresses are written IPv4-mapped for IPv4 peers).
    pub v6: bool,
    pub max_recv: usize,
    pub max_send: usize,
    /// Posted with RIO_MSG_DEFER, not committed yet: not usable by the "kernel".
    pub recv_deferred: Vec<(Request, u64)>,
    pub recv_active: VecDeque<(Request, u64)>,
    pub send_deferred: Vec<(Request, u64)>,
    pub send_active: VecDeque<(Request, u64)>,
    pub receive_calls: usize,
    pub send_calls: usize,
    pub receive_commits: usize,
    pub send_commits: usize,
    /// Calls posted without RIO_MSG_DEFER.
    pub undeferred: usize,
}

impl FakeSocket {
    fn recv_outstanding(&self) -> usize {
        self.recv_deferred.len() + self.recv_active.len()
    }
    fn send_outstanding(&self) -> usize {
        self.send_deferred.len() + self.send_active.len()
    }
}

/// A datagram that left through a send request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub sock: usize,
    /// The `SOCKADDR_INET` family as written (23 when IPv4-mapped through a v6 socket).
    pub family: u16,
    pub to: SocketAddr,
    pub data: Vec<u8>,
    pub src_ip: Option<IpAddr>,
    pub ecn: Option<Ecn>,
    pub segment: Option<u32>,
}

/// How a delivered datagram's control data looks.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecvInfo {
    pub dst_ip: Option<IpAddr>,
    pub ecn: Option<Ecn>,
    pub coalesced: Option<u32>,
    /// Complete with this error status instead of success.
    pub status: i32,
}

pub struct FakeRio {
    pub region: Vec<u8>,
    pub sockets: Vec<FakeSocket>,
    pub cq: VecDeque<Completion>,
    pub cq_capacity: usize,
    pub armed: bool,
    pub notify_calls: usize,
    pub dequeue_calls: usize,
    pub wire: Vec<Sent>,
    /// Scripted outcomes of the next `send` / `receive` calls (front first): a Winsock error
    /// code to fail with, or 0 to go on normally.
    pub fail_sends: VecDeque<WsaError>,
    pub fail_receives: VecDeque<WsaError>,
    pub closed: bool,
    /// `wait` transmits everything committed (time passes) before looking at the queue.
    pub wait_transmits: bool,
}

impl FakeRio {
    pub fn new(
        region_len: usize,
        sockets: &[SocketAddr],
        max_recv: usize,
        max_send: usize,
    ) -> Self {
        Self {
            region: vec![0xee; region_len],
            sockets: sockets
                .iter()
                .map(|a| FakeSocket {
                    v6: a.is_ipv6(),
                    max_recv,
                    max_send,
                    ..FakeSocket::default()
                })
                .collect(),
            cq: VecDeque::new(),
            cq_capacity: sockets.len() * (max_recv + max_send),
            armed: false,
            notify_calls: 0,
            dequeue_calls: 0,
            wire: Vec::new(),
            fail_sends: VecDeque::new(),
            fail_receives: VecDeque::new(),
            closed: false,
            wait_transmits: true,
        }
    }

    fn outstanding(&self) -> impl Iterator<Item = &Request> {
        self.sockets.iter().flat_map(|s| {
            s.recv_deferred
                .iter()
                .chain(s.recv_active.iter())
                .chain(s.send_deferred.iter())
                .chain(s.send_active.iter())
                .map(|(r, _)| r)
        })
    }

    /// Every request outstanding, counted.
    pub fn outstanding_count(&self) -> usize {
        self.outstanding().count()
    }

    fn ranges(req: &Request) -> impl Iterator<Item = BufRange> {
        [Some(req.data), Some(req.remote), req.control]
            .into_iter()
            .flatten()
    }

    fn check_request(&self, req: &Request) {
        for r in Self::ranges(req) {
            assert!(
                r.end() <= self.region.len() as u64,
                "{r:?} outside the region"
            );
            for other in self.outstanding() {
                for o in Self::ranges(other) {
                    assert!(
                        !r.overlaps(&o),
                        "{r:?} posted while {o:?} is outstanding: a slot handed out twice"
                    );
                }
            }
        }
        assert!(req.remote.len >= layout::SOCKADDR_INET_LEN);
    }

    fn push_completion(&mut self, c: Completion) {
        assert!(
            self.cq.len() < self.cq_capacity,
            "completion queue overflow: more requests outstanding than it holds"
        );
        self.cq.push_back(c);
    }

    /// Delivers a datagram into socket `sock`'s oldest started receive, as Windows would.
    /// Returns false when no receive is started (the datagram would wait in the socket).
    pub fn deliver(
        &mut self,
        sock: usize,
        from: SocketAddr,
        payload: &[u8],
        info: RecvInfo,
    ) -> bool {
        let Some((req, ctx)) = self.sockets[sock].recv_active.pop_front() else {
            return false;
        };
        let v6 = self.sockets[sock].v6;
        let data = req.data;
        let n = payload.len().min(data.len as usize);
        let at = data.offset as usize;
        self.region[at..at + n].copy_from_slice(&payload[..n]);
        let remote = req.remote;
        layout::encode_sockaddr(
            layout::wire_remote(from, v6),
            &mut self.region[remote.offset as usize..remote.end() as usize],
        );
        if let Some(c) = req.control {
            let mut pi4 = [0u8; 8];
            let mut pi6 = [0u8; 20];
            let ecn = info.ecn.map(|e| i32::from(e.bits()).to_le_bytes());
            let coal = info.coalesced.map(u32::to_le_bytes);
            let mut msgs: Vec<(i32, i32, &[u8])> = Vec::new();
            let v4_peer = from.is_ipv4();
            match info.dst_ip {
                Some(IpAddr::V4(ip)) => {
                    pi4[..4].copy_from_slice(&ip.octets());
                    msgs.push((layout::IPPROTO_IP, layout::IP_PKTINFO, &pi4));
                }
                Some(IpAddr::V6(ip)) => {
                    pi6[..16].copy_from_slice(&ip.octets());
                    msgs.push((layout::IPPROTO_IPV6, layout::IPV6_PKTINFO, &pi6));
                }
                None => {}
            }
            if let Some(e) = &ecn {
                msgs.push(if v4_peer {
                    (layout::IPPROTO_IP, layout::IP_ECN, e)
                } else {
                    (layout::IPPROTO_IPV6, layout::IPV6_ECN, e)
                });
            }
            if let Some(c) = &coal {
                msgs.push((layout::IPPROTO_UDP, layout::UDP_COALESCED_INFO, c));
            }
            let buf = &mut self.region[c.offset as usize..c.end() as usize];
            buf[..layout::RIO_CMSG_BASE].fill(0);
            layout::write_cmsgs(buf, &msgs);
        }
        let status = if info.status != 0 {
            info.status
        } else if payload.len() > data.len as usize {
            queues::WSAEMSGSIZE
        } else {
            0
        };
        self.push_completion(Completion {
            status,
            bytes: n as u32,
            context: ctx,
        });
        true
    }

    /// Puts up to `n` started sends on the wire, completing them with `status`.
    pub fn transmit_with(&mut self, n: usize, status: i32) -> usize {
        let mut done = 0;
        for sock in 0..self.sockets.len() {
            while done < n {
                let Some((req, ctx)) = self.sockets[sock].send_active.pop_front() else {
                    break;
                };
                let r = |b: BufRange| b.offset as usize..b.end() as usize;
                let addr = &self.region[r(req.remote)];
                let family = u16::from_le_bytes([addr[0], addr[1]]);
                let to = layout::decode_sockaddr(addr).expect("a valid remote address");
                let mut sent = Sent {
                    sock,
                    family,
                    to,
                    data: self.region[r(req.data)].to_vec(),
                    src_ip: None,
                    ecn: None,
                    segment: None,
                };
                if let Some(c) = req.control {
                    for (level, kind, d) in layout::cmsgs(&self.region[r(c)]) {
                        match (level, kind) {
                            (layout::IPPROTO_IP, layout::IP_PKTINFO) => {
                                sent.src_ip = Some(IpAddr::from([d[0], d[1], d[2], d[3]]))
                            }
                            (layout::IPPROTO_IPV6, layout::IPV6_PKTINFO) => {
                                let o: [u8; 16] = d[..16].try_into().unwrap();
                                sent.src_ip = Some(IpAddr::from(o))
                            }
                            (layout::IPPROTO_IP, layout::IP_ECN)
                            | (layout::IPPROTO_IPV6, layout::IPV6_ECN) => {
                                sent.ecn = Ecn::from_bits(d[0]);
                            }
                            (layout::IPPROTO_UDP, layout::UDP_SEND_MSG_SIZE) => {
                                sent.segment = Some(u32::from_le_bytes(d[..4].try_into().unwrap()))
                            }
                            other => panic!("unexpected send control message {other:?}"),
                        }
                    }
                }
                if status == 0 {
                    self.wire.push(sent);
                }
                self.push_completion(Completion {
                    status,
                    bytes: if status == 0 { req.data.len } else { 0 },
                    context: ctx,
                });
                done += 1;
            }
        }
        done
    }

    pub fn transmit(&mut self, n: usize) -> usize {
        self.transmit_with(n, 0)
    }

    /// Queues a completion out of nowhere (a duplicate, or a context that is not ours).
    pub fn inject(&mut self, c: Completion) {
        self.cq.push_back(c);
    }
}

impl RioQueues for FakeRio {
    fn receive(
        &mut self,
        sock: usize,
        req: &Request,
        defer: bool,
        context: u64,
    ) -> Result<(), WsaError> {
        self.sockets[sock].receive_calls += 1;
        if let Some(e) = self.fail_receives.pop_front().filter(|e| *e != 0) {
            return Err(e);
        }
        if self.closed {
            return Err(10038); // WSAENOTSOCK
        }
        if self.sockets[sock].recv_outstanding() >= self.sockets[sock].max_recv {
            return Err(queues::WSAENOBUFS);
        }
        self.check_request(req);
        assert!(req.control.is_some(), "receives ask for control data");
        let s = &mut self.sockets[sock];
        s.recv_deferred.push((*req, context));
        if !defer {
            s.undeferred += 1;
            let d: Vec<_> = s.recv_deferred.drain(..).collect();
            s.recv_active.extend(d);
        }
        Ok(())
    }

    fn send(
        &mut self,
        sock: usize,
        req: &Request,
        defer: bool,
        context: u64,
    ) -> Result<(), WsaError> {
        self.sockets[sock].send_calls += 1;
        if let Some(e) = self.fail_sends.pop_front().filter(|e| *e != 0) {
            return Err(e);
        }
        if self.closed {
            return Err(10038);
        }
        if self.sockets[sock].send_outstanding() >= self.sockets[sock].max_send {
            return Err(queues::WSAENOBUFS);
        }
        self.check_request(req);
        let s = &mut self.sockets[sock];
        s.send_deferred.push((*req, context));
        if !defer {
            s.undeferred += 1;
            let d: Vec<_> = s.send_deferred.drain(..).collect();
            s.send_active.extend(d);
        }
        Ok(())
    }

    fn commit_receives(&mut self, sock: usize) -> Result<(), WsaError> {
        let s = &mut self.sockets[sock];
        s.receive_commits += 1;
        let d: Vec<_> = s.recv_deferred.drain(..).collect();
        s.recv_active.extend(d);
        Ok(())
    }

    fn commit_sends(&mut self, sock: usize) -> Result<(), WsaError> {
        let s = &mut self.sockets[sock];
        s.send_commits += 1;
        let d: Vec<_> = s.send_deferred.drain(..).collect();
        s.send_active.extend(d);
        Ok(())
    }

    fn dequeue(&mut self, out: &mut [Completion]) -> Result<usize, CorruptQueue> {
        self.dequeue_calls += 1;
        let n = out.len().min(self.cq.len());
        for slot in out.iter_mut().take(n) {
            *slot = self.cq.pop_front().unwrap();
        }
        Ok(n)
    }

    fn notify(&mut self) -> Result<(), WsaError> {
        self.notify_calls += 1;
        if self.armed {
            return Err(queues::WSAEALREADY);
        }
        self.armed = true;
        Ok(())
    }

    fn wait(&mut self, _timeout: Option<Duration>) -> io::Result<bool> {
        assert!(self.armed, "waiting without RIONotify would sleep forever");
        if self.wait_transmits {
            self.transmit(usize::MAX);
        }
        if self.cq.is_empty() {
            return Ok(false);
        }
        self.armed = false;
        Ok(true)
    }

    fn region(&mut self, range: BufRange) -> &mut [u8] {
        for o in self.outstanding() {
            for r in Self::ranges(o) {
                assert!(
                    !range.overlaps(&r),
                    "{range:?} touched while {r:?} is with the kernel"
                );
            }
        }
        &mut self.region[range.offset as usize..range.end() as usize]
    }

    fn close_sockets(&mut self) {
        self.closed = true;
        let mut cancelled = Vec::new();
        for s in &mut self.sockets {
            cancelled.extend(s.recv_deferred.drain(..).map(|(_, c)| c));
            cancelled.extend(s.recv_active.drain(..).map(|(_, c)| c));
            cancelled.extend(s.send_deferred.drain(..).map(|(_, c)| c));
            cancelled.extend(s.send_active.drain(..).map(|(_, c)| c));
        }
        for context in cancelled {
            self.push_completion(Completion {
                status: queues::WSA_OPERATION_ABORTED,
                bytes: 0,
                context,
            });
        }
    }
}
