//! Network services for guests that the kernel has no server for: a DHCPv4 server per
//! subnet and IPv6 router advertisements per link, each a small thread on the library
//! kernel's own sockets (UDP port 67 and an ICMPv6 raw socket, both tied to the link's
//! device with `SO_BINDTODEVICE`, which also holds inside a VRF: the kernel matches a
//! device-bound socket against the enslaved device a datagram arrived on).
//!
//! * [`dhcp`]: the protocol (RFC 2131), sockets and clocks left out, hostile input dropped
//!   and counted by [`DhcpDrop`] reason;
//! * [`leases`]: the lease table and its file, rewritten atomically on every change;
//! * [`ra`]: router advertisements and solicitation checks (RFC 4861);
//! * `server`: the threads, one per link and service;
//! * [`metrics`]: Prometheus metrics over HTTP, built from the API's `stats`;
//!   [`metrics_stack`]: the library kernel's `/proc/net/snmp`, `netstat` and `snmp6` in them.
//!
//! A link's settings come from [`ServiceLink`]: its library interface, the addresses the
//! agent gave it (the DHCP server's identity and subnet, the advertised /64 prefixes) and,
//! for a port, its guest's MAC (the only client served there).

pub mod dhcp;
pub mod leases;
pub mod metrics;
pub mod metrics_stack;
pub mod ra;
mod server;

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use dhcp::DhcpDrop;
pub use leases::{Lease, LeaseFileError, LeaseState};
pub use ra::RsDrop;
pub use server::{DhcpStats, RaStats, Services};

use crate::config::{ConfigError, Mac};

/// Where lease files live unless `--lease-dir` says otherwise.
pub const DEFAULT_LEASE_DIR: &str = "/var/lib/knic/leases";
/// RFC 2131 leaves the lease time to the server; an hour renews every half hour.
pub const DEFAULT_LEASE_SECS: u32 = 3600;
/// RFC 4861 §6.2.1: AdvDefaultLifetime defaults to 3 × MaxRtrAdvInterval (600 s).
pub const DEFAULT_ROUTER_LIFETIME_SECS: u16 = 1800;
/// Seconds between unsolicited advertisements (RFC 4861 allows 4 to 1800).
pub const DEFAULT_RA_INTERVAL_SECS: u32 = 200;

fn bad(what: &'static str, value: &str, allowed: &'static str) -> ConfigError {
    ConfigError {
        what,
        value: value.to_owned(),
        allowed,
    }
}

/// A fixed address for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticLease {
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// A DHCPv4 server on one port's or uplink's link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpConfig {
    /// The port or uplink whose link it serves; its IPv4 address (given with `--address`)
    /// is the server's identifier and defines the subnet.
    pub device: String,
    /// The dynamic pool, first and last address, inside the subnet.
    pub pool_start: Ipv4Addr,
    pub pool_end: Ipv4Addr,
    /// The default router offered: the device's own address unless set; `None` in JSON
    /// after `router=none` offers no router.
    #[serde(default)]
    pub router: RouterChoice,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Interface MTU offered (option 26), 68 to 65535.
    #[serde(default)]
    pub mtu: Option<u16>,
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u32,
    #[serde(default)]
    pub statics: Vec<StaticLease>,
}

fn default_lease_secs() -> u32 {
    DEFAULT_LEASE_SECS
}

/// Which router a DHCP server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouterChoice {
    /// The server's own address on the link (the library kernel routes for the guests).
    #[default]
    Server,
    /// No router option.
    None,
    Address(Ipv4Addr),
}

const DHCP_FORM: &str = "DEVICE,pool=FIRST-LAST[,router=IP|none][,dns=IP[+IP...]][,mtu=N][,lease=SECONDS][,static=MAC@IP]...";
const RA_FORM: &str = "DEVICE[,lifetime=SECONDS][,interval=SECONDS][,mtu=N]";

fn ipv4(what: &'static str, v: &str) -> Result<Ipv4Addr, ConfigError> {
    v.parse()
        .map_err(|_| bad(what, v, "an IPv4 address like 10.0.1.100"))
}

