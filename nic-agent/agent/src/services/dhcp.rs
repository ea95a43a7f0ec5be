//! The DHCPv4 server's protocol logic (RFC 2131), free of sockets and clocks so that every
//! hostile input can be tested: [`DhcpServer::handle`] takes one datagram's bytes and the
//! time, and answers with a reply to send and where to send it, or a named reason the
//! datagram was dropped.
//!
//! The wire format is `dhcproto`'s; everything it leaves to the caller is checked here
//! first (the magic cookie, `hlen`, which `dhcproto`'s `chaddr()` would slice unchecked).
//! Relayed requests (`giaddr` set) are dropped: each server sits on its subnet's own link.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use serde::Serialize;

use super::leases::{Lease, LeaseState, LeaseTable};
use crate::config::Mac;

/// Offset of the magic cookie (RFC 2131 §3: after the 236-byte fixed header).
const MAGIC_OFFSET: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// A message this long or longer is not DHCP from an honest client on an Ethernet link
/// (RFC 2131 §2: 576 unless the client says more; a jumbo frame's worth is the ceiling).
pub const MAX_MESSAGE_LEN: usize = 9000;
/// How long an offered address is held for the client that was offered it.
pub const OFFER_HOLD_SECS: u64 = 60;
/// How long a declined address (in use by someone, RFC 2131 §3.1.5) is kept out of the pool.
pub const DECLINE_HOLD_SECS: u64 = 600;

/// Options whose length `dhcproto` 0.15 asserts (`debug_assert!`, a panic in debug builds)
/// or subtracts from unchecked (`len - 3`, an overflow panic in debug builds) instead of
/// returning an error: (code, smallest length, largest length).
const LENGTH_CHECKED_OPTIONS: [(u8, usize, usize); 8] = [
    (80, 0, 0),           // rapid commit
    (81, 3, usize::MAX),  // client FQDN: flags, two rcodes, name
    (94, 3, 3),           // client network interface
    (151, 1, usize::MAX), // bulk lease query status code
    (152, 4, 4),
    (153, 4, 4),
    (154, 4, 4),
    (155, 4, 4),
];

/// Walks the options area (RFC 2132 §2) before `dhcproto` sees it: every option must fit
/// in the message, and those of [`LENGTH_CHECKED_OPTIONS`] must have a length `dhcproto`
/// handles. Runs of one code are concatenated as RFC 3396 says, as `dhcproto` does.
fn screen_options(options: &[u8]) -> Result<(), DhcpDrop> {
    const PAD: u8 = 0;
    const END: u8 = 255;
    let mut i = 0;
    let mut run: Option<(u8, usize)> = None;
    let check = |run: Option<(u8, usize)>| match run {
        Some((code, len)) => match LENGTH_CHECKED_OPTIONS.iter().find(|(c, _, _)| *c == code) {
            Some((_, lo, hi)) if len < *lo || len > *hi => Err(DhcpDrop::Malformed),
            _ => Ok(()),
        },
        None => Ok(()),
    };
    while i < options.len() {
        let code = options[i];
        if code == PAD || code == END {
            check(run.take())?;
            if code == END {
                return Ok(());
            }
            i += 1;
            continue;
        }
        let len = usize::from(*options.get(i + 1).ok_or(DhcpDrop::Malformed)?);
        if i + 2 + len > options.len() {
            return Err(DhcpDrop::Malformed);
        }
        run = match run {
            Some((c, l)) if c == code => Some((c, l + len)),
            other => {
                check(other)?;
                Some((code, len))
            }
        };
        i += 2 + len;
    }
    check(run)
}

