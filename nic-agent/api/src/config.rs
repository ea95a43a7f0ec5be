//! What the agent is asked to run: ports, uplinks, addresses, routes and tenants, from
//! command-line flags (`NAME=VALUE,key=value` strings) or from the control API (the same
//! types as JSON). Every parse error names the bad value and says what is allowed.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most queue pairs a port or uplink may have: the library device's limit (the agent
/// checks at compile time that its library kernel agrees).
pub const MAX_QUEUE_PAIRS: u16 = 16;

/// A value that could not be understood.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{what} {value:?}: {allowed}")]
pub struct ConfigError {
    pub what: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

fn bad(what: &'static str, value: &str, allowed: &'static str) -> ConfigError {
    ConfigError {
        what,
        value: value.to_owned(),
        allowed,
    }
}

/// Who opens a port's vhost-user connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The agent listens; the frontend (QEMU without `server=on`, DPDK virtio-user) connects.
    #[default]
    Server,
    /// The frontend listens (QEMU `server=on`); the agent dials it.
    Client,
}

/// Offloads of a library device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OffloadMode {
    /// Checksum and segmentation offloads both ways: 64 KiB frames cross the device.
    #[default]
    Tso,
    /// None: every frame fits the MTU.
    Off,
}

/// A MAC address in the usual `02:00:00:00:00:01` form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let err = || bad("MAC address", s, "six hex bytes like 02:4b:00:00:00:01");
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut mac {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        if mac[0] & 1 != 0 {
            return Err(bad(
                "MAC address",
                s,
                "a unicast address (the first byte's low bit clear)",
            ));
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An interface address or route destination: `ADDR/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl FromStr for Cidr {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let allowed = "ADDRESS/PREFIX, like 10.0.0.1/24 or fd00::1/64";
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| bad("address", s, allowed))?;
        let addr: IpAddr = a.parse().map_err(|_| bad("address", s, allowed))?;
        let prefix_len: u8 = p.parse().map_err(|_| bad("prefix length", s, allowed))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(bad(
                "prefix length",
                s,
                "at most 32 for IPv4 and 128 for IPv6",
            ));
        }
        Ok(Cidr { addr, prefix_len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn default_queue_pairs() -> u16 {
    1
}

fn path_is_empty(p: &std::path::Path) -> bool {
    p.as_os_str().is_empty()
}

/// A port: a guest NIC and a library device behind it. The guest side is a vhost-user
/// device served on `socket`, or (with `tap`) a TAP the agent creates for a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    pub name: String,
    /// The vhost-user socket (empty for a TAP port).
    #[serde(default, skip_serializing_if = "path_is_empty")]
    pub socket: PathBuf,
    /// A TAP port: the agent creates TAP `NAME` (with a virtio-net header) as the guest
    /// side, for a container's namespace to take; `socket` and `role` do not apply. Its MAC
    /// is set to the port's guest MAC, so anti-spoofing knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// A TAP port's network namespace (a pod's, `/var/run/netns/NAME`): the agent makes
    /// the TAP there, named `tap`, and keeps it (`TUNSETPERSIST`) while the port exists, so
    /// a restarted agent attaches to the same device and the pod keeps its interface.
    /// Without it the TAP is made in the agent's namespace and lives as long as the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    #[serde(default)]
    pub role: Role,
    #[serde(default = "default_queue_pairs")]
    pub queue_pairs: u16,
    /// The guest's MAC as the device offers it (QEMU's own `mac=` wins); the library side
    /// of the link gets a MAC of its own.
    #[serde(default)]
    pub mac: Option<Mac>,
    #[serde(default)]
    pub offloads: OffloadMode,
    /// The tenant (VRF) the port belongs to; none = the library's main table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The guest's addresses. In a tenant each gets a host route to this port in the
    /// tenant's table (so ports of one subnet are told apart); they are also the source
    /// addresses the anti-spoofing rules are to allow (issue 9, not built yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    /// The library interface's MTU (68 to 65535); none = the kernel's default (1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// An uplink: a host interface the library kernel reaches the wire through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    pub name: String,
    /// `tap:NAME`, `packet:IFNAME`, `xdp:IFNAME` or `discard:`.
    pub spec: String,
    #[serde(default = "default_queue_pairs")]
    pub queue_pairs: u16,
    #[serde(default)]
    pub offloads: OffloadMode,
    /// The library interface's MTU (68 to 65535); none = the kernel's default (1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// An address on a port's or uplink's library interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressConfig {
    /// The port or uplink name.
    pub device: String,
    pub address: Cidr,
}

/// A route in the library kernel's main table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub destination: Cidr,
    #[serde(default)]
    pub via: Option<IpAddr>,
    /// The port or uplink name.
    #[serde(default)]
    pub device: Option<String>,
}

fn valid_name(what: &'static str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(bad(
            what,
            name,
            "1 to 32 letters, digits, '-' or '_' (like vm1 or uplink0)",
        ))
    }
}

/// Whether `name` is a name Linux takes for an interface: 1 to 15 bytes (IFNAMSIZ less its
/// NUL), no '/', ':' or white space, and not "." or ".." (the kernel's `dev_valid_name`).
pub fn is_interface_name(name: &str) -> bool {
    (1..16).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Longest sysctl value the agent writes (the kernel's proc handlers take a page).
pub const MAX_SYSCTL_VALUE: usize = 4096;

/// Whether `name` is a sysctl name the agent takes: dot-separated components (as
/// `sysctl(8)` writes them, `net.ipv4.conf.eth0.forwarding`), each of ASCII letters,
/// digits, `_` and `-`, at most 255 bytes in all — so it names a file under `/proc/sys`
/// and nothing outside it.
pub fn is_sysctl_name(name: &str) -> bool {
    (1..256).contains(&name.len())
        && name.split('.').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Whether `value` may be written to a sysctl: at most [`MAX_SYSCTL_VALUE`] bytes on one
/// line (spaces and tabs separate the fields of a multi-value sysctl such as `tcp_rmem`).
pub fn is_sysctl_value(value: &str) -> bool {
    value.len() <= MAX_SYSCTL_VALUE && !value.chars().any(|c| c.is_control() && c != '\t')
}

fn valid_ifname(what: &'static str, name: &str) -> Result<(), ConfigError> {
    if is_interface_name(name) {
        Ok(())
    } else {
        Err(bad(
            what,
            name,
            "an interface name of 1 to 15 characters without '/', ':' or spaces (like tap-vm1)",
        ))
    }
}

fn queue_pairs(v: &str) -> Result<u16, ConfigError> {
    match v.parse::<u16>() {
        Ok(n) if (1..=MAX_QUEUE_PAIRS).contains(&n) => Ok(n),
        _ => Err(bad("queue pairs", v, "a number from 1 to 16")),
    }
}

fn offloads(v: &str) -> Result<OffloadMode, ConfigError> {
    match v {
        "tso" => Ok(OffloadMode::Tso),
        "off" => Ok(OffloadMode::Off),
        _ => Err(bad("offloads", v, "tso or off")),
    }
}

/// A flag's parts: name, first value, `key=value` options.
type SpecParts<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

/// Splits `NAME=FIRST,key=value,...` into its name, first value and options.
fn split_spec<'a>(
    what: &'static str,
    s: &'a str,
    allowed: &'static str,
) -> Result<SpecParts<'a>, ConfigError> {
    let (name, rest) = s.split_once('=').ok_or_else(|| bad(what, s, allowed))?;
    let mut parts = rest.split(',');
    let first = parts.next().unwrap_or_default();
    if first.is_empty() {
        return Err(bad(what, s, allowed));
    }
    let mut opts = Vec::new();
    for p in parts {
        let (k, v) = p.split_once('=').ok_or_else(|| bad(what, s, allowed))?;
        opts.push((k, v));
    }
    Ok((name, first, opts))
}

const PORT_FORM: &str = "NAME=SOCKET|tap:IFNAME[,netns=PATH][,role=server|client][,queues=N][,mac=MAC][,offloads=tso|off][,tenant=NAME][,mtu=N]";
const UPLINK_FORM: &str =
    "NAME=tap:IFNAME|packet:IFNAME|xdp:IFNAME[,queues=N][,offloads=tso|off][,mtu=N]";

/// Smallest and largest MTU a library interface takes (IPv4's minimum; the 16-bit limit).
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

fn mtu(v: &str) -> Result<u32, ConfigError> {
    match v.parse::<u32>() {
        Ok(n) if MTU_RANGE.contains(&n) => Ok(n),
        _ => Err(bad(
            "MTU",
            v,
            "a number from 68 to 65535 (9000 for jumbo frames)",
        )),
    }
}
const ADDRESS_FORM: &str = "DEVICE=ADDRESS/PREFIX, like vm1=10.0.1.1/24";
const ROUTE_FORM: &str = "DEST/PREFIX[,via=GATEWAY][,dev=DEVICE], like 0.0.0.0/0,via=10.0.0.254";

impl FromStr for PortConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (name, front, opts) = split_spec("port", s, PORT_FORM)?;
        valid_name("port name", name)?;
        let (socket, tap) = match front.strip_prefix("tap:") {
            Some(ifname) => (PathBuf::new(), Some(ifname.to_owned())),
            None => (PathBuf::from(front), None),
        };
        let mut port = PortConfig {
            name: name.to_owned(),
            socket,
            tap,
            netns: None,
            role: Role::Server,
            queue_pairs: 1,
            mac: None,
            offloads: OffloadMode::Tso,
            tenant: None,
            addresses: Vec::new(),
            mtu: None,
        };
        for (k, v) in opts {
            match k {
                "role" => {
                    port.role = match v {
                        "server" => Role::Server,
                        "client" => Role::Client,
                        _ => return Err(bad("port role", v, "server or client")),
                    }
                }
                "queues" => port.queue_pairs = queue_pairs(v)?,
                "mac" => port.mac = Some(v.parse()?),
                "offloads" => port.offloads = offloads(v)?,
                "tenant" => {
                    valid_name("tenant name", v)?;
                    port.tenant = Some(v.to_owned())
                }
                "mtu" => port.mtu = Some(mtu(v)?),
                "netns" => port.netns = Some(PathBuf::from(v)),
                _ => return Err(bad("port option", k, PORT_FORM)),
            }
        }
        port.validate()?;
        Ok(port)
    }
}

impl PortConfig {
    /// Checks what serde cannot (names, counts), for requests that arrive as JSON.
    pub fn validate(&self) -> Result<(), ConfigError> {
        valid_name("port name", &self.name)?;
        queue_pairs(&self.queue_pairs.to_string())?;
        match (&self.tap, self.socket.as_os_str().is_empty()) {
            (None, true) => {
                return Err(bad(
                    "port socket",
                    "",
                    "a path like /run/knic/vm1.sock (or tap = \"IFNAME\" for a TAP port)",
                ));
            }
            (Some(_), false) => {
                return Err(bad(
                    "port",
                    &self.name,
                    "either socket (vhost-user) or tap (a TAP port), not both",
                ));
            }
            (Some(t), true) => {
                valid_ifname("port TAP name", t)?;
                if self.role == Role::Client {
                    return Err(bad(
                        "port role",
                        "client",
                        "server (the default): a TAP port has no vhost-user connection",
                    ));
                }
            }
            (None, false) => {}
        }
        if let Some(ns) = &self.netns {
            if self.tap.is_none() {
                return Err(bad(
                    "port netns",
                    &ns.display().to_string(),
                    "a TAP port's option (tap:IFNAME,netns=PATH); a vhost-user port has none",
                ));
            }
            if !ns.is_absolute() {
                return Err(bad(
                    "port netns",
                    &ns.display().to_string(),
                    "an absolute path to a network namespace, like /var/run/netns/pod1",
                ));
            }
        }
        if let Some(t) = &self.tenant {
            valid_name("tenant name", t)?;
        }
        if let Some(m) = self.mtu {
            mtu(&m.to_string())?;
        }
        Ok(())
    }
}

impl FromStr for UplinkConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (name, spec, opts) = split_spec("uplink", s, UPLINK_FORM)?;
        valid_name("uplink name", name)?;
        let mut uplink = UplinkConfig {
            name: name.to_owned(),
            spec: spec.to_owned(),
            queue_pairs: 1,
            offloads: OffloadMode::Tso,
            mtu: None,
        };
        for (k, v) in opts {
            match k {
                "queues" => uplink.queue_pairs = queue_pairs(v)?,
                "offloads" => uplink.offloads = offloads(v)?,
                "mtu" => uplink.mtu = Some(mtu(v)?),
                _ => return Err(bad("uplink option", k, UPLINK_FORM)),
            }
        }
        uplink.validate()?;
        Ok(uplink)
    }
}

impl UplinkConfig {
    /// The uplink's kind (`tap`, `packet`, `xdp`, or `discard` with no interface) and host
    /// interface, checked for form; the agent opens it.
    pub fn kind_and_interface(&self) -> Result<(&str, &str), ConfigError> {
        match self.spec.split_once(':') {
            Some((kind @ ("tap" | "packet" | "xdp"), ifname)) if !ifname.is_empty() => {
                Ok((kind, ifname))
            }
            Some(("discard", "")) => Ok(("discard", "")),
            _ => Err(bad(
                "uplink",
                &self.spec,
                "tap:IFNAME, packet:IFNAME, xdp:IFNAME or discard:",
            )),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        valid_name("uplink name", &self.name)?;
        queue_pairs(&self.queue_pairs.to_string())?;
        if let Some(m) = self.mtu {
            mtu(&m.to_string())?;
        }
        self.kind_and_interface().map(|_| ())
    }
}

impl FromStr for AddressConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (device, address) = s
            .split_once('=')
            .ok_or_else(|| bad("address", s, ADDRESS_FORM))?;
        valid_name("device name", device)?;
        Ok(AddressConfig {
            device: device.to_owned(),
            address: address.parse()?,
        })
    }
}

impl FromStr for RouteConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut parts = s.split(',');
        let destination: Cidr = parts.next().unwrap_or_default().parse()?;
        let mut route = RouteConfig {
            destination,
            via: None,
            device: None,
        };
        for p in parts {
            match p.split_once('=') {
                Some(("via", v)) => {
                    route.via = Some(
                        v.parse()
                            .map_err(|_| bad("gateway", v, "an IPv4 or IPv6 address"))?,
                    )
                }
                Some(("dev", v)) => {
                    valid_name("device name", v)?;
                    route.device = Some(v.to_owned())
                }
                _ => return Err(bad("route option", p, ROUTE_FORM)),
            }
        }
        route.validate()?;
        Ok(route)
    }
}

impl RouteConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.via.is_none() && self.device.is_none() {
            return Err(bad(
                "route",
                &self.destination.to_string(),
                "a gateway (via=) or a device (dev=), or both",
            ));
        }
        if let Some(gw) = self.via
            && gw.is_ipv4() != self.destination.addr.is_ipv4()
        {
            return Err(bad(
                "gateway",
                &gw.to_string(),
                "the same address family as the destination",
            ));
        }
        Ok(())
    }
}

/// A subnet of a tenant: the guests' prefix and the address the tenant's router (the
/// library kernel, on each of the tenant's ports) answers on, their default gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSubnet {
    /// The network, like `10.1.0.0/24` or `fd01::/64` (host bits zero).
    pub prefix: Cidr,
    /// The router's address inside `prefix`, like `10.1.0.1`.
    pub gateway: IpAddr,
}

impl TenantSubnet {
    /// Whether `addr` lies inside this subnet.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.prefix.contains(addr)
    }
}

impl Cidr {
    /// The prefix's first address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        let len = u32::from(self.prefix_len);
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }

    /// Whether `addr` lies inside this prefix (same family, same leading bits).
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4()
            && Cidr {
                addr,
                prefix_len: self.prefix_len,
            }
            .network()
                == self.network()
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        if self.prefix_len <= other.prefix_len {
            self.contains(other.addr)
        } else {
            other.contains(self.addr)
        }
    }

    /// Whether the host bits (after the prefix) are all zero.
    pub fn is_network(&self) -> bool {
        self.network() == self.addr
    }
}

/// Transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A DNAT port forward: connections to the uplink's address on `port` go to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    pub protocol: Protocol,
    /// The port on the uplink's address (1 to 65535).
    pub port: u16,
    /// The guest's address and port, like `10.1.0.10:80` (inside one of the tenant's subnets).
    pub to: std::net::SocketAddr,
}

/// A tenant: a Linux VRF inside the library kernel. Its ports reach each other and its
/// uplink; ports of other tenants never (their subnets may overlap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// The routing table of its VRF (1 to 2^32-1, not 253-255); none = 1000 + its position
    /// in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Its guests' subnets (IPv4 and/or IPv6), each with its gateway.
    #[serde(default, rename = "subnet")]
    pub subnets: Vec<TenantSubnet>,
    /// The uplink its traffic leaves by (none = its ports reach only one another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// Masquerade its IPv4 traffic to the uplink's address (default on when it has an uplink).
    #[serde(default = "default_true")]
    pub snat: bool,
    /// DNAT port forwards from the uplink's address to its guests.
    #[serde(default, rename = "forward", skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<ForwardConfig>,
}

fn default_true() -> bool {
    true
}

const TENANT_FORM: &str = "NAME[,table=N][,uplink=UPLINK][,snat=on|off][,subnet=GATEWAY/PREFIX]...\
[,forward=tcp|udp:PORT:GUEST:GUESTPORT]..., like blue,uplink=up0,subnet=10.1.0.1/24";

impl FromStr for TenantConfig {
    type Err = ConfigError;
    /// The command line's form: a subnet is written as its gateway with the prefix length
    /// (`10.1.0.1/24` is subnet 10.1.0.0/24, gateway 10.1.0.1).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut parts = s.split(',');
        let name = parts.next().unwrap_or_default();
        valid_name("tenant name", name)?;
        let mut t = TenantConfig {
            name: name.to_owned(),
            table: None,
            subnets: Vec::new(),
            uplink: None,
            snat: true,
            forwards: Vec::new(),
        };
        for p in parts {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| bad("tenant", s, TENANT_FORM))?;
            match k {
                "table" => {
                    t.table =
                        Some(v.parse().map_err(|_| {
                            bad("tenant table", v, "a routing table number like 1000")
                        })?)
                }
                "uplink" => {
                    valid_name("uplink name", v)?;
                    t.uplink = Some(v.to_owned())
                }
                "snat" => {
                    t.snat = match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad("tenant snat", v, "on or off")),
                    }
                }
                "subnet" => {
                    let gw: Cidr = v.parse()?;
                    let prefix = Cidr {
                        addr: gw.network(),
                        prefix_len: gw.prefix_len,
                    };
                    t.subnets.push(TenantSubnet {
                        prefix,
                        gateway: gw.addr,
                    });
                }
                "forward" => {
                    let allowed = "tcp|udp:PORT:GUEST:GUESTPORT, like tcp:8080:10.1.0.10:80";
                    let mut f = v.splitn(3, ':');
                    let protocol = match f.next() {
                        Some("tcp") => Protocol::Tcp,
                        Some("udp") => Protocol::Udp,
                        _ => return Err(bad("tenant forward", v, allowed)),
                    };
                    let port = f
                        .next()
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| bad("tenant forward", v, allowed))?;
                    let to = f
                        .next()
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| bad("tenant forward", v, allowed))?;
                    t.forwards.push(ForwardConfig { protocol, port, to });
                }
                _ => return Err(bad("tenant option", k, TENANT_FORM)),
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_stay_under_proc_sys() {
        for ok in [
            "net.ipv4.tcp_congestion_control",
            "net.ipv4.conf.vrf-blue.forwarding",
            "net.core.somaxconn",
        ] {
            assert!(is_sysctl_name(ok), "{ok}");
        }
        for bad in [
            "",
            "net..ipv4",
            ".net",
            "net.",
            "net/ipv4/ip_forward",
            "net.ipv4.../x",
            "net.ipv4 .x",
            "net.ipv4.conf.eth0:1.x",
            &"a".repeat(256),
        ] {
            assert!(!is_sysctl_name(bad), "{bad:?}");
        }
        assert!(is_sysctl_value("4096\t131072 6291456"));
        assert!(is_sysctl_value(""));
        assert!(!is_sysctl_value("1\n2"));
        assert!(!is_sysctl_value("1\0"));
        assert!(!is_sysctl_value(&"1".repeat(MAX_SYSCTL_VALUE + 1)));
    }

    #[test]
    fn ports_parse_with_options_and_defaults() {
        let p: PortConfig = "vm1=/run/knic/vm1.sock".parse().unwrap();
        assert_eq!(p.role, Role::Server);
        assert_eq!(p.queue_pairs, 1);
        let p: PortConfig =
            "vm2=/tmp/v.sock,role=client,queues=2,mac=52:54:00:00:00:02,offloads=off"
                .parse()
                .unwrap();
        assert_eq!(p.role, Role::Client);
        assert_eq!(p.queue_pairs, 2);
        assert_eq!(p.mac, Some(Mac([0x52, 0x54, 0, 0, 0, 2])));
        assert_eq!(p.offloads, OffloadMode::Off);
        let p: PortConfig = "pod2=tap:eth0,netns=/var/run/netns/pod2".parse().unwrap();
        assert_eq!(
            p.netns.as_deref(),
            Some(std::path::Path::new("/var/run/netns/pod2"))
        );
        for bad in [
            "pod2=tap:eth0,netns=pod2",
            "vm1=/run/knic/vm1.sock,netns=/var/run/netns/x",
        ] {
            assert!(bad.parse::<PortConfig>().is_err(), "{bad}");
        }
        let p: PortConfig = "pod1=tap:kc0123,tenant=blue".parse().unwrap();
        assert_eq!(p.tap.as_deref(), Some("kc0123"));
        assert!(p.socket.as_os_str().is_empty());
        assert_eq!(p.tenant.as_deref(), Some("blue"));
    }

    #[test]
    fn a_port_is_vhost_user_or_tap_never_both_or_neither() {
        let json = |extra: &str| format!(r#"{{"name": "p"{extra}}}"#);
        let parse = |extra: &str| {
            serde_json::from_str::<PortConfig>(&json(extra))
                .unwrap()
                .validate()
        };
        assert!(parse(r#", "socket": "/s""#).is_ok());
        assert!(parse(r#", "tap": "tp0""#).is_ok());
        let e = parse("").unwrap_err();
        assert!(e.to_string().contains("tap"), "{e}");
        let e = parse(r#", "socket": "/s", "tap": "tp0""#).unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let e = parse(r#", "tap": "a/b""#).unwrap_err();
        assert_eq!(e.what, "port TAP name");
        let e = parse(r#", "tap": "sixteen-chars-xx""#).unwrap_err();
        assert_eq!(e.what, "port TAP name");
        let e = "pod=tap:tp0,role=client".parse::<PortConfig>().unwrap_err();
        assert_eq!(e.what, "port role");
        // A TAP port's JSON carries no empty socket.
        let p: PortConfig = "pod=tap:tp0".parse().unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert!(v.get("socket").is_none(), "{v}");
    }

    #[test]
    fn bad_values_are_named_with_what_is_allowed() {
        let e = "vm1=/s,queues=99".parse::<PortConfig>().unwrap_err();
        assert_eq!(e.value, "99");
        assert!(e.to_string().contains("1 to 16"), "{e}");
        let e = "vm1=/s,colour=blue".parse::<PortConfig>().unwrap_err();
        assert!(e.to_string().contains("role=server|client"), "{e}");
        let e = "vm 1=/s".parse::<PortConfig>().unwrap_err();
        assert_eq!(e.what, "port name");
        let e = "up=vde:eth0".parse::<UplinkConfig>().unwrap_err();
        assert!(e.to_string().contains("xdp:IFNAME"), "{e}");
        let e = "vm1=10.0.0.1/33".parse::<AddressConfig>().unwrap_err();
        assert_eq!(e.what, "prefix length");
        let e = "03:00:00:00:00:01".parse::<Mac>().unwrap_err();
        assert!(e.to_string().contains("unicast"), "{e}");
        let e = "10.0.0.0/8".parse::<RouteConfig>().unwrap_err();
        assert!(e.to_string().contains("via="), "{e}");
        let e = "10.0.0.0/8,via=fd00::1".parse::<RouteConfig>().unwrap_err();
        assert!(e.to_string().contains("family"), "{e}");
    }

    #[test]
    fn uplinks_addresses_and_routes_parse() {
        let u: UplinkConfig = "up0=packet:veth0,queues=2".parse().unwrap();
        assert_eq!(u.kind_and_interface().unwrap(), ("packet", "veth0"));
        let u: UplinkConfig = "up1=discard:".parse().unwrap();
        assert_eq!(u.kind_and_interface().unwrap(), ("discard", ""));
        assert!("up2=discard:x".parse::<UplinkConfig>().is_err());
        let a: AddressConfig = "vm1=10.0.1.1/24".parse().unwrap();
        assert_eq!(a.address.to_string(), "10.0.1.1/24");
        let r: RouteConfig = "0.0.0.0/0,via=10.0.0.254,dev=up0".parse().unwrap();
        assert_eq!(r.device.as_deref(), Some("up0"));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<RouteConfig>(&json).unwrap(), r);
    }
}
