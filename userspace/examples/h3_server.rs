//! A stock HTTP/3 server (the `h3` and `h3-quinn` crates on quinn 0.11) on one of quixd's
//! datapaths: ordinary h3 code but for the endpoint, made by `quinn_server::endpoint` on a
//! `quixd::quinn_socket::QuixdSocket` (one line differs from a stock quinn server).
//!
//! It answers `GET /N` with N bytes of `quinn_server::pattern` and anything else with 404.
//! The tests (`tests/quinn_socket`) run it against the h3 client on every backend.
//!
//!     cargo run --example h3_server -- --backend io_uring --listen 127.0.0.1:4433

#[path = "quinn_server.rs"]
#[allow(dead_code)]
pub mod quinn_server;

pub use server::*;

mod server {
    use bytes::Bytes;
    use rustls::pki_types::CertificateDer;

    use super::quinn_server::pattern;

    /// A self-signed certificate for "localhost" and a server configuration speaking `h3`
    /// (no 0-RTT: requests in early data could be replayed, and nothing here tests it).
    pub fn server_config() -> anyhow::Result<(quinn::ServerConfig, CertificateDer<'static>)> {
        super::quinn_server::server_config_for(b"h3", false)
    }

    /// Accepts connections until the endpoint closes.
    pub async fn serve(endpoint: quinn::Endpoint) {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                if let Err(e) = connection(incoming).await {
                    eprintln!("h3 connection: {e}");
                }
            });
        }
    }

    async fn connection(incoming: quinn::Incoming) -> anyhow::Result<()> {
        let conn = incoming.await?;
        let mut h3 =
            h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await?;
        loop {
            match h3.accept().await {
                Ok(Some(resolver)) => {
                    tokio::spawn(async move {
                        if let Err(e) = request(resolver).await {
                            eprintln!("h3 request: {e}");
                        }
                    });
                }
                Ok(None) => return Ok(()),
                Err(e) if e.is_h3_no_error() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn request(
        resolver: h3::server::RequestResolver<h3_quinn::Connection, Bytes>,
    ) -> anyhow::Result<()> {
        let (req, mut stream) = resolver.resolve_request().await?;
        let size = req.uri().path().trim_start_matches('/').parse::<u64>().ok();
        let Some(size) = size.filter(|_| req.method() == http::Method::GET) else {
            let resp = http::Response::builder().status(404).body(())?;
            stream.send_response(resp).await?;
            stream.finish().await?;
            return Ok(());
        };
        let resp = http::Response::builder()
            .status(200)
            .header("content-length", size)
            .body(())?;
        stream.send_response(resp).await?;
        let mut sent = 0u64;
        while sent < size {
            let n = (64 * 1024).min(size - sent);
            let chunk: Vec<u8> = (sent..sent + n).map(pattern).collect();
            stream.send_data(Bytes::from(chunk)).await?;
            sent += n;
        }
        stream.finish().await?;
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    use quixd::config::Backend;
    use quixd::quinn_socket::QuixdSocketBuilder;

    let mut args = std::env::args().skip(1);
    let (mut backend, mut listen, mut interface) = (Backend::Socket, None, None);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--backend", Some(v)) => {
                backend = match v.as_str() {
                    "socket" => Backend::Socket,
                    "io_uring" => Backend::IoUring,
                    "xdp" => Backend::Xdp,
                    "rio" => Backend::Rio,
                    "auto" => Backend::Auto,
                    other => anyhow::bail!("unknown backend {other}"),
                }
            }
            ("--listen", Some(v)) => listen = Some(v.parse()?),
            ("--xdp-interface", Some(v)) => interface = Some(v),
            (other, _) => anyhow::bail!("unknown argument {other}"),
        }
    }
    let listen = listen.unwrap_or_else(|| "127.0.0.1:4433".parse().unwrap());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut builder = QuixdSocketBuilder::new(backend, [listen]);
        if let Some(interface) = interface {
            builder = builder.xdp_interface(&interface);
        }
        let socket = builder.open()?;
        let (config, _) = server_config()?;
        let endpoint = quinn_server::endpoint(socket, config)?;
        eprintln!("serving HTTP/3 on {listen} ({backend})");
        serve(endpoint).await;
        Ok(())
    })
}
