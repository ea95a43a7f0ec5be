//! The seam between a vhost-user port's queue pair and the library kernel's device: two
//! [`PacketPort`](packet_ring::PacketPort)s joined back to back, one per side, that move packets by swapping buffers.
//!
//! A port's frames no longer cross the seam: the vhost worker copies them straight into the
//! kernel's RX buffers (`lkl_netstack::DirectRx`) and straight out of its TX buffers
//! (`lkl_netstack::DirectTx`, the crate docs' "Copies per frame"), so both directions stay
//! empty. The seam is still each queue pair's uplink for the guest's life (below), and a
//! whole port for the library device (whose receiving half it still is).
//!
//! Each direction is a pair of single-producer single-consumer rings of owned [`Packet`]s
//! (`packet_ring::spsc`): a data ring of filled packets and a free ring returning their
//! buffers, all allocated once when the seam is made ([`SEAM_PACKETS`] buffers of
//! [`MAX_FRAME_LEN`] bytes per direction). Neither side copies: sending with
//! [`PacketSink::send_swap`] (what the vhost worker and the library device call) moves the
//! sender's filled buffer onto the data ring and leaves a free seam buffer in its batch slot;
//! receiving swaps the filled buffer with the receiver's batch slot, and the slot's old
//! buffer goes back on the free ring. So the number of buffers each party holds never
//! changes, and a frame crosses the seam without a copy. Plain [`PacketSink::send`] (a
//! borrowed batch) still copies into a free buffer, as does a sender's slot smaller than a
//! seam buffer (it could not hold every later frame).
//!
//! Counters: every frame copied into the seam bumps the direction's `copies` counter, every
//! frame whose buffer the seam took its `taken` counter, every frame handed over by a swap
//! its `swaps` counter ([`SeamStats`]); the agent's stats add the two copies the endpoints
//! make (the vhost worker between guest memory and its batch, the library device between
//! its batch and the kernel's RAM) to report copies per frame.
//!
//! Backpressure: a sender asks [`PacketSink::room`] (the buffers on its free ring) before it
//! takes frames from its own queue, and takes no more than that, so a receiver that is
//! behind makes the sender wait rather than drop. The vhost worker leaves the guest's TX
//! chains in the guest's ring; the library device leaves the kernel's in its TX ring, whose
//! driver then stops the interface's queue (`netif_tx_stop_queue` in `virtio_net`'s
//! `check_sq_full_and_disable`) as for a full NIC ring. A `room` of 0 arms the direction's
//! [`RoomSignal`]: the sender raises a flag and sleeps on the room eventfd; the receiver,
//! once per receive call (not per frame), sees the flag and writes the eventfd when a
//! quarter of the buffers are free again or it drained everything, so wakeups come in
//! batches. Each wait counts as a `stalls` (not a drop). A frame offered regardless to a
//! full seam is still refused and counted as `full`; the sender counts its own drop (the
//! vhost worker's `tx_backend_refused`).
//!
//! The vhost side also reports its guest's life: the queue pair tells its uplink when its
//! receive ring can take packets (`set_attached`, on ring start and on device reset) and
//! what the guest negotiated (`set_guest_offloads`). Those land in [`GuestLink`], which wakes
//! the agent's control loop through an eventfd so it can turn the library device's link on
//! or off.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use packet_ring::spsc::{Consumer, Producer, ring};
use packet_ring::{
    GuestOffloads, MAX_FRAME_LEN, Packet, PacketBatch, PacketSink, PacketSource, PortError,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Buffers in flight per direction of one queue pair: a few vhost batches' worth, so a burst
/// from one side does not drop while the other side's thread is scheduled out. 256 × 64 KiB
/// = 16 MiB per direction and queue pair, allocated once.
pub const SEAM_PACKETS: usize = 256;

/// Counters of one direction of a seam.
#[derive(Debug, Default)]
pub struct DirectionCounters {
    /// Frames copied into the seam (sent with `PacketSink::send`, or from a sender's
    /// buffer too small to circulate).
    pub copies: AtomicU64,
    /// Frames whose buffer the seam took from the sender in exchange for a free one
    /// (`PacketSink::send_swap`: no copy).
    pub taken: AtomicU64,
    /// Frames handed to the receiver by swapping buffers (no copy).
    pub swaps: AtomicU64,
    /// Frames the sender offered while every buffer was in flight (the receiver is behind).
    pub full: AtomicU64,
    /// Frames refused because they were empty or larger than a seam buffer.
    pub refused: AtomicU64,
    /// Frames thrown away because the guest's ring could not take them (no frontend).
    pub flushed: AtomicU64,
    /// Times the sender found no free buffer and waited for the receiver to drain
    /// (backpressure: nothing is lost).
    pub stalls: AtomicU64,
    /// Times the receiver woke a waiting sender.
    pub room_wakeups: AtomicU64,
}

/// A copy of [`DirectionCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectionSnapshot {
    pub copies: u64,
    pub taken: u64,
    pub swaps: u64,
    pub full: u64,
    pub refused: u64,
    pub flushed: u64,
    #[serde(default)]
    pub stalls: u64,
    #[serde(default)]
    pub room_wakeups: u64,
}

