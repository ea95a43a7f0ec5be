//! AF_PACKET uplink on an existing interface, with `PACKET_VNET_HDR` (the 10-byte legacy
//! header). The kernel cannot be told which offloads the reader takes, so GSO packets the
//! guest did not negotiate are dropped by the queue pair (`rx_offload_not_negotiated`);
//! disable GRO on the interface for such guests.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use packet_ring::{PacketBatch, PacketSink, PacketSource, PortError, VirtioNetHdr};

use crate::sys;

/// One AF_PACKET socket bound to an interface. Batches cross the socket with one
/// `sendmmsg`/`recvmmsg` per 64 packets; the header scratch space is part of
/// each half, so nothing is allocated per call.
#[derive(Debug)]
pub struct PacketSocketPort {
    sink: PacketSocketSink,
    source: PacketSocketSource,
}

/// The sending half: `sendmmsg` on the shared socket.
#[derive(Debug)]
pub struct PacketSocketSink {
    fd: Arc<OwnedFd>,
    tx_hdrs: [[u8; VirtioNetHdr::LEGACY_LEN]; sys::MMSG_BATCH],
}

/// The receiving half: `recvmmsg` on the shared socket, and its drop count.
#[derive(Debug)]
pub struct PacketSocketSource {
    fd: Arc<OwnedFd>,
    rx_hdrs: [[u8; VirtioNetHdr::LEGACY_LEN]; sys::MMSG_BATCH],
    rx_lens: [usize; sys::MMSG_BATCH],
}

impl PacketSocketPort {
    pub fn open(ifindex: libc::c_int, fanout_group: Option<u16>) -> io::Result<Self> {
        let fd = Arc::new(sys::packet_socket(ifindex, fanout_group)?);
        Ok(Self {
            sink: PacketSocketSink {
                fd: Arc::clone(&fd),
                tx_hdrs: [[0; VirtioNetHdr::LEGACY_LEN]; sys::MMSG_BATCH],
            },
            source: PacketSocketSource {
                fd,
                rx_hdrs: [[0; VirtioNetHdr::LEGACY_LEN]; sys::MMSG_BATCH],
                rx_lens: [0; sys::MMSG_BATCH],
            },
        })
    }
}

/// Per-packet send failures that only cost that packet.
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EAGAIN
                | libc::ENOBUFS
                | libc::ENETDOWN
                | libc::EMSGSIZE
                | libc::EINVAL
                | libc::EINTR
        )
    )
}

impl PacketSink for PacketSocketSink {
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        let pkts = batch.packets();
        let mut sent = 0;
        let mut next = 0;
        while next < pkts.len() {
            let chunk = &pkts[next..pkts.len().min(next + sys::MMSG_BATCH)];
            for (h, p) in self.tx_hdrs.iter_mut().zip(chunk) {
                *h = p.hdr.to_legacy_bytes();
            }
            match sys::send_datagrams(self.fd.as_raw_fd(), &self.tx_hdrs[..chunk.len()], chunk) {
                Ok(k) if k > 0 => {
                    sent += k;
                    next += k;
                }
                // The chunk's first packet was refused: it is dropped, the rest retried.
                Ok(_) => next += 1,
                Err(e) if refused(&e) => next += 1,
                Err(e) => return Err(PortError::Send(e)),
            }
        }
        Ok(sent)
    }
}

impl PacketSource for PacketSocketSource {
    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        let hlen = VirtioNetHdr::LEGACY_LEN;
        let mut total = 0;
        loop {
            let spare = batch.spare_mut();
            let asked = spare.len().min(sys::MMSG_BATCH);
            if asked == 0 {
                break;
            }
            let got = match sys::recv_datagrams(
                self.fd.as_raw_fd(),
                &mut self.rx_hdrs,
                spare,
                &mut self.rx_lens,
            ) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An interface going down is not the socket failing: nothing to read now.
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => break,
                Err(e) => return Err(PortError::Recv(e)),
            };
            // Keep well-formed datagrams, packed at the front of the spare slots.
            let mut kept = 0;
            for i in 0..got {
                let len = self.rx_lens[i];
                if len <= hlen {
                    continue;
                }
                // The kernel wrote this header; an odd one only costs the frame.
                let Ok(h) = VirtioNetHdr::parse_legacy(&self.rx_hdrs[i]) else {
                    continue;
                };
                spare.swap(kept, i);
                spare[kept].hdr = h;
                if spare[kept].set_len(len - hlen) {
                    kept += 1;
                }
            }
            batch.commit_n(kept);
            total += kept;
            if got < asked {
                break;
            }
        }
        Ok(total)
    }

    fn kernel_drops(&mut self) -> u64 {
        sys::packet_drops(self.fd.as_raw_fd()).unwrap_or(0)
    }

    fn ready_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

packet_ring::port_from_halves!(PacketSocketPort);
