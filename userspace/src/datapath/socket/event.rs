//! Windows: a socket's readiness as an event (`WSAEventSelect`), so an async runtime serving
//! the socket (the quinn adapter) can sleep until a datagram arrives or, after a send would
//! have blocked, until there is room again.

use std::io;
use std::net::UdpSocket;
use std::os::windows::io::{AsRawSocket, RawHandle};

use windows_sys::Win32::Networking::WinSock as ws;

/// A manual-reset event that Winsock sets when its socket has a datagram to read (`FD_READ`,
/// recorded again after each receive call that leaves data behind) or room to send after a
/// send failed with WSAEWOULDBLOCK (`FD_WRITE`). It puts the socket in non-blocking mode.
pub struct SocketEvent(ws::WSAEVENT);

impl SocketEvent {
    pub fn new(socket: &UdpSocket) -> io::Result<Self> {
        // SAFETY: no arguments; a new manual-reset event, or WSA_INVALID_EVENT (0).
        let event = unsafe { ws::WSACreateEvent() };
        if event == 0 {
            return Err(wsa_error());
        }
        let event = Self(event);
        let which = (ws::FD_READ | ws::FD_WRITE) as i32;
        // SAFETY: the socket is open (borrowed for the call) and the event is ours; Winsock
        // keeps the association until the socket closes or is associated again.
        if unsafe { ws::WSAEventSelect(socket.as_raw_socket() as ws::SOCKET, event.0, which) } != 0
        {
            return Err(wsa_error());
        }
        Ok(event)
    }

    pub fn handle(&self) -> RawHandle {
        self.0 as RawHandle
    }
}

impl Drop for SocketEvent {
    fn drop(&mut self) {
        // SAFETY: the event is ours; its socket is closed first (field order in `Endpoint`).
        unsafe { ws::WSACloseEvent(self.0) };
    }
}

fn wsa_error() -> io::Error {
    // SAFETY: no arguments; reads this thread's last Winsock error.
    io::Error::from_raw_os_error(unsafe { ws::WSAGetLastError() })
}
