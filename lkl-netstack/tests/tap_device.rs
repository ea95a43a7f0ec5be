//! The library kernel's network device against real peers: eth0 is a virtio-mmio
//! virtio-net device backed by a TAP whose host end is moved into a network namespace
//! this test creates; host `ping`, `ping -6` and a Python TCP peer run there.
//! Needs root (CAP_NET_ADMIN), iproute2, iputils-ping and python3 (deploy/dev/setup-debian.sh).

mod common;

use lkl_netstack::Offloads;

#[test]
fn tap_device_with_offloads_carries_tso_frames() {
    let (rx_large, tx_large) = common::tap_scenario(Offloads::Tso);
    assert!(
        rx_large > 0,
        "with offloads on, the host's TSO frames should reach the kernel whole"
    );
    assert!(
        tx_large > 0,
        "with offloads on, the kernel should hand the TAP TSO frames"
    );
}
