//! Per-queue-pair counters, readable at any time from any thread.
//!
//! Each counter has one writer (its pair's worker), so an increment is a relaxed load and
//! store: no locked instruction, no lock. Readers see each value torn-free but not a consistent
//! snapshot across counters, which is what monitoring needs.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Why a packet or descriptor chain was dropped. Guest-caused reasons name the malformed shape;
/// each is a named counter in the stats output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// TX chain with a device-writable descriptor.
    TxWriteOnlyDescriptor,
    /// TX chain shorter than the virtio-net header.
    TxShortHeader,
    /// TX header inconsistent (unknown GSO type, zero gso_size, checksum outside the frame) or
    /// asking for an offload the guest did not negotiate.
    TxBadHeader,
    /// TX frame larger than the MTU (non-GSO) or the largest buffer (GSO).
    TxFrameTooLarge,
    /// TX frame shorter than an Ethernet header.
    TxRuntFrame,
    /// A descriptor points outside guest memory.
    TxBadAddress,
    /// Chain with no descriptor (bad head index or unreadable/invalid indirect table).
    TxEmptyChain,
    /// Chain cut short: descriptor loop, chain longer than the queue, `next` out of range.
    TxChainTruncated,
    /// TX on a started but disabled ring: processed and discarded (vhost-user ring states).
    TxRingDisabled,
    /// The uplink refused the packet (queue full, link down).
    TxUplinkRefused,
    /// RX chain with a device-readable descriptor.
    RxReadOnlyDescriptor,
    /// RX descriptor outside guest memory.
    RxBadAddress,
    /// RX chain with no descriptor.
    RxEmptyChain,
    /// RX chain cut short (loop, too long, `next` out of range).
    RxChainTruncated,
    /// Guest buffers too small for the packet (non-mergeable), or the whole ring too small.
    RxBufferTooSmall,
    /// Packet carries an offload (GSO, partial checksum) the guest did not negotiate.
    RxOffloadNotNegotiated,
    /// Packet arrived for a started but disabled ring.
    RxRingDisabled,
    /// Frame not addressed to the guest under the receive filter its driver set through the
    /// control queue (promiscuous mode off; see `rx_filter`).
    RxFiltered,
    /// The queue's rings themselves are unusable (bad ring addresses, bad avail index).
    RingBroken,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 19] = [
        Self::TxWriteOnlyDescriptor,
        Self::TxShortHeader,
        Self::TxBadHeader,
        Self::TxFrameTooLarge,
        Self::TxRuntFrame,
        Self::TxBadAddress,
        Self::TxEmptyChain,
        Self::TxChainTruncated,
        Self::TxRingDisabled,
        Self::TxUplinkRefused,
        Self::RxReadOnlyDescriptor,
        Self::RxBadAddress,
        Self::RxEmptyChain,
        Self::RxChainTruncated,
        Self::RxBufferTooSmall,
        Self::RxOffloadNotNegotiated,
        Self::RxRingDisabled,
        Self::RxFiltered,
        Self::RingBroken,
    ];

    /// The counter's name in the stats output.
    pub const fn name(self) -> &'static str {
        match self {
            Self::TxWriteOnlyDescriptor => "tx_write_only_descriptor",
            Self::TxShortHeader => "tx_malformed_header",
            Self::TxBadHeader => "tx_bad_offload_header",
            Self::TxFrameTooLarge => "tx_frame_too_large",
            Self::TxRuntFrame => "tx_runt_frame",
            Self::TxBadAddress => "tx_bad_address",
            Self::TxEmptyChain => "tx_empty_chain",
            Self::TxChainTruncated => "tx_chain_truncated",
            Self::TxRingDisabled => "tx_ring_disabled",
            Self::TxUplinkRefused => "tx_uplink_refused",
            Self::RxReadOnlyDescriptor => "rx_read_only_descriptor",
            Self::RxBadAddress => "rx_bad_address",
            Self::RxEmptyChain => "rx_empty_chain",
            Self::RxChainTruncated => "rx_chain_truncated",
            Self::RxBufferTooSmall => "rx_buffer_too_small",
            Self::RxOffloadNotNegotiated => "rx_offload_not_negotiated",
            Self::RxRingDisabled => "rx_ring_disabled",
            Self::RxFiltered => "rx_filtered",
            Self::RingBroken => "ring_broken",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// A single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker calls this, so load+store cannot lose updates.
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

/// The counters of one queue pair.
#[derive(Debug, Default)]
pub struct QueuePairStats {
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    /// Guest kicks on the TX / RX ring.
    pub tx_kicks: Counter,
    pub rx_kicks: Counter,
    /// Uplink readiness events.
    pub uplink_events: Counter,
    /// Interrupts sent to the guest (after EVENT_IDX suppression).
    pub tx_notifications: Counter,
    pub rx_notifications: Counter,
    /// Notifications EVENT_IDX (or NO_INTERRUPT) let us skip.
    pub notifications_suppressed: Counter,
    /// Packets the kernel dropped before they reached the uplink port (AF_PACKET socket
    /// buffer full). Written by the stats reader under the pair's lock, not by the worker.
    pub uplink_kernel_drops: Counter,
    drops: [Counter; DropReason::ALL.len()],
}

impl QueuePairStats {
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason.index()].add(1);
    }

    pub fn count_drops(&self, reason: DropReason, n: usize) {
        self.drops[reason.index()].add(n as u64);
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].get()
    }

    /// A point-in-time copy for output.
    pub fn snapshot(&self, queue_pair: usize) -> QueuePairSnapshot {
        QueuePairSnapshot {
            queue_pair,
            tx_packets: self.tx_packets.get(),
            tx_bytes: self.tx_bytes.get(),
            rx_packets: self.rx_packets.get(),
            rx_bytes: self.rx_bytes.get(),
            tx_kicks: self.tx_kicks.get(),
            rx_kicks: self.rx_kicks.get(),
            uplink_events: self.uplink_events.get(),
            tx_notifications: self.tx_notifications.get(),
            rx_notifications: self.rx_notifications.get(),
            notifications_suppressed: self.notifications_suppressed.get(),
            uplink_kernel_drops: self.uplink_kernel_drops.get(),
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name(), self.drops(*r)))
                .collect(),
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
    pub tx_notifications: u64,
    pub rx_notifications: u64,
    pub notifications_suppressed: u64,
    pub uplink_kernel_drops: u64,
    pub drops: std::collections::BTreeMap<&'static str, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_order_matches_counter_index_and_names_are_unique() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let names: std::collections::BTreeSet<_> =
            DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn snapshot_reports_counts_by_name() {
        let s = QueuePairStats::default();
        s.count_drop(DropReason::RxBufferTooSmall);
        s.count_drop(DropReason::RxBufferTooSmall);
        s.tx_packets.add(3);
        let snap = s.snapshot(1);
        assert_eq!(snap.drops["rx_buffer_too_small"], 2);
        assert_eq!(snap.drops["tx_malformed_header"], 0);
        assert_eq!(snap.tx_packets, 3);
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["queue_pair"], 1);
    }
}
