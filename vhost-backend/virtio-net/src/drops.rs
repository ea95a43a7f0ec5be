//! Why a frame or a descriptor chain was dropped: one vocabulary for every knic virtio-net
//! device. Each reason is a counter, and its [`name`](DropReason::name) is the counter's
//! name wherever counters are shown (a stats socket's JSON, a metrics exporter, a test's
//! assertion). Every name starts with the direction it belongs to, `tx_` (the driver's
//! transmit ring, towards the backend) or `rx_` (the backend towards the driver's receive
//! ring), and [`DropReason::direction`] says the same in types, so a per-direction sum
//! never puts a TX ring's breakage under RX.
//!
//! Guest-caused reasons name the malformed shape; a driver that sends only well-formed
//! chains and negotiated offloads sees none of them count.

/// Which ring a drop happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The driver's TX ring and what the device sends on from it.
    Tx,
    /// What the backend hands over and the driver's RX ring.
    Rx,
}

/// What one count of a reason stands for, so a check can account for every chain and
/// frame: the same invariant holds whichever device counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropUnit {
    /// One driver chain, returned used with length 0 (or, naming no head of the ring,
    /// not returnable). On TX every chain is one frame.
    Chain,
    /// One frame from the backend that did not reach the driver; the driver's chains
    /// stay its own.
    Frame,
    /// An event that consumed no chain and no frame: a broken ring, a failed backend read.
    Event,
}

/// Declares the reasons, in counter order, with their counter names.
macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, $dir:ident, $unit:ident; )*) => {
        /// Why a packet or descriptor chain was dropped (see the module docs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: [DropReason; [$(stringify!($variant)),*].len()] =
                [$(DropReason::$variant),*];

            /// The counter's name, as every stats output shows it.
            pub const fn name(self) -> &'static str {
                match self {
                    $( DropReason::$variant => $name, )*
                }
            }

            /// The ring this reason belongs to.
            pub const fn direction(self) -> Direction {
                match self {
                    $( DropReason::$variant => Direction::$dir, )*
                }
            }

            /// What one count of this reason stands for.
            pub const fn unit(self) -> DropUnit {
                match self {
                    $( DropReason::$variant => DropUnit::$unit, )*
                }
            }
        }
    };
}

