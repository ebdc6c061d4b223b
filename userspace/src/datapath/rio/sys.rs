//! The real thing (Windows only): the RIO function table, the sockets, the registered region,
//! the completion queue and its event. This is the only module of the RIO backend with
//! `unsafe` code; everything above it works through [`RioQueues`].
//!
//! Not run on real Windows yet: it is type-checked and cross-built from Linux, and under Wine
//! only its first step runs (loading the function table fails there, as it should).

use std::ffi::c_void;
use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, UdpSocket};
use std::os::windows::io::{AsRawSocket, FromRawSocket};
use std::ptr;
use std::time::Duration;

use windows_sys::core::GUID;
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, WAIT_OBJECT_0, WAIT_TIMEOUT};
use windows_sys::Win32::Networking::WinSock as ws;
use windows_sys::Win32::System::Memory::{
    VirtualAlloc, VirtualFree, MEM_COMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_READWRITE,
};
use windows_sys::Win32::System::Threading::{CreateEventW, WaitForSingleObject, INFINITE};

use super::config::RioConfig;
use super::engine::{EngineOptions, RioEngine};
use super::layout::{self, BufRange, Layout};
use super::queues::{self, Completion, CorruptQueue, Request, RioQueues, WsaError};
use super::RioError;

// layout.rs and queues.rs spell out the Windows values so they can be tested on Linux; make
// sure they match the real headers.
const _: () = {
    assert!(ws::AF_INET == layout::AF_INET);
    assert!(ws::AF_INET6 == layout::AF_INET6);
    assert!(ws::IPPROTO_IP == layout::IPPROTO_IP);
    assert!(ws::IPPROTO_IPV6 == layout::IPPROTO_IPV6);
    assert!(ws::IPPROTO_UDP == layout::IPPROTO_UDP);
    assert!(ws::IP_PKTINFO == layout::IP_PKTINFO);
    assert!(ws::IPV6_PKTINFO == layout::IPV6_PKTINFO);
    assert!(ws::IP_ECN == layout::IP_ECN);
    assert!(ws::IPV6_ECN == layout::IPV6_ECN);
    assert!(ws::UDP_SEND_MSG_SIZE == layout::UDP_SEND_MSG_SIZE);
    assert!(ws::UDP_COALESCED_INFO as i32 == layout::UDP_COALESCED_INFO);
    assert!(size_of::<ws::SOCKADDR_INET>() == layout::SOCKADDR_INET_LEN as usize);
    assert!(size_of::<ws::CMSGHDR>() == layout::CMSG_HDR_LEN);
    assert!(size_of::<ws::RIO_CMSG_BUFFER>() <= layout::RIO_CMSG_BASE);
    assert!(size_of::<ws::IN_PKTINFO>() == 8);
    assert!(size_of::<ws::IN6_PKTINFO>() == 20);
    assert!(ws::WSAENOBUFS == queues::WSAENOBUFS);
    assert!(ws::WSAEALREADY == queues::WSAEALREADY);
    assert!(ws::WSA_OPERATION_ABORTED == queues::WSA_OPERATION_ABORTED);
    assert!(ws::WSAEMSGSIZE == queues::WSAEMSGSIZE);
    assert!(ws::WSAECONNRESET == queues::WSAECONNRESET);
    assert!(ws::WSAEOPNOTSUPP == queues::WSAEOPNOTSUPP);
};

/// mswsockdef.h; windows-sys does not export these.
const RIO_INVALID_BUFFERID: ws::RIO_BUFFERID = 0xFFFF_FFFF;
const RIO_INVALID_CQ: ws::RIO_CQ = 0;
const RIO_INVALID_RQ: ws::RIO_RQ = 0;

/// Kernel socket buffers, as the socket backend uses.
const SOCKET_BUFFER_BYTES: i32 = 4 << 20;

fn last_wsa_error() -> WsaError {
    // SAFETY: reads this thread's last Winsock error; no arguments.
    unsafe { ws::WSAGetLastError() }
}

