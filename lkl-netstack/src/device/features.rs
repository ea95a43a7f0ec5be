//! virtio-net feature bits (virtio 1.2 §5.1.3, §6) and the negotiated set the data path
//! consults. Bits are offered per device configuration; what the kernel's driver accepts
//! is read once, at DRIVER_OK, into [`NetFeatures`].

use packet_ring::GuestOffloads;

pub(crate) const F_CSUM: u64 = 1 << 0;
pub(crate) const F_GUEST_CSUM: u64 = 1 << 1;
pub(crate) const F_MTU: u64 = 1 << 3;
pub(crate) const F_MAC: u64 = 1 << 5;
pub(crate) const F_GUEST_TSO4: u64 = 1 << 7;
pub(crate) const F_GUEST_TSO6: u64 = 1 << 8;
pub(crate) const F_GUEST_ECN: u64 = 1 << 9;
pub(crate) const F_HOST_TSO4: u64 = 1 << 11;
pub(crate) const F_HOST_TSO6: u64 = 1 << 12;
pub(crate) const F_HOST_ECN: u64 = 1 << 13;
pub(crate) const F_MRG_RXBUF: u64 = 1 << 15;
pub(crate) const F_STATUS: u64 = 1 << 16;
pub(crate) const F_CTRL_VQ: u64 = 1 << 17;
pub(crate) const F_MQ: u64 = 1 << 22;
pub(crate) const F_RING_EVENT_IDX: u64 = 1 << 29;
pub(crate) const F_VERSION_1: u64 = 1 << 32;

/// Offered by every device: the layout (VERSION_1), identity (MAC, MTU), link state
/// (STATUS), receive buffers that merge (MRG_RXBUF) and notification suppression
/// both ways (RING_EVENT_IDX).
pub(crate) const BASE_FEATURES: u64 =
    F_VERSION_1 | F_MAC | F_MTU | F_STATUS | F_MRG_RXBUF | F_RING_EVENT_IDX;

/// Offered with `Offloads::Tso`: checksum and segmentation offload both ways, ECN
/// (CWR-marked TSO frames) included.
pub(crate) const OFFLOAD_FEATURES: u64 = F_CSUM
    | F_GUEST_CSUM
    | F_HOST_TSO4
    | F_HOST_TSO6
    | F_HOST_ECN
    | F_GUEST_TSO4
    | F_GUEST_TSO6
    | F_GUEST_ECN;

/// Offered with more than one queue pair: the driver needs the control queue to turn
/// the extra pairs on (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET).
pub(crate) const MQ_FEATURES: u64 = F_CTRL_VQ | F_MQ;

/// What the data path does differently per negotiated feature. "host" is the kernel's
/// TX (the device is the host of the spec), "guest" its RX.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NetFeatures {
    pub(crate) mrg_rxbuf: bool,
    pub(crate) event_idx: bool,
    pub(crate) host_csum: bool,
    pub(crate) host_tso4: bool,
    pub(crate) host_tso6: bool,
    pub(crate) host_ecn: bool,
    pub(crate) guest_csum: bool,
    pub(crate) guest_tso4: bool,
    pub(crate) guest_tso6: bool,
    pub(crate) guest_ecn: bool,
}

impl NetFeatures {
    /// Decodes the feature bits the driver accepted.
    pub(crate) fn from_bits(bits: u64) -> NetFeatures {
        let has = |f: u64| bits & f != 0;
        NetFeatures {
            mrg_rxbuf: has(F_MRG_RXBUF),
            event_idx: has(F_RING_EVENT_IDX),
            host_csum: has(F_CSUM),
            host_tso4: has(F_HOST_TSO4),
            host_tso6: has(F_HOST_TSO6),
            host_ecn: has(F_HOST_ECN),
            guest_csum: has(F_GUEST_CSUM),
            guest_tso4: has(F_GUEST_TSO4),
            guest_tso6: has(F_GUEST_TSO6),
            guest_ecn: has(F_GUEST_ECN),
        }
    }

    /// What the device accepts from the driver's TX.
    pub(crate) fn host_offloads(&self) -> GuestOffloads {
        GuestOffloads {
            csum: self.host_csum,
            tso4: self.host_tso4,
            tso6: self.host_tso6,
            ecn: self.host_ecn,
        }
    }

    /// What the driver accepts on RX (what a backend may hand over).
    pub(crate) fn guest_offloads(&self) -> GuestOffloads {
        GuestOffloads {
            csum: self.guest_csum,
            tso4: self.guest_tso4,
            tso6: self.guest_tso6,
            ecn: self.guest_ecn,
        }
    }

    /// Whether the kernel takes 64 KiB frames on receive (so every receive must have
    /// room for one).
    pub(crate) fn guest_gso(&self) -> bool {
        self.guest_tso4 || self.guest_tso6
    }
}