/// Why a datagram got no answer. Each is a counter (`dhcp_drops` in the stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DhcpDrop {
    /// Shorter than the fixed header plus cookie, or longer than [`MAX_MESSAGE_LEN`].
    BadLength,
    /// The magic cookie is not 99.130.83.99.
    BadMagic,
    /// `dhcproto` could not decode it (options overrunning the message, ...).
    Malformed,
    /// A BOOTREPLY sent to the server.
    NotRequest,
    /// Not Ethernet (htype 1, hlen 6).
    BadHardware,
    /// `chaddr` is a multicast or all-zero address.
    BadClientMac,
    /// `chaddr` is not the MAC of the guest on this port (pool exhaustion by forged MACs).
    ForeignClientMac,
    /// Relayed (`giaddr` set): relays are not served.
    Relayed,
    /// No DHCP message type option (plain BOOTP is not served).
    NoMessageType,
    /// A type a client does not send (OFFER, ACK, NAK, ...).
    UnexpectedType,
    /// A REQUEST or DECLINE naming another server: the client chose that one.
    OtherServer,
    /// A REQUEST without the address it asks for.
    NoRequestedAddress,
    /// DISCOVER with no free address left.
    PoolExhausted,
    /// RELEASE or DECLINE of an address this client does not hold.
    NotHeld,
    /// The reply could not be encoded.
    Encode,
}

impl DhcpDrop {
    pub const ALL: [DhcpDrop; 15] = [
        DhcpDrop::BadLength,
        DhcpDrop::BadMagic,
        DhcpDrop::Malformed,
        DhcpDrop::NotRequest,
        DhcpDrop::BadHardware,
        DhcpDrop::BadClientMac,
        DhcpDrop::ForeignClientMac,
        DhcpDrop::Relayed,
        DhcpDrop::NoMessageType,
        DhcpDrop::UnexpectedType,
        DhcpDrop::OtherServer,
        DhcpDrop::NoRequestedAddress,
        DhcpDrop::PoolExhausted,
        DhcpDrop::NotHeld,
        DhcpDrop::Encode,
    ];

    /// The counter's name.
    pub fn name(self) -> &'static str {
        match self {
            DhcpDrop::BadLength => "bad_length",
            DhcpDrop::BadMagic => "bad_magic",
            DhcpDrop::Malformed => "malformed",
            DhcpDrop::NotRequest => "not_request",
            DhcpDrop::BadHardware => "bad_hardware",
            DhcpDrop::BadClientMac => "bad_client_mac",
            DhcpDrop::ForeignClientMac => "foreign_client_mac",
            DhcpDrop::Relayed => "relayed",
            DhcpDrop::NoMessageType => "no_message_type",
            DhcpDrop::UnexpectedType => "unexpected_type",
            DhcpDrop::OtherServer => "other_server",
            DhcpDrop::NoRequestedAddress => "no_requested_address",
            DhcpDrop::PoolExhausted => "pool_exhausted",
            DhcpDrop::NotHeld => "not_held",
            DhcpDrop::Encode => "encode",
        }
    }
}

/// Where a reply goes (RFC 2131 §4.1, "giaddr zero" cases; relays are not served).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68: NAKs, and clients that set the broadcast flag.
    Broadcast,
    /// `ciaddr`:68 of a client that has its address (RENEW, INFORM).
    Client(Ipv4Addr),
    /// `yiaddr`:68 at `chaddr`: a client without an address that can take unicast; the
    /// sender must tell the kernel the neighbour first, since the client cannot answer ARP.
    NewClient { ip: Ipv4Addr, mac: Mac },
}

/// An answer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: MessageType,
    pub bytes: Vec<u8>,
    pub to: Destination,
}

/// What the server does with a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reply(Reply),
    /// Handled, nothing to send (RELEASE, DECLINE).
    Done,
    Dropped(DhcpDrop),
}

/// One subnet's server settings (resolved: the server's own address is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// The server's address on the link (its identifier, option 54).
    pub server: Ipv4Addr,
    pub prefix_len: u8,
    /// The dynamic pool, inclusive.
    pub pool: (Ipv4Addr, Ipv4Addr),
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    pub lease_secs: u32,
    /// Fixed addresses by MAC; they need not lie in the pool but must lie in the subnet.
    pub statics: Vec<(Mac, Ipv4Addr)>,
    /// When set, only this MAC is served (a port's one guest).
    pub only_mac: Option<Mac>,
}

