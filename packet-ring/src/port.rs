//! The seam between a queue pair and whatever carries its packets onward (TAP, AF_PACKET, the
//! kernel library's device, an in-memory peer).

use std::os::fd::RawFd;

use thiserror::Error;

use crate::PacketBatch;

/// Host-side port failures. Per-packet refusals (a full queue, a link that is down) are not
/// errors: `send` reports them by accepting fewer packets.
#[derive(Debug, Error)]
pub enum PortError {
    #[error("sending to the port failed")]
    Send(#[source] std::io::Error),
    #[error("receiving from the port failed")]
    Recv(#[source] std::io::Error),
    #[error("configuring the port's offloads failed")]
    Offloads(#[source] std::io::Error),
}

/// Offloads the receiving guest accepts, so a port hands over only packets it can take (for a
/// TAP this becomes `TUNSETOFFLOAD`; the kernel segments or checksums everything else).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestOffloads {
    /// Partial checksums (`VIRTIO_NET_F_GUEST_CSUM`).
    pub csum: bool,
    pub tso4: bool,
    pub tso6: bool,
    pub ecn: bool,
}

/// A source and sink of packets for one queue pair.
pub trait PacketPort: Send + std::fmt::Debug {
    /// Offers every packet of `batch`; returns how many were taken. The rest are the caller's to
    /// count as dropped.
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError>;

    /// Appends waiting packets to `batch` until it is full or none wait; returns how many were
    /// appended (0 when none wait).
    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError>;

    /// A file descriptor that becomes readable when `recv` may return packets. Callers register
    /// it edge-triggered and call `recv` until it returns fewer packets than asked for.
    fn ready_fd(&self) -> RawFd;

    /// Packets the kernel dropped on their way to this port (a full socket buffer) since the
    /// last call. Read by the stats reader, not on the data path. Ports whose drops show in
    /// interface counters instead (a TAP's `tx_dropped`) keep the default.
    fn kernel_drops(&mut self) -> u64 {
        0
    }

    /// Restricts what `recv` may return to what the guest negotiated. Ports that cannot
    /// restrict (the in-memory one) keep the default, and the queue pair drops what the guest
    /// cannot take.
    fn set_guest_offloads(&mut self, offloads: GuestOffloads) -> Result<(), PortError> {
        let _ = offloads;
        Ok(())
    }
}
