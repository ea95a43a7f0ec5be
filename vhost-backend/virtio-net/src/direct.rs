//! One copy between two rings: a driver's TX chain read straight into the buffers another
//! ring's driver posted, with no packet buffer in between.
//!
//! This is the engine half of issue 8's "at most one copy per frame": the vhost worker
//! copies a guest's TX chain into the RX buffers the library kernel posted (plain memory of
//! this process, gathered by the library device as a [`ScatterDest`]), instead of into a
//! [`Packet`] that a second copy then moves into the kernel. [`read_chain_into`] applies
//! exactly the checks of [`read_chain`](crate::tx::read_chain): the same chain walk (shape,
//! direction, truncation), every guest byte read through `vm-memory` (which refuses
//! addresses outside the guest's regions), and [`check_header`] on the header and frame
//! length. The frame's bytes land in the destination while the chain is walked, so the
//! destination must not be handed on (its used entries published) unless the call returns
//! `Ok`; on an error its contents are unspecified, and the caller gives its buffers back.
//!
//! The header is not written into the destination: the caller writes the receiving
//! driver's header (its own layout, `num_buffers`) in front of the frame once it knows how
//! many buffers the frame filled, as the RX engine does.
//!
//! [`DirectSender`] is the other way round: the worker that owns a receiving ring (the
//! vhost worker and its guest's RX queue) opens the sending driver's TX ring once per batch
//! and takes each of its chains, lent in pieces ([`SendingRing::lend`]), straight into its
//! own driver's buffers; a taker without buffers answers [`Taken::NoRoom`] and the chain
//! stays in the sender's ring, whose driver then stops its queue as for a full NIC ring.
//!
//! [`DirectReceiver`] is how a lender's worker reaches the receiving ring without knowing
//! its transport: the vhost worker holds one per queue pair whose uplink is the library
//! kernel's device, opens its ring once per batch ([`DirectReceiver::with_ring`]: the
//! receiver's lock taken once, its interrupt decided once), and offers each guest chain
//! with [`DirectRing::deliver`], whose `fill` is [`read_chain_into`]. A receiver without
//! buffers answers [`Delivery::NoRoom`] and takes nothing; the lender leaves its chain in its
//! own ring and waits for [`DirectReceiver::wake_fd`], which the receiver makes readable
//! when its driver posts buffers again (its RX kick).

use std::ops::{ControlFlow, Deref};
use std::os::fd::RawFd;

use packet_ring::{Packet, VirtioNetHdr};
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestMemory};

use crate::ring::{Access, walk_chain};
use crate::tx::{TxChainError, TxLimits, check_header};

/// Where the frame of a TX chain is copied: byte ranges addressed by their offset in the
/// frame (the header excluded).
pub trait FrameDest {
    /// Bytes of frame the destination holds at most.
    fn capacity(&self) -> usize;

    /// The writable bytes from frame offset `offset` to the end of the segment holding it
    /// (never empty), or `None` at or past [`capacity`](Self::capacity).
    fn segment_at(&mut self, offset: usize) -> Option<&mut [u8]>;
}

impl FrameDest for Packet {
    fn capacity(&self) -> usize {
        Packet::capacity(self)
    }

    fn segment_at(&mut self, offset: usize) -> Option<&mut [u8]> {
        self.buf_mut().get_mut(offset..).filter(|s| !s.is_empty())
    }
}

/// One buffer of a [`ScatterDest`]: a byte range the destination's owner lends for the
/// call (another driver's posted RX buffer).
pub trait Segment {
    /// The buffer's length in bytes.
    fn len(&self) -> usize;

    /// Whether the buffer holds no byte.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer's bytes, writable.
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl Segment for &mut [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// Buffers another driver posted, as one destination: `skip` bytes of the first are left
/// for the header the caller writes later, the frame follows across the segments in order.
#[derive(Debug)]
pub struct ScatterDest<'a, S> {
    segments: &'a mut [S],
    skip: usize,
    capacity: usize,
    /// The segment and its frame offset found by the last lookup: frames are written in
    /// order, so each lookup starts where the last one ended.
    cursor: (usize, usize),
}

impl<'a, S: Segment> ScatterDest<'a, S> {
    /// A destination over `segments` whose first `skip` bytes are reserved (they may span
    /// several segments). Holds no frame byte if the segments are no longer than `skip`.
    pub fn new(segments: &'a mut [S], skip: usize) -> Self {
        let total: usize = segments.iter().map(|s| s.len()).sum();
        ScatterDest {
            segments,
            skip,
            capacity: total.saturating_sub(skip),
            cursor: (0, 0),
        }
    }
}

impl<S: Segment> FrameDest for ScatterDest<'_, S> {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn segment_at(&mut self, offset: usize) -> Option<&mut [u8]> {
        if offset >= self.capacity {
            return None;
        }
        // Absolute position in the segments, then the segment holding it.
        let at = offset + self.skip;
        let (mut index, mut start) = self.cursor;
        if at < start {
            (index, start) = (0, 0);
        }
        while let Some(seg) = self.segments.get(index) {
            if at < start + seg.len() {
                break;
            }
            start += seg.len();
            index += 1;
        }
        self.cursor = (index, start);
        self.segments
            .get_mut(index)?
            .bytes_mut()
            .get_mut(at - start..)
    }
}

