//! Tenants as Linux VRFs inside the library kernel.
//!
//! Each tenant is one VRF device, `vrf-NAME`, bound to its own routing table
//! (Documentation/networking/vrf.rst). Its ports are enslaved to it, so the kernel looks up
//! their traffic in that table only: ports of one tenant reach each other through it, ports
//! of another tenant are not in it, whatever addresses a guest forges, and two tenants may
//! use the same subnets. On each of its ports the tenant's router holds the subnet's gateway
//! address; each guest address a port declares gets a host route to that port (so two ports
//! of one subnet are told apart) and the port answers ARP for the subnet's other guests
//! (`proxy_arp`), so guests of one subnet reach each other through the router.
//!
//! A tenant with an uplink leaks a route (vrf.rst, "route leaking"): its table's default
//! route leaves through the uplink (via the uplink's gateway in the main table, when the
//! configuration has one). Its replies come back two ways:
//!
//! * the main table sends the tenant's subnets into its VRF device (`return_routes`), which
//!   also lets a peer reach routed (un-NATed) guest addresses; each subnet that no other
//!   tenant behind the same uplink overlaps (so two tenants that share an IPv4 subnet
//!   still get the replies to their own IPv6 prefixes, which nothing else brings back);
//! * policy routing by conntrack zone, which works for overlapping tenants with SNAT too.
//!
//! # Conntrack zones
//!
//! Two tenants may use the same guest address, source port and peer: with one conntrack
//! table their connections would have the same original tuple and be taken for one. So every
//! tenant has its own zone (`zone`, 1 and up; `NF_CT_DEFAULT_ZONE_ID` 0 is everything else's),
//! set by `net::nat`'s `zones` chain at raw priority, before conntrack's lookup, on every
//! packet that enters from one of the tenant's ports: `ct original zone set ZONE`.
//!
//! The zone is for the **original direction only** (`NF_CT_ZONE_DIR_ORIG`), and that is what
//! makes replies work: a reply arrives on the uplink, where nothing says which tenant it is
//! for, before NAT has rewritten it (the zone must be known before the lookup). With
//! directional zones a connection's reply tuple lives in the default zone
//! (`nf_ct_zone_id(zone, IP_CT_DIR_REPLY)` is 0), which is where a reply from the uplink is
//! looked up (`resolve_normal_ct` tries the template's original zone, then its reply zone).
//! NAT keeps reply tuples unique there: masquerade's `nf_nat_used_tuple` checks the reply
//! tuple in the reply-direction zone, so two tenants' identical flows get two different
//! source ports on the uplink's address, and each reply finds exactly its connection. (Zones
//! in both directions would need the uplink to pick the zone from the packet, i.e. disjoint
//! SNAT port ranges or addresses per tenant: a port budget per tenant and a rule per range;
//! directional zones need neither.) A reply from a tenant's guest to its own connection is
//! found the same way (the original zone first, then the default one), and so are replies of
//! the library's own sockets (DHCP, router advertisements), which are looked up in zone 0.
//!
//! After reverse NAT a reply's destination is a guest address two tenants may share, so the
//! main table cannot route it. `net::nat`'s `marks` chain (after conntrack, before routing)
//! copies the connection's original zone into the packet's mark for packets from the uplink,
//! and a rule per connected tenant, `fwmark MARK lookup TABLE` (priority
//! `FWMARK_RULE_PRIORITY`), routes it into the tenant's table, to the guest's port. A port
//! forward's connection starts on the uplink: its zone rule matches the forward's protocol and
//! port there, so it is the tenant's connection too, and its packets from the peer carry the
//! tenant's mark. A guest cannot choose its zone or mark: both come from the port it sent on
//! (anti-spoofing pins its addresses there too).
//!
//! Limits: a connection between two guests of one tenant keeps its reply tuple in zone 0
//! too, so two tenants with the very same flow between their own guests get the second one's
//! source port remapped by the null NAT binding (conntrack's clash avoidance), which the
//! receiving guest sees; a connection through SNAT whose peer address and port and uplink
//! port equal a live port forward's connection is taken for the forward's (the forward's
//! original tuple lives in its tenant's zone, out of reach of masquerade's uniqueness check).
//! IPv6 is not NATed, so neither zoned nor mark-routed: tenants with overlapping IPv6
//! subnets cannot share an uplink (a config file with them is refused; the API path warns).

use std::net::IpAddr;

use lkl_netstack::FwmarkRule;
use serde_json::{Value, json};

use crate::config::{Cidr, RouteConfig, TenantConfig};

/// The VRF device of tenant `name` (tenant names have at most 11 characters, so this fits
/// IFNAMSIZ).
pub fn vrf_name(name: &str) -> String {
    format!("vrf-{name}")
}

/// Where the tenants' `fwmark` rules go: after the VRFs' l3mdev rule (1000), so traffic
/// inside a VRF never meets them, and before the main table's (32766).
pub const FWMARK_RULE_PRIORITY: u32 = 2000;

/// The mark a packet of `zone` gets from `meta mark set ct original zone`: the 32-bit register
/// nft_reg_store16 leaves, the zone's two bytes in host order first, then zeros (so the zone
/// itself on a little-endian machine).
pub fn zone_mark(zone: u16) -> u32 {
    let [a, b] = zone.to_ne_bytes();
    u32::from_ne_bytes([a, b, 0, 0])
}

/// A tenant the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub config: TenantConfig,
    pub vrf: String,
    pub table: u32,
    /// The subnets the main table sends into its VRF (replies from the uplink):
    /// [`Tenant::unshared_subnets`] when it was connected.
    pub return_routes: Vec<Cidr>,
    /// Its conntrack zone (see the module doc), also the mark its replies carry.
    pub zone: u16,
    /// Whether its routes to its uplink are leaked and its NAT and reply rules installed.
    pub connected: bool,
}

