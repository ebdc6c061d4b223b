//! Attaching the XDP program to the server's veth: driver and SKB mode, `auto`, detaching on
//! drop and when the holding process is SIGKILLed, refusing foreign programs, replacing a
//! netlink-attached copy of ours, clear errors, and `cargo xtask xdp load/status/unload`.
//!
//! What is attached is checked with `ip -d link show`, independently of our own netlink code.
//! The SIGKILL, privilege and xtask tests run the xtask binary (`xtask xdp hold`, `load`, ...),
//! built once per test process with `cargo build -p xtask` (found through cargo's JSON
//! output, so any target directory or profile works).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use quixd::datapath::xdp::attach::{self, AttachError, AttachedMode, Holder};
use quixd::datapath::xdp::program::{AttachMode, XdpProgram, XdpProgramError, PROGRAM_NAME};

use crate::netns::{privileged, TestNet};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// What `ip -d link show` says about XDP on the server's veth: (mode keyword, program id).
/// The keyword is `xdp` (driver), `xdpgeneric` (SKB) or `xdpoffload`.
fn ip_xdp(net: &TestNet) -> Option<(String, u32)> {
    let out = net.server(&["ip", "-d", "link", "show", "dev", &net.server_if]);
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    let mode = first
        .split_whitespace()
        .find(|word| word.starts_with("xdp"))?
        .to_owned();
    let id = text
        .split_whitespace()
        .skip_while(|word| !word.starts_with("prog/xdp"))
        .nth(2)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no program id in `ip -d link show`: {text}"));
    Some((mode, id))
}