impl DirectionCounters {
    fn snapshot(&self) -> DirectionSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DirectionSnapshot {
            copies: get(&self.copies),
            taken: get(&self.taken),
            swaps: get(&self.swaps),
            full: get(&self.full),
            refused: get(&self.refused),
            flushed: get(&self.flushed),
            stalls: get(&self.stalls),
            room_wakeups: get(&self.room_wakeups),
        }
    }
}

/// Counters of a seam, both directions.
#[derive(Debug, Default)]
pub struct SeamStats {
    /// Guest to library: the vhost side sends, the library device receives.
    pub to_stack: DirectionCounters,
    /// Library to guest.
    pub to_guest: DirectionCounters,
}

/// A copy of [`SeamStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeamSnapshot {
    pub to_stack: DirectionSnapshot,
    pub to_guest: DirectionSnapshot,
}

impl SeamStats {
    pub fn snapshot(&self) -> SeamSnapshot {
        SeamSnapshot {
            to_stack: self.to_stack.snapshot(),
            to_guest: self.to_guest.snapshot(),
        }
    }
}

/// What the vhost side last heard from its guest, per queue pair, read by the control loop.
#[derive(Debug)]
pub struct GuestLink {
    /// Per queue pair: its receive ring can take packets (a frontend is connected and the
    /// ring started).
    attached: Box<[AtomicBool]>,
    /// Per queue pair: the offloads the guest accepts, as [`offload_bits`].
    offloads: Box<[AtomicU8]>,
    /// Written on every change, so the control loop looks.
    changed: Arc<EventFd>,
}

const OFF_CSUM: u8 = 1;
const OFF_TSO4: u8 = 2;
const OFF_TSO6: u8 = 4;
const OFF_ECN: u8 = 8;

fn offload_bits(o: GuestOffloads) -> u8 {
    (if o.csum { OFF_CSUM } else { 0 })
        | (if o.tso4 { OFF_TSO4 } else { 0 })
        | (if o.tso6 { OFF_TSO6 } else { 0 })
        | (if o.ecn { OFF_ECN } else { 0 })
}

impl GuestLink {
    pub fn new(queue_pairs: usize, changed: Arc<EventFd>) -> Arc<GuestLink> {
        Arc::new(GuestLink {
            attached: (0..queue_pairs).map(|_| AtomicBool::new(false)).collect(),
            offloads: (0..queue_pairs).map(|_| AtomicU8::new(0)).collect(),
            changed,
        })
    }

    /// Whether any queue pair of the guest can receive: the port's link is up.
    pub fn up(&self) -> bool {
        self.attached.iter().any(|a| a.load(Ordering::SeqCst))
    }

    /// What the guest accepts on queue pair 0 (all pairs negotiate the same features).
    pub fn offloads(&self) -> GuestOffloads {
        let b = self
            .offloads
            .first()
            .map_or(0, |o| o.load(Ordering::SeqCst));
        GuestOffloads {
            csum: b & OFF_CSUM != 0,
            tso4: b & OFF_TSO4 != 0,
            tso6: b & OFF_TSO6 != 0,
            ecn: b & OFF_ECN != 0,
        }
    }

    fn notify(&self) {
        // A full counter (2^64 - 1 writes unread) is the only failure; the loop is awake.
        let _ = self.changed.write(1);
    }
}

