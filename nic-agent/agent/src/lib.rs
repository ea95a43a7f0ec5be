//! knic's agent: guests' virtio-net ports joined to uplinks through the in-process Linux
//! stack.
//!
//! ```text
//!  guest (QEMU, testpmd)          library kernel (lkl-netstack)              host / wire
//!   virtio-net ──vhost-user──▶ Port ──seam──▶ ethN ─ routing, TCP, ─ ethM ◀── Uplink ── TAP,
//!                               (vhost_backend     (virtio_net driver  forwarding   (knic_uplink)   AF_PACKET
//!                                queue pairs)       over our device)
//! ```
//!
//! * [`config`]: ports, uplinks, tenants, addresses and routes, from flags or the API (JSON);
//!   [`config_file`]: all of it from one TOML file (`--config`), checked whole before use.
//! * [`stack`] ([`StackInstance`]): the one way the agent addresses its kernel, so that later
//!   several kernels (one process each) can share the ports.
//! * [`port`]: a vhost-user port ([`Port`]: `vhost_backend::NetBackend` served on its own
//!   thread) and its library device; an uplink ([`Uplink`]) and its library device.
//! * [`seam`]: how a port's queue pairs meet its library device (below).
//! * [`offload`]: the kernel offload server (host programs' sockets under `knic-offload`).
//! * [`agent`] ([`Agent`]): the state and the operations; [`api`]: the control API (JSON
//!   lines on a unix socket) that `knicctl` speaks; `control`: the rust-vmm `event-manager`
//!   loop whose subscribers are the API socket, the termination signals and the guests' life
//!   events. [`services`]: DHCPv4 and IPv6 router advertisements for guests, on library
//!   sockets. Data-path threads (vhost queue pair workers, the library device's receive
//!   threads) keep their own threads and never touch the control loop.
//!
//! # Copies per frame
//! Between guest memory and the library kernel's RAM a frame is copied twice in each
//! direction, and the stats count each (`copies` in `knicctl stats`):
//! 1. the vhost worker copies the guest's chain into its batch (or its batch into the
//!    guest's receive chain),
//! 2. the library device copies its packet into the kernel's posted buffers (or the kernel's
//!    chain into its packet).
//!
//! The seam copies nothing: both endpoints send with `PacketSink::send_swap`, which lets the
//! seam take the frame's buffer and leave a free one of its own in the sender's batch, and
//! the receiving side swaps its filled buffer with the receiver's batch slot. (A plain
//! `send`, which only lends the batch, would cost a third copy into a seam buffer; the stats
//! would show it as `seam_copies`.) `packet_ring::memory_port_pair` plus an adapter making
//! its `MemoryPeer` a port would copy twice at the seam: four copies, the figure issue 8
//! started from.
//!
//! One step remains, to one copy, the design for the shared virtio-net engine to take up:
//! the library device's receive thread hands the vhost worker the kernel's posted receive
//! chains (addresses in the kernel's RAM, which is plain memory of this process) instead of
//! a `PacketBatch`, so the worker copies guest chain → kernel chain once and publishes the
//! used entry; the other direction lends the kernel's TX chain to the worker the same way.
//! Both need the engine's chain walk on both sides of one call (the vhost worker walking
//! the kernel's ring while the library device's lock on it is held elsewhere), and a seam
//! that carries ring positions rather than packets.
//!
//! The pieces of that step that exist, each tested on its own (not yet wired, so the
//! stats still count two copies each way):
//! - guest → stack: `knic_virtio_net::direct::read_chain_into` reads a guest TX chain, with
//!   every check of the engine's `read_chain`, straight into a `ScatterDest` over the
//!   buffers the kernel posted, and the library device's `RxPath::receive_direct` lends
//!   those buffers for it and publishes them (backpressure: too few buffers posted leaves
//!   the guest's chain in its ring);
//! - stack → guest: `RxBuffers::place_scattered` writes a frame lent in pieces (the
//!   kernel's TX buffers) into the guest's RX chains with `place`'s logic.
//!
//! What remains: a handle through which the vhost worker drives a queue pair's kernel RX
//! side (its lock held per batch, the kernel's RX kick as the room fd), the library
//! device's TX kick lending its mapped, header-checked chain (as the TAP wire maps it) to
//! the guest's RX queue, and the copy counters following.
//!
//! # Guest life
//! The library device exists as long as its port: when no frontend is connected its link is
//! down (no carrier), and a (re)connecting guest only turns it up. The vhost queue pair tells
//! its uplink (the seam) when its receive ring can take packets; the seam wakes the control
//! loop, which sets the device's link.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod config;
pub mod config_file;
mod control;
pub mod net;
pub mod offload;
pub mod port;
pub mod seam;
pub mod services;
pub mod stack;
pub mod state;
mod sys;

use std::path::PathBuf;

use thiserror::Error;

pub use agent::Agent;
pub use config::{AgentConfig, ConfigError};
pub use control::{OffloadSocket, error_chain, run, run_with_offload};
pub use port::{Port, Uplink};
pub use stack::{LocalStack, StackError, StackInstance};

/// Why the agent, or one of its operations, failed.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("{0:?} is already the name of a port or uplink; pick another name")]
    NameTaken(String),
    #[error(transparent)]
    File(#[from] config_file::FileError),
    #[error("the agent was started without --config: there is no file to reload")]
    NoConfigFile,
    #[error("reload refused, nothing changed: {what}: {why}")]
    ReloadRefused { what: String, why: String },
    #[error("{0:?} is already the name of a tenant; pick another name")]
    TenantTaken(String),
    #[error("no tenant is named {name:?} (known: {known})")]
    UnknownTenant { name: String, known: String },
    #[error("routing table {table} is tenant {tenant}'s; pick another table")]
    TableTaken { table: u32, tenant: String },
    #[error("every conntrack zone (1 to 65535) is a tenant's; remove a tenant first")]
    NoFreeZone,
    #[error("tenant {name} still has ports ({ports}); remove them first")]
    TenantInUse { name: String, ports: String },
    #[error("uplink {name} is tenant {tenant}'s way out; remove the tenant first")]
    UplinkInUse { name: String, tenant: String },
    #[error("socket {socket} is already served by port {port}")]
    SocketTaken { socket: String, port: String },
    #[error("no port or uplink is named {name:?} (known: {known})")]
    UnknownDevice { name: String, known: String },
    #[error("port {port}: the vhost-user device cannot be built")]
    Backend {
        port: String,
        #[source]
        source: vhost_backend::BackendError,
    },
    #[error("port {port}: cannot serve its socket")]
    Serve {
        port: String,
        #[source]
        source: vhost_backend::daemon::DaemonError,
    },
    #[error("uplink {name}")]
    Uplink {
        name: String,
        #[source]
        source: knic_uplink::UplinkError,
    },
    #[error("cannot use the API socket {}", path.display())]
    ApiSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot take over the termination signals")]
    Signals(#[source] std::io::Error),
    #[error("the control loop failed: {0}")]
    EventLoop(String),
    #[error(transparent)]
    Offload(#[from] offload::OffloadError),
    #[error(transparent)]
    Service(#[from] services::ServiceError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Metrics(#[from] services::metrics::MetricsError),
    #[error("services need the library kernel of this process")]
    NoLocalKernel,
    #[error("out of host resources (threads, eventfds)")]
    Resources(#[source] std::io::Error),
}
