//! knic's vhost-user virtio-net backend device.
//!
//! The device serves one guest NIC over a vhost-user socket. Each queue pair ([`QueuePair`])
//! runs on its own worker thread and moves packets between the guest's split virtqueues and
//! an uplink ([`packet_ring::PacketPort`]: TAP, AF_PACKET, or in memory). Layout:
//!
//! * [`features`], [`config`]: what is offered and what a negotiation means;
//! * the data path's engine, shared with the library kernel's device, is `knic-virtio-net`:
//!   walking guest chains (hostile input, validated), the TX and RX engines, features, drop
//!   reasons and counters (`ring` re-exports its ring walk); [`rx_filter`]: the receive
//!   filter the driver programs through the control queue;
//! * `queue_pair` ([`QueuePair`]): the per-pair data path over the engine;
//! * `backend`: the rust-vmm `VhostUserBackend` glue; `vring` ([`NetVring`]): its vring, with
//!   the notification rule the framework lacks;
//! * `sys`: fd passing, thread names and signals (the only `unsafe`); the uplinks (TAP,
//!   AF_PACKET) are the `knic-uplink` crate under `nic-agent/`;
//! * [`front_door`], [`message`]: every message and fd from a frontend checked before the
//!   framework's handler sees it; `guest_fault`: SIGBUS in guest memory contained;
//! * `daemon`, `stats_server`: serving frontends one after another, exposing counters.

mod backend;
pub mod cli;
pub mod config;
pub mod ctrl;
pub mod daemon;
pub mod features;
pub mod front_door;
mod guest_fault;
pub mod message;
mod queue_pair;
mod ratelimit;
mod ring;
pub mod rx_filter;
pub mod stats;
pub mod stats_server;
mod sys;
mod vring;

pub use backend::{
    BackendError, CTRL_VRING_EVENT, GuestMem, MAX_QUEUE_PAIRS, NetBackend, NetBackendConfig,
    RX_VRING_EVENT, SharedBackend, TX_VRING_EVENT,
};
pub use knic_virtio_net::{Placement, RxBuffers, RxChainError, TxChainError, TxLimits};
pub use queue_pair::{HostError, QueuePair, QueuePairConfig};
pub use sys::{FdKind, fd_kind};
pub use vring::NetVring;