/// Free buffers at which a receiver wakes a sender waiting for room: a quarter of the
/// seam, so the sender comes back to a batch's worth, not to one buffer at a time.
const ROOM_LOW_WATER: usize = SEAM_PACKETS / 4;

/// How the receiver of one direction wakes its sender when buffers return: the sender
/// raises `wanted` and sleeps on `fd`; the receiver clears `wanted` and writes `fd`.
#[derive(Debug)]
pub struct RoomSignal {
    wanted: AtomicBool,
    fd: EventFd,
}

impl RoomSignal {
    fn new() -> std::io::Result<Arc<RoomSignal>> {
        Ok(Arc::new(RoomSignal {
            wanted: AtomicBool::new(false),
            fd: EventFd::new(EFD_NONBLOCK)?,
        }))
    }

    /// The sender found no free buffer: asks to be woken, then looks again (the receiver may
    /// have returned buffers between the look and the flag). Returns the free buffers now.
    fn arm(&self, free: &mut Consumer<Packet>) -> usize {
        // Reset readiness first, so only a wakeup after this arm makes the fd readable.
        let _ = self.fd.read();
        self.wanted.store(true, Ordering::SeqCst);
        // Orders the flag's store before the free ring's load; pairs with the fence in
        // `wake`, so either the receiver sees the flag or the sender sees the buffers.
        std::sync::atomic::fence(Ordering::SeqCst);
        let n = free.len();
        if n > 0 {
            // Not waiting after all; a wakeup already sent is a harmless extra look.
            self.wanted.store(false, Ordering::Relaxed);
        }
        n
    }

