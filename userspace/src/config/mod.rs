//! The daemon's TOML configuration: schema, defaults and validation.
//!
//! `config/quixd.toml` documents every field. Unknown fields are rejected; every error names
//! the file, the line and the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::datapath::xdp::{AttachMode, CopyMode, Transmit};

mod error;

pub use error::{ConfigError, Location};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub transport: Transport,
    #[serde(default)]
    pub apps: Apps,
    #[serde(default)]
    pub xdp: Option<Xdp>,
    #[serde(default)]
    pub io_uring: crate::datapath::uring::UringConfig,
    /// Settings of the RIO backend (`[rio]`; Windows).
    #[serde(default)]
    pub rio: crate::datapath::rio::RioConfig,
    /// The Prometheus endpoint (`[metrics]`); off without the table.
    #[serde(default)]
    pub metrics: Option<Metrics>,
}

/// `[metrics]`: serve Prometheus metrics on `GET http://LISTEN/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub busy_poll: bool,
    #[serde(default = "defaults::drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Worker threads, each with its own QUIC endpoint and its own sockets.
    #[serde(default)]
    pub workers: Workers,
    /// CPUs to pin workers to: worker i runs on `cpus[i % len]`. Empty: not pinned.
    #[serde(default)]
    pub cpus: Vec<usize>,
    /// This host's id in its connection IDs, for a load balancer in front of several hosts.
    #[serde(default)]
    pub server_id: ServerId,
    /// QUIC-LB key: with it, connection IDs are encrypted (QUIC-LB's encrypted mode), and only
    /// who holds the key can tell which host and worker one names.
    #[serde(default)]
    pub cid_key: Option<CidKey>,
    /// Run as this user once every worker has started (quixd must start as root).
    #[serde(default)]
    pub user: Option<String>,
    /// ... and this group (default: the user's primary group).
    #[serde(default)]
    pub group: Option<String>,
}

/// How many workers serve: `"auto"` or a count (`server.workers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One per CPU the process may run on (socket, io_uring); one for xdp.
    Auto,
    Count(usize),
}

