//! A slow disk on demand: a tiny read-only FUSE filesystem, spoken directly over /dev/fuse.
//!
//! `SlowFs::mount(files)` mounts a fresh filesystem holding `files` (name, content) in its root
//! at a new directory under the temporary directory (unique per process and call, so tests run
//! in parallel), and serves it on a thread. `hold_reads(name)` makes every READ of that file
//! wait in the server until `release()`, while everything else (LOOKUP, GETATTR, OPEN, other
//! files, `ls`) stays fast: a test can prove that a reader never stalls on a file read. Files
//! are opened with `FOPEN_DIRECT_IO`, so every read reaches the server (no page cache), also a
//! second read of the same bytes. Dropping the guard releases held reads, detaches the mount
//! (`MNT_DETACH`), stops the server and removes the directory, also when a test panics.
//!
//! Needs root (`mount(2)`) and /dev/fuse, nothing else: no libfuse, no fusermount. The protocol
//! is `include/uapi/linux/fuse.h` at 7.38 (negotiated down if the kernel is older, refused below
//! 7.23). A reader killed or signalled while its READ is held gets `EINTR` (FUSE_INTERRUPT), so
//! a held read never makes a kill or an unmount hang. Include it with
//! `#[path = "../support/slowfs.rs"] mod slowfs;` (adjust the path).
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use abi::*;

/// Modification (and access, change) time of every node: 2023-11-14T22:13:20Z.
pub const MTIME: u64 = 1_700_000_000;

/// How long `release()` waits for the server to answer the held reads.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest READ the kernel sends (it splits bigger reads): its default, 32 pages.
const MAX_READ: u32 = 128 * 1024;

/// The buffer for one request: the kernel refuses reads of /dev/fuse into less than
/// `max(FUSE_MIN_READ_BUFFER, header + fuse_write_in + max_write)`.
const REQUEST_BUFFER: usize = 2 * MAX_READ as usize;

/// How long the kernel may cache names and attributes (they never change).
const CACHE_SECONDS: u64 = 1;

/// The kernel ABI: the structs and constants of `include/uapi/linux/fuse.h` (7.38) this server
/// uses, with the header's names. Every struct is `#[repr(C)]` of fixed-width integers with
/// each gap a named field, as in the header; the sizes are checked at compile time.
#[allow(non_camel_case_types)]
mod abi {
    pub const FUSE_KERNEL_VERSION: u32 = 7;
    pub const FUSE_KERNEL_MINOR_VERSION: u32 = 38;
    /// Oldest minor whose `fuse_init_out` has the 64-byte layout below.
    pub const FUSE_MIN_MINOR_VERSION: u32 = 23;
    pub const FUSE_ROOT_ID: u64 = 1;

    // enum fuse_opcode (those handled; every other one gets ENOSYS).
    pub const FUSE_LOOKUP: u32 = 1;
    pub const FUSE_FORGET: u32 = 2;
    pub const FUSE_GETATTR: u32 = 3;
    pub const FUSE_OPEN: u32 = 14;
    pub const FUSE_READ: u32 = 15;
    pub const FUSE_STATFS: u32 = 17;
    pub const FUSE_RELEASE: u32 = 18;
    pub const FUSE_GETXATTR: u32 = 22;
    pub const FUSE_LISTXATTR: u32 = 23;
    pub const FUSE_FLUSH: u32 = 25;
    pub const FUSE_INIT: u32 = 26;
    pub const FUSE_OPENDIR: u32 = 27;
    pub const FUSE_READDIR: u32 = 28;
    pub const FUSE_RELEASEDIR: u32 = 29;
    pub const FUSE_ACCESS: u32 = 34;
    pub const FUSE_INTERRUPT: u32 = 36;
    pub const FUSE_DESTROY: u32 = 38;
    pub const FUSE_BATCH_FORGET: u32 = 42;