    /// The receiver returned buffers (`free_now` of them are on the free ring, and its data
    /// ring is `drained` or not): wakes a waiting sender once there is a batch's worth. One
    /// fence per receive call, a syscall only per wakeup.
    fn wake(&self, free_now: usize, drained: bool, counters: &DirectionCounters) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if (free_now >= ROOM_LOW_WATER || drained)
            && self.wanted.load(Ordering::Relaxed)
            && self.wanted.swap(false, Ordering::AcqRel)
        {
            // A full counter (2^64 - 1 wakeups unread) is the only failure: the sender is
            // awake already.
            let _ = self.fd.write(1);
            counters.room_wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One direction's rings, all buffers allocated now and on the free ring.
fn direction(
    counters: &Arc<SeamStats>,
    to_guest: bool,
    receiver_ready: &Arc<EventFd>,
    room: &Arc<RoomSignal>,
) -> (SeamSink, Consumer<Packet>, Producer<Packet>) {
    let (data_tx, data_rx) = ring(SEAM_PACKETS);
    let (mut free_tx, free_rx) = ring(SEAM_PACKETS);
    let mut left = free_tx.capacity();
    free_tx.push_batch(usize::MAX, || {
        left = left.checked_sub(1)?;
        Some(Packet::with_capacity(MAX_FRAME_LEN))
    });
    let sink = SeamSink {
        data: data_tx,
        free: free_rx,
        peer_ready: Arc::clone(receiver_ready),
        room: Arc::clone(room),
        counters: Arc::clone(counters),
        to_guest,
    };
    (sink, data_rx, free_tx)
}

/// The sending half of one side: copies each frame into a free seam buffer and publishes
/// the batch at once.
#[derive(Debug)]
pub struct SeamSink {
    data: Producer<Packet>,
    free: Consumer<Packet>,
    peer_ready: Arc<EventFd>,
    /// Where the receiver says that buffers came back.
    room: Arc<RoomSignal>,
    counters: Arc<SeamStats>,
    /// Counts in `to_guest` (library side) or `to_stack` (vhost side).
    to_guest: bool,
}

/// The receiving half of one side: swaps published buffers into the caller's batch.
#[derive(Debug)]
pub struct SeamSource {
    data: Consumer<Packet>,
    free: Producer<Packet>,
    ready: Arc<EventFd>,
    /// Wakes this direction's sender when it waits for buffers.
    room: Arc<RoomSignal>,
    counters: Arc<SeamStats>,
    to_guest: bool,
    /// The vhost side only: where guest life events go, and for which queue pair.
    guest: Option<(usize, Arc<GuestLink>)>,
}

/// One side of a seam: a whole [`packet_ring::PacketPort`].
#[derive(Debug)]
pub struct SeamPort {
    sink: SeamSink,
    source: SeamSource,
}

packet_ring::port_from_halves!(SeamPort);

/// Makes a seam for queue pair `pair`: `(guest side, library side)`. The guest side is the
/// vhost queue pair's uplink, the library side the device's port; `guest` receives the vhost
/// side's life events.
pub fn seam(
    pair: usize,
    stats: &Arc<SeamStats>,
    guest: Arc<GuestLink>,
) -> std::io::Result<(SeamPort, SeamPort)> {
    let guest_ready = Arc::new(EventFd::new(EFD_NONBLOCK)?);
    let stack_ready = Arc::new(EventFd::new(EFD_NONBLOCK)?);
    let stack_room = RoomSignal::new()?;
    let guest_room = RoomSignal::new()?;
    let (to_stack, stack_data, stack_free) = direction(stats, false, &stack_ready, &stack_room);
    let (to_guest, guest_data, guest_free) = direction(stats, true, &guest_ready, &guest_room);
    let guest_side = SeamPort {
        sink: to_stack,
        source: SeamSource {
            data: guest_data,
            free: guest_free,
            ready: guest_ready,
            room: guest_room,
            counters: Arc::clone(stats),
            to_guest: true,
            guest: Some((pair, guest)),
        },
    };
    let stack_side = SeamPort {
        sink: to_guest,
        source: SeamSource {
            data: stack_data,
            free: stack_free,
            ready: stack_ready,
            room: stack_room,
            counters: Arc::clone(stats),
            to_guest: false,
            guest: None,
        },
    };
    Ok((guest_side, stack_side))
}

fn dir(stats: &SeamStats, to_guest: bool) -> &DirectionCounters {
    if to_guest {
        &stats.to_guest
    } else {
        &stats.to_stack
    }
}

/// What one send did with one frame.
enum Put {
    Copied,
    Taken,
    Refused,
}

/// Copies `src` into the free seam buffer `pkt` (which cannot fail: every seam buffer holds
/// [`MAX_FRAME_LEN`] bytes, and a frame larger than that is not carried).
fn copy_into(pkt: &mut Packet, src: &Packet) -> Put {
    if pkt.copy_from(src) {
        Put::Copied
    } else {
        pkt.set_len(0);
        Put::Refused
    }
}

/// Whether the seam carries `pkt` at all: not empty, not larger than a seam buffer.
fn carried(pkt: &Packet) -> bool {
    !pkt.is_empty() && pkt.len() <= MAX_FRAME_LEN
}

impl SeamSink {
    /// Publishes the frames of `src` (`offered` of them) in one batch, `put` filling a free
    /// seam buffer from each; counts what was done and wakes the receiver if anything was
    /// published.
    fn publish<T: std::ops::Deref<Target = Packet>>(
        &mut self,
        offered: usize,
        mut src: impl Iterator<Item = T>,
        mut put: impl FnMut(T, &mut Packet) -> Put,
    ) -> Result<usize, PortError> {
        let (mut copied, mut taken, mut refused) = (0u64, 0u64, 0u64);
        let free = &mut self.free;
        self.data.push_batch(offered, || {
            loop {
                let frame = src.next()?;
                if !carried(&frame) {
                    refused += 1;
                    continue;
                }
                let mut pkt = free.pop()?;
                match put(frame, &mut pkt) {
                    Put::Copied => copied += 1,
                    Put::Taken => taken += 1,
                    Put::Refused => refused += 1,
                }
                return Some(pkt);
            }
        });
        let counters = dir(&self.counters, self.to_guest);
        counters.copies.fetch_add(copied, Ordering::Relaxed);
        counters.taken.fetch_add(taken, Ordering::Relaxed);
        counters.refused.fetch_add(refused, Ordering::Relaxed);
        let sent = copied + taken;
        let full = (offered as u64).saturating_sub(sent + refused);
        counters.full.fetch_add(full, Ordering::Relaxed);
        if sent > 0 {
            self.peer_ready.write(1).map_err(PortError::Send)?;
        }
        Ok(sent as usize)
    }
}

impl PacketSink for SeamSink {
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        self.publish(batch.len(), batch.packets().iter(), |src, pkt| {
            copy_into(pkt, src)
        })
    }

    /// The swap: each frame's buffer moves into the seam as it is, and a free seam buffer
    /// (empty, [`MAX_FRAME_LEN`] bytes) takes its place in the sender's batch, so nothing
    /// is copied. A slot smaller than a seam buffer is copied instead, so every buffer
    /// circulating in the seam stays large enough for any frame.
    fn send_swap(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        let offered = batch.len();
        self.publish(offered, batch.packets_mut().iter_mut(), |slot, pkt| {
            if slot.capacity() >= MAX_FRAME_LEN {
                std::mem::swap(slot, pkt);
                Put::Taken
            } else {
                copy_into(pkt, slot)
            }
        })
    }

    /// The free seam buffers: a send of that many frames is taken whole. 0 arms the room
    /// signal and counts a stall.
    fn room(&mut self) -> usize {
        let n = self.free.len();
        if n > 0 {
            return n;
        }
        let n = self.room.arm(&mut self.free);
        if n == 0 {
            dir(&self.counters, self.to_guest)
                .stalls
                .fetch_add(1, Ordering::Relaxed);
        }
        n
    }

    fn room_fd(&self) -> Option<RawFd> {
        Some(self.room.fd.as_raw_fd())
    }
}

impl SeamSource {
    /// Returns every waiting buffer to the free ring unread.
    fn flush(&mut self) -> u64 {
        let free = &mut self.free;
        let mut flushed = 0;
        // One ring's worth: a sender still publishing cannot keep this loop going.
        self.data.pop_batch(SEAM_PACKETS, |pkt| {
            if !pkt.is_empty() {
                flushed += 1;
            }
            let _ = free.push(pkt);
        });
        self.wake_sender();
        flushed
    }

