//! SNAT (masquerade) of tenants to their uplink and DNAT port forwards, as nf_tables rules
//! in one `ip` table, `knic-nat`, rebuilt whole whenever tenants change (one batch: the
//! kernel swaps the old rules for the new ones at once).
//!
//! * chain `postrouting` (type nat, hook postrouting, priority 100): per tenant with
//!   `snat` and an uplink, per IPv4 subnet: `ip saddr SUBNET oifname UPLINK masquerade`;
//! * chain `prerouting` (type nat, hook prerouting, priority -100): per forward:
//!   `iifname UPLINK ip protocol P th dport PORT dnat to GUEST:GUESTPORT`.
//!
//! The replies are un-NATed by conntrack and routed by the main table into the tenant's
//! VRF (`net::tenant`'s return routes), so both need subnets no other tenant behind the
//! same uplink uses.

use std::net::IpAddr;

use super::nft::{
    Base, Batch, CmpOp, Expr, Hook, MetaKey, NF_INET_POST_ROUTING, NF_INET_PRE_ROUTING,
    NFPROTO_IPV4, NFT_REG_1, NFT_REG_2, ifname_bytes,
};
use crate::config::{Protocol, TenantConfig};

pub const TABLE: &str = "knic-nat";

/// What one tenant's NAT needs: its config and its uplink's library interface name.
#[derive(Debug, Clone)]
pub struct TenantNat<'a> {
    pub tenant: &'a TenantConfig,
    pub uplink_ifname: &'a str,
}

fn eq(data: Vec<u8>) -> Expr {
    Expr::Cmp {
        op: CmpOp::Eq,
        data,
    }
}

/// The rules: (chain, expressions), postrouting first.
pub fn rules(tenants: &[TenantNat<'_>]) -> Vec<(&'static str, Vec<Expr>)> {
    let mut out = Vec::new();
    for t in tenants.iter().filter(|t| t.tenant.snat) {
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
                    eq(ifname_bytes(t.uplink_ifname)),
                    Expr::Masquerade,
                ],
            ));
        }
    }
    for t in tenants {
        for f in &t.tenant.forwards {
            let IpAddr::V4(to) = f.to.ip() else { continue };
            let proto = match f.protocol {
                Protocol::Tcp => 6u8,
                Protocol::Udp => 17u8,
            };
            out.push((
                "prerouting",
                vec![
                    Expr::Meta(MetaKey::IifName),
                    eq(ifname_bytes(t.uplink_ifname)),
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
                    eq(f.port.to_be_bytes().to_vec()),
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
            ));
        }
    }
    out
}

/// A batch that replaces the NAT table with `tenants`' rules (`had_table`: it exists now).
pub fn replace(tenants: &[TenantNat<'_>], had_table: bool) -> Batch {
    let mut b = Batch::new();
    if had_table {
        b.delete_table(NFPROTO_IPV4, TABLE);
    }
    b.add_table(NFPROTO_IPV4, TABLE);
    for (chain, hooknum, priority) in [
        ("postrouting", NF_INET_POST_ROUTING, 100),
        ("prerouting", NF_INET_PRE_ROUTING, -100),
    ] {
        b.add_chain(
            NFPROTO_IPV4,
            TABLE,
            chain,
            Some(&Hook {
                hooknum,
                priority,
                device: None,
                chain_type: "nat",
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

    #[test]
    fn snat_per_ipv4_subnet_and_dnat_per_forward() {
        let t: TenantConfig =
            "blue,uplink=up0,subnet=10.1.0.1/24,subnet=fd01::1/64,forward=tcp:8080:10.1.0.10:80"
                .parse()
                .unwrap();
        let r = rules(&[TenantNat {
            tenant: &t,
            uplink_ifname: "eth0",
        }]);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].0, "postrouting");
        assert!(r[0].1.contains(&Expr::Mask(vec![255, 255, 255, 0])));
        assert!(r[0].1.contains(&eq(vec![10, 1, 0, 0])));
        assert_eq!(r[1].0, "prerouting");
        assert!(r[1].1.contains(&eq(8080u16.to_be_bytes().to_vec())));
        assert!(r[1].1.contains(&Expr::Load {
            reg: NFT_REG_2,
            data: 80u16.to_be_bytes().to_vec()
        }));
        let mut no_snat = t.clone();
        no_snat.snat = false;
        let r = rules(&[TenantNat {
            tenant: &no_snat,
            uplink_ifname: "eth0",
        }]);
        assert_eq!(r.len(), 1);
    }
}