    /// fuse_open_out.open_flags: bypass the page cache for this open file.
    pub const FOPEN_DIRECT_IO: u32 = 1 << 0;

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_in_header {
        pub len: u32,
        pub opcode: u32,
        pub unique: u64,
        pub nodeid: u64,
        pub uid: u32,
        pub gid: u32,
        pub pid: u32,
        /// Length of extensions in 8-byte units (none: no extension is negotiated).
        pub total_extlen: u16,
        pub padding: u16,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_out_header {
        pub len: u32,
        /// 0 or a negative errno.
        pub error: i32,
        pub unique: u64,
    }

    /// The first fields of `fuse_init_in`, all a kernel older than 7.36 sends (newer ones
    /// append `flags2` and `unused[11]`, which this server does not need).
    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_init_in {
        pub major: u32,
        pub minor: u32,
        pub max_readahead: u32,
        pub flags: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_init_out {
        pub major: u32,
        pub minor: u32,
        pub max_readahead: u32,
        pub flags: u32,
        pub max_background: u16,
        pub congestion_threshold: u16,
        pub max_write: u32,
        pub time_gran: u32,
        pub max_pages: u16,
        pub map_alignment: u16,
        pub flags2: u32,
        pub unused: [u32; 7],
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_attr {
        pub ino: u64,
        pub size: u64,
        pub blocks: u64,
        pub atime: u64,
        pub mtime: u64,
        pub ctime: u64,
        pub atimensec: u32,
        pub mtimensec: u32,
        pub ctimensec: u32,
        pub mode: u32,
        pub nlink: u32,
        pub uid: u32,
        pub gid: u32,
        pub rdev: u32,
        pub blksize: u32,
        pub flags: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_entry_out {
        pub nodeid: u64,
        pub generation: u64,
        pub entry_valid: u64,
        pub attr_valid: u64,
        pub entry_valid_nsec: u32,
        pub attr_valid_nsec: u32,
        pub attr: fuse_attr,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_attr_out {
        pub attr_valid: u64,
        pub attr_valid_nsec: u32,
        pub dummy: u32,
        pub attr: fuse_attr,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_open_in {
        pub flags: u32,
        pub open_flags: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_open_out {
        pub fh: u64,
        pub open_flags: u32,
        pub padding: u32,
    }

    /// Also the argument of READDIR.
    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_read_in {
        pub fh: u64,
        pub offset: u64,
        pub size: u32,
        pub read_flags: u32,
        pub lock_owner: u64,
        pub flags: u32,
        pub padding: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_access_in {
        pub mask: u32,
        pub padding: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_interrupt_in {
        pub unique: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_kstatfs {
        pub blocks: u64,
        pub bfree: u64,
        pub bavail: u64,
        pub files: u64,
        pub ffree: u64,
        pub bsize: u32,
        pub namelen: u32,
        pub frsize: u32,
        pub padding: u32,
        pub spare: [u32; 6],
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_statfs_out {
        pub st: fuse_kstatfs,
    }

    /// A directory entry of READDIR's reply; `namelen` bytes of name follow, then zeros up
    /// to a multiple of 8 bytes (`FUSE_DIRENT_ALIGN`).
    #[repr(C)]
    #[derive(Clone, Copy, Default, Debug)]
    pub struct fuse_dirent {
        pub ino: u64,
        pub off: u64,
        pub namelen: u32,
        pub r#type: u32,
    }

    // The sizes of include/uapi/linux/fuse.h, so a wrong field shows at compile time.
    const _: () = {
        use std::mem::size_of;
        assert!(size_of::<fuse_in_header>() == 40);
        assert!(size_of::<fuse_out_header>() == 16);
        assert!(size_of::<fuse_init_in>() == 16);
        assert!(size_of::<fuse_init_out>() == 64);
        assert!(size_of::<fuse_attr>() == 88);
        assert!(size_of::<fuse_entry_out>() == 128);
        assert!(size_of::<fuse_attr_out>() == 104);
        assert!(size_of::<fuse_open_in>() == 8);
        assert!(size_of::<fuse_open_out>() == 16);
        assert!(size_of::<fuse_read_in>() == 40);
        assert!(size_of::<fuse_access_in>() == 8);
        assert!(size_of::<fuse_interrupt_in>() == 8);
        assert!(size_of::<fuse_statfs_out>() == 80);
        assert!(size_of::<fuse_dirent>() == 24);
    };

    /// The kernel's structs: plain old data, read from and written to /dev/fuse as bytes.
    ///
    /// # Safety
    ///
    /// Only for `#[repr(C)]` structs of integers (or arrays of them) without implicit padding:
    /// every byte of a value is initialized and every byte pattern is a valid value.
    pub unsafe trait Wire: Copy + Default {}

    // SAFETY (all of them): `#[repr(C)]` structs of u16/u32/u64/i32 fields (or structs and
    // arrays of them) whose sizes, checked above, are the sums of their fields: no padding.
    unsafe impl Wire for fuse_in_header {}
    unsafe impl Wire for fuse_out_header {}
    unsafe impl Wire for fuse_init_in {}
    unsafe impl Wire for fuse_init_out {}
    unsafe impl Wire for fuse_entry_out {}
    unsafe impl Wire for fuse_attr_out {}
    unsafe impl Wire for fuse_open_in {}
    unsafe impl Wire for fuse_open_out {}
    unsafe impl Wire for fuse_read_in {}
    unsafe impl Wire for fuse_access_in {}
    unsafe impl Wire for fuse_interrupt_in {}
    unsafe impl Wire for fuse_statfs_out {}
    unsafe impl Wire for fuse_dirent {}

    /// The bytes of `value`, as the kernel reads them.
    pub fn bytes_of<T: Wire>(value: &T) -> &[u8] {
        // SAFETY: `T: Wire` has no padding, so all `size_of::<T>()` bytes behind the reference
        // are initialized, and they live as long as the borrow.
        unsafe {
            std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
    }

    /// A `T` from the start of `bytes`; `None` when `bytes` is too short.
    pub fn read_wire<T: Wire>(bytes: &[u8]) -> Option<T> {
        if bytes.len() < std::mem::size_of::<T>() {
            return None;
        }
        // SAFETY: the length is checked above, any byte pattern is a valid `T: Wire`, and
        // `read_unaligned` does not need the buffer to be aligned for `T`.
        Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
    }
}

/// Why this process cannot mount a [`SlowFs`], if it cannot.
pub fn fuse_problem() -> Option<String> {
    const CAP_SYS_ADMIN: u32 = 21;
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            (status.lines())
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0);
    if caps & (1 << CAP_SYS_ADMIN) == 0 {
        return Some("needs root (CAP_SYS_ADMIN, to mount(2) a FUSE filesystem)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("needs /dev/fuse (FUSE, CONFIG_FUSE_FS)".into());
    }
    None
}

/// A mounted slow filesystem; see the module documentation.
pub struct SlowFs {
    path: PathBuf,
    shared: Arc<Shared>,
    /// Wakes the server; closing it stops the server.
    waker: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    /// The root's files, node id `index + 2`.
    files: Vec<(String, Vec<u8>)>,
    state: Mutex<State>,
    /// Signalled whenever held reads are answered.
    answered: Condvar,
}

#[derive(Default)]
struct State {
    /// Indexes of the files whose READs are held.
    held: HashSet<usize>,
    /// The READs waiting for `release()`.
    parked: Vec<Parked>,
    /// READs answered, per file.
    served: Vec<u64>,
    /// False once the server thread ended (nothing is answered any more).
    serving: bool,
}

/// A held READ request.
struct Parked {
    unique: u64,
    index: usize,
    offset: u64,
    size: u32,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl SlowFs {
    /// Mounts a fresh filesystem at a new temporary directory holding `files` (name, content)
    /// in its root. Fails with the reason when FUSE is unavailable (not root, no /dev/fuse) or
    /// a name is not a plain file name.
    pub fn mount(files: Vec<(String, Vec<u8>)>) -> io::Result<SlowFs> {
        if let Some(problem) = fuse_problem() {
            return Err(io::Error::new(
                ErrorKind::Unsupported,
                format!("slowfs {problem}"),
            ));
        }
        let mut names = HashSet::new();
        for (name, _) in &files {
            if name.is_empty()
                || name == "."
                || name == ".."
                || name.contains(['/', '\0'])
                || !names.insert(name.as_str())
            {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!("slowfs: bad or repeated file name {name:?}"),
                ));
            }
        }
        // Non-blocking: the server polls, so it can also wait for its waker. Close-on-exec
        // (OpenOptions' default): a child holding the device would keep the connection alive.
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/fuse")
            .map_err(|e| io::Error::new(e.kind(), format!("slowfs: open /dev/fuse: {e}")))?;
        let path = make_mount_dir()?;
        if let Err(e) = mount_fuse(&path, &dev) {
            let _ = std::fs::remove_dir(&path);
            return Err(e);
        }
        let served = vec![0; files.len()];
        let shared = Arc::new(Shared {
            files,
            state: Mutex::new(State {
                served,
                serving: true,
                ..State::default()
            }),
            answered: Condvar::new(),
        });
        let spawned = UnixStream::pair().and_then(|(waker, wakee)| {
            wakee.set_nonblocking(true)?;
            waker.set_nonblocking(true)?;
            let server = Server {
                dev,
                wakee,
                shared: shared.clone(),
            };
            let thread = std::thread::Builder::new()
                .name("slowfs".into())
                .spawn(move || server.run())?;
            Ok((waker, thread))
        });
        match spawned {
            Ok((waker, thread)) => Ok(SlowFs {
                path,
                shared,
                waker: Some(waker),
                thread: Some(thread),
            }),
            Err(e) => {
                // The device is closed already (the server was dropped): the mount is dead.
                unmount(&path);
                let _ = std::fs::remove_dir(&path);
                Err(e)
            }
        }
    }

    /// The mount point (canonical).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// From now on READs of `name` wait in the server until [`SlowFs::release`]; LOOKUP,
    /// GETATTR, OPEN and the other files stay fast. Panics on a name it does not hold.
    pub fn hold_reads(&self, name: &str) {
        let index = self.shared.index(name);
        self.shared.lock().held.insert(index);
    }

    /// Lets the held reads through (and later ones): returns once they are answered (or after
    /// 10 s, complaining, if the server does not answer them).
    pub fn release(&self) {
        self.shared.lock().held.clear();
        if let Some(mut waker) = self.waker.as_ref() {
            let _ = waker.write(&[1]);
        }
        let deadline = Instant::now() + RELEASE_TIMEOUT;
        let mut state = self.shared.lock();
        while state.serving && !state.parked.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                eprintln!(
                    "slowfs: {} held reads still unanswered after {RELEASE_TIMEOUT:?}",
                    state.parked.len()
                );
                return;
            }
            state = match self.shared.answered.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// READ requests currently held.
    pub fn reads_held(&self) -> usize {
        self.shared.lock().parked.len()
    }

    /// READ requests of `name` answered so far (with data). Panics on a name it does not hold.
    pub fn reads_served(&self, name: &str) -> u64 {
        let index = self.shared.index(name);
        self.shared.lock().served[index]
    }
}

impl Drop for SlowFs {
    fn drop(&mut self) {
        self.release();
        // Detached: never EBUSY, whoever still has a file open. The filesystem goes away with
        // the last of them, or when the server closes the device below, whichever is first.
        unmount(&self.path);
        // Closing the waker stops the server, which closes the device: that aborts the
        // connection (whatever is still open on the detached mount then fails with ENOTCONN).
        drop(self.waker.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("slowfs: the server thread panicked");
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            eprintln!("slowfs: cannot remove {}: {e}", self.path.display());
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not stop the cleanup.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn index(&self, name: &str) -> usize {
        self.files
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("slowfs holds no file {name:?}"))
    }
}

/// Creates `$TMPDIR/quixd-slowfs-PID-N` (the next free N) and returns its canonical path:
/// readers such as quixd's file server compare canonical paths.
fn make_mount_dir() -> io::Result<PathBuf> {
    let base = std::env::temp_dir();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("quixd-slowfs-{}-{n}", std::process::id()));
        match std::fs::create_dir(&path) {
            Ok(()) => return path.canonicalize(),
            // Left over by an earlier process with the same pid.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("slowfs: create {}: {e}", path.display()),
                ))
            }
        }
    }
}

/// `mount -t fuse` with `dev` as the connection: read-only, no setuid, no devices; any user
/// may read (quixd may run as `nobody`), and the kernel leaves access checks to the server.
fn mount_fuse(path: &Path, dev: &File) -> io::Result<()> {
    let target = CString::new(path.as_os_str().as_bytes())?;
    let data = CString::new(format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
        dev.as_raw_fd()
    ))?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            c"slowfs".as_ptr(),
            target.as_ptr(),
            c"fuse".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RDONLY,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("slowfs: mount(2) of fuse at {}: {e}", path.display()),
        ));
    }
    Ok(())
}

/// `umount -l`; complains (only) when it fails.
fn unmount(path: &Path) {
    let Ok(target) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        eprintln!(
            "slowfs: umount2({}, MNT_DETACH): {}",
            path.display(),
            io::Error::last_os_error()
        );
    }
}

/// The server thread's side: it alone owns the device, so the connection ends with the thread,
/// also when it panics (then every request fails with ENOTCONN instead of hanging).
struct Server {
    dev: File,
    /// Readable when `release()` was called; end of file when the `SlowFs` is dropped.
    wakee: UnixStream,
    shared: Arc<Shared>,
}

/// A request: its header and the bytes after it.
struct Request<'a> {
    header: fuse_in_header,
    body: &'a [u8],
}

impl Server {
    fn run(mut self) {
        let mut buf = vec![0u8; REQUEST_BUFFER];
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.dev.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wakee.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("slowfs: poll: {e}");
                break;
            }
            if fds[1].revents != 0 {
                let mut byte = [0u8; 64];
                match self.wakee.read(&mut byte) {
                    Ok(0) => break, // the SlowFs is gone
                    Ok(_) => self.answer_released(),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            if fds[0].revents != 0 {
                match self.dev.read(&mut buf) {
                    Ok(n) => self.handle(&buf[..n]),
                    // Nothing to read after all, or the request was interrupted meanwhile.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EAGAIN | libc::EINTR | libc::ENOENT)
                        ) => {}
                    // ENODEV: unmounted, the connection is gone.
                    Err(e) => {
                        if e.raw_os_error() != Some(libc::ENODEV) {
                            eprintln!("slowfs: read /dev/fuse: {e}");
                        }
                        break;
                    }
                }
            }
        }
    }

