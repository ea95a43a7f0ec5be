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

/// One descriptor of a test chain: address, length, device-writable.
#[derive(Clone, Copy)]
struct D(u64, u32, bool);

/// Puts chains on the avail ring; descriptor indices are assigned from `first` upwards and
/// each chain's descriptors are linked with NEXT.
fn add_chains(q: &MockSplitQueue<'_, GuestMemoryMmap>, first: u16, chains: &[&[D]]) {
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
    q.add_desc_chains(&raw, first).unwrap();
}

fn used(q: &MockSplitQueue<'_, GuestMemoryMmap>) -> Vec<(u32, u32)> {
    let n = q.used().idx().load();
    (0..n)
        .map(|i| {
            let e = q.used().ring().ref_at(usize::from(i)).unwrap().load();
            (e.id(), e.len())
        })
        .collect()
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

/// Writes header (in the feature set's length) + frame at `addr`; returns the total length.
fn put_packet(
    mem: &GuestMemoryMmap,
    addr: u64,
    features: u64,
    hdr: &VirtioNetHdr,
    f: &[u8],
) -> u32 {
    let hlen = NetFeatures::from_acked(features).hdr_len;
    mem.write_slice(&hdr.to_bytes()[..hlen], GuestAddress(addr))
        .unwrap();
    mem.write_slice(f, GuestAddress(addr + hlen as u64))
        .unwrap();
    (hlen + f.len()) as u32
}

fn tx_queue<'a>(mem: &'a GuestMemoryMmap) -> (MockSplitQueue<'a, GuestMemoryMmap>, Queue) {
    let mock = MockSplitQueue::create(mem, GuestAddress(0), QUEUE_SIZE);
    let q = mock.create_queue::<Queue>().unwrap();
    (mock, q)
}

// ---------------------------------------------------------------- TX good path

fn tx_good_path_with_gso_passthrough(features: u64) {
    let mem = memory();
    let (mock, mut q) = tx_queue(&mem);
    let (mut qp, mut peer) = pair(features);
    let hlen = NetFeatures::from_acked(features).hdr_len as u64;
    let f = frame(3000, 7);
    let total = put_packet(&mem, BUF_BASE, features, &tso_hdr(), &f);
    // Header split 5 + rest-of-header, then the frame in two pieces.
    add_chains(
        &mock,
        0,
        &[&[
            D(BUF_BASE, 5, false),
            D(BUF_BASE + 5, (hlen - 5) as u32, false),
            D(BUF_BASE + hlen, 1000, false),
            D(BUF_BASE + hlen + 1000, total - hlen as u32 - 1000, false),
        ]],
    );
    let notify = qp.process_tx(&mut q, &mem, true).unwrap();
    assert!(notify);
    assert_eq!(used(&mock), vec![(0, 0)]);
    let got = recv_all(&mut peer);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, tso_hdr());
    assert_eq!(got[0].1, f);
    assert_eq!(qp.stats().tx_packets.get(), 1);
    assert_eq!(qp.stats().tx_bytes.get(), 3000);
}

#[test]
fn tx_good_path_with_gso_passthrough_all_feature_sets() {
    for (_, f) in ALL_SETS {
        tx_good_path_with_gso_passthrough(f);
    }
}

#[test]
fn tx_indirect_chain_is_read() {
    let mem = memory();
    let (mock, mut q) = tx_queue(&mem);
    let (mut qp, mut peer) = pair(MRG);
    let f = frame(60, 1);
    let total = put_packet(&mem, BUF_BASE, MRG, &VirtioNetHdr::default(), &f);
    let table = 0x20_0000u64;
    let entries = [
        SplitDescriptor::new(BUF_BASE, 12, VRING_DESC_F_NEXT as u16, 1),
        SplitDescriptor::new(BUF_BASE + 12, total - 12, 0, 0),
    ];
    for (i, e) in entries.iter().enumerate() {
        mem.write_obj(RawDescriptor::from(*e), GuestAddress(table + 16 * i as u64))
            .unwrap();
    }
    let head = RawDescriptor::from(SplitDescriptor::new(
        table,
        32,
        VRING_DESC_F_INDIRECT as u16,
        0,
    ));
    mock.add_desc_chains(&[head], 0).unwrap();
    qp.process_tx(&mut q, &mem, true).unwrap();
    assert_eq!(recv_all(&mut peer), vec![(VirtioNetHdr::default(), f)]);
}

