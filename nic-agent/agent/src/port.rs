//! Ports and uplinks: each becomes a network device inside the library kernel.
//!
//! A [`Port`] is a vhost-user virtio-net device (`vhost_backend::NetBackend`, served by
//! `vhost_backend::daemon::serve` on its own thread, one worker thread per queue pair) whose
//! queue pairs' uplinks are the guest sides of [`seam`](crate::seam)s; the library sides are
//! the ports of the port's library device. The device exists as long as the port does: a
//! guest that goes away only turns its link (carrier) off, so a reconnect costs nothing in
//! the kernel.
//!
//! An [`Uplink`] is a host interface (`knic_uplink::open_uplinks`) whose ports are handed to
//! a library device directly.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use lkl_netstack::{DevicePort, NetBackend as LibraryBackend, NetDeviceConfig, Offloads};
use packet_ring::{GuestOffloads, PacketPort};
use tracing::{info, warn};
use vhost_backend::daemon::{self, DaemonError, ServeConfig, Stop};
use vhost_backend::{NetBackend, NetBackendConfig};
use vmm_sys_util::eventfd::EventFd;

use crate::AgentError;
use crate::config::{Mac, OffloadMode, PortConfig, Role, UplinkConfig};
use crate::seam::{GuestLink, SeamStats, seam};
use crate::stack::{DeviceHandle, StackInstance};

/// MTU of a port or uplink whose configuration names none.
pub const MTU: u16 = 1500;

/// The MTU a device offers (virtio-net's `mtu` field) and its library link starts with.
fn mtu_of(configured: Option<u32>) -> u16 {
    configured
        .and_then(|m| u16::try_from(m).ok())
        .unwrap_or(MTU)
}
/// Largest guest virtqueue accepted.
const QUEUE_SIZE: u16 = 1024;
/// Packets a vhost worker moves per uplink call.
const BATCH: usize = 64;
/// How often a client-role port redials its frontend.
const REDIAL: Duration = Duration::from_millis(500);

fn offloads(mode: OffloadMode) -> Offloads {
    match mode {
        OffloadMode::Tso => Offloads::Tso,
        OffloadMode::Off => Offloads::Off,
    }
}

/// MACs the agent makes up: locally administered (02:), "KN" (4b:4e), a kind byte and a
/// sequence number, so a port's two ends and every device differ.
fn made_up_mac(kind: u8, seq: u16) -> [u8; 6] {
    let [hi, lo] = seq.to_be_bytes();
    [0x02, 0x4b, 0x4e, kind, hi, lo]
}
const MAC_KIND_GUEST: u8 = 0x01;
const MAC_KIND_PORT: u8 = 0x02;
const MAC_KIND_UPLINK: u8 = 0x03;

/// A running port and its library device.
#[derive(Debug)]
pub struct Port {
    pub config: PortConfig,
    pub device: DeviceHandle,
    pub guest_mac: Mac,
    pub library_mac: Mac,
    front: Front,
}

/// The guest side of a port.
#[derive(Debug)]
enum Front {
    /// A vhost-user device served on the port's socket.
    VhostUser(Box<VhostUser>),
    /// A TAP the agent created (`PortConfig::tap`), whose queues are the library device's
    /// ports directly, as an uplink's are. Its carrier is the kernel's: the library link
    /// is up from the start.
    Tap,
}

#[derive(Debug)]
struct VhostUser {
    backend: Arc<NetBackend>,
    guest: Arc<GuestLink>,
    seam: Arc<SeamStats>,
    stop: Arc<Stop>,
    serving: Option<JoinHandle<Result<(), DaemonError>>>,
    /// What the library device was last told of its guest.
    library: LibraryLink,
}

/// What a port's library device was last told of its guest: the link state, and (for a
/// device with offloads) which transmit offloads its kernel may use, so that a guest that
/// did not negotiate GUEST_TSO*/GUEST_CSUM is handed frames it can take (the kernel
/// segments and checksums the rest) instead of large frames the vhost worker must drop.
#[derive(Debug)]
struct LibraryLink {
    /// The device offers transmit offloads (`offloads = tso`), so they can be narrowed.
    narrows_offloads: bool,
    link_up: bool,
    tx_offloads: Option<GuestOffloads>,
}

