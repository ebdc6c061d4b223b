use super::*;

fn app(root: &std::path::Path) -> H3App {
    H3App::new(Arc::new(H3Config {
        root: Arc::new(root.canonicalize().unwrap()),
        max_field_section_size: 4096,
    }))
}

/// Response fields and body.
type Response = (Vec<(String, String)>, Vec<u8>);

/// Feeds a request (fields, then FIN) to a fresh request handler; returns the response's
/// fields and body, or the reset code.
fn exchange(root: &std::path::Path, fields: &[(&str, &str)]) -> Result<Response, VarInt> {
    let mut enc = qpack::Encoder::default();
    for (n, v) in fields {
        enc.field(n, v);
    }
    let wire = frame::encode_frame(frame::HEADERS, &enc.finish());
    let mut app = app(root);
    let mut req = Request::new(app.shared.clone());
    req.on_data(wire.into());
    req.on_fin();
    let mut out = Vec::new();
    loop {
        match req.next_output() {
            Output::Chunk(c) => out.extend_from_slice(&c),
            Output::Finish => break,
            // The file ops a worker would hand to its readers, run here.
            Output::Pending => match req.take_file_op() {
                Some(op) => req.on_file(op.run()),
                None => panic!("request stalled"),
            },
            Output::Reset(code) => return Err(code),
        }
    }
    assert!(app.take_close().is_none());
    // Parse the response frames.
    let mut reader = FrameReader::default();
    reader.push(&out);
    let mut head = Vec::new();
    let mut body = Vec::new();
    while let Some(ev) = reader.next(|_| Some(1 << 30)).unwrap() {
        let Event::Frame { ty, payload } = ev else {
            unreachable!()
        };
        match ty {
            frame::HEADERS => {
                head = qpack::Decoder::default()
                    .decode(&payload, 1 << 20)
                    .unwrap()
                    .into_iter()
                    .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                    .collect()
            }
            frame::DATA => body.extend_from_slice(&payload),
            other => panic!("frame {other}"),
        }
    }
    Ok((head, body))
}

fn get(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":scheme", "https".into()),
        (":authority", "localhost".into()),
        (":path", path.into()),
    ]
}

fn run(root: &std::path::Path, fields: &[(&str, String)]) -> Response {
    let f: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    exchange(root, &f).unwrap()
}

fn header<'a>(head: &'a [(String, String)], name: &str) -> Option<&'a str> {
    head.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn serves_files_ranges_and_conditionals() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("f.bin"), &data).unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    std::fs::write(dir.path().join("d/index.html"), b"<p>hi</p>").unwrap();

    let (head, body) = run(dir.path(), &get("/f.bin"));
    assert_eq!(header(&head, ":status"), Some("200"));
    assert_eq!(header(&head, "content-length"), Some("200000"));
    assert_eq!(
        header(&head, "content-type"),
        Some("application/octet-stream")
    );
    assert!(header(&head, "last-modified").is_some());
    assert_eq!(body, data);
    let etag = header(&head, "etag").unwrap().to_string();

    let (head, body) = run(dir.path(), &get("/d/"));
    assert_eq!(
        header(&head, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(body, b"<p>hi</p>");

    let mut req = get("/f.bin");
    req.push(("if-none-match", format!("W/\"x\", {etag}")));
    let (head, body) = run(dir.path(), &req);
    assert_eq!(header(&head, ":status"), Some("304"));
    assert!(body.is_empty());

    let mut req = get("/f.bin");
    req.push(("range", "bytes=100-199".into()));
    let (head, body) = run(dir.path(), &req);
    assert_eq!(header(&head, ":status"), Some("206"));
    assert_eq!(header(&head, "content-range"), Some("bytes 100-199/200000"));
    assert_eq!(body, &data[100..200]);

    let mut req = get("/f.bin");
    req.push(("range", "bytes=-10".into()));
    assert_eq!(run(dir.path(), &req).1, &data[data.len() - 10..]);

    let mut req = get("/f.bin");
    req.push(("range", "bytes=200000-".into()));
    let (head, _) = run(dir.path(), &req);
    assert_eq!(header(&head, ":status"), Some("416"));
    assert_eq!(header(&head, "content-range"), Some("bytes */200000"));

    let mut req = get("/f.bin");
    req[0].1 = "HEAD".into();
    let (head, body) = run(dir.path(), &req);
    assert_eq!(header(&head, "content-length"), Some("200000"));
    assert!(body.is_empty());

    for (path, status) in [
        ("/missing", "404"),
        ("/../etc/passwd", "403"),
        ("/a\\b", "400"),
    ] {
        let (head, _) = run(dir.path(), &get(path));
        assert_eq!(header(&head, ":status"), Some(status), "{path}");
    }
    let mut req = get("/f.bin");
    req[0].1 = "POST".into();
    let (head, _) = run(dir.path(), &req);
    assert_eq!(header(&head, ":status"), Some("405"));
    assert_eq!(header(&head, "allow"), Some("GET, HEAD"));
}

#[test]
fn malformed_requests_are_message_errors() {
    let dir = tempfile::tempdir().unwrap();
    for fields in [
        vec![(":method", "GET"), (":scheme", "https")],
        vec![
            (":method", "GET"),
            (":path", "/"),
            (":scheme", "https"),
            (":method", "GET"),
        ],
        vec![
            (":method", "GET"),
            ("x", "y"),
            (":path", "/"),
            (":scheme", "https"),
        ],
        vec![
            (":method", "GET"),
            (":path", "/"),
            (":scheme", "https"),
            (":foo", "1"),
        ],
        vec![
            (":method", "GET"),
            (":path", "/"),
            (":scheme", "https"),
            ("Host", "x"),
        ],
        vec![
            (":method", "GET"),
            (":path", "/"),
            (":scheme", "https"),
            ("connection", "close"),
        ],
        vec![
            (":method", "GET"),
            (":path", "/"),
            (":scheme", "https"),
            ("x", "a\r\nb"),
        ],
    ] {
        assert_eq!(
            exchange(dir.path(), &fields).unwrap_err(),
            code::MESSAGE_ERROR,
            "{fields:?}"
        );
    }
}

#[test]
fn oversized_headers_get_431() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = get("/");
    req.push(("x-big", "v".repeat(5000)));
    let (head, _) = run(dir.path(), &req);
    assert_eq!(header(&head, ":status"), Some("431"));
}

