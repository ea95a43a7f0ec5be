//! The split-ring walk every knic virtio-net device shares: thin helpers over
//! `virtio-queue`'s split ring that turn its failures into one guest-error type (and keep
//! guest-chosen values away from its unrate-limited log lines), the one walk over a chain's
//! descriptors that TX and RX share ([`walk_chain`]), used-ring publication, and the
//! notification decisions both ways (virtio 1.2 §2.7.10): [`needs_notification`] for the
//! device's interrupts, [`ask_for_kick`] for the driver's kicks.
//!
//! Used elements are written here, not with `Queue::add_used`: that one stores the used index
//! after every element, so a merged RX frame (several chains, virtio 1.2 §5.1.6.4) would reach
//! the driver one buffer at a time, and Linux's `receive_mergeable` drops a frame whose later
//! buffers are not yet used ("rx error: N buffers out of M missing"). [`return_used_together`]
//! writes all of a frame's elements first and publishes them with one Release store of the
//! used index (§2.7.8). Since `add_used` is bypassed, so is its `num_added` count that
//! `Queue::needs_notification` relies on: the notification decision is [`needs_notification`]
//! here, given the used index of the previous decision.

use std::num::Wrapping;
use std::ops::{ControlFlow, Deref};
use std::sync::atomic::{Ordering, fence};

use crate::drops::{Direction, DropReason};
use crate::guest_map::SplitRing;
use thiserror::Error;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

// Split-ring layout (virtio 1.2 §2.7.6, §2.7.8): both rings start with `le16 flags; le16 idx;`;
// an avail entry is a `le16` head, a used entry `struct virtq_used_elem { le32 id; le32 len; }`.
// The avail ring ends with `used_event`, after its entries; the used ring with `avail_event`.
const RING_HEADER_SIZE: u64 = 4;
const USED_IDX_OFFSET: u64 = 2;
const USED_ELEM_SIZE: u64 = 8;
const AVAIL_ELEM_SIZE: u64 = 2;
/// `VIRTQ_AVAIL_F_NO_INTERRUPT` (virtio 1.2 §2.7.7): without EVENT_IDX, the driver asks for
/// no interrupts (Linux sets it while NAPI polls, DPDK's virtio-user while it polls).
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT (virtio 1.2 §2.7.5).
pub(crate) const DESC_F_NEXT: u16 = 1;
pub(crate) const DESC_F_WRITE: u16 = 2;
pub(crate) const DESC_F_INDIRECT: u16 = 4;

/// The guest's ring itself is unusable. The queue is left alone for this round; the guest's
/// next kick tries again. Each variant names the ring part that failed, so the drop is
/// counted under that direction's avail or used breakage ([`RingError::reason`]).
#[derive(Debug, Error)]
pub enum RingError {
    /// Bad avail ring address, an avail index running ahead of the ring.
    #[error("guest avail ring is unusable")]
    Avail(#[source] virtio_queue::Error),
    /// The avail index announces chains whose avail ring entries cannot be read: draining
    /// again would find the same nothing, forever.
    #[error("avail ring entry {next_avail} is unreadable")]
    UnreadableEntry { next_avail: u16 },
    /// The used ring (or the notification fields) cannot be written or read.
    #[error("guest used ring is unusable")]
    Used(#[source] virtio_queue::Error),
    /// More used elements for one publication than the ring has entries: later ones would
    /// overwrite earlier ones before the driver saw them. The device never asks for that.
    #[error("{count} used elements do not fit a ring of {size}")]
    TooManyUsed { count: usize, size: u16 },
}

impl RingError {
    /// The counter this breakage of `direction`'s ring is counted under.
    pub fn reason(&self, direction: Direction) -> DropReason {
        match self {
            Self::Avail(_) | Self::UnreadableEntry { .. } => {
                DropReason::avail_ring_broken(direction)
            }
            Self::Used(_) | Self::TooManyUsed { .. } => DropReason::used_ring_broken(direction),
        }
    }
}

/// Pops the next available chain, if any.
pub fn pop_chain<'m, M: GuestMemory>(
    queue: &mut Queue,
    mem: &'m M,
) -> Result<Option<DescriptorChain<&'m M>>, RingError> {
    let announced = queue
        .avail_idx(mem, Ordering::Acquire)
        .map_err(RingError::Avail)?;
    let chain = queue.iter(mem).map_err(RingError::Avail)?.next();
    let next_avail = queue.next_avail();
    if chain.is_none() && announced.0 != next_avail {
        // The iterator stops early only when it cannot read the entry (or the guest moved
        // its avail index backwards, which is as broken).
        return Err(RingError::UnreadableEntry { next_avail });
    }
    Ok(chain)
}

