//! Applications, chosen per connection by the negotiated ALPN.
//!
//! Each application is a per-stream [`Handler`]: bytes in, chunks out. A per-connection
//! [`ConnApp`] picks the handler for each stream the peer opens and may open unidirectional
//! streams of its own (HTTP/3's control stream). [`Session`] does the quinn-proto stream
//! bookkeeping for all of them: accepting streams, reading with backpressure, writing chunks
//! until flow control blocks, finishing, resets and stops. Handlers that serve files ask for
//! [`files::FileOp`]s; the driver runs them off its thread and hands the results back through
//! [`Session::on_file`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use quinn_proto::{Connection, Dir, ReadError, StreamEvent, StreamId, VarInt, WriteError};

use crate::config;

mod echo;
pub mod files;
mod h3;
mod hq;
mod perf;

use files::{FileDone, FileOp};

#[cfg(all(target_os = "linux", any(test, feature = "fuzzing")))]
pub use h3::fuzz as h3_fuzz;
#[cfg(all(target_os = "linux", test))]
pub use h3::fuzz_seeds as h3_fuzz_seeds;
pub use hq::{parse_request, RequestError};

/// What a handler has to send next.
pub enum Output {
    /// Bytes to send (zero-copy: quinn-proto keeps the `Bytes`).
    Chunk(Bytes),
    /// Nothing right now; ask again after more input.
    Pending,
    /// All output is written: finish the stream.
    Finish,
    /// Abandon the stream with this application error code.
    Reset(VarInt),
}

/// One application's logic for one stream. On a stream the peer opened for sending only,
/// `next_output` is asked only for [`Output::Reset`] (stop reading with that code); on one we
/// opened for sending only, no input ever comes.
pub trait Handler {
    /// Whether to read more input now; `false` applies backpressure to the peer.
    fn wants_input(&self) -> bool {
        true
    }
    /// Received bytes, in order.
    fn on_data(&mut self, data: Bytes);
    /// The peer finished its side of the stream.
    fn on_fin(&mut self);
    /// The peer abandoned its side of the stream with `code`.
    fn on_reset(&mut self, _code: VarInt) {}
    /// The next output.
    fn next_output(&mut self) -> Output;
    /// A file operation to run off the datapath thread; its result comes to
    /// [`Handler::on_file`]. Asked after every exchange, until `None`.
    fn take_file_op(&mut self) -> Option<FileOp> {
        None
    }
    /// The result of an operation from [`Handler::take_file_op`], in the order asked.
    fn on_file(&mut self, _done: FileDone) {}
}

/// One application's logic for one connection.
pub trait ConnApp {
    /// A handler for a stream the peer opened, or the code to refuse the stream with.
    fn accept(&mut self, id: StreamId) -> Result<Box<dyn Handler>, VarInt>;
    /// A handler for a unidirectional stream to open now; asked until `None`.
    fn open_uni(&mut self) -> Option<Box<dyn Handler>> {
        None
    }
    /// A graceful shutdown began. Returns whether the application queued a notice (such as
    /// HTTP/3's GOAWAY) that the peer should get before the connection closes.
    fn begin_shutdown(&mut self) -> bool {
        false
    }
    /// A connection error the application found: close with this code and reason.
    fn take_close(&mut self) -> Option<(VarInt, String)> {
        None
    }
    /// Streams refused or reset for a protocol error since the last call (for counters).
    fn take_stream_errors(&mut self) -> u64 {
        0
    }
    /// The code for STOP_SENDING when we need no more of a stream (not an error).
    fn no_error(&self) -> VarInt {
        VarInt::from_u32(0)
    }
}

/// Apps whose streams are independent: a handler per bidirectional stream, no unidirectional
/// streams.
struct PerStream(AppKind);

impl ConnApp for PerStream {
    fn accept(&mut self, id: StreamId) -> Result<Box<dyn Handler>, VarInt> {
        if id.dir() == Dir::Uni {
            return Err(STREAM_REFUSED);
        }
        Ok(match &self.0 {
            AppKind::Hq(root) => Box::new(hq::HqStream::new(root.clone())),
            AppKind::Perf => Box::new(perf::PerfStream::default()),
            AppKind::Echo => Box::new(echo::EchoStream::default()),
            // Served by `h3::H3App`, never through here.
            AppKind::H3(_) => return Err(STREAM_REFUSED),
        })
    }
}

