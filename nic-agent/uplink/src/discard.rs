//! The discard uplink (`discard:`): takes every packet and drops it, and never receives —
//! what DPDK's `net_null` is to testpmd. With nothing behind the device, a benchmark measures
//! the device's own rate (ring walk, guest-memory copy, used-ring publication), the number
//! every real uplink and the agent start from.
//!
//! The sink touches no payload: the device has already copied the frame out of guest
//! memory into the batch, as it does for every uplink, and the batch's buffers stay the
//! caller's (`send_swap` keeps the default, which takes nothing). The source's ready fd is
//! an eventfd nothing ever signals.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use packet_ring::{PacketBatch, PacketSink, PacketSource, PortError};

use crate::sys;

/// One queue of the discard uplink.
#[derive(Debug)]
pub struct DiscardPort {
    sink: DiscardSink,
    source: DiscardSource,
}

/// Takes every packet and drops it, counting them.
#[derive(Debug, Default)]
pub struct DiscardSink {
    packets: u64,
}

/// Never yields a packet.
#[derive(Debug)]
pub struct DiscardSource {
    never: OwnedFd,
}

impl DiscardPort {
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            sink: DiscardSink::default(),
            source: DiscardSource {
                never: sys::eventfd()?,
            },
        })
    }
}

impl DiscardSink {
    /// Packets taken (and dropped) so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }
}

impl PacketSink for DiscardSink {
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        self.packets += batch.len() as u64;
        Ok(batch.len())
    }
}

impl PacketSource for DiscardSource {
    fn recv(&mut self, _batch: &mut PacketBatch) -> Result<usize, PortError> {
        Ok(0)
    }

    fn ready_fd(&self) -> RawFd {
        self.never.as_raw_fd()
    }
}

packet_ring::port_from_halves!(DiscardPort);

#[cfg(test)]
mod tests {
    use packet_ring::VirtioNetHdr;

    use super::*;

    #[test]
    fn takes_everything_and_yields_nothing() {
        let mut port = DiscardPort::open().expect("eventfd");
        let mut batch = PacketBatch::new(4, 2048);
        for len in [60, 1514, 2000] {
            assert!(batch.push(VirtioNetHdr::default(), &vec![0xab; len]));
        }
        assert_eq!(port.send(&batch).expect("send"), 3);
        assert_eq!(port.sink.packets(), 3);
        let mut into = PacketBatch::new(4, 2048);
        assert_eq!(port.recv(&mut into).expect("recv"), 0);
        assert!(into.is_empty());
        // The ready fd is a real descriptor that is never readable: a read would block.
        let mut never = std::fs::File::from(port.source.never.try_clone().expect("dup"));
        let err = std::io::Read::read(&mut never, &mut [0; 8]).expect_err("nothing to read");
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }
}