#[test]
fn request_stream_frame_errors() {
    let dir = tempfile::tempdir().unwrap();
    // DATA before HEADERS: connection error H3_FRAME_UNEXPECTED.
    let mut app = app(dir.path());
    let mut req = Request::new(app.shared.clone());
    req.on_data(frame::encode_frame(frame::DATA, b"x").into());
    assert!(matches!(req.next_output(), Output::Reset(_)));
    assert_eq!(app.take_close().unwrap().0, code::FRAME_UNEXPECTED);
    // FIN before any HEADERS: stream error H3_REQUEST_INCOMPLETE.
    let mut req = Request::new(app.shared.clone());
    req.on_fin();
    assert!(matches!(req.next_output(), Output::Reset(c) if c == code::REQUEST_INCOMPLETE));
    // FIN inside a frame: H3_FRAME_ERROR.
    let mut req = Request::new(app.shared.clone());
    req.on_data(Bytes::from_static(&[0x01, 0x10, 0x00]));
    req.on_fin();
    assert_eq!(app.take_close().unwrap().0, code::FRAME_ERROR);
    // Unknown (GREASE) frames before HEADERS are skipped.
    let mut wire = frame::encode_frame(0x21, b"grease");
    let mut enc = qpack::Encoder::default();
    enc.field(":method", "GET")
        .field(":scheme", "https")
        .field(":path", "/nothing");
    wire.extend_from_slice(&frame::encode_frame(frame::HEADERS, &enc.finish()));
    let mut req = Request::new(app.shared.clone());
    req.on_data(wire.into());
    // The request was read: it asks for its file.
    assert!(matches!(req.take_file_op(), Some(FileOp::Open { .. })));
    assert!(app.take_close().is_none());
}

fn control_stream(bytes: &[u8]) -> Option<VarInt> {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    let mut uni = PeerUni::new(app.shared.clone());
    // Byte by byte, to cover every split.
    for b in bytes {
        uni.on_data(Bytes::copy_from_slice(std::slice::from_ref(b)));
    }
    app.take_close().map(|(c, _)| c)
}

fn settings(pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut p = Vec::new();
    for &(id, v) in pairs {
        frame::write_varint(&mut p, id);
        frame::write_varint(&mut p, v);
    }
    frame::encode_frame(frame::SETTINGS, &p)
}