impl FromStr for DhcpConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut parts = s.split(',');
        let device = parts.next().unwrap_or_default();
        if device.is_empty() || device.contains('=') {
            return Err(bad("DHCP server", s, DHCP_FORM));
        }
        let mut c = DhcpConfig {
            device: device.to_owned(),
            pool_start: Ipv4Addr::UNSPECIFIED,
            pool_end: Ipv4Addr::UNSPECIFIED,
            router: RouterChoice::Server,
            dns: Vec::new(),
            mtu: None,
            lease_secs: DEFAULT_LEASE_SECS,
            statics: Vec::new(),
        };
        let mut pool = false;
        for opt in parts {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| bad("DHCP option", opt, DHCP_FORM))?;
            match k {
                "pool" => {
                    let (a, b) = v.split_once('-').ok_or_else(|| {
                        bad("DHCP pool", v, "FIRST-LAST, e.g. 10.0.1.100-10.0.1.199")
                    })?;
                    c.pool_start = ipv4("DHCP pool start", a)?;
                    c.pool_end = ipv4("DHCP pool end", b)?;
                    pool = true;
                }
                "router" if v == "none" => c.router = RouterChoice::None,
                "router" => c.router = RouterChoice::Address(ipv4("DHCP router", v)?),
                "dns" => {
                    c.dns = v
                        .split('+')
                        .map(|d| ipv4("DHCP DNS server", d))
                        .collect::<Result<_, _>>()?
                }
                "mtu" => {
                    c.mtu = Some(
                        v.parse()
                            .ok()
                            .filter(|m| *m >= 68)
                            .ok_or_else(|| bad("DHCP MTU", v, "a number from 68 to 65535"))?,
                    )
                }
                "lease" => {
                    c.lease_secs = v
                        .parse()
                        .ok()
                        .filter(|l| *l >= 60)
                        .ok_or_else(|| bad("DHCP lease time", v, "seconds, at least 60"))?
                }
                "static" => {
                    let (m, ip) = v.split_once('@').ok_or_else(|| {
                        bad(
                            "DHCP static lease",
                            v,
                            "MAC@IP, e.g. 02:4b:00:00:00:01@10.0.1.10",
                        )
                    })?;
                    c.statics.push(StaticLease {
                        mac: m.parse()?,
                        ip: ipv4("DHCP static address", ip)?,
                    });
                }
                _ => return Err(bad("DHCP option", k, DHCP_FORM)),
            }
        }
        if !pool {
            return Err(bad("DHCP server", s, "a pool: pool=FIRST-LAST"));
        }
        c.validate()?;
        Ok(c)
    }
}

impl DhcpConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pool_start > self.pool_end {
            return Err(bad(
                "DHCP pool",
                &format!("{}-{}", self.pool_start, self.pool_end),
                "FIRST no higher than LAST",
            ));
        }
        if u32::from(self.pool_end) - u32::from(self.pool_start) >= 1 << 16 {
            return Err(bad(
                "DHCP pool",
                &format!("{}-{}", self.pool_start, self.pool_end),
                "at most 65536 addresses",
            ));
        }
        if self.lease_secs < 60 {
            return Err(bad(
                "DHCP lease time",
                &self.lease_secs.to_string(),
                "seconds, at least 60",
            ));
        }
        Ok(())
    }

    /// The subnet of a server whose own address on the link is `server`/`prefix_len`.
    pub fn subnet(
        &self,
        server: Ipv4Addr,
        prefix_len: u8,
        only_mac: Option<Mac>,
    ) -> Result<dhcp::Subnet, ConfigError> {
        let s = dhcp::Subnet {
            server,
            prefix_len,
            pool: (self.pool_start, self.pool_end),
            router: match self.router {
                RouterChoice::Server => Some(server),
                RouterChoice::None => None,
                RouterChoice::Address(a) => Some(a),
            },
            dns: self.dns.clone(),
            mtu: self.mtu,
            lease_secs: self.lease_secs,
            statics: self.statics.iter().map(|s| (s.mac, s.ip)).collect(),
            only_mac,
        };
        let net = format!("{server}/{prefix_len}");
        for ip in [self.pool_start, self.pool_end]
            .into_iter()
            .chain(self.statics.iter().map(|s| s.ip))
        {
            if !s.contains(ip) {
                return Err(ConfigError {
                    what: "DHCP address",
                    value: format!("{ip} (device {} is {net})", self.device),
                    allowed: "an address inside the device's subnet",
                });
            }
        }
        Ok(s)
    }
}