/// Puts `head` on the used ring with `len` bytes written. A head index outside the ring (the
/// guest's own corruption, already counted as an empty chain) cannot be returned and is skipped.
pub fn return_used<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    head: u16,
    len: u32,
) -> Result<bool, RingError> {
    Ok(return_used_together(queue, mem, [(head, len)])? == 1)
}

/// Puts every `(head, len)` of `used` on the used ring and only then makes them visible to the
/// driver, with one Release store of the used index (virtio 1.2 §2.7.8), so a merged frame is
/// never seen in part. Heads outside the ring are skipped as in [`return_used`]. Returns how
/// many were published. If an element cannot be written, none is published.
pub fn return_used_together<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    used: impl IntoIterator<Item = (u16, u32)>,
) -> Result<u16, RingError> {
    publish(queue, used, None::<&SplitRing<'_, M>>, mem)
}

/// [`return_used_together`] through `ring`, the queue's rings mapped for this batch: the
/// used elements and index are written by offset instead of by guest address (what
/// [`SplitRing`] cannot write, it leaves to `mem`).
pub fn return_used_mapped<M: GuestMemory + ?Sized>(
    queue: &mut Queue,
    mem: &M,
    ring: &SplitRing<'_, M>,
    used: impl IntoIterator<Item = (u16, u32)>,
) -> Result<u16, RingError> {
    publish(queue, used, Some(ring), mem)
}

/// The one used-ring publication: every element written, then one Release store of the
/// index.
fn publish<M: GuestMemory + ?Sized>(
    queue: &mut Queue,
    used: impl IntoIterator<Item = (u16, u32)>,
    ring: Option<&SplitRing<'_, M>>,
    mem: &M,
) -> Result<u16, RingError> {
    let used_err = |e| RingError::Used(virtio_queue::Error::GuestMemory(e));
    let size = queue.size();
    let base = GuestAddress(queue.used_ring());
    let first = Wrapping(queue.next_used());
    let mut count = 0u16;
    for (head, len) in used {
        if head >= size {
            continue;
        }
        if count >= size {
            return Err(RingError::TooManyUsed {
                count: usize::from(count) + 1,
                size,
            });
        }
        let slot = (first + Wrapping(count)).0 % size;
        if ring.and_then(|r| r.write_used(slot, head, len)).is_none() {
            let addr = base
                .checked_add(RING_HEADER_SIZE + u64::from(slot) * USED_ELEM_SIZE)
                .ok_or(RingError::Used(virtio_queue::Error::AddressOverflow))?;
            // `id` in the low word, `len` in the high one, both little-endian.
            let elem = (u64::from(len) << 32) | u64::from(head);
            mem.write_obj(elem.to_le(), addr).map_err(used_err)?;
        }
        count += 1;
    }
    if count == 0 {
        return Ok(0);
    }
    let next = (first + Wrapping(count)).0;
    // Release: the elements written above are visible before the index that announces them.
    if ring.and_then(|r| r.store_used_idx(next)).is_none() {
        let idx_addr = base
            .checked_add(USED_IDX_OFFSET)
            .ok_or(RingError::Used(virtio_queue::Error::AddressOverflow))?;
        mem.store(next.to_le(), idx_addr, Ordering::Release)
            .map_err(used_err)?;
    }
    queue.set_next_used(next);
    Ok(count)
}

/// Whether the driver wants a notification for the used elements published since the used
/// index was `old_used` (the previous decision). With EVENT_IDX: when the index moved past
/// the driver's `used_event` (§2.7.10, the kernel's `vring_need_event`); without it: unless
/// the driver set VIRTQ_AVAIL_F_NO_INTERRUPT. A hint that cannot be read is an error; the
/// caller counts it and notifies anyway (a spurious interrupt costs less than a stalled
/// driver).
pub fn needs_notification<M: GuestMemory>(
    queue: &Queue,
    mem: &M,
    old_used: u16,
) -> Result<bool, RingError> {
    let new = Wrapping(queue.next_used());
    let old = Wrapping(old_used);
    if new == old {
        return Ok(false);
    }
    // The used index store must be visible before the driver's hint is read.
    fence(Ordering::SeqCst);
    let avail = GuestAddress(queue.avail_ring());
    if !queue.event_idx_enabled() {
        let flags = mem
            .load::<u16>(avail, Ordering::Relaxed)
            .map_err(|e| RingError::Avail(virtio_queue::Error::GuestMemory(e)))?;
        return Ok(u16::from_le(flags) & AVAIL_F_NO_INTERRUPT == 0);
    }
    let used_event_addr = avail
        .checked_add(RING_HEADER_SIZE + u64::from(queue.size()) * AVAIL_ELEM_SIZE)
        .ok_or(RingError::Avail(virtio_queue::Error::AddressOverflow))?;
    let used_event = mem
        .load::<u16>(used_event_addr, Ordering::Relaxed)
        .map_err(|e| RingError::Avail(virtio_queue::Error::GuestMemory(e)))?;
    let event = Wrapping(u16::from_le(used_event));
    Ok(new - event - Wrapping(1) < new - old)
}

/// Asks the driver to kick once it posts chains beyond avail index `seen` (with EVENT_IDX:
/// `avail_event = seen`; without: clears VRING_USED_F_NO_NOTIFY), then returns whether it
/// already has, so the caller looks again instead of sleeping. Used when the device waits
/// for more buffers than the driver posted: `Queue::enable_notification` would ask for a
/// kick at the device's own position, which the driver has already passed, and so never
/// get one.
pub fn ask_for_kick<M: GuestMemory>(queue: &Queue, mem: &M, seen: u16) -> Result<bool, RingError> {
    let used = GuestAddress(queue.used_ring());
    let (addr, value) = if queue.event_idx_enabled() {
        let offset = RING_HEADER_SIZE + u64::from(queue.size()) * USED_ELEM_SIZE;
        (used.checked_add(offset), seen)
    } else {
        (Some(used), 0) // used->flags without VRING_USED_F_NO_NOTIFY
    };
    let addr = addr.ok_or(RingError::Used(virtio_queue::Error::AddressOverflow))?;
    mem.store(value.to_le(), addr, Ordering::Relaxed)
        .map_err(|e| RingError::Used(virtio_queue::Error::GuestMemory(e)))?;
    // The hint must be visible before the avail index is read again.
    fence(Ordering::SeqCst);
    let now = queue
        .avail_idx(mem, Ordering::Acquire)
        .map_err(RingError::Avail)?;
    Ok(now.0 != seen)
}

/// Whether the driver has made no chain available beyond the device's position: a device
/// that cannot take a chain (its backend has no room) stalls only if one waits. An
/// unreadable avail index says "not empty", so the caller stalls rather than drops.
pub fn avail_is_empty<M: GuestMemory>(queue: &Queue, mem: &M) -> bool {
    queue
        .avail_idx(mem, Ordering::Acquire)
        .is_ok_and(|idx| idx.0 == queue.next_avail())
}

/// Un-pops the last `n` chains (they go back to the guest untouched).
pub fn unpop(queue: &mut Queue, n: usize) {
    for _ in 0..n {
        queue.go_to_previous_position();
    }
}

/// How the device uses every buffer of a chain: a TX chain is only read, an RX chain only
/// written (a net chain never mixes the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    DeviceReads,
    DeviceWrites,
}

