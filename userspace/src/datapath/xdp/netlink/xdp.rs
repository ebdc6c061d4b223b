//! Just enough rtnetlink for XDP: read a link's (or every link's) `IFLA_XDP`, and set or clear
//! a program with `IFLA_XDP_EXPECTED_FD` (the compare-and-swap that replaces only the program
//! we saw).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{RtAddrFamily, Rtm};
use neli::rtnl::IfinfomsgBuilder;
use neli::types::Buffer;
use neli::ToBytes;

use super::{c_string, parse_u32, push_rtattr, rtattrs, unbuildable, RequestError, Rtnl};

const RTM_NEWLINK: u16 = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;

pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
pub(crate) const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
pub(crate) const XDP_FLAGS_REPLACE: u32 = 1 << 4;

/// One link's XDP state: the program id in each mode (0: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LinkXdp {
    pub ifindex: u32,
    pub name: String,
    pub drv_prog: u32,
    pub skb_prog: u32,
    pub hw_prog: u32,
}

/// `ifinfomsg` for link `index` (built by neli) followed by the raw attributes `attrs`: neli's
/// attribute enums do not name the IFLA_XDP ones, so they travel as prebuilt bytes.
fn payload(index: u32, attrs: &[u8]) -> Result<Buffer, RequestError> {
    let msg = IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .ifi_index(index as i32)
        .build()
        .map_err(unbuildable)?;
    let mut cursor = io::Cursor::new(Vec::with_capacity(IFINFOMSG_LEN + attrs.len()));
    msg.to_bytes(&mut cursor).map_err(unbuildable)?;
    let mut bytes = cursor.into_inner();
    bytes.extend_from_slice(attrs);
    Ok(Buffer::from(bytes))
}

fn get_attrs() -> Vec<u8> {
    let mut attrs = Vec::new();
    push_rtattr(
        &mut attrs,
        IFLA_EXT_MASK,
        &RTEXT_FILTER_SKIP_STATS.to_ne_bytes(),
    );
    attrs
}

