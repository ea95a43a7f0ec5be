//! TAP and AF_PACKET uplinks against the real kernel: a TAP device is created, and a packet
//! socket is bound to that same interface, so each port sees what the other sends. Checks that
//! GSO/checksum metadata crosses in virtio-net header form, and that TUNSETOFFLOAD decides
//! whether the kernel hands over a GSO frame or segments it first.
//!
//! Needs root (CAP_NET_ADMIN, CAP_NET_RAW) and `ip` (iproute2); fails saying so otherwise.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use knic_uplink::{PacketSocketPort, TapPort};
use packet_ring::{GuestOffloads, PacketBatch, PacketPort, PacketSink, PacketSource, VirtioNetHdr};

use test_support::require_root;

const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn ip(args: &[&str]) {
    test_support::run(Command::new("ip").args(args));
}

/// Ethernet + IPv4 + TCP frame with `payload` bytes, checksums left to the offload.
fn tcp_frame(payload: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload);
    f.extend_from_slice(&DST);
    f.extend_from_slice(&SRC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 20 + payload) as u16;
    let mut iph = [
        0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2,
    ];
    iph[2..4].copy_from_slice(&total.to_be_bytes());
    let mut sum = 0u32;
    for c in iph.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    iph[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&iph);
    let tcp = [
        0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ];
    f.extend_from_slice(&tcp);
    f.extend((0..payload).map(|i| (i % 251) as u8));
    f
}

fn tso_hdr() -> VirtioNetHdr {
    VirtioNetHdr {
        flags: VirtioNetHdr::F_NEEDS_CSUM,
        gso_type: VirtioNetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    }
}

/// Collects our frames (by source MAC) from `port` until `n` arrived or 3 s passed.
fn collect(port: &mut dyn PacketPort, n: usize) -> Vec<(VirtioNetHdr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut batch = PacketBatch::new(16, packet_ring::MAX_FRAME_LEN);
    let start = Instant::now();
    while out.len() < n && start.elapsed() < Duration::from_secs(3) {
        batch.clear();
        port.recv(&mut batch).unwrap();
        for p in batch.packets() {
            if p.frame().get(6..12) == Some(&SRC[..]) {
                out.push((p.hdr, p.frame().to_vec()));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    out
}

#[test]
fn multi_queue_tap_opens_one_queue_per_pair() {
    require_root();
    let name = format!("knicm{}", std::process::id() % 100_000);
    let q0 = TapPort::open(&name, true).unwrap();
    let q1 = TapPort::open(&name, true).unwrap();
    assert_ne!(q0.ready_fd(), q1.ready_fd());
    let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/tun_flags")).unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    // IFF_MULTI_QUEUE (0x0100) and IFF_VNET_HDR (0x4000).
    assert_eq!(flags & 0x4100, 0x4100, "tun_flags {flags:#x}");
    // A single-queue open of a multi-queue TAP is refused, and reported as busy.
    let e = knic_uplink::open_uplinks(&knic_uplink::UplinkSpec::Tap(name.clone()), 1).unwrap_err();
    assert!(e.to_string().contains("busy"), "{e}");
}

/// Sets interface `name` up and opens a packet socket on it: the host's side of its TAP.
fn bring_up_with_socket(name: &str) -> PacketSocketPort {
    ip(&["link", "set", "dev", name, "up"]);
    let ifindex = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    PacketSocketPort::open(ifindex, None).unwrap()
}

/// `n` frames of distinct TCP flows (source port 1000 + i), so the TAP hashes them apart.
fn flows(n: u16) -> PacketBatch {
    let mut batch = PacketBatch::new(usize::from(n), packet_ring::MAX_FRAME_LEN);
    for i in 0..n {
        let mut f = tcp_frame(64);
        f[34..36].copy_from_slice(&(1000 + i).to_be_bytes());
        assert!(batch.push(VirtioNetHdr::default(), &f));
    }
    batch
}

/// A multi-queue TAP steers the host's frames only into attached queues: while queue 1 is
/// detached (its pair cannot receive) every flow reaches queue 0, none waits on queue 1;
/// attached again, it gets its share. Both queues are driven as whole ports, through
/// `PacketSource::set_attached`.
#[test]
fn multi_queue_tap_steers_only_to_attached_queues() {
    require_root();
    let name = format!("knics{}", std::process::id() % 100_000);
    let mut q0 = TapPort::open(&name, true).unwrap();
    let mut q1 = TapPort::open(&name, true).unwrap();
    let mut host = bring_up_with_socket(&name);
    let batch = flows(32);

    q0.set_attached(true).unwrap();
    assert_eq!(host.send(&batch).unwrap(), 32);
    assert_eq!(collect(&mut q0, 32).len(), 32, "every flow reaches queue 0");
    assert!(
        collect(&mut q1, 1).is_empty(),
        "nothing for a detached queue"
    );

    q1.set_attached(true).unwrap();
    assert_eq!(host.send(&batch).unwrap(), 32);
    let (on0, on1) = (collect(&mut q0, 32), collect(&mut q1, 32));
    assert_eq!(on0.len() + on1.len(), 32, "{} + {}", on0.len(), on1.len());
    assert!(!on1.is_empty(), "an attached queue 1 gets some of 32 flows");
}

#[test]
fn offloads_cross_tap_and_af_packet_in_both_directions() {
    require_root();
    let name = format!("knict{}", std::process::id() % 100_000);
    let mut tap = TapPort::open(&name, false).unwrap();
    let mut sock = bring_up_with_socket(&name);

    // TAP write (guest TX path) -> kernel receive -> packet socket: GSO metadata intact.
    let big = tcp_frame(3000);
    let mut batch = PacketBatch::new(4, packet_ring::MAX_FRAME_LEN);
    assert!(batch.push(tso_hdr(), &big));
    assert_eq!(tap.send(&batch).unwrap(), 1);
    let got = collect(&mut sock, 1);
    assert_eq!(
        got.len(),
        1,
        "GSO frame written to the TAP reached the interface"
    );
    assert_eq!(got[0].1, big);
    let (kind, _) = got[0].0.gso().unwrap();
    assert_eq!(kind, packet_ring::GsoKind::TcpV4);
    assert_eq!(got[0].0.gso_size, 1448);

    // Packet socket send (interface transmit) -> TAP read (guest RX path).
    // Guest without TSO: the kernel segments before handing frames to the TAP reader.
    let sock_port: &mut dyn PacketPort = &mut sock;
    sock_port.send(&batch).unwrap();
    let segs = collect(&mut tap, 3);
    assert_eq!(segs.len(), 3, "3000 bytes at MSS 1448 arrive as 3 segments");
    assert!(
        segs.iter()
            .all(|(h, f)| h.gso_type == 0 && f.len() <= 14 + 20 + 20 + 1448)
    );

    // Guest with CSUM+TSO4: the same frame arrives whole, with its GSO header.
    tap.set_guest_offloads(GuestOffloads {
        csum: true,
        tso4: true,
        tso6: true,
        ecn: false,
    })
    .unwrap();
    sock.send(&batch).unwrap();
    let whole = collect(&mut tap, 1);
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].1, big);
    assert_eq!(whole[0].0.gso_type, VirtioNetHdr::GSO_TCPV4);
    assert_eq!(whole[0].0.gso_size, 1448);
    assert_ne!(whole[0].0.flags & VirtioNetHdr::F_NEEDS_CSUM, 0);
}
