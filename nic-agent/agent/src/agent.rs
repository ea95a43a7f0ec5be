//! The agent's state: its kernel, ports, uplinks and what it configured, and the operations
//! the control API maps to.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use lkl_netstack::{DropReason, NetDeviceStats, QueuePairStats};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{info, warn};
use vmm_sys_util::eventfd::EventFd;

use crate::AgentError;
use crate::api::Request;
use crate::config::{AddressConfig, PortConfig, RouteConfig, TenantConfig, UplinkConfig};
use crate::config_file::FIRST_TENANT_TABLE;
use crate::net::nft::{self, Batch};
use crate::net::tenant::uplink_gateway;
use crate::net::{Tenant, antispoof, conntrack, nat};
use crate::port::{Port, Uplink};
use crate::seam::SeamSnapshot;
use crate::services::{ServiceLink, Services, ServicesConfig};
use crate::stack::{DeviceHandle, StackError, StackInstance};
use crate::state::{RunningConfig, StateFile};

/// virtio-net feature bits (virtio 1.2 §5.1.3) named in listings.
const FEATURE_NAMES: [(u32, &str); 10] = [
    (0, "csum"),
    (1, "guest_csum"),
    (7, "guest_tso4"),
    (8, "guest_tso6"),
    (9, "guest_ecn"),
    (11, "host_tso4"),
    (12, "host_tso6"),
    (13, "host_ecn"),
    (15, "mrg_rxbuf"),
    (29, "event_idx"),
];

