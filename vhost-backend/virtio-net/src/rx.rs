//! The RX engine: what a backend's frame must be before a driver sees it
//! ([`check_frame`]), and writing it into the driver's RX descriptor chains (virtio 1.2
//! §5.1.6.3/§5.1.6.4).
//!
//! A packet is presented as one logical byte stream, header then frame ([`RxStream`]), and
//! written descriptor by descriptor through `vm-memory`. With `MRG_RXBUF` a packet may span
//! several chains ([`RxBuffers`] gathers them) and `num_buffers` is patched into the header once
//! the count is known, at the guest addresses recorded while writing the header
//! ([`HdrSegments`]).

use std::ops::{ControlFlow, Deref};

use packet_ring::VirtioNetHdr;
use thiserror::Error;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

use crate::drops::DropReason;
use crate::features::NetFeatures;
use crate::ring::{Access, ShapeError, walk_chain};

/// Why an RX chain was refused. All are the guest's doing.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RxChainError {
    #[error("descriptor {position} of the chain is device-readable")]
    ReadOnlyDescriptor { position: usize },
    #[error("descriptor {addr:#x}+{len} lies outside guest memory")]
    BadAddress { addr: u64, len: u32 },
    #[error("chain has no descriptor")]
    EmptyChain,
    #[error("chain ends in a descriptor that claims a successor (loop or bad next index)")]
    ChainTruncated,
}

impl From<ShapeError> for RxChainError {
    fn from(e: ShapeError) -> Self {
        match e {
            ShapeError::WrongAccess { position } => Self::ReadOnlyDescriptor { position },
            ShapeError::Empty => Self::EmptyChain,
            ShapeError::Truncated => Self::ChainTruncated,
        }
    }
}

impl RxChainError {
    /// The counter this refusal is counted under.
    pub fn reason(&self) -> DropReason {
        match self {
            Self::ReadOnlyDescriptor { .. } => DropReason::RxReadOnlyDescriptor,
            Self::BadAddress { .. } => DropReason::RxBadAddress,
            Self::EmptyChain => DropReason::RxEmptyChain,
            Self::ChainTruncated => DropReason::RxChainTruncated,
        }
    }
}

/// Whether a frame from the backend may reach the driver: its header validates against it
/// (the backend's peer is no more trusted than a driver) and it only uses offloads the
/// driver negotiated.
pub fn check_frame(
    hdr: &VirtioNetHdr,
    frame_len: usize,
    features: &NetFeatures,
) -> Result<(), DropReason> {
    if hdr.validate(frame_len).is_err() {
        return Err(DropReason::RxMalformedHeader);
    }
    if !features.rx_offload_allowed(hdr) {
        return Err(DropReason::RxOffloadNotNegotiated);
    }
    Ok(())
}

/// Header bytes followed by frame bytes, consumed front to back.
#[derive(Debug)]
pub struct RxStream<'a> {
    hdr: [u8; VirtioNetHdr::LEN],
    hdr_len: usize,
    frame: &'a [u8],
    pos: usize,
}

impl<'a> RxStream<'a> {
    /// `hdr_len` is 12 or 10 (legacy layout without `num_buffers`).
    pub fn new(hdr: &VirtioNetHdr, hdr_len: usize, frame: &'a [u8]) -> Self {
        Self {
            hdr: hdr.to_bytes(),
            hdr_len: hdr_len.min(VirtioNetHdr::LEN),
            frame,
            pos: 0,
        }
    }

    pub fn remaining(&self) -> usize {
        self.hdr_len + self.frame.len() - self.pos
    }

    /// The next contiguous piece of at most `max` bytes, and whether it is header bytes.
    fn chunk(&self, max: usize) -> (&[u8], bool) {
        if self.pos < self.hdr_len {
            let end = self.hdr_len.min(self.pos + max);
            (&self.hdr[self.pos..end], true)
        } else {
            let start = self.pos - self.hdr_len;
            let end = self.frame.len().min(start + max);
            (&self.frame[start..end], false)
        }
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
    }
}

