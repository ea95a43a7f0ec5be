//! The same TAP scenario with offloads off: the device negotiates no checksum or
//! segmentation offload, so no frame larger than the MTU crosses it.

mod common;

use lkl_netstack::Offloads;

#[test]
fn tap_device_without_offloads_carries_no_large_frames() {
    let (rx_large, tx_large) = common::tap_scenario(Offloads::Off);
    assert_eq!(
        (rx_large, tx_large),
        (0, 0),
        "offloads are off: every frame fits the MTU"
    );
}