fn wsa_io_error() -> io::Error {
    io::Error::from_raw_os_error(last_wsa_error())
}

/// Makes sure Winsock is initialised (reference counted; std does the same lazily).
fn startup() -> Result<(), RioError> {
    let mut data = ws::WSADATA::default();
    // SAFETY: `data` is a valid, writable WSADATA for the call.
    let rc = unsafe { ws::WSAStartup(0x0202, &mut data) };
    if rc != 0 {
        return Err(RioError::Setup {
            what: "WSAStartup",
            source: io::Error::from_raw_os_error(rc),
        });
    }
    Ok(())
}

/// A UDP socket made with `WSA_FLAG_REGISTERED_IO` (RIO needs it), owned by a `UdpSocket` so
/// that dropping it closes it.
fn rio_socket(addr: SocketAddr) -> Result<UdpSocket, RioError> {
    let af = if addr.is_ipv4() {
        ws::AF_INET
    } else {
        ws::AF_INET6
    };
    // SAFETY: plain call with no pointers besides the null protocol info.
    let s = unsafe {
        ws::WSASocketW(
            i32::from(af),
            ws::SOCK_DGRAM,
            ws::IPPROTO_UDP,
            ptr::null(),
            0,
            ws::WSA_FLAG_OVERLAPPED | ws::WSA_FLAG_REGISTERED_IO,
        )
    };
    if s == ws::INVALID_SOCKET {
        return Err(RioError::Create {
            addr,
            source: wsa_io_error(),
        });
    }
    // SAFETY: `s` is a valid socket that nothing else owns; the UdpSocket closes it on drop.
    Ok(unsafe { UdpSocket::from_raw_socket(s as u64) })
}

fn set_opt(sock: &UdpSocket, level: i32, name: i32, value: u32) -> io::Result<()> {
    // SAFETY: `value` is a live u32 and its size is passed; the socket is open.
    let rc = unsafe {
        ws::setsockopt(
            sock.as_raw_socket() as ws::SOCKET,
            level,
            name,
            (&value as *const u32).cast(),
            size_of::<u32>() as i32,
        )
    };
    if rc == ws::SOCKET_ERROR {
        return Err(wsa_io_error());
    }
    Ok(())
}

/// Whether `getsockopt(level, name)` works: how Windows says it has an option.
fn has_opt(sock: &UdpSocket, level: i32, name: i32) -> bool {
    let mut value = 0u32;
    let mut len = size_of::<u32>() as i32;
    // SAFETY: `value` and `len` are live, writable, and `len` is `value`'s size.
    let rc = unsafe {
        ws::getsockopt(
            sock.as_raw_socket() as ws::SOCKET,
            level,
            name,
            (&mut value as *mut u32).cast(),
            &mut len,
        )
    };
    rc != ws::SOCKET_ERROR
}

fn ioctl_bool(sock: &UdpSocket, code: u32, value: bool) -> io::Result<()> {
    let v: u32 = value.into();
    let mut bytes = 0u32;
    // SAFETY: the input is a live u32 of the size passed, no output buffer, no overlapped.
    let rc = unsafe {
        ws::WSAIoctl(
            sock.as_raw_socket() as ws::SOCKET,
            code,
            (&v as *const u32).cast(),
            size_of::<u32>() as u32,
            ptr::null_mut(),
            0,
            &mut bytes,
            ptr::null_mut(),
            None,
        )
    };
    if rc != 0 {
        return Err(wsa_io_error());
    }
    Ok(())
}

fn bind(sock: &UdpSocket, addr: SocketAddr) -> io::Result<()> {
    let mut raw = [0u8; layout::SOCKADDR_INET_LEN as usize];
    layout::encode_sockaddr(addr, &mut raw);
    let len = if addr.is_ipv4() {
        size_of::<ws::SOCKADDR_IN>()
    } else {
        size_of::<ws::SOCKADDR_IN6>()
    };
    // SAFETY: `raw` holds a SOCKADDR_IN / SOCKADDR_IN6 of at least `len` bytes.
    let rc = unsafe {
        ws::bind(
            sock.as_raw_socket() as ws::SOCKET,
            raw.as_ptr().cast(),
            len as i32,
        )
    };
    if rc == ws::SOCKET_ERROR {
        return Err(wsa_io_error());
    }
    Ok(())
}

