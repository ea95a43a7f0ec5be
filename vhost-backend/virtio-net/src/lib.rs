//! knic's one virtio-net data path, whatever the transport.
//!
//! Two front doors drive it: the vhost-user device (`vhost-backend`, a guest's rings in
//! shared memory, signalled through call eventfds) and the library kernel's virtio-mmio
//! device (`lkl-netstack`, the kernel driver's rings in the library's RAM, signalled with a
//! kernel interrupt). Both hand this crate a `virtio_queue::Queue` plus guest memory; what
//! the crate decides comes back as values ("publish these used entries", "notify?", "drop,
//! counted under this reason"). It never signals, never logs, never blocks: the transport
//! owns threads, eventfds, interrupts and rate-limited logging.
//!
//! * [`features`]: the virtio-net feature bits and what a negotiated set means per packet;
//! * [`ring`]: the split-ring walk both devices share (popping chains, the one walk over a
//!   chain's descriptors, used-ring publication with one index store per frame, the
//!   EVENT_IDX decisions both ways);
//! * [`tx`], [`rx`]: the TX and RX engines: header checks both devices apply, reading a TX
//!   chain into a packet, placing a packet into RX chains (MRG_RXBUF, `num_buffers`);
//! * [`guest_map`]: guest memory and a queue's rings mapped once per batch, for the
//!   fast path of the common chain shapes ([`tx::read_mapped_chain`],
//!   [`ring::return_used_mapped`]);
//! * [`direct`]: one copy between two rings, a TX chain read straight into the buffers
//!   another driver posted (issue 8's one-copy path between a guest and the library);
//! * [`drops`]: the one drop vocabulary, whose names are the metric names;
//! * [`counters`]: per-queue-pair counters, single-writer, lock-free;
//! * [`audit`]: the invariants both devices keep under hostile input, checked by both fuzz
//!   harnesses.

pub mod audit;
pub mod counters;
pub mod direct;
pub mod drops;
pub mod features;
pub mod guest_map;
pub mod ring;
pub mod rx;
pub mod tx;

pub use counters::{Counter, LARGE_FRAME, QueueCounters};
pub use drops::{Direction, DropReason, DropUnit};
pub use features::NetFeatures;
pub use ring::RingError;
pub use rx::{Placement, RxBuffers, RxChainError};
pub use tx::{TxChainError, TxLimits};