    fn handle(&mut self, bytes: &[u8]) {
        let Some(header) = read_wire::<fuse_in_header>(bytes) else {
            eprintln!("slowfs: short request ({} bytes)", bytes.len());
            return;
        };
        let end = (header.len as usize).min(bytes.len());
        let body = &bytes[size_of::<fuse_in_header>().min(end)..end];
        let req = Request { header, body };
        let result = match header.opcode {
            FUSE_INIT => self.init(&req),
            // No reply: the kernel does not wait for these.
            FUSE_FORGET | FUSE_BATCH_FORGET => return,
            FUSE_INTERRUPT => return self.interrupt(&req),
            FUSE_LOOKUP => self.lookup(&req),
            FUSE_GETATTR => self.node_attr(header.nodeid).map(|attr| {
                bytes_of(&fuse_attr_out {
                    attr_valid: CACHE_SECONDS,
                    attr,
                    ..Default::default()
                })
                .to_vec()
            }),
            FUSE_ACCESS => self.access(&req),
            FUSE_OPEN => self.open(&req),
            FUSE_READ => match self.read(&req) {
                Some(result) => result,
                None => return, // held: answered by release() or an interrupt
            },
            FUSE_OPENDIR => self.opendir(&req),
            FUSE_READDIR => self.readdir(&req),
            FUSE_FLUSH | FUSE_RELEASE | FUSE_RELEASEDIR | FUSE_DESTROY => Ok(Vec::new()),
            FUSE_STATFS => Ok(self.statfs()),
            // No extended attributes: ENOSYS makes the kernel stop asking (EOPNOTSUPP).
            FUSE_GETXATTR | FUSE_LISTXATTR => Err(libc::ENOSYS),
            // Writes of any kind, locks, poll, lseek, ...: the kernel falls back or fails.
            _ => Err(libc::ENOSYS),
        };
        self.reply(header.unique, result);
    }

