//! The interface's kernel driver, by ethtool ioctl.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `struct ethtool_drvinfo` (linux/ethtool.h): the kernel's layout, of which only `driver` is
/// read.
#[repr(C)]
#[allow(dead_code)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// The kernel driver behind `interface` ("veth", "mlx5_core", ...), by ETHTOOL_GDRVINFO in the
/// calling thread's network namespace.
pub fn driver_name(interface: &str) -> io::Result<String> {
    if interface.is_empty() || interface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name empty or too long",
        ));
    }
    // SAFETY: socket takes no pointers; a non-negative return is a new descriptor we own.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: both are plain C structs of integers, arrays and a pointer: all zeroes is valid.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: as above.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name fits with its NUL (checked above); the rest of the array stays zero.
    for (dst, src) in ifr.ifr_name.iter_mut().zip(interface.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: SIOCETHTOOL reads `ifr` (a NUL-terminated name and the pointer to `info`) and
    // writes at most size_of::<DrvInfo>() bytes to `info`; both outlive the call.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCETHTOOL,
            &mut ifr as *mut libc::ifreq,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info
        .driver
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}