/// The function table, every entry checked present.
struct Table(ws::RIO_EXTENSION_FUNCTION_TABLE);

impl Table {
    /// `WSAIoctl(SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER, WSAID_MULTIPLE_RIO)` on a
    /// registered-I/O socket.
    fn load(sock: &UdpSocket) -> Result<Table, RioError> {
        let mut t = ws::RIO_EXTENSION_FUNCTION_TABLE {
            cbSize: size_of::<ws::RIO_EXTENSION_FUNCTION_TABLE>() as u32,
            ..Default::default()
        };
        let guid: GUID = ws::WSAID_MULTIPLE_RIO;
        let mut bytes = 0u32;
        // SAFETY: the input is the GUID, the output a table of the size passed (cbSize set as
        // the API requires); no overlapped I/O.
        let rc = unsafe {
            ws::WSAIoctl(
                sock.as_raw_socket() as ws::SOCKET,
                ws::SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER,
                (&guid as *const GUID).cast(),
                size_of::<GUID>() as u32,
                (&mut t as *mut ws::RIO_EXTENSION_FUNCTION_TABLE).cast(),
                size_of::<ws::RIO_EXTENSION_FUNCTION_TABLE>() as u32,
                &mut bytes,
                ptr::null_mut(),
                None,
            )
        };
        if rc != 0 {
            return Err(RioError::Unavailable {
                code: last_wsa_error(),
            });
        }
        let complete = t.RIOReceiveEx.is_some()
            && t.RIOSendEx.is_some()
            && t.RIOCloseCompletionQueue.is_some()
            && t.RIOCreateCompletionQueue.is_some()
            && t.RIOCreateRequestQueue.is_some()
            && t.RIODequeueCompletion.is_some()
            && t.RIODeregisterBuffer.is_some()
            && t.RIONotify.is_some()
            && t.RIORegisterBuffer.is_some();
        if !complete {
            return Err(RioError::Unavailable {
                code: queues::WSAEOPNOTSUPP,
            });
        }
        Ok(Table(t))
    }
}

fn rio_buf(id: ws::RIO_BUFFERID, r: BufRange) -> ws::RIO_BUF {
    ws::RIO_BUF {
        BufferId: id,
        Offset: r.offset,
        Length: r.len,
    }
}

/// The RIO objects of one backend: sockets with their request queues, one completion queue
/// notified through an event, and the registered region.
pub struct WinRio {
    table: Table,
    sockets: Vec<UdpSocket>,
    rqs: Vec<ws::RIO_RQ>,
    cq: ws::RIO_CQ,
    event: HANDLE,
    buffer_id: ws::RIO_BUFFERID,
    region: *mut u8,
    region_len: usize,
    results: Vec<ws::RIORESULT>,
}

impl WinRio {
    fn fail(what: &'static str) -> RioError {
        RioError::Setup {
            what,
            source: wsa_io_error(),
        }
    }

    /// Allocates and registers the region.
    fn register_region(&mut self, len: usize) -> Result<(), RioError> {
        // SAFETY: a fresh committed, read-write allocation; no address requested.
        let p = unsafe { VirtualAlloc(ptr::null(), len, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE) };
        if p.is_null() {
            return Err(RioError::Setup {
                what: "VirtualAlloc of the buffer region",
                source: io::Error::last_os_error(),
            });
        }
        self.region = p.cast();
        self.region_len = len;
        let register = self.table.0.RIORegisterBuffer.expect("checked at load");
        // SAFETY: the region is `len` bytes we own until Drop deregisters it first.
        let id = unsafe { register(self.region as *const u8, len as u32) };
        if id == RIO_INVALID_BUFFERID {
            return Err(Self::fail("RIORegisterBuffer"));
        }
        self.buffer_id = id;
        Ok(())
    }

