//! `knic-agent --config FILE`: the whole configuration as one TOML file, checked as a whole
//! before anything is applied, so that a bad file (at start or on reload) changes nothing.
//!
//! ```toml
//! [agent]
//! memory_mib = 256
//!
//! [[uplink]]
//! name = "up0"
//! spec = "packet:veth0"
//!
//! [[tenant]]
//! name = "blue"
//! uplink = "up0"
//! subnet = [{ prefix = "10.1.0.0/24", gateway = "10.1.0.1" }]
//!
//! [[port]]
//! name = "vm1"
//! socket = "/run/knic/vm1.sock"
//! tenant = "blue"
//! mac = "52:54:00:00:01:01"
//! addresses = ["10.1.0.10"]
//!
//! [[address]]
//! device = "up0"
//! address = "192.0.2.2/24"
//! ```
//!
//! Every error names the field (`tenant "blue" (tenant[0]).uplink`), the bad value and what
//! is allowed. The README's "Config file" section is the reference of every field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{
    AddressConfig, AgentConfig, PortConfig, RouteConfig, TenantConfig, UplinkConfig,
};

/// Default API socket (also `knic-agent --api-socket`'s default).
pub const DEFAULT_API_SOCKET: &str = "/run/knic/agent.sock";
/// Default RAM of the library kernel, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// A tenant's VRF table when the file names none: this plus its position.
pub const FIRST_TENANT_TABLE: u32 = 1000;
/// Longest tenant name: its VRF is `vrf-NAME`, and interface names have 15 characters.
pub const MAX_TENANT_NAME: usize = 11;

/// Why a configuration file is refused.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot read the config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown field, or a value of the wrong type; toml's message names
    /// the line, the key and what was expected.
    #[error("config file {}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// A value that parses but does not fit the rest.
    #[error("config file {}: {field} = {value:?}: {allowed}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        value: String,
        allowed: String,
    },
}

impl FileError {
    /// The field an [`FileError::Invalid`] names (for tests and the API).
    pub fn field(&self) -> Option<&str> {
        match self {
            FileError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// The `[agent]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// The control API socket; `--api-socket` on the command line wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_socket: Option<PathBuf>,
    /// The library kernel's RAM in MiB (32 to 65536).
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// IPv4 and IPv6 forwarding inside the library.
    #[serde(default = "default_true")]
    pub forwarding: bool,
    /// Where what runs is kept across restarts (`DIR/state.json`, see `state`); an
    /// absolute directory. `--state-dir` on the command line wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
}

fn default_memory() -> u64 {
    DEFAULT_MEMORY_MIB
}

fn default_true() -> bool {
    true
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            api_socket: None,
            memory_mib: DEFAULT_MEMORY_MIB,
            forwarding: true,
            state_dir: None,
        }
    }
}

/// The file as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub agent: AgentSection,
    #[serde(default, rename = "uplink")]
    pub uplinks: Vec<UplinkConfig>,
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    #[serde(default, rename = "address")]
    pub addresses: Vec<AddressConfig>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// DHCP servers, router advertisements, lease directory and metrics (`[services]`,
    /// the shape of `crate::services::ServicesConfig`).
    #[serde(default)]
    pub services: crate::services::ServicesConfig,
}

/// Reads and checks `path`.
pub fn load(path: &Path) -> Result<FileConfig, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and checks `text` (read from `path`, which errors name).
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, FileError> {
    let mut file: FileConfig = toml::from_str(text).map_err(|e| FileError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    for (i, t) in file.tenants.iter_mut().enumerate() {
        if t.table.is_none() {
            t.table = Some(FIRST_TENANT_TABLE + i as u32);
        }
    }
    Checker { path, file: &file }.check()?;
    Ok(file)
}

impl FileConfig {
    /// What the agent runs; `api_socket` and `state_dir` from the command line win over
    /// the file's.
    pub fn agent_config(
        &self,
        api_socket: Option<PathBuf>,
        state_dir: Option<PathBuf>,
    ) -> AgentConfig {
        AgentConfig {
            api_socket: api_socket
                .or_else(|| self.agent.api_socket.clone())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_API_SOCKET)),
            memory_bytes: self.agent.memory_mib << 20,
            forwarding: self.agent.forwarding,
            ports: self.ports.clone(),
            uplinks: self.uplinks.clone(),
            addresses: self.addresses.clone(),
            routes: self.routes.clone(),
            tenants: self.tenants.clone(),
            config_file: None,
            services: self.services.clone(),
            state_dir: state_dir.or_else(|| self.agent.state_dir.clone()),
        }
    }
}

