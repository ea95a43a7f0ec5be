//! The same TAP scenario with offloads off: the device negotiates no checksum or
//! segmentation offload, so no frame larger than the MTU crosses it.

mod common;

use lkl_netstack::Offloads;

#[test]
fn tap_device_without_offloads_carries_no_large_frames() {
    let stats = common::tap_scenario(Offloads::Off);
    assert_eq!(
        (stats.total.rx_large_frames, stats.total.tx_large_frames),
        (0, 0),
        "offloads are off: every frame fits the MTU"
    );
    assert_eq!(stats.total.rx_dropped() + stats.total.tx_dropped(), 0);
}
