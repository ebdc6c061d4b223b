//! The slow disk fixture (`../support/slowfs.rs`) itself: content and metadata come back true,
//! a held file blocks its readers and nothing else, `release` lets them finish, a killed reader
//! is let go, and dropping the fixture unmounts even with a read held. Needs root and
//! /dev/fuse; without them the tests print why and pass, unless `QUIXD_REQUIRE_PRIVILEGED=1`.
//!
//!     cargo test -p quixd --test e2e slowfs

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::netns::skip_or_fail;
use crate::process::random_bytes;
use crate::slowfs_fixture::{fuse_problem, SlowFs, MTIME};

/// Bound of every wait here.
const WAIT: Duration = Duration::from_secs(10);

/// Mounts `files`, or returns `None` (after printing why) when this machine cannot.
pub(crate) fn mount(test: &str, files: &[(&str, &[u8])]) -> Option<SlowFs> {
    if let Some(problem) = fuse_problem() {
        skip_or_fail(test, &problem);
        return None;
    }
    let files = (files.iter())
        .map(|(name, content)| (name.to_string(), content.to_vec()))
        .collect();
    match SlowFs::mount(files) {
        Ok(fs) => Some(fs),
        // Root, but not allowed to mount (a container, a seccomp filter).
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            skip_or_fail(test, &format!("cannot mount: {e}"));
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// Waits up to [`WAIT`] for `done`, panicking with `what` when it does not come.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `path` is a mount point, per /proc/self/mounts.
fn mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    let path = path.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(path))
}

/// Reads `name` under `fs` from a new thread at `offset`, `len` bytes; the result comes on the
/// returned channel.
fn read_in_thread(
    fs: &SlowFs,
    name: &str,
    offset: u64,
    len: usize,
) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let path = fs.path().join(name);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = File::open(&path).and_then(|f| {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, offset).map(|()| buf)
        });
        let _ = tx.send(result);
    });
    rx
}

#[test]
fn content_and_metadata_come_back_true() {
    let sizes = [
        0,
        1,
        4095,
        4096,
        4097,
        128 * 1024,
        200 * 1024 + 3,
        1024 * 1024 + 17,
    ];
    let contents: Vec<(String, Vec<u8>)> = (sizes.iter().enumerate())
        .map(|(i, &len)| (format!("f{len}.bin"), random_bytes(len, i as u64 + 1)))
        .collect();
    let files: Vec<(&str, &[u8])> = (contents.iter())
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    let Some(fs) = mount("slowfs::content_and_metadata_come_back_true", &files) else {
        return;
    };
    let root = fs.path();
    assert!(mounted(root), "{} not in /proc/self/mounts", root.display());
    assert_eq!(root.canonicalize().unwrap(), root);
    let meta = std::fs::metadata(root).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode(), libc::S_IFDIR | 0o755);

    // What `ls` sees.
    let mut listed: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let mut names: Vec<String> = contents.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(listed, names);
    if let Ok(out) = Command::new("ls").arg("-la").arg(root).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ls -la: {out:?}");
        assert!(names.iter().all(|n| text.contains(n.as_str())), "{text}");
    }
    // SAFETY: an all-zero statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let c_root = std::ffi::CString::new(root.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path and a valid statvfs, both living through the call.
    assert_eq!(unsafe { libc::statvfs(c_root.as_ptr(), &mut st) }, 0);
    assert_eq!(st.f_flag & libc::ST_RDONLY, libc::ST_RDONLY);

    for (name, content) in &contents {
        let path = root.join(name);
        assert_eq!(root.join(".").join(name).canonicalize().unwrap(), path);
        for meta in [
            std::fs::metadata(&path).unwrap(),
            std::fs::symlink_metadata(&path).unwrap(),
        ] {
            assert!(meta.is_file(), "{name}");
            assert_eq!(meta.len(), content.len() as u64, "{name}");
            assert_eq!(meta.mode(), libc::S_IFREG | 0o644, "{name}");
            assert_eq!((meta.uid(), meta.gid()), (0, 0), "{name}");
            assert_eq!(meta.mtime(), MTIME as i64, "{name}");
        }
        assert_eq!(&std::fs::read(&path).unwrap(), content, "{name}");

        // Non-blocking, as quixd's file server opens; reads at offsets, across the kernel's
        // 128 KiB request size, and at and past the end.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        assert_eq!(file.metadata().unwrap().len(), content.len() as u64);
        let len = content.len() as u64;
        for (offset, size) in [
            (0, 1),
            (1, 4095),
            (4095, 3),
            (131_071, 131_074),
            (len.saturating_sub(1), 1),
            (len, 10),
            (len + 4096, 10),
        ] {
            let mut buf = vec![0u8; size];
            let mut got = 0;
            while got < size {
                match file.read_at(&mut buf[got..], offset + got as u64).unwrap() {
                    0 => break,
                    n => got += n,
                }
            }
            let start = (offset as usize).min(content.len());
            let end = (start + size).min(content.len());
            assert_eq!(
                &buf[..got],
                &content[start..end],
                "{name} at {offset}+{size}"
            );
        }
        let mut whole = Vec::new();
        (&file).read_to_end(&mut whole).unwrap();
        assert_eq!(&whole, content, "{name} read sequentially");
    }
    assert!(std::fs::metadata(root.join("missing")).is_err());
    assert!(std::fs::write(root.join("new"), b"x").is_err());
}

