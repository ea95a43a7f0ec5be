//! Thin helpers over `virtio-queue`'s split ring that turn its failures into one guest-error
//! type and keep guest-chosen values away from its unrate-limited log lines, and the walk
//! over one chain's descriptors that TX and RX share ([`walk_chain`]).
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

use knic_virtio_net::{Direction, DropReason};
use thiserror::Error;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

// Split-ring layout (virtio 1.2 §2.7.6, §2.7.8): both rings start with `le16 flags; le16 idx;`;
// an avail entry is a `le16` head, a used entry `struct virtq_used_elem { le32 id; le32 len; }`.
// The avail ring ends with `used_event`, after its entries.
const RING_HEADER_SIZE: u64 = 4;
const USED_IDX_OFFSET: u64 = 2;
const USED_ELEM_SIZE: u64 = 8;
const AVAIL_ELEM_SIZE: u64 = 2;

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
    let size = queue.size();
    let ring = GuestAddress(queue.used_ring());
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
        let addr = ring
            .checked_add(RING_HEADER_SIZE + u64::from(slot) * USED_ELEM_SIZE)
            .ok_or(RingError::Used(virtio_queue::Error::AddressOverflow))?;
        // `id` in the low word, `len` in the high one, both little-endian.
        let elem = (u64::from(len) << 32) | u64::from(head);
        mem.write_obj(elem.to_le(), addr)
            .map_err(|e| RingError::Used(virtio_queue::Error::GuestMemory(e)))?;
        count += 1;
    }
    if count == 0 {
        return Ok(0);
    }
    let next = (first + Wrapping(count)).0;
    let idx_addr = ring
        .checked_add(USED_IDX_OFFSET)
        .ok_or(RingError::Used(virtio_queue::Error::AddressOverflow))?;
    // Release: the elements written above are visible before the index that announces them.
    mem.store(next.to_le(), idx_addr, Ordering::Release)
        .map_err(|e| RingError::Used(virtio_queue::Error::GuestMemory(e)))?;
    queue.set_next_used(next);
    Ok(count)
}

/// Whether the driver wants a notification for the used elements published since the used
/// index was `old_used` (the previous decision): always without EVENT_IDX (as
/// `virtio-queue`, the VRING_AVAIL_F_NO_INTERRUPT hint is not used), otherwise when the
/// index moved past the driver's `used_event` (§2.7.10, the kernel's `vring_need_event`).
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
    if !queue.event_idx_enabled() {
        return Ok(true);
    }
    // The used index store must be visible before the driver's hint is read.
    fence(Ordering::SeqCst);
    let used_event_addr = GuestAddress(queue.avail_ring())
        .checked_add(RING_HEADER_SIZE + u64::from(queue.size()) * AVAIL_ELEM_SIZE)
        .ok_or(RingError::Avail(virtio_queue::Error::AddressOverflow))?;
    let used_event = mem
        .load::<u16>(used_event_addr, Ordering::Relaxed)
        .map_err(|e| RingError::Avail(virtio_queue::Error::GuestMemory(e)))?;
    let event = Wrapping(u16::from_le(used_event));
    Ok(new - event - Wrapping(1) < new - old)
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