/// Copies the frame of the TX `chain` into `dest` and validates the chain and its header
/// like [`read_chain`](crate::tx::read_chain). Returns the header to deliver with
/// (`num_buffers` cleared) and the frame's length. A frame longer than `dest` is refused as
/// [`TxChainError::FrameTooLarge`]; every byte written lies below `dest.capacity()`.
pub fn read_chain_into<M, D>(
    chain: &DescriptorChain<M>,
    dest: &mut D,
    limits: &TxLimits,
) -> Result<(VirtioNetHdr, usize), TxChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
    D: FrameDest + ?Sized,
{
    let hdr_len = limits.features.hdr_len;
    let mem = chain.memory();
    let mut hdr_buf = [0u8; VirtioNetHdr::LEN];
    let mut hdr_got = 0usize;
    let mut frame_len = 0usize;
    let capacity = dest.capacity();

    walk_chain::<_, TxChainError>(chain, Access::DeviceReads, |desc| {
        let bad = TxChainError::BadAddress {
            addr: desc.addr().0,
            len: desc.len(),
        };
        let mut addr = desc.addr();
        let mut left = desc.len() as usize;
        if hdr_got < hdr_len {
            let n = left.min(hdr_len - hdr_got);
            mem.read_slice(&mut hdr_buf[hdr_got..hdr_got + n], addr)
                .map_err(|_| bad)?;
            hdr_got += n;
            left -= n;
            addr = addr.checked_add(n as u64).ok_or(bad)?;
        }
        // Refused before any byte of this descriptor is read: the frame cannot fit.
        let end = frame_len.saturating_add(left);
        if end > capacity {
            return Err(TxChainError::FrameTooLarge {
                len: end,
                max: capacity,
            });
        }
        while left > 0 {
            let seg = dest
                .segment_at(frame_len)
                .ok_or(TxChainError::FrameTooLarge {
                    len: end,
                    max: capacity,
                })?;
            let n = seg.len().min(left);
            mem.read_slice(&mut seg[..n], addr).map_err(|_| bad)?;
            frame_len += n;
            left -= n;
            addr = addr.checked_add(n as u64).ok_or(bad)?;
        }
        Ok(ControlFlow::Continue(()))
    })?;

    let hdr = check_header(&hdr_buf, hdr_got, frame_len, limits)?;
    Ok((hdr, frame_len))
}

/// A [`FrameDest`] that holds at most `max` bytes of frame, whatever its buffers hold: a
/// frame read through it is refused where [`read_chain`](crate::tx::read_chain) would refuse
/// it for a packet of `max` bytes.
#[derive(Debug)]
pub struct Capped<'a, D: ?Sized> {
    inner: &'a mut D,
    max: usize,
}

impl<'a, D: FrameDest + ?Sized> Capped<'a, D> {
    pub fn new(inner: &'a mut D, max: usize) -> Self {
        Capped { inner, max }
    }
}

impl<D: FrameDest + ?Sized> FrameDest for Capped<'_, D> {
    fn capacity(&self) -> usize {
        self.inner.capacity().min(self.max)
    }

    fn segment_at(&mut self, offset: usize) -> Option<&mut [u8]> {
        let max = self.capacity();
        let seg = self.inner.segment_at(offset)?;
        let n = max.checked_sub(offset).filter(|&n| n > 0)?.min(seg.len());
        seg.get_mut(..n)
    }
}

/// What became of a frame offered to a [`DirectRing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Copied into the receiver's buffers and published to its driver.
    Delivered,
    /// The lender's chain is malformed (`fill` said why, the lender counts it); the
    /// receiver's buffers went back to its driver's side of the ring unused.
    Refused(TxChainError),
    /// The receiver dropped the frame and counted why (its driver did not negotiate the
    /// frame's offloads, or its buffers can never hold the frame).
    Dropped,
    /// The receiver cannot take a frame now (too few buffers posted, or its ring is not
    /// running): nothing was taken, the lender keeps the frame and waits for
    /// [`DirectReceiver::wake_fd`].
    NoRoom,
}

