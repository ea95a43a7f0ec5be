//! Guest memory translated once per batch, and the split ring seen through it.
//!
//! Every `vm-memory` access by guest address looks its region up again and walks
//! `get_slices`' iterator: measured in `vhost-backend/benches/queue_pair.rs`, that lookup
//! was about half of the device's time per 64-byte TX frame (eight lookups per frame: avail
//! index twice, avail entry, descriptor, header, frame, used element, used index). A
//! [`GuestMap`] takes each region's [`VolatileSlice`] once; a lookup is then a bounds check
//! against a handful of regions. [`SplitRing`] maps a queue's descriptor table, avail ring
//! and used ring once, so the ring's own fields are read and written by offset.
//!
//! Nothing here trusts the guest more than `vm-memory` does: every access goes through a
//! [`VolatileSlice`] (bounds-checked, volatile, dirty-bitmap-marking on writes), a range
//! must lie within one region (one that spans two is left to the caller's `vm-memory` path),
//! and each value is read once into a local before it is checked. A memory without host
//! mappings (an IOMMU in between), or with more regions than fit, gets no map: callers then
//! take the `vm-memory` path for everything.

use std::sync::atomic::Ordering;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::bitmap::BS;
use vm_memory::{
    Bytes, GuestMemory, GuestMemoryBackend, GuestMemoryRegion, VolatileMemory, VolatileSlice,
};

/// Regions a [`GuestMap`] holds. QEMU maps guest RAM in one to three regions; a memory with
/// more (hot-plugged DIMMs, many vhost-user memory slots) is served without a map.
pub const MAX_MAPPED_REGIONS: usize = 16;

/// The region type of memory `M`.
type RegionOf<M> = <<M as GuestMemory>::PhysicalMemory as GuestMemoryBackend>::R;
/// A slice of one of `M`'s regions.
type SliceOf<'m, M> = VolatileSlice<'m, BS<'m, <RegionOf<M> as GuestMemoryRegion>::B>>;

/// Guest memory's regions as host slices, taken once (see the module docs). Borrows the
/// memory: the slices cannot outlive the mapping.
pub struct GuestMap<'m, M: GuestMemory + ?Sized> {
    regions: [Option<(u64, SliceOf<'m, M>)>; MAX_MAPPED_REGIONS],
    count: usize,
}

impl<M: GuestMemory + ?Sized> std::fmt::Debug for GuestMap<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMap")
            .field("regions", &self.count)
            .finish()
    }
}

impl<'m, M: GuestMemory + ?Sized> GuestMap<'m, M> {
    /// Maps `mem`'s regions; `None` when it has no plain physical memory, a region without a
    /// host mapping, or more than [`MAX_MAPPED_REGIONS`] regions.
    pub fn new(mem: &'m M) -> Option<Self> {
        let physical = mem.physical_memory()?;
        let mut regions = [const { None }; MAX_MAPPED_REGIONS];
        let mut count = 0;
        for region in physical.iter() {
            let slot = regions.get_mut(count)?;
            let slice = region.as_volatile_slice().ok()?;
            *slot = Some((region.start_addr().0, slice));
            count += 1;
        }
        Some(Self { regions, count })
    }

    /// The `len` bytes at guest address `addr`, if they lie within one region.
    pub fn slice(&self, addr: u64, len: usize) -> Option<SliceOf<'m, M>> {
        self.regions[..self.count].iter().find_map(|r| {
            let (start, slice) = r.as_ref()?;
            let offset = usize::try_from(addr.checked_sub(*start)?).ok()?;
            if offset >= slice.len() {
                return None;
            }
            slice.subslice(offset, len).ok()
        })
    }
}

// Split-ring layout (virtio 1.2 §2.7.6, §2.7.8), as in `ring`.
const RING_HEADER: usize = 4;
const IDX_OFFSET: usize = 2;
const DESC_SIZE: usize = 16;
const AVAIL_ELEM: usize = 2;
const USED_ELEM: usize = 8;

/// One queue's descriptor table, avail ring and used ring, each mapped once through a
/// [`GuestMap`]. Built per batch: the queue's addresses can change between batches (a
/// frontend re-sets them), the borrow of the memory ends with the batch.
pub struct SplitRing<'m, M: GuestMemory + ?Sized> {
    desc: SliceOf<'m, M>,
    avail: SliceOf<'m, M>,
    used: SliceOf<'m, M>,
    size: u16,
}

impl<M: GuestMemory + ?Sized> std::fmt::Debug for SplitRing<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitRing")
            .field("size", &self.size)
            .finish()
    }
}

