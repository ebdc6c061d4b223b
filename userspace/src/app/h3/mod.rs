//! `h3`: HTTP/3 (RFC 9114) static files from a document root, with the hq app's path rules.
//!
//! Per connection an [`H3App`] opens our control stream (SETTINGS, later GOAWAY), reads the
//! peer's control and QPACK streams, and serves each request stream with a [`Request`]:
//! GET and HEAD, conditional requests (`if-none-match`, `if-modified-since`), single byte
//! ranges, and errors as HTTP responses where HTTP has one. Protocol violations become the
//! H3 error RFC 9114 names, as a connection or a stream error. Files are opened and read off
//! the datapath thread ([`super::files`]) and stream in chunks as flow control allows, never
//! read whole.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quinn_proto::{Dir, StreamId, VarInt};

use super::files::{BodyNext, FileBody, FileDone, FileOp, Opened};
use super::{hq, ConnApp, Handler, Output};

pub mod frame;
pub mod qpack;

use frame::{Event, FrameError, FrameReader};

/// HTTP/3 error codes (RFC 9114 8.1, RFC 9204 6).
pub mod code {
    use quinn_proto::VarInt;
    pub const NO_ERROR: VarInt = VarInt::from_u32(0x100);
    pub const INTERNAL_ERROR: VarInt = VarInt::from_u32(0x102);
    pub const STREAM_CREATION_ERROR: VarInt = VarInt::from_u32(0x103);
    pub const CLOSED_CRITICAL_STREAM: VarInt = VarInt::from_u32(0x104);
    pub const FRAME_UNEXPECTED: VarInt = VarInt::from_u32(0x105);
    pub const FRAME_ERROR: VarInt = VarInt::from_u32(0x106);
    pub const EXCESSIVE_LOAD: VarInt = VarInt::from_u32(0x107);
    pub const SETTINGS_ERROR: VarInt = VarInt::from_u32(0x109);
    pub const MISSING_SETTINGS: VarInt = VarInt::from_u32(0x10a);
    pub const REQUEST_REJECTED: VarInt = VarInt::from_u32(0x10b);
    pub const REQUEST_INCOMPLETE: VarInt = VarInt::from_u32(0x10d);
    pub const MESSAGE_ERROR: VarInt = VarInt::from_u32(0x10e);
    pub const QPACK_DECOMPRESSION_FAILED: VarInt = VarInt::from_u32(0x200);
    pub const QPACK_ENCODER_STREAM_ERROR: VarInt = VarInt::from_u32(0x201);
    pub const QPACK_DECODER_STREAM_ERROR: VarInt = VarInt::from_u32(0x202);
}

/// Unidirectional stream types (RFC 9114 6.2, RFC 9204 4.2).
const STREAM_CONTROL: u64 = 0x00;
const STREAM_PUSH: u64 = 0x01;
const STREAM_QPACK_ENCODER: u64 = 0x02;
const STREAM_QPACK_DECODER: u64 = 0x03;

/// SETTINGS identifiers we send.
const SETTING_QPACK_MAX_TABLE_CAPACITY: u64 = 0x01;
const SETTING_MAX_FIELD_SECTION_SIZE: u64 = 0x06;
const SETTING_QPACK_BLOCKED_STREAMS: u64 = 0x07;

/// Largest control frame (SETTINGS, GOAWAY, ...) we buffer.
const MAX_CONTROL_FRAME: u64 = 16 * 1024;

#[derive(Debug)]
pub struct H3Config {
    /// Canonical document root.
    pub root: Arc<PathBuf>,
    pub max_field_section_size: u64,
}

/// State shared by a connection's stream handlers.
struct Shared {
    config: Arc<H3Config>,
    decoder: qpack::Decoder,
    close: Option<(VarInt, String)>,
    stream_errors: u64,
    peer_control: bool,
    peer_encoder: bool,
    peer_decoder: bool,
    /// Highest request stream accepted, for GOAWAY.
    last_request: Option<u64>,
    /// The GOAWAY id once a graceful shutdown began; requests at or above it are refused.
    goaway: Option<u64>,
}

impl Shared {
    /// Records a connection error (the first one wins).
    fn fail(&mut self, code: VarInt, reason: &str) {
        if self.close.is_none() {
            tracing::debug!(code = code.into_inner(), reason, "h3 connection error");
            self.close = Some((code, reason.to_string()));
        }
    }
}

type SharedRef = Rc<RefCell<Shared>>;

/// The h3 application of one connection.
pub struct H3App {
    shared: SharedRef,
    control_opened: bool,
}

impl H3App {
    pub fn new(config: Arc<H3Config>) -> Self {
        Self {
            shared: Rc::new(RefCell::new(Shared {
                config,
                decoder: qpack::Decoder::default(),
                close: None,
                stream_errors: 0,
                peer_control: false,
                peer_encoder: false,
                peer_decoder: false,
                last_request: None,
                goaway: None,
            })),
            control_opened: false,
        }
    }
}

