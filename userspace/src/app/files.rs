//! Files for the apps that serve them (hq, h3), opened and read off the datapath thread.
//!
//! A handler never touches the disk. It asks for a [`FileOp`] (open a path under the root,
//! read a range), the driver hands the op to a [`FilePool`] thread, and the result comes back
//! to the handler's `on_file` on the worker's thread, whose [`Doorbell`] the reader rings. A
//! slow disk (network storage, a cold spindle, a FUSE mount) then holds back only the
//! streams that wait for it; every other connection of the worker keeps moving.
//!
//! [`FileBody`] streams one file range: one read in flight and one chunk ready at most, so
//! the next read overlaps with sending the last, and results arrive in order.

use std::collections::VecDeque;
use std::fs::{File, Metadata};
use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use quinn_proto::VarInt;

use super::hq;
use crate::datapath::wake::Doorbell;

/// File bytes per read (and per chunk handed to quinn-proto).
pub const CHUNK: usize = 64 * 1024;

/// Reader threads when the configuration does not say.
pub const DEFAULT_READERS: usize = 4;

/// A file operation a handler asks for.
#[derive(Debug)]
pub enum FileOp {
    /// Open `relative` under the canonical `root` with the hq rules ([`hq::open_file`]);
    /// with `prefetch`, read the file's first chunk too (a small file then costs one trip to
    /// a reader thread, not two).
    Open {
        root: Arc<PathBuf>,
        relative: PathBuf,
        prefetch: bool,
    },
    /// Read `len` bytes at `offset` (fewer only where the file ends).
    Read {
        file: Arc<File>,
        offset: u64,
        len: usize,
    },
}

/// An opened regular file.
#[derive(Debug)]
pub struct Opened {
    pub file: Arc<File>,
    pub meta: Metadata,
    /// Its canonical path (a directory's index.html), for the content type.
    pub path: PathBuf,
    /// The first chunk, when asked for ([`FileBody::with_first`] takes it).
    pub first: Option<io::Result<Bytes>>,
}

/// The result of a [`FileOp`].
#[derive(Debug)]
pub enum FileDone {
    /// The file, or the stream code to refuse the request with (hq's codes).
    Opened(Result<Box<Opened>, VarInt>),
    Read(io::Result<Bytes>),
}

impl FileOp {
    /// Performs the operation on the calling thread (a pool thread).
    pub fn run(self) -> FileDone {
        match self {
            FileOp::Open {
                root,
                relative,
                prefetch,
            } => FileDone::Opened(hq::open_file(&root, &relative).map(|(file, meta, path)| {
                let first =
                    prefetch.then(|| read_at(&file, 0, meta.len().min(CHUNK as u64) as usize));
                Box::new(Opened {
                    file: Arc::new(file),
                    meta,
                    path,
                    first,
                })
            })),
            FileOp::Read { file, offset, len } => FileDone::Read(read_at(&file, offset, len)),
        }
    }
}

/// Reads up to `len` bytes at `offset`, stopping early only at the end of the file.
fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    // A fresh buffer per chunk: quinn-proto keeps it until the peer acknowledges.
    let mut buf = BytesMut::zeroed(len);
    let mut filled = 0;
    while filled < len {
        match positional_read(file, &mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf.freeze())
}

#[cfg(unix)]
fn positional_read(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn positional_read(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // Moves the file's cursor, which nothing else uses: each body has one read in flight.
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

type Job = Box<dyn FnOnce() + Send>;

/// Reader threads shared by every worker. They end when the pool and every [`FileClient`]
/// made from it are dropped.
#[derive(Clone, Debug)]
pub struct FilePool {
    jobs: mpsc::Sender<Job>,
}

impl FilePool {
    /// Starts `threads` reader threads.
    pub fn new(threads: usize) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        // Only the readers lock this, each to take its next job; workers only send.
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("quixd-files-{i}"))
                .spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// One worker's way to the pool, its results tagged with `T`.
    pub fn client<T: Send + 'static>(&self) -> FileClient<T> {
        let (done_tx, done_rx) = mpsc::channel();
        FileClient {
            jobs: Some(self.jobs.clone()),
            done_tx,
            done_rx,
            doorbell: None,
            in_flight: 0,
        }
    }
}