    /// The completion queue, signalling `self.event`.
    fn create_queues(
        &mut self,
        cq_size: u32,
        receive_queue: u32,
        send_queue: u32,
    ) -> Result<(), RioError> {
        // SAFETY: no security attributes, no name: an unnamed auto-reset event.
        let event = unsafe { CreateEventW(ptr::null(), 0, 0, ptr::null()) };
        if event.is_null() {
            return Err(RioError::Setup {
                what: "CreateEventW",
                source: io::Error::last_os_error(),
            });
        }
        self.event = event;
        let mut notification = ws::RIO_NOTIFICATION_COMPLETION {
            Type: ws::RIO_EVENT_COMPLETION,
            ..Default::default()
        };
        notification.Anonymous.Event = ws::RIO_NOTIFICATION_COMPLETION_0_0 {
            EventHandle: event,
            // RIONotify resets the event, so a stale signal never wakes us.
            NotifyReset: 1,
        };
        let create_cq = self
            .table
            .0
            .RIOCreateCompletionQueue
            .expect("checked at load");
        // SAFETY: `notification` is a valid event notification; RIO copies it.
        let cq = unsafe { create_cq(cq_size, &notification) };
        if cq == RIO_INVALID_CQ {
            return Err(Self::fail("RIOCreateCompletionQueue"));
        }
        self.cq = cq;
        let create_rq = self.table.0.RIOCreateRequestQueue.expect("checked at load");
        for (i, s) in self.sockets.iter().enumerate() {
            // SAFETY: the socket is a registered-I/O socket we own, the CQ is ours and sized
            // for every queue's receives and sends; the context is an integer.
            let rq = unsafe {
                create_rq(
                    s.as_raw_socket() as ws::SOCKET,
                    receive_queue,
                    1,
                    send_queue,
                    1,
                    cq,
                    cq,
                    i as *const c_void,
                )
            };
            if rq == RIO_INVALID_RQ {
                return Err(Self::fail("RIOCreateRequestQueue"));
            }
            self.rqs.push(rq);
        }
        Ok(())
    }
}

/// `RIOReceiveEx` and `RIOSendEx` share one signature: posting either way is the same call.
type PostFn = unsafe extern "system" fn(
    ws::RIO_RQ,
    *const ws::RIO_BUF,
    u32,
    *const ws::RIO_BUF,
    *const ws::RIO_BUF,
    *const ws::RIO_BUF,
    *const ws::RIO_BUF,
    u32,
    *const c_void,
) -> i32;

impl WinRio {
    /// Posts `req` on socket `sock`'s request queue with `post` (RIOReceiveEx or RIOSendEx).
    fn post(
        &self,
        post: PostFn,
        sock: usize,
        req: &Request,
        defer: bool,
        context: u64,
    ) -> Result<(), WsaError> {
        let data = rio_buf(self.buffer_id, req.data);
        let remote = rio_buf(self.buffer_id, req.remote);
        let control = req.control.map(|c| rio_buf(self.buffer_id, c));
        let flags = if defer { ws::RIO_MSG_DEFER } else { 0 };
        // SAFETY: the RIO_BUFs name ranges of our registered region that the engine holds for
        // this request until its completion (the slot ledger); the locals are read during the
        // call only. The context is an integer token.
        let ok = unsafe {
            post(
                self.rqs[sock],
                &data,
                1,
                ptr::null(),
                &remote,
                control
                    .as_ref()
                    .map_or(ptr::null(), |c| c as *const ws::RIO_BUF),
                ptr::null(),
                flags,
                context as usize as *const c_void,
            )
        };
        if ok == 0 {
            return Err(last_wsa_error());
        }
        Ok(())
    }

