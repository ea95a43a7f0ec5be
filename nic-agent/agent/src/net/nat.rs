//! The tenants' conntrack zones, SNAT (masquerade) to their uplink and DNAT port forwards,
//! as nf_tables rules in one `ip` table, `knic-nat`, rebuilt whole whenever tenants or their
//! ports change (one batch: the kernel swaps the old rules for the new ones at once).
//!
//! * chain `zones` (type filter, hook prerouting, priority raw, -300: before conntrack looks
//!   the packet up): per port of a tenant, `iifname PORT ct original zone set ZONE`; per
//!   forward, `iifname UPLINK ip protocol P th dport PORT ct original zone set ZONE`;
//! * chain `marks` (type filter, hook prerouting, priority mangle, -150: after conntrack,
//!   before routing): per uplink of a connected tenant, `iifname UPLINK meta mark set ct
//!   original zone`, which the tenant's `fwmark` rule routes into its VRF's table;
//! * chain `postrouting` (type nat, hook postrouting, priority 100): per connected tenant
//!   with `snat`, per IPv4 subnet: `ip saddr SUBNET oifname UPLINK masquerade`;
//! * chain `prerouting` (type nat, hook prerouting, priority -100): per forward:
//!   `iifname UPLINK ip protocol P th dport PORT dnat to GUEST:GUESTPORT`.
//!
//! Why the zones are original-direction only and how replies find their tenant: see
//! `net::tenant`.

use std::net::IpAddr;

use super::nft::{
    Base, Batch, CmpOp, Expr, Hook, MetaKey, NF_INET_POST_ROUTING, NF_INET_PRE_ROUTING,
    NF_IP_PRI_MANGLE, NF_IP_PRI_RAW, NFPROTO_IPV4, NFT_REG_1, NFT_REG_2, ifname_bytes,
};
use crate::config::{Protocol, TenantConfig};

pub const TABLE: &str = "knic-nat";

/// What one tenant's zone and NAT need.
#[derive(Debug, Clone)]
pub struct TenantNat<'a> {
    pub tenant: &'a TenantConfig,
    /// Its conntrack zone (`Tenant::zone`).
    pub zone: u16,
    /// The library interface names of its ports.
    pub port_ifnames: Vec<&'a str>,
    /// Its uplink's library interface name, once the tenant is connected to it (its routes
    /// leaked, `Tenant::connected`): SNAT, forwards and reply marks apply from then on.
    pub uplink_ifname: Option<&'a str>,
}

fn eq(data: Vec<u8>) -> Expr {
    Expr::Cmp {
        op: CmpOp::Eq,
        data,
    }
}

fn iifname(ifname: &str) -> [Expr; 2] {
    [Expr::Meta(MetaKey::IifName), eq(ifname_bytes(ifname))]
}

/// Matches a forward's packets from the uplink: protocol and destination port.
fn forward_match(protocol: Protocol, port: u16) -> [Expr; 4] {
    let proto = match protocol {
        Protocol::Tcp => 6u8,
        Protocol::Udp => 17u8,
    };
    [
        Expr::Payload {
            base: Base::Network,
            offset: 9,
            len: 1,
        },
        eq(vec![proto]),
        Expr::Payload {
            base: Base::Transport,
            offset: 2,
            len: 2,
        },
        eq(port.to_be_bytes().to_vec()),
    ]
}

/// `ct original zone set ZONE`: the zone goes through register 1 in host order, as
/// nft_ct_set_zone_eval reads it (nft_reg_load16).
fn set_zone(zone: u16) -> [Expr; 2] {
    [
        Expr::Load {
            reg: NFT_REG_1,
            data: zone.to_ne_bytes().to_vec(),
        },
        Expr::SetOriginalZone,
    ]
}

