//! Guest memory, ring indices, feature bits and uplink packets all come from the input; the
//! queue pair then processes its TX and RX rings, and the control queue its commands. Any
//! panic, or any access outside guest memory (ASan), is a finding; so is a broken invariant
//! of the engine's `audit` (the same checks the library kernel's device harness runs): no
//! chain leaks (every chain taken is used once), every TX chain sent or counted, no used
//! length beyond the chain's device-writable bytes (0 on TX).
//!
//! Input layout: byte 0 selects features, bytes 1..3 the TX avail index, 3..5 the RX avail
//! index, 5..7 an uplink frame length, then the bytes of guest memory (rings at fixed spots).
#![no_main]

use knic_virtio_net::Direction;
use knic_virtio_net::audit;
use libfuzzer_sys::fuzz_target;
use packet_ring::{VirtioNetHdr, memory_port_pair};
use vhost_backend::ctrl::CtrlQueue;
use vhost_backend::features::{NetFeatures, OFFERED_FEATURES};
use vhost_backend::rx_filter::SharedRxFilter;
use vhost_backend::stats::QueuePairStats;
use vhost_backend::{QueuePair, QueuePairConfig};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM: usize = 0x1_0000;
const QSIZE: u16 = 16;
const TX_RING: u64 = 0x0;
const RX_RING: u64 = 0x1000;
const CTRL_RING: u64 = 0x2000;
/// The audit's scratch ring, in a region of its own above the input's memory.
const SCRATCH: u64 = 0x10_0000;

/// (start, length) of a ring's descriptor table, avail ring and used ring (virtio 1.2 §2.7).
fn ring_areas(base: u64) -> [(u64, u64); 3] {
    let n = u64::from(QSIZE);
    [
        (base, 16 * n),
        (base + 0x100, 6 + 2 * n),
        (base + 0x200, 6 + 8 * n),
    ]
}

