//! Bounded lock-free single-producer single-consumer ring.
//!
//! Design: a power-of-two array of slots and two free-running indices. Only the [`Producer`]
//! writes `tail`, only the [`Consumer`] writes `head`; each side caches the other's index and
//! re-reads it (Acquire) only when the cache says the ring looks full/empty, so a batch costs one
//! atomic load and one atomic store per side. Slots in `head..tail` are initialised and owned by
//! the consumer; slots in `tail..head+capacity` are uninitialised and owned by the producer.
//! Publishing (Release store of `tail`/`head`) hands slots from one side to the other.
//!
//! This is the only module of the crate with `unsafe`: the slot accesses below.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Shared<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    /// Next slot the consumer reads. Written only by the consumer.
    head: AtomicUsize,
    /// Next slot the producer writes. Written only by the producer.
    tail: AtomicUsize,
}

// SAFETY: a slot is accessed by exactly one side at a time: the producer only touches slots in
// `tail..head+capacity`, the consumer only slots in `head..tail`, and the Release/Acquire pairs on
// `head`/`tail` order the slot writes before the hand-over. So sharing `Shared` between the two
// threads is sound when `T` itself may be sent between threads.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: see the `Sync` impl; `Shared` owns its `T`s, so moving it needs `T: Send`.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let head = *self.head.get_mut();
        let tail = *self.tail.get_mut();
        for i in head..tail {
            let slot = self.slots[i & self.mask].get_mut();
            // SAFETY: `drop` has `&mut self`, so both endpoints are gone; slots in `head..tail`
            // were written by the producer and not yet read by the consumer, so each holds an
            // initialised value that is dropped exactly once here.
            unsafe { slot.assume_init_drop() };
        }
    }
}

/// Creates a ring holding at most `capacity` items (rounded up to a power of two, at least 2).
pub fn ring<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let cap = capacity.max(2).next_power_of_two();
    let slots = (0..cap)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect::<Vec<_>>()
        .into_boxed_slice();
    let shared = Arc::new(Shared {
        slots,
        mask: cap - 1,
        head: AtomicUsize::new(0),
        tail: AtomicUsize::new(0),
    });
    (
        Producer {
            shared: Arc::clone(&shared),
            tail: 0,
            cached_head: 0,
        },
        Consumer {
            shared,
            head: 0,
            cached_tail: 0,
        },
    )
}

/// The writing end of a ring. Not `Clone`: there is exactly one producer.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Producer's own copy of `shared.tail` (it is the only writer).
    tail: usize,
    cached_head: usize,
}

impl<T> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("tail", &self.tail)
            .finish()
    }
}

impl<T> Producer<T> {
    /// How many items the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Free slots as seen now (refreshes the cached consumer index).
    pub fn free(&mut self) -> usize {
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        self.capacity() - (self.tail - self.cached_head)
    }

    fn has_room(&mut self) -> bool {
        if self.tail - self.cached_head < self.capacity() {
            return true;
        }
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        self.tail - self.cached_head < self.capacity()
    }

    fn write_slot(&mut self, value: T) {
        let slot = &self.shared.slots[self.tail & self.shared.mask];
        // SAFETY: `has_room` returned true, so slot `tail` is outside `head..tail`: the consumer
        // does not read it until we publish a `tail` past it, and no other producer exists
        // (`Producer` is not `Clone`). The slot holds no live value (it was never written or
        // was moved out by the consumer), so overwriting it leaks nothing.
        unsafe { (*slot.get()).write(value) };
        self.tail += 1;
    }

