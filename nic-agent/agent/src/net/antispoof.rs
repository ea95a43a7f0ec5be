//! Anti-spoofing per port: nf_tables rules on the port's library interface, in the netdev
//! family's ingress hook, so they run before the kernel looks at a frame (before ARP,
//! routing or conntrack). A guest may send only from its MAC and from its addresses; each
//! drop is counted by a named counter object of the port's table, one per reason.
//!
//! The port's table is `knic-port-NAME`, its base chain `ingress` (priority -500, policy
//! accept), its rules in order:
//! 1. source MAC other than the guest's: `source_mac`, drop;
//! 2. ARP whose sender address is one of the guest's IPv4 addresses (or 0.0.0.0, a probe):
//!    accept; any other ARP: `arp_source`, drop;
//! 3. IPv4 from one of its addresses, or from 0.0.0.0 to UDP port 67 (a DHCP client without
//!    an address): accept; any other IPv4: `ipv4_source`, drop;
//! 4. IPv6 from one of its addresses, from the EUI-64 address of its MAC in each of its
//!    tenant's /64 subnets (SLAAC), from fe80::/64 (its link is its own) or from :: (DAD):
//!    accept; any other IPv6: `ipv6_source`, drop;
//! 5. any other ethertype (VLAN tags included): `ethertype`, drop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::nft::{
    Base, Batch, CmpOp, Expr, Hook, MetaKey, NF_NETDEV_INGRESS, NFPROTO_NETDEV, Verdict,
};

/// The drop reasons, each a counter object of the port's table.
pub const REASONS: [&str; 5] = [
    "source_mac",
    "arp_source",
    "ipv4_source",
    "ipv6_source",
    "ethertype",
];

/// Prefix of the ports' tables.
pub const TABLE_PREFIX: &str = "knic-port-";
const CHAIN: &str = "ingress";
/// Before anything else on ingress.
const PRIORITY: i32 = -500;

const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const ETH_P_ARP: [u8; 2] = [0x08, 0x06];
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
const IPPROTO_UDP: u8 = 17;
const DHCP_SERVER_PORT: u16 = 67;

/// What port a guest may send from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub port: String,
    pub ifname: String,
    pub mac: [u8; 6],
    pub addresses: Vec<IpAddr>,
    /// The tenant's /64 IPv6 prefixes, for the SLAAC address of `mac`.
    pub slaac_prefixes: Vec<Ipv6Addr>,
}

pub fn table_name(port: &str) -> String {
    format!("{TABLE_PREFIX}{port}")
}

/// The modified EUI-64 address of `mac` in the /64 `prefix` (RFC 4291 appendix A).
pub fn eui64(prefix: Ipv6Addr, mac: [u8; 6]) -> Ipv6Addr {
    let mut o = prefix.octets();
    o[8..].copy_from_slice(&[
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]);
    Ipv6Addr::from(o)
}

fn is(ethertype: [u8; 2]) -> [Expr; 2] {
    [
        Expr::Meta(MetaKey::Protocol),
        Expr::Cmp {
            op: CmpOp::Eq,
            data: ethertype.to_vec(),
        },
    ]
}

fn field_eq(base: Base, offset: u32, data: &[u8]) -> [Expr; 2] {
    [
        Expr::Payload {
            base,
            offset,
            len: data.len() as u32,
        },
        Expr::Cmp {
            op: CmpOp::Eq,
            data: data.to_vec(),
        },
    ]
}

fn drop_counted(reason: &str) -> [Expr; 2] {
    [
        Expr::Counter(reason.to_owned()),
        Expr::Verdict(Verdict::Drop),
    ]
}

