//! rtnetlink, one stack for the whole backend, through neli's `NlSocketHandle`: the XDP state
//! of links for attaching ([`xdp`]), and the dumps and multicast events that keep the
//! next-hop mirror current ([`neighbor`]).
//!
//! neli frames the messages and reads the kernel's errors (with their extended-ack text); the
//! few attributes we need are walked by hand ([`rtattrs`]), as neli's typed attribute enums do
//! not name every kernel attribute (IFLA_XDP's nested ones among them).
//!
//! neli's `NlRouter` is not used: it runs a polling thread of its own per socket and reports a
//! lost-event overflow (ENOBUFS) only to pending requests, never to the multicast receiver, so
//! a subscriber could not know it must re-dump. The plain socket handle surfaces ENOBUFS.

pub(super) mod neighbor;
pub(super) mod xdp;

use std::io;

use neli::consts::nl::{NlmF, NlmsgerrAttr};
use neli::consts::rtnl::Rtm;
use neli::consts::socket::NlFamily;
use neli::err::SocketError;
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::Buffer;
use neli::utils::Groups;
use neli::{Size, ToBytes};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// Attempts at a dump the kernel reports as interrupted (NLM_F_DUMP_INTR).
const DUMP_ATTEMPTS: usize = 5;

/// A failed request: the kernel's errno and extended-ack text, or an answer we could not read.
#[derive(Debug)]
pub(super) enum RequestError {
    Os {
        source: io::Error,
        /// The kernel's explanation (NLMSGERR_ATTR_MSG), when it sent one.
        message: Option<String>,
    },
    Malformed(String),
}

/// A payload that neli could not build.
pub(super) fn unbuildable(e: impl std::fmt::Display) -> RequestError {
    RequestError::Malformed(e.to_string())
}

impl RequestError {
    fn os(source: io::Error) -> Self {
        Self::Os {
            source,
            message: None,
        }
    }

    /// As an io::Error, errno intact, with the kernel's text appended when there is one.
    pub fn into_io(self) -> io::Error {
        match self {
            Self::Os {
                source,
                message: None,
            } => source,
            Self::Os {
                source,
                message: Some(message),
            } => match source.raw_os_error() {
                // Keep the errno (callers test it) and say what the kernel said.
                Some(code) => io::Error::new(
                    io::Error::from_raw_os_error(code).kind(),
                    format!("{} ({message})", io::Error::from_raw_os_error(code)),
                ),
                None => io::Error::new(source.kind(), format!("{source} ({message})")),
            },
            Self::Malformed(detail) => {
                io::Error::other(format!("malformed netlink answer: {detail}"))
            }
        }
    }

    /// The errno, if the kernel refused.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Os { source, .. } => source.raw_os_error(),
            Self::Malformed(_) => None,
        }
    }
}

/// neli's socket error as ours, errno intact.
pub(super) fn request_error(e: SocketError) -> RequestError {
    match e {
        SocketError::Io(io) => RequestError::os(match io.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(io.kind(), io.to_string()),
        }),
        other => RequestError::Malformed(other.to_string()),
    }
}

/// A NETLINK_ROUTE socket for requests (no multicast groups), sequence-numbering them.
pub(super) struct Rtnl {
    sock: NlSocketHandle,
    seq: u32,
}

impl Rtnl {
    pub fn open() -> Result<Self, RequestError> {
        let sock = NlSocketHandle::connect(NlFamily::Route, None, Groups::empty())
            .map_err(request_error)?;
        // Best effort: without it, errors come without the kernel's explanation.
        let _ = sock.enable_ext_ack(true);
        Ok(Self { sock, seq: 0 })
    }

