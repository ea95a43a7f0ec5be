//! Hand-built Ethernet frames a packet-port peer sends the library kernel (ARP and
//! ICMP echo requests), and checks of the kernel's answers.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use lkl_netstack::{NetBackend, NetDeviceConfig, Offloads};
use packet_ring::{MemoryPeer, VirtioNetHdr};

pub const KERNEL_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x6b, 0x6e, 0x02];
pub const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const PEER_IP: [u8; 4] = [10, 55, 0, 1];
pub const KERNEL_IP: [u8; 4] = [10, 55, 0, 2];

/// A one-pair device with the MAC these frames are addressed to, offloads on.
pub fn kernel_device(backend: NetBackend) -> NetDeviceConfig {
    NetDeviceConfig {
        backend,
        mac: KERNEL_MAC,
        mtu: 1500,
        offloads: Offloads::Tso,
        queue_pairs: 1,
    }
}

pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn ethernet(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn arp_request() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&PEER_MAC);
    a.extend_from_slice(&PEER_IP);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&KERNEL_IP);
    ethernet([0xff; 6], 0x0806, &a)
}

pub fn icmp_echo(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
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
pub fn expect_frame(
    peer: &mut MemoryPeer,
    what: &str,
    mut want: impl FnMut(&[u8]) -> bool,
) -> Vec<u8> {
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

/// The peer asks for the kernel's MAC by ARP; checks the kernel's reply.
pub fn arp(peer: &mut MemoryPeer) {
    assert!(peer.send(VirtioNetHdr::default(), &arp_request()).unwrap());
    let reply = expect_frame(peer, "ARP reply", |f| {
        f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2]
    });
    assert_eq!(&reply[..6], &PEER_MAC, "the reply goes to the asker");
    assert_eq!(
        &reply[22..28],
        &KERNEL_MAC,
        "the kernel's MAC from the device's config space"
    );
    assert_eq!(&reply[28..32], &KERNEL_IP);
}

/// One echo request from the peer and the kernel's checked reply.
pub fn ping(peer: &mut MemoryPeer, seq: u16, payload: &[u8]) {
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