    /// Writes the reply to request `unique`: `Ok(payload)` or `Err(errno)`.
    fn reply(&mut self, unique: u64, result: Result<Vec<u8>, i32>) {
        write_reply(&mut self.dev, unique, result);
    }

    fn init(&mut self, req: &Request) -> Result<Vec<u8>, i32> {
        // Kernels before 7.36 send only the first four fields: zero-fill what is missing.
        let mut arg = [0u8; size_of::<fuse_init_in>()];
        let n = req.body.len().min(arg.len());
        arg[..n].copy_from_slice(&req.body[..n]);
        let arg = read_wire::<fuse_init_in>(&arg).ok_or(libc::EINVAL)?;
        if arg.major != FUSE_KERNEL_VERSION || arg.minor < FUSE_MIN_MINOR_VERSION {
            eprintln!(
                "slowfs: kernel speaks FUSE {}.{}, this server 7.{FUSE_MIN_MINOR_VERSION}..7.{FUSE_KERNEL_MINOR_VERSION}",
                arg.major, arg.minor
            );
            return Err(libc::EPROTO);
        }
        let out = fuse_init_out {
            major: FUSE_KERNEL_VERSION,
            minor: arg.minor.min(FUSE_KERNEL_MINOR_VERSION),
            max_readahead: arg.max_readahead,
            // No optional feature: synchronous reads, plain READDIR, no locks, no xattr flags.
            flags: 0,
            max_write: MAX_READ,
            time_gran: 1,
            ..Default::default()
        };
        Ok(bytes_of(&out).to_vec())
    }

