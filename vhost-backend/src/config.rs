//! The virtio-net device configuration space (virtio 1.2 §5.1.4), served through
//! `VHOST_USER_GET_CONFIG`.

use virtio_bindings::virtio_net::VIRTIO_NET_S_LINK_UP;

/// The fields of `struct virtio_net_config` the device offers (MAC, STATUS, MQ, MTU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    pub mac: [u8; 6],
    pub max_queue_pairs: u16,
    pub mtu: u16,
}

impl NetConfig {
    /// Bytes of `virtio_net_config` up to and including `mtu`.
    pub const LEN: usize = 12;

    /// The configuration space in its little-endian wire layout: `mac[6]`, status, max pairs, mtu.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..6].copy_from_slice(&self.mac);
        // The link is up whenever a frontend can read this: the uplink outlives connections.
        b[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        b[8..10].copy_from_slice(&self.max_queue_pairs.to_le_bytes());
        b[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        b
    }

    /// `size` bytes from `offset`; reads past the end return zeroes (the spec's reserved space),
    /// so a frontend asking for the whole struct gets a full-length answer.
    pub fn read(&self, offset: u32, size: u32) -> Vec<u8> {
        let bytes = self.to_bytes();
        (offset..offset.saturating_add(size))
            .map(|i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| bytes.get(i))
                    .copied()
                    .unwrap_or(0)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_partial_reads() {
        let c = NetConfig {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            max_queue_pairs: 4,
            mtu: 9000,
        };
        assert_eq!(
            c.to_bytes(),
            [0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0, 4, 0, 0x28, 0x23]
        );
        assert_eq!(c.read(8, 2), vec![4, 0]);
        assert_eq!(c.read(10, 6), vec![0x28, 0x23, 0, 0, 0, 0]);
        assert_eq!(c.read(u32::MAX - 1, 4), vec![0]);
    }
}