drop_reasons! {
    /// A TX chain with a device-writable descriptor.
    TxWriteOnlyDescriptor => "tx_write_only_descriptor", Tx, Chain;
    /// A TX descriptor outside guest memory.
    TxBadAddress => "tx_bad_address", Tx, Chain;
    /// A TX chain with no descriptor: an avail entry naming no head of the ring, or an
    /// unreadable or invalid indirect table.
    TxEmptyChain => "tx_empty_chain", Tx, Chain;
    /// A TX chain cut short: a descriptor loop, a chain longer than the queue, a `next`
    /// out of range (the walk ends at a descriptor still claiming a successor).
    TxChainTruncated => "tx_chain_truncated", Tx, Chain;
    /// A TX chain of more buffers than a frame can have (the device's gather list).
    TxTooManyBuffers => "tx_too_many_buffers", Tx, Chain;
    /// A TX chain shorter than the virtio-net header, or a header that does not validate
    /// (unknown GSO type, GSO size 0, checksum outside the frame).
    TxMalformedHeader => "tx_malformed_header", Tx, Chain;
    /// A TX header asking for an offload the driver did not negotiate (TSO4/6, ECN,
    /// partial checksum, UDP fragmentation which no device offers).
    TxOffloadNotNegotiated => "tx_offload_not_negotiated", Tx, Chain;
    /// A TX frame larger than the MTU (without GSO) or than the largest packet (with it).
    TxFrameTooLarge => "tx_frame_too_large", Tx, Chain;
    /// A TX frame shorter than an Ethernet header.
    TxRuntFrame => "tx_runt_frame", Tx, Chain;
    /// TX on a started but disabled ring: processed and discarded (vhost-user ring states).
    TxRingDisabled => "tx_ring_disabled", Tx, Chain;
    /// The backend refused the frame (a full port, a link down, a TAP write error).
    TxBackendRefused => "tx_backend_refused", Tx, Chain;
    /// The TX avail ring is unusable (bad ring address, an avail index more than a ring
    /// ahead, unreadable entries); the queue waits for the next kick.
    TxAvailRingBroken => "tx_avail_ring_broken", Tx, Event;
    /// The TX used ring (or its notification fields) could not be written.
    TxUsedRingBroken => "tx_used_ring_broken", Tx, Event;
    /// An RX chain with a device-readable descriptor.
    RxReadOnlyDescriptor => "rx_read_only_descriptor", Rx, Chain;
    /// An RX descriptor outside guest memory.
    RxBadAddress => "rx_bad_address", Rx, Chain;
    /// An RX chain with no descriptor (as for TX).
    RxEmptyChain => "rx_empty_chain", Rx, Chain;
    /// An RX chain cut short (as for TX).
    RxChainTruncated => "rx_chain_truncated", Rx, Chain;
    /// An RX chain of more buffers than the device's scatter list holds.
    RxTooManyBuffers => "rx_too_many_buffers", Rx, Chain;
    /// The first RX chain of a frame too short for the virtio-net header.
    RxShortBuffer => "rx_short_buffer", Rx, Chain;
    /// A frame larger than the driver's buffers (one chain without MRG_RXBUF; the whole
    /// ring, or what was posted ahead of a malformed chain, with it).
    RxBufferTooSmall => "rx_buffer_too_small", Rx, Frame;
    /// A frame from the backend whose header does not validate: the driver is handed only
    /// headers a driver could have sent.
    RxMalformedHeader => "rx_malformed_header", Rx, Frame;
    /// A frame from the backend using an offload the driver did not negotiate.
    RxOffloadNotNegotiated => "rx_offload_not_negotiated", Rx, Frame;
    /// A frame for a started but disabled ring.
    RxRingDisabled => "rx_ring_disabled", Rx, Frame;
    /// A frame not addressed to the driver under the receive filter it set through the
    /// control queue (promiscuous mode off).
    RxFiltered => "rx_filtered", Rx, Frame;
    /// The backend failed a read.
    RxBackendError => "rx_backend_error", Rx, Event;
    /// The RX avail ring is unusable (as for TX).
    RxAvailRingBroken => "rx_avail_ring_broken", Rx, Event;
    /// The RX used ring (or its notification fields) could not be written.
    RxUsedRingBroken => "rx_used_ring_broken", Rx, Event;
}

impl DropReason {
    /// The counter's index in [`DropReason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The direction's avail-ring breakage.
    pub const fn avail_ring_broken(direction: Direction) -> DropReason {
        match direction {
            Direction::Tx => DropReason::TxAvailRingBroken,
            Direction::Rx => DropReason::RxAvailRingBroken,
        }
    }

    /// The direction's used-ring breakage.
    pub const fn used_ring_broken(direction: Direction) -> DropReason {
        match direction {
            Direction::Tx => DropReason::TxUsedRingBroken,
            Direction::Rx => DropReason::RxUsedRingBroken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_matches_index_and_names_are_unique_and_prefixed_by_direction() {
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(names.insert(r.name()), "{} twice", r.name());
            let prefix = match r.direction() {
                Direction::Tx => "tx_",
                Direction::Rx => "rx_",
            };
            assert!(r.name().starts_with(prefix), "{}", r.name());
        }
    }

    #[test]
    fn ring_breakage_is_named_for_its_direction() {
        assert_eq!(
            DropReason::avail_ring_broken(Direction::Tx).name(),
            "tx_avail_ring_broken"
        );
        assert_eq!(
            DropReason::used_ring_broken(Direction::Rx).name(),
            "rx_used_ring_broken"
        );
    }
}