    /// A held READ whose reader got a signal (killed, or interrupted): answer it with EINTR.
    /// An INTERRUPT itself gets no reply, and one for a request already answered is ignored.
    fn interrupt(&mut self, req: &Request) {
        let Some(arg) = read_wire::<fuse_interrupt_in>(req.body) else {
            return;
        };
        let mut state = self.shared.lock();
        if let Some(i) = state.parked.iter().position(|p| p.unique == arg.unique) {
            state.parked.remove(i);
            write_reply(&mut self.dev, arg.unique, Err(libc::EINTR));
            self.shared.answered.notify_all();
        }
    }

    fn lookup(&mut self, req: &Request) -> Result<Vec<u8>, i32> {
        if req.header.nodeid != FUSE_ROOT_ID {
            return Err(self
                .node_attr(req.header.nodeid)
                .err()
                .unwrap_or(libc::ENOTDIR));
        }
        let name = req.body.split(|&b| b == 0).next().unwrap_or_default();
        let index = (self.shared.files.iter())
            .position(|(n, _)| n.as_bytes() == name)
            .ok_or(libc::ENOENT)?;
        let nodeid = file_node(index);
        let out = fuse_entry_out {
            nodeid,
            generation: 1,
            entry_valid: CACHE_SECONDS,
            attr_valid: CACHE_SECONDS,
            attr: self.node_attr(nodeid)?,
            ..Default::default()
        };
        Ok(bytes_of(&out).to_vec())
    }

