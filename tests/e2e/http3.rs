//! The h3 app (HTTP/3 static files), driven by the `h3` + `h3-quinn` crates' client: a client
//! nobody here wrote, with its own QPACK encoder, GREASE and control streams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{Method, Request, StatusCode};

use crate::harness::*;

e2e_tests!(
    h3_get_head_ranges_and_errors,
    h3_many_concurrent_requests_and_large_file(4),
    h3_goaway_on_sigterm,
);

pub(crate) type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// An HTTP/3 connection: the quinn endpoint, the request handle, and the task driving the
/// connection (it ends with the connection's close reason).
pub(crate) struct H3Client {
    _ep: quinn::Endpoint,
    pub(crate) send: SendRequest,
    driver: tokio::task::JoinHandle<h3::error::ConnectionError>,
}

pub(crate) async fn h3_connect(fx: &Fixture, addr: SocketAddr) -> H3Client {
    let (ep, conn) = connect_alpn(&fx.client, &fx.trust(), "h3", addr).await;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .expect("h3 client setup");
    let driver = tokio::spawn(async move { driver.wait_idle().await });
    H3Client {
        _ep: ep,
        send,
        driver,
    }
}

/// A response: status, headers and the whole body.
pub(crate) struct Got {
    pub(crate) status: StatusCode,
    headers: http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn request(
    send: &mut SendRequest,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Got, h3::error::StreamError> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let mut stream = send.send_request(req.body(()).unwrap()).await?;
    stream.finish().await?;
    let resp = stream.recv_response().await?;
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await? {
        while chunk.has_remaining() {
            let c = chunk.chunk();
            body.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    Ok(Got {
        status: resp.status(),
        headers: resp.headers().clone(),
        body,
    })
}

pub(crate) async fn get(send: &mut SendRequest, path: &str) -> Got {
    request(send, Method::GET, path, &[])
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:?}"))
}

async fn h3_get_head_ranges_and_errors(t: Backend) {
    let fx = Fixture::new(t);
    let data = random_bytes(300_000, run_seed());
    fx.put("f.bin", &data);
    fx.put("page/index.html", b"<h1>quixd</h1>");
    fx.put("a b.txt", b"spaced");
    let mut d = fx.start(&fx.config().h3(&fx.root)).await;
    let addr = d.addr();

    bounded(Duration::from_secs(60), async {
        let mut c = h3_connect(&fx, addr).await;
        let got = get(&mut c.send, "/f.bin").await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.header("content-length"), Some("300000"));
        assert_eq!(got.header("content-type"), Some("application/octet-stream"));
        assert!(got.header("last-modified").is_some());
        assert_same_bytes(&got.body, &data, "GET /f.bin over h3");
        let etag = got.header("etag").expect("etag").to_string();

        let head = request(&mut c.send, Method::HEAD, "/f.bin", &[])
            .await
            .unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.header("content-length"), Some("300000"));
        assert!(head.body.is_empty(), "HEAD has no body");

        let page = get(&mut c.send, "/page/").await;
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(page.body, b"<h1>quixd</h1>");
        assert_eq!(get(&mut c.send, "/a%20b.txt").await.body, b"spaced");

        let part = request(
            &mut c.send,
            Method::GET,
            "/f.bin",
            &[("range", "bytes=1000-1999")],
        )
        .await
        .unwrap();
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.header("content-range"), Some("bytes 1000-1999/300000"));
        assert_same_bytes(&part.body, &data[1000..2000], "range 1000-1999");
        let tail = request(
            &mut c.send,
            Method::GET,
            "/f.bin",
            &[("range", "bytes=-100")],
        )
        .await
        .unwrap();
        assert_same_bytes(&tail.body, &data[data.len() - 100..], "suffix range");
        let beyond = request(
            &mut c.send,
            Method::GET,
            "/f.bin",
            &[("range", "bytes=400000-")],
        )
        .await
        .unwrap();
        assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(beyond.header("content-range"), Some("bytes */300000"));

        let cached = request(
            &mut c.send,
            Method::GET,
            "/f.bin",
            &[("if-none-match", &etag)],
        )
        .await
        .unwrap();
        assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
        assert!(cached.body.is_empty());

        assert_eq!(
            get(&mut c.send, "/missing").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&mut c.send, "/%2e%2e/etc/passwd").await.status,
            StatusCode::FORBIDDEN
        );
        let post = request(&mut c.send, Method::POST, "/f.bin", &[])
            .await
            .unwrap();
        assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
        // The connection survived all of it.
        assert_eq!(
            get(&mut c.send, "/page/index.html").await.status,
            StatusCode::OK
        );
    })
    .await;
    d.assert_alive();
}

