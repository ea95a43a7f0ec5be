//! Data-path scenarios on mock guest memory and mock split queues. Each scenario function runs
//! under every feature set that changes behaviour: mergeable RX buffers on/off and the legacy
//! (pre-VERSION_1) 10-byte header.

use std::sync::Arc;

use packet_ring::{MemoryPeer, VirtioNetHdr, memory_port_pair};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::features::OFFERED_FEATURES;
use crate::rx_filter::SharedRxFilter;

const MEM_SIZE: usize = 0x100_0000;
const QUEUE_SIZE: u16 = 16;
/// Where test buffers live (the mock rings sit at 0).
const BUF_BASE: u64 = 0x10_0000;
/// An address no guest region covers.
const OUTSIDE: u64 = 0x4000_0000;
const MTU: u16 = 1500;

const MRG: u64 = OFFERED_FEATURES;
const NO_MRG: u64 = OFFERED_FEATURES & !(1 << VIRTIO_NET_F_MRG_RXBUF);
const LEGACY: u64 = NO_MRG & !(1 << VIRTIO_F_VERSION_1);
const ALL_SETS: [(&str, u64); 3] = [("mrg", MRG), ("no_mrg", NO_MRG), ("legacy", LEGACY)];
const RX_SETS: [(&str, u64); 2] = [("mrg", MRG), ("no_mrg", NO_MRG)];

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// The device's MAC in these tests.
const DEVICE_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

fn pair(features: u64) -> (QueuePair, MemoryPeer) {
    pair_filtered(features, SharedRxFilter::new(DEVICE_MAC))
}

fn pair_filtered(features: u64, rx_filter: Arc<SharedRxFilter>) -> (QueuePair, MemoryPeer) {
    let (port, peer) = memory_port_pair(64, packet_ring::MAX_FRAME_LEN).unwrap();
    let mut qp = QueuePair::new(
        QueuePairConfig {
            index: 0,
            batch: 8,
            mtu: MTU,
            max_queue_size: QUEUE_SIZE,
        },
        Box::new(port),
        rx_filter,
        Arc::new(QueuePairStats::default()),
    );
    qp.set_features(NetFeatures::from_acked(features));
    (qp, peer)
}

/// `#[test] fn $test` running `$scenario(features)` under every feature set in `$sets`.
macro_rules! under_each_feature_set {
    ($test:ident: $scenario:ident for $sets:expr) => {
        #[test]
        fn $test() {
            for (_, features) in $sets {
                $scenario(features);
            }
        }
    };
}

/// One scenario: mock guest memory with one split queue at address 0 (TX or RX, as the test
/// uses it), and a queue pair whose uplink peer plays the host side.
struct Scene {
    mem: GuestMemoryMmap,
    q: Queue,
    qp: QueuePair,
    peer: MemoryPeer,
}

impl Scene {
    fn new(features: u64) -> Self {
        Self::with_pair(pair(features))
    }

    fn with_pair((qp, peer): (QueuePair, MemoryPeer)) -> Self {
        let mem = memory();
        // The mock lays the rings out (and zeroes their indices) once; later the tests act as
        // the driver directly on guest memory, since a new mock would zero them again.
        let q = MockSplitQueue::create(&mem, GuestAddress(0), QUEUE_SIZE)
            .create_queue::<Queue>()
            .unwrap();
        Self { mem, q, qp, peer }
    }

    /// Writes header (in the negotiated length) + frame at `addr`; returns the total length.
    fn put_at(&self, addr: u64, hdr: &VirtioNetHdr, f: &[u8]) -> u32 {
        let hlen = self.qp.features().hdr_len;
        self.mem
            .write_slice(&hdr.to_bytes()[..hlen], GuestAddress(addr))
            .unwrap();
        self.mem
            .write_slice(f, GuestAddress(addr + hlen as u64))
            .unwrap();
        (hlen + f.len()) as u32
    }

    /// [`put_at`](Self::put_at) the test buffers' base.
    fn put(&self, hdr: &VirtioNetHdr, f: &[u8]) -> u32 {
        self.put_at(BUF_BASE, hdr, f)
    }

    fn avail_addr(&self) -> GuestAddress {
        GuestAddress(self.q.avail_ring())
    }

    /// Stores `descs` in the descriptor table from index `first` and publishes every chain
    /// head among them on the avail ring (as `MockSplitQueue::add_desc_chains`).
    fn add_desc_chains(&self, descs: &[RawDescriptor], first: u16) {
        let idx_addr = self.avail_addr().unchecked_add(2);
        let mut avail: u16 = self.mem.read_obj(idx_addr).unwrap();
        let mut head = true;
        for (i, d) in descs.iter().enumerate() {
            let index = first + i as u16;
            let table = GuestAddress(self.q.desc_table()).unchecked_add(16 * u64::from(index));
            self.mem.write_obj(*d, table).unwrap();
            if head {
                let slot = 4 + 2 * u64::from(avail % QUEUE_SIZE);
                self.mem
                    .write_obj(index, self.avail_addr().unchecked_add(slot))
                    .unwrap();
                avail = avail.wrapping_add(1);
            }
            head = SplitDescriptor::from(*d).flags() & VRING_DESC_F_NEXT as u16 == 0;
        }
        self.mem.write_obj(avail, idx_addr).unwrap();
    }

    /// The used ring's entries so far: (head index, length written).
    fn used(&self) -> Vec<(u32, u32)> {
        let used = GuestAddress(self.q.used_ring());
        let n: u16 = self.mem.read_obj(used.unchecked_add(2)).unwrap();
        (0..u64::from(n))
            .map(|i| {
                let at = used.unchecked_add(4 + 8 * i);
                let id: u32 = self.mem.read_obj(at).unwrap();
                let len: u32 = self.mem.read_obj(at.unchecked_add(4)).unwrap();
                (id, len)
            })
            .collect()
    }
}

/// One descriptor of a test chain: address, length, device-writable.
#[derive(Clone, Copy)]
struct D(u64, u32, bool);

/// Puts chains on the avail ring; descriptor indices are assigned from `first` upwards and
/// each chain's descriptors are linked with NEXT.
fn add_chains(s: &Scene, first: u16, chains: &[&[D]]) {
    let mut raw = Vec::new();
    let mut idx = first;
    for chain in chains {
        for (i, d) in chain.iter().enumerate() {
            let last = i + 1 == chain.len();
            let mut flags = if d.2 { VRING_DESC_F_WRITE as u16 } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let next = if last { 0 } else { idx + 1 };
            raw.push(RawDescriptor::from(SplitDescriptor::new(
                d.0, d.1, flags, next,
            )));
            idx += 1;
        }
    }
    s.add_desc_chains(&raw, first);
}

/// Posts `n` single-descriptor RX chains of `len` bytes each, 4 KiB apart from `BUF_BASE`
/// (descriptor indices from 0).
fn add_rx_buffers(s: &Scene, n: u64, len: u32) {
    let bufs: Vec<[D; 1]> = (0..n)
        .map(|i| [D(BUF_BASE + 0x1000 * i, len, true)])
        .collect();
    add_chains(s, 0, &bufs.iter().map(|b| &b[..]).collect::<Vec<_>>());
}

fn recv_all(peer: &mut MemoryPeer) -> Vec<(VirtioNetHdr, Vec<u8>)> {
    let mut out = Vec::new();
    peer.recv_with(usize::MAX, |p| out.push((p.hdr, p.frame().to_vec())));
    out
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

fn tso_hdr() -> VirtioNetHdr {
    VirtioNetHdr {
        flags: VirtioNetHdr::F_NEEDS_CSUM,
        gso_type: VirtioNetHdr::GSO_TCPV4,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    }
}

// ---------------------------------------------------------------- TX good path

fn tx_good_path_with_gso_passthrough(features: u64) {
    let mut s = Scene::new(features);
    let hlen = NetFeatures::from_acked(features).hdr_len as u64;
    let f = frame(3000, 7);
    let total = s.put(&tso_hdr(), &f);
    // Header split 5 + rest-of-header, then the frame in two pieces.
    add_chains(
        &s,
        0,
        &[&[
            D(BUF_BASE, 5, false),
            D(BUF_BASE + 5, (hlen - 5) as u32, false),
            D(BUF_BASE + hlen, 1000, false),
            D(BUF_BASE + hlen + 1000, total - hlen as u32 - 1000, false),
        ]],
    );
    let notify = s.qp.process_tx(&mut s.q, &s.mem, true).unwrap();
    assert!(notify);
    assert_eq!(s.used(), vec![(0, 0)]);
    let got = recv_all(&mut s.peer);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, tso_hdr());
    assert_eq!(got[0].1, f);
    assert_eq!(s.qp.stats().tx_packets.get(), 1);
    assert_eq!(s.qp.stats().tx_bytes.get(), 3000);
}