/// The one copy a [`DirectRing`] asks of its lender: write the frame into the destination
/// (its bytes only, the header is the receiver's to write) and return the header to deliver
/// it with and the frame's length, or why the lender's frame is refused.
pub type Fill<'a> =
    dyn FnMut(&mut dyn FrameDest) -> Result<(VirtioNetHdr, usize), TxChainError> + 'a;

/// A receiving ring opened for one batch by [`DirectReceiver::with_ring`].
pub trait DirectRing {
    /// Offers one frame of at most `frame_max` bytes: the receiver gathers buffers for that
    /// many, lets `fill` copy the frame into them (once), checks the frame against its own
    /// driver's negotiation and publishes it.
    fn deliver(&mut self, frame_max: usize, fill: &mut Fill<'_>) -> Delivery;
}

/// Another driver's receive ring that a lender's worker writes frames straight into (issue
/// 8's one copy per frame): the library kernel's RX queue as seen by a vhost worker.
pub trait DirectReceiver: Send + std::fmt::Debug {
    /// Runs `batch` with the receiving ring open: its lock is held for the whole call and
    /// its driver is notified at most once, after `batch` returns. A ring that cannot
    /// receive (not running, or its device gone) is opened all the same and answers every
    /// frame with [`Delivery::NoRoom`].
    fn with_ring(&mut self, batch: &mut dyn FnMut(&mut dyn DirectRing));

    /// Readable (edge: written once per wakeup) when the receiver may have room again after
    /// a batch that met [`Delivery::NoRoom`]: its driver posted buffers or its ring started.
    fn wake_fd(&self) -> RawFd;
}

/// What a lender's worker made of a frame a [`SendingRing`] lent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Copied into the receiver's buffers and published to its driver.
    Delivered,
    /// Dropped by the taker and counted there (its driver did not negotiate the frame's
    /// offloads, filtered it, its buffers can never hold it, or its ring is disabled):
    /// the sender completes its chain all the same.
    Dropped,
    /// The taker has no room now (its driver posted too few buffers, or its ring broke):
    /// nothing was taken, the sender keeps the chain in its ring (backpressure).
    NoRoom,
}

/// The one copy a [`SendingRing`] asks of its taker: write the frame, given as the
/// sending driver's header (checked against that driver's negotiation, `num_buffers`
/// cleared) and its bytes in pieces (the chain's buffers after the header, lent for the
/// call), into the taker's own ring, and say what became of it.
pub type Take<'a> = dyn FnMut(&VirtioNetHdr, &[&[u8]]) -> Taken + 'a;

/// A sending ring opened for one batch by [`DirectSender::with_ring`].
pub trait SendingRing {
    /// Lends the ring's next frame to `take`; malformed chains before it are completed
    /// and counted by the sender, never lent. `None`: the ring has no frame (it asked its
    /// driver for a kick, after which [`DirectSender::wake_fd`] fires), is broken
    /// (counted), or cannot send (not running, its device gone). A frame `take` answers
    /// [`Taken::NoRoom`] stays in the ring, and the batch should end.
    fn lend(&mut self, take: &mut Take<'_>) -> Option<Taken>;
}

/// Another driver's transmit ring whose chains a taker's worker writes straight into its
/// own receive ring (issue 8's one copy per frame, the mirror of [`DirectReceiver`]): the
/// library kernel's TX queue as seen by a vhost worker, which copies each kernel chain
/// into the guest's RX chains with [`RxBuffers::place_scattered`](crate::rx::RxBuffers::place_scattered).
pub trait DirectSender: Send + std::fmt::Debug {
    /// Runs `batch` with the sending ring open: its lock is held for the whole call, the
    /// used entries of the chains taken are published together and its driver is notified
    /// at most once, after `batch` returns. A ring that cannot send is opened all the same
    /// and lends nothing.
    fn with_ring(&mut self, batch: &mut dyn FnMut(&mut dyn SendingRing));

    /// Readable (edge: written once per wakeup) when the sender may have frames again
    /// after a batch that found none: its driver kicked, or its ring was renegotiated.
    fn wake_fd(&self) -> RawFd;
}

#[cfg(test)]
mod tests {
    use virtio_queue::Queue;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    use super::*;
    use crate::features::{F_CSUM, F_HOST_TSO4, F_VERSION_1, NetFeatures};
    use crate::ring::pop_chain;
    use crate::tx::read_chain;

    use crate::ring::{DESC_F_NEXT as F_NEXT, DESC_F_WRITE as F_WRITE};

