//! `struct virtio_net_hdr_v1` (virtio 1.2, 5.1.6): the offload metadata every packet carries.
//!
//! The same 12-byte little-endian layout is spoken by the guest driver, by TAP with
//! `IFF_VNET_HDR` (`TUNSETVNETHDRSZ` 12) and, without its last field, by AF_PACKET with
//! `PACKET_VNET_HDR` (10 bytes). Parsing is by byte offset, never by casting guest memory.

use thiserror::Error;

/// Why a header was refused. Guest-controlled input: each variant is a counted drop reason.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum HdrError {
    /// Fewer bytes than the header layout needs.
    #[error("virtio-net header needs {need} bytes, got {got}")]
    Short { need: usize, got: usize },
    /// `gso_type` names no segmentation kind virtio defines.
    #[error("unknown gso_type {0:#x}")]
    UnknownGsoType(u8),
    /// A GSO kind with `gso_size` 0 cannot be segmented.
    #[error("gso_type set with gso_size 0")]
    ZeroGsoSize,
    /// `csum_start + csum_offset` does not leave room for the 16-bit checksum inside the frame.
    #[error("checksum at {start}+{offset} lies outside a {frame_len}-byte frame")]
    ChecksumOutsideFrame {
        start: u16,
        offset: u16,
        frame_len: usize,
    },
}

/// Segmentation kind of a packet (`gso_type` without the ECN bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    /// Not a GSO packet.
    None,
    /// TCP over IPv4 (`VIRTIO_NET_HDR_GSO_TCPV4`).
    TcpV4,
    /// UDP fragmentation offload (`VIRTIO_NET_HDR_GSO_UDP`, legacy UFO).
    Udp,
    /// TCP over IPv6 (`VIRTIO_NET_HDR_GSO_TCPV6`).
    TcpV6,
    /// UDP segmentation offload (`VIRTIO_NET_HDR_GSO_UDP_L4`).
    UdpL4,
}

/// The virtio-net v1 header, decoded into host order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    /// Only meaningful on receive with `VIRTIO_NET_F_MRG_RXBUF`: how many guest buffers the
    /// packet spans.
    pub num_buffers: u16,
}

impl VirtioNetHdr {
    /// Size of `virtio_net_hdr_v1` (with `num_buffers`): what VERSION_1 devices always use.
    pub const LEN: usize = 12;
    /// Size of the legacy `virtio_net_hdr` (no `num_buffers`), as AF_PACKET's `PACKET_VNET_HDR`.
    pub const LEGACY_LEN: usize = 10;
    /// Byte offset of `num_buffers`, for devices that fill it in after placing a packet.
    pub const NUM_BUFFERS_OFFSET: usize = Self::LEGACY_LEN;

    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: checksum from `csum_start` is to be filled in.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: checksum already verified.
    pub const F_DATA_VALID: u8 = 2;
    /// `VIRTIO_NET_HDR_F_RSC_INFO`.
    pub const F_RSC_INFO: u8 = 4;

    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    pub const GSO_UDP: u8 = 3;
    pub const GSO_TCPV6: u8 = 4;
    pub const GSO_UDP_L4: u8 = 5;
    /// `VIRTIO_NET_HDR_GSO_ECN`: the TCP segments carry CWR (needs `*_ECN` features).
    pub const GSO_ECN: u8 = 0x80;