under_each_feature_set!(tx_good_path_with_gso_passthrough_all_feature_sets: tx_good_path_with_gso_passthrough for ALL_SETS);

#[test]
fn tx_indirect_chain_is_read() {
    let mut s = Scene::new(MRG);
    let f = frame(60, 1);
    let total = s.put(&VirtioNetHdr::default(), &f);
    let table = 0x20_0000u64;
    let entries = [
        SplitDescriptor::new(BUF_BASE, 12, VRING_DESC_F_NEXT as u16, 1),
        SplitDescriptor::new(BUF_BASE + 12, total - 12, 0, 0),
    ];
    for (i, e) in entries.iter().enumerate() {
        s.mem
            .write_obj(RawDescriptor::from(*e), GuestAddress(table + 16 * i as u64))
            .unwrap();
    }
    let head = RawDescriptor::from(SplitDescriptor::new(
        table,
        32,
        VRING_DESC_F_INDIRECT as u16,
        0,
    ));
    s.add_desc_chains(&[head], 0);
    s.qp.process_tx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(recv_all(&mut s.peer), vec![(VirtioNetHdr::default(), f)]);
}

// ---------------------------------------------------------------- TX malformed shapes

/// Puts `bad` then a good chain on the TX ring; asserts the bad one is returned with length 0
/// and counted under `reason`, and the good one still goes out.
fn tx_malformed(features: u64, reason: DropReason, bad: impl FnOnce(&Scene) -> u16) {
    let mut s = Scene::new(features);
    let used_by_bad = bad(&s);
    let good = frame(100, 3);
    let total = s.put_at(0x80_0000, &VirtioNetHdr::default(), &good);
    add_chains(&s, used_by_bad, &[&[D(0x80_0000, total, false)]]);

    s.qp.process_tx(&mut s.q, &s.mem, true).unwrap();
    let u = s.used();
    assert_eq!(u.len(), 2, "both chains returned ({reason:?})");
    assert_eq!(
        u[0],
        (0, 0),
        "bad chain returned with length 0 ({reason:?})"
    );
    assert_eq!(u[1], (u32::from(used_by_bad), 0));
    assert_eq!(s.qp.stats().drops(reason), 1, "{reason:?}");
    let got = recv_all(&mut s.peer);
    assert_eq!(got.len(), 1, "{reason:?}");
    assert_eq!(got[0].1, good);
}

fn tx_all_malformed_shapes(features: u64) {
    let hlen = NetFeatures::from_acked(features).hdr_len as u32;
    // Device-writable descriptor in a TX chain.
    tx_malformed(features, DropReason::TxWriteOnlyDescriptor, |s| {
        let t = s.put(&VirtioNetHdr::default(), &frame(60, 0));
        add_chains(
            s,
            0,
            &[&[D(BUF_BASE, hlen, false), D(BUF_BASE + 12, t - hlen, true)]],
        );
        2
    });
    // Chain shorter than the virtio-net header.
    tx_malformed(features, DropReason::TxMalformedHeader, |s| {
        add_chains(s, 0, &[&[D(BUF_BASE, hlen - 1, false)]]);
        1
    });
    // Descriptor beyond guest memory.
    tx_malformed(features, DropReason::TxBadAddress, |s| {
        add_chains(s, 0, &[&[D(BUF_BASE, hlen, false), D(OUTSIDE, 100, false)]]);
        2
    });
    // Non-GSO frame above MTU + Ethernet/VLAN header.
    tx_malformed(features, DropReason::TxFrameTooLarge, |s| {
        let big = frame(usize::from(MTU) + 19, 0);
        let t = s.put(&VirtioNetHdr::default(), &big);
        add_chains(s, 0, &[&[D(BUF_BASE, t, false)]]);
        1
    });
    // GSO frame above the largest buffer.
    tx_malformed(features, DropReason::TxFrameTooLarge, |s| {
        let t = s.put(&tso_hdr(), &frame(packet_ring::MAX_FRAME_LEN + 1, 0));
        add_chains(s, 0, &[&[D(BUF_BASE, t, false)]]);
        1
    });
    // Empty chain: an indirect table whose length is not a whole number of descriptors.
    tx_malformed(features, DropReason::TxEmptyChain, |s| {
        let head = RawDescriptor::from(SplitDescriptor::new(
            0x20_0000,
            15,
            VRING_DESC_F_INDIRECT as u16,
            0,
        ));
        s.add_desc_chains(&[head], 0);
        1
    });
    // Descriptor loop: 0 -> 1 -> 0.
    tx_malformed(features, DropReason::TxChainTruncated, |s| {
        let raw = [
            RawDescriptor::from(SplitDescriptor::new(
                BUF_BASE,
                8,
                VRING_DESC_F_NEXT as u16,
                1,
            )),
            RawDescriptor::from(SplitDescriptor::new(
                BUF_BASE,
                8,
                VRING_DESC_F_NEXT as u16,
                0,
            )),
        ];
        s.add_desc_chains(&raw, 0);
        2
    });
    // Header asking for an offload nobody negotiated (UDP fragmentation).
    tx_malformed(features, DropReason::TxOffloadNotNegotiated, |s| {
        let h = VirtioNetHdr {
            gso_type: VirtioNetHdr::GSO_UDP,
            gso_size: 1000,
            ..Default::default()
        };
        let t = s.put(&h, &frame(2000, 0));
        add_chains(s, 0, &[&[D(BUF_BASE, t, false)]]);
        1
    });
    // Runt frame.
    tx_malformed(features, DropReason::TxRuntFrame, |s| {
        let t = s.put(&VirtioNetHdr::default(), &frame(13, 0));
        add_chains(s, 0, &[&[D(BUF_BASE, t, false)]]);
        1
    });
}

under_each_feature_set!(tx_malformed_shapes_all_feature_sets: tx_all_malformed_shapes for ALL_SETS);

#[test]
fn tx_head_index_outside_ring_is_skipped() {
    let mut s = Scene::new(MRG);
    // Avail entry names descriptor 200 in a 16-entry ring.
    s.mem
        .write_obj(200u16, s.avail_addr().unchecked_add(4))
        .unwrap();
    s.mem
        .write_obj(1u16, s.avail_addr().unchecked_add(2))
        .unwrap();
    s.qp.process_tx(&mut s.q, &s.mem, true).unwrap();
    assert!(s.used().is_empty());
    assert_eq!(s.qp.stats().drops(DropReason::TxEmptyChain), 1);
}

#[test]
fn tx_on_disabled_ring_is_processed_and_discarded() {
    let mut s = Scene::new(MRG);
    let t = s.put(&VirtioNetHdr::default(), &frame(100, 0));
    add_chains(&s, 0, &[&[D(BUF_BASE, t, false)], &[D(BUF_BASE, t, false)]]);
    s.qp.process_tx(&mut s.q, &s.mem, false).unwrap();
    assert_eq!(s.used(), vec![(0, 0), (1, 0)]);
    assert!(recv_all(&mut s.peer).is_empty());
    assert_eq!(s.qp.stats().drops(DropReason::TxRingDisabled), 2);
}

