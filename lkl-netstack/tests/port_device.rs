//! A library network device whose backend is a knic packet port: an in-memory peer
//! speaks Ethernet to the real kernel through the same packet vocabulary the vhost
//! device uses. The kernel answers the peer's ARP request and ICMP echo request.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use lkl_netstack::{BootConfig, DevicePort, Kernel, NetBackend, NetDeviceConfig, Offloads};
use packet_ring::{MemoryPeer, VirtioNetHdr, memory_port_pair};

const KERNEL_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x6b, 0x6e, 0x02];
const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const PEER_IP: [u8; 4] = [10, 55, 0, 1];
const KERNEL_IP: [u8; 4] = [10, 55, 0, 2];

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ethernet(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn arp_request() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&PEER_MAC);
    a.extend_from_slice(&PEER_IP);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&KERNEL_IP);
    ethernet([0xff; 6], 0x0806, &a)
}

fn icmp_echo(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 1, 0, 0]);
    ip.extend_from_slice(&PEER_IP);
    ip.extend_from_slice(&KERNEL_IP);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ethernet(KERNEL_MAC, 0x0800, &ip)
}

/// Waits for a frame from the kernel that `want` accepts; other frames (IPv6
/// router solicitations and the like) are skipped.
fn expect_frame(peer: &mut MemoryPeer, what: &str, mut want: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let mut found = None;
        peer.recv_with(64, |p| {
            if found.is_none() && want(p.frame()) {
                found = Some(p.frame().to_vec());
            } else {
                seen.push(p.frame().len());
            }
        });
        if let Some(f) = found {
            return f;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("no {what} from the kernel within 10 s (other frames seen: {seen:?})");
}

/// One echo request from the peer and the kernel's checked reply.
fn ping(peer: &mut MemoryPeer, seq: u16, payload: &[u8]) {
    assert!(
        peer.send(VirtioNetHdr::default(), &icmp_echo(0x4b4e, seq, payload))
            .unwrap()
    );
    let pong = expect_frame(peer, "ICMP echo reply", |f| {
        // An echo reply for this sequence (one for an earlier request may still come).
        f.len() >= 42
            && f[12..14] == [8, 0]
            && f[23] == 1
            && f[34] == 0
            && f[40..42] == seq.to_be_bytes()
    });
    assert_eq!(&pong[26..30], &KERNEL_IP, "source");
    assert_eq!(&pong[30..34], &PEER_IP, "destination");
    assert_eq!(
        u16::from_be_bytes([pong[38], pong[39]]),
        0x4b4e,
        "identifier"
    );
    assert_eq!(u16::from_be_bytes([pong[40], pong[41]]), seq, "sequence");
    assert_eq!(&pong[42..], payload, "payload echoed");
    assert_eq!(
        checksum(&pong[34..]),
        0,
        "ICMP checksum of the kernel's reply"
    );
}

/// Waits until the kernel reports eth0's carrier as `up` (IFF_LOWER_UP over rtnetlink).
fn wait_for_carrier(kernel: &Kernel, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let eth0 = kernel
            .links()
            .unwrap()
            .into_iter()
            .find(|l| l.name == "eth0");
        if eth0.as_ref().is_some_and(|l| l.carrier == up) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "carrier never became {up}: {eth0:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

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

    assert!(peer.send(VirtioNetHdr::default(), &arp_request()).unwrap());
    let reply = expect_frame(&mut peer, "ARP reply", |f| {
        f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2]
    });
    assert_eq!(&reply[..6], &PEER_MAC, "the reply goes to the asker");
    assert_eq!(
        &reply[22..28],
        &KERNEL_MAC,
        "the kernel's MAC from the device's config space"
    );
    assert_eq!(&reply[28..32], &KERNEL_IP);

    let payload: Vec<u8> = (0..56u8).collect();
    for seq in 1..=3u16 {
        ping(&mut peer, seq, &payload);
    }

    // Link down: the driver hears of it by a config-change interrupt and drops the
    // carrier, so the kernel answers nothing; link up brings both back.
    assert!(kernel.set_net_device_link(0, false));
    wait_for_carrier(&kernel, false);
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
    assert!(kernel.set_net_device_link(0, true));
    wait_for_carrier(&kernel, true);
    assert_eq!(kernel.net_device_stats(0).unwrap().config_interrupts, 2);
    // The kernel forgot the peer's MAC while the link was down (it now asks by ARP,
    // which this peer does not answer); the peer's own ARP request teaches it again.
    assert!(peer.send(VirtioNetHdr::default(), &arp_request()).unwrap());
    ping(&mut peer, 10, &payload);

    let stats = kernel.net_device_stats(0).unwrap();
    println!("eth0 over a packet port: {stats:?}");
    kernel.halt().unwrap();
}