/// Which application an ALPN selects.
#[derive(Clone, Debug)]
enum AppKind {
    Hq(Arc<PathBuf>),
    H3(Arc<h3::H3Config>),
    Perf,
    Echo,
}

/// The configured applications, by ALPN.
#[derive(Clone, Debug, Default)]
pub struct Apps {
    by_alpn: Vec<(Vec<u8>, AppKind)>,
}

impl Apps {
    pub fn from_config(apps: &config::Apps) -> std::io::Result<Self> {
        let mut by_alpn = Vec::new();
        if let Some(hq) = &apps.hq {
            // Canonical once, so each request's containment check is a plain prefix test.
            let root = Arc::new(hq.root.canonicalize()?);
            for alpn in &hq.alpn {
                by_alpn.push((alpn.as_bytes().to_vec(), AppKind::Hq(root.clone())));
            }
        }
        if let Some(app) = &apps.h3 {
            let config = Arc::new(h3::H3Config {
                root: Arc::new(app.root.canonicalize()?),
                max_field_section_size: app.max_field_section_size,
            });
            for alpn in &app.alpn {
                by_alpn.push((alpn.as_bytes().to_vec(), AppKind::H3(config.clone())));
            }
        }
        for (list, kind) in [(&apps.perf, AppKind::Perf), (&apps.echo, AppKind::Echo)] {
            for alpn in list.iter().flat_map(|a| &a.alpn) {
                by_alpn.push((alpn.as_bytes().to_vec(), kind.clone()));
            }
        }
        Ok(Self { by_alpn })
    }

    /// Whether an application serves files (hq, h3).
    pub fn serves_files(&self) -> bool {
        self.by_alpn
            .iter()
            .any(|(_, k)| matches!(k, AppKind::Hq(_) | AppKind::H3(_)))
    }

    /// Every ALPN served, in configuration order (the server's preference).
    pub fn alpns(&self) -> Vec<Vec<u8>> {
        self.by_alpn.iter().map(|(a, _)| a.clone()).collect()
    }

    /// A session for a connection that negotiated `alpn`.
    pub fn session(&self, alpn: &[u8]) -> Option<Session> {
        let (_, kind) = self.by_alpn.iter().find(|(a, _)| a == alpn)?;
        let app: Box<dyn ConnApp> = match kind {
            AppKind::H3(config) => Box::new(h3::H3App::new(config.clone())),
            other => Box::new(PerStream(other.clone())),
        };
        Some(Session {
            app,
            streams: HashMap::new(),
            bidi: 0,
            pending_uni: None,
            file_ops: Vec::new(),
        })
    }
}

struct StreamState {
    handler: Box<dyn Handler>,
    /// Output taken from the handler that flow control has not accepted yet.
    pending: Option<Bytes>,
    /// Whether we send on this stream (false: the peer's unidirectional stream).
    has_send: bool,
    recv_done: bool,
    send_done: bool,
}

/// Application state of one connection.
pub struct Session {
    app: Box<dyn ConnApp>,
    streams: HashMap<StreamId, StreamState>,
    /// Bidirectional streams (requests) among `streams`.
    bidi: usize,
    /// A stream the app wants to open that the peer's stream limit holds back.
    pending_uni: Option<Box<dyn Handler>>,
    /// File operations the handlers asked for, for the driver to run.
    file_ops: Vec<(StreamId, FileOp)>,
}

/// The code we use to refuse streams an application does not serve (e.g. unidirectional).
const STREAM_REFUSED: VarInt = VarInt::from_u32(0x0101);

impl Session {
    /// Whether any request (bidirectional) stream still has work or unacknowledged output.
    /// Unidirectional streams are connection plumbing (HTTP/3 control streams never end), so
    /// they do not keep a draining connection open.
    pub fn has_active_streams(&self) -> bool {
        self.bidi > 0
    }

    pub fn active_streams(&self) -> usize {
        self.bidi
    }

    /// A graceful shutdown began: lets the application send its notice. Returns whether it
    /// did (then the connection should close on a later pass, once that went out).
    pub fn begin_shutdown(&mut self, conn: &mut Connection) -> bool {
        let notice = self.app.begin_shutdown();
        if notice {
            let ids: Vec<StreamId> = self.streams.keys().copied().collect();
            for id in ids {
                self.pump(conn, id);
            }
        }
        notice
    }

