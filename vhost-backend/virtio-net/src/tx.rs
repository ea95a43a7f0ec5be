//! The TX engine: what a driver's transmit chain must be (virtio 1.2 §5.1.6.2), and reading
//! one into a [`Packet`].
//!
//! [`check_header`] is the one header check of both devices: it parses the virtio-net header
//! in the negotiated layout, validates it against the frame, and refuses offloads the driver
//! did not negotiate and frames that are runts or too large. [`read_chain`] copies a chain
//! into a packet and applies it; a device that hands the driver's own buffers to its backend
//! (the library kernel's TAP, by `writev`) maps the chain and applies the check alone.
//!
//! The chain is walked once with `virtio-queue`'s descriptor iterator (which bounds the walk by
//! the queue size, refuses nested indirect tables and stops at a 4 GiB total); every byte is
//! copied out through `vm-memory`, which refuses addresses outside the guest's regions. On top
//! of that this module checks what is net-specific: descriptor direction, header length and
//! consistency, frame size, and whether the iterator stopped early (a loop or a bad `next`).

use std::ops::{ControlFlow, Deref};

use packet_ring::{HdrError, Packet, VirtioNetHdr};
use thiserror::Error;
use virtio_queue::DescriptorChain;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestMemory};

use crate::drops::DropReason;
use crate::features::NetFeatures;
use crate::guest_map::{GuestMap, SplitRing};
use crate::ring::{
    Access, DESC_F_INDIRECT as F_INDIRECT, DESC_F_NEXT as F_NEXT, DESC_F_WRITE as F_WRITE,
    ShapeError, walk_chain,
};

/// Largest Ethernet header in front of an MTU-sized payload (with one VLAN tag).
pub const ETH_VLAN_HLEN: usize = 18;
/// Smallest frame worth sending: an Ethernet header.
pub const ETH_HLEN: usize = 14;

/// Why a TX chain was refused. All are the guest's doing.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum TxChainError {
    #[error("descriptor {position} of the chain is device-writable")]
    WriteOnlyDescriptor { position: usize },
    #[error("chain carries {got} bytes, less than the {need}-byte virtio-net header")]
    ShortHeader { got: usize, need: usize },
    #[error("descriptor {addr:#x}+{len} lies outside guest memory")]
    BadAddress { addr: u64, len: u32 },
    #[error("frame of at least {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    #[error("{len}-byte frame is shorter than an Ethernet header")]
    RuntFrame { len: usize },
    #[error("chain has no descriptor")]
    EmptyChain,
    #[error("chain ends in a descriptor that claims a successor (loop or bad next index)")]
    ChainTruncated,
    #[error("invalid virtio-net header")]
    BadHeader(#[source] HdrError),
    #[error("header asks for an offload the guest did not negotiate")]
    OffloadNotNegotiated,
}

impl From<ShapeError> for TxChainError {
    fn from(e: ShapeError) -> Self {
        match e {
            ShapeError::WrongAccess { position } => Self::WriteOnlyDescriptor { position },
            ShapeError::Empty => Self::EmptyChain,
            ShapeError::Truncated => Self::ChainTruncated,
        }
    }
}

impl TxChainError {
    /// The counter this refusal is counted under.
    pub fn reason(&self) -> DropReason {
        match self {
            Self::WriteOnlyDescriptor { .. } => DropReason::TxWriteOnlyDescriptor,
            Self::ShortHeader { .. } | Self::BadHeader(_) => DropReason::TxMalformedHeader,
            Self::BadAddress { .. } => DropReason::TxBadAddress,
            Self::FrameTooLarge { .. } => DropReason::TxFrameTooLarge,
            Self::RuntFrame { .. } => DropReason::TxRuntFrame,
            Self::EmptyChain => DropReason::TxEmptyChain,
            Self::ChainTruncated => DropReason::TxChainTruncated,
            Self::OffloadNotNegotiated => DropReason::TxOffloadNotNegotiated,
        }
    }
}

