//! The fuzzing harness of one queue pair's data path ([`super::net_queue`]): guest memory,
//! the driver's TX and RX rings and the backend's packets all come from the input, the
//! device transmits and receives, and what it did is checked against what a driver may
//! rely on. Built for unit tests and with the `fuzzing` feature (the cargo-fuzz target
//! `lkl-netstack/fuzz`, `device_queues`); never in a production build.
//!
//! Checked for every input (a broken invariant panics, which the fuzzer reports):
//! - nothing panics, and nothing touches memory outside the guest regions: they sit
//!   between `PROT_NONE` guard pages, so a raw-pointer access past one faults;
//! - no chain leaks: every chain the device takes off a ring comes back used exactly once
//!   (an avail entry naming no head of the ring is counted, and has nothing to come back);
//! - every chain or frame is accounted for: TX chains as sent or under a [`DropReason`],
//!   RX frames the port handed over as delivered or under a `DropReason`.
//!
//! Checked when the driver's buffers overlap neither each other nor the rings (a hostile
//! driver may make them overlap, and then only the above can hold):
//! - a used length never exceeds the chain's device-writable bytes (0 for a TX chain);
//! - a frame reaches the port (TX) or the driver (RX) whole, in order, with a header that
//!   validates and only uses offloads negotiated that way; on RX, `num_buffers` is the
//!   number of used entries the frame spans (1 without MRG_RXBUF).
//!
//! Input layout (bytes past the end read as zero): features (u16, one bit per offload,
//! MRG_RXBUF and EVENT_IDX field of [`NetFeatures`]), ring sizes (u8: log2 of TX, RX), shape (u8: TX kicks, RX
//! rounds), the TX descriptor table and avail ring verbatim, a TX avail-index bump, the RX
//! descriptor table and avail ring, three RX avail-index bumps (one before each later
//! round), the packets for RX (count, then per packet its 12-byte header, a 24-bit length
//! and a content seed), and the rest as the contents of the buffer area.
#![allow(unsafe_code)]

use std::cell::RefCell;

use packet_ring::{GsoKind, MAX_FRAME_LEN, PacketPort, VirtioNetHdr, memory_port_pair};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap, MmapRegion,
};

use knic_virtio_net::audit::{self, overlaps, range};
use knic_virtio_net::{Counter, Direction, DropUnit};

use super::features::NetFeatures;
use super::net_queue::{
    DropReason, QUEUE_MAX, QueueCounters, RxPath, RxQueue, RxWait, RxWire, TxLimits, TxWire,
    transmit,
};

const PAGE: usize = 4096;
/// Guest regions (guest address, size), with gaps between them so chains that cross from
/// one to the next or fall in between are malformed: A holds the rings and buffers, B
/// buffers (room for a 64 KiB frame), C the harness's own scratch ring (see
/// [`chain_shapes`]), which the device may still be pointed at by a hostile descriptor.
const REGIONS: [(u64, usize); 3] = [(0, 0x1_0000), (0x10_0000, 0x2_0000), (0x20_0000, 0x2000)];
const SCRATCH: u64 = REGIONS[2].0;
/// Where the input's tail goes: the rest of region A, then region B.
const BUFFERS: u64 = 0x4000;
const HDR_LEN: usize = VirtioNetHdr::LEN;
/// Packets the RX port holds; more are refused (and not expected anywhere).
const PORT_SLOTS: usize = 16;
const MAX_PACKETS: u8 = 24;
const RX_BUMPS: usize = 3;

/// Where one queue's rings live in region A (each fits a ring of [`QUEUE_MAX`]).
#[derive(Debug, Clone, Copy)]
struct Rings {
    desc: u64,
    avail: u64,
    used: u64,
}

const TX_RINGS: Rings = Rings {
    desc: 0x0000,
    avail: 0x1000,
    used: 0x1400,
};
const RX_RINGS: Rings = Rings {
    desc: 0x2000,
    avail: 0x3000,
    used: 0x3400,
};

