//! AF_PACKET uplink on an existing interface, with `PACKET_VNET_HDR` (the 10-byte legacy
//! header). The kernel cannot be told which offloads the reader takes, so GSO packets the
//! guest did not negotiate are dropped by the queue pair (`rx_offload_not_negotiated`);
//! disable GRO on the interface for such guests.
//!
//! Each half has its own socket: the sink a send-only one (bound with protocol 0, it never
//! receives), the source a receiving one. With several queue pairs the receiving sockets
//! form a `PACKET_FANOUT_HASH` group, and the group must hold only pairs whose guest queue
//! can receive, or the flows hashed to a disabled pair are lost. A member cannot leave a
//! fanout group (the kernel refuses to rebind it), so a detached pair
//! ([`PacketSource::set_attached`]) closes its receiving socket, which leaves the group, and
//! an attach opens a new one that joins it again. The pair's [`PacketSource::ready_fd`] is an
//! epoll instance holding whichever receiving socket is current, so the caller's
//! registration survives the swap. Multi-queue sources start detached, like TAP queues.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use packet_ring::{PacketBatch, PacketSink, PacketSource, PortError, VirtioNetHdr};

use crate::sys;

/// One AF_PACKET uplink queue bound to an interface. Batches cross the sockets with one
/// `sendmmsg`/`recvmmsg` per 64 packets; the header scratch space is part of each half, so
/// nothing is allocated per call.
#[derive(Debug)]
pub struct PacketSocketPort {
    sink: PacketSocketSink,
    source: PacketSocketSource,
}

/// The sending half: `sendmmsg` on its send-only socket.
#[derive(Debug)]
pub struct PacketSocketSink {
    fd: OwnedFd,
    tx_hdrs: [[u8; VirtioNetHdr::LEGACY_LEN]; sys::MMSG_BATCH],
}

/// The receiving half: `recvmmsg` on its receiving socket (none while detached), and its
/// drop count.
#[derive(Debug)]
pub struct PacketSocketSource {
    ifindex: libc::c_int,
    /// The receiving socket; `None` while detached from the fanout group.
    rx: Option<OwnedFd>,
    /// What `ready_fd` returns: an epoll instance with `rx` in it.
    ready: OwnedFd,
    fanout: Option<Arc<FanoutGroup>>,
    rx_hdrs: [[u8; VirtioNetHdr::LEGACY_LEN]; sys::MMSG_BATCH],
    rx_lens: [usize; sys::MMSG_BATCH],
}

/// The fanout group the receiving sockets of one uplink's queue pairs share. Its id is the
/// kernel's choice (unique when the first member joins); later joins use it.
#[derive(Debug, Default)]
pub struct FanoutGroup {
    /// The group id, once a member joined; held while a member joins or leaves.
    id: Mutex<Option<u16>>,
}

impl FanoutGroup {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Opens a receiving socket on `ifindex` in this group.
    fn join(&self, ifindex: libc::c_int) -> io::Result<OwnedFd> {
        let mut id = self.id.lock().unwrap_or_else(PoisonError::into_inner);
        let join = match *id {
            Some(known) => sys::FanoutJoin::Id(known),
            None => sys::FanoutJoin::Unique,
        };
        let (fd, got) = match sys::packet_rx_socket(ifindex, Some(join)) {
            // Every member had left, and another group took the id meanwhile: start afresh.
            Err(e) if join != sys::FanoutJoin::Unique && e.raw_os_error() == Some(libc::EINVAL) => {
                sys::packet_rx_socket(ifindex, Some(sys::FanoutJoin::Unique))?
            }
            r => r?,
        };
        *id = got;
        Ok(fd)
    }
}

impl PacketSocketPort {
    /// Opens a queue on interface `ifindex`: alone (`fanout` `None`, always receiving) or as
    /// one queue of several sharing `fanout`, in which case it starts detached.
    pub fn open(ifindex: libc::c_int, fanout: Option<Arc<FanoutGroup>>) -> io::Result<Self> {
        let ready = sys::epoll_new()?;
        let mut source = PacketSocketSource {
            ifindex,
            rx: None,
            ready,
            fanout,
            rx_hdrs: [[0; VirtioNetHdr::LEGACY_LEN]; sys::MMSG_BATCH],
            rx_lens: [0; sys::MMSG_BATCH],
        };
        if source.fanout.is_none() {
            source.open_rx()?;
        }
        Ok(Self {
            sink: PacketSocketSink {
                fd: sys::packet_tx_socket(ifindex)?,
                tx_hdrs: [[0; VirtioNetHdr::LEGACY_LEN]; sys::MMSG_BATCH],
            },
            source,
        })
    }
}

impl PacketSocketSource {
    fn open_rx(&mut self) -> io::Result<()> {
        let fd = match &self.fanout {
            Some(group) => group.join(self.ifindex)?,
            None => sys::packet_rx_socket(self.ifindex, None)?.0,
        };
        sys::epoll_add(self.ready.as_raw_fd(), fd.as_raw_fd())?;
        self.rx = Some(fd);
        Ok(())
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
        // Detached: not in the group, nothing steered here.
        let Some(rx) = &self.rx else {
            return Ok(0);
        };
        let rx = rx.as_raw_fd();
        let mut total = 0;
        loop {
            let spare = batch.spare_mut();
            let asked = spare.len().min(sys::MMSG_BATCH);
            if asked == 0 {
                break;
            }
            let got = match sys::recv_datagrams(rx, &mut self.rx_hdrs, spare, &mut self.rx_lens) {
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
        self.rx
            .as_ref()
            .and_then(|fd| sys::packet_drops(fd.as_raw_fd()).ok())
            .unwrap_or(0)
    }

    fn ready_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }

    /// Joins the fanout group (a new receiving socket) or leaves it (closing the socket;
    /// what waited in it is dropped, as a detached TAP queue's backlog is). A lone queue is
    /// always attached.
    fn set_attached(&mut self, attached: bool) -> Result<(), PortError> {
        if self.fanout.is_none() || attached == self.rx.is_some() {
            return Ok(());
        }
        if attached {
            self.open_rx().map_err(PortError::Attach)?;
        } else {
            self.rx = None;
        }
        Ok(())
    }
}

packet_ring::port_from_halves!(PacketSocketPort);