struct Checker<'a> {
    path: &'a Path,
    file: &'a FileConfig,
}

impl Checker<'_> {
    fn err(&self, field: String, value: impl ToString, allowed: impl Into<String>) -> FileError {
        FileError::Invalid {
            path: self.path.to_path_buf(),
            field,
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }

    fn check(&self) -> Result<(), FileError> {
        let f = self.file;
        if !(32..=65536).contains(&f.agent.memory_mib) {
            return Err(self.err(
                "agent.memory_mib".into(),
                f.agent.memory_mib,
                "a number of MiB from 32 to 65536",
            ));
        }
        if let Some(dir) = &f.agent.state_dir {
            self.check_state_dir(dir)?;
        }
        let mut names: BTreeMap<&str, String> = BTreeMap::new();
        for (i, u) in f.uplinks.iter().enumerate() {
            let field = format!("uplink[{i}]");
            u.validate()
                .map_err(|e| self.err(format!("{field} ({})", e.what), &e.value, e.allowed))?;
            if let Some(first) = names.insert(&u.name, field.clone()) {
                return Err(self.taken(&field, &u.name, &first));
            }
        }
        let mut sockets: BTreeMap<&Path, String> = BTreeMap::new();
        let mut taps: BTreeMap<&str, String> = BTreeMap::new();
        for (i, p) in f.ports.iter().enumerate() {
            let field = format!("port[{i}]");
            p.validate()
                .map_err(|e| self.err(format!("{field} ({})", e.what), &e.value, e.allowed))?;
            if let Some(first) = names.insert(&p.name, field.clone()) {
                return Err(self.taken(&field, &p.name, &first));
            }
            if let Some(tap) = &p.tap {
                if let Some(first) = taps.insert(tap, field.clone()) {
                    return Err(self.err(
                        format!("{field}.tap"),
                        tap,
                        format!("a TAP no other port uses ({first} has it)"),
                    ));
                }
            } else if let Some(first) = sockets.insert(&p.socket, field.clone()) {
                return Err(self.err(
                    format!("{field}.socket"),
                    p.socket.display(),
                    format!("a socket no other port uses ({first} has it)"),
                ));
            }
        }
        self.check_tenants()?;
        self.check_ports()?;
        self.check_dhcp_pools()?;
        for (i, a) in f.addresses.iter().enumerate() {
            self.known_device(format!("address[{i}].device"), &a.device)?;
        }
        for (i, r) in f.routes.iter().enumerate() {
            r.validate()
                .map_err(|e| self.err(format!("route[{i}] ({})", e.what), &e.value, e.allowed))?;
            if let Some(d) = &r.device {
                self.known_device(format!("route[{i}].device"), d)?;
            }
        }
        Ok(())
    }

    /// `[agent] state_dir`: an absolute path that, when it exists, is a directory (the agent
    /// creates it otherwise, and keeps `state.json` in it).
    fn check_state_dir(&self, dir: &Path) -> Result<(), FileError> {
        let field = "agent.state_dir".to_owned();
        if dir.as_os_str().is_empty() || !dir.is_absolute() {
            return Err(self.err(
                field,
                dir.display(),
                "an absolute directory path, like /var/lib/knic (the agent keeps state.json in it)",
            ));
        }
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => Err(self.err(
                field,
                dir.display(),
                "a directory (this path exists and is not one): name another or remove it",
            )),
            _ => Ok(()),
        }
    }

    fn taken(&self, field: &str, name: &str, first: &str) -> FileError {
        self.err(
            format!("{field}.name"),
            name,
            format!("a name no other port or uplink has ({first} has it)"),
        )
    }

    fn known_device(&self, field: String, name: &str) -> Result<(), FileError> {
        let f = self.file;
        let known: Vec<&str> = f
            .ports
            .iter()
            .map(|p| p.name.as_str())
            .chain(f.uplinks.iter().map(|u| u.name.as_str()))
            .collect();
        if known.contains(&name) {
            Ok(())
        } else {
            Err(self.err(
                field,
                name,
                format!("the name of a [[port]] or [[uplink]] ({})", list(&known)),
            ))
        }
    }

    fn check_tenants(&self) -> Result<(), FileError> {
        let f = self.file;
        let uplinks: Vec<&str> = f.uplinks.iter().map(|u| u.name.as_str()).collect();
        let mut tenants: BTreeMap<&str, usize> = BTreeMap::new();
        let mut tables: BTreeMap<u32, usize> = BTreeMap::new();
        let mut forwards: BTreeMap<(&str, &str, u16), String> = BTreeMap::new();
        for (i, t) in f.tenants.iter().enumerate() {
            let field = format!("tenant[{i}]");
            let named = format!("tenant {:?} ({field})", t.name);
            let name_ok = !t.name.is_empty()
                && t.name.len() <= MAX_TENANT_NAME
                && t.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok {
                return Err(self.err(
                    format!("{field}.name"),
                    &t.name,
                    "1 to 11 letters, digits, '-' or '_' (its VRF is vrf-NAME)",
                ));
            }
            if let Some(first) = tenants.insert(&t.name, i) {
                return Err(self.err(
                    format!("{field}.name"),
                    &t.name,
                    format!("a name no other tenant has (tenant[{first}] has it)"),
                ));
            }
            let table = t.table.unwrap_or(FIRST_TENANT_TABLE + i as u32);
            if table == 0 || (253..=255).contains(&table) {
                return Err(self.err(
                    format!("{named}.table"),
                    table,
                    "a routing table number from 1 to 4294967295 other than 253-255 (default, main, local)",
                ));
            }
            if let Some(first) = tables.insert(table, i) {
                return Err(self.err(
                    format!("{named}.table"),
                    table,
                    format!("a table no other tenant uses (tenant[{first}] has it)"),
                ));
            }
            if let Some(u) = &t.uplink
                && !uplinks.contains(&u.as_str())
            {
                return Err(self.err(
                    format!("{named}.uplink"),
                    u,
                    format!("the name of an [[uplink]] ({})", list(&uplinks)),
                ));
            }
            for (j, s) in t.subnets.iter().enumerate() {
                let sf = format!("{named}.subnet[{j}]");
                if !s.prefix.is_network() {
                    return Err(self.err(
                        format!("{sf}.prefix"),
                        s.prefix,
                        format!(
                            "a network address with its host bits zero, like {}/{}",
                            s.prefix.network(),
                            s.prefix.prefix_len
                        ),
                    ));
                }
                let max = if s.prefix.addr.is_ipv4() { 30 } else { 126 };
                if s.prefix.prefix_len > max {
                    return Err(self.err(
                        format!("{sf}.prefix"),
                        s.prefix,
                        "a prefix of at most /30 (IPv4) or /126 (IPv6): room for a gateway and guests",
                    ));
                }
                if !s.contains(s.gateway) || s.gateway == s.prefix.network() {
                    return Err(self.err(
                        format!("{sf}.gateway"),
                        s.gateway,
                        format!(
                            "an address inside {} other than its network address",
                            s.prefix
                        ),
                    ));
                }
                if let Some((k, o)) = t.subnets[..j]
                    .iter()
                    .enumerate()
                    .find(|(_, o)| o.prefix.overlaps(&s.prefix))
                {
                    return Err(self.err(
                        format!("{sf}.prefix"),
                        s.prefix,
                        format!(
                            "a subnet that does not overlap the tenant's subnet[{k}] ({}); \
                             overlapping subnets belong in different tenants",
                            o.prefix
                        ),
                    ));
                }
            }
            self.check_overlap(i, t)?;
            for (j, fw) in t.forwards.iter().enumerate() {
                let ff = format!("{named}.forward[{j}]");
                let Some(uplink) = &t.uplink else {
                    return Err(self.err(
                        ff,
                        fw.port,
                        "a forward needs the tenant's uplink (set tenant.uplink)",
                    ));
                };
                if fw.port == 0 || fw.to.port() == 0 {
                    return Err(self.err(format!("{ff}.port"), fw.port, "a port from 1 to 65535"));
                }
                if !fw.to.is_ipv4() || !t.subnets.iter().any(|s| s.contains(fw.to.ip())) {
                    return Err(self.err(
                        format!("{ff}.to"),
                        fw.to,
                        "an IPv4 guest address:port inside one of the tenant's subnets",
                    ));
                }
                let proto = match fw.protocol {
                    crate::config::Protocol::Tcp => "tcp",
                    crate::config::Protocol::Udp => "udp",
                };
                if let Some(first) = forwards.insert((uplink, proto, fw.port), ff.clone()) {
                    return Err(self.err(
                        format!("{ff}.port"),
                        fw.port,
                        format!(
                            "a {proto} port of uplink {uplink} no other forward takes ({first} has it)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Two tenants may share subnets, but not behind one uplink without SNAT: replies from the
    /// uplink to an address both use cannot be told apart (with SNAT in both, their conntrack
    /// zones and masquerade's distinct uplink ports do: `net::tenant`). Refused naming both.
    fn check_overlap(&self, i: usize, t: &TenantConfig) -> Result<(), FileError> {
        let Some(uplink) = &t.uplink else {
            return Ok(());
        };
        // SNAT (and so the zones' reply marks) is IPv4 only: overlapping IPv6 subnets behind
        // one uplink cannot be told apart whatever `snat` says.
        let clash = self.file.tenants[..i]
            .iter()
            .enumerate()
            .find_map(|(k, o)| {
                if o.uplink.as_ref() != Some(uplink) {
                    return None;
                }
                t.subnets.iter().find_map(|a| {
                    o.subnets
                        .iter()
                        .filter(|_| a.prefix.addr.is_ipv6() || !(t.snat && o.snat))
                        .find(|b| a.prefix.overlaps(&b.prefix))
                        .map(|b| (k, o, a, b))
                })
            });
        let Some((k, o, a, b)) = clash else {
            return Ok(());
        };
        if a.prefix.addr.is_ipv6() {
            return Err(self.err(
                format!("tenant {:?} (tenant[{i}]).subnet", t.name),
                a.prefix,
                format!(
                    "a subnet that does not overlap tenant {:?} (tenant[{k}])'s {} behind the \
                     same uplink {uplink}: IPv6 is not NATed, so replies from the uplink to an \
                     address both use could not be told apart (give them different IPv6 \
                     subnets or different uplinks)",
                    o.name, b.prefix
                ),
            ));
        }
        let without = if t.snat { &o.name } else { &t.name };
        Err(self.err(
            format!("tenant {:?} (tenant[{i}]).subnet", t.name),
            a.prefix,
            format!(
                "a subnet that does not overlap tenant {:?} (tenant[{k}])'s {} behind the same \
                 uplink {uplink} while tenant {without:?} has snat = false: replies from the \
                 uplink could not be told apart (turn snat on in both, so that their conntrack \
                 zones tell them apart, or give them different uplinks or subnets)",
                o.name, b.prefix
            ),
        ))
    }

    /// DHCP servers on two ports of one tenant share its subnet: with overlapping pools they
    /// would lease one address to two guests. Refused naming both.
    fn check_dhcp_pools(&self) -> Result<(), FileError> {
        let f = self.file;
        let tenant_of = |device: &str| {
            f.ports
                .iter()
                .find(|p| p.name == device)
                .and_then(|p| p.tenant.as_deref())
        };
        let dhcp = &f.services.dhcp;
        for (j, d) in dhcp.iter().enumerate() {
            let Some(tenant) = tenant_of(&d.device) else {
                continue;
            };
            let clash = dhcp[..j].iter().enumerate().find(|(_, o)| {
                tenant_of(&o.device) == Some(tenant)
                    && o.pool_start <= d.pool_end
                    && d.pool_start <= o.pool_end
            });
            if let Some((k, o)) = clash {
                return Err(self.err(
                    format!("services.dhcp[{j}] (device {})", d.device),
                    format!("{}-{}", d.pool_start, d.pool_end),
                    format!(
                        "a pool apart from services.dhcp[{k}]'s {}-{} (device {}, also in \
                         tenant {tenant}): two servers of one tenant would lease one address twice",
                        o.pool_start, o.pool_end, o.device
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_ports(&self) -> Result<(), FileError> {
        let f = self.file;
        let tenant_names: Vec<&str> = f.tenants.iter().map(|t| t.name.as_str()).collect();
        // Addresses claimed inside each tenant (or outside any): two guests of one tenant
        // cannot both own one.
        let mut claimed: BTreeMap<(Option<&str>, IpAddr), String> = BTreeMap::new();
        let mut macs: BTreeSet<(Option<&str>, String)> = BTreeSet::new();
        for (i, p) in f.ports.iter().enumerate() {
            let named = format!("port {:?} (port[{i}])", p.name);
            let tenant = match &p.tenant {
                Some(t) => Some(f.tenants.iter().find(|x| &x.name == t).ok_or_else(|| {
                    self.err(
                        format!("{named}.tenant"),
                        t,
                        format!("the name of a [[tenant]] ({})", list(&tenant_names)),
                    )
                })?),
                None => None,
            };
            for (j, a) in p.addresses.iter().enumerate() {
                let af = format!("{named}.addresses[{j}]");
                if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                    return Err(self.err(af, a, "a unicast address the guest sends from"));
                }
                if let Some(t) = tenant {
                    let inside = t.subnets.iter().find(|s| s.contains(*a));
                    match inside {
                        None => {
                            let subnets: Vec<String> =
                                t.subnets.iter().map(|s| s.prefix.to_string()).collect();
                            return Err(self.err(
                                af,
                                a,
                                format!(
                                    "an address inside one of tenant {}'s subnets ({})",
                                    t.name,
                                    list(&subnets)
                                ),
                            ));
                        }
                        Some(s) if s.gateway == *a => {
                            return Err(self.err(
                                af,
                                a,
                                format!("an address other than the tenant's gateway {}", s.gateway),
                            ));
                        }
                        Some(_) => {}
                    }
                }
                let key = (p.tenant.as_deref(), *a);
                if let Some(first) = claimed.insert(key, named.clone()) {
                    return Err(self.err(
                        af,
                        a,
                        format!("an address no other port of the tenant claims ({first} has it)"),
                    ));
                }
            }
            if let Some(mac) = p.mac
                && !macs.insert((p.tenant.as_deref(), mac.to_string()))
            {
                return Err(self.err(
                    format!("{named}.mac"),
                    mac,
                    "a MAC no other port of the tenant has",
                ));
            }
        }
        Ok(())
    }
}

fn list<S: AsRef<str>>(names: &[S]) -> String {
    if names.is_empty() {
        "none is defined".into()
    } else {
        names
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[agent]
memory_mib = 128

[[uplink]]
name = "up0"
spec = "packet:veth0"
mtu = 9000

[[tenant]]
name = "blue"
uplink = "up0"
subnet = [{ prefix = "10.1.0.0/24", gateway = "10.1.0.1" },
          { prefix = "fd01::/64", gateway = "fd01::1" }]
forward = [{ protocol = "tcp", port = 8080, to = "10.1.0.10:80" }]

[[tenant]]
name = "red"
snat = false
subnet = [{ prefix = "10.1.0.0/24", gateway = "10.1.0.1" }]

[[port]]
name = "vm1"
socket = "/run/knic/vm1.sock"
tenant = "blue"
mac = "52:54:00:00:01:01"
addresses = ["10.1.0.10", "fd01::10"]

[[port]]
name = "vm2"
socket = "/run/knic/vm2.sock"
tenant = "red"
addresses = ["10.1.0.10"]
mtu = 9000

[[address]]
device = "up0"
address = "192.0.2.2/24"

[[route]]
destination = "0.0.0.0/0"
via = "192.0.2.1"
device = "up0"
"#;

    fn p(text: &str) -> Result<FileConfig, FileError> {
        parse(Path::new("test.toml"), text)
    }

    /// The good file with `from` replaced by `to` (which must occur).
    fn with(from: &str, to: &str) -> Result<FileConfig, FileError> {
        assert!(GOOD.contains(from), "{from}");
        p(&GOOD.replacen(from, to, 1))
    }

    #[test]
    fn a_full_file_loads_with_defaults_filled() {
        let f = p(GOOD).unwrap();
        assert_eq!(f.tenants.len(), 2);
        assert_eq!(f.tenants[0].table, Some(FIRST_TENANT_TABLE));
        assert_eq!(f.tenants[1].table, Some(FIRST_TENANT_TABLE + 1));
        assert!(f.tenants[0].snat);
        assert!(!f.tenants[1].snat);
        assert_eq!(f.ports[1].mtu, Some(9000));
        let c = f.agent_config(None, None);
        assert_eq!(c.memory_bytes, 128 << 20);
        assert_eq!(c.api_socket, PathBuf::from(DEFAULT_API_SOCKET));
        assert_eq!(c.state_dir, None);
        assert_eq!(p("").unwrap(), FileConfig::default());
    }

    #[test]
    fn the_deploy_example_loads() {
        let text = include_str!("../../../deploy/config/knic-agent.toml");
        let f = p(text).unwrap();
        assert_eq!(f.tenants.len(), 2);
        assert_eq!(f.ports.len(), 3);
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e = with("snat = false", "snat = false\ncolour = 1").unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, FileError::Syntax { .. }), "{s}");
        assert!(s.contains("colour") && s.contains("line"), "{s}");
        let e = with("[agent]", "[agnet]").unwrap_err();
        assert!(e.to_string().contains("agnet"), "{e}");
    }

    #[test]
    fn bad_addresses_are_refused_with_field_and_value() {
        let e = with("\"10.1.0.10\", \"fd01::10\"", "\"10.1.0.300\"").unwrap_err();
        assert!(e.to_string().contains("10.1.0.300"), "{e}");
        let e = with("\"10.1.0.10\", \"fd01::10\"", "\"10.2.0.10\"").unwrap_err();
        assert_eq!(e.field(), Some("port \"vm1\" (port[0]).addresses[0]"));
        assert!(e.to_string().contains("10.1.0.0/24, fd01::/64"), "{e}");
        let e = with("prefix = \"10.1.0.0/24\"", "prefix = \"10.1.0.5/24\"").unwrap_err();
        assert!(e.to_string().contains("like 10.1.0.0/24"), "{e}");
        let e = with("gateway = \"10.1.0.1\"", "gateway = \"10.9.0.1\"").unwrap_err();
        assert_eq!(
            e.field(),
            Some("tenant \"blue\" (tenant[0]).subnet[0].gateway")
        );
        let e = with("\"10.1.0.10\", \"fd01::10\"", "\"10.1.0.1\"").unwrap_err();
        assert!(e.to_string().contains("gateway 10.1.0.1"), "{e}");
        let e = with("mtu = 9000", "mtu = 10").unwrap_err();
        assert!(e.to_string().contains("68 to 65535"), "{e}");
    }

    #[test]
    fn overlapping_definitions_are_refused() {
        // The same tenant twice.
        let e = with("name = \"red\"", "name = \"blue\"").unwrap_err();
        assert_eq!(e.field(), Some("tenant[1].name"));
        // Two overlapping subnets in one tenant.
        let e = with(
            "prefix = \"fd01::/64\", gateway = \"fd01::1\"",
            "prefix = \"10.1.0.128/25\", gateway = \"10.1.0.129\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        // One address claimed by two ports of one tenant.
        let e = with("tenant = \"red\"", "tenant = \"blue\"").unwrap_err();
        assert!(e.to_string().contains("no other port of the tenant"), "{e}");
        // One table for two tenants.
        let e = with("snat = false", "snat = false\ntable = 1000").unwrap_err();
        assert!(e.to_string().contains("tenant[0] has it"), "{e}");
        // A port name taken by an uplink; a socket used twice.
        let e = with("name = \"vm2\"", "name = \"up0\"").unwrap_err();
        assert_eq!(e.field(), Some("port[1].name"));
        let e = with("/run/knic/vm2.sock", "/run/knic/vm1.sock").unwrap_err();
        assert_eq!(e.field(), Some("port[1].socket"));
    }

    #[test]
    fn state_dir_is_a_key_the_command_line_overrides() {
        let f = with(
            "memory_mib = 128",
            "memory_mib = 128\nstate_dir = \"/var/lib/knic\"",
        )
        .unwrap();
        let file_dir = Some(PathBuf::from("/var/lib/knic"));
        assert_eq!(f.agent_config(None, None).state_dir, file_dir);
        let flag = PathBuf::from("/run/knic/state");
        assert_eq!(
            f.agent_config(None, Some(flag.clone())).state_dir,
            Some(flag)
        );
        for bad in ["", "var/lib/knic", "./state"] {
            let e = with(
                "memory_mib = 128",
                &format!("memory_mib = 128\nstate_dir = {bad:?}"),
            )
            .unwrap_err();
            assert_eq!(e.field(), Some("agent.state_dir"), "{e}");
            assert!(e.to_string().contains("an absolute directory"), "{e}");
        }
        // An existing file is not a directory.
        let file = std::env::current_exe().unwrap();
        let e = with(
            "memory_mib = 128",
            &format!(
                "memory_mib = 128\nstate_dir = {:?}",
                file.display().to_string()
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("is not one"), "{e}");
        let e = with("memory_mib = 128", "memory_mib = 128\nstate_dir = 7").unwrap_err();
        assert!(e.to_string().contains("state_dir"), "{e}");
    }

    #[test]
    fn overlapping_tenants_without_snat_behind_one_uplink_are_refused_naming_both() {
        // red shares blue's 10.1.0.0/24; behind up0 too, without SNAT, replies clash.
        let e = with("name = \"red\"\n", "name = \"red\"\nuplink = \"up0\"\n").unwrap_err();
        let s = e.to_string();
        assert_eq!(e.field(), Some("tenant \"red\" (tenant[1]).subnet"), "{s}");
        assert!(
            s.contains("tenant \"blue\" (tenant[0])") && s.contains("10.1.0.0/24"),
            "{s}"
        );
        assert!(s.contains("tenant \"red\" has snat = false"), "{s}");
        // The same the other way round: blue without SNAT, red with it.
        let text = GOOD
            .replacen("snat = false\n", "uplink = \"up0\"\n", 1)
            .replacen("name = \"blue\"\n", "name = \"blue\"\nsnat = false\n", 1);
        let e = p(&text).unwrap_err();
        assert!(
            e.to_string().contains("tenant \"blue\" has snat = false"),
            "{e}"
        );
        // Both with SNAT behind one uplink, or without an uplink in common: accepted.
        p(&GOOD.replacen("snat = false\n", "uplink = \"up0\"\n", 1)).unwrap();
        let two_uplinks = GOOD.replacen(
            "[[tenant]]\nname = \"red\"\n",
            "[[uplink]]\nname = \"up1\"\nspec = \"packet:veth1\"\n\n\
                 [[tenant]]\nname = \"red\"\nuplink = \"up1\"\n",
            1,
        );
        p(&two_uplinks).unwrap();
        // Different subnets behind one uplink without SNAT: accepted.
        let apart = GOOD
            .replacen("name = \"red\"\n", "name = \"red\"\nuplink = \"up0\"\n", 1)
            .replacen(
                "subnet = [{ prefix = \"10.1.0.0/24\", gateway = \"10.1.0.1\" }]",
                "subnet = [{ prefix = \"10.2.0.0/24\", gateway = \"10.2.0.1\" }]",
                1,
            )
            .replace(
                "addresses = [\"10.1.0.10\"]\nmtu",
                "addresses = [\"10.2.0.10\"]\nmtu",
            );
        p(&apart).unwrap();
    }

    #[test]
    fn overlapping_ipv6_subnets_behind_one_uplink_are_refused_even_with_snat() {
        // Both with SNAT behind up0, and red given blue's fd01::/64 too.
        let text = GOOD
            .replacen("snat = false\n", "uplink = \"up0\"\n", 1)
            .replacen(
                "subnet = [{ prefix = \"10.1.0.0/24\", gateway = \"10.1.0.1\" }]\n",
                "subnet = [{ prefix = \"10.1.0.0/24\", gateway = \"10.1.0.1\" },\n          \
             { prefix = \"fd01::/64\", gateway = \"fd01::1\" }]\n",
                1,
            );
        assert!(text.matches("fd01::/64").count() == 2, "{text}");
        let e = p(&text).unwrap_err();
        let s = e.to_string();
        assert_eq!(e.field(), Some("tenant \"red\" (tenant[1]).subnet"), "{s}");
        assert!(
            s.contains("fd01::/64") && s.contains("IPv6 is not NATed"),
            "{s}"
        );
        // Their own IPv6 subnets: accepted.
        p(&text.replacen(
            "{ prefix = \"fd01::/64\", gateway = \"fd01::1\" }]\n\n[[port]]",
            "{ prefix = \"fd02::/64\", gateway = \"fd02::1\" }]\n\n[[port]]",
            1,
        ))
        .unwrap();
    }

    #[test]
    fn overlapping_dhcp_pools_in_one_tenant_are_refused_naming_both() {
        let port3 =
            "[[port]]\nname = \"vm3\"\nsocket = \"/run/knic/vm3.sock\"\ntenant = \"blue\"\n\n";
        // The good file with a third port in blue and two DHCP servers.
        let mk = |a: &str, b: &str| {
            format!(
                "{GOOD}\n{port3}[services]\ndhcp = [\
                 {{ device = \"vm1\", pool_start = \"10.1.0.100\", pool_end = \"{a}\" }},\
                 {{ device = \"vm3\", pool_start = \"{b}\", pool_end = \"10.1.0.250\" }}]\n"
            )
        };
        let e = p(&mk("10.1.0.150", "10.1.0.150")).unwrap_err();
        let s = e.to_string();
        assert_eq!(e.field(), Some("services.dhcp[1] (device vm3)"), "{s}");
        assert!(
            s.contains("services.dhcp[0]") && s.contains("device vm1"),
            "{s}"
        );
        p(&mk("10.1.0.150", "10.1.0.151")).unwrap();
    }

    #[test]
    fn missing_references_are_refused() {
        let e = with("uplink = \"up0\"", "uplink = \"up9\"").unwrap_err();
        assert_eq!(e.field(), Some("tenant \"blue\" (tenant[0]).uplink"));
        assert!(e.to_string().contains("an [[uplink]] (up0)"), "{e}");
        let e = with("tenant = \"red\"", "tenant = \"green\"").unwrap_err();
        assert!(e.to_string().contains("(blue, red)"), "{e}");
        let e = with("device = \"up0\"", "device = \"up1\"").unwrap_err();
        assert_eq!(e.field(), Some("address[0].device"));
        let e = with("to = \"10.1.0.10:80\"", "to = \"10.7.0.10:80\"").unwrap_err();
        assert!(
            e.to_string().contains("inside one of the tenant's subnets"),
            "{e}"
        );
    }

    #[test]
    fn bad_names_and_numbers_are_refused() {
        let e = with("name = \"blue\"", "name = \"a-very-long-tenant\"").unwrap_err();
        assert!(e.to_string().contains("1 to 11"), "{e}");
        let e = with("memory_mib = 128", "memory_mib = 1").unwrap_err();
        assert_eq!(e.field(), Some("agent.memory_mib"));
        let e = with("spec = \"packet:veth0\"", "spec = \"vde:veth0\"").unwrap_err();
        assert!(e.to_string().contains("xdp:IFNAME"), "{e}");
        let e = with("snat = false", "snat = \"no\"").unwrap_err();
        assert!(e.to_string().contains("snat"), "{e}");
    }
}
