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
//! A tenant with an uplink leaks two routes (vrf.rst, "route leaking"): its table's default
//! route leaves through the uplink (via the uplink's gateway in the main table, when the
//! configuration has one), and the main table sends the tenant's subnets into its VRF
//! device, so replies from behind the uplink come back. The second needs subnets no other
//! tenant with an uplink uses; overlapping tenants behind one uplink need SNAT with
//! conntrack marks to tell their replies apart (not built yet), so the agent leaves that
//! route out and says so.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::config::{RouteConfig, TenantConfig};

/// The VRF device of tenant `name` (tenant names have at most 11 characters, so this fits
/// IFNAMSIZ).
pub fn vrf_name(name: &str) -> String {
    format!("vrf-{name}")
}

/// A tenant the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub config: TenantConfig,
    pub vrf: String,
    pub table: u32,
    /// Whether the main table sends its subnets into its VRF (replies from the uplink).
    pub return_routes: bool,
}

impl Tenant {
    pub fn new(config: TenantConfig, table: u32) -> Tenant {
        Tenant {
            vrf: vrf_name(&config.name),
            table,
            config,
            return_routes: false,
        }
    }

    /// Whether any of this tenant's subnets overlaps one of `other`'s.
    pub fn overlaps(&self, other: &TenantConfig) -> bool {
        self.config
            .subnets
            .iter()
            .any(|a| other.subnets.iter().any(|b| a.prefix.overlaps(&b.prefix)))
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
}
