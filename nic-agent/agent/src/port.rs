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
use packet_ring::PacketPort;
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

/// A running vhost-user port and its library device.
#[derive(Debug)]
pub struct Port {
    pub config: PortConfig,
    pub device: DeviceHandle,
    pub guest_mac: Mac,
    pub library_mac: Mac,
    backend: Arc<NetBackend>,
    guest: Arc<GuestLink>,
    seam: Arc<SeamStats>,
    stop: Arc<Stop>,
    serving: Option<JoinHandle<Result<(), DaemonError>>>,
    /// The link state last given to the library device.
    link_up: bool,
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
        if config.role == Role::Server {
            daemon::check_socket_dir(&config.socket).map_err(|source| AgentError::Serve {
                port: config.name.clone(),
                source,
            })?;
        }
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
                },
                guest_sides,
            )
            .map_err(|source| AgentError::Backend {
                port: config.name.clone(),
                source,
            })?,
        );
        let device = add_library_device(
            stack,
            &config.name,
            NetDeviceConfig {
                backend: LibraryBackend::Port(DevicePort::per_queue_pair(stack_sides)),
                mac: library_mac.0,
                mtu: mtu_of(config.mtu),
                offloads: offloads(config.offloads),
                queue_pairs: config.queue_pairs,
            },
        )?;
        // No frontend yet: the library sees no carrier until a guest's ring is up.
        stack.set_device_link(&device, false)?;
        let stop = Arc::new(Stop::default());
        let serving = spawn_serve(&config, Arc::clone(&backend), Arc::clone(&stop))?;
        info!(port = %config.name, socket = %config.socket.display(), ifname = %device.ifname, "port ready");
        Ok(Port {
            config,
            device,
            guest_mac,
            library_mac,
            backend,
            guest,
            seam: stats,
            stop,
            serving: Some(serving),
            link_up: false,
        })
    }

    /// Gives the library device the guest's link state, if it changed; returns the state.
    pub fn refresh_link(&mut self, stack: &dyn StackInstance) -> Result<bool, AgentError> {
        let up = self.guest.up();
        if up != self.link_up {
            stack.set_device_link(&self.device, up)?;
            self.link_up = up;
            info!(port = %self.config.name, up, "guest link changed");
        }
        Ok(up)
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    pub fn guest(&self) -> &GuestLink {
        &self.guest
    }

    pub fn seam(&self) -> &SeamStats {
        &self.seam
    }

    pub fn backend(&self) -> &NetBackend {
        &self.backend
    }

    /// Whether the serving thread has ended (an error it logged, or a stop).
    pub fn serving(&self) -> bool {
        self.serving.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Stops serving: the frontend is cut, the workers joined, the sockets removed.
    pub fn stop(&mut self) {
        self.stop.request();
        if let Some(h) = self.serving.take() {
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

fn spawn_serve(
    config: &PortConfig,
    backend: Arc<NetBackend>,
    stop: Arc<Stop>,
) -> Result<JoinHandle<Result<(), DaemonError>>, AgentError> {
    let serve_config = ServeConfig {
        socket: config.socket.clone(),
        role: match config.role {
            Role::Server => daemon::Role::Server,
            Role::Client => daemon::Role::Client { retry: REDIAL },
        },
        max_connections: None,
    };
    let name = config.name.clone();
    std::thread::Builder::new()
        .name(format!("{name}-vhost"))
        .spawn(move || {
            let r = daemon::serve(backend, &serve_config, &stop);
            if let Err(e) = &r {
                warn!(port = %name, "vhost-user serving failed: {e}");
            }
            r
        })
        .map_err(AgentError::Resources)
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
        let spec = config.spec()?;
        let ports = knic_uplink::open_uplinks(&spec, usize::from(config.queue_pairs)).map_err(
            |source| AgentError::Uplink {
                name: config.name.clone(),
                source,
            },
        )?;
        let library_mac = Mac(made_up_mac(MAC_KIND_UPLINK, seq));
        let device = add_library_device(
            stack,
            &config.name,
            NetDeviceConfig {
                backend: LibraryBackend::Port(DevicePort::per_queue_pair(ports)),
                mac: library_mac.0,
                mtu: mtu_of(config.mtu),
                offloads: offloads(config.offloads),
                queue_pairs: config.queue_pairs,
            },
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