// ---------------------------------------------------------------- TX malformed shapes

/// Puts `bad` then a good chain on the TX ring; asserts the bad one is returned with length 0
/// and counted under `reason`, and the good one still goes out.
fn tx_malformed(
    features: u64,
    reason: DropReason,
    bad: impl FnOnce(&GuestMemoryMmap, &MockSplitQueue<'_, GuestMemoryMmap>) -> u16,
) {
    let mem = memory();
    let (mock, mut q) = tx_queue(&mem);
    let (mut qp, mut peer) = pair(features);
    let used_by_bad = bad(&mem, &mock);
    let good = frame(100, 3);
    let total = put_packet(&mem, 0x80_0000, features, &VirtioNetHdr::default(), &good);
    add_chains(&mock, used_by_bad, &[&[D(0x80_0000, total, false)]]);

    qp.process_tx(&mut q, &mem, true).unwrap();
    let u = used(&mock);
    assert_eq!(u.len(), 2, "both chains returned ({reason:?})");
    assert_eq!(
        u[0],
        (0, 0),
        "bad chain returned with length 0 ({reason:?})"
    );
    assert_eq!(u[1], (u32::from(used_by_bad), 0));
    assert_eq!(qp.stats().drops(reason), 1, "{reason:?}");
    let got = recv_all(&mut peer);
    assert_eq!(got.len(), 1, "{reason:?}");
    assert_eq!(got[0].1, good);
}

fn tx_all_malformed_shapes(features: u64) {
    let hlen = NetFeatures::from_acked(features).hdr_len as u32;
    // Device-writable descriptor in a TX chain.
    tx_malformed(features, DropReason::TxWriteOnlyDescriptor, |mem, q| {
        let t = put_packet(
            mem,
            BUF_BASE,
            features,
            &VirtioNetHdr::default(),
            &frame(60, 0),
        );
        add_chains(
            q,
            0,
            &[&[D(BUF_BASE, hlen, false), D(BUF_BASE + 12, t - hlen, true)]],
        );
        2
    });
    // Chain shorter than the virtio-net header.
    tx_malformed(features, DropReason::TxShortHeader, |_, q| {
        add_chains(q, 0, &[&[D(BUF_BASE, hlen - 1, false)]]);
        1
    });
    // Descriptor beyond guest memory.
    tx_malformed(features, DropReason::TxBadAddress, |_, q| {
        add_chains(q, 0, &[&[D(BUF_BASE, hlen, false), D(OUTSIDE, 100, false)]]);
        2
    });
    // Non-GSO frame above MTU + Ethernet/VLAN header.
    tx_malformed(features, DropReason::TxFrameTooLarge, |mem, q| {
        let big = frame(usize::from(MTU) + 19, 0);
        let t = put_packet(mem, BUF_BASE, features, &VirtioNetHdr::default(), &big);
        add_chains(q, 0, &[&[D(BUF_BASE, t, false)]]);
        1
    });
    // GSO frame above the largest buffer.
    tx_malformed(features, DropReason::TxFrameTooLarge, |mem, q| {
        let t = put_packet(
            mem,
            BUF_BASE,
            features,
            &tso_hdr(),
            &frame(packet_ring::MAX_FRAME_LEN + 1, 0),
        );
        add_chains(q, 0, &[&[D(BUF_BASE, t, false)]]);
        1
    });
    // Empty chain: an indirect table whose length is not a whole number of descriptors.
    tx_malformed(features, DropReason::TxEmptyChain, |_, q| {
        let head = RawDescriptor::from(SplitDescriptor::new(
            0x20_0000,
            15,
            VRING_DESC_F_INDIRECT as u16,
            0,
        ));
        q.add_desc_chains(&[head], 0).unwrap();
        1
    });
    // Descriptor loop: 0 -> 1 -> 0.
    tx_malformed(features, DropReason::TxChainTruncated, |_, q| {
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
        q.add_desc_chains(&raw, 0).unwrap();
        2
    });
    // Header asking for an offload nobody negotiated (UDP fragmentation).
    tx_malformed(features, DropReason::TxBadHeader, |mem, q| {
        let h = VirtioNetHdr {
            gso_type: VirtioNetHdr::GSO_UDP,
            gso_size: 1000,
            ..Default::default()
        };
        let t = put_packet(mem, BUF_BASE, features, &h, &frame(2000, 0));
        add_chains(q, 0, &[&[D(BUF_BASE, t, false)]]);
        1
    });
    // Runt frame.
    tx_malformed(features, DropReason::TxRuntFrame, |mem, q| {
        let t = put_packet(
            mem,
            BUF_BASE,
            features,
            &VirtioNetHdr::default(),
            &frame(13, 0),
        );
        add_chains(q, 0, &[&[D(BUF_BASE, t, false)]]);
        1
    });
}

#[test]
fn tx_malformed_shapes_all_feature_sets() {
    for (_, f) in ALL_SETS {
        tx_all_malformed_shapes(f);
    }
}

#[test]
fn tx_head_index_outside_ring_is_skipped() {
    let mem = memory();
    let (mock, mut q) = tx_queue(&mem);
    let (mut qp, _peer) = pair(MRG);
    // Avail entry names descriptor 200 in a 16-entry ring.
    mem.write_obj(200u16, mock.avail_addr().unchecked_add(4))
        .unwrap();
    mem.write_obj(1u16, mock.avail_addr().unchecked_add(2))
        .unwrap();
    qp.process_tx(&mut q, &mem, true).unwrap();
    assert!(used(&mock).is_empty());
    assert_eq!(qp.stats().drops(DropReason::TxEmptyChain), 1);
}

#[test]
fn tx_on_disabled_ring_is_processed_and_discarded() {
    let mem = memory();
    let (mock, mut q) = tx_queue(&mem);
    let (mut qp, mut peer) = pair(MRG);
    let t = put_packet(
        &mem,
        BUF_BASE,
        MRG,
        &VirtioNetHdr::default(),
        &frame(100, 0),
    );
    add_chains(
        &mock,
        0,
        &[&[D(BUF_BASE, t, false)], &[D(BUF_BASE, t, false)]],
    );
    qp.process_tx(&mut q, &mem, false).unwrap();
    assert_eq!(used(&mock), vec![(0, 0), (1, 0)]);
    assert!(recv_all(&mut peer).is_empty());
    assert_eq!(qp.stats().drops(DropReason::TxRingDisabled), 2);
}

#[test]
fn tx_event_idx_suppresses_and_rearms_notifications() {
    let mem = memory();
    let (mock, mut q) = tx_queue(&mem);
    // The mock lays its used ring over the avail ring's used_event field; move the used ring.
    let used_ring = GuestAddress(0x8000);
    q.set_used_ring_address(Some(used_ring.0 as u32), Some(0));
    q.set_event_idx(true);
    let (mut qp, _peer) = pair(MRG | (1 << VIRTIO_RING_F_EVENT_IDX));
    let t = put_packet(
        &mem,
        BUF_BASE,
        MRG,
        &VirtioNetHdr::default(),
        &frame(100, 0),
    );
    // used_event (after the avail ring) = 5: the guest wants an interrupt only past entry 5.
    let used_event = mock
        .avail_addr()
        .unchecked_add(4 + 2 * u64::from(QUEUE_SIZE));
    mem.write_obj(5u16, used_event).unwrap();
    add_chains(&mock, 0, &[&[D(BUF_BASE, t, false)]]);
    assert!(!qp.process_tx(&mut q, &mem, true).unwrap());
    assert_eq!(qp.stats().notifications_suppressed.get(), 1);
    assert_eq!(mem.read_obj::<u16>(used_ring.unchecked_add(2)).unwrap(), 1);
    // avail_event (after the used ring) asks for a kick at the next chain.
    let avail_event = used_ring.unchecked_add(4 + 8 * u64::from(QUEUE_SIZE));
    assert_eq!(mem.read_obj::<u16>(avail_event).unwrap(), 1);
    // used_event 1: interrupt once entry 1 is used, which the next chain does.
    mem.write_obj(1u16, used_event).unwrap();
    add_chains(&mock, 1, &[&[D(BUF_BASE, t, false)]]);
    assert!(qp.process_tx(&mut q, &mem, true).unwrap());
    assert_eq!(mem.read_obj::<u16>(used_ring.unchecked_add(2)).unwrap(), 2);
    assert_eq!(mem.read_obj::<u16>(avail_event).unwrap(), 2);
}

#[test]
fn tx_without_event_idx_always_notifies() {
    let mem = memory();
    let (mock, mut q) = tx_queue(&mem);
    let (mut qp, _peer) = pair(MRG);
    let t = put_packet(
        &mem,
        BUF_BASE,
        MRG,
        &VirtioNetHdr::default(),
        &frame(100, 0),
    );
    add_chains(&mock, 0, &[&[D(BUF_BASE, t, false)]]);
    assert!(qp.process_tx(&mut q, &mem, true).unwrap());
    assert_eq!(qp.stats().notifications_suppressed.get(), 0);
}

// ---------------------------------------------------------------- RX

fn rx_queue<'a>(mem: &'a GuestMemoryMmap) -> (MockSplitQueue<'a, GuestMemoryMmap>, Queue) {
    tx_queue(mem)
}