/// What a TX chain may contain, fixed per negotiation.
#[derive(Debug, Clone, Copy)]
pub struct TxLimits {
    pub features: NetFeatures,
    /// Largest frame without GSO: MTU plus an Ethernet+VLAN header.
    pub max_plain_frame: usize,
}

impl TxLimits {
    /// The limits of a device with `mtu` under `features`.
    pub fn new(features: NetFeatures, mtu: u16) -> Self {
        Self {
            features,
            max_plain_frame: usize::from(mtu) + ETH_VLAN_HLEN,
        }
    }
}

/// Checks a TX chain's header against its frame: `raw` holds the `got` header bytes the
/// chain had (of `limits.features.hdr_len`), `frame_len` the bytes after them. Returns the
/// header to send on, `num_buffers` cleared (it means nothing on transmit, virtio 1.2
/// §5.1.6.2).
pub fn check_header(
    raw: &[u8; VirtioNetHdr::LEN],
    got: usize,
    frame_len: usize,
    limits: &TxLimits,
) -> Result<VirtioNetHdr, TxChainError> {
    let need = limits.features.hdr_len;
    if got < need {
        return Err(TxChainError::ShortHeader { got, need });
    }
    let mut hdr = if need == VirtioNetHdr::LEN {
        VirtioNetHdr::parse(raw)
    } else {
        VirtioNetHdr::parse_legacy(raw)
    }
    .map_err(TxChainError::BadHeader)?;
    hdr.num_buffers = 0;
    if frame_len < ETH_HLEN {
        return Err(TxChainError::RuntFrame { len: frame_len });
    }
    hdr.validate(frame_len).map_err(TxChainError::BadHeader)?;
    if !limits.features.tx_offload_allowed(&hdr) {
        return Err(TxChainError::OffloadNotNegotiated);
    }
    if hdr.gso_type == VirtioNetHdr::GSO_NONE && frame_len > limits.max_plain_frame {
        return Err(TxChainError::FrameTooLarge {
            len: frame_len,
            max: limits.max_plain_frame,
        });
    }
    Ok(hdr)
}

/// Copies the header and frame of the TX `chain` into `pkt` and validates them. On error
/// `pkt`'s contents are unspecified (it is a reusable slot, not yet part of any batch).
pub fn read_chain<M>(
    chain: &DescriptorChain<M>,
    pkt: &mut Packet,
    limits: &TxLimits,
) -> Result<(), TxChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    let mut gather = Gather::new(limits, pkt);
    walk_chain::<_, TxChainError>(chain, Access::DeviceReads, |desc| {
        let addr = desc.addr();
        gather.take(pkt, desc, |dst, offset| {
            addr.checked_add(offset as u64)
                .is_some_and(|a| mem.read_slice(dst, a).is_ok())
        })?;
        Ok(ControlFlow::Continue(()))
    })?;
    gather.finish(pkt, limits)
}

/// [`read_chain`] for the chains drivers send nearly always, read through the batch's
/// mapped ring and memory without popping: one readable descriptor (header and frame
/// together, what Linux and DPDK send when the header fits the headroom), or two, the
/// second ending the chain (header, then frame). Returns `None` for any other shape (an
/// indirect table, a longer chain, a device-writable descriptor, a loop), and for a buffer
/// not within one mapped region: the caller then pops the chain and reads it with
/// [`read_chain`], whose checks (and whose refusal, for a bad chain) are the ones that
/// apply. For the chains it reads, the result is [`read_chain`]'s.
pub fn read_mapped_chain<M: GuestMemory + ?Sized>(
    ring: &SplitRing<'_, M>,
    map: &GuestMap<'_, M>,
    head: u16,
    pkt: &mut Packet,
    limits: &TxLimits,
) -> Option<Result<(), TxChainError>> {
    let first = ring.descriptor(head)?;
    if first.flags() & (F_WRITE | F_INDIRECT) != 0 {
        return None;
    }
    let second = if first.has_next() {
        let d = ring.descriptor(first.next())?;
        if d.flags() & (F_NEXT | F_WRITE | F_INDIRECT) != 0 {
            return None;
        }
        // virtio-queue's walk ends a chain of more than 4 GiB early.
        first.len().checked_add(d.len())?;
        Some(d)
    } else {
        None
    };
    let mut gather = Gather::new(limits, pkt);
    for desc in [Some(first), second].into_iter().flatten() {
        let src = map.slice(desc.addr().0, desc.len() as usize)?;
        let read = gather.take(pkt, &desc, |dst, offset| {
            src.subslice(offset, dst.len())
                .is_ok_and(|s| s.copy_to(dst) == dst.len())
        });
        if let Err(e) = read {
            return Some(Err(e));
        }
    }
    Some(gather.finish(pkt, limits))
}

