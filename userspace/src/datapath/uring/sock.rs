//! The UDP sockets the io_uring backend serves: bound with socket2 like the socket backend, and
//! configured for what the backend reads and writes in control messages.
//!
//! - ECN: `IP_RECVTOS` (IPv4 and dual-stack sockets, which receive IPv4 as mapped addresses)
//!   and `IPV6_RECVTCLASS` report the received ECN bits.
//! - Our address: `IP_PKTINFO` / `IPV6_RECVPKTINFO` (a dual-stack socket reports IPv4
//!   destinations as mapped addresses there).
//! - `UDP_GRO`: the kernel may hand over several datagrams of one size at once.
//! - `SO_RXQ_OVFL`: every receive reports how many datagrams the socket dropped because its
//!   queue was full, so those drops are counted too.
//! - Path MTU discovery is only safe when datagrams are never fragmented: `IP_MTU_DISCOVER =
//!   IP_PMTUDISC_PROBE` (DF set, and the kernel's path MTU cache ignored: QUIC does its own
//!   discovery), `IPV6_MTU_DISCOVER = IPV6_PMTUDISC_PROBE` and `IPV6_DONTFRAG`. If the kernel
//!   refuses any of these, the backend reports `may_fragment` and the driver turns PMTUD off.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::datapath::socket::SocketError;

/// Kernel socket buffers: large enough to ride out a burst while the driver is busy, and to
/// hold datagrams while the provided buffers run out (they wait in the socket, not dropped).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// One bound socket.
pub struct Bound {
    pub socket: UdpSocket,
    pub local: SocketAddr,
    /// An IPv6 socket that also serves IPv4 (as IPv4-mapped addresses).
    pub dual_stack: bool,
    /// `UDP_GRO` is on.
    pub gro: bool,
    /// Some option that keeps datagrams from being fragmented was refused.
    pub may_fragment: bool,
}

fn setsockopt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int for the duration of the call and its exact size is
    // passed; `fd` is a socket the caller owns.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Binds `addr` (`[::]:port` is dual-stack) and sets the options above. `gro` asks for
/// `UDP_GRO` (only when the receive buffers can hold a whole 64 KiB batch); `reuse_port`
/// sets `SO_REUSEPORT` (one worker's socket of a group).
pub fn bind(addr: SocketAddr, gro: bool, reuse_port: bool) -> Result<Bound, SocketError> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|source| SocketError::Create { addr, source })?;
    let configure = |source| SocketError::Configure { addr, source };
    let v6 = addr.is_ipv6();
    let dual_stack = v6 && addr.ip().is_unspecified();
    if dual_stack {
        socket.set_only_v6(false).map_err(configure)?;
    }
    if reuse_port {
        socket.set_reuse_port(true).map_err(configure)?;
    }
    socket
        .bind(&addr.into())
        .map_err(|source| SocketError::Bind { addr, source })?;
    // Best effort: without privileges the kernel caps these at net.core.*mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let fd = socket.as_raw_fd();
    let on = |level, name| setsockopt(fd, level, name, 1).map_err(configure);
    if !v6 || dual_stack {
        on(libc::IPPROTO_IP, libc::IP_RECVTOS)?;
    }
    // Best effort: only the drop counter is lost without it.
    let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1);
    if v6 {
        on(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
        on(libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS)?;
    } else {
        on(libc::IPPROTO_IP, libc::IP_PKTINFO)?;
    }
    // Set on IPv6 sockets too: it governs their IPv4-mapped traffic.
    let mut may_fragment = setsockopt(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    )
    .is_err();
    if v6 {
        may_fragment |= setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        )
        .is_err();
        may_fragment |= setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1).is_err();
    }
    let gro = gro && setsockopt(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
    let socket: UdpSocket = socket.into();
    let local = socket.local_addr().map_err(configure)?;
    Ok(Bound {
        socket,
        local,
        dual_stack,
        gro,
        may_fragment,
    })
}

/// Whether the kernel takes `UDP_SEGMENT` (GSO), probed on a throwaway socket so the bound
/// ones keep no default segment size.
pub fn gso_supported() -> bool {
    Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .is_ok_and(|s| setsockopt(s.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, 1200).is_ok())
}

impl Bound {
    /// How to address `dst` from this socket: the address to put in the `msghdr`, and whether
    /// the datagram leaves through IPv4 (so IPv4 control messages apply). `None` if this
    /// socket cannot reach `dst`'s family.
    pub fn destination(&self, dst: SocketAddr) -> Option<(SockAddr, bool)> {
        let mapped_v4 = match dst.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        match (self.local.is_ipv6(), mapped_v4) {
            // IPv4 socket: IPv4 (or mapped) peers only, as plain IPv4.
            (false, Some(v4)) => Some((SocketAddr::new(v4.into(), dst.port()).into(), true)),
            (false, None) => None,
            // Dual-stack socket: IPv4 peers as mapped addresses.
            (true, Some(v4)) if self.dual_stack => {
                let v6 = match dst {
                    SocketAddr::V6(_) => dst,
                    SocketAddr::V4(_) => SocketAddr::new(v4.to_ipv6_mapped().into(), dst.port()),
                };
                Some((v6.into(), true))
            }
            (true, Some(_)) => None,
            (true, None) => Some((dst.into(), false)),
        }
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(local: &str, dual_stack: bool) -> Bound {
        let socket = UdpSocket::bind(if local.starts_with('[') {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        })
        .unwrap();
        Bound {
            socket,
            local: local.parse().unwrap(),
            dual_stack,
            gro: false,
            may_fragment: false,
        }
    }

    #[test]
    fn destinations_per_socket_family() {
        let v4: SocketAddr = "192.0.2.1:5".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:5".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:5".parse().unwrap();
        let s4 = bound("0.0.0.0:4433", false);
        assert_eq!(s4.destination(v4).unwrap().0.as_socket(), Some(v4));
        assert!(s4.destination(v4).unwrap().1);
        assert_eq!(s4.destination(mapped).unwrap().0.as_socket(), Some(v4));
        assert!(s4.destination(v6).is_none());

        let dual = bound("[::]:4433", true);
        assert_eq!(dual.destination(v4).unwrap().0.as_socket(), Some(mapped));
        assert_eq!(dual.destination(mapped).unwrap(), (mapped.into(), true));
        assert_eq!(dual.destination(v6).unwrap(), (v6.into(), false));

        let v6only = bound("[::1]:4433", false);
        assert!(v6only.destination(v4).is_none());
        assert!(v6only.destination(mapped).is_none());
        assert_eq!(v6only.destination(v6).unwrap(), (v6.into(), false));
    }
}