    /// Pushes one item and publishes it; gives the item back when the ring is full.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        if !self.has_room() {
            return Err(value);
        }
        self.write_slot(value);
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Pushes up to `max` items produced by `next` while there is room, publishing once at the
    /// end. `next` is called only when a slot is free, so an item it yields is never lost; it
    /// returning `None` ends the batch. Returns how many were pushed.
    pub fn push_batch(&mut self, max: usize, mut next: impl FnMut() -> Option<T>) -> usize {
        let mut n = 0;
        while n < max && self.has_room() {
            let Some(v) = next() else { break };
            self.write_slot(v);
            n += 1;
        }
        if n > 0 {
            self.shared.tail.store(self.tail, Ordering::Release);
        }
        n
    }
}

/// The reading end of a ring. Not `Clone`: there is exactly one consumer.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Consumer's own copy of `shared.head` (it is the only writer).
    head: usize,
    cached_tail: usize,
}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("head", &self.head)
            .finish()
    }
}

impl<T> Consumer<T> {
    /// Items waiting now (refreshes the cached producer index).
    pub fn len(&mut self) -> usize {
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        self.cached_tail - self.head
    }

    /// Whether no item is waiting now.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    fn has_item(&mut self) -> bool {
        if self.head != self.cached_tail {
            return true;
        }
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        self.head != self.cached_tail
    }

    fn read_slot(&mut self) -> T {
        let slot = &self.shared.slots[self.head & self.shared.mask];
        // SAFETY: `has_item` returned true, so slot `head` is in `head..tail`: the producer wrote
        // it and published it with a Release store of `tail` that our Acquire load observed. It
        // will not touch the slot again until we publish a `head` past it, so we move the value
        // out exactly once.
        let v = unsafe { (*slot.get()).assume_init_read() };
        self.head += 1;
        v
    }

    /// Pops one item, releasing its slot to the producer at once.
    pub fn pop(&mut self) -> Option<T> {
        if !self.has_item() {
            return None;
        }
        let v = self.read_slot();
        self.shared.head.store(self.head, Ordering::Release);
        Some(v)
    }

    /// Pops up to `max` items into `f`, releasing all their slots with one store. Returns how
    /// many were popped.
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let mut n = 0;
        while n < max && self.has_item() {
            f(self.read_slot());
            n += 1;
        }
        if n > 0 {
            self.shared.head.store(self.head, Ordering::Release);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_rounds_up_and_full_ring_refuses() {
        let (mut p, mut c) = ring::<u32>(3);
        assert_eq!(p.capacity(), 4);
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(9), Err(9));
        assert_eq!(c.pop(), Some(0));
        p.push(4).unwrap();
        let mut got = Vec::new();
        assert_eq!(c.pop_batch(10, |v| got.push(v)), 4);
        assert_eq!(got, [1, 2, 3, 4]);
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn batch_push_stops_at_capacity_and_keeps_the_rest() {
        let (mut p, mut c) = ring::<u32>(4);
        let mut items = 0..10;
        assert_eq!(p.push_batch(usize::MAX, || items.next()), 4);
        assert_eq!(items.next(), Some(4));
        assert_eq!(p.push_batch(2, || Some(99)), 0);
        assert_eq!(c.len(), 4);
        assert_eq!(p.free(), 0);
    }

    #[test]
    fn unread_items_are_dropped_with_the_ring() {
        let item = Arc::new(());
        {
            let (mut p, mut c) = ring::<Arc<()>>(4);
            p.push(Arc::clone(&item)).unwrap();
            p.push(Arc::clone(&item)).unwrap();
            p.push(Arc::clone(&item)).unwrap();
            drop(c.pop());
            assert_eq!(Arc::strong_count(&item), 3);
        }
        assert_eq!(Arc::strong_count(&item), 1);
    }

    #[test]
    fn two_threads_see_every_item_in_order() {
        const N: u64 = 200_000;
        let (mut p, mut c) = ring::<u64>(64);
        let t = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                if p.push(i).is_ok() {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut expect = 0;
        while expect < N {
            c.pop_batch(32, |v| {
                assert_eq!(v, expect);
                expect += 1;
            });
        }
        t.join().unwrap();
        assert!(c.is_empty());
    }
}