fn feature_names(bits: u64) -> Vec<&'static str> {
    FEATURE_NAMES
        .iter()
        .filter(|(b, _)| bits & (1u64 << b) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// The agent.
#[derive(Debug)]
pub struct Agent {
    stack: Box<dyn StackInstance>,
    ports: Vec<Port>,
    uplinks: Vec<Uplink>,
    addresses: Vec<AddressConfig>,
    routes: Vec<RouteConfig>,
    tenants: Vec<Tenant>,
    /// Written by the ports' seams when a guest's state changes.
    guest_events: Arc<EventFd>,
    /// Numbers made-up MACs; never reused, so a re-added port gets new ones.
    next_seq: u16,
    /// Where the configuration came from (`--config`), for reloads.
    config_file: Option<std::path::PathBuf>,
    /// Whether the NAT table exists in the library kernel.
    nat_table: bool,
    /// DHCP servers and router advertisements.
    services: Services,
    /// Where what the agent runs is kept across restarts (`--state-dir`), if anywhere.
    state: Option<StateFile>,
}

/// What a reload changes, worked out before anything is touched.
#[derive(Debug, Default)]
struct ReloadPlan {
    remove_ports: Vec<String>,
    remove_tenants: Vec<String>,
    add_uplinks: Vec<UplinkConfig>,
    add_tenants: Vec<TenantConfig>,
    add_ports: Vec<PortConfig>,
    add_addresses: Vec<AddressConfig>,
    add_routes: Vec<RouteConfig>,
}

impl Agent {
    pub fn new(stack: Box<dyn StackInstance>, guest_events: Arc<EventFd>) -> Agent {
        Agent {
            stack,
            ports: Vec::new(),
            uplinks: Vec::new(),
            addresses: Vec::new(),
            routes: Vec::new(),
            tenants: Vec::new(),
            guest_events,
            next_seq: 1,
            config_file: None,
            nat_table: false,
            services: Services::default(),
            state: None,
        }
    }

    /// Keep what the agent runs in `state` from now on (see `state`).
    pub fn set_state_file(&mut self, state: Option<StateFile>) {
        self.state = state;
    }

    /// What the agent runs now, in creation order: what its state file holds.
    pub fn running_config(&self) -> RunningConfig {
        RunningConfig {
            uplinks: self.uplinks.iter().map(|u| u.config.clone()).collect(),
            tenants: self.tenants.iter().map(|t| t.config.clone()).collect(),
            ports: self.ports.iter().map(|p| p.config.clone()).collect(),
            addresses: self.addresses.clone(),
            routes: self.routes.clone(),
        }
    }

    /// Creates everything in `add`, kind by kind in dependency order (uplinks, tenants,
    /// ports, addresses, routes), then leaks the tenants' routes to their uplinks.
    pub fn add_all(&mut self, add: RunningConfig) -> Result<(), AgentError> {
        for u in add.uplinks {
            self.add_uplink(u)?;
        }
        for t in add.tenants {
            self.add_tenant(t)?;
        }
        for p in add.ports {
            self.add_port(p)?;
        }
        for a in add.addresses {
            self.add_address(a)?;
        }
        for r in add.routes {
            self.add_route(r)?;
        }
        self.connect_uplinks()
    }

    /// Writes the state file (if there is one) with what runs now.
    pub fn save_state(&self) -> Result<(), AgentError> {
        match &self.state {
            Some(file) => Ok(file.save(&self.running_config())?),
            None => Ok(()),
        }
    }

    /// The file `reload` re-reads.
    pub fn set_config_file(&mut self, path: Option<std::path::PathBuf>) {
        self.config_file = path;
    }

    /// Re-reads the configuration file and applies the difference. The whole file is
    /// checked, and every change the agent cannot make while running is refused, before
    /// anything changes: a refused reload leaves everything as it was.
    pub fn reload(&mut self) -> Result<Value, AgentError> {
        let path = self.config_file.clone().ok_or(AgentError::NoConfigFile)?;
        let file = crate::config_file::load(&path)?;
        let plan = self.plan_reload(&file)?;
        let summary = json!({
            "file": path,
            "ports_removed": plan.remove_ports,
            "tenants_removed": plan.remove_tenants,
            "uplinks_added": plan.add_uplinks.iter().map(|u| &u.name).collect::<Vec<_>>(),
            "tenants_added": plan.add_tenants.iter().map(|t| &t.name).collect::<Vec<_>>(),
            "ports_added": plan.add_ports.iter().map(|p| &p.name).collect::<Vec<_>>(),
            "addresses_added": plan.add_addresses.len(),
            "routes_added": plan.add_routes.len(),
        });
        if file.agent.forwarding {
            self.stack.set_sysctl("net.ipv4.ip_forward", "1")?;
            self.stack.set_sysctl("net.ipv6.conf.all.forwarding", "1")?;
        } else {
            self.stack.set_sysctl("net.ipv4.ip_forward", "0")?;
            self.stack.set_sysctl("net.ipv6.conf.all.forwarding", "0")?;
        }
        for p in &plan.remove_ports {
            self.remove_port(p)?;
        }
        for t in &plan.remove_tenants {
            self.remove_tenant(t)?;
        }
        self.add_all(RunningConfig {
            uplinks: plan.add_uplinks,
            tenants: plan.add_tenants,
            ports: plan.add_ports,
            addresses: plan.add_addresses,
            routes: plan.add_routes,
        })?;
        Ok(summary)
    }

    fn plan_reload(&self, file: &crate::config_file::FileConfig) -> Result<ReloadPlan, AgentError> {
        let refuse = |what: String, why: &str| AgentError::ReloadRefused {
            what,
            why: why.to_owned(),
        };
        let mut plan = ReloadPlan::default();
        for u in &self.uplinks {
            if !file.uplinks.contains(&u.config) {
                return Err(refuse(
                    format!("uplink {}", u.config.name),
                    "changing or removing an uplink needs a restart of the agent",
                ));
            }
        }
        plan.add_uplinks = file
            .uplinks
            .iter()
            .filter(|u| !self.uplinks.iter().any(|x| x.config.name == u.name))
            .cloned()
            .collect();
        for t in &self.tenants {
            if !file.tenants.contains(&t.config) {
                plan.remove_tenants.push(t.config.name.clone());
            }
        }
        plan.add_tenants = file
            .tenants
            .iter()
            .filter(|t| {
                plan.remove_tenants.contains(&t.name)
                    || !self.tenants.iter().any(|x| x.config.name == t.name)
            })
            .cloned()
            .collect();
        for p in &self.ports {
            let gone = !file.ports.contains(&p.config)
                || p.config
                    .tenant
                    .as_ref()
                    .is_some_and(|t| plan.remove_tenants.contains(t));
            if gone {
                plan.remove_ports.push(p.config.name.clone());
            }
        }
        plan.add_ports = file
            .ports
            .iter()
            .filter(|p| {
                plan.remove_ports.contains(&p.name)
                    || !self.ports.iter().any(|x| x.config.name == p.name)
            })
            .cloned()
            .collect();
        // Addresses and routes: the agent adds, it does not take away (yet).
        let kept = |device: &str| !plan.remove_ports.iter().any(|p| p == device);
        for a in &self.addresses {
            if kept(&a.device) && !file.addresses.contains(a) {
                return Err(refuse(
                    format!("address {} of {}", a.address, a.device),
                    "removing an address needs a restart of the agent (or removing its port)",
                ));
            }
        }
        for r in &self.routes {
            if !file.routes.contains(r) {
                return Err(refuse(
                    format!("route to {}", r.destination),
                    "removing a route needs a restart of the agent",
                ));
            }
        }
        plan.add_addresses = file
            .addresses
            .iter()
            .filter(|a| !kept(&a.device) || !self.addresses.contains(a))
            .cloned()
            .collect();
        plan.add_routes = file
            .routes
            .iter()
            .filter(|r| !self.routes.contains(r))
            .cloned()
            .collect();
        Ok(plan)
    }

    pub fn stack(&self) -> &dyn StackInstance {
        self.stack.as_ref()
    }

    fn seq(&mut self) -> u16 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        s
    }

    fn name_taken(&self, name: &str) -> bool {
        self.ports.iter().any(|p| p.config.name == name)
            || self.uplinks.iter().any(|u| u.config.name == name)
    }

    /// The library interface of port or uplink `name`.
    fn device(&self, name: &str) -> Result<&DeviceHandle, AgentError> {
        self.ports
            .iter()
            .find(|p| p.config.name == name)
            .map(|p| &p.device)
            .or_else(|| {
                self.uplinks
                    .iter()
                    .find(|u| u.config.name == name)
                    .map(|u| &u.device)
            })
            .ok_or_else(|| AgentError::UnknownDevice {
                name: name.to_owned(),
                known: self.device_names(),
            })
    }

    fn device_names(&self) -> String {
        let names: Vec<&str> = self
            .ports
            .iter()
            .map(|p| p.config.name.as_str())
            .chain(self.uplinks.iter().map(|u| u.config.name.as_str()))
            .collect();
        if names.is_empty() {
            "none yet".into()
        } else {
            names.join(", ")
        }
    }

    pub fn add_port(&mut self, config: PortConfig) -> Result<Value, AgentError> {
        if self.name_taken(&config.name) {
            return Err(AgentError::NameTaken(config.name));
        }
        let same_front = |p: &&Port| match (&config.tap, &p.config.tap) {
            // A TAP name is unique within its namespace (pods all have an eth0).
            (Some(a), Some(b)) => a == b && p.config.netns == config.netns,
            (None, None) => p.config.socket == config.socket,
            _ => false,
        };
        if let Some(p) = self.ports.iter().find(same_front) {
            return Err(AgentError::SocketTaken {
                front: match &config.tap {
                    Some(t) => match &config.netns {
                        Some(ns) => format!("TAP {t} in {}", ns.display()),
                        None => format!("TAP {t}"),
                    },
                    None => format!("socket {}", config.socket.display()),
                },
                port: p.config.name.clone(),
            });
        }
        let tenant = match &config.tenant {
            Some(t) => Some(self.tenant(t)?.clone()),
            None => None,
        };
        let seq = self.seq();
        let port = Port::start(config, seq, self.stack.as_ref(), &self.guest_events)?;
        if let Some(t) = &tenant
            && let Err(e) = self.join_tenant(&port, t)
        {
            // A port half in its tenant is not served: its device goes with it.
            let mut port = port;
            if let Err(r) = self.stack.remove_device(&port.device) {
                warn!(port = %port.config.name, "cannot remove the device of a failed port: {r}");
            }
            port.stop();
            return Err(e);
        }
        let info = self.port_info(&port);
        let name = port.config.name.clone();
        let in_tenant = tenant.is_some();
        self.ports.push(port);
        // Its conntrack zone: until the rule is in, its traffic would be in the default zone.
        if in_tenant && let Err(e) = self.apply_nat() {
            if let Err(r) = self.remove_port(&name) {
                warn!(port = %name, "cannot remove a port whose zone was refused: {r}");
            }
            return Err(e);
        }
        Ok(info)
    }

    fn tenant(&self, name: &str) -> Result<&Tenant, AgentError> {
        self.tenants
            .iter()
            .find(|t| t.config.name == name)
            .ok_or_else(|| AgentError::UnknownTenant {
                name: name.to_owned(),
                known: list(self.tenants.iter().map(|t| t.config.name.as_str())),
            })
    }

    /// Puts a port's library interface into its tenant's VRF: enslaved, the subnets'
    /// gateways on it, a host route per guest address (those it declares and its SLAAC
    /// address in each of the tenant's /64 subnets: the addresses its anti-spoofing rules
    /// let the guest use), proxy ARP on. Without the host routes the tenant's table would
    /// send a subnet's traffic to whichever of its ports holds the subnet's route first.
    fn join_tenant(&self, port: &Port, tenant: &Tenant) -> Result<(), AgentError> {
        let ifname = &port.device.ifname;
        let stack = self.stack.as_ref();
        stack.set_link_master(ifname, Some(&tenant.vrf))?;
        stack.set_link_up(ifname, true)?;
        for s in &tenant.config.subnets {
            stack.add_address(ifname, s.gateway, s.prefix.prefix_len)?;
        }
        let slaac_prefixes: Vec<_> = tenant
            .config
            .subnets
            .iter()
            .filter(|s| s.prefix.prefix_len == 64)
            .filter_map(|s| match s.prefix.addr {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            })
            .collect();
        let slaac = slaac_prefixes
            .iter()
            .map(|p| IpAddr::V6(antispoof::eui64(*p, port.guest_mac.0)))
            .filter(|a| !port.config.addresses.contains(a));
        for a in port.config.addresses.iter().copied().chain(slaac) {
            let host = if a.is_ipv4() { 32 } else { 128 };
            stack.add_route_in_table(tenant.table, a, host, None, Some(ifname))?;
        }
        stack.set_sysctl(&format!("net.ipv4.conf.{ifname}.proxy_arp"), "1")?;
        let guard = antispoof::Guard {
            port: port.config.name.clone(),
            ifname: ifname.clone(),
            mac: port.guest_mac.0,
            addresses: port.config.addresses.clone(),
            slaac_prefixes,
        };
        let mut batch = Batch::new();
        antispoof::install(&mut batch, &guard);
        let (bytes, acks) = batch.finish();
        stack.netfilter(
            &format!(
                "installing the anti-spoofing rules of port {}",
                port.config.name
            ),
            &bytes,
            acks,
        )?;
        Ok(())
    }

    /// Drops by anti-spoofing, per port of a tenant and reason (the counter objects of the
    /// ports' nf_tables tables, as the kernel reports them).
    fn antispoof_counters(&self) -> Result<Value, AgentError> {
        let replies = self.stack.netfilter(
            "reading the anti-spoofing counters",
            &nft::get_counters(nft::NFPROTO_NETDEV),
            0,
        )?;
        let mut ports: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for r in &replies {
            let Some(c) = nft::parse_counter(&r.payload) else {
                continue;
            };
            let Some(port) = c.table.strip_prefix(antispoof::TABLE_PREFIX) else {
                continue;
            };
            ports
                .entry(port.to_owned())
                .or_default()
                .insert(c.name, json!({ "packets": c.packets, "bytes": c.bytes }));
        }
        Ok(Value::Array(
            ports
                .into_iter()
                .map(|(port, drops)| json!({ "port": port, "drops": drops }))
                .collect(),
        ))
    }

    /// Creates a tenant's VRF (its ports join it as they are added).
    pub fn add_tenant(&mut self, config: TenantConfig) -> Result<Value, AgentError> {
        if self.tenants.iter().any(|t| t.config.name == config.name) {
            return Err(AgentError::TenantTaken(config.name));
        }
        if let Some(u) = &config.uplink {
            self.device(u)?;
        }
        let table = match config.table {
            Some(t) => t,
            None => (FIRST_TENANT_TABLE..)
                .find(|n| !self.tenants.iter().any(|t| t.table == *n))
                .unwrap_or(FIRST_TENANT_TABLE),
        };
        if let Some(t) = self.tenants.iter().find(|t| t.table == table) {
            return Err(AgentError::TableTaken {
                table,
                tenant: t.config.name.clone(),
            });
        }
        // The lowest zone no tenant has; 0 is conntrack's default zone, not a tenant's.
        let zone = (1..=u16::MAX)
            .find(|z| !self.tenants.iter().any(|t| t.zone == *z))
            .ok_or(AgentError::NoFreeZone)?;
        let tenant = Tenant::new(config, table, zone);
        self.stack.add_vrf(&tenant.vrf, table)?;
        let info = tenant.info(&[]);
        self.tenants.push(tenant);
        Ok(info)
    }

    /// Deletes a tenant's VRF; refused while ports belong to it.
    pub fn remove_tenant(&mut self, name: &str) -> Result<Value, AgentError> {
        let i = self
            .tenants
            .iter()
            .position(|t| t.config.name == name)
            .ok_or_else(|| AgentError::UnknownTenant {
                name: name.to_owned(),
                known: list(self.tenants.iter().map(|t| t.config.name.as_str())),
            })?;
        let ports = self.tenant_ports(name);
        if !ports.is_empty() {
            return Err(AgentError::TenantInUse {
                name: name.to_owned(),
                ports: ports.join(", "),
            });
        }
        self.stack.delete_link(&self.tenants[i].vrf)?;
        let tenant = self.tenants.remove(i);
        if tenant.connected
            && let Err(e) = self.stack.delete_fwmark_rule(&tenant.fwmark_rule())
        {
            warn!(tenant = %name, "{e}");
        }
        self.apply_nat()?;
        Ok(json!({ "removed": name }))
    }

    fn tenant_ports(&self, name: &str) -> Vec<&str> {
        self.ports
            .iter()
            .filter(|p| p.config.tenant.as_deref() == Some(name))
            .map(|p| p.config.name.as_str())
            .collect()
    }

    /// Leaks each tenant's routes to and from its uplink (see `net::tenant`), once the
    /// uplinks' addresses and routes exist. Idempotent per tenant.
    pub fn connect_uplinks(&mut self) -> Result<(), AgentError> {
        for i in 0..self.tenants.len() {
            let Some(uplink) = self.tenants[i].config.uplink.clone() else {
                continue;
            };
            if self.tenants[i].connected {
                continue;
            }
            let ifname = self.device(&uplink)?.ifname.clone();
            let t = &self.tenants[i];
            for ipv6 in [false, true] {
                if !t
                    .config
                    .subnets
                    .iter()
                    .any(|s| s.prefix.addr.is_ipv6() == ipv6)
                {
                    continue;
                }
                let any = if ipv6 {
                    IpAddr::from([0u16; 8])
                } else {
                    IpAddr::from([0u8; 4])
                };
                let gw = uplink_gateway(&self.routes, &uplink, ipv6);
                self.stack
                    .add_route_in_table(t.table, any, 0, gw, Some(&ifname))?;
            }
            let others = self
                .tenants
                .iter()
                .enumerate()
                .filter(|(j, o)| *j != i && o.config.uplink.as_deref() == Some(&uplink))
                .map(|(_, o)| &o.config);
            let mut overlapping = others.clone().filter(|o| t.overlaps(o));
            // Told apart by their conntrack zones (net::tenant) when both masquerade:
            // replies to the shared subnets come back by their marks alone.
            if let Some(o) = overlapping.clone().find(|o| !(t.config.snat && o.snat)) {
                warn!(
                    tenant = %t.config.name, other = %o.name, uplink = %uplink,
                    "subnets overlap another tenant's behind the same uplink and one of \
                     them has snat off: replies from the uplink to an address both use \
                     cannot be told apart, so the tenant is not connected to its uplink"
                );
                continue;
            }
            if let Some(o) = overlapping.find(|o| t.overlaps_ipv6(o)) {
                warn!(
                    tenant = %t.config.name, other = %o.name, uplink = %uplink,
                    "IPv6 subnets overlap another tenant's behind the same uplink: \
                     IPv6 is not NATed, so replies to an address both use cannot be \
                     told apart and their IPv6 does not reach the uplink"
                );
            }
            let routed = t.unshared_subnets(others);
            for s in &routed {
                self.stack
                    .add_route(s.addr, s.prefix_len, None, Some(&t.vrf))?;
            }
            self.stack.add_fwmark_rule(&t.fwmark_rule())?;
            self.tenants[i].return_routes = routed;
            self.tenants[i].connected = true;
        }
        self.apply_nat()
    }

    /// Rebuilds the NAT table: every tenant's ports' conntrack zone and, for the tenants
    /// connected to their uplink, the reply marks, masquerade where `snat` is on and their
    /// DNAT forwards. Called whenever tenants, their ports or their connection change.
    fn apply_nat(&mut self) -> Result<(), AgentError> {
        let mut nat = Vec::with_capacity(self.tenants.len());
        for t in &self.tenants {
            let uplink_ifname = match (&t.config.uplink, t.connected) {
                (Some(u), true) => Some(self.device(u)?.ifname.as_str()),
                _ => None,
            };
            nat.push(nat::TenantNat {
                tenant: &t.config,
                zone: t.zone,
                port_ifnames: self
                    .ports
                    .iter()
                    .filter(|p| p.config.tenant.as_ref() == Some(&t.config.name))
                    .map(|p| p.device.ifname.as_str())
                    .collect(),
                uplink_ifname,
            });
        }
        if nat.is_empty() && !self.nat_table {
            return Ok(());
        }
        let (bytes, acks) = nat::replace(&nat, self.nat_table).finish();
        self.stack
            .netfilter("installing the NAT rules", &bytes, acks)?;
        self.nat_table = true;
        Ok(())
    }

    fn nat_info(&self) -> Value {
        let mut out = Vec::new();
        for t in &self.tenants {
            let Some(uplink) = &t.config.uplink else {
                continue;
            };
            if t.config.snat {
                for s in t.config.subnets.iter().filter(|s| s.prefix.addr.is_ipv4()) {
                    out.push(json!({
                        "tenant": t.config.name, "kind": "snat", "from": s.prefix,
                        "uplink": uplink, "applied": t.connected,
                    }));
                }
            }
            for f in &t.config.forwards {
                out.push(json!({
                    "tenant": t.config.name, "kind": "dnat", "protocol": f.protocol,
                    "port": f.port, "to": f.to, "uplink": uplink, "applied": t.connected,
                }));
            }
        }
        Value::Array(out)
    }

    fn conntrack(&self) -> Result<Value, AgentError> {
        let replies =
            self.stack
                .netfilter("reading the conntrack table", &conntrack::dump_request(), 0)?;
        Ok(Value::Array(
            replies
                .iter()
                .filter_map(|r| conntrack::parse(&r.payload))
                .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
                .collect(),
        ))
    }

    fn tenants_info(&self) -> Value {
        Value::Array(
            self.tenants
                .iter()
                .map(|t| t.info(&self.tenant_ports(&t.config.name)))
                .collect(),
        )
    }

    pub fn remove_port(&mut self, name: &str) -> Result<Value, AgentError> {
        let i = self
            .ports
            .iter()
            .position(|p| p.config.name == name)
            .ok_or_else(|| AgentError::UnknownDevice {
                name: name.to_owned(),
                known: self.device_names(),
            })?;
        if self.ports[i].config.tenant.is_some() {
            let mut batch = Batch::new();
            antispoof::remove(&mut batch, name);
            let (bytes, acks) = batch.finish();
            if let Err(e) =
                self.stack
                    .netfilter("removing a port's anti-spoofing rules", &bytes, acks)
            {
                warn!(port = %name, "{e}");
            }
        }
        // The library device goes first: a kernel that cannot remove it keeps the port
        // whole (still served) rather than leaving a device with nothing behind it.
        self.stack.remove_device(&self.ports[i].device)?;
        let mut port = self.ports.remove(i);
        port.stop();
        // A pod's TAP was kept for restarts; a removed port's goes now.
        if let (Some(netns), Some(tap)) = (&port.config.netns, &port.config.tap)
            && let Err(e) = knic_uplink::delete_tap_in(netns, tap)
        {
            warn!(port = %name, netns = %netns.display(), "cannot delete its TAP: {e}");
        }
        self.forget_device(name);
        // Its zone rule goes too (a later device may get its interface name); a failure
        // leaves a rule for a gone interface, replaced with the next rebuild.
        if port.config.tenant.is_some()
            && let Err(e) = self.apply_nat()
        {
            warn!(port = %name, "{e}");
        }
        Ok(json!({ "removed": name }))
    }

    pub fn add_uplink(&mut self, config: UplinkConfig) -> Result<Value, AgentError> {
        config.validate()?;
        if self.name_taken(&config.name) {
            return Err(AgentError::NameTaken(config.name));
        }
        let seq = self.seq();
        let uplink = Uplink::open(config, seq, self.stack.as_ref())?;
        let info = self.uplink_info(&uplink);
        self.uplinks.push(uplink);
        Ok(info)
    }

    /// Removes an uplink that no tenant leaves by: its library device (with its addresses
    /// and routes, in the kernel and in what the agent lists) and its host side.
    pub fn remove_uplink(&mut self, name: &str) -> Result<Value, AgentError> {
        let i = self
            .uplinks
            .iter()
            .position(|u| u.config.name == name)
            .ok_or_else(|| AgentError::UnknownDevice {
                name: name.to_owned(),
                known: self.device_names(),
            })?;
        if let Some(t) = self
            .tenants
            .iter()
            .find(|t| t.config.uplink.as_deref() == Some(name))
        {
            return Err(AgentError::UplinkInUse {
                name: name.to_owned(),
                tenant: t.config.name.clone(),
            });
        }
        self.stack.remove_device(&self.uplinks[i].device)?;
        self.uplinks.remove(i);
        self.forget_device(name);
        Ok(json!({ "removed": name }))
    }

    /// Drops what the agent lists (and saves) on a device the kernel just removed with its
    /// addresses and routes, so neither a list nor a restart from the state file names it.
    fn forget_device(&mut self, name: &str) {
        self.addresses.retain(|a| a.device != name);
        self.routes.retain(|r| r.device.as_deref() != Some(name));
    }

    pub fn add_address(&mut self, address: AddressConfig) -> Result<Value, AgentError> {
        let ifname = self.device(&address.device)?.ifname.clone();
        self.stack
            .add_address(&ifname, address.address.addr, address.address.prefix_len)?;
        let v = json!({ "device": address.device, "ifname": ifname, "address": address.address });
        self.addresses.push(address);
        Ok(v)
    }

    pub fn add_route(&mut self, route: RouteConfig) -> Result<Value, AgentError> {
        route.validate()?;
        let ifname = match &route.device {
            Some(d) => Some(self.device(d)?.ifname.clone()),
            None => None,
        };
        self.stack.add_route(
            route.destination.addr,
            route.destination.prefix_len,
            route.via,
            ifname.as_deref(),
        )?;
        let v = serde_json::to_value(&route).unwrap_or(Value::Null);
        self.routes.push(route);
        Ok(v)
    }

    /// What the services need to know of every port and uplink: interface, index, MAC,
    /// its addresses (a tenant port's first: the gateways of its tenant's subnets, which
    /// `join_tenant` put on it; then those given with `--address`), and a port's
    /// guest MAC.
    fn service_links(&self) -> Result<Vec<ServiceLink>, AgentError> {
        let links = self.stack.links()?;
        let devices = self
            .ports
            .iter()
            .map(|p| {
                let tenant = p
                    .config
                    .tenant
                    .as_deref()
                    .and_then(|t| self.tenants.iter().find(|x| x.config.name == t));
                (&p.config.name, &p.device, Some(p.guest_mac), tenant)
            })
            .chain(
                self.uplinks
                    .iter()
                    .map(|u| (&u.config.name, &u.device, None, None)),
            );
        let mut out = Vec::new();
        for (name, device, guest_mac, tenant) in devices {
            let link = links.iter().find(|l| l.name == device.ifname);
            let gateways = tenant
                .into_iter()
                .flat_map(|t| &t.config.subnets)
                .map(|s| (s.gateway, s.prefix.prefix_len));
            let given = self
                .addresses
                .iter()
                .filter(|a| &a.device == name)
                .map(|a| (a.address.addr, a.address.prefix_len));
            let mut ipv4 = Vec::new();
            let mut ipv6 = Vec::new();
            for (addr, prefix_len) in gateways.chain(given) {
                match addr {
                    IpAddr::V4(v4) => ipv4.push((v4, prefix_len)),
                    IpAddr::V6(v6) => ipv6.push((v6, prefix_len)),
                }
            }
            out.push(ServiceLink {
                device: name.clone(),
                ifname: device.ifname.clone(),
                ifindex: link.map_or(0, |l| l.index),
                mac: link.and_then(|l| l.mac),
                ipv4,
                ipv6,
                guest_mac,
                routed: tenant.is_some(),
            });
        }
        Ok(out)
    }

    /// Starts the DHCP servers and router advertisements of `config` (replacing any).
    pub fn start_services(&mut self, config: &ServicesConfig) -> Result<(), AgentError> {
        if config.dhcp.is_empty() && config.ra.is_empty() {
            return Ok(());
        }
        let links = self.service_links()?;
        let kernel = self.stack.local_kernel().ok_or(AgentError::NoLocalKernel)?;
        self.services.stop();
        self.services = Services::start(kernel, config, &links)?;
        Ok(())
    }

    fn leases(&self) -> Value {
        Value::Array(
            self.services
                .leases()
                .into_iter()
                .flat_map(|(device, leases)| {
                    leases.into_iter().map(move |l| {
                        json!({
                            "device": device,
                            "mac": l.mac,
                            "ip": l.ip,
                            "state": l.state,
                            "expires": l.expires,
                            "hostname": l.hostname,
                        })
                    })
                })
                .collect(),
        )
    }

    /// Gives every port's library device its guest's link state.
    pub fn refresh_links(&mut self) {
        for port in &mut self.ports {
            if let Err(e) = port.refresh_link(self.stack.as_ref()) {
                warn!(port = %port.config.name, "cannot set the library link: {e}");
            }
        }
    }

    fn port_info(&self, port: &Port) -> Value {
        let lib = self.stack.device_stats(&port.device).ok();
        let carrier = self.carrier(&port.device.ifname);
        let g = port.guest().map(|g| g.offloads()).unwrap_or_default();
        json!({
            "name": port.config.name,
            "socket": port.config.tap.is_none().then_some(&port.config.socket),
            "tap": port.config.tap,
            "netns": port.config.netns,
            "role": port.config.role,
            "queue_pairs": port.config.queue_pairs,
            "guest_mac": port.guest_mac,
            "library_mac": port.library_mac,
            "ifname": port.device.ifname,
            "guest_connected": port.link_up(),
            "library_carrier": carrier,
            "serving": port.serving(),
            "guest_offloads": { "csum": g.csum, "tso4": g.tso4, "tso6": g.tso6, "ecn": g.ecn },
            "library_features": lib.as_ref().map(|s| feature_names(s.negotiated_features)),
        })
    }

    fn uplink_info(&self, uplink: &Uplink) -> Value {
        let lib = self.stack.device_stats(&uplink.device).ok();
        json!({
            "name": uplink.config.name,
            "spec": uplink.config.spec,
            "queue_pairs": uplink.config.queue_pairs,
            "library_mac": uplink.library_mac,
            "ifname": uplink.device.ifname,
            "library_carrier": self.carrier(&uplink.device.ifname),
            "library_features": lib.as_ref().map(|s| feature_names(s.negotiated_features)),
        })
    }

    fn carrier(&self, ifname: &str) -> Option<bool> {
        let links = self.stack.links().ok()?;
        links.iter().find(|l| l.name == ifname).map(|l| l.carrier)
    }

    fn ifname_of_index(&self, links: &[lkl_netstack::Link], index: Option<u32>) -> Option<String> {
        let index = index?;
        links
            .iter()
            .find(|l| l.index == index)
            .map(|l| l.name.clone())
    }

    fn device_of_ifname(&self, ifname: &str) -> Option<&str> {
        self.ports
            .iter()
            .find(|p| p.device.ifname == ifname)
            .map(|p| p.config.name.as_str())
            .or_else(|| {
                self.uplinks
                    .iter()
                    .find(|u| u.device.ifname == ifname)
                    .map(|u| u.config.name.as_str())
            })
    }

    fn routes(&self) -> Result<Value, AgentError> {
        let links = self.stack.links()?;
        let mut out = Vec::new();
        for ipv6 in [false, true] {
            for r in self.stack.routes(ipv6)? {
                let ifname = self.ifname_of_index(&links, r.output_index);
                let dest = r.destination.unwrap_or(if ipv6 {
                    IpAddr::from([0u16; 8])
                } else {
                    IpAddr::from([0u8; 4])
                });
                out.push(json!({
                    "destination": format!("{dest}/{}", r.prefix_len),
                    "via": r.gateway,
                    "ifname": ifname,
                    "device": ifname.as_deref().and_then(|i| self.device_of_ifname(i)),
                }));
            }
        }
        Ok(Value::Array(out))
    }

    fn links(&self) -> Result<Value, AgentError> {
        let links = self.stack.links()?;
        Ok(Value::Array(
            links
                .iter()
                .map(|l| {
                    json!({
                        "index": l.index,
                        "ifname": l.name,
                        "mtu": l.mtu,
                        "up": l.up,
                        "carrier": l.carrier,
                        "device": self.device_of_ifname(&l.name),
                        "master": self.ifname_of_index(&links, l.master),
                    })
                })
                .collect(),
        ))
    }

    fn stats(&self) -> Result<Value, AgentError> {
        let mut ports = Vec::new();
        for p in &self.ports {
            let lib = self.stack.device_stats(&p.device)?;
            let (Some(backend), Some(seam)) = (p.backend(), p.seam()) else {
                // A TAP port: the library device is all there is.
                ports.push(json!({
                    "name": p.config.name,
                    "tap": p.config.tap,
                    "library": library_stats(&lib),
                }));
                continue;
            };
            let vhost = backend.stats();
            let seam = seam.snapshot();
            let guest_tx: u64 = vhost.iter().map(|q| q.tx_packets).sum();
            let guest_rx: u64 = vhost.iter().map(|q| q.rx_packets).sum();
            ports.push(json!({
                "name": p.config.name,
                "vhost": vhost,
                "library": library_stats(&lib),
                "seam": seam,
                "copies": Copies::of(&seam, guest_tx, guest_rx, &lib.total),
            }));
        }
        let mut uplinks = Vec::new();
        for u in &self.uplinks {
            let lib = self.stack.device_stats(&u.device)?;
            uplinks.push(json!({ "name": u.config.name, "library": library_stats(&lib) }));
        }
        let stack = self
            .stack
            .local_kernel()
            .map(crate::services::metrics_stack::read);
        Ok(json!({
            "ports": ports,
            "uplinks": uplinks,
            "dhcp": self.services.dhcp_stats(),
            "ra": self.services.ra_stats(),
            "stack": stack,
        }))
    }

    /// Handles one control request; a change that succeeded is written to the state file
    /// before the answer (a failed write is the answer: the change is made but would not
    /// survive a restart, and the operator is told so).
    pub fn handle(&mut self, request: Request) -> Result<Value, AgentError> {
        let changes = matches!(
            request,
            Request::PortAdd { .. }
                | Request::PortRemove { .. }
                | Request::UplinkAdd { .. }
                | Request::AddressAdd { .. }
                | Request::RouteAdd { .. }
                | Request::TenantAdd { .. }
                | Request::TenantRemove { .. }
                | Request::Reload
        );
        let answer = self.answer(request);
        if changes {
            // Also after a refusal: a reload or add that failed half-way changed something.
            self.save_state()?;
        }
        answer
    }

    fn answer(&mut self, request: Request) -> Result<Value, AgentError> {
        match request {
            Request::PortAdd { port } => self.add_port(port),
            Request::PortRemove { name } => self.remove_port(&name),
            Request::PortList => {
                self.refresh_links();
                Ok(Value::Array(
                    self.ports.iter().map(|p| self.port_info(p)).collect(),
                ))
            }
            Request::UplinkAdd { uplink } => self.add_uplink(uplink),
            Request::UplinkList => Ok(Value::Array(
                self.uplinks.iter().map(|u| self.uplink_info(u)).collect(),
            )),
            Request::UplinkRemove { name } => self.remove_uplink(&name),
            Request::AddressAdd { address } => self.add_address(address),
            Request::AddressList => Ok(serde_json::to_value(&self.addresses).unwrap_or_default()),
            Request::RouteAdd { route } => self.add_route(route),
            Request::RouteList => self.routes(),
            Request::LinkList => self.links(),
            Request::Stats => self.stats(),
            Request::TenantAdd { tenant } => {
                // Through the API as from a file: its routes leak to its uplink at once.
                let name = tenant.name.clone();
                self.add_tenant(tenant)?;
                self.connect_uplinks()?;
                Ok(self.tenant(&name)?.info(&[]))
            }
            Request::TenantRemove { name } => self.remove_tenant(&name),
            Request::TenantList => Ok(self.tenants_info()),
            Request::Reload => self.reload(),
            Request::AntispoofList => self.antispoof_counters(),
            Request::NatList => Ok(self.nat_info()),
            Request::ConntrackList => self.conntrack(),
            Request::LeaseList => Ok(self.leases()),
            Request::Sysctl { name, value } => self.sysctl(&name, value.as_deref()),
        }
    }

    /// Writes a library kernel sysctl when `value` is given, then reads it back.
    fn sysctl(&self, name: &str, value: Option<&str>) -> Result<Value, AgentError> {
        if !knic_api::config::is_sysctl_name(name) {
            return Err(AgentError::BadSysctlName { name: name.into() });
        }
        // Read first: a name the kernel lacks is said plainly, and a write never creates.
        if let Err(StackError::Kernel { source, .. }) = self.stack.sysctl(name) {
            if source.kind() == std::io::ErrorKind::NotFound {
                return Err(AgentError::NoSuchSysctl { name: name.into() });
            }
        }
        if let Some(value) = value {
            if !knic_api::config::is_sysctl_value(value) {
                return Err(AgentError::BadSysctlValue { name: name.into() });
            }
            self.stack.set_sysctl(name, value)?;
            info!(name, value, "sysctl set");
        }
        let value = self.stack.sysctl(name)?;
        Ok(json!({ "name": name, "value": value }))
    }

    /// Stops every port (frontends cut, workers joined, sockets removed), then the kernel.
    pub fn shutdown(&mut self) {
        self.services.stop();
        for mut p in self.ports.drain(..) {
            p.stop();
        }
        if let Err(e) = self.stack.halt() {
            warn!("halting the library kernel: {e}");
        }
    }
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none yet".into()
    } else {
        names.join(", ")
    }
}