#[test]
fn tx_event_idx_suppresses_and_rearms_notifications() {
    let mut s = Scene::new(MRG | (1 << VIRTIO_RING_F_EVENT_IDX));
    // The mock lays its used ring over the avail ring's used_event field; move the used ring.
    let used_ring = GuestAddress(0x8000);
    s.q.set_used_ring_address(Some(used_ring.0 as u32), Some(0));
    s.q.set_event_idx(true);
    let t = s.put(&VirtioNetHdr::default(), &frame(100, 0));
    // used_event (after the avail ring) = 5: the guest wants an interrupt only past entry 5.
    let used_event = s.avail_addr().unchecked_add(4 + 2 * u64::from(QUEUE_SIZE));
    s.mem.write_obj(5u16, used_event).unwrap();
    add_chains(&s, 0, &[&[D(BUF_BASE, t, false)]]);
    assert!(!s.qp.process_tx(&mut s.q, &s.mem, true).unwrap());
    assert_eq!(s.qp.stats().tx_notifications_suppressed.get(), 1);
    assert_eq!(
        s.mem.read_obj::<u16>(used_ring.unchecked_add(2)).unwrap(),
        1
    );
    // avail_event (after the used ring) asks for a kick at the next chain.
    let avail_event = used_ring.unchecked_add(4 + 8 * u64::from(QUEUE_SIZE));
    assert_eq!(s.mem.read_obj::<u16>(avail_event).unwrap(), 1);
    // used_event 1: interrupt once entry 1 is used, which the next chain does.
    s.mem.write_obj(1u16, used_event).unwrap();
    add_chains(&s, 1, &[&[D(BUF_BASE, t, false)]]);
    assert!(s.qp.process_tx(&mut s.q, &s.mem, true).unwrap());
    assert_eq!(
        s.mem.read_obj::<u16>(used_ring.unchecked_add(2)).unwrap(),
        2
    );
    assert_eq!(s.mem.read_obj::<u16>(avail_event).unwrap(), 2);
}

#[test]
fn tx_without_event_idx_always_notifies() {
    let mut s = Scene::new(MRG);
    let t = s.put(&VirtioNetHdr::default(), &frame(100, 0));
    add_chains(&s, 0, &[&[D(BUF_BASE, t, false)]]);
    assert!(s.qp.process_tx(&mut s.q, &s.mem, true).unwrap());
    assert_eq!(s.qp.stats().tx_notifications_suppressed.get(), 0);
}

// ---------------------------------------------------------------- RX

/// Reads back header + frame the device wrote at `addr`.
fn read_rx(mem: &GuestMemoryMmap, addr: u64, len: usize) -> (VirtioNetHdr, Vec<u8>) {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    (VirtioNetHdr::parse(&buf).unwrap(), buf[12..].to_vec())
}

fn rx_good_path_with_gso(features: u64) {
    let mut s = Scene::new(features);
    add_chains(&s, 0, &[&[D(BUF_BASE, 4000, true)]]);
    let f = frame(3000, 9);
    let hdr = VirtioNetHdr {
        gso_type: VirtioNetHdr::GSO_TCPV6,
        ..tso_hdr()
    };
    assert!(s.peer.send(hdr, &f).unwrap());
    assert!(s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
    assert_eq!(s.used(), vec![(0, 3012)]);
    let (h, body) = read_rx(&s.mem, BUF_BASE, 3012);
    assert_eq!(
        h,
        VirtioNetHdr {
            num_buffers: 1,
            ..hdr
        }
    );
    assert_eq!(body, f);
    assert_eq!(s.qp.stats().rx_packets.get(), 1);
}

under_each_feature_set!(rx_good_path_with_gso_both_rx_modes: rx_good_path_with_gso for RX_SETS);

#[test]
fn rx_mergeable_spreads_over_chains_and_sets_num_buffers() {
    let mut s = Scene::new(MRG);
    add_rx_buffers(&s, 3, 1000);
    let f = frame(2500, 4);
    assert!(s.peer.send(VirtioNetHdr::default(), &f).unwrap());
    s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used(), vec![(0, 1000), (1, 1000), (2, 512)]);
    let (h, first) = read_rx(&s.mem, BUF_BASE, 1000);
    assert_eq!(h.num_buffers, 3);
    let mut all = first;
    let mut rest = vec![0u8; 1000];
    s.mem
        .read_slice(&mut rest, GuestAddress(BUF_BASE + 0x1000))
        .unwrap();
    all.extend_from_slice(&rest);
    let mut last = vec![0u8; 512];
    s.mem
        .read_slice(&mut last, GuestAddress(BUF_BASE + 0x2000))
        .unwrap();
    all.extend_from_slice(&last);
    assert_eq!(all, f);
}

/// A write into the used ring seen by [`UsedRingWatch`], with the used index the driver could
/// read at that moment (before the write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UsedWrite {
    Elem { slot: u64, published: u16 },
    Idx { published: u16 },
}

/// Guest memory that notes every write into the used ring's elements and index: every access
/// of `vm-memory` 0.18 goes through `GuestMemory::get_slices`, so the order the driver could
/// observe them in is exactly this log.
struct UsedRingWatch<'m> {
    mem: &'m GuestMemoryMmap,
    used_ring: GuestAddress,
    writes: std::cell::RefCell<Vec<UsedWrite>>,
}

impl<'m> UsedRingWatch<'m> {
    fn new(mem: &'m GuestMemoryMmap, q: &Queue) -> Self {
        Self {
            mem,
            used_ring: GuestAddress(q.used_ring()),
            writes: Default::default(),
        }
    }
}

impl vm_memory::GuestMemory for UsedRingWatch<'_> {
    type PhysicalMemory = GuestMemoryMmap;
    type Bitmap = ();

    fn check_range(
        &self,
        addr: GuestAddress,
        count: usize,
        access: vm_memory::Permissions,
    ) -> bool {
        vm_memory::GuestMemory::check_range(self.mem, addr, count, access)
    }

    fn get_slices<'a>(
        &'a self,
        addr: GuestAddress,
        count: usize,
        access: vm_memory::Permissions,
    ) -> vm_memory::GuestMemoryResult<
        impl vm_memory::guest_memory::GuestMemorySliceIterator<'a, vm_memory::bitmap::BS<'a, ()>>,
    > {
        if access.has_write() && addr >= self.used_ring {
            let published: u16 = self.mem.read_obj(self.used_ring.unchecked_add(2)).unwrap();
            let offset = addr.0 - self.used_ring.0;
            let elems = 4..4 + 8 * u64::from(QUEUE_SIZE);
            if offset == 2 {
                self.writes.borrow_mut().push(UsedWrite::Idx { published });
            } else if elems.contains(&offset) {
                let slot = (offset - 4) / 8;
                self.writes
                    .borrow_mut()
                    .push(UsedWrite::Elem { slot, published });
            }
        }
        vm_memory::GuestMemory::get_slices(self.mem, addr, count, access)
    }
}

/// A frame spread over three mergeable buffers reaches the driver whole: its three used
/// elements are written while the used index still says 0, then the index goes to 3 in one
/// store (virtio 1.2 §2.7.8). Publishing per buffer would let Linux's `receive_mergeable` read
/// `num_buffers` 3 with buffers missing and drop the frame.
#[test]
fn rx_mergeable_frame_is_published_with_one_used_index_store() {
    let mut s = Scene::new(MRG);
    add_rx_buffers(&s, 3, 1000);
    assert!(
        s.peer
            .send(VirtioNetHdr::default(), &frame(2500, 4))
            .unwrap()
    );
    let watch = UsedRingWatch::new(&s.mem, &s.q);
    assert!(s.qp.process_rx(&mut s.q, &watch, true).unwrap());
    assert_eq!(
        watch.writes.into_inner(),
        vec![
            UsedWrite::Elem {
                slot: 0,
                published: 0
            },
            UsedWrite::Elem {
                slot: 1,
                published: 0
            },
            UsedWrite::Elem {
                slot: 2,
                published: 0
            },
            UsedWrite::Idx { published: 0 },
        ]
    );
    assert_eq!(s.used(), vec![(0, 1000), (1, 1000), (2, 512)]);
    assert_eq!(s.q.next_used(), 3);
}