    /// Decodes the 12-byte v1 header from the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, HdrError> {
        let b = Self::prefix(bytes, Self::LEN)?;
        let mut hdr = Self::parse_legacy(b)?;
        hdr.num_buffers = u16::from_le_bytes([b[10], b[11]]);
        Ok(hdr)
    }

    /// Decodes the 10-byte legacy header (AF_PACKET); `num_buffers` is 0.
    pub fn parse_legacy(bytes: &[u8]) -> Result<Self, HdrError> {
        let b = Self::prefix(bytes, Self::LEGACY_LEN)?;
        Ok(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_le_bytes([b[2], b[3]]),
            gso_size: u16::from_le_bytes([b[4], b[5]]),
            csum_start: u16::from_le_bytes([b[6], b[7]]),
            csum_offset: u16::from_le_bytes([b[8], b[9]]),
            num_buffers: 0,
        })
    }

    fn prefix(bytes: &[u8], need: usize) -> Result<&[u8], HdrError> {
        bytes.get(..need).ok_or(HdrError::Short {
            need,
            got: bytes.len(),
        })
    }

    /// Encodes the v1 header (12 bytes).
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        out[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        out
    }

    /// Encodes the legacy 10-byte header (drops `num_buffers`).
    pub fn to_legacy_bytes(&self) -> [u8; Self::LEGACY_LEN] {
        let full = self.to_bytes();
        let mut out = [0u8; Self::LEGACY_LEN];
        out.copy_from_slice(&full[..Self::LEGACY_LEN]);
        out
    }

    /// The segmentation kind and whether the ECN bit is set.
    pub fn gso(&self) -> Result<(GsoKind, bool), HdrError> {
        let ecn = self.gso_type & Self::GSO_ECN != 0;
        let kind = match self.gso_type & !Self::GSO_ECN {
            Self::GSO_NONE => GsoKind::None,
            Self::GSO_TCPV4 => GsoKind::TcpV4,
            Self::GSO_UDP => GsoKind::Udp,
            Self::GSO_TCPV6 => GsoKind::TcpV6,
            Self::GSO_UDP_L4 => GsoKind::UdpL4,
            other => return Err(HdrError::UnknownGsoType(other)),
        };
        Ok((kind, ecn))
    }

    /// Checks the header is self-consistent for a frame of `frame_len` bytes: a known GSO kind
    /// with a non-zero segment size, and a checksum location inside the frame. This is the
    /// net-specific validation a device adds on top of the ring walk.
    pub fn validate(&self, frame_len: usize) -> Result<(), HdrError> {
        let (kind, _ecn) = self.gso()?;
        if kind != GsoKind::None && self.gso_size == 0 {
            return Err(HdrError::ZeroGsoSize);
        }
        if self.flags & Self::F_NEEDS_CSUM != 0 {
            let end = usize::from(self.csum_start) + usize::from(self.csum_offset) + 2;
            if end > frame_len {
                return Err(HdrError::ChecksumOutsideFrame {
                    start: self.csum_start,
                    offset: self.csum_offset,
                    frame_len,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VirtioNetHdr {
        VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            gso_type: VirtioNetHdr::GSO_TCPV4 | VirtioNetHdr::GSO_ECN,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        }
    }

    #[test]
    fn round_trips_v1_layout_little_endian() {
        let h = sample();
        let b = h.to_bytes();
        assert_eq!(b, [1, 0x81, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 3, 0]);
        assert_eq!(VirtioNetHdr::parse(&b).unwrap(), h);
    }

    #[test]
    fn legacy_layout_drops_num_buffers() {
        let h = sample();
        let b = h.to_legacy_bytes();
        assert_eq!(&b[..], &h.to_bytes()[..10]);
        let back = VirtioNetHdr::parse_legacy(&b).unwrap();
        assert_eq!(back.num_buffers, 0);
        assert_eq!(back.gso_size, 1448);
    }

    #[test]
    fn short_input_is_refused() {
        assert_eq!(
            VirtioNetHdr::parse(&[0u8; 11]),
            Err(HdrError::Short { need: 12, got: 11 })
        );
        assert_eq!(
            VirtioNetHdr::parse_legacy(&[0u8; 3]),
            Err(HdrError::Short { need: 10, got: 3 })
        );
    }

    #[test]
    fn gso_kinds_decode_and_unknown_is_refused() {
        let mut h = sample();
        assert_eq!(h.gso(), Ok((GsoKind::TcpV4, true)));
        h.gso_type = VirtioNetHdr::GSO_UDP_L4;
        assert_eq!(h.gso(), Ok((GsoKind::UdpL4, false)));
        h.gso_type = 2;
        assert_eq!(h.gso(), Err(HdrError::UnknownGsoType(2)));
        assert_eq!(h.validate(1500), Err(HdrError::UnknownGsoType(2)));
    }

    #[test]
    fn validate_checks_gso_size_and_checksum_placement() {
        let mut h = sample();
        assert_eq!(h.validate(100), Ok(()));
        // 34 + 16 + 2 = 52 bytes needed.
        assert_eq!(h.validate(52), Ok(()));
        assert!(matches!(
            h.validate(51),
            Err(HdrError::ChecksumOutsideFrame { .. })
        ));
        h.gso_size = 0;
        assert_eq!(h.validate(100), Err(HdrError::ZeroGsoSize));
        h.gso_type = VirtioNetHdr::GSO_NONE;
        h.flags = 0;
        assert_eq!(h.validate(0), Ok(()));
    }
}
