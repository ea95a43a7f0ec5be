//! The commands: ADD, DEL, CHECK, STATUS, GC and VERSION.
//!
//! An attachment (network, container, interface) is named in the agent by a hash of the
//! three: `cni-NNNNNNNN-AAAAAAAAAAAA` (network, attachment), so DEL and GC need no state of
//! their own, and GC knows which of the agent's ports and uplinks are this network's.
//! A `tap` attachment is an agent TAP port on `kcAAAAAAAAAAAA` (the agent creates the TAP
//! with a vnet header, gives it the pod's MAC and serves it as one of its library devices,
//! in a tenant if the network names one); a `vhost-user` attachment is an agent port on
//! `socketDir/NAME.sock`; a `netdev` one an AF_PACKET uplink on its representor.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use knic_api::config::{
    AddressConfig, Cidr, Mac, OffloadMode, PortConfig, Role, RouteConfig, UplinkConfig,
    is_interface_name,
};
use knic_api::{CallError, Request, call};
use serde_json::Value;

use crate::delegate;
use crate::sandbox::{self, Setup};
use crate::spec::{
    CniError, CniResult, Code, Interface, IpConfig, Kind, NetConf, SUPPORTED_VERSIONS,
    parse_cni_args, valid_network_name,
};

/// How long one agent request may take.
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the runtime passed in the environment.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            command: get("CNI_COMMAND").unwrap_or_default(),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        }
    }

    fn require<'a>(&'a self, v: &'a Option<String>, name: &str) -> Result<&'a str, CniError> {
        v.as_deref().ok_or_else(|| {
            CniError::new(
                Code::InvalidEnvironment,
                format!("{name} is not set"),
                format!(
                    "the runtime must set {name} for CNI_COMMAND={}",
                    self.command
                ),
            )
        })
    }
}

/// FNV-1a, 64 bits: stable across builds and machines (unlike std's hasher).
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The prefix of every agent name of network `net`.
fn network_prefix(net: &str) -> String {
    format!("cni-{:08x}-", fnv(&[net]) as u32)
}

/// The names of an attachment: in the agent, and (tap) its host interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub agent: String,
    pub host_if: String,
}

pub fn names(net: &str, container_id: &str, ifname: &str) -> Names {
    let a = fnv(&[net, container_id, ifname]) & 0xffff_ffff_ffff;
    Names {
        agent: format!("{}{a:012x}", network_prefix(net)),
        host_if: format!("kc{a:012x}"),
    }
}

/// Runs one command: the result JSON to print (none for DEL, CHECK, STATUS, GC).
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if env.command == "VERSION" {
        return Ok(Some(serde_json::json!({
            "cniVersion": SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1],
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            Code::Decode,
            "the network configuration on stdin is not JSON",
            e.to_string(),
        )
    })?;
    let conf: NetConf = serde_json::from_value(raw.clone()).map_err(|e| {
        CniError::new(
            Code::InvalidConfig,
            "the network configuration is not one knic-cni understands",
            format!("{e} (see deploy/cni/README.md for the fields)"),
        )
    })?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!("cniVersion {:?} is not supported", conf.cni_version),
            format!("knic-cni speaks {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    if !valid_network_name(&conf.name) {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("network name {:?} is not valid", conf.name),
            "a name starts with a letter or digit, then letters, digits, '_', '.' or '-'",
        ));
    }
    if conf.plugin_type.is_empty() {
        return Err(CniError::new(
            Code::InvalidConfig,
            "the network configuration's type is empty",
            "set \"type\": \"knic-cni\"",
        ));
    }
    if conf.kind == Kind::Netdev {
        for (field, v) in [("device", &conf.device), ("representor", &conf.representor)] {
            match v.as_deref() {
                Some(name) if is_interface_name(name) => {}
                Some(name) => {
                    return Err(CniError::new(
                        Code::InvalidConfig,
                        format!("{field} {name:?} is not an interface name"),
                        "1 to 15 characters, none of them '/', ':' or white space",
                    ));
                }
                None => {
                    return Err(CniError::new(
                        Code::InvalidConfig,
                        format!("kind \"netdev\" needs {field}"),
                        "device: the interface moved into the container; representor: the \
                         agent-side interface that carries its traffic",
                    ));
                }
            }
        }
    } else if conf.device.is_some() || conf.representor.is_some() {
        return Err(CniError::new(
            Code::UnsupportedField,
            "device and representor are for kind \"netdev\" only",
            "remove them, or use kind \"netdev\"",
        ));
    }
    if conf.tenant.is_some() && conf.kind == Kind::Netdev {
        return Err(CniError::new(
            Code::UnsupportedField,
            "tenant is supported with kinds \"tap\" and \"vhost-user\" only",
            "remove tenant, or use kind \"tap\" or \"vhost-user\"",
        ));
    }
    if let Some(m) = conf.mtu
        && !(68..=65535).contains(&m)
    {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("mtu {m} is out of range"),
            "an MTU from 68 to 65535",
        ));
    }
    let ctx = Ctx { env, conf, raw };
    match env.command.as_str() {
        "ADD" => ctx.add().map(Some),
        "DEL" => ctx.del().map(|()| None),
        "CHECK" => ctx.check().map(|()| None),
        "STATUS" => ctx.status().map(|()| None),
        "GC" => ctx.gc().map(|()| None),
        "" => Err(CniError::new(
            Code::InvalidEnvironment,
            "CNI_COMMAND is not set",
            "the runtime sets it to ADD, DEL, CHECK, STATUS, GC or VERSION",
        )),
        other => Err(CniError::new(
            Code::InvalidEnvironment,
            format!("CNI_COMMAND {other:?} is not a CNI command"),
            "one of ADD, DEL, CHECK, STATUS, GC, VERSION",
        )),
    }
}