/// With EVENT_IDX, a merged frame's notification decision spans all its buffers: `used_event`
/// inside the frame's range asks for one, past it suppresses it until a later frame crosses it.
#[test]
fn rx_mergeable_frame_notification_follows_used_event() {
    let mut s = Scene::new(MRG | (1 << VIRTIO_RING_F_EVENT_IDX));
    // The mock lays its used ring over the avail ring's used_event field; move the used ring.
    s.q.set_used_ring_address(Some(0x8000), Some(0));
    s.q.set_event_idx(true);
    let used_event = s.avail_addr().unchecked_add(4 + 2 * u64::from(QUEUE_SIZE));
    add_rx_buffers(&s, 9, 1000);
    // Entry 1 (the frame's second buffer) is the one the driver waits for.
    s.mem.write_obj(1u16, used_event).unwrap();
    assert!(
        s.peer
            .send(VirtioNetHdr::default(), &frame(2500, 1))
            .unwrap()
    );
    assert!(s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
    // Entry 6 is the third frame's first buffer: the second frame (entries 3..=5) is
    // suppressed, the third notified.
    s.mem.write_obj(6u16, used_event).unwrap();
    assert!(
        s.peer
            .send(VirtioNetHdr::default(), &frame(2500, 2))
            .unwrap()
    );
    assert!(!s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
    assert_eq!(s.qp.stats().rx_notifications_suppressed.get(), 1);
    assert!(
        s.peer
            .send(VirtioNetHdr::default(), &frame(2500, 3))
            .unwrap()
    );
    assert!(s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
    assert_eq!(s.q.next_used(), 9);
}

#[test]
fn rx_waits_for_buffers_and_resumes_on_kick() {
    for (_, features) in RX_SETS {
        let mut s = Scene::new(features);
        assert!(
            s.peer
                .send(VirtioNetHdr::default(), &frame(100, 0))
                .unwrap()
        );
        assert!(!s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
        assert_eq!(s.qp.rx_pending(), 1);
        add_chains(&s, 0, &[&[D(BUF_BASE, 2048, true)]]);
        assert!(s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
        assert_eq!(s.used(), vec![(0, 112)]);
        assert_eq!(s.qp.rx_pending(), 0);
    }
}

/// Puts `bad` then a good 2 KiB chain on the RX ring and sends one 100-byte packet; asserts the
/// bad chain is returned with length 0, counted under `reason`, and the packet lands in the
/// good chain.
fn rx_malformed(features: u64, reason: DropReason, bad: impl FnOnce(&Scene) -> u16) {
    let mut s = Scene::new(features);
    let next = bad(&s);
    add_chains(&s, next, &[&[D(0x80_0000, 2048, true)]]);
    let f = frame(100, 5);
    assert!(s.peer.send(VirtioNetHdr::default(), &f).unwrap());
    s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used(), vec![(0, 0), (u32::from(next), 112)], "{reason:?}");
    assert_eq!(s.qp.stats().drops(reason), 1, "{reason:?}");
    assert_eq!(read_rx(&s.mem, 0x80_0000, 112).1, f);
}

/// The malformed RX chain shapes, each with the reason it is counted under: `bad` puts the
/// chain on the ring from descriptor 0 and returns the next free descriptor index.
type BadRxChain = (DropReason, fn(&Scene) -> u16);

const BAD_RX_CHAINS: [BadRxChain; 4] = [
    (DropReason::RxReadOnlyDescriptor, |s| {
        add_chains(s, 0, &[&[D(BUF_BASE, 2048, false)]]);
        1
    }),
    (DropReason::RxBadAddress, |s| {
        add_chains(s, 0, &[&[D(OUTSIDE, 2048, true)]]);
        1
    }),
    (DropReason::RxEmptyChain, |s| {
        let head = RawDescriptor::from(SplitDescriptor::new(
            0x20_0000,
            15,
            VRING_DESC_F_INDIRECT as u16,
            0,
        ));
        s.add_desc_chains(&[head], 0);
        1
    }),
    // A loop of two 4-byte buffers cannot hold the packet within the queue-size walk.
    (DropReason::RxChainTruncated, |s| {
        let w = VRING_DESC_F_WRITE as u16 | VRING_DESC_F_NEXT as u16;
        let raw = [
            RawDescriptor::from(SplitDescriptor::new(BUF_BASE, 4, w, 1)),
            RawDescriptor::from(SplitDescriptor::new(BUF_BASE + 4, 4, w, 0)),
        ];
        s.add_desc_chains(&raw, 0);
        2
    }),
];

fn rx_all_malformed_shapes(features: u64) {
    for (reason, bad) in BAD_RX_CHAINS {
        rx_malformed(features, reason, bad);
    }
}

under_each_feature_set!(rx_malformed_shapes_both_rx_modes: rx_all_malformed_shapes for RX_SETS);

#[test]
fn rx_buffer_shorter_than_header() {
    // Without mergeable buffers the packet cannot fit: dropped, the chain is kept for later.
    let mut s = Scene::new(NO_MRG);
    add_chains(&s, 0, &[&[D(BUF_BASE, 6, true)]]);
    assert!(
        s.peer
            .send(VirtioNetHdr::default(), &frame(100, 0))
            .unwrap()
    );
    s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    assert!(s.used().is_empty());
    assert_eq!(s.qp.stats().drops(DropReason::RxBufferTooSmall), 1);

    // With mergeable buffers the header may straddle chains; num_buffers is patched across.
    let mut s = Scene::new(MRG);
    add_chains(
        &s,
        0,
        &[&[D(BUF_BASE, 6, true)], &[D(BUF_BASE + 0x100, 2048, true)]],
    );
    let f = frame(100, 0);
    assert!(s.peer.send(tso_hdr(), &f).unwrap());
    s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used(), vec![(0, 6), (1, 106)]);
    let mut h = vec![0u8; 6];
    s.mem.read_slice(&mut h, GuestAddress(BUF_BASE)).unwrap();
    let mut rest = vec![0u8; 106];
    s.mem
        .read_slice(&mut rest, GuestAddress(BUF_BASE + 0x100))
        .unwrap();
    h.extend_from_slice(&rest);
    let hdr = VirtioNetHdr::parse(&h).unwrap();
    assert_eq!(
        hdr,
        VirtioNetHdr {
            num_buffers: 2,
            ..tso_hdr()
        }
    );
    assert_eq!(&h[12..], &f[..]);
}

#[test]
fn rx_oversized_frame_both_rx_modes() {
    // Non-mergeable: one 1 KiB chain, a 1500-byte frame: dropped, chain kept, next packet uses it.
    let mut s = Scene::new(NO_MRG);
    add_chains(&s, 0, &[&[D(BUF_BASE, 1024, true)]]);
    assert!(
        s.peer
            .send(VirtioNetHdr::default(), &frame(1500, 0))
            .unwrap()
    );
    assert!(s.peer.send(VirtioNetHdr::default(), &frame(60, 0)).unwrap());
    s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used(), vec![(0, 72)]);
    assert_eq!(s.qp.stats().drops(DropReason::RxBufferTooSmall), 1);

    // Mergeable: the whole ring (16 chains of 64 bytes) cannot hold 2000 bytes: dropped without
    // consuming anything, instead of waiting forever.
    let mut s = Scene::new(MRG);
    let chains: Vec<[D; 1]> = (0..QUEUE_SIZE)
        .map(|i| [D(BUF_BASE + 0x100 * u64::from(i), 64, true)])
        .collect();
    let refs: Vec<&[D]> = chains.iter().map(|c| &c[..]).collect();
    add_chains(&s, 0, &refs);
    assert!(
        s.peer
            .send(VirtioNetHdr::default(), &frame(2000, 0))
            .unwrap()
    );
    assert!(s.peer.send(VirtioNetHdr::default(), &frame(40, 0)).unwrap());
    s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used(), vec![(0, 52)]);
    assert_eq!(s.qp.stats().drops(DropReason::RxBufferTooSmall), 1);
}

#[test]
fn rx_mergeable_abort_mid_packet_returns_gathered_chains() {
    let mut s = Scene::new(MRG);
    add_chains(
        &s,
        0,
        &[&[D(BUF_BASE, 64, true)], &[D(BUF_BASE + 0x100, 64, false)]],
    );
    assert!(
        s.peer
            .send(VirtioNetHdr::default(), &frame(100, 0))
            .unwrap()
    );
    s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used(), vec![(0, 0), (1, 0)]);
    assert_eq!(s.qp.stats().drops(DropReason::RxReadOnlyDescriptor), 1);
    assert_eq!(s.qp.stats().rx_packets.get(), 0);
}

