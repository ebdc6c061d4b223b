//! (d) hq error handling: missing files, paths escaping the root, malformed requests. Each
//! error must be a stream reset with the documented code, and the connection must stay usable.

use std::time::Duration;

use crate::harness::*;

const NOT_FOUND: u64 = 0x404;
const FORBIDDEN: u64 = 0x403;
const BAD_REQUEST: u64 = 0x400;

e2e_tests!(hq_error_codes_and_connection_survives);

async fn hq_error_codes_and_connection_survives(t: Backend) {
    let fx = Fixture::new(t);
    let index = random_bytes(50_000, run_seed());
    fx.put("index.html", &index);
    fx.put("sub/inner.txt", b"inner");

    // Secrets outside the document root.
    let secret = b"TOP SECRET, MUST NOT BE SERVED".to_vec();
    let outside = fx.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let secret_path = fx.dir.path().join("secret.txt");
    std::fs::write(&secret_path, &secret).unwrap();
    std::fs::write(outside.join("secret2.txt"), &secret).unwrap();
    // Symlinks inside the root that leave it: relative and absolute targets, file and dir.
    std::os::unix::fs::symlink("../secret.txt", fx.root.join("link-rel.txt")).unwrap();
    std::os::unix::fs::symlink(&secret_path, fx.root.join("link-abs.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, fx.root.join("linkdir")).unwrap();

    let abs_secret = secret_path.display().to_string();
    assert!(abs_secret.starts_with('/'));
    let cases: Vec<(String, Vec<u8>, u64)> = vec![
        (
            "missing file".into(),
            b"GET /missing.txt\r\n".to_vec(),
            NOT_FOUND,
        ),
        (
            "missing dir".into(),
            b"GET /nodir/missing.txt\r\n".to_vec(),
            NOT_FOUND,
        ),
        (
            "dot-dot".into(),
            b"GET /../secret.txt\r\n".to_vec(),
            FORBIDDEN,
        ),
        (
            "nested dot-dot".into(),
            b"GET /sub/../../secret.txt\r\n".to_vec(),
            FORBIDDEN,
        ),
        (
            "dot-dot into sibling dir".into(),
            b"GET /../outside/secret2.txt\r\n".to_vec(),
            FORBIDDEN,
        ),
        // `root.join("/abs")` would yield "/abs": the classic escape.
        (
            format!("absolute path //{abs_secret}"),
            format!("GET /{abs_secret}\r\n").into_bytes(),
            FORBIDDEN,
        ),
        (
            "symlink to file outside (relative target)".into(),
            b"GET /link-rel.txt\r\n".to_vec(),
            FORBIDDEN,
        ),
        (
            "symlink to file outside (absolute target)".into(),
            b"GET /link-abs.txt\r\n".to_vec(),
            FORBIDDEN,
        ),
        (
            "symlinked dir outside".into(),
            b"GET /linkdir/secret2.txt\r\n".to_vec(),
            FORBIDDEN,
        ),
        ("garbage request".into(), b"HELLO\r\n".to_vec(), BAD_REQUEST),
        ("empty request".into(), b"".to_vec(), BAD_REQUEST),
    ];

    let mut d = fx.start(&fx.config()).await;
    let addr = d.addr();

    bounded(Duration::from_secs(60), async {
        let (_ep, conn) = connect_alpn(&fx.client, &fx.trust(), ALPN_HQ, addr).await;
        let mut failures = Vec::new();
        for (name, req, want) in &cases {
            let got = raw_request(&conn, req).await;
            if let Outcome::Data(body) = &got {
                if body.windows(secret.len()).any(|w| w == secret.as_slice()) {
                    panic!(
                        "{name}: request {:?} LEAKED the secret",
                        String::from_utf8_lossy(req)
                    );
                }
            }
            if got != Outcome::Reset(*want) {
                failures.push(format!(
                    "{name}: request {:?}: expected Reset({want:#x}), got {}",
                    String::from_utf8_lossy(req),
                    got.describe()
                ));
            }
            // The connection is still usable after the error.
            match hq_request(&conn, "/index.html").await {
                Outcome::Data(b) => {
                    assert_same_bytes(&b, &index, &format!("GET /index.html after {name}"))
                }
                o => panic!(
                    "GET /index.html after {name}: connection not usable: {}",
                    o.describe()
                ),
            }
        }
        assert!(
            conn.close_reason().is_none(),
            "connection closed: {:?}",
            conn.close_reason()
        );
        assert!(
            failures.is_empty(),
            "wrong stream outcomes:\n  {}",
            failures.join("\n  ")
        );
    })
    .await;
    d.assert_alive();
}
