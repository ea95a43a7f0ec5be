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
//! Between guest memory and the library kernel's RAM a frame is copied once each way
//! (issue 8), and the stats count each (`copies` in `knicctl stats`).
//!
//! Guest to library: the library device leaves a `lkl_netstack::DirectRx` per queue pair
//! in its `DevicePort` hand-off, which the port gives to its vhost queue pairs
//! (`NetBackend::set_direct_receiver`). The vhost worker opens the kernel's RX ring once
//! per batch (its lock held once, its interrupt raised once) and reads each guest TX chain
//! with `knic_virtio_net::direct::read_chain_into` (every check of the engine's
//! `read_chain`) straight into the buffers the kernel posted; the library's `rx_direct`
//! counter says it copied none of them. Too few buffers posted leaves the guest's chain in
//! its ring (`tx_stalls`), and the kernel's next RX kick wakes the worker through the
//! receiver's wake fd.
//!
//! Library to guest, the mirror image: the hand-off also leaves a `lkl_netstack::DirectTx`
//! per queue pair (`NetBackend::set_direct_sender`). The kernel's TX kick no longer sends:
//! it only writes the sender's wake fd, which is the vhost worker's readiness fd. The
//! worker opens the kernel's TX ring once per batch, each kernel chain (walked and its
//! header checked against the kernel's negotiation, every buffer against its RAM) is lent
//! as its buffers after the header, and the engine's `RxBuffers::place_scattered` writes
//! it straight into the guest's RX chains (MRG_RXBUF `num_buffers`, the GSO/checksum
//! header carried over), after the packet path's checks (ring enabled, receive filter, the
//! guest's negotiation). The batch's kernel chains are published together, the kernel
//! interrupted once after its lock is released, the guest signalled once per round as the
//! ring's EVENT_IDX says; the library's `tx_direct` counter says it copied none of them.
//! A guest without RX buffers leaves the kernel's chains in its TX ring (the kernel's
//! queue stops, as for a full NIC ring) until its RX kick.
//!
//! The seam (`seam`) stays each queue pair's uplink for the guest's life (ring attached,
//! offloads negotiated) and carries no frame either way.

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
    #[error(
        "{name:?} is not a sysctl name: dot-separated parts of letters, digits, '_' and '-' \
         (net.ipv4.tcp_congestion_control)"
    )]
    BadSysctlName { name: String },
    #[error(
        "sysctl {name}: the value must be one line of at most {max} bytes",
        max = knic_api::config::MAX_SYSCTL_VALUE
    )]
    BadSysctlValue { name: String },
    #[error("the library kernel has no sysctl {name}")]
    NoSuchSysctl { name: String },
    #[error(
        "port {port}: cannot make or find its TAP in network namespace {} (is the pod gone?)",
        netns.display()
    )]
    PortNetns {
        port: String,
        netns: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    /// `front` names the vhost-user socket or the TAP.
    #[error("{front} is already served by port {port}")]
    SocketTaken { front: String, port: String },
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