/// Router advertisements on one port's or uplink's link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaConfig {
    /// The port or uplink; its global IPv6 addresses (given with `--address`) name the /64
    /// prefixes advertised.
    pub device: String,
    #[serde(default = "default_lifetime")]
    pub router_lifetime_secs: u16,
    #[serde(default = "default_interval")]
    pub interval_secs: u32,
    #[serde(default)]
    pub mtu: Option<u32>,
}

fn default_lifetime() -> u16 {
    DEFAULT_ROUTER_LIFETIME_SECS
}

fn default_interval() -> u32 {
    DEFAULT_RA_INTERVAL_SECS
}

impl FromStr for RaConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut parts = s.split(',');
        let device = parts.next().unwrap_or_default();
        if device.is_empty() || device.contains('=') {
            return Err(bad("router advertisement", s, RA_FORM));
        }
        let mut c = RaConfig {
            device: device.to_owned(),
            router_lifetime_secs: DEFAULT_ROUTER_LIFETIME_SECS,
            interval_secs: DEFAULT_RA_INTERVAL_SECS,
            mtu: None,
        };
        for opt in parts {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| bad("RA option", opt, RA_FORM))?;
            match k {
                "lifetime" => {
                    c.router_lifetime_secs =
                        v.parse().ok().filter(|l| *l <= 9000).ok_or_else(|| {
                            bad(
                                "RA router lifetime",
                                v,
                                "seconds from 0 (not a default router) to 9000",
                            )
                        })?
                }
                "interval" => {
                    c.interval_secs = v
                        .parse()
                        .map_err(|_| bad("RA interval", v, "seconds from 4 to 1800"))?
                }
                "mtu" => {
                    c.mtu = Some(v.parse().ok().filter(|m| *m >= 1280).ok_or_else(|| {
                        bad("RA MTU", v, "a number of at least 1280 (IPv6's minimum)")
                    })?)
                }
                _ => return Err(bad("RA option", k, RA_FORM)),
            }
        }
        c.validate()?;
        Ok(c)
    }
}

impl RaConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(4..=1800).contains(&self.interval_secs) {
            return Err(bad(
                "RA interval",
                &self.interval_secs.to_string(),
                "seconds from 4 to 1800",
            ));
        }
        if self.router_lifetime_secs > 9000 {
            return Err(bad(
                "RA router lifetime",
                &self.router_lifetime_secs.to_string(),
                "seconds from 0 (not a default router) to 9000",
            ));
        }
        Ok(())
    }
}

/// Every service the agent runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesConfig {
    #[serde(default)]
    pub dhcp: Vec<DhcpConfig>,
    #[serde(default)]
    pub ra: Vec<RaConfig>,
    /// Directory of the DHCP servers' lease files (`DEVICE.json` each).
    #[serde(default = "default_lease_dir")]
    pub lease_dir: PathBuf,
    /// Where Prometheus metrics are served over HTTP, if anywhere.
    #[serde(default)]
    pub metrics: Option<std::net::SocketAddr>,
}

fn default_lease_dir() -> PathBuf {
    PathBuf::from(DEFAULT_LEASE_DIR)
}

impl Default for ServicesConfig {
    fn default() -> ServicesConfig {
        ServicesConfig {
            dhcp: Vec::new(),
            ra: Vec::new(),
            lease_dir: default_lease_dir(),
            metrics: None,
        }
    }
}

/// What the services need to know of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLink {
    /// The port's or uplink's name (the config's `device`).
    pub device: String,
    /// The library interface and its index.
    pub ifname: String,
    pub ifindex: u32,
    /// The library interface's MAC (advertised as the router's link-layer address).
    pub mac: Option<[u8; 6]>,
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    pub ipv6: Vec<(Ipv6Addr, u8)>,
    /// A port's guest MAC: the only DHCP client served there.
    pub guest_mac: Option<Mac>,
    /// A tenant's port: its guest is alone on the link and reaches the subnet's other
    /// guests through the router (router advertisements say its prefixes are off-link).
    pub routed: bool,
}

