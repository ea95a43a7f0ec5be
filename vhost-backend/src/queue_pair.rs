//! One virtio-net queue pair: guest TX ring to uplink, uplink to guest RX ring.
//!
//! A `QueuePair` is owned by one worker thread. It works on `virtio_queue::Queue` plus guest
//! memory only, so the same code runs under the vhost-user framework and under unit tests with
//! mock queues. Per packet it neither allocates nor locks: chains are walked in place, packets
//! live in the pair's preallocated batches, counters are single-writer atomics.
//!
//! Guest errors (a malformed chain) cost that chain: it is returned with used length 0,
//! counted by reason, logged rate-limited, and processing continues. A broken ring stops that
//! ring's processing for this round. Only host errors ([`HostError`]) are returned.

use std::sync::Arc;

use packet_ring::{MAX_FRAME_LEN, PacketBatch, PacketPort, PortError};
use thiserror::Error;
use tracing::warn;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use crate::features::NetFeatures;
use crate::ratelimit::LogLimiter;
use crate::ring::{self, RingError, pop_chain};
use crate::rx_filter::{RxFilterView, SharedRxFilter};
use crate::stats::{Direction, DropReason, QueuePairStats};
use knic_virtio_net::direct::{
    Capped, Delivery, DirectReceiver, DirectSender, FrameDest, Taken, read_chain_into,
};
use knic_virtio_net::guest_map::{GuestMap, SplitRing};
use knic_virtio_net::rx::{Placement, RxBuffers, RxChainError, check_frame, place_mapped};
use knic_virtio_net::tx::{TxLimits, read_chain, read_mapped_chain};

