//! The test network itself: the kernel path between the namespaces works before any XDP.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::netns::{privileged, TestNet};

#[test]
fn udp_crosses_between_namespaces_v4_and_v6() {
    if !privileged("udp_crosses_between_namespaces_v4_and_v6") {
        return;
    }
    let net = TestNet::new();
    for v6 in [false, true] {
        let server_addr = SocketAddr::new(net.server_ip(v6), 0);
        let ns = net.server_ns.clone();
        let server = std::thread::spawn(move || {
            TestNet::enter(&ns);
            UdpSocket::bind(server_addr).unwrap()
        })
        .join()
        .unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let to = server.local_addr().unwrap();
        net.in_client(move || {
            let bind: SocketAddr = if v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().unwrap();
            let s = UdpSocket::bind(bind).unwrap();
            s.send_to(b"hello", to).unwrap();
        });
        let mut buf = [0u8; 16];
        let (n, from) = server
            .recv_from(&mut buf)
            .expect("datagram from the client namespace");
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(
            from.ip(),
            if v6 {
                net.client_v6.into()
            } else {
                std::net::IpAddr::from(net.client_v4)
            }
        );
    }
}