#[test]
fn rx_offload_not_negotiated_is_dropped() {
    let mut s = Scene::new(NO_MRG & !(1 << virtio_bindings::virtio_net::VIRTIO_NET_F_GUEST_TSO4));
    add_chains(&s, 0, &[&[D(BUF_BASE, 4096, true)]]);
    assert!(s.peer.send(tso_hdr(), &frame(3000, 0)).unwrap());
    s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    assert!(s.used().is_empty());
    assert_eq!(s.qp.stats().drops(DropReason::RxOffloadNotNegotiated), 1);
}

#[test]
fn rx_on_disabled_ring_drops_without_touching_it() {
    let mut s = Scene::new(MRG);
    add_chains(&s, 0, &[&[D(BUF_BASE, 4096, true)]]);
    assert!(
        s.peer
            .send(VirtioNetHdr::default(), &frame(100, 0))
            .unwrap()
    );
    assert!(!s.qp.process_rx(&mut s.q, &s.mem, false).unwrap());
    assert!(s.used().is_empty());
    assert_eq!(s.qp.stats().drops(DropReason::RxRingDisabled), 1);
}

/// Once the driver turns promiscuous mode off, only frames for the guest reach its ring; the
/// rest are counted as `rx_filtered` and use no buffer.
#[test]
fn rx_filter_drops_frames_not_for_the_guest() {
    let filter = SharedRxFilter::new(DEVICE_MAC);
    let mut s = Scene::with_pair(pair_filtered(MRG, Arc::clone(&filter)));
    add_rx_buffers(&s, 8, 2048);
    let other = [0x52, 0x54, 0, 0x12, 0x34, 0x99];
    let mcast = [0x01, 0x00, 0x5e, 0, 0, 1];
    let broadcast = [0xff; 6];
    let round = |s: &mut Scene| {
        for dst in [other, DEVICE_MAC, mcast, broadcast] {
            let f = [&dst[..], &frame(50, 7)].concat();
            assert!(s.peer.send(VirtioNetHdr::default(), &f).unwrap());
        }
        s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    };
    // The destinations the guest received, in ring order.
    let delivered = |s: &Scene| -> Vec<[u8; 6]> {
        s.used()
            .iter()
            .map(|&(id, len)| {
                let (_, f) = read_rx(&s.mem, BUF_BASE + 0x1000 * u64::from(id), len as usize);
                [f[0], f[1], f[2], f[3], f[4], f[5]]
            })
            .collect()
    };

    filter.update(|f| {
        f.promisc = false;
        f.allmulti = false;
    });
    round(&mut s);
    assert_eq!(delivered(&s), vec![DEVICE_MAC, broadcast]);
    assert_eq!(s.qp.stats().drops(DropReason::RxFiltered), 2);

    // All-multicast on and `other` in the unicast table: everything passes.
    filter.update(|f| {
        f.allmulti = true;
        f.unicast = crate::rx_filter::MacTable::from_bytes(&other);
    });
    round(&mut s);
    assert_eq!(delivered(&s)[2..], [other, DEVICE_MAC, mcast, broadcast]);
    assert_eq!(s.qp.stats().drops(DropReason::RxFiltered), 2);
    assert_eq!(s.qp.stats().rx_packets.get(), 6);
}

#[test]
fn broken_ring_is_counted_not_fatal() {
    let mut s = Scene::new(MRG);
    // avail idx running 100 entries ahead of a 16-entry ring.
    s.mem
        .write_obj(100u16, s.avail_addr().unchecked_add(2))
        .unwrap();
    assert!(!s.qp.process_tx(&mut s.q, &s.mem, true).unwrap());
    assert_eq!(s.qp.stats().drops(DropReason::TxAvailRingBroken), 1);
}

/// Runs `f` on another thread and fails (instead of hanging) if it does not finish in 10 s:
/// the scenarios below used to spin forever.
fn within_deadline(f: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("processing returned instead of spinning");
}

#[test]
fn rx_mergeable_too_few_buffers_waits_instead_of_spinning() {
    within_deadline(|| {
        let mut s = Scene::new(MRG);
        // 2 x 64 bytes posted, a 300-byte packet needs 5: wait for more, do not spin.
        add_chains(
            &s,
            0,
            &[&[D(BUF_BASE, 64, true)], &[D(BUF_BASE + 0x100, 64, true)]],
        );
        assert!(
            s.peer
                .send(VirtioNetHdr::default(), &frame(300, 0))
                .unwrap()
        );
        assert!(!s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
        assert!(s.used().is_empty());
        assert_eq!(s.qp.rx_pending(), 1);
        let more: Vec<[D; 1]> = (2..6u64)
            .map(|i| [D(BUF_BASE + 0x100 * i, 64, true)])
            .collect();
        let refs: Vec<&[D]> = more.iter().map(|c| &c[..]).collect();
        add_chains(&s, 2, &refs);
        assert!(s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
        assert_eq!(s.used().len(), 5);
        assert_eq!(s.qp.rx_pending(), 0);
    });
}

#[test]
fn unreadable_avail_entries_are_a_broken_ring_not_a_spin() {
    within_deadline(|| {
        let mut s = Scene::new(MRG);
        // flags and idx are the last 4 bytes of guest memory; the entries lie beyond it.
        let avail = (MEM_SIZE - 4) as u64;
        s.q.set_avail_ring_address(Some(avail as u32), Some(0));
        s.mem.write_obj(3u16, GuestAddress(avail + 2)).unwrap();
        assert!(!s.qp.process_tx(&mut s.q, &s.mem, true).unwrap());
        assert_eq!(s.qp.stats().drops(DropReason::TxAvailRingBroken), 1);

        // The same ring as an RX ring, on a fresh pair.
        (s.qp, s.peer) = pair(MRG);
        assert!(s.peer.send(VirtioNetHdr::default(), &frame(60, 0)).unwrap());
        assert!(!s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
        assert_eq!(s.qp.stats().drops(DropReason::RxAvailRingBroken), 1);
    });
}

// ---------------------------------------------------------------- TX swap into the uplink

/// An uplink that takes the worker's buffers (as the agent's seam does): each packet given
/// to `send_swap` is kept, and a fresh buffer of its own left in the batch slot.
#[derive(Debug)]
struct SwappingUplink {
    taken: std::sync::mpsc::Sender<packet_ring::Packet>,
    ready: vmm_sys_util::eventfd::EventFd,
}

impl packet_ring::PacketSink for SwappingUplink {
    fn send(&mut self, _: &PacketBatch) -> Result<usize, PortError> {
        panic!("the worker lends its batch to an uplink that could take it");
    }

    fn send_swap(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        for slot in batch.packets_mut() {
            let mut mine = packet_ring::Packet::with_capacity(MAX_FRAME_LEN);
            std::mem::swap(slot, &mut mine);
            let _ = self.taken.send(mine);
        }
        Ok(batch.len())
    }
}

/// The receiving half and `split` of a test uplink that only takes frames: nothing
/// arrives (its `ready` eventfd never fires), and the queue pair never splits it.
macro_rules! send_only_uplink {
    ($t:ty) => {
        impl packet_ring::PacketSource for $t {
            fn recv(&mut self, _: &mut PacketBatch) -> Result<usize, PortError> {
                Ok(0)
            }

            fn ready_fd(&self) -> std::os::fd::RawFd {
                std::os::fd::AsRawFd::as_raw_fd(&self.ready)
            }
        }

        impl PacketPort for $t {
            fn split(
                self: Box<Self>,
            ) -> (
                Box<dyn packet_ring::PacketSink>,
                Box<dyn packet_ring::PacketSource>,
            ) {
                unreachable!("the queue pair keeps its uplink whole")
            }
        }
    };
}

send_only_uplink!(SwappingUplink);

/// A scene whose queue pair (batch of `batch`, mergeable buffers) sends to `uplink`.
fn uplink_scene(uplink: Box<dyn PacketPort>, batch: usize) -> Scene {
    let mut qp = QueuePair::new(
        QueuePairConfig {
            index: 0,
            batch,
            mtu: MTU,
            max_queue_size: QUEUE_SIZE,
        },
        uplink,
        SharedRxFilter::new(DEVICE_MAC),
        Arc::new(QueuePairStats::default()),
    );
    qp.set_features(NetFeatures::from_acked(MRG));
    let (_, peer) = memory_port_pair(1, 64).unwrap();
    Scene::with_pair((qp, peer))
}

#[test]
fn tx_hands_its_buffers_to_an_uplink_that_takes_them() {
    let (taken, got) = std::sync::mpsc::channel();
    let uplink = SwappingUplink {
        taken,
        ready: vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap(),
    };
    let mut s = uplink_scene(Box::new(uplink), 2);
    // Two rounds of three frames through a batch of two: the slots the uplink refilled
    // carry the later frames whole. (Eight chains at most: the mock lays the used ring
    // out after eight avail entries.)
    for round in 0..2u8 {
        let first = u16::from(round) * 3;
        for i in 0..3u16 {
            let addr = BUF_BASE + 0x1_0000 * u64::from(i);
            let len = s.put_at(addr, &tso_hdr(), &frame(3000 + usize::from(i), i as u8));
            add_chains(&s, first + i, &[&[D(addr, len, false)]]);
        }
        s.qp.process_tx(&mut s.q, &s.mem, true).unwrap();
        for i in 0..3u16 {
            let p = got.try_recv().expect("the uplink took every frame");
            let f = p.frame();
            assert_eq!(
                (f.len(), f.first().copied(), round),
                (3000 + usize::from(i), Some(i as u8), round)
            );
            assert!(
                f == &frame(3000 + usize::from(i), i as u8)[..],
                "frame {i} of round {round}"
            );
            assert_eq!(p.hdr, tso_hdr());
        }
    }
    assert!(got.try_recv().is_err());
    assert_eq!(s.qp.stats().tx_packets.get(), 6);
}

/// An uplink with a room budget the test sets (`test_support::budget`), and a room fd.
#[derive(Debug)]
struct RoomUplink {
    sink: test_support::budget::BudgetSink,
    ready: vmm_sys_util::eventfd::EventFd,
}

impl packet_ring::PacketSink for RoomUplink {
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        self.sink.send(batch)
    }

    fn room(&mut self) -> usize {
        self.sink.room()
    }

    fn room_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(&self.ready))
    }
}