impl Default for Workers {
    fn default() -> Self {
        Self::Count(1)
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Workers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\" or a number of workers (1 to 256)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Workers, E> {
                match v {
                    "auto" => Ok(Workers::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Workers, E> {
                match usize::try_from(v) {
                    Ok(n @ 1..=256) => Ok(Workers::Count(n)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The best backend that starts here: XDP (when `[xdp]` is configured and the privileges
    /// are there), then io_uring, then kernel sockets. Each step is logged.
    Auto,
    /// AF_XDP sockets fed by our XDP program on `[xdp] interface` (Linux).
    Xdp,
    /// Kernel UDP sockets driven through io_uring (Linux 6.0+).
    IoUring,
    /// Registered I/O (RIO) sockets (Windows).
    Rio,
    /// Kernel UDP sockets through quinn-udp (every platform).
    #[default]
    Socket,
}

impl Backend {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Xdp => "xdp",
            Backend::IoUring => "io_uring",
            Backend::Rio => "rio",
            Backend::Socket => "socket",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings of the XDP/AF_XDP backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xdp {
    /// The interface to attach to and receive from.
    pub interface: String,
    /// RX queues to serve; empty means every queue the interface has.
    #[serde(default)]
    pub queues: Vec<u32>,
    #[serde(default)]
    pub attach: AttachMode,
    #[serde(default)]
    pub zero_copy: CopyMode,
    #[serde(default)]
    pub transmit: Transmit,
    /// Which received UDP checksums are accepted: `auto` trusts the partial form a veth
    /// peer's kernel leaves with TX checksum offload on (counted as `rx_checksum_offloaded`),
    /// and verifies fully on every other interface.
    #[serde(default)]
    pub rx_checksum: crate::wire::ChecksumPolicy,
    /// The 802.1Q VLAN id our traffic carries on `interface` (frames with another tag, or
    /// tagged frames when unset, are dropped and counted; sent frames carry it).
    pub vlan: Option<u16>,
    /// UMEM frames (2 KiB each) per queue.
    #[serde(default = "defaults::xdp_frames")]
    pub frames: u32,
    /// Entries in each AF_XDP ring (power of two; the fill ring gets twice this).
    #[serde(default = "defaults::xdp_ring_size")]
    pub ring_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default = "defaults::dev_cert_names")]
    pub dev_cert_names: Vec<String>,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            dev_cert_names: defaults::dev_cert_names(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transport {
    pub retry: bool,
    pub stateless_reset_key: Option<SecretKey>,
    /// Key of the address-validation tokens (Retry and NEW_TOKEN); random at each start when
    /// left out. Hosts behind one load balancer share it so any of them accepts a token
    /// another issued.
    pub token_key: Option<SecretKey>,
    pub resumption: bool,
    pub zero_rtt: bool,
    pub idle_timeout_ms: u64,
    pub max_connections: usize,
    pub congestion: Congestion,
    pub initial_mtu: u16,
    pub max_udp_payload_size: u16,
    pub max_concurrent_bidi_streams: u32,
    pub max_concurrent_uni_streams: u32,
    pub stream_receive_window: u32,
    pub receive_window: u32,
    pub send_window: u64,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            retry: false,
            stateless_reset_key: None,
            token_key: None,
            resumption: true,
            zero_rtt: true,
            idle_timeout_ms: 30_000,
            max_connections: 10_000,
            congestion: Congestion::Cubic,
            initial_mtu: 1200,
            max_udp_payload_size: 1452,
            max_concurrent_bidi_streams: 100,
            max_concurrent_uni_streams: 100,
            stream_receive_window: 1_250_000,
            receive_window: 15_000_000,
            send_window: 15_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Congestion {
    Cubic,
    NewReno,
    Bbr,
}

/// A 32-byte secret key (stateless resets, address-validation tokens), written as 64 hex
/// digits.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub [u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl<'de> Deserialize<'de> for SecretKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_hex_key(&s)
            .map(SecretKey)
            .map_err(serde::de::Error::custom)
    }
}

/// QUIC-LB's 16-byte AES-128 key for encrypted connection IDs (`server.cid_key`), written as
/// 32 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct CidKey(pub [u8; 16]);

impl std::fmt::Debug for CidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CidKey(..)")
    }
}

impl<'de> Deserialize<'de> for CidKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_hex_key(&s)
            .map(CidKey)
            .map_err(serde::de::Error::custom)
    }
}

fn parse_hex_key<const N: usize>(s: &str) -> Result<[u8; N], String> {
    if s.len() != 2 * N {
        return Err(format!("expected {} hex digits, found {}", 2 * N, s.len()));
    }
    let mut key = [0u8; N];
    key.copy_from_slice(&parse_hex(s)?);
    Ok(key)
}

/// Bytes from hex digits (an even number of them).
fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits = s.as_bytes();
    if digits.len() % 2 != 0 {
        return Err(format!(
            "an even number of hex digits is needed, found {}",
            digits.len()
        ));
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("`{}` is not a hex digit", c as char)),
    };
    digits
        .chunks(2)
        .map(|pair| Ok(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// This host's id in the connection IDs it issues (`server.server_id`, hex, at most
/// [`ServerId::MAX`] bytes): what a load balancer in front of several hosts routes by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerId(pub Vec<u8>);

impl ServerId {
    pub const MAX: usize = 8;
}

impl<'de> Deserialize<'de> for ServerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = parse_hex(&s).map_err(serde::de::Error::custom)?;
        if bytes.len() > Self::MAX {
            return Err(serde::de::Error::custom(format!(
                "at most {} bytes ({} hex digits), found {}",
                Self::MAX,
                2 * Self::MAX,
                bytes.len()
            )));
        }
        Ok(Self(bytes))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apps {
    /// Threads that open and read files for the hq and h3 apps, shared by all workers (so a
    /// slow disk never stalls a worker); 4 when not set.
    pub file_readers: Option<usize>,
    pub hq: Option<HqApp>,
    pub h3: Option<H3App>,
    pub perf: Option<AlpnOnly>,
    pub echo: Option<AlpnOnly>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HqApp {
    #[serde(default = "defaults::hq_alpn")]
    pub alpn: Vec<String>,
    pub root: PathBuf,
}

/// `[apps.h3]`: HTTP/3 static files, with the hq app's path rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct H3App {
    #[serde(default = "defaults::h3_alpn")]
    pub alpn: Vec<String>,
    pub root: PathBuf,
    /// Largest request header section accepted (RFC 9114 4.2.2 size: name + value + 32 per
    /// field), advertised as SETTINGS_MAX_FIELD_SECTION_SIZE; larger ones get a 431.
    #[serde(default = "defaults::h3_max_field_section_size")]
    pub max_field_section_size: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlpnOnly {
    pub alpn: Vec<String>,
}

mod defaults {
    use crate::datapath::xdp::XskSizes;

    pub fn drain_timeout_ms() -> u64 {
        5000
    }
    pub fn dev_cert_names() -> Vec<String> {
        vec!["localhost".into()]
    }
    pub fn xdp_frames() -> u32 {
        XskSizes::default().frames
    }
    pub fn xdp_ring_size() -> u32 {
        XskSizes::default().ring
    }
    pub fn hq_alpn() -> Vec<String> {
        vec!["hq-interop".into(), "hq-29".into()]
    }
    pub fn h3_alpn() -> Vec<String> {
        vec!["h3".into()]
    }
    pub fn h3_max_field_section_size() -> u64 {
        16 * 1024
    }
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths in it are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            file: path.to_owned(),
            cause,
        })?;
        Self::parse(path, &src)
    }

    /// Parses and validates `src`, naming `path` in errors.
    pub fn parse(path: &Path, src: &str) -> Result<Self, ConfigError> {
        let mut config: Config =
            toml::from_str(src).map_err(|e| ConfigError::from_toml(path, src, &e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate(path, src)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.tls.cert.as_mut().map(resolve);
        self.tls.key.as_mut().map(resolve);
        if let Some(hq) = &mut self.apps.hq {
            resolve(&mut hq.root);
        }
        if let Some(h3) = &mut self.apps.h3 {
            resolve(&mut h3.root);
        }
    }

    /// Checks what types alone cannot: ranges, combinations and that named files exist.
    fn validate(&self, path: &Path, src: &str) -> Result<(), ConfigError> {
        let fail =
            |field: &str, message: String| Err(ConfigError::at_field(path, src, field, message));
        if self.server.group.is_some() && self.server.user.is_none() {
            return fail("server.group", "needs `server.user` too".into());
        }
        if self.server.listen.is_empty() {
            return fail("server.listen", "at least one address is needed".into());
        }
        // Cannot fail while `ServerId::MAX` is 8, but the layout's own bound decides.
        if let Err(e) = crate::driver::cid::CidLayout::from_config(&self.server) {
            return fail(
                "server.server_id",
                format!("too long for `server.cid_key`: {e}"),
            );
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            let (present, missing) = if self.tls.cert.is_some() {
                ("tls.cert", "tls.key")
            } else {
                ("tls.key", "tls.cert")
            };
            return fail(
                present,
                format!("needs `{missing}` too (or leave both out)"),
            );
        }
        for (field, file) in [("tls.cert", &self.tls.cert), ("tls.key", &self.tls.key)] {
            if let Some(file) = file {
                if !file.is_file() {
                    return fail(field, format!("{} is not a readable file", file.display()));
                }
            }
        }
        if self.tls.cert.is_none() && self.tls.dev_cert_names.is_empty() {
            return fail(
                "tls.dev_cert_names",
                "needs at least one name when no certificate is given".into(),
            );
        }
        let t = &self.transport;
        if t.zero_rtt && !t.resumption {
            return fail(
                "transport.zero_rtt",
                "0-RTT needs `resumption = true`".into(),
            );
        }
        if !(1200..=65527).contains(&t.max_udp_payload_size) {
            return fail(
                "transport.max_udp_payload_size",
                format!("{} is outside 1200..=65527", t.max_udp_payload_size),
            );
        }
        if t.initial_mtu < 1200 || t.initial_mtu > t.max_udp_payload_size {
            return fail(
                "transport.initial_mtu",
                format!(
                    "{} is outside 1200..=max_udp_payload_size ({})",
                    t.initial_mtu, t.max_udp_payload_size
                ),
            );
        }
        if t.idle_timeout_ms == 0 || t.idle_timeout_ms >= 1 << 62 {
            return fail("transport.idle_timeout_ms", "must be at least 1 ms".into());
        }
        if let Some(n) = self.apps.file_readers {
            if !(1..=256).contains(&n) {
                return fail("apps.file_readers", format!("must be 1 to 256, found {n}"));
            }
        }
        if t.max_connections == 0 {
            return fail("transport.max_connections", "must be at least 1".into());
        }
        let apps: [(&str, Option<&Vec<String>>); 4] = [
            ("apps.hq.alpn", self.apps.hq.as_ref().map(|a| &a.alpn)),
            ("apps.h3.alpn", self.apps.h3.as_ref().map(|a| &a.alpn)),
            ("apps.perf.alpn", self.apps.perf.as_ref().map(|a| &a.alpn)),
            ("apps.echo.alpn", self.apps.echo.as_ref().map(|a| &a.alpn)),
        ];
        if apps.iter().all(|(_, a)| a.is_none()) {
            return fail(
                "apps",
                "no application is enabled: add [apps.hq], [apps.h3], [apps.perf] or [apps.echo]"
                    .into(),
            );
        }
        let mut seen: Vec<&str> = Vec::new();
        for (field, alpns) in apps {
            let Some(alpns) = alpns else { continue };
            if alpns.is_empty() {
                return fail(field, "needs at least one ALPN".into());
            }
            for alpn in alpns {
                if alpn.is_empty() || alpn.len() > 255 {
                    return fail(field, format!("ALPN `{alpn}` must be 1 to 255 bytes"));
                }
                if seen.contains(&alpn.as_str()) {
                    return fail(
                        field,
                        format!("ALPN `{alpn}` is served by two applications"),
                    );
                }
                seen.push(alpn);
            }
        }
        match (&self.server.backend, &self.xdp) {
            (Backend::Xdp, None) => {
                return fail(
                    "server.backend",
                    "`xdp` needs an [xdp] table with `interface`".into(),
                )
            }
            (_, Some(x)) => {
                if x.interface.is_empty() {
                    return fail("xdp.interface", "must name an interface".into());
                }
                if !x.ring_size.is_power_of_two() || x.ring_size < 64 {
                    return fail(
                        "xdp.ring_size",
                        format!("{} is not a power of two >= 64", x.ring_size),
                    );
                }
                if x.vlan.is_some_and(|v| v == 0 || v > 4094) {
                    return fail("xdp.vlan", "must be a VLAN id from 1 to 4094".into());
                }
                if x.frames < 2 * x.ring_size {
                    return fail(
                        "xdp.frames",
                        format!(
                            "{} is less than twice ring_size ({})",
                            x.frames, x.ring_size
                        ),
                    );
                }
            }
            _ => {}
        }
        if let Err((field, message)) = self.io_uring.validate() {
            return fail(field, message);
        }
        if let Err((field, message)) = self.rio.validate() {
            return fail(field, message);
        }
        if let Some(hq) = &self.apps.hq {
            if !hq.root.is_dir() {
                return fail(
                    "apps.hq.root",
                    format!("{} is not a directory", hq.root.display()),
                );
            }
        }
        if let Some(h3) = &self.apps.h3 {
            if !h3.root.is_dir() {
                return fail(
                    "apps.h3.root",
                    format!("{} is not a directory", h3.root.display()),
                );
            }
            // Below one field line's overhead nothing fits; above 1 MiB one request could pin
            // that much memory per stream.
            if !(64..=1 << 20).contains(&h3.max_field_section_size) {
                return fail(
                    "apps.h3.max_field_section_size",
                    format!("{} is outside 64..=1048576", h3.max_field_section_size),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