    /// Wakes this direction's sender if it waits for buffers and enough came back.
    fn wake_sender(&mut self) {
        let free_now = self.free.capacity() - self.free.free();
        let drained = self.data.is_empty();
        self.room
            .wake(free_now, drained, dir(&self.counters, self.to_guest));
    }
}

impl PacketSource for SeamSource {
    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        // Reset readiness before looking, so a packet published after the look re-arms it.
        if let Err(e) = self.ready.read()
            && e.kind() != std::io::ErrorKind::WouldBlock
        {
            return Err(PortError::Recv(e));
        }
        let mut got = 0usize;
        let free = &mut self.free;
        loop {
            let room = batch.capacity() - batch.len();
            if room == 0 {
                break;
            }
            let popped = self.data.pop_batch(room, |mut pkt| {
                if !pkt.is_empty()
                    && let Some(slot) = batch.next_slot()
                {
                    // The swap: the filled seam buffer becomes the batch's slot, and the
                    // slot's old buffer (same capacity) circulates in the seam instead.
                    std::mem::swap(slot, &mut pkt);
                    batch.commit();
                    got += 1;
                }
                pkt.set_len(0);
                // The free ring has room for every buffer of the seam.
                let _ = free.push(pkt);
            });
            if popped == 0 {
                break;
            }
        }
        dir(&self.counters, self.to_guest)
            .swaps
            .fetch_add(got as u64, Ordering::Relaxed);
        self.wake_sender();
        Ok(got)
    }

