//! IPv6 router advertisements (RFC 4861 §4.2, §6.2): the messages and the solicitation
//! checks, free of sockets. The kernel has no RA sender of its own (radvd's job on a
//! host), so the agent sends them on an ICMPv6 raw socket of the library kernel; the
//! kernel fills in the IPv6 header (link-local source, hop limit 255 from the socket
//! options) and the checksum.
//!
//! A stock guest's kernel autoconf (`accept_ra`, SLAAC) needs exactly: a router lifetime
//! above zero (the default route), a prefix information option with the A flag on a /64
//! (its address), and, when the link's MTU is not 1500, the MTU option. The L (on-link)
//! flag is set where the prefix's other hosts share the guest's link; on a tenant's port
//! they do not (each guest has a link of its own, and the router joins them), so the
//! prefix is advertised off-link and the guest sends to its other hosts through the
//! router, as `proxy_arp` makes it do for IPv4 (RFC 4861 §6.3.4: with L clear the prefix
//! adds no on-link route).

use std::net::Ipv6Addr;

use serde::Serialize;

/// ICMPv6 types (RFC 4861 §4).
pub const ROUTER_SOLICITATION: u8 = 133;
pub const ROUTER_ADVERTISEMENT: u8 = 134;

/// Neighbour discovery option types (RFC 4861 §4.6).
const OPT_SOURCE_LL_ADDR: u8 = 1;
const OPT_PREFIX_INFO: u8 = 3;
const OPT_MTU: u8 = 5;
/// Prefix information flags: on-link (L) and autonomous address configuration (A).
const PREFIX_ON_LINK: u8 = 0x80;
const PREFIX_AUTONOMOUS: u8 = 0x40;
/// RFC 4861 §6.2.1 defaults (AdvValidLifetime 30 days, AdvPreferredLifetime 7 days).
pub const VALID_LIFETIME_SECS: u32 = 2_592_000;
pub const PREFERRED_LIFETIME_SECS: u32 = 604_800;
/// The longest message built: header, MAC, MTU and a few prefixes.
pub const MAX_RA_LEN: usize = 16 + 8 + 8 + 32 * MAX_PREFIXES;
pub const MAX_PREFIXES: usize = 8;

/// What one link advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Seconds the router is a default router (0: never, 9000 at most).
    pub router_lifetime: u16,
    /// /64 prefixes guests autoconfigure from.
    pub prefixes: Vec<Ipv6Addr>,
    pub mtu: Option<u32>,
    /// The router's MAC (source link-layer address option), so guests need no NS first.
    pub mac: Option<[u8; 6]>,
    /// Whether the prefixes' other hosts are on this link (the L flag; see the module).
    pub on_link: bool,
}

impl Advert {
    /// The ICMPv6 message (checksum 0: the kernel fills it).
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(MAX_RA_LEN);
        m.extend([ROUTER_ADVERTISEMENT, 0, 0, 0]);
        // Cur hop limit 64, M and O clear (addresses from SLAAC, no DHCPv6).
        m.extend([64, 0]);
        m.extend(self.router_lifetime.to_be_bytes());
        m.extend(0u32.to_be_bytes()); // reachable time: unspecified
        m.extend(0u32.to_be_bytes()); // retrans timer: unspecified
        if let Some(mac) = self.mac {
            m.extend([OPT_SOURCE_LL_ADDR, 1]);
            m.extend(mac);
        }
        if let Some(mtu) = self.mtu {
            m.extend([OPT_MTU, 1, 0, 0]);
            m.extend(mtu.to_be_bytes());
        }
        let flags = if self.on_link {
            PREFIX_ON_LINK | PREFIX_AUTONOMOUS
        } else {
            PREFIX_AUTONOMOUS
        };
        for p in self.prefixes.iter().take(MAX_PREFIXES) {
            m.extend([OPT_PREFIX_INFO, 4, 64, flags]);
            m.extend(VALID_LIFETIME_SECS.to_be_bytes());
            m.extend(PREFERRED_LIFETIME_SECS.to_be_bytes());
            m.extend(0u32.to_be_bytes());
            m.extend(prefix64(*p).octets());
        }
        m
    }
}

/// `addr` with its host half cleared.
pub fn prefix64(addr: Ipv6Addr) -> Ipv6Addr {
    let mut o = addr.octets();
    o[8..].fill(0);
    Ipv6Addr::from(o)
}

/// Why a received message is not a router solicitation worth answering (RFC 4861 §6.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RsDrop {
    /// Fewer than 8 bytes.
    TooShort,
    /// Not type 133 (the socket filter lets only 133 through) or code not 0.
    NotSolicitation,
    /// An option of length 0 or running past the end.
    BadOption,
    /// From the unspecified address yet carrying a source link-layer address option.
    UnspecifiedWithAddress,
    /// More solicitations than the link's answer budget.
    RateLimited,
}

impl RsDrop {
    pub const ALL: [RsDrop; 5] = [
        RsDrop::TooShort,
        RsDrop::NotSolicitation,
        RsDrop::BadOption,
        RsDrop::UnspecifiedWithAddress,
        RsDrop::RateLimited,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RsDrop::TooShort => "rs_too_short",
            RsDrop::NotSolicitation => "rs_not_solicitation",
            RsDrop::BadOption => "rs_bad_option",
            RsDrop::UnspecifiedWithAddress => "rs_unspecified_with_address",
            RsDrop::RateLimited => "rs_rate_limited",
        }
    }
}

