//! The library device's TX ring driven from another thread (`DirectTx`, issue 8's one copy
//! toward a guest): a TCP connection from a library socket goes out to a fake guest that
//! takes each of the kernel's TX chains lent in pieces, straight from the kernel's buffers,
//! as the vhost worker does. The fake guest negotiated GUEST_TSO4 and GUEST_CSUM: it
//! completes partial checksums and verifies every IPv4 and TCP checksum, reassembles the
//! stream and acknowledges it through the device's receive side, and counts the large
//! GSO frames the kernel lends it. The device's own TX path copies nothing.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::frames::{KERNEL_IP, KERNEL_MAC, PEER_IP, PEER_MAC, checksum, kernel_device};
use common::{pattern, wait_for_carrier};
use knic_virtio_net::LARGE_FRAME;
use knic_virtio_net::direct::{DirectSender, Taken};
use lkl_netstack::{BootConfig, DevicePort, Kernel, NetBackend, TcpStream, UdpSocket};
use packet_ring::{MemoryPeer, VirtioNetHdr, memory_port_pair};

const PEER_PORT: u16 = 5001;
/// The stream the library socket sends: enough for slow start to reach 64 KiB frames.
const STREAM: usize = 8 << 20;
const ETH_HLEN: usize = 14;
const IP_HLEN: usize = 20;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCP_FIN: u8 = 0x01;
/// The fake guest's initial sequence number.
const ISN: u32 = 0x1000_0000;