/// What is wrong with a chain's shape, whatever it carries. Each direction's error type
/// converts it into its own variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeError {
    /// Descriptor `position` (from 0) allows the other access.
    WrongAccess { position: usize },
    /// Not a single descriptor (bad head index, unreadable or invalid indirect table).
    Empty,
    /// The walk stopped at a descriptor still claiming a successor: a loop, a chain longer
    /// than the queue, or a `next` out of range (virtio-queue's iterator ends there).
    Truncated,
}

impl ShapeError {
    /// The counter this shape is counted under on `direction`'s ring.
    pub fn reason(self, direction: Direction) -> DropReason {
        match (self, direction) {
            (Self::WrongAccess { .. }, Direction::Tx) => DropReason::TxWriteOnlyDescriptor,
            (Self::WrongAccess { .. }, Direction::Rx) => DropReason::RxReadOnlyDescriptor,
            (Self::Empty, Direction::Tx) => DropReason::TxEmptyChain,
            (Self::Empty, Direction::Rx) => DropReason::RxEmptyChain,
            (Self::Truncated, Direction::Tx) => DropReason::TxChainTruncated,
            (Self::Truncated, Direction::Rx) => DropReason::RxChainTruncated,
        }
    }
}

/// What is wrong with a chain whose buffers a device maps (a shape fault, a buffer outside
/// guest memory, more buffers than the device's gather/scatter list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainFault {
    Shape(ShapeError),
    BadAddress,
    TooManyBuffers,
}