#[test]
fn control_stream_rules() {
    let mut ok = vec![0x00];
    ok.extend(settings(&[(1, 0), (6, 1000), (0x1f * 3 + 0x21, 5)]));
    ok.extend(frame::encode_frame(0x1f * 7 + 0x21, b"grease"));
    ok.extend(frame::encode_frame(frame::MAX_PUSH_ID, &[5]));
    ok.extend(frame::encode_frame(frame::GOAWAY, &[0]));
    assert_eq!(control_stream(&ok), None);

    let mut no_settings = vec![0x00];
    no_settings.extend(frame::encode_frame(frame::GOAWAY, &[0]));
    assert_eq!(control_stream(&no_settings), Some(code::MISSING_SETTINGS));

    let mut twice = vec![0x00];
    twice.extend(settings(&[]));
    twice.extend(settings(&[]));
    assert_eq!(control_stream(&twice), Some(code::FRAME_UNEXPECTED));

    let mut h2 = vec![0x00];
    h2.extend(settings(&[(0x04, 1)]));
    assert_eq!(control_stream(&h2), Some(code::SETTINGS_ERROR));

    let mut dup = vec![0x00];
    dup.extend(settings(&[(6, 1), (6, 2)]));
    assert_eq!(control_stream(&dup), Some(code::SETTINGS_ERROR));

    let mut data = vec![0x00];
    data.extend(settings(&[]));
    data.extend(frame::encode_frame(frame::DATA, b"x"));
    assert_eq!(control_stream(&data), Some(code::FRAME_UNEXPECTED));

    let mut h2frame = vec![0x00];
    h2frame.extend(settings(&[]));
    h2frame.extend(frame::encode_frame(0x6, b"12345678"));
    assert_eq!(control_stream(&h2frame), Some(code::FRAME_UNEXPECTED));

    // Push streams come only from servers.
    assert_eq!(control_stream(&[0x01]), Some(code::STREAM_CREATION_ERROR));
    // QPACK streams: capacity 0 and stream cancellations are fine, insertions are not.
    assert_eq!(control_stream(&[0x02, 0x20]), None);
    assert_eq!(
        control_stream(&[0x02, 0x3f, 0xe1, 0x01]),
        Some(code::QPACK_ENCODER_STREAM_ERROR)
    );
    assert_eq!(
        control_stream(&[0x02, 0xc0, 0x00]),
        Some(code::QPACK_ENCODER_STREAM_ERROR)
    );
    assert_eq!(control_stream(&[0x03, 0x44]), None);
    assert_eq!(
        control_stream(&[0x03, 0x84]),
        Some(code::QPACK_DECODER_STREAM_ERROR)
    );
    assert_eq!(
        control_stream(&[0x03, 0x01]),
        Some(code::QPACK_DECODER_STREAM_ERROR)
    );
}

#[test]
fn unknown_streams_are_stopped_and_critical_ones_must_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    let mut grease = PeerUni::new(app.shared.clone());
    let mut ty = Vec::new();
    frame::write_varint(&mut ty, 0x1f * 9 + 0x21);
    grease.on_data(ty.into());
    assert!(matches!(grease.next_output(), Output::Reset(c) if c == code::STREAM_CREATION_ERROR));
    grease.on_fin();
    assert!(app.take_close().is_none());

    let mut control = PeerUni::new(app.shared.clone());
    let mut bytes = vec![0x00];
    bytes.extend(settings(&[]));
    control.on_data(bytes.into());
    // A second control stream is a connection error.
    let mut second = PeerUni::new(app.shared.clone());
    second.on_data(Bytes::from_static(&[0x00]));
    assert_eq!(app.take_close().unwrap().0, code::STREAM_CREATION_ERROR);
    control.on_fin();
    assert_eq!(app.take_close().unwrap().0, code::CLOSED_CRITICAL_STREAM);
}

#[test]
fn goaway_after_shutdown_and_later_requests_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path());
    let mut control = app.open_uni().unwrap();
    assert!(app.open_uni().is_none());
    let Output::Chunk(first) = control.next_output() else {
        panic!()
    };
    assert_eq!(first[0], 0x00, "control stream type");
    assert!(matches!(control.next_output(), Output::Pending));
    let first_request = StreamId::new(quinn_proto::Side::Client, Dir::Bi, 2);
    assert!(app.accept(first_request).is_ok());
    assert!(app.begin_shutdown());
    let Output::Chunk(goaway) = control.next_output() else {
        panic!()
    };
    // GOAWAY naming stream 12: the one after stream 8 (index 2), the last accepted.
    assert_eq!(&goaway[..], &frame::encode_frame(frame::GOAWAY, &[12])[..]);
    let later = StreamId::new(quinn_proto::Side::Client, Dir::Bi, 3);
    assert_eq!(app.accept(later).err(), Some(code::REQUEST_REJECTED));
}

#[test]
fn range_parsing() {
    use RangeResult::*;
    for (h, want) in [
        ("bytes=0-0", Part(0, 0)),
        ("bytes=5-", Part(5, 99)),
        ("bytes=5-1000", Part(5, 99)),
        ("bytes=-1000", Part(0, 99)),
        ("bytes=100-", Unsatisfiable),
        ("bytes=-0", Unsatisfiable),
        ("bytes=9-5", Whole),
        ("bytes=0-1,5-6", Whole),
        ("items=0-1", Whole),
        ("bytes=a-b", Whole),
        ("bytes=-", Whole),
    ] {
        assert_eq!(parse_range(h, 100), want, "{h}");
    }
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
    assert_eq!(percent_decode("/%2e%2e/x").as_deref(), Some("/../x"));
    assert_eq!(percent_decode("/%zz"), None);
    assert_eq!(percent_decode("/%f"), None);
    assert_eq!(percent_decode("/%ff"), None);
}