impl ConnApp for H3App {
    fn accept(&mut self, id: StreamId) -> Result<Box<dyn Handler>, VarInt> {
        if id.dir() == Dir::Uni {
            return Ok(Box::new(PeerUni::new(self.shared.clone())));
        }
        let mut shared = self.shared.borrow_mut();
        let n = id.index() * 4;
        if shared.goaway.is_some_and(|g| n >= g) {
            // Sent after our GOAWAY: the client may retry it elsewhere (RFC 9114 5.2).
            return Err(code::REQUEST_REJECTED);
        }
        shared.last_request = Some(shared.last_request.map_or(n, |l| l.max(n)));
        drop(shared);
        Ok(Box::new(Request::new(self.shared.clone())))
    }

    fn open_uni(&mut self) -> Option<Box<dyn Handler>> {
        if self.control_opened {
            return None;
        }
        self.control_opened = true;
        Some(Box::new(Control::new(self.shared.clone())))
    }

    fn begin_shutdown(&mut self) -> bool {
        let mut shared = self.shared.borrow_mut();
        // Every request accepted so far is served; the next id on is refused.
        let id = shared.last_request.map_or(0, |l| l + 4);
        shared.goaway = Some(id);
        true
    }

    fn take_close(&mut self) -> Option<(VarInt, String)> {
        self.shared.borrow_mut().close.take()
    }

    fn take_stream_errors(&mut self) -> u64 {
        std::mem::take(&mut self.shared.borrow_mut().stream_errors)
    }

    fn no_error(&self) -> VarInt {
        code::NO_ERROR
    }
}

// ---------------------------------------------------------------------------------------------
// Our control stream
// ---------------------------------------------------------------------------------------------

struct Control {
    shared: SharedRef,
    settings_sent: bool,
    goaway_sent: bool,
}

impl Control {
    fn new(shared: SharedRef) -> Self {
        Self {
            shared,
            settings_sent: false,
            goaway_sent: false,
        }
    }
}

impl Handler for Control {
    fn on_data(&mut self, _: Bytes) {}
    fn on_fin(&mut self) {}

    fn next_output(&mut self) -> Output {
        if !self.settings_sent {
            self.settings_sent = true;
            let max_field = self.shared.borrow().config.max_field_section_size;
            let mut settings = Vec::new();
            for (id, value) in [
                (SETTING_QPACK_MAX_TABLE_CAPACITY, 0),
                (SETTING_QPACK_BLOCKED_STREAMS, 0),
                (SETTING_MAX_FIELD_SECTION_SIZE, max_field),
            ] {
                frame::write_varint(&mut settings, id);
                frame::write_varint(&mut settings, value);
            }
            let mut out = Vec::new();
            frame::write_varint(&mut out, STREAM_CONTROL);
            out.extend_from_slice(&frame::encode_frame(frame::SETTINGS, &settings));
            return Output::Chunk(out.into());
        }
        if !self.goaway_sent {
            if let Some(id) = self.shared.borrow().goaway {
                self.goaway_sent = true;
                let mut payload = Vec::new();
                frame::write_varint(&mut payload, id);
                return Output::Chunk(frame::encode_frame(frame::GOAWAY, &payload).into());
            }
        }
        // The control stream stays open for the connection's life (RFC 9114 6.2.1).
        Output::Pending
    }
}

// ---------------------------------------------------------------------------------------------
// The peer's unidirectional streams
// ---------------------------------------------------------------------------------------------

enum UniKind {
    /// Stream type not read yet.
    Unknown(Vec<u8>),
    Control {
        reader: FrameReader,
        settings: bool,
    },
    /// QPACK encoder stream: buffered instruction bytes.
    Encoder(Vec<u8>),
    /// QPACK decoder stream: buffered instruction bytes.
    Decoder(Vec<u8>),
    /// A type we don't use (GREASE, extensions): ask the peer to stop.
    Refused,
    Failed,
}

struct PeerUni {
    shared: SharedRef,
    kind: UniKind,
}

impl PeerUni {
    fn new(shared: SharedRef) -> Self {
        Self {
            shared,
            kind: UniKind::Unknown(Vec::new()),
        }
    }

    fn fail(&mut self, code: VarInt, reason: &str) {
        self.shared.borrow_mut().fail(code, reason);
        self.kind = UniKind::Failed;
    }