/// The fake guest's end of the connection.
#[derive(Default)]
struct Guest {
    /// The kernel's next sequence number expected (set by its SYN).
    expect: Option<u32>,
    kernel_port: u16,
    stream: Vec<u8>,
    fin: bool,
    frames: u64,
    gso_frames: u64,
    large_frames: u64,
    partial_csums: u64,
    /// Frames whose IPv4 or TCP checksum did not verify.
    bad_csums: u64,
    /// The kernel acknowledged the SYN-ACK (a segment after its SYN came).
    established: bool,
    /// A segment to acknowledge after the batch (SYN-ACK, or an ACK).
    ack_due: bool,
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The TCP checksum of `segment` under the IPv4 pseudo-header of `ip` (0 when it verifies).
fn tcp_checksum(ip: &[u8], segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    !fold(sum16(&pseudo) + sum16(segment))
}

impl Guest {
    /// Takes one frame the kernel lent: checks, completes and follows it.
    fn take(&mut self, hdr: &VirtioNetHdr, pieces: &[&[u8]]) -> Taken {
        let mut f = pieces.concat();
        self.frames += 1;
        if hdr.gso_type != VirtioNetHdr::GSO_NONE {
            self.gso_frames += 1;
            if f.len() >= LARGE_FRAME {
                self.large_frames += 1;
            }
        }
        if f.len() < ETH_HLEN + IP_HLEN || f[12..14] != [0x08, 0x00] || f[ETH_HLEN + 9] != 6 {
            return Taken::Dropped; // not IPv4/TCP: nothing of this connection
        }
        if hdr.flags & VirtioNetHdr::F_NEEDS_CSUM != 0 {
            // What the guest's NIC would do: the checksum from csum_start, at csum_offset.
            self.partial_csums += 1;
            let start = usize::from(hdr.csum_start);
            let at = start + usize::from(hdr.csum_offset);
            let c = !fold(sum16(&f[start..]));
            f[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        let ip = &f[ETH_HLEN..ETH_HLEN + IP_HLEN];
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if checksum(ip) != 0 || ETH_HLEN + total > f.len() {
            self.bad_csums += 1;
            return Taken::Dropped;
        }
        let segment = &f[ETH_HLEN + IP_HLEN..ETH_HLEN + total];
        if tcp_checksum(ip, segment) != 0 {
            self.bad_csums += 1;
            return Taken::Dropped;
        }
        let seq = u32::from_be_bytes(segment[4..8].try_into().unwrap());
        let flags = segment[13];
        let data = &segment[usize::from(segment[12] >> 4) * 4..];
        if flags & TCP_SYN != 0 {
            self.kernel_port = u16::from_be_bytes([segment[0], segment[1]]);
            self.expect = Some(seq.wrapping_add(1));
            self.ack_due = true;
            return Taken::Delivered;
        }
        self.established = true;
        if let Some(expect) = self.expect
            && seq == expect
        {
            self.stream.extend_from_slice(data);
            let mut next = expect.wrapping_add(data.len() as u32);
            if flags & TCP_FIN != 0 {
                self.fin = true;
                next = next.wrapping_add(1);
            }
            self.expect = Some(next);
        }
        self.ack_due = true;
        Taken::Delivered
    }

    /// The segment the fake guest answers with: SYN-ACK (window scale 7) before any data,
    /// else a cumulative ACK with a 8 MiB window.
    fn answer(&self) -> Vec<u8> {
        let expect = self.expect.unwrap();
        let handshake = !self.established;
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&PEER_PORT.to_be_bytes());
        tcp.extend_from_slice(&self.kernel_port.to_be_bytes());
        let seq = if handshake { ISN } else { ISN.wrapping_add(1) };
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&expect.to_be_bytes());
        let (offset, flags) = if handshake {
            (6u8, TCP_SYN | TCP_ACK)
        } else {
            (5, TCP_ACK)
        };
        tcp.push(offset << 4);
        tcp.push(flags);
        tcp.extend_from_slice(&0xffffu16.to_be_bytes()); // scaled by 2^7 after the handshake
        tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        if handshake {
            tcp.extend_from_slice(&[3, 3, 7, 1]); // window scale 7, then NOP
        }
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip[2..4].copy_from_slice(&((IP_HLEN + tcp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&PEER_IP);
        ip.extend_from_slice(&KERNEL_IP);
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let c = tcp_checksum(&ip, &tcp);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        let mut f = KERNEL_MAC.to_vec();
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp);
        f
    }
}

/// Drives the device's TX ring as a vhost worker would, until the stream and its FIN came.
fn serve(tx: &mut dyn DirectSender, peer: &mut MemoryPeer, guest: &mut Guest) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !guest.fin {
        assert!(
            Instant::now() < deadline,
            "stream incomplete: {} of {STREAM} bytes",
            guest.stream.len()
        );
        let mut lent = 0;
        tx.with_ring(&mut |ring| {
            while lent < 64 {
                match ring.lend(&mut |hdr, pieces| guest.take(hdr, pieces)) {
                    Some(_) => lent += 1,
                    None => break,
                }
            }
        });
        if guest.ack_due {
            guest.ack_due = false;
            assert!(peer.send(VirtioNetHdr::default(), &guest.answer()).unwrap());
        }
        if lent == 0 {
            test_support::poll_readable(tx.wake_fd(), 50);
        }
    }
}

#[test]
fn tcp_from_a_library_socket_reaches_a_direct_taker_checksummed_and_in_large_frames() {
    let (port, mut peer) = memory_port_pair(256, packet_ring::MAX_FRAME_LEN).unwrap();
    let hand_off = DevicePort::new(port).with_direct_tx();
    let kernel = Kernel::boot(&BootConfig {
        net_devices: vec![kernel_device(NetBackend::Port(hand_off.clone()))],
        ..BootConfig::default()
    })
    .unwrap();
    let mut tx = hand_off.take_direct_tx().unwrap().pop().unwrap();
    assert!(hand_off.take_direct_tx().is_none(), "handed out once");
    kernel.set_link_up("eth0", true).unwrap();
    kernel
        .add_address("eth0", Ipv4Addr::from(KERNEL_IP).into(), 24)
        .unwrap();
    wait_for_carrier(&kernel, "eth0", true);
    let udp = UdpSocket::bind(&kernel, "0.0.0.0:0".parse().unwrap()).unwrap();
    udp.set_neighbour("eth0", Ipv4Addr::from(PEER_IP), PEER_MAC)
        .unwrap();

    let mut guest = Guest::default();
    let _stream = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let to = SocketAddr::from((PEER_IP, PEER_PORT));
            let mut s = TcpStream::connect(&kernel, to).unwrap();
            s.write_all(&pattern(STREAM)).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            s
        });
        serve(&mut tx, &mut peer, &mut guest);
        sender.join().unwrap()
    });

    assert_eq!(guest.bad_csums, 0, "every checksum verifies");
    assert_eq!(guest.stream.len(), STREAM);
    assert!(guest.stream == pattern(STREAM), "the stream arrived intact");
    assert!(
        guest.partial_csums > 0,
        "the kernel left checksums to the taker"
    );
    assert!(
        guest.large_frames > 0,
        "GSO frames of 32 KiB or more reach a GUEST_TSO taker whole ({} GSO frames of {})",
        guest.gso_frames,
        guest.frames
    );
    let stats = kernel.net_device_stats(0).unwrap().total;
    println!(
        "frames {} gso {} large {} | device tx_packets {} tx_direct {} tx_large_frames {} interrupts {}",
        guest.frames,
        guest.gso_frames,
        guest.large_frames,
        stats.tx_packets,
        stats.tx_direct,
        stats.tx_large_frames,
        stats.interrupts
    );
    assert_eq!(
        stats.tx_direct, stats.tx_packets,
        "every frame the kernel sent was taken straight from its buffers"
    );
    assert_eq!(stats.tx_packets, guest.frames);
    assert_eq!(stats.tx_large_frames, guest.large_frames);
    assert_eq!(stats.tx_dropped(), 0);
    assert!(
        peer.recv_with(usize::MAX, |_| {}) == 0,
        "nothing went through the port's sending half"
    );
}
