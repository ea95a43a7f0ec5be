//! An in-memory uplink: a [`PacketPort`] whose other end is a [`MemoryPeer`] in the same
//! process. Tests drive queue pairs through it; in-process peers can use it as a loopback.
//!
//! Readiness: each side owns an eventfd that the other side writes after publishing packets,
//! so the port can sit in an epoll set like a TAP fd.

use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::{
    PacketBatch, PacketReceiver, PacketSender, PacketSink, PacketSource, PortError, VirtioNetHdr,
    packet_channel,
};

/// Makes a connected port/peer pair whose rings hold `capacity` packets of `buf_size` bytes in
/// each direction.
pub fn memory_port_pair(
    capacity: usize,
    buf_size: usize,
) -> std::io::Result<(MemoryPort, MemoryPeer)> {
    let (to_peer, from_port) = packet_channel(capacity, buf_size);
    let (to_port, from_peer) = packet_channel(capacity, buf_size);
    let port_ready = EventFd::new(EFD_NONBLOCK)?;
    let peer_ready = EventFd::new(EFD_NONBLOCK)?;
    Ok((
        MemoryPort {
            sink: MemorySink {
                tx: to_peer,
                peer_ready: peer_ready.try_clone()?,
            },
            source: MemorySource {
                rx: from_peer,
                ready: port_ready.try_clone()?,
            },
        },
        MemoryPeer {
            tx: to_port,
            rx: from_port,
            ready: peer_ready,
            port_ready,
        },
    ))
}

/// The queue-pair side of an in-memory uplink.
#[derive(Debug)]
pub struct MemoryPort {
    sink: MemorySink,
    source: MemorySource,
}

/// The sending half of a [`MemoryPort`]: publishes to the peer and wakes it.
#[derive(Debug)]
pub struct MemorySink {
    tx: PacketSender,
    peer_ready: EventFd,
}

/// The receiving half of a [`MemoryPort`]: what the peer sent, with the port's readiness fd.
#[derive(Debug)]
pub struct MemorySource {
    rx: PacketReceiver,
    ready: EventFd,
}

impl PacketSink for MemorySink {
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        let n = self.tx.send_batch(batch);
        if n > 0 {
            self.peer_ready.write(1).map_err(PortError::Send)?;
        }
        Ok(n)
    }
}

impl PacketSource for MemorySource {
    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        // Reset readiness before looking, so a packet published after the look re-arms it.
        if let Err(e) = self.ready.read()
            && e.kind() != std::io::ErrorKind::WouldBlock
        {
            return Err(PortError::Recv(e));
        }
        Ok(self.rx.recv_batch(batch))
    }

    fn ready_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }
}

crate::port_from_halves!(MemoryPort);

/// The far side of an in-memory uplink: what a test or an in-process peer holds.
#[derive(Debug)]
pub struct MemoryPeer {
    tx: PacketSender,
    rx: PacketReceiver,
    ready: EventFd,
    port_ready: EventFd,
}

impl MemoryPeer {
    /// Sends one packet to the port; `false` when the ring is full or the frame too big.
    pub fn send(&mut self, hdr: VirtioNetHdr, frame: &[u8]) -> std::io::Result<bool> {
        let ok = self.tx.send(hdr, frame);
        if ok {
            self.port_ready.write(1)?;
        }
        Ok(ok)
    }

    /// Hands up to `max` packets the port sent to `f`; returns how many.
    pub fn recv_with(&mut self, max: usize, f: impl FnMut(&crate::Packet)) -> usize {
        if let Err(e) = self.ready.read() {
            // Only WouldBlock is possible on a non-blocking eventfd we own.
            debug_assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        }
        self.rx.recv_with(max, f)
    }

    /// An fd that becomes readable when the port has sent packets.
    pub fn ready_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PacketPort;

    #[test]
    fn packets_cross_both_ways_and_readiness_follows() {
        let (mut port, mut peer) = memory_port_pair(8, 128).unwrap();
        let hdr = VirtioNetHdr {
            gso_type: VirtioNetHdr::GSO_TCPV6,
            gso_size: 1400,
            ..Default::default()
        };
        assert!(peer.send(hdr, b"hello").unwrap());
        assert_eq!(port.source.ready.read().unwrap(), 1);
        let mut batch = PacketBatch::new(4, 128);
        assert_eq!(port.recv(&mut batch).unwrap(), 1);
        assert_eq!(batch.packets()[0].frame(), b"hello");
        assert_eq!(batch.packets()[0].hdr, hdr);
        assert_eq!(port.recv(&mut batch).unwrap(), 0);

        assert_eq!(port.send(&batch).unwrap(), 1);
        let mut got = Vec::new();
        assert_eq!(
            peer.recv_with(8, |p| got.push((p.hdr, p.frame().to_vec()))),
            1
        );
        assert_eq!(got, vec![(hdr, b"hello".to_vec())]);
    }

    #[test]
    fn split_halves_work_from_two_threads() {
        let (port, mut peer) = memory_port_pair(64, 128).unwrap();
        let (mut sink, mut source) = (Box::new(port) as Box<dyn PacketPort>).split();
        let receiver = std::thread::spawn(move || {
            let mut batch = PacketBatch::new(64, 128);
            while batch.len() < 32 {
                source.recv(&mut batch).unwrap();
                std::thread::yield_now();
            }
            batch
                .packets()
                .iter()
                .map(|p| p.frame()[0])
                .collect::<Vec<_>>()
        });
        for i in 0..32u8 {
            assert!(peer.send(VirtioNetHdr::default(), &[i]).unwrap());
        }
        let mut out = PacketBatch::new(1, 128);
        assert!(out.push(VirtioNetHdr::default(), b"out"));
        assert_eq!(sink.send(&out).unwrap(), 1);
        assert_eq!(receiver.join().unwrap(), (0..32).collect::<Vec<u8>>());
        let mut got = 0;
        peer.recv_with(8, |p| {
            assert_eq!(p.frame(), b"out");
            got += 1;
        });
        assert_eq!(got, 1);
    }
}