impl LibraryLink {
    /// Brings the device up to date with `guest`; returns the link state. The offloads go
    /// first: the guest negotiates its features before its rings start, and the link must
    /// not come up while the kernel may still hand it frames it cannot take.
    fn refresh(
        &mut self,
        guest: &GuestLink,
        device: &DeviceHandle,
        stack: &dyn StackInstance,
    ) -> Result<bool, AgentError> {
        let up = guest.up();
        if up && self.narrows_offloads {
            let offloads = guest.offloads();
            if self.tx_offloads != Some(offloads) {
                stack.set_tx_offloads(&device.ifname, offloads)?;
                self.tx_offloads = Some(offloads);
                info!(ifname = %device.ifname, ?offloads, "library transmit offloads follow the guest");
            }
        }
        if up != self.link_up {
            stack.set_device_link(device, up)?;
            self.link_up = up;
        }
        Ok(up)
    }
}

impl Port {
    /// Builds the device pair and starts serving. `seq` numbers the port's made-up MACs;
    /// `changed` is the control loop's guest-life eventfd.
    pub fn start(
        config: PortConfig,
        seq: u16,
        stack: &dyn StackInstance,
        changed: &Arc<EventFd>,
    ) -> Result<Port, AgentError> {
        config.validate()?;
        if let Some(tap) = config.tap.clone() {
            return Port::start_tap(config, &tap, seq, stack);
        }
        // Bound before anything else is made, so a bad socket path costs nothing, and the
        // socket exists when the port is reported added.
        let serve_config = serve_config(&config);
        let public = daemon::listen(&serve_config).map_err(|source| AgentError::Serve {
            port: config.name.clone(),
            source,
        })?;
        let pairs = usize::from(config.queue_pairs);
        let guest = GuestLink::new(pairs, Arc::clone(changed));
        let stats = Arc::new(SeamStats::default());
        let mut guest_sides: Vec<Box<dyn PacketPort>> = Vec::with_capacity(pairs);
        let mut stack_sides: Vec<Box<dyn PacketPort>> = Vec::with_capacity(pairs);
        for pair in 0..pairs {
            let (g, s) = seam(pair, &stats, Arc::clone(&guest)).map_err(AgentError::Resources)?;
            guest_sides.push(Box::new(g));
            stack_sides.push(Box::new(s));
        }
        let guest_mac = config.mac.unwrap_or(Mac(made_up_mac(MAC_KIND_GUEST, seq)));
        let library_mac = Mac(made_up_mac(MAC_KIND_PORT, seq));
        let backend = Arc::new(
            NetBackend::new(
                NetBackendConfig {
                    mac: guest_mac.0,
                    mtu: mtu_of(config.mtu),
                    queue_size: QUEUE_SIZE,
                    batch: BATCH,
                    busy_poll: std::time::Duration::ZERO,
                },
                guest_sides,
            )
            .map_err(|source| AgentError::Backend {
                port: config.name.clone(),
                source,
            })?,
        );
        // The library device leaves a direct receiver and a direct sender per pair in the
        // hand-off: the vhost workers copy guest TX chains straight into the kernel's RX
        // buffers, and the kernel's TX chains straight into the guest's RX buffers (one
        // copy each way). The seam stays the pair's uplink for the guest's life (attached,
        // offloads) and carries no frame.
        let hand_off = DevicePort::per_queue_pair(stack_sides)
            .with_direct_rx()
            .with_direct_tx();
        let device = add_library_device(
            stack,
            &config.name,
            NetDeviceConfig {
                backend: LibraryBackend::Port(hand_off.clone()),
                mac: library_mac.0,
                mtu: mtu_of(config.mtu),
                offloads: offloads(config.offloads),
                queue_pairs: config.queue_pairs,
            },
        )?;
        for (pair, direct) in hand_off.take_direct_rx().into_iter().flatten().enumerate() {
            backend.set_direct_receiver(pair, Box::new(direct));
        }
        for (pair, direct) in hand_off.take_direct_tx().into_iter().flatten().enumerate() {
            backend.set_direct_sender(pair, Box::new(direct));
        }
        // No frontend yet: the library sees no carrier until a guest's ring is up.
        stack.set_device_link(&device, false)?;
        let narrows_offloads = config.offloads == OffloadMode::Tso;
        let stop = Arc::new(Stop::default());
        let serving = spawn_serve(
            &config.name,
            serve_config,
            public,
            Arc::clone(&backend),
            Arc::clone(&stop),
        )?;
        info!(port = %config.name, socket = %config.socket.display(), ifname = %device.ifname, "port ready");
        Ok(Port {
            config,
            device,
            guest_mac,
            library_mac,
            front: Front::VhostUser(Box::new(VhostUser {
                backend,
                guest,
                seam: stats,
                stop,
                serving: Some(serving),
                library: LibraryLink {
                    narrows_offloads,
                    link_up: false,
                    tx_offloads: None,
                },
            })),
        })
    }

