//! Thin helpers over `virtio-queue`'s split ring that turn its failures into one guest-error
//! type and keep guest-chosen values away from its unrate-limited log lines, and the walk
//! over one chain's descriptors that TX and RX share ([`walk_chain`]).

use std::ops::{ControlFlow, Deref};
use std::sync::atomic::Ordering;

use thiserror::Error;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

/// The guest's ring itself is unusable. The queue is left alone for this round; the guest's
/// next kick tries again.
#[derive(Debug, Error)]
pub enum RingError {
    /// Bad ring addresses, an avail index running ahead of the ring, an unwritable used ring.
    #[error("guest ring is unusable")]
    Queue(#[source] virtio_queue::Error),
    /// The avail index announces chains whose avail ring entries cannot be read: draining
    /// again would find the same nothing, forever.
    #[error("avail ring entry {next_avail} is unreadable")]
    UnreadableEntry { next_avail: u16 },
}

impl From<virtio_queue::Error> for RingError {
    fn from(e: virtio_queue::Error) -> Self {
        Self::Queue(e)
    }
}

/// Pops the next available chain, if any.
pub fn pop_chain<'m, M: GuestMemory>(
    queue: &mut Queue,
    mem: &'m M,
) -> Result<Option<DescriptorChain<&'m M>>, RingError> {
    let announced = queue.avail_idx(mem, Ordering::Acquire)?;
    let chain = queue.iter(mem)?.next();
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
    if head >= queue.size() {
        return Ok(false);
    }
    queue.add_used(mem, head, len)?;
    Ok(true)
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