    /// The application's code for closing without an error (graceful shutdown).
    pub fn no_error(&self) -> VarInt {
        self.app.no_error()
    }

    /// A connection error the application found (close with it).
    pub fn take_close(&mut self) -> Option<(VarInt, String)> {
        self.app.take_close()
    }

    /// Streams refused or reset for protocol errors since the last call.
    pub fn take_stream_errors(&mut self) -> u64 {
        self.app.take_stream_errors()
    }

    /// Accepts every stream the peer has opened and opens the application's own. Call after
    /// the session starts and on `StreamEvent::Opened`.
    pub fn accept_streams(&mut self, conn: &mut Connection) {
        self.open_streams(conn);
        for dir in [Dir::Uni, Dir::Bi] {
            while let Some(id) = conn.streams().accept(dir) {
                match self.app.accept(id) {
                    Ok(handler) => {
                        let bidi = dir == Dir::Bi;
                        let state = StreamState {
                            handler,
                            pending: None,
                            has_send: bidi,
                            recv_done: false,
                            // Nothing to send on the peer's unidirectional stream.
                            send_done: !bidi,
                        };
                        self.bidi += usize::from(bidi);
                        self.streams.insert(id, state);
                        self.pump(conn, id);
                    }
                    Err(code) => {
                        if dir == Dir::Bi {
                            let _ = conn.send_stream(id).reset(code);
                        }
                        let _ = conn.recv_stream(id).stop(code);
                    }
                }
            }
        }
    }

    /// Opens the unidirectional streams the application asks for, while the peer allows.
    fn open_streams(&mut self, conn: &mut Connection) {
        loop {
            let Some(handler) = self.pending_uni.take().or_else(|| self.app.open_uni()) else {
                return;
            };
            let Some(id) = conn.streams().open(Dir::Uni) else {
                // Retried on `StreamEvent::Available`.
                self.pending_uni = Some(handler);
                return;
            };
            let state = StreamState {
                handler,
                pending: None,
                has_send: true,
                recv_done: true,
                send_done: false,
            };
            self.streams.insert(id, state);
            self.pump(conn, id);
        }
    }

    /// The file operations handlers asked for since the last call, by stream.
    pub fn take_file_ops(&mut self) -> std::vec::Drain<'_, (StreamId, FileOp)> {
        self.file_ops.drain(..)
    }

    /// The result of a file operation of stream `id` (ignored if the stream is gone).
    pub fn on_file(&mut self, conn: &mut Connection, id: StreamId, done: FileDone) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.handler.on_file(done);
            self.pump(conn, id);
        }
    }

    pub fn on_stream_event(&mut self, conn: &mut Connection, event: StreamEvent) {
        match event {
            StreamEvent::Opened { .. } => self.accept_streams(conn),
            StreamEvent::Readable { id } | StreamEvent::Writable { id } => self.pump(conn, id),
            StreamEvent::Finished { id } => {
                // Everything we sent is acknowledged.
                if let Some(s) = self.streams.get_mut(&id) {
                    s.send_done = true;
                    self.retire_if_done(conn, id);
                }
            }
            StreamEvent::Stopped { id, error_code } => {
                let _ = conn.send_stream(id).reset(error_code);
                if let Some(s) = self.streams.get_mut(&id) {
                    s.send_done = true;
                    if !s.recv_done {
                        let _ = conn.recv_stream(id).stop(error_code);
                        s.recv_done = true;
                    }
                }
                self.remove(id);
            }
            StreamEvent::Available { dir: Dir::Uni } => self.open_streams(conn),
            StreamEvent::Available { .. } => {}
        }
    }

    fn remove(&mut self, id: StreamId) {
        if let Some(s) = self.streams.remove(&id) {
            self.bidi -= usize::from(s.has_send && id.dir() == Dir::Bi);
        }
    }

    /// Moves data both ways on one stream until it blocks.
    fn pump(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        // Output first: a handler that was holding back input may want more once it drains.
        loop {
            let progressed = write_output(conn, id, s) | read_input(conn, id, s);
            if !s.has_send {
                stop_if_asked(conn, id, s);
            }
            if !progressed {
                break;
            }
        }
        while let Some(op) = s.handler.take_file_op() {
            self.file_ops.push((id, op));
        }
        self.retire_if_done(conn, id);
    }

    fn retire_if_done(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        // A stream only we receive on ends with its input; the others when output is done.
        let done = if s.has_send { s.send_done } else { s.recv_done };
        if done {
            if !s.recv_done {
                // We are done talking; don't make the peer keep sending.
                let _ = conn.recv_stream(id).stop(self.app.no_error());
            }
            self.remove(id);
        }
    }
}

