//! A library network device whose backend is a knic packet port: an in-memory peer
//! speaks Ethernet to the real kernel through the same packet vocabulary the vhost
//! device uses. The kernel answers the peer's ARP request and ICMP echo request.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::frames::{KERNEL_IP, KERNEL_MAC, arp, arp_request, icmp_echo, ping};
use common::wait_for_carrier;
use lkl_netstack::{BootConfig, DevicePort, Kernel, NetBackend, NetDeviceConfig, Offloads};
use packet_ring::{VirtioNetHdr, memory_port_pair};

#[test]
fn kernel_answers_arp_and_ping_through_a_packet_port() {
    let (port, mut peer) = memory_port_pair(256, 2048).unwrap();
    let port = DevicePort::new(port);
    let kernel = Kernel::boot(&BootConfig {
        net_devices: vec![NetDeviceConfig {
            backend: NetBackend::Port(port),
            mac: KERNEL_MAC,
            mtu: 1500,
            offloads: Offloads::Off,
            queue_pairs: 1,
        }],
        ..BootConfig::default()
    })
    .unwrap();
    kernel.set_link_up("eth0", true).unwrap();
    kernel
        .add_address("eth0", std::net::Ipv4Addr::from(KERNEL_IP).into(), 24)
        .unwrap();

    arp(&mut peer);

    let payload: Vec<u8> = (0..56u8).collect();
    for seq in 1..=3u16 {
        ping(&mut peer, seq, &payload);
    }

    // Link down: the driver hears of it by a config-change interrupt and drops the
    // carrier, so the kernel answers nothing; link up brings both back.
    kernel.set_net_device_link(0, false).unwrap();
    wait_for_carrier(&kernel, "eth0", false);
    let stats = kernel.net_device_stats(0).unwrap();
    assert!(!stats.link_up);
    assert_eq!(stats.config_interrupts, 1);
    // The kernel stops its queues from linkwatch work, which runs up to 1 s after a
    // carrier loss (linkwatch_fire_event: not urgent).
    std::thread::sleep(Duration::from_millis(1500));
    peer.recv_with(256, |_| {}); // frames sent before the carrier went
    let sent_before = kernel.net_device_stats(0).unwrap().total.tx_packets;
    assert!(
        peer.send(VirtioNetHdr::default(), &icmp_echo(0x4b4e, 9, &payload))
            .unwrap()
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut frames = Vec::new();
    peer.recv_with(64, |p| frames.push(p.frame().len()));
    assert!(frames.is_empty(), "no carrier, no transmission: {frames:?}");
    assert_eq!(
        kernel.net_device_stats(0).unwrap().total.tx_packets,
        sent_before
    );
    kernel.set_net_device_link(0, true).unwrap();
    wait_for_carrier(&kernel, "eth0", true);
    assert_eq!(kernel.net_device_stats(0).unwrap().config_interrupts, 2);
    // The kernel forgot the peer's MAC while the link was down (it now asks by ARP,
    // which this peer does not answer); the peer's own ARP request teaches it again.
    assert!(peer.send(VirtioNetHdr::default(), &arp_request()).unwrap());
    ping(&mut peer, 10, &payload);

    let stats = kernel.net_device_stats(0).unwrap();
    println!("eth0 over a packet port: {stats:?}");
    kernel.halt().unwrap();
}