impl Subnet {
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix_len))
                .unwrap_or(0),
        )
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.mask());
        u32::from(ip) & m == u32::from(self.server) & m
    }

    fn in_pool(&self, ip: Ipv4Addr) -> bool {
        (self.pool.0..=self.pool.1).contains(&ip)
    }

    fn static_for(&self, mac: Mac) -> Option<Ipv4Addr> {
        self.statics
            .iter()
            .find(|(m, _)| *m == mac)
            .map(|(_, ip)| *ip)
    }

    fn is_static_ip(&self, ip: Ipv4Addr) -> bool {
        self.statics.iter().any(|(_, s)| *s == ip)
    }
}

/// The server of one subnet on one link.
#[derive(Debug)]
pub struct DhcpServer {
    pub subnet: Subnet,
    pub leases: LeaseTable,
}

fn client_mac(msg: &Message) -> Result<Mac, DhcpDrop> {
    if msg.htype() != HType::Eth || msg.hlen() != 6 {
        return Err(DhcpDrop::BadHardware);
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(msg.chaddr());
    if mac[0] & 1 != 0 || mac == [0; 6] {
        return Err(DhcpDrop::BadClientMac);
    }
    Ok(Mac(mac))
}

fn requested_ip(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    }
}

fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

fn hostname(msg: &Message) -> Option<String> {
    match msg.opts().get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) => Some(
            h.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                .take(63)
                .collect(),
        ),
        _ => None,
    }
}

impl DhcpServer {
    pub fn new(subnet: Subnet, leases: LeaseTable) -> DhcpServer {
        DhcpServer { subnet, leases }
    }

    /// Handles one datagram received on the server's link at time `now` (seconds since
    /// the Unix epoch). Leases change in `self.leases`; the caller persists them when
    /// [`LeaseTable::dirty`] says so.
    pub fn handle(&mut self, bytes: &[u8], now: u64) -> Outcome {
        match self.handle_inner(bytes, now) {
            Ok(Some(r)) => Outcome::Reply(r),
            Ok(None) => Outcome::Done,
            Err(d) => Outcome::Dropped(d),
        }
    }

    fn handle_inner(&mut self, bytes: &[u8], now: u64) -> Result<Option<Reply>, DhcpDrop> {
        if bytes.len() < MAGIC_OFFSET + MAGIC.len() || bytes.len() > MAX_MESSAGE_LEN {
            return Err(DhcpDrop::BadLength);
        }
        if bytes[MAGIC_OFFSET..MAGIC_OFFSET + MAGIC.len()] != MAGIC {
            return Err(DhcpDrop::BadMagic);
        }
        screen_options(&bytes[MAGIC_OFFSET + MAGIC.len()..])?;
        let msg = Message::decode(&mut Decoder::new(bytes)).map_err(|_| DhcpDrop::Malformed)?;
        if msg.opcode() != Opcode::BootRequest {
            return Err(DhcpDrop::NotRequest);
        }
        let mac = client_mac(&msg)?;
        if self.subnet.only_mac.is_some_and(|m| m != mac) {
            return Err(DhcpDrop::ForeignClientMac);
        }
        if !msg.giaddr().is_unspecified() {
            return Err(DhcpDrop::Relayed);
        }
        let kind = msg.opts().msg_type().ok_or(DhcpDrop::NoMessageType)?;
        self.leases.expire(now);
        match kind {
            MessageType::Discover => self.discover(&msg, mac, now).map(Some),
            MessageType::Request => self.request(&msg, mac, now).map(Some),
            MessageType::Release => self.release(&msg, mac).map(|()| None),
            MessageType::Decline => self.decline(&msg, mac, now).map(|()| None),
            MessageType::Inform => self.reply(&msg, MessageType::Inform, None).map(Some),
            _ => Err(DhcpDrop::UnexpectedType),
        }
    }