/// The rules of a port's chain, in order.
pub fn rules(g: &Guard) -> Vec<Vec<Expr>> {
    let v4: Vec<Ipv4Addr> = g
        .addresses
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect();
    let mut v6: Vec<Ipv6Addr> = g
        .addresses
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
        .collect();
    v6.extend(g.slaac_prefixes.iter().map(|p| eui64(*p, g.mac)));
    v6.push(Ipv6Addr::UNSPECIFIED);
    let accept = Expr::Verdict(Verdict::Accept);
    let mut rules = Vec::new();
    // 1. The source MAC.
    rules.push(vec![
        Expr::Payload {
            base: Base::Link,
            offset: 6,
            len: 6,
        },
        Expr::Cmp {
            op: CmpOp::Neq,
            data: g.mac.to_vec(),
        },
        Expr::Counter("source_mac".into()),
        Expr::Verdict(Verdict::Drop),
    ]);
    // 2. ARP: the sender protocol address (RFC 826; offset 14 of the ARP header).
    for a in v4.iter().copied().chain([Ipv4Addr::UNSPECIFIED]) {
        let mut r = is(ETH_P_ARP).to_vec();
        r.extend(field_eq(Base::Network, 14, &a.octets()));
        r.push(accept.clone());
        rules.push(r);
    }
    let mut r = is(ETH_P_ARP).to_vec();
    r.extend(drop_counted("arp_source"));
    rules.push(r);
    // 3. IPv4: the source address (offset 12).
    for a in &v4 {
        let mut r = is(ETH_P_IP).to_vec();
        r.extend(field_eq(Base::Network, 12, &a.octets()));
        r.push(accept.clone());
        rules.push(r);
    }
    let mut r = is(ETH_P_IP).to_vec();
    r.extend(field_eq(Base::Network, 12, &Ipv4Addr::UNSPECIFIED.octets()));
    r.extend(field_eq(Base::Network, 9, &[IPPROTO_UDP]));
    r.extend(field_eq(
        Base::Transport,
        2,
        &DHCP_SERVER_PORT.to_be_bytes(),
    ));
    r.push(accept.clone());
    rules.push(r);
    let mut r = is(ETH_P_IP).to_vec();
    r.extend(drop_counted("ipv4_source"));
    rules.push(r);
    // 4. IPv6: the source address (offset 8).
    for a in &v6 {
        let mut r = is(ETH_P_IPV6).to_vec();
        r.extend(field_eq(Base::Network, 8, &a.octets()));
        r.push(accept.clone());
        rules.push(r);
    }
    let mut r = is(ETH_P_IPV6).to_vec();
    r.extend(field_eq(Base::Network, 8, &[0xfe, 0x80, 0, 0, 0, 0, 0, 0]));
    r.push(accept.clone());
    rules.push(r);
    let mut r = is(ETH_P_IPV6).to_vec();
    r.extend(drop_counted("ipv6_source"));
    rules.push(r);
    // 5. Anything else.
    rules.push(drop_counted("ethertype").to_vec());
    rules
}

/// Adds the port's table, counters, chain and rules to `batch`.
pub fn install(batch: &mut Batch, g: &Guard) {
    let table = table_name(&g.port);
    batch.add_table(NFPROTO_NETDEV, &table);
    for reason in REASONS {
        batch.add_counter(NFPROTO_NETDEV, &table, reason);
    }
    batch.add_chain(
        NFPROTO_NETDEV,
        &table,
        CHAIN,
        Some(&Hook {
            hooknum: NF_NETDEV_INGRESS,
            priority: PRIORITY,
            device: Some(g.ifname.clone()),
            chain_type: "filter",
        }),
    );
    for r in rules(g) {
        batch.add_rule(NFPROTO_NETDEV, &table, CHAIN, &r);
    }
}

/// Removes the port's table (its chain, rules and counters with it).
pub fn remove(batch: &mut Batch, port: &str) {
    batch.delete_table(NFPROTO_NETDEV, &table_name(port));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eui64_flips_the_universal_bit_and_inserts_fffe() {
        let a = eui64(
            "fd01::".parse().unwrap(),
            [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
        );
        assert_eq!(a, "fd01::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn every_drop_rule_counts_under_a_known_reason_and_accepts_come_first() {
        let g = Guard {
            port: "vm1".into(),
            ifname: "eth1".into(),
            mac: [0x52, 0x54, 0, 0, 0, 1],
            addresses: vec!["10.1.0.10".parse().unwrap(), "fd01::10".parse().unwrap()],
            slaac_prefixes: vec!["fd01::".parse().unwrap()],
        };
        let rules = rules(&g);
        let mut seen = Vec::new();
        for r in &rules {
            match r.last() {
                Some(Expr::Verdict(Verdict::Drop)) => {
                    let Some(Expr::Counter(name)) = r.get(r.len() - 2) else {
                        panic!("a drop without a counter: {r:?}")
                    };
                    assert!(REASONS.contains(&name.as_str()), "{name}");
                    seen.push(name.clone());
                }
                Some(Expr::Verdict(Verdict::Accept)) => {}
                other => panic!("a rule ending in {other:?}"),
            }
        }
        assert_eq!(seen, REASONS);
        // 10.1.0.10 is accepted as an IPv4 source and as an ARP sender.
        let ip = Ipv4Addr::new(10, 1, 0, 10).octets().to_vec();
        let hits = rules
            .iter()
            .filter(|r| {
                r.iter()
                    .any(|e| matches!(e, Expr::Cmp { data, .. } if *data == ip))
            })
            .count();
        assert_eq!(hits, 2);
    }
}
