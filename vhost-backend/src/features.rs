//! Which virtio-net feature bits the device offers, and what a negotiated set means for the data
//! path. Mirrors virtio 1.2 §5.1.3 (feature bits) and §5.1.6 (header layout rules).

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VQ,
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_STATUS,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use packet_ring::{GsoKind, VirtioNetHdr};

const fn bit(b: u32) -> u64 {
    1 << b
}

/// The control-queue features. QEMU, cloud-hypervisor and DPDK virtio-user emulate the
/// control queue themselves and never ack these to a backend; a frontend that passes the
/// queue through acks them and gets the device's control queue (`ctrl`).
pub const CTRL_FEATURES: u64 =
    bit(VIRTIO_NET_F_CTRL_VQ) | bit(VIRTIO_NET_F_CTRL_RX) | bit(VIRTIO_NET_F_CTRL_MAC_ADDR);

/// Every virtio feature the device offers.
pub const OFFERED_FEATURES: u64 = CTRL_FEATURES
    | bit(VIRTIO_F_VERSION_1)
    | bit(VIRTIO_RING_F_EVENT_IDX)
    | bit(VIRTIO_RING_F_INDIRECT_DESC)
    | bit(VIRTIO_NET_F_MAC)
    | bit(VIRTIO_NET_F_MTU)
    | bit(VIRTIO_NET_F_STATUS)
    | bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_HOST_ECN)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN)
    | bit(VIRTIO_NET_F_MRG_RXBUF)
    | bit(VIRTIO_NET_F_MQ)
    | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// vhost-user protocol features the device offers (the rust-vmm framework implements them).
pub fn offered_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::RESET_DEVICE
}

/// What a negotiated feature set means for one packet's path, decoded once per negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetFeatures {
    /// Bytes of virtio-net header in front of every frame: 12 with VERSION_1 or MRG_RXBUF,
    /// else the legacy 10 (virtio 1.2 §5.1.6.1).
    pub hdr_len: usize,
    pub mrg_rxbuf: bool,
    pub event_idx: bool,
    /// The frontend passes the control queue through (`CTRL_VQ` acked).
    pub ctrl_vq: bool,
    /// Multi-queue negotiated (`MQ` acked).
    pub mq: bool,
    /// Guest may send partial checksums (`CSUM`).
    pub host_csum: bool,
    pub host_tso4: bool,
    pub host_tso6: bool,
    pub host_ecn: bool,
    /// Guest accepts partial checksums (`GUEST_CSUM`).
    pub guest_csum: bool,
    pub guest_tso4: bool,
    pub guest_tso6: bool,
    pub guest_ecn: bool,
}

impl NetFeatures {
    /// Decodes an acked feature set.
    pub fn from_acked(acked: u64) -> Self {
        let has = |b: u32| acked & bit(b) != 0;
        let version_1 = has(VIRTIO_F_VERSION_1);
        let mrg_rxbuf = has(VIRTIO_NET_F_MRG_RXBUF);
        Self {
            hdr_len: if version_1 || mrg_rxbuf {
                VirtioNetHdr::LEN
            } else {
                VirtioNetHdr::LEGACY_LEN
            },
            mrg_rxbuf,
            event_idx: has(VIRTIO_RING_F_EVENT_IDX),
            ctrl_vq: has(VIRTIO_NET_F_CTRL_VQ),
            mq: has(VIRTIO_NET_F_MQ),
            host_csum: has(VIRTIO_NET_F_CSUM),
            host_tso4: has(VIRTIO_NET_F_HOST_TSO4),
            host_tso6: has(VIRTIO_NET_F_HOST_TSO6),
            host_ecn: has(VIRTIO_NET_F_HOST_ECN),
            guest_csum: has(VIRTIO_NET_F_GUEST_CSUM),
            guest_tso4: has(VIRTIO_NET_F_GUEST_TSO4),
            guest_tso6: has(VIRTIO_NET_F_GUEST_TSO6),
            guest_ecn: has(VIRTIO_NET_F_GUEST_ECN),
        }
    }

    /// Whether the guest may send a packet with this header (offloads it negotiated).
    pub fn tx_offload_allowed(&self, hdr: &VirtioNetHdr) -> bool {
        Self::offload_allowed(
            hdr,
            self.host_csum,
            self.host_tso4,
            self.host_tso6,
            self.host_ecn,
        )
    }

    /// Whether the guest can receive a packet with this header.
    pub fn rx_offload_allowed(&self, hdr: &VirtioNetHdr) -> bool {
        Self::offload_allowed(
            hdr,
            self.guest_csum,
            self.guest_tso4,
            self.guest_tso6,
            self.guest_ecn,
        )
    }

    fn offload_allowed(hdr: &VirtioNetHdr, csum: bool, tso4: bool, tso6: bool, ecn: bool) -> bool {
        if hdr.flags & VirtioNetHdr::F_NEEDS_CSUM != 0 && !csum {
            return false;
        }
        match hdr.gso() {
            Ok((GsoKind::None, _)) => true,
            Ok((GsoKind::TcpV4, e)) => tso4 && (!e || ecn),
            Ok((GsoKind::TcpV6, e)) => tso6 && (!e || ecn),
            // UFO/USO are not offered, so a guest cannot have negotiated them.
            Ok((GsoKind::Udp | GsoKind::UdpL4, _)) | Err(_) => false,
        }
    }
}

impl Default for NetFeatures {
    /// Before negotiation: nothing offloaded, legacy header.
    fn default() -> Self {
        Self::from_acked(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_follows_version_1_and_mrg_rxbuf() {
        assert_eq!(NetFeatures::from_acked(0).hdr_len, 10);
        assert_eq!(
            NetFeatures::from_acked(bit(VIRTIO_NET_F_MRG_RXBUF)).hdr_len,
            12
        );
        assert_eq!(NetFeatures::from_acked(bit(VIRTIO_F_VERSION_1)).hdr_len, 12);
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
        let f = NetFeatures::from_acked(OFFERED_FEATURES);
        assert!(f.tx_offload_allowed(&tso));
        assert!(f.rx_offload_allowed(&tso));
        let no_ecn = NetFeatures::from_acked(
            OFFERED_FEATURES & !bit(VIRTIO_NET_F_HOST_ECN) & !bit(VIRTIO_NET_F_GUEST_ECN),
        );
        let ecn = VirtioNetHdr {
            gso_type: VirtioNetHdr::GSO_TCPV6 | VirtioNetHdr::GSO_ECN,
            ..tso
        };
        assert!(f.tx_offload_allowed(&ecn));
        assert!(!no_ecn.tx_offload_allowed(&ecn));
        assert!(!no_ecn.rx_offload_allowed(&ecn));
        assert!(none.tx_offload_allowed(&VirtioNetHdr::default()));
    }
}