    fn process(&mut self, data: &[u8]) {
        if let UniKind::Unknown(buf) = &mut self.kind {
            buf.extend_from_slice(data);
            let Some((ty, len)) = frame::read_varint(buf) else {
                return;
            };
            let rest = buf.split_off(len);
            let mut shared = self.shared.borrow_mut();
            let (seen, kind) = match ty {
                STREAM_CONTROL => (
                    &mut shared.peer_control,
                    UniKind::Control {
                        reader: FrameReader::default(),
                        settings: false,
                    },
                ),
                STREAM_QPACK_ENCODER => (&mut shared.peer_encoder, UniKind::Encoder(Vec::new())),
                STREAM_QPACK_DECODER => (&mut shared.peer_decoder, UniKind::Decoder(Vec::new())),
                STREAM_PUSH => {
                    drop(shared);
                    // Only servers push (RFC 9114 6.2.2).
                    return self.fail(code::STREAM_CREATION_ERROR, "client opened a push stream");
                }
                _ => {
                    // Unknown and reserved (GREASE) types are ignored (RFC 9114 6.2, 9).
                    self.kind = UniKind::Refused;
                    return;
                }
            };
            if std::mem::replace(seen, true) {
                drop(shared);
                return self.fail(
                    code::STREAM_CREATION_ERROR,
                    "second control or QPACK stream of one type",
                );
            }
            drop(shared);
            self.kind = kind;
            return self.process_typed(&rest);
        }
        self.process_typed(data);
    }

    fn process_typed(&mut self, data: &[u8]) {
        match &mut self.kind {
            UniKind::Control { reader, settings } => {
                reader.push(data);
                if let Err((code, reason)) = control_frames(reader, settings) {
                    self.fail(code, reason);
                }
            }
            UniKind::Encoder(buf) => {
                buf.extend_from_slice(data);
                match encoder_instructions(buf) {
                    Ok(used) => {
                        buf.drain(..used);
                    }
                    Err(reason) => self.fail(code::QPACK_ENCODER_STREAM_ERROR, reason),
                }
            }
            UniKind::Decoder(buf) => {
                buf.extend_from_slice(data);
                match decoder_instructions(buf) {
                    Ok(used) => {
                        buf.drain(..used);
                    }
                    Err(reason) => self.fail(code::QPACK_DECODER_STREAM_ERROR, reason),
                }
            }
            UniKind::Unknown(_) | UniKind::Refused | UniKind::Failed => {}
        }
    }

    fn closed(&mut self) {
        if matches!(
            self.kind,
            UniKind::Control { .. } | UniKind::Encoder(_) | UniKind::Decoder(_)
        ) {
            // RFC 9114 6.2.1, RFC 9204 4.2.
            self.fail(code::CLOSED_CRITICAL_STREAM, "critical stream closed");
        }
    }
}

/// Reads the peer's control frames: SETTINGS first and once, then GOAWAY, MAX_PUSH_ID and
/// CANCEL_PUSH; request frames are errors, unknown and GREASE types are skipped.
fn control_frames(
    reader: &mut FrameReader,
    settings: &mut bool,
) -> Result<(), (VarInt, &'static str)> {
    loop {
        let event = reader.next(|ty| {
            matches!(
                ty,
                frame::SETTINGS | frame::GOAWAY | frame::MAX_PUSH_ID | frame::CANCEL_PUSH
            )
            .then_some(MAX_CONTROL_FRAME)
        });
        let (ty, payload) = match event {
            Ok(None) => return Ok(()),
            Ok(Some(Event::Frame { ty, payload })) => (ty, Some(payload)),
            Ok(Some(Event::Skipped { ty, .. })) => (ty, None),
            Err(FrameError::TooLarge { .. }) => {
                return Err((code::EXCESSIVE_LOAD, "control frame over the size limit"))
            }
        };
        if !*settings {
            if ty != frame::SETTINGS {
                return Err((
                    code::MISSING_SETTINGS,
                    "control stream did not start with SETTINGS",
                ));
            }
            *settings = true;
            let pairs = payload
                .as_deref()
                .and_then(frame::parse_settings)
                .ok_or((code::FRAME_ERROR, "malformed SETTINGS"))?;
            check_settings(&pairs).map_err(|reason| (code::SETTINGS_ERROR, reason))?;
            continue;
        }
        match ty {
            frame::SETTINGS => return Err((code::FRAME_UNEXPECTED, "second SETTINGS frame")),
            frame::GOAWAY | frame::MAX_PUSH_ID | frame::CANCEL_PUSH => {
                // One varint each; we never push and serve until our own close.
                let p = payload.as_deref().unwrap_or_default();
                if frame::read_varint(p).map(|(_, n)| n) != Some(p.len()) {
                    return Err((code::FRAME_ERROR, "malformed control frame"));
                }
            }
            frame::DATA | frame::HEADERS | frame::PUSH_PROMISE => {
                return Err((
                    code::FRAME_UNEXPECTED,
                    "request frame on the control stream",
                ))
            }
            ty if frame::is_reserved_http2(ty) => {
                return Err((code::FRAME_UNEXPECTED, "HTTP/2 frame type"))
            }
            // Unknown and GREASE frame types are ignored (RFC 9114 9).
            _ => {}
        }
    }
}