/// Guest addresses the header was written to (a header may be split across descriptors, at
/// most one byte each), so `num_buffers` can be patched in afterwards.
#[derive(Debug)]
pub struct HdrSegments {
    segs: [(GuestAddress, usize); VirtioNetHdr::LEN],
    count: usize,
}

impl Default for HdrSegments {
    fn default() -> Self {
        Self {
            segs: [(GuestAddress(0), 0); VirtioNetHdr::LEN],
            count: 0,
        }
    }
}

impl HdrSegments {
    fn record(&mut self, addr: GuestAddress, len: usize) {
        if let Some(slot) = self.segs.get_mut(self.count) {
            *slot = (addr, len);
            self.count += 1;
        }
    }

    /// Overwrites header bytes `offset..offset+bytes.len()` in guest memory.
    pub fn patch<M: GuestMemory>(
        &self,
        mem: &M,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), RxChainError> {
        let mut seg_start = 0usize;
        for &(addr, len) in &self.segs[..self.count] {
            for (i, b) in bytes.iter().enumerate() {
                let at = offset + i;
                if at >= seg_start && at < seg_start + len {
                    let a = addr.checked_add((at - seg_start) as u64).ok_or(
                        RxChainError::BadAddress {
                            addr: addr.0,
                            len: len as u32,
                        },
                    )?;
                    mem.write_slice(std::slice::from_ref(b), a).map_err(|_| {
                        RxChainError::BadAddress {
                            addr: addr.0,
                            len: len as u32,
                        }
                    })?;
                }
            }
            seg_start += len;
        }
        Ok(())
    }
}