    /// Hands the deferred requests of `sock`'s queue to the kernel: `post` with
    /// RIO_MSG_COMMIT_ONLY.
    fn commit(&self, post: PostFn, sock: usize) -> Result<(), WsaError> {
        // SAFETY: RIO_MSG_COMMIT_ONLY with every pointer null and no buffers, as documented.
        let ok = unsafe {
            post(
                self.rqs[sock],
                ptr::null(),
                0,
                ptr::null(),
                ptr::null(),
                ptr::null(),
                ptr::null(),
                ws::RIO_MSG_COMMIT_ONLY,
                ptr::null(),
            )
        };
        if ok == 0 {
            return Err(last_wsa_error());
        }
        Ok(())
    }
}

impl RioQueues for WinRio {
    fn receive(
        &mut self,
        sock: usize,
        req: &Request,
        defer: bool,
        context: u64,
    ) -> Result<(), WsaError> {
        let post = self.table.0.RIOReceiveEx.expect("checked at load");
        self.post(post, sock, req, defer, context)
    }

    fn send(
        &mut self,
        sock: usize,
        req: &Request,
        defer: bool,
        context: u64,
    ) -> Result<(), WsaError> {
        let post = self.table.0.RIOSendEx.expect("checked at load");
        self.post(post, sock, req, defer, context)
    }

    fn commit_receives(&mut self, sock: usize) -> Result<(), WsaError> {
        let post = self.table.0.RIOReceiveEx.expect("checked at load");
        self.commit(post, sock)
    }

    fn commit_sends(&mut self, sock: usize) -> Result<(), WsaError> {
        let post = self.table.0.RIOSendEx.expect("checked at load");
        self.commit(post, sock)
    }

    fn dequeue(&mut self, out: &mut [Completion]) -> Result<usize, CorruptQueue> {
        let want = out.len().min(self.results.len());
        let f = self.table.0.RIODequeueCompletion.expect("checked at load");
        // SAFETY: `results` has room for `want` RIORESULTs; the CQ is ours.
        let n = unsafe { f(self.cq, self.results.as_mut_ptr(), want as u32) };
        if n == ws::RIO_CORRUPT_CQ {
            return Err(CorruptQueue);
        }
        let n = (n as usize).min(want);
        for (o, r) in out.iter_mut().zip(&self.results[..n]) {
            *o = Completion {
                status: r.Status,
                bytes: r.BytesTransferred,
                context: r.RequestContext,
            };
        }
        Ok(n)
    }

    fn notify(&mut self) -> Result<(), WsaError> {
        let f = self.table.0.RIONotify.expect("checked at load");
        // SAFETY: the CQ is ours and was created with an event notification.
        match unsafe { f(self.cq) } {
            0 => Ok(()),
            e => Err(e),
        }
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        let ms = match timeout {
            None => INFINITE,
            // Rounded up, so a timer due in 0.3 ms does not become a busy loop of 0 ms waits.
            Some(t) => t.as_micros().div_ceil(1000).min(u128::from(INFINITE - 1)) as u32,
        };
        // SAFETY: the event handle is ours and open.
        match unsafe { WaitForSingleObject(self.event, ms) } {
            WAIT_OBJECT_0 => Ok(true),
            WAIT_TIMEOUT => Ok(false),
            _ => Err(io::Error::last_os_error()),
        }
    }

    fn event(&self) -> Option<std::os::windows::io::RawHandle> {
        (!self.event.is_null()).then_some(self.event)
    }

    fn region(&mut self, range: BufRange) -> &mut [u8] {
        assert!(
            range.end() <= self.region_len as u64,
            "{range:?} outside the region"
        );
        // SAFETY: the region is `region_len` bytes of our allocation and `range` lies inside
        // it; `&mut self` means no other slice of it from us is alive; by the trait's contract
        // no outstanding request covers `range`, so the kernel does not touch it meanwhile.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.region.add(range.offset as usize),
                range.len as usize,
            )
        }
    }

    fn close_sockets(&mut self) {
        // closesocket cancels the outstanding requests; their request queues go with them.
        self.sockets.clear();
        self.rqs.clear();
    }
}