/// SETTINGS the peer may not send (RFC 9114 7.2.4): HTTP/2's reserved identifiers and
/// duplicates. Everything else, GREASE included, is accepted.
fn check_settings(pairs: &[(u64, u64)]) -> Result<(), &'static str> {
    for (i, (id, _)) in pairs.iter().enumerate() {
        if matches!(id, 0x02..=0x05) {
            return Err("HTTP/2 setting in SETTINGS");
        }
        if pairs[..i].iter().any(|(other, _)| other == id) {
            return Err("duplicate setting");
        }
    }
    Ok(())
}

/// Checks complete encoder-stream instructions in `buf`; returns the bytes used. With a table
/// capacity of 0, only "Set Dynamic Table Capacity 0" is valid (RFC 9204 4.3).
fn encoder_instructions(buf: &[u8]) -> Result<usize, &'static str> {
    let mut pos = 0;
    while pos < buf.len() {
        if buf[pos] & 0xe0 != 0x20 {
            return Err("insertion into a dynamic table of capacity 0");
        }
        let mut p = pos;
        match qpack::read_prefix_int(buf, &mut p, 5) {
            Ok(0) => pos = p,
            Ok(_) => return Err("dynamic table capacity above our maximum of 0"),
            Err(qpack::QpackError::Truncated) => break,
            Err(_) => return Err("malformed encoder instruction"),
        }
    }
    Ok(pos)
}

/// Checks complete decoder-stream instructions in `buf`; returns the bytes used. We never
/// send sections that reference the dynamic table, so only Stream Cancellation is valid
/// (RFC 9204 4.4).
fn decoder_instructions(buf: &[u8]) -> Result<usize, &'static str> {
    let mut pos = 0;
    while pos < buf.len() {
        let b = buf[pos];
        if b & 0x80 != 0 {
            return Err("Section Acknowledgment for a section that needs none");
        }
        let mut p = pos;
        match qpack::read_prefix_int(buf, &mut p, 6) {
            Ok(_) if b & 0x40 != 0 => pos = p,
            Ok(_) => return Err("Insert Count Increment beyond our 0 insertions"),
            Err(qpack::QpackError::Truncated) => break,
            Err(_) => return Err("malformed decoder instruction"),
        }
    }
    Ok(pos)
}

impl Handler for PeerUni {
    fn on_data(&mut self, data: Bytes) {
        self.process(&data);
    }

    fn on_fin(&mut self) {
        self.closed();
    }

    fn on_reset(&mut self, _code: VarInt) {
        self.closed();
    }

