//! A packet sink with a room budget the test sets, as the agent's seam reports its free
//! buffers: the test double for backpressure. It records every frame it takes and refuses
//! (counting) anything beyond the budget, so a sender that ignores
//! [`PacketSink::room`] fails its test instead of passing unnoticed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

use packet_ring::{PacketBatch, PacketSink, PortError};

#[derive(Debug)]
pub struct BudgetSink {
    room: Arc<AtomicUsize>,
    taken: Sender<Vec<u8>>,
    refused: Arc<AtomicUsize>,
}

/// What the test holds of a [`BudgetSink`]: the budget to set, the frames taken (in
/// order), and the count of those refused.
#[derive(Debug)]
pub struct Budget {
    pub room: Arc<AtomicUsize>,
    pub taken: Receiver<Vec<u8>>,
    pub refused: Arc<AtomicUsize>,
}

impl Budget {
    pub fn set(&self, room: usize) {
        self.room.store(room, Ordering::SeqCst);
    }

    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// A sink with room for `room` frames, and the test's handle on it.
pub fn budget_sink(room: usize) -> (BudgetSink, Budget) {
    let room = Arc::new(AtomicUsize::new(room));
    let refused = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = channel();
    (
        BudgetSink {
            room: Arc::clone(&room),
            taken: tx,
            refused: Arc::clone(&refused),
        },
        Budget {
            room,
            taken: rx,
            refused,
        },
    )
}

impl PacketSink for BudgetSink {
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        let room = self.room.load(Ordering::SeqCst);
        let take = batch.len().min(room);
        for p in &batch.packets()[..take] {
            let _ = self.taken.send(p.frame().to_vec());
        }
        self.room.store(room - take, Ordering::SeqCst);
        self.refused.fetch_add(batch.len() - take, Ordering::SeqCst);
        Ok(take)
    }

    fn room(&mut self) -> usize {
        self.room.load(Ordering::SeqCst)
    }
}