// SAFETY: the RIO objects, the event and the region belong to no thread: RIO only forbids
// concurrent calls on one queue, and every method here takes `&mut self`, so one thread at a
// time makes them (the quinn adapter moves the backend behind a mutex).
unsafe impl Send for WinRio {}

impl Drop for WinRio {
    fn drop(&mut self) {
        // The sockets first, so nothing is outstanding when the region goes.
        self.close_sockets();
        if self.cq != RIO_INVALID_CQ {
            let close = self
                .table
                .0
                .RIOCloseCompletionQueue
                .expect("checked at load");
            // SAFETY: the CQ is ours and no request queue uses it any more.
            unsafe { close(self.cq) };
        }
        if self.buffer_id != RIO_INVALID_BUFFERID {
            let deregister = self.table.0.RIODeregisterBuffer.expect("checked at load");
            // SAFETY: the buffer id is ours; its sockets are closed.
            unsafe { deregister(self.buffer_id) };
        }
        if !self.region.is_null() {
            // SAFETY: the region came from VirtualAlloc and nothing refers to it any more.
            unsafe { VirtualFree(self.region.cast(), 0, MEM_RELEASE) };
        }
        if !self.event.is_null() {
            // SAFETY: the event handle is ours.
            unsafe { CloseHandle(self.event) };
        }
    }
}

/// A bound, configured RIO socket and what the OS offers on it.
struct Configured {
    sock: UdpSocket,
    local: SocketAddr,
    dont_fragment: bool,
    coalescing: bool,
    send_offload: bool,
}

fn configure(addr: SocketAddr, config: &RioConfig) -> Result<Configured, RioError> {
    let sock = rio_socket(addr)?;
    let err = |what| move |source| RioError::Configure { addr, what, source };
    let v6 = addr.is_ipv6();
    let dual_stack = v6 && addr.ip().is_unspecified();
    if dual_stack {
        set_opt(&sock, ws::IPPROTO_IPV6, ws::IPV6_V6ONLY, 0).map_err(err("IPV6_V6ONLY off"))?;
    }
    bind(&sock, addr).map_err(|source| RioError::Bind { addr, source })?;
    let local = sock.local_addr().map_err(err("getsockname"))?;
    // Our address for each datagram: required (replies go out from the address the peer used).
    if v6 {
        set_opt(&sock, ws::IPPROTO_IPV6, ws::IPV6_PKTINFO, 1).map_err(err("IPV6_PKTINFO"))?;
    }
    if !v6 || dual_stack {
        set_opt(&sock, ws::IPPROTO_IP, ws::IP_PKTINFO, 1).map_err(err("IP_PKTINFO"))?;
    }
    // ECN on receive: QUIC works without it (older Windows lacks the option).
    let ecn = if v6 {
        set_opt(&sock, ws::IPPROTO_IPV6, ws::IPV6_ECN, 1)
    } else {
        set_opt(&sock, ws::IPPROTO_IP, ws::IP_ECN, 1)
    };
    if dual_stack {
        let _ = set_opt(&sock, ws::IPPROTO_IP, ws::IP_ECN, 1);
    }
    if let Err(e) = ecn {
        tracing::warn!(%addr, error = %e, "RIO socket: no ECN on receive");
    }
    // DF, so path MTU discovery is safe; without it quinn-proto keeps to the initial MTU.
    let df4 = (!v6 || dual_stack).then(|| set_opt(&sock, ws::IPPROTO_IP, ws::IP_DONTFRAGMENT, 1));
    let df6 = v6.then(|| set_opt(&sock, ws::IPPROTO_IPV6, ws::IPV6_DONTFRAG, 1));
    let dont_fragment = df4.is_none_or(|r| r.is_ok()) && df6.is_none_or(|r| r.is_ok());
    // Best effort: a busy server wants big buffers; ICMP port unreachable must not surface as
    // receive errors.
    let _ = set_opt(
        &sock,
        ws::SOL_SOCKET,
        ws::SO_RCVBUF,
        SOCKET_BUFFER_BYTES as u32,
    );
    let _ = set_opt(
        &sock,
        ws::SOL_SOCKET,
        ws::SO_SNDBUF,
        SOCKET_BUFFER_BYTES as u32,
    );
    let _ = ioctl_bool(&sock, ws::SIO_UDP_CONNRESET, false);
    let coalescing = config.receive_coalescing
        && set_opt(
            &sock,
            ws::IPPROTO_UDP,
            ws::UDP_RECV_MAX_COALESCED_SIZE,
            layout::MAX_COALESCED_RECEIVE,
        )
        .is_ok();
    let send_offload =
        config.send_offload && has_opt(&sock, ws::IPPROTO_UDP, ws::UDP_SEND_MSG_SIZE);
    Ok(Configured {
        sock,
        local,
        dont_fragment,
        coalescing,
        send_offload,
    })
}