/// One worker's end of the pool: submits ops, collects their results.
pub struct FileClient<T> {
    /// `None`: no pool, ops run inline (tests, or a pool whose threads are gone).
    jobs: Option<mpsc::Sender<Job>>,
    done_tx: mpsc::Sender<(T, FileDone)>,
    done_rx: mpsc::Receiver<(T, FileDone)>,
    doorbell: Option<Arc<Doorbell>>,
    in_flight: usize,
}

impl<T: Send + 'static> FileClient<T> {
    /// A client that runs every op on the caller's thread (for tests and tools).
    pub fn inline() -> Self {
        let (done_tx, done_rx) = mpsc::channel();
        Self {
            jobs: None,
            done_tx,
            done_rx,
            doorbell: None,
            in_flight: 0,
        }
    }

    /// Rung by the readers when a result is ready; without one, the worker must poll.
    pub fn set_doorbell(&mut self, doorbell: Arc<Doorbell>) {
        self.doorbell = Some(doorbell);
    }

    /// Ops submitted whose results were not collected yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Hands `op` to a reader; its result comes back from [`FileClient::collect`] with `tag`.
    pub fn submit(&mut self, tag: T, op: FileOp) {
        self.in_flight += 1;
        let done = self.done_tx.clone();
        let doorbell = self.doorbell.clone();
        let job: Job = Box::new(move || {
            let result = op.run();
            // A worker that is gone has no use for the result.
            if done.send((tag, result)).is_ok() {
                if let Some(doorbell) = doorbell {
                    if let Err(e) = doorbell.ring() {
                        tracing::warn!(error = %e, "waking a worker for a file read");
                    }
                }
            }
        });
        let job = match &self.jobs {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => return,
                // The readers are gone (a panic): serve on this thread rather than never.
                Err(mpsc::SendError(job)) => {
                    tracing::error!("file reader threads are gone: reading on the worker");
                    self.jobs = None;
                    job
                }
            },
            None => job,
        };
        job();
    }

    /// Feeds every result ready to `deliver`; returns how many.
    pub fn collect(&mut self, mut deliver: impl FnMut(T, FileDone)) -> usize {
        // Nothing asked, nothing to look for (workers without file apps poll every turn).
        if self.in_flight == 0 {
            return 0;
        }
        let mut n = 0;
        while let Ok((tag, done)) = self.done_rx.try_recv() {
            self.in_flight -= 1;
            deliver(tag, done);
            n += 1;
        }
        n
    }
}

/// What a [`FileBody`] has for the stream next.
#[derive(Debug)]
pub enum BodyNext {
    Chunk(Bytes),
    /// A read is in flight.
    Wait,
    /// Every byte was handed out.
    End,
    /// A read failed or the file shrank: the promised length cannot be kept.
    Failed,
}

/// Streams `len` bytes of a file from `offset`, one read ahead of the sender.
#[derive(Debug)]
pub struct FileBody {
    file: Arc<File>,
    /// Where the next read starts, and how much is left to read.
    offset: u64,
    unread: u64,
    reading: bool,
    ready: VecDeque<Bytes>,
    failed: bool,
}

impl FileBody {
    pub fn new(file: Arc<File>, offset: u64, len: u64) -> Self {
        Self {
            file,
            offset,
            unread: len,
            reading: false,
            ready: VecDeque::with_capacity(1),
            failed: false,
        }
    }

    /// The whole file from its start, with its first chunk if it came with the open.
    pub fn with_first(file: Arc<File>, len: u64, first: Option<io::Result<Bytes>>) -> Self {
        let mut body = Self::new(file, 0, len);
        if let Some(first) = first {
            if len > 0 {
                body.on_read(first);
            }
        }
        body
    }

    /// The next read to ask for, if one is due: none in flight, at most one chunk waiting.
    pub fn next_op(&mut self) -> Option<FileOp> {
        if self.reading || self.failed || self.unread == 0 || !self.ready.is_empty() {
            return None;
        }
        let len = self.unread.min(CHUNK as u64) as usize;
        self.reading = true;
        Some(FileOp::Read {
            file: self.file.clone(),
            offset: self.offset,
            len,
        })
    }

