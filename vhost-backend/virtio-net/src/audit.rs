//! The invariants every knic virtio-net device keeps under hostile input, as checks a fuzz
//! harness or test runs against guest memory and the device's counters after the device has
//! processed a ring. One set for both devices: the library kernel's harness
//! (`lkl-netstack/src/device/queue_fuzz.rs`) and the vhost-user device's fuzz target
//! (`vhost-backend/fuzz`) call these same functions.
//!
//! - **No chain leaks**: every chain the device took off a ring is used exactly once; an
//!   avail entry naming no head of the ring is counted (as an empty chain) and has nothing
//!   to come back ([`assert_every_chain_used`]).
//! - **Every chain accounted**: each TX chain taken is sent or counted under one
//!   chain reason ([`assert_tx_chains_accounted`]).
//! - **Used lengths are honest**: no used length exceeds the chain's device-writable bytes,
//!   0 for a TX chain ([`assert_used_within_writable`]), checked when the driver's buffers
//!   overlap neither the rings nor each other (a hostile driver may make them, and then the
//!   device may legitimately have written over what it read).
//!
//! Not for production paths: these allocate and panic.
#![allow(clippy::unwrap_used)] // checks: a broken invariant or harness is a panic by design

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::counters::QueueCounters;
use crate::drops::{Direction, DropReason, DropUnit};

/// The heads in a queue's avail ring (`size` entries at `avail + 4`).
pub fn avail_entries(mem: &GuestMemoryMmap, avail: u64, size: u16) -> Vec<u16> {
    let mut raw = vec![0u8; 2 * usize::from(size)];
    mem.read_slice(&mut raw, GuestAddress(avail + 4)).unwrap();
    raw.chunks_exact(2)
        .map(|e| u16::from_le_bytes([e[0], e[1]]))
        .collect()
}

/// Of the first `taken` avail entries, those naming no head of the ring (the driver's
/// corruption): the device counts them and has no used entry to give back.
pub fn entries_naming_no_head(entries: &[u16], taken: u16) -> u16 {
    let size = entries.len();
    (0..usize::from(taken))
        .filter(|&p| usize::from(entries[p % size]) >= size)
        .count() as u16
}

/// The chain each head starts, as a device's `virtio-queue` walk sees it: a scratch avail
/// ring at `scratch` (guest memory the harness owns, 0x1000 bytes for the avail ring and
/// room after it) offers every head once to a queue over the real descriptor table. Take
/// it before the device runs.
pub fn chain_shapes(
    mem: &GuestMemoryMmap,
    desc_table: u64,
    size: u16,
    scratch: u64,
) -> Vec<Vec<Descriptor>> {
    let mut avail = Vec::with_capacity(6 + 2 * usize::from(size));
    avail.extend_from_slice(&0u16.to_le_bytes());
    avail.extend_from_slice(&size.to_le_bytes());
    for head in 0..size {
        avail.extend_from_slice(&head.to_le_bytes());
    }
    avail.extend_from_slice(&0u16.to_le_bytes());
    mem.write_slice(&avail, GuestAddress(scratch)).unwrap();
    let mut q = Queue::new(size).unwrap();
    q.set_size(size);
    q.set_desc_table_address(Some(desc_table as u32), Some((desc_table >> 32) as u32));
    q.set_avail_ring_address(Some(scratch as u32), Some((scratch >> 32) as u32));
    let used = scratch + 0x1000;
    q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
    q.set_ready(true);
    let shapes = (0..size)
        .map(|_| {
            q.pop_descriptor_chain(mem)
                .map(|chain| chain.collect())
                .unwrap_or_default()
        })
        .collect();
    mem.write_slice(&vec![0; avail.len()], GuestAddress(scratch))
        .unwrap();
    shapes
}

/// Used entries `from..to` (ids and lengths), or None when they no longer all fit the ring.
/// Asserts that the used index the driver sees is the device's.
pub fn used_entries(
    mem: &GuestMemoryMmap,
    q: &Queue,
    from: u16,
    to: u16,
) -> Option<Vec<(u32, u32)>> {
    let count = to.wrapping_sub(from);
    if count > q.size() {
        return None;
    }
    let idx: u16 = mem.read_obj(GuestAddress(q.used_ring() + 2)).unwrap();
    assert_eq!(
        u16::from_le(idx),
        to,
        "the used index the driver sees is the device's"
    );
    let entries = (0..count)
        .map(|k| {
            let slot = u64::from(from.wrapping_add(k) % q.size());
            let at = GuestAddress(q.used_ring() + 4 + 8 * slot);
            let id: u32 = mem.read_obj(at).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(at.0 + 4)).unwrap();
            (u32::from_le(id), u32::from_le(len))
        })
        .collect();
    Some(entries)
}

