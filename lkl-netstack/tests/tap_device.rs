//! The library kernel's network device against real peers: eth0 is a virtio-mmio
//! virtio-net device backed by a TAP whose host end is moved into a network namespace
//! this test creates; host `ping`, `ping -6` and a Python TCP peer run there.
//! Needs root (CAP_NET_ADMIN), iproute2, iputils-ping and python3 (deploy/dev/setup-debian.sh).

mod common;

use lkl_netstack::Offloads;

// Feature bits (virtio 1.2 §5.1.3) the kernel's driver must have accepted.
const F_GUEST_ECN: u64 = 1 << 9;
const F_HOST_ECN: u64 = 1 << 13;
const F_MRG_RXBUF: u64 = 1 << 15;
const F_RING_EVENT_IDX: u64 = 1 << 29;

#[test]
fn tap_device_with_offloads_carries_tso_frames() {
    let stats = common::tap_scenario(Offloads::Tso);
    let t = &stats.total;
    assert!(
        t.rx_large_frames > 0,
        "with offloads on, the host's TSO frames should reach the kernel whole"
    );
    assert!(
        t.tx_large_frames > 0,
        "with offloads on, the kernel should hand the TAP TSO frames"
    );
    let wanted = F_MRG_RXBUF | F_RING_EVENT_IDX | F_HOST_ECN | F_GUEST_ECN;
    assert_eq!(
        stats.negotiated_features & wanted,
        wanted,
        "the driver negotiated {:#x}",
        stats.negotiated_features
    );
    // The driver posts page-sized mergeable buffers: a 64 KiB frame spans many.
    assert!(
        t.rx_merged_frames >= t.rx_large_frames,
        "every large frame arrives across several buffers: {t:?}"
    );
    assert!(
        t.interrupts_suppressed > 0,
        "with EVENT_IDX the driver's used_event spares interrupts during bulk transfer: {t:?}"
    );
    assert_eq!(t.rx_dropped() + t.tx_dropped(), 0, "no drops: {t:?}");
}