send_only_uplink!(RoomUplink);

/// Backpressure: with no room in the uplink the worker leaves the guest's chains in its
/// ring (no used entry, nothing refused), counts the stall, and takes them in order once
/// room returns.
#[test]
fn tx_leaves_chains_in_the_ring_while_the_uplink_has_no_room() {
    let (sink, budget) = test_support::budget::budget_sink(2);
    let uplink = RoomUplink {
        sink,
        ready: vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap(),
    };
    let mut s = uplink_scene(Box::new(uplink), 8);
    for i in 0..6u16 {
        let addr = BUF_BASE + 0x1000 * u64::from(i);
        let len = s.put_at(addr, &VirtioNetHdr::default(), &frame(100, i as u8));
        add_chains(&s, i, &[&[D(addr, len, false)]]);
    }
    // Room for two: two chains are used, four wait in the ring.
    s.qp.process_tx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used().len(), 2);
    assert_eq!(s.qp.stats().tx_stalls.get(), 1);
    assert!(s.qp.tx_stalled(), "busy-polling stops on this");
    // A kick while still full takes nothing and counts another stall.
    s.qp.process_tx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used().len(), 2);
    assert_eq!(s.qp.stats().tx_stalls.get(), 2);
    // Room returns (the room fd's event runs the TX ring): three more, then the last.
    budget.set(3);
    s.qp.process_tx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used().len(), 5);
    budget.set(100);
    s.qp.process_tx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used().len(), 6);
    assert!(!s.qp.tx_stalled());
    assert_eq!(
        s.qp.stats().tx_stalls.get(),
        3,
        "the 3-room round stalled once more"
    );
    // An empty ring with no room is no stall.
    budget.set(0);
    s.qp.process_tx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.qp.stats().tx_stalls.get(), 3);
    let frames: Vec<Vec<u8>> = budget.taken.try_iter().collect();
    let want: Vec<Vec<u8>> = (0..6u8).map(|i| frame(100, i)).collect();
    assert_eq!(frames, want, "every frame, in order");
    assert_eq!(budget.refused(), 0);
    assert_eq!(s.qp.stats().drops(DropReason::TxBackendRefused), 0);
    assert_eq!(s.qp.stats().tx_packets.get(), 6);
}

// ---------------------------------------------------------------- TX, one copy (direct)

/// A receiving ring in plain memory: takes `room` frames, then has no room. Each frame is
/// read by the queue pair's `fill` straight into a buffer of `frame_max` bytes behind a
/// 12-byte header room, as the library kernel's posted buffers are.
/// Frames a [`MockDirect`] received, with their headers.
type Received = Arc<std::sync::Mutex<Vec<(VirtioNetHdr, Vec<u8>)>>>;

#[derive(Debug)]
struct MockDirect {
    room: Arc<std::sync::atomic::AtomicUsize>,
    got: Received,
    wake: vmm_sys_util::eventfd::EventFd,
}

struct MockRing<'a>(&'a MockDirect);

impl knic_virtio_net::direct::DirectRing for MockRing<'_> {
    fn deliver(
        &mut self,
        frame_max: usize,
        fill: &mut knic_virtio_net::direct::Fill<'_>,
    ) -> Delivery {
        use std::sync::atomic::Ordering::SeqCst;
        if self.0.room.load(SeqCst) == 0 {
            return Delivery::NoRoom;
        }
        let mut buf = vec![0u8; 12 + frame_max];
        let mut segs: [&mut [u8]; 1] = [&mut buf];
        let mut dest = knic_virtio_net::direct::ScatterDest::new(&mut segs, 12);
        match fill(&mut dest) {
            Ok((hdr, len)) => {
                self.0.room.fetch_sub(1, SeqCst);
                self.0
                    .got
                    .lock()
                    .unwrap()
                    .push((hdr, buf[12..12 + len].to_vec()));
                Delivery::Delivered
            }
            Err(e) => Delivery::Refused(e),
        }
    }
}

impl DirectReceiver for MockDirect {
    fn with_ring(&mut self, batch: &mut dyn FnMut(&mut dyn knic_virtio_net::direct::DirectRing)) {
        batch(&mut MockRing(self));
    }

    fn wake_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.wake.as_raw_fd()
    }
}

type Direct = (Arc<std::sync::atomic::AtomicUsize>, Received);

fn direct_scene(room: usize) -> (Scene, Direct) {
    let mut s = Scene::new(MRG);
    let room = Arc::new(std::sync::atomic::AtomicUsize::new(room));
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    s.qp.set_direct_receiver(Box::new(MockDirect {
        room: Arc::clone(&room),
        got: Arc::clone(&got),
        wake: vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap(),
    }));
    (s, (room, got))
}

#[test]
fn direct_tx_copies_once_and_a_malformed_chain_costs_only_itself() {
    let (mut s, (_, got)) = direct_scene(8);
    let hlen = NetFeatures::from_acked(MRG).hdr_len as u32;
    // A hostile chain (a device-writable descriptor in TX), then a good TSO frame.
    add_chains(
        &s,
        0,
        &[&[D(BUF_BASE, hlen, false), D(BUF_BASE + 0x1000, 100, true)]],
    );
    let f = frame(3000, 9);
    let total = s.put_at(0x80_0000, &tso_hdr(), &f);
    add_chains(&s, 2, &[&[D(0x80_0000, total, false)]]);
    assert!(s.qp.process_tx(&mut s.q, &s.mem, true).unwrap());
    assert_eq!(s.used(), vec![(0, 0), (2, 0)], "both chains returned");
    assert_eq!(s.qp.stats().drops(DropReason::TxWriteOnlyDescriptor), 1);
    assert_eq!(
        *got.lock().unwrap(),
        vec![(tso_hdr(), f)],
        "the good one, whole"
    );
    assert!(
        recv_all(&mut s.peer).is_empty(),
        "nothing through the batch path"
    );
    assert_eq!(s.qp.stats().tx_direct.get(), 1);
    assert_eq!(s.qp.stats().tx_packets.get(), 1);
    assert_eq!(s.qp.stats().tx_bytes.get(), 3000);
}

