//! virtio-net feature bits (virtio 1.2 §5.1.3, §6) and what a negotiated set means for one
//! packet's path ([`NetFeatures`], decoded once per negotiation). Which bits a device offers
//! is the device's policy and stays with it; the meaning of each bit is here, once.
//!
//! "host" is the driver's transmit direction (the device is the spec's host), "guest" its
//! receive direction: `HOST_TSO4` lets the driver send TSO frames, `GUEST_TSO4` lets the
//! device deliver them.

use packet_ring::{GsoKind, GuestOffloads, VirtioNetHdr};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VQ,
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_STATUS,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

const fn bit(b: u32) -> u64 {
    1 << b
}

/// Feature bits as masks, named as in the spec (without the `VIRTIO_NET_` prefix).
pub const F_CSUM: u64 = bit(VIRTIO_NET_F_CSUM);
pub const F_GUEST_CSUM: u64 = bit(VIRTIO_NET_F_GUEST_CSUM);
pub const F_MTU: u64 = bit(VIRTIO_NET_F_MTU);
pub const F_MAC: u64 = bit(VIRTIO_NET_F_MAC);
pub const F_GUEST_TSO4: u64 = bit(VIRTIO_NET_F_GUEST_TSO4);
pub const F_GUEST_TSO6: u64 = bit(VIRTIO_NET_F_GUEST_TSO6);
pub const F_GUEST_ECN: u64 = bit(VIRTIO_NET_F_GUEST_ECN);
pub const F_HOST_TSO4: u64 = bit(VIRTIO_NET_F_HOST_TSO4);
pub const F_HOST_TSO6: u64 = bit(VIRTIO_NET_F_HOST_TSO6);
pub const F_HOST_ECN: u64 = bit(VIRTIO_NET_F_HOST_ECN);
pub const F_MRG_RXBUF: u64 = bit(VIRTIO_NET_F_MRG_RXBUF);
pub const F_STATUS: u64 = bit(VIRTIO_NET_F_STATUS);
pub const F_CTRL_VQ: u64 = bit(VIRTIO_NET_F_CTRL_VQ);
pub const F_CTRL_RX: u64 = bit(VIRTIO_NET_F_CTRL_RX);
pub const F_CTRL_MAC_ADDR: u64 = bit(VIRTIO_NET_F_CTRL_MAC_ADDR);
pub const F_MQ: u64 = bit(VIRTIO_NET_F_MQ);
pub const F_RING_INDIRECT_DESC: u64 = bit(VIRTIO_RING_F_INDIRECT_DESC);
pub const F_RING_EVENT_IDX: u64 = bit(VIRTIO_RING_F_EVENT_IDX);
pub const F_VERSION_1: u64 = bit(VIRTIO_F_VERSION_1);

/// Checksum and segmentation offload both ways, ECN (CWR-marked TSO frames) included.
pub const OFFLOAD_FEATURES: u64 = F_CSUM
    | F_GUEST_CSUM
    | F_HOST_TSO4
    | F_HOST_TSO6
    | F_HOST_ECN
    | F_GUEST_TSO4
    | F_GUEST_TSO6
    | F_GUEST_ECN;

/// What a negotiated feature set means for one packet's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetFeatures {
    /// Bytes of virtio-net header in front of every frame: 12 with VERSION_1 or MRG_RXBUF,
    /// else the legacy 10 (virtio 1.2 §5.1.6.1).
    pub hdr_len: usize,
    pub mrg_rxbuf: bool,
    pub event_idx: bool,
    /// The driver drives a control queue (`CTRL_VQ` acked).
    pub ctrl_vq: bool,
    /// Multi-queue negotiated (`MQ` acked).
    pub mq: bool,
    /// The driver may send partial checksums (`CSUM`).
    pub host_csum: bool,
    pub host_tso4: bool,
    pub host_tso6: bool,
    pub host_ecn: bool,
    /// The driver accepts partial checksums (`GUEST_CSUM`).
    pub guest_csum: bool,
    pub guest_tso4: bool,
    pub guest_tso6: bool,
    pub guest_ecn: bool,
}