/// A TX chain's bytes as they are copied out, descriptor by descriptor: the header into a
/// local buffer, the frame into the packet.
struct Gather {
    hdr_len: usize,
    hdr: [u8; VirtioNetHdr::LEN],
    hdr_got: usize,
    frame_len: usize,
    capacity: usize,
}

impl Gather {
    fn new(limits: &TxLimits, pkt: &Packet) -> Self {
        Self {
            hdr_len: limits.features.hdr_len,
            hdr: [0; VirtioNetHdr::LEN],
            hdr_got: 0,
            frame_len: 0,
            capacity: pkt.capacity(),
        }
    }

    /// Copies `desc`'s buffer: `read(dst, offset)` fills `dst` from the buffer's bytes at
    /// `offset`, or says it could not.
    fn take(
        &mut self,
        pkt: &mut Packet,
        desc: &Descriptor,
        mut read: impl FnMut(&mut [u8], usize) -> bool,
    ) -> Result<(), TxChainError> {
        let bad = TxChainError::BadAddress {
            addr: desc.addr().0,
            len: desc.len(),
        };
        let mut left = desc.len() as usize;
        let mut offset = 0;
        if self.hdr_got < self.hdr_len {
            let n = left.min(self.hdr_len - self.hdr_got);
            if !read(&mut self.hdr[self.hdr_got..self.hdr_got + n], 0) {
                return Err(bad);
            }
            self.hdr_got += n;
            left -= n;
            offset = n;
        }
        if left > 0 {
            let end = self.frame_len + left;
            let dst =
                pkt.buf_mut()
                    .get_mut(self.frame_len..end)
                    .ok_or(TxChainError::FrameTooLarge {
                        len: end,
                        max: self.capacity,
                    })?;
            if !read(dst, offset) {
                return Err(bad);
            }
            self.frame_len = end;
        }
        Ok(())
    }