impl Rings {
    /// (start, length) of the descriptor table, avail ring and used ring (virtio 1.2 §2.7:
    /// flags, idx, the entries, then the event word).
    fn areas(&self, size: u16) -> [(u64, u64); 3] {
        let n = u64::from(size);
        [
            (self.desc, 16 * n),
            (self.avail, 6 + 2 * n),
            (self.used, 6 + 8 * n),
        ]
    }

    fn queue(&self, size: u16, event_idx: bool) -> Queue {
        let mut q = Queue::new(QUEUE_MAX).expect("QUEUE_MAX is a valid ring size");
        q.set_size(size);
        q.set_desc_table_address(Some(low(self.desc)), Some(0));
        q.set_avail_ring_address(Some(low(self.avail)), Some(0));
        q.set_used_ring_address(Some(low(self.used)), Some(0));
        q.set_event_idx(event_idx);
        q.set_ready(true);
        q
    }
}

fn low(addr: u64) -> u32 {
    u32::try_from(addr).expect("the harness's rings lie below 4 GiB")
}

/// Guest memory between guard pages: one `PROT_NONE` reservation, regions opened in it.
struct GuardedMemory {
    mem: GuestMemoryMmap,
    /// Owns the mapping the regions borrow; dropped after `mem`.
    _reservation: MmapRegion,
}

impl GuardedMemory {
    fn new() -> GuardedMemory {
        let total = REGIONS.iter().map(|r| r.1 + PAGE).sum::<usize>() + PAGE;
        let reservation = MmapRegion::<()>::build(
            None,
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
        .expect("reserve guest memory");
        let mut regions = Vec::new();
        let mut offset = PAGE;
        for (guest, size) in REGIONS {
            // SAFETY: [offset, offset + size) lies inside the reservation (total counts a
            // guard page before each region and one after the last).
            let addr = unsafe { reservation.as_ptr().add(offset) };
            let prot = libc::PROT_READ | libc::PROT_WRITE;
            // SAFETY: changes the protection of pages of our own reservation that nothing
            // else refers to yet; the guard pages around them stay PROT_NONE.
            let rc = unsafe { libc::mprotect(addr.cast(), size, prot) };
            assert_eq!(rc, 0, "mprotect guest region");
            // SAFETY: the pages are mapped read-write with these flags and stay mapped
            // while `_reservation` lives, which outlives `mem` (field order).
            let region = unsafe { MmapRegion::build_raw(addr, size, prot, libc::MAP_PRIVATE) }
                .expect("describe guest region");
            regions.push(GuestRegionMmap::new(region, GuestAddress(guest)).expect("region"));
            offset += size + PAGE;
        }
        GuardedMemory {
            mem: GuestMemoryMmap::from_regions(regions).expect("guest memory"),
            _reservation: reservation,
        }
    }

    fn zero(&self) {
        for (guest, size) in REGIONS {
            self.mem
                .write_slice(&vec![0; size], GuestAddress(guest))
                .expect("region in memory");
        }
    }
}

thread_local! {
    // One memory per thread (unit tests run in parallel), reused for every input.
    static MEMORY: RefCell<Option<GuardedMemory>> = const { RefCell::new(None) };
}

/// The input bytes, read front to back; past the end everything is zero.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u24(&mut self) -> usize {
        usize::from(self.u8()) | usize::from(self.u8()) << 8 | usize::from(self.u8()) << 16
    }
}

/// The input's feature bits, one per [`NetFeatures`] field the data path consults, on top
/// of VERSION_1 (which the device always offers and the driver always accepts).
fn features(bits: u16) -> NetFeatures {
    use knic_virtio_net::features::{
        F_CSUM, F_GUEST_CSUM, F_GUEST_ECN, F_GUEST_TSO4, F_GUEST_TSO6, F_HOST_ECN, F_HOST_TSO4,
        F_HOST_TSO6, F_MRG_RXBUF, F_RING_EVENT_IDX, F_VERSION_1,
    };
    let order = [
        F_MRG_RXBUF,
        F_RING_EVENT_IDX,
        F_CSUM,
        F_HOST_TSO4,
        F_HOST_TSO6,
        F_HOST_ECN,
        F_GUEST_CSUM,
        F_GUEST_TSO4,
        F_GUEST_TSO6,
        F_GUEST_ECN,
    ];
    let acked = order
        .iter()
        .enumerate()
        .filter(|(bit, _)| bits & (1 << bit) != 0)
        .fold(F_VERSION_1, |acked, (_, f)| acked | f);
    NetFeatures::from_acked(acked)
}