    /// Sends one request (`flags` adds to NLM_F_REQUEST) and returns the type and payload of
    /// each answer until the request is complete: its NLMSG_DONE for a dump, its ack with
    /// NLM_F_ACK, else its first answer. A dump the kernel marks inconsistent (a concurrent
    /// change) is retried.
    pub fn request<P>(
        &mut self,
        ty: Rtm,
        flags: NlmF,
        payload: impl Fn() -> Result<P, RequestError>,
    ) -> Result<Vec<(u16, Buffer)>, RequestError>
    where
        P: Size + ToBytes + std::fmt::Debug,
    {
        let dump = flags.contains(NlmF::DUMP);
        let ack = flags.contains(NlmF::ACK);
        for _ in 0..DUMP_ATTEMPTS {
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            let msg = NlmsghdrBuilder::default()
                .nl_type(ty)
                .nl_flags(NlmF::REQUEST | flags)
                .nl_seq(seq)
                .nl_pid(0)
                .nl_payload(NlPayload::Payload(payload()?))
                .build()
                .map_err(|e| RequestError::Malformed(e.to_string()))?;
            self.sock.send(&msg).map_err(request_error)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            'recv: loop {
                let (iter, _) = self.sock.recv::<u16, Buffer>().map_err(request_error)?;
                for msg in iter {
                    let msg: Nlmsghdr<u16, Buffer> = msg.map_err(request_error)?;
                    if *msg.nl_seq() != seq {
                        continue; // an answer to an earlier, abandoned request
                    }
                    if msg.nl_flags().contains(NlmF::DUMP_INTR) {
                        interrupted = true;
                    }
                    match (*msg.nl_type(), msg.nl_payload()) {
                        (NLMSG_DONE, NlPayload::DumpExtAck(err)) if *err.error() != 0 => {
                            return Err(RequestError::os(io::Error::from_raw_os_error(
                                -err.error(),
                            )));
                        }
                        (NLMSG_DONE, _) => break 'recv,
                        (NLMSG_ERROR, NlPayload::Err(err)) => {
                            let message = err
                                .ext_ack()
                                .iter()
                                .find(|attr| *attr.nla_type().nla_type() == NlmsgerrAttr::Msg)
                                .map(|attr| c_string(attr.nla_payload().as_ref()));
                            return Err(RequestError::Os {
                                source: io::Error::from_raw_os_error(-err.error()),
                                message,
                            });
                        }
                        (NLMSG_ERROR, _) => break 'recv, // the ack
                        (ty, NlPayload::Payload(p)) => {
                            out.push((ty, p.clone()));
                            if !dump && !ack {
                                break 'recv;
                            }
                        }
                        _ => {}
                    }
                }
            }
            if !(dump && interrupted) {
                return Ok(out);
            }
            tracing::debug!("netlink dump interrupted by a concurrent change; retrying");
        }
        Err(RequestError::os(io::Error::other(format!(
            "the kernel reported the dump inconsistent (NLM_F_DUMP_INTR) {DUMP_ATTEMPTS} times"
        ))))
    }
}

pub(super) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Walks `struct rtattr` records (length, type, payload, padded to 4); the type without its
/// NLA_F_NESTED / NLA_F_NET_BYTEORDER bits.
pub(super) fn rtattrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[align4(len).min(data.len())..];
        Some((ty, payload))
    })
}

/// Appends one `struct rtattr` with `data`, padded to 4.
pub(super) fn push_rtattr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

pub(super) fn parse_u32(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// A NUL-terminated (or not) attribute string.
pub(super) fn c_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtattr_walk_stops_at_bad_lengths() {
        let mut buf = Vec::new();
        push_rtattr(&mut buf, 3, b"eth0\0");
        push_rtattr(&mut buf, 4 | (1 << 15), &1500u32.to_ne_bytes());
        let attrs: Vec<_> = rtattrs(&buf).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!((attrs[0].0, c_string(attrs[0].1).as_str()), (3, "eth0"));
        assert_eq!(
            (attrs[1].0, parse_u32(attrs[1].1)),
            (4, Some(1500)),
            "nested bit masked"
        );
        // A length past the end, then one below the header size: the walk stops.
        let mut bad = buf.clone();
        bad[0] = 200;
        assert_eq!(rtattrs(&bad).count(), 0);
        bad[0] = 2;
        assert_eq!(rtattrs(&bad).count(), 0);
    }
}
