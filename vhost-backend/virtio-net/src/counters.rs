//! Per-queue-pair counters, readable at any time from any thread.
//!
//! Each counter has one writer at a time: the TX counters are written by whoever runs the
//! TX ring (a vhost worker, or the library kernel's kick under the TX side's lock), the RX
//! counters by whoever runs the RX ring, and kicks by the transport's one notification
//! path. Successive writers are ordered by that lock or hand-off, so an increment is a
//! relaxed load and store: no locked instruction, no lock. Readers see each value torn-free
//! but not a consistent snapshot across counters, which is what monitoring needs.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::drops::{Direction, DropReason};

/// Frames of this size or more count as large: segmentation offload at work.
pub const LARGE_FRAME: usize = 32 * 1024;

/// A single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the counter's one writer calls this (see the module docs), so the
    /// load and store cannot lose an update.
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one queue pair. Field names are the metric names.
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Frames the device took from the driver's TX ring and the backend accepted, and
    /// their bytes (without the virtio-net header).
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    /// Of those, frames of [`LARGE_FRAME`] bytes or more.
    pub tx_large_frames: Counter,
    /// Frames delivered into the driver's RX buffers, and their bytes.
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub rx_large_frames: Counter,
    /// Received frames that spanned more than one buffer (MRG_RXBUF at work).
    pub rx_merged_frames: Counter,
    /// Driver kicks on the TX / RX ring.
    pub tx_kicks: Counter,
    pub rx_kicks: Counter,
    /// Notifications (interrupts, call eventfd writes) for used entries of each ring, and
    /// those the driver's `used_event` or NO_INTERRUPT flag let the device skip.
    pub tx_notifications: Counter,
    pub rx_notifications: Counter,
    pub tx_notifications_suppressed: Counter,
    pub rx_notifications_suppressed: Counter,
    /// Times the device stopped taking chains from the TX ring because the backend had no
    /// room (backpressure, as a NIC whose ring is full): the chains wait in the driver's
    /// ring until the backend drains, so this is not a drop.
    pub tx_stalls: Counter,
    /// Of `tx_packets`, frames that crossed to another ring in their only copy: the device
    /// copied them straight into the buffers another ring's driver posted
    /// ([`crate::direct::DirectReceiver`]), or another ring's worker copied them straight
    /// out of this driver's buffers ([`crate::direct::DirectSender`]) and this device
    /// copied none of them.
    pub tx_direct: Counter,
    /// Of `rx_packets`, frames that came from another ring in their only copy: another
    /// ring's worker copied them straight into this driver's buffers
    /// ([`crate::direct::DirectRing`]) and this device copied none of them, or the device
    /// copied them straight out of another driver's TX buffers
    /// ([`crate::direct::SendingRing`]).
    pub rx_direct: Counter,
    drops: [Counter; DropReason::ALL.len()],
}

impl QueueCounters {
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason.index()].add(1);
    }

    pub fn count_drops(&self, reason: DropReason, n: usize) {
        self.drops[reason.index()].add(n as u64);
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].get()
    }

    /// Every drop counter with its name, in [`DropReason::ALL`] order.
    pub fn drop_counts(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.drops(*r)))
    }

    /// A frame of `len` bytes left for the backend.
    pub fn sent(&self, len: usize) {
        self.tx_packets.add(1);
        self.tx_bytes.add(len as u64);
        if len >= LARGE_FRAME {
            self.tx_large_frames.add(1);
        }
    }

    /// Frames of `lens` bytes left for the backend, counted with one update per counter
    /// (a batch's worth at once).
    pub fn sent_all(&self, lens: impl IntoIterator<Item = usize>) {
        let (mut packets, mut bytes, mut large) = (0u64, 0u64, 0u64);
        for len in lens {
            packets += 1;
            bytes += len as u64;
            large += u64::from(len >= LARGE_FRAME);
        }
        self.tx_packets.add(packets);
        self.tx_bytes.add(bytes);
        if large > 0 {
            self.tx_large_frames.add(large);
        }
    }

    /// A frame of `len` bytes reached the driver in `buffers` buffers.
    pub fn received(&self, len: usize, buffers: usize) {
        self.rx_packets.add(1);
        self.rx_bytes.add(len as u64);
        if len >= LARGE_FRAME {
            self.rx_large_frames.add(1);
        }
        if buffers > 1 {
            self.rx_merged_frames.add(1);
        }
    }

    /// Records a notification decision for `direction`'s ring; returns it.
    pub fn notification(&self, direction: Direction, needed: bool) -> bool {
        let counter = match (direction, needed) {
            (Direction::Tx, true) => &self.tx_notifications,
            (Direction::Tx, false) => &self.tx_notifications_suppressed,
            (Direction::Rx, true) => &self.rx_notifications,
            (Direction::Rx, false) => &self.rx_notifications_suppressed,
        };
        counter.add(1);
        needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_decisions_land_in_their_counters() {
        let c = QueueCounters::default();
        c.sent(LARGE_FRAME);
        c.sent_all([60]);
        c.received(100, 2);
        c.count_drop(DropReason::RxBufferTooSmall);
        c.count_drops(DropReason::TxRingDisabled, 3);
        assert!(c.notification(Direction::Tx, true));
        assert!(!c.notification(Direction::Rx, false));
        assert_eq!(c.tx_packets.get(), 2);
        assert_eq!(c.tx_bytes.get(), LARGE_FRAME as u64 + 60);
        assert_eq!(c.tx_large_frames.get(), 1);
        assert_eq!(c.rx_merged_frames.get(), 1);
        assert_eq!(c.drops(DropReason::RxBufferTooSmall), 1);
        assert_eq!(c.drops(DropReason::TxRingDisabled), 3);
        assert_eq!(c.tx_notifications.get(), 1);
        assert_eq!(c.rx_notifications_suppressed.get(), 1);
        let nonzero: Vec<_> = c.drop_counts().filter(|d| d.1 > 0).collect();
        assert_eq!(
            nonzero,
            vec![
                (DropReason::TxRingDisabled, 3),
                (DropReason::RxBufferTooSmall, 1)
            ]
        );
    }
}
