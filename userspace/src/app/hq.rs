//! `hq-interop`: HTTP/0.9 over QUIC, the QUIC interop runner's file protocol.
//!
//! The client sends `GET /path\r\n` and finishes; we answer with the file and finish. Files
//! are opened and read off the datapath thread ([`super::files`]) and streamed in chunks as
//! flow control allows, never read whole.

use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use quinn_proto::VarInt;

use super::files::{BodyNext, FileBody, FileDone, FileOp};
use super::{Handler, Output};

/// Stream reset codes (application errors), shaped after HTTP status codes.
pub const BAD_REQUEST: VarInt = VarInt::from_u32(0x400);
pub const FORBIDDEN: VarInt = VarInt::from_u32(0x403);
pub const NOT_FOUND: VarInt = VarInt::from_u32(0x404);
pub const INTERNAL_ERROR: VarInt = VarInt::from_u32(0x500);

/// Longest request line we accept.
const MAX_REQUEST: usize = 8 * 1024;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request line")]
    Malformed,
    #[error("path leaves the document root")]
    OutsideRoot,
}

impl RequestError {
    fn code(&self) -> VarInt {
        match self {
            RequestError::Malformed => BAD_REQUEST,
            RequestError::OutsideRoot => FORBIDDEN,
        }
    }
}

/// Parses an HTTP/0.9 request (`GET /path` up to CR/LF or the end) into a path relative to
/// the document root, refusing anything that could leave it lexically (`..`, absolute paths,
/// drive prefixes). Symlinks are checked when the file is opened.
pub fn parse_request(request: &[u8]) -> Result<PathBuf, RequestError> {
    let line_end = request
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(request.len());
    let line = std::str::from_utf8(&request[..line_end]).map_err(|_| RequestError::Malformed)?;
    let mut words = line.split_ascii_whitespace();
    let (Some("GET"), Some(target), None) = (words.next(), words.next(), words.next()) else {
        return Err(RequestError::Malformed);
    };
    parse_target(target)
}

/// Maps a request target (`/a/b?q`) to a path relative to the document root, refusing
/// anything that could leave it lexically. Shared by the hq and h3 apps.
pub(super) fn parse_target(target: &str) -> Result<PathBuf, RequestError> {
    let target = target.split(['?', '#']).next().unwrap_or_default();
    // The target is root-relative: exactly one leading '/' is stripped; what remains must be
    // relative ("//etc/passwd" is an absolute path in disguise).
    let relative = target.strip_prefix('/').ok_or(RequestError::Malformed)?;
    if relative.contains(['\0', '\\']) {
        return Err(RequestError::Malformed);
    }
    let mut path = PathBuf::new();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(RequestError::OutsideRoot)
            }
        }
    }
    if path.as_os_str().is_empty() {
        path.push("index.html");
    }
    Ok(path)
}

/// Opens `relative` under `root` (canonical), refusing symlinks that lead outside it; a
/// directory serves its `index.html`. Returns the file, its metadata and its canonical path.
/// Blocks on the disk: runs on a file reader thread ([`super::files`]).
pub(super) fn open_file(
    root: &Path,
    relative: &Path,
) -> Result<(File, std::fs::Metadata, PathBuf), VarInt> {
    let canonicalize = |full: PathBuf| match full.canonicalize() {
        Ok(p) if p.starts_with(root) => Ok(p),
        Ok(_) => Err(FORBIDDEN),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NOT_FOUND),
        Err(_) => Err(FORBIDDEN),
    };
    let mut canonical = canonicalize(root.join(relative))?;
    if canonical.is_dir() {
        // Checked again: index.html itself may be a symlink out of the root.
        canonical = canonicalize(canonical.join("index.html"))?;
    }
    // Non-blocking: opening a FIFO (or some device) for reading blocks until a writer comes,
    // which would hold a reader thread forever. It is refused below anyway.
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file: File = options.open(&canonical).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => NOT_FOUND,
        _ => FORBIDDEN,
    })?;
    match file.metadata() {
        Ok(m) if m.is_file() => Ok((file, m, canonical)),
        Ok(_) => Err(NOT_FOUND),
        Err(_) => Err(INTERNAL_ERROR),
    }
}

enum State {
    /// Collecting the request line.
    Request(Vec<u8>),
    /// Waiting for the file to open.
    Opening,
    Sending(FileBody),
    Done,
    Failed(VarInt),
}

pub struct HqStream {
    root: Arc<PathBuf>,
    state: State,
    /// The open to ask for, once the request is parsed.
    open: Option<FileOp>,
}

impl HqStream {
    pub fn new(root: Arc<PathBuf>) -> Self {
        Self {
            root,
            state: State::Request(Vec::new()),
            open: None,
        }
    }