    fn ready_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }

    fn set_guest_offloads(&mut self, offloads: GuestOffloads) -> Result<(), PortError> {
        if let Some((pair, guest)) = &self.guest
            && let Some(slot) = guest.offloads.get(*pair)
        {
            slot.store(offload_bits(offloads), Ordering::SeqCst);
            guest.notify();
        }
        Ok(())
    }

    fn set_attached(&mut self, attached: bool) -> Result<(), PortError> {
        if let Some((pair, guest)) = self.guest.clone() {
            if !attached {
                // The guest's ring is gone: what the library sent meanwhile would reach
                // the next frontend stale.
                let flushed = self.flush();
                dir(&self.counters, true)
                    .flushed
                    .fetch_add(flushed, Ordering::Relaxed);
            }
            if let Some(slot) = guest.attached.get(pair) {
                slot.store(attached, Ordering::SeqCst);
            }
            guest.notify();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet_ring::{PacketPort, VirtioNetHdr};

    fn pair() -> (
        SeamPort,
        SeamPort,
        Arc<SeamStats>,
        Arc<GuestLink>,
        Arc<EventFd>,
    ) {
        let changed = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let guest = GuestLink::new(1, Arc::clone(&changed));
        let stats = Arc::new(SeamStats::default());
        let (g, s) = seam(0, &stats, Arc::clone(&guest)).unwrap();
        (g, s, stats, guest, changed)
    }

    fn frames(n: usize, len: usize) -> PacketBatch {
        let mut b = PacketBatch::new(n, MAX_FRAME_LEN);
        for i in 0..n {
            let hdr = VirtioNetHdr {
                gso_type: VirtioNetHdr::GSO_TCPV4,
                gso_size: 1448,
                ..Default::default()
            };
            assert!(b.push(hdr, &vec![i as u8; len]));
        }
        b
    }

    #[test]
    fn each_direction_copies_once_and_swaps_on_receive() {
        let (mut g, mut s, stats, _, _) = pair();
        // Guest to library: a 64 KiB GSO frame and small ones, metadata intact.
        let out = frames(3, 65_000);
        assert_eq!(g.send(&out).unwrap(), 3);
        let mut inb = PacketBatch::new(8, MAX_FRAME_LEN);
        assert_eq!(s.recv(&mut inb).unwrap(), 3);
        assert_eq!(inb.packets()[2].frame(), out.packets()[2].frame());
        assert_eq!(inb.packets()[0].hdr.gso_size, 1448);
        assert_eq!(s.recv(&mut inb).unwrap(), 0, "nothing more");
        // Library to guest.
        assert_eq!(s.send(&frames(2, 60)).unwrap(), 2);
        let mut inb = PacketBatch::new(1, MAX_FRAME_LEN);
        assert_eq!(g.recv(&mut inb).unwrap(), 1, "as many as the batch holds");
        inb.clear();
        assert_eq!(g.recv(&mut inb).unwrap(), 1);
        let snap = stats.snapshot();
        assert_eq!(snap.to_stack.copies, 3);
        assert_eq!(snap.to_stack.taken, 0, "a borrowed batch is copied");
        assert_eq!(snap.to_stack.swaps, 3);
        assert_eq!(snap.to_guest.copies, 2);
        assert_eq!(snap.to_guest.swaps, 2);
    }

    #[test]
    fn send_swap_takes_the_senders_buffers_and_copies_nothing() {
        let (mut g, mut s, stats, _, _) = pair();
        // Guest to library, both ends swapping: the frames arrive whole, metadata intact,
        // and no counter says "copied".
        let mut out = frames(3, 65_000);
        let want: Vec<Vec<u8>> = out.packets().iter().map(|p| p.frame().to_vec()).collect();
        assert_eq!(g.send_swap(&mut out).unwrap(), 3);
        for p in out.packets() {
            assert!(p.is_empty(), "a free seam buffer took the frame's place");
            assert_eq!(p.capacity(), MAX_FRAME_LEN);
        }
        let mut inb = PacketBatch::new(8, MAX_FRAME_LEN);
        assert_eq!(s.recv(&mut inb).unwrap(), 3);
        for (got, want) in inb.packets().iter().zip(&want) {
            assert_eq!(got.frame(), &want[..]);
            assert_eq!(got.hdr.gso_size, 1448);
        }
        // Library to guest the same way.
        let mut back = frames(2, 60);
        assert_eq!(s.send_swap(&mut back).unwrap(), 2);
        let mut inb = PacketBatch::new(8, MAX_FRAME_LEN);
        assert_eq!(g.recv(&mut inb).unwrap(), 2);
        assert_eq!(inb.packets()[1].frame(), &[1u8; 60][..]);
        let snap = stats.snapshot();
        assert_eq!(
            (
                snap.to_stack.copies,
                snap.to_stack.taken,
                snap.to_stack.swaps
            ),
            (0, 3, 3)
        );
        assert_eq!(
            (
                snap.to_guest.copies,
                snap.to_guest.taken,
                snap.to_guest.swaps
            ),
            (0, 2, 2)
        );
    }

    #[test]
    fn send_swap_copies_from_small_slots_so_every_seam_buffer_stays_full_size() {
        let (mut g, mut s, stats, _, _) = pair();
        let mut small = PacketBatch::new(2, 2048);
        assert!(small.push(VirtioNetHdr::default(), &[7; 100]));
        assert!(small.push(VirtioNetHdr::default(), &[]));
        assert_eq!(g.send_swap(&mut small).unwrap(), 1);
        assert_eq!(
            small.packets()[0].capacity(),
            2048,
            "the slot kept its buffer"
        );
        let snap = stats.snapshot().to_stack;
        assert_eq!((snap.copies, snap.taken, snap.refused), (1, 0, 1));
        // Round after round of full-size swaps, every buffer the seam hands the sender in
        // exchange (its free ring's, refilled by the receiver's slots) still holds the
        // largest frame.
        for round in 0..3 {
            let mut out = frames(SEAM_PACKETS, 10);
            let taken = g.send_swap(&mut out).unwrap();
            assert_eq!(taken, SEAM_PACKETS - usize::from(round == 0));
            assert!(
                out.packets()[..taken]
                    .iter()
                    .all(|p| p.is_empty() && p.capacity() == MAX_FRAME_LEN)
            );
            let mut inb = PacketBatch::new(SEAM_PACKETS, MAX_FRAME_LEN);
            assert_eq!(s.recv(&mut inb).unwrap(), SEAM_PACKETS);
        }
    }

    #[test]
    fn buffers_circulate_and_a_full_seam_refuses_without_loss_of_buffers() {
        let (mut g, mut s, stats, _, _) = pair();
        let burst = frames(64, 100);
        let mut sent = 0;
        for _ in 0..8 {
            sent += g.send(&burst).unwrap();
        }
        assert_eq!(
            sent, SEAM_PACKETS,
            "every buffer in flight, the rest refused"
        );
        assert_eq!(
            stats.snapshot().to_stack.full,
            (8 * 64 - SEAM_PACKETS) as u64
        );
        // The receiver keeps swapping its own buffers in, so the count stays constant:
        // after draining, the sender has every buffer again, round after round.
        for _ in 0..10 {
            let mut inb = PacketBatch::new(SEAM_PACKETS, MAX_FRAME_LEN);
            assert_eq!(s.recv(&mut inb).unwrap(), SEAM_PACKETS);
            let mut again = 0;
            for _ in 0..4 {
                again += g.send(&burst).unwrap();
            }
            assert_eq!(again, SEAM_PACKETS);
        }
    }

    /// Waits (up to 5 s, so a missed wakeup fails rather than hangs) for `fd` to be readable.
    fn wait_readable(fd: RawFd) -> bool {
        test_support::poll_readable(fd, 5000)
    }

    /// Backpressure across threads: a sender that asks for room and sleeps on the room fd,
    /// against a receiver slower than it, fills the seam again and again, yet no frame is
    /// refused and every one arrives, in order, with its metadata.
    #[test]
    fn a_slow_receiver_makes_the_sender_wait_and_nothing_is_lost() {
        const FRAMES: usize = 20 * SEAM_PACKETS;
        let (mut g, mut s, stats, _, _) = pair();
        let receiver = std::thread::spawn(move || {
            let mut inb = PacketBatch::new(16, MAX_FRAME_LEN);
            let mut next = 0usize;
            while next < FRAMES {
                if s.recv(&mut inb).unwrap() == 0 {
                    assert!(wait_readable(s.ready_fd()), "the sender said nothing");
                    continue;
                }
                for p in inb.packets() {
                    let seq = u32::from_le_bytes(p.frame()[..4].try_into().unwrap());
                    assert_eq!(seq as usize, next, "in order");
                    assert_eq!(p.hdr.gso_size, 1448);
                    next += 1;
                }
                inb.clear();
                // Slower than the sender: the seam fills while this sleeps.
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            next
        });
        let mut out = PacketBatch::new(64, MAX_FRAME_LEN);
        let mut sent = 0usize;
        while sent < FRAMES {
            let room = g.room();
            if room == 0 {
                let fd = g.room_fd().unwrap();
                assert!(
                    wait_readable(fd),
                    "the receiver drained but did not wake us"
                );
                continue;
            }
            out.clear();
            let n = room.min(out.capacity()).min(FRAMES - sent);
            for i in 0..n {
                let hdr = VirtioNetHdr {
                    gso_type: VirtioNetHdr::GSO_TCPV4,
                    gso_size: 1448,
                    ..Default::default()
                };
                let mut f = [0u8; 60];
                f[..4].copy_from_slice(&((sent + i) as u32).to_le_bytes());
                assert!(out.push(hdr, &f));
            }
            assert_eq!(g.send_swap(&mut out).unwrap(), n, "room was honest");
            sent += n;
        }
        assert_eq!(receiver.join().unwrap(), FRAMES);
        let snap = stats.snapshot().to_stack;
        assert_eq!((snap.full, snap.refused), (0, 0), "nothing refused");
        assert_eq!(snap.swaps, FRAMES as u64);
        assert!(snap.stalls > 0, "the seam filled: {snap:?}");
        assert!(
            snap.room_wakeups > 0 && snap.room_wakeups <= snap.stalls,
            "one wakeup at most per stall: {snap:?}"
        );
    }

    #[test]
    fn room_counts_free_buffers_and_a_wakeup_waits_for_a_batch() {
        let (mut g, mut s, stats, _, _) = pair();
        assert_eq!(g.room(), SEAM_PACKETS);
        let mut out = frames(SEAM_PACKETS, 10);
        assert_eq!(g.send_swap(&mut out).unwrap(), SEAM_PACKETS);
        assert_eq!(g.room(), 0, "every buffer in flight");
        assert_eq!(stats.snapshot().to_stack.stalls, 1);
        let room_fd = g.room_fd().unwrap();
        // The receiver takes fewer than a quarter: no wakeup yet (a batch's worth comes back
        // at once, not buffer by buffer).
        let mut inb = PacketBatch::new(ROOM_LOW_WATER - 1, MAX_FRAME_LEN);
        assert_eq!(s.recv(&mut inb).unwrap(), ROOM_LOW_WATER - 1);
        assert!(!test_support::poll_readable(room_fd, 0), "no wakeup yet");
        let mut inb = PacketBatch::new(1, MAX_FRAME_LEN);
        assert_eq!(s.recv(&mut inb).unwrap(), 1);
        assert!(wait_readable(room_fd), "a quarter is free: woken");
        assert_eq!(stats.snapshot().to_stack.room_wakeups, 1);
        assert_eq!(g.room(), ROOM_LOW_WATER);
        // Not waiting: draining the rest wakes nobody.
        let mut inb = PacketBatch::new(SEAM_PACKETS, MAX_FRAME_LEN);
        s.recv(&mut inb).unwrap();
        assert_eq!(stats.snapshot().to_stack.room_wakeups, 1);
    }

    #[test]
    fn empty_and_oversized_frames_are_refused_and_counted() {
        let (mut g, mut s, stats, _, _) = pair();
        let mut b = PacketBatch::new(2, MAX_FRAME_LEN);
        assert!(b.push(VirtioNetHdr::default(), &[]));
        assert!(b.push(VirtioNetHdr::default(), &[1, 2, 3]));
        assert_eq!(g.send(&b).unwrap(), 1);
        assert_eq!(stats.snapshot().to_stack.refused, 1);
        let mut inb = PacketBatch::new(4, MAX_FRAME_LEN);
        assert_eq!(s.recv(&mut inb).unwrap(), 1);
        assert_eq!(inb.packets()[0].frame(), &[1, 2, 3]);
    }

    #[test]
    fn guest_life_reaches_the_link_and_stale_frames_are_flushed() {
        let (g, mut s, stats, guest, changed) = pair();
        let (_sink, mut source) = (Box::new(g) as Box<dyn PacketPort>).split();
        assert!(!guest.up());
        source.set_attached(true).unwrap();
        source
            .set_guest_offloads(GuestOffloads {
                csum: true,
                tso4: true,
                tso6: false,
                ecn: false,
            })
            .unwrap();
        assert!(guest.up());
        assert!(guest.offloads().tso4 && !guest.offloads().tso6);
        assert!(changed.read().unwrap() >= 2, "the control loop is woken");
        // The library sends while the guest goes away: those frames are not kept for the
        // next frontend.
        assert_eq!(s.send(&frames(5, 60)).unwrap(), 5);
        source.set_attached(false).unwrap();
        assert!(!guest.up());
        assert_eq!(stats.snapshot().to_guest.flushed, 5);
        let mut inb = PacketBatch::new(8, MAX_FRAME_LEN);
        assert_eq!(source.recv(&mut inb).unwrap(), 0);
        // The library side's own offload calls are not the guest's.
        s.set_guest_offloads(GuestOffloads::default()).unwrap();
        assert!(guest.offloads().tso4);
    }
}
