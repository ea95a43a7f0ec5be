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
use crate::guest_map::{GuestMap, SplitRing};
use crate::ring::{Access, DESC_F_INDIRECT, DESC_F_NEXT, ShapeError, walk_chain};

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

/// Header bytes followed by frame bytes, consumed front to back. The frame is one slice
/// ([`new`](Self::new)) or pieces in order ([`scattered`](Self::scattered): the buffers of
/// another driver's TX chain, lent for the copy, so a frame reaches the guest in one copy).
#[derive(Debug)]
pub struct RxStream<'a> {
    hdr: [u8; VirtioNetHdr::LEN],
    hdr_len: usize,
    hdr_pos: usize,
    /// What is left of the current frame piece (empty only once the frame is).
    cur: &'a [u8],
    /// The pieces after it.
    rest: &'a [&'a [u8]],
    /// Frame bytes left, `cur` included.
    left: usize,
}

impl<'a> RxStream<'a> {
    /// `hdr_len` is 12 or 10 (legacy layout without `num_buffers`).
    pub fn new(hdr: &VirtioNetHdr, hdr_len: usize, frame: &'a [u8]) -> Self {
        Self::scattered_from(hdr, hdr_len, frame, &[])
    }

    /// A frame made of `pieces` in order (empty pieces are skipped).
    pub fn scattered(hdr: &VirtioNetHdr, hdr_len: usize, pieces: &'a [&'a [u8]]) -> Self {
        Self::scattered_from(hdr, hdr_len, &[], pieces)
    }

    fn scattered_from(
        hdr: &VirtioNetHdr,
        hdr_len: usize,
        cur: &'a [u8],
        rest: &'a [&'a [u8]],
    ) -> Self {
        let mut stream = Self {
            hdr: hdr.to_bytes(),
            hdr_len: hdr_len.min(VirtioNetHdr::LEN),
            hdr_pos: 0,
            cur,
            rest,
            left: cur.len() + rest.iter().map(|p| p.len()).sum::<usize>(),
        };
        stream.settle();
        stream
    }

    pub fn remaining(&self) -> usize {
        self.hdr_len - self.hdr_pos + self.left
    }

    /// Moves to the next non-empty piece once the current one is used up.
    fn settle(&mut self) {
        while self.cur.is_empty()
            && let Some((next, rest)) = self.rest.split_first()
        {
            self.cur = next;
            self.rest = rest;
        }
    }

    /// The next contiguous piece of at most `max` bytes, and whether it is header bytes.
    fn chunk(&self, max: usize) -> (&[u8], bool) {
        if self.hdr_pos < self.hdr_len {
            let end = self.hdr_len.min(self.hdr_pos + max);
            (&self.hdr[self.hdr_pos..end], true)
        } else {
            (&self.cur[..self.cur.len().min(max)], false)
        }
    }

    /// Consumes the `n` bytes of the last [`chunk`](Self::chunk).
    fn advance(&mut self, n: usize) {
        if self.hdr_pos < self.hdr_len {
            self.hdr_pos += n;
        } else {
            self.cur = &self.cur[n..];
            self.left -= n;
            self.settle();
        }
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

/// [`RxBuffers::place`] for the common case, through the batch's mapped ring and memory:
/// the chain `head` (announced in the avail ring: `SplitRing::announced_head`) is one
/// device-writable descriptor that holds the whole header and frame. Writes them
/// (`num_buffers` 1) and returns the chain's head and the bytes written, for the caller to
/// move past the chain and publish it with its batch.
/// Returns `None`, having written and consumed nothing, for anything else (a chain of
/// more descriptors, an indirect table, a buffer too small or not within one mapped region):
/// [`RxBuffers::place`] then takes the chain, and its result is this one's for the chains
/// this one takes.
pub fn place_mapped<M: GuestMemory + ?Sized>(
    ring: &SplitRing<'_, M>,
    map: &GuestMap<'_, M>,
    head: u16,
    hdr: &VirtioNetHdr,
    frame: &[u8],
    features: &NetFeatures,
) -> Option<(u16, u32)> {
    let desc = ring.descriptor(head)?;
    if desc.flags() & (DESC_F_NEXT | DESC_F_INDIRECT) != 0 || !desc.is_write_only() {
        return None;
    }
    let mut hdr = *hdr;
    hdr.num_buffers = 1;
    let hdr_bytes = hdr.to_bytes();
    let hdr_len = features.hdr_len.min(VirtioNetHdr::LEN);
    let total = hdr_len + frame.len();
    if (desc.len() as usize) < total {
        return None;
    }
    let dst = map.slice(desc.addr().0, total)?;
    let (hdr_dst, frame_dst) = dst.split_at(hdr_len).ok()?;
    hdr_dst.copy_from(&hdr_bytes[..hdr_len]);
    frame_dst.copy_from(frame);
    Some((head, u32::try_from(total).ok()?))
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
        let stream = |h: &VirtioNetHdr| RxStream::new(h, features.hdr_len, frame);
        self.place_stream(queue, mem, hdr, stream, features, on_malformed)
    }

    /// [`place`](Self::place) for a frame in `pieces` (another driver's TX buffers, lent):
    /// they are copied straight into the guest's chains, with no packet in between.
    pub fn place_scattered<M: GuestMemory>(
        &mut self,
        queue: &mut virtio_queue::Queue,
        mem: &M,
        hdr: &VirtioNetHdr,
        pieces: &[&[u8]],
        features: &NetFeatures,
        on_malformed: &mut impl FnMut(RxChainError),
    ) -> Result<Placement, crate::ring::RingError> {
        let stream = |h: &VirtioNetHdr| RxStream::scattered(h, features.hdr_len, pieces);
        self.place_stream(queue, mem, hdr, stream, features, on_malformed)
    }

    /// Writes the streams `new_stream` makes (from the header to send, each a fresh copy of
    /// the packet) into the guest's RX queue.
    fn place_stream<'f, M: GuestMemory>(
        &mut self,
        queue: &mut virtio_queue::Queue,
        mem: &M,
        hdr: &VirtioNetHdr,
        new_stream: impl Fn(&VirtioNetHdr) -> RxStream<'f>,
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
                let mut stream = new_stream(&hdr);
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
        let mut stream = new_stream(&hdr);
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
                    stream = new_stream(&hdr);
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

#[cfg(test)]
mod tests {
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::GuestMemoryMmap;

    use super::*;
    use crate::features::{F_MRG_RXBUF, F_VERSION_1};
    use crate::ring::DESC_F_WRITE;

    const BUF: u64 = 0x8000;

    /// Places `frame` into the chain `descs` make, through the map and through `place`, on
    /// two copies of the same guest; returns each result and the bytes each left at BUF.
    #[allow(clippy::type_complexity)]
    fn both(
        descs: &[RawDescriptor],
        frame: &[u8],
    ) -> ((Option<(u16, u32)>, Vec<u8>), (Placement, Vec<u8>)) {
        let features = NetFeatures::from_acked(F_VERSION_1 | F_MRG_RXBUF);
        let hdr = VirtioNetHdr::default();
        let run = |mapped: bool| {
            let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
            let q = MockSplitQueue::new(&mem, 16);
            q.add_desc_chains(descs, 0).unwrap();
            let mut queue: Queue = q.create_queue().unwrap();
            queue.set_used_ring_address(Some(0x4000), Some(0));
            let mut out = vec![0u8; 0x200];
            if mapped {
                let map = GuestMap::new(&mem).unwrap();
                let ring = SplitRing::new(&map, &queue).unwrap();
                let head = ring.avail_entry(0).unwrap();
                let r = place_mapped(&ring, &map, head, &hdr, frame, &features);
                mem.read_slice(&mut out, GuestAddress(BUF)).unwrap();
                (Some(r), None, out)
            } else {
                let mut bufs = RxBuffers::new(16);
                let r = bufs
                    .place(&mut queue, &mem, &hdr, frame, &features, &mut |_| {})
                    .unwrap();
                mem.read_slice(&mut out, GuestAddress(BUF)).unwrap();
                (None, Some(r), out)
            }
        };
        let (fast, _, fast_mem) = run(true);
        let (_, slow, slow_mem) = run(false);
        ((fast.unwrap(), fast_mem), (slow.unwrap(), slow_mem))
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    #[test]
    fn the_mapped_path_writes_what_place_writes_or_declines() {
        let frame: Vec<u8> = (0..100u8).collect();
        let total = (VirtioNetHdr::LEN + frame.len()) as u32;
        for len in [total, 0x200] {
            let ((fast, fast_mem), (slow, slow_mem)) =
                both(&[desc(BUF, len, DESC_F_WRITE, 0)], &frame);
            assert_eq!(fast, Some((0, total)));
            assert_eq!(slow, Placement::Delivered { buffers: 1 });
            assert_eq!(fast_mem, slow_mem);
        }
        let declined: &[&[RawDescriptor]] = &[
            &[desc(BUF, total - 1, DESC_F_WRITE, 0)],
            &[desc(BUF, 0x200, 0, 0)],
            &[
                desc(BUF, 0x200, DESC_F_WRITE | DESC_F_NEXT, 1),
                desc(BUF + 0x200, 1, DESC_F_WRITE, 0),
            ],
            &[desc(BUF, 0x200, DESC_F_WRITE | DESC_F_INDIRECT, 0)],
            &[desc(0x20_0000, 0x200, DESC_F_WRITE, 0)],
        ];
        for descs in declined {
            let ((fast, fast_mem), _) = both(descs, &frame);
            assert_eq!(fast, None, "{descs:?}");
            assert!(
                fast_mem.iter().all(|&b| b == 0),
                "nothing written: {descs:?}"
            );
        }
    }

    const SIZE: u16 = 16;
    const BUF_LEN: u32 = 1000;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// `n` one-buffer chains of BUF_LEN bytes.
    fn post(q: &MockSplitQueue<'_, GuestMemoryMmap>, n: u16) {
        let descs: Vec<_> = (0..n)
            .map(|i| {
                let addr = BUF + u64::from(i) * u64::from(BUF_LEN);
                RawDescriptor::from(Descriptor::new(addr, BUF_LEN, DESC_F_WRITE, 0))
            })
            .collect();
        q.add_desc_chains(&descs, 0).unwrap();
    }

    /// Places one frame into a fresh guest queue of `n` buffers; returns the placement,
    /// the used index and the buffers' bytes.
    fn placed(
        n: u16,
        mrg: bool,
        place: impl FnOnce(&mut RxBuffers, &mut Queue, &GuestMemoryMmap, &NetFeatures) -> Placement,
    ) -> (Placement, u16, Vec<u8>) {
        let mem = memory();
        let q = MockSplitQueue::new(&mem, SIZE);
        let mut queue: Queue = q.create_queue().unwrap();
        post(&q, n);
        let acked = F_VERSION_1 | if mrg { F_MRG_RXBUF } else { 0 };
        let features = NetFeatures::from_acked(acked);
        let mut bufs = RxBuffers::new(SIZE);
        let placement = place(&mut bufs, &mut queue, &mem, &features);
        let used: u16 = mem.read_obj(q.used_addr().unchecked_add(2)).unwrap();
        let mut bytes = vec![0u8; usize::from(n) * BUF_LEN as usize];
        mem.read_slice(&mut bytes, GuestAddress(BUF)).unwrap();
        (placement, used, bytes)
    }

    #[test]
    fn a_scattered_frame_lands_as_its_concatenation_does() {
        let frame: Vec<u8> = (0..2500u32).map(|i| (i * 13 + 5) as u8).collect();
        let pieces: [&[u8]; 4] = [&frame[..54], &[], &frame[54..1700], &frame[1700..]];
        let hdr = VirtioNetHdr::default();
        let mut refused = 0;
        for mrg in [true, false] {
            let n = if mrg { 4 } else { 1 };
            let whole = placed(n, mrg, |b, q, m, f| {
                b.place(q, m, &hdr, &frame, f, &mut |_| refused += 1)
                    .unwrap()
            });
            let lent = placed(n, mrg, |b, q, m, f| {
                b.place_scattered(q, m, &hdr, &pieces, f, &mut |_| refused += 1)
                    .unwrap()
            });
            assert_eq!(lent, whole, "mrg_rxbuf {mrg}");
            let expect = if mrg {
                Placement::Delivered { buffers: 3 }
            } else {
                Placement::TooBig
            };
            assert_eq!(lent.0, expect, "mrg_rxbuf {mrg}");
        }
        assert_eq!(refused, 0);
        let (_, used, bytes) = placed(4, true, |b, q, m, f| {
            b.place_scattered(q, m, &hdr, &pieces, f, &mut |_| ())
                .unwrap()
        });
        assert_eq!(used, 3);
        assert_eq!(
            &bytes[VirtioNetHdr::LEN..VirtioNetHdr::LEN + frame.len()],
            &frame[..]
        );
        let num_buffers = u16::from_le_bytes([bytes[10], bytes[11]]);
        assert_eq!(num_buffers, 3);
    }

    #[test]
    fn a_stream_skips_empty_pieces_and_counts_what_is_left() {
        let hdr = VirtioNetHdr::default();
        let pieces: [&[u8]; 4] = [&[], &[1, 2, 3], &[], &[4]];
        let mut s = RxStream::scattered(&hdr, VirtioNetHdr::LEN, &pieces);
        assert_eq!(s.remaining(), VirtioNetHdr::LEN + 4);
        let (h, is_hdr) = s.chunk(100);
        assert_eq!((h.len(), is_hdr), (VirtioNetHdr::LEN, true));
        s.advance(VirtioNetHdr::LEN);
        assert_eq!(s.chunk(2), (&[1u8, 2][..], false));
        s.advance(2);
        assert_eq!(s.chunk(100), (&[3u8][..], false));
        s.advance(1);
        assert_eq!(s.chunk(100), (&[4u8][..], false));
        s.advance(1);
        assert_eq!(s.remaining(), 0);
        let none: [&[u8]; 0] = [];
        assert_eq!(RxStream::scattered(&hdr, 10, &none).remaining(), 10);
    }
}
