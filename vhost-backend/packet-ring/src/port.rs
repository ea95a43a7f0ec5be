//! The seam between a queue pair and whatever carries its packets onward (TAP, AF_PACKET, the
//! kernel library's device, an in-memory peer).
//!
//! A port has two halves that share nothing a caller must lock: a [`PacketSink`] that takes
//! packets out through the port and a [`PacketSource`] that yields the packets coming in. A
//! worker that does both on one thread (a vhost queue pair) holds the whole [`PacketPort`]; a
//! device whose transmit and receive run on different threads (the library kernel's device:
//! TX in the kernel's queue kick, RX on its own thread) [`split`](PacketPort::split)s it and
//! gives each thread its half.

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
    #[error("attaching or detaching the port's queue failed")]
    Attach(#[source] std::io::Error),
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

impl GuestOffloads {
    /// Every offload the virtio-net header can express.
    pub const ALL: Self = Self {
        csum: true,
        tso4: true,
        tso6: true,
        ecn: true,
    };
}

/// The sending half of a port: packets leave through it.
pub trait PacketSink: Send + std::fmt::Debug {
    /// Offers every packet of `batch`; returns how many were taken. The rest are the caller's to
    /// count as dropped.
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError>;

    /// As [`send`](Self::send), but the port may take the packets' buffers instead of
    /// copying them: each taken packet's slot is left holding an empty buffer of at least
    /// the same capacity (one the port owned), so the caller's batch stays whole and
    /// allocation-free. The caller must treat every packet of `batch` as gone afterwards
    /// (it clears the batch). Ports that keep packets in buffers of their own (an in-memory
    /// ring of owned packets, the agent's seam) swap; the default, for ports that write
    /// packets out at once (a socket, a TAP), is `send`.
    fn send_swap(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        self.send(batch)
    }

    /// Offloads a packet given to `send` may still ask for: what the far side of the port
    /// completes. A port that passes the virtio-net header on (TAP, AF_PACKET: the host kernel
    /// segments and checksums) takes them all, the default; one with no header (AF_XDP) takes
    /// none. The device that feeds the port offers its driver only these (for the library's
    /// virtio-net device: no `HOST_TSO*`/`CSUM` without `tso4`/`tso6`/`csum`), so the
    /// kernel above it segments and checksums in software instead.
    fn tx_offloads(&self) -> GuestOffloads {
        GuestOffloads::ALL
    }

    /// How many packets `send` would take now without refusing any for want of room: what a
    /// sender that applies backpressure (leaves packets in its own queue, as a NIC leaves
    /// descriptors in its ring) takes at most. An answer of 0 arms [`room_fd`](Self::room_fd):
    /// it becomes readable once room returns, so the sender sleeps instead of refusing.
    /// Ports that queue in the host kernel (a socket, a TAP) cannot tell and keep the default,
    /// `usize::MAX`: their refusals are drops.
    fn room(&mut self) -> usize {
        usize::MAX
    }

    /// A file descriptor that becomes readable when room returns after [`room`](Self::room)
    /// said 0; `None` for ports whose `room` never says 0. Callers register it
    /// edge-triggered (or poll it only while waiting for room).
    fn room_fd(&self) -> Option<RawFd> {
        None
    }
}

/// The receiving half of a port: packets arrive through it.
pub trait PacketSource: Send + std::fmt::Debug {
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

    /// Whether the host may steer incoming packets to this port: a port that is one queue of
    /// several (a multi-queue TAP) is detached while its guest queue cannot receive, so the
    /// host spreads flows over the queues that can. Ports that are the only way in (a single
    /// queue, the in-memory one) keep the default, which does nothing.
    fn set_attached(&mut self, attached: bool) -> Result<(), PortError> {
        let _ = attached;
        Ok(())
    }
}

/// A source and sink of packets for one queue pair.
pub trait PacketPort: PacketSink + PacketSource {
    /// Separates the halves so that sending and receiving can run on different threads with
    /// no lock between them. Both halves keep the port's underlying resource (fd, rings) alive.
    fn split(self: Box<Self>) -> (Box<dyn PacketSink>, Box<dyn PacketSource>);
}

/// Implements [`PacketSink`], [`PacketSource`] and [`PacketPort`] for a port struct made of a
/// `sink` field and a `source` field (its halves), by delegation: the whole port and its split
/// halves then run the very same code.
#[macro_export]
macro_rules! port_from_halves {
    ($port:ty) => {
        impl $crate::PacketSink for $port {
            fn send(
                &mut self,
                batch: &$crate::PacketBatch,
            ) -> ::std::result::Result<usize, $crate::PortError> {
                $crate::PacketSink::send(&mut self.sink, batch)
            }

            fn send_swap(
                &mut self,
                batch: &mut $crate::PacketBatch,
            ) -> ::std::result::Result<usize, $crate::PortError> {
                $crate::PacketSink::send_swap(&mut self.sink, batch)
            }

            fn tx_offloads(&self) -> $crate::GuestOffloads {
                $crate::PacketSink::tx_offloads(&self.sink)
            }

            fn room(&mut self) -> usize {
                $crate::PacketSink::room(&mut self.sink)
            }

            fn room_fd(&self) -> ::std::option::Option<::std::os::fd::RawFd> {
                $crate::PacketSink::room_fd(&self.sink)
            }
        }

        impl $crate::PacketSource for $port {
            fn recv(
                &mut self,
                batch: &mut $crate::PacketBatch,
            ) -> ::std::result::Result<usize, $crate::PortError> {
                $crate::PacketSource::recv(&mut self.source, batch)
            }

            fn ready_fd(&self) -> ::std::os::fd::RawFd {
                $crate::PacketSource::ready_fd(&self.source)
            }

            fn kernel_drops(&mut self) -> u64 {
                $crate::PacketSource::kernel_drops(&mut self.source)
            }

            fn set_guest_offloads(
                &mut self,
                offloads: $crate::GuestOffloads,
            ) -> ::std::result::Result<(), $crate::PortError> {
                $crate::PacketSource::set_guest_offloads(&mut self.source, offloads)
            }

            fn set_attached(
                &mut self,
                attached: bool,
            ) -> ::std::result::Result<(), $crate::PortError> {
                $crate::PacketSource::set_attached(&mut self.source, attached)
            }
        }

        impl $crate::PacketPort for $port {
            fn split(
                self: ::std::boxed::Box<Self>,
            ) -> (
                ::std::boxed::Box<dyn $crate::PacketSink>,
                ::std::boxed::Box<dyn $crate::PacketSource>,
            ) {
                (
                    ::std::boxed::Box::new(self.sink),
                    ::std::boxed::Box::new(self.source),
                )
            }
        }
    };
}