    /// The result of the read [`FileBody::next_op`] asked for.
    pub fn on_read(&mut self, result: io::Result<Bytes>) {
        self.reading = false;
        let asked = self.unread.min(CHUNK as u64);
        match result {
            Ok(data) if data.len() as u64 == asked => {
                self.offset += asked;
                self.unread -= asked;
                self.ready.push_back(data);
            }
            Ok(_) => {
                tracing::warn!("a file shrank while it was being served");
                self.failed = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "file read failed");
                self.failed = true;
            }
        }
    }

    pub fn next_chunk(&mut self) -> BodyNext {
        if let Some(chunk) = self.ready.pop_front() {
            return BodyNext::Chunk(chunk);
        }
        if self.failed {
            BodyNext::Failed
        } else if self.unread == 0 {
            BodyNext::End
        } else {
            BodyNext::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn drain_body(client: &mut FileClient<()>, body: &mut FileBody) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            if let Some(op) = body.next_op() {
                client.submit((), op);
            }
            match body.next_chunk() {
                BodyNext::Chunk(c) => out.extend_from_slice(&c),
                BodyNext::End => return out,
                BodyNext::Failed => panic!("read failed"),
                BodyNext::Wait => {
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while client.collect(|(), done| match done {
                        FileDone::Read(r) => body.on_read(r),
                        FileDone::Opened(_) => unreachable!(),
                    }) == 0
                    {
                        assert!(std::time::Instant::now() < deadline, "no result");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
    }

    #[test]
    fn a_body_reads_its_range_in_order_through_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("f"), &data).unwrap();
        let root = Arc::new(dir.path().canonicalize().unwrap());
        let pool = FilePool::new(3).unwrap();
        let mut client = pool.client::<()>();
        client.submit(
            (),
            FileOp::Open {
                root,
                relative: "f".into(),
                prefetch: true,
            },
        );
        let mut opened = None;
        while opened.is_none() {
            client.collect(|(), done| match done {
                FileDone::Opened(o) => opened = Some(o.unwrap()),
                FileDone::Read(_) => unreachable!(),
            });
        }
        let mut opened = opened.unwrap();
        assert_eq!(opened.meta.len(), data.len() as u64);
        let mut body =
            FileBody::with_first(opened.file.clone(), opened.meta.len(), opened.first.take());
        assert_eq!(drain_body(&mut client, &mut body), data, "prefetched");
        for (start, len) in [
            (0, data.len()),
            (1, 70_000),
            (65_536, 131_072),
            (299_999, 1),
        ] {
            let mut body = FileBody::new(opened.file.clone(), start as u64, len as u64);
            assert_eq!(
                drain_body(&mut client, &mut body),
                &data[start..start + len]
            );
        }
        assert_eq!(client.in_flight(), 0);
    }

    #[test]
    fn a_file_shorter_than_promised_fails_the_body() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![7u8; 1000]).unwrap();
        let file = Arc::new(File::open(dir.path().join("f")).unwrap());
        let mut client = FileClient::<()>::inline();
        let mut body = FileBody::new(file, 0, 2000);
        client.submit((), body.next_op().unwrap());
        client.collect(|(), done| match done {
            FileDone::Read(r) => body.on_read(r),
            FileDone::Opened(_) => unreachable!(),
        });
        assert!(matches!(body.next_chunk(), BodyNext::Failed));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_result_rings_the_doorbell() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let pool = FilePool::new(1).unwrap();
        let mut client = pool.client::<u32>();
        let doorbell = Arc::new(Doorbell::new().unwrap());
        client.set_doorbell(doorbell.clone());
        client.submit(
            9,
            FileOp::Open {
                root: Arc::new(dir.path().canonicalize().unwrap()),
                relative: "f".into(),
                prefetch: false,
            },
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !doorbell.answer() {
            assert!(
                std::time::Instant::now() < deadline,
                "the reader never rang"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut tags = Vec::new();
        client.collect(|tag, _| tags.push(tag));
        assert_eq!(tags, [9]);
    }
}
