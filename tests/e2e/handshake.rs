//! (g) Retry, session resumption and 0-RTT. A UDP relay (relay.rs) between client and daemon
//! observes the packets quinn's client API does not report: Retry packets, 0-RTT packets and
//! how much Handshake data the server sends (a resumed handshake carries no certificate).

use std::time::Duration;

use crate::harness::*;
use crate::relay::{PacketStats, Relay};

e2e_tests!(
    retry_enabled_connection_works_and_retry_is_sent,
    retry_disabled_sends_no_retry,
    zero_rtt_on_second_connection,
    resumption_without_zero_rtt,
    no_resumption_means_full_handshakes,
);

async fn retry_case(t: Backend, retry: bool) -> PacketStats {
    let fx = Fixture::new(t);
    let data = random_bytes(200_000, run_seed());
    fx.put("f.bin", &data);
    let cfg = fx
        .config()
        .transport("retry", if retry { "true" } else { "false" });
    let mut d = fx.start(&cfg).await;
    let addr = d.addr();
    let stats = bounded(Duration::from_secs(60), async {
        let relay = Relay::start(&fx.client, addr).await;
        let ep = fx.client.endpoint(addr);
        // Fresh client config: no address-validation token from an earlier connection.
        let ccfg = client_config(&fx.trust(), &[ALPN_HQ], false);
        let conn = connect(&ep, &ccfg, relay.addr).await;
        assert_same_bytes(&hq_get(&conn, "/f.bin").await, &data, "GET /f.bin");
        conn.close(0u32.into(), b"done");
        relay.stats()
    })
    .await;
    d.assert_alive();
    stats
}

async fn retry_enabled_connection_works_and_retry_is_sent(t: Backend) {
    let s = retry_case(t, true).await;
    assert_eq!(
        s.server_retry, 1,
        "Retry packets seen with retry = true: {s:?}"
    );
    assert!(
        s.client_initial >= 2,
        "client should resend its Initial after Retry: {s:?}"
    );
}

async fn retry_disabled_sends_no_retry(t: Backend) {
    let s = retry_case(t, false).await;
    assert_eq!(
        s.server_retry, 0,
        "Retry packets seen with retry = false: {s:?}"
    );
}

struct TwoConnections {
    first: PacketStats,
    second: PacketStats,
    /// None: `into_0rtt()` failed; Some(accepted): what `ZeroRttAccepted` resolved to.
    zero_rtt: Option<bool>,
    cert_len: usize,
}

impl TwoConnections {
    /// A full handshake carries the whole certificate in Handshake packets; a resumed one
    /// does not (and with a ~5 KB certificate, fits in a single padded datagram). Comparing
    /// with the certificate size is robust against a retransmission or two.
    fn resumed(&self, s: &PacketStats) -> bool {
        s.server_handshake_bytes < self.cert_len
    }

    fn describe(&self) -> String {
        format!(
            "certificate {} bytes; server Handshake bytes: first connection {}, second {}",
            self.cert_len, self.first.server_handshake_bytes, self.second.server_handshake_bytes
        )
    }
}

