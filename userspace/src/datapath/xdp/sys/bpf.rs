//! The few raw bpf(2) commands aya does not expose, and the interface index lookup.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_DETACH: libc::c_long = 34;

fn sys_bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zeroed, 64-byte `union bpf_attr` prefix that outlives the call;
    // the kernel reads at most `size` bytes of it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fd_from(ret: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

/// `BPF_PROG_GET_FD_BY_ID`: attr { prog_id: u32, next_id: u32, open_flags: u32 }.
pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u64; 8];
    attr[0] = first_u32(id);
    sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(fd_from)
}

/// `BPF_LINK_GET_FD_BY_ID`: attr { link_id: u32, next_id: u32, open_flags: u32 }.
pub fn link_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u64; 8];
    attr[0] = first_u32(id);
    sys_bpf(BPF_LINK_GET_FD_BY_ID, &mut attr).map(fd_from)
}

/// `BPF_LINK_DETACH`: attr { link_fd: u32 }.
pub fn link_detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = [0u64; 8];
    attr[0] = first_u32(fd.as_raw_fd() as u32);
    sys_bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// A u64 whose first four bytes in memory are `value` (native endian).
fn first_u32(value: u32) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&value.to_ne_bytes());
    u64::from_ne_bytes(bytes)
}

/// The index of interface `name` in the calling thread's network namespace, `None` if there is
/// no such interface.
pub fn if_nametoindex(name: &CStr) -> Option<u32> {
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}