/// Checks a router solicitation from `source` (the ICMPv6 message, no IPv6 header).
pub fn check_solicitation(msg: &[u8], source: Ipv6Addr) -> Result<(), RsDrop> {
    if msg.len() < 8 {
        return Err(RsDrop::TooShort);
    }
    if msg[0] != ROUTER_SOLICITATION || msg[1] != 0 {
        return Err(RsDrop::NotSolicitation);
    }
    let mut opts = &msg[8..];
    let mut has_lla = false;
    while !opts.is_empty() {
        let len = usize::from(*opts.get(1).ok_or(RsDrop::BadOption)?) * 8;
        if len == 0 || len > opts.len() {
            return Err(RsDrop::BadOption);
        }
        has_lla |= opts[0] == OPT_SOURCE_LL_ADDR;
        opts = &opts[len..];
    }
    if source.is_unspecified() && has_lla {
        return Err(RsDrop::UnspecifiedWithAddress);
    }
    Ok(())
}

/// A token bucket of answers to solicitations: `burst` at once, refilled at one per
/// `per_ms` milliseconds, so a guest flooding solicitations costs at most that many RAs.
#[derive(Debug, Clone)]
pub struct AnswerBudget {
    tokens: u32,
    burst: u32,
    per_ms: u64,
    last_ms: u64,
}

impl AnswerBudget {
    pub fn new(burst: u32, per_ms: u64) -> AnswerBudget {
        AnswerBudget {
            tokens: burst,
            burst,
            per_ms,
            last_ms: 0,
        }
    }

    /// Takes one answer at time `now_ms`, or says the budget is spent.
    pub fn take(&mut self, now_ms: u64) -> bool {
        let earned = now_ms.saturating_sub(self.last_ms) / self.per_ms.max(1);
        if earned > 0 {
            self.tokens = self.burst.min(self.tokens.saturating_add(earned as u32));
            self.last_ms = now_ms;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advert_carries_lifetime_mtu_mac_and_an_autonomous_prefix() {
        let a = Advert {
            router_lifetime: 1800,
            prefixes: vec!["fd00:1::1".parse().unwrap()],
            mtu: Some(9000),
            mac: Some([2, 0x4b, 0, 0, 0, 1]),
            on_link: true,
        };
        let m = a.encode();
        assert_eq!(m.len(), 16 + 8 + 8 + 32);
        assert_eq!(&m[..8], &[134, 0, 0, 0, 64, 0, 0x07, 0x08]);
        assert_eq!(&m[16..24], &[1, 1, 2, 0x4b, 0, 0, 0, 1]);
        assert_eq!(&m[24..32], &[5, 1, 0, 0, 0, 0, 0x23, 0x28]);
        let p = &m[32..];
        assert_eq!(&p[..4], &[3, 4, 64, 0xc0]);
        assert_eq!(&p[4..8], &VALID_LIFETIME_SECS.to_be_bytes());
        assert_eq!(&p[16..], &"fd00:1::".parse::<Ipv6Addr>().unwrap().octets());
        // A tenant's port: autonomous, not on-link.
        let routed = Advert {
            on_link: false,
            ..a
        }
        .encode();
        assert_eq!(&routed[32..36], &[3, 4, 64, 0x40]);
        let bare = Advert {
            router_lifetime: 0,
            prefixes: vec![],
            mtu: None,
            mac: None,
            on_link: true,
        };
        assert_eq!(bare.encode().len(), 16);
    }

    #[test]
    fn hostile_solicitations_are_named() {
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let un = Ipv6Addr::UNSPECIFIED;
        let good = [133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1];
        assert_eq!(check_solicitation(&good, ll), Ok(()));
        assert_eq!(check_solicitation(&good[..8], un), Ok(()));
        assert_eq!(check_solicitation(&good[..7], ll), Err(RsDrop::TooShort));
        assert_eq!(
            check_solicitation(&[134, 0, 0, 0, 0, 0, 0, 0], ll),
            Err(RsDrop::NotSolicitation)
        );
        assert_eq!(
            check_solicitation(&[133, 1, 0, 0, 0, 0, 0, 0], ll),
            Err(RsDrop::NotSolicitation)
        );
        let mut zero_len = good;
        zero_len[9] = 0;
        assert_eq!(check_solicitation(&zero_len, ll), Err(RsDrop::BadOption));
        let mut long = good;
        long[9] = 2;
        assert_eq!(check_solicitation(&long, ll), Err(RsDrop::BadOption));
        assert_eq!(check_solicitation(&good[..9], ll), Err(RsDrop::BadOption));
        assert_eq!(
            check_solicitation(&good, un),
            Err(RsDrop::UnspecifiedWithAddress)
        );
    }

    #[test]
    fn answer_budget_limits_a_flood() {
        let mut b = AnswerBudget::new(3, 1000);
        let answered = (0..100).filter(|_| b.take(10)).count();
        assert_eq!(answered, 3);
        assert!(b.take(1010));
        assert!(!b.take(1011));
        assert!(b.take(60_000));
    }
}
