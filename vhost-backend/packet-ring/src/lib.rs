//! The packet vocabulary shared by every part of knic.
//!
//! A packet crossing a boundary inside knic (guest queue pair to uplink, uplink to the kernel
//! library's device) is a [`Packet`]: the virtio-net header metadata ([`VirtioNetHdr`]: GSO kind
//! and size, checksum start and offset, flags) plus a frame buffer that was allocated once, up
//! front. Packets move in [`PacketBatch`]es and on bounded single-producer single-consumer rings
//! ([`spsc`]); nothing on the per-packet path allocates.
//!
//! The seam between a queue pair and whatever carries its packets onward is the [`PacketPort`]
//! trait: a [`PacketSink`] and a [`PacketSource`] that [`PacketPort::split`] separates for
//! devices whose sending and receiving run on different threads. [`MemoryPort`] is the
//! in-memory implementation (a pair of packet channels plus an eventfd for readiness) used by
//! tests and by in-process peers.

mod batch;
mod channel;
mod hdr;
mod memory_port;
mod port;
pub mod spsc;

pub use batch::{Packet, PacketBatch};
pub use channel::{PacketReceiver, PacketSender, packet_channel};
pub use hdr::{GsoKind, HdrError, VirtioNetHdr};
pub use memory_port::{MemoryPeer, MemoryPort, MemorySink, MemorySource, memory_port_pair};
pub use port::{GuestOffloads, PacketPort, PacketSink, PacketSource, PortError};

/// Largest frame (without the virtio-net header) any knic buffer holds: a 64 KiB GSO payload plus
/// Ethernet and VLAN headers. Mirrors the 65550-byte bound the virtio spec gives for
/// `VIRTIO_NET_F_GUEST_TSO*` receive buffers (virtio 1.2, 5.1.6.3.1) minus the 12-byte header.
pub const MAX_FRAME_LEN: usize = 65_550;