    /// A TAP port: the agent creates the TAP (a queue per pair), gives it the guest MAC,
    /// and hands its queues to the library device. The TAP's offloads follow what the
    /// library device negotiates, as for a TAP uplink.
    fn start_tap(
        config: PortConfig,
        tap: &str,
        seq: u16,
        stack: &dyn StackInstance,
    ) -> Result<Port, AgentError> {
        let spec = knic_uplink::UplinkSpec::Tap(tap.to_owned());
        let uplink_error = |source| AgentError::Uplink {
            name: config.name.clone(),
            source,
        };
        let guest_mac = config.mac.unwrap_or(Mac(made_up_mac(MAC_KIND_GUEST, seq)));
        let queues = usize::from(config.queue_pairs);
        let ports = match &config.netns {
            // A pod's TAP, made (or found again after a restart) in its namespace.
            Some(netns) => knic_uplink::open_tap_in(netns, tap, queues, guest_mac.0)
                .map_err(|source| AgentError::PortNetns {
                    port: config.name.clone(),
                    netns: netns.clone(),
                    source,
                })?
                .into_iter()
                .map(|p| Box::new(p) as Box<dyn PacketPort>)
                .collect(),
            None => {
                let ports = knic_uplink::open_uplinks(&spec, queues).map_err(uplink_error)?;
                knic_uplink::set_interface_mac(tap, guest_mac.0).map_err(|source| {
                    uplink_error(knic_uplink::UplinkError::Other { spec, source })
                })?;
                ports
            }
        };
        let library_mac = Mac(made_up_mac(MAC_KIND_PORT, seq));
        let device = add_queue_device(
            stack,
            &config.name,
            ports,
            library_mac,
            QueueShape::of(config.mtu, config.offloads, config.queue_pairs),
        )?;
        info!(port = %config.name, tap, ifname = %device.ifname, "TAP port ready");
        Ok(Port {
            config,
            device,
            guest_mac,
            library_mac,
            front: Front::Tap,
        })
    }

    /// Gives the library device the guest's link state, if it changed; returns the state.
    pub fn refresh_link(&mut self, stack: &dyn StackInstance) -> Result<bool, AgentError> {
        let Front::VhostUser(v) = &mut self.front else {
            return Ok(true);
        };
        let was = v.library.link_up;
        let up = v.library.refresh(&v.guest, &self.device, stack)?;
        if up != was {
            info!(port = %self.config.name, up, "guest link changed");
        }
        Ok(up)
    }

    /// Whether a guest is attached (a TAP port: always, its carrier is the kernel's).
    pub fn link_up(&self) -> bool {
        match &self.front {
            Front::VhostUser(v) => v.library.link_up,
            Front::Tap => true,
        }
    }

    /// The vhost-user guest's link (none for a TAP port).
    pub fn guest(&self) -> Option<&GuestLink> {
        match &self.front {
            Front::VhostUser(v) => Some(&v.guest),
            Front::Tap => None,
        }
    }

    /// What crossed the seam (none for a TAP port).
    pub fn seam(&self) -> Option<&SeamStats> {
        match &self.front {
            Front::VhostUser(v) => Some(&v.seam),
            Front::Tap => None,
        }
    }

    /// The vhost-user device (none for a TAP port).
    pub fn backend(&self) -> Option<&NetBackend> {
        match &self.front {
            Front::VhostUser(v) => Some(&v.backend),
            Front::Tap => None,
        }
    }

    /// Whether the port still serves: its vhost-user thread has not ended (an error it
    /// logged, or a stop). A TAP port serves while it exists.
    pub fn serving(&self) -> bool {
        match &self.front {
            Front::VhostUser(v) => v.serving.as_ref().is_some_and(|h| !h.is_finished()),
            Front::Tap => true,
        }
    }

    /// Stops serving: the frontend is cut, the workers joined, the sockets removed. (A
    /// TAP port's TAP goes with its library device.)
    pub fn stop(&mut self) {
        let Front::VhostUser(v) = &mut self.front else {
            return;
        };
        v.stop.request();
        if let Some(h) = v.serving.take() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(port = %self.config.name, "serving ended: {e}"),
                Err(_) => warn!(port = %self.config.name, "serving thread panicked"),
            }
        }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_config(config: &PortConfig) -> ServeConfig {
    ServeConfig {
        socket: config.socket.clone(),
        role: match config.role {
            Role::Server => daemon::Role::Server,
            Role::Client => daemon::Role::Client { retry: REDIAL },
        },
        max_connections: None,
    }
}