/// Writes as much of `stream` as the RX `chain` holds and returns the bytes written. Header
/// addresses are recorded into `hdr_segs` when given. Stops walking once the stream is
/// exhausted; a malformed descriptor met before that refuses the whole chain.
pub fn write_chain<M>(
    chain: &DescriptorChain<M>,
    stream: &mut RxStream<'_>,
    mut hdr_segs: Option<&mut HdrSegments>,
) -> Result<u32, RxChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    let mut written = 0usize;
    walk_chain::<_, RxChainError>(chain, Access::DeviceWrites, |desc| {
        let bad = RxChainError::BadAddress {
            addr: desc.addr().0,
            len: desc.len(),
        };
        let mut addr = desc.addr();
        let mut left = desc.len() as usize;
        while left > 0 && stream.remaining() > 0 {
            let (piece, is_hdr) = stream.chunk(left);
            let n = piece.len();
            mem.write_slice(piece, addr).map_err(|_| bad)?;
            if is_hdr && let Some(segs) = hdr_segs.as_deref_mut() {
                segs.record(addr, n);
            }
            stream.advance(n);
            written += n;
            left -= n;
            addr = addr.checked_add(n as u64).ok_or(bad)?;
        }
        // Written fully: whatever follows in the chain is left untouched.
        Ok(if stream.remaining() == 0 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    Ok(written as u32)
}

/// What became of one packet offered to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Written into `buffers` chains, all returned on the used ring.
    Delivered { buffers: usize },
    /// The guest has not posted enough buffers yet; nothing was consumed. `seen_avail` is the
    /// avail index the attempt ran into, so a retry can tell whether buffers arrived since.
    NoBuffers { seen_avail: u16 },
    /// The packet cannot fit the guest's buffers (counted under `rx_buffer_too_small`); the
    /// chains tried were put back for later packets.
    TooBig,
    /// A malformed chain was met after the first chain of a mergeable packet: the packet is
    /// dropped and the chains gathered so far are returned with length 0 (already reported).
    Aborted,
}

/// Gathers guest RX chains for packets; its list of chain heads is allocated once.
#[derive(Debug)]
pub struct RxBuffers {
    heads: Vec<(u16, u32)>,
}

impl RxBuffers {
    pub fn new(max_queue_size: u16) -> Self {
        Self {
            heads: Vec::with_capacity(usize::from(max_queue_size)),
        }
    }

    /// Writes `hdr` + `frame` into the guest's RX queue. Malformed chains are returned with
    /// length 0 and handed to `on_malformed`.
    pub fn place<M: GuestMemory>(
        &mut self,
        queue: &mut virtio_queue::Queue,
        mem: &M,
        hdr: &VirtioNetHdr,
        frame: &[u8],
        features: &NetFeatures,
        on_malformed: &mut impl FnMut(RxChainError),
    ) -> Result<Placement, crate::ring::RingError> {
        use crate::ring::{pop_chain, return_used, return_used_together, unpop};
        use virtio_queue::QueueT;

        let mut hdr = *hdr;
        hdr.num_buffers = 1;

        if !features.mrg_rxbuf {
            loop {
                let Some(chain) = pop_chain(queue, mem)? else {
                    return Ok(Placement::NoBuffers {
                        seen_avail: queue.next_avail(),
                    });
                };
                let head = chain.head_index();
                let mut stream = RxStream::new(&hdr, features.hdr_len, frame);
                match write_chain(&chain, &mut stream, None) {
                    Ok(written) if stream.remaining() == 0 => {
                        return_used(queue, mem, head, written)?;
                        return Ok(Placement::Delivered { buffers: 1 });
                    }
                    Ok(_) => {
                        unpop(queue, 1);
                        return Ok(Placement::TooBig);
                    }
                    Err(e) => {
                        on_malformed(e);
                        return_used(queue, mem, head, 0)?;
                    }
                }
            }
        }

        self.heads.clear();
        let mut segs = HdrSegments::default();
        let mut stream = RxStream::new(&hdr, features.hdr_len, frame);
        while stream.remaining() > 0 {
            if self.heads.len() >= usize::from(queue.size()) {
                // Even the whole ring cannot hold this packet: waiting would stall forever.
                unpop(queue, self.heads.len());
                return Ok(Placement::TooBig);
            }
            let Some(chain) = pop_chain(queue, mem)? else {
                let seen_avail = queue.next_avail();
                unpop(queue, self.heads.len());
                return Ok(Placement::NoBuffers { seen_avail });
            };
            let head = chain.head_index();
            // Header bytes are recorded wherever they land (a guest may break the spec rule
            // that each mergeable buffer holds a whole header).
            match write_chain(&chain, &mut stream, Some(&mut segs)) {
                Ok(written) => self.heads.push((head, written)),
                Err(e) if self.heads.is_empty() => {
                    // Nothing gathered yet: skip the bad chain and start over on the next.
                    on_malformed(e);
                    return_used(queue, mem, head, 0)?;
                    segs = HdrSegments::default();
                    stream = RxStream::new(&hdr, features.hdr_len, frame);
                }
                Err(e) => {
                    on_malformed(e);
                    let gathered = self.heads.iter().map(|&(h, _)| (h, 0));
                    return_used_together(queue, mem, gathered.chain([(head, 0)]))?;
                    return Ok(Placement::Aborted);
                }
            }
        }
        let buffers = self.heads.len();
        if buffers > 1 {
            let count = u16::try_from(buffers).unwrap_or(u16::MAX);
            if let Err(e) = segs.patch(mem, VirtioNetHdr::NUM_BUFFERS_OFFSET, &count.to_le_bytes())
            {
                on_malformed(e);
                return_used_together(queue, mem, self.heads.iter().map(|&(h, _)| (h, 0)))?;
                return Ok(Placement::Aborted);
            }
        }
        // All of the frame's buffers reach the driver at once: `receive_mergeable` takes
        // `num_buffers` from the first and drops the frame if the others are not yet used.
        return_used_together(queue, mem, self.heads.iter().copied())?;
        Ok(Placement::Delivered { buffers })
    }
}