/// First connection (full handshake), then a second one from the same endpoint and client
/// config, which tries 0-RTT.
async fn two_connections(t: Backend, resumption: bool, zero_rtt: bool) -> TwoConnections {
    // A ~5 KB certificate: a full handshake then needs several datagrams of Handshake data,
    // while a resumed one fits in the first (padded) datagram.
    let fx = Fixture::with_cert(t, TestCert::localhost_padded(100));
    let cert_len = fx.cert.der.len();
    assert!(
        cert_len > 4000,
        "padded certificate is only {cert_len} bytes"
    );
    let data = random_bytes(100_000, run_seed());
    fx.put("f.bin", &data);
    let cfg = fx
        .config()
        .transport("resumption", if resumption { "true" } else { "false" })
        .transport("zero_rtt", if zero_rtt { "true" } else { "false" });
    let mut d = fx.start(&cfg).await;
    let addr = d.addr();
    let r = bounded(Duration::from_secs(60), async {
        let relay = Relay::start(&fx.client, addr).await;
        let ep = fx.client.endpoint(addr);
        let ccfg = client_config(&fx.trust(), &[ALPN_HQ], true);

        let conn1 = connect(&ep, &ccfg, relay.addr).await;
        assert_same_bytes(
            &hq_get(&conn1, "/f.bin").await,
            &data,
            "GET on connection 1",
        );
        // Session tickets arrive right after the handshake; leave them time to be processed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn1.close(0u32.into(), b"done");
        ep.wait_idle().await;
        let first = relay.take_stats();

        let connecting = ep
            .connect_with(ccfg.clone(), relay.addr, "localhost")
            .unwrap();
        let (zero_rtt_result, conn2) = match connecting.into_0rtt() {
            Ok((conn2, accepted)) => {
                // The request is written here, before anything awaits the handshake, so it
                // goes out in 0-RTT packets (a spawned task could run after the handshake).
                let (mut send, mut recv) = conn2.open_bi().await.expect("0-RTT stream");
                send.write_all(b"GET /f.bin\r\n")
                    .await
                    .expect("0-RTT write");
                send.finish().expect("0-RTT finish");
                let accepted = tokio::time::timeout(Duration::from_secs(10), accepted)
                    .await
                    .expect("ZeroRttAccepted did not resolve");
                if accepted {
                    let got = recv.read_to_end(64 << 20).await;
                    match got {
                        Ok(b) => assert_same_bytes(&b, &data, "GET sent in 0-RTT"),
                        Err(e) => panic!("GET sent in 0-RTT: {e}"),
                    }
                }
                (Some(accepted), conn2)
            }
            Err(connecting) => {
                let conn2 = tokio::time::timeout(Duration::from_secs(10), connecting)
                    .await
                    .expect("second handshake timed out")
                    .expect("second handshake failed");
                (None, conn2)
            }
        };
        assert_same_bytes(
            &hq_get(&conn2, "/f.bin").await,
            &data,
            "GET on connection 2",
        );
        conn2.close(0u32.into(), b"done");
        ep.wait_idle().await;
        let second = relay.take_stats();
        eprintln!("connection 1: {first:?}\nconnection 2: {second:?}\n0-RTT: {zero_rtt_result:?}");
        TwoConnections {
            first,
            second,
            zero_rtt: zero_rtt_result,
            cert_len,
        }
    })
    .await;
    d.assert_alive();
    r
}

async fn zero_rtt_on_second_connection(t: Backend) {
    let r = two_connections(t, true, true).await;
    assert!(
        !r.resumed(&r.first),
        "first handshake looks resumed: {}",
        r.describe()
    );
    assert_eq!(
        r.zero_rtt,
        Some(true),
        "second connection: into_0rtt() must succeed and 0-RTT be accepted (None = into_0rtt \
         failed, Some(false) = rejected)"
    );
    // Whether the request itself left in 0-RTT packets races with quinn's connection task
    // finishing the handshake first (seen under CI load), so the wire is only reported; the
    // server's acceptance of early data is asserted above.
    if r.second.client_0rtt == 0 {
        eprintln!(
            "note: 0-RTT accepted, but the request went out after the handshake: {:?}",
            r.second
        );
    }
    assert!(
        r.resumed(&r.second),
        "second handshake not resumed: {}",
        r.describe()
    );
}

async fn resumption_without_zero_rtt(t: Backend) {
    let r = two_connections(t, true, false).await;
    assert_eq!(
        r.zero_rtt, None,
        "zero_rtt = false, but the client could use 0-RTT"
    );
    assert_eq!(
        r.second.client_0rtt, 0,
        "0-RTT packets sent: {:?}",
        r.second
    );
    assert!(
        !r.resumed(&r.first),
        "first handshake looks resumed: {}",
        r.describe()
    );
    assert!(
        r.resumed(&r.second),
        "resumption = true but the second handshake was not resumed: {}",
        r.describe()
    );
}

async fn no_resumption_means_full_handshakes(t: Backend) {
    let r = two_connections(t, false, false).await;
    assert_eq!(
        r.zero_rtt, None,
        "resumption = false, but the client could use 0-RTT"
    );
    assert!(
        !r.resumed(&r.first),
        "first handshake looks resumed: {}",
        r.describe()
    );
    assert!(
        !r.resumed(&r.second),
        "resumption = false but the second handshake was resumed: {}",
        r.describe()
    );
}
