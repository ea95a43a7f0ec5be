//! The data path's own cost per packet, with nothing behind it: a `QueuePair` over mock guest
//! memory and a 256-entry split ring, its uplink the in-memory port. TX drains 256 one-buffer
//! chains per round to the port; RX places 256 of the port's packets into 256 posted
//! mergeable buffers. TX runs twice: into the in-memory port (which the benchmark drains,
//! a copy per packet) and into the `discard:` uplink (nothing behind the device, as in
//! `knic-vhost-bench`'s discard pair). Prints ns per packet (best of 5 runs of 2 s budget
//! each).
//!
//! `cargo bench -p vhost-backend --bench queue_pair` (`KNIC_BENCH_ONLY=discard` for one row
//! pair: only the configurations whose name contains it)

#![allow(clippy::unwrap_used)] // a benchmark: any failure is a broken setup, reported by the panic

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use packet_ring::{MAX_FRAME_LEN, VirtioNetHdr, memory_port_pair};
use vhost_backend::features::{NetFeatures, OFFERED_FEATURES};
use vhost_backend::rx_filter::SharedRxFilter;
use vhost_backend::stats::QueuePairStats;
use vhost_backend::{QueuePair, QueuePairConfig};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

const RING: u16 = 256;
const BUFS: u64 = 0x10_0000;
const BUF: u64 = 2048;
const VRING_DESC_F_WRITE: u16 = 2;

struct Bench {
    mem: GuestMemoryMmap,
    q: Queue,
    avail_idx: GuestAddress,
    qp: QueuePair,
    peer: packet_ring::MemoryPeer,
    discard: bool,
}

fn bench(rx: bool, discard: bool, frame: usize) -> Bench {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
    let mock = MockSplitQueue::create(&mem, GuestAddress(0), RING);
    let descs: Vec<RawDescriptor> = (0..RING)
        .map(|i| {
            let addr = BUFS + u64::from(i) * BUF;
            if rx {
                RawDescriptor::from(Descriptor::new(addr, BUF as u32, VRING_DESC_F_WRITE, 0))
            } else {
                let len = (VirtioNetHdr::LEN + frame) as u32;
                RawDescriptor::from(Descriptor::new(addr, len, 0, 0))
            }
        })
        .collect();
    mock.add_desc_chains(&descs, 0).unwrap();
    let mut q: Queue = mock.create_queue().unwrap();
    // The mock lays its used ring over the avail ring's event field: give it its own place.
    q.set_used_ring_address(Some(0x8000), Some(0));
    let avail_idx = GuestAddress(q.avail_ring()).unchecked_add(2);
    // Nothing posted yet: each round posts the 256 chains, avail slot i naming head i.
    mem.write_obj(0u16, avail_idx).unwrap();
    for i in 0..RING {
        let slot = GuestAddress(q.avail_ring()).unchecked_add(4 + 2 * u64::from(i));
        mem.write_obj(i, slot).unwrap();
    }
    // Frame contents: a plain header, then an Ethernet frame of `frame` bytes.
    for i in 0..u64::from(RING) {
        mem.write_slice(
            &VirtioNetHdr::default().to_bytes(),
            GuestAddress(BUFS + i * BUF),
        )
        .unwrap();
    }
    let (port, peer) = memory_port_pair(4 * usize::from(RING), MAX_FRAME_LEN).unwrap();
    let uplink: Box<dyn packet_ring::PacketPort> = if discard {
        Box::new(knic_uplink::DiscardPort::open().unwrap())
    } else {
        Box::new(port)
    };
    let mut qp = QueuePair::new(
        QueuePairConfig {
            index: 0,
            batch: 32,
            mtu: 1500,
            max_queue_size: RING,
        },
        uplink,
        SharedRxFilter::new([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        Arc::new(QueuePairStats::default()),
    );
    qp.set_features(NetFeatures::from_acked(OFFERED_FEATURES));
    Bench {
        mem,
        q,
        avail_idx,
        qp,
        peer,
        discard,
    }
}

/// One round: 256 packets each way. Returns the packets moved.
fn round(b: &mut Bench, rx: bool, frame: &[u8]) -> usize {
    // The driver posts the same 256 chains again.
    let idx: u16 = b.mem.read_obj(b.avail_idx).unwrap();
    b.mem
        .write_obj(idx.wrapping_add(RING), b.avail_idx)
        .unwrap();
    if rx {
        for _ in 0..RING {
            assert!(b.peer.send(VirtioNetHdr::default(), frame).unwrap());
        }
        black_box(b.qp.process_rx(&mut b.q, &b.mem, true).unwrap());
        assert_eq!(b.qp.rx_pending(), 0);
    } else {
        black_box(b.qp.process_tx(&mut b.q, &b.mem, true).unwrap());
        if b.discard {
            assert_eq!(b.q.next_used(), idx.wrapping_add(RING));
            return usize::from(RING);
        }
        let got = b.peer.recv_with(usize::MAX, |p| {
            black_box(p.len());
        });
        assert_eq!(got, usize::from(RING), "{:?}", b.qp.stats().snapshot(0));
    }
    usize::from(RING)
}

fn measure(rx: bool, discard: bool, len: usize) -> f64 {
    let frame = vec![0x5au8; len];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let mut b = bench(rx, discard, len);
        let start = Instant::now();
        let mut packets = 0usize;
        while start.elapsed() < Duration::from_millis(2000) {
            packets += round(&mut b, rx, &frame);
        }
        best = best.min(start.elapsed().as_nanos() as f64 / packets as f64);
    }
    best
}

#[allow(clippy::print_stdout)] // a benchmark's report
fn main() {
    let only = std::env::var("KNIC_BENCH_ONLY").unwrap_or_default();
    for (rx, discard, name) in [
        (false, true, "tx discard"),
        (false, false, "tx memory"),
        (true, false, "rx memory"),
    ] {
        if !name.contains(only.as_str()) {
            continue;
        }
        for len in [64, 1500] {
            let ns = measure(rx, discard, len);
            println!(
                "{name:<10} {len:>4} B: {ns:7.1} ns/packet ({:.2} Mpps)",
                1e3 / ns
            );
        }
    }
}