    const SIZE: u16 = 16;
    const HDR: u64 = 0x1000;
    const DATA: u64 = 0x2000;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn limits() -> TxLimits {
        TxLimits::new(
            NetFeatures::from_acked(F_VERSION_1 | F_CSUM | F_HOST_TSO4),
            1500,
        )
    }

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// One chain: the header alone, then the frame in `pieces` descriptors of the given
    /// lengths (flags of each from `flags`).
    fn post(
        mem: &GuestMemoryMmap,
        q: &MockSplitQueue<'_, GuestMemoryMmap>,
        hdr: VirtioNetHdr,
        data: &[u8],
        pieces: &[(u32, u16)],
    ) {
        mem.write_slice(&hdr.to_bytes(), GuestAddress(HDR)).unwrap();
        mem.write_slice(data, GuestAddress(DATA)).unwrap();
        let mut descs = vec![RawDescriptor::from(Descriptor::new(
            HDR,
            VirtioNetHdr::LEN as u32,
            F_NEXT,
            1,
        ))];
        let mut addr = DATA;
        for (i, &(len, flags)) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            let next = if last { 0 } else { i as u16 + 2 };
            let f = if last { flags } else { flags | F_NEXT };
            descs.push(RawDescriptor::from(Descriptor::new(addr, len, f, next)));
            addr += u64::from(len);
        }
        q.build_desc_chain(&descs).unwrap();
    }

    fn one_chain(
        hdr: VirtioNetHdr,
        data: &[u8],
        pieces: &[(u32, u16)],
        seg_lens: &[usize],
        skip: usize,
    ) -> (Result<(VirtioNetHdr, usize), TxChainError>, Vec<u8>) {
        let mem = memory();
        let q = MockSplitQueue::new(&mem, SIZE);
        let mut queue: Queue = q.create_queue().unwrap();
        post(&mem, &q, hdr, data, pieces);
        let chain = pop_chain(&mut queue, &mem).unwrap().unwrap();
        let mut store: Vec<Vec<u8>> = seg_lens.iter().map(|&n| vec![0xee; n]).collect();
        let mut segs: Vec<&mut [u8]> = store.iter_mut().map(|v| v.as_mut_slice()).collect();
        let got = read_chain_into(&chain, &mut ScatterDest::new(&mut segs, skip), &limits());
        (got, store.concat())
    }

    fn plain() -> VirtioNetHdr {
        VirtioNetHdr::default()
    }

    #[test]
    fn a_frame_lands_across_segments_that_do_not_line_up_with_the_descriptors() {
        let data = frame(1400);
        // Guest pieces 100/700/600, kernel buffers 12(+header room)/333/1000/500.
        let (got, out) = one_chain(
            plain(),
            &data,
            &[(100, 0), (700, 0), (600, 0)],
            &[5, 340, 1000, 500],
            12,
        );
        let (hdr, len) = got.unwrap();
        assert_eq!(len, data.len());
        assert_eq!(hdr.num_buffers, 0);
        assert_eq!(&out[12..12 + len], &data[..]);
        assert!(
            out[..12].iter().all(|&b| b == 0xee),
            "the header room is left alone"
        );
        assert!(
            out[12 + len..].iter().all(|&b| b == 0xee),
            "nothing is written past the frame"
        );
    }

    #[test]
    fn the_same_chain_reads_the_same_into_a_packet_as_read_chain_does() {
        let data = frame(999);
        let mem = memory();
        let q = MockSplitQueue::new(&mem, SIZE);
        let mut queue: Queue = q.create_queue().unwrap();
        let mut hdr = plain();
        hdr.flags = VirtioNetHdr::F_NEEDS_CSUM;
        hdr.csum_start = 34;
        hdr.csum_offset = 16;
        post(&mem, &q, hdr, &data, &[(500, 0), (499, 0)]);
        post(&mem, &q, hdr, &data, &[(500, 0), (499, 0)]);
        let a = pop_chain(&mut queue, &mem).unwrap().unwrap();
        let b = pop_chain(&mut queue, &mem).unwrap().unwrap();
        let mut via_engine = Packet::with_capacity(4096);
        read_chain(&a, &mut via_engine, &limits()).unwrap();
        let mut direct = Packet::with_capacity(4096);
        let (dhdr, len) = read_chain_into(&b, &mut direct, &limits()).unwrap();
        assert_eq!(dhdr, via_engine.hdr);
        assert_eq!(len, via_engine.len());
        assert_eq!(&direct.buf_mut()[..len], via_engine.frame());
    }