/// Failures of the host side; these end the worker.
#[derive(Debug, Error)]
pub enum HostError {
    #[error("uplink failed")]
    Uplink(#[from] PortError),
    #[error("notifying the guest failed")]
    Notify(#[source] std::io::Error),
}

/// Sizes fixed when the device is created.
#[derive(Debug, Clone, Copy)]
pub struct QueuePairConfig {
    /// Index of the pair (RX queue `2*index`, TX queue `2*index+1`).
    pub index: usize,
    /// Packets moved per uplink call.
    pub batch: usize,
    pub mtu: u16,
    pub max_queue_size: u16,
}

/// State of one queue pair, owned by its worker.
#[derive(Debug)]
pub struct QueuePair {
    index: usize,
    mtu: u16,
    uplink: Box<dyn PacketPort>,
    features: NetFeatures,
    tx_limits: TxLimits,
    tx_batch: PacketBatch,
    rx_batch: PacketBatch,
    /// First packet of `rx_batch` not yet given to the guest.
    rx_next: usize,
    rx_buffers: RxBuffers,
    /// Chains taken but not yet on the used ring, of the ring being processed (TX or RX:
    /// each round publishes all it took before it returns); at most a ring's worth,
    /// allocated once.
    used: Vec<(u16, u32)>,
    /// The guest driver's receive filter, refreshed once per RX round.
    rx_filter: RxFilterView,
    stats: Arc<QueuePairStats>,
    log: LogLimiter,
    /// What the uplink was last told by [`attach_uplink`](Self::attach_uplink); ports start
    /// detached (or cannot detach).
    uplink_attached: bool,
    /// The last TX round stopped for want of uplink room: chains wait in the ring.
    tx_stalled: bool,
    /// The library kernel's RX ring behind the uplink, when the guest's TX chains are
    /// copied straight into it (one copy per frame) rather than into `tx_batch`.
    direct: Option<Box<dyn DirectReceiver>>,
    /// The library kernel's TX ring behind the uplink, when its chains are copied straight
    /// into the guest's RX chains (one copy per frame) rather than received from the
    /// uplink into `rx_batch`.
    direct_tx: Option<Box<dyn DirectSender>>,
}

impl QueuePair {
    /// `rx_filter` is the device's receive filter, shared by every pair and written by the
    /// control queue.
    pub fn new(
        config: QueuePairConfig,
        uplink: Box<dyn PacketPort>,
        rx_filter: Arc<SharedRxFilter>,
        stats: Arc<QueuePairStats>,
    ) -> Self {
        let features = NetFeatures::default();
        Self {
            index: config.index,
            mtu: config.mtu,
            uplink,
            features,
            tx_limits: Self::tx_limits(features, config.mtu),
            tx_batch: PacketBatch::new(config.batch, MAX_FRAME_LEN),
            rx_batch: PacketBatch::new(config.batch, MAX_FRAME_LEN),
            rx_next: 0,
            rx_buffers: RxBuffers::new(config.max_queue_size),
            used: Vec::with_capacity(usize::from(config.max_queue_size)),
            rx_filter: RxFilterView::new(rx_filter),
            stats,
            log: LogLimiter::default(),
            uplink_attached: false,
            tx_stalled: false,
            direct: None,
            direct_tx: None,
        }
    }

    /// From now on, guest TX chains go straight into `direct`'s ring (one copy) instead of
    /// through the uplink's [`PacketBatch`] path; the uplink keeps the other direction.
    pub fn set_direct_receiver(&mut self, direct: Box<dyn DirectReceiver>) {
        self.direct = Some(direct);
    }

    /// From now on, the guest's RX chains are filled straight from `direct`'s ring (one
    /// copy) instead of from the uplink's [`PacketBatch`] path; the uplink keeps its
    /// control role (attachment, the guest's offloads).
    pub fn set_direct_sender(&mut self, direct: Box<dyn DirectSender>) {
        self.direct_tx = Some(direct);
    }

    /// The fd that says frames wait for the guest's RX ring: the direct sender's wake fd
    /// when there is one, else the uplink's readiness fd.
    pub fn rx_ready_fd(&self) -> std::os::fd::RawFd {
        match &self.direct_tx {
            Some(d) => d.wake_fd(),
            None => self.uplink.ready_fd(),
        }
    }

    /// The fd that wakes the worker after TX stalled: the direct receiver's when there is
    /// one, else the uplink's room fd.
    pub fn tx_room_fd(&self) -> Option<std::os::fd::RawFd> {
        match &self.direct {
            Some(d) => Some(d.wake_fd()),
            None => self.uplink.room_fd(),
        }
    }

    fn tx_limits(features: NetFeatures, mtu: u16) -> TxLimits {
        TxLimits::new(features, mtu)
    }

    /// Applies a newly negotiated feature set.
    pub fn set_features(&mut self, features: NetFeatures) {
        self.features = features;
        self.tx_limits = Self::tx_limits(features, self.mtu);
    }

    pub fn features(&self) -> NetFeatures {
        self.features
    }

    /// Forgets per-connection state (pending received packets, negotiated features). The
    /// uplink stays: it outlives frontends.
    pub fn reset(&mut self) {
        self.rx_batch.clear();
        self.rx_next = 0;
        self.set_features(NetFeatures::default());
    }

    /// Lets the uplink steer packets to this pair only while its RX ring can take them
    /// (`can_receive`: started, enabled, pair in use), so the host sends the flows of a pair
    /// the guest has not enabled to one it has, instead of to `rx_ring_disabled`. Tells the
    /// uplink only on a change.
    pub fn attach_uplink(&mut self, can_receive: bool) -> Result<(), HostError> {
        if can_receive != self.uplink_attached {
            self.uplink.set_attached(can_receive)?;
            self.uplink_attached = can_receive;
        }
        Ok(())
    }

    pub fn uplink(&self) -> &dyn PacketPort {
        self.uplink.as_ref()
    }

    pub fn uplink_mut(&mut self) -> &mut dyn PacketPort {
        self.uplink.as_mut()
    }

    pub fn stats(&self) -> &Arc<QueuePairStats> {
        &self.stats
    }

    fn guest_error(&mut self, reason: DropReason, err: &dyn std::error::Error) {
        record(&self.stats, &mut self.log, self.index, reason, err);
    }

    /// Counts and logs a broken ring of `direction`.
    fn ring_error(&mut self, direction: Direction, err: &RingError) {
        self.guest_error(err.reason(direction), err);
    }

    /// Moves every available TX chain to the uplink (or discards it when the ring is started
    /// but disabled), as far as the uplink has room: chains it has no room for stay in the
    /// guest's ring, counted once per stall in `tx_stalls`, until the uplink's room fd says
    /// it drained. Returns whether the guest should be notified.
    pub fn process_tx<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
        enabled: bool,
    ) -> Result<bool, HostError> {
        let old_used = queue.next_used();
        self.tx_stalled = false;
        let map = GuestMap::new(mem);
        'drain: loop {
            if let Err(e) = queue.disable_notification(mem) {
                self.ring_error(Direction::Tx, &RingError::Used(e));
                break 'drain;
            }
            if enabled && self.direct.is_some() {
                match self.drain_tx_direct(queue, mem) {
                    DirectEnd::Drained => {}
                    DirectEnd::Stalled => {
                        self.stats.tx_stalls.add(1);
                        self.tx_stalled = true;
                        break 'drain;
                    }
                    DirectEnd::Broken => break 'drain,
                }
            } else {
                loop {
                    self.tx_batch.clear();
                    // Backpressure: take no more chains than the uplink has room for. The rest
                    // wait in the guest's ring, its own queue, as descriptors wait in a NIC's
                    // full ring; guest kicks stay off and the uplink's room fd wakes the
                    // worker (`NetBackend::uplink_room_event`).
                    let room = if enabled {
                        self.uplink.room()
                    } else {
                        usize::MAX
                    };
                    if room == 0 {
                        if ring::avail_is_empty(queue, mem) {
                            // Nothing waits: re-enable kicks as usual (the armed room fd may
                            // still wake the worker once, to find nothing).
                            break;
                        }
                        self.stats.tx_stalls.add(1);
                        self.tx_stalled = true;
                        break 'drain;
                    }
                    // The rings and memory are mapped once per batch, and the avail index read
                    // once: the common chain shapes are then read without a guest-address lookup
                    // (`knic_virtio_net::guest_map`). Anything else, or no map, is popped and
                    // read through `vm-memory`.
                    let ring = map.as_ref().and_then(|m| SplitRing::new(m, queue));
                    let mut avail_end = None;
                    let mut popped = 0usize;
                    while popped < room && !self.tx_batch.is_full() {
                        let limits = self.tx_limits;
                        let next = queue.next_avail();
                        let fast = match (&map, &ring) {
                            (Some(m), Some(r)) => {
                                r.announced_head(next, &mut avail_end).and_then(|head| {
                                    let slot = self.tx_batch.next_slot()?;
                                    Some((head, read_mapped_chain(r, m, head, slot, &limits)?))
                                })
                            }
                            _ => None,
                        };
                        let (head, read) = match fast {
                            Some(done) => {
                                queue.set_next_avail(next.wrapping_add(1));
                                done
                            }
                            None => {
                                let chain = match pop_chain(queue, mem) {
                                    Ok(Some(c)) => c,
                                    Ok(None) => break,
                                    Err(e) => {
                                        self.ring_error(Direction::Tx, &e);
                                        self.publish_used(Direction::Tx, queue, mem, ring.as_ref());
                                        self.flush_tx(enabled)?;
                                        break 'drain;
                                    }
                                };
                                let read = match self.tx_batch.next_slot() {
                                    Some(slot) => read_chain(&chain, slot, &limits),
                                    None => break,
                                };
                                (chain.head_index(), read)
                            }
                        };
                        popped += 1;
                        match read {
                            Ok(()) => self.tx_batch.commit(),
                            Err(e) => self.guest_error(e.reason(), &e),
                        }
                        // The device writes nothing into TX buffers: used length 0 (§2.7.8).
                        // The batch's chains are published together, with one index store.
                        self.used.push((head, 0));
                        if self.used.len() >= usize::from(queue.size())
                            && !self.publish_used(Direction::Tx, queue, mem, ring.as_ref())
                        {
                            self.flush_tx(enabled)?;
                            break 'drain;
                        }
                    }
                    if !self.publish_used(Direction::Tx, queue, mem, ring.as_ref()) {
                        self.flush_tx(enabled)?;
                        break 'drain;
                    }
                    if popped == 0 {
                        break;
                    }
                    self.flush_tx(enabled)?;
                }
            }
            // Re-enable kicks; if the guest added chains meanwhile, drain again.
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    self.ring_error(Direction::Tx, &RingError::Used(e));
                    break;
                }
            }
        }
        Ok(self.needs_notification(Direction::Tx, queue, mem, old_used))
    }

    /// The one-copy TX path: each guest chain is read by the engine's `read_chain_into`
    /// (every check of `read_chain`) straight into the buffers the library kernel posted,
    /// a batch at a time (the receiver's lock and interrupt once per batch), and the
    /// batch's chains are published together. A chain the receiver has no room for goes
    /// back to the guest's ring untouched.
    fn drain_tx_direct<M: GuestMemory>(&mut self, queue: &mut Queue, mem: &M) -> DirectEnd {
        let batch = self.tx_batch.capacity().max(1);
        loop {
            let Some(direct) = self.direct.as_mut() else {
                return DirectEnd::Drained;
            };
            let limits = self.tx_limits;
            let (stats, log, index, used) =
                (&self.stats, &mut self.log, self.index, &mut self.used);
            let mut end = None;
            let mut taken = 0usize;
            direct.with_ring(&mut |ring| {
                while taken < batch {
                    let chain = match pop_chain(queue, mem) {
                        Ok(Some(c)) => c,
                        Ok(None) => {
                            end = Some(DirectEnd::Drained);
                            return;
                        }
                        Err(e) => {
                            record(stats, log, index, e.reason(Direction::Tx), &e);
                            end = Some(DirectEnd::Broken);
                            return;
                        }
                    };
                    let frame_max = chain_frame_max(&chain, &limits);
                    let mut len = 0usize;
                    let mut fill = |dest: &mut dyn FrameDest| {
                        let got =
                            read_chain_into(&chain, &mut Capped::new(dest, MAX_FRAME_LEN), &limits);
                        if let Ok((_, n)) = got {
                            len = n;
                        }
                        got
                    };
                    match ring.deliver(frame_max, &mut fill) {
                        Delivery::Delivered => {
                            stats.sent(len);
                            stats.tx_direct.add(1);
                        }
                        Delivery::Refused(e) => record(stats, log, index, e.reason(), &e),
                        Delivery::Dropped => stats.count_drop(DropReason::TxBackendRefused),
                        Delivery::NoRoom => {
                            knic_virtio_net::ring::unpop(queue, 1);
                            end = Some(DirectEnd::Stalled);
                            return;
                        }
                    }
                    taken += 1;
                    // The device writes nothing into TX buffers: used length 0 (§2.7.8).
                    used.push((chain.head_index(), 0));
                }
            });
            if !self.publish_used(Direction::Tx, queue, mem, None) {
                return DirectEnd::Broken;
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Puts the chains taken so far on `direction`'s used ring (one index store), through
    /// `ring` when mapped. Returns false if the used ring is broken (counted): the round ends.
    fn publish_used<M: GuestMemory>(
        &mut self,
        direction: Direction,
        queue: &mut Queue,
        mem: &M,
        ring: Option<&SplitRing<'_, M>>,
    ) -> bool {
        if self.used.is_empty() {
            return true;
        }
        let used = self.used.drain(..);
        let published = match ring {
            Some(r) => ring::return_used_mapped(queue, mem, r, used),
            None => ring::return_used_together(queue, mem, used),
        };
        match published {
            Ok(_) => true,
            Err(e) => {
                self.ring_error(direction, &e);
                false
            }
        }
    }

    /// Hands the batch to the uplink. `tx_packets` counts every chain read whole, also those
    /// then discarded (ring disabled) or refused by the uplink, which are counted under
    /// their reasons too (the protocol tests rely on this device's meaning).
    fn flush_tx(&mut self, enabled: bool) -> Result<(), HostError> {
        let n = self.tx_batch.len();
        if n == 0 {
            return Ok(());
        }
        self.stats
            .sent_all(self.tx_batch.packets().iter().map(|p| p.len()));
        if !enabled {
            self.stats.count_drops(DropReason::TxRingDisabled, n);
        } else {
            // The uplink may take the batch's buffers (the agent's seam does), leaving
            // free ones of its own in their place: the batch is cleared below either way.
            let sent = self.uplink.send_swap(&mut self.tx_batch)?;
            self.stats
                .count_drops(DropReason::TxBackendRefused, n.saturating_sub(sent));
        }
        self.tx_batch.clear();
        Ok(())
    }

    /// Moves packets waiting on the uplink into the guest's RX buffers until either runs dry.
    /// Returns whether the guest should be notified.
    pub fn process_rx<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
        enabled: bool,
    ) -> Result<bool, HostError> {
        let old_used = queue.next_used();
        self.rx_filter.refresh();
        if self.direct_tx.is_some() {
            self.drain_rx_direct(queue, mem, enabled);
            return Ok(self.needs_notification(Direction::Rx, queue, mem, old_used));
        }
        // As on TX: memory and rings mapped once, the avail index read again only when the
        // chains it announced are used up; frames that fit the next chain's one buffer are
        // written through the map and published together (`rx::place_mapped`).
        let map = GuestMap::new(mem);
        let ring = map.as_ref().and_then(|m| SplitRing::new(m, queue));
        let mut avail_end = None;
        loop {
            if self.rx_next >= self.rx_batch.len() {
                // Nothing taken stays unpublished across an uplink call (which may fail).
                if !self.publish_used(Direction::Rx, queue, mem, ring.as_ref()) {
                    break;
                }
                self.rx_batch.clear();
                self.rx_next = 0;
                if self.uplink.recv(&mut self.rx_batch)? == 0 {
                    break;
                }
            }
            if !enabled {
                self.stats
                    .count_drops(DropReason::RxRingDisabled, self.rx_pending());
                self.rx_next = self.rx_batch.len();
                continue;
            }
            let Some(pkt) = self.rx_batch.packets().get(self.rx_next) else {
                break;
            };
            if !self.rx_filter.current().accepts(pkt.frame()) {
                self.stats.count_drop(DropReason::RxFiltered);
                self.rx_next += 1;
                continue;
            }
            if let Err(reason) = check_frame(&pkt.hdr, pkt.len(), &self.features) {
                self.stats.count_drop(reason);
                self.rx_next += 1;
                continue;
            }
            if let (Some(m), Some(r)) = (&map, &ring) {
                let next = queue.next_avail();
                let placed = r.announced_head(next, &mut avail_end).and_then(|head| {
                    place_mapped(r, m, head, &pkt.hdr, pkt.frame(), &self.features)
                });
                if let Some(used) = placed {
                    queue.set_next_avail(next.wrapping_add(1));
                    self.stats.received(pkt.len(), 1);
                    self.rx_next += 1;
                    self.used.push(used);
                    if self.used.len() >= usize::from(queue.size())
                        && !self.publish_used(Direction::Rx, queue, mem, ring.as_ref())
                    {
                        break;
                    }
                    continue;
                }
            }
            // `place` publishes at the used index: what the map placed goes first.
            if !self.publish_used(Direction::Rx, queue, mem, ring.as_ref()) {
                break;
            }
            let Some(pkt) = self.rx_batch.packets().get(self.rx_next) else {
                break;
            };
            let (stats, log, index) = (&self.stats, &mut self.log, self.index);
            let mut on_malformed = |e: RxChainError| record(stats, log, index, e.reason(), &e);
            let placed = self.rx_buffers.place(
                queue,
                mem,
                &pkt.hdr,
                pkt.frame(),
                &self.features,
                &mut on_malformed,
            );
            match placed {
                Ok(Placement::Delivered { buffers }) => {
                    self.stats.received(pkt.len(), buffers);
                    self.rx_next += 1;
                }
                Ok(Placement::TooBig) => {
                    self.stats.count_drop(DropReason::RxBufferTooSmall);
                    self.rx_next += 1;
                }
                Ok(Placement::Aborted) => self.rx_next += 1,
                Ok(Placement::NoBuffers { seen_avail }) => {
                    // Ask for a kick once buffers beyond those seen arrive; retry at once
                    // only if the guest added some since the attempt (closing the race with
                    // the kick). Buffers that were there but too few wait for more: retrying
                    // would spin.
                    match ring::ask_for_kick(queue, mem, seen_avail) {
                        Ok(true) => {
                            let _ = queue.disable_notification(mem);
                            continue;
                        }
                        Ok(false) => break,
                        Err(e) => {
                            self.ring_error(Direction::Rx, &e);
                            break;
                        }
                    }
                }
                Err(e) => {
                    self.ring_error(Direction::Rx, &e);
                    break;
                }
            }
        }
        self.publish_used(Direction::Rx, queue, mem, ring.as_ref());
        Ok(self.needs_notification(Direction::Rx, queue, mem, old_used))
    }

    /// The one-copy RX path: the library kernel's TX ring is opened a batch at a time (its
    /// lock, used-ring publication and interrupt once per batch), and each of its chains,
    /// lent in pieces, is written by the engine's `place_scattered` straight into the
    /// guest's RX chains, after the checks the packet path makes (ring enabled, receive
    /// filter, the guest's negotiation). A frame the guest has no buffers for stays in the
    /// kernel's ring, and the guest's next RX kick brings the worker back; a kernel ring
    /// with nothing to send asks for its driver's kick, which writes the sender's wake fd.
    fn drain_rx_direct<M: GuestMemory>(&mut self, queue: &mut Queue, mem: &M, enabled: bool) {
        let batch = self.rx_batch.capacity().max(1);
        loop {
            let Some(direct) = self.direct_tx.as_mut() else {
                return;
            };
            let (stats, log, index) = (&self.stats, &mut self.log, self.index);
            let (rx_buffers, features, filter) = (
                &mut self.rx_buffers,
                &self.features,
                self.rx_filter.current(),
            );
            let mut end = None;
            let mut taken = 0usize;
            direct.with_ring(&mut |ring| {
                while taken < batch {
                    let mut waits = None;
                    let lent = ring.lend(&mut |hdr, pieces| {
                        let len = pieces.iter().map(|p| p.len()).sum::<usize>();
                        if !enabled {
                            stats.count_drop(DropReason::RxRingDisabled);
                            return Taken::Dropped;
                        }
                        if !filter.accepts(frame_prefix(pieces, &mut [0u8; MAC_LEN])) {
                            stats.count_drop(DropReason::RxFiltered);
                            return Taken::Dropped;
                        }
                        if let Err(reason) = check_frame(hdr, len, features) {
                            stats.count_drop(reason);
                            return Taken::Dropped;
                        }
                        let mut on_malformed =
                            |e: RxChainError| record(stats, log, index, e.reason(), &e);
                        let placed = rx_buffers.place_scattered(
                            queue,
                            mem,
                            hdr,
                            pieces,
                            features,
                            &mut on_malformed,
                        );
                        match placed {
                            Ok(Placement::Delivered { buffers }) => {
                                stats.received(len, buffers);
                                stats.rx_direct.add(1);
                                Taken::Delivered
                            }
                            Ok(Placement::TooBig) => {
                                stats.count_drop(DropReason::RxBufferTooSmall);
                                Taken::Dropped
                            }
                            Ok(Placement::Aborted) => Taken::Dropped,
                            Ok(Placement::NoBuffers { seen_avail }) => {
                                waits = Some(DirectRxEnd::NoBuffers { seen_avail });
                                Taken::NoRoom
                            }
                            Err(e) => {
                                record(stats, log, index, e.reason(Direction::Rx), &e);
                                waits = Some(DirectRxEnd::Broken);
                                Taken::NoRoom
                            }
                        }
                    });
                    match lent {
                        None => {
                            end = Some(DirectRxEnd::Drained);
                            return;
                        }
                        Some(Taken::NoRoom) => {
                            end = Some(waits.unwrap_or(DirectRxEnd::Broken));
                            return;
                        }
                        Some(Taken::Delivered | Taken::Dropped) => taken += 1,
                    }
                }
            });
            match end {
                // A whole batch: open the ring again for the next.
                None => continue,
                Some(DirectRxEnd::Drained | DirectRxEnd::Broken) => return,
                Some(DirectRxEnd::NoBuffers { seen_avail }) => {
                    // As on the packet path: ask for the guest's kick once it posts beyond
                    // what was seen, and go again at once if it already has.
                    match ring::ask_for_kick(queue, mem, seen_avail) {
                        Ok(true) => {
                            let _ = queue.disable_notification(mem);
                        }
                        Ok(false) => return,
                        Err(e) => {
                            self.ring_error(Direction::Rx, &e);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Whether the last [`process_tx`](Self::process_tx) left chains in the guest's ring
    /// because the uplink had no room: polling the ring is pointless until its room fd fires.
    pub fn tx_stalled(&self) -> bool {
        self.tx_stalled
    }

    /// Whether packets are held back waiting for guest RX buffers.
    pub fn rx_pending(&self) -> usize {
        self.rx_batch.len() - self.rx_next
    }

    /// Whether the guest should be notified of what this round published (the used index
    /// moved from `old_used`); a suppressed notification is counted.
    fn needs_notification<M: GuestMemory>(
        &mut self,
        direction: Direction,
        queue: &Queue,
        mem: &M,
        old_used: u16,
    ) -> bool {
        if queue.next_used() == old_used {
            return false;
        }
        match ring::needs_notification(queue, mem, old_used) {
            Ok(true) => true,
            Ok(false) => {
                // Sent notifications are counted by the transport once it has signalled.
                self.stats.notification(direction, false)
            }
            Err(e) => {
                // Unreadable hint: notify rather than stall the driver.
                self.ring_error(direction, &e);
                true
            }
        }
    }
}

/// Bytes of a destination MAC address, all the receive filter reads of a frame.
const MAC_LEN: usize = 6;

/// The first bytes of a frame lent in `pieces`, as one slice: the first piece itself when
/// it is long enough (the common case), else gathered into `buf`.
fn frame_prefix<'a, const N: usize>(pieces: &'a [&'a [u8]], buf: &'a mut [u8; N]) -> &'a [u8] {
    if let Some(first) = pieces.first().filter(|p| p.len() >= N) {
        return &first[..N];
    }
    let mut got = 0;
    for p in pieces {
        let n = p.len().min(N - got);
        buf[got..got + n].copy_from_slice(&p[..n]);
        got += n;
        if got == N {
            break;
        }
    }
    &buf[..got]
}

/// How a direct RX drain ended.
enum DirectRxEnd {
    /// The sender has no frame (or cannot send): its wake fd says when it has.
    Drained,
    /// The guest had too few buffers for a frame: it stays in the sender's ring.
    NoBuffers { seen_avail: u16 },
    /// The guest's RX ring is broken (counted): the round ends.
    Broken,
}

/// How a direct TX drain ended.
enum DirectEnd {
    /// The guest's ring is empty.
    Drained,
    /// The receiver had no room: chains wait in the guest's ring for its wake fd.
    Stalled,
    /// The guest's ring is broken (counted): the round ends.
    Broken,
}

/// The most frame bytes `chain` can carry: its device-readable bytes after the header,
/// capped at what the packet path's buffer would hold (the receiver gathers that much).
fn chain_frame_max<M>(chain: &virtio_queue::DescriptorChain<M>, limits: &TxLimits) -> usize
where
    M: std::ops::Deref + Clone,
    M::Target: GuestMemory,
{
    let bytes = chain
        .clone()
        .filter(|d| !d.is_write_only())
        .fold(0usize, |n, d| n.saturating_add(d.len() as usize));
    bytes
        .saturating_sub(limits.features.hdr_len)
        .min(MAX_FRAME_LEN)
}

/// Counts a guest error and logs it, rate-limited.
fn record(
    stats: &QueuePairStats,
    log: &mut LogLimiter,
    queue_pair: usize,
    reason: DropReason,
    err: &dyn std::error::Error,
) {
    stats.count_drop(reason);
    if let Some(suppressed) = log.allow() {
        match err.source() {
            Some(cause) => warn!(
                queue_pair,
                reason = reason.name(),
                suppressed,
                "guest error: {err}: {cause}"
            ),
            None => warn!(
                queue_pair,
                reason = reason.name(),
                suppressed,
                "guest error: {err}"
            ),
        }
    }
}

#[cfg(test)]
#[path = "queue_pair_tests.rs"]
mod tests;