/// The rules: (chain, expressions), in chain order.
pub fn rules(tenants: &[TenantNat<'_>]) -> Vec<(&'static str, Vec<Expr>)> {
    let mut out = Vec::new();
    for t in tenants {
        for port in &t.port_ifnames {
            out.push(("zones", [&iifname(port)[..], &set_zone(t.zone)].concat()));
        }
        let Some(uplink) = t.uplink_ifname else {
            continue;
        };
        for f in &t.tenant.forwards {
            out.push((
                "zones",
                [
                    &iifname(uplink)[..],
                    &forward_match(f.protocol, f.port),
                    &set_zone(t.zone),
                ]
                .concat(),
            ));
        }
    }
    let mut uplinks: Vec<&str> = tenants.iter().filter_map(|t| t.uplink_ifname).collect();
    uplinks.sort_unstable();
    uplinks.dedup();
    for uplink in uplinks {
        out.push((
            "marks",
            [&iifname(uplink)[..], &[Expr::OriginalZone, Expr::SetMark]].concat(),
        ));
    }
    for t in tenants.iter().filter(|t| t.tenant.snat) {
        let Some(uplink) = t.uplink_ifname else {
            continue;
        };
        for s in &t.tenant.subnets {
            let IpAddr::V4(net) = s.prefix.network() else {
                continue;
            };
            let mask = u32::MAX
                .checked_shl(32 - u32::from(s.prefix.prefix_len))
                .unwrap_or(0);
            out.push((
                "postrouting",
                vec![
                    Expr::Payload {
                        base: Base::Network,
                        offset: 12,
                        len: 4,
                    },
                    Expr::Mask(mask.to_be_bytes().to_vec()),
                    eq(net.octets().to_vec()),
                    Expr::Meta(MetaKey::OifName),
                    eq(ifname_bytes(uplink)),
                    Expr::Masquerade,
                ],
            ));
        }
    }
    for t in tenants {
        let Some(uplink) = t.uplink_ifname else {
            continue;
        };
        for f in &t.tenant.forwards {
            let IpAddr::V4(to) = f.to.ip() else { continue };
            out.push((
                "prerouting",
                [
                    &iifname(uplink)[..],
                    &forward_match(f.protocol, f.port),
                    &[
                        Expr::Load {
                            reg: NFT_REG_1,
                            data: to.octets().to_vec(),
                        },
                        Expr::Load {
                            reg: NFT_REG_2,
                            data: f.to.port().to_be_bytes().to_vec(),
                        },
                        Expr::Dnat4,
                    ],
                ]
                .concat(),
            ));
        }
    }
    out
}

/// A batch that replaces the table with `tenants`' rules (`had_table`: it exists now).
pub fn replace(tenants: &[TenantNat<'_>], had_table: bool) -> Batch {
    let mut b = Batch::new();
    if had_table {
        b.delete_table(NFPROTO_IPV4, TABLE);
    }
    b.add_table(NFPROTO_IPV4, TABLE);
    for (chain, hooknum, priority, chain_type) in [
        ("zones", NF_INET_PRE_ROUTING, NF_IP_PRI_RAW, "filter"),
        ("marks", NF_INET_PRE_ROUTING, NF_IP_PRI_MANGLE, "filter"),
        ("postrouting", NF_INET_POST_ROUTING, 100, "nat"),
        ("prerouting", NF_INET_PRE_ROUTING, -100, "nat"),
    ] {
        b.add_chain(
            NFPROTO_IPV4,
            TABLE,
            chain,
            Some(&Hook {
                hooknum,
                priority,
                device: None,
                chain_type,
            }),
        );
    }
    for (chain, exprs) in rules(tenants) {
        b.add_rule(NFPROTO_IPV4, TABLE, chain, &exprs);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain<'r>(r: &'r [(&str, Vec<Expr>)], name: &str) -> Vec<&'r Vec<Expr>> {
        r.iter()
            .filter(|(c, _)| *c == name)
            .map(|(_, e)| e)
            .collect()
    }

    #[test]
    fn zone_per_port_and_forward_snat_per_ipv4_subnet_dnat_per_forward() {
        let t: TenantConfig =
            "blue,uplink=up0,subnet=10.1.0.1/24,subnet=fd01::1/64,forward=tcp:8080:10.1.0.10:80"
                .parse()
                .unwrap();
        let blue = TenantNat {
            tenant: &t,
            zone: 7,
            port_ifnames: vec!["eth1", "eth2"],
            uplink_ifname: Some("eth0"),
        };
        let r = rules(std::slice::from_ref(&blue));
        // Chains in hook order: zones, marks, then NAT.
        let order: Vec<&str> = r.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            order,
            [
                "zones",
                "zones",
                "zones",
                "marks",
                "postrouting",
                "prerouting"
            ]
        );
        let zones = chain(&r, "zones");
        let zone7 = Expr::Load {
            reg: NFT_REG_1,
            data: 7u16.to_ne_bytes().to_vec(),
        };
        for (rule, dev) in zones.iter().zip(["eth1", "eth2", "eth0"]) {
            assert!(rule.contains(&eq(ifname_bytes(dev))), "{rule:?}");
            assert!(rule.ends_with(&[zone7.clone(), Expr::SetOriginalZone]));
        }
        // The forward's zone rule on the uplink matches its protocol and port.
        assert!(zones[2].contains(&eq(vec![6])) && zones[2].contains(&eq(vec![0x1f, 0x90])));
        assert_eq!(
            chain(&r, "marks")[0],
            &[
                Expr::Meta(MetaKey::IifName),
                eq(ifname_bytes("eth0")),
                Expr::OriginalZone,
                Expr::SetMark
            ]
        );
        let snat = chain(&r, "postrouting");
        assert!(snat[0].contains(&Expr::Mask(vec![255, 255, 255, 0])));
        assert!(snat[0].contains(&eq(vec![10, 1, 0, 0])));
        let dnat = chain(&r, "prerouting");
        assert!(dnat[0].contains(&eq(8080u16.to_be_bytes().to_vec())));
        assert!(dnat[0].contains(&Expr::Load {
            reg: NFT_REG_2,
            data: 80u16.to_be_bytes().to_vec()
        }));
        // Without SNAT: no masquerade.
        let mut no_snat = t.clone();
        no_snat.snat = false;
        let r = rules(&[TenantNat {
            tenant: &no_snat,
            ..blue.clone()
        }]);
        assert!(chain(&r, "postrouting").is_empty());
        // Not connected to its uplink yet: only its ports' zones.
        let r = rules(&[TenantNat {
            uplink_ifname: None,
            ..blue.clone()
        }]);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r.iter().all(|(c, _)| *c == "zones"));
        // Two tenants behind one uplink: one mark rule for it.
        let red = TenantNat {
            zone: 8,
            port_ifnames: vec!["eth3"],
            ..blue.clone()
        };
        assert_eq!(chain(&rules(&[blue, red]), "marks").len(), 1);
    }
}