/// Frame copies per direction between guest memory and the library kernel's RAM: the vhost
/// worker's (between guest memory and its batch, or straight between guest memory and the
/// kernel's buffers), the seam's, and the library device's (between its batch and the
/// kernel's buffers: none on the direct paths). The seam's receive side swaps buffers and
/// copies nothing.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct DirectionCopies {
    /// Frames that made the whole crossing.
    pub frames: u64,
    pub vhost_copies: u64,
    pub seam_copies: u64,
    pub library_copies: u64,
    /// All copies over frames (0 before the first frame).
    pub per_frame: f64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Copies {
    pub to_stack: DirectionCopies,
    pub to_guest: DirectionCopies,
}

impl Copies {
    fn of(seam: &SeamSnapshot, guest_tx: u64, guest_rx: u64, lib: &QueuePairStats) -> Copies {
        let dir = |vhost: u64, seam_copies: u64, library: u64, frames: u64| {
            let all = vhost + seam_copies + library;
            DirectionCopies {
                frames,
                vhost_copies: vhost,
                seam_copies,
                library_copies: library,
                per_frame: if frames == 0 {
                    0.0
                } else {
                    all as f64 / frames as f64
                },
            }
        };
        Copies {
            // Guest to library: a frame arrived when the kernel took it (rx_packets).
            // The vhost worker copies every guest frame once: into its batch, or straight
            // into the kernel's buffers (`rx_direct`), which the library then copies not.
            to_stack: dir(
                guest_tx,
                seam.to_stack.copies,
                lib.rx_packets.saturating_sub(lib.rx_direct),
                lib.rx_packets,
            ),
            // Library to guest: it arrived when the vhost worker wrote it to the guest. The
            // vhost worker copies every frame once: from its batch, or straight out of the
            // kernel's TX buffers (`tx_direct`), which the library then copies not.
            to_guest: dir(
                guest_rx,
                seam.to_guest.copies,
                lib.tx_packets.saturating_sub(lib.tx_direct),
                guest_rx,
            ),
        }
    }
}

fn library_stats(s: &NetDeviceStats) -> Value {
    let t = &s.total;
    let drops: BTreeMap<&str, u64> = DropReason::ALL
        .iter()
        .map(|r| (r.name(), t.dropped(*r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    json!({
        "tx_packets": t.tx_packets,
        "tx_bytes": t.tx_bytes,
        "rx_packets": t.rx_packets,
        "rx_bytes": t.rx_bytes,
        "tx_large_frames": t.tx_large_frames,
        "rx_large_frames": t.rx_large_frames,
        "rx_merged_frames": t.rx_merged_frames,
        "interrupts": t.interrupts,
        "drops": drops,
        "link_up": s.link_up,
        "active_queue_pairs": s.active_queue_pairs,
        "negotiated_features": feature_names(s.negotiated_features),
    })
}