    /// Checks the header against the frame and completes `pkt`.
    fn finish(self, pkt: &mut Packet, limits: &TxLimits) -> Result<(), TxChainError> {
        pkt.hdr = check_header(&self.hdr, self.hdr_got, self.frame_len, limits)?;
        // Cannot fail: frame_len was bounded by the buffer in `take`.
        pkt.set_len(self.frame_len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use packet_ring::MAX_FRAME_LEN;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    use super::*;
    use crate::features::F_VERSION_1;
    use crate::ring::pop_chain;

    const BUF: u64 = 0x8000;
    /// Past the first region (which holds the rings) lies a second, adjacent one.
    const SECOND: u64 = 0x10_0000;

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    /// Reads the one chain `descs` make both ways: through the map (`None`: not its shape)
    /// and through `read_chain`.
    fn both(
        descs: &[RawDescriptor],
    ) -> (
        Option<Result<Packet, TxChainError>>,
        Result<Packet, TxChainError>,
    ) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), SECOND as usize),
            (GuestAddress(SECOND), 0x1_0000),
        ])
        .unwrap();
        let bytes: Vec<u8> = (0..0x2000u32).map(|i| i as u8).collect();
        mem.write_slice(&bytes, GuestAddress(BUF)).unwrap();
        mem.write_slice(&[0; VirtioNetHdr::LEN], GuestAddress(BUF))
            .unwrap();
        mem.write_slice(&bytes, GuestAddress(SECOND - 0x1000))
            .unwrap();
        mem.write_slice(&[0; VirtioNetHdr::LEN], GuestAddress(SECOND - 0x10))
            .unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        q.add_desc_chains(descs, 0).unwrap();
        let mut queue: Queue = q.create_queue().unwrap();
        queue.set_used_ring_address(Some(0x4000), Some(0));
        let limits = TxLimits::new(NetFeatures::from_acked(F_VERSION_1), 1500);
        let map = GuestMap::new(&mem).unwrap();
        let ring = SplitRing::new(&map, &queue).unwrap();
        let head = ring.avail_entry(queue.next_avail()).unwrap();
        let mut fast_pkt = Packet::with_capacity(MAX_FRAME_LEN);
        let fast = read_mapped_chain(&ring, &map, head, &mut fast_pkt, &limits)
            .map(|r| r.map(|()| fast_pkt));
        let chain = pop_chain(&mut queue, &mem).unwrap().unwrap();
        let mut slow_pkt = Packet::with_capacity(MAX_FRAME_LEN);
        let slow = read_chain(&chain, &mut slow_pkt, &limits).map(|()| slow_pkt);
        (fast, slow)
    }

    #[test]
    fn the_mapped_path_reads_what_read_chain_reads_or_declines() {
        let hdr = VirtioNetHdr::LEN as u32;
        // Shapes the map reads: each gives read_chain's result, success or refusal.
        let taken: &[&[RawDescriptor]] = &[
            &[desc(BUF, hdr + 60, 0, 0)],
            &[desc(BUF, hdr, F_NEXT, 1), desc(BUF + 0x100, 1500, 0, 0)],
            &[desc(BUF, 5, F_NEXT, 1), desc(BUF + 5, 67, 0, 0)],
            &[desc(BUF, hdr + 4, 0, 0)],
            &[desc(BUF, hdr + 3000, 0, 0)],
            &[desc(BUF, 4, 0, 0)],
            &[desc(BUF, 0, F_NEXT, 1), desc(BUF, 0, 0, 0)],
        ];
        for descs in taken {
            let (fast, slow) = both(descs);
            assert_eq!(fast, Some(slow), "{descs:?}");
        }
        // Shapes it leaves to read_chain, and whether read_chain takes them.
        let declined: &[(&[RawDescriptor], bool)] = &[
            // Outside guest memory; across two regions; a hole.
            (&[desc(0x20_0000, 100, 0, 0)], false),
            (&[desc(SECOND - 0x10, 100, 0, 0)], true),
            (&[desc(u64::MAX - 10, 100, 0, 0)], false),
            // Device-writable, indirect, a writable second descriptor.
            (&[desc(BUF, 100, F_WRITE, 0)], false),
            (&[desc(BUF, 32, F_INDIRECT, 0)], false),
            (
                &[desc(BUF, hdr, F_NEXT, 1), desc(BUF, 100, F_WRITE, 0)],
                false,
            ),
            // Three descriptors; a loop; a next index outside the ring.
            (
                &[
                    desc(BUF, 6, F_NEXT, 1),
                    desc(BUF, 6, F_NEXT, 2),
                    desc(BUF, 60, 0, 0),
                ],
                true,
            ),
            (&[desc(BUF, 100, F_NEXT, 0)], false),
            (&[desc(BUF, 100, F_NEXT, 16)], false),
            // Two descriptors of more than 4 GiB together.
            (&[desc(BUF, u32::MAX, F_NEXT, 1), desc(BUF, 1, 0, 0)], false),
        ];
        for (descs, good) in declined {
            let (fast, slow) = both(descs);
            assert_eq!(fast, None, "{descs:?}");
            assert_eq!(slow.is_ok(), *good, "{descs:?}: {slow:?}");
        }
    }
}