impl From<ShapeError> for ChainFault {
    fn from(e: ShapeError) -> Self {
        Self::Shape(e)
    }
}

impl ChainFault {
    /// The counter this fault is counted under on `direction`'s ring.
    pub fn reason(self, direction: Direction) -> DropReason {
        match (self, direction) {
            (Self::Shape(s), d) => s.reason(d),
            (Self::BadAddress, Direction::Tx) => DropReason::TxBadAddress,
            (Self::BadAddress, Direction::Rx) => DropReason::RxBadAddress,
            (Self::TooManyBuffers, Direction::Tx) => DropReason::TxTooManyBuffers,
            (Self::TooManyBuffers, Direction::Rx) => DropReason::RxTooManyBuffers,
        }
    }
}

impl Access {
    /// How the device uses the buffers of `direction`'s chains.
    pub fn of(direction: Direction) -> Access {
        match direction {
            Direction::Tx => Access::DeviceReads,
            Direction::Rx => Access::DeviceWrites,
        }
    }
}

/// Walks `chain`'s descriptors front to back with `virtio-queue`'s iterator, checking each for
/// `access` before `visit` sees it; `visit` returns `Break` once it needs no more (the rest of
/// the chain is then left unread and unchecked). A walk that reaches the end checks that the
/// chain had a descriptor and was not cut short.
pub fn walk_chain<M, E>(
    chain: &DescriptorChain<M>,
    access: Access,
    mut visit: impl FnMut(&Descriptor) -> Result<ControlFlow<()>, E>,
) -> Result<(), E>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
    E: From<ShapeError>,
{
    let mut descriptors = 0usize;
    let mut last_has_next = false;
    for desc in chain.clone() {
        if desc.is_write_only() != (access == Access::DeviceWrites) {
            return Err(ShapeError::WrongAccess {
                position: descriptors,
            }
            .into());
        }
        descriptors += 1;
        last_has_next = desc.has_next();
        if visit(&desc)?.is_break() {
            return Ok(());
        }
    }
    if descriptors == 0 {
        return Err(ShapeError::Empty.into());
    }
    if last_has_next {
        return Err(ShapeError::Truncated.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    use super::*;

    const SIZE: u16 = 16;
    const F_WRITE: u16 = 2;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn chains(q: &MockSplitQueue<'_, GuestMemoryMmap>, n: u16) {
        let descs: Vec<_> = (0..n)
            .map(|i| {
                let d = SplitDescriptor::new(0x8000 + u64::from(i) * 0x100, 0x100, F_WRITE, 0);
                RawDescriptor::from(d)
            })
            .collect();
        q.add_desc_chains(&descs, 0).unwrap();
    }

    fn used_idx(mem: &GuestMemoryMmap, q: &MockSplitQueue<'_, GuestMemoryMmap>) -> u16 {
        mem.read_obj(q.used_addr().unchecked_add(USED_IDX_OFFSET))
            .unwrap()
    }

    #[test]
    fn a_frame_of_several_chains_is_published_with_one_index_store() {
        let mem = memory();
        let q = MockSplitQueue::new(&mem, SIZE);
        let mut queue: Queue = q.create_queue().unwrap();
        chains(&q, 3);
        let mut heads = Vec::new();
        while let Some(c) = pop_chain(&mut queue, &mem).unwrap() {
            heads.push(c.head_index());
        }
        assert_eq!(heads, [0, 1, 2]);
        // A head the ring lacks is skipped, not published.
        let used = heads.iter().map(|&h| (h, 7)).chain([(SIZE + 1, 0)]);
        assert_eq!(return_used_together(&mut queue, &mem, used).unwrap(), 3);
        assert_eq!(used_idx(&mem, &q), 3);
        assert_eq!(queue.next_used(), 3);
        let too_many = (0..=SIZE).map(|h| (h % SIZE, 0));
        assert!(matches!(
            return_used_together(&mut queue, &mem, too_many),
            Err(RingError::TooManyUsed { .. })
        ));
        assert_eq!(
            used_idx(&mem, &q),
            3,
            "nothing of a failed publication is seen"
        );
    }

    #[test]
    fn notifications_follow_used_event_or_the_no_interrupt_flag() {
        let mem = memory();
        let q = MockSplitQueue::new(&mem, SIZE);
        let mut queue: Queue = q.create_queue().unwrap();
        // The mock lays its used ring over the avail ring's used_event: move the used ring.
        queue.set_used_ring_address(Some(0x4000), Some(0));
        chains(&q, 4);
        for _ in 0..2 {
            let c = pop_chain(&mut queue, &mem).unwrap().unwrap();
            return_used(&mut queue, &mem, c.head_index(), 0).unwrap();
        }
        assert!(needs_notification(&queue, &mem, 0).unwrap());
        assert!(!needs_notification(&queue, &mem, 2).unwrap(), "nothing new");
        mem.write_obj(1u16, q.avail_addr()).unwrap(); // NO_INTERRUPT
        assert!(!needs_notification(&queue, &mem, 0).unwrap());
        queue.set_event_idx(true);
        let used_event = q.avail_addr().unchecked_add(4 + 2 * u64::from(SIZE));
        mem.write_obj(5u16, used_event).unwrap();
        assert!(!needs_notification(&queue, &mem, 0).unwrap());
        mem.write_obj(1u16, used_event).unwrap();
        assert!(needs_notification(&queue, &mem, 0).unwrap());
        assert!(!needs_notification(&queue, &mem, 2).unwrap());
    }

    #[test]
    fn a_kick_is_asked_for_past_what_the_device_saw() {
        let mem = memory();
        let q = MockSplitQueue::new(&mem, SIZE);
        let mut queue: Queue = q.create_queue().unwrap();
        queue.set_event_idx(true);
        queue.set_used_ring_address(Some(0x4000), Some(0));
        chains(&q, 2);
        assert!(!ask_for_kick(&queue, &mem, 2).unwrap(), "nothing new yet");
        let avail_event = GuestAddress(0x4000 + 4 + 8 * u64::from(SIZE));
        assert_eq!(mem.read_obj::<u16>(avail_event).unwrap(), 2);
        mem.write_obj(3u16, q.avail_addr().unchecked_add(2))
            .unwrap();
        assert!(ask_for_kick(&queue, &mem, 2).unwrap(), "posted meanwhile");
    }

    #[test]
    fn walk_faults_are_named_for_their_direction() {
        assert_eq!(
            ChainFault::from(ShapeError::Empty).reason(Direction::Tx),
            DropReason::TxEmptyChain
        );
        assert_eq!(
            ChainFault::TooManyBuffers.reason(Direction::Rx),
            DropReason::RxTooManyBuffers
        );
        assert_eq!(
            ShapeError::WrongAccess { position: 1 }.reason(Direction::Rx),
            DropReason::RxReadOnlyDescriptor
        );
    }
}
