//! Thin helpers over `virtio-queue`'s split ring that turn its failures into one guest-error
//! type and keep guest-chosen values away from its unrate-limited log lines.

use thiserror::Error;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

/// The guest's ring itself is unusable (bad ring addresses, an avail index running ahead of
/// the ring). The queue is left alone until the frontend resets it.
#[derive(Debug, Error)]
#[error("guest ring is unusable")]
pub struct RingError(#[source] pub virtio_queue::Error);

/// Pops the next available chain, if any.
pub fn pop_chain<'m, M: GuestMemory>(
    queue: &mut Queue,
    mem: &'m M,
) -> Result<Option<DescriptorChain<&'m M>>, RingError> {
    let mut iter = queue.iter(mem).map_err(RingError)?;
    Ok(iter.next())
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
    queue.add_used(mem, head, len).map_err(RingError)?;
    Ok(true)
}

/// Un-pops the last `n` chains (they go back to the guest untouched).
pub fn unpop(queue: &mut Queue, n: usize) {
    for _ in 0..n {
        queue.go_to_previous_position();
    }
}