    /// Whether `ip` may be given to `mac` now.
    fn available(&self, ip: Ipv4Addr, mac: Mac) -> bool {
        if let Some(s) = self.subnet.static_for(mac) {
            return s == ip;
        }
        if !self.subnet.in_pool(ip) || ip == self.subnet.server || self.subnet.is_static_ip(ip) {
            return false;
        }
        if Some(ip) == self.subnet.router {
            return false;
        }
        match self.leases.by_ip(ip) {
            None => true,
            Some(l) => l.mac == Some(mac),
        }
    }

    /// The address to offer `mac`: its fixed one, the one it holds or was offered, the one
    /// it asks for if free, else the lowest free address of the pool.
    fn choose(&self, mac: Mac, wanted: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(s) = self.subnet.static_for(mac) {
            return Some(s);
        }
        if let Some(l) = self.leases.by_mac(mac) {
            return Some(l.ip);
        }
        if let Some(w) = wanted.filter(|w| self.available(*w, mac)) {
            return Some(w);
        }
        let (lo, hi) = (u32::from(self.subnet.pool.0), u32::from(self.subnet.pool.1));
        (lo..=hi)
            .map(Ipv4Addr::from)
            .find(|ip| self.available(*ip, mac))
    }

    fn discover(&mut self, msg: &Message, mac: Mac, now: u64) -> Result<Reply, DhcpDrop> {
        let ip = self
            .choose(mac, requested_ip(msg))
            .ok_or(DhcpDrop::PoolExhausted)?;
        if self
            .leases
            .by_mac(mac)
            .is_none_or(|l| l.state == LeaseState::Offered)
        {
            self.leases.put(Lease {
                mac: Some(mac),
                ip,
                expires: now + OFFER_HOLD_SECS,
                state: LeaseState::Offered,
                hostname: hostname(msg),
            });
        }
        self.reply(msg, MessageType::Offer, Some(ip))
    }

    fn request(&mut self, msg: &Message, mac: Mac, now: u64) -> Result<Reply, DhcpDrop> {
        if let Some(sid) = server_id(msg) {
            if sid != self.subnet.server {
                // SELECTING another server's offer: free ours (RFC 2131 §4.3.2).
                self.leases.drop_offer(mac);
                return Err(DhcpDrop::OtherServer);
            }
        }
        // SELECTING / INIT-REBOOT name the address in option 50; RENEWING / REBINDING
        // in ciaddr.
        let ip = requested_ip(msg)
            .or_else(|| Some(msg.ciaddr()).filter(|c| !c.is_unspecified()))
            .ok_or(DhcpDrop::NoRequestedAddress)?;
        if !self.subnet.contains(ip) || !self.available(ip, mac) {
            return self.reply(msg, MessageType::Nak, None);
        }
        self.leases.put(Lease {
            mac: Some(mac),
            ip,
            expires: now + u64::from(self.subnet.lease_secs),
            state: LeaseState::Bound,
            hostname: hostname(msg)
                .or_else(|| self.leases.by_mac(mac).and_then(|l| l.hostname.clone())),
        });
        self.reply(msg, MessageType::Ack, Some(ip))
    }

    fn release(&mut self, msg: &Message, mac: Mac) -> Result<(), DhcpDrop> {
        if server_id(msg).is_some_and(|s| s != self.subnet.server) {
            return Err(DhcpDrop::OtherServer);
        }
        match self.leases.by_mac(mac) {
            Some(l) if l.ip == msg.ciaddr() => {
                self.leases.remove_mac(mac);
                Ok(())
            }
            _ => Err(DhcpDrop::NotHeld),
        }
    }