async fn h3_many_concurrent_requests_and_large_file(t: Backend) {
    let fx = Fixture::new(t);
    let seed = run_seed();
    let big = random_bytes(10_000_000, seed);
    fx.put("big.bin", &big);
    let files: Vec<Vec<u8>> = (0..20)
        .map(|i| random_bytes(1000 + i * 997, seed + i as u64))
        .collect();
    for (i, f) in files.iter().enumerate() {
        fx.put(&format!("s/{i}.bin"), f);
    }
    let mut d = fx.start(&fx.config().h3(&fx.root)).await;
    let addr = d.addr();

    bounded(Duration::from_secs(120), async {
        let c = h3_connect(&fx, addr).await;
        // 300 requests at once on one connection: more than the 100 concurrent streams the
        // server allows, so the client waits for stream credit as well.
        let mut tasks = Vec::new();
        for n in 0..300usize {
            let mut send = c.send.clone();
            let want = files[n % files.len()].clone();
            tasks.push(tokio::spawn(async move {
                let path = format!("/s/{}.bin", n % 20);
                let got = get(&mut send, &path).await;
                assert_eq!(got.status, StatusCode::OK, "{path}");
                assert_same_bytes(&got.body, &want, &path);
            }));
        }
        let mut send = c.send.clone();
        let got = get(&mut send, "/big.bin").await;
        assert_same_bytes(
            &got.body,
            &big,
            &format!("GET /big.bin over h3 (seed {seed})"),
        );
        for t in tasks {
            t.await.expect("request task");
        }
    })
    .await;
    d.assert_alive();
}

/// SIGTERM: the server sends GOAWAY (new requests are refused by the client itself), lets the
/// request in flight finish, closes with H3_NO_ERROR and exits 0.
async fn h3_goaway_on_sigterm(t: Backend) {
    let fx = Fixture::new(t);
    let data = random_bytes(8_000_000, run_seed());
    fx.put("big.bin", &data);
    let cfg = fx.config().h3(&fx.root).drain_timeout_ms(30_000);
    let mut d = fx.start(&cfg).await;
    let addr = d.addr();

    let mut c = bounded(Duration::from_secs(20), h3_connect(&fx, addr)).await;
    let mut stream = c
        .send
        .send_request(Request::get("https://localhost/big.bin").body(()).unwrap())
        .await
        .expect("request");
    stream.finish().await.expect("finish");
    let resp = stream.recv_response().await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    // Read a little, then stall: the download stays in flight across the signal.
    let mut body = Vec::new();
    if let Some(mut chunk) = stream.recv_data().await.expect("data") {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    d.signal(libc::SIGTERM);
    // Requests sent before the daemon handles the signal are rightly served: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.output().contains("shutting down") {
        assert!(
            Instant::now() < deadline,
            "no shutdown within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The client learns of the GOAWAY and refuses new requests itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let next = Request::get("https://localhost/big.bin").body(()).unwrap();
        match c.send.send_request(next).await {
            Err(h3::error::StreamError::RemoteClosing { .. }) => break,
            Err(e) => panic!("after SIGTERM, send_request failed otherwise: {e:?}"),
            Ok(mut refused) => {
                // Raced the GOAWAY: the server must refuse it (H3_REQUEST_REJECTED).
                let _ = refused.finish().await;
                match refused.recv_response().await {
                    Err(e) => eprintln!("request sent before GOAWAY arrived: {e:?}"),
                    Ok(r) => panic!("a request after SIGTERM was served: {}", r.status()),
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no GOAWAY within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    bounded(Duration::from_secs(60), async {
        while let Some(mut chunk) = stream.recv_data().await.expect("data after GOAWAY") {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
    })
    .await;
    assert_same_bytes(&body, &data, "download in flight across SIGTERM");
    let close = bounded(Duration::from_secs(20), &mut c.driver)
        .await
        .expect("driver task");
    assert!(
        close.is_h3_no_error(),
        "connection should close with H3_NO_ERROR, got {close:?}"
    );
    // Already signalled: a second SIGTERM would force an exit, so just wait for it.
    let status = d.wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}\n{}",
        d.output()
    );
}
