//! AF_PACKET uplink on an existing interface, with `PACKET_VNET_HDR` (the 10-byte legacy
//! header). The kernel cannot be told which offloads the reader takes, so GSO packets the
//! guest did not negotiate are dropped by the queue pair (`rx_offload_not_negotiated`);
//! disable GRO on the interface for such guests.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use packet_ring::{PacketBatch, PacketPort, PortError};

use super::frames::{self, HdrLayout};
use crate::sys;

/// One AF_PACKET socket bound to an interface.
#[derive(Debug)]
pub struct PacketSocketPort {
    fd: OwnedFd,
}

impl PacketSocketPort {
    pub fn open(ifindex: libc::c_int, fanout_group: Option<u16>) -> io::Result<Self> {
        Ok(Self {
            fd: sys::packet_socket(ifindex, fanout_group)?,
        })
    }
}

impl PacketPort for PacketSocketPort {
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        frames::send(self.fd.as_raw_fd(), HdrLayout::Legacy, batch, |e| {
            matches!(
                e.raw_os_error(),
                Some(libc::EAGAIN | libc::ENOBUFS | libc::ENETDOWN | libc::EMSGSIZE | libc::EINVAL)
            )
        })
    }

    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        // An interface going down is not the socket failing: nothing to read for now.
        frames::recv(self.fd.as_raw_fd(), HdrLayout::Legacy, batch, |e| {
            e.raw_os_error() == Some(libc::ENETDOWN)
        })
    }

    fn kernel_drops(&mut self) -> u64 {
        sys::packet_drops(self.fd.as_raw_fd()).unwrap_or(0)
    }

    fn ready_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