impl<'m, M: GuestMemory + ?Sized> SplitRing<'m, M> {
    /// `queue`'s rings through `map`; `None` when the queue has no entries or a ring does not
    /// lie within one region (the caller then takes the `vm-memory` path).
    pub fn new(map: &GuestMap<'m, M>, queue: &Queue) -> Option<Self> {
        let size = queue.size();
        if size == 0 {
            return None;
        }
        let n = usize::from(size);
        Some(Self {
            desc: map.slice(queue.desc_table(), n * DESC_SIZE)?,
            // Entries, then `used_event`.
            avail: map.slice(queue.avail_ring(), RING_HEADER + n * AVAIL_ELEM + 2)?,
            // Entries, then `avail_event`.
            used: map.slice(queue.used_ring(), RING_HEADER + n * USED_ELEM + 2)?,
            size,
        })
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// The driver's avail index, with Acquire ordering (the entries it announces are read
    /// after it). `None` if the field is misaligned (the guest's doing; the caller's
    /// `vm-memory` path reports it).
    pub fn avail_idx(&self) -> Option<u16> {
        self.avail
            .load::<u16>(IDX_OFFSET, Ordering::Acquire)
            .ok()
            .map(u16::from_le)
    }

    /// The head of the chain in avail slot `next_avail`, if the driver announced it: `end`
    /// is an avail index this batch read, refreshed (`avail_idx`) once the device caught up
    /// with it or moved past it (a chain popped elsewhere meanwhile). Only a slot in
    /// `next_avail..end`, that range no longer than the ring, is read: never one the driver
    /// has not published. `None`: nothing announced, or an index running ahead of the ring
    /// (the caller's `vm-memory` path reports that).
    pub fn announced_head(&self, next_avail: u16, end: &mut Option<u16>) -> Option<u16> {
        let ahead = |end: u16| {
            let n = end.wrapping_sub(next_avail);
            (n != 0 && n <= self.size).then_some(n)
        };
        if end.and_then(ahead).is_none() {
            *end = self.avail_idx();
            end.and_then(ahead)?;
        }
        self.avail_entry(next_avail)
    }

    /// The head index in avail ring slot `idx % size`.
    pub fn avail_entry(&self, idx: u16) -> Option<u16> {
        let offset = RING_HEADER + usize::from(idx % self.size) * AVAIL_ELEM;
        let raw = self.avail.get_ref::<u16>(offset).ok()?.load();
        Some(u16::from_le(raw))
    }

    /// Descriptor `index` of the table, read once (`None` past the table's end).
    pub fn descriptor(&self, index: u16) -> Option<Descriptor> {
        if index >= self.size {
            return None;
        }
        let offset = usize::from(index) * DESC_SIZE;
        Some(self.desc.get_ref::<Descriptor>(offset).ok()?.load())
    }

    /// Writes used element `(head, len)` into used ring slot `slot % size`.
    pub fn write_used(&self, slot: u16, head: u16, len: u32) -> Option<()> {
        let offset = RING_HEADER + usize::from(slot % self.size) * USED_ELEM;
        // `id` in the low word, `len` in the high one, both little-endian.
        let elem = (u64::from(len) << 32) | u64::from(head);
        self.used.write_obj(elem.to_le(), offset).ok()
    }

    /// Publishes used index `idx` with a Release store: the elements written before it are
    /// visible to the driver first (§2.7.8). `None` if the field is misaligned.
    pub fn store_used_idx(&self, idx: u16) -> Option<()> {
        self.used
            .store(idx.to_le(), IDX_OFFSET, Ordering::Release)
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    use super::*;

    #[test]
    fn ranges_must_lie_within_one_region() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x10_0000), 0x1000),
        ])
        .unwrap();
        let map = GuestMap::new(&mem).unwrap();
        mem.write_obj(0xabcdu16, GuestAddress(0x10_0010)).unwrap();
        let s = map.slice(0x10_0010, 2).unwrap();
        assert_eq!(s.read_obj::<u16>(0).unwrap(), 0xabcd);
        assert!(map.slice(0xff0, 0x20).is_none(), "spans two regions");
        assert!(map.slice(0x2000, 1).is_none(), "a hole");
        assert!(
            map.slice(0x10_0fff, 2).is_none(),
            "past the last region's end"
        );
        assert!(map.slice(u64::MAX, 1).is_none());
        assert_eq!(map.slice(0x1fff, 1).unwrap().len(), 1);
        assert_eq!(map.slice(0x1000, 0).unwrap().len(), 0);
    }

    #[test]
    fn too_many_regions_get_no_map() {
        let ranges: Vec<_> = (0..=MAX_MAPPED_REGIONS as u64)
            .map(|i| (GuestAddress(i * 0x2000), 0x1000))
            .collect();
        let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).unwrap();
        assert!(GuestMap::new(&mem).is_none());
    }

    #[test]
    fn the_ring_reads_what_virtio_queue_reads() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        let descs = [
            RawDescriptor::from(Descriptor::new(0x8000, 100, 1, 4)),
            RawDescriptor::from(Descriptor::new(0x9000, 200, 0, 0)),
        ];
        q.add_desc_chains(&descs, 3).unwrap();
        let mut queue: Queue = q.create_queue().unwrap();
        queue.set_used_ring_address(Some(0x4000), Some(0));
        let map = GuestMap::new(&mem).unwrap();
        let ring = SplitRing::new(&map, &queue).unwrap();
        assert_eq!(ring.avail_idx(), Some(1));
        let mut end = None;
        assert_eq!(ring.announced_head(0, &mut end), Some(3));
        assert_eq!(end, Some(1));
        // Caught up, or moved past the index read (chains popped elsewhere): read again,
        // and nothing beyond what the driver announced is read.
        assert_eq!(ring.announced_head(1, &mut end), None);
        let mut stale = Some(0);
        assert_eq!(ring.announced_head(0, &mut stale), Some(3));
        assert_eq!(ring.announced_head(2, &mut end), None, "past the index");
        assert_eq!(end, Some(1));
        let head = ring.avail_entry(0).unwrap();
        assert_eq!(head, 3);
        let d = ring.descriptor(head).unwrap();
        assert_eq!(
            (d.addr().0, d.len(), d.has_next(), d.next()),
            (0x8000, 100, true, 4)
        );
        assert!(ring.descriptor(16).is_none());
        ring.write_used(17, 3, 9).unwrap(); // slot 1
        ring.store_used_idx(2).unwrap();
        let used: u64 = mem.read_obj(GuestAddress(0x4000 + 4 + 8)).unwrap();
        assert_eq!(used, (9 << 32) | 3);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(0x4002)).unwrap(), 2);
    }
}
