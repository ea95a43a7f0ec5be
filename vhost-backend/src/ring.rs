//! The split-ring walk, used-ring publication and notification decisions are the engine's
//! (`knic_virtio_net::ring`), shared with the library kernel's device; re-exported here for
//! the device's modules.

pub use knic_virtio_net::ring::{
    RingError, ask_for_kick, avail_is_empty, needs_notification, pop_chain, return_used,
    return_used_mapped, return_used_together,
};
