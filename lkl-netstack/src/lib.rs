//! Linux's network stack as an in-process library: the safe API over `lkl-sys`.
//!
//! One kernel per process ([`Kernel::boot`] refuses a second boot). Any number of
//! host threads may make syscalls at once; each gets its own task inside the kernel,
//! and all of them share one file-descriptor table (they are threads of PID 1).
#![deny(unsafe_code)]

mod device;
mod host;
mod host_crypto;
mod kernel;
mod netlink;
pub mod raw;
mod socket;
mod sys;
pub mod tls;
mod user_memory;

/// The device data path's fuzzing harness, for the `device_queues` cargo-fuzz target
/// (`lkl-netstack/fuzz`); only with the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use device::queue_fuzz as fuzzing;
pub use host_crypto::{HostCryptoCounters, host_crypto_counters};

pub use device::{
    DevicePort, DirectRx, DirectTx, DropReason, MAX_QUEUE_PAIRS, NetBackend, NetDeviceConfig,
    NetDeviceStats, Offloads, QueuePairStats, TapConfig,
};
pub use kernel::{
    BootConfig, BootError, Kernel, MAIN_TABLE, NetDeviceError, RemoveNetDeviceError,
    UnknownNetDevice,
};
pub use netlink::{FwmarkRule, Link, NetfilterReply, NetlinkError, Route};
pub use socket::{Fd, Icmpv6Socket, TcpListener, TcpStream, UdpSocket};
pub use user_memory::UserBuffer;
