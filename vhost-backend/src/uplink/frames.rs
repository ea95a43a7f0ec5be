//! The datagram loop TAP and AF_PACKET share: each frame crosses the fd as one
//! `virtio-net header + frame` datagram, the header in the layout the fd was set up with.

use std::io;
use std::os::fd::RawFd;

use packet_ring::{PacketBatch, PortError, VirtioNetHdr};

use crate::sys;

/// Which virtio-net header layout the fd speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HdrLayout {
    /// 12 bytes, with `num_buffers` (TAP after `TUNSETVNETHDRSZ 12`).
    V1,
    /// 10 bytes (AF_PACKET `PACKET_VNET_HDR`).
    Legacy,
}

impl HdrLayout {
    fn len(self) -> usize {
        match self {
            Self::V1 => VirtioNetHdr::LEN,
            Self::Legacy => VirtioNetHdr::LEGACY_LEN,
        }
    }
}

/// Writes each packet of `batch`; `refused` tells per-packet failures (counted by the caller
/// as drops) from failures of the fd itself. Returns how many were written.
pub fn send(
    fd: RawFd,
    layout: HdrLayout,
    batch: &PacketBatch,
    refused: fn(&io::Error) -> bool,
) -> Result<usize, PortError> {
    let mut sent = 0;
    for pkt in batch.packets() {
        let hdr = pkt.hdr.to_bytes();
        match sys::write2(fd, &hdr[..layout.len()], pkt.frame()) {
            Ok(_) => sent += 1,
            Err(e) if refused(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PortError::Send(e)),
        }
    }
    Ok(sent)
}

/// Reads datagrams into `batch` until it is full or the fd has none; `quiet` tells errors
/// that mean "nothing to read now" (beyond EAGAIN). Returns how many were appended.
pub fn recv(
    fd: RawFd,
    layout: HdrLayout,
    batch: &mut PacketBatch,
    quiet: fn(&io::Error) -> bool,
) -> Result<usize, PortError> {
    let hlen = layout.len();
    let mut got = 0;
    let mut hdr = [0u8; VirtioNetHdr::LEN];
    while let Some(slot) = batch.next_slot() {
        match sys::read2(fd, &mut hdr[..hlen], slot.buf_mut()) {
            Ok(n) if n > hlen => {
                let parsed = match layout {
                    HdrLayout::V1 => VirtioNetHdr::parse(&hdr),
                    HdrLayout::Legacy => VirtioNetHdr::parse_legacy(&hdr),
                };
                // The kernel wrote this header; a short or odd one only costs the frame.
                let Ok(h) = parsed else { continue };
                slot.hdr = h;
                if slot.set_len(n - hlen) {
                    batch.commit();
                    got += 1;
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || quiet(&e) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PortError::Recv(e)),
        }
    }
    Ok(got)
}