/// Why a service could not start.
#[derive(Debug, Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "DHCP server on {device}: the device has no IPv4 address; give it one with --address {device}=ADDR/PREFIX"
    )]
    NoIpv4 { device: String },
    #[error(
        "router advertisements on {device}: the device has no global IPv6 /64 address to advertise; give it one with --address {device}=PREFIX::1/64"
    )]
    NoIpv6Prefix { device: String },
    #[error("{service} on {device}: no port or uplink of that name (known: {known})")]
    UnknownDevice {
        service: &'static str,
        device: String,
        known: String,
    },
    #[error("{service} on {device} is configured twice")]
    Duplicate {
        service: &'static str,
        device: String,
    },
    #[error(transparent)]
    LeaseFile(#[from] LeaseFileError),
    #[error("{service} on {device}: cannot open its socket in the library kernel")]
    Socket {
        service: &'static str,
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{service} on {device}: cannot start its thread")]
    Thread {
        service: &'static str,
        device: String,
        #[source]
        source: std::io::Error,
    },
}

impl fmt::Display for RouterChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouterChoice::Server => f.write_str("server"),
            RouterChoice::None => f.write_str("none"),
            RouterChoice::Address(a) => write!(f, "{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_flags_parse_and_mistakes_name_the_value() {
        let c: DhcpConfig = "vm1,pool=10.0.1.100-10.0.1.150,dns=10.0.1.53+9.9.9.9,mtu=9000,lease=600,static=02:4b:00:00:00:09@10.0.1.9"
            .parse()
            .unwrap();
        assert_eq!(c.device, "vm1");
        assert_eq!(
            (c.pool_start, c.pool_end),
            (Ipv4Addr::new(10, 0, 1, 100), Ipv4Addr::new(10, 0, 1, 150))
        );
        assert_eq!(c.dns.len(), 2);
        assert_eq!(
            (c.mtu, c.lease_secs, c.router),
            (Some(9000), 600, RouterChoice::Server)
        );
        assert_eq!(c.statics[0].ip, Ipv4Addr::new(10, 0, 1, 9));
        let s = c.subnet(Ipv4Addr::new(10, 0, 1, 1), 24, None).unwrap();
        assert_eq!(s.router, Some(Ipv4Addr::new(10, 0, 1, 1)));
        let e = c.subnet(Ipv4Addr::new(10, 0, 2, 1), 24, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("10.0.1.100 (device vm1 is 10.0.2.1/24)"),
            "{e}"
        );
        for (bad, says) in [
            ("vm1", "pool=FIRST-LAST"),
            ("vm1,pool=10.0.1.9", "FIRST-LAST"),
            ("vm1,pool=10.0.1.9-10.0.1.1", "FIRST no higher"),
            ("vm1,pool=10.0.1.1-10.0.1.9,lease=5", "at least 60"),
            (
                "vm1,pool=10.0.1.1-10.0.1.9,color=red",
                "DHCP option \"color\"",
            ),
            (
                "vm1,pool=10.0.1.1-10.0.1.9,static=01:00:00:00:00:01@10.0.1.2",
                "unicast",
            ),
            ("vm1,pool=10.0.1.1-x", "DHCP pool end \"x\""),
        ] {
            let e = bad.parse::<DhcpConfig>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn ra_flags_parse_and_json_has_defaults() {
        let c: RaConfig = "vm1,lifetime=600,interval=30,mtu=9000".parse().unwrap();
        assert_eq!(
            (c.router_lifetime_secs, c.interval_secs, c.mtu),
            (600, 30, Some(9000))
        );
        assert!(
            "vm1,interval=2"
                .parse::<RaConfig>()
                .unwrap_err()
                .to_string()
                .contains("4 to 1800")
        );
        assert!("vm1,mtu=1000".parse::<RaConfig>().is_err());
        let s: ServicesConfig = serde_json::from_str(r#"{"ra":[{"device":"vm1"}]}"#).unwrap();
        assert_eq!(s.ra[0].router_lifetime_secs, DEFAULT_ROUTER_LIFETIME_SECS);
        assert_eq!(s.lease_dir, PathBuf::from(DEFAULT_LEASE_DIR));
        assert!(serde_json::from_str::<ServicesConfig>(r#"{"dhcpv6":[]}"#).is_err());
    }
}