    fn decline(&mut self, msg: &Message, mac: Mac, now: u64) -> Result<(), DhcpDrop> {
        if server_id(msg).is_some_and(|s| s != self.subnet.server) {
            return Err(DhcpDrop::OtherServer);
        }
        let ip = requested_ip(msg).ok_or(DhcpDrop::NoRequestedAddress)?;
        match self.leases.by_mac(mac) {
            Some(l) if l.ip == ip => {
                self.leases.remove_mac(mac);
                // Someone else answers for it: keep it out of the pool for a while.
                if !self.subnet.is_static_ip(ip) {
                    self.leases.put(Lease {
                        mac: None,
                        ip,
                        expires: now + DECLINE_HOLD_SECS,
                        state: LeaseState::Declined,
                        hostname: None,
                    });
                }
                Ok(())
            }
            _ => Err(DhcpDrop::NotHeld),
        }
    }

    /// Builds an OFFER, ACK (with `yiaddr`), INFORM's ACK (no lease) or NAK for `req`.
    fn reply(
        &self,
        req: &Message,
        kind: MessageType,
        yiaddr: Option<Ipv4Addr>,
    ) -> Result<Reply, DhcpDrop> {
        let s = &self.subnet;
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_htype(HType::Eth)
            .set_xid(req.xid())
            .set_flags(req.flags())
            .set_chaddr(req.chaddr())
            .set_yiaddr(yiaddr.unwrap_or(Ipv4Addr::UNSPECIFIED));
        let reply_kind = if kind == MessageType::Inform {
            MessageType::Ack
        } else {
            kind
        };
        if kind == MessageType::Inform {
            m.set_ciaddr(req.ciaddr());
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(reply_kind));
        o.insert(DhcpOption::ServerIdentifier(s.server));
        if kind != MessageType::Nak {
            if kind != MessageType::Inform {
                o.insert(DhcpOption::AddressLeaseTime(s.lease_secs));
                o.insert(DhcpOption::Renewal(s.lease_secs / 2));
                o.insert(DhcpOption::Rebinding(s.lease_secs / 8 * 7));
            }
            o.insert(DhcpOption::SubnetMask(s.mask()));
            if let Some(r) = s.router {
                o.insert(DhcpOption::Router(vec![r]));
            }
            if !s.dns.is_empty() {
                o.insert(DhcpOption::DomainNameServer(s.dns.clone()));
            }
            if let Some(mtu) = s.mtu {
                o.insert(DhcpOption::InterfaceMtu(mtu));
            }
        }
        let mut bytes = Vec::with_capacity(576);
        m.encode(&mut Encoder::new(&mut bytes))
            .map_err(|_| DhcpDrop::Encode)?;
        let mac = client_mac(req)?;
        let to = if kind == MessageType::Nak {
            Destination::Broadcast
        } else if !req.ciaddr().is_unspecified() {
            Destination::Client(req.ciaddr())
        } else if req.flags().broadcast() {
            Destination::Broadcast
        } else {
            match yiaddr {
                Some(ip) => Destination::NewClient { ip, mac },
                None => Destination::Broadcast,
            }
        };
        Ok(Reply {
            kind: reply_kind,
            bytes,
            to,
        })
    }
}