    fn next_output(&mut self) -> Output {
        match self.kind {
            UniKind::Refused => Output::Reset(code::STREAM_CREATION_ERROR),
            _ => Output::Pending,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request streams
// ---------------------------------------------------------------------------------------------

enum ReqState {
    /// Reading frames until the request's HEADERS.
    Headers(FrameReader),
    /// Waiting for the file of this request to open.
    Opening(Head),
    /// Response chunks ready to write, then possibly a body.
    Responding {
        chunks: std::collections::VecDeque<Bytes>,
        body: Option<FileBody>,
    },
    Done,
    Failed(VarInt),
}

pub struct Request {
    shared: SharedRef,
    state: ReqState,
    /// The open to ask for, once the request is parsed.
    open: Option<FileOp>,
}

/// A parsed request.
#[derive(Debug, Default, PartialEq)]
struct Head {
    method: String,
    path: String,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    range: Option<String>,
    if_range: Option<String>,
}

impl Request {
    fn new(shared: SharedRef) -> Self {
        Self {
            shared,
            state: ReqState::Headers(FrameReader::default()),
            open: None,
        }
    }

    fn stream_error(&mut self, code: VarInt, reason: &str) {
        tracing::debug!(code = code.into_inner(), reason, "h3 stream error");
        self.shared.borrow_mut().stream_errors += 1;
        self.state = ReqState::Failed(code);
    }

    fn conn_error(&mut self, code: VarInt, reason: &str) {
        self.shared.borrow_mut().fail(code, reason);
        self.state = ReqState::Failed(code);
    }

    fn read_frames(&mut self) {
        let max = self.shared.borrow().config.max_field_section_size;
        loop {
            let ReqState::Headers(reader) = &mut self.state else {
                return;
            };
            // An encoded section is never larger than its decoded size (each line costs 32
            // there), so a HEADERS frame over the limit is a section over it.
            match reader.next(|ty| (ty == frame::HEADERS).then_some(max)) {
                Ok(None) => return,
                Ok(Some(Event::Frame { payload, .. })) => return self.on_headers(&payload),
                Ok(Some(Event::Skipped { ty, .. })) => match ty {
                    frame::DATA => {
                        return self.conn_error(code::FRAME_UNEXPECTED, "DATA before HEADERS")
                    }
                    frame::CANCEL_PUSH
                    | frame::SETTINGS
                    | frame::GOAWAY
                    | frame::MAX_PUSH_ID
                    | frame::PUSH_PROMISE => {
                        return self
                            .conn_error(code::FRAME_UNEXPECTED, "control frame on a request")
                    }
                    ty if frame::is_reserved_http2(ty) => {
                        return self.conn_error(code::FRAME_UNEXPECTED, "HTTP/2 frame type")
                    }
                    _ => {}
                },
                Err(FrameError::TooLarge { .. }) => {
                    self.shared.borrow_mut().stream_errors += 1;
                    return self.respond_error(431, "Request Header Fields Too Large", false);
                }
            }
        }
    }

    fn on_headers(&mut self, payload: &[u8]) {
        let decoded = {
            let mut shared = self.shared.borrow_mut();
            let max = shared.config.max_field_section_size;
            shared.decoder.decode(payload, max)
        };
        let fields = match decoded {
            Ok(fields) => fields,
            Err(qpack::QpackError::TooLarge(_)) => {
                self.shared.borrow_mut().stream_errors += 1;
                return self.respond_error(431, "Request Header Fields Too Large", false);
            }
            Err(e) => {
                return self.conn_error(code::QPACK_DECOMPRESSION_FAILED, &e.to_string());
            }
        };
        let head = match parse_head(&fields) {
            Ok(head) => head,
            Err(reason) => return self.stream_error(code::MESSAGE_ERROR, reason),
        };
        self.serve(head);
    }

    /// Answers what needs no file, or asks for the file to open.
    fn serve(&mut self, head: Head) {
        let is_head = head.method == "HEAD";
        if head.method != "GET" && !is_head {
            let mut fields = qpack::Encoder::default();
            fields
                .field(":status", "405")
                .field("allow", "GET, HEAD")
                .field("content-length", "0");
            return self.respond(fields, None);
        }
        let config = self.shared.borrow().config.clone();
        let path = match percent_decode(&head.path).map(|p| hq::parse_target(&p)) {
            Some(Ok(path)) => path,
            Some(Err(hq::RequestError::OutsideRoot)) => {
                return self.respond_error(403, "Forbidden", is_head)
            }
            Some(Err(hq::RequestError::Malformed)) | None => {
                return self.respond_error(400, "Bad Request", is_head)
            }
        };
        // A plain GET sends the file from its start: its first chunk comes with the open.
        let prefetch = !is_head
            && head.range.is_none()
            && head.if_none_match.is_none()
            && head.if_modified_since.is_none();
        self.open = Some(FileOp::Open {
            root: config.root.clone(),
            relative: path,
            prefetch,
        });
        self.state = ReqState::Opening(head);
    }

    /// Answers with the file (or a 304, 416, or the error opening it).
    fn on_opened(&mut self, head: &Head, opened: Result<Box<Opened>, VarInt>) {
        let is_head = head.method == "HEAD";
        let Opened {
            file,
            meta,
            path,
            first,
        } = match opened {
            Ok(opened) => *opened,
            Err(c) if c == hq::NOT_FOUND => return self.respond_error(404, "Not Found", is_head),
            Err(c) if c == hq::FORBIDDEN => return self.respond_error(403, "Forbidden", is_head),
            Err(_) => return self.respond_error(500, "Internal Server Error", is_head),
        };
        let len = meta.len();
        let modified = meta.modified().ok();
        let etag = etag(len, modified);
        let last_modified = modified.map(httpdate::fmt_http_date);
        // The canonical path: a directory's index.html is typed as such.
        let content_type = content_type(&path);

        let validators = |fields: &mut qpack::Encoder| {
            fields.field("etag", &etag);
            if let Some(lm) = &last_modified {
                fields.field("last-modified", lm);
            }
        };
        // RFC 9110 13.2.2: if-none-match wins over if-modified-since.
        let not_modified = match (&head.if_none_match, &head.if_modified_since) {
            (Some(inm), _) => etag_list_matches(inm, &etag),
            (None, Some(ims)) => match (httpdate::parse_http_date(ims), modified) {
                (Ok(since), Some(m)) => truncate_to_secs(m) <= since,
                _ => false,
            },
            (None, None) => false,
        };
        if not_modified {
            let mut fields = qpack::Encoder::default();
            fields.field(":status", "304");
            validators(&mut fields);
            return self.respond(fields, None);
        }

        // Ranges apply to GET only (RFC 9110 14.2); if-range falls back to the whole file
        // when the validator does not match.
        let range_applies = !is_head
            && head.range.is_some()
            && head.if_range.as_deref().is_none_or(|ir| {
                ir == etag || (last_modified.as_deref() == Some(ir) && !ir.starts_with('"'))
            });
        let (status, start, count) = match head.range.as_deref().filter(|_| range_applies) {
            Some(range) => match parse_range(range, len) {
                RangeResult::Whole => (200, 0, len),
                RangeResult::Part(start, end) => (206, start, end - start + 1),
                RangeResult::Unsatisfiable => {
                    let mut fields = qpack::Encoder::default();
                    fields
                        .field(":status", "416")
                        .field("content-range", &format!("bytes */{len}"))
                        .field("content-length", "0");
                    return self.respond(fields, None);
                }
            },
            None => (200, 0, len),
        };
        let mut fields = qpack::Encoder::default();
        fields
            .field(":status", &status.to_string())
            .field("content-length", &count.to_string())
            .field("content-type", content_type)
            .field("accept-ranges", "bytes");
        validators(&mut fields);
        if status == 206 {
            fields.field(
                "content-range",
                &format!("bytes {start}-{}/{len}", start + count - 1),
            );
        }
        if is_head || count == 0 {
            return self.respond(fields, None);
        }
        let body = if start == 0 && count == len {
            FileBody::with_first(file, len, first)
        } else {
            FileBody::new(file, start, count)
        };
        self.respond(fields, Some(body));
    }

    fn respond(&mut self, fields: qpack::Encoder, body: Option<FileBody>) {
        let headers = frame::encode_frame(frame::HEADERS, &fields.finish());
        self.state = ReqState::Responding {
            chunks: [Bytes::from(headers)].into(),
            body,
        };
    }

    /// An error as an HTTP response with a short text body.
    fn respond_error(&mut self, status: u16, reason: &str, is_head: bool) {
        let body = format!("{status} {reason}\n");
        let mut fields = qpack::Encoder::default();
        fields
            .field(":status", &status.to_string())
            .field("content-type", "text/plain")
            .field("content-length", &body.len().to_string());
        let headers = frame::encode_frame(frame::HEADERS, &fields.finish());
        let mut chunks = std::collections::VecDeque::from([Bytes::from(headers)]);
        if !is_head {
            chunks.push_back(frame::encode_frame(frame::DATA, body.as_bytes()).into());
        }
        self.state = ReqState::Responding { chunks, body: None };
    }
}

impl Handler for Request {
    fn on_data(&mut self, data: Bytes) {
        // Once answered, the rest of the request (a body, trailers) is read and dropped.
        if let ReqState::Headers(reader) = &mut self.state {
            reader.push(&data);
            self.read_frames();
        }
    }

    fn on_fin(&mut self) {
        if let ReqState::Headers(reader) = &self.state {
            if reader.at_boundary() {
                self.stream_error(code::REQUEST_INCOMPLETE, "request ended before its HEADERS");
            } else {
                // RFC 9114 7.1: a frame cut short by the end of its stream.
                self.conn_error(code::FRAME_ERROR, "request ended inside a frame");
            }
        }
    }

    fn next_output(&mut self) -> Output {
        match &mut self.state {
            ReqState::Headers(_) | ReqState::Opening(_) => Output::Pending,
            ReqState::Failed(code) => Output::Reset(*code),
            ReqState::Done => Output::Finish,
            ReqState::Responding { chunks, body } => {
                if let Some(chunk) = chunks.pop_front() {
                    return Output::Chunk(chunk);
                }
                let Some(b) = body else {
                    self.state = ReqState::Done;
                    return Output::Finish;
                };
                match b.next_chunk() {
                    BodyNext::Chunk(data) => {
                        let mut header = Vec::with_capacity(9);
                        frame::write_varint(&mut header, frame::DATA);
                        frame::write_varint(&mut header, data.len() as u64);
                        chunks.push_back(data);
                        Output::Chunk(header.into())
                    }
                    BodyNext::Wait => Output::Pending,
                    BodyNext::End => {
                        self.state = ReqState::Done;
                        Output::Finish
                    }
                    BodyNext::Failed => {
                        // The promised content-length cannot be kept.
                        self.state = ReqState::Failed(code::INTERNAL_ERROR);
                        Output::Reset(code::INTERNAL_ERROR)
                    }
                }
            }
        }
    }

    fn take_file_op(&mut self) -> Option<FileOp> {
        if let Some(open) = self.open.take() {
            return Some(open);
        }
        match &mut self.state {
            ReqState::Responding { body: Some(b), .. } => b.next_op(),
            _ => None,
        }
    }

    fn on_file(&mut self, done: FileDone) {
        match done {
            FileDone::Opened(opened) => {
                if let ReqState::Opening(head) = std::mem::replace(&mut self.state, ReqState::Done)
                {
                    self.on_opened(&head, opened);
                }
            }
            FileDone::Read(result) => {
                if let ReqState::Responding { body: Some(b), .. } = &mut self.state {
                    b.on_read(result);
                }
            }
        }
    }
}

/// Validates a request's fields (RFC 9114 4.2, 4.3.1) and picks out what we use.
fn parse_head(fields: &[qpack::Field]) -> Result<Head, &'static str> {
    let mut head = Head::default();
    let (mut method, mut scheme, mut path, mut authority) = (None, None, None, None);
    let mut regular = false;
    for (name, value) in fields {
        if value.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')) {
            return Err("invalid character in a field value");
        }
        let value = std::str::from_utf8(value).map_err(|_| "field value is not UTF-8");
        if let Some(pseudo) = name.strip_prefix(b":") {
            if regular {
                return Err("pseudo-header after a regular field");
            }
            let slot = match pseudo {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"path" => &mut path,
                b"authority" => &mut authority,
                _ => return Err("unknown pseudo-header"),
            };
            if slot.replace(value?.to_string()).is_some() {
                return Err("duplicate pseudo-header");
            }
            continue;
        }
        regular = true;
        if name.is_empty()
            || name
                .iter()
                .any(|&b| b <= b' ' || b >= 0x7f || b.is_ascii_uppercase() || b == b':')
        {
            return Err("invalid field name");
        }
        match name.as_slice() {
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding"
            | b"upgrade" => return Err("connection-specific field"),
            b"te" if value? != "trailers" => return Err("te other than trailers"),
            b"if-none-match" => head.if_none_match = Some(value?.to_string()),
            b"if-modified-since" => head.if_modified_since = Some(value?.to_string()),
            b"range" => head.range = Some(value?.to_string()),
            b"if-range" => head.if_range = Some(value?.to_string()),
            _ => {}
        }
    }
    head.method = method.ok_or("no :method")?;
    if head.method == "CONNECT" {
        // Answered with 405 like any method we don't serve.
        return Ok(head);
    }
    if scheme.is_none() {
        return Err("no :scheme");
    }
    head.path = path.filter(|p| !p.is_empty()).ok_or("no :path")?;
    Ok(head)
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A strong validator from the size and modification time.
fn etag(len: u64, modified: Option<SystemTime>) -> String {
    let nanos = modified
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{len:x}-{nanos:x}\"")
}

/// `if-none-match`: `*` or a list of entity tags, compared weakly (RFC 9110 13.1.2).
fn etag_list_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// HTTP dates have whole seconds: compare modification times at that precision.
fn truncate_to_secs(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

#[derive(Debug, PartialEq, Eq)]
enum RangeResult {
    /// Ignore the header: serve everything (unparseable, several ranges, other units).
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// A single `bytes=` range (RFC 9110 14.1.2). Several ranges are answered with the whole
/// file, which the RFC allows.
fn parse_range(header: &str, len: u64) -> RangeResult {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeResult::Whole;
    };
    if spec.contains(',') {
        return RangeResult::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeResult::Whole;
    };
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first.is_empty(), num(first), num(last)) {
        // Suffix: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                RangeResult::Unsatisfiable
            } else {
                RangeResult::Part(len - n.min(len), len - 1)
            }
        }
        (false, Some(start), end) if last.is_empty() || end.is_some() => {
            if end.is_some_and(|e| e < start) {
                return RangeResult::Whole;
            }
            if start >= len {
                return RangeResult::Unsatisfiable;
            }
            RangeResult::Part(start, end.map_or(len - 1, |e| e.min(len - 1)))
        }
        _ => RangeResult::Whole,
    }
}

