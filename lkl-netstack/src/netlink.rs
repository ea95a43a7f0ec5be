//! Interfaces, addresses and routes inside the library kernel, configured the Linux
//! way: rtnetlink messages (built with `netlink-packet-route`) on a NETLINK_ROUTE
//! socket of the kernel, with the kernel's own acknowledgements and errors.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVrf, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::socket::{self, Fd};

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    /// The driver reports a carrier (IFF_LOWER_UP): the device's link is up.
    pub carrier: bool,
    /// The hardware address, for links that have a 6-byte one.
    pub mac: Option<[u8; 6]>,
    /// The index of the device it is enslaved to (a VRF, a bridge), if any (IFLA_MASTER).
    pub master: Option<u32>,
}

/// A route of the main table as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Option<IpAddr>,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub output_index: Option<u32>,
}

/// An error the kernel returned for a netlink request, with its reason when given.
#[derive(Debug, thiserror::Error)]
#[error("{errno}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
pub struct NetlinkError {
    pub errno: io::Error,
    pub reason: Option<String>,
}

impl NetlinkError {
    /// `echo` is the error payload after the code: the request's 16-byte header
    /// (NETLINK_CAP_ACK) followed by extended-ACK attributes.
    fn from_reply(errno: i32, echo: &[u8]) -> NetlinkError {
        const NLMSGERR_ATTR_MSG: u16 = 1;
        let mut reason = None;
        let mut attrs = echo.get(16..).unwrap_or_default();
        while attrs.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
            let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
            if len < 4 || len > attrs.len() {
                break;
            }
            if kind == NLMSGERR_ATTR_MSG {
                let text = &attrs[4..len];
                let text = text.split(|&b| b == 0).next().unwrap_or_default();
                reason = Some(String::from_utf8_lossy(text).into_owned());
            }
            attrs = attrs.get((len + 3) & !3..).unwrap_or_default();
        }
        NetlinkError {
            errno: io::Error::from_raw_os_error(errno),
            reason,
        }
    }
}

impl From<NetlinkError> for io::Error {
    fn from(e: NetlinkError) -> io::Error {
        io::Error::new(e.errno.kind(), e)
    }
}

/// One request/response conversation with the kernel's rtnetlink.
struct RouteSocket {
    fd: Fd,
    seq: u32,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl RouteSocket {
    fn open() -> io::Result<RouteSocket> {
        let fd = socket::raw_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
        // Ask for the kernel's reason with each error (extended ACK), and for errors
        // that echo only the request's header, so the reason is easy to find.
        socket::set_int_option(&fd, libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1)?;
        socket::set_int_option(&fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1)?;
        Ok(RouteSocket { fd, seq: 0 })
    }

    /// Sends one request and collects the replies until the ACK (or dump end).
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::from(message));
        request.finalize();
        let mut buf = vec![0u8; request.buffer_len()];
        request.serialize(&mut buf);
        socket::send(&self.fd, &buf)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = socket::recv(&self.fd, &mut buf)?;
            let mut offset = 0;
            while offset < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..n])
                    .map_err(|e| invalid(format!("undecodable rtnetlink reply: {e}")))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(invalid("rtnetlink reply of length 0"));
                }
                offset += len;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        Some(code) => {
                            return Err(NetlinkError::from_reply(-code.get(), &e.header).into());
                        }
                        None if !dump => return Ok(replies), // the ACK
                        None => {}
                    },
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }
}

pub(crate) fn links() -> io::Result<Vec<Link>> {
    let replies = RouteSocket::open()?.request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_DUMP,
    )?;
    Ok(replies
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) => Some(link),
            _ => None,
        })
        .map(|link| {
            let mut out = Link {
                index: link.header.index,
                name: String::new(),
                mtu: 0,
                up: link.header.flags.contains(LinkFlags::Up),
                carrier: link.header.flags.contains(LinkFlags::LowerUp),
                mac: None,
                master: None,
            };
            for attr in link.attributes {
                match attr {
                    LinkAttribute::IfName(name) => out.name = name,
                    LinkAttribute::Controller(master) => out.master = Some(master),
                    LinkAttribute::Mtu(mtu) => out.mtu = mtu,
                    LinkAttribute::Address(address) => out.mac = address.try_into().ok(),
                    _ => {}
                }
            }
            out
        })
        .collect())
}

pub(crate) fn link_index(name: &str) -> io::Result<u32> {
    links()?
        .into_iter()
        .find(|l| l.name == name)
        .map(|l| l.index)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface named {name:?}"),
            )
        })
}

pub(crate) fn set_link(name: &str, up: Option<bool>, mtu: Option<u32>) -> io::Result<()> {
    let mut link = LinkMessage::default();
    link.header.index = link_index(name)?;
    if let Some(up) = up {
        link.header.change_mask = LinkFlags::Up;
        link.header.flags = if up {
            LinkFlags::Up
        } else {
            LinkFlags::empty()
        };
    }
    if let Some(mtu) = mtu {
        link.attributes.push(LinkAttribute::Mtu(mtu));
    }
    RouteSocket::open()?.request(RouteNetlinkMessage::SetLink(link), 0)?;
    Ok(())
}

