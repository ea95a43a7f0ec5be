//! Which virtio-net feature bits the vhost-user device offers. What a negotiated set means for
//! the data path ([`NetFeatures`]) is the engine's (`knic-virtio-net`), shared with the
//! library kernel's device.

pub use knic_virtio_net::NetFeatures;
use knic_virtio_net::features::{
    F_CTRL_MAC_ADDR, F_CTRL_RX, F_CTRL_VQ, F_MAC, F_MQ, F_MRG_RXBUF, F_MTU, F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC, F_STATUS, F_VERSION_1, OFFLOAD_FEATURES,
};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};

/// The control-queue features. QEMU, cloud-hypervisor and DPDK virtio-user emulate the
/// control queue themselves and never ack these to a backend; a frontend that passes the
/// queue through acks them and gets the device's control queue (`ctrl`).
pub const CTRL_FEATURES: u64 = F_CTRL_VQ | F_CTRL_RX | F_CTRL_MAC_ADDR;

/// Every virtio feature the device offers.
pub const OFFERED_FEATURES: u64 = CTRL_FEATURES
    | F_VERSION_1
    | F_RING_EVENT_IDX
    | F_RING_INDIRECT_DESC
    | F_MAC
    | F_MTU
    | F_STATUS
    | OFFLOAD_FEATURES
    | F_MRG_RXBUF
    | F_MQ
    | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// vhost-user protocol features the device offers (the rust-vmm framework implements them).
pub fn offered_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::RESET_DEVICE
}

#[cfg(test)]
mod tests {
    use packet_ring::VirtioNetHdr;

    use super::*;

    #[test]
    fn the_offered_set_means_every_offload_with_mergeable_buffers() {
        let f = NetFeatures::from_acked(OFFERED_FEATURES);
        assert_eq!(f.hdr_len, VirtioNetHdr::LEN);
        assert!(f.mrg_rxbuf && f.event_idx && f.mq && f.ctrl_vq);
        assert_eq!(f.host_offloads(), f.guest_offloads());
        let all = f.host_offloads();
        assert!(all.csum && all.tso4 && all.tso6 && all.ecn);
    }
}