/// Sets the broadcast flag on a request: for tests and clients.
pub fn broadcast_flags() -> Flags {
    Flags::default().set_broadcast()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
    const GUEST: Mac = Mac([0x02, 0x4b, 0, 0, 0, 7]);

    fn subnet() -> Subnet {
        Subnet {
            server: SERVER,
            prefix_len: 24,
            pool: (Ipv4Addr::new(10, 0, 1, 100), Ipv4Addr::new(10, 0, 1, 102)),
            router: Some(SERVER),
            dns: vec![Ipv4Addr::new(10, 0, 1, 53)],
            mtu: Some(1500),
            lease_secs: 3600,
            statics: vec![(Mac([0x02, 0, 0, 0, 0, 0x55]), Ipv4Addr::new(10, 0, 1, 55))],
            only_mac: None,
        }
    }

    fn server() -> DhcpServer {
        DhcpServer::new(subnet(), LeaseTable::default())
    }

    fn request(kind: MessageType, mac: Mac, opts: &[DhcpOption]) -> Message {
        let mut m = Message::default();
        m.set_xid(0x1234_5678).set_chaddr(&mac.0);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in opts {
            m.opts_mut().insert(o.clone());
        }
        m
    }

    fn bytes(m: &Message) -> Vec<u8> {
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        b
    }

    fn reply(o: Outcome) -> (Message, Destination) {
        let Outcome::Reply(r) = o else {
            panic!("no reply: {o:?}")
        };
        (Message::decode(&mut Decoder::new(&r.bytes)).unwrap(), r.to)
    }

    #[test]
    fn discover_request_ack_with_router_dns_mtu_and_lease() {
        let mut s = server();
        let (offer, to) =
            reply(s.handle(&bytes(&request(MessageType::Discover, GUEST, &[])), 1000));
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 1, 100));
        assert_eq!(offer.xid(), 0x1234_5678);
        assert_eq!(
            to,
            Destination::NewClient {
                ip: offer.yiaddr(),
                mac: GUEST
            }
        );
        let req = request(
            MessageType::Request,
            GUEST,
            &[
                DhcpOption::ServerIdentifier(SERVER),
                DhcpOption::RequestedIpAddress(offer.yiaddr()),
                DhcpOption::Hostname("guest\u{7}1".into()),
            ],
        );
        let (ack, _) = reply(s.handle(&bytes(&req), 1001));
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), offer.yiaddr());
        let o = ack.opts();
        assert_eq!(
            o.get(OptionCode::Router),
            Some(&DhcpOption::Router(vec![SERVER]))
        );
        assert_eq!(
            o.get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            o.get(OptionCode::DomainNameServer),
            Some(&DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
                10, 0, 1, 53
            )]))
        );
        assert_eq!(
            o.get(OptionCode::InterfaceMtu),
            Some(&DhcpOption::InterfaceMtu(1500))
        );
        assert_eq!(
            o.get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(3600))
        );
        assert_eq!(
            o.get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        let l = s.leases.by_mac(GUEST).unwrap();
        assert_eq!(
            (l.state, l.expires, l.hostname.as_deref()),
            (LeaseState::Bound, 4601, Some("guest1"))
        );
        assert!(s.leases.dirty());
        // The same client asking again gets the same address.
        let (again, _) = reply(s.handle(&bytes(&request(MessageType::Discover, GUEST, &[])), 1002));
        assert_eq!(again.yiaddr(), offer.yiaddr());
    }

    #[test]
    fn broadcast_flag_and_renewal_pick_the_destination() {
        let mut s = server();
        let mut d = request(MessageType::Discover, GUEST, &[]);
        d.set_flags(broadcast_flags());
        let (offer, to) = reply(s.handle(&bytes(&d), 10));
        assert_eq!(to, Destination::Broadcast);
        assert!(offer.flags().broadcast());
        let mut renew = request(MessageType::Request, GUEST, &[]);
        renew.set_ciaddr(offer.yiaddr());
        let (ack, to) = reply(s.handle(&bytes(&renew), 20));
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(to, Destination::Client(offer.yiaddr()));
    }

    #[test]
    fn static_lease_by_mac_and_wrong_address_is_nakked() {
        let mut s = server();
        let mac = Mac([0x02, 0, 0, 0, 0, 0x55]);
        let (offer, _) = reply(s.handle(&bytes(&request(MessageType::Discover, mac, &[])), 0));
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 1, 55));
        // Another client may not take the fixed address, nor one outside the subnet.
        for ip in [Ipv4Addr::new(10, 0, 1, 55), Ipv4Addr::new(192, 168, 0, 9)] {
            let req = request(
                MessageType::Request,
                GUEST,
                &[DhcpOption::RequestedIpAddress(ip)],
            );
            let (nak, to) = reply(s.handle(&bytes(&req), 1));
            assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
            assert_eq!(to, Destination::Broadcast);
            assert_eq!(nak.opts().get(OptionCode::Router), None);
        }
    }

    #[test]
    fn pool_exhaustion_expiry_release_and_decline() {
        let mut s = server();
        let macs: Vec<Mac> = (1..=4).map(|i| Mac([0x02, 0, 0, 0, 1, i])).collect();
        for m in &macs[..3] {
            let (offer, _) = reply(s.handle(&bytes(&request(MessageType::Discover, *m, &[])), 0));
            let req = request(
                MessageType::Request,
                *m,
                &[DhcpOption::RequestedIpAddress(offer.yiaddr())],
            );
            reply(s.handle(&bytes(&req), 0));
        }
        assert_eq!(
            s.handle(&bytes(&request(MessageType::Discover, macs[3], &[])), 0),
            Outcome::Dropped(DhcpDrop::PoolExhausted)
        );
        // RELEASE by a client that does not hold the address is refused.
        let mut rel = request(MessageType::Release, macs[3], &[]);
        rel.set_ciaddr(Ipv4Addr::new(10, 0, 1, 100));
        assert_eq!(
            s.handle(&bytes(&rel), 1),
            Outcome::Dropped(DhcpDrop::NotHeld)
        );
        let mut rel = request(MessageType::Release, macs[0], &[]);
        rel.set_ciaddr(Ipv4Addr::new(10, 0, 1, 100));
        assert_eq!(s.handle(&bytes(&rel), 1), Outcome::Done);
        // The released address goes to the next client; declined, it stays out.
        let (offer, _) = reply(s.handle(&bytes(&request(MessageType::Discover, macs[3], &[])), 2));
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 1, 100));
        let req = request(
            MessageType::Request,
            macs[3],
            &[DhcpOption::RequestedIpAddress(offer.yiaddr())],
        );
        reply(s.handle(&bytes(&req), 2));
        let dec = request(
            MessageType::Decline,
            macs[3],
            &[DhcpOption::RequestedIpAddress(offer.yiaddr())],
        );
        assert_eq!(s.handle(&bytes(&dec), 3), Outcome::Done);
        assert_eq!(
            s.handle(&bytes(&request(MessageType::Discover, macs[3], &[])), 4),
            Outcome::Dropped(DhcpDrop::PoolExhausted)
        );
        // Leases run out: after their time every address is free again.
        let (offer, _) = reply(s.handle(
            &bytes(&request(MessageType::Discover, macs[3], &[])),
            10_000,
        ));
        assert!(s.subnet.in_pool(offer.yiaddr()));
    }

    #[test]
    fn other_server_frees_the_offer() {
        let mut s = server();
        reply(s.handle(&bytes(&request(MessageType::Discover, GUEST, &[])), 0));
        assert!(s.leases.by_mac(GUEST).is_some());
        let req = request(
            MessageType::Request,
            GUEST,
            &[
                DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 1, 2)),
                DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 1, 100)),
            ],
        );
        assert_eq!(
            s.handle(&bytes(&req), 1),
            Outcome::Dropped(DhcpDrop::OtherServer)
        );
        assert!(s.leases.by_mac(GUEST).is_none());
    }

    #[test]
    fn inform_answers_options_without_a_lease() {
        let mut s = server();
        let mut inf = request(MessageType::Inform, GUEST, &[]);
        inf.set_ciaddr(Ipv4Addr::new(10, 0, 1, 200));
        let (ack, to) = reply(s.handle(&bytes(&inf), 0));
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(ack.opts().get(OptionCode::AddressLeaseTime), None);
        assert_eq!(to, Destination::Client(Ipv4Addr::new(10, 0, 1, 200)));
        assert!(s.leases.is_empty());
    }

    #[test]
    fn hostile_datagrams_are_dropped_by_name() {
        let mut s = server();
        let good = bytes(&request(MessageType::Discover, GUEST, &[]));
        let cases: Vec<(Vec<u8>, DhcpDrop)> = vec![
            (vec![], DhcpDrop::BadLength),
            (good[..239].to_vec(), DhcpDrop::BadLength),
            (vec![1; MAX_MESSAGE_LEN + 1], DhcpDrop::BadLength),
            (
                {
                    let mut b = good.clone();
                    b[236] = 0;
                    b
                },
                DhcpDrop::BadMagic,
            ),
            // An option whose length runs past the end.
            (
                {
                    let mut b = good[..240].to_vec();
                    b.extend([53, 200, 1]);
                    b
                },
                DhcpDrop::Malformed,
            ),
            (
                {
                    let mut b = good.clone();
                    b[0] = 2;
                    b
                },
                DhcpDrop::NotRequest,
            ),
            // hlen 200: dhcproto's chaddr() would slice past its 16 bytes.
            (
                {
                    let mut b = good.clone();
                    b[2] = 200;
                    b
                },
                DhcpDrop::BadHardware,
            ),
            (
                {
                    let mut b = good.clone();
                    b[1] = 6;
                    b
                },
                DhcpDrop::BadHardware,
            ),
            (
                {
                    let mut b = good.clone();
                    b[28] = 0x01;
                    b
                },
                DhcpDrop::BadClientMac,
            ),
            (
                {
                    let mut b = good.clone();
                    b[28..34].fill(0);
                    b
                },
                DhcpDrop::BadClientMac,
            ),
            (
                {
                    let mut b = good.clone();
                    b[24..28].copy_from_slice(&[10, 9, 9, 9]);
                    b
                },
                DhcpDrop::Relayed,
            ),
            (
                {
                    let mut b = good[..240].to_vec();
                    b.push(255);
                    b
                },
                DhcpDrop::NoMessageType,
            ),
            (
                bytes(&request(MessageType::Offer, GUEST, &[])),
                DhcpDrop::UnexpectedType,
            ),
            (
                bytes(&request(MessageType::Request, GUEST, &[])),
                DhcpDrop::NoRequestedAddress,
            ),
            (
                bytes(&request(MessageType::Decline, GUEST, &[])),
                DhcpDrop::NoRequestedAddress,
            ),
        ];
        // Option lengths dhcproto would assert on (a panic in debug builds): rapid commit
        // with a value, a too short FQDN (also split in two, RFC 3396), BLQ status and time.
        let screened: [&[u8]; 5] = [
            &[53, 1, 1, 80, 1, 0, 255],
            &[53, 1, 1, 81, 2, 0, 0, 255],
            &[53, 1, 1, 81, 1, 0, 81, 1, 0, 255],
            &[53, 1, 1, 151, 0, 255],
            &[53, 1, 1, 152, 3, 0, 0, 0, 255],
        ];
        let cases: Vec<(Vec<u8>, DhcpDrop)> = cases
            .into_iter()
            .chain(screened.iter().map(|opts| {
                let mut b = good[..240].to_vec();
                b.extend(*opts);
                (b, DhcpDrop::Malformed)
            }))
            .collect();
        for (b, why) in cases {
            assert_eq!(s.handle(&b, 0), Outcome::Dropped(why), "{why:?}");
        }
        assert!(s.leases.is_empty());
        // A port serves only its guest's MAC.
        s.subnet.only_mac = Some(Mac([0x02, 0, 0, 0, 0, 1]));
        assert_eq!(
            s.handle(&good, 0),
            Outcome::Dropped(DhcpDrop::ForeignClientMac)
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut s = server();
        let good = bytes(&request(
            MessageType::Discover,
            GUEST,
            &[DhcpOption::Hostname("x".into())],
        ));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20_000 {
            let mut b = good.clone();
            let flips = 1 + round % 8;
            for _ in 0..flips {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                b[i] = (x >> 32) as u8;
            }
            b.truncate(240 + (x as usize >> 40) % (b.len() - 239));
            let _ = s.handle(&b, round);
        }
    }
}