/// A packet's frame: `len` bytes derived from `seed`, so a check can regenerate it.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// A packet the port accepted for RX.
#[derive(Debug, Clone, Copy)]
struct Sent {
    hdr: VirtioNetHdr,
    len: usize,
    seed: u8,
}

/// What one input did, for unit tests to check the harness reached what it meant to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Frames the device sent to the port, and delivered to the driver.
    pub tx_sent: u64,
    pub rx_delivered: u64,
    /// Non-zero drop counters.
    pub drops: Vec<(DropReason, u64)>,
    /// Whether the buffers were disjoint, so the length and frame checks ran (both ways).
    pub tx_checked: bool,
    pub rx_checked: bool,
}

/// Runs one input through a queue pair's TX and RX paths and checks the invariants of the
/// module docs; panics when one is broken.
pub fn device_queues(data: &[u8]) -> Outcome {
    MEMORY.with(|cell| {
        let mut slot = cell.borrow_mut();
        let memory = slot.get_or_insert_with(GuardedMemory::new);
        memory.zero();
        run(&memory.mem, &mut Input(data))
    })
}

fn run(mem: &GuestMemoryMmap, input: &mut Input<'_>) -> Outcome {
    let f = features(input.u16());
    let sizes = input.u8();
    let tx_size = 1u16 << (sizes & 0xf).min(8);
    let rx_size = 1u16 << (sizes >> 4).min(8);
    let shape = input.u8();
    let tx_kicks = 1 + (shape & 1);
    let rx_rounds = 1 + usize::from((shape >> 1) & 3);

    write(mem, TX_RINGS.desc, input.bytes(16 * usize::from(tx_size)));
    write(
        mem,
        TX_RINGS.avail,
        input.bytes(6 + 2 * usize::from(tx_size)),
    );
    let tx_bump = input.u16();
    write(mem, RX_RINGS.desc, input.bytes(16 * usize::from(rx_size)));
    write(
        mem,
        RX_RINGS.avail,
        input.bytes(6 + 2 * usize::from(rx_size)),
    );
    let rx_bumps: [u16; RX_BUMPS] = std::array::from_fn(|_| u16::from(input.u8()));
    let packets: Vec<(VirtioNetHdr, usize, u8)> = (0..input.u8() % (MAX_PACKETS + 1))
        .map(|_| {
            let mut raw = [0u8; HDR_LEN];
            let got = input.bytes(HDR_LEN);
            raw[..got.len()].copy_from_slice(got);
            let hdr = VirtioNetHdr::parse(&raw).expect("12 bytes");
            (hdr, input.u24() % (MAX_FRAME_LEN + 16), input.u8())
        })
        .collect();
    let tail = input.bytes(usize::MAX);
    let in_a = tail.len().min(REGIONS[0].1 - BUFFERS as usize);
    write(mem, BUFFERS, &tail[..in_a]);
    let rest = &tail[in_a..];
    write(mem, REGIONS[1].0, &rest[..rest.len().min(REGIONS[1].1)]);

    // What each head's chain is before the device runs (see `chain_shapes`).
    let tx_chains = audit::chain_shapes(mem, TX_RINGS.desc, tx_size, SCRATCH);
    let rx_chains = audit::chain_shapes(mem, RX_RINGS.desc, rx_size, SCRATCH);

    let counters = QueueCounters::default();
    let (port, mut peer) = memory_port_pair(PORT_SLOTS, MAX_FRAME_LEN).expect("eventfds");
    let (sink, source) = (Box::new(port) as Box<dyn PacketPort>).split();
    let mut outcome = Outcome {
        tx_checked: true,
        ..Outcome::default()
    };

    // TX: the driver's chains to the port.
    let mut txq = TX_RINGS.queue(tx_size, f.event_idx);
    let mut wire = TxWire::port(sink);
    for kick in 0..tx_kicks {
        if kick > 0 {
            bump_avail(mem, TX_RINGS, tx_bump);
        }
        let before = txq.next_used();
        transmit(&mut txq, mem, &mut wire, &TxLimits::new(f, 1500), &counters);
        let mut received = Vec::new();
        peer.recv_with(usize::MAX, |p| received.push((p.hdr, p.frame().to_vec())));
        outcome.tx_checked &= check_tx(mem, &txq, before, &tx_chains, &received, f);
    }
    let tx_taken = txq.next_avail();
    let tx_entries = audit::avail_entries(mem, TX_RINGS.avail, tx_size);
    let tx_no_head = audit::entries_naming_no_head(&tx_entries, tx_taken);
    audit::assert_every_chain_used(Direction::Tx, tx_taken, tx_no_head, txq.next_used());
    let tx_sent = load(&counters.tx_packets);
    audit::assert_tx_chains_accounted(&counters, tx_taken, tx_sent, false);

    // RX: the port's packets into the driver's buffers.
    let mut sent = Vec::new();
    for (hdr, len, seed) in packets {
        if peer.send(hdr, &pattern(seed, len)).expect("eventfd") {
            sent.push(Sent { hdr, len, seed });
        }
    }
    let mut rxq = RX_RINGS.queue(rx_size, f.event_idx);
    // The avail entries as the device reads them, unless a buffer of the driver's lies over
    // its RX rings or indirect tables (then the device may write over what it reads).
    let rx_entries = audit::avail_entries(mem, RX_RINGS.avail, rx_size);
    let mut rx_sensitive = RX_RINGS.areas(rx_size)[..2].to_vec();
    rx_sensitive.extend(audit::indirect_tables(mem, RX_RINGS.desc, rx_size));
    let rx_rings_kept = !rx_chains
        .iter()
        .flatten()
        .filter(|d| d.is_write_only())
        .any(|d| rx_sensitive.iter().any(|&a| overlaps(range(d), a)));
    let mut path = RxPath::new(RxWire::port(source));
    let mut wait = RxWait::Ready;
    for round in 0..rx_rounds {
        if round > 0 {
            bump_avail(mem, RX_RINGS, rx_bumps[round - 1]);
        }
        wait = path
            .receive(RxQueue {
                queue: &mut rxq,
                mem,
                features: f,
                mtu: 1500,
                counters: &counters,
                keep_kicks: false,
            })
            .wait;
        let taken = rxq.next_avail();
        if rx_rings_kept {
            let no_head = audit::entries_naming_no_head(&rx_entries, taken);
            audit::assert_every_chain_used(Direction::Rx, taken, no_head, rxq.next_used());
        } else {
            assert!(rxq.next_used() <= taken, "more RX chains used than taken");
        }
    }
    let delivered = load(&counters.rx_packets);
    let frames_accounted = delivered + audit::drops_of(&counters, Direction::Rx, DropUnit::Frame);
    if wait == RxWait::Backend {
        // The port is empty and no frame waits for buffers.
        assert_eq!(
            frames_accounted,
            sent.len() as u64,
            "every frame delivered or counted as dropped"
        );
    } else {
        assert!(
            frames_accounted <= sent.len() as u64,
            "more frames than sent"
        );
    }
    assert_eq!(
        counters.drops(DropReason::TxUsedRingBroken) + counters.drops(DropReason::RxUsedRingBroken),
        0,
        "the rings are valid"
    );
    let no_rx_chain = u64::from(audit::entries_naming_no_head(&rx_entries, rxq.next_avail()));
    outcome.rx_checked = check_rx(mem, &rxq, &rx_chains, &sent, f, &counters, no_rx_chain);

    outcome.tx_sent = tx_sent;
    outcome.rx_delivered = delivered;
    outcome.drops = DropReason::ALL
        .iter()
        .map(|r| (*r, counters.drops(*r)))
        .filter(|d| d.1 > 0)
        .collect();
    outcome
}