#[test]
fn direct_tx_leaves_chains_in_the_guest_ring_while_the_receiver_has_no_room() {
    use std::sync::atomic::Ordering::SeqCst;
    let (mut s, (room, got)) = direct_scene(1);
    let chains: Vec<[D; 1]> = (0..3u64)
        .map(|i| {
            let addr = 0x80_0000 + 0x1000 * i;
            [D(
                addr,
                s.put_at(addr, &VirtioNetHdr::default(), &frame(60, i as u8)),
                false,
            )]
        })
        .collect();
    add_chains(&s, 0, &chains.iter().map(|c| &c[..]).collect::<Vec<_>>());
    s.qp.process_tx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used(), vec![(0, 0)], "one taken, two wait in the ring");
    assert!(s.qp.tx_stalled());
    assert_eq!(s.qp.stats().tx_stalls.get(), 1);
    room.store(8, SeqCst);
    s.qp.process_tx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used(), vec![(0, 0), (1, 0), (2, 0)]);
    assert!(!s.qp.tx_stalled());
    let firsts: Vec<u8> = got.lock().unwrap().iter().map(|(_, f)| f[0]).collect();
    assert_eq!(firsts, vec![0, 1, 2], "every frame, in order, none dropped");
    assert_eq!(s.qp.stats().drops(DropReason::TxBackendRefused), 0);
}

// ---------------------------------------------------------------- direct RX (one copy out)

/// A frame waiting in a [`MockSender`]'s ring: its header and its bytes in pieces.
type Lent = (VirtioNetHdr, Vec<Vec<u8>>);

/// What a [`MockSender`] saw, shared with the test.
#[derive(Debug, Default)]
struct SenderLog {
    /// Frames still in the sender's ring, in order.
    ring: std::collections::VecDeque<Lent>,
    /// Frames the taker completed, by what it made of them.
    taken: Vec<Taken>,
    /// Batches opened, and those that completed chains (one interrupt each).
    batches: usize,
    interrupts: usize,
    /// Batches that ended on an empty ring (the sender asked for its driver's kick).
    ran_dry: usize,
}

/// The library kernel's TX ring as a direct sender: lends its frames in the pieces given,
/// keeps a frame the taker has no room for, and "interrupts" once per batch that
/// completed anything.
#[derive(Debug)]
struct MockSender {
    log: Arc<std::sync::Mutex<SenderLog>>,
    wake: vmm_sys_util::eventfd::EventFd,
}

struct MockSendRing<'a> {
    log: &'a mut SenderLog,
    completed: usize,
}

impl knic_virtio_net::direct::SendingRing for MockSendRing<'_> {
    fn lend(&mut self, take: &mut knic_virtio_net::direct::Take<'_>) -> Option<Taken> {
        let Some((hdr, pieces)) = self.log.ring.pop_front() else {
            self.log.ran_dry += 1;
            return None;
        };
        let slices: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
        let got = take(&hdr, &slices);
        if got == Taken::NoRoom {
            self.log.ring.push_front((hdr, pieces));
        } else {
            self.log.taken.push(got);
            self.completed += 1;
        }
        Some(got)
    }
}

impl DirectSender for MockSender {
    fn with_ring(&mut self, batch: &mut dyn FnMut(&mut dyn knic_virtio_net::direct::SendingRing)) {
        let mut log = self.log.lock().unwrap();
        log.batches += 1;
        let mut ring = MockSendRing {
            log: &mut log,
            completed: 0,
        };
        batch(&mut ring);
        if ring.completed > 0 {
            log.interrupts += 1;
        }
    }

    fn wake_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.wake.as_raw_fd()
    }
}

fn sender_scene(features: u64) -> (Scene, Arc<std::sync::Mutex<SenderLog>>) {
    let mut s = Scene::new(features);
    let log = Arc::new(std::sync::Mutex::new(SenderLog::default()));
    s.qp.set_direct_sender(Box::new(MockSender {
        log: Arc::clone(&log),
        wake: vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap(),
    }));
    (s, log)
}

/// `f` cut into pieces at `cuts`, as a kernel chain's buffers are.
fn lend(log: &std::sync::Mutex<SenderLog>, hdr: VirtioNetHdr, f: &[u8], cuts: &[usize]) {
    let mut pieces = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&f.len())) {
        pieces.push(f[at..c].to_vec());
        at = c;
    }
    log.lock().unwrap().ring.push_back((hdr, pieces));
}