/// Reads back header + frame the device wrote at `addr`.
fn read_rx(mem: &GuestMemoryMmap, addr: u64, len: usize) -> (VirtioNetHdr, Vec<u8>) {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    (VirtioNetHdr::parse(&buf).unwrap(), buf[12..].to_vec())
}

fn rx_good_path_with_gso(features: u64) {
    let mem = memory();
    let (mock, mut q) = rx_queue(&mem);
    let (mut qp, mut peer) = pair(features);
    add_chains(&mock, 0, &[&[D(BUF_BASE, 4000, true)]]);
    let f = frame(3000, 9);
    let hdr = VirtioNetHdr {
        gso_type: VirtioNetHdr::GSO_TCPV6,
        ..tso_hdr()
    };
    assert!(peer.send(hdr, &f).unwrap());
    assert!(qp.process_rx(&mut q, &mem, true).unwrap());
    assert_eq!(used(&mock), vec![(0, 3012)]);
    let (h, body) = read_rx(&mem, BUF_BASE, 3012);
    assert_eq!(
        h,
        VirtioNetHdr {
            num_buffers: 1,
            ..hdr
        }
    );
    assert_eq!(body, f);
    assert_eq!(qp.stats().rx_packets.get(), 1);
}

#[test]
fn rx_good_path_with_gso_both_rx_modes() {
    for (_, f) in RX_SETS {
        rx_good_path_with_gso(f);
    }
}