fn spawn_serve(
    name: &str,
    serve_config: ServeConfig,
    public: Option<std::os::unix::net::UnixListener>,
    backend: Arc<NetBackend>,
    stop: Arc<Stop>,
) -> Result<JoinHandle<Result<(), DaemonError>>, AgentError> {
    let name = name.to_owned();
    std::thread::Builder::new()
        .name(format!("{name}-vhost"))
        .spawn(move || {
            let r = daemon::serve_listening(backend, &serve_config, &stop, public);
            if let Err(e) = &r {
                warn!(port = %name, "vhost-user serving failed: {e}");
            }
            r
        })
        .map_err(AgentError::Resources)
}

/// MTU, offloads and queue pairs of a library device fed by packet ports.
struct QueueShape {
    mtu: u16,
    offloads: Offloads,
    queue_pairs: u16,
}

impl QueueShape {
    fn of(mtu: Option<u32>, mode: OffloadMode, queue_pairs: u16) -> QueueShape {
        QueueShape {
            mtu: mtu_of(mtu),
            offloads: offloads(mode),
            queue_pairs,
        }
    }
}

/// A library device whose queues are packet ports (an uplink's, a TAP port's), one per
/// queue pair, added as [`add_library_device`] does.
fn add_queue_device(
    stack: &dyn StackInstance,
    name: &str,
    ports: Vec<Box<dyn PacketPort>>,
    mac: Mac,
    shape: QueueShape,
) -> Result<DeviceHandle, AgentError> {
    add_library_device(
        stack,
        name,
        NetDeviceConfig {
            backend: LibraryBackend::Port(DevicePort::per_queue_pair(ports)),
            mac: mac.0,
            mtu: shape.mtu,
            offloads: shape.offloads,
            queue_pairs: shape.queue_pairs,
        },
    )
}

/// Adds a device, brings its interface up and enables its queue pairs.
fn add_library_device(
    stack: &dyn StackInstance,
    name: &str,
    config: NetDeviceConfig,
) -> Result<DeviceHandle, AgentError> {
    let pairs = config.queue_pairs;
    let device = stack.add_device(&config)?;
    stack.set_link_up(&device.ifname, true)?;
    if pairs > 1 {
        stack.set_queue_pairs(&device.ifname, u32::from(pairs))?;
    }
    info!(device = name, ifname = %device.ifname, "library device added");
    Ok(device)
}

/// An uplink and its library device.
#[derive(Debug)]
pub struct Uplink {
    pub config: UplinkConfig,
    pub device: DeviceHandle,
    pub library_mac: Mac,
}

impl Uplink {
    pub fn open(
        config: UplinkConfig,
        seq: u16,
        stack: &dyn StackInstance,
    ) -> Result<Uplink, AgentError> {
        let spec = crate::config::uplink_spec(&config)?;
        let ports = knic_uplink::open_uplinks(&spec, usize::from(config.queue_pairs)).map_err(
            |source| AgentError::Uplink {
                name: config.name.clone(),
                source,
            },
        )?;
        let library_mac = Mac(made_up_mac(MAC_KIND_UPLINK, seq));
        let device = add_queue_device(
            stack,
            &config.name,
            ports,
            library_mac,
            QueueShape::of(config.mtu, config.offloads, config.queue_pairs),
        )?;
        Ok(Uplink {
            config,
            device,
            library_mac,
        })
    }
}

