//! Per-queue-pair counters, readable at any time from any thread.
//!
//! The data-path counters and the drop vocabulary are the engine's ([`QueueCounters`],
//! [`DropReason`], shared with the library kernel's device, so a drop has one name
//! everywhere); this device adds what only its transport knows (uplink readiness events and
//! the uplink's kernel drops). Each counter has one writer (its pair's worker), so an
//! increment is a relaxed load and store: no locked instruction, no lock. Readers see each
//! value torn-free but not a consistent snapshot across counters, which is what monitoring
//! needs.

use std::ops::Deref;

use serde::Serialize;

pub use knic_virtio_net::{Counter, Direction, DropReason, QueueCounters};

/// The counters of one queue pair: the engine's, plus the transport's own.
#[derive(Debug, Default)]
pub struct QueuePairStats {
    /// Packets, bytes, kicks, notifications and drops by reason.
    pub queue: QueueCounters,
    /// Uplink readiness events.
    pub uplink_events: Counter,
    /// TX drains started by busy-polling rather than by a kick (`--busy-poll-us`).
    pub tx_polled: Counter,
    /// Packets the kernel dropped before they reached the uplink port (AF_PACKET socket
    /// buffer full). Written by the stats reader under the pair's lock, not by the worker.
    pub uplink_kernel_drops: Counter,
}

impl Deref for QueuePairStats {
    type Target = QueueCounters;

    fn deref(&self) -> &QueueCounters {
        &self.queue
    }
}

impl QueuePairStats {
    /// A point-in-time copy for output.
    pub fn snapshot(&self, queue_pair: usize) -> QueuePairSnapshot {
        let q = &self.queue;
        QueuePairSnapshot {
            queue_pair,
            tx_packets: q.tx_packets.get(),
            tx_bytes: q.tx_bytes.get(),
            rx_packets: q.rx_packets.get(),
            rx_bytes: q.rx_bytes.get(),
            tx_kicks: q.tx_kicks.get(),
            rx_kicks: q.rx_kicks.get(),
            uplink_events: self.uplink_events.get(),
            tx_polled: self.tx_polled.get(),
            tx_notifications: q.tx_notifications.get(),
            rx_notifications: q.rx_notifications.get(),
            notifications_suppressed: q.tx_notifications_suppressed.get()
                + q.rx_notifications_suppressed.get(),
            uplink_kernel_drops: self.uplink_kernel_drops.get(),
            tx_stalls: q.tx_stalls.get(),
            tx_direct: q.tx_direct.get(),
            rx_direct: q.rx_direct.get(),
            drops: q.drop_counts().map(|(r, n)| (r.name(), n)).collect(),
        }
    }
}

/// Serialisable copy of one pair's counters.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueuePairSnapshot {
    pub queue_pair: usize,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_kicks: u64,
    pub rx_kicks: u64,
    pub uplink_events: u64,
    pub tx_polled: u64,
    pub tx_notifications: u64,
    pub rx_notifications: u64,
    /// Notifications EVENT_IDX (or NO_INTERRUPT) let the device skip, both rings.
    pub notifications_suppressed: u64,
    pub uplink_kernel_drops: u64,
    /// Times the worker left TX chains in the guest's ring because the uplink had no room
    /// (backpressure, not a drop).
    pub tx_stalls: u64,
    /// Of `tx_packets`, frames copied straight into the library kernel's RX buffers (the
    /// one-copy path): their only copy.
    pub tx_direct: u64,
    /// Of `rx_packets`, frames copied straight out of the library kernel's TX buffers
    /// into the guest's (the one-copy path the other way): their only copy.
    pub rx_direct: u64,
    /// Every drop counter by its [`DropReason::name`].
    pub drops: std::collections::BTreeMap<&'static str, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reports_counts_by_name() {
        let s = QueuePairStats::default();
        s.count_drop(DropReason::RxBufferTooSmall);
        s.count_drop(DropReason::RxBufferTooSmall);
        s.tx_packets.add(3);
        let snap = s.snapshot(1);
        assert_eq!(snap.drops["rx_buffer_too_small"], 2);
        assert_eq!(snap.drops["tx_malformed_header"], 0);
        assert_eq!(snap.drops.len(), DropReason::ALL.len());
        assert_eq!(snap.tx_packets, 3);
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["queue_pair"], 1);
    }
}