/// Waits until `ip` shows no XDP program on the server's veth (the kernel may release a link
/// from a work item).
fn wait_detached(net: &TestNet, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(state) = ip_xdp(net) {
        assert!(
            Instant::now() < deadline,
            "{what}: still attached after 5 s: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on a thread inside the server namespace.
fn in_server<T: Send + 'static>(net: &TestNet, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = net.server_ns.clone();
    std::thread::spawn(move || {
        TestNet::enter(&ns);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn attach_error(error: XdpProgramError) -> AttachError {
    match error {
        XdpProgramError::Attach(error) => error,
        other => panic!("expected an attach error, got: {other}"),
    }
}

/// A foreign XDP program (`return XDP_PASS`, named `foreign_pass`) loaded with raw bpf(2), and
/// attached by netlink or by a bpf_link we hold, as some other tool would. Also used by
/// `daemon_errors.rs`.
pub mod foreign {
    use super::*;

    pub const NAME: &str = "foreign_pass";
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u32 = 37;
    pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
    pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

    fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<OwnedFd> {
        // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix that outlives the call.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new fd from the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn put(attr: &mut [u8], at: usize, bytes: &[u8]) {
        attr[at..at + bytes.len()].copy_from_slice(bytes);
    }

    pub fn load() -> OwnedFd {
        // r0 = XDP_PASS (2); exit
        let insns: [u8; 16] = [0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &BPF_PROG_TYPE_XDP.to_ne_bytes());
        put(&mut attr, 4, &2u32.to_ne_bytes());
        put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
        put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
        put(&mut attr, 48, NAME.as_bytes());
        put(&mut attr, 68, &BPF_XDP.to_ne_bytes());
        bpf(BPF_PROG_LOAD, &mut attr).expect("load the foreign XDP program")
    }

    /// `BPF_LINK_CREATE` on `ifindex` (calling thread's namespace).
    pub fn link(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> OwnedFd {
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
        put(&mut attr, 4, &ifindex.to_ne_bytes());
        put(&mut attr, 8, &BPF_XDP.to_ne_bytes());
        put(&mut attr, 12, &flags.to_ne_bytes());
        bpf(BPF_LINK_CREATE, &mut attr).expect("BPF_LINK_CREATE the foreign program")
    }

    /// [`attach_netlink`] on the server end of `net`, from a thread inside its namespace.
    pub fn attach_netlink_to_server(net: &TestNet, prog: BorrowedFd<'_>, flags: u32) {
        let (ns, iface) = (net.server_ns.as_str(), net.server_if.as_str());
        std::thread::scope(|s| {
            s.spawn(move || {
                TestNet::enter(ns);
                let index = attach::ifindex(iface).unwrap();
                attach_netlink(prog, index, flags);
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        });
    }

    /// The legacy attach: `RTM_SETLINK` with `IFLA_XDP { FD, FLAGS }` (what `ip link set dev
    /// IF xdp...` does), in the calling thread's namespace.
    pub fn attach_netlink(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) {
        fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
            buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.extend_from_slice(data);
            while buf.len() % 4 != 0 {
                buf.push(0);
            }
        }
        let mut xdp = Vec::new();
        attr(&mut xdp, 1, &prog.as_raw_fd().to_ne_bytes()); // IFLA_XDP_FD
        attr(&mut xdp, 3, &flags.to_ne_bytes()); // IFLA_XDP_FLAGS
        let mut body = vec![0u8; 16]; // struct ifinfomsg
        body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        attr(&mut body, 43 | (1 << 15), &xdp); // IFLA_XDP, nested
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&19u16.to_ne_bytes()); // RTM_SETLINK
        msg.extend_from_slice(&(1u16 | 4).to_ne_bytes()); // NLM_F_REQUEST | NLM_F_ACK
        msg.extend_from_slice(&1u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        // SAFETY: plain socket calls on buffers that outlive them; results checked.
        unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
            assert!(
                fd >= 0,
                "netlink socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = OwnedFd::from_raw_fd(fd);
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as u16;
            let sent = libc::sendto(
                fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            );
            assert_eq!(sent as usize, msg.len());
            let mut answer = [0u8; 4096];
            let n = libc::recv(fd.as_raw_fd(), answer.as_mut_ptr().cast(), answer.len(), 0);
            assert!(
                n >= 20,
                "netlink answer: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(u16::from_ne_bytes([answer[4], answer[5]]), 2, "NLMSG_ERROR");
            let code = i32::from_ne_bytes(answer[16..20].try_into().unwrap());
            assert_eq!(
                code,
                0,
                "netlink XDP attach: {}",
                std::io::Error::from_raw_os_error(-code)
            );
        }
    }
}

/// The xtask binary, built once per test process.
fn xtask_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/Cargo.toml");
        let mut command = Command::new(cargo);
        command.args([
            "build",
            "--quiet",
            "--bin",
            "xtask",
            "--message-format=json",
        ]);
        command.arg("--manifest-path").arg(&manifest);
        let exe = std::env::current_exe().unwrap_or_default();
        if exe.components().any(|c| c.as_os_str() == "release") {
            command.arg("--release");
        }
        let out = command
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build -p xtask");
        assert!(out.status.success(), "cargo build -p xtask failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let executable = stdout
            .lines()
            .filter(|line| {
                line.contains("\"reason\":\"compiler-artifact\"")
                    && line.contains("\"name\":\"xtask\"")
            })
            .find_map(|line| {
                let start = line.find("\"executable\":\"")? + "\"executable\":\"".len();
                let end = start + line[start..].find('"')?;
                Some(PathBuf::from(&line[start..end]))
            })
            .expect("cargo reported the xtask executable");
        assert!(executable.exists(), "{}", executable.display());
        executable
    })
}

fn xtask(net: &TestNet, args: &[&str]) -> Output {
    Command::new(xtask_bin())
        .args(["xdp", "--netns", &net.server_ns])
        .args(args)
        .output()
        .expect("run xtask")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Removes the pins of an xtask `load` if a test fails halfway.
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
        let _ = std::fs::remove_dir("/sys/fs/bpf/quixd");
    }
}

// ---------------------------------------------------------------------------------------------
// In-process attach
// ---------------------------------------------------------------------------------------------

fn attach_in_mode(mode: AttachMode, expected: AttachedMode, keyword: &str) {
    let net = TestNet::new();
    let iface = net.server_if.clone();
    let (program, info) = in_server(&net, move || {
        let mut program = XdpProgram::load().unwrap();
        program.set_ports(&[4433]).unwrap();
        let info = program.attach(&iface, mode).expect("attach");
        // Our own view agrees.
        let state = attach::inspect(&iface).unwrap();
        assert_eq!(state.programs.len(), 1, "{state:?}");
        assert_eq!(state.programs[0].id, info.program_id);
        assert_eq!(state.programs[0].mode, expected);
        assert_eq!(state.programs[0].holder, Holder::Link(info.link_id));
        assert!(state.programs[0].is_ours());
        (program, info)
    });
    assert_eq!(info.mode, expected);
    assert_eq!(info.driver_error, None);
    assert!(info.replaced.is_empty());
    assert_eq!(
        ip_xdp(&net),
        Some((keyword.to_owned(), info.program_id)),
        "`ip -d link show` after attaching in {mode} mode"
    );
    drop(program);
    wait_detached(&net, &format!("after dropping the {mode}-mode program"));
}

#[test]
fn driver_mode_attaches_and_drop_detaches() {
    if !privileged("driver_mode_attaches_and_drop_detaches") {
        return;
    }
    attach_in_mode(AttachMode::Driver, AttachedMode::Driver, "xdp");
}

#[test]
fn skb_mode_attaches_and_drop_detaches() {
    if !privileged("skb_mode_attaches_and_drop_detaches") {
        return;
    }
    attach_in_mode(AttachMode::Skb, AttachedMode::Skb, "xdpgeneric");
}

#[test]
fn auto_gets_driver_mode_on_veth() {
    if !privileged("auto_gets_driver_mode_on_veth") {
        return;
    }
    attach_in_mode(AttachMode::Auto, AttachedMode::Driver, "xdp");
}

#[test]
fn auto_falls_back_to_skb_where_the_driver_has_no_xdp() {
    if !privileged("auto_falls_back_to_skb_where_the_driver_has_no_xdp") {
        return;
    }
    // Loopback has no native XDP. The server namespace's own `lo` goes away with it.
    let net = TestNet::new();
    let (info, driver_error) = in_server(&net, || {
        let mut program = XdpProgram::load().unwrap();
        let error = attach_error(program.attach("lo", AttachMode::Driver).unwrap_err());
        let info = program
            .attach("lo", AttachMode::Auto)
            .expect("auto attach on lo");
        let state = attach::inspect("lo").unwrap();
        assert_eq!(state.programs.len(), 1);
        assert_eq!(state.programs[0].mode, AttachedMode::Skb);
        drop(program);
        assert!(attach::inspect("lo").unwrap().programs.is_empty());
        (info, error)
    });
    assert_eq!(info.mode, AttachedMode::Skb);
    let reason = info.driver_error.clone().expect("why driver mode failed");
    assert!(reason.contains("no native XDP support"), "{reason}");
    assert!(
        info.to_string().starts_with("skb (driver mode failed: "),
        "{info}"
    );
    let message = driver_error.to_string();
    assert!(
        matches!(
            driver_error,
            AttachError::Attach {
                mode: AttachedMode::Driver,
                ..
            }
        ),
        "{message}"
    );
    assert!(message.contains("`lo` in driver mode failed"), "{message}");
}

#[test]
fn explicit_detach_and_reattach() {
    if !privileged("explicit_detach_and_reattach") {
        return;
    }
    let net = TestNet::new();
    let iface = net.server_if.clone();
    let mut program = in_server(&net, move || {
        let mut program = XdpProgram::load().unwrap();
        let info = program.attach(&iface, AttachMode::Skb).unwrap();
        assert_eq!(program.attachment(), Some(&info));
        // A second attach of the same object is refused.
        let error = attach_error(program.attach(&iface, AttachMode::Skb).unwrap_err());
        assert!(
            matches!(error, AttachError::AttachedTwice { .. }),
            "{error}"
        );
        program
    });
    assert!(ip_xdp(&net).is_some());
    program.detach().unwrap();
    assert_eq!(program.attachment(), None);
    wait_detached(&net, "after detach()");
    // The maps and the program are still usable, and it can attach again.
    program.set_ports(&[1, 2]).unwrap();
    let iface = net.server_if.clone();
    let program = in_server(&net, move || {
        program.attach(&iface, AttachMode::Driver).unwrap();
        program
    });
    assert_eq!(ip_xdp(&net).map(|(mode, _)| mode).as_deref(), Some("xdp"));
    drop(program);
    wait_detached(&net, "after dropping the re-attached program");
}

#[test]
fn foreign_program_attached_by_netlink_is_refused_and_kept() {
    if !privileged("foreign_program_attached_by_netlink_is_refused_and_kept") {
        return;
    }
    let net = TestNet::new();
    let foreign_fd = foreign::load();
    foreign::attach_netlink_to_server(&net, foreign_fd.as_fd(), foreign::XDP_FLAGS_SKB_MODE);
    let (mode, foreign_id) = ip_xdp(&net).expect("foreign program attached");
    assert_eq!(mode, "xdpgeneric");

    for mode in [AttachMode::Auto, AttachMode::Driver, AttachMode::Skb] {
        let iface = net.server_if.clone();
        let error = in_server(&net, move || {
            let mut program = XdpProgram::load().unwrap();
            attach_error(program.attach(&iface, mode).unwrap_err())
        });
        let message = error.to_string();
        match &error {
            AttachError::ForeignProgram { existing, .. } => {
                assert_eq!(existing.id, foreign_id);
                assert_eq!(existing.name.as_deref(), Some(foreign::NAME));
                assert_eq!(existing.mode, AttachedMode::Skb);
                assert_eq!(existing.holder, Holder::Netlink);
            }
            other => panic!("{mode}: expected ForeignProgram, got {other}"),
        }
        for needle in [
            format!("`{}`", net.server_if),
            format!("program id {foreign_id} `{}`", foreign::NAME),
            "not quixd's".to_owned(),
            format!("ip link set dev {} xdpgeneric off", net.server_if),
        ] {
            assert!(
                message.contains(&needle),
                "{needle:?} missing in: {message}"
            );
        }
        assert_eq!(
            ip_xdp(&net),
            Some(("xdpgeneric".to_owned(), foreign_id)),
            "the foreign program stays after a refused {mode} attach"
        );
    }
    drop(foreign_fd);
    // The netlink attachment holds its own reference: still there.
    assert_eq!(ip_xdp(&net).map(|(_, id)| id), Some(foreign_id));
}

#[test]
fn foreign_program_held_by_a_link_is_refused_and_kept() {
    if !privileged("foreign_program_held_by_a_link_is_refused_and_kept") {
        return;
    }
    let net = TestNet::new();
    let iface = net.server_if.clone();
    let foreign_prog = foreign::load();
    let raw = foreign_prog.as_raw_fd();
    let link = in_server(&net, move || {
        let index = attach::ifindex(&iface).unwrap();
        // SAFETY: `foreign_prog` outlives this thread (joined below).
        let prog = unsafe { BorrowedFd::borrow_raw(raw) };
        foreign::link(prog, index, foreign::XDP_FLAGS_DRV_MODE)
    });
    let (mode, foreign_id) = ip_xdp(&net).expect("foreign program attached");
    assert_eq!(mode, "xdp");
    let iface = net.server_if.clone();
    let error = in_server(&net, move || {
        let mut program = XdpProgram::load().unwrap();
        attach_error(program.attach(&iface, AttachMode::Auto).unwrap_err())
    });
    let message = error.to_string();
    assert!(
        matches!(&error, AttachError::ForeignProgram { existing, .. }
            if existing.id == foreign_id && existing.link_id().is_some()),
        "{message}"
    );
    assert!(message.contains("bpf_link"), "{message}");
    assert!(message.contains(foreign::NAME), "{message}");
    assert_eq!(ip_xdp(&net), Some(("xdp".to_owned(), foreign_id)));
    drop(link);
    drop(foreign_prog);
    wait_detached(&net, "after closing the foreign link");
}

#[test]
fn netlink_attached_copy_of_ours_is_replaced() {
    if !privileged("netlink_attached_copy_of_ours_is_replaced") {
        return;
    }
    let net = TestNet::new();
    // An older copy of our program attached the legacy way (as `ip link set dev IF xdp obj
    // quixd_xdp.o` would): nothing would ever detach it.
    let old = XdpProgram::load().unwrap();
    let old_id = old.program().unwrap().info().unwrap().id();
    foreign::attach_netlink_to_server(
        &net,
        old.program().unwrap().fd().unwrap().as_fd(),
        foreign::XDP_FLAGS_DRV_MODE,
    );
    assert_eq!(ip_xdp(&net), Some(("xdp".to_owned(), old_id)));

    let iface = net.server_if.clone();
    let (program, info) = in_server(&net, move || {
        let mut program = XdpProgram::load().unwrap();
        let info = program
            .attach(&iface, AttachMode::Skb)
            .expect("replace our old copy");
        (program, info)
    });
    assert_eq!(info.replaced, vec![old_id]);
    assert_ne!(info.program_id, old_id);
    assert_eq!(
        ip_xdp(&net),
        Some(("xdpgeneric".to_owned(), info.program_id))
    );
    drop(program);
    drop(old);
    wait_detached(&net, "after dropping the replacement");
}

#[test]
fn second_holder_of_ours_is_refused() {
    if !privileged("second_holder_of_ours_is_refused") {
        return;
    }
    let net = TestNet::new();
    let iface = net.server_if.clone();
    let (first, second_error) = in_server(&net, move || {
        let mut first = XdpProgram::load().unwrap();
        first.attach(&iface, AttachMode::Driver).unwrap();
        let mut second = XdpProgram::load().unwrap();
        let error = attach_error(second.attach(&iface, AttachMode::Auto).unwrap_err());
        (first, error)
    });
    let message = second_error.to_string();
    assert!(
        matches!(second_error, AttachError::AlreadyAttached { .. }),
        "{message}"
    );
    assert!(message.contains(PROGRAM_NAME), "{message}");
    assert!(message.contains("xtask xdp unload"), "{message}");
    let first_id = first.attachment().unwrap().program_id;
    assert_eq!(ip_xdp(&net), Some(("xdp".to_owned(), first_id)));
    drop(first);
    wait_detached(&net, "after dropping the first holder");
}

/// Drops CAP_SYS_ADMIN from the calling thread's effective capabilities (capabilities are
/// per thread).
fn drop_cap_sys_admin() {
    const CAP_SYS_ADMIN: u32 = 21;
    let mut header = [0x2008_0522u32, 0]; // _LINUX_CAPABILITY_VERSION_3, this thread
    let mut data = [0u32; 6]; // 2 x { effective, permitted, inheritable }
                              // SAFETY: valid header and data buffers for capget/capset.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, header.as_mut_ptr(), data.as_mut_ptr()),
            0
        );
        data[0] &= !(1 << CAP_SYS_ADMIN);
        assert_eq!(
            libc::syscall(libc::SYS_capset, header.as_mut_ptr(), data.as_ptr()),
            0,
            "capset: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn attach_works_without_cap_sys_admin() {
    if !privileged("attach_works_without_cap_sys_admin") {
        return;
    }
    // A daemon may run with CAP_BPF and CAP_NET_ADMIN only: listing programs and links and
    // looking them up by id (CAP_SYS_ADMIN) must not be needed to attach and detach.
    let net = TestNet::new();
    let iface = net.server_if.clone();
    let (program, info) = in_server(&net, move || {
        drop_cap_sys_admin();
        let mut program = XdpProgram::load().expect("load with CAP_BPF + CAP_NET_ADMIN");
        let info = program.attach(&iface, AttachMode::Auto).expect("attach");
        (program, info)
    });
    assert_eq!(info.mode, AttachedMode::Driver);
    assert_eq!(ip_xdp(&net), Some(("xdp".to_owned(), info.program_id)));
    let iface = net.server_if.clone();
    let error = in_server(&net, move || {
        drop_cap_sys_admin();
        let mut second = XdpProgram::load().unwrap();
        // Names are unreadable now: the program there cannot be identified, so it is refused.
        attach_error(second.attach(&iface, AttachMode::Skb).unwrap_err())
    });
    let message = error.to_string();
    assert!(
        matches!(&error, AttachError::ForeignProgram { existing, .. }
            if existing.id == info.program_id && existing.holder == Holder::Unknown),
        "{message}"
    );
    assert!(message.contains("cannot identify"), "{message}");
    assert!(message.contains("CAP_SYS_ADMIN"), "{message}");
    // Detach from a thread without CAP_SYS_ADMIN: closing the link fd must do it.
    in_server(&net, move || {
        drop_cap_sys_admin();
        let mut program = program;
        program.detach().expect("detach without CAP_SYS_ADMIN");
    });
    wait_detached(&net, "after detach() without CAP_SYS_ADMIN");
}

#[test]
fn missing_interface_is_named() {
    if !privileged("missing_interface_is_named") {
        return;
    }
    let net = TestNet::new();
    let error = in_server(&net, || {
        let mut program = XdpProgram::load().unwrap();
        attach_error(program.attach("qxnosuch0", AttachMode::Auto).unwrap_err())
    });
    let message = error.to_string();
    assert!(
        matches!(error, AttachError::NoSuchInterface { .. }),
        "{message}"
    );
    assert!(message.contains("`qxnosuch0` does not exist"), "{message}");
    assert!(message.contains("ip link"), "{message}");
    // The server's interface is not visible from the test's own namespace either.
    let iface = net.server_if.clone();
    let mut program = XdpProgram::load().unwrap();
    let error = attach_error(program.attach(&iface, AttachMode::Skb).unwrap_err());
    assert!(error.to_string().contains(&iface), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Other processes: SIGKILL, missing privileges, xtask
// ---------------------------------------------------------------------------------------------

#[test]
fn sigkilled_holder_leaves_nothing_attached() {
    if !privileged("sigkilled_holder_leaves_nothing_attached") {
        return;
    }
    let net = TestNet::new();
    let mut child = Command::new(xtask_bin())
        .args(["xdp", "--netns", &net.server_ns, "hold", "--iface"])
        .args([&net.server_if, "--port", "4433", "--mode", "driver"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xtask xdp hold");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if !line.starts_with("attached ") {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("xtask xdp hold: {line}{}", text(&out));
    }
    let program_id: u32 = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("program="))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no program id in {line:?}"));
    assert!(line.contains("mode=driver"), "{line}");
    assert_eq!(ip_xdp(&net), Some(("xdp".to_owned(), program_id)));

    child.kill().unwrap(); // SIGKILL: no destructor runs
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    wait_detached(&net, "after SIGKILL of the holder");
}

#[test]
fn missing_privilege_names_the_capabilities() {
    if !privileged("missing_privilege_names_the_capabilities") {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipping missing_privilege_names_the_capabilities: no setpriv (util-linux)");
        return;
    }
    let net = TestNet::new();
    let drop = "-bpf,-net_admin,-sys_admin,-perfmon";
    let out = Command::new("ip")
        .args(["netns", "exec", &net.server_ns, "setpriv"])
        .arg(format!("--bounding-set={drop}"))
        .arg(format!("--inh-caps={drop}"))
        .arg("--")
        .arg(xtask_bin())
        .args(["xdp", "hold", "--iface", &net.server_if, "--port", "4433"])
        .output()
        .unwrap();
    let message = text(&out);
    assert!(!out.status.success(), "{message}");
    assert!(message.contains("CAP_BPF"), "{message}");
    assert!(message.contains("CAP_NET_ADMIN"), "{message}");
    assert!(ip_xdp(&net).is_none());
}

#[test]
fn xtask_load_status_unload() {
    if !privileged("xtask_load_status_unload") {
        return;
    }
    let net = TestNet::new();
    let iface = net.server_if.as_str();
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/quixd/{iface}@{}", net.server_ns));
    let _cleanup = PinGuard(pin_dir.clone());

    let out = xtask(
        &net,
        &["load", "--iface", iface, "--port", "4433", "--port", "4434"],
    );
    assert!(out.status.success(), "load: {}", text(&out));
    assert!(text(&out).contains("in driver mode"), "{}", text(&out));
    for pin in ["link", "xsks", "ports", "addrs", "config", "counters"] {
        assert!(
            pin_dir.join(pin).exists(),
            "{} missing",
            pin_dir.join(pin).display()
        );
    }
    // xtask has exited: the pinned link keeps the program attached.
    let (mode, program_id) = ip_xdp(&net).expect("attached after xtask exited");
    assert_eq!(mode, "xdp");

    // Three datagrams to a steered port: ours, but no AF_XDP socket -> `no_socket`.
    let to = SocketAddr::new(net.server_v4.into(), 4433);
    net.in_client(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..3 {
            socket.send_to(b"steer me", to).unwrap();
        }
    });

    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let out = xtask(&net, &["status", "--iface", iface]);
        assert!(out.status.success(), "status: {}", text(&out));
        let status = text(&out);
        let no_socket: u64 = status
            .split("no_socket ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counters in status: {status}"));
        if no_socket >= 3 || Instant::now() > deadline {
            assert_eq!(no_socket, 3, "{status}");
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for needle in [
        format!("program id {program_id} `{PROGRAM_NAME}` in driver mode"),
        format!("pinned:    {}", pin_dir.display()),
        "ports:     4433, 4434".to_owned(),
        "addresses: any".to_owned(),
        "map:       xsks".to_owned(),
        "map:       counters".to_owned(),
        "redirected 0".to_owned(),
    ] {
        assert!(
            status.contains(&needle),
            "{needle:?} missing in status:\n{status}"
        );
    }
    // Without --iface, the pinned interface is listed too.
    let all = xtask(&net, &["status"]);
    assert!(text(&all).contains(iface), "{}", text(&all));

    // A second load is refused and changes nothing.
    let again = xtask(&net, &["load", "--iface", iface, "--port", "1"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already loaded"), "{}", text(&again));
    assert_eq!(ip_xdp(&net).map(|(_, id)| id), Some(program_id));

    let out = xtask(&net, &["unload", "--iface", iface]);
    assert!(out.status.success(), "unload: {}", text(&out));
    assert!(!pin_dir.exists(), "pins left after unload");
    wait_detached(&net, "after xtask xdp unload");

    let out = xtask(&net, &["unload", "--iface", iface]);
    assert!(!out.status.success());
    assert!(text(&out).contains("nothing to unload"), "{}", text(&out));
}

#[test]
fn xtask_load_refuses_a_foreign_program() {
    if !privileged("xtask_load_refuses_a_foreign_program") {
        return;
    }
    let net = TestNet::new();
    let foreign_fd = foreign::load();
    foreign::attach_netlink_to_server(&net, foreign_fd.as_fd(), foreign::XDP_FLAGS_DRV_MODE);
    let iface = net.server_if.as_str();
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/quixd/{iface}@{}", net.server_ns));
    let _cleanup = PinGuard(pin_dir.clone());
    let out = xtask(&net, &["load", "--iface", iface, "--port", "4433"]);
    let message = text(&out);
    assert!(!out.status.success(), "{message}");
    assert!(message.contains("not quixd's"), "{message}");
    assert!(
        message.contains(&format!("ip link set dev {iface} xdpdrv off")),
        "{message}"
    );
    assert!(!pin_dir.exists(), "a refused load left pins");
    assert_eq!(ip_xdp(&net).map(|(mode, _)| mode).as_deref(), Some("xdp"));
    // status shows it as foreign.
    let status = text(&xtask(&net, &["status", "--iface", iface]));
    assert!(status.contains(foreign::NAME), "{status}");
    assert!(status.contains("not quixd's"), "{status}");
}
