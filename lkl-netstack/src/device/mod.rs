//! Network devices of the library kernel.
//!
//! The kernel's stock `virtio_net` driver binds to a virtio-mmio device modelled
//! here in Rust: register accesses arrive as the `iomem_access` host operation
//! ([`mmio`]), the virtqueues live in the kernel's RAM and are walked with
//! `virtio-queue` ([`virtio_net`]), and frames go to and from a backend (a TAP
//! with a virtio-net header, so TSO/checksum offloads cross intact: [`tap`]).

mod ethtool;
mod features;
pub(crate) mod memory;
pub(crate) mod mmio;
mod net_queue;
mod tap;
mod virtio_net;

pub(crate) use ethtool::set_combined_channels;
pub use net_queue::DropReason;
pub use tap::TapConfig;
pub(crate) use virtio_net::VirtioNetDevice;
pub use virtio_net::{
    DevicePort, MAX_QUEUE_PAIRS, NetBackend, NetDeviceConfig, NetDeviceStats, Offloads,
    QueuePairStats,
};