impl NetFeatures {
    /// Decodes an acked feature set.
    pub fn from_acked(acked: u64) -> Self {
        let has = |f: u64| acked & f != 0;
        let mrg_rxbuf = has(F_MRG_RXBUF);
        Self {
            hdr_len: if has(F_VERSION_1) || mrg_rxbuf {
                VirtioNetHdr::LEN
            } else {
                VirtioNetHdr::LEGACY_LEN
            },
            mrg_rxbuf,
            event_idx: has(F_RING_EVENT_IDX),
            ctrl_vq: has(F_CTRL_VQ),
            mq: has(F_MQ),
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
    pub fn host_offloads(&self) -> GuestOffloads {
        GuestOffloads {
            csum: self.host_csum,
            tso4: self.host_tso4,
            tso6: self.host_tso6,
            ecn: self.host_ecn,
        }
    }

    /// What the driver accepts on RX (what a backend may hand over).
    pub fn guest_offloads(&self) -> GuestOffloads {
        GuestOffloads {
            csum: self.guest_csum,
            tso4: self.guest_tso4,
            tso6: self.guest_tso6,
            ecn: self.guest_ecn,
        }
    }

    /// Whether the driver takes 64 KiB frames on receive (so every receive must have room
    /// for one when the frame's size is not known before it is written).
    pub fn guest_gso(&self) -> bool {
        self.guest_tso4 || self.guest_tso6
    }

    /// Whether the driver may send a packet with this header (offloads it negotiated).
    pub fn tx_offload_allowed(&self, hdr: &VirtioNetHdr) -> bool {
        offloads_accepted(hdr, self.host_offloads())
    }

    /// Whether the driver can receive a packet with this header.
    pub fn rx_offload_allowed(&self, hdr: &VirtioNetHdr) -> bool {
        offloads_accepted(hdr, self.guest_offloads())
    }
}

impl Default for NetFeatures {
    /// Before negotiation: nothing offloaded, legacy header.
    fn default() -> Self {
        Self::from_acked(0)
    }
}

/// Whether a header only uses offloads the receiving side accepts (virtio 1.2 §5.1.6.2,
/// §5.1.6.4): TSO4/6 by feature, ECN only on a TSO frame and only with the ECN feature,
/// UDP fragmentation and USO never (no device offers them), NEEDS_CSUM only with CSUM.
pub fn offloads_accepted(hdr: &VirtioNetHdr, accepted: GuestOffloads) -> bool {
    let Ok((kind, ecn)) = hdr.gso() else {
        return false;
    };
    let gso_ok = match kind {
        GsoKind::None => !ecn,
        GsoKind::TcpV4 => accepted.tso4 && (!ecn || accepted.ecn),
        GsoKind::TcpV6 => accepted.tso6 && (!ecn || accepted.ecn),
        GsoKind::Udp | GsoKind::UdpL4 => false,
    };
    gso_ok && (hdr.flags & VirtioNetHdr::F_NEEDS_CSUM == 0 || accepted.csum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_follows_version_1_and_mrg_rxbuf() {
        assert_eq!(NetFeatures::from_acked(0).hdr_len, 10);
        assert_eq!(NetFeatures::from_acked(F_MRG_RXBUF).hdr_len, 12);
        assert_eq!(NetFeatures::from_acked(F_VERSION_1).hdr_len, 12);
    }

    #[test]
    fn offloads_need_their_feature_bits() {
        let tso = VirtioNetHdr {
            gso_type: VirtioNetHdr::GSO_TCPV4,
            gso_size: 1448,
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            ..Default::default()
        };
        let none = NetFeatures::from_acked(0);
        assert!(!none.tx_offload_allowed(&tso));
        let f = NetFeatures::from_acked(F_VERSION_1 | OFFLOAD_FEATURES);
        assert!(f.tx_offload_allowed(&tso));
        assert!(f.rx_offload_allowed(&tso));
        let no_ecn = NetFeatures::from_acked(OFFLOAD_FEATURES & !F_HOST_ECN & !F_GUEST_ECN);
        let ecn = VirtioNetHdr {
            gso_type: VirtioNetHdr::GSO_TCPV6 | VirtioNetHdr::GSO_ECN,
            ..tso
        };
        assert!(f.tx_offload_allowed(&ecn));
        assert!(!no_ecn.tx_offload_allowed(&ecn));
        assert!(!no_ecn.rx_offload_allowed(&ecn));
        assert!(none.tx_offload_allowed(&VirtioNetHdr::default()));
    }

    #[test]
    fn ecn_without_segmentation_and_udp_kinds_are_never_accepted() {
        let all = NetFeatures::from_acked(OFFLOAD_FEATURES);
        let ecn_alone = VirtioNetHdr {
            gso_type: VirtioNetHdr::GSO_ECN,
            ..Default::default()
        };
        assert!(!all.tx_offload_allowed(&ecn_alone));
        for kind in [VirtioNetHdr::GSO_UDP, VirtioNetHdr::GSO_UDP_L4] {
            let h = VirtioNetHdr {
                gso_type: kind,
                gso_size: 1000,
                ..Default::default()
            };
            assert!(!all.tx_offload_allowed(&h) && !all.rx_offload_allowed(&h));
        }
    }
}