    #[test]
    fn a_frame_larger_than_the_posted_buffers_is_refused_before_it_overruns_them() {
        let data = frame(1000);
        let (got, out) = one_chain(plain(), &data, &[(600, 0), (400, 0)], &[300, 400], 12);
        assert!(matches!(
            got,
            Err(TxChainError::FrameTooLarge {
                len: 1000,
                max: 688
            })
        ));
        assert!(
            out[12 + 600..].iter().all(|&b| b == 0xee),
            "the descriptor that does not fit is not read"
        );
    }

    #[test]
    fn hostile_chains_are_refused_with_the_engines_reasons() {
        let data = frame(200);
        let segs = [4096];
        let (got, _) = one_chain(plain(), &data, &[(100, 0), (100, F_WRITE)], &segs, 12);
        assert!(matches!(
            got,
            Err(TxChainError::WriteOnlyDescriptor { position: 2 })
        ));
        let (got, _) = one_chain(plain(), &data[..10], &[(10, 0)], &segs, 12);
        assert!(matches!(got, Err(TxChainError::RuntFrame { len: 10 })));
        // A TSO header on a frame the driver may send, but with a checksum start past it.
        let mut bad = plain();
        bad.flags = VirtioNetHdr::F_NEEDS_CSUM;
        bad.csum_start = 300;
        bad.csum_offset = 16;
        let (got, _) = one_chain(bad, &data, &[(200, 0)], &segs, 12);
        assert!(matches!(got, Err(TxChainError::BadHeader(_))));
        // Frame bytes outside guest memory.
        let mem = memory();
        let q = MockSplitQueue::new(&mem, SIZE);
        let mut queue: Queue = q.create_queue().unwrap();
        mem.write_slice(&plain().to_bytes(), GuestAddress(HDR))
            .unwrap();
        q.build_desc_chain(&[
            RawDescriptor::from(Descriptor::new(HDR, 12, F_NEXT, 1)),
            RawDescriptor::from(Descriptor::new(0x10_0000 - 8, 64, 0, 0)),
        ])
        .unwrap();
        let chain = pop_chain(&mut queue, &mem).unwrap().unwrap();
        let mut buf = vec![0u8; 4096];
        let mut segs: [&mut [u8]; 1] = [&mut buf];
        let got = read_chain_into(&chain, &mut ScatterDest::new(&mut segs, 12), &limits());
        assert!(matches!(got, Err(TxChainError::BadAddress { .. })));
    }

    #[test]
    fn a_capped_destination_refuses_what_a_packet_of_that_size_would() {
        let data = frame(1000);
        let mem = memory();
        let q = MockSplitQueue::new(&mem, SIZE);
        let mut queue: Queue = q.create_queue().unwrap();
        post(&mem, &q, plain(), &data, &[(600, 0), (400, 0)]);
        post(&mem, &q, plain(), &data, &[(600, 0), (400, 0)]);
        let mut buf = vec![0xeeu8; 4096];
        let mut segs: [&mut [u8]; 1] = [&mut buf];
        let mut dest = ScatterDest::new(&mut segs, 12);
        let chain = pop_chain(&mut queue, &mem).unwrap().unwrap();
        let got = read_chain_into(&chain, &mut Capped::new(&mut dest, 999), &limits());
        assert!(matches!(
            got,
            Err(TxChainError::FrameTooLarge {
                len: 1000,
                max: 999
            })
        ));
        let chain = pop_chain(&mut queue, &mem).unwrap().unwrap();
        let mut capped = Capped::new(&mut dest, 1000);
        assert_eq!(capped.segment_at(999).map(|s| s.len()), Some(1));
        assert!(capped.segment_at(1000).is_none());
        let (_, len) = read_chain_into(&chain, &mut capped, &limits()).unwrap();
        assert_eq!(len, 1000);
        assert_eq!(&buf[12..1012], &data[..]);
        assert_eq!(buf[1012], 0xee, "nothing past the cap");
    }

    #[test]
    fn segment_lookups_restart_when_asked_behind_the_cursor() {
        let mut a = [0u8; 4];
        let mut b = [0u8; 4];
        let mut segs: [&mut [u8]; 2] = [&mut a, &mut b];
        let mut d = ScatterDest::new(&mut segs, 2);
        assert_eq!(d.capacity(), 6);
        assert_eq!(d.segment_at(3).map(|s| s.len()), Some(3));
        assert_eq!(d.segment_at(0).map(|s| s.len()), Some(2));
        assert_eq!(d.segment_at(5).map(|s| s.len()), Some(1));
        assert!(d.segment_at(6).is_none());
        let mut none: [&mut [u8]; 0] = [];
        assert_eq!(ScatterDest::new(&mut none, 12).capacity(), 0);
    }
}