fn direct_rx_frames_land_in_order_in_one_batch(features: u64) {
    let (mut s, log) = sender_scene(features);
    add_rx_buffers(&s, 4, 2048);
    let frames: Vec<Vec<u8>> = (0..3u8)
        .map(|i| frame(100 + 300 * usize::from(i), i))
        .collect();
    // Pieces that cut through the Ethernet header, and an empty one.
    lend(&log, VirtioNetHdr::default(), &frames[0], &[3, 3, 40]);
    lend(&log, VirtioNetHdr::default(), &frames[1], &[]);
    lend(&log, VirtioNetHdr::default(), &frames[2], &[600]);
    // A frame waiting on the uplink is not taken: the sender is the only RX source.
    assert!(s.peer.send(VirtioNetHdr::default(), &frame(60, 9)).unwrap());
    assert!(s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
    let hlen = s.qp.features().hdr_len;
    let lens: Vec<u32> = frames.iter().map(|f| (hlen + f.len()) as u32).collect();
    assert_eq!(s.used(), vec![(0, lens[0]), (1, lens[1]), (2, lens[2])]);
    for (i, f) in frames.iter().enumerate() {
        let mut got = vec![0u8; f.len()];
        let at = BUF_BASE + 0x1000 * i as u64 + hlen as u64;
        s.mem.read_slice(&mut got, GuestAddress(at)).unwrap();
        assert_eq!(&got, f, "frame {i}");
    }
    let log = log.lock().unwrap();
    assert_eq!(log.taken, vec![Taken::Delivered; 3]);
    assert_eq!((log.batches, log.interrupts, log.ran_dry), (1, 1, 1));
    assert_eq!(s.qp.stats().rx_direct.get(), 3);
    assert_eq!(s.qp.stats().rx_packets.get(), 3);
    assert_eq!(s.qp.rx_pending(), 0);
}

under_each_feature_set!(direct_rx_lands_frames_in_order: direct_rx_frames_land_in_order_in_one_batch for ALL_SETS);

#[test]
fn direct_rx_keeps_gso_metadata_and_counts_num_buffers() {
    let (mut s, log) = sender_scene(MRG);
    add_rx_buffers(&s, 4, 1000);
    let f = frame(2500, 4);
    lend(&log, tso_hdr(), &f, &[66, 1000]);
    assert!(s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
    assert_eq!(s.used(), vec![(0, 1000), (1, 1000), (2, 512)]);
    let (h, first) = read_rx(&s.mem, BUF_BASE, 1000);
    assert_eq!(
        h,
        VirtioNetHdr {
            num_buffers: 3,
            ..tso_hdr()
        }
    );
    let mut all = first;
    for (i, n) in [(1u64, 1000usize), (2, 512)] {
        let mut rest = vec![0u8; n];
        s.mem
            .read_slice(&mut rest, GuestAddress(BUF_BASE + 0x1000 * i))
            .unwrap();
        all.extend_from_slice(&rest);
    }
    assert_eq!(all, f);
    assert_eq!(s.qp.stats().rx_merged_frames.get(), 1);
}

#[test]
fn direct_rx_opens_the_sender_once_per_batch() {
    let (mut s, log) = sender_scene(MRG);
    add_rx_buffers(&s, QUEUE_SIZE.into(), 256);
    // The pair's batch is 8: ten frames take two batches, one interrupt each, and the
    // guest is signalled once for the whole round.
    for i in 0..10u8 {
        lend(&log, VirtioNetHdr::default(), &frame(60, i), &[]);
    }
    assert!(s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
    assert_eq!(s.used().len(), 10);
    let firsts: Vec<u8> = (0..10u64)
        .map(|i| {
            let at = BUF_BASE + 0x1000 * i + s.qp.features().hdr_len as u64;
            s.mem.read_obj::<u8>(GuestAddress(at)).unwrap()
        })
        .collect();
    assert_eq!(firsts, (0..10).collect::<Vec<u8>>(), "in order");
    let log = log.lock().unwrap();
    assert_eq!((log.batches, log.interrupts, log.ran_dry), (2, 2, 1));
}

#[test]
fn direct_rx_leaves_frames_in_the_senders_ring_until_the_guest_posts_buffers() {
    for (_, features) in RX_SETS {
        let (mut s, log) = sender_scene(features);
        add_rx_buffers(&s, 1, 2048);
        for i in 0..3u8 {
            lend(&log, VirtioNetHdr::default(), &frame(100, i), &[]);
        }
        assert!(s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
        assert_eq!(s.used().len(), 1);
        {
            let log = log.lock().unwrap();
            assert_eq!(log.ring.len(), 2, "backpressure, not drops");
            assert_eq!(log.taken, vec![Taken::Delivered]);
            assert_eq!(log.ran_dry, 0);
        }
        assert!(s.qp.stats().drop_counts().all(|(_, n)| n == 0));
        // Nothing new: the next round (the guest's kick without buffers) takes nothing.
        assert!(!s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
        assert_eq!(log.lock().unwrap().ring.len(), 2);
        // The guest posts two buffers: both frames follow, in order, and the sender ran dry.
        let bufs = [
            [D(BUF_BASE + 0x1000, 2048, true)],
            [D(BUF_BASE + 0x2000, 2048, true)],
        ];
        add_chains(&s, 1, &bufs.iter().map(|b| &b[..]).collect::<Vec<_>>());
        assert!(s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
        let hlen = s.qp.features().hdr_len as u32;
        assert_eq!(
            s.used(),
            vec![(0, 100 + hlen), (1, 100 + hlen), (2, 100 + hlen)]
        );
        for i in 0..3u64 {
            let at = BUF_BASE + 0x1000 * i + u64::from(hlen);
            assert_eq!(s.mem.read_obj::<u8>(GuestAddress(at)).unwrap(), i as u8);
        }
        let log = log.lock().unwrap();
        assert!(log.ring.is_empty());
        assert_eq!(log.ran_dry, 1);
    }
}

#[test]
fn direct_rx_with_nothing_to_send_touches_no_guest_buffer() {
    let (mut s, log) = sender_scene(MRG);
    add_rx_buffers(&s, 2, 2048);
    assert!(!s.qp.process_rx(&mut s.q, &s.mem, true).unwrap());
    assert!(s.used().is_empty());
    assert_eq!(log.lock().unwrap().ran_dry, 1);
}

/// Puts `bad` then a good 2 KiB chain on the RX ring and lends one 100-byte frame; the bad
/// chain is returned with length 0 and counted under `reason`, the frame lands in the good
/// chain, and the sender's chain is completed.
fn direct_rx_malformed(features: u64, reason: DropReason, bad: impl FnOnce(&Scene) -> u16) {
    let (mut s, log) = sender_scene(features);
    let next = bad(&s);
    add_chains(&s, next, &[&[D(0x80_0000, 2048, true)]]);
    let f = frame(100, 5);
    lend(&log, VirtioNetHdr::default(), &f, &[14]);
    s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    let hlen = s.qp.features().hdr_len;
    assert_eq!(
        s.used(),
        vec![(0, 0), (u32::from(next), (hlen + 100) as u32)],
        "{reason:?}"
    );
    assert_eq!(s.qp.stats().drops(reason), 1, "{reason:?}");
    let mut got = vec![0u8; 100];
    s.mem
        .read_slice(&mut got, GuestAddress(0x80_0000 + hlen as u64))
        .unwrap();
    assert_eq!(got, f);
    assert_eq!(log.lock().unwrap().taken, vec![Taken::Delivered]);
}

fn direct_rx_all_malformed_shapes(features: u64) {
    for (reason, bad) in BAD_RX_CHAINS {
        direct_rx_malformed(features, reason, bad);
    }
}

under_each_feature_set!(direct_rx_malformed_shapes_both_rx_modes: direct_rx_all_malformed_shapes for RX_SETS);

#[test]
fn direct_rx_frames_the_guest_cannot_take_are_dropped_counted_and_completed() {
    // Too big for the guest's one chain (no MRG_RXBUF): dropped, the chain kept for the next.
    let (mut s, log) = sender_scene(NO_MRG);
    add_chains(&s, 0, &[&[D(BUF_BASE, 1024, true)]]);
    lend(&log, VirtioNetHdr::default(), &frame(1500, 0), &[]);
    lend(&log, VirtioNetHdr::default(), &frame(60, 0), &[]);
    s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used(), vec![(0, 72)]);
    assert_eq!(s.qp.stats().drops(DropReason::RxBufferTooSmall), 1);
    assert_eq!(
        log.lock().unwrap().taken,
        vec![Taken::Dropped, Taken::Delivered]
    );

    // A 64 KiB-class TSO frame to a guest without GUEST_TSO4: dropped as the packet path
    // drops it, no buffer used.
    let (mut s, log) =
        sender_scene(NO_MRG & !(1 << virtio_bindings::virtio_net::VIRTIO_NET_F_GUEST_TSO4));
    add_chains(&s, 0, &[&[D(BUF_BASE, 4096, true)]]);
    lend(&log, tso_hdr(), &frame(3000, 0), &[66]);
    s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    assert!(s.used().is_empty());
    assert_eq!(s.qp.stats().drops(DropReason::RxOffloadNotNegotiated), 1);
    assert_eq!(log.lock().unwrap().taken, vec![Taken::Dropped]);

    // A disabled ring: the frame is dropped without touching the guest's buffers.
    let (mut s, log) = sender_scene(MRG);
    add_chains(&s, 0, &[&[D(BUF_BASE, 4096, true)]]);
    lend(&log, VirtioNetHdr::default(), &frame(100, 0), &[]);
    assert!(!s.qp.process_rx(&mut s.q, &s.mem, false).unwrap());
    assert!(s.used().is_empty());
    assert_eq!(s.qp.stats().drops(DropReason::RxRingDisabled), 1);
    assert_eq!(log.lock().unwrap().taken, vec![Taken::Dropped]);
}

#[test]
fn direct_rx_honours_the_receive_filter() {
    let filter = SharedRxFilter::new(DEVICE_MAC);
    let (qp, peer) = pair_filtered(MRG, Arc::clone(&filter));
    let mut s = Scene::with_pair((qp, peer));
    let log = Arc::new(std::sync::Mutex::new(SenderLog::default()));
    s.qp.set_direct_sender(Box::new(MockSender {
        log: Arc::clone(&log),
        wake: vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap(),
    }));
    filter.update(|f| {
        f.promisc = false;
        f.allmulti = false;
    });
    add_rx_buffers(&s, 2, 2048);
    let mut other = frame(60, 0);
    other[..6].copy_from_slice(&[0x52, 0x54, 0, 9, 9, 9]);
    let mut mine = frame(60, 0);
    mine[..6].copy_from_slice(&DEVICE_MAC);
    // The destination address split across pieces is still read whole.
    lend(&log, VirtioNetHdr::default(), &other, &[2]);
    lend(&log, VirtioNetHdr::default(), &mine, &[4]);
    s.qp.process_rx(&mut s.q, &s.mem, true).unwrap();
    assert_eq!(s.used().len(), 1);
    assert_eq!(s.qp.stats().drops(DropReason::RxFiltered), 1);
    assert_eq!(
        log.lock().unwrap().taken,
        vec![Taken::Dropped, Taken::Delivered]
    );
}