#[test]
fn held_file_blocks_its_readers_only() {
    let held = random_bytes(300 * 1024, 7);
    let other = random_bytes(10 * 1024, 8);
    let Some(fs) = mount(
        "slowfs::held_file_blocks_its_readers_only",
        &[("held", &held), ("other", &other)],
    ) else {
        return;
    };
    // Once freely: a second read, held, must still reach the server (no page cache).
    assert_eq!(std::fs::read(fs.path().join("held")).unwrap(), held);
    let served = fs.reads_served("held");
    assert!(served >= 3, "300 KiB in 128 KiB reads: {served}");

    fs.hold_reads("held");
    let reader = read_in_thread(&fs, "held", 1000, 200 * 1024);
    wait_until("the reader's READ held", || fs.reads_held() == 1);

    // Meanwhile metadata, opening and the other file stay fast.
    let start = Instant::now();
    let path = fs.path().join("held");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), held.len() as u64);
    assert_eq!(path.canonicalize().unwrap(), path);
    let _open = File::open(&path).unwrap();
    assert_eq!(std::fs::read(fs.path().join("other")).unwrap(), other);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "metadata and the other file took {:?}",
        start.elapsed()
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(reader.try_recv().is_err(), "the held read finished");
    assert_eq!(fs.reads_held(), 1);
    assert_eq!(fs.reads_served("held"), served);

    fs.release();
    assert_eq!(fs.reads_held(), 0);
    let got = (reader.recv_timeout(WAIT))
        .expect("the released reader finishes")
        .expect("the released read succeeds");
    assert_eq!(got, &held[1000..1000 + 200 * 1024]);
    assert!(fs.reads_served("held") >= served + 2, "200 KiB: two reads");
    // Released for good: later reads pass.
    assert_eq!(std::fs::read(&path).unwrap(), held);
}

#[test]
fn killed_reader_is_let_go() {
    let held = random_bytes(64 * 1024, 9);
    let Some(fs) = mount("slowfs::killed_reader_is_let_go", &[("held", &held)]) else {
        return;
    };
    fs.hold_reads("held");
    let mut cat = match Command::new("cat")
        .arg(fs.path().join("held"))
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            skip_or_fail(
                "slowfs::killed_reader_is_let_go",
                &format!("needs cat: {e}"),
            );
            return;
        }
    };
    wait_until("cat's READ held", || fs.reads_held() == 1);
    cat.kill().unwrap();
    // SIGKILL makes the kernel send INTERRUPT; the server answers the held READ with EINTR.
    wait_until("cat gone", || cat.try_wait().unwrap().is_some());
    wait_until("no READ held", || fs.reads_held() == 0);
    assert_eq!(fs.reads_served("held"), 0);
}

#[test]
fn drop_unmounts_with_a_read_held() {
    let held = random_bytes(50_000, 10);
    let Some(fs) = mount("slowfs::drop_unmounts_with_a_read_held", &[("held", &held)]) else {
        return;
    };
    let path = fs.path().to_owned();
    fs.hold_reads("held");
    let reader = read_in_thread(&fs, "held", 0, held.len());
    wait_until("the reader's READ held", || fs.reads_held() == 1);
    let open = File::open(path.join("held")).unwrap();

    // Dropped on another thread, so a hang fails the test instead of stalling it.
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        drop(fs);
        let _ = done_tx.send(());
    });
    done.recv_timeout(WAIT).expect("drop finishes");
    let got = reader.recv_timeout(WAIT).expect("the reader finishes");
    assert_eq!(got.expect("the held read is answered on drop"), held);
    assert!(!mounted(&path), "{} still mounted", path.display());
    assert!(!path.exists(), "{} not removed", path.display());
    // A file still open on the detached mount fails now (the connection is gone), at once.
    let mut buf = [0u8; 16];
    let err = open.read_at(&mut buf, 0).expect_err("read after drop");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
}