    /// The attributes of a node: the root directory (0755) or a file (0644), root's, at
    /// [`MTIME`].
    fn node_attr(&self, nodeid: u64) -> Result<fuse_attr, i32> {
        let (mode, nlink, size) = if nodeid == FUSE_ROOT_ID {
            (libc::S_IFDIR | 0o755, 2, 0)
        } else {
            let index = self.file_index(nodeid)?;
            let size = self.shared.files[index].1.len() as u64;
            (libc::S_IFREG | 0o644, 1, size)
        };
        Ok(fuse_attr {
            ino: nodeid,
            size,
            blocks: size.div_ceil(512),
            atime: MTIME,
            mtime: MTIME,
            ctime: MTIME,
            mode,
            nlink,
            blksize: 4096,
            ..Default::default()
        })
    }

    fn file_index(&self, nodeid: u64) -> Result<usize, i32> {
        nodeid
            .checked_sub(2)
            .map(|i| i as usize)
            .filter(|&i| i < self.shared.files.len())
            .ok_or(libc::ENOENT)
    }

    fn access(&mut self, req: &Request) -> Result<Vec<u8>, i32> {
        let arg = read_wire::<fuse_access_in>(req.body).ok_or(libc::EINVAL)?;
        let is_dir = req.header.nodeid == FUSE_ROOT_ID;
        if !is_dir {
            self.file_index(req.header.nodeid)?;
        }
        if arg.mask & libc::W_OK as u32 != 0 {
            return Err(libc::EROFS);
        }
        if arg.mask & libc::X_OK as u32 != 0 && !is_dir {
            return Err(libc::EACCES);
        }
        Ok(Vec::new())
    }

