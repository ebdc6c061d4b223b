//! Applications, chosen per connection by the negotiated ALPN.
//!
//! Each application is a per-stream [`Handler`]: bytes in, chunks out. [`Session`] does the
//! quinn-proto stream bookkeeping for all of them: accepting streams, reading with
//! backpressure, writing chunks until flow control blocks, finishing, resets and stops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use quinn_proto::{Connection, Dir, ReadError, StreamEvent, StreamId, VarInt, WriteError};

use crate::config;

mod echo;
mod hq;
mod perf;

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

/// One application's logic for one bidirectional stream.
pub trait Handler {
    /// Whether to read more input now; `false` applies backpressure to the peer.
    fn wants_input(&self) -> bool {
        true
    }
    /// Received bytes, in order.
    fn on_data(&mut self, data: Bytes);
    /// The peer finished its side of the stream.
    fn on_fin(&mut self);
    /// The next output.
    fn next_output(&mut self) -> Output;
}

/// Which application an ALPN selects.
#[derive(Clone, Debug)]
enum AppKind {
    Hq(Arc<PathBuf>),
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
        for (list, kind) in [(&apps.perf, AppKind::Perf), (&apps.echo, AppKind::Echo)] {
            for alpn in list.iter().flat_map(|a| &a.alpn) {
                by_alpn.push((alpn.as_bytes().to_vec(), kind.clone()));
            }
        }
        Ok(Self { by_alpn })
    }

    /// Every ALPN served, in configuration order (the server's preference).
    pub fn alpns(&self) -> Vec<Vec<u8>> {
        self.by_alpn.iter().map(|(a, _)| a.clone()).collect()
    }

    /// A session for a connection that negotiated `alpn`.
    pub fn session(&self, alpn: &[u8]) -> Option<Session> {
        let (_, kind) = self.by_alpn.iter().find(|(a, _)| a == alpn)?;
        Some(Session {
            kind: kind.clone(),
            streams: HashMap::new(),
        })
    }
}

struct StreamState {
    handler: Box<dyn Handler>,
    /// Output taken from the handler that flow control has not accepted yet.
    pending: Option<Bytes>,
    recv_done: bool,
    send_done: bool,
}

/// Application state of one connection.
pub struct Session {
    kind: AppKind,
    streams: HashMap<StreamId, StreamState>,
}

/// The code we use to refuse streams an application does not serve (e.g. unidirectional).
const STREAM_REFUSED: VarInt = VarInt::from_u32(0x0101);

impl Session {
    /// Whether any stream still has work or unacknowledged output.
    pub fn has_active_streams(&self) -> bool {
        !self.streams.is_empty()
    }

    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    fn new_handler(&self) -> Box<dyn Handler> {
        match &self.kind {
            AppKind::Hq(root) => Box::new(hq::HqStream::new(root.clone())),
            AppKind::Perf => Box::new(perf::PerfStream::default()),
            AppKind::Echo => Box::new(echo::EchoStream::default()),
        }
    }

    /// Accepts every stream the peer has opened. Call after the session starts and on
    /// `StreamEvent::Opened`.
    pub fn accept_streams(&mut self, conn: &mut Connection) {
        while let Some(id) = conn.streams().accept(Dir::Uni) {
            let _ = conn.recv_stream(id).stop(STREAM_REFUSED);
        }
        while let Some(id) = conn.streams().accept(Dir::Bi) {
            let state = StreamState {
                handler: self.new_handler(),
                pending: None,
                recv_done: false,
                send_done: false,
            };
            self.streams.insert(id, state);
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
                self.streams.remove(&id);
            }
            StreamEvent::Available { .. } => {}
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
            if !progressed {
                break;
            }
        }
        self.retire_if_done(conn, id);
    }

    fn retire_if_done(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if s.send_done {
            if !s.recv_done {
                // We are done talking; don't make the peer keep sending.
                let _ = conn.recv_stream(id).stop(VarInt::from_u32(0));
            }
            self.streams.remove(&id);
        }
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
        s.recv_done = true;
        s.send_done = true;
        let _ = conn.send_stream(id).reset(code);
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