#[test]
fn rx_mergeable_spreads_over_chains_and_sets_num_buffers() {
    let mem = memory();
    let (mock, mut q) = rx_queue(&mem);
    let (mut qp, mut peer) = pair(MRG);
    add_chains(
        &mock,
        0,
        &[
            &[D(BUF_BASE, 1000, true)],
            &[D(BUF_BASE + 0x1000, 1000, true)],
            &[D(BUF_BASE + 0x2000, 1000, true)],
        ],
    );
    let f = frame(2500, 4);
    assert!(peer.send(VirtioNetHdr::default(), &f).unwrap());
    qp.process_rx(&mut q, &mem, true).unwrap();
    assert_eq!(used(&mock), vec![(0, 1000), (1, 1000), (2, 512)]);
    let (h, first) = read_rx(&mem, BUF_BASE, 1000);
    assert_eq!(h.num_buffers, 3);
    let mut all = first;
    let mut rest = vec![0u8; 1000];
    mem.read_slice(&mut rest, GuestAddress(BUF_BASE + 0x1000))
        .unwrap();
    all.extend_from_slice(&rest);
    let mut last = vec![0u8; 512];
    mem.read_slice(&mut last, GuestAddress(BUF_BASE + 0x2000))
        .unwrap();
    all.extend_from_slice(&last);
    assert_eq!(all, f);
}

#[test]
fn rx_waits_for_buffers_and_resumes_on_kick() {
    for (_, features) in RX_SETS {
        let mem = memory();
        let (mock, mut q) = rx_queue(&mem);
        let (mut qp, mut peer) = pair(features);
        assert!(peer.send(VirtioNetHdr::default(), &frame(100, 0)).unwrap());
        assert!(!qp.process_rx(&mut q, &mem, true).unwrap());
        assert_eq!(qp.rx_pending(), 1);
        add_chains(&mock, 0, &[&[D(BUF_BASE, 2048, true)]]);
        assert!(qp.process_rx(&mut q, &mem, true).unwrap());
        assert_eq!(used(&mock), vec![(0, 112)]);
        assert_eq!(qp.rx_pending(), 0);
    }
}