struct Ctx<'a> {
    env: &'a Env,
    conf: NetConf,
    raw: Value,
}

fn agent_error(conf: &NetConf, what: &str, e: CallError) -> CniError {
    match e {
        CallError::Refused(m) => CniError::new(
            Code::AgentRefused,
            format!("knic-agent refused to {what}"),
            m,
        ),
        e @ CallError::Connect { .. } => CniError::new(
            Code::TryAgainLater,
            format!(
                "knic-agent is not reachable at {}",
                conf.agent_socket.display()
            ),
            format!("{e} (or set agentSocket in the network configuration)"),
        ),
        e => CniError::new(
            Code::Io,
            format!("talking to knic-agent to {what}"),
            e.to_string(),
        ),
    }
}

fn is_unknown_device(e: &CallError) -> bool {
    matches!(e, CallError::Refused(m) if m.starts_with("no port or uplink is named"))
}

impl Ctx<'_> {
    fn agent(&self, what: &str, req: &Request) -> Result<Value, CniError> {
        call(&self.conf.agent_socket, req, AGENT_TIMEOUT)
            .map_err(|e| agent_error(&self.conf, what, e))
    }

    fn ids(&self) -> Result<(&str, &str), CniError> {
        let id = self
            .env
            .require(&self.env.container_id, "CNI_CONTAINERID")?;
        let ifname = self.env.require(&self.env.ifname, "CNI_IFNAME")?;
        if ifname.is_empty()
            || ifname.len() > 15
            || ifname.contains(['/', ' ', ':'])
            || ifname == "."
            || ifname == ".."
        {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("CNI_IFNAME {ifname:?} is not an interface name"),
                "1 to 15 characters without '/', ':' or spaces, like eth0",
            ));
        }
        Ok((id, ifname))
    }

    fn netns(&self) -> Result<PathBuf, CniError> {
        let ns = PathBuf::from(self.env.require(&self.env.netns, "CNI_NETNS")?);
        sandbox::check_netns(&ns)?;
        Ok(ns)
    }

    /// The IPAM plugin and the configuration to give it, if the network has one.
    fn ipam(&self) -> Result<Option<(PathBuf, Vec<u8>, bool)>, CniError> {
        let Some(ipam) = &self.conf.ipam else {
            return Ok(None);
        };
        let Some(kind) = ipam.get("type").and_then(Value::as_str) else {
            return Err(CniError::new(
                Code::InvalidConfig,
                "ipam has no \"type\"",
                "name the IPAM plugin, like \"ipam\": {\"type\": \"host-local\", ...}",
            ));
        };
        let path = self.env.require(&self.env.path, "CNI_PATH")?;
        let plugin = delegate::find(kind, path)?;
        let (bytes, speaks_1_1) = delegate::config_for(&plugin, &self.raw)?;
        Ok(Some((plugin, bytes, speaks_1_1)))
    }

    /// The MAC asked for: `CNI_ARGS` `MAC=`, else `runtimeConfig.mac`.
    fn mac(&self) -> Result<Option<String>, CniError> {
        let from_args = parse_cni_args(self.env.args.as_deref().unwrap_or_default())?
            .into_iter()
            .find(|(k, _)| k == "MAC")
            .map(|(_, v)| v);
        let from_rc = self
            .conf
            .runtime_config
            .as_ref()
            .and_then(|r| r.get("mac"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        match from_args.or(from_rc) {
            Some(m) => m.parse::<Mac>().map(|m| Some(m.to_string())).map_err(|e| {
                CniError::new(
                    Code::InvalidConfig,
                    format!("MAC {m:?} is not usable"),
                    e.to_string(),
                )
            }),
            None => Ok(None),
        }
    }

    /// (netdev) The runtime's interface the attachment moves into the container.
    fn netdev(&self) -> Option<&str> {
        match self.conf.kind {
            Kind::Netdev => self.conf.device.as_deref(),
            _ => None,
        }
    }

    fn add(&self) -> Result<Value, CniError> {
        let (id, ifname) = self.ids()?;
        let names = names(&self.conf.name, id, ifname);
        let netns = match self.conf.kind {
            Kind::Tap | Kind::Netdev => Some(self.netns()?),
            Kind::VhostUser => None,
        };
        if let Some(device) = self.netdev()
            && !sandbox::has_host_link(device)
        {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!("device {device} is not an interface of the runtime's namespace"),
                "name an existing interface (ip link show); a device already in a \
                 container belongs to that container's attachment",
            ));
        }
        if let Some(ns) = &netns
            && sandbox::has_link(ns, ifname)
        {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!("the container already has an interface {ifname}"),
                "pick another CNI_IFNAME, or DEL the attachment first",
            ));
        }
        let mac = self.mac()?;
        let ipam = self.ipam()?;
        // An attachment the agent already has is refused before anything is done, so the
        // undo of a failed ADD below never takes away what an earlier ADD made.
        let have = self.agent("list its attachments", &self.list_request())?;
        if have
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["name"] == names.agent.as_str()))
        {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!(
                    "container {id} already has {ifname} on network {}",
                    self.conf.name
                ),
                format!(
                    "knic-agent serves it as {}: DEL it first, or pick another CNI_IFNAME",
                    names.agent
                ),
            ));
        }
        let ip_result = match &ipam {
            Some((plugin, bytes, _)) => {
                let v = delegate::exec(plugin, "ADD", bytes)?.unwrap_or(Value::Null);
                Some(serde_json::from_value::<CniResult>(v).map_err(|e| {
                    CniError::new(
                        Code::DelegateFailed,
                        format!("the IPAM plugin {} returned no result", plugin.display()),
                        e.to_string(),
                    )
                })?)
            }
            None => None,
        };
        match self.attach(&names, ifname, netns.as_deref(), mac, ip_result.as_ref()) {
            Ok(v) => Ok(v),
            Err(e) => {
                // Undo what was done, so a failed ADD leaves nothing behind.
                self.detach(&names);
                if let (Some(device), Some(ns)) = (self.netdev(), &netns) {
                    let _ = sandbox::give_back(ns, ifname, device);
                }
                if let Some((plugin, bytes, _)) = &ipam {
                    let _ = delegate::exec(plugin, "DEL", bytes);
                }
                Err(e)
            }
        }
    }

    fn attach(
        &self,
        names: &Names,
        ifname: &str,
        netns: Option<&Path>,
        mac: Option<String>,
        ip: Option<&CniResult>,
    ) -> Result<Value, CniError> {
        let ips: Vec<(Cidr, Option<IpAddr>)> = ip
            .map(|r| r.ips.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|i| {
                let a: Cidr = i.address.parse().map_err(|e| {
                    CniError::new(
                        Code::DelegateFailed,
                        format!("the IPAM plugin gave an address {:?}", i.address),
                        format!("{e}"),
                    )
                })?;
                let gw = match &i.gateway {
                    Some(g) => Some(g.parse::<IpAddr>().map_err(|_| {
                        CniError::new(
                            Code::DelegateFailed,
                            format!("the IPAM plugin gave a gateway {g:?}"),
                            "an IPv4 or IPv6 address",
                        )
                    })?),
                    None => None,
                };
                Ok((a, gw))
            })
            .collect::<Result<_, CniError>>()?;
        let tenant = self.conf.tenant.clone();
        let mut iface = Interface {
            name: ifname.to_owned(),
            mac: None,
            mtu: self.conf.mtu,
            sandbox: None,
            socket_path: None,
        };
        match self.conf.kind {
            Kind::Tap => {
                // In the pod's namespace the agent makes the TAP itself, under the pod's
                // interface name, and keeps it across its own restarts.
                let Some(ns) = netns else {
                    return Err(CniError::new(
                        Code::InvalidEnvironment,
                        "a tap attachment needs CNI_NETNS",
                        "pass the container's network namespace path",
                    ));
                };
                self.agent(
                    "add the TAP port",
                    &Request::PortAdd {
                        port: PortConfig {
                            name: names.agent.clone(),
                            socket: PathBuf::new(),
                            tap: Some(ifname.to_owned()),
                            netns: Some(ns.to_path_buf()),
                            role: Role::Server,
                            queue_pairs: 1,
                            mac: mac.as_deref().and_then(|m| m.parse().ok()),
                            offloads: OffloadMode::Tso,
                            tenant: tenant.clone(),
                            addresses: ips.iter().map(|(a, _)| a.addr).collect(),
                            mtu: self.conf.mtu,
                        },
                    },
                )?;
            }
            Kind::VhostUser => {
                std::fs::create_dir_all(&self.conf.socket_dir).map_err(|e| {
                    CniError::new(
                        Code::Io,
                        format!("cannot create socketDir {}", self.conf.socket_dir.display()),
                        e.to_string(),
                    )
                })?;
                let socket = self.conf.socket_dir.join(format!("{}.sock", names.agent));
                self.agent(
                    "add the vhost-user port",
                    &Request::PortAdd {
                        port: PortConfig {
                            name: names.agent.clone(),
                            socket: socket.clone(),
                            tap: None,
                            netns: None,
                            role: Role::Server,
                            queue_pairs: 1,
                            mac: mac.as_deref().and_then(|m| m.parse().ok()),
                            offloads: OffloadMode::Tso,
                            tenant: tenant.clone(),
                            addresses: ips.iter().map(|(a, _)| a.addr).collect(),
                            mtu: self.conf.mtu,
                        },
                    },
                )?;
                iface.socket_path = Some(socket.display().to_string());
                iface.mac.clone_from(&mac);
            }
            Kind::Netdev => {
                let representor = self.conf.representor.as_deref().unwrap_or_default();
                self.agent(
                    "serve the representor",
                    &Request::UplinkAdd {
                        uplink: UplinkConfig {
                            name: names.agent.clone(),
                            spec: format!("packet:{representor}"),
                            queue_pairs: 1,
                            offloads: OffloadMode::Tso,
                            mtu: self.conf.mtu,
                        },
                    },
                )?;
            }
        }
        // The library side: the gateway as a host address on the attachment's device and a
        // host route to each pod address through it, so the agent routes to the pod and
        // answers its ARP for the gateway (a tenant's ports have both from the tenant).
        if tenant.is_none() {
            for (a, gw) in &ips {
                if let Some(gw) = gw {
                    let host = if gw.is_ipv4() { 32 } else { 128 };
                    self.agent(
                        "add the gateway address",
                        &Request::AddressAdd {
                            address: AddressConfig {
                                device: names.agent.clone(),
                                address: Cidr {
                                    addr: *gw,
                                    prefix_len: host,
                                },
                            },
                        },
                    )?;
                }
                let host = if a.addr.is_ipv4() { 32 } else { 128 };
                self.agent(
                    "add the route to the pod",
                    &Request::RouteAdd {
                        route: RouteConfig {
                            destination: Cidr {
                                addr: a.addr,
                                prefix_len: host,
                            },
                            via: None,
                            device: Some(names.agent.clone()),
                        },
                    },
                )?;
            }
        }
        if let Some(ns) = netns {
            let addresses: Vec<String> = ips.iter().map(|(a, _)| a.to_string()).collect();
            let mut routes: Vec<(String, Option<String>)> = Vec::new();
            for r in ip.map(|r| r.routes.as_slice()).unwrap_or_default() {
                let gw = r.gw.clone().or_else(|| {
                    let v4 = r.dst.contains('.');
                    ips.iter()
                        .find_map(|(_, g)| g.filter(|g| g.is_ipv4() == v4))
                        .map(|g| g.to_string())
                });
                routes.push((r.dst.clone(), gw));
            }
            let setup = Setup {
                netns: ns,
                ifname,
                mac: mac.as_deref(),
                mtu: self.conf.mtu,
                addresses: &addresses,
                routes: &routes,
            };
            let got_mac = match (self.conf.kind, self.netdev()) {
                (Kind::Tap, _) => sandbox::configure(&setup)?,
                (_, device) => sandbox::attach(device.unwrap_or(&names.host_if), &setup)?,
            };
            iface.mac = Some(got_mac);
            iface.sandbox = Some(ns.display().to_string());
        }
        let result = CniResult {
            cni_version: self.conf.cni_version.clone(),
            interfaces: vec![iface],
            ips: ip
                .map(|r| r.ips.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|i| IpConfig {
                    interface: Some(0),
                    ..i
                })
                .collect(),
            routes: ip.map(|r| r.routes.clone()).unwrap_or_default(),
            dns: ip.and_then(|r| r.dns.clone()),
        };
        serde_json::to_value(&result)
            .map_err(|e| CniError::new(Code::Decode, "encoding the result", e.to_string()))
    }

    /// The request that removes the attachment's agent side (and with it a TAP wherever
    /// it is).
    fn remove_request(&self, name: &str) -> Request {
        match self.conf.kind {
            Kind::VhostUser | Kind::Tap => Request::PortRemove { name: name.into() },
            Kind::Netdev => Request::UplinkRemove { name: name.into() },
        }
    }

    /// The request that lists the agent devices of this kind of attachment.
    fn list_request(&self) -> Request {
        match self.conf.kind {
            Kind::VhostUser | Kind::Tap => Request::PortList,
            Kind::Netdev => Request::UplinkList,
        }
    }

    /// Undoes a failed ADD's agent side, if it got that far.
    fn detach(&self, names: &Names) {
        let _ = call(
            &self.conf.agent_socket,
            &self.remove_request(&names.agent),
            AGENT_TIMEOUT,
        );
    }

    fn del(&self) -> Result<(), CniError> {
        let id = self
            .env
            .require(&self.env.container_id, "CNI_CONTAINERID")?;
        let ifname = self.env.require(&self.env.ifname, "CNI_IFNAME")?;
        let names = names(&self.conf.name, id, ifname);
        let req = self.remove_request(&names.agent);
        match call(&self.conf.agent_socket, &req, AGENT_TIMEOUT) {
            Ok(_) => {}
            // A TAP attachment an earlier knic-cni made is an uplink.
            Err(e) if is_unknown_device(&e) && self.conf.kind == Kind::Tap => {
                let old = Request::UplinkRemove {
                    name: names.agent.clone(),
                };
                match call(&self.conf.agent_socket, &old, AGENT_TIMEOUT) {
                    Ok(_) => {}
                    Err(e) if is_unknown_device(&e) => {}
                    Err(e) => return Err(agent_error(&self.conf, "remove the attachment", e)),
                }
            }
            Err(e) if is_unknown_device(&e) => {}
            Err(e) => return Err(agent_error(&self.conf, "remove the attachment", e)),
        }
        if let Some(ns) = &self.env.netns {
            match self.netdev() {
                // The device goes back to the runtime's namespace under its own name.
                // A gone container is no error: the kernel gave a physical device back
                // to the initial namespace when it went.
                Some(device) => sandbox::give_back(Path::new(ns), ifname, device)?,
                // The agent's side is gone, so its TAP is; anything left of that name in
                // the container is a leftover of an interrupted ADD.
                None if self.conf.kind == Kind::Tap => {
                    let _ = sandbox::remove(Path::new(ns), ifname);
                }
                None => {}
            }
        }
        if let Some((plugin, bytes, _)) = self.ipam()? {
            delegate::exec(&plugin, "DEL", &bytes)?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), CniError> {
        let (id, ifname) = self.ids()?;
        let Some(prev) = &self.conf.prev_result else {
            return Err(CniError::new(
                Code::InvalidConfig,
                "CHECK needs prevResult",
                "the runtime passes the cached result of ADD as prevResult",
            ));
        };
        let prev: CniResult = serde_json::from_value(prev.clone()).map_err(|e| {
            CniError::new(
                Code::Decode,
                "prevResult is not a CNI result",
                e.to_string(),
            )
        })?;
        let names = names(&self.conf.name, id, ifname);
        let what = match self.conf.kind {
            Kind::VhostUser | Kind::Tap => "port",
            Kind::Netdev => "uplink",
        };
        let have = self.agent("list its attachments", &self.list_request())?;
        if !have
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["name"] == names.agent.as_str()))
        {
            return Err(CniError::new(
                Code::CheckFailed,
                format!(
                    "knic-agent has no {what} {} for this attachment",
                    names.agent
                ),
                "the agent lost it (restarted without it?): DEL and ADD the container again",
            ));
        }
        if matches!(self.conf.kind, Kind::Tap | Kind::Netdev) {
            let ns = self.netns()?;
            if !sandbox::has_link(&ns, ifname) {
                return Err(CniError::new(
                    Code::CheckFailed,
                    format!("the container has no interface {ifname}"),
                    "DEL and ADD the container again",
                ));
            }
            let on = sandbox::addresses_of(&ns, ifname)?;
            for ip in &prev.ips {
                if !on.contains(&ip.address) {
                    return Err(CniError::new(
                        Code::CheckFailed,
                        format!("{ifname} in the container lacks {}", ip.address),
                        format!("it has {}", on.join(", ")),
                    ));
                }
            }
        }
        if let Some((plugin, bytes, _)) = self.ipam()? {
            delegate::exec(&plugin, "CHECK", &bytes)?;
        }
        Ok(())
    }

    fn status(&self) -> Result<(), CniError> {
        call(&self.conf.agent_socket, &Request::UplinkList, AGENT_TIMEOUT).map_err(|e| {
            CniError::new(
                Code::NotAvailable,
                format!(
                    "knic-agent does not answer on {}",
                    self.conf.agent_socket.display()
                ),
                format!("{e}: start knic-agent (systemctl start knic-agent) or fix agentSocket"),
            )
        })?;
        if let Some((plugin, bytes, true)) = self.ipam()? {
            delegate::exec(&plugin, "STATUS", &bytes)?;
        }
        Ok(())
    }

    fn gc(&self) -> Result<(), CniError> {
        let valid: Vec<String> = self
            .conf
            .valid_attachments
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|a| names(&self.conf.name, &a.container_id, &a.ifname).agent)
            .collect();
        let prefix = network_prefix(&self.conf.name);
        let mut failed = Vec::new();
        for (list, kind) in [(Request::UplinkList, "uplink"), (Request::PortList, "port")] {
            let have = self.agent("list its attachments", &list)?;
            for name in have
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p["name"].as_str())
                .filter(|n| n.starts_with(&prefix) && !valid.iter().any(|v| v == n))
            {
                let req = if kind == "port" {
                    Request::PortRemove { name: name.into() }
                } else {
                    Request::UplinkRemove { name: name.into() }
                };
                if let Err(e) = call(&self.conf.agent_socket, &req, AGENT_TIMEOUT)
                    && !is_unknown_device(&e)
                {
                    failed.push(format!("{kind} {name}: {e}"));
                }
            }
        }
        if let Some((plugin, bytes, true)) = self.ipam()? {
            delegate::exec(&plugin, "GC", &bytes)?;
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                Code::AgentRefused,
                "GC could not remove every stale attachment",
                failed.join("; "),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernels_rules() {
        for ok in ["eth0", "vf0", "pf0vf12", "a", "fifteen-chars-x"] {
            assert!(is_interface_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-chars-xx"] {
            assert!(!is_interface_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_are_stable_short_and_scoped_by_network() {
        let n = names("pods", "abc", "eth0");
        assert_eq!(n, names("pods", "abc", "eth0"));
        assert!(n.agent.starts_with(&network_prefix("pods")));
        assert!(n.agent.len() <= 32 && n.host_if.len() <= 15, "{n:?}");
        assert_ne!(n.agent, names("pods", "abc", "eth1").agent);
        assert_ne!(n.agent, names("other", "abc", "eth0").agent);
        assert!(
            !names("other", "abc", "eth0")
                .agent
                .starts_with(&network_prefix("pods"))
        );
        // The agent's name rule: letters, digits, '-' and '_'.
        assert!(
            n.agent
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        );
    }

    #[test]
    fn version_needs_no_stdin() {
        let env = Env {
            command: "VERSION".into(),
            ..Env::default()
        };
        let v = run(&env, b"").unwrap().unwrap();
        assert_eq!(v["supportedVersions"][1], "1.1.0");
    }
}
