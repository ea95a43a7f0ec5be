//! A one-way packet channel: a data ring of filled packets and a free ring that returns their
//! buffers. All `capacity` buffers are allocated when the channel is made and then circulate.

use crate::spsc::{Consumer, Producer, ring};
use crate::{Packet, PacketBatch, VirtioNetHdr};

/// Creates a channel carrying at most `capacity` packets of up to `buf_size` frame bytes.
pub fn packet_channel(capacity: usize, buf_size: usize) -> (PacketSender, PacketReceiver) {
    let (data_tx, data_rx) = ring(capacity);
    let (mut free_tx, free_rx) = ring(capacity);
    let mut left = free_tx.capacity();
    free_tx.push_batch(usize::MAX, || {
        left = left.checked_sub(1)?;
        Some(Packet::with_capacity(buf_size))
    });
    (
        PacketSender {
            data: data_tx,
            free: free_rx,
        },
        PacketReceiver {
            data: data_rx,
            free: free_tx,
        },
    )
}

/// Producing end: takes free buffers, fills them, publishes them.
#[derive(Debug)]
pub struct PacketSender {
    data: Producer<Packet>,
    free: Consumer<Packet>,
}

impl PacketSender {
    /// Copies `hdr` + `frame` into a free buffer and publishes it. `false` when no buffer is
    /// free (the receiver is behind) or the frame does not fit or is empty (an empty packet
    /// is the mark of a refused one, which the receiver skips).
    pub fn send(&mut self, hdr: VirtioNetHdr, frame: &[u8]) -> bool {
        let Some(mut pkt) = self.free.pop() else {
            return false;
        };
        let ok = !frame.is_empty() && pkt.fill(hdr, frame);
        if !ok {
            // Published empty, the buffer goes back through the receiver, which skips it.
            pkt.set_len(0);
        }
        // The data ring has a slot for every buffer in circulation, so this push is never
        // refused (a refused one would only take the buffer out of circulation).
        let _ = self.data.push(pkt);
        ok
    }

    /// Copies as many packets of `batch` as there are free buffers, publishing them once.
    /// Returns how many were sent (frames too big for this channel's buffers, or empty, are
    /// not).
    pub fn send_batch(&mut self, batch: &PacketBatch) -> usize {
        let mut src = batch.packets().iter();
        let free = &mut self.free;
        let mut sent = 0;
        self.data.push_batch(batch.len(), || {
            let s = src.next()?;
            let mut pkt = free.pop()?;
            if !s.is_empty() && pkt.copy_from(s) {
                sent += 1;
            } else {
                pkt.set_len(0);
            }
            Some(pkt)
        });
        sent
    }
}

/// Consuming end: reads published packets and returns their buffers.
#[derive(Debug)]
pub struct PacketReceiver {
    data: Consumer<Packet>,
    free: Producer<Packet>,
}

impl PacketReceiver {
    /// Hands up to `max` waiting packets to `f`, then returns their buffers. Zero-length packets
    /// (frames that did not fit on the sending side) are skipped and do not count against
    /// `max`, so fewer than `max` only when no packet is left. Returns how many reached `f`.
    pub fn recv_with(&mut self, max: usize, mut f: impl FnMut(&Packet)) -> usize {
        let mut delivered = 0;
        let free = &mut self.free;
        while delivered < max {
            let popped = self.data.pop_batch(max - delivered, |pkt| {
                if !pkt.is_empty() {
                    f(&pkt);
                    delivered += 1;
                }
                let _ = free.push(pkt);
            });
            if popped == 0 {
                break;
            }
        }
        delivered
    }

    /// Copies waiting packets into `batch` until it is full; returns how many were appended.
    pub fn recv_batch(&mut self, batch: &mut PacketBatch) -> usize {
        let room = batch.capacity() - batch.len();
        self.recv_with(room, |pkt| {
            if let Some(slot) = batch.next_slot()
                && slot.copy_from(pkt)
            {
                batch.commit();
            }
        })
    }

    /// Whether no packet is waiting.
    pub fn is_empty(&mut self) -> bool {
        self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_circulate_without_loss() {
        let (mut tx, mut rx) = packet_channel(4, 64);
        for round in 0..10u8 {
            for i in 0..4u8 {
                assert!(tx.send(VirtioNetHdr::default(), &[round, i]));
            }
            // Ring of 4 buffers is exhausted until the receiver returns them.
            assert!(!tx.send(VirtioNetHdr::default(), &[0]));
            let mut seen = Vec::new();
            assert_eq!(rx.recv_with(16, |p| seen.push(p.frame().to_vec())), 4);
            assert_eq!(seen, (0..4).map(|i| vec![round, i]).collect::<Vec<_>>());
        }
    }

    #[test]
    fn batches_move_and_oversized_frames_are_refused() {
        let (mut tx, mut rx) = packet_channel(8, 16);
        let mut out = PacketBatch::new(3, 64);
        assert!(out.push(VirtioNetHdr::default(), &[1; 10]));
        assert!(out.push(VirtioNetHdr::default(), &[2; 32]));
        assert!(out.push(VirtioNetHdr::default(), &[3; 16]));
        assert!(!tx.send(VirtioNetHdr::default(), &[0; 17]));
        assert_eq!(tx.send_batch(&out), 2);
        let mut inb = PacketBatch::new(8, 64);
        assert_eq!(rx.recv_batch(&mut inb), 2);
        assert_eq!(inb.packets()[0].frame(), &[1; 10]);
        assert_eq!(inb.packets()[1].frame(), &[3; 16]);
        assert!(rx.is_empty());
    }

    #[test]
    fn a_refused_frame_does_not_hide_the_packets_behind_it() {
        // Found by lkl-netstack's device_queues fuzz target: a one-packet receive met the
        // refused frame's empty mark, said "nothing", and the frame behind it stalled (the
        // port's readiness was already consumed).
        let (mut tx, mut rx) = packet_channel(4, 16);
        assert!(!tx.send(VirtioNetHdr::default(), &[0; 17]));
        assert!(
            !tx.send(VirtioNetHdr::default(), &[]),
            "empty frames are refused"
        );
        assert!(tx.send(VirtioNetHdr::default(), &[7; 16]));
        let mut one = PacketBatch::new(1, 16);
        assert_eq!(rx.recv_batch(&mut one), 1);
        assert_eq!(one.packets()[0].frame(), &[7; 16]);
        assert!(rx.is_empty());
    }
}
