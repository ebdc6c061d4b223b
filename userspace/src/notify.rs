//! systemd's readiness protocol (`Type=notify`): a datagram such as `READY=1` to the socket
//! named by `$NOTIFY_SOCKET` (a path, or an abstract name after `@`). Without the variable,
//! as outside systemd, nothing is sent.

use std::io;

/// Sends `state` (e.g. `READY=1`) to systemd, if quixd runs under it with `Type=notify`.
pub fn notify(state: &str) {
    if let Err(e) = send(state) {
        tracing::warn!(error = %e, state, "cannot tell systemd (NOTIFY_SOCKET)");
    }
}

#[cfg(target_os = "linux")]
fn send(state: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(&path)?,
    };
    UnixDatagram::unbound()?
        .send_to_addr(state.as_bytes(), &addr)
        .map(drop)
}

#[cfg(not(target_os = "linux"))]
fn send(_state: &str) -> io::Result<()> {
    Ok(())
}