fn load(counter: &Counter) -> u64 {
    counter.get()
}

fn write(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) {
    mem.write_slice(bytes, GuestAddress(addr))
        .expect("the harness writes inside its regions");
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    mem.read_slice(&mut buf, GuestAddress(addr))
        .expect("the harness reads inside its regions");
    buf
}

/// The driver posts `n` more chains (its avail index moves on).
fn bump_avail(mem: &GuestMemoryMmap, rings: Rings, n: u16) {
    let at = rings.avail + 2;
    let idx = u16::from_le_bytes(read(mem, at, 2).try_into().expect("2 bytes"));
    write(mem, at, &idx.wrapping_add(n).to_le_bytes());
}

/// The first `limit` bytes of the chain's buffers, when every buffer is in memory and
/// faces the wanted way; None otherwise.
fn chain_bytes(
    mem: &GuestMemoryMmap,
    chain: &[Descriptor],
    writable: bool,
    limit: usize,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for d in chain {
        // A zero-length buffer touches no memory: its address is not checked.
        let outside = d.len() > 0 && mem.get_slice(d.addr(), d.len() as usize).is_err();
        if d.is_write_only() != writable || outside {
            return None;
        }
        let take = (d.len() as usize).min(limit - out.len());
        out.extend_from_slice(&read(mem, d.addr().0, take));
    }
    Some(out)
}