/// Where a port's socket would go by default: `DIR/NAME.sock`.
pub fn default_socket(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::net::IpAddr;

    use lkl_netstack::{Link, NetDeviceStats, Route};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;
    use crate::StackError;
    use crate::seam::SeamStats;

    /// Records what the port asks of its kernel, in order; nothing else is expected.
    #[derive(Debug, Default)]
    struct Recorder(RefCell<Vec<String>>);

    impl StackInstance for Recorder {
        fn add_device(&self, _: &NetDeviceConfig) -> Result<DeviceHandle, StackError> {
            unreachable!()
        }
        fn remove_device(&self, _: &DeviceHandle) -> Result<(), StackError> {
            unreachable!()
        }
        fn set_device_link(&self, device: &DeviceHandle, up: bool) -> Result<(), StackError> {
            self.0
                .borrow_mut()
                .push(format!("{} link {up}", device.ifname));
            Ok(())
        }
        fn device_stats(&self, _: &DeviceHandle) -> Result<NetDeviceStats, StackError> {
            unreachable!()
        }
        fn set_queue_pairs(&self, _: &str, _: u32) -> Result<(), StackError> {
            unreachable!()
        }
        fn set_tx_offloads(&self, ifname: &str, o: GuestOffloads) -> Result<(), StackError> {
            self.0
                .borrow_mut()
                .push(format!("{ifname} csum {} tso4 {}", o.csum, o.tso4));
            Ok(())
        }
        fn links(&self) -> Result<Vec<Link>, StackError> {
            unreachable!()
        }
        fn set_link_up(&self, _: &str, _: bool) -> Result<(), StackError> {
            unreachable!()
        }
        fn add_address(&self, _: &str, _: IpAddr, _: u8) -> Result<(), StackError> {
            unreachable!()
        }
        fn add_route(
            &self,
            _: IpAddr,
            _: u8,
            _: Option<IpAddr>,
            _: Option<&str>,
        ) -> Result<(), StackError> {
            unreachable!()
        }
        fn routes(&self, _: bool) -> Result<Vec<Route>, StackError> {
            unreachable!()
        }
        fn add_route_in_table(
            &self,
            _: u32,
            _: IpAddr,
            _: u8,
            _: Option<IpAddr>,
            _: Option<&str>,
        ) -> Result<(), StackError> {
            unreachable!()
        }
        fn routes_in_table(&self, _: bool, _: u32) -> Result<Vec<Route>, StackError> {
            unreachable!()
        }
        fn add_vrf(&self, _: &str, _: u32) -> Result<(), StackError> {
            unreachable!()
        }
        fn set_link_master(&self, _: &str, _: Option<&str>) -> Result<(), StackError> {
            unreachable!()
        }
        fn delete_link(&self, _: &str) -> Result<(), StackError> {
            unreachable!()
        }
        fn add_fwmark_rule(&self, _: &lkl_netstack::FwmarkRule) -> Result<(), StackError> {
            unreachable!()
        }
        fn delete_fwmark_rule(&self, _: &lkl_netstack::FwmarkRule) -> Result<(), StackError> {
            unreachable!()
        }
        fn set_link_mtu(&self, _: &str, _: u32) -> Result<(), StackError> {
            unreachable!()
        }
        fn netfilter(
            &self,
            _: &str,
            _: &[u8],
            _: usize,
        ) -> Result<Vec<lkl_netstack::NetfilterReply>, StackError> {
            unreachable!()
        }
        fn sysctl(&self, _: &str) -> Result<String, StackError> {
            unreachable!()
        }
        fn set_sysctl(&self, _: &str, _: &str) -> Result<(), StackError> {
            unreachable!()
        }
        fn halt(&self) -> Result<(), StackError> {
            unreachable!()
        }
    }

    /// A guest connects without GUEST_TSO/GUEST_CSUM, goes, and one with them comes: the
    /// kernel is told what each can take before the link comes up, and only on a change.
    fn guest_sequence(narrows_offloads: bool) -> Vec<String> {
        let changed = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let guest = GuestLink::new(1, changed);
        let stats = Arc::new(SeamStats::default());
        let (vhost_side, _library_side) = seam(0, &stats, Arc::clone(&guest)).unwrap();
        let (_, mut source) = (Box::new(vhost_side) as Box<dyn PacketPort>).split();
        let device = DeviceHandle {
            index: 0,
            ifname: "eth1".into(),
        };
        let stack = Recorder::default();
        let mut library = LibraryLink {
            narrows_offloads,
            link_up: false,
            tx_offloads: None,
        };
        let mut step = |offloads: Option<GuestOffloads>, attached: bool| {
            if let Some(o) = offloads {
                source.set_guest_offloads(o).unwrap();
            }
            source.set_attached(attached).unwrap();
            library.refresh(&guest, &device, &stack).unwrap();
            library.refresh(&guest, &device, &stack).unwrap();
        };
        step(Some(GuestOffloads::default()), true); // testpmd: no offloads
        step(None, false);
        step(Some(GuestOffloads::ALL), true); // a Linux guest
        stack.0.into_inner()
    }

    #[test]
    fn the_kernel_sends_a_guest_only_the_offloads_it_negotiated() {
        assert_eq!(
            guest_sequence(true),
            [
                "eth1 csum false tso4 false",
                "eth1 link true",
                "eth1 link false",
                "eth1 csum true tso4 true",
                "eth1 link true",
            ]
        );
        // A device without offloads has nothing to narrow.
        assert_eq!(
            guest_sequence(false),
            ["eth1 link true", "eth1 link false", "eth1 link true"]
        );
    }
}