impl Tenant {
    pub fn new(config: TenantConfig, table: u32, zone: u16) -> Tenant {
        Tenant {
            vrf: vrf_name(&config.name),
            table,
            config,
            return_routes: Vec::new(),
            zone,
            connected: false,
        }
    }

    /// The rule that routes packets marked with its zone (from the uplink) into its table.
    pub fn fwmark_rule(&self) -> FwmarkRule {
        FwmarkRule {
            ipv6: false,
            mark: zone_mark(self.zone),
            table: self.table,
            priority: FWMARK_RULE_PRIORITY,
        }
    }

    /// Whether one of this tenant's IPv6 subnets overlaps one of `other`'s (not NATed, so
    /// not told apart by zones).
    pub fn overlaps_ipv6(&self, other: &TenantConfig) -> bool {
        self.config.subnets.iter().any(|a| {
            a.prefix.addr.is_ipv6() && other.subnets.iter().any(|b| a.prefix.overlaps(&b.prefix))
        })
    }

    /// Whether any of this tenant's subnets overlaps one of `other`'s.
    pub fn overlaps(&self, other: &TenantConfig) -> bool {
        self.config
            .subnets
            .iter()
            .any(|a| other.subnets.iter().any(|b| a.prefix.overlaps(&b.prefix)))
    }

    /// Its subnets that overlap none of `others`' (the tenants behind the same uplink):
    /// the ones the main table can route back into its VRF by destination alone.
    pub fn unshared_subnets<'a>(
        &self,
        others: impl Iterator<Item = &'a TenantConfig> + Clone,
    ) -> Vec<Cidr> {
        self.config
            .subnets
            .iter()
            .filter(|a| {
                !others
                    .clone()
                    .any(|o| o.subnets.iter().any(|b| a.prefix.overlaps(&b.prefix)))
            })
            .map(|a| a.prefix)
            .collect()
    }

    pub fn info(&self, ports: &[&str]) -> Value {
        json!({
            "name": self.config.name,
            "vrf": self.vrf,
            "table": self.table,
            "subnets": self.config.subnets,
            "uplink": self.config.uplink,
            "snat": self.config.snat,
            "forwards": self.config.forwards,
            "return_routes": self.return_routes,
            "zone": self.zone,
            "connected": self.connected,
            "ports": ports,
        })
    }
}

/// The gateway of the uplink's default route of one family in `routes` (the main table's
/// configuration), if the configuration has one.
pub fn uplink_gateway(routes: &[RouteConfig], uplink: &str, ipv6: bool) -> Option<IpAddr> {
    routes
        .iter()
        .filter(|r| r.destination.prefix_len == 0 && r.destination.addr.is_ipv6() == ipv6)
        .filter(|r| r.device.as_deref().is_none_or(|d| d == uplink))
        .find_map(|r| r.via)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplink_gateway_is_the_default_route_of_that_uplink_and_family() {
        let r = |s: &str| s.parse::<RouteConfig>().unwrap();
        let routes = [
            r("10.9.0.0/16,via=192.0.2.9"),
            r("0.0.0.0/0,via=192.0.2.1,dev=up0"),
            r("::/0,via=fd00::1,dev=up1"),
        ];
        assert_eq!(
            uplink_gateway(&routes, "up0", false),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(uplink_gateway(&routes, "up0", true), None);
        assert_eq!(
            uplink_gateway(&routes, "up1", true),
            Some("fd00::1".parse().unwrap())
        );
        assert_eq!(vrf_name("blue"), "vrf-blue");
    }

    #[test]
    fn only_subnets_no_other_tenant_overlaps_are_routed_back_by_destination() {
        let t = |s: &str| s.parse::<TenantConfig>().unwrap();
        let blue = Tenant::new(
            t("blue,uplink=up0,subnet=10.1.0.1/24,subnet=fd01::1/64"),
            1000,
            1,
        );
        let red = t("red,uplink=up0,subnet=10.1.0.129/25,subnet=fd02::1/64");
        let green = t("green,uplink=up0,subnet=10.9.0.1/24,subnet=fd01:0:0:0:8000::1/65");
        let cidr = |s: &str| s.parse::<Cidr>().unwrap();
        assert_eq!(
            blue.unshared_subnets([].iter()),
            [cidr("10.1.0.0/24"), cidr("fd01::/64")]
        );
        // Red's /25 lies inside blue's IPv4 /24: blue's IPv6 prefix is still its own.
        assert_eq!(
            blue.unshared_subnets([&red].into_iter()),
            [cidr("fd01::/64")]
        );
        // Green's /65 lies inside blue's IPv6 /64: nothing is blue's alone.
        assert_eq!(
            blue.unshared_subnets([&red, &green].into_iter()),
            Vec::<Cidr>::new()
        );
    }

    #[test]
    fn a_zone_mark_is_the_register_ct_zone_leaves() {
        for zone in [1u16, 2, 0x1234, u16::MAX] {
            let mark = zone_mark(zone);
            // The register's bytes as the kernel's meta set reads them: the zone's two
            // bytes in host order, then two zero bytes.
            let bytes = mark.to_ne_bytes();
            assert_eq!(u16::from_ne_bytes([bytes[0], bytes[1]]), zone);
            assert_eq!(&bytes[2..], &[0, 0]);
        }
        let t = Tenant::new("blue".parse().unwrap(), 1001, 3);
        let rule = t.fwmark_rule();
        assert_eq!((rule.mark, rule.table), (zone_mark(3), 1001));
        assert!(rule.priority > 1000 && rule.priority < 32766);
    }
}