/// Offloads a header may use given what the receiving side negotiated (virtio 1.2
/// §5.1.6.2 / §5.1.6.4: TSO4/6 and ECN by feature, UDP kinds never offered, NEEDS_CSUM
/// needs CSUM).
fn offloads_allowed(hdr: &VirtioNetHdr, tso4: bool, tso6: bool, ecn: bool, csum: bool) -> bool {
    let Ok((kind, with_ecn)) = hdr.gso() else {
        return false;
    };
    let kind_ok = match kind {
        GsoKind::None => !with_ecn,
        GsoKind::TcpV4 => tso4,
        GsoKind::TcpV6 => tso6,
        GsoKind::Udp | GsoKind::UdpL4 => false,
    };
    kind_ok && (!with_ecn || ecn) && (hdr.flags & VirtioNetHdr::F_NEEDS_CSUM == 0 || csum)
}

/// One TX kick's used entries and the packets the port got. Returns whether the checks
/// ran (no chain read from memory the kick wrote).
fn check_tx(
    mem: &GuestMemoryMmap,
    q: &Queue,
    before: u16,
    chains: &[Vec<Descriptor>],
    received: &[(VirtioNetHdr, Vec<u8>)],
    f: NetFeatures,
) -> bool {
    for (hdr, frame) in received {
        assert_eq!(hdr.validate(frame.len()), Ok(()), "TX header sent invalid");
        assert!(
            offloads_allowed(hdr, f.host_tso4, f.host_tso6, f.host_ecn, f.host_csum),
            "TX offload not negotiated reached the port: {hdr:?} {f:?}"
        );
    }
    let Some(used) = audit::used_entries(mem, q, before, q.next_used()) else {
        return false;
    };
    let used_ring = TX_RINGS.areas(q.size())[2];
    let indirect = audit::indirect_tables(mem, TX_RINGS.desc, q.size());
    let mut candidates = Vec::new();
    for &(id, len) in &used {
        let chain = chains.get(id as usize).expect("TX used id within the ring");
        assert_eq!(len, 0, "a TX chain is used with length 0");
        if chain
            .iter()
            .map(range)
            .chain(indirect.iter().copied())
            .any(|r| overlaps(r, used_ring))
        {
            return false; // the kick's used entries wrote over what it read
        }
        if let Some(bytes) = chain_bytes(mem, chain, false, usize::MAX)
            && let Ok(hdr) = VirtioNetHdr::parse(&bytes)
        {
            // num_buffers means nothing on transmit: the engine sends it as 0.
            let hdr = VirtioNetHdr {
                num_buffers: 0,
                ..hdr
            };
            candidates.push((hdr, bytes[HDR_LEN..].to_vec()));
        }
    }
    // The port got a subsequence of the chains, in order, each whole.
    let mut next = candidates.iter();
    for packet in received {
        assert!(
            next.any(|c| c == packet),
            "TX packet at the port is no chain's frame (or out of order): {:?}, {} bytes",
            packet.0,
            packet.1.len()
        );
    }
    true
}