/// `content-type` by file extension.
fn content_type(path: &std::path::Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js" | "mjs") => "text/javascript",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("xml") => "application/xml",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        Some("pdf") => "application/pdf",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests;

/// The fuzz harness of the h3 app ([`crate::fuzzing::h3`]): `data`'s first byte picks what
/// the rest is fed to, in pieces split at the next bytes' values:
///
/// - 0: a request stream (then FIN), its file operations run against a root that does not
///   exist: never panics, ends (reset or finish) within a bounded number of outputs, and what
///   it sends is well-formed frames (a HEADERS frame whose fields our decoder reads back);
/// - 1: a peer's unidirectional stream (control, QPACK, unknown types): never panics;
/// - else: a QPACK field section: never panics, and fields it decodes encode (with our
///   encoder) and decode back to the same fields.
#[cfg(all(target_os = "linux", any(test, feature = "fuzzing")))]
pub fn fuzz(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let config = Arc::new(H3Config {
        root: Arc::new(PathBuf::from("/nonexistent/quixd-fuzz-root")),
        max_field_section_size: 4096,
    });
    let app = H3App::new(config);
    // Pieces: each starts with its length byte (the last takes what is left).
    let pieces = || {
        let mut rest = rest;
        std::iter::from_fn(move || {
            let (&n, tail) = rest.split_first()?;
            let n = usize::from(n).min(tail.len());
            let (piece, after) = tail.split_at(n);
            rest = after;
            Some(Bytes::copy_from_slice(piece))
        })
    };
    match which {
        0 => {
            let mut req = Request::new(app.shared.clone());
            for piece in pieces() {
                req.on_data(piece);
            }
            req.on_fin();
            let mut out = Vec::new();
            for _ in 0..64 {
                if let Some(op) = req.take_file_op() {
                    req.on_file(op.run());
                    continue;
                }
                match req.next_output() {
                    Output::Chunk(c) => out.extend_from_slice(&c),
                    Output::Finish | Output::Reset(_) => break,
                    Output::Pending => panic!("a finished request waits for nothing"),
                }
            }
            let mut reader = FrameReader::default();
            reader.push(&out);
            while let Some(event) = reader.next(|_| Some(1 << 20)).expect("our own frames") {
                if let Event::Frame {
                    ty: frame::HEADERS,
                    payload,
                } = event
                {
                    qpack::Decoder::default()
                        .decode(&payload, 1 << 20)
                        .expect("our own field section");
                }
            }
            assert!(reader.at_boundary(), "a response frame cut short");
        }
        1 => {
            let mut uni = PeerUni::new(app.shared.clone());
            for piece in pieces() {
                uni.on_data(piece);
            }
            uni.on_fin();
            let _ = uni.next_output();
        }
        _ => {
            let Ok(fields) = qpack::Decoder::default().decode(rest, 1 << 16) else {
                return;
            };
            let mut enc = qpack::Encoder::default();
            let mut ok = true;
            for (name, value) in &fields {
                match (std::str::from_utf8(name), std::str::from_utf8(value)) {
                    (Ok(n), Ok(v)) => {
                        enc.field(n, v);
                    }
                    // Our encoder takes text; binary fields are checked by decoding only.
                    _ => ok = false,
                }
            }
            if ok {
                let again = qpack::Decoder::default()
                    .decode(&enc.finish(), 1 << 20)
                    .expect("our own encoding decodes");
                assert_eq!(again, fields, "QPACK round trip");
            }
        }
    }
}

/// Seeds for [`fuzz`]: requests a client sends (split in pieces), peer streams, field sections.
#[cfg(all(target_os = "linux", test))]
pub fn fuzz_seeds() -> Vec<(String, Vec<u8>)> {
    // `which`, then pieces of at most 255 bytes, each after its length.
    let input = |which: u8, bytes: &[u8], piece: usize| {
        let mut out = vec![which];
        for chunk in bytes.chunks(piece.clamp(1, 255)) {
            out.push(chunk.len() as u8);
            out.extend_from_slice(chunk);
        }
        out
    };
    let request = |fields: &[(&str, &str)]| {
        let mut enc = qpack::Encoder::default();
        for (n, v) in fields {
            enc.field(n, v);
        }
        enc.finish()
    };
    let get = |path: &str, extra: &[(&str, &str)]| {
        let mut fields = vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", path),
        ];
        fields.extend_from_slice(extra);
        frame::encode_frame(frame::HEADERS, &request(&fields))
    };
    let mut settings = Vec::new();
    for (id, value) in [(SETTING_QPACK_MAX_TABLE_CAPACITY, 0), (0x21, 7)] {
        frame::write_varint(&mut settings, id);
        frame::write_varint(&mut settings, value);
    }
    let mut control = Vec::new();
    frame::write_varint(&mut control, STREAM_CONTROL);
    control.extend_from_slice(&frame::encode_frame(frame::SETTINGS, &settings));
    control.extend_from_slice(&frame::encode_frame(frame::GOAWAY, &[0]));
    let mut grease = get("/", &[]);
    grease.splice(0..0, frame::encode_frame(0x21, b"grease"));
    let head = frame::encode_frame(
        frame::HEADERS,
        &request(&[(":method", "HEAD"), (":scheme", "https"), (":path", "/x")]),
    );
    vec![
        (
            "request-get".into(),
            input(0, &get("/index.html", &[]), 255),
        ),
        (
            "request-byte-by-byte".into(),
            input(0, &get("/a/b", &[]), 1),
        ),
        (
            "request-range".into(),
            input(0, &get("/f", &[("range", "bytes=5-9")]), 7),
        ),
        (
            "request-conditional".into(),
            input(0, &get("/f", &[("if-none-match", "\"x\"")]), 64),
        ),
        ("request-head".into(), input(0, &head, 255)),
        ("request-grease".into(), input(0, &grease, 255)),
        (
            "request-truncated".into(),
            input(0, &get("/", &[])[..5], 255),
        ),
        ("control-stream".into(), input(1, &control, 3)),
        (
            "qpack-encoder-stream".into(),
            input(1, &[0x02, 0x3f, 0xe1, 0x1f], 255),
        ),
        (
            "grease-stream".into(),
            input(1, &[0x40, 0x21, 1, 2, 3], 255),
        ),
        (
            "qpack-fields".into(),
            [
                &[2u8][..],
                &request(&[(":status", "200"), ("x-custom", "Value")]),
            ]
            .concat(),
        ),
    ]
}
