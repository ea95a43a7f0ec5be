//! Packets and batches of packets, with buffers allocated once.

use crate::VirtioNetHdr;

/// One packet: offload metadata plus a frame (Ethernet header onwards) in an owned buffer whose
/// capacity is fixed at creation. Reusing a `Packet` never allocates.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    pub hdr: VirtioNetHdr,
    buf: Box<[u8]>,
    len: usize,
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet")
            .field("hdr", &self.hdr)
            .field("len", &self.len)
            .field("capacity", &self.buf.len())
            .finish()
    }
}

impl Packet {
    /// A packet whose buffer holds up to `capacity` frame bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            hdr: VirtioNetHdr::default(),
            buf: vec![0u8; capacity].into_boxed_slice(),
            len: 0,
        }
    }

    /// Largest frame this packet's buffer holds.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The frame bytes.
    pub fn frame(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Frame length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole buffer, to be filled in place before [`Packet::set_len`].
    pub fn buf_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Sets the frame length after filling [`Packet::buf_mut`]; `false` (and no change) when
    /// `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > self.buf.len() {
            return false;
        }
        self.len = len;
        true
    }

    /// Replaces header and frame by copies of `hdr` and `frame`; `false` (and no change) when the
    /// frame does not fit.
    pub fn fill(&mut self, hdr: VirtioNetHdr, frame: &[u8]) -> bool {
        let Some(dst) = self.buf.get_mut(..frame.len()) else {
            return false;
        };
        dst.copy_from_slice(frame);
        self.hdr = hdr;
        self.len = frame.len();
        true
    }

    /// Copies header and frame from `other`; `false` when the frame does not fit.
    pub fn copy_from(&mut self, other: &Packet) -> bool {
        self.fill(other.hdr, other.frame())
    }
}

/// A fixed number of preallocated packets, of which the first `len()` are in use. Batches are
/// how queue pairs and ports exchange packets: one call per batch, not per packet.
#[derive(Debug)]
pub struct PacketBatch {
    slots: Vec<Packet>,
    len: usize,
}

impl PacketBatch {
    /// A batch of `count` packets of `buf_size` bytes each, all allocated now.
    pub fn new(count: usize, buf_size: usize) -> Self {
        Self {
            slots: (0..count)
                .map(|_| Packet::with_capacity(buf_size))
                .collect(),
            len: 0,
        }
    }

    /// How many packets the batch can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Packets in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no packet is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether every slot is in use.
    pub fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }

    /// Marks every packet unused (buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The next unused slot, to fill in place; it becomes part of the batch only on
    /// [`PacketBatch::commit`].
    pub fn next_slot(&mut self) -> Option<&mut Packet> {
        self.slots.get_mut(self.len)
    }

    /// Every unused slot, to fill several in place (e.g. one `recvmmsg`); they join the batch
    /// with [`PacketBatch::commit_n`].
    pub fn spare_mut(&mut self) -> &mut [Packet] {
        &mut self.slots[self.len..]
    }

    /// Adds the first `n` spare slots to the batch (at most as many as there are).
    pub fn commit_n(&mut self, n: usize) {
        self.len = (self.len + n).min(self.slots.len());
    }

    /// Adds the slot last returned by [`PacketBatch::next_slot`] to the batch.
    pub fn commit(&mut self) {
        if self.len < self.slots.len() {
            self.len += 1;
        }
    }

    /// Appends a copy of `hdr` + `frame`; `false` when the batch is full or the frame too big.
    pub fn push(&mut self, hdr: VirtioNetHdr, frame: &[u8]) -> bool {
        let filled = self.next_slot().is_some_and(|slot| slot.fill(hdr, frame));
        if filled {
            self.commit();
        }
        filled
    }

    /// The packets in use.
    pub fn packets(&self) -> &[Packet] {
        &self.slots[..self.len]
    }

    /// The packets in use, mutably.
    pub fn packets_mut(&mut self) -> &mut [Packet] {
        &mut self.slots[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_fills_in_place_and_refuses_when_full_or_too_big() {
        let mut b = PacketBatch::new(2, 8);
        assert!(b.push(VirtioNetHdr::default(), &[1, 2, 3]));
        assert!(!b.push(VirtioNetHdr::default(), &[0; 9]));
        let slot = b.next_slot().unwrap();
        slot.buf_mut()[..2].copy_from_slice(&[7, 8]);
        assert!(slot.set_len(2));
        assert!(!slot.set_len(9));
        b.commit();
        assert!(b.is_full());
        assert!(!b.push(VirtioNetHdr::default(), &[1]));
        assert_eq!(b.packets()[0].frame(), &[1, 2, 3]);
        assert_eq!(b.packets()[1].frame(), &[7, 8]);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.capacity(), 2);
        assert_eq!(b.spare_mut().len(), 2);
        b.spare_mut()[0].fill(VirtioNetHdr::default(), &[5]);
        b.commit_n(5);
        assert!(b.is_full());
        assert_eq!(b.packets()[0].frame(), &[5]);
    }
}