/// The RX used ring against the frames the port was given. Returns whether the checks ran
/// (the frames' buffers overlap neither each other nor the rings, and no chain was used
/// twice).
fn check_rx(
    mem: &GuestMemoryMmap,
    q: &Queue,
    chains: &[Vec<Descriptor>],
    sent: &[Sent],
    f: NetFeatures,
    counters: &QueueCounters,
    no_chain: u64,
) -> bool {
    let Some(used) = audit::used_entries(mem, q, 0, q.next_used()) else {
        return false;
    };
    let mut heads: Vec<u32> = used.iter().map(|e| e.0).collect();
    heads.sort_unstable();
    if heads.windows(2).any(|w| w[0] == w[1]) {
        return false;
    }
    let mut fixed = RX_RINGS.areas(q.size()).to_vec();
    fixed.extend(audit::indirect_tables(mem, RX_RINGS.desc, q.size()));
    // An entry a buffer overwrote names no chain (or the wrong one); but the last buffer
    // to write over the used ring was used after its write, so its own entry is intact and
    // shows the overlap.
    if !audit::assert_used_within_writable(&used, chains, &fixed) {
        return false;
    }

    // Frames in used order: a first entry with the header (num_buffers entries in all); a
    // malformed chain is an entry of length 0 between frames.
    let (mut malformed, mut frames, mut bytes) = (0u64, 0u64, 0u64);
    let mut expected = sent.iter();
    let mut at = 0;
    while at < used.len() {
        let (id, len) = used[at];
        let chain = &chains[id as usize];
        if len == 0 {
            malformed += 1;
            at += 1;
            continue;
        }
        assert!(
            len as usize >= HDR_LEN,
            "a frame's first buffer holds its header"
        );
        let first = chain_bytes(mem, chain, true, HDR_LEN).expect("a used chain is valid");
        let hdr = VirtioNetHdr::parse(&first).expect("12 bytes");
        let spans = usize::from(hdr.num_buffers);
        assert!(
            spans >= 1 && (f.mrg_rxbuf || spans == 1),
            "num_buffers {spans} (MRG_RXBUF {})",
            f.mrg_rxbuf
        );
        let entries = used
            .get(at..at + spans)
            .expect("num_buffers used entries follow");
        let mut frame = Vec::new();
        for &(id, len) in entries {
            let part = chain_bytes(mem, &chains[id as usize], true, len as usize)
                .expect("a used chain is valid");
            frame.extend_from_slice(&part);
        }
        let frame = &frame[HDR_LEN..];
        assert_eq!(
            hdr.validate(frame.len()),
            Ok(()),
            "RX header delivered invalid"
        );
        assert!(
            offloads_allowed(&hdr, f.guest_tso4, f.guest_tso6, f.guest_ecn, f.guest_csum),
            "RX offload not negotiated reached the driver: {hdr:?} {f:?}"
        );
        let same = |s: &&Sent| {
            VirtioNetHdr {
                num_buffers: hdr.num_buffers,
                ..s.hdr
            } == hdr
                && s.len == frame.len()
                && pattern(s.seed, s.len) == frame
        };
        assert!(
            expected.any(|s| same(&s)),
            "RX frame is no sent frame, whole and in order: {hdr:?}, {} bytes",
            frame.len()
        );
        frames += 1;
        bytes += frame.len() as u64;
        at += spans;
    }
    assert_eq!(frames, load(&counters.rx_packets), "rx_packets");
    assert_eq!(bytes, load(&counters.rx_bytes), "rx_bytes");
    assert_eq!(
        malformed + no_chain,
        audit::drops_of(counters, Direction::Rx, DropUnit::Chain),
        "RX chains counted as malformed"
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const VRING_DESC_F_NEXT: u16 = 1;
    const VRING_DESC_F_WRITE: u16 = 2;

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        d
    }

    /// A ring's descriptor table and avail ring in the input's layout.
    fn ring(size: u16, descs: &[[u8; 16]], heads: &[u16]) -> Vec<u8> {
        let mut out = vec![0u8; 16 * usize::from(size)];
        for (i, d) in descs.iter().enumerate() {
            out[16 * i..16 * i + 16].copy_from_slice(d);
        }
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(heads.len() as u16).to_le_bytes());
        let mut entries = vec![0u16; usize::from(size)];
        entries[..heads.len()].copy_from_slice(heads);
        for h in entries {
            out.extend_from_slice(&h.to_le_bytes());
        }
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    /// An input: header, TX ring, RX ring, packets, then the buffer area's contents.
    struct Scenario {
        features: u16,
        tx_size_log2: u8,
        rx_size_log2: u8,
        tx: Vec<u8>,
        rx: Vec<u8>,
        packets: Vec<(VirtioNetHdr, usize, u8)>,
        buffers: Vec<u8>,
    }

    impl Scenario {
        fn bytes(&self) -> Vec<u8> {
            let mut out = self.features.to_le_bytes().to_vec();
            out.push(self.tx_size_log2 | self.rx_size_log2 << 4);
            out.push(0); // one TX kick, one RX round
            out.extend_from_slice(&self.tx);
            out.extend_from_slice(&[0, 0]); // TX bump
            out.extend_from_slice(&self.rx);
            out.extend_from_slice(&[0; RX_BUMPS]);
            out.push(self.packets.len() as u8);
            for (hdr, len, seed) in &self.packets {
                out.extend_from_slice(&hdr.to_bytes());
                out.extend_from_slice(&(*len as u32).to_le_bytes()[..3]);
                out.push(*seed);
            }
            out.extend_from_slice(&self.buffers);
            out
        }
    }

    fn tso4(len: usize) -> VirtioNetHdr {
        // num_buffers is any value: the device writes its own.
        let raw = [1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, len as u8, 0];
        VirtioNetHdr::parse(&raw).unwrap()
    }

    const RX_BUF: u32 = 0x2000;

    /// RX buffers over region B: 16 one-buffer chains (mergeable), or (big packets) two
    /// one-buffer chains and a chain of the other 14.
    fn rx_ring(mrg_rxbuf: bool) -> Vec<u8> {
        let base = REGIONS[1].0;
        let descs: Vec<_> = (0..16u16)
            .map(|i| {
                let next = if !mrg_rxbuf && (2..15).contains(&i) {
                    VRING_DESC_F_NEXT
                } else {
                    0
                };
                let addr = base + u64::from(i) * u64::from(RX_BUF);
                desc(addr, RX_BUF, VRING_DESC_F_WRITE | next, i + 1)
            })
            .collect();
        let heads: Vec<u16> = if mrg_rxbuf {
            (0..16).collect()
        } else {
            vec![0, 1, 2]
        };
        ring(16, &descs, &heads)
    }

    /// A well-formed driver: one TX chain (header buffer, then a 100-byte frame) and RX
    /// buffers for 64 KiB, with a small frame, a TSO frame and a 64 KiB TSO frame to
    /// receive.
    fn well_formed_input(features: u16) -> Vec<u8> {
        let tx = ring(
            4,
            &[
                desc(BUFFERS, HDR_LEN as u32, VRING_DESC_F_NEXT, 1),
                desc(BUFFERS + 0x100, 100, 0, 0),
            ],
            &[0],
        );
        let mrg_rxbuf = features & 1 != 0;
        let s = Scenario {
            features,
            tx_size_log2: 2,
            rx_size_log2: 4,
            tx,
            rx: rx_ring(mrg_rxbuf),
            packets: vec![
                (VirtioNetHdr::default(), 60, 1),
                (tso4(3000), 3000, 2),
                (tso4(65_000), 65_000, 3),
            ],
            buffers: [vec![0; 0x100], pattern(9, 100)].concat(), // a plain header, a frame
        };
        s.bytes()
    }

    /// The well-formed driver under a feature set.
    fn well_formed(features: u16) -> Outcome {
        let out = device_queues(&well_formed_input(features));
        assert!(out.tx_checked && out.rx_checked, "{out:?}");
        out
    }

    const MRG: u16 = 1;
    const EVENT_IDX: u16 = 2;
    const OFFLOADS: u16 = 0x3fc; // CSUM, TSO4/6, ECN both ways

    #[test]
    fn a_well_formed_driver_gets_every_frame_under_each_feature_set() {
        for extra in [0, EVENT_IDX] {
            for mrg in [0, MRG] {
                let out = well_formed(mrg | extra | OFFLOADS);
                assert_eq!((out.tx_sent, out.rx_delivered), (1, 3), "{out:?}");
                assert_eq!(out.drops, vec![]);
            }
        }
    }

    #[test]
    fn offloads_not_negotiated_are_dropped_and_counted() {
        let out = well_formed(MRG);
        assert_eq!((out.tx_sent, out.rx_delivered), (1, 1), "{out:?}");
        assert_eq!(out.drops, vec![(DropReason::RxOffloadNotNegotiated, 2)]);
    }

    /// The fuzz target's seed corpus (`lkl-netstack/fuzz/seeds/device_queues`) is the
    /// well-formed driver under each feature set, so fuzzing starts from inputs that reach
    /// the deep paths. `KNIC_WRITE_FUZZ_SEEDS=1` rewrites them after a format change.
    #[test]
    fn the_fuzz_seeds_are_the_well_formed_driver() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/device_queues");
        let sets = [
            ("plain", 0),
            ("offloads", OFFLOADS),
            ("mrg_rxbuf", MRG),
            ("mrg_rxbuf_event_idx_offloads", MRG | EVENT_IDX | OFFLOADS),
        ];
        for (name, features) in sets {
            let bytes = well_formed_input(features);
            let path = dir.join(name);
            if std::env::var_os("KNIC_WRITE_FUZZ_SEEDS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let seed = std::fs::read(&path).unwrap_or_default();
            assert!(
                seed == bytes,
                "seed {name} is stale: KNIC_WRITE_FUZZ_SEEDS=1 cargo test"
            );
        }
    }

    #[test]
    fn guard_pages_surround_each_region() {
        MEMORY.with(|cell| {
            let mut slot = cell.borrow_mut();
            let m = slot.get_or_insert_with(GuardedMemory::new);
            let a = m.mem.get_host_address(GuestAddress(REGIONS[0].0)).unwrap();
            let b = m.mem.get_host_address(GuestAddress(REGIONS[1].0)).unwrap();
            assert_eq!(
                b as usize - a as usize,
                REGIONS[0].1 + PAGE,
                "one page apart"
            );
            assert!(
                m.mem
                    .get_slice(GuestAddress(REGIONS[0].1 as u64 - 1), 2)
                    .is_err()
            );
        });
    }

    #[test]
    fn a_zero_length_buffer_outside_memory_costs_nothing() {
        // Found by the device_queues fuzz target after the port path moved to the engine's
        // read_chain: such a buffer touches no memory, and the TAP path (chain_iovecs) and
        // the harness had refused it while read_chain sent the frame.
        let tx = ring(
            4,
            &[
                desc(0x100_0000_4000, 0, VRING_DESC_F_NEXT, 1),
                desc(BUFFERS + 0x100, HDR_LEN as u32 + 100, 0, 0),
            ],
            &[0],
        );
        let s = Scenario {
            features: 0,
            tx_size_log2: 2,
            rx_size_log2: 0,
            tx,
            rx: ring(1, &[], &[]),
            packets: vec![],
            buffers: [vec![0; 0x100 + HDR_LEN], pattern(9, 100)].concat(), // plain header
        };
        let out = device_queues(&s.bytes());
        assert!(out.tx_checked, "{out:?}");
        assert_eq!((out.tx_sent, out.drops), (1, vec![]));
    }

    #[test]
    fn empty_and_random_inputs_pass() {
        device_queues(&[]);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for start in (0..2048).step_by(97) {
            device_queues(&bytes[start..]);
        }
    }
}