/// Indirect tables named by any descriptor of the table (more than any chain reaches):
/// (start, length) of each (`VIRTQ_DESC_F_INDIRECT`, virtio 1.2 §2.7.5.3).
pub fn indirect_tables(mem: &GuestMemoryMmap, desc_table: u64, size: u16) -> Vec<(u64, u64)> {
    const DESC_F_INDIRECT: u16 = 4;
    let mut raw = vec![0u8; 16 * usize::from(size)];
    mem.read_slice(&mut raw, GuestAddress(desc_table)).unwrap();
    raw.chunks_exact(16)
        .filter(|d| u16::from_le_bytes([d[12], d[13]]) & DESC_F_INDIRECT != 0)
        .map(|d| {
            let addr = u64::from_le_bytes(d[..8].try_into().unwrap());
            let len = u32::from_le_bytes(d[8..12].try_into().unwrap());
            (addr, u64::from(len))
        })
        .collect()
}

/// Whether two (start, length) ranges share a byte.
pub fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.1 > 0 && b.1 > 0 && a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

/// A descriptor's (start, length).
pub fn range(d: &Descriptor) -> (u64, u64) {
    (d.addr().0, u64::from(d.len()))
}

/// The sum of `direction`'s drop counters that stand for `unit`s.
pub fn drops_of(counters: &QueueCounters, direction: Direction, unit: DropUnit) -> u64 {
    counters
        .drop_counts()
        .filter(|(r, _)| r.direction() == direction && r.unit() == unit)
        .map(|(_, n)| n)
        .sum()
}

/// No chain leaks: of the `taken` chains the device took off `direction`'s ring, all but
/// the avail entries naming no head came back used (the used index moved from 0 to `used`).
pub fn assert_every_chain_used(direction: Direction, taken: u16, no_head: u16, used: u16) {
    assert_eq!(
        taken.wrapping_sub(no_head),
        used,
        "every {direction:?} chain taken is used exactly once"
    );
}

/// Every TX chain accounted: each of the `taken` chains was sent (`sent`) or counted under
/// one chain reason. A device whose `tx_packets` also counts chains it read whole and then
/// discarded (the vhost-user device: a disabled ring, a refusing uplink) says so with
/// `sent_includes_discarded`; those two reasons are then already in `sent`.
pub fn assert_tx_chains_accounted(
    counters: &QueueCounters,
    taken: u16,
    sent: u64,
    sent_includes_discarded: bool,
) {
    let mut dropped = drops_of(counters, Direction::Tx, DropUnit::Chain);
    if sent_includes_discarded {
        dropped -= counters.drops(DropReason::TxRingDisabled)
            + counters.drops(DropReason::TxBackendRefused);
    }
    assert_eq!(
        u64::from(taken),
        sent + dropped,
        "every TX chain sent or counted as dropped"
    );
}

/// No used length exceeds the chain's device-writable bytes (so 0 for a TX chain), for the
/// used entries `used` of a ring whose chains were `shapes` before the device ran. Returns
/// false (checking nothing) when a used chain's buffers overlap `fixed` (the rings,
/// indirect tables) or each other: then the device may have written over what it read.
pub fn assert_used_within_writable(
    used: &[(u32, u32)],
    shapes: &[Vec<Descriptor>],
    fixed: &[(u64, u64)],
) -> bool {
    let mut written: Vec<(u64, u64)> = Vec::new();
    for chain in used.iter().filter_map(|e| shapes.get(e.0 as usize)) {
        for r in chain.iter().filter(|d| d.is_write_only()).map(range) {
            if fixed.iter().chain(&written).any(|&w| overlaps(r, w)) {
                return false;
            }
            written.push(r);
        }
    }
    for &(id, len) in used {
        let chain = shapes.get(id as usize).expect("used id within the ring");
        let writable: u64 = chain
            .iter()
            .filter(|d| d.is_write_only())
            .map(|d| u64::from(d.len()))
            .sum();
        assert!(
            u64::from(len) <= writable,
            "used length {len} > {writable} writable bytes of chain {id}"
        );
    }
    true
}