/// Puts `bad` then a good 2 KiB chain on the RX ring and sends one 100-byte packet; asserts the
/// bad chain is returned with length 0, counted under `reason`, and the packet lands in the
/// good chain.
fn rx_malformed(
    features: u64,
    reason: DropReason,
    bad: impl FnOnce(&MockSplitQueue<'_, GuestMemoryMmap>) -> u16,
) {
    let mem = memory();
    let (mock, mut q) = rx_queue(&mem);
    let (mut qp, mut peer) = pair(features);
    let next = bad(&mock);
    add_chains(&mock, next, &[&[D(0x80_0000, 2048, true)]]);
    let f = frame(100, 5);
    assert!(peer.send(VirtioNetHdr::default(), &f).unwrap());
    qp.process_rx(&mut q, &mem, true).unwrap();
    assert_eq!(
        used(&mock),
        vec![(0, 0), (u32::from(next), 112)],
        "{reason:?}"
    );
    assert_eq!(qp.stats().drops(reason), 1, "{reason:?}");
    assert_eq!(read_rx(&mem, 0x80_0000, 112).1, f);
}

fn rx_all_malformed_shapes(features: u64) {
    rx_malformed(features, DropReason::RxReadOnlyDescriptor, |q| {
        add_chains(q, 0, &[&[D(BUF_BASE, 2048, false)]]);
        1
    });
    rx_malformed(features, DropReason::RxBadAddress, |q| {
        add_chains(q, 0, &[&[D(OUTSIDE, 2048, true)]]);
        1
    });
    rx_malformed(features, DropReason::RxEmptyChain, |q| {
        let head = RawDescriptor::from(SplitDescriptor::new(
            0x20_0000,
            15,
            VRING_DESC_F_INDIRECT as u16,
            0,
        ));
        q.add_desc_chains(&[head], 0).unwrap();
        1
    });
    // A loop of two 4-byte buffers cannot hold the packet within the queue-size walk.
    rx_malformed(features, DropReason::RxChainTruncated, |q| {
        let w = VRING_DESC_F_WRITE as u16 | VRING_DESC_F_NEXT as u16;
        let raw = [
            RawDescriptor::from(SplitDescriptor::new(BUF_BASE, 4, w, 1)),
            RawDescriptor::from(SplitDescriptor::new(BUF_BASE + 4, 4, w, 0)),
        ];
        q.add_desc_chains(&raw, 0).unwrap();
        2
    });
}

#[test]
fn rx_malformed_shapes_both_rx_modes() {
    for (_, f) in RX_SETS {
        rx_all_malformed_shapes(f);
    }
}

#[test]
fn rx_buffer_shorter_than_header() {
    // Without mergeable buffers the packet cannot fit: dropped, the chain is kept for later.
    let mem = memory();
    let (mock, mut q) = rx_queue(&mem);
    let (mut qp, mut peer) = pair(NO_MRG);
    add_chains(&mock, 0, &[&[D(BUF_BASE, 6, true)]]);
    assert!(peer.send(VirtioNetHdr::default(), &frame(100, 0)).unwrap());
    qp.process_rx(&mut q, &mem, true).unwrap();
    assert!(used(&mock).is_empty());
    assert_eq!(qp.stats().drops(DropReason::RxBufferTooSmall), 1);

    // With mergeable buffers the header may straddle chains; num_buffers is patched across.
    let mem = memory();
    let (mock, mut q) = rx_queue(&mem);
    let (mut qp, mut peer) = pair(MRG);
    add_chains(
        &mock,
        0,
        &[&[D(BUF_BASE, 6, true)], &[D(BUF_BASE + 0x100, 2048, true)]],
    );
    let f = frame(100, 0);
    assert!(peer.send(tso_hdr(), &f).unwrap());
    qp.process_rx(&mut q, &mem, true).unwrap();
    assert_eq!(used(&mock), vec![(0, 6), (1, 106)]);
    let mut h = vec![0u8; 6];
    mem.read_slice(&mut h, GuestAddress(BUF_BASE)).unwrap();
    let mut rest = vec![0u8; 106];
    mem.read_slice(&mut rest, GuestAddress(BUF_BASE + 0x100))
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
    let mem = memory();
    let (mock, mut q) = rx_queue(&mem);
    let (mut qp, mut peer) = pair(NO_MRG);
    add_chains(&mock, 0, &[&[D(BUF_BASE, 1024, true)]]);
    assert!(peer.send(VirtioNetHdr::default(), &frame(1500, 0)).unwrap());
    assert!(peer.send(VirtioNetHdr::default(), &frame(60, 0)).unwrap());
    qp.process_rx(&mut q, &mem, true).unwrap();
    assert_eq!(used(&mock), vec![(0, 72)]);
    assert_eq!(qp.stats().drops(DropReason::RxBufferTooSmall), 1);

    // Mergeable: the whole ring (16 chains of 64 bytes) cannot hold 2000 bytes: dropped without
    // consuming anything, instead of waiting forever.
    let mem = memory();
    let (mock, mut q) = rx_queue(&mem);
    let (mut qp, mut peer) = pair(MRG);
    let chains: Vec<[D; 1]> = (0..QUEUE_SIZE)
        .map(|i| [D(BUF_BASE + 0x100 * u64::from(i), 64, true)])
        .collect();
    let refs: Vec<&[D]> = chains.iter().map(|c| &c[..]).collect();
    add_chains(&mock, 0, &refs);
    assert!(peer.send(VirtioNetHdr::default(), &frame(2000, 0)).unwrap());
    assert!(peer.send(VirtioNetHdr::default(), &frame(40, 0)).unwrap());
    qp.process_rx(&mut q, &mem, true).unwrap();
    assert_eq!(used(&mock), vec![(0, 52)]);
    assert_eq!(qp.stats().drops(DropReason::RxBufferTooSmall), 1);
}

#[test]
fn rx_mergeable_abort_mid_packet_returns_gathered_chains() {
    let mem = memory();
    let (mock, mut q) = rx_queue(&mem);
    let (mut qp, mut peer) = pair(MRG);
    add_chains(
        &mock,
        0,
        &[&[D(BUF_BASE, 64, true)], &[D(BUF_BASE + 0x100, 64, false)]],
    );
    assert!(peer.send(VirtioNetHdr::default(), &frame(100, 0)).unwrap());
    qp.process_rx(&mut q, &mem, true).unwrap();
    assert_eq!(used(&mock), vec![(0, 0), (1, 0)]);
    assert_eq!(qp.stats().drops(DropReason::RxReadOnlyDescriptor), 1);
    assert_eq!(qp.stats().rx_packets.get(), 0);
}

#[test]
fn rx_offload_not_negotiated_is_dropped() {
    let mem = memory();
    let (mock, mut q) = rx_queue(&mem);
    let (mut qp, mut peer) =
        pair(NO_MRG & !(1 << virtio_bindings::virtio_net::VIRTIO_NET_F_GUEST_TSO4));
    add_chains(&mock, 0, &[&[D(BUF_BASE, 4096, true)]]);
    assert!(peer.send(tso_hdr(), &frame(3000, 0)).unwrap());
    qp.process_rx(&mut q, &mem, true).unwrap();
    assert!(used(&mock).is_empty());
    assert_eq!(qp.stats().drops(DropReason::RxOffloadNotNegotiated), 1);
}

#[test]
fn rx_on_disabled_ring_drops_without_touching_it() {
    let mem = memory();
    let (mock, mut q) = rx_queue(&mem);
    let (mut qp, mut peer) = pair(MRG);
    add_chains(&mock, 0, &[&[D(BUF_BASE, 4096, true)]]);
    assert!(peer.send(VirtioNetHdr::default(), &frame(100, 0)).unwrap());
    assert!(!qp.process_rx(&mut q, &mem, false).unwrap());
    assert!(used(&mock).is_empty());
    assert_eq!(qp.stats().drops(DropReason::RxRingDisabled), 1);
}

/// Once the driver turns promiscuous mode off, only frames for the guest reach its ring; the
/// rest are counted as `rx_filtered` and use no buffer.
#[test]
fn rx_filter_drops_frames_not_for_the_guest() {
    let mem = memory();
    let (mock, mut q) = rx_queue(&mem);
    let filter = SharedRxFilter::new(DEVICE_MAC);
    let (mut qp, mut peer) = pair_filtered(MRG, Arc::clone(&filter));
    let bufs: Vec<[D; 1]> = (0..8)
        .map(|i| [D(BUF_BASE + 0x1000 * i, 2048, true)])
        .collect();
    add_chains(&mock, 0, &bufs.iter().map(|b| &b[..]).collect::<Vec<_>>());
    let other = [0x52, 0x54, 0, 0x12, 0x34, 0x99];
    let mcast = [0x01, 0x00, 0x5e, 0, 0, 1];
    let broadcast = [0xff; 6];
    let mut round = |peer: &mut MemoryPeer, qp: &mut QueuePair| {
        for dst in [other, DEVICE_MAC, mcast, broadcast] {
            let f = [&dst[..], &frame(50, 7)].concat();
            assert!(peer.send(VirtioNetHdr::default(), &f).unwrap());
        }
        qp.process_rx(&mut q, &mem, true).unwrap();
    };
    // The destinations the guest received, in ring order.
    let delivered = |mock: &MockSplitQueue<'_, GuestMemoryMmap>| -> Vec<[u8; 6]> {
        used(mock)
            .iter()
            .map(|&(id, len)| {
                let (_, f) = read_rx(&mem, BUF_BASE + 0x1000 * u64::from(id), len as usize);
                [f[0], f[1], f[2], f[3], f[4], f[5]]
            })
            .collect()
    };

    filter.update(|f| {
        f.promisc = false;
        f.allmulti = false;
    });
    round(&mut peer, &mut qp);
    assert_eq!(delivered(&mock), vec![DEVICE_MAC, broadcast]);
    assert_eq!(qp.stats().drops(DropReason::RxFiltered), 2);

    // All-multicast on and `other` in the unicast table: everything passes.
    filter.update(|f| {
        f.allmulti = true;
        f.unicast = crate::rx_filter::MacTable::from_bytes(&other);
    });
    round(&mut peer, &mut qp);
    assert_eq!(delivered(&mock)[2..], [other, DEVICE_MAC, mcast, broadcast]);
    assert_eq!(qp.stats().drops(DropReason::RxFiltered), 2);
    assert_eq!(qp.stats().rx_packets.get(), 6);
}

