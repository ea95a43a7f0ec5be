//! The TX engine: what a driver's transmit chain must be (virtio 1.2 §5.1.6.2), and reading
//! one into a [`Packet`].
//!
//! [`check_header`] is the one header check of both devices: it parses the virtio-net header
//! in the negotiated layout, validates it against the frame, and refuses offloads the driver
//! did not negotiate and frames that are runts or too large. [`read_chain`] copies a chain
//! into a packet and applies it; a device that hands the driver's own buffers to its backend
//! (the library kernel's TAP, by `writev`) maps the chain and applies the check alone.
//!
//! The chain is walked once with `virtio-queue`'s descriptor iterator (which bounds the walk by
//! the queue size, refuses nested indirect tables and stops at a 4 GiB total); every byte is
//! copied out through `vm-memory`, which refuses addresses outside the guest's regions. On top
//! of that this module checks what is net-specific: descriptor direction, header length and
//! consistency, frame size, and whether the iterator stopped early (a loop or a bad `next`).

use std::ops::{ControlFlow, Deref};

use packet_ring::{HdrError, Packet, VirtioNetHdr};
use thiserror::Error;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestMemory};

use crate::drops::DropReason;
use crate::features::NetFeatures;
use crate::ring::{Access, ShapeError, walk_chain};

/// Largest Ethernet header in front of an MTU-sized payload (with one VLAN tag).
pub const ETH_VLAN_HLEN: usize = 18;
/// Smallest frame worth sending: an Ethernet header.
pub const ETH_HLEN: usize = 14;

/// Why a TX chain was refused. All are the guest's doing.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum TxChainError {
    #[error("descriptor {position} of the chain is device-writable")]
    WriteOnlyDescriptor { position: usize },
    #[error("chain carries {got} bytes, less than the {need}-byte virtio-net header")]
    ShortHeader { got: usize, need: usize },
    #[error("descriptor {addr:#x}+{len} lies outside guest memory")]
    BadAddress { addr: u64, len: u32 },
    #[error("frame of at least {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    #[error("{len}-byte frame is shorter than an Ethernet header")]
    RuntFrame { len: usize },
    #[error("chain has no descriptor")]
    EmptyChain,
    #[error("chain ends in a descriptor that claims a successor (loop or bad next index)")]
    ChainTruncated,
    #[error("invalid virtio-net header")]
    BadHeader(#[source] HdrError),
    #[error("header asks for an offload the guest did not negotiate")]
    OffloadNotNegotiated,
}

impl From<ShapeError> for TxChainError {
    fn from(e: ShapeError) -> Self {
        match e {
            ShapeError::WrongAccess { position } => Self::WriteOnlyDescriptor { position },
            ShapeError::Empty => Self::EmptyChain,
            ShapeError::Truncated => Self::ChainTruncated,
        }
    }
}

impl TxChainError {
    /// The counter this refusal is counted under.
    pub fn reason(&self) -> DropReason {
        match self {
            Self::WriteOnlyDescriptor { .. } => DropReason::TxWriteOnlyDescriptor,
            Self::ShortHeader { .. } | Self::BadHeader(_) => DropReason::TxMalformedHeader,
            Self::BadAddress { .. } => DropReason::TxBadAddress,
            Self::FrameTooLarge { .. } => DropReason::TxFrameTooLarge,
            Self::RuntFrame { .. } => DropReason::TxRuntFrame,
            Self::EmptyChain => DropReason::TxEmptyChain,
            Self::ChainTruncated => DropReason::TxChainTruncated,
            Self::OffloadNotNegotiated => DropReason::TxOffloadNotNegotiated,
        }
    }
}

/// What a TX chain may contain, fixed per negotiation.
#[derive(Debug, Clone, Copy)]
pub struct TxLimits {
    pub features: NetFeatures,
    /// Largest frame without GSO: MTU plus an Ethernet+VLAN header.
    pub max_plain_frame: usize,
}

impl TxLimits {
    /// The limits of a device with `mtu` under `features`.
    pub fn new(features: NetFeatures, mtu: u16) -> Self {
        Self {
            features,
            max_plain_frame: usize::from(mtu) + ETH_VLAN_HLEN,
        }
    }
}

/// Checks a TX chain's header against its frame: `raw` holds the `got` header bytes the
/// chain had (of `limits.features.hdr_len`), `frame_len` the bytes after them. Returns the
/// header to send on, `num_buffers` cleared (it means nothing on transmit, virtio 1.2
/// §5.1.6.2).
pub fn check_header(
    raw: &[u8; VirtioNetHdr::LEN],
    got: usize,
    frame_len: usize,
    limits: &TxLimits,
) -> Result<VirtioNetHdr, TxChainError> {
    let need = limits.features.hdr_len;
    if got < need {
        return Err(TxChainError::ShortHeader { got, need });
    }
    let mut hdr = if need == VirtioNetHdr::LEN {
        VirtioNetHdr::parse(raw)
    } else {
        VirtioNetHdr::parse_legacy(raw)
    }
    .map_err(TxChainError::BadHeader)?;
    hdr.num_buffers = 0;
    if frame_len < ETH_HLEN {
        return Err(TxChainError::RuntFrame { len: frame_len });
    }
    hdr.validate(frame_len).map_err(TxChainError::BadHeader)?;
    if !limits.features.tx_offload_allowed(&hdr) {
        return Err(TxChainError::OffloadNotNegotiated);
    }
    if hdr.gso_type == VirtioNetHdr::GSO_NONE && frame_len > limits.max_plain_frame {
        return Err(TxChainError::FrameTooLarge {
            len: frame_len,
            max: limits.max_plain_frame,
        });
    }
    Ok(hdr)
}

/// Copies the header and frame of the TX `chain` into `pkt` and validates them. On error
/// `pkt`'s contents are unspecified (it is a reusable slot, not yet part of any batch).
pub fn read_chain<M>(
    chain: &DescriptorChain<M>,
    pkt: &mut Packet,
    limits: &TxLimits,
) -> Result<(), TxChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let hdr_len = limits.features.hdr_len;
    let mem = chain.memory();
    let mut hdr_buf = [0u8; VirtioNetHdr::LEN];
    let mut hdr_got = 0usize;
    let mut frame_len = 0usize;
    let capacity = pkt.capacity();

    walk_chain::<_, TxChainError>(chain, Access::DeviceReads, |desc| {
        let bad = TxChainError::BadAddress {
            addr: desc.addr().0,
            len: desc.len(),
        };
        let mut addr = desc.addr();
        let mut left = desc.len() as usize;
        if hdr_got < hdr_len {
            let n = left.min(hdr_len - hdr_got);
            mem.read_slice(&mut hdr_buf[hdr_got..hdr_got + n], addr)
                .map_err(|_| bad)?;
            hdr_got += n;
            left -= n;
            addr = addr.checked_add(n as u64).ok_or(bad)?;
        }
        if left > 0 {
            let end = frame_len + left;
            let dst = pkt
                .buf_mut()
                .get_mut(frame_len..end)
                .ok_or(TxChainError::FrameTooLarge {
                    len: end,
                    max: capacity,
                })?;
            mem.read_slice(dst, addr).map_err(|_| bad)?;
            frame_len = end;
        }
        Ok(ControlFlow::Continue(()))
    })?;

    let hdr = check_header(&hdr_buf, hdr_got, frame_len, limits)?;
    pkt.hdr = hdr;
    // Cannot fail: frame_len was bounded by the buffer above.
    pkt.set_len(frame_len);
    Ok(())
}
