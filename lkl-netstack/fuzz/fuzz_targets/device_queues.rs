//! The library kernel's virtio-net data path under hostile input: guest memory, the
//! driver's TX and RX rings (with and without MRG_RXBUF, EVENT_IDX and offloads), and
//! the port's packets with arbitrary virtio-net headers and lengths all come from the
//! input. The harness and its invariants are `lkl_netstack::fuzzing` (the crate's
//! `device/queue_fuzz.rs`), so the unit tests run the same checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lkl_netstack::fuzzing::device_queues(data);
});