fn queue(base: u64, mem: &GuestMemoryMmap, avail_idx: u16, event_idx: bool) -> Queue {
    let mut q = Queue::new(QSIZE).expect("queue size is valid");
    q.set_size(QSIZE);
    q.set_desc_table_address(Some(base as u32), Some(0));
    q.set_avail_ring_address(Some((base + 0x100) as u32), Some(0));
    q.set_used_ring_address(Some((base + 0x200) as u32), Some(0));
    q.set_event_idx(event_idx);
    q.set_ready(true);
    let _ = mem.write_obj(avail_idx, GuestAddress(base + 0x102));
    // The used ring starts as the device's: flags and index 0, as the queue's own
    // next_used is (a driver sets the ring up zeroed; garbage left there by the input
    // would read as a used index the device never published).
    let _ = mem.write_obj(0u32, GuestAddress(base + 0x200));
    q
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let sel = data[0];
    let tx_avail = u16::from_le_bytes([data[1], data[2]]);
    let rx_avail = u16::from_le_bytes([data[3], data[4]]);
    let frame_len = usize::from(u16::from_le_bytes([data[5], data[6]]));
    let body = &data[7..];

    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), MEM),
        (GuestAddress(SCRATCH), 0x2000),
    ])
    .expect("memory");
    let n = body.len().min(MEM);
    mem.write_slice(&body[..n], GuestAddress(0))
        .expect("in range");

    // Feature sets: mergeable or not, VERSION_1 or legacy header, EVENT_IDX or not.
    let mut features = OFFERED_FEATURES;
    if sel & 1 != 0 {
        features &= !(1 << 15); // MRG_RXBUF
    }
    if sel & 2 != 0 {
        features &= !(1 << 32); // VERSION_1
    }
    let event_idx = sel & 4 != 0;
    if !event_idx {
        features &= !(1 << 29);
    }

    let (port, mut peer) = memory_port_pair(4, packet_ring::MAX_FRAME_LEN).expect("eventfds");
    // The receive filter: promiscuous (the reset state) or filtering, as the input says.
    let rx_filter = SharedRxFilter::new([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    rx_filter.update(|f| {
        f.promisc = (tx_avail ^ rx_avail) & 1 == 0;
        f.allmulti = (tx_avail ^ rx_avail) & 2 == 0;
    });
    let mut qp = QueuePair::new(
        QueuePairConfig {
            index: 0,
            batch: 4,
            mtu: 1500,
            max_queue_size: QSIZE,
        },
        Box::new(port),
        std::sync::Arc::clone(&rx_filter),
        std::sync::Arc::new(QueuePairStats::default()),
    );
    qp.set_features(NetFeatures::from_acked(features));

    let stats = std::sync::Arc::clone(qp.stats());
    let mut txq = queue(TX_RING, &mem, tx_avail, event_idx);
    let tx_shapes = audit::chain_shapes(&mem, TX_RING, QSIZE, SCRATCH);
    let tx_entries = audit::avail_entries(&mem, TX_RING + 0x100, QSIZE);
    let _ = qp.process_tx(&mut txq, &mem, sel & 8 == 0);
    let taken = txq.next_avail();
    let no_head = audit::entries_naming_no_head(&tx_entries, taken);
    audit::assert_every_chain_used(Direction::Tx, taken, no_head, txq.next_used());
    audit::assert_tx_chains_accounted(&stats, taken, stats.tx_packets.get(), true);
    if let Some(used) = audit::used_entries(&mem, &txq, 0, txq.next_used()) {
        assert!(
            used.iter().all(|e| e.1 == 0),
            "a TX chain is used with length 0"
        );
        assert!(used.iter().all(|e| (e.0 as usize) < tx_shapes.len()));
    }

    // Uplink packets for RX: headers and frames cut from the input.
    let hdr = VirtioNetHdr::parse(body).unwrap_or_default();
    let len = frame_len.min(body.len());
    for _ in 0..(sel >> 4) {
        let _ = peer.send(hdr, &body[..len]);
    }
    let mut rxq = queue(RX_RING, &mem, rx_avail, event_idx);
    let rx_shapes = audit::chain_shapes(&mem, RX_RING, QSIZE, SCRATCH);
    let rx_entries = audit::avail_entries(&mem, RX_RING + 0x100, QSIZE);
    let mut fixed = ring_areas(RX_RING).to_vec();
    fixed.extend(audit::indirect_tables(&mem, RX_RING, QSIZE));
    // The driver's buffers may lie over the RX rings it is read from: then only "no more
    // used than taken" can hold.
    let rings_kept = !rx_shapes
        .iter()
        .flatten()
        .filter(|d| d.is_write_only())
        .any(|d| {
            fixed[..2]
                .iter()
                .chain(&fixed[3..])
                .any(|&a| audit::overlaps(audit::range(d), a))
        });
    let _ = qp.process_rx(&mut rxq, &mem, sel & 8 == 0);
    let taken = rxq.next_avail();
    if rings_kept {
        let no_head = audit::entries_naming_no_head(&rx_entries, taken);
        audit::assert_every_chain_used(Direction::Rx, taken, no_head, rxq.next_used());
        if let Some(used) = audit::used_entries(&mem, &rxq, 0, rxq.next_used()) {
            audit::assert_used_within_writable(&used, &rx_shapes, &fixed);
        }
    } else {
        assert!(rxq.next_used() <= taken, "more RX chains used than taken");
    }
    peer.recv_with(usize::MAX, |_| {});

    // The control queue reads commands from the same memory (its ring at CTRL_RING).
    let mut ctrlq = queue(CTRL_RING, &mem, tx_avail ^ rx_avail, event_idx);
    let active = std::sync::atomic::AtomicUsize::new(1);
    let _ = CtrlQueue::new(rx_filter).process(&mut ctrlq, &mem, &active, 4);
    assert!((1..=4).contains(&active.load(std::sync::atomic::Ordering::Relaxed)));
});