    fn open(&mut self, req: &Request) -> Result<Vec<u8>, i32> {
        let arg = read_wire::<fuse_open_in>(req.body).ok_or(libc::EINVAL)?;
        if req.header.nodeid == FUSE_ROOT_ID {
            return Err(libc::EISDIR);
        }
        let index = self.file_index(req.header.nodeid)?;
        if arg.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32 {
            return Err(libc::EROFS);
        }
        // Direct I/O: no page cache, so every read of a held file reaches the server.
        let out = fuse_open_out {
            fh: index as u64,
            open_flags: FOPEN_DIRECT_IO,
            ..Default::default()
        };
        Ok(bytes_of(&out).to_vec())
    }

    /// Answers a READ, or parks it (returns `None`) while its file is held.
    fn read(&mut self, req: &Request) -> Option<Result<Vec<u8>, i32>> {
        let Some(arg) = read_wire::<fuse_read_in>(req.body) else {
            return Some(Err(libc::EINVAL));
        };
        if req.header.nodeid == FUSE_ROOT_ID {
            return Some(Err(libc::EISDIR));
        }
        let index = match self.file_index(req.header.nodeid) {
            Ok(index) => index,
            Err(errno) => return Some(Err(errno)),
        };
        let mut state = self.shared.lock();
        if state.held.contains(&index) {
            state.parked.push(Parked {
                unique: req.header.unique,
                index,
                offset: arg.offset,
                size: arg.size,
            });
            return None;
        }
        state.served[index] += 1;
        Some(Ok(self.data(index, arg.offset, arg.size).to_vec()))
    }

    /// Up to `size` bytes of file `index` from `offset`; fewer (or none) at the end of the
    /// file, which the kernel takes as end of file.
    fn data(&self, index: usize, offset: u64, size: u32) -> &[u8] {
        let content = &self.shared.files[index].1;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(content.len());
        let end = start.saturating_add(size as usize).min(content.len());
        &content[start..end]
    }

