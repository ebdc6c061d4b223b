//! `quixd status`: what a running daemon is doing, read from its metrics endpoint
//! (`[metrics] listen`): backend, workers, connections, and the counters that moved.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("GET http://{addr}/metrics failed: is quixd running with this [metrics] listen?")]
    Fetch {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("GET http://{addr}/metrics answered `{status}`")]
    Status { addr: SocketAddr, status: String },
}

/// Fetches the metrics text from `addr`.
pub fn fetch(addr: SocketAddr) -> Result<String, StatusError> {
    let fetch = |source| StatusError::Fetch { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(fetch)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(fetch)?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(fetch)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(fetch)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").to_owned();
    if !status.contains(" 200 ") {
        return Err(StatusError::Status { addr, status });
    }
    Ok(body.to_owned())
}

/// One sample line: name, labels, value.
fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            Some((name, labels, value.parse().ok()?))
        })
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}

/// A summary for people: one line per worker, then every counter that is not zero (summed
/// over workers).
pub fn summarize(text: &str) -> String {
    let mut workers: Vec<(String, String, f64, f64, f64)> = Vec::new();
    let mut totals: Vec<(String, f64)> = Vec::new();
    for (name, labels, value) in samples(text) {
        let worker = label(labels, "worker").unwrap_or("?").to_owned();
        let backend = label(labels, "backend").unwrap_or("?").to_owned();
        let idx = match workers.iter().position(|w| w.0 == worker) {
            Some(i) => i,
            None => {
                workers.push((worker, backend, 0.0, 0.0, 0.0));
                workers.len() - 1
            }
        };
        match name {
            "quixd_connections" => workers[idx].2 = value,
            "quixd_handshakes_completed_total" => workers[idx].3 = value,
            "quixd_rx_datagrams_total" => workers[idx].4 = value,
            _ => {}
        }
        let counter = name.ends_with("_total") && !name.contains("_bucket");
        if counter && value != 0.0 {
            let short = name
                .trim_start_matches("quixd_")
                .trim_end_matches("_total")
                .to_owned();
            match totals.iter_mut().find(|(n, _)| *n == short) {
                Some((_, v)) => *v += value,
                None => totals.push((short, value)),
            }
        }
    }
    let mut out = String::new();
    let backend = workers.first().map_or("?", |w| w.1.as_str());
    out += &format!("backend {backend}, {} worker(s)\n", workers.len());
    for (worker, _, connections, handshakes, rx) in &workers {
        out += &format!(
            "  worker {worker}: {connections} connection(s) open, {handshakes} handshake(s), {rx} datagram(s) received\n"
        );
    }
    out += "counters (all workers, non-zero):\n";
    for (name, value) in totals {
        out += &format!("  {name} {value}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_per_worker_and_totals() {
        let text = "\
# TYPE quixd_connections gauge
quixd_connections{worker=\"0\",backend=\"xdp\"} 2
quixd_connections{worker=\"1\",backend=\"xdp\"} 1
quixd_rx_datagrams_total{worker=\"0\",backend=\"xdp\"} 10
quixd_rx_datagrams_total{worker=\"1\",backend=\"xdp\"} 5
quixd_retries_sent_total{worker=\"0\",backend=\"xdp\"} 0
quixd_datapath_bad_udp_checksum_total{worker=\"1\",backend=\"xdp\"} 3
";
        let s = summarize(text);
        assert!(s.starts_with("backend xdp, 2 worker(s)\n"), "{s}");
        assert!(s.contains("worker 0: 2 connection(s) open"), "{s}");
        assert!(s.contains("  rx_datagrams 15\n"), "{s}");
        assert!(s.contains("  datapath_bad_udp_checksum 3\n"), "{s}");
        assert!(!s.contains("retries_sent"), "zeroes are left out: {s}");
    }
}
