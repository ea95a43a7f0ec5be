//! AF_PACKET uplink on an existing interface, with `PACKET_VNET_HDR` (the 10-byte legacy
//! header). The kernel cannot be told which offloads the reader takes, so GSO packets the
//! guest did not negotiate are dropped by the queue pair (`rx_offload_not_negotiated`);
//! disable GRO on the interface for such guests.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use packet_ring::{PacketBatch, PacketPort, PortError, VirtioNetHdr};

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
        let mut sent = 0;
        for pkt in batch.packets() {
            let hdr = pkt.hdr.to_legacy_bytes();
            match sys::write2(self.fd.as_raw_fd(), &hdr, pkt.frame()) {
                Ok(_) => sent += 1,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(
                            libc::EAGAIN
                                | libc::ENOBUFS
                                | libc::ENETDOWN
                                | libc::EMSGSIZE
                                | libc::EINVAL
                        )
                    ) => {}
                Err(e) => return Err(PortError::Send(e)),
            }
        }
        Ok(sent)
    }

    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        let mut got = 0;
        let mut hdr = [0u8; VirtioNetHdr::LEGACY_LEN];
        while let Some(slot) = batch.next_slot() {
            match sys::read2(self.fd.as_raw_fd(), &mut hdr, slot.buf_mut()) {
                Ok(n) if n > VirtioNetHdr::LEGACY_LEN => {
                    let Ok(h) = VirtioNetHdr::parse_legacy(&hdr) else {
                        continue;
                    };
                    slot.hdr = h;
                    if slot.set_len(n - VirtioNetHdr::LEGACY_LEN) {
                        batch.commit();
                        got += 1;
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => break,
                Err(e) => return Err(PortError::Recv(e)),
            }
        }
        Ok(got)
    }

    fn ready_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
