//! The agent's state: its kernel, ports, uplinks and what it configured, and the operations
//! the control API maps to.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use lkl_netstack::{DropReason, NetDeviceStats, QueuePairStats};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::warn;
use vmm_sys_util::eventfd::EventFd;

use crate::AgentError;
use crate::api::Request;
use crate::config::{AddressConfig, PortConfig, RouteConfig, UplinkConfig};
use crate::port::{Port, Uplink};
use crate::seam::SeamSnapshot;
use crate::services::{ServiceLink, Services, ServicesConfig};
use crate::stack::{DeviceHandle, StackInstance};

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
    /// Written by the ports' seams when a guest's state changes.
    guest_events: Arc<EventFd>,
    /// Numbers made-up MACs; never reused, so a re-added port gets new ones.
    next_seq: u16,
    /// DHCP servers and router advertisements.
    services: Services,
}

impl Agent {
    pub fn new(stack: Box<dyn StackInstance>, guest_events: Arc<EventFd>) -> Agent {
        Agent {
            stack,
            ports: Vec::new(),
            uplinks: Vec::new(),
            addresses: Vec::new(),
            guest_events,
            next_seq: 1,
            services: Services::default(),
        }
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
        if let Some(p) = self.ports.iter().find(|p| p.config.socket == config.socket) {
            return Err(AgentError::SocketTaken {
                socket: config.socket.display().to_string(),
                port: p.config.name.clone(),
            });
        }
        let seq = self.seq();
        let port = Port::start(config, seq, self.stack.as_ref(), &self.guest_events)?;
        let info = self.port_info(&port);
        self.ports.push(port);
        Ok(info)
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
        // The library device goes first: a kernel that cannot remove it keeps the port
        // whole (still served) rather than leaving a device with nothing behind it.
        self.stack.remove_device(&self.ports[i].device)?;
        let mut port = self.ports.remove(i);
        port.stop();
        self.addresses.retain(|a| a.device != name);
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
        Ok(serde_json::to_value(&route).unwrap_or(Value::Null))
    }

    /// What the services need to know of every port and uplink: interface, index, MAC,
    /// the addresses the agent gave it, and a port's guest MAC.
    fn service_links(&self) -> Result<Vec<ServiceLink>, AgentError> {
        let links = self.stack.links()?;
        let devices = self
            .ports
            .iter()
            .map(|p| (&p.config.name, &p.device, Some(p.guest_mac)))
            .chain(
                self.uplinks
                    .iter()
                    .map(|u| (&u.config.name, &u.device, None)),
            );
        let mut out = Vec::new();
        for (name, device, guest_mac) in devices {
            let link = links.iter().find(|l| l.name == device.ifname);
            let mut ipv4 = Vec::new();
            let mut ipv6 = Vec::new();
            for a in self.addresses.iter().filter(|a| &a.device == name) {
                match a.address.addr {
                    IpAddr::V4(v4) => ipv4.push((v4, a.address.prefix_len)),
                    IpAddr::V6(v6) => ipv6.push((v6, a.address.prefix_len)),
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
        let g = port.guest().offloads();
        json!({
            "name": port.config.name,
            "socket": port.config.socket,
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
                    })
                })
                .collect(),
        ))
    }

    fn stats(&self) -> Result<Value, AgentError> {
        let mut ports = Vec::new();
        for p in &self.ports {
            let lib = self.stack.device_stats(&p.device)?;
            let vhost = p.backend().stats();
            let seam = p.seam().snapshot();
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
        Ok(json!({
            "ports": ports,
            "uplinks": uplinks,
            "dhcp": self.services.dhcp_stats(),
            "ra": self.services.ra_stats(),
        }))
    }

    /// Handles one control request.
    pub fn handle(&mut self, request: Request) -> Result<Value, AgentError> {
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
            Request::AddressAdd { address } => self.add_address(address),
            Request::AddressList => Ok(serde_json::to_value(&self.addresses).unwrap_or_default()),
            Request::RouteAdd { route } => self.add_route(route),
            Request::RouteList => self.routes(),
            Request::LinkList => self.links(),
            Request::Stats => self.stats(),
            Request::LeaseList => Ok(self.leases()),
        }
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

/// Frame copies per direction between guest memory and the library kernel's RAM: the vhost
/// worker's (guest memory to its batch, or back), the seam's, and the library device's (its
/// batch to the kernel's buffers, or back). The seam's receive side swaps buffers and copies
/// nothing.
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
            to_stack: dir(
                guest_tx,
                seam.to_stack.copies,
                lib.rx_packets,
                lib.rx_packets,
            ),
            // Library to guest: it arrived when the vhost worker wrote it to the guest.
            to_guest: dir(guest_rx, seam.to_guest.copies, lib.tx_packets, guest_rx),
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