fn family(addr: &IpAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

pub(crate) fn add_address(name: &str, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
    let mut msg = AddressMessage::default();
    msg.header.family = family(&addr);
    msg.header.prefix_len = prefix_len;
    msg.header.index = link_index(name)?;
    if addr.is_ipv4() {
        msg.attributes.push(AddressAttribute::Local(addr));
    }
    msg.attributes.push(AddressAttribute::Address(addr));
    RouteSocket::open()?.request(
        RouteNetlinkMessage::NewAddress(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )?;
    Ok(())
}

fn route_address(addr: IpAddr) -> RouteAddress {
    match addr {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

pub(crate) fn add_route(
    destination: IpAddr,
    prefix_len: u8,
    gateway: Option<IpAddr>,
    dev: Option<&str>,
    table: u32,
) -> io::Result<()> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(&destination);
    msg.header.destination_prefix_length = prefix_len;
    // Tables above 255 only fit the RTA_TABLE attribute; the header says RT_TABLE_UNSPEC
    // then, as iproute2 does.
    match u8::try_from(table) {
        Ok(t) => msg.header.table = t,
        Err(_) => {
            msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
            msg.attributes.push(RouteAttribute::Table(table));
        }
    }
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = if gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    msg.header.kind = RouteType::Unicast;
    msg.attributes
        .push(RouteAttribute::Destination(route_address(destination)));
    if let Some(gw) = gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(route_address(gw)));
    }
    if let Some(dev) = dev {
        msg.attributes.push(RouteAttribute::Oif(link_index(dev)?));
    }
    RouteSocket::open()?.request(
        RouteNetlinkMessage::NewRoute(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )?;
    Ok(())
}

pub(crate) fn routes(ipv6: bool, table: u32) -> io::Result<Vec<Route>> {
    let mut query = RouteMessage::default();
    query.header.address_family = if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let replies = RouteSocket::open()?.request(RouteNetlinkMessage::GetRoute(query), NLM_F_DUMP)?;
    Ok(replies
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) if route_table(&r) == table => Some(r),
            _ => None,
        })
        .map(|r| {
            let mut out = Route {
                destination: None,
                prefix_len: r.header.destination_prefix_length,
                gateway: None,
                output_index: None,
            };
            for attr in &r.attributes {
                match attr {
                    RouteAttribute::Destination(a) => out.destination = ip_of(a),
                    RouteAttribute::Gateway(a) => out.gateway = ip_of(a),
                    RouteAttribute::Oif(i) => out.output_index = Some(*i),
                    _ => {}
                }
            }
            out
        })
        .collect())
}

/// A route's table: RTA_TABLE when present (tables above 255), else the header's.
fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

/// Creates a VRF device `name` whose routes live in `table` (IFLA_INFO_KIND "vrf",
/// IFLA_VRF_TABLE), and brings it up. The kernel adds its `l3mdev` FIB rules with the
/// first VRF (net/l3mdev/l3mdev.c, Documentation/networking/vrf.rst).
pub(crate) fn add_vrf(name: &str, table: u32) -> io::Result<()> {
    let mut link = LinkMessage::default();
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    link.attributes.push(LinkAttribute::IfName(name.to_owned()));
    link.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vrf),
        LinkInfo::Data(InfoData::Vrf(vec![InfoVrf::TableId(table)])),
    ]));
    RouteSocket::open()?.request(
        RouteNetlinkMessage::NewLink(link),
        NLM_F_CREATE | NLM_F_EXCL,
    )?;
    Ok(())
}

/// Enslaves interface `name` to `master` (a VRF), or frees it with `None` (IFLA_MASTER 0).
pub(crate) fn set_master(name: &str, master: Option<&str>) -> io::Result<()> {
    let index = match master {
        Some(m) => link_index(m)?,
        None => 0,
    };
    let mut link = LinkMessage::default();
    link.header.index = link_index(name)?;
    link.attributes.push(LinkAttribute::Controller(index));
    RouteSocket::open()?.request(RouteNetlinkMessage::SetLink(link), 0)?;
    Ok(())
}

/// Deletes a virtual interface (a VRF) by name (RTM_DELLINK).
pub(crate) fn delete_link(name: &str) -> io::Result<()> {
    let mut link = LinkMessage::default();
    link.header.index = link_index(name)?;
    RouteSocket::open()?.request(RouteNetlinkMessage::DelLink(link), 0)?;
    Ok(())
}

