//! Network devices of the library kernel.
//!
//! The kernel's stock `virtio_net` driver binds to a virtio-mmio device modelled
//! here in Rust: register accesses arrive as the `iomem_access` host operation
//! ([`mmio`]), the device's registers, queue pairs, control queue and link state are
//! [`virtio_net`], the per-pair data path over the kernel's RAM (walked with
//! `virtio-queue`) is [`net_queue`], and frames go to and from a backend: a TAP with
//! a virtio-net header, so TSO/checksum offloads cross intact ([`tap`]), or knic
//! packet ports.

mod ethtool;
mod features;
pub(crate) mod memory;
pub(crate) mod mmio;
mod net_queue;
#[cfg(any(test, feature = "fuzzing"))]
pub mod queue_fuzz;
mod tap;
mod virtio_net;

pub(crate) use ethtool::{set_combined_channels, set_tx_offloads};
pub use net_queue::DropReason;
pub use tap::TapConfig;
pub(crate) use virtio_net::VirtioNetDevice;
pub use virtio_net::{
    DevicePort, DirectRx, DirectTx, MAX_QUEUE_PAIRS, NetBackend, NetDeviceConfig, NetDeviceStats,
    Offloads, QueuePairStats,
};
