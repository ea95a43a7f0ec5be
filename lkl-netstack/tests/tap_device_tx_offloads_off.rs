//! The TAP scenario with the kernel's transmit offloads turned off at run time
//! (`Kernel::set_tx_offloads`, what the agent does for a guest that did not negotiate
//! GUEST_TSO*/GUEST_CSUM) on a device that offers them: the kernel segments and checksums
//! in software, so no large frame leaves and none is dropped, while large frames still
//! come in and both 64 MiB transfers arrive intact.
//! Needs root, iproute2, iputils-ping and python3 (deploy/dev/setup-debian.sh).

mod common;

use lkl_netstack::Offloads;
use packet_ring::GuestOffloads;

#[test]
fn tx_offloads_turned_off_at_run_time_send_no_large_frame_and_drop_none() {
    let stats = common::tap_scenario_with(Offloads::Tso, |kernel| {
        kernel
            .set_tx_offloads("eth0", GuestOffloads::default())
            .unwrap();
    });
    let t = &stats.total;
    assert!(
        t.rx_large_frames > 0,
        "receive offloads stay: the host's TSO frames still come in whole: {t:?}"
    );
    assert_eq!(
        t.tx_large_frames, 0,
        "the kernel segmented its 64 MiB itself: {t:?}"
    );
    assert_eq!(t.rx_dropped() + t.tx_dropped(), 0, "{t:?}");
}
