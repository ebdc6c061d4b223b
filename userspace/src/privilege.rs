//! Dropping root after start-up (`server.user`, `server.group`): once every worker has bound
//! its sockets (and, for xdp, attached its program and locked its UMEM), the process switches
//! to the configured user and group. Switching away from uid 0 clears the permitted and
//! effective capability sets, so nothing privileged is left: the backends need none to serve
//! (AF_XDP sockets, the bpf_link, io_uring and netlink subscriptions stay usable).

#[cfg(unix)]
use std::ffi::CString;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("server.user = {0:?}: no such user (see /etc/passwd)")]
    NoUser(String),
    #[error("server.group = {0:?}: no such group (see /etc/group)")]
    NoGroup(String),
    #[error("dropping privileges to {what}: {source} (quixd must start as root to switch user)")]
    Switch {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("dropping privileges is implemented on Unix only")]
    Unsupported,
}

/// The uid of `user` and the gid of `group` (default: the user's primary group), looked up
/// at start-up so that a wrong name stops quixd before it binds anything.
#[cfg(unix)]
pub fn lookup(user: &str, group: Option<&str>) -> Result<(u32, u32), PrivilegeError> {
    let name = CString::new(user).map_err(|_| PrivilegeError::NoUser(user.into()))?;
    // SAFETY: getpwnam reads a NUL-terminated name and returns a pointer into static storage
    // (or null); its fields are copied out before any other call could reuse that storage.
    let (uid, primary_gid) = unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return Err(PrivilegeError::NoUser(user.into()));
        }
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    let gid = match group {
        None => primary_gid,
        Some(group) => {
            let name = CString::new(group).map_err(|_| PrivilegeError::NoGroup(group.into()))?;
            // SAFETY: as getpwnam above.
            unsafe {
                let gr = libc::getgrnam(name.as_ptr());
                if gr.is_null() {
                    return Err(PrivilegeError::NoGroup(group.into()));
                }
                (*gr).gr_gid
            }
        }
    };
    Ok((uid, gid))
}

/// Switches the whole process (every thread) to `uid` and `gid`, with no supplementary
/// groups.
#[cfg(unix)]
pub fn switch(uid: u32, gid: u32) -> Result<(), PrivilegeError> {
    let what = format!("uid {uid}, gid {gid}");
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(PrivilegeError::Switch {
                what: what.clone(),
                source: io::Error::last_os_error(),
            })
        }
    };
    // SAFETY: plain system calls on integers (setgroups with an empty list); glibc applies
    // setgid/setuid to every thread of the process. Order matters: the groups go first, while
    // we may still change them.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setgid(gid))?;
        check(libc::setuid(uid))?;
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn lookup(_user: &str, _group: Option<&str>) -> Result<(u32, u32), PrivilegeError> {
    Err(PrivilegeError::Unsupported)
}

#[cfg(not(unix))]
pub fn switch(_uid: u32, _gid: u32) -> Result<(), PrivilegeError> {
    Err(PrivilegeError::Unsupported)
}