/// The XDP state in one RTM_NEWLINK answer.
fn parse_link(body: &[u8]) -> Option<LinkXdp> {
    if body.len() < IFINFOMSG_LEN {
        return None;
    }
    let mut link = LinkXdp {
        ifindex: i32::from_ne_bytes(body[4..8].try_into().ok()?) as u32,
        ..LinkXdp::default()
    };
    for (kind, data) in rtattrs(&body[IFINFOMSG_LEN..]) {
        match kind {
            IFLA_IFNAME => link.name = c_string(data),
            IFLA_XDP => {
                let mut attached = 0u8;
                let mut prog_id = 0u32;
                let id = |data: &[u8]| parse_u32(data).unwrap_or(0);
                for (kind, data) in rtattrs(data) {
                    match kind {
                        IFLA_XDP_ATTACHED => attached = data.first().copied().unwrap_or(0),
                        IFLA_XDP_PROG_ID => prog_id = id(data),
                        IFLA_XDP_DRV_PROG_ID => link.drv_prog = id(data),
                        IFLA_XDP_SKB_PROG_ID => link.skb_prog = id(data),
                        IFLA_XDP_HW_PROG_ID => link.hw_prog = id(data),
                        _ => {}
                    }
                }
                // Kernels before the per-mode ids (4.19) only say the mode and the id.
                if link.drv_prog == 0 && link.skb_prog == 0 && link.hw_prog == 0 {
                    match attached {
                        XDP_ATTACHED_DRV => link.drv_prog = prog_id,
                        XDP_ATTACHED_SKB => link.skb_prog = prog_id,
                        XDP_ATTACHED_HW => link.hw_prog = prog_id,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

fn links(answers: Vec<(u16, Buffer)>) -> Vec<LinkXdp> {
    answers
        .iter()
        .filter(|(ty, _)| *ty == RTM_NEWLINK)
        .filter_map(|(_, body)| parse_link(body.as_ref()))
        .collect()
}

/// The XDP state of link `index`, `None` if there is no such link.
pub(crate) fn get_link(index: u32) -> io::Result<Option<LinkXdp>> {
    let answers = Rtnl::open().and_then(|mut rtnl| {
        rtnl.request(Rtm::Getlink, NlmF::empty(), || payload(index, &get_attrs()))
    });
    match answers {
        Ok(answers) => Ok(links(answers).into_iter().next()),
        Err(error) if error.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(error) => Err(error.into_io()),
    }
}

/// The XDP state of every link.
pub(crate) fn dump_links() -> io::Result<Vec<LinkXdp>> {
    Rtnl::open()
        .and_then(|mut rtnl| rtnl.request(Rtm::Getlink, NlmF::DUMP, || payload(0, &get_attrs())))
        .map(links)
        .map_err(RequestError::into_io)
}

/// `RTM_SETLINK` with `IFLA_XDP { FD = prog or -1, FLAGS = flags, EXPECTED_FD }`. The error
/// carries the kernel's explanation when it gave one.
pub(crate) fn set_xdp(
    index: u32,
    prog: Option<BorrowedFd<'_>>,
    flags: u32,
    expected: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut nested = Vec::new();
    let fd = prog.map_or(-1, |fd| fd.as_raw_fd());
    push_rtattr(&mut nested, IFLA_XDP_FD, &fd.to_ne_bytes());
    push_rtattr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    if let Some(expected) = expected {
        push_rtattr(
            &mut nested,
            IFLA_XDP_EXPECTED_FD,
            &expected.as_raw_fd().to_ne_bytes(),
        );
    }
    let mut attrs = Vec::new();
    push_rtattr(&mut attrs, IFLA_XDP | NLA_F_NESTED, &nested);
    Rtnl::open()
        .and_then(|mut rtnl| rtnl.request(Rtm::Setlink, NlmF::ACK, || payload(index, &attrs)))
        .map(|_| ())
        .map_err(RequestError::into_io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_an_ifinfomsg_then_the_attributes() {
        let bytes = payload(7, &get_attrs()).unwrap();
        let bytes = bytes.as_ref();
        assert_eq!(bytes.len(), IFINFOMSG_LEN + 8);
        assert_eq!(bytes[0], libc::AF_UNSPEC as u8);
        assert_eq!(i32::from_ne_bytes(bytes[4..8].try_into().unwrap()), 7);
        let attrs: Vec<_> = rtattrs(&bytes[IFINFOMSG_LEN..]).collect();
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].0, IFLA_EXT_MASK);
        assert_eq!(parse_u32(attrs[0].1), Some(RTEXT_FILTER_SKIP_STATS));
    }

    #[test]
    fn parses_per_mode_ids_and_the_old_single_id() {
        let mut xdp = Vec::new();
        push_rtattr(&mut xdp, IFLA_XDP_ATTACHED, &[XDP_ATTACHED_SKB]);
        push_rtattr(&mut xdp, IFLA_XDP_PROG_ID, &42u32.to_ne_bytes());
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[4..8].copy_from_slice(&3i32.to_ne_bytes());
        push_rtattr(&mut body, IFLA_IFNAME, b"veth0\0");
        push_rtattr(&mut body, IFLA_XDP | NLA_F_NESTED, &xdp);
        let link = parse_link(&body).unwrap();
        assert_eq!(
            link,
            LinkXdp {
                ifindex: 3,
                name: "veth0".into(),
                skb_prog: 42,
                ..LinkXdp::default()
            }
        );
        push_rtattr(&mut xdp, IFLA_XDP_DRV_PROG_ID, &9u32.to_ne_bytes());
        body.truncate(IFINFOMSG_LEN);
        push_rtattr(&mut body, IFLA_XDP | NLA_F_NESTED, &xdp);
        let link = parse_link(&body).unwrap();
        assert_eq!((link.drv_prog, link.skb_prog), (9, 0), "per-mode ids win");
        assert_eq!(parse_link(&body[..8]), None, "short header");
    }
}
