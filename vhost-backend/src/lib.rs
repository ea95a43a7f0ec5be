//! knic's vhost-user virtio-net backend device.
//!
//! The device serves one guest NIC over a vhost-user socket. Each queue pair ([`QueuePair`])
//! runs on its own worker thread and moves packets between the guest's split virtqueues and
//! an uplink ([`packet_ring::PacketPort`]: TAP, AF_PACKET, or in memory). Layout:
//!
//! * [`features`], [`config`]: what is offered and what a negotiation means;
//! * `tx`, `rx`, `ring`: walking guest chains (hostile input, validated); [`rx_filter`]: the
//!   receive filter the driver programs through the control queue;
//! * `queue_pair` ([`QueuePair`]): the per-pair data path;
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
mod rx;
pub mod rx_filter;
pub mod stats;
pub mod stats_server;
mod sys;
mod tx;
mod vring;

pub use backend::{
    BackendError, CTRL_VRING_EVENT, GuestMem, MAX_QUEUE_PAIRS, NetBackend, NetBackendConfig,
    RX_VRING_EVENT, SharedBackend, TX_VRING_EVENT,
};
pub use queue_pair::{HostError, QueuePair, QueuePairConfig};
pub use rx::{Placement, RxBuffers, RxChainError};
pub use sys::{FdKind, fd_kind};
pub use tx::{TxChainError, TxLimits};
pub use vring::NetVring;