/// A policy routing rule that sends packets carrying a firewall mark to a routing table
/// (`ip rule add fwmark MARK lookup TABLE pref PRIORITY`), e.g. replies from an uplink into
/// the table of the tenant VRF that owns their connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwmarkRule {
    pub ipv6: bool,
    /// Matched exactly (mask 0xffffffff).
    pub mark: u32,
    pub table: u32,
    /// The rule's place in the rule list: lower is consulted first (the local table's
    /// rule is 0, the VRFs' l3mdev rule 1000, the main table's 32766).
    pub priority: u32,
}

fn rule_message(rule: &FwmarkRule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = if rule.ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    msg.header.action = RuleAction::ToTable;
    // As for routes: tables above 255 only fit FRA_TABLE.
    msg.header.table = u8::try_from(rule.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.attributes.push(RuleAttribute::Table(rule.table));
    msg.attributes.push(RuleAttribute::FwMark(rule.mark));
    msg.attributes.push(RuleAttribute::FwMask(u32::MAX));
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    msg
}

/// Adds `rule` (RTM_NEWRULE); refused (EEXIST) when the very same rule exists.
pub(crate) fn add_fwmark_rule(rule: &FwmarkRule) -> io::Result<()> {
    RouteSocket::open()?.request(
        RouteNetlinkMessage::NewRule(rule_message(rule)),
        NLM_F_CREATE | NLM_F_EXCL,
    )?;
    Ok(())
}

/// Deletes `rule` (RTM_DELRULE; ENOENT when there is none).
pub(crate) fn delete_fwmark_rule(rule: &FwmarkRule) -> io::Result<()> {
    RouteSocket::open()?.request(RouteNetlinkMessage::DelRule(rule_message(rule)), 0)?;
    Ok(())
}

/// One reply of a NETLINK_NETFILTER exchange: the message type and what follows the
/// 16-byte netlink header (the `nfgenmsg` and the attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetfilterReply {
    pub kind: u16,
    pub payload: Vec<u8>,
}

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// Sends `messages` (complete netlink messages, encoded by the caller: an nf_tables batch,
/// or one dump request) on a NETLINK_NETFILTER socket of the kernel and collects the
/// replies: until `acks` acknowledgements arrived (a batch whose messages each ask for
/// NLM_F_ACK), or until NLMSG_DONE when `acks` is 0 (a dump). The first error the kernel
/// reports is returned, with its extended-ACK reason.
pub(crate) fn netfilter(messages: &[u8], acks: usize) -> io::Result<Vec<NetfilterReply>> {
    let fd = socket::raw_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_NETFILTER)?;
    socket::set_int_option(&fd, libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1)?;
    socket::set_int_option(&fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1)?;
    socket::send(&fd, messages)?;
    let mut replies = Vec::new();
    let mut acked = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket::recv(&fd, &mut buf)?;
        let mut at = 0;
        while at + NLMSG_HDRLEN <= n {
            let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            let len = len as usize;
            if len < NLMSG_HDRLEN || at + len > n {
                return Err(invalid(format!("netfilter reply of length {len}")));
            }
            let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
            let payload = &buf[at + NLMSG_HDRLEN..at + len];
            at += (len + 3) & !3;
            match kind {
                NLMSG_ERROR => {
                    let code = payload
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .ok_or_else(|| invalid("short netfilter error"))?;
                    if code != 0 {
                        return Err(NetlinkError::from_reply(-code, &payload[4..]).into());
                    }
                    acked += 1;
                    if acks > 0 && acked >= acks {
                        return Ok(replies);
                    }
                }
                NLMSG_DONE => return Ok(replies),
                _ => replies.push(NetfilterReply {
                    kind,
                    payload: payload.to_vec(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NetlinkError;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let mut a = (len as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize((len + 3) & !3, 0);
        a
    }

    #[test]
    fn reason_is_found_after_the_echoed_header_and_other_attributes() {
        let mut echo = vec![0u8; 16];
        echo.extend(attr(3, &7u32.to_ne_bytes())); // NLMSGERR_ATTR_OFFS
        echo.extend(attr(
            1,
            b"Egress device can not be loopback device for this route\0",
        ));
        let e = NetlinkError::from_reply(libc::EINVAL, &echo);
        assert_eq!(
            e.reason.as_deref(),
            Some("Egress device can not be loopback device for this route")
        );
        assert_eq!(e.errno.raw_os_error(), Some(libc::EINVAL));
        assert!(
            e.to_string()
                .ends_with(": Egress device can not be loopback device for this route")
        );
    }

    #[test]
    fn malformed_attributes_give_no_reason_and_no_panic() {
        for echo in [
            vec![],
            vec![0u8; 15],
            {
                let mut v = vec![0u8; 16];
                v.extend_from_slice(&[200, 0, 1, 0, b'x']); // length beyond the buffer
                v
            },
            {
                let mut v = vec![0u8; 16];
                v.extend_from_slice(&[2, 0, 1, 0]); // length shorter than the attribute header
                v
            },
        ] {
            let e = NetlinkError::from_reply(libc::EPERM, &echo);
            assert_eq!(e.reason, None);
        }
    }
}
