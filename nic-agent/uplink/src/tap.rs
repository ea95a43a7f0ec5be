//! TAP uplink: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` with a 12-byte header, offloads set with
//! `TUNSETOFFLOAD` from what the guest negotiated so the kernel segments/checksums only what
//! the guest cannot take.
//!
//! The two halves share the queue's fd through an `Arc`: a TAP queue is one file, and the
//! kernel serialises reads and writes on it, so no lock is needed between them.
//!
//! A multi-queue TAP steers each flow to one of its attached queues, whether or not the guest
//! has enabled the pair behind it; frames for a disabled pair could only be dropped. So a
//! queue starts detached (`TUNSETQUEUE`, as the library kernel's TAP backend does) and is
//! attached only while its pair can receive ([`PacketSource::set_attached`]). A detached queue
//! still takes writes and ioctls; the kernel steers nothing to it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use packet_ring::{GuestOffloads, PacketBatch, PacketSink, PacketSource, PortError, VirtioNetHdr};

use crate::sys;

/// One queue of a TAP device.
#[derive(Debug)]
pub struct TapPort {
    sink: TapSink,
    source: TapSource,
}

/// The writing half of a TAP queue.
#[derive(Debug)]
pub struct TapSink {
    fd: Arc<OwnedFd>,
}

/// The reading half of a TAP queue (which also owns its offload setting and whether the
/// queue is attached).
#[derive(Debug)]
pub struct TapSource {
    fd: Arc<OwnedFd>,
    /// One queue of several: attaching and detaching apply (a lone queue is always attached).
    multi_queue: bool,
    attached: bool,
}

impl TapPort {
    /// Attaches to TAP `name` (creating it); `multi_queue` for more than one queue pair, in
    /// which case the queue starts detached (module doc).
    pub fn open(name: &str, multi_queue: bool) -> io::Result<Self> {
        let fd = sys::tap_open(name, multi_queue)?;
        sys::tap_set_vnet_hdr_size(fd.as_raw_fd(), VirtioNetHdr::LEN as libc::c_int)?;
        // Until a guest negotiates offloads, ask the kernel for plain frames.
        sys::tap_set_offload(fd.as_raw_fd(), 0)?;
        if multi_queue {
            sys::tap_set_queue_attached(fd.as_raw_fd(), false)?;
        }
        let fd = Arc::new(fd);
        Ok(Self {
            sink: TapSink {
                fd: Arc::clone(&fd),
            },
            source: TapSource {
                fd,
                multi_queue,
                attached: !multi_queue,
            },
        })
    }
}

impl TapPort {
    /// Makes the TAP outlive this queue's fd (or not): see [`open_tap_in`].
    pub fn set_persistent(&self, persist: bool) -> io::Result<()> {
        sys::tap_set_persist(self.source.fd.as_raw_fd(), persist)
    }
}

/// Opens `queue_pairs` queues of TAP `name` inside the network namespace at `netns` (a
/// pod's), creating the TAP there or attaching to the one already there, gives it `mac`
/// and makes it persistent: it stays in the pod, with no carrier, while no fd holds it (an
/// agent restarting), until [`delete_tap_in`].
pub fn open_tap_in(
    netns: &std::path::Path,
    name: &str,
    queue_pairs: usize,
    mac: [u8; 6],
) -> io::Result<Vec<TapPort>> {
    sys::in_netns(netns, || {
        let ports = (0..queue_pairs)
            .map(|_| TapPort::open(name, queue_pairs > 1))
            .collect::<io::Result<Vec<_>>>()?;
        if let Some(first) = ports.first() {
            first.set_persistent(true)?;
        }
        sys::set_interface_mac(name, mac)?;
        Ok(ports)
    })
}

/// Deletes the persistent TAP `name` in the namespace at `netns` once nothing holds it
/// (the port's queues closed): attaches, clears `TUNSETPERSIST`, closes. A namespace or TAP
/// that is gone already is not an error (the pod went first).
pub fn delete_tap_in(netns: &std::path::Path, name: &str) -> io::Result<()> {
    if !netns.exists() {
        return Ok(());
    }
    sys::in_netns(netns, || {
        if sys::if_index(name).is_err() {
            return Ok(());
        }
        // The port's own queues may take a moment to close (EBUSY until then).
        let mut tries = 0;
        let fd = loop {
            match sys::tap_open(name, false).or_else(|_| sys::tap_open(name, true)) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        sys::tap_set_persist(fd.as_raw_fd(), false)
    })
}

/// Per-packet write failures that only cost that packet.
fn is_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOBUFS | libc::EIO | libc::EINVAL | libc::EMSGSIZE)
    )
}

impl PacketSink for TapSink {
    /// One `writev` per frame: a TAP is a character device, there is no batched write.
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        let mut sent = 0;
        for pkt in batch.packets() {
            let hdr = pkt.hdr.to_bytes();
            match sys::write2(self.fd.as_raw_fd(), &hdr, pkt.frame()) {
                Ok(_) => sent += 1,
                Err(e) if is_refusal(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PortError::Send(e)),
            }
        }
        Ok(sent)
    }
}

impl PacketSource for TapSource {
    /// One `readv` per frame, until the batch is full or the TAP has none.
    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        let mut got = 0;
        let mut hdr = [0u8; VirtioNetHdr::LEN];
        while let Some(slot) = batch.next_slot() {
            match sys::read2(self.fd.as_raw_fd(), &mut hdr, slot.buf_mut()) {
                Ok(n) if n > VirtioNetHdr::LEN => {
                    // The kernel wrote this header; an odd one only costs the frame.
                    let Ok(h) = VirtioNetHdr::parse(&hdr) else {
                        continue;
                    };
                    slot.hdr = h;
                    if slot.set_len(n - VirtioNetHdr::LEN) {
                        batch.commit();
                        got += 1;
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PortError::Recv(e)),
            }
        }
        Ok(got)
    }

    fn ready_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn set_guest_offloads(&mut self, o: GuestOffloads) -> Result<(), PortError> {
        let mut flags = 0;
        if o.csum {
            flags |= libc::TUN_F_CSUM;
            // Segmentation offloads need partial checksums (the kernel refuses them alone).
            if o.tso4 {
                flags |= libc::TUN_F_TSO4;
            }
            if o.tso6 {
                flags |= libc::TUN_F_TSO6;
            }
            if (o.tso4 || o.tso6) && o.ecn {
                flags |= libc::TUN_F_TSO_ECN;
            }
        }
        sys::tap_set_offload(self.fd.as_raw_fd(), flags).map_err(PortError::Offloads)
    }

    fn set_attached(&mut self, attached: bool) -> Result<(), PortError> {
        if !self.multi_queue || attached == self.attached {
            return Ok(());
        }
        sys::tap_set_queue_attached(self.fd.as_raw_fd(), attached).map_err(PortError::Attach)?;
        self.attached = attached;
        Ok(())
    }
}

packet_ring::port_from_halves!(TapPort);