#[test]
fn broken_ring_is_counted_not_fatal() {
    let mem = memory();
    let (mock, mut q) = tx_queue(&mem);
    let (mut qp, _peer) = pair(MRG);
    // avail idx running 100 entries ahead of a 16-entry ring.
    mem.write_obj(100u16, mock.avail_addr().unchecked_add(2))
        .unwrap();
    assert!(!qp.process_tx(&mut q, &mem, true).unwrap());
    assert_eq!(qp.stats().drops(DropReason::RingBroken), 1);
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
        let mem = memory();
        let (mock, mut q) = rx_queue(&mem);
        let (mut qp, mut peer) = pair(MRG);
        // 2 x 64 bytes posted, a 300-byte packet needs 5: wait for more, do not spin.
        add_chains(
            &mock,
            0,
            &[&[D(BUF_BASE, 64, true)], &[D(BUF_BASE + 0x100, 64, true)]],
        );
        assert!(peer.send(VirtioNetHdr::default(), &frame(300, 0)).unwrap());
        assert!(!qp.process_rx(&mut q, &mem, true).unwrap());
        assert!(used(&mock).is_empty());
        assert_eq!(qp.rx_pending(), 1);
        let more: Vec<[D; 1]> = (2..6u64)
            .map(|i| [D(BUF_BASE + 0x100 * i, 64, true)])
            .collect();
        let refs: Vec<&[D]> = more.iter().map(|c| &c[..]).collect();
        add_chains(&mock, 2, &refs);
        assert!(qp.process_rx(&mut q, &mem, true).unwrap());
        assert_eq!(used(&mock).len(), 5);
        assert_eq!(qp.rx_pending(), 0);
    });
}

#[test]
fn unreadable_avail_entries_are_a_broken_ring_not_a_spin() {
    within_deadline(|| {
        let mem = memory();
        let (_mock, mut q) = tx_queue(&mem);
        // flags and idx are the last 4 bytes of guest memory; the entries lie beyond it.
        let avail = (MEM_SIZE - 4) as u64;
        q.set_avail_ring_address(Some(avail as u32), Some(0));
        mem.write_obj(3u16, GuestAddress(avail + 2)).unwrap();
        let (mut qp, _peer) = pair(MRG);
        assert!(!qp.process_tx(&mut q, &mem, true).unwrap());
        assert_eq!(qp.stats().drops(DropReason::RingBroken), 1);

        let (mut qp, mut peer) = pair(MRG);
        assert!(peer.send(VirtioNetHdr::default(), &frame(60, 0)).unwrap());
        assert!(!qp.process_rx(&mut q, &mem, true).unwrap());
        assert_eq!(qp.stats().drops(DropReason::RingBroken), 1);
    });
}