/// Opens the RIO backend: loads the function table (failing with [`RioError::Unavailable`]
/// where there is none), then sockets, region, queues, and posts the receives.
pub fn open(listen: &[SocketAddr], config: &RioConfig) -> Result<RioEngine<WinRio>, RioError> {
    if let Err((field, message)) = config.validate() {
        return Err(RioError::Layout(format!("{field}: {message}")));
    }
    startup()?;
    // The function table first, on a throwaway socket: nothing is bound if RIO is missing.
    let probe_addr = listen
        .first()
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let table = Table::load(&rio_socket(probe_addr)?)?;

    let mut rio = WinRio {
        table,
        sockets: Vec::new(),
        rqs: Vec::new(),
        cq: RIO_INVALID_CQ,
        event: ptr::null_mut(),
        buffer_id: RIO_INVALID_BUFFERID,
        region: ptr::null_mut(),
        region_len: 0,
        results: vec![ws::RIORESULT::default(); config.completion_batch.max(1) as usize],
    };
    let mut locals = Vec::with_capacity(listen.len());
    let (mut dont_fragment, mut coalescing, mut send_offload) = (true, true, true);
    for &addr in listen {
        let c = configure(addr, config)?;
        dont_fragment &= c.dont_fragment;
        coalescing &= c.coalescing;
        send_offload &= c.send_offload;
        locals.push(c.local);
        rio.sockets.push(c.sock);
    }
    let n = listen.len() as u32;
    let slot = |big: bool| {
        if big {
            layout::COALESCED_SLOT
        } else {
            layout::DATAGRAM_SLOT
        }
    };
    let layout = Layout::new(
        config.receive_queue * n,
        slot(coalescing),
        config.send_queue,
        slot(send_offload),
    )
    .map_err(RioError::Layout)?;
    rio.register_region(layout.total_len())?;
    let cq_size = u64::from(n) * u64::from(config.receive_queue + config.send_queue);
    if cq_size > u64::from(ws::RIO_MAX_CQ_SIZE) {
        return Err(RioError::Layout(format!(
            "a completion queue of {cq_size} entries exceeds RIO's {}",
            ws::RIO_MAX_CQ_SIZE
        )));
    }
    rio.create_queues(cq_size as u32, config.receive_queue, config.send_queue)?;
    let opts = EngineOptions {
        receive_queue: config.receive_queue,
        send_queue: config.send_queue,
        completion_batch: config.completion_batch,
        send_offload,
        dont_fragment,
    };
    tracing::info!(
        sockets = n,
        region_bytes = layout.total_len(),
        rx_slots = layout.rx_slots,
        tx_slots = layout.tx_slots,
        receive_coalescing = coalescing,
        send_offload,
        "RIO ready"
    );
    RioEngine::new(rio, &locals, layout, opts).map_err(|source| RioError::Setup {
        what: "posting the receives",
        source,
    })
}