    fn start(&mut self, request: &[u8]) {
        match parse_request(request) {
            Ok(relative) => {
                self.open = Some(FileOp::Open {
                    root: self.root.clone(),
                    relative,
                    prefetch: true,
                });
                self.state = State::Opening;
            }
            Err(e) => {
                tracing::debug!(error = %e, "hq request refused");
                self.state = State::Failed(e.code());
            }
        }
    }
}

impl Handler for HqStream {
    fn wants_input(&self) -> bool {
        // Only the request line matters; later bytes (if any) are read and dropped.
        true
    }

    fn on_data(&mut self, data: Bytes) {
        let State::Request(buf) = &mut self.state else {
            return;
        };
        buf.extend_from_slice(&data);
        if buf.contains(&b'\n') {
            let request = std::mem::take(buf);
            self.start(&request);
        } else if buf.len() > MAX_REQUEST {
            self.state = State::Failed(BAD_REQUEST);
        }
    }

    fn on_fin(&mut self) {
        if let State::Request(buf) = &mut self.state {
            let request = std::mem::take(buf);
            self.start(&request);
        }
    }

    fn take_file_op(&mut self) -> Option<FileOp> {
        if let Some(open) = self.open.take() {
            return Some(open);
        }
        match &mut self.state {
            State::Sending(body) => body.next_op(),
            _ => None,
        }
    }

    fn on_file(&mut self, done: FileDone) {
        match (&mut self.state, done) {
            (State::Opening, FileDone::Opened(Ok(opened))) => {
                let opened = *opened;
                let len = opened.meta.len();
                self.state = State::Sending(FileBody::with_first(opened.file, len, opened.first));
            }
            (State::Opening, FileDone::Opened(Err(code))) => {
                tracing::debug!(code = code.into_inner(), "hq request refused");
                self.state = State::Failed(code);
            }
            (State::Sending(body), FileDone::Read(result)) => body.on_read(result),
            _ => {}
        }
    }

    fn next_output(&mut self) -> Output {
        match &mut self.state {
            State::Request(_) | State::Opening => Output::Pending,
            State::Failed(code) => Output::Reset(*code),
            State::Done => Output::Finish,
            State::Sending(body) => match body.next_chunk() {
                BodyNext::Chunk(chunk) => Output::Chunk(chunk),
                BodyNext::Wait => Output::Pending,
                BodyNext::End => {
                    self.state = State::Done;
                    Output::Finish
                }
                BodyNext::Failed => {
                    self.state = State::Failed(INTERNAL_ERROR);
                    Output::Reset(INTERNAL_ERROR)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_requests() {
        assert_eq!(
            parse_request(b"GET /index.html\r\n"),
            Ok("index.html".into())
        );
        assert_eq!(parse_request(b"GET /a/b/c.bin"), Ok("a/b/c.bin".into()));
        assert_eq!(parse_request(b"GET /a/./b\n"), Ok("a/b".into()));
        assert_eq!(parse_request(b"GET /\r\n"), Ok("index.html".into()));
        assert_eq!(parse_request(b"GET /x?query=1\r\n"), Ok("x".into()));
    }

    #[test]
    fn refuses_paths_leaving_the_root() {
        for req in [
            &b"GET /../etc/passwd\r\n"[..],
            b"GET /a/../../b\r\n",
            b"GET //etc/passwd\r\n",
            b"GET /..\r\n",
        ] {
            assert_eq!(
                parse_request(req),
                Err(RequestError::OutsideRoot),
                "{}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn refuses_malformed_requests() {
        for req in [
            &b""[..],
            b"\r\n",
            b"POST /x\r\n",
            b"GET\r\n",
            b"GET x\r\n",
            b"GET /a b\r\n",
            b"GET /a\\b\r\n",
            b"GET /\xff\r\n",
        ] {
            assert_eq!(
                parse_request(req),
                Err(RequestError::Malformed),
                "{}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn symlink_out_of_root_is_forbidden() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::fs::write(root.join("ok"), b"fine").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        let root = root.canonicalize().unwrap();
        assert!(open_file(&root, Path::new("ok")).is_ok());
        assert_eq!(
            open_file(&root, Path::new("missing")).unwrap_err(),
            NOT_FOUND
        );
        #[cfg(unix)]
        assert_eq!(open_file(&root, Path::new("link")).unwrap_err(), FORBIDDEN);
    }

    /// A FIFO in the root is refused at once: opening it must not wait for a writer.
    #[cfg(unix)]
    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let fifo = root.join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(open_file(&root, Path::new("pipe")).map(|_| ()));
        });
        let outcome = done_rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("opening a FIFO blocked");
        assert_eq!(outcome.unwrap_err(), NOT_FOUND);
    }
}