/// On a stream only the peer sends on, a handler's `Output::Reset` means "stop reading".
fn stop_if_asked(conn: &mut Connection, id: StreamId, s: &mut StreamState) {
    if s.recv_done {
        return;
    }
    if let Output::Reset(code) = s.handler.next_output() {
        let _ = conn.recv_stream(id).stop(code);
        s.recv_done = true;
    }
}

/// Reads what the handler wants. Returns whether anything happened.
fn read_input(conn: &mut Connection, id: StreamId, s: &mut StreamState) -> bool {
    if s.recv_done || !s.handler.wants_input() {
        return false;
    }
    let mut recv = conn.recv_stream(id);
    let mut chunks = match recv.read(true) {
        Ok(chunks) => chunks,
        Err(_) => {
            s.recv_done = true;
            return true;
        }
    };
    let mut progressed = false;
    let mut reset = None;
    while s.handler.wants_input() {
        match chunks.next(usize::MAX) {
            Ok(Some(chunk)) => {
                s.handler.on_data(chunk.bytes);
                progressed = true;
            }
            Ok(None) => {
                s.handler.on_fin();
                s.recv_done = true;
                progressed = true;
                break;
            }
            Err(ReadError::Blocked) => break,
            Err(ReadError::Reset(code)) => {
                reset = Some(code);
                break;
            }
        }
    }
    // Flow-control credit goes out with the next transmit, which the driver always polls.
    let _ = chunks.finalize();
    if let Some(code) = reset {
        // The peer abandoned its request: abandon our answer too.
        s.handler.on_reset(code);
        s.recv_done = true;
        s.send_done = true;
        if s.has_send {
            let _ = conn.send_stream(id).reset(code);
        }
        return true;
    }
    progressed
}

/// Writes the handler's output until flow control blocks. Returns whether anything happened.
fn write_output(conn: &mut Connection, id: StreamId, s: &mut StreamState) -> bool {
    let mut progressed = false;
    while !s.send_done {
        let mut chunk = match s.pending.take() {
            Some(chunk) => chunk,
            None => match s.handler.next_output() {
                Output::Chunk(chunk) if chunk.is_empty() => continue,
                Output::Chunk(chunk) => chunk,
                Output::Pending => break,
                Output::Finish => {
                    // Finished streams stay until the peer acknowledges everything
                    // (`StreamEvent::Finished`), so a graceful shutdown waits for them.
                    if conn.send_stream(id).finish().is_err() {
                        s.send_done = true;
                    }
                    s.handler = Box::new(Finished);
                    return true;
                }
                Output::Reset(code) => {
                    let _ = conn.send_stream(id).reset(code);
                    if !s.recv_done {
                        let _ = conn.recv_stream(id).stop(code);
                        s.recv_done = true;
                    }
                    s.send_done = true;
                    return true;
                }
            },
        };
        match conn
            .send_stream(id)
            .write_chunks(std::slice::from_mut(&mut chunk))
        {
            Ok(written) => {
                progressed |= written.bytes > 0;
                if !chunk.is_empty() {
                    s.pending = Some(chunk);
                    break;
                }
            }
            Err(WriteError::Blocked) => {
                s.pending = Some(chunk);
                break;
            }
            Err(WriteError::Stopped(_)) | Err(WriteError::ClosedStream) => {
                s.send_done = true;
                return true;
            }
        }
    }
    progressed
}

/// The handler of a stream whose output is complete: it ignores further input.
struct Finished;

impl Handler for Finished {
    fn on_data(&mut self, _: Bytes) {}
    fn on_fin(&mut self) {}
    fn next_output(&mut self) -> Output {
        Output::Pending
    }
}