    /// Answers the parked READs of files no longer held (after `release()`).
    fn answer_released(&mut self) {
        let shared = self.shared.clone();
        let mut state = shared.lock();
        let parked = std::mem::take(&mut state.parked);
        for p in parked {
            if state.held.contains(&p.index) {
                state.parked.push(p);
                continue;
            }
            state.served[p.index] += 1;
            let data = self.data(p.index, p.offset, p.size).to_vec();
            write_reply(&mut self.dev, p.unique, Ok(data));
        }
        shared.answered.notify_all();
    }

    fn opendir(&mut self, req: &Request) -> Result<Vec<u8>, i32> {
        if req.header.nodeid != FUSE_ROOT_ID {
            self.file_index(req.header.nodeid)?;
            return Err(libc::ENOTDIR);
        }
        Ok(bytes_of(&fuse_open_out::default()).to_vec())
    }

    /// The root's entries from `offset` (an entry's `off` is the offset of the next one), as
    /// many as fit in `size` bytes: ".", "..", then the files in their order.
    fn readdir(&mut self, req: &Request) -> Result<Vec<u8>, i32> {
        let arg = read_wire::<fuse_read_in>(req.body).ok_or(libc::EINVAL)?;
        if req.header.nodeid != FUSE_ROOT_ID {
            return Err(libc::ENOTDIR);
        }
        let dots = [(FUSE_ROOT_ID, "."), (FUSE_ROOT_ID, "..")]
            .map(|(ino, name)| (ino, name, libc::DT_DIR));
        let files = (self.shared.files.iter().enumerate())
            .map(|(i, (name, _))| (file_node(i), name.as_str(), libc::DT_REG));
        let mut out = Vec::new();
        for (i, (ino, name, kind)) in dots.into_iter().chain(files).enumerate() {
            if (i as u64) < arg.offset {
                continue;
            }
            let entry = fuse_dirent {
                ino,
                off: i as u64 + 1,
                namelen: name.len() as u32,
                r#type: kind.into(),
            };
            let len = size_of::<fuse_dirent>() + name.len();
            let padded = len.next_multiple_of(8);
            if out.len() + padded > arg.size as usize {
                break;
            }
            out.extend_from_slice(bytes_of(&entry));
            out.extend_from_slice(name.as_bytes());
            out.resize(out.len() + padded - len, 0);
        }
        Ok(out)
    }

    fn statfs(&self) -> Vec<u8> {
        let bytes: u64 = (self.shared.files.iter())
            .map(|(_, c)| c.len() as u64)
            .sum();
        let st = fuse_kstatfs {
            blocks: bytes.div_ceil(4096),
            files: self.shared.files.len() as u64 + 1,
            bsize: 4096,
            frsize: 4096,
            namelen: 255,
            ..Default::default()
        };
        bytes_of(&fuse_statfs_out { st }).to_vec()
    }
}

impl Drop for Server {
    /// The thread ends (stopped, unmounted, or panicking): nothing will answer any more.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.serving = false;
        state.parked.clear();
        self.shared.answered.notify_all();
    }
}

/// Node id of file `index` (1 is the root).
fn file_node(index: usize) -> u64 {
    index as u64 + 2
}

/// Writes one reply, header and payload in a single write as the kernel requires. ENOENT
/// (the request is gone: interrupted, or the connection aborted) and ENODEV (unmounted) are
/// expected and ignored.
fn write_reply(dev: &mut File, unique: u64, result: Result<Vec<u8>, i32>) {
    let (error, payload) = match result {
        Ok(payload) => (0, payload),
        Err(errno) => (-errno, Vec::new()),
    };
    let header = fuse_out_header {
        len: (size_of::<fuse_out_header>() + payload.len()) as u32,
        error,
        unique,
    };
    let mut reply = Vec::with_capacity(header.len as usize);
    reply.extend_from_slice(bytes_of(&header));
    reply.extend_from_slice(&payload);
    match dev.write(&reply) {
        Ok(n) if n == reply.len() => {}
        Ok(n) => eprintln!("slowfs: short reply write ({n} of {} bytes)", reply.len()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) => {}
        Err(e) => eprintln!("slowfs: reply to request {unique}: {e}"),
    }
}
