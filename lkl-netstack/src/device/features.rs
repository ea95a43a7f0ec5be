//! Which virtio-net feature bits (virtio 1.2 §5.1.3, §6) the library kernel's device
//! offers. What the driver accepted is read once, at DRIVER_OK, into the engine's
//! [`NetFeatures`] (`knic-virtio-net`, shared with the vhost-user device), which is what the
//! data path consults.

pub(crate) use knic_virtio_net::NetFeatures;
pub(crate) use knic_virtio_net::features::{
    F_CSUM, F_HOST_ECN, F_HOST_TSO4, F_HOST_TSO6, OFFLOAD_FEATURES,
};
use knic_virtio_net::features::{
    F_CTRL_VQ, F_MAC, F_MQ, F_MRG_RXBUF, F_MTU, F_RING_EVENT_IDX, F_STATUS, F_VERSION_1,
};

/// Offered by every device: the layout (VERSION_1), identity (MAC, MTU), link state
/// (STATUS), receive buffers that merge (MRG_RXBUF) and notification suppression
/// both ways (RING_EVENT_IDX). With `Offloads::Tso` also [`OFFLOAD_FEATURES`]: checksum
/// and segmentation offload both ways, ECN (CWR-marked TSO frames) included.
pub(crate) const BASE_FEATURES: u64 =
    F_VERSION_1 | F_MAC | F_MTU | F_STATUS | F_MRG_RXBUF | F_RING_EVENT_IDX;

/// Offered with more than one queue pair: the driver needs the control queue to turn
/// the extra pairs on (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET).
pub(crate) const MQ_FEATURES: u64 = F_CTRL_VQ | F_MQ;
